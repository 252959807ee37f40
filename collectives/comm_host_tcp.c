/* The host backend between nodes: one TCP connection per pair of ranks (full mesh), every operation
 * described as an ordered list of byte segments to send to and receive from each peer, and all lists
 * driven at once with poll() and non-blocking I/O, so no pair waits on another and nothing deadlocks.
 *
 * Reductions are direct: in each chunk rank j owns piece j; every rank sends piece j of its input to j,
 * j reduces its piece over the inputs of ranks 0..n-1 IN THAT ORDER with dtr__reduce_n (the same bits
 * as the shared-memory path and coll_check's reference), then sends the reduced piece to everyone. The
 * gather of chunk t-1 travels in the same poll loop as the scatter of chunk t. Scratch memory is bounded
 * by the chunk size (DTRAIN_TCP_CHUNK_BYTES, default 1 MiB: measured best of 512 KiB-4 MiB on 2
 * cores over veth), not the message size. DTRAIN_TCP_SOCKBUF sets SO_SNDBUF/RCVBUF (default 4 MiB).
 *
 * Collectives carry no headers (every rank knows every length). p2p messages carry an 8-byte length
 * header, so a send and a receive of different sizes fail with DTR_ERR_INVALID instead of
 * desynchronising the stream. Each pair has two connections: one for collectives and one for the
 * caller's p2p messages, so a message sent before a collective and received after it (a send completes
 * once the kernel buffered it) never lands in the collective's stream. Collectives that move their
 * data as p2p steps (dtr__host_tcp_p2p_step) stay on the collective connection. */
#define _GNU_SOURCE
#include "collectives/comm_host_tcp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/check.h"
#include "common/log.h"
#include "common/param.h"
#include "common/sock.h"

#define TCP_MAGIC 0x7063745f72746444ull /* "Ddtr_tcp" */
#define PIECE_ALIGN 64

typedef struct seg {
  uint8_t *p;
  size_t len;
  int check; /* a p2p header received: must equal want */
  uint64_t want;
  int op;            /* p2p: the op index, for messages */
  int64_t gate;      /* the lane waits here until *gv >= gate (pipelined all-reduce, chain) */
  const int64_t *gv; /* the counter gate compares with: NULL for t->gate */
  int counts;        /* an rx segment that bumps its peer's t->arrived when complete */
} seg;

typedef struct lane {
  seg *v;
  int n, cap, i;
  size_t off;
} lane;

typedef struct conn {
  int fd;
  int closed; /* the peer closed or reset the connection (stays so for later operations) */
  char why[80];
} conn;

typedef struct peer {
  conn coll, p2p; /* the collective stream and the caller's p2p stream */
  char addr[96];
  lane tx, rx;
} peer;

typedef struct selfmsg {
  uint8_t *data;
  size_t len;
  struct selfmsg *next;
} selfmsg;

struct dtr__host_tcp {
  int n, r;
  peer *p;
  size_t chunk_bytes;
  int pipeline; /* DTRAIN_TCP_PIPELINE: overlap gather and scatter in all-reduce */
  uint8_t *scratch, *mine;
  size_t scratch_cap, mine_cap;
  size_t chain_chunk_bytes; /* DTRAIN_HOST_CHAIN_CHUNK_BYTES: the chain's pipeline unit */
  uint8_t *chain_buf;       /* its rx and tx rings of accumulators */
  size_t chain_cap;
  selfmsg *self_head, *self_tail; /* p2p to ourselves, in send order */
  int on_p2p;                     /* xfer drives the p2p connections (the caller's p2p operation) */
  /* Pipelined all-reduce: gate = chunks reduced so far; arrived[j] = counted rx segments done from j;
   * hook (when set) is called by xfer after every pass to reduce what has arrived. */
  int64_t gate;
  int64_t *arrived;
  int (*hook)(dtr__host_tcp *t, void *arg);
  void *hook_arg;
  /* The chain's caller (comm_host_hier.c) may watch something else while xfer waits: a non-OK result
   * ends the operation (it wrote c->err). */
  dtr__host_tcp_watch watch;
  void *watch_arg;
};

static inline int seg_ready(const dtr__host_tcp *t, const seg *s) {
  return s->gate <= (s->gv ? *s->gv : t->gate);
}

/* ---- segment lists */

/* Push with a gate (see seg) and, for receives, whether completion counts as an arrival. */
static int lane_push_g(lane *l, void *p, size_t len, int64_t gate, int counts) {
  if (len == 0 && !counts) return 0;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 16;
    seg *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] =
      (seg){.p = p, .len = len, .check = 0, .want = 0, .op = -1, .gate = gate, .gv = NULL, .counts = counts};
  return 0;
}

/* Push gated on another counter than t->gate. */
static int lane_push_gv(lane *l, void *p, size_t len, const int64_t *gv, int64_t gate, int counts) {
  int n0 = l->n;
  if (lane_push_g(l, p, len, gate, counts)) return -1;
  if (l->n > n0) l->v[l->n - 1].gv = gv;
  return 0;
}

static int lane_push(lane *l, void *p, size_t len) {
  return lane_push_g(l, p, len, 0, 0);
}

static void lanes_reset(dtr__host_tcp *t) {
  for (int j = 0; j < t->n; j++) {
    t->p[j].tx.n = t->p[j].tx.i = 0;
    t->p[j].rx.n = t->p[j].rx.i = 0;
    t->p[j].tx.off = t->p[j].rx.off = 0;
    t->arrived[j] = 0;
  }
  t->gate = 0;
  t->hook = NULL;
  t->hook_arg = NULL;
  t->watch = NULL;
  t->watch_arg = NULL;
  t->on_p2p = 0;
}

/* The connection to peer j this operation uses. */
static conn *cx(dtr__host_tcp *t, int j) {
  return t->on_p2p ? &t->p[j].p2p : &t->p[j].coll;
}

static dtr_result nomem(dtr_comm *c) {
  return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend tcp: out of memory");
}

static dtr_result ensure(dtr_comm *c, uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap) return DTR_OK;
  uint8_t *b = realloc(*buf, need);
  if (!b) return nomem(c);
  *buf = b;
  *cap = need;
  return DTR_OK;
}

