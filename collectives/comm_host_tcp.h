/* The host backend's TCP transport, used when the ranks of a communicator are not all on one node
 * (comm_host_shm.c decides): a full mesh of TCP connections, every operation driven over all of them
 * at once with poll() and non-blocking send/recv. */
#ifndef DTRAIN_COLLECTIVES_COMM_HOST_TCP_H
#define DTRAIN_COLLECTIVES_COMM_HOST_TCP_H

#include <stdint.h>

#include "comm_internal.h"

typedef struct dtr__host_tcp dtr__host_tcp;

/* Connect this rank to every other one: listen on the address this host reaches the store from,
 * publish it under kp + "tcp/<rank>", connect to lower ranks and accept higher ones (a magic + rank
 * hello identifies each). COLLECTIVE. On success *out is owned by the caller (dtr__host_tcp_destroy);
 * on failure c->err says why and nothing is left open. */
dtr_result dtr__host_tcp_init(dtr_comm *c, const char *kp, int64_t deadline, dtr__host_tcp **out);
/* Run one operation (collective or p2p batch) to completion before deadline. */
dtr_result dtr__host_tcp_run(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline);
/* Close the connections and free. NULL is fine. */
void dtr__host_tcp_destroy(dtr__host_tcp *t);

#endif
