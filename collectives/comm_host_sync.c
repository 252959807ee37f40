/* Synchronisation of the host backend: step counters published in shared memory, waits that poll
 * briefly, then sched_yield, then sleep on a futex in slices of at most 50 ms (ranks often outnumber
 * cores, so spinning long starves the rank we wait for), and the slow-path checks every wait runs:
 * abort (ours or a peer's), deadline, a peer that died (its OFD lock on the segment is gone). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "collectives/comm_host_internal.h"
#include "common/clock.h"

#define LIVE_CHECK_MS 50
#define SLICE_MS 50

void dtr__host_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

void dtr__host_futex_wake(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int dtr__host_futex_wait(_Atomic uint32_t *addr, uint32_t val, int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  long rc = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, &ts, NULL, 0);
  return rc < 0 && errno != EAGAIN && errno != EINTR ? -1 : 0;
}

int dtr__host_slice_ms(int64_t deadline) {
  int64_t left = deadline - dtr__now_ms();
  if (left < 1) left = 1;
  return left < SLICE_MS ? (int)left : SLICE_MS;
}

void dtr__host_publish(dtr__host *h) {
  dtr__host_ctl *me = &h->ctl[h->r];
  h->step++;
  atomic_store(&me->step, h->step);
  if (atomic_load(&me->step_waiters) != 0) dtr__host_futex_wake(&me->step);
}

int dtr__host_lock(int fd, off_t start, off_t len, int cmd) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (fcntl(fd, cmd, &fl) < 0) return -1;
  return cmd == F_OFD_GETLK ? fl.l_type != F_UNLCK : 0;
}

int dtr__host_peer_alive(const dtr__host *h, int j) {
  /* Each rank holds an OFD write lock on byte j of the segment while attached; the kernel drops it
   * when the process exits (however it dies), so "unlocked" means gone. Unlike kill(pid, 0) this is
   * immune to pid reuse, zombies and ranks that share a process. Cannot tell: assume alive. */
  return dtr__host_lock(h->fd, j, 1, F_OFD_GETLK) != 0;
}

static const char *kind_name(const dtr__op *op) {
  return op ? dtr__op_kind_name(op->kind) : "operation";
}

dtr_result dtr__host_check(dtr_comm *c, dtr__host *h, const dtr__host_waitctx *w) {
  if (atomic_load(&c->aborted))
    return dtr__comm_fail(c, DTR_ERR_ABORTED, "%s seq %llu: communicator aborted", kind_name(w->op),
                          w->op ? (unsigned long long)w->op->seq : 0ull);
  for (int k = 0; k < w->npeers; k++) {
    int j = w->peers[k];
    if (j != h->r && atomic_load(&h->ctl[j].aborted))
      return dtr__comm_fail(c, DTR_ERR_ABORTED, "%s seq %llu: rank %d (pid %d) aborted the communicator%s%s",
                            kind_name(w->op), w->op ? (unsigned long long)w->op->seq : 0ull, j,
                            (int)h->ctl[j].pid, w->what ? "; " : "", w->what ? w->what : "");
  }
  int64_t now = dtr__now_ms();
  if (now >= h->next_live_check) {
    h->next_live_check = now + LIVE_CHECK_MS;
    for (int k = 0; k < w->npeers; k++) {
      int j = w->peers[k];
      if (j != h->r && !dtr__host_peer_alive(h, j) && !(w->arrived && w->arrived(h, j, w->arg)))
        return dtr__comm_fail(c, DTR_ERR_CONNECTION,
                              "%s seq %llu: rank %d (pid %d) died or left the communicator%s%s",
                              kind_name(w->op), w->op ? (unsigned long long)w->op->seq : 0ull, j,
                              (int)h->ctl[j].pid, w->what ? "; " : "", w->what ? w->what : "");
    }
  }
  if (now >= w->deadline) return DTR_ERR_TIMEOUT; /* the caller names the ranks */
  return DTR_OK;
}

/* The ranks (at most cap) that have not published target yet. */
static int laggards(const dtr__host *h, int only, uint32_t target, int *out, int cap) {
  int k = 0;
  for (int j = 0; j < h->n && k < cap; j++) {
    if (only >= 0 && j != only) continue;
    if (!dtr__host_ge(atomic_load(&h->ctl[j].step), target)) out[k++] = j;
  }
  return k;
}

static void format_ranks(char *buf, size_t cap, const int *r, int k) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < k && len + 16 < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%d", i ? ", " : "", r[i]);
}

/* dtr__host_waitctx.arrived of dtr__host_wait_step: rank j published the step waited for. */
static int step_reached(const dtr__host *h, int j, const void *target) {
  return dtr__host_ge(atomic_load_explicit(&h->ctl[j].step, memory_order_acquire), *(const uint32_t *)target);
}

dtr_result dtr__host_wait_step(dtr_comm *c, dtr__host *h, int only, uint32_t target, const dtr__op *op,
                               int64_t deadline) {
  int lo = only >= 0 ? only : 0, hi = only >= 0 ? only + 1 : h->n;
  for (int j = lo; j < hi; j++) {
    if (j == h->r) continue;
    dtr__host_ctl *p = &h->ctl[j];
    if (dtr__host_ge(atomic_load_explicit(&p->step, memory_order_acquire), target)) continue;
    for (int s = 0; s < h->spin; s++) {
      dtr__host_relax();
      if (dtr__host_ge(atomic_load_explicit(&p->step, memory_order_acquire), target)) goto next;
    }
    for (int s = 0; s < h->yields; s++) {
      sched_yield();
      if (dtr__host_ge(atomic_load_explicit(&p->step, memory_order_acquire), target)) goto next;
    }
    for (;;) {
      atomic_fetch_add(&p->step_waiters, 1);
      uint32_t v = atomic_load(&p->step);
      if (!dtr__host_ge(v, target)) dtr__host_futex_wait(&p->step, v, dtr__host_slice_ms(deadline));
      atomic_fetch_sub(&p->step_waiters, 1);
      if (dtr__host_ge(atomic_load(&p->step), target)) break;
      int lag[256];
      int nl = laggards(h, only, target, lag, 256);
      if (nl == 0) break;
      dtr__host_waitctx w = {lag, nl, op, deadline, NULL, step_reached, &target};
      dtr_result rc = dtr__host_check(c, h, &w);
      if (rc == DTR_ERR_TIMEOUT) {
        char ranks[512];
        format_ranks(ranks, sizeof ranks, lag, nl);
        return dtr__comm_fail(c, DTR_ERR_TIMEOUT, "%s %s did not arrive at %s seq %llu within %d ms",
                              nl == 1 ? "rank" : "ranks", ranks, kind_name(op),
                              op ? (unsigned long long)op->seq : 0ull, c->timeout_ms);
      }
      if (rc != DTR_OK) return rc;
    }
  next:;
  }
  return DTR_OK;
}
