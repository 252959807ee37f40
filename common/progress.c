/* The progress page (progress.h): the agent creates and reads it, the worker maps it once and reports
 * into it. The worker's page is process-wide state by nature (one per process, named by the
 * environment like the log level), so it hangs off a static pointer set once under pthread_once. The
 * thread dump answers SIGURG with only async-signal-safe calls besides backtrace(), which is warmed up
 * when the handler is installed so that it does not allocate inside the handler. */
#define _GNU_SOURCE
#include "common/progress.h"

#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/param.h"
#include "dtrain/runtime.h"

/* ---------------------------------------------------------------- the agent's side */

dtr_result dtr__progress_create(const char *path, dtr__progress_page **out, char *err, size_t cap) {
  *out = NULL;
  unlink(path); /* a page of an earlier attempt must not be shared with a worker still holding it */
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create the progress page %s: %s", path,
                     strerror(errno));
  if (ftruncate(fd, DTR__PG_SIZE) != 0) {
    int e = errno;
    close(fd);
    unlink(path);
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot size the progress page %s: %s", path, strerror(e));
  }
  void *m = mmap(NULL, DTR__PG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (m == MAP_FAILED) {
    unlink(path);
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot map the progress page %s: %s", path, strerror(e));
  }
  dtr__progress_page *p = m;
  p->version = DTR__PG_VERSION;
  p->size = DTR__PG_SIZE;
  p->step = -1;
  __atomic_store_n(&p->magic, DTR__PG_MAGIC, __ATOMIC_RELEASE);
  *out = p;
  return DTR_OK;
}

void dtr__progress_unmap(dtr__progress_page *p) {
  if (p) munmap(p, DTR__PG_SIZE);
}

void dtr__progress_read(const dtr__progress_page *p, dtr__progress_view *v) {
  for (int tries = 0; tries < 4; tries++) {
    uint64_t c0 = __atomic_load_n(&p->counter, __ATOMIC_ACQUIRE);
    v->flags = __atomic_load_n(&p->flags, __ATOMIC_RELAXED);
    v->pid = __atomic_load_n(&p->pid, __ATOMIC_RELAXED);
    v->waiting = __atomic_load_n(&p->waiting, __ATOMIC_RELAXED);
    v->slow = __atomic_load_n(&p->slow, __ATOMIC_RELAXED);
    v->dumped = __atomic_load_n(&p->dumped, __ATOMIC_RELAXED);
    v->step = __atomic_load_n(&p->step, __ATOMIC_RELAXED);
    memcpy(v->phase, p->phase, sizeof v->phase);
    memcpy(v->reason, p->reason, sizeof v->reason);
    v->phase[sizeof v->phase - 1] = v->reason[sizeof v->reason - 1] = '\0';
    v->counter = c0;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&p->counter, __ATOMIC_RELAXED) == c0) return;
  }
}

/* ---------------------------------------------------------------- the worker's side */

