/* `dtrain launch` flags: torchrun's spellings parsed into one validated struct. Nothing here starts a
 * process or touches the network, so the parser is unit-tested on its own (tests/unit/test_launch_args.c). */
#ifndef DTRAIN_LAUNCHER_LAUNCH_ARGS_H
#define DTRAIN_LAUNCHER_LAUNCH_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "dtrain/common.h"

#define DTR_LAUNCH_MAX_STR 512
#define DTR_LAUNCH_DEFAULT_RDZV_PORT 29400

typedef struct dtr_launch_args {
  int nnodes_min, nnodes_max;             /* --nnodes N or MIN:MAX (default 1) */
  int nproc_per_node;                     /* resolved count (cpu/gpu/auto already turned into a number) */
  int node_rank;                          /* --node-rank, -1 when not given */
  char rdzv_endpoint[DTR_LAUNCH_MAX_STR]; /* "" when not given */
  char rdzv_host[DTR_LAUNCH_MAX_STR];     /* parsed from rdzv_endpoint */
  int rdzv_port;                          /* parsed from rdzv_endpoint, 29400 when only HOST was given */
  char rdzv_id[129];                      /* "" when not given */
  char rdzv_backend[32];                  /* accepted for torchrun compatibility: c10d, static, dtrain */
  int standalone;
  int max_restarts;        /* default 0 */
  double monitor_interval; /* seconds, default 0.1 */
  double rdzv_timeout;     /* seconds, default 900 */
  double last_call;        /* seconds; -1: DTRAIN_RDZV_LAST_CALL_MS or 1 s */
  double grace_period;     /* seconds, default 5 */
  char log_dir[DTR_LAUNCH_MAX_STR];
  int tee;       /* 0-3: 1 stdout, 2 stderr, 3 both */
  int redirects; /* 0-3, same bits */
  char master_addr[DTR_LAUNCH_MAX_STR];
  int master_port; /* -1 when not given */
  char error_file[DTR_LAUNCH_MAX_STR];
  char role[64];                  /* ROLE_NAME, default "default" */
  int no_python;                  /* --no-python: run a .py program as is */
  int module;                     /* -m/--module: run `python -m PROGRAM` */
  int help;                       /* -h/--help was given: print usage, nothing else is valid */
  int warned_standalone_endpoint; /* --standalone overrode --rdzv-endpoint (caller may warn) */
  int prog_argc;
  char **prog_argv; /* points into the caller's argv; NULL-terminated like argv */
} dtr_launch_args;

/* Parse argv (argv[0] is "launch") into *a. On failure returns DTR_ERR_INVALID and err holds one line
 * naming the flag and what is wrong with it (no "dtrain launch:" prefix). When -h/--help appears,
 * returns DTR_OK with a->help set and everything else unvalidated. */
dtr_result dtr__launch_args_parse(int argc, char **argv, dtr_launch_args *a, char *err, size_t cap);

/* The full `dtrain launch --help` text. */
void dtr__launch_usage(FILE *f);

/* Resolve an --nproc-per-node value: N, "cpu", "gpu" or "auto". Exposed for tests. */
dtr_result dtr__launch_parse_nproc(const char *v, int *out, char *err, size_t cap);

#endif
