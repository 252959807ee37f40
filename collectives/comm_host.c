/* The host backend: ranks of one node joined through POSIX shared memory. This file is its entry
 * table; the segment lives in comm_host_shm.c, waits in comm_host_sync.c, collectives in
 * comm_host_coll.c and point-to-point in comm_host_p2p.c. Ranks on several nodes use the TCP transport
 * of comm_host_tcp.c, and when the nodes hold equal blocks of ranks, the hierarchical all-reduce of
 * comm_host_hier.c (shared memory inside each node, a chain of nodes between them). */
#include "collectives/comm_host_internal.h"
#include "collectives/comm_host_tcp.h"

static dtr_result host_run(dtr_comm *c, const dtr__op *op, int64_t deadline) {
  dtr__host *h = c->impl;
  if (!h) return dtr__comm_fail(c, DTR_ERR_INTERNAL, "host backend: communicator not initialised");
  if (atomic_load(&c->aborted))
    return dtr__comm_fail(c, DTR_ERR_ABORTED, "%s seq %llu: communicator aborted",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq);
  if (h->hier) return dtr__host_hier_run(c, h, op, deadline);
  if (h->tcp) return dtr__host_tcp_run(c, h->tcp, op, deadline);
  if (op->kind == DTR__OP_P2P) return dtr__host_p2p(c, h, op, deadline);
  return dtr__host_collective(c, h, op, deadline);
}

const dtr__backend dtr__backend_host = {
    .name = "host",
    .init = dtr__host_init,
    .split = NULL, /* the core calls init on the child: a fresh segment per communicator */
    .run = host_run,
    .abort = dtr__host_abort,
    .destroy = dtr__host_destroy,
};
