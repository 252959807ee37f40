/* All-reduce, reduce-scatter and reduce for the mpi backend, as our own algorithm over MPI_Isend and
 * MPI_Irecv (comm_mpi.c says why not MPI's collectives). Rank j owns block j of the buffer: every rank
 * sends it its piece of block j (the scatter), j combines the n pieces in rank order 0..n-1 with
 * dtr__reduce_n, the same kernel and order as the host backend, so results are bit-identical to it
 * whatever the type (f16/bf16 accumulate in f32 and round once; integer AVG is exact), and then sends
 * the result to everyone (all-reduce), to the root (reduce) or keeps it (reduce-scatter).
 *
 * Blocks travel in chunks of DTRAIN_MPI_CHUNK_BYTES (so scratch memory is 2 x size x chunk whatever the
 * count), pipelined: while chunk t is reduced, chunk t+1 is scattered and chunk t-1 gathered, and the
 * reduction stops every slice to call MPI_Testall, since Open MPI moves data only inside MPI calls.
 * Up to DTRAIN_MPI_SMALL_BYTES, all-reduce and reduce take one round instead: every rank sends its whole
 * input to every rank that needs the result, which reduces all n inputs itself (latency over volume). */
#ifdef DTRAIN_HAVE_MPI

#include <stdlib.h>
#include <string.h>

#include "collectives/comm_mpi_internal.h"
#include "common/check.h"

/* Elements reduced between two MPI_Testall calls: 64 KiB of output keeps the transfers moving without
 * making the test calls a cost of their own. */
#define SLICE_BYTES (64 << 10)

enum { GATHER_ALL, GATHER_ROOT, GATHER_NONE };

typedef struct plan {
  dtr_comm *c;
  const dtr__op *op;
  dtr__mpi_reqs *q;
  int n, me, gather;
  size_t es;    /* element size */
  size_t count; /* all-reduce, reduce: the whole buffer; reduce-scatter: one block */
  size_t blk;   /* block length in elements (all-reduce, reduce: the last blocks may be shorter) */
  size_t chunk; /* elements of one block per pipeline step */
  const char *send;
  char *recv;
  char *slot[2];   /* n chunks each: the pieces of this rank's chunk, one per rank */
  char *out[2];    /* reduce on a non-root: this rank's reduced chunk until it is sent */
  const void **in; /* n pointers for dtr__reduce_n */
} plan;

static size_t min_sz(size_t a, size_t b) {
  return a < b ? a : b;
}

/* Where block j starts (elements, in send; in recv too for all-reduce and reduce) and how long it is. */
static size_t blk_off(const plan *p, int j) {
  if (p->op->kind == DTR__OP_REDUCE_SCATTER) return (size_t)j * p->count;
  return min_sz((size_t)j * p->blk, p->count);
}
static size_t blk_len(const plan *p, int j) {
  if (p->op->kind == DTR__OP_REDUCE_SCATTER) return p->count;
  return min_sz(p->blk, p->count - blk_off(p, j));
}
/* Elements of chunk t of block j (0 past its end). */
static size_t chunk_len(const plan *p, int j, size_t t) {
  size_t len = blk_len(p, j), start = t * p->chunk;
  return len > start ? min_sz(p->chunk, len - start) : 0;
}
/* Where this rank's reduced chunk t goes. */
static char *out_at(const plan *p, size_t t) {
  if (p->op->kind == DTR__OP_REDUCE_SCATTER) return p->recv + t * p->chunk * p->es;
  if (p->gather == GATHER_ROOT && p->me != p->op->root) return p->out[t % 2];
  return p->recv + (blk_off(p, p->me) + t * p->chunk) * p->es;
}

static int overlaps(const void *a, const void *b, size_t bytes) {
  const char *x = a, *y = b;
  return bytes && x < y + bytes && y < x + bytes;
}

