/* Hierarchical host communicators: ranks on N >= 2 nodes in contiguous blocks of L ranks each. Every
 * operation runs over the full TCP mesh (comm_host_tcp.c) except large broadcasts (root to one rank per
 * node over TCP, then each node's segment), large all-gathers (each block to the rail, then the
 * segment), large reduce-scatters when turned on (hier_reduce_scatter: the all-reduce's steps with the
 * results sent only to their owners) and large all-reduces, which go
 *   a. all-to-all over the node's shared-memory segment: local rank i gets slice i of every local input;
 *   b. a chain along the rail (ranks i, L+i, 2L+i, ...): node 0's rank folds its L slices in rank
 *      order into an accumulator, node 1's folds its own onto it, ..., the last node finalises and the
 *      result slice travels back (dtr__host_tcp_chain);
 *   c. all-gather over the segment of the result slices.
 * The fold order is rank order 0..n-1 (node by node, and inside a node local rank by local rank), with
 * f16/bf16 accumulated in f32 and rounded once, so results are bit-identical to the flat paths and to
 * the serial reference. With L == 1 the chain alone is the all-reduce of many nodes. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/comm_host_internal.h"
#include "collectives/comm_host_tcp.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/param.h"

#define PIECE_ALIGN 64

/* ---- errors of the node segment, in the communicator's ranks */

/* Rewrite every rank number of text ("rank 3", "ranks 1, 2", "rank(s) 0 (addr), 4") as base + it:
 * the segment's waits name local ranks 0..L-1. */
static void translate(char *text, size_t cap, int base) {
  char out[sizeof(((dtr_comm *)0)->err)];
  size_t o = 0;
  const char *p = text;
  while (*p && o + 24 < sizeof out) {
    int word = strncmp(p, "rank", 4) == 0 && (p == text || !isalnum((unsigned char)p[-1]));
    if (!word) {
      out[o++] = *p++;
      continue;
    }
    const char *q = p + 4;
    if (*q == 's')
      q++;
    else if (strncmp(q, "(s)", 3) == 0)
      q += 3;
    if (*q != ' ' || !isdigit((unsigned char)q[1])) {
      out[o++] = *p++;
      continue;
    }
    q++;
    memcpy(out + o, p, (size_t)(q - p));
    o += (size_t)(q - p);
    p = q;
    /* a list: N[ (...)][, N[ (...)]]... */
    for (;;) {
      char *e;
      long v = strtol(p, &e, 10);
      o += (size_t)snprintf(out + o, sizeof out - o, "%ld", v + base);
      p = e;
      if (p[0] == ' ' && p[1] == '(') {
        const char *cl = strchr(p, ')');
        if (!cl) break;
        size_t k = (size_t)(cl + 1 - p);
        if (o + k + 24 >= sizeof out) break;
        memcpy(out + o, p, k);
        o += k;
        p = cl + 1;
      }
      if (p[0] == ',' && p[1] == ' ' && isdigit((unsigned char)p[2]) && o + 24 < sizeof out) {
        memcpy(out + o, ", ", 2);
        o += 2;
        p += 2;
        continue;
      }
      break;
    }
  }
  out[o] = 0;
  snprintf(text, cap, "%s", out);
}

/* The first local peer that gave a reason for leaving the operation, or -1. */
static int peer_reason(const dtr__host_hier *x) {
  const dtr__host *l = x->local;
  for (int j = 0; l && j < l->n; j++)
    if (j != l->r && atomic_load(&l->ctl[j].aborted) && l->ctl[j].why_rc != 0) return j;
  return -1;
}

/* c->err after a failed step on the segment: in communicator ranks, and when a local peer gave up
 * first, its reason (which names the rank at fault) instead of "rank j aborted". */
static dtr_result local_fail(dtr_comm *c, dtr__host_hier *x, dtr_result rc, const char *step) {
  const int base = x->node * x->per_node;
  int j = rc == DTR_ERR_ABORTED && !atomic_load(&c->aborted) ? peer_reason(x) : -1;
  if (j >= 0) {
    dtr__host_ctl *p = &x->local->ctl[j];
    return dtr__comm_fail(c, (dtr_result)p->why_rc, "rank %d (same node) gave up the operation: %.*s",
                          base + j, (int)sizeof p->why, p->why);
  }
  char msg[sizeof c->err];
  pthread_mutex_lock(&c->mu);
  snprintf(msg, sizeof msg, "%s", c->err);
  pthread_mutex_unlock(&c->mu);
  translate(msg, sizeof msg, base);
  return dtr__comm_fail(c, rc, "hierarchical %s on node %d (ranks %d-%d): %s", step, x->node, base,
                        base + x->per_node - 1, msg);
}

