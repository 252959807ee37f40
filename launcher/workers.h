/* Local workers: the environment they get, fork+exec into their own process group with stdout and
 * stderr on pipes, signals to their groups, and reaping. Used only from the agent's main thread. */
#ifndef DTRAIN_LAUNCHER_WORKERS_H
#define DTRAIN_LAUNCHER_WORKERS_H

#include <stddef.h>
#include <sys/types.h>

#include "dtrain/common.h"
#include "launcher/output.h"

/* A growable "KEY=VALUE" array, NULL-terminated for execve. */
typedef struct dtr__env {
  char **v;
  int n, cap;
} dtr__env;

/* Copy of environ (or of another env when from != NULL). */
dtr_result dtr__env_init(dtr__env *e, const dtr__env *from);
/* Set (replace or append) KEY=VALUE. */
dtr_result dtr__env_set(dtr__env *e, const char *key, const char *value);
/* Set only if KEY is absent. */
dtr_result dtr__env_default(dtr__env *e, const char *key, const char *value);
/* Pointer to the value of KEY or NULL. */
const char *dtr__env_get(const dtr__env *e, const char *key);
void dtr__env_free(dtr__env *e);

/* Find name like execvp would: as a path when it contains '/', else through $PATH. On success out
 * holds a path that exists and is executable. DTR_ERR_NOT_FOUND when it does not exist anywhere,
 * DTR_ERR_INVALID when it exists but cannot be executed (a directory, no x bit); err says which. */
dtr_result dtr__find_program(const char *name, char *out, size_t outcap, char *err, size_t cap);

typedef struct dtr__worker {
  int local_rank, rank;
  pid_t pid;   /* > 0 once spawned; the process group id too */
  int fd[2];   /* read ends of its stdout/stderr pipes; -1 once closed */
  int running; /* spawned and not yet reaped */
  int status;  /* wait status once reaped */
  dtr__out_rank *out;
} dtr__worker;

/* Fork and exec path with argv and envp: own process group, PR_SET_PDEATHSIG=SIGKILL, signal mask and
 * SIGPIPE reset, stdout/stderr to new pipes (read ends non-blocking in w->fd). */
dtr_result dtr__worker_spawn(dtr__worker *w, const char *path, char *const argv[], char *const envp[],
                             char *err, size_t cap);
/* Send sig to the worker's whole process group (no-op when it never started). */
void dtr__worker_signal(const dtr__worker *w, int sig);
/* waitpid(WNOHANG); returns 1 when it was reaped now (w->status set, running cleared). */
int dtr__worker_reap(dtr__worker *w);
/* Read what is left in its pipes (bounded), flush the partial lines, close the pipes. */
void dtr__worker_close_pipes(dtr__worker *w);

#endif
