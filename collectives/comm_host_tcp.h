/* The host backend's TCP transport, used when the ranks of a communicator are not all on one node
 * (comm_host_shm.c decides): a full mesh of TCP connections (two per pair: collectives, p2p), every operation
 * driven over all of them at once with poll() and non-blocking send/recv. */
#ifndef DTRAIN_COLLECTIVES_COMM_HOST_TCP_H
#define DTRAIN_COLLECTIVES_COMM_HOST_TCP_H

#include <stdint.h>

#include "collectives/comm_internal.h"

typedef struct dtr__host_tcp dtr__host_tcp;

/* Connect this rank to every other one, twice (collectives and p2p): listen on the address this host
 * reaches the store from, publish it under kp + "tcp/<rank>", connect to lower ranks and accept higher
 * ones (a magic + rank + which-connection hello identifies each). COLLECTIVE. On success *out is owned by the
 * caller (dtr__host_tcp_destroy); on failure c->err says why and nothing is left open. */
dtr_result dtr__host_tcp_init(dtr_comm *c, const char *kp, int64_t deadline, dtr__host_tcp **out);
/* Run one operation (collective or the caller's p2p batch) to completion before deadline. */
dtr_result dtr__host_tcp_run(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline);
/* A p2p batch (op->kind DTR__OP_P2P) that is a step of a collective: it travels on the collective
 * connections, in order with the collective's other traffic, not on the caller's p2p ones. */
dtr_result dtr__host_tcp_p2p_step(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, int64_t deadline);
/* Something the chain watches while it waits (the node's segment, for a hierarchical communicator):
 * returns DTR_OK to go on, or an error it wrote into c->err. */
typedef dtr_result (*dtr__host_tcp_watch)(dtr_comm *c, void *arg);
/* The rank-ordered chain (hierarchical all-reduce, and the all-reduce of many nodes with one rank
 * each): members[0..nm-1] are communicator ranks in fold order, this rank is members[pos]. Member 0
 * folds its nin inputs (count elements of op->dtype each) in order into an accumulator (f32 for
 * f16/bf16, see dtr__reduce_fold) and sends it to member 1, which folds its inputs onto it, and so on;
 * the last member finalises (AVG divided by avg_div, f16/bf16 rounded once) into out, and the result
 * travels back along the chain (direct: from the last member to every other) into every member's out.
 * part > 0 (reduce-scatter, count == nm * part): member k needs only out[k*part, (k+1)*part), and the
 * last member sends each finalised part only to its member (direct; the others' parts of out are left
 * as they were, except on the last member, which holds all of out).
 * Pipelined in chunks of DTRAIN_HOST_CHAIN_CHUNK_BYTES of accumulator. out may be in[0] (in place).
 * COLLECTIVE over the members, with the same count, op, nin-independent arguments. */
dtr_result dtr__host_tcp_chain(dtr_comm *c, dtr__host_tcp *t, const dtr__op *op, const int *members, int nm,
                               int pos, const void *const *in, int nin, size_t count, void *out, int avg_div,
                               int direct, size_t part, dtr__host_tcp_watch watch, void *watch_arg,
                               int64_t deadline);
/* Close the connections and free. NULL is fine. */
void dtr__host_tcp_destroy(dtr__host_tcp *t);

#endif
