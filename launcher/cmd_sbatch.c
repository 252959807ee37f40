/* `dtrain sbatch RECIPE [section.key=value ...] [--dry-run] [-o FILE]`: write a Slurm job script from the
 * recipe's slurm: section (docs/slurm.md) and submit it with sbatch. The script asks for the preemption
 * signal ahead of the time limit (--signal=B:SIG@LEAD), allows a requeue, appends to one output file
 * across requeues, and execs `srun --ntasks-per-node=1 dtrain run RECIPE ...`, so that the signal reaches
 * every node's agent. The recipe is checked first, with the world the job will have. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtrain/recipe.h"
#include "dtrain/runtime.h"
#include "launcher/commands.h"
#include "launcher/output.h"
#include "launcher/slurm.h"

#define CTX "dtrain sbatch: "

static void usage(FILE *f) {
  fputs(
      "usage: dtrain sbatch RECIPE [section.key=value ...] [--dry-run] [-o FILE]\n"
      "\n"
      "Write a Slurm job script that trains RECIPE (`srun --ntasks-per-node=1 dtrain run RECIPE ...` on\n"
      "every node) from the recipe's slurm: section, and submit it with sbatch. The job asks for\n"
      "slurm.signal (default USR2) slurm.signal_lead seconds (default 120) before its time limit: every\n"
      "rank then stops after the same step and saves, and the job requeues itself (at most\n"
      "slurm.max_requeues times, default 3) and resumes from that checkpoint. docs/slurm.md has the rest.\n"
      "\n"
      "  section.key=value         override one key after the file (slurm.time=4:00:00, train.steps=20);\n"
      "                            the job's `dtrain run` gets them too\n"
      "  --dry-run                 print the job script; write and submit nothing\n"
      "  -o, --output-script FILE  write the script there (default RUN_DIR/job.sbatch)\n"
      "  -h, --help                this text\n"
      "\n"
      "Exit codes: 2 bad usage or an invalid recipe (file:line:col: what); 1 the script cannot be written,\n"
      "or sbatch is not on PATH (the script is kept: submit it where Slurm is); otherwise sbatch's.\n",
      f);
}

/* One "#SBATCH --NAME=VALUE" line when value is set. */
static void opt(FILE *f, const char *name, const char *value) {
  if (value && *value) fprintf(f, "#SBATCH --%s=%s\n", name, value);
}