/* While the chain waits on TCP: a local peer that gave up (with its reason) or died ends it too. */
static dtr_result watch_local(dtr_comm *c, void *arg) {
  dtr__host_hier *x = arg;
  dtr__host *l = x->local;
  const int base = x->node * x->per_node;
  int j = peer_reason(x);
  if (j >= 0) {
    dtr__host_ctl *p = &l->ctl[j];
    return dtr__comm_fail(c, (dtr_result)p->why_rc, "rank %d (same node) gave up the operation: %.*s",
                          base + j, (int)sizeof p->why, p->why);
  }
  int64_t now = dtr__now_ms();
  if (now < l->next_live_check) return DTR_OK;
  l->next_live_check = now + 50;
  for (j = 0; j < l->n; j++)
    if (j != l->r && !dtr__host_peer_alive(l, j))
      return dtr__comm_fail(
          c, DTR_ERR_CONNECTION,
          "hierarchical operation: rank %d (pid %d, same node) died or left the communicator", base + j,
          (int)l->ctl[j].pid);
  return DTR_OK;
}

/* After a failure: tell the node's other ranks why (they may wait on us in the segment). The TCP
 * connections stay open: ranks of other nodes learn of the rank at fault from its own connections or
 * from their node's ranks, not from this one (whose closing would name it instead). */
static void give_up(dtr_comm *c, dtr__host_hier *x, dtr_result rc) {
  dtr__host *l = x->local;
  if (!l || !l->ctl) return;
  dtr__host_ctl *me = &l->ctl[l->r];
  if (!atomic_load(&me->aborted)) {
    pthread_mutex_lock(&c->mu);
    size_t k = strnlen(c->err, sizeof me->why - 1);
    memcpy(me->why, c->err, k);
    me->why[k] = 0;
    pthread_mutex_unlock(&c->mu);
    me->why_rc = (int32_t)rc;
  }
  dtr__host_segment_abort(l);
}

/* ---- topology */

