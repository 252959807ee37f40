/* dtrain/comm.h — communicators: the path every gradient takes.
 *
 * A communicator joins `size` ranks (created together through the job's store) so they can run
 * collective operations on buffers: all-reduce, reduce-scatter, all-gather, broadcast, reduce,
 * all-to-all, barrier, and point-to-point send/recv (batched, so pipeline stages can exchange both
 * ways at once). Sub-communicators for data, tensor and pipeline parallel groups come from
 * dtr_comm_split (MPI_Comm_split semantics).
 *
 * Backends: "host" (shared memory between the ranks of one node, TCP when they span nodes; CPU buffers),
 * "nccl" (GPU buffers, when built with CUDA) and "mpi" (when the job was started by mpirun and built with
 * MPI). Buffers are host memory for host and mpi, CUDA device (or managed) memory for nccl.
 *
 * Ordering: operations are COLLECTIVE unless stated otherwise: every rank of the communicator must
 * issue the same operations in the same order, with matching counts, types and roots.
 *
 * Asynchrony: every operation takes an optional `dtr_request **req`. NULL runs it to completion
 * (blocking); otherwise it is queued, *req receives a handle, and the call returns at once. Buffers
 * must stay valid and untouched until dtr_request_wait/test reports completion. Several operations may
 * be in flight on one communicator; they complete in issue order.
 *
 * Deadlines: each operation must complete within the communicator's timeout (dtr_comm_config or
 * DTRAIN_COMM_TIMEOUT_MS, default DTR_COMM_DEFAULT_TIMEOUT_MS: 5 minutes, long past any healthy
 * collective, and longer than `dtrain launch`'s --worker-timeout (3 minutes) so that a hung rank is
 * named by its agent before its peers' deadlines pass). On expiry it fails with DTR_ERR_TIMEOUT and the
 * last-error text names the ranks that had not arrived (host backend, and the mpi backend's own algorithms,
 * which name the ranks they still waited on; MPI's barrier and broadcast and NCCL cannot tell, and say so);
 * the communicator is then aborted (every later operation
 * fails with DTR_ERR_ABORTED) and its flight recorder (the last operations) is printed. A peer that
 * dies mid-operation surfaces on the survivors within the deadline: as DTR_ERR_CONNECTION naming
 * it when the backend can see the death (host: at once), else as DTR_ERR_TIMEOUT; either aborts.
 *
 * Debug mode (DTRAIN_COMM_DEBUG=1): before each operation the ranks compare its sequence number,
 * kind, count, type, reduction and root; the first mismatch fails with DTR_ERR_INVALID naming both
 * sides.
 *
 * Types f16 and bf16 are accumulated in f32; every backend gives every rank the same bits, run after
 * run, for the same inputs (the reduction order is fixed).
 *
 * Threads: one thread at a time may issue operations on a communicator. dtr_comm_abort,
 * dtr_request_test and dtr_request_wait may be called from any thread.
 */
#ifndef DTRAIN_COMM_H
#define DTRAIN_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"
#include "dtrain/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DTR_COMM_DEFAULT_TIMEOUT_MS 300000 /* an operation's deadline unless configured: 5 minutes */

typedef enum dtr_redop {
  DTR_SUM = 0,
  DTR_AVG = 1, /* sum divided by the communicator size (integers: truncated toward zero) */
  DTR_MAX = 2,
  DTR_MIN = 3,
  DTR_PROD = 4,
} dtr_redop;

typedef enum dtr_backend {
  DTR_BACKEND_HOST = 0,
  DTR_BACKEND_NCCL = 1,
  DTR_BACKEND_MPI = 2,
} dtr_backend;

/* Names for messages ("sum", "host"); the element types (dtr_dtype) are in dtrain/common.h. */
DTR_API const char *dtr_redop_name(dtr_redop op);
DTR_API const char *dtr_backend_name(dtr_backend b);
/* Parse "host" / "nccl" / "mpi" (and "sum", "avg", ...). DTR_ERR_INVALID otherwise. */
DTR_API dtr_result dtr_backend_parse(const char *s, dtr_backend *out);
DTR_API dtr_result dtr_redop_parse(const char *s, dtr_redop *out);

