/* `dtrain launch` flags: torchrun's spellings parsed into one validated struct, from one table that
 * `dtrain run` reads too. Nothing here starts a process or touches the network, so the parser is
 * unit-tested on its own (tests/unit/test_launch_args.c). */
#ifndef DTRAIN_LAUNCHER_LAUNCH_ARGS_H
#define DTRAIN_LAUNCHER_LAUNCH_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "dtrain/common.h"

#define DTR_LAUNCH_MAX_STR 512
#define DTR_LAUNCH_DEFAULT_RDZV_PORT 29400
#define DTR_LAUNCH_DEFAULT_WORKER_TIMEOUT 180
#define DTR_LAUNCH_DEFAULT_WORKER_START_TIMEOUT 900

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
  int max_restarts;            /* default 0 */
  double monitor_interval;     /* seconds, default 0.1 */
  double rdzv_timeout;         /* seconds, default 900 */
  double last_call;            /* seconds; -1: DTRAIN_RDZV_LAST_CALL_MS or 1 s */
  double grace_period;         /* seconds, default 5 */
  double worker_timeout;       /* seconds without progress before a rank is hung (default 180; 0: off) */
  double worker_start_timeout; /* the same before its first step and in slow phases (default 900; 0: off) */
  double stop_timeout;         /* seconds the workers get to stop after a stop request, default 60 */
  int max_requeues;            /* Slurm: requeue a stopped job while SLURM_RESTART_COUNT is below */
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
  int dry_run;                    /* --dry-run: check the flags and the program, say what would start */
  int warned_standalone_endpoint; /* --standalone overrode --rdzv-endpoint (caller may warn) */
  int prog_argc;
  char **prog_argv; /* points into the caller's argv; NULL-terminated like argv */
} dtr_launch_args;

/* What follows a flag, and how it is checked before it is stored. */
typedef enum dtr__launch_value {
  DTR__LAUNCH_SWITCH,    /* no value: sets the int member to 1 */
  DTR__LAUNCH_STRING,    /* a non-empty string that fits the char array member */
  DTR__LAUNCH_ID,        /* a STRING of letters, digits, '.', '_' and '-', not "." or ".." */
  DTR__LAUNCH_CHOICE,    /* one of the words in choices, copied to the char array member if there is one */
  DTR__LAUNCH_INT,       /* an integer in [lo, hi] */
  DTR__LAUNCH_SECONDS,   /* a number of seconds in [lo, hi] */
  DTR__LAUNCH_NPROC,     /* N, cpu, gpu or auto, resolved to a count (dtr__launch_parse_nproc) */
  DTR__LAUNCH_NNODES,    /* N or MIN:MAX: sets nnodes_min and nnodes_max */
  DTR__LAUNCH_RDZV_CONF, /* KEY=VALUE,...: sets rdzv_timeout and last_call */
} dtr__launch_value;

/* One flag of `dtrain launch`. `dtrain run` takes the same flags (all but the launch_only ones): those
 * with a recipe_key become overrides of the recipe's launch section, the others go on to launch. */
typedef struct dtr__launch_flag {
  const char *name; /* dash spelling without the leading "--" */
  char shortname;   /* 0 when none */
  dtr__launch_value value;
  size_t field, field_size; /* offsetof and sizeof the dtr_launch_args member it sets (0, 0: none) */
  double lo, hi;            /* INT and SECONDS: the accepted range */
  const char *what;         /* INT, SECONDS and CHOICE: the message says "--NAME: 'VALUE' is not WHAT" */
  const char *choices;      /* CHOICE: the accepted words, separated by spaces */
  const char *recipe_key;   /* the recipe key it overrides under `dtrain run`; NULL: run passes it on */
  int launch_only;          /* `dtrain run` does not take it */
} dtr__launch_flag;

/* Read the flag at argv[*i], a word that starts with '-': --NAME, --NAME=VALUE, --NAME VALUE (NAME with
 * '-' or '_', torchrun's spellings), -X, -XVALUE, -X=VALUE, -X VALUE. On DTR_OK *f is the flag, or NULL
 * when the word names none (of `dtrain run`'s, with for_run; the caller words that itself, *i unmoved),
 * *value its value (NULL for a switch) and *i the last word used. DTR_ERR_INVALID: a switch with a
 * value or a flag without one; err says which (no command prefix). */
dtr_result dtr__launch_flag_read(int argc, char **argv, int *i, int for_run, const dtr__launch_flag **f,
                                 const char **value, char *err, size_t cap);

/* Parse argv (argv[0] is "launch") into *a. On failure returns DTR_ERR_INVALID and err holds one line
 * naming the flag and what is wrong with it (no "dtrain launch:" prefix). When -h/--help appears,
 * returns DTR_OK with a->help set and everything else unvalidated. */
dtr_result dtr__launch_args_parse(int argc, char **argv, dtr_launch_args *a, char *err, size_t cap);

/* The full `dtrain launch --help` text. */
void dtr__launch_usage(FILE *f);

/* Resolve an --nproc-per-node value: N, "cpu", "gpu" or "auto". Exposed for tests. */
dtr_result dtr__launch_parse_nproc(const char *v, int *out, char *err, size_t cap);

#endif