dtr_result dtr__host_hier_init(dtr_comm *c, dtr__host *h, char *const *ids, const char *kp,
                               int64_t deadline) {
  const int n = c->size;
  if (dtr__param_int("DTRAIN_HOST_HIER", 1) == 0) {
    DTR_DEBUG("host backend: DTRAIN_HOST_HIER=0: flat TCP mesh");
    return DTR_OK;
  }
  int L = 1;
  while (L < n && strcmp(ids[L], ids[0]) == 0) L++;
  const char *why = NULL;
  int bad = -1;
  if (n % L != 0) why = "the node of rank 0 holds a number of ranks that does not divide the size";
  for (int j = 0; !why && j < n; j++) {
    if (strcmp(ids[j], ids[j / L * L]) != 0)
      why = "a node holds a different number of ranks, or not a contiguous block";
    for (int b = 0; !why && j % L == 0 && b < j; b += L)
      if (strcmp(ids[j], ids[b]) == 0) why = "a node holds more than one block of ranks";
    if (why) bad = j;
  }
  if (why) {
    DTR_DEBUG("host backend: flat TCP mesh, not hierarchical: %s (rank %d)", why, bad);
    return DTR_OK;
  }
  dtr__host_hier *x = calloc(1, sizeof *x);
  if (!x) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: out of memory");
  h->hier = x;
  x->per_node = L;
  x->nodes = n / L;
  x->node = c->rank / L;
  x->li = c->rank % L;
  x->rail = calloc((size_t)x->nodes, sizeof *x->rail);
  if (!x->rail) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: out of memory");
  for (int k = 0; k < x->nodes; k++) x->rail[k] = k * L + x->li;
  /* Thresholds from bench/coll_netns.sh on namespace nodes (figures in docs/collectives.md): the
   * hierarchy beat the flat mesh at every size measured, 256 B to 64 MiB, on 2x2 and 3x2 ranks (one
   * TCP exchange with one peer instead of n-1, the rest in shared memory). Below 16 KiB (the segment's
   * own latency path) the flat algorithm stays all the same: there every rank waits on every other
   * directly, so a timeout names the rank that did not come, where in the chain a rank of another node
   * only sees its rail peer, itself waiting on its node; small all-reduces are where such hangs show.
   * With one rank per node the direct algorithm beat the chain on 2, 3 and 4 nodes (the chain's middle
   * ranks move 2x the message per direction, direct 2(n-1)/n x); the chain pays off only when the
   * direct pieces get small and each rank drives many connections: from 16 nodes and 1 MiB, a
   * default not measured here (knobs below). */
  x->min_bytes = (size_t)dtr__param_int("DTRAIN_HOST_HIER_MIN_BYTES", 16 << 10);
  /* The hierarchical reduce-scatter moves fewer bytes between nodes than the flat mesh when L(N-1) > N
   * (by N/(L(N-1)): 1/2 on 2 nodes x 4 ranks), but its steps run one after the other (segment, chain
   * in one direction, segment) where the flat mesh keeps every connection busy both ways at once: on
   * namespace nodes of one 2-core machine it reached 55-80% of the flat mesh's busbw at 64 MiB on 2x2,
   * 3x2 and 2x4 (docs/collectives.md). So it is off unless asked for (-1: off). */
  const int64_t rs = dtr__param_int("DTRAIN_HOST_HIER_RS_MIN_BYTES", -1);
  x->rs_min_bytes = rs < 0 ? SIZE_MAX : (size_t)rs;
  x->chain_bytes = (size_t)dtr__param_int("DTRAIN_HOST_CHAIN_MIN_BYTES", 1 << 20);
  x->chain_nodes = (int)dtr__param_int("DTRAIN_HOST_CHAIN_MIN_NODES", 16);
  /* Result slices back along the chain (default) or straight from the last node (measured equal on 3
   * nodes; back along the chain keeps every link's load at one message per direction). */
  x->direct = dtr__param_int("DTRAIN_HOST_CHAIN_DIRECT", 0) != 0;
  x->chunk_bytes = (size_t)dtr__param_range("DTRAIN_HOST_HIER_CHUNK_BYTES", 8 << 20, 4096, (int64_t)1 << 30);
  if (L > 1) {
    char lkp[700];
    snprintf(lkp, sizeof lkp, "%snode%d/", kp, x->node);
    x->local = calloc(1, sizeof *x->local);
    if (!x->local) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: out of memory");
    x->local->n = L;
    x->local->r = x->li;
    x->local->fd = -1;
    dtr_result rc = dtr__host_segment_setup(c, x->local, lkp, deadline);
    if (rc) {
      char msg[sizeof c->err];
      pthread_mutex_lock(&c->mu);
      snprintf(msg, sizeof msg, "%s", c->err);
      pthread_mutex_unlock(&c->mu);
      translate(msg, sizeof msg, x->node * L);
      return dtr__comm_fail(c, rc, "host backend: the shared-memory segment of node %d (ranks %d-%d): %s",
                            x->node, x->node * L, x->node * L + L - 1, msg);
    }
  }
  if (L > 1 || x->nodes >= x->chain_nodes)
    DTR_DEBUG(
        "host backend: hierarchical: %d nodes x %d ranks (rank %d is node %d, local %d); all-reduce from "
        "%zu bytes over %s",
        x->nodes, L, c->rank, x->node, x->li, L > 1 ? x->min_bytes : x->chain_bytes,
        L > 1 ? "shared memory + a chain per rail" : "a chain of nodes");
  else
    DTR_DEBUG("host backend: hierarchical: %d nodes x 1 rank: direct all-reduce (the chain from %d nodes)",
              x->nodes, x->chain_nodes);
  return DTR_OK;
}

void dtr__host_hier_abort(dtr__host *h) {
  if (h && h->hier) dtr__host_segment_abort(h->hier->local);
}

void dtr__host_hier_destroy(dtr__host *h) {
  dtr__host_hier *x = h ? h->hier : NULL;
  if (!x) return;
  if (x->local) {
    dtr__host_segment_release(x->local);
    free(x->local);
  }
  free(x->rail);
  free(x->buf);
  free(x);
  h->hier = NULL;
}

/* ---- all-reduce */

