/* The agent's watch over its local workers' progress pages (common/progress.h): one page per local
 * rank and attempt, created before the spawn and passed in DTRAIN_PROGRESS_FILE, checked every monitor
 * interval. A worker that reported once and then stops moving for the worker timeout (the start-up
 * allowance before its first step and in slow phases) is hung, unless it waits inside a collective
 * operation while still running: then it is waiting for a peer, and the peer is the one to blame. A
 * stopped process (SIGSTOP) is hung wherever it stopped. Used only from the agent's main thread. */
#ifndef DTRAIN_LAUNCHER_WATCHDOG_H
#define DTRAIN_LAUNCHER_WATCHDOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/progress.h"
#include "dtrain/common.h"

typedef struct dtr__watchdog dtr__watchdog;

/* A private directory for the pages of nworkers ranks (under /dev/shm when it can be written, else
 * TMPDIR or /tmp). timeout_s and start_timeout_s: the two limits (<= 0: that limit is off). */
dtr_result dtr__watchdog_create(const char *run_id, int nworkers, double timeout_s, double start_timeout_s,
                                dtr__watchdog **out, char *err, size_t cap);
/* Remove every page and the directory. NULL is fine. */
void dtr__watchdog_destroy(dtr__watchdog *w);

/* Fresh pages for a new attempt of n local ranks (n <= nworkers); now_ms starts their clocks. */
dtr_result dtr__watchdog_arm(dtr__watchdog *w, int n, int64_t now_ms, char *err, size_t cap);
/* The page path of local rank lr for DTRAIN_PROGRESS_FILE. */
const char *dtr__watchdog_path(const dtr__watchdog *w, int lr);
/* What local rank lr reported last (zeroes when unarmed). */
void dtr__watchdog_view(const dtr__watchdog *w, int lr, dtr__progress_view *v);
/* Unmap and remove the pages of the attempt. */
void dtr__watchdog_disarm(dtr__watchdog *w);

typedef struct dtr__hang {
  int local_rank;
  pid_t pid;       /* the process that reported (the page's pid) */
  double idle_s;   /* seconds since its last report */
  double limit_s;  /* the limit it passed */
  int stopped;     /* the process is stopped (SIGSTOP, a debugger) */
  int start_limit; /* the limit was the start-up allowance */
  dtr__progress_view view;
} dtr__hang;

/* Look at the pages of the ranks whose running[lr] is non-zero; returns 1 and fills *h for the rank
 * that has been idle longest past its limit, 0 when none is hung. */
int dtr__watchdog_check(dtr__watchdog *w, const int *running, int64_t now_ms, dtr__hang *h);
/* Ask local rank lr (pid) for a thread dump into path when its page says it can answer (a stopped
 * process is continued for it), and wait up to timeout_ms for the dump to complete. Returns 1 when it
 * completed, 0 otherwise. */
int dtr__watchdog_dump(dtr__watchdog *w, int lr, pid_t pid, int stopped, const char *path, int timeout_ms);
/* The directory of the pages (for dumps when there is no log directory). */
const char *dtr__watchdog_dir(const dtr__watchdog *w);

#endif
