/* What the mpi backend's two files share: comm_mpi.c (MPI's lifecycle, error conversion, the request
 * set and its deadline-bound wait, data movement, p2p) and comm_mpi_reduce.c (all-reduce, reduce-scatter
 * and reduce as our own pipelined algorithm over point-to-point messages). */
#ifndef DTRAIN_COLLECTIVES_COMM_MPI_INTERNAL_H
#define DTRAIN_COLLECTIVES_COMM_MPI_INTERNAL_H
#ifdef DTRAIN_HAVE_MPI

#include <stddef.h>

#include "collectives/comm_internal.h"
#include "common/mpi_dl.h"

/* Message tags. MPI keeps the messages of one (source, tag, communicator) in order, and every rank
 * posts the messages of one phase in the same order, so a tag per phase is all the matching needed;
 * user p2p keeps tag 0 so it never meets collective traffic. */
enum { DTR__MPI_TAG_P2P = 0, DTR__MPI_TAG_SCATTER = 1, DTR__MPI_TAG_GATHER = 2, DTR__MPI_TAG_MOVE = 3 };

typedef struct dtr__mpi {
  MPI_Comm comm;
  size_t max_bytes;   /* DTRAIN_MPI_MAX_COUNT: the largest count one MPI call gets (we send MPI_BYTE) */
  size_t chunk_bytes; /* DTRAIN_MPI_CHUNK_BYTES: pipeline chunk of one rank's block (<= max_bytes) */
  size_t small_bytes; /* DTRAIN_MPI_SMALL_BYTES: all-reduce / reduce up to this size in one round */
  int nap_us;         /* DTRAIN_MPI_NAP_US: the wait loop's sleep between polls once it stops yielding */
  int abandoned;      /* an operation of this communicator is still pending inside MPI */
} dtr__mpi;

/* The requests of one operation, waited on together. peer/is_recv say, on a timeout, whom we were
 * still waiting for. */
typedef struct dtr__mpi_reqs {
  MPI_Request *r;
  int *peer; /* -1: a collective request (no single peer) */
  char *is_recv;
  int n, cap;
  int abandoned; /* left pending inside MPI: the buffers they use must never be freed */
} dtr__mpi_reqs;

/* The one converter for MPI error codes (CONVENTIONS 4): DTR_OK, or the mapped result with MPI's
 * error string recorded in c->err. */
dtr_result dtr__mpi_result(dtr_comm *c, int code, const char *call);
#define DTR_MPI(c, call) dtr__mpi_result((c), (call), #call)

/* Post a send or receive of `bytes` bytes, split into pieces of at most m->max_bytes (in order, so
 * the peer's matching call splits the same way). A zero-byte message posts nothing. */
dtr_result dtr__mpi_isend(dtr_comm *c, dtr__mpi_reqs *q, const void *buf, size_t bytes, int peer, int tag);
dtr_result dtr__mpi_irecv(dtr_comm *c, dtr__mpi_reqs *q, void *buf, size_t bytes, int peer, int tag);
/* One MPI_Testall: Open MPI moves data only inside MPI calls, so long local work (a reduction) calls
 * this between slices to keep the transfers in flight. */
dtr_result dtr__mpi_poke(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q);
/* Wait for every request in q before deadline, polling c->aborted; on success q is empty again. On a
 * timeout or abort the pending requests are abandoned (q->abandoned) and c->err says why. */
dtr_result dtr__mpi_wait(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline);
/* After a failure: abandon whatever of q is still pending (a post that failed halfway). Returns 1 when
 * requests were abandoned, so the buffers they use must be leaked, not freed. */
int dtr__mpi_settle(dtr_comm *c, dtr__mpi_reqs *q);
void dtr__mpi_reqs_free(dtr__mpi_reqs *q);

/* comm_mpi_reduce.c: all-reduce, reduce-scatter and reduce (any count, type and reduction). */
dtr_result dtr__mpi_reduction(dtr_comm *c, const dtr__op *op, int64_t deadline);

#endif /* DTRAIN_HAVE_MPI */
#endif