static void note_use(dtr_comm *c, dtr__host_hier *x, const dtr__op *op, const char *how) {
  const unsigned bit = 1u << ((unsigned)op->kind & 31u);
  if (x->used & bit) return;
  x->used |= bit;
  const char *what = op->kind == DTR__OP_REDUCE_SCATTER ? "reduce-scatter"
                     : op->kind == DTR__OP_ALL_GATHER   ? "all-gather"
                                                        : "all-reduce";
  DTR_DEBUG("host backend: rank %d: first %s %s (seq %llu, %zu bytes, %d nodes x %d ranks)", c->rank, how,
            what, (unsigned long long)op->seq, op->count * dtr_dtype_size(op->dtype), x->nodes, x->per_node);
}

/* x->buf of at least need bytes. */
static dtr_result scratch(dtr_comm *c, dtr__host_hier *x, size_t need, const char *what) {
  if (x->buf_cap >= need) return DTR_OK;
  uint8_t *b = realloc(x->buf, need);
  if (!b) return dtr__comm_fail(c, DTR_ERR_NOMEM, "host backend: out of memory (hierarchical %s)", what);
  x->buf = b;
  x->buf_cap = need;
  return DTR_OK;
}

/* After the chain or the rail exchange failed on TCP: a rail peer that closed or stalled may have given
 * up because of a rank of this node (it died, or gave a reason): that one is the cause to report. */
static dtr_result rail_fail(dtr_comm *c, dtr__host_hier *x, dtr_result rc) {
  if ((rc == DTR_ERR_CONNECTION || rc == DTR_ERR_TIMEOUT) && x->local) {
    x->local->next_live_check = 0;
    dtr_result lc = watch_local(c, x);
    if (lc) return lc;
  }
  if (rc != DTR_ERR_TIMEOUT) return rc;
  /* A rail peer that does not come is often blocked on a rank of its own node that stalls (alive, so
   * nothing closed): only that node's ranks can see which one, and their errors name it. Say so, with
   * the candidates, rather than let the rail peer look like the culprit. */
  char msg[sizeof c->err], nodes[160];
  size_t o = 0;
  pthread_mutex_lock(&c->mu);
  snprintf(msg, sizeof msg, "%s", c->err);
  pthread_mutex_unlock(&c->mu);
  nodes[0] = 0;
  if (!strstr(msg, "waiting for rank")) return rc;
  for (int k = 0; k < x->nodes && o + 24 < sizeof nodes; k++)
    if (k != x->node)
      o += (size_t)snprintf(nodes + o, sizeof nodes - o, "%s%d-%d", o ? ", " : "", k * x->per_node,
                            k * x->per_node + x->per_node - 1);
  return dtr__comm_fail(
      c, rc,
      "%s (hierarchical: the ranks waited on are this rank's rail peers; one of them may be "
      "blocked on a stalled rank of its own node, ranks %s, which that node's errors name)",
      msg, nodes);
}

/* Outer chunks of the hierarchical all-reduce and reduce-scatter: a chunk of m elements (of each
 * block) is cut into L slices of `per` elements on PIECE_ALIGN-byte boundaries, local rank i owning
 * slice i; `groups` (1, or n blocks) x L slices of per_max fit in DTRAIN_HOST_HIER_CHUNK_BYTES. */
typedef struct slicing {
  size_t L, al, per_max;
} slicing;

static slicing slicing_for(const dtr__host_hier *x, size_t es, size_t groups) {
  slicing g = {.L = (size_t)x->per_node, .al = PIECE_ALIGN / es ? PIECE_ALIGN / es : 1};
  g.per_max = x->chunk_bytes / es / g.L / groups / g.al * g.al;
  if (g.per_max < g.al) g.per_max = g.al;
  return g;
}

/* The chunk at off: *m elements of the count - off left, slices of *per; 1 when the L slices cover it
 * exactly (otherwise the last slices are short or empty: the ragged last chunk). */
static int chunk_at(const slicing *g, size_t count, size_t off, size_t *m, size_t *per) {
  const size_t most = g->L * g->per_max;
  *m = count - off < most ? count - off : most;
  *per = ((*m + g->L - 1) / g->L + g->al - 1) / g->al * g->al;
  return *m == g->L * *per;
}

/* Elements of slice i (of `per`) that fall inside a chunk of m: per, fewer, or 0 in a ragged chunk. */
static size_t slice_len(size_t m, size_t per, size_t i) {
  const size_t lo = i * per;
  return lo >= m ? 0 : (m - lo < per ? m - lo : per);
}