/* Post chunk t's scatter: our piece of every other block to its owner, their pieces of ours into slot. */
static dtr_result post_scatter(plan *p, size_t t) {
  char *slot = p->slot[t % 2];
  size_t mine = chunk_len(p, p->me, t);
  for (int k = 1; k < p->n; k++) {
    int to = (p->me + k) % p->n, from = (p->me - k + p->n) % p->n;
    DTR_CHECK(dtr__mpi_irecv(p->c, p->q, slot + (size_t)from * p->chunk * p->es, mine * p->es, from,
                             DTR__MPI_TAG_SCATTER));
    DTR_CHECK(dtr__mpi_isend(p->c, p->q, p->send + (blk_off(p, to) + t * p->chunk) * p->es,
                             chunk_len(p, to, t) * p->es, to, DTR__MPI_TAG_SCATTER));
  }
  return DTR_OK;
}

/* Post chunk t's gather: our reduced chunk to everyone (or the root), theirs into recv. */
static dtr_result post_gather(plan *p, size_t t) {
  if (p->gather == GATHER_NONE) return DTR_OK;
  const int root = p->op->root;
  char *mine = out_at(p, t);
  size_t len = chunk_len(p, p->me, t) * p->es;
  for (int k = 1; k < p->n; k++) {
    int to = (p->me + k) % p->n, from = (p->me - k + p->n) % p->n;
    if (p->gather == GATHER_ALL || p->me == root)
      DTR_CHECK(dtr__mpi_irecv(p->c, p->q, p->recv + (blk_off(p, from) + t * p->chunk) * p->es,
                               chunk_len(p, from, t) * p->es, from, DTR__MPI_TAG_GATHER));
    if (p->gather == GATHER_ALL || to == root)
      DTR_CHECK(dtr__mpi_isend(p->c, p->q, mine, len, to, DTR__MPI_TAG_GATHER));
  }
  return DTR_OK;
}

/* out = in[0] op ... op in[n-1] over m elements, a slice at a time with MPI progress in between. */
static dtr_result reduce_sliced(plan *p, char *out, size_t m) {
  const size_t slice = SLICE_BYTES / p->es;
  const void **in = p->in;
  for (size_t done = 0; done < m;) {
    size_t k = min_sz(slice, m - done);
    dtr__reduce_n(out + done * p->es, in, p->n, k, p->op->dtype, p->op->redop, p->n);
    done += k;
    for (int i = 0; i < p->n; i++) in[i] = (const char *)in[i] + k * p->es;
    if (done < m && p->q->n) DTR_CHECK(dtr__mpi_poke(p->c, p->op, p->q));
  }
  return DTR_OK;
}

/* Reduce chunk t of this rank's block, whose pieces are in slot[t % 2]. */
static dtr_result reduce_chunk(plan *p, size_t t) {
  size_t m = chunk_len(p, p->me, t);
  if (m == 0) return DTR_OK;
  char *slot = p->slot[t % 2], *out = out_at(p, t);
  const char *own = p->send + (blk_off(p, p->me) + t * p->chunk) * p->es;
  for (int i = 0; i < p->n; i++) p->in[i] = slot + (size_t)i * p->chunk * p->es;
  /* dtr__reduce_n lets out alias in[0] only; in place, ours may be any input: reduce from a copy. */
  if (overlaps(own, out, m * p->es))
    memcpy(slot + (size_t)p->me * p->chunk * p->es, own, m * p->es);
  else
    p->in[p->me] = own;
  return reduce_sliced(p, out, m);
}

/* The pipeline: scatter chunk t+1 and gather chunk t-1 while chunk t is reduced. A slot is refilled
 * (scatter t+1) only after its previous chunk (t-1) was reduced, and a block's gather (t-1) lands only
 * after its scatter (t-1) completed, which is what makes in-place buffers safe. */
static dtr_result run_pipeline(plan *p, int64_t deadline) {
  size_t steps = (blk_len(p, 0) + p->chunk - 1) / p->chunk; /* block 0 is never shorter than another */
  if (steps == 0) return DTR_OK;
  DTR_CHECK(post_scatter(p, 0));
  DTR_CHECK(dtr__mpi_wait(p->c, p->op, p->q, deadline));
  for (size_t t = 0; t < steps; t++) {
    if (t + 1 < steps) DTR_CHECK(post_scatter(p, t + 1));
    if (t >= 1) DTR_CHECK(post_gather(p, t - 1));
    DTR_CHECK(reduce_chunk(p, t));
    DTR_CHECK(dtr__mpi_wait(p->c, p->op, p->q, deadline));
  }
  DTR_CHECK(post_gather(p, steps - 1));
  return dtr__mpi_wait(p->c, p->op, p->q, deadline);
}

