/* `dtrain ckpt`: the checkpoint tools (ls, verify, inspect, export, import). Only flags, help texts and
 * exit codes live here (0 success, 1 a failure naming its culprit, 2 bad usage); the work is in
 * checkpoint/ckpt_tools.c, and for `export --layout` the model's layouts in runtime/model/gpt_weights.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ckpt_tools.h"
#include "common/check.h"
#include "common/fsutil.h"
#include "dtrain/recipe.h"
#include "launcher/commands.h"
#include "runtime/model/gpt_weights.h"

static void usage(FILE *f) {
  fputs(
      "usage: dtrain ckpt COMMAND [ARGS...]\n"
      "\n"
      "Look into, check and convert dtrain checkpoint directories (DIR is the `dir` a run saves to).\n"
      "\n"
      "Commands:\n"
      "  ls DIR                              every step: state, ranks, tensors, sizes, compression ratio\n"
      "  verify DIR [--step N]               read every chunk of every shard and check its checksum\n"
      "  inspect DIR [--step N] [--chunks]   tensors, shapes, dtypes and how each is split over ranks\n"
      "  export DIR OUT.safetensors [--step N] [--blobs] [--layout L] [--dtype T] [--n-head H]\n"
      "                                      write the whole tensors (or the model's weights in\n"
      "                                      dtrain's or Hugging Face GPT-2's layout) to safetensors\n"
      "  import IN.safetensors DIR [--step N] [--job-id ID]\n"
      "                                      write a safetensors file as a checkpoint a run can load\n"
      "\n"
      "`dtrain ckpt COMMAND --help` describes one command. Exit codes: 0 success, 1 failure (the file,\n"
      "chunk or tensor is named), 2 bad usage. docs/checkpoint-tools.md has examples.\n",
      f);
}

typedef struct sub {
  const char *name;
  int npos;             /* positional arguments */
  const char *flags[6]; /* accepted flags; those ending in '=' take a value */
  const char *help;
} sub;