static dtr_result hier_all_reduce(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_hier *x = h->hier;
  const int L = x->per_node;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const slicing g = slicing_for(x, es, 1);
  const size_t per_max = g.per_max;
  const size_t blk = (size_t)L * per_max * es;
  DTR_CHECK(scratch(c, x, 2 * blk + per_max * es, "all-reduce"));
  uint8_t *A = x->buf, *S = x->buf + blk, *R = x->buf + 2 * blk;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  const int direct = x->direct;
  const void *in[L];
  note_use(c, x, op, "hierarchical");
  for (size_t off = 0; off < count;) {
    size_t m, per;
    const int full = chunk_at(&g, count, off, &m, &per);
    const uint8_t *src = send + off * es;
    if (!full) { /* the ragged last chunk: padded copies */
      memcpy(S, src, m * es);
      memset(S + m * es, 0, ((size_t)L * per - m) * es);
      src = S;
    }
    /* a. slice li of every local rank's chunk */
    dtr__op sub = {.kind = DTR__OP_ALL_TO_ALL,
                   .seq = op->seq,
                   .send = src,
                   .recv = A,
                   .count = per * es,
                   .dtype = DTR_U8,
                   .redop = DTR_SUM,
                   .root = -1};
    dtr_result rc = dtr__host_collective(c, x->local, &sub, deadline);
    if (rc) return local_fail(c, x, rc, "all-reduce, the all-to-all");
    /* b. the chain over this rank's slice (the same length on every node's rank li) */
    const size_t sl = slice_len(m, per, (size_t)x->li);
    if (sl) {
      for (int j = 0; j < L; j++) in[j] = A + (size_t)j * per * es;
      rc = dtr__host_tcp_chain(c, h->tcp, op, x->rail, x->nodes, x->node, in, L, sl, R, c->size, direct, 0,
                               watch_local, x, deadline);
      if (rc) return rail_fail(c, x, rc);
    }
    /* c. every local rank's result slice into recv */
    sub = (dtr__op){.kind = DTR__OP_ALL_GATHER,
                    .seq = op->seq,
                    .send = R,
                    .recv = full ? recv + off * es : S,
                    .count = per * es,
                    .dtype = DTR_U8,
                    .redop = DTR_SUM,
                    .root = -1};
    rc = dtr__host_collective(c, x->local, &sub, deadline);
    if (rc) return local_fail(c, x, rc, "all-reduce, the all-gather");
    if (!full) memcpy(recv + off * es, S, m * es);
    off += m;
  }
  return DTR_OK;
}

/* Reduce-scatter (send: n blocks of count; rank b gets block b folded over ranks 0..n-1). Per outer chunk
 * of m elements of every block, split into L sub-slices of `per` (local rank i owns sub-slice i):
 *   a. pack: sub-slice i of every block, for each i in turn (zero padded to per), and an all-to-all
 *      over the segment: local rank i then holds sub-slice i of every block from each local rank;
 *   b. the chain along the rail over those n sub-slices, every local input folded in rank order, with
 *      `part` = L * per: the last node sends the finalised sub-slices of node k's L blocks to node k
 *      only (each result byte crosses TCP once, to its owner);
 *   c. an all-to-all over the segment of the node's L result sub-slices: rank b gets the L sub-slices
 *      of its block chunk, in order.
 * Scratch: two buffers of n * m elements (pack, all-to-all result) and the chain's n * per results,
 * with n * m * es <= DTRAIN_HOST_HIER_CHUNK_BYTES. The fold order is the all-reduce's: bit-identical. */
