/* `dtrain ckpt`: the checkpoint tools (ls, verify, inspect, export, import). Only flags, help texts and
 * exit codes live here (0 success, 1 a failure naming its culprit, 2 bad usage); the work is in
 * checkpoint/ckpt_tools.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ckpt_tools.h"
#include "launcher/commands.h"

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
      "  export DIR OUT.safetensors [--step N] [--blobs]\n"
      "                                      write the whole tensors to a safetensors file\n"
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
  const char *flags[3]; /* accepted flags; those ending in '=' take a value */
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
     {"--step=", "--blobs", NULL},
     "usage: dtrain ckpt export DIR OUT.safetensors [--step N] [--blobs]\n"
     "\n"
     "Reassemble every tensor of one step (default: the latest committed) whole, whatever layout wrote\n"
     "it, and write them with their dtypes (F32, F64, F16, BF16, I32, I64, U8) to a safetensors file\n"
     "that Python's safetensors or torch can load. Metadata: format=pt, dtrain_step, dtrain_job_id,\n"
     "dtrain_world, dtrain_created. The file appears only when complete.\n"
     "\n"
     "Options:\n"
     "  --step N   this step instead of the latest\n"
     "  --blobs    also write each rank's blobs as U8 tensors named __blob__/<name>/rank_<r>\n"},
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
  const char *job_id;
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
    for (int k = 0; k < 3 && s->flags[k] && !flag; k++) {
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
    r = dtr__ckpt_tool_export(p.pos[0], p.step, p.pos[1], p.blobs, stdout, err, sizeof err);
  else
    r = dtr__ckpt_tool_import(p.pos[0], p.pos[1], p.step < 0 ? 0 : p.step, p.job_id, stdout, err, sizeof err);
  fflush(stdout);
  if (r != DTR_OK) {
    fprintf(stderr, "dtrain ckpt %s: %s\n", cmd, err[0] ? err : dtr_strerror(r));
    return 1;
  }
  return 0;
}