static const sub SUBS[] = {
    {"ls",
     1,
     {NULL},
     "usage: dtrain ckpt ls DIR\n"
     "\n"
     "List every step directory under DIR, oldest first: its state (committed, latest, unfinished for a\n"
     ".tmp_step_* left by a save that did not commit, BROKEN with the reason for an unreadable manifest),\n"
     "the number of ranks that wrote it (one shard file each), tensors and blobs, raw and stored bytes,\n"
     "their ratio, the bytes on disk, when it was written and the job id.\n"},
    {"verify",
     1,
     {"--step=", NULL},
     "usage: dtrain ckpt verify DIR [--step N]\n"
     "\n"
     "Read every chunk of every shard file of every committed step (or of step N only), check its xxHash\n"
     "checksum and decode it, and check that each shard's own index agrees with the manifest. Prints a\n"
     "line per problem, naming the shard file and the chunk (\"BROKEN DIR/step_00000100/rank_00002.dtck:\n"
     "chunk 1 of 3 of 'w' ...\"), and a verdict per step. Exit 0 when everything is intact, 1 otherwise.\n"
     "\n"
     "Options:\n"
     "  --step N   verify only this step\n"},
    {"inspect",
     1,
     {"--step=", "--chunks", NULL},
     "usage: dtrain ckpt inspect DIR [--step N] [--chunks]\n"
     "\n"
     "Describe one step (default: the latest committed): every tensor with its dtype, global shape and\n"
     "size, and how it is split (the box each rank saved, e.g. [0:64, 0:48]); every blob and its ranks.\n"
     "\n"
     "Options:\n"
     "  --step N   this step instead of the latest\n"
     "  --chunks   also list every chunk: element range, file offset, stored size, codec, checksum\n"},
    {"export",
     2,
     {"--step=", "--blobs", "--layout=", "--dtype=", "--n-head=", NULL},
     "usage: dtrain ckpt export DIR OUT.safetensors [--step N] [--blobs] [--layout L] [--dtype T] [--n-head "
     "H]\n"
     "\n"
     "Reassemble every tensor of one step (default: the latest committed) whole, whatever layout wrote\n"
     "it, and write them with their dtypes (F32, F64, F16, BF16, I32, I64, U8) to a safetensors file\n"
     "that Python's safetensors or torch can load. Metadata: format=pt, dtrain_step, dtrain_job_id,\n"
     "dtrain_world, dtrain_created. The file appears only when complete.\n"
     "\n"
     "With --layout, only the weights of the built-in GPT (the model/ tensors), with the model's config\n"
     "in the metadata, in the layout of:\n"
     "  dtrain    model/wte, model/h.0.attn.qkv.w [3C, C], ... (what model.init_from reads back)\n"
     "  hf-gpt2   Hugging Face GPT-2: wte.weight, h.0.attn.c_attn.weight [C, 3C] (Conv1D, [in, out]), ...,\n"
     "            metadata as GPT2Config's keys. When OUT is a directory (or ends in '/'), it receives\n"
     "            model.safetensors and config.json: what transformers' "
     "GPT2LMHeadModel.from_pretrained(OUT)\n"
     "            reads.\n"
     "The head count is not in the tensors' shapes: --n-head, else the run's recipe.yaml beside DIR\n"
     "(the one `dtrain run` writes in job.run_dir when DIR is its checkpoint.dir).\n"
     "\n"
     "Options:\n"
     "  --step N     this step instead of the latest\n"
     "  --blobs      also write each rank's blobs as U8 tensors named __blob__/<name>/rank_<r>\n"
     "  --layout L   dtrain | hf-gpt2: the model's weights only, in that layout\n"
     "  --dtype T    f32 | bf16 | f16 | f64: convert every float tensor (rounding to nearest even)\n"
     "  --n-head H   the model's attention heads (with --layout)\n"},
    {"import",
     2,
     {"--step=", "--job-id=", NULL},
     "usage: dtrain ckpt import IN.safetensors DIR [--step N] [--job-id ID]\n"
     "\n"
     "Write the tensors of a safetensors file as a committed single-shard checkpoint in DIR, so that a\n"
     "run with any layout starts from them (dtr_ckpt_load reshards). Tensors named\n"
     "__blob__/<name>/rank_0 become blob <name>. Refuses a step that DIR already holds.\n"
     "\n"
     "Options:\n"
     "  --step N     the step to write (default 0)\n"
     "  --job-id ID  the job id recorded in the manifest (default empty: any job may load it)\n"},
};
#define NSUBS ((int)(sizeof SUBS / sizeof SUBS[0]))

typedef struct parsed {
  const char *pos[2];
  int64_t step; /* -1: not given */
  int chunks, blobs;
  const char *job_id, *layout, *dtype;
  int n_head; /* 0: not given */
} parsed;

