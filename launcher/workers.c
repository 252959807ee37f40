/* Spawning and reaping workers. The child between fork and exec only makes async-signal-safe calls:
 * the agent has threads (store server, event listener), so everything is prepared before fork. */
#define _GNU_SOURCE
#include "launcher/workers.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/check.h"
#include "common/log.h"
#include "common/path_search.h"

extern char **environ;

static dtr_result env_push(dtr__env *e, char *kv) {
  if (e->n + 2 > e->cap) {
    int nc = e->cap ? e->cap * 2 : 64;
    char **nv = realloc(e->v, (size_t)nc * sizeof *nv);
    if (!nv) {
      free(kv);
      return DTR_ERR_NOMEM;
    }
    e->v = nv;
    e->cap = nc;
  }
  e->v[e->n++] = kv;
  e->v[e->n] = NULL;
  return DTR_OK;
}

dtr_result dtr__env_init(dtr__env *e, const dtr__env *from) {
  memset(e, 0, sizeof *e);
  char **src = from ? from->v : environ;
  if (src)
    for (char **p = src; *p; p++) {
      char *kv = strdup(*p);
      if (!kv) return DTR_ERR_NOMEM;
      DTR_CHECK(env_push(e, kv));
    }
  if (!e->v) {
    e->v = calloc(1, sizeof *e->v);
    if (!e->v) return DTR_ERR_NOMEM;
    e->cap = 1;
  }
  return DTR_OK;
}

static int find_key(const dtr__env *e, const char *key) {
  size_t kl = strlen(key);
  for (int i = 0; i < e->n; i++)
    if (strncmp(e->v[i], key, kl) == 0 && e->v[i][kl] == '=') return i;
  return -1;
}

dtr_result dtr__env_set(dtr__env *e, const char *key, const char *value) {
  size_t l = strlen(key) + strlen(value) + 2;
  char *kv = malloc(l);
  if (!kv) return DTR_ERR_NOMEM;
  snprintf(kv, l, "%s=%s", key, value);
  int i = find_key(e, key);
  if (i >= 0) {
    free(e->v[i]);
    e->v[i] = kv;
    return DTR_OK;
  }
  return env_push(e, kv);
}

dtr_result dtr__env_default(dtr__env *e, const char *key, const char *value) {
  if (find_key(e, key) >= 0) return DTR_OK;
  return dtr__env_set(e, key, value);
}

const char *dtr__env_get(const dtr__env *e, const char *key) {
  int i = find_key(e, key);
  return i >= 0 ? e->v[i] + strlen(key) + 1 : NULL;
}

void dtr__env_free(dtr__env *e) {
  for (int i = 0; i < e->n; i++) free(e->v[i]);
  free(e->v);
  memset(e, 0, sizeof *e);
}

dtr_result dtr__find_program(const char *name, char *out, size_t outcap, char *err, size_t cap) {
  if (!*name) return dtr__fail(err, cap, DTR_ERR_NOT_FOUND, "the program name is empty");
  if (strchr(name, '/')) {
    if (dtr__executable(name) != 0) {
      int e = errno;
      if (e == ENOENT) return dtr__fail(err, cap, DTR_ERR_NOT_FOUND, "program '%s' does not exist", name);
      return dtr__fail(err, cap, DTR_ERR_INVALID, "program '%s' is %s", name,
                       e == EISDIR ? "a directory" : "not executable (no execute permission)");
    }
    if (strlen(name) >= outcap)
      return dtr__fail(err, cap, DTR_ERR_INVALID, "program path '%s' is too long", name);
    strcpy(out, name);
    return DTR_OK;
  }
  char found[PATH_MAX];
  if (dtr__find_in_path(name, found, sizeof found) != 0) {
    if (errno == EACCES)
      return dtr__fail(err, cap, DTR_ERR_INVALID, "program '%s' (found as %s) is not executable", name,
                       found);
    return dtr__fail(err, cap, DTR_ERR_NOT_FOUND, "program '%s' was not found in PATH", name);
  }
  if (strlen(found) >= outcap)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "program path '%s' is too long", found);
  strcpy(out, found);
  return DTR_OK;
}

dtr_result dtr__worker_spawn(dtr__worker *w, const char *path, char *const argv[], char *const envp[],
                             char *err, size_t cap) {
  int po[2] = {-1, -1}, pe[2] = {-1, -1};
  w->fd[0] = w->fd[1] = -1;
  w->pid = 0;
  w->running = 0;
  if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
    int e = errno;
    if (po[0] >= 0) close(po[0]), close(po[1]);
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "pipe for rank %d: %s", w->rank, strerror(e));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "fork for rank %d: %s", w->rank, strerror(e));
  }
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(137); /* the agent died between fork and prctl */
    dup2(po[1], 1);
    dup2(pe[1], 2);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(path, argv, envp);
    int e = errno;
    static const char msg1[] = "dtrain: cannot execute ";
    ssize_t r = write(2, msg1, sizeof msg1 - 1);
    r = write(2, path, strlen(path));
    const char *es = e == ENOENT   ? ": no such file\n"
                     : e == EACCES ? ": permission denied\n"
                                   : ": exec failed\n";
    r = write(2, es, strlen(es));
    (void)r;
    _exit(e == ENOENT ? 127 : 126);
  }
  setpgid(pid,
          pid); /* also here, so a signal sent right away reaches the group (EACCES after exec is fine) */
  close(po[1]);
  close(pe[1]);
  fcntl(po[0], F_SETFL, O_NONBLOCK);
  fcntl(pe[0], F_SETFL, O_NONBLOCK);
  w->fd[0] = po[0];
  w->fd[1] = pe[0];
  w->pid = pid;
  w->running = 1;
  w->status = 0;
  return DTR_OK;
}

void dtr__worker_signal(const dtr__worker *w, int sig) {
  if (w->pid > 0) {
    if (kill(-w->pid, sig) < 0 && w->running) kill(w->pid, sig); /* group not formed yet */
  }
}

int dtr__worker_reap(dtr__worker *w) {
  if (!w->running) return 0;
  int st;
  pid_t r;
  do r = waitpid(w->pid, &st, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == w->pid) {
    w->status = st;
    w->running = 0;
    return 1;
  }
  if (r < 0 && errno == ECHILD) { /* should not happen: somebody else reaped it */
    w->status = 0;
    w->running = 0;
    return 1;
  }
  return 0;
}

void dtr__worker_close_pipes(dtr__worker *w) {
  for (int s = 0; s < 2; s++) {
    if (w->fd[s] < 0) continue;
    if (w->out) dtr__out_rank_drain(w->out, s, w->fd[s]);
    close(w->fd[s]);
    w->fd[s] = -1;
  }
  if (w->out) dtr__out_rank_flush(w->out);
}