typedef struct dtr_comm dtr_comm;
typedef struct dtr_request dtr_request;

typedef struct dtr_comm_config {
  dtr_backend backend;
  int timeout_ms;   /* per operation; 0: DTRAIN_COMM_TIMEOUT_MS or DTR_COMM_DEFAULT_TIMEOUT_MS */
  int cuda_device;  /* nccl: the device this rank uses; -1: LOCAL_RANK */
  const char *name; /* for messages and store keys; NULL: "world" */
} dtr_comm_config;

/* A config with defaults: host backend, default timeout, device -1, name "world". */
DTR_API dtr_comm_config dtr_comm_config_default(void);

/* Create a communicator of `size` ranks; this process is `rank`. COLLECTIVE over those ranks: every
 * one calls it with the same size, config name and backend, and the same store (which they use to
 * find each other; the caller keeps ownership of the store and must keep it open until
 * dtr_comm_destroy). The mpi backend finds its peers through MPI: store may be NULL there, and rank
 * and size must match MPI_COMM_WORLD. On success *out is owned by the caller. On failure err names
 * the cause. The host backend joins the ranks of one node through shared memory, and ranks on several
 * nodes through TCP (each rank listens on the address it reaches the store from). */
DTR_API dtr_result dtr_comm_create(dtr_store *store, int rank, int size, const dtr_comm_config *cfg,
                                   dtr_comm **out, char *err, size_t errcap);

/* Split into sub-communicators: ranks passing the same color form one, ordered by (key, parent rank).
 * color < 0: this rank joins none and *out is NULL. COLLECTIVE over the parent. The child keeps the
 * parent's backend and timeout and must be destroyed before the parent. */
DTR_API dtr_result dtr_comm_split(dtr_comm *parent, int color, int key, dtr_comm **out);

/* Abort: every pending and later operation fails with DTR_ERR_ABORTED. Safe from any thread. */
DTR_API void dtr_comm_abort(dtr_comm *c);
/* Wait for queued operations (or fail them if aborted), release everything. NULL is fine. Not
 * collective, but peers blocked in an operation with this rank will time out. */
DTR_API void dtr_comm_destroy(dtr_comm *c);

DTR_API int dtr_comm_rank(const dtr_comm *c);
DTR_API int dtr_comm_size(const dtr_comm *c);
DTR_API dtr_backend dtr_comm_backend(const dtr_comm *c);
/* The CUDA device an nccl communicator's buffers live on; -1 for the host and mpi backends. */
DTR_API int dtr_comm_cuda_device(const dtr_comm *c);
/* The detail of the last failure (names ranks, operation and sequence number). */
DTR_API const char *dtr_comm_last_error(const dtr_comm *c);
/* Print the flight recorder (the last operations: sequence, kind, count, type, state, times). */
DTR_API void dtr_comm_dump_flight_recorder(const dtr_comm *c, int fd);

/* Order GPU work (nccl backend): every operation ISSUED on c after this call is ordered after the work
 * queued on `stream` (a cudaStream_t passed as void *) at the moment it is issued. The issuing call
 * records a CUDA event on stream in the calling thread, and the backend's own stream waits on that
 * event before the NCCL call, so a producer may issue an all-reduce of a buffer its kernels are still
 * writing, without synchronizing first (the DP gradient buckets issued from backward). Completion is
 * unchanged: when dtr_request_wait/test (or a blocking call) reports it, the result is ready on the
 * device; the producer's stream itself is not made to wait for the operation. stream NULL stops the
 * ordering. The stream must belong to c's device and outlive the operations issued while it is set;
 * children of dtr_comm_split do not inherit it. Not collective; call it from the thread that issues
 * operations. DTR_ERR_UNSUPPORTED on the host and mpi backends (their buffers are host memory, which
 * the caller orders itself); DTR_ERR_INVALID for a NULL c. */