static void op_name(const dtr__op *op, char *out, size_t cap) {
  snprintf(out, cap, "%s seq %llu", dtr__op_kind_name(op->kind), (unsigned long long)op->seq);
}

/* A peer that closed its connection fails the operation at once when it is the one we wait for (it
 * sent us the least, or it cannot take data we have ready), or when nobody else is left to wait for.
 * Otherwise it probably gave up on the same late rank as we will (its deadline came a little earlier):
 * keep waiting, so that the timeout names that rank rather than the one that closed. */
static dtr_result check_closed(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int live) {
  int minseg = -1, any = 0;
  for (int j = 0; j < t->n; j++) {
    peer *p = &t->p[j];
    if (j == t->r || !(p->tx.i < p->tx.n || p->rx.i < p->rx.n)) continue;
    if (cx(t, j)->closed) any = 1;
    if (p->rx.i < p->rx.n && (minseg < 0 || p->rx.i < minseg)) minseg = p->rx.i;
  }
  if (!any) return DTR_OK;
  for (int j = 0; j < t->n; j++) {
    peer *p = &t->p[j];
    conn *k = cx(t, j);
    if (j == t->r || !k->closed || !(p->tx.i < p->tx.n || p->rx.i < p->rx.n)) continue;
    int late = p->rx.i < p->rx.n ? p->rx.i == minseg : seg_ready(t, &p->tx.v[p->tx.i]);
    if (late || live == 0) {
      char what[96];
      op_name(op, what, sizeof what);
      return dtr__comm_fail(c, DTR_ERR_CONNECTION, "%s: rank %d (%s) closed the connection (%s)", what, j,
                            p->addr, k->why);
    }
  }
  return DTR_OK;
}