/* The job script for r (validated), run with this dtrain binary, the recipe's overrides ov[0..n). */
static void write_script(FILE *f, const dtr_recipe *r, const char *self, const char *cwd, char *const *ov,
                         int n) {
  char num[64], out[DTR_RECIPE_STR + 32];
  int elastic = r->launch.nnodes_min < r->launch.nnodes_max; /* MIN:MAX: a lost node ends nothing */
  int nodes_min = r->slurm.nodes > 0 ? r->slurm.nodes : r->launch.nnodes_min,
      nodes_max = r->slurm.nodes > 0 ? r->slurm.nodes : r->launch.nnodes_max;
  int cpus = r->slurm.cpus_per_node;
  if (cpus == 0) cpus = r->launch.nproc_per_node * (r->train.threads > 0 ? r->train.threads : 1);
  int gpus = r->slurm.gpus_per_node;
  if (gpus == 0 && !strcmp(r->train.device, "cuda")) gpus = r->launch.nproc_per_node; /* a GPU per rank */
  fprintf(f, "#!/bin/bash\n");
  fprintf(f, "# Written by `dtrain sbatch` from %s (its slurm: section); submit it with sbatch.\n", r->path);
  if (r->slurm.signal_lead > 0)
    fprintf(
        f,
        "# %d s before the time limit Slurm sends SIG%s to this script, which is srun (exec): every node's\n",
        r->slurm.signal_lead, r->slurm.signal);
  else
    fprintf(f,
            "# At the time limit Slurm sends SIGTERM (KillWait s before SIGKILL) to every process: every "
            "node's\n");
  fprintf(
      f,
      "# agent gets it, every rank stops after the same step and saves, and the job requeues itself while\n"
      "# SLURM_RESTART_COUNT < %d; the requeued job resumes from that checkpoint (docs/slurm.md).\n",
      r->slurm.max_requeues);
  opt(f, "job-name", r->job.name);
  if (nodes_min == nodes_max)
    snprintf(num, sizeof num, "%d", nodes_max);
  else
    snprintf(num, sizeof num, "%d-%d", nodes_min, nodes_max);
  opt(f, "nodes", num);
  opt(f, "ntasks-per-node", "1");
  snprintf(num, sizeof num, "%d", cpus);
  opt(f, "cpus-per-task", num);
  if (gpus > 0) {
    snprintf(num, sizeof num, "%d", gpus);
    opt(f, "gpus-per-node", num);
  }
  opt(f, "mem", r->slurm.mem);
  opt(f, "time", r->slurm.time);
  opt(f, "partition", r->slurm.partition);
  opt(f, "account", r->slurm.account);
  opt(f, "qos", r->slurm.qos);
  opt(f, "constraint", r->slurm.constraint);
  snprintf(num, sizeof num, "B:%s@%d", r->slurm.signal, r->slurm.signal_lead);
  if (r->slurm.signal_lead > 0) opt(f, "signal", num); /* 0: none, SIGTERM at the time limit will do */
  fprintf(f, "#SBATCH --requeue\n#SBATCH --open-mode=append\n");
  if (r->slurm.output[0])
    snprintf(out, sizeof out, "%s", r->slurm.output);
  else
    snprintf(out, sizeof out, "%s/slurm-%%j.out", r->job.run_dir);
  opt(f, "output", out);
  opt(f, "chdir", cwd);
  if (elastic) /* a failed node does not end the job: dtrain goes on with the nodes left */
    fprintf(f, "#SBATCH --no-kill\n");
  char extra[DTR_RECIPE_STR];
  snprintf(extra, sizeof extra, "%s", r->slurm.extra);
  for (char *save = NULL, *w = strtok_r(extra, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
    fprintf(f, "#SBATCH %s\n", w);
  fprintf(f,
          "\necho \"dtrain sbatch: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, requeue "
          "${SLURM_RESTART_COUNT:-0} of "
          "%d, $(date '+%%F %%T')\"\n",
          r->slurm.max_requeues);
  fprintf(f, "exec srun --ntasks-per-node=1 --cpus-per-task=%d", cpus);
  if (gpus > 0) fprintf(f, " --gpus-per-node=%d", gpus);
  if (elastic) fprintf(f, " --no-kill");
  fputs(" \\\n  ", f);
  dtr__shell_quote(f, self);
  fputs(" run ", f);
  dtr__shell_quote(f, r->path);
  for (int i = 0; i < n; i++) {
    fputc(' ', f);
    dtr__shell_quote(f, ov[i]);
  }
  fputc('\n', f);
}

int dtr__cmd_sbatch(int argc, char **argv) {
  const char *recipe = NULL, *script = NULL;
  char **ov = calloc((size_t)argc + 3, sizeof *ov);
  int nov = 0, dry_run = 0, code = 2;
  char err[2048];
  static dtr_recipe r;
  if (!ov) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      code = 0;
      goto out;
    }
    if (!strcmp(a, "--dry-run") || !strcmp(a, "--dry_run")) {
      dry_run = 1;
    } else if (!strcmp(a, "-o") || !strcmp(a, "--output-script") || !strcmp(a, "--output_script")) {
      if (i + 1 >= argc) {
        fprintf(stderr, CTX "%s needs a file name\n", a);
        goto out;
      }
      script = argv[++i];
    } else if (!strncmp(a, "--output-script=", 16)) {
      script = a + 16;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, CTX "unknown option '%s' (try 'dtrain sbatch --help')\n", a);
      goto out;
    } else if (!recipe) {
      recipe = a;
    } else if (strchr(a, '=')) {
      ov[nov++] = argv[i];
    } else {
      fprintf(stderr, CTX "unexpected argument '%s' (overrides are section.key=value)\n", a);
      goto out;
    }
  }
  if (!recipe) {
    fprintf(stderr,
            CTX "no recipe given (usage: dtrain sbatch RECIPE [section.key=value ...] [--dry-run])\n");
    goto out;
  }
  /* Inside the job, `dtrain run` takes the rendezvous endpoint from Slurm and, over a one-node launch
   * section, the step's nodes (slurm.nodes; slurm.h): check the recipe as every rank will load it, with
   * a stand-in endpoint where the recipe has none (the check needs one; the script does not get it). */
  char nodes_ov[64], ep_ov[] = "launch.rdzv_endpoint=slurm-first-node:10000";
  int nchk = nov;
  if (dtr_recipe_load(recipe, (const char *const *)ov, nov, 0, &r, err, sizeof err) != DTR_OK) {
    ov[nchk++] = ep_ov; /* the missing endpoint may be all that is wrong: Slurm brings it */
    if (dtr_recipe_load(recipe, (const char *const *)ov, nchk, 0, &r, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "%s\n", err);
      goto out;
    }
  }
  if (r.slurm.nodes > 1 && r.launch.nnodes_max == 1) {
    snprintf(nodes_ov, sizeof nodes_ov, "launch.nnodes=%d", r.slurm.nodes);
    ov[nchk++] = nodes_ov;
    if (!r.launch.rdzv_endpoint[0]) ov[nchk++] = ep_ov;
    if (dtr_recipe_load(recipe, (const char *const *)ov, nchk, 0, &r, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "%s (with %s, from slurm.nodes)\n", err, nodes_ov);
      goto out;
    }
  }
  ov[nov] = NULL;
  if (dtr_train_check(&r, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }
  char self[PATH_MAX], cwd[PATH_MAX], path[PATH_MAX];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (sl <= 0 || !getcwd(cwd, sizeof cwd)) {
    fprintf(stderr, CTX "cannot find the dtrain binary or the current directory: %s\n", strerror(errno));
    code = 1;
    goto out;
  }
  self[sl] = '\0';
  if (dry_run) {
    write_script(stdout, &r, self, cwd, ov, nov);
    code = fflush(stdout) == 0 ? 0 : 1;
    goto out;
  }
  /* the job writes its output into the run directory from its first second: it must exist */
  code = 1;
  if (dtr__mkdir_p(r.job.run_dir, 0777) < 0) {
    fprintf(stderr, CTX "job.run_dir: cannot create %s: %s\n", r.job.run_dir, strerror(errno));
    goto out;
  }
  if (script)
    snprintf(path, sizeof path, "%s", script);
  else
    snprintf(path, sizeof path, "%s/job.sbatch", r.job.run_dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, CTX "cannot write %s: %s\n", path, strerror(errno));
    goto out;
  }
  write_script(f, &r, self, cwd, ov, nov);
  if (fclose(f) != 0) {
    fprintf(stderr, CTX "cannot write %s: %s\n", path, strerror(errno));
    goto out;
  }
  char out[4096];
  char *sb[] = {"sbatch", path, NULL};
  int st = dtr__run_capture(sb, out, sizeof out);
  fputs(out, st == 0 ? stdout : stderr);
  const char *job = strstr(out, "Submitted batch job ");
  if (st == 0 && job && !r.slurm.output[0]) /* where to look: the output path with %j filled in */
    printf("dtrain sbatch: the job writes to %s/slurm-%ld.out (script %s)\n", r.job.run_dir,
           strtol(job + 20, NULL, 10), path);
  if (st == 127) {
    fprintf(stderr, CTX "sbatch is not on PATH: the job script is %s; submit it where Slurm is\n", path);
    st = 1;
  } else if (st < 0) {
    fprintf(stderr, CTX "cannot start sbatch: %s\n", strerror(errno));
    st = 1;
  }
  code = st;
out:
  free(ov);
  return code;
}