static dtr_result hier_reduce_scatter(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_hier *x = h->hier;
  const int L = x->per_node, n = c->size;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const slicing g = slicing_for(x, es, (size_t)n);
  const size_t per_max = g.per_max;
  const size_t blk = (size_t)n * (size_t)L * per_max * es;
  DTR_CHECK(scratch(c, x, 2 * blk + (size_t)n * per_max * es, "reduce-scatter"));
  uint8_t *S = x->buf, *A = x->buf + blk, *R = x->buf + 2 * blk;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  const void *in[L];
  note_use(c, x, op, "hierarchical");
  for (size_t off = 0; off < count;) {
    size_t m, per;
    const int full = chunk_at(&g, count, off, &m, &per);
    /* a. S[i][b]: sub-slice i of block b's chunk */
    for (int i = 0; i < L; i++) {
      const size_t lo = (size_t)i * per, len = slice_len(m, per, (size_t)i);
      for (int b = 0; b < n; b++) {
        uint8_t *d = S + ((size_t)i * (size_t)n + (size_t)b) * per * es;
        memcpy(d, send + ((size_t)b * count + off + lo) * es, len * es);
        if (len < per) memset(d + len * es, 0, (per - len) * es);
      }
    }
    dtr__op sub = {.kind = DTR__OP_ALL_TO_ALL,
                   .seq = op->seq,
                   .send = S,
                   .recv = A,
                   .count = (size_t)n * per * es,
                   .dtype = DTR_U8,
                   .redop = DTR_SUM,
                   .root = -1};
    dtr_result rc = dtr__host_collective(c, x->local, &sub, deadline);
    if (rc) return local_fail(c, x, rc, "reduce-scatter, the all-to-all");
    /* b. A[j]: local rank j's n sub-slices; node k's L blocks are part k of the result */
    for (int j = 0; j < L; j++) in[j] = A + (size_t)j * (size_t)n * per * es;
    rc = dtr__host_tcp_chain(c, h->tcp, op, x->rail, x->nodes, x->node, in, L, (size_t)n * per, R, n, 1,
                             (size_t)L * per, watch_local, x, deadline);
    if (rc) return rail_fail(c, x, rc);
    /* c. R's part of this node: [local rank j][per] -> rank j, in local rank order */
    uint8_t *T = full ? recv + off * es : S;
    sub = (dtr__op){.kind = DTR__OP_ALL_TO_ALL,
                    .seq = op->seq,
                    .send = R + (size_t)x->node * (size_t)L * per * es,
                    .recv = T,
                    .count = per * es,
                    .dtype = DTR_U8,
                    .redop = DTR_SUM,
                    .root = -1};
    rc = dtr__host_collective(c, x->local, &sub, deadline);
    if (rc) return local_fail(c, x, rc, "reduce-scatter, the second all-to-all");
    if (!full) memcpy(recv + off * es, T, m * es); /* the sub-slices are adjacent: [i*per, ...) */
    off += m;
  }
  return DTR_OK;
}

/* All-gather: each rank sends its block over TCP to its rail peers only (every byte crosses each node
 * pair once) and receives theirs at their final places in recv; then, node by node, an all-gather over
 * the segment completes each node's L contiguous blocks (in place: a rank's own block is skipped). No
 * scratch memory. */
static dtr_result hier_all_gather(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_hier *x = h->hier;
  const int L = x->per_node, N = x->nodes;
  const size_t bytes = op->count * dtr_dtype_size(op->dtype);
  uint8_t *recv = op->recv;
  dtr_p2p p[2 * N];
  int np = 0;
  note_use(c, x, op, "hierarchical");
  for (int k = 0; k < N; k++) {
    if (k == x->node) continue;
    p[np++] =
        (dtr_p2p){.is_send = 1, .peer = x->rail[k], .buf = (void *)op->send, .count = bytes, .dtype = DTR_U8};
    p[np++] = (dtr_p2p){.is_send = 0,
                        .peer = x->rail[k],
                        .buf = recv + (size_t)x->rail[k] * bytes,
                        .count = bytes,
                        .dtype = DTR_U8};
  }
  dtr__op t = {.kind = DTR__OP_P2P, .seq = op->seq, .dtype = DTR_U8, .root = p[0].peer, .p2p = p, .np2p = np};
  dtr_result rc = dtr__host_tcp_p2p_step(c, h->tcp, &t, deadline);
  if (rc) return rail_fail(c, x, rc);
  for (int k = 0; k < N; k++) {
    const int me = k * L + x->li;
    dtr__op sub = {.kind = DTR__OP_ALL_GATHER,
                   .seq = op->seq,
                   .send = k == x->node ? op->send : recv + (size_t)me * bytes,
                   .recv = recv + (size_t)k * (size_t)L * bytes,
                   .count = bytes,
                   .dtype = DTR_U8,
                   .redop = DTR_SUM,
                   .root = -1};
    if ((rc = dtr__host_collective(c, x->local, &sub, deadline)))
      return local_fail(c, x, rc, "all-gather, the segment's step");
  }
  return DTR_OK;
}