/* Move bytes on every connection until every lane is empty. */
static dtr_result xfer(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  const int n = t->n;
  struct pollfd pf[n];
  int who[n];
  char what[96];
  for (;;) {
    int np = 0, pending = 0, done = 0; /* done: segments completed in this pass */
    for (int j = 0; j < n; j++) {
      if (j == t->r) continue;
      peer *p = &t->p[j];
      conn *cn = cx(t, j);
      while (!cn->closed && p->tx.i < p->tx.n && seg_ready(t, &p->tx.v[p->tx.i])) {
        seg *s = &p->tx.v[p->tx.i];
        if (s->len == 0) {
          p->tx.i++;
          continue;
        }
        ssize_t k = send(cn->fd, s->p + p->tx.off, s->len - p->tx.off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
          p->tx.off += (size_t)k;
          if (p->tx.off == s->len) p->tx.i++, p->tx.off = 0, done++;
          continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        cn->closed = 1;
        snprintf(cn->why, sizeof cn->why, "send: %s", k < 0 ? strerror(errno) : "no progress");
        break;
      }
      while (!cn->closed && p->rx.i < p->rx.n && seg_ready(t, &p->rx.v[p->rx.i])) {
        seg *s = &p->rx.v[p->rx.i];
        if (s->len == 0) {
          if (s->counts) t->arrived[j]++;
          p->rx.i++, done++;
          continue;
        }
        ssize_t k = recv(cn->fd, s->p + p->rx.off, s->len - p->rx.off, MSG_DONTWAIT);
        if (k > 0) {
          p->rx.off += (size_t)k;
          if (p->rx.off == s->len) {
            if (s->check) {
              uint64_t got;
              memcpy(&got, s->p, sizeof got);
              if (got != s->want)
                return dtr__comm_fail(
                    c, DTR_ERR_INVALID,
                    "p2p seq %llu: rank %d sent %llu bytes but this rank (%d) receives %llu",
                    (unsigned long long)op->seq, j, (unsigned long long)got, t->r,
                    (unsigned long long)s->want);
            }
            if (s->counts) t->arrived[j]++;
            p->rx.i++, p->rx.off = 0, done++;
          }
          continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        cn->closed = 1;
        snprintf(cn->why, sizeof cn->why, "%s", k == 0 ? "end of stream" : strerror(errno));
        break;
      }
      if (p->tx.i < p->tx.n || p->rx.i < p->rx.n) pending = 1;
      if (cn->closed) continue;
      short ev = (short)((p->tx.i < p->tx.n && seg_ready(t, &p->tx.v[p->tx.i]) ? POLLOUT : 0) |
                         (p->rx.i < p->rx.n && seg_ready(t, &p->rx.v[p->rx.i]) ? POLLIN : 0));
      if (ev) {
        pf[np].fd = cn->fd;
        pf[np].events = ev;
        pf[np].revents = 0;
        who[np++] = j;
      }
    }
    if (t->hook && t->hook(t, t->hook_arg)) continue; /* something arrived: reduce before sleeping */
    if (t->watch) DTR_CHECK(t->watch(c, t->watch_arg));
    DTR_CHECK(check_closed(c, t, op, np));
    if (np == 0 && !pending) return DTR_OK;
    /* A segment that completed may have opened a gate of a peer handled earlier in this pass (the
     * chain forwards a result once it arrived from the other side): look again before sleeping. */
    if (done) continue;
    if (np == 0)
      return dtr__comm_fail(c, DTR_ERR_INTERNAL, "host backend tcp: every connection waits on a gate");
    if (atomic_load(&c->aborted)) {
      op_name(op, what, sizeof what);
      return dtr__comm_fail(c, DTR_ERR_ABORTED, "%s: communicator aborted", what);
    }
    int left = dtr__ms_left(deadline);
    if (deadline >= 0 && left <= 0) {
      /* The peers that sent us the least of this operation are the late ones; the others are usually
       * blocked on them (a pipelined or gathered step waits for every rank). */
      char late[512], rest[256];
      size_t o = 0, q = 0;
      int minseg = -1;
      late[0] = rest[0] = 0;
      for (int i = 0; i < np; i++) {
        peer *p = &t->p[who[i]];
        if (p->rx.i < p->rx.n && (minseg < 0 || p->rx.i < minseg)) minseg = p->rx.i;
      }
      for (int i = 0; i < np; i++) {
        peer *p = &t->p[who[i]];
        int is_late = minseg < 0 || (p->rx.i < p->rx.n && p->rx.i == minseg);
        int w;
        if (is_late && o < sizeof late - 100) {
          w = snprintf(late + o, sizeof late - o, "%s%d (%s%s)", o ? ", " : "", who[i], p->addr,
                       p->rx.i < p->rx.n ? ": its data had not arrived" : ": not taking our data");
          if (w > 0) o += (size_t)w;
        } else if (!is_late && q < sizeof rest - 16) {
          w = snprintf(rest + q, sizeof rest - q, "%s%d", q ? ", " : "", who[i]);
          if (w > 0) q += (size_t)w;
        }
      }
      if (q) snprintf(late + o, sizeof late - o, "; rank(s) %s sent part and wait like us", rest);
      op_name(op, what, sizeof what);
      return dtr__comm_fail(c, DTR_ERR_TIMEOUT, "%s: timed out after %d ms waiting for ranks %s", what,
                            c->timeout_ms, late);
    }
    int slice = left < 0 || left > 100 ? 100 : left;
    if (poll(pf, (nfds_t)np, slice) < 0 && errno != EINTR)
      return dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend tcp: poll: %s", strerror(errno));
  }
}

/* ---- collectives */

/* Piece j of `total` elements split n ways on PIECE_ALIGN-byte boundaries (as the shm path). */
static void piece(size_t total, int n, int j, size_t es, size_t *off, size_t *len) {
  size_t al = PIECE_ALIGN / es ? PIECE_ALIGN / es : 1;
  size_t per = (total + (size_t)n - 1) / (size_t)n;
  per = (per + al - 1) / al * al;
  size_t o = per * (size_t)j;
  if (o > total) o = total;
  *off = o;
  *len = total - o < per ? total - o : per;
}

static int overlap(const void *a, size_t alen, const void *b, size_t blen) {
  const uint8_t *x = a, *y = b;
  return alen && blen && x < y + blen && y < x + alen;
}

enum { M_AR, M_RS, M_RED };

/* All-reduce, reduce-scatter and reduce: per chunk, scatter the pieces to their owners, reduce our own
 * in rank order, then send the reduced piece to every rank (all-reduce) or root (reduce). Phase k runs
 * the scatter of chunk k and the gather of chunk k-1 in one poll loop. */
static dtr_result reduce_family(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int mode,
                                int64_t deadline) {
  const int n = t->n, r = t->r, root = op->root;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  size_t ce = t->chunk_bytes / es;
  if (mode == M_RS) ce /= (size_t)n; /* a chunk covers n blocks */
  if (ce > PIECE_ALIGN) ce = ce / PIECE_ALIGN * PIECE_ALIGN;
  if (ce == 0) ce = 1;
  if (ce > count) ce = count;
  size_t maxp, dummy;
  if (mode == M_RS)
    maxp = ce;
  else
    piece(ce, n, 0, es, &dummy, &maxp);
  DTR_CHECK(ensure(c, &t->scratch, &t->scratch_cap, (size_t)n * maxp * es));
  DTR_CHECK(ensure(c, &t->mine, &t->mine_cap, maxp * es));
  const size_t nch = (count + ce - 1) / ce;
  const void *in[n];
  uint8_t *prev_out = NULL; /* our reduced piece of the previous chunk */
  size_t prev_off = 0, prev_len = 0;
  for (size_t k = 0; k <= nch; k++) {
    lanes_reset(t);
    int bad = 0;
    if (k >= 1 && mode != M_RS) { /* gather chunk k-1 */
      size_t off = prev_off, len = prev_len, po, pl;
      for (int j = 0; j < n; j++) {
        if (j == r) continue;
        if (mode == M_AR || r != root) {
          if (mode == M_AR || j == root) {
            size_t mo, ml;
            piece(len, n, r, es, &mo, &ml);
            bad |= lane_push(&t->p[j].tx, prev_out, ml * es);
          }
        }
        if (mode == M_AR || r == root) {
          piece(len, n, j, es, &po, &pl);
          bad |= lane_push(&t->p[j].rx, recv + (off + po) * es, pl * es);
        }
      }
    }
    size_t off = k * ce, len = k < nch ? (count - off < ce ? count - off : ce) : 0;
    size_t so[n], sl[n];
    memset(so, 0, sizeof so);
    memset(sl, 0, sizeof sl);
    if (k < nch) { /* scatter chunk k */
      for (int j = 0; j < n; j++) {
        if (mode == M_RS) {
          so[j] = (size_t)j * count + off;
          sl[j] = len;
        } else {
          size_t po;
          piece(len, n, j, es, &po, &sl[j]);
          so[j] = off + po;
        }
      }
      for (int j = 0; j < n; j++) {
        if (j == r) continue;
        bad |= lane_push(&t->p[j].tx, (void *)(send + so[j] * es), sl[j] * es);
        bad |= lane_push(&t->p[j].rx, t->scratch + (size_t)j * maxp * es, sl[r] * es);
      }
    }
    if (bad) return nomem(c);
    DTR_CHECK(xfer(c, t, op, deadline));
    if (k < nch) { /* reduce our piece of chunk k over ranks 0..n-1 */
      const uint8_t *own = send + so[r] * es;
      for (int j = 0; j < n; j++) in[j] = j == r ? (const void *)own : t->scratch + (size_t)j * maxp * es;
      uint8_t *out;
      if (mode == M_RS)
        out = recv + off * es;
      else if (mode == M_AR || r == root)
        out = recv + so[r] * es;
      else
        out = t->mine;
      size_t bytes = sl[r] * es;
      if (bytes) {
        if (r != 0 && overlap(out, bytes, own, bytes)) { /* dtr__reduce_n: out may alias in[0] only */
          dtr__reduce_n(t->mine, in, n, sl[r], op->dtype, op->redop, n);
          memcpy(out, t->mine, bytes);
        } else {
          dtr__reduce_n(out, in, n, sl[r], op->dtype, op->redop, n);
        }
      }
      prev_out = out;
      prev_off = off;
      prev_len = len;
    }
  }
  return DTR_OK;
}

/* Pipelined all-reduce. Every pair's stream carries, in this order, the scatter of chunks 0 and 1 and
 * then alternately the gather of chunk k-2 and the scatter of chunk k, so both sides agree on it without
 * headers; the poll loop never stops between chunks. Scatter pieces land in a two-slot scratch ring
 * (the receive of chunk k waits until chunk k-2 was reduced); gathers of chunk k are sent once this
 * rank reduced its piece of k, and received straight into recv. */
typedef struct ar_state {
  const dtr__op *op;
  size_t ce, maxp, nch, es;
  int64_t reduced; /* == t->gate */
} ar_state;

static void ar_piece(const ar_state *a, int n, size_t k, int j, size_t *so, size_t *sl) {
  size_t off = k * a->ce, len = a->op->count - off < a->ce ? a->op->count - off : a->ce, po;
  piece(len, n, j, a->es, &po, sl);
  *so = off + po;
}

static int ar_hook(dtr__host_tcp *t, void *arg) {
  ar_state *a = arg;
  const int n = t->n, r = t->r;
  int did = 0;
  while ((size_t)t->gate < a->nch) {
    int64_t k = t->gate;
    for (int j = 0; j < n; j++)
      if (j != r && t->arrived[j] <= k) return did;
    const dtr__op *op = a->op;
    size_t so, sl;
    ar_piece(a, n, (size_t)k, r, &so, &sl);
    const uint8_t *own = (const uint8_t *)op->send + so * a->es;
    uint8_t *out = (uint8_t *)op->recv + so * a->es;
    const void *in[n];
    for (int j = 0; j < n; j++)
      in[j] = j == r ? (const void *)own
                     : t->scratch + ((size_t)(k % 2) * (size_t)n + (size_t)j) * a->maxp * a->es;
    if (sl) {
      if (r != 0 && overlap(out, sl * a->es, own, sl * a->es)) {
        dtr__reduce_n(t->mine, in, n, sl, op->dtype, op->redop, n);
        memcpy(out, t->mine, sl * a->es);
      } else {
        dtr__reduce_n(out, in, n, sl, op->dtype, op->redop, n);
      }
    }
    t->gate++;
    did = 1;
  }
  return did;
}

static dtr_result all_reduce(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  const int n = t->n, r = t->r;
  ar_state a = {.op = op, .es = dtr_dtype_size(op->dtype)};
  size_t ce = t->chunk_bytes / a.es, dummy;
  if (ce > PIECE_ALIGN) ce = ce / PIECE_ALIGN * PIECE_ALIGN;
  if (ce == 0) ce = 1;
  if (ce > op->count) ce = op->count;
  a.ce = ce;
  a.nch = (op->count + ce - 1) / ce;
  piece(ce, n, 0, a.es, &dummy, &a.maxp);
  DTR_CHECK(ensure(c, &t->scratch, &t->scratch_cap, 2 * (size_t)n * a.maxp * a.es));
  DTR_CHECK(ensure(c, &t->mine, &t->mine_cap, a.maxp * a.es));
  lanes_reset(t);
  int bad = 0;
  uint8_t *recv = op->recv;
  const uint8_t *send = op->send;
  for (size_t s = 0; s < a.nch + 2; s++) {
    /* gather of chunk s-2, then scatter of chunk s (s >= 2); scatter of chunks 0 and 1 first */
    for (int step = 0; step < 2; step++) {
      size_t so, sl, mo, ml;
      if (step == 0 && s >= 2) {
        size_t k = s - 2;
        ar_piece(&a, n, k, r, &mo, &ml);
        for (int j = 0; j < n; j++) {
          if (j == r) continue;
          ar_piece(&a, n, k, j, &so, &sl);
          bad |= lane_push_g(&t->p[j].tx, recv + mo * a.es, ml * a.es, (int64_t)k + 1, 0);
          bad |= lane_push_g(&t->p[j].rx, recv + so * a.es, sl * a.es, 0, 0);
        }
      }
      if (step == 1 && s < a.nch) {
        size_t k = s;
        ar_piece(&a, n, k, r, &mo, &ml);
        for (int j = 0; j < n; j++) {
          if (j == r) continue;
          ar_piece(&a, n, k, j, &so, &sl);
          bad |= lane_push_g(&t->p[j].tx, (void *)(send + so * a.es), sl * a.es, 0, 0);
          bad |= lane_push_g(&t->p[j].rx, t->scratch + ((k % 2) * (size_t)n + (size_t)j) * a.maxp * a.es,
                             ml * a.es, (int64_t)k - 1, 1);
        }
      }
    }
  }
  if (bad) return nomem(c);
  t->hook = ar_hook;
  t->hook_arg = &a;
  dtr_result rc = xfer(c, t, op, deadline);
  t->hook = NULL;
  t->hook_arg = NULL;
  return rc;
}

/* ---- the rank-ordered chain (dtr__host_tcp_chain)
 *
 * Member k receives the accumulator of chunk q from member k-1 into slot q % CHAIN_DEPTH of its rx
 * ring (the receive waits until chunk q - CHAIN_DEPTH was folded: t->gate counts folded chunks), folds
 * its inputs onto it into slot q % CHAIN_DEPTH of its tx ring (once the send of chunk q - CHAIN_DEPTH
 * left: the tx lane to k+1 holds only accumulators, so its segment index counts them) and sends that
 * on; the last member folds straight into out, finalised. Results travel back member by member (each
 * forwards chunk q once it arrived: gated on t->arrived of the member after it) or, with `direct`,
 * from the last member to every other one, or (part, reduce-scatter) each member's part alone from the
 * last member to it. Each link carries every byte once per direction. */
#define CHAIN_DEPTH 4

/* Member k's part [k*part, (k+1)*part) within the chunk [off, off+len): [*lo, *hi), maybe empty. */
static void part_in_chunk(int k, size_t part, size_t off, size_t len, size_t *lo, size_t *hi) {
  size_t a = (size_t)k * part, b = a + part;
  *lo = a > off ? a : off;
  *hi = b < off + len ? b : off + len;
}

typedef struct chain_state {
  const dtr__op *op;
  const void *const *in;
  int nin;
  uint8_t *out;
  size_t count, ic, nch, es, asz;
  int prev, next; /* communicator ranks of the neighbours, -1 at the ends */
  int avg_div;
  uint8_t *rxring, *txring;
} chain_state;

static int chain_hook(dtr__host_tcp *t, void *arg) {
  chain_state *a = arg;
  const int nin = a->nin, last = a->next < 0;
  int did = 0;
  while ((size_t)t->gate < a->nch) {
    int64_t q = t->gate;
    if (a->prev >= 0 && t->arrived[a->prev] <= q) break; /* its accumulator has not arrived */
    if (!last && q >= CHAIN_DEPTH && t->p[a->next].tx.i < q - CHAIN_DEPTH + 1) break; /* tx slot busy */
    size_t off = (size_t)q * a->ic, len = a->count - off < a->ic ? a->count - off : a->ic;
    const void *in[nin > 0 ? nin : 1];
    for (int k = 0; k < nin; k++) in[k] = (const uint8_t *)a->in[k] + off * a->es;
    const size_t slot = (size_t)(q % CHAIN_DEPTH) * a->ic * a->asz;
    const void *acc = a->prev >= 0 ? a->rxring + slot : NULL;
    void *dst = last ? a->out + off * a->es : a->txring + slot;
    dtr__reduce_fold(dst, acc, in, nin, len, a->op->dtype, a->op->redop, last, a->avg_div);
    t->gate++;
    did = 1;
  }
  return did;
}

dtr_result dtr__host_tcp_chain(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, const int *members, int nm,
                               int pos, const void *const *in, int nin, size_t count, void *out, int avg_div,
                               int direct, size_t part, dtr__host_tcp_watch watch, void *watch_arg,
                               int64_t deadline) {
  chain_state a = {.op = op, .in = in, .nin = nin, .out = out, .count = count, .avg_div = avg_div};
  a.es = dtr_dtype_size(op->dtype);
  a.asz = dtr__reduce_acc_size(op->dtype, op->redop);
  if (nm < 2 || pos < 0 || pos >= nm || members[pos] != t->r || a.es == 0 || a.asz == 0 ||
      (pos == 0 && nin < 1) || (part && part * (size_t)nm != count))
    return dtr__comm_fail(c, DTR_ERR_INTERNAL,
                          "host backend tcp: bad chain (%d members, position %d, %d inputs, part %zu of %zu)",
                          nm, pos, nin, part, count);
  if (count == 0) return DTR_OK;
  a.prev = pos > 0 ? members[pos - 1] : -1;
  a.next = pos < nm - 1 ? members[pos + 1] : -1;
  size_t ic = t->chain_chunk_bytes / a.asz;
  if (ic > PIECE_ALIGN) ic = ic / PIECE_ALIGN * PIECE_ALIGN;
  if (ic == 0) ic = 1;
  if (ic > count) ic = count;
  a.ic = ic;
  a.nch = (count + ic - 1) / ic;
  const size_t ring = CHAIN_DEPTH * ic * a.asz;
  DTR_CHECK(ensure(c, &t->chain_buf, &t->chain_cap, 2 * ring));
  a.rxring = t->chain_buf;
  a.txring = t->chain_buf + ring;
  lanes_reset(t);
  int bad = 0;
  uint8_t *o = out;
  const int lastr = members[nm - 1];
  for (size_t q = 0; q < a.nch; q++) {
    size_t off = q * ic, len = count - off < ic ? count - off : ic;
    const size_t slot = (q % CHAIN_DEPTH) * ic * a.asz;
    /* accumulators forward */
    if (a.prev >= 0)
      bad |= lane_push_g(&t->p[a.prev].rx, a.rxring + slot, len * a.asz, (int64_t)q - CHAIN_DEPTH + 1, 1);
    if (a.next >= 0) bad |= lane_push_g(&t->p[a.next].tx, a.txring + slot, len * a.asz, (int64_t)q + 1, 0);
    /* results back */
    if (part) { /* only the part of member k to member k, [k*part, (k+1)*part) within this chunk */
      if (a.next < 0) {
        for (int k = 0; k < nm - 1; k++) {
          size_t lo, hi;
          part_in_chunk(k, part, off, len, &lo, &hi);
          if (lo < hi)
            bad |= lane_push_g(&t->p[members[k]].tx, o + lo * a.es, (hi - lo) * a.es, (int64_t)q + 1, 0);
        }
      } else {
        size_t lo, hi;
        part_in_chunk(pos, part, off, len, &lo, &hi);
        if (lo < hi) bad |= lane_push_g(&t->p[lastr].rx, o + lo * a.es, (hi - lo) * a.es, 0, 0);
      }
    } else if (direct) {
      if (a.next < 0) {
        for (int k = 0; k < nm - 1; k++)
          bad |= lane_push_g(&t->p[members[k]].tx, o + off * a.es, len * a.es, (int64_t)q + 1, 0);
      } else {
        bad |= lane_push_g(&t->p[lastr].rx, o + off * a.es, len * a.es, 0, 0);
      }
    } else {
      if (a.next >= 0) bad |= lane_push_g(&t->p[a.next].rx, o + off * a.es, len * a.es, 0, 1);
      if (a.prev >= 0) {
        if (a.next < 0)
          bad |= lane_push_g(&t->p[a.prev].tx, o + off * a.es, len * a.es, (int64_t)q + 1, 0);
        else
          bad |= lane_push_gv(&t->p[a.prev].tx, o + off * a.es, len * a.es, &t->arrived[a.next],
                              (int64_t)q + 1, 0);
      }
    }
  }
  if (bad) return nomem(c);
  t->hook = chain_hook;
  t->hook_arg = &a;
  t->watch = watch;
  t->watch_arg = watch_arg;
  dtr_result rc = xfer(c, t, op, deadline);
  t->hook = NULL;
  t->hook_arg = NULL;
  t->watch = NULL;
  t->watch_arg = NULL;
  return rc;
}

static dtr_result all_gather(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  const int n = t->n, r = t->r;
  const size_t bytes = op->count * dtr_dtype_size(op->dtype);
  uint8_t *recv = op->recv;
  int bad = 0;
  lanes_reset(t);
  for (int j = 0; j < n; j++) {
    if (j == r) continue;
    bad |= lane_push(&t->p[j].tx, (void *)op->send, bytes);
    bad |= lane_push(&t->p[j].rx, recv + (size_t)j * bytes, bytes);
  }
  if (bad) return nomem(c);
  if (recv + (size_t)r * bytes != (const uint8_t *)op->send)
    memcpy(recv + (size_t)r * bytes, op->send, bytes);
  return xfer(c, t, op, deadline);
}

static dtr_result broadcast(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  const int n = t->n, r = t->r, root = op->root;
  const size_t bytes = op->count * dtr_dtype_size(op->dtype);
  uint8_t *buf = op->recv ? op->recv : (uint8_t *)op->send;
  int bad = 0;
  lanes_reset(t);
  if (r == root) {
    for (int j = 0; j < n; j++)
      if (j != r) bad |= lane_push(&t->p[j].tx, buf, bytes);
  } else {
    bad |= lane_push(&t->p[root].rx, buf, bytes);
  }
  if (bad) return nomem(c);
  return xfer(c, t, op, deadline);
}

/* Block j of our send to rank j, block j of our recv from rank j. When send and recv overlap (in
 * place), chunks are received into scratch and copied once every send of the chunk left. */
static dtr_result all_to_all(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  const int n = t->n, r = t->r;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count, bytes = count * es;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  int bad = 0;
  if (!overlap(send, (size_t)n * bytes, recv, (size_t)n * bytes)) {
    lanes_reset(t);
    for (int j = 0; j < n; j++) {
      if (j == r) continue;
      bad |= lane_push(&t->p[j].tx, (void *)(send + (size_t)j * bytes), bytes);
      bad |= lane_push(&t->p[j].rx, recv + (size_t)j * bytes, bytes);
    }
    if (bad) return nomem(c);
    memcpy(recv + (size_t)r * bytes, send + (size_t)r * bytes, bytes);
    return xfer(c, t, op, deadline);
  }
  size_t ce = t->chunk_bytes / es / (size_t)n;
  if (ce == 0) ce = 1;
  if (ce > count) ce = count;
  DTR_CHECK(ensure(c, &t->scratch, &t->scratch_cap, (size_t)n * ce * es));
  for (size_t off = 0; off < count; off += ce) {
    size_t len = count - off < ce ? count - off : ce;
    lanes_reset(t);
    for (int j = 0; j < n; j++) {
      if (j == r) continue;
      bad |= lane_push(&t->p[j].tx, (void *)(send + ((size_t)j * count + off) * es), len * es);
      bad |= lane_push(&t->p[j].rx, t->scratch + (size_t)j * ce * es, len * es);
    }
    if (bad) return nomem(c);
    DTR_CHECK(xfer(c, t, op, deadline));
    for (int j = 0; j < n; j++)
      if (j != r) memcpy(recv + ((size_t)j * count + off) * es, t->scratch + (size_t)j * ce * es, len * es);
  }
  uint8_t *dst = recv + (size_t)r * bytes;
  const uint8_t *src = send + (size_t)r * bytes;
  if (dst != src) memmove(dst, src, bytes);
  return DTR_OK;
}

static dtr_result barrier(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  const int n = t->n;
  uint8_t one = 1, got[n];
  int bad = 0;
  lanes_reset(t);
  for (int j = 0; j < n; j++) {
    if (j == t->r) continue;
    bad |= lane_push(&t->p[j].tx, &one, 1);
    bad |= lane_push(&t->p[j].rx, &got[j], 1);
  }
  if (bad) return nomem(c);
  return xfer(c, t, op, deadline);
}

/* ---- point to point */

/* A batch of sends and receives, on the p2p connections (own_stream: the caller's messages) or on the
 * collective ones (a collective's step). */
static dtr_result p2p(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int own_stream, int64_t deadline) {
  const int n = t->n, nops = op->np2p;
  const dtr_p2p *ops = op->p2p;
  if (nops <= 0) return DTR_OK;
  uint64_t hdr[nops];
  int bad = 0;
  lanes_reset(t);
  t->on_p2p = own_stream;
  for (int i = 0; i < nops; i++) {
    size_t es = dtr_dtype_size(ops[i].dtype);
    if (ops[i].peer < 0 || ops[i].peer >= n || es == 0 || (ops[i].count && !ops[i].buf))
      return dtr__comm_fail(c, DTR_ERR_INVALID, "host backend p2p: bad peer %d / dtype %d / buffer in op %d",
                            ops[i].peer, (int)ops[i].dtype, i);
  }
  /* Messages to ourselves: sends are queued first, then receives take them in order. */
  for (int i = 0; i < nops; i++) {
    if (ops[i].peer != t->r || !ops[i].is_send) continue;
    size_t len = ops[i].count * dtr_dtype_size(ops[i].dtype);
    selfmsg *m = malloc(sizeof *m + len);
    if (!m) return nomem(c);
    m->data = (uint8_t *)(m + 1);
    m->len = len;
    m->next = NULL;
    if (len) memcpy(m->data, ops[i].buf, len);
    if (t->self_tail)
      t->self_tail->next = m;
    else
      t->self_head = m;
    t->self_tail = m;
  }
  for (int i = 0; i < nops; i++) {
    if (ops[i].peer != t->r || ops[i].is_send) continue;
    size_t len = ops[i].count * dtr_dtype_size(ops[i].dtype);
    selfmsg *m = t->self_head;
    if (!m)
      return dtr__comm_fail(c, DTR_ERR_INVALID,
                            "p2p seq %llu: rank %d receives from itself but sent itself nothing (it would "
                            "wait forever)",
                            (unsigned long long)op->seq, t->r);
    t->self_head = m->next;
    if (!t->self_head) t->self_tail = NULL;
    size_t got = m->len;
    if (got == len && len) memcpy(ops[i].buf, m->data, len);
    free(m);
    if (got != len)
      return dtr__comm_fail(c, DTR_ERR_INVALID,
                            "p2p seq %llu: rank %d sent %zu bytes but this rank (%d) receives %zu",
                            (unsigned long long)op->seq, t->r, got, t->r, len);
  }
  for (int i = 0; i < nops; i++) {
    const dtr_p2p *q = &ops[i];
    if (q->peer == t->r) continue;
    size_t len = q->count * dtr_dtype_size(q->dtype);
    lane *l = q->is_send ? &t->p[q->peer].tx : &t->p[q->peer].rx;
    hdr[i] = q->is_send ? (uint64_t)len : 0;
    bad |= lane_push(l, &hdr[i], sizeof hdr[i]);
    if (!bad && !q->is_send) {
      seg *s = &l->v[l->n - 1];
      s->check = 1;
      s->want = len;
      s->op = i;
    }
    bad |= lane_push(l, q->buf, len);
  }
  if (bad) return nomem(c);
  return xfer(c, t, op, deadline);
}

dtr_result dtr__host_tcp_p2p_step(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  return p2p(c, t, op, 0, deadline);
}

dtr_result dtr__host_tcp_run(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline) {
  if (op->kind == DTR__OP_P2P) return p2p(c, t, op, 1, deadline);
  if (op->kind != DTR__OP_BARRIER && dtr_dtype_size(op->dtype) == 0)
    return dtr__comm_fail(c, DTR_ERR_INVALID, "host backend: unknown dtype %d", (int)op->dtype);
  if (op->count == 0 && op->kind != DTR__OP_BARRIER) return DTR_OK; /* same on every rank */
  switch (op->kind) {
    case DTR__OP_ALL_REDUCE:
      if (t->pipeline) return all_reduce(c, t, op, deadline);
      return reduce_family(c, t, op, M_AR, deadline);
    case DTR__OP_REDUCE_SCATTER:
      return reduce_family(c, t, op, M_RS, deadline);
    case DTR__OP_REDUCE:
      return reduce_family(c, t, op, M_RED, deadline);
    case DTR__OP_ALL_GATHER:
      return all_gather(c, t, op, deadline);
    case DTR__OP_BROADCAST:
      return broadcast(c, t, op, deadline);
    case DTR__OP_ALL_TO_ALL:
      return all_to_all(c, t, op, deadline);
    case DTR__OP_BARRIER:
      return barrier(c, t, op, deadline);
    default:
      break;
  }
  return dtr__comm_fail(c, DTR_ERR_UNSUPPORTED, "host backend: operation %d is not supported", (int)op->kind);
}

/* ---- connection setup */

typedef struct hello {
  uint64_t magic;
  uint32_t rank, size;
  uint32_t p2p; /* 0: the collective connection, 1: the p2p one */
  uint32_t pad;
} hello;

static void tune(int fd, int bufbytes) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (bufbytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufbytes, sizeof bufbytes);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufbytes, sizeof bufbytes);
  }
}

