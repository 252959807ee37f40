/* The orphan guard. prctl(PR_SET_PDEATHSIG) takes a worker down with the agent, but not what the
 * worker started (a data loader, a shell's children). The guard is a tiny process forked by the
 * agent before anything else; it lives in its own session, ignores the job's signals, and learns each
 * worker's process group over a pipe. When that pipe reaches EOF - the agent exited or was SIGKILLed -
 * it SIGKILLs every process group it still knows, then exits. */
#ifndef DTRAIN_LAUNCHER_ORPHAN_GUARD_H
#define DTRAIN_LAUNCHER_ORPHAN_GUARD_H

#include <sys/types.h>

#include "dtrain/common.h"

typedef struct dtr__orphan_guard {
  int fd; /* write end of the pipe; -1 when no guard runs */
  pid_t pid;
} dtr__orphan_guard;

/* Fork the guard. Call before any thread starts. */
dtr_result dtr__orphan_guard_start(dtr__orphan_guard *g);
/* Tell it about a new process group / that a group is gone. Never blocks for long; errors ignored. */
void dtr__orphan_guard_add(dtr__orphan_guard *g, pid_t pgid);
void dtr__orphan_guard_remove(dtr__orphan_guard *g, pid_t pgid);
/* Close the pipe (the guard kills what is left and exits) and reap it. */
void dtr__orphan_guard_stop(dtr__orphan_guard *g);

#endif