/* One round: whole inputs to every rank that needs the result; p->slot[0] holds n inputs. */
static dtr_result run_small(plan *p, int64_t deadline) {
  const size_t bytes = p->count * p->es;
  const int root = p->op->root, all = p->gather == GATHER_ALL;
  char *buf = p->slot[0];
  for (int k = 1; k < p->n; k++) {
    int to = (p->me + k) % p->n, from = (p->me - k + p->n) % p->n;
    if (all || p->me == root)
      DTR_CHECK(dtr__mpi_irecv(p->c, p->q, buf + (size_t)from * bytes, bytes, from, DTR__MPI_TAG_SCATTER));
    if (all || to == root) DTR_CHECK(dtr__mpi_isend(p->c, p->q, p->send, bytes, to, DTR__MPI_TAG_SCATTER));
  }
  DTR_CHECK(dtr__mpi_wait(p->c, p->op, p->q, deadline));
  if (!all && p->me != root) return DTR_OK;
  for (int i = 0; i < p->n; i++) p->in[i] = buf + (size_t)i * bytes;
  if (overlaps(p->send, p->recv, bytes))
    memcpy(buf + (size_t)p->me * bytes, p->send, bytes);
  else
    p->in[p->me] = p->send;
  dtr__reduce_n(p->recv, p->in, p->n, p->count, p->op->dtype, p->op->redop, p->n);
  return DTR_OK;
}

dtr_result dtr__mpi_reduction(dtr_comm *c, const dtr__op *op, int64_t deadline) {
  dtr__mpi *m = c->impl;
  dtr__mpi_reqs q = {0};
  plan p = {.c = c,
            .op = op,
            .q = &q,
            .n = c->size,
            .me = c->rank,
            .es = dtr_dtype_size(op->dtype),
            .count = op->count,
            .send = op->send,
            .recv = op->recv};
  if ((unsigned)op->redop > (unsigned)DTR_PROD)
    return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: %s #%llu: unknown reduction %d",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, (int)op->redop);
  if (op->count == 0) return DTR_OK; /* every rank has the same count: nothing to exchange */
  p.gather = op->kind == DTR__OP_ALL_REDUCE ? GATHER_ALL
             : op->kind == DTR__OP_REDUCE   ? GATHER_ROOT
                                            : GATHER_NONE;
  const size_t bytes = op->count * p.es;
  const int small = op->kind != DTR__OP_REDUCE_SCATTER && bytes <= m->small_bytes && bytes <= m->max_bytes;
  dtr_result rc = DTR_OK;
  size_t scratch;
  if (small) {
    p.chunk = op->count;
    scratch = (size_t)p.n * bytes;
  } else {
    p.blk = op->kind == DTR__OP_REDUCE_SCATTER ? op->count : (op->count + (size_t)p.n - 1) / (size_t)p.n;
    p.chunk = min_sz(m->chunk_bytes / p.es, p.blk);
    if (p.chunk == 0) p.chunk = 1;
    scratch = 2 * ((size_t)p.n + 1) * p.chunk * p.es;
  }
  char *mem = malloc(scratch);
  p.in = malloc((size_t)p.n * sizeof *p.in);
  if (!mem || !p.in) {
    free(mem);
    free(p.in);
    return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory for %s #%llu scratch (%zu bytes)",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, scratch);
  }
  if (small) {
    p.slot[0] = mem;
    rc = run_small(&p, deadline);
  } else {
    size_t slot_bytes = (size_t)p.n * p.chunk * p.es;
    p.slot[0] = mem;
    p.slot[1] = mem + slot_bytes;
    p.out[0] = mem + 2 * slot_bytes;
    p.out[1] = p.out[0] + p.chunk * p.es;
    rc = run_pipeline(&p, deadline);
  }
  free(p.in);
  /* Requests left pending inside MPI may still write the scratch: it is leaked then, never freed. */
  if (rc == DTR_OK || !dtr__mpi_settle(c, &q)) free(mem);
  dtr__mpi_reqs_free(&q);
  return rc;
}

#endif /* DTRAIN_HAVE_MPI */
