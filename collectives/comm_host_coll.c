/* Collectives of the host backend, through the per-rank slots of the shared segment.
 *
 * Every operation is a sequence of rounds; a round uses one of two slot buffers (double-buffering, so
 * a rank may fill buffer b^1 while slower ranks still read buffer b) and ends with a published step.
 * Before writing into buffer b a rank waits until every rank published the step that ended the last
 * round on b (usually long true). Reductions always combine rank 0, 1, ..., n-1 in that order with
 * dtr__reduce_n, and every element is reduced by exactly one rank, so all ranks get the same bits on
 * every run, whichever path (small or chunked) an operation takes.
 *
 * Large all-reduce (bandwidth-optimal): chunks flow through a three-stage pipeline; in phase t each
 * rank copies into its slot the n-1 pieces of chunk t that the others reduce, reduces its own piece of
 * chunk t-1 over all ranks (its own contribution straight from its input, the result straight to its
 * output and to its slot), and copies the n-1 other reduced pieces of chunk t-2 out; one barrier per
 * phase. Each rank's piece is sized by the ranks' measured speed (comm_host_share.c). Small all-reduce
 * (latency-optimal): copy in, one sync, every rank reduces the whole vector itself. Large results go
 * to recv with streaming stores. Reduce-scatter, all-gather, all-to-all and broadcast go in rounds of
 * round_bytes per rank; small broadcasts skip the slots for the root's eager entries, so that a root
 * may run several calls ahead of its readers.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "collectives/comm_host_internal.h"
#include "common/check.h"
#include "common/clock.h"

#define PIECE_ALIGN 64 /* bytes: piece boundaries on cache lines */

/* Wait until every rank passed step rel, one this rank passed when it last used some buffer. A rel
 * that looks ahead of this rank's step was passed 2^31 or more steps ago (the counters wrap), and every
 * rank is long past it. */
static dtr_result wait_released(dtr_comm *c, dtr__host *h, uint32_t rel, const dtr__op *op,
                                int64_t deadline) {
  if (!dtr__host_ge(h->step, rel)) return DTR_OK;
  return dtr__host_wait_step(c, h, -1, rel, op, deadline);
}

static dtr_result acquire(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline, int *b) {
  *b = h->buf;
  h->buf ^= 1;
  return wait_released(c, h, h->release[*b], op, deadline);
}

static void release(dtr__host *h, int b) {
  dtr__host_publish(h);
  h->release[b] = h->step;
}

static dtr_result wait_all(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  return dtr__host_wait_step(c, h, -1, h->step, op, deadline);
}

/* Copy with streaming stores (stream set): for large results going to recv, which do not fit in cache
 * anyway, skipping the read-for-ownership of the destination saves a third of the copy's memory
 * traffic; for large copy-ins, see pipelined. Falls back to memcpy for small copies or CPUs without
 * AVX2. */
#if defined(__x86_64__)
__attribute__((target("avx2"))) static void copy_nt_avx2(uint8_t *dst, const uint8_t *src, size_t len) {
  size_t head = (32 - ((uintptr_t)dst & 31)) & 31;
  if (head > len) head = len;
  memcpy(dst, src, head);
  dst += head;
  src += head;
  len -= head;
  size_t i = 0;
  for (; i + 128 <= len; i += 128) {
    __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
    __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
    __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
    __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
    _mm256_stream_si256((__m256i *)(dst + i), a);
    _mm256_stream_si256((__m256i *)(dst + i + 32), b);
    _mm256_stream_si256((__m256i *)(dst + i + 64), c);
    _mm256_stream_si256((__m256i *)(dst + i + 96), d);
  }
  memcpy(dst + i, src + i, len - i);
}
#endif

static void copy_stream(uint8_t *dst, const uint8_t *src, size_t len, int stream) {
#if defined(__x86_64__)
  if (stream && len >= 4096) {
    copy_nt_avx2(dst, src, len);
    return;
  }
#endif
  (void)stream;
  memcpy(dst, src, len);
}

