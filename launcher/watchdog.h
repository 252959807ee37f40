/* The orphan guard. prctl(PR_SET_PDEATHSIG) takes a worker down with the agent, but not what the
 * worker started (a data loader, a shell's children). The watchdog is a tiny process forked by the
 * agent before anything else; it lives in its own session, ignores the job's signals, and learns each
 * worker's process group over a pipe. When that pipe reaches EOF - the agent exited or was SIGKILLed -
 * it SIGKILLs every process group it still knows, then exits. */
#ifndef DTRAIN_LAUNCHER_WATCHDOG_H
#define DTRAIN_LAUNCHER_WATCHDOG_H

#include <sys/types.h>

#include "dtrain/common.h"

typedef struct dtr__watchdog {
  int fd; /* write end of the pipe; -1 when no watchdog runs */
  pid_t pid;
} dtr__watchdog;

/* Fork the watchdog. Call before any thread starts. */
dtr_result dtr__watchdog_start(dtr__watchdog *w);
/* Tell it about a new process group / that a group is gone. Never blocks for long; errors ignored. */
void dtr__watchdog_add(dtr__watchdog *w, pid_t pgid);
void dtr__watchdog_remove(dtr__watchdog *w, pid_t pgid);
/* Close the pipe (the watchdog kills what is left and exits) and reap it. */
void dtr__watchdog_stop(dtr__watchdog *w);

#endif
