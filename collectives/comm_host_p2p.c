/* Point-to-point for the host backend: one single-producer single-consumer byte ring per ordered pair
 * of ranks in the shared segment. Each message travels as an 8-byte length header and its payload, so
 * a send and a receive of different sizes fail loudly instead of desynchronising the stream. A batch
 * moves all its sends and receives in one loop (the first unfinished one per peer and direction), so
 * two ranks that exchange both ways in one batch never deadlock on full rings. */
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "collectives/comm_host_internal.h"

#define HDR 8

typedef struct xfer {
  size_t pos, total; /* over the stream header + payload */
  uint64_t hdr;      /* the header (sent, or as received) */
} xfer;

/* The contiguous part of the stream of op at pos. */
static uint8_t *stream_at(const dtr_p2p *p, xfer *x, size_t *contig) {
  if (x->pos < HDR) {
    *contig = HDR - x->pos;
    return (uint8_t *)&x->hdr + x->pos;
  }
  *contig = x->total - x->pos;
  return (uint8_t *)p->buf + (x->pos - HDR);
}

static void ring_bell(dtr__host *h, int j) {
  atomic_fetch_add(&h->ctl[j].bell, 1);
  if (atomic_load(&h->ctl[j].bell_waiters) != 0) dtr__host_futex_wake(&h->ctl[j].bell);
}

/* Push as much of a send as the ring takes; returns bytes moved. */
static size_t push(dtr__host *h, const dtr_p2p *p, xfer *x) {
  dtr__host_chan *ch = &h->chan[(size_t)h->r * (size_t)h->n + (size_t)p->peer];
  uint8_t *ring = h->rings + ((size_t)h->r * (size_t)h->n + (size_t)p->peer) * h->ring_bytes;
  const size_t R = h->ring_bytes;
  uint64_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&ch->tail, memory_order_acquire);
  size_t space = R - (size_t)(head - tail), moved = 0;
  while (space > 0 && x->pos < x->total) {
    size_t contig, at = (size_t)(head % R);
    uint8_t *src = stream_at(p, x, &contig);
    size_t k = contig < space ? contig : space;
    if (k > R - at) k = R - at;
    memcpy(ring + at, src, k);
    head += k;
    x->pos += k;
    space -= k;
    moved += k;
  }
  if (moved) {
    atomic_store_explicit(&ch->head, head, memory_order_release);
    ring_bell(h, p->peer);
  }
  return moved;
}

static size_t pull(dtr__host *h, const dtr_p2p *p, xfer *x) {
  dtr__host_chan *ch = &h->chan[(size_t)p->peer * (size_t)h->n + (size_t)h->r];
  const uint8_t *ring = h->rings + ((size_t)p->peer * (size_t)h->n + (size_t)h->r) * h->ring_bytes;
  const size_t R = h->ring_bytes;
  uint64_t tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&ch->head, memory_order_acquire);
  size_t avail = (size_t)(head - tail), moved = 0;
  while (avail > 0 && x->pos < x->total) {
    size_t contig, at = (size_t)(tail % R);
    uint8_t *dst = stream_at(p, x, &contig);
    size_t k = contig < avail ? contig : avail;
    if (k > R - at) k = R - at;
    memcpy(dst, ring + at, k);
    tail += k;
    x->pos += k;
    avail -= k;
    moved += k;
    if (x->pos == HDR) break; /* check the header before taking payload */
  }
  if (moved) {
    atomic_store_explicit(&ch->tail, tail, memory_order_release);
    ring_bell(h, p->peer);
  }
  return moved;
}

static void describe(const dtr__host *h, const dtr_p2p *ops, const xfer *xs, int nops, char *buf,
                     size_t cap) {
  size_t len = 0;
  int shown = 0;
  buf[0] = 0;
  for (int i = 0; i < nops && len + 96 < cap; i++) {
    if (xs[i].pos >= xs[i].total) continue;
    if (shown++ == 4) {
      len += (size_t)snprintf(buf + len, cap - len, ", ...");
      break;
    }
    size_t got = xs[i].pos > HDR ? xs[i].pos - HDR : 0;
    len += (size_t)snprintf(buf + len, cap - len, "%s%s %zu bytes %s rank %d (%zu done)",
                            shown > 1 ? ", " : "", ops[i].is_send ? "send of" : "receive of",
                            xs[i].total - HDR, ops[i].is_send ? "to" : "from", ops[i].peer, got);
  }
  (void)h;
}

