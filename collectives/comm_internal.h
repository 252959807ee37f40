/* What the communicator core (comm.c) and its backends (comm_host*.c, comm_mpi.c, comm_nccl.c) share.
 * The core owns queueing, requests, deadlines, the flight recorder, debug-mode checks and splitting;
 * a backend only moves and reduces bytes for one operation at a time. */
#ifndef DTRAIN_COLLECTIVES_COMM_INTERNAL_H
#define DTRAIN_COLLECTIVES_COMM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "dtrain/comm.h"

typedef enum dtr__op_kind {
  DTR__OP_ALL_REDUCE = 0,
  DTR__OP_REDUCE_SCATTER,
  DTR__OP_ALL_GATHER,
  DTR__OP_BROADCAST,
  DTR__OP_REDUCE,
  DTR__OP_ALL_TO_ALL,
  DTR__OP_BARRIER,
  DTR__OP_P2P, /* send, recv and batches: p2p/np2p */
} dtr__op_kind;

const char *dtr__op_kind_name(dtr__op_kind k);

/* One operation as a backend sees it. Counts are in elements of dtype (see comm.h for each kind).
 * As the core fills it: broadcast has send == recv == buf; root is -1 for kinds without a root (p2p:
 * the first op's peer, for messages only); redop is DTR_SUM where the kind has none; barrier has
 * count 0 and dtype u8. p2p ops number from their own counter (op->seq counts p2p calls on this rank
 * only, not identical across ranks). On a size-1 communicator of the host or mpi backend the core
 * performs every operation itself and calls no backend function at all (not even init). */
typedef struct dtr__op {
  dtr__op_kind kind;
  uint64_t seq; /* 0, 1, 2, ... per communicator, identical on every rank for collectives */
  const void *send;
  void *recv;
  size_t count;
  dtr_dtype dtype;
  dtr_redop redop;
  int root;
  dtr_p2p *p2p; /* DTR__OP_P2P: the batch (owned by the core) */
  int np2p;
  void *cuda_event; /* set when c->cuda_stream was: recorded on it at issue (be->stream_event); run must
                       order the operation after it; the core releases it (be->event_release) */
} dtr__op;

typedef struct dtr__backend dtr__backend;

struct dtr_comm {
  int rank, size;
  dtr_backend backend_kind;
  const dtr__backend *be;
  void *impl;       /* the backend's state */
  dtr_store *store; /* the caller's; used only on the calling thread during create/split */
  char name[128];   /* "world", "world/s0c1", ... */
  char prefix[256]; /* unique store-key prefix of this communicator: "comm/<run>/<name>/" */
  int timeout_ms;
  int cuda_device;
  void *cuda_stream;  /* dtr_comm_set_cuda_stream's (issuing thread only); NULL: no ordering */
  int debug;          /* DTRAIN_COMM_DEBUG */
  char diag_dir[256]; /* DTRAIN_DIAG_DIR: where a timeout's flight recorder also goes ("": stderr only) */
  int *world_ranks;   /* rank in the root communicator of each member (size entries) */
  dtr_comm *parent;
  atomic_int aborted; /* set by dtr_comm_abort or an expired deadline; backends poll it */
  uint64_t next_seq;  /* next collective sequence number (issuing thread only) */
  char err[1024];     /* last error (guarded by mu) */
  pthread_mutex_t mu;
  void *core; /* queue, progress thread, flight recorder: comm.c's */
};

struct dtr__backend {
  const char *name;
  /* Connect this rank to its peers. c->rank, size, store, prefix, timeout_ms, world_ranks are set.
   * COLLECTIVE. May use c->store (same thread). On failure writes c->err. */
  dtr_result (*init)(dtr_comm *c);
  /* Optional: build child from parent natively (MPI_Comm_split, ncclCommSplit). child has rank, size,
   * prefix, world_ranks set. NULL: the core calls init on the child instead. COLLECTIVE over parent.
   * A rank with color < 0 calls it too, with a scratch child (rank -1, size 0, world_ranks unusable)
   * whose impl, if the backend sets one, is destroyed right after; child size 1 is still split
   * natively (the core then runs its ops locally but calls destroy). */
  dtr_result (*split)(dtr_comm *parent, dtr_comm *child, int color, int key);
  /* Run one operation to completion on the core's progress thread, before deadline (dtr__now_ms
   * clock). Poll c->aborted at least every 100 ms while waiting. On DTR_ERR_TIMEOUT write into
   * c->err which ranks had not arrived. */
  dtr_result (*run)(dtr_comm *c, const dtr__op *op, int64_t deadline);
  /* Wake every wait inside run (any thread); run then returns DTR_ERR_ABORTED. May be NULL. */
  void (*abort)(dtr_comm *c);
  /* Release the backend state. Not collective. */
  void (*destroy)(dtr_comm *c);
  /* Optional (nccl; NULL elsewhere, and then dtr_comm_set_cuda_stream is unsupported): record an event
   * on the caller's CUDA stream on the issuing thread, *event receiving it. */
  dtr_result (*stream_event)(dtr_comm *c, void *stream, void **event);
  /* Release an event of stream_event once its operation ran, failed or was never run (any thread). */
  void (*event_release)(dtr_comm *c, void *event);
};

extern const dtr__backend dtr__backend_host;
#ifdef DTRAIN_HAVE_MPI
extern const dtr__backend dtr__backend_mpi;
#endif
#ifdef DTRAIN_HAVE_CUDA
extern const dtr__backend dtr__backend_nccl;
#endif

/* Record an error in c->err (thread-safe) and return rc. */
dtr_result dtr__comm_fail(dtr_comm *c, dtr_result rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The reduction kernel shared by the CPU backends: out[i] = in[0][i] op in[1][i] op ... op in[nin-1][i]
 * for i < n, combined in that fixed order (so every rank gets the same bits), f16/bf16 accumulated in
 * f32 and rounded once; DTR_AVG divides the sum by avg_div. out may alias in[0]. */
void dtr__reduce_n(void *out, const void *const *in, int nin, size_t n, dtr_dtype t, dtr_redop op,
                   int avg_div);

/* The same reduction split over several calls (a chain of ranks, each adding its inputs in rank order):
 * acc = acc_in (NULL: in[0] is the first operand) op in[0] op ... op in[nin-1]. With final == 0, out
 * receives the accumulator, dtr__reduce_acc_size(t, op) bytes per element (f32 for f16/bf16, int64 for
 * i32 AVG, ...), to pass on as the next call's acc_in; with final != 0 it receives n elements of t
 * (AVG divided by avg_div, f16/bf16 rounded once). Folding in[0..k-1] and then in[k..] onto that gives
 * the bits of dtr__reduce_n over all of them. out may equal acc_in or in[0] (same address). */
void dtr__reduce_fold(void *out, const void *acc_in, const void *const *in, int nin, size_t n, dtr_dtype t,
                      dtr_redop op, int final, int avg_div);
size_t dtr__reduce_acc_size(dtr_dtype t, dtr_redop op);

/* Scalar conversions used by dtr__reduce_n (round to nearest even; NaN stays NaN, quieted), for
 * backends, tests and benchmarks that prepare or check f16/bf16 data. */
float dtr__f16_to_f32(uint16_t h);
uint16_t dtr__f32_to_f16(float f);
float dtr__bf16_to_f32(uint16_t h);
uint16_t dtr__f32_to_bf16(float f);

#endif
