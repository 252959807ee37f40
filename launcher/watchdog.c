/* The agent's progress watch (watchdog.h). Every check is a few loads from shared pages; a hung rank is
 * only ever decided from what its own page says and from /proc (stopped or not), never from its
 * peers, so the rank named is the one that stopped moving. */
#define _GNU_SOURCE
#include "launcher/watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/param.h"

typedef struct watched {
  dtr__progress_page *page;
  uint64_t counter;
  int64_t changed_ms;
} watched;

struct dtr__watchdog {
  char dir[PATH_MAX];
  int cap, n;
  double timeout_s, start_timeout_s;
  watched *w;
  char (*paths)[PATH_MAX];
};

static int usable_dir(const char *d) {
  struct stat st;
  return d && *d && stat(d, &st) == 0 && S_ISDIR(st.st_mode) && access(d, W_OK | X_OK) == 0;
}

dtr_result dtr__watchdog_create(const char *run_id, int nworkers, double timeout_s, double start_timeout_s,
                                dtr__watchdog **out, char *err, size_t cap) {
  *out = NULL;
  dtr__watchdog *w = calloc(1, sizeof *w);
  if (!w) return dtr__fail(err, cap, DTR_ERR_NOMEM, "out of memory");
  w->cap = nworkers;
  w->timeout_s = timeout_s;
  w->start_timeout_s = start_timeout_s;
  w->w = calloc((size_t)nworkers, sizeof *w->w);
  w->paths = calloc((size_t)nworkers, sizeof *w->paths);
  if (!w->w || !w->paths) {
    dtr__watchdog_destroy(w);
    return dtr__fail(err, cap, DTR_ERR_NOMEM, "out of memory");
  }
  /* /dev/shm: the pages are memory, never written back to a disk */
  const char *base = usable_dir("/dev/shm") ? "/dev/shm" : dtr__param_str("TMPDIR", "/tmp");
  if (strlen(base) > 1024) base = "/tmp";
  snprintf(w->dir, sizeof w->dir, "%.1024s/dtrain-%.64s-%d-XXXXXX", base, run_id, (int)getpid());
  if (!mkdtemp(w->dir)) {
    int e = errno;
    w->dir[0] = '\0';
    dtr__watchdog_destroy(w);
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create a directory for the progress pages in %s: %s",
                     base, strerror(e));
  }
  for (int i = 0; i < nworkers; i++) snprintf(w->paths[i], PATH_MAX, "%.2048s/rank_%d.progress", w->dir, i);
  *out = w;
  return DTR_OK;
}

void dtr__watchdog_disarm(dtr__watchdog *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) {
    dtr__progress_unmap(w->w[i].page);
    w->w[i].page = NULL;
    unlink(w->paths[i]);
  }
  w->n = 0;
}

void dtr__watchdog_destroy(dtr__watchdog *w) {
  if (!w) return;
  dtr__watchdog_disarm(w);
  if (w->dir[0]) rmdir(w->dir);
  free(w->w);
  free(w->paths);
  free(w);
}

dtr_result dtr__watchdog_arm(dtr__watchdog *w, int n, int64_t now_ms, char *err, size_t cap) {
  dtr__watchdog_disarm(w);
  if (n > w->cap) return dtr__fail(err, cap, DTR_ERR_INTERNAL, "watchdog: %d ranks for %d pages", n, w->cap);
  for (int i = 0; i < n; i++) {
    dtr_result rc = dtr__progress_create(w->paths[i], &w->w[i].page, err, cap);
    w->n = i + 1;
    if (rc) {
      w->n = i;
      return rc;
    }
    w->w[i].counter = 0;
    w->w[i].changed_ms = now_ms;
  }
  w->n = n;
  return DTR_OK;
}

const char *dtr__watchdog_path(const dtr__watchdog *w, int lr) {
  return w->paths[lr];
}

const char *dtr__watchdog_dir(const dtr__watchdog *w) {
  return w->dir;
}

void dtr__watchdog_view(const dtr__watchdog *w, int lr, dtr__progress_view *v) {
  memset(v, 0, sizeof *v);
  v->step = -1;
  if (w && lr >= 0 && lr < w->n && w->w[lr].page) dtr__progress_read(w->w[lr].page, v);
}

/* The process is stopped (state T) or traced-stopped (t), from /proc/PID/stat. */
static int is_stopped(pid_t pid) {
  char p[64], buf[512];
  snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char *rp = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
  return rp && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
}

int dtr__watchdog_check(dtr__watchdog *w, const int *running, int64_t now_ms, dtr__hang *h) {
  int found = 0;
  double worst = 0;
  for (int i = 0; i < w->n; i++) {
    watched *x = &w->w[i];
    if (!running[i] || !x->page) continue;
    uint64_t c = __atomic_load_n(&x->page->counter, __ATOMIC_ACQUIRE);
    uint32_t flags = __atomic_load_n(&x->page->flags, __ATOMIC_ACQUIRE);
    if (c != x->counter) {
      x->counter = c;
      x->changed_ms = now_ms;
      continue;
    }
    if (!(flags & DTR__PG_ATTACHED)) continue; /* a program that never reports is never judged */
    dtr__progress_view v;
    dtr__progress_read(x->page, &v);
    int start = v.slow || !(v.flags & DTR__PG_STEPPED);
    double limit = start ? w->start_timeout_s : w->timeout_s;
    double idle = (double)(now_ms - x->changed_ms) / 1000.0;
    if (limit <= 0 || idle <= limit) continue;
    pid_t pid = (pid_t)v.pid;
    int stopped = pid > 0 && is_stopped(pid);
    if (v.waiting > 0 && !stopped) continue; /* waits for a peer: the peer is the one to blame */
    if (found && idle - limit <= worst) continue;
    found = 1;
    worst = idle - limit;
    h->local_rank = i;
    h->pid = pid;
    h->idle_s = idle;
    h->limit_s = limit;
    h->stopped = stopped;
    h->start_limit = start;
    h->view = v;
  }
  return found;
}

int dtr__watchdog_dump(dtr__watchdog *w, int lr, pid_t pid, int stopped, const char *path, int timeout_ms) {
  if (lr < 0 || lr >= w->n || !w->w[lr].page || pid <= 0) return 0;
  dtr__progress_page *p = w->w[lr].page;
  if (!(__atomic_load_n(&p->flags, __ATOMIC_ACQUIRE) & DTR__PG_DUMPS)) return 0;
  uint32_t before = __atomic_load_n(&p->dumped, __ATOMIC_ACQUIRE);
  char buf[sizeof p->dump_path];
  memset(buf, 0, sizeof buf);
  snprintf(buf, sizeof buf, "%s", path);
  memcpy(p->dump_path, buf, sizeof buf);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  if (kill(pid, SIGURG) != 0) return 0;
  if (stopped) kill(pid, SIGCONT); /* the handler runs once the process runs */
  int64_t deadline = dtr__now_ms() + timeout_ms;
  while (__atomic_load_n(&p->dumped, __ATOMIC_ACQUIRE) == before && dtr__ms_left(deadline) > 0) {
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
  }
  return __atomic_load_n(&p->dumped, __ATOMIC_ACQUIRE) != before;
}
