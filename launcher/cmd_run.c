/* `dtrain run RECIPE [section.key=value ...] [--dry-run] [launch flags]`: validate the recipe with the
 * world its launch section makes, write the effective recipe into the run directory, then run `dtrain
 * launch` with that launch section and `dtrain train RECIPE ...` (this same binary) as every rank's
 * program. A recipe that does not validate stops here: nothing is created, nothing is started. */
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
#include "launcher/launch_args.h"
#include "launcher/output.h"
#include "launcher/slurm.h"

#define CTX "dtrain run: "

static void usage(FILE *f) {
  fputs(
      "usage: dtrain run RECIPE [section.key=value ...] [--dry-run] [launch flags]\n"
      "\n"
      "Train RECIPE on this node's ranks: `dtrain launch` with the recipe's launch section, running\n"
      "`dtrain train RECIPE` on every rank. The recipe is checked first (file:line:col: what is wrong);\n"
      "a bad recipe starts nothing. The effective recipe (every key, defaults filled in) is written to\n"
      "RUN_DIR/recipe.yaml (job.run_dir, default runs/<job.name>). docs/recipes.md lists every key.\n"
      "\n"
      "  section.key=value         override one key after the file, e.g. train.steps=20\n"
      "  --dry-run                 validate and print the effective recipe and the launch command; start "
      "nothing\n"
      "  -h, --help                this text\n"
      "\n"
      "Launch flags override the recipe's launch section: --nproc-per-node N|cpu|gpu|auto, --nnodes "
      "N|MIN:MAX,\n"
      "--node-rank R, --rdzv-endpoint HOST:PORT, --rdzv-id ID, --max-restarts N, --worker-timeout S,\n"
      "--worker-start-timeout S; --max-requeues N overrides slurm.max_requeues. These are passed on to\n"
      "`dtrain launch` as they are: --standalone, --rdzv-timeout, --rdzv-backend, --rdzv-conf,\n"
      "--monitor-interval, --grace-period, --stop-timeout, --log-dir, --tee, --redirects, --master-addr,\n"
      "--master-port, --error-file, --role, --start-method (see `dtrain launch --help`). Inside a Slurm job\n"
      "the step's nodes, endpoint and id fill in what the recipe leaves (docs/slurm.md).\n"
      "\n"
      "Exit codes: 2 bad usage or an invalid recipe; otherwise those of `dtrain launch`.\n",
      f);
}

/* A growable argv of strings this command owns. */
typedef struct strv {
  char **v;
  int n, cap;
} strv;