/* Returns -1 after --help, 0 on success, 2 on bad usage (the flag or argument named on stderr). */
static int parse(const sub *s, int argc, char **argv, parsed *p) {
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      fputs(s->help, stdout);
      return -1;
    }
    if (arg[0] != '-' || strcmp(arg, "-") == 0) {
      if (npos >= s->npos) {
        fprintf(stderr, "dtrain ckpt %s: unexpected argument '%s' (try 'dtrain ckpt %s --help')\n", s->name,
                arg, s->name);
        return 2;
      }
      p->pos[npos++] = arg;
      continue;
    }
    const char *flag = NULL, *val = NULL;
    int takes = 0;
    for (int k = 0; k < 6 && s->flags[k] && !flag; k++) {
      size_t n = strlen(s->flags[k]);
      takes = s->flags[k][n - 1] == '=';
      size_t base = takes ? n - 1 : n;
      if (strncmp(arg, s->flags[k], base) == 0 && (arg[base] == '\0' || (takes && arg[base] == '='))) {
        flag = s->flags[k];
        if (arg[base] == '=') val = arg + base + 1;
      }
    }
    if (!flag) {
      fprintf(stderr, "dtrain ckpt %s: unknown flag '%s' (try 'dtrain ckpt %s --help')\n", s->name, arg,
              s->name);
      return 2;
    }
    if (takes && !val) {
      if (i + 1 >= argc) {
        fprintf(stderr, "dtrain ckpt %s: %.*s needs a value\n", s->name, (int)strlen(flag) - 1, flag);
        return 2;
      }
      val = argv[++i];
    }
    if (strcmp(flag, "--step=") == 0) {
      char *end;
      errno = 0;
      long long v = strtoll(val, &end, 10);
      if (errno || end == val || *end || v < 0) {
        fprintf(stderr, "dtrain ckpt %s: --step '%s' is not a step number (an integer >= 0)\n", s->name, val);
        return 2;
      }
      p->step = v;
    } else if (strcmp(flag, "--n-head=") == 0) {
      char *end;
      errno = 0;
      long v = strtol(val, &end, 10);
      if (errno || end == val || *end || v < 1 || v > 65536) {
        fprintf(stderr, "dtrain ckpt %s: --n-head '%s' is not a head count (1 .. 65536)\n", s->name, val);
        return 2;
      }
      p->n_head = (int)v;
    } else if (strcmp(flag, "--layout=") == 0) {
      dtr__gpt_wlayout l;
      if (dtr__gpt_layout_parse(val, &l) != DTR_OK) {
        fprintf(stderr, "dtrain ckpt %s: --layout '%s': expected dtrain or hf-gpt2\n", s->name, val);
        return 2;
      }
      p->layout = val;
    } else if (strcmp(flag, "--dtype=") == 0) {
      dtr_dtype t;
      if (dtr_dtype_parse(val, &t) != DTR_OK ||
          (t != DTR_F32 && t != DTR_BF16 && t != DTR_F16 && t != DTR_F64)) {
        fprintf(stderr, "dtrain ckpt %s: --dtype '%s': expected f32, bf16, f16 or f64\n", s->name, val);
        return 2;
      }
      p->dtype = val;
    } else if (strcmp(flag, "--job-id=") == 0) {
      p->job_id = val;
    } else if (strcmp(flag, "--chunks") == 0) {
      p->chunks = 1;
    } else if (strcmp(flag, "--blobs") == 0) {
      p->blobs = 1;
    }
  }
  if (npos < s->npos) {
    fprintf(stderr, "dtrain ckpt %s: missing %s (try 'dtrain ckpt %s --help')\n", s->name,
            npos == 0 && strcmp(s->name, "import") == 0 ? "the input IN.safetensors"
            : npos == 0                                 ? "the checkpoint directory DIR"
            : strcmp(s->name, "export") == 0            ? "the output file OUT.safetensors"
                                                        : "the checkpoint directory DIR",
            s->name);
    return 2;
  }
  return 0;
}

/* The model's head count for an export --layout: the run's recipe.yaml in the directory above DIR, when
 * its checkpoint.dir is DIR. 0 with why (err) otherwise. */
static int n_head_of_run(const char *dir, char *err, size_t errcap) {
  char real[PATH_MAX], parent[PATH_MAX], recipe[PATH_MAX + 16], ck[PATH_MAX];
  if (!realpath(dir, real)) {
    (void)dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %s", dir, strerror(errno));
    return 0;
  }
  snprintf(parent, sizeof parent, "%s", real);
  snprintf(recipe, sizeof recipe, "%s/recipe.yaml", dirname(parent));
  static dtr_recipe r;
  char e[2048];
  if (access(recipe, R_OK) != 0) {
    (void)dtr__fail(err, errcap, DTR_ERR_INVALID, "no run recipe %s beside it", recipe);
    return 0;
  }
  if (dtr_recipe_load(recipe, NULL, 0, 0, &r, e, sizeof e) != DTR_OK) {
    (void)dtr__fail(err, errcap, DTR_ERR_INVALID, "the run recipe does not load: %s", e);
    return 0;
  }
  if (!realpath(r.checkpoint.dir, ck) || strcmp(ck, real) != 0) {
    (void)dtr__fail(err, errcap, DTR_ERR_INVALID, "%s saves to %s, not to %s", recipe, r.checkpoint.dir,
                    real);
    return 0;
  }
  return r.model.n_head;
}