static dtr__progress_page *self_page;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void attach(void) {
  const char *path = dtr__param_str(DTR__PG_ENV, NULL);
  if (!path) return;
  /* O_NONBLOCK: a FIFO put in its place must not hang the program; only a regular file is a page. */
  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  const char *why = NULL;
  if (fd < 0)
    why = strerror(errno);
  else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)DTR__PG_SIZE)
    why = "not a 4096-byte regular file";
  void *m = MAP_FAILED;
  if (!why && (m = mmap(NULL, DTR__PG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
    why = strerror(errno);
  if (fd >= 0) close(fd);
  dtr__progress_page *p = m == MAP_FAILED ? NULL : m;
  if (p && (__atomic_load_n(&p->magic, __ATOMIC_ACQUIRE) != DTR__PG_MAGIC || p->version != DTR__PG_VERSION))
    why = "wrong magic or version";
  uint32_t none = 0, me = (uint32_t)getpid();
  /* The first process of the worker to attach owns the page: a child that inherited the environment
   * reports nothing, so the agent never mixes two processes' progress. */
  if (p && !why && !__atomic_compare_exchange_n(&p->pid, &none, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
      none != me) {
    munmap(p, DTR__PG_SIZE);
    return;
  }
  if (why) {
    DTR_WARN("%s=%s: %s; progress is not reported (the agent cannot tell this rank is hung)", DTR__PG_ENV,
             path, why);
    if (p) munmap(p, DTR__PG_SIZE);
    return;
  }
  __atomic_fetch_or(&p->flags, DTR__PG_ATTACHED, __ATOMIC_RELEASE);
  self_page = p;
}

dtr__progress_page *dtr__progress_self(void) {
  pthread_once(&self_once, attach);
  return self_page;
}

/* Every report ends here: the fields first, then the counter with release order. */
static void bump(dtr__progress_page *p) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  __atomic_store_n(&p->updated_ns, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                   __ATOMIC_RELAXED);
  __atomic_fetch_add(&p->counter, 1, __ATOMIC_RELEASE);
}

static void set_phase(dtr__progress_page *p, const char *phase) {
  char buf[sizeof p->phase];
  memset(buf, 0, sizeof buf);
  snprintf(buf, sizeof buf, "%s", phase);
  memcpy(p->phase, buf, sizeof buf);
}

int dtr_progress_active(void) {
  return dtr__progress_self() != NULL;
}

void dtr_progress_step(int64_t step) {
  dtr__progress_page *p = dtr__progress_self();
  if (!p) return;
  __atomic_store_n(&p->step, step, __ATOMIC_RELAXED);
  if (strcmp(p->phase, "step") != 0) set_phase(p, "step");
  __atomic_store_n(&p->slow, 0, __ATOMIC_RELAXED);
  __atomic_fetch_or(&p->flags, DTR__PG_STEPPED, __ATOMIC_RELAXED);
  bump(p);
}

void dtr_progress_phase(const char *phase, int slow) {
  dtr__progress_page *p = dtr__progress_self();
  if (!p) return;
  set_phase(p, phase ? phase : "");
  __atomic_store_n(&p->slow, slow ? 1u : 0u, __ATOMIC_RELAXED);
  bump(p);
}

void dtr_progress_reason(const char *reason) {
  dtr__progress_page *p = dtr__progress_self();
  if (!p) return;
  char buf[sizeof p->reason];
  memset(buf, 0, sizeof buf);
  snprintf(buf, sizeof buf, "%s", reason ? reason : "");
  memcpy(p->reason, buf, sizeof buf);
  bump(p);
}

void dtr__progress_wait_begin(void) {
  dtr__progress_page *p = self_page; /* attached by then if it ever will be: no pthread_once per op */
  if (p) __atomic_fetch_add(&p->waiting, 1, __ATOMIC_RELAXED);
}

void dtr__progress_wait_end(void) {
  dtr__progress_page *p = self_page;
  if (p) __atomic_fetch_sub(&p->waiting, 1, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- the thread dump (SIGURG) */

static int dump_fd = -1;
static int dump_lock, dump_running, dump_pending;

static void put(int fd, const char *s) {
  (void)dtr__write_all(fd, s, strlen(s));
}

/* The decimal digits of v, NUL-terminated, at the end of b[0..cap); returns the first digit. */
static char *fmt_dec(char *b, size_t cap, unsigned long long v) {
  char *q = b + cap;
  *--q = '\0';
  do *--q = (char)('0' + v % 10);
  while ((v /= 10) && q > b);
  return q;
}

static void put_num(int fd, long long v) {
  char b[24];
  if (v < 0) put(fd, "-");
  put(fd, fmt_dec(b, sizeof b, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v));
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One thread's stack, under a spin lock (bounded: a thread that never lets go costs one second). */
static void dump_this_thread(int fd) {
  long long until = now_ms() + 1000;
  while (__atomic_exchange_n(&dump_lock, 1, __ATOMIC_ACQUIRE) && now_ms() < until) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  pid_t tid = (pid_t)syscall(SYS_gettid);
  char path[64] = "/proc/self/task/", name[32] = "?", num[24];
  const char *digits = fmt_dec(num, sizeof num, (unsigned long long)tid);
  size_t pl = strlen(path), dl = strlen(digits);
  memcpy(path + pl, digits, dl);
  memcpy(path + pl + dl, "/comm", 6);
  int cfd = open(path, O_RDONLY | O_CLOEXEC);
  if (cfd >= 0) {
    ssize_t n = read(cfd, name, sizeof name - 1);
    close(cfd);
    name[n > 0 ? n : 0] = '\0';
    char *nl = strchr(name, '\n');
    if (nl) *nl = '\0';
  }
  put(fd, "--- thread ");
  put_num(fd, tid);
  put(fd, " (");
  put(fd, name);
  put(fd, ")\n");
  void *frames[64];
  int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, fd);
  __atomic_store_n(&dump_lock, 0, __ATOMIC_RELEASE);
}

/* Ask every other thread of the process to dump itself; returns how many were asked. */
static int signal_other_threads(void) {
  int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  pid_t me = (pid_t)syscall(SYS_gettid), pid = getpid();
  char buf[4096];
  int asked = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
      } *d = (void *)(buf + off);
      off += d->reclen;
      long tid = 0;
      const char *s = d->name;
      for (; *s >= '0' && *s <= '9'; s++) tid = tid * 10 + (*s - '0');
      if (*s || tid <= 0 || tid == me) continue;
      __atomic_fetch_add(&dump_pending, 1, __ATOMIC_ACQ_REL);
      if (syscall(SYS_tgkill, pid, (pid_t)tid, SIGURG) == 0)
        asked++;
      else
        __atomic_fetch_sub(&dump_pending, 1, __ATOMIC_ACQ_REL);
    }
  }
  close(dfd);
  return asked;
}

static void on_dump_signal(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  int saved = errno;
  if (si->si_code == SI_TKILL && si->si_pid == getpid()) { /* a member: the initiator asked */
    if (__atomic_load_n(&dump_running, __ATOMIC_ACQUIRE)) dump_this_thread(dump_fd);
    __atomic_fetch_sub(&dump_pending, 1, __ATOMIC_ACQ_REL);
    errno = saved;
    return;
  }
  if (__atomic_exchange_n(&dump_running, 1, __ATOMIC_ACQ_REL)) {
    errno = saved;
    return;
  }
  dtr__progress_page *p = self_page;
  int fd = -1;
  if (p && p->dump_path[0]) {
    char path[sizeof p->dump_path];
    memcpy(path, p->dump_path, sizeof path);
    path[sizeof path - 1] = '\0';
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }
  dump_fd = fd >= 0 ? fd : 2;
  put(dump_fd, "dtrain: thread dump of pid ");
  put_num(dump_fd, getpid());
  if (p) {
    put(dump_fd, " in phase '");
    char ph[sizeof p->phase];
    memcpy(ph, p->phase, sizeof ph);
    ph[sizeof ph - 1] = '\0';
    put(dump_fd, ph);
    put(dump_fd, "' at step ");
    put_num(dump_fd, p->step);
  }
  put(dump_fd,
      ", asked for by the agent (frames: binary(function+offset) [address]; addr2line -f -e BINARY OFFSET "
      "names the functions that are not exported)\n");
  dump_this_thread(dump_fd);
  signal_other_threads();
  long long until = now_ms() + 2000;
  while (__atomic_load_n(&dump_pending, __ATOMIC_ACQUIRE) > 0 && now_ms() < until) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  int left = __atomic_load_n(&dump_pending, __ATOMIC_ACQUIRE);
  if (left > 0) {
    put(dump_fd, "--- ");
    put_num(dump_fd, left);
    put(dump_fd, " thread(s) did not answer within 2 s (signal blocked, or stuck in the kernel)\n");
  }
  put(dump_fd, "--- end of thread dump\n");
  if (fd >= 0) close(fd);
  dump_fd = -1;
  if (p) __atomic_fetch_add(&p->dumped, 1, __ATOMIC_RELEASE);
  __atomic_store_n(&dump_running, 0, __ATOMIC_RELEASE);
  errno = saved;
}

dtr_result dtr__progress_enable_dumps(void) {
  dtr__progress_page *p = dtr__progress_self();
  if (!p) return DTR_OK;
  void *warm[4];
  (void)backtrace(warm, 4); /* loads the unwinder now: the handler must not be the first to call it */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_dump_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGURG, &sa, NULL) != 0) return DTR_ERR_SYSTEM;
  __atomic_fetch_or(&p->flags, DTR__PG_DUMPS, __ATOMIC_RELEASE);
  return DTR_OK;
}