static int strv_push(strv *s, const char *x) {
  if (s->n + 2 > s->cap) {
    int cap = s->cap ? s->cap * 2 : 32;
    char **v = realloc(s->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    s->v = v;
    s->cap = cap;
  }
  if (!(s->v[s->n] = strdup(x))) return -1;
  s->v[++s->n] = NULL;
  return 0;
}

static void strv_free(strv *s) {
  for (int i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
}

int dtr__cmd_run(int argc, char **argv) {
  strv overrides = {0}, flag_overrides = {0}, passthru = {0}, launch = {0};
  const char *recipe = NULL;
  int dry_run = 0, code = 2, own_store = 0;
  char err[2048];
  static dtr_recipe r;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      code = 0;
      goto out;
    }
    if (!strcmp(a, "--dry-run") || !strcmp(a, "--dry_run")) {
      dry_run = 1;
      continue;
    }
    if (a[0] == '-' && a[1]) {
      /* launch's flags, in launch's spellings: those with a recipe key become overrides (so validation
       * sees them), the others are passed on to launch untouched */
      const dtr__launch_flag *fl;
      const char *val;
      if (dtr__launch_flag_read(argc, argv, &i, 1, &fl, &val, err, sizeof err) != DTR_OK) {
        fprintf(stderr, CTX "%s\n", err);
        goto out;
      }
      if (!fl) {
        fprintf(stderr, CTX "unknown option '%s' (try 'dtrain run --help')\n", a);
        goto out;
      }
      char buf[DTR_LAUNCH_MAX_STR + 64];
      if (fl->recipe_key) {
        if (fl->value == DTR__LAUNCH_NPROC) { /* the recipe takes a count: cpu, gpu and auto resolved here */
          int n;
          char e[256];
          if (dtr__launch_parse_nproc(val, &n, e, sizeof e) != DTR_OK) {
            fprintf(stderr, CTX "%s\n", e);
            goto out;
          }
          snprintf(buf, sizeof buf, "%s=%d", fl->recipe_key, n);
        } else {
          snprintf(buf, sizeof buf, "%s=%s", fl->recipe_key, val);
        }
        if (strv_push(&flag_overrides, buf) != 0) goto nomem;
      } else {
        if (!strcmp(fl->name, "standalone") || !strcmp(fl->name, "master-addr")) own_store = 1;
        snprintf(buf, sizeof buf, "--%s", fl->name);
        if (strv_push(&passthru, buf) != 0 || (val && strv_push(&passthru, val) != 0)) goto nomem;
      }
      continue;
    }
    if (!recipe) {
      recipe = a;
    } else if (strchr(a, '=')) {
      if (strv_push(&overrides, a) != 0) goto nomem;
    } else {
      fprintf(stderr, CTX "unexpected argument '%s' (overrides are section.key=value)\n", a);
      goto out;
    }
  }
  if (!recipe) {
    fprintf(stderr, CTX "no recipe given (usage: dtrain run RECIPE [section.key=value ...] [--dry-run])\n");
    goto out;
  }

  /* flags after the user's section.key=value words: a flag wins over launch.key=value */
  for (int i = 0; i < flag_overrides.n; i++)
    if (strv_push(&overrides, flag_overrides.v[i]) != 0) goto nomem;

  /* ---- validate with the world the launch section makes; nothing has been started or created. Inside
   * Slurm the step's nodes, the endpoint and the id come from Slurm where the recipe leaves them
   * (slurm.h): a recipe of several nodes without an endpoint is checked (and run) with Slurm's. */
  dtr__slurm slurm;
  if (dtr__slurm_read(NULL, &slurm, err, sizeof err) != DTR_OK) {
    fprintf(stderr, CTX "%s\n", err);
    goto out;
  }
  if (dtr_recipe_load(recipe, (const char *const *)overrides.v, overrides.n, 0, &r, err, sizeof err) !=
      DTR_OK) {
    char ep[400];
    if (own_store || !slurm.managed || !slurm.first_host[0]) {
      fprintf(stderr, "%s\n", err);
      goto out;
    }
    snprintf(ep, sizeof ep, "launch.rdzv_endpoint=%s:%d", slurm.first_host, dtr__slurm_port(slurm.job_id));
    if (strv_push(&overrides, ep) != 0) goto nomem;
    if (dtr_recipe_load(recipe, (const char *const *)overrides.v, overrides.n, 0, &r, err, sizeof err) !=
        DTR_OK) {
      fprintf(stderr, "%s\n", err);
      goto out;
    }
  }
  if (!own_store) {
    dtr__slurm_shape sh;
    size_t before = (size_t)overrides.n;
    if (dtr__slurm_launch_shape(&slurm, r.launch.nnodes_min, r.launch.nnodes_max, &sh, err, sizeof err) !=
        DTR_OK) {
      fprintf(stderr, CTX "%s\n", err);
      goto out;
    }
    char buf[400];
    if (sh.nnodes_min != r.launch.nnodes_min || sh.nnodes_max != r.launch.nnodes_max) {
      snprintf(buf, sizeof buf, sh.nnodes_min == sh.nnodes_max ? "launch.nnodes=%d" : "launch.nnodes=%d:%d",
               sh.nnodes_min, sh.nnodes_max);
      if (strv_push(&overrides, buf) != 0) goto nomem;
    }
    if (sh.spans_nodes && !r.launch.rdzv_endpoint[0]) {
      snprintf(buf, sizeof buf, "launch.rdzv_endpoint=%s", sh.endpoint);
      if (strv_push(&overrides, buf) != 0) goto nomem;
    }
    if (sh.spans_nodes && !r.launch.rdzv_id[0]) {
      snprintf(buf, sizeof buf, "launch.rdzv_id=%s", sh.id);
      if (strv_push(&overrides, buf) != 0) goto nomem;
    }
    if ((size_t)overrides.n != before && dtr_recipe_load(recipe, (const char *const *)overrides.v,
                                                         overrides.n, 0, &r, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "%s\n", err);
      goto out;
    }
  }
  /* A valid recipe the built-in trainer cannot run yet (tp, pp, cuda) stops here too, not on every rank. */
  if (dtr_train_check(&r, err, sizeof err) != DTR_OK || dtr_train_check_here(&r, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }

  /* ---- the launch command: this binary's `train` as every rank's program */
  char self[PATH_MAX];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (sl <= 0) {
    fprintf(stderr, CTX "cannot find the dtrain binary (/proc/self/exe): %s\n", strerror(errno));
    code = 1;
    goto out;
  }
  self[sl] = '\0';
  char num[64];
  if (strv_push(&launch, "launch") != 0) goto nomem;
  snprintf(num, sizeof num, "%d", r.launch.nproc_per_node);
  if (strv_push(&launch, "--nproc-per-node") != 0 || strv_push(&launch, num) != 0) goto nomem;
  if (r.launch.nnodes_min == r.launch.nnodes_max)
    snprintf(num, sizeof num, "%d", r.launch.nnodes_max);
  else
    snprintf(num, sizeof num, "%d:%d", r.launch.nnodes_min, r.launch.nnodes_max);
  if (strv_push(&launch, "--nnodes") != 0 || strv_push(&launch, num) != 0) goto nomem;
  snprintf(num, sizeof num, "%d", r.launch.max_restarts);
  if (strv_push(&launch, "--max-restarts") != 0 || strv_push(&launch, num) != 0) goto nomem;
  snprintf(num, sizeof num, "%d", r.slurm.max_requeues);
  if (r.slurm.max_requeues != 3 && /* launch's default: the common line stays short */
      (strv_push(&launch, "--max-requeues") != 0 || strv_push(&launch, num) != 0))
    goto nomem;
  if (r.launch.rdzv_endpoint[0] &&
      (strv_push(&launch, "--rdzv-endpoint") != 0 || strv_push(&launch, r.launch.rdzv_endpoint) != 0))
    goto nomem;
  if (r.launch.rdzv_id[0] &&
      (strv_push(&launch, "--rdzv-id") != 0 || strv_push(&launch, r.launch.rdzv_id) != 0))
    goto nomem;
  snprintf(num, sizeof num, "%g", r.launch.worker_timeout);
  if (strv_push(&launch, "--worker-timeout") != 0 || strv_push(&launch, num) != 0) goto nomem;
  snprintf(num, sizeof num, "%g", r.launch.worker_start_timeout);
  if (strv_push(&launch, "--worker-start-timeout") != 0 || strv_push(&launch, num) != 0) goto nomem;
  if (r.launch.node_rank >= 0) {
    snprintf(num, sizeof num, "%d", r.launch.node_rank);
    if (strv_push(&launch, "--node-rank") != 0 || strv_push(&launch, num) != 0) goto nomem;
  }
  for (int i = 0; i < passthru.n; i++)
    if (strv_push(&launch, passthru.v[i]) != 0) goto nomem;
  if (strv_push(&launch, "--") != 0 || strv_push(&launch, self) != 0 || strv_push(&launch, "train") != 0 ||
      strv_push(&launch, r.path) != 0)
    goto nomem;
  for (int i = 0; i < overrides.n; i++)
    if (strv_push(&launch, overrides.v[i]) != 0) goto nomem;

  if (dry_run) {
    /* (a run's rank 0 says it when it loads the recipe: one warning per run) */
    if (r.warnings[0]) fprintf(stderr, "dtrain: warning: %s\n", r.warnings);
    if (dtr_recipe_write(&r, "-", err, sizeof err) != DTR_OK) {
      fprintf(stderr, CTX "%s\n", err);
      code = 1;
      goto out;
    }
    fputs("# dtrain would run: dtrain", stdout);
    for (int i = 0; i < launch.n; i++) {
      fputc(' ', stdout);
      dtr__shell_quote(stdout, launch.v[i]);
    }
    fputc('\n', stdout);
    code = fflush(stdout) == 0 ? 0 : 1;
    goto out;
  }

  /* ---- the run directory and its effective recipe */
  char eff[PATH_MAX];
  if (dtr__mkdir_p(r.job.run_dir, 0777) < 0) {
    fprintf(stderr, CTX "job.run_dir: cannot create %s: %s\n", r.job.run_dir, strerror(errno));
    code = 1;
    goto out;
  }
  snprintf(eff, sizeof eff, "%s/recipe.yaml", r.job.run_dir);
  if (dtr_recipe_write(&r, eff, err, sizeof err) != DTR_OK) {
    fprintf(stderr, CTX "%s\n", err);
    code = 1;
    goto out;
  }
  code = dtr__cmd_launch(launch.n, launch.v);
  goto out;

nomem:
  fprintf(stderr, CTX "out of memory\n");
  code = 1;
out:
  strv_free(&overrides);
  strv_free(&flag_overrides);
  strv_free(&passthru);
  strv_free(&launch);
  return code;
}