/* export with its options: --layout through runtime/model/gpt_weights.h's map; OUT a directory. */
static dtr_result export_cmd(const parsed *p, char *err, size_t errcap) {
  dtr__ckpt_export_opts o = {.blobs = p->blobs, .dtype = -1};
  dtr_dtype t;
  if (p->dtype && dtr_dtype_parse(p->dtype, &t) == DTR_OK) o.dtype = (int)t;
  if (!p->layout) {
    if (p->n_head) return dtr__fail(err, errcap, DTR_ERR_INVALID, "--n-head goes with --layout");
    return dtr__ckpt_tool_export(p->pos[0], p->step, p->pos[1], &o, stdout, err, errcap);
  }
  dtr__gpt_wlayout l = DTR__GPT_LAYOUT_DTRAIN;
  dtr__gpt_layout_parse(p->layout, &l);
  if (p->blobs)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "--blobs writes the run's state; --layout the model's weights alone: not both");
  int n_head = p->n_head;
  if (!n_head) {
    char why[2600];
    n_head = n_head_of_run(p->pos[0], why, sizeof why);
    if (!n_head)
      return dtr__fail(
          err, errcap, DTR_ERR_INVALID,
          "--layout %s needs the model's head count: pass --n-head H (the recipe's model.n_head); "
          "%s",
          p->layout, why);
  }
  char path[PATH_MAX + 32], dirpath[PATH_MAX];
  const char *out = p->pos[1];
  size_t ol = strlen(out);
  struct stat st;
  int is_dir = (ol > 0 && out[ol - 1] == '/') || (stat(out, &st) == 0 && S_ISDIR(st.st_mode));
  snprintf(path, sizeof path, "%s", out);
  if (is_dir) {
    snprintf(dirpath, sizeof dirpath, "%s", out);
    if (dtr__mkdir_p(dirpath, 0777) != 0)
      return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: %s", dirpath, strerror(errno));
    snprintf(path, sizeof path, "%s%smodel.safetensors", out, out[ol - 1] == '/' ? "" : "/");
  }
  dtr__gpt_export *x = NULL;
  DTR_CHECK(dtr__gpt_export_create(l, n_head, &x, err, errcap));
  dtr__ckpt_export_map map = dtr__gpt_export_map(x);
  o.map = &map;
  dtr_result rc = dtr__ckpt_tool_export(p->pos[0], p->step, path, &o, stdout, err, errcap);
  if (rc == DTR_OK && is_dir && l == DTR__GPT_LAYOUT_HF_GPT2) {
    dtr__gpt_config c = dtr__gpt_export_config(x);
    char cj[PATH_MAX + 32];
    snprintf(cj, sizeof cj, "%s%sconfig.json", out, out[ol - 1] == '/' ? "" : "/");
    rc = dtr__gpt_hf_config_write(&c, cj, err, errcap);
    if (rc == DTR_OK)
      printf("wrote %s (GPT2Config: n_layer %d, n_head %d, n_embd %d)\n", cj, c.n_layer, c.n_head, c.n_embd);
  }
  dtr__gpt_export_destroy(x);
  return rc;
}

int dtr__cmd_ckpt(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  const sub *s = NULL;
  for (int i = 0; i < NSUBS && !s; i++)
    if (strcmp(SUBS[i].name, cmd) == 0) s = &SUBS[i];
  if (!s) {
    fprintf(stderr, "dtrain ckpt: unknown command '%s' (try 'dtrain ckpt --help')\n", cmd);
    return 2;
  }
  parsed p = {.step = -1};
  int rc = parse(s, argc - 1, argv + 1, &p);
  if (rc) return rc < 0 ? 0 : rc;
  char err[2048] = "";
  dtr_result r = DTR_OK;
  if (strcmp(cmd, "ls") == 0)
    r = dtr__ckpt_tool_ls(p.pos[0], stdout, err, sizeof err);
  else if (strcmp(cmd, "verify") == 0)
    r = dtr__ckpt_tool_verify(p.pos[0], p.step, stdout, err, sizeof err);
  else if (strcmp(cmd, "inspect") == 0)
    r = dtr__ckpt_tool_inspect(p.pos[0], p.step, p.chunks, stdout, err, sizeof err);
  else if (strcmp(cmd, "export") == 0)
    r = export_cmd(&p, err, sizeof err);
  else
    r = dtr__ckpt_tool_import(p.pos[0], p.pos[1], p.step < 0 ? 0 : p.step, p.job_id, stdout, err, sizeof err);
  fflush(stdout);
  if (r != DTR_OK) {
    fprintf(stderr, "dtrain ckpt %s: %s\n", cmd, err[0] ? err : dtr_strerror(r));
    return 1;
  }
  return 0;
}