static dtr_result init_impl(dtr_comm *c, dtr__host_tcp *t, const char *kp, int64_t deadline) {
  char key[DTR_STORE_MAX_KEY], val[160], err[512];
  const int n = t->n, r = t->r;
  int lfd = -1, port = 0;
  dtr_result rc;
  const int bufbytes = (int)dtr__param_int("DTRAIN_TCP_SOCKBUF", 4 << 20);
  const char *me = dtr_store_local_addr(c->store);
  if (!me || !me[0])
    return dtr__comm_fail(c, DTR_ERR_INTERNAL, "host backend tcp: the store connection has no local address");
  /* 2(n-1) connections and the listener: the usual soft limit of 1024 descriptors runs out near 500
   * ranks, so raise it here, before anything is published, or fail at once naming the limit. */
  long raised = 0;
  rc = dtr__fd_room(2 * (n - 1) + 1, &raised, err, sizeof err);
  if (rc) return dtr__comm_fail(c, rc, "host backend tcp: rank %d of %d: %s", r, n, err);
  if (raised) DTR_DEBUG("host backend tcp: rank %d raised its open-file limit to %ld", r, raised);
  rc = dtr__listen(me, 0, 2 * n + 8, &lfd, &port, err, sizeof err);
  if (rc) return dtr__comm_fail(c, rc, "host backend tcp: rank %d cannot listen on %s: %s", r, me, err);
  if (bufbytes > 0) tune(lfd, bufbytes); /* accepted sockets inherit the buffer sizes */
  snprintf(key, sizeof key, "%stcp/%d", kp, r);
  snprintf(val, sizeof val, "%s:%d", me, port);
  rc = dtr_store_set(c->store, key, val, strlen(val));
  if (rc) {
    rc = dtr__comm_fail(c, rc, "host backend tcp: store set %s: %s", key, dtr_store_last_error(c->store));
    goto out;
  }
  for (int j = 0; j < n; j++) {
    if (j == r) continue;
    char *v = NULL;
    size_t len;
    int left = dtr__ms_left(deadline);
    snprintf(key, sizeof key, "%stcp/%d", kp, j);
    rc = dtr_store_get(c->store, key, left < 1 ? 1 : left, (void **)&v, &len);
    if (rc) {
      rc = dtr__comm_fail(c, rc, "host backend tcp: rank %d did not publish its address (%s): %s", j, key,
                          rc == DTR_ERR_TIMEOUT ? "timed out" : dtr_store_last_error(c->store));
      goto out;
    }
    snprintf(t->p[j].addr, sizeof t->p[j].addr, "%s", v);
    free(v);
  }
  /* Lower ranks: we connect twice (collectives, p2p) and say who we are and which one it is. */
  for (int j = 0; j < r; j++) {
    for (int k = 0; k < 2; k++) {
      conn *cn = k ? &t->p[j].p2p : &t->p[j].coll;
      char host[96];
      int pport;
      rc = dtr__parse_hostport(t->p[j].addr, host, sizeof host, &pport, err, sizeof err);
      if (!rc) rc = dtr__connect(host, pport, deadline, 50, &c->aborted, &cn->fd, err, sizeof err);
      if (rc) {
        rc = dtr__comm_fail(c, rc, "host backend tcp: rank %d cannot connect to rank %d (%s): %s", r, j,
                            t->p[j].addr, err);
        goto out;
      }
      tune(cn->fd, bufbytes);
      hello hi = {TCP_MAGIC, (uint32_t)r, (uint32_t)n, (uint32_t)k, 0};
      rc = dtr__write_full(cn->fd, &hi, sizeof hi, deadline, &c->aborted, err, sizeof err);
      if (rc) {
        rc = dtr__comm_fail(c, rc, "host backend tcp: hello to rank %d (%s): %s", j, t->p[j].addr, err);
        goto out;
      }
    }
  }
  /* Higher ranks: accept until each has said hello on both connections. */
  for (int got = 0; got < 2 * (n - 1 - r);) {
    if (atomic_load(&c->aborted)) {
      rc = dtr__comm_fail(c, DTR_ERR_ABORTED, "host backend tcp init: aborted");
      goto out;
    }
    int left = dtr__ms_left(deadline);
    if (left == 0) {
      char late[256];
      size_t o = 0;
      late[0] = 0;
      for (int j = r + 1; j < n && o < sizeof late - 16; j++)
        if (t->p[j].coll.fd < 0 || t->p[j].p2p.fd < 0)
          o += (size_t)snprintf(late + o, sizeof late - o, " %d", j);
      rc = dtr__comm_fail(c, DTR_ERR_TIMEOUT,
                          "host backend tcp init: ranks%s did not connect to rank %d within %d ms", late, r,
                          c->timeout_ms);
      goto out;
    }
    struct pollfd pf = {lfd, POLLIN, 0};
    int k = poll(&pf, 1, left < 0 || left > 100 ? 100 : left);
    if (k <= 0) continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0 && dtr__fd_exhausted(errno)) {
      rc = dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend tcp: rank %d cannot accept a connection: %s", r,
                          strerror(errno)); /* poll would report the listener ready forever */
      goto out;
    }
    if (fd < 0) continue;
    hello hi;
    rc = dtr__read_full(fd, &hi, sizeof hi, deadline, &c->aborted, err, sizeof err);
    conn *cn = NULL;
    if (!rc && hi.magic == TCP_MAGIC && hi.size == (uint32_t)n && hi.rank > (uint32_t)r &&
        hi.rank < (uint32_t)n && hi.p2p <= 1)
      cn = hi.p2p ? &t->p[hi.rank].p2p : &t->p[hi.rank].coll;
    if (!cn || cn->fd >= 0) {
      char from[96];
      dtr__sock_peer_name(fd, from, sizeof from);
      DTR_WARN("host backend tcp: rank %d dropped a connection from %s (%s)", r, from,
               rc ? err : "bad or duplicate hello");
      close(fd);
      rc = DTR_OK;
      continue;
    }
    tune(fd, bufbytes);
    cn->fd = fd;
    got++;
  }
  for (int j = 0; j < n; j++) {
    if (j == r) continue;
    const int fds[2] = {t->p[j].coll.fd, t->p[j].p2p.fd};
    for (int k = 0; k < 2; k++) {
      int fl = fcntl(fds[k], F_GETFL);
      if (fl < 0 || fcntl(fds[k], F_SETFL, fl | O_NONBLOCK) < 0) {
        rc = dtr__comm_fail(c, DTR_ERR_SYSTEM, "host backend tcp: fcntl: %s", strerror(errno));
        goto out;
      }
    }
  }
  DTR_DEBUG("host backend tcp: rank %d/%d connected (listening on %s)", r, n, val);
