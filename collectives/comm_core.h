/* The communicator core's private state, shared by comm.c (create/split/destroy), comm_ops.c (the
 * operations, their queue and progress thread, requests, debug checks) and comm_recorder.c (the
 * flight recorder). Backends never include this: they see only comm_internal.h. */
#ifndef DTRAIN_COLLECTIVES_COMM_CORE_H
#define DTRAIN_COLLECTIVES_COMM_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "collectives/comm_internal.h"

#define DTR__FR_SIZE 64   /* flight-recorder entries kept per communicator */
#define DTR__P2P_INLINE 8 /* p2p ops a request holds without a separate allocation */

typedef enum { DTR__FR_QUEUED = 0, DTR__FR_RUNNING, DTR__FR_DONE, DTR__FR_FAILED } dtr__fr_state;

typedef struct dtr__fr_entry {
  uint64_t id; /* record number + 1; 0: slot never used */
  uint64_t seq;
  dtr__op_kind kind;
  size_t count; /* p2p: elements over the whole batch */
  dtr_dtype dtype;
  dtr_redop redop;
  int root; /* p2p: the first op's peer */
  int np2p;
  int is_send; /* p2p: the first op's direction */
  dtr__fr_state state;
  int64_t t_queued, t_start, t_end;
  dtr_result result;
} dtr__fr_entry;

/* A queued operation. User-visible requests are heap-allocated; a blocking call that must queue
 * behind earlier asynchronous ones uses one on its stack. Completion is signalled under the request's
 * own mutex, so a finished request outlives its communicator. */
struct dtr_request {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  dtr_result result;
  dtr__op op;
  uint64_t fr_id;
  dtr_request *next;
  dtr_p2p *p2p_heap;
  dtr_p2p p2p_inline[DTR__P2P_INLINE];
};

typedef struct dtr__comm_core {
  pthread_mutex_t mu;  /* queue, busy, stop, recorder */
  pthread_cond_t work; /* the progress thread: something to do */
  pthread_cond_t idle; /* split and destroy: queue drained and nobody inside the backend */
  dtr_request *head, *tail;
  int busy; /* a thread is running an operation (inline or progress thread) */
  int stop;
  int thread_started;
  pthread_t thread;
  int local;             /* size 1 on a host-memory backend: the core does every op itself */
  int be_ready;          /* the backend's state exists (init or split succeeded) */
  dtr_store *dbg_store;  /* debug mode: a private connection usable from any one thread at a time */
  uint64_t dbg_prev_seq; /* the last sequence number whose debug key this rank published, + 1 */
  uint64_t next_p2p_seq;
  int split_gen;
  atomic_uint err_gen; /* bumped by every dtr__comm_fail, to see whether a backend wrote c->err */
  char abort_reason[512];
  int64_t t_created;
  uint64_t fr_next;
  dtr__fr_entry fr[DTR__FR_SIZE];
} dtr__comm_core;

/* Milliseconds for the recorder and the deadline base: the coarse clock costs a few ns instead of
 * ~25 (it matters on the 8-byte latency path), and its few-ms lag only shortens a deadline by that
 * much. Same epoch as dtr__now_ms (CLOCK_MONOTONIC), which the backends compare deadlines with. */
static inline int64_t dtr__coarse_ms(void) {
  struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
  clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline dtr__comm_core *dtr__core(const dtr_comm *c) {
  return (dtr__comm_core *)c->core;
}

/* comm_ops.c */
dtr_result dtr__core_start(dtr_comm *c); /* start the progress thread */
void dtr__core_hold(dtr_comm *c);        /* wait until the queue drained and nobody runs, then claim */
void dtr__core_release(dtr_comm *c);
void dtr__core_stop(dtr_comm *c); /* drain, stop and join the progress thread */
/* Mark c aborted, remembering why (the first reason wins). */
void dtr__core_mark_aborted(dtr_comm *c, const char *reason);

/* comm_recorder.c; all with core->mu held */
uint64_t dtr__fr_add(dtr__comm_core *k, const dtr__op *op, dtr__fr_state st, int64_t now);
void dtr__fr_set(dtr__comm_core *k, uint64_t id, dtr__fr_state st, int64_t now, dtr_result rc);

#endif