DTR_API dtr_result dtr_comm_set_cuda_stream(dtr_comm *c, void *stream);

/* ---- collective operations. send == recv is in-place (for all-gather: send may point at this
 * rank's slice of recv; for reduce-scatter: recv may point at this rank's slice of send). */

/* recv[i] = op over ranks of send[i], i < count, on every rank. */
DTR_API dtr_result dtr_all_reduce(dtr_comm *c, const void *send, void *recv, size_t count, dtr_dtype t,
                                  dtr_redop op, dtr_request **req);
/* send holds size*recv_count elements; rank r receives the reduction of block r. */
DTR_API dtr_result dtr_reduce_scatter(dtr_comm *c, const void *send, void *recv, size_t recv_count,
                                      dtr_dtype t, dtr_redop op, dtr_request **req);
/* recv holds size*send_count elements: block r is rank r's send. */
DTR_API dtr_result dtr_all_gather(dtr_comm *c, const void *send, void *recv, size_t send_count, dtr_dtype t,
                                  dtr_request **req);
/* root's buf is copied to every rank's buf. */
DTR_API dtr_result dtr_broadcast(dtr_comm *c, void *buf, size_t count, dtr_dtype t, int root,
                                 dtr_request **req);
/* The reduction lands in root's recv only (recv is ignored elsewhere and may be NULL). */
DTR_API dtr_result dtr_reduce(dtr_comm *c, const void *send, void *recv, size_t count, dtr_dtype t,
                              dtr_redop op, int root, dtr_request **req);
/* send and recv hold size*count elements; block j of rank i's send lands in block i of rank j's recv. */
DTR_API dtr_result dtr_all_to_all(dtr_comm *c, const void *send, void *recv, size_t count, dtr_dtype t,
                                  dtr_request **req);
DTR_API dtr_result dtr_barrier(dtr_comm *c, dtr_request **req);

/* ---- point to point. Not collective: only the two ranks involved take part, and each pair's
 * messages match in issue order. A batch runs its sends and receives concurrently, so two ranks may
 * each send to and receive from the other in one batch without deadlock. Operations on one
 * communicator run one at a time in issue order, so a rank that queues a recv before its own send
 * to the same peer that does the same deadlocks: use dtr_p2p_batch, or opposite orders on the two.
 * A send completes once its data is buffered on the host backend (a message up to the pair's buffer:
 * 256 KiB of shared-memory ring, the TCP socket buffers), and may wait for the receiver on mpi (large
 * messages) and nccl. p2p messages never mix with collectives' data, so a small message sent before a
 * collective and received after it arrives intact on host; portable code matches a pair's messages
 * before either side starts the next collective. */
typedef struct dtr_p2p {
  int is_send; /* 1: send buf to peer; 0: receive into buf from peer */
  int peer;
  void *buf;
  size_t count;
  dtr_dtype dtype;
} dtr_p2p;

DTR_API dtr_result dtr_send(dtr_comm *c, const void *buf, size_t count, dtr_dtype t, int peer,
                            dtr_request **req);
DTR_API dtr_result dtr_recv(dtr_comm *c, void *buf, size_t count, dtr_dtype t, int peer, dtr_request **req);
/* ops is copied; the buffers it points at must stay valid until completion. */
DTR_API dtr_result dtr_p2p_batch(dtr_comm *c, const dtr_p2p *ops, int nops, dtr_request **req);

/* ---- requests */

/* *done = 1 when the operation finished (its result is then returned), else 0 and DTR_OK. */
DTR_API dtr_result dtr_request_test(dtr_request *r, int *done);
/* Block until the operation finished; its result. The request stays valid until freed. */
DTR_API dtr_result dtr_request_wait(dtr_request *r);
/* Free a request (waiting for it first if it has not finished). NULL is fine. */
DTR_API void dtr_request_free(dtr_request *r);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_COMM_H */