/* One rank per node: the chain over the whole communicator. */
static dtr_result chain_all_reduce(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_hier *x = h->hier;
  const void *in[1] = {op->send};
  note_use(c, x, op, "chained");
  return dtr__host_tcp_chain(c, h->tcp, op, x->rail, x->nodes, x->node, in, 1, op->count, op->recv, c->size,
                             x->direct, 0, NULL, NULL, deadline);
}

/* Broadcast: the root sends to the rank with its local index on every other node (N-1 messages over
 * TCP instead of n-1, none to its own node), then every node broadcasts in its segment from that rank. */
static dtr_result hier_broadcast(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_hier *x = h->hier;
  const int L = x->per_node, N = x->nodes, rn = op->root / L, rl = op->root % L;
  uint8_t *buf = op->recv ? op->recv : (uint8_t *)op->send;
  dtr_p2p p[N];
  int np = 0;
  if (c->rank == op->root) {
    for (int k = 0; k < N; k++)
      if (k != rn)
        p[np++] =
            (dtr_p2p){.is_send = 1, .peer = k * L + rl, .buf = buf, .count = op->count, .dtype = op->dtype};
  } else if (x->li == rl) {
    p[np++] = (dtr_p2p){.is_send = 0, .peer = op->root, .buf = buf, .count = op->count, .dtype = op->dtype};
  }
  dtr_result rc;
  if (np) {
    dtr__op t = {
        .kind = DTR__OP_P2P, .seq = op->seq, .dtype = op->dtype, .root = p[0].peer, .p2p = p, .np2p = np};
    if ((rc = dtr__host_tcp_p2p_step(c, h->tcp, &t, deadline))) return rc;
  }
  dtr__op sub = {.kind = DTR__OP_BROADCAST,
                 .seq = op->seq,
                 .send = buf,
                 .recv = buf,
                 .count = op->count * dtr_dtype_size(op->dtype),
                 .dtype = DTR_U8,
                 .redop = DTR_SUM,
                 .root = rl};
  if ((rc = dtr__host_collective(c, x->local, &sub, deadline)))
    return local_fail(c, x, rc, "broadcast, the segment's step");
  return DTR_OK;
}

dtr_result dtr__host_hier_run(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_hier *x = h->hier;
  if (op->kind == DTR__OP_ALL_REDUCE && op->count > 0 && dtr__reduce_acc_size(op->dtype, op->redop) > 0) {
    const size_t bytes = op->count * dtr_dtype_size(op->dtype);
    dtr_result rc = DTR_OK;
    int took = 1;
    if (x->per_node > 1 && bytes >= x->min_bytes)
      rc = hier_all_reduce(c, h, op, deadline);
    else if (x->per_node == 1 && x->nodes >= x->chain_nodes && bytes >= x->chain_bytes)
      rc = chain_all_reduce(c, h, op, deadline);
    else
      took = 0;
    if (took) {
      if (rc) give_up(c, x, rc);
      return rc;
    }
  }
  /* Reduce-scatter and all-gather by the size of the whole (n-block) buffer. */
  const size_t all = op->count * dtr_dtype_size(op->dtype) * (size_t)c->size;
  if (x->per_node > 1 && op->count > 0 &&
      ((op->kind == DTR__OP_REDUCE_SCATTER && all >= x->rs_min_bytes &&
        dtr__reduce_acc_size(op->dtype, op->redop) > 0) ||
       (op->kind == DTR__OP_ALL_GATHER && all >= x->min_bytes && dtr_dtype_size(op->dtype) > 0))) {
    dtr_result rc = op->kind == DTR__OP_REDUCE_SCATTER ? hier_reduce_scatter(c, h, op, deadline)
                                                       : hier_all_gather(c, h, op, deadline);
    if (rc) give_up(c, x, rc);
    return rc;
  }
  if (op->kind == DTR__OP_BROADCAST && x->per_node > 1 && op->count > 0 && dtr_dtype_size(op->dtype) > 0 &&
      op->root >= 0 && op->root < c->size && op->count * dtr_dtype_size(op->dtype) >= x->min_bytes) {
    dtr_result rc = hier_broadcast(c, h, op, deadline);
    if (rc) give_up(c, x, rc);
    return rc;
  }
  return dtr__host_tcp_run(c, h->tcp, op, deadline);
}
