/* The failure record: which rank failed first, how, and what it printed last. It travels between
 * agents as JSON in the store (the "fail" event), lands in the error file in the same JSON, and is
 * printed on the console by every agent when the job gives up. */
#ifndef DTRAIN_LAUNCHER_REPORT_H
#define DTRAIN_LAUNCHER_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"
#include "launcher/output.h"

typedef struct dtr__failure {
  char kind[16]; /* "worker" (a rank exited badly), "hung" (a rank's progress stopped) or "node" (an agent
                    stopped heartbeating) */
  int node_rank;
  char host[256];
  int rank, local_rank; /* -1 for a node failure */
  int exit_code;        /* valid when signal == 0 */
  int signal;           /* > 0: killed by this signal */
  int pid;
  int restart_count;
  int attempt;
  char run_id[129];
  double time; /* seconds since the epoch */
  /* from the rank's progress page (docs/environment.md), when it reported */
  int64_t step;           /* the step it worked on, -1: unknown */
  char phase[64];         /* "" when unknown */
  char reason[256];       /* what the rank said before exiting ("" when nothing) */
  double idle_s, limit_s; /* hung: seconds without progress, and the limit it passed */
  char dump[1024];        /* hung: the file holding its thread dump ("" when none) */
  int nlines;
  char lines[DTR_OUT_TAIL_LINES][DTR_OUT_TAIL_LINE_MAX + 1];
} dtr__failure;

/* The exit code dtrain reports for this failure: the rank's code, 128+signal, 1 for a lost node or a
 * hung rank. */
int dtr__failure_exit_code(const dtr__failure *f);
/* The rank said the failure will recur: it exited with DTR_EXIT_PERMANENT (80). */
int dtr__failure_permanent(const dtr__failure *f);
/* Two failures the same way at the same known step: the same exit code (from any rank: which rank
 * reports first is a race), or the same signal or hang on the same rank. What a restart would repeat. */
int dtr__failure_same(const dtr__failure *a, const dtr__failure *b);
/* "exited with code 3" / "was killed by SIGKILL (signal 9)" / "stopped heartbeating". */
void dtr__failure_describe(const dtr__failure *f, char *out, size_t cap);
/* JSON text, malloc'ed (caller frees); NULL when out of memory. */
char *dtr__failure_to_json(const dtr__failure *f);
/* Parse what dtr__failure_to_json wrote. Unknown keys are skipped. DTR_ERR_PROTOCOL when malformed. */
dtr_result dtr__failure_from_json(const char *json, size_t len, dtr__failure *f);
/* The console report, several "dtrain error: ..." lines on stderr. */
void dtr__failure_print(const dtr__failure *f);
/* Write the JSON to path (parent directories created), atomically via a temporary file. */
dtr_result dtr__failure_write_file(const dtr__failure *f, const char *path, char *err, size_t cap);

#endif