/* dtr__host_waitctx.arrived of a p2p: this rank's bell rang since *seen, so a peer that left may have
 * pushed its last bytes first (it rings after pushing); pull them before calling it lost. */
static int bell_moved(const dtr__host *h, int j, const void *seen) {
  (void)j;
  return atomic_load_explicit(&h->ctl[h->r].bell, memory_order_acquire) != *(const uint32_t *)seen;
}

dtr_result dtr__host_p2p(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int n = h->n, nops = op->np2p;
  const dtr_p2p *ops = op->p2p;
  if (nops <= 0) return DTR_OK;
  xfer xs[nops];
  char busy_send[n], busy_recv[n];
  int peers[nops];
  for (int i = 0; i < nops; i++) {
    size_t es = dtr_dtype_size(ops[i].dtype);
    if (ops[i].peer < 0 || ops[i].peer >= n || es == 0 || (ops[i].count && !ops[i].buf))
      return dtr__comm_fail(c, DTR_ERR_INVALID, "host backend p2p: bad peer %d / dtype %d / buffer in op %d",
                            ops[i].peer, (int)ops[i].dtype, i);
    xs[i].pos = 0;
    xs[i].total = HDR + ops[i].count * es;
    xs[i].hdr = ops[i].is_send ? (uint64_t)(ops[i].count * es) : 0;
  }
  dtr__host_ctl *me = &h->ctl[h->r];
  for (;;) {
    uint32_t bell = atomic_load(&me->bell);
    int progress = 0, left = 0;
    memset(busy_send, 0, sizeof busy_send);
    memset(busy_recv, 0, sizeof busy_recv);
    for (int i = 0; i < nops; i++) {
      const dtr_p2p *p = &ops[i];
      xfer *x = &xs[i];
      if (x->pos >= x->total) continue;
      char *busy = p->is_send ? &busy_send[p->peer] : &busy_recv[p->peer];
      if (*busy) {
        left++;
        continue;
      }
      *busy = 1;
      size_t before = x->pos;
      if (p->is_send) {
        if (push(h, p, x)) progress = 1;
      } else {
        if (pull(h, p, x)) progress = 1;
        if (before < HDR && x->pos >= HDR && x->hdr != x->total - HDR)
          return dtr__comm_fail(
              c, DTR_ERR_INVALID, "p2p seq %llu: rank %d sent %llu bytes but this rank (%d) receives %zu",
              (unsigned long long)op->seq, p->peer, (unsigned long long)x->hdr, h->r, x->total - HDR);
        if (x->pos >= HDR && x->pos < x->total && pull(h, p, x)) progress = 1;
      }
      if (x->pos < x->total) left++;
    }
    if (!left) return DTR_OK;
    if (progress) continue;
    int woke = 0;
    for (int s = 0; s < h->spin; s++) {
      dtr__host_relax();
      if (atomic_load_explicit(&me->bell, memory_order_acquire) != bell) {
        woke = 1;
        break;
      }
    }
    for (int s = 0; s < h->yields && !woke; s++) {
      sched_yield();
      woke = atomic_load_explicit(&me->bell, memory_order_acquire) != bell;
    }
    if (woke) continue;
    atomic_fetch_add(&me->bell_waiters, 1);
    if (atomic_load(&me->bell) == bell) dtr__host_futex_wait(&me->bell, bell, dtr__host_slice_ms(deadline));
    atomic_fetch_sub(&me->bell_waiters, 1);
    int np = 0;
    for (int i = 0; i < nops; i++)
      if (xs[i].pos < xs[i].total) peers[np++] = ops[i].peer;
    dtr__host_waitctx w = {peers, np, op, deadline, NULL, bell_moved, &bell};
    dtr_result rc = dtr__host_check(c, h, &w);
    if (rc == DTR_ERR_TIMEOUT) {
      char what[512];
      describe(h, ops, xs, nops, what, sizeof what);
      return dtr__comm_fail(c, DTR_ERR_TIMEOUT, "p2p seq %llu: peers did not arrive within %d ms: %s",
                            (unsigned long long)op->seq, c->timeout_ms, what);
    }
    if (rc != DTR_OK) return rc;
  }
}