out:
  if (lfd >= 0) close(lfd);
  return rc;
}

dtr_result dtr__host_tcp_init(dtr_comm *c, const char *kp, int64_t deadline, dtr__host_tcp **out) {
  *out = NULL;
  dtr__host_tcp *t = calloc(1, sizeof *t);
  if (!t) return nomem(c);
  t->n = c->size;
  t->r = c->rank;
  t->p = calloc((size_t)t->n, sizeof *t->p);
  t->arrived = calloc((size_t)t->n, sizeof *t->arrived);
  if (!t->p || !t->arrived) {
    free(t->p);
    free(t->arrived);
    free(t);
    return nomem(c);
  }
  for (int j = 0; j < t->n; j++) t->p[j].coll.fd = t->p[j].p2p.fd = -1;
  t->chunk_bytes = (size_t)dtr__param_range("DTRAIN_TCP_CHUNK_BYTES", 1 << 20, 4096, (int64_t)1 << 30);
  t->pipeline = dtr__param_int("DTRAIN_TCP_PIPELINE", 1) != 0;
  /* The chain's unit: small enough that the pipeline fills fast, large enough that a fold and its
   * send are not dominated by per-chunk overheads. */
  t->chain_chunk_bytes =
      (size_t)dtr__param_range("DTRAIN_HOST_CHAIN_CHUNK_BYTES", 512 << 10, 4096, (int64_t)1 << 28);
  dtr_result rc = init_impl(c, t, kp, deadline);
  if (rc) {
    dtr__host_tcp_destroy(t);
    return rc;
  }
  *out = t;
  return DTR_OK;
}

void dtr__host_tcp_destroy(dtr__host_tcp *t) {
  if (!t) return;
  for (int j = 0; j < t->n; j++) {
    if (t->p[j].coll.fd >= 0) close(t->p[j].coll.fd);
    if (t->p[j].p2p.fd >= 0) close(t->p[j].p2p.fd);
    free(t->p[j].tx.v);
    free(t->p[j].rx.v);
  }
  while (t->self_head) {
    selfmsg *m = t->self_head;
    t->self_head = m->next;
    free(m);
  }
  free(t->p);
  free(t->arrived);
  free(t->scratch);
  free(t->mine);
  free(t->chain_buf);
  free(t);
}