static void stream_fence(int stream) {
#if defined(__x86_64__)
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

/* Sub-buffer q (0..3) of rank j: the two slot buffers halved, for the pipelined all-reduce. */
static uint8_t *sub(const dtr__host *h, size_t q, int j) {
  return dtr__host_slot(h, (int)(q / 2), j) + (q % 2) * (h->slot_bytes / 2);
}

/* Piece j of a chunk of `total` elements: between the current cuts, on PIECE_ALIGN boundaries. */
static void piece(const dtr__host *h, size_t total, int j, size_t es, size_t *off, size_t *len) {
  dtr__host_share_piece(h->cut, total, PIECE_ALIGN / es ? PIECE_ALIGN / es : 1, j, off, len);
}

static size_t elems_in(size_t bytes, size_t es) {
  size_t e = bytes / es;
  return e ? e : 1;
}

/* Reduce this rank's piece (len elements of in[0..n-1]) one L1-sized block at a time, and copy each
 * block to where it is wanted: this rank's result (mine) and its slot, from which the others copy it
 * out (theirs); either may be NULL. Streaming stores when stream. Against reducing into the slot and
 * copying the whole chunk out of the slots afterwards, this saves the read of the own piece back and
 * the write-back of the slot's lines (interleaved runs, medians: 2 ranks +26-34% busbw at 16-256 MiB
 * and +10-60% at 64 KiB-4 MiB, 4 ranks on 2 cores +4-7%). Small results are left in cache. */
#define REDUCE_BLOCK 16384
static void reduce_piece(const dtr__op *op, const void *const *in, int n, size_t len, uint8_t *mine,
                         uint8_t *theirs, int stream) {
  _Alignas(64) uint8_t blk[REDUCE_BLOCK];
  const size_t es = dtr_dtype_size(op->dtype), be = REDUCE_BLOCK / es;
  const void *at[n];
  for (size_t o = 0; o < len; o += be) {
    size_t m = len - o < be ? len - o : be;
    for (int j = 0; j < n; j++) at[j] = (const uint8_t *)in[j] + o * es;
    dtr__reduce_n(blk, at, n, m, op->dtype, op->redop, n);
    if (mine) copy_stream(mine + o * es, blk, m * es, stream);
    if (theirs) copy_stream(theirs + o * es, blk, m * es, stream);
  }
  stream_fence(stream);
}

/* DTRAIN_HOST_TEST_SLOW_REDUCE=k (tests only): spin k-1 times as long as the reduce took, as a core
 * k times slower at reducing would. */
static void slow_down(int64_t took_ns, int k) {
  int64_t until = dtr__now_ns() + took_ns * (k - 1);
  while (dtr__now_ns() < until) dtr__host_relax();
}

/* All-reduces of at least this many chunks publish how long this rank was busy in them. */
#define BALANCE_MIN_CHUNKS 8

/* Move the piece cuts by the busy times the ranks published after the last measured all-reduce
 * (comm_host_share.c). Every rank runs this at the same point of the same operation, after the
 * release wait that makes those figures visible and before anyone can overwrite them (a rank writes
 * its next figure only in the last phase of its next measured all-reduce, past that operation's first
 * barrier). */
static void rebalance(dtr__host *h) {
  const int n = h->n, log = h->r == 0 && dtr__log_level_get() >= DTR_LOG_DEBUG;
  uint64_t busy[n];
  uint32_t before[n + 1];
  if (log) memcpy(before, h->cut, sizeof before);
  for (int j = 0; j < n; j++) busy[j] = h->ctl[j].busy_ns;
  dtr__host_share_update(h->cut, busy, n);
  if (!log) return;
  uint32_t moved = 0; /* the largest change of one rank's share: log only real moves */
  for (int j = 0; j < n; j++) {
    uint32_t was = before[j + 1] - before[j], now = h->cut[j + 1] - h->cut[j];
    uint32_t d = was > now ? was - now : now - was;
    if (d > moved) moved = d;
  }
  if (moved < DTR__SHARE_ONE / 100) return;
  char shares[160];
  size_t len = 0;
  for (int j = 0; j < n && len + 16 < sizeof shares; j++)
    len += (size_t)snprintf(shares + len, sizeof shares - len, "%s%.1f%%", j ? " " : "",
                            100.0 * (h->cut[j + 1] - h->cut[j]) / DTR__SHARE_ONE);
  DTR_DEBUG("host backend: all-reduce pieces now %s%s (rank 0 was busy %.2f ms)", shares,
            len + 16 < sizeof shares ? "" : " ...", (double)busy[0] / 1e6);
}

/* All-reduce (root < 0) or reduce to root, chunked and pipelined: phase t copies chunk t in, reduces
 * this rank's piece of chunk t-1 (straight to its own result, and to its slot for the others) and
 * copies the other pieces of chunk t-2 out (every rank, or only root), then one barrier. Three chunk
 * buffers rotate (the barrier after phase t means nobody still reads chunk t-2's buffer when chunk
 * t+1 is written into it), so a chunk costs one sync. Large copy-ins use streaming stores when every
 * rank has a core of its own (h->stream_in): a cached store must first take the line from the cache
 * of the rank that read it three phases ago, which costs more than that rank's later fetch from
 * memory (2 ranks: copy-in 2x faster, busbw +13-17% at 64 MiB and +30% at 256 MiB; 4 ranks on 2
 * cores, where reader and writer often share a cache: -15%). The pieces follow h->cut, which large
 * all-reduces keep balanced by the ranks' busy times (comm_host_share.c). */
static dtr_result pipelined(dtr_comm *c, dtr__host *h, const dtr__op *op, int root, int64_t deadline) {
  const int n = h->n, r = h->r;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  const void *in[n];
  size_t ce = elems_in(h->chunk_bytes < h->slot_bytes / 2 ? h->chunk_bytes : h->slot_bytes / 2, es);
  if (ce > PIECE_ALIGN) ce = ce / PIECE_ALIGN * PIECE_ALIGN;
  const size_t nch = (count + ce - 1) / ce;
  const int stream = h->stream_bytes && count * es >= h->stream_bytes;
  const int gets = root < 0 || r == root;         /* this rank gets the result */
  const int gives = root < 0 ? n > 1 : r != root; /* others copy its reduced piece out */
  const int measure = h->balance && root < 0 && nch >= BALANCE_MIN_CHUNKS;
  for (int q = 0; q < 2; q++) DTR_CHECK(wait_released(c, h, h->release[q], op, deadline));
  if (h->busy_fresh) rebalance(h);
  int64_t start = dtr__now_ns(), waited = 0;
  for (size_t t = 0; t < nch + 2; t++) {
    size_t po, pl;
    if (t < nch) { /* copy in chunk t: the pieces the other ranks reduce */
      size_t off = t * ce, len = count - off < ce ? count - off : ce;
      uint8_t *mine = sub(h, t % 3, r);
      for (int j = 0; j < n; j++) {
        if (j == r) continue;
        piece(h, len, j, es, &po, &pl);
        copy_stream(mine + po * es, send + (off + po) * es, pl * es, stream && h->stream_in);
      }
      stream_fence(stream && h->stream_in);
    }
    if (t >= 1 && t <= nch) { /* reduce piece r of chunk t-1 (own piece straight from send) */
      size_t off = (t - 1) * ce, len = count - off < ce ? count - off : ce;
      piece(h, len, r, es, &po, &pl);
      for (int j = 0; j < n; j++)
        in[j] = j == r ? (const void *)(send + (off + po) * es) : sub(h, (t - 1) % 3, j) + po * es;
      int64_t r0 = h->slow_reduce > 1 ? dtr__now_ns() : 0;
      reduce_piece(op, in, n, pl, gets ? recv + (off + po) * es : NULL,
                   gives ? sub(h, (t - 1) % 3, r) + po * es : NULL, stream);
      if (h->slow_reduce > 1) slow_down(dtr__now_ns() - r0, h->slow_reduce);
    }
    if (t >= 2 && gets) { /* copy out the other pieces of chunk t-2 */
      size_t off = (t - 2) * ce, len = count - off < ce ? count - off : ce;
      for (int j = 0; j < n; j++) {
        if (j == r) continue;
        piece(h, len, j, es, &po, &pl);
        copy_stream(recv + (off + po) * es, sub(h, (t - 2) % 3, j) + po * es, pl * es, stream);
      }
      stream_fence(stream);
    }
    if (measure && t == nch + 1) h->ctl[r].busy_ns = (uint64_t)(dtr__now_ns() - start - waited);
    dtr__host_publish(h);
    if (t + 1 < nch + 2) {
      int64_t w0 = dtr__now_ns();
      DTR_CHECK(wait_all(c, h, op, deadline));
      waited += dtr__now_ns() - w0;
    }
  }
  h->busy_fresh = measure;
  h->release[0] = h->release[1] = h->step;
  return DTR_OK;
}

static dtr_result all_reduce(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int n = h->n, r = h->r;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const void *in[n];
  int b;
  if (count * es > h->small_bytes) return pipelined(c, h, op, -1, deadline);
  /* Small: copy in, one sync, every rank reduces the whole vector in rank order itself. */
  DTR_CHECK(acquire(c, h, op, deadline, &b));
  memcpy(dtr__host_slot(h, b, r), op->send, count * es);
  dtr__host_publish(h);
  DTR_CHECK(wait_all(c, h, op, deadline));
  for (int j = 0; j < n; j++) in[j] = dtr__host_slot(h, b, j);
  dtr__reduce_n(op->recv, in, n, count, op->dtype, op->redop, n);
  release(h, b);
  return DTR_OK;
}

/* Reduce to root: small ones are reduced by root alone after one sync; large ones pipelined. */
static dtr_result reduce(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int n = h->n, r = h->r, root = op->root;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const void *in[n];
  int b;
  if (count * es > h->small_bytes) return pipelined(c, h, op, root, deadline);
  DTR_CHECK(acquire(c, h, op, deadline, &b));
  memcpy(dtr__host_slot(h, b, r), op->send, count * es);
  dtr__host_publish(h);
  if (r == root) {
    DTR_CHECK(wait_all(c, h, op, deadline));
    for (int j = 0; j < n; j++) in[j] = dtr__host_slot(h, b, j);
    dtr__reduce_n(op->recv, in, n, count, op->dtype, op->redop, n);
  }
  release(h, b);
  return DTR_OK;
}

/* send holds n blocks of count; rank r gets block r reduced. One sync per chunk. */
static dtr_result reduce_scatter(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int n = h->n, r = h->r;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  const void *in[n];
  /* recv may be this rank's block of send; dtr__reduce_n only allows out to alias in[0]. */
  const uint8_t *own = send + (size_t)r * count * es;
  const int alias = r != 0 && recv < own + count * es && own < recv + count * es;
  const size_t ce = elems_in(h->round_bytes / (size_t)n, es);
  int b;
  for (size_t off = 0; off < count; off += ce) {
    size_t len = count - off < ce ? count - off : ce;
    DTR_CHECK(acquire(c, h, op, deadline, &b));
    uint8_t *mine = dtr__host_slot(h, b, r);
    for (int j = 0; j < n; j++)
      if (j != r || alias)
        memcpy(mine + (size_t)j * ce * es, send + ((size_t)j * count + off) * es, len * es);
    dtr__host_publish(h);
    DTR_CHECK(wait_all(c, h, op, deadline));
    for (int j = 0; j < n; j++)
      in[j] =
          j == r && !alias ? (const void *)(own + off * es) : dtr__host_slot(h, b, j) + (size_t)r * ce * es;
    dtr__reduce_n(recv + off * es, in, n, len, op->dtype, op->redop, n);
    release(h, b);
  }
  return DTR_OK;
}

static dtr_result all_gather(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int n = h->n, r = h->r;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  const size_t ce = elems_in(h->round_bytes, es);
  const int stream = h->stream_bytes && count * es * (size_t)n >= h->stream_bytes;
  int b;
  for (size_t off = 0; off < count; off += ce) {
    size_t len = count - off < ce ? count - off : ce;
    DTR_CHECK(acquire(c, h, op, deadline, &b));
    memcpy(dtr__host_slot(h, b, r), send + off * es, len * es);
    dtr__host_publish(h);
    DTR_CHECK(wait_all(c, h, op, deadline));
    for (int j = 0; j < n; j++) {
      uint8_t *dst = recv + ((size_t)j * count + off) * es;
      const uint8_t *src = j == r ? send + off * es : dtr__host_slot(h, b, j);
      if (dst != src) copy_stream(dst, src, len * es, stream);
    }
    stream_fence(stream);
    release(h, b);
  }
  return DTR_OK;
}

/* A small broadcast in one step: root writes the next of its eager entries and publishes; the others
 * copy it out and publish. An entry is rewritten DTR__HOST_EAGER calls later, once every rank is past
 * the step that ended its last use, so a root runs up to that many calls ahead of its readers instead
 * of waiting for the readers of the buffer it used two calls before (8 bytes in a loop, 4 ranks on 2
 * cores: 13.6 us a call through the slots, 1.7-3.4 us eager; Open MPI's MPI_Bcast 0.6-0.9 us). */
static dtr_result broadcast_eager(dtr_comm *c, dtr__host *h, const dtr__op *op, uint8_t *buf, size_t bytes,
                                  int64_t deadline) {
  const int e = h->eager_next, root = op->root;
  uint8_t *entry = h->eager + ((size_t)root * DTR__HOST_EAGER + (size_t)e) * h->eager_bytes;
  h->eager_next = (e + 1) % DTR__HOST_EAGER;
  if (h->r == root) {
    DTR_CHECK(wait_released(c, h, h->eager_release[e], op, deadline));
    memcpy(entry, buf, bytes);
  } else {
    DTR_CHECK(dtr__host_wait_step(c, h, root, h->step + 1, op, deadline));
    memcpy(buf, entry, bytes);
  }
  dtr__host_publish(h);
  h->eager_release[e] = h->step;
  return DTR_OK;
}

/* Root fills its round into the buffer; the others copy out as soon as root published. */
static dtr_result broadcast(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int r = h->r, root = op->root;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  uint8_t *buf = op->recv ? op->recv : (uint8_t *)op->send;
  if (count * es <= h->eager_bytes) return broadcast_eager(c, h, op, buf, count * es, deadline);
  const size_t ce = elems_in(h->round_bytes, es);
  const int stream = h->stream_bytes && count * es >= h->stream_bytes;
  int b;
  for (size_t off = 0; off < count; off += ce) {
    size_t len = count - off < ce ? count - off : ce;
    if (r == root) {
      DTR_CHECK(acquire(c, h, op, deadline, &b));
      memcpy(dtr__host_slot(h, b, 0), buf + off * es, len * es);
      dtr__host_publish(h);
    } else {
      b = h->buf;
      h->buf ^= 1;
      dtr__host_publish(h);
      DTR_CHECK(dtr__host_wait_step(c, h, root, h->step, op, deadline));
      copy_stream(buf + off * es, dtr__host_slot(h, b, 0), len * es, stream);
      stream_fence(stream);
    }
    release(h, b);
  }
  return DTR_OK;
}

static dtr_result all_to_all(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  const int n = h->n, r = h->r;
  const size_t es = dtr_dtype_size(op->dtype), count = op->count;
  const uint8_t *send = op->send;
  uint8_t *recv = op->recv;
  const size_t ce = elems_in(h->round_bytes / (size_t)n, es);
  const int stream = h->stream_bytes && count * es * (size_t)n >= h->stream_bytes;
  int b;
  for (size_t off = 0; off < count; off += ce) {
    size_t len = count - off < ce ? count - off : ce;
    DTR_CHECK(acquire(c, h, op, deadline, &b));
    uint8_t *mine = dtr__host_slot(h, b, r);
    for (int j = 0; j < n; j++)
      if (j != r) memcpy(mine + (size_t)j * ce * es, send + ((size_t)j * count + off) * es, len * es);
    dtr__host_publish(h);
    DTR_CHECK(wait_all(c, h, op, deadline));
    for (int j = 0; j < n; j++) {
      uint8_t *dst = recv + ((size_t)j * count + off) * es;
      const uint8_t *src =
          j == r ? send + ((size_t)r * count + off) * es : dtr__host_slot(h, b, j) + (size_t)r * ce * es;
      if (dst != src) copy_stream(dst, src, len * es, stream);
    }
    stream_fence(stream);
    release(h, b);
  }
  return DTR_OK;
}

static dtr_result barrier(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  dtr__host_publish(h);
  return wait_all(c, h, op, deadline);
}

dtr_result dtr__host_collective(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline) {
  if (op->kind != DTR__OP_BARRIER && dtr_dtype_size(op->dtype) == 0)
    return dtr__comm_fail(c, DTR_ERR_INVALID, "host backend: unknown dtype %d", (int)op->dtype);
  if (op->count == 0 && op->kind != DTR__OP_BARRIER) return DTR_OK; /* same on every rank: no steps */
  switch (op->kind) {
    case DTR__OP_ALL_REDUCE:
      return all_reduce(c, h, op, deadline);
    case DTR__OP_REDUCE_SCATTER:
      return reduce_scatter(c, h, op, deadline);
    case DTR__OP_ALL_GATHER:
      return all_gather(c, h, op, deadline);
    case DTR__OP_BROADCAST:
      return broadcast(c, h, op, deadline);
    case DTR__OP_REDUCE:
      return reduce(c, h, op, deadline);
    case DTR__OP_ALL_TO_ALL:
      return all_to_all(c, h, op, deadline);
    case DTR__OP_BARRIER:
      return barrier(c, h, op, deadline);
    default:
      break;
  }
  return dtr__comm_fail(c, DTR_ERR_UNSUPPORTED, "host backend: operation %d is not supported", (int)op->kind);
}
