/* The rendezvous round protocol over the store (keys under rdzv/<run_id>/r<round>/):
 *   count        add 1 -> this agent's join index (0 is the round's leader)
 *   node/<idx>   the agent's info: host, address, nproc, requested node rank, pid
 *   closed       set once by the leader (cas): the number of agents N in the round; a joiner whose
 *                index is >= N arrived late, bumps `late` and moves on to the next round. "-1": the
 *                leader gave up waiting for a quorum (a majority of the previous round): everyone in this
 *                round is a minority and stops
 *   master       "addr:port" published by node rank 0 (a port found free there)
 * The leader closes when MAX agents joined, or when MIN joined and the last-call period passed (no
 * wait after a restart once every agent of the previous round is back). Node ranks: requested ranks
 * win (they must be unique and < N), the others fill the gaps in order of (address, host, node rank in
 * the previous round, join index), so a restart keeps every node's rank.
 * Quorum: after a failure, the leader closes only with more than half the previous round's nodes (with
 * exactly half when this agent did not fail over to the standby: the side that kept the store wins a
 * tie), whatever --nnodes MIN says, so that a partitioned minority never forms a job of its own; if the
 * quorum is not there within quorum_timeout_ms, the round closes as a minority.
 * Standby: each agent publishes the address of its own store server; the first node in node-rank order
 * that does not host the primary is the round's standby (rendezvous result `standby`).
 * Later keys of a round (event, hb/<node>, ndone, exited/<node>) belong to the agent; see agent.c. */
#ifndef DTRAIN_LAUNCHER_RENDEZVOUS_H
#define DTRAIN_LAUNCHER_RENDEZVOUS_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"
#include "dtrain/store.h"

typedef struct dtr__node_info {
  char host[256];
  char addr[64];
  int nproc;
  int want_rank; /* -1: any */
  int pid;
  int prev_rank;   /* node rank in the agent's previous round, -1: none (keeps ranks stable on restart) */
  int idx;         /* join index */
  char store[300]; /* "addr:port" of the agent's own store server ("" none) */
  int primary;     /* that server is the job's store now */
} dtr__node_info;

typedef struct dtr__rdzv_cfg {
  const char *run_id;
  int nnodes_min, nnodes_max;
  int nproc;
  int want_rank; /* --node-rank or -1 */
  const char *hostname;
  const char *master_addr; /* --master-addr or "" */
  int64_t timeout_ms;      /* whole join, like --rdzv-timeout */
  int last_call_ms;
  int prev_size;             /* agents in the previous round this agent was part of (0: none) */
  int prev_rank;             /* this agent's node rank in that round, -1: none */
  int failed_over;           /* this agent moved to the standby since that round: it loses a tie */
  int64_t quorum_timeout_ms; /* how long the leader waits for a majority of prev_size */
  const char *store;         /* this agent's own store server, "addr:port" ("" none) */
  int primary;               /* ... and it is the job's store now */
  int say_every_ms;          /* while waiting, say what for this often (0: never) */
  /* Polled between waits (at least every 200 ms): returns a signal number to give up with, or 0. */
  int (*interrupted)(void *ctx);
  void *ctx;
} dtr__rdzv_cfg;

typedef struct dtr__rdzv_result {
  int round; /* the round actually joined (later than asked when we arrived late) */
  int nnodes;
  int node_rank;
  int nproc;
  int world_size;
  char master_addr[256];
  int master_port;
  char (*hosts)[256]; /* host name of each node rank, nnodes entries, malloc'ed */
  char my_addr[64];
  int interrupted_by; /* signal that stopped the join (DTR_ERR_ABORTED), else 0 */
  int minority;       /* the round closed without a quorum (DTR_ERR_TIMEOUT): this agent must stop */
  char standby[300];  /* "addr:port" of the round's standby store, "" when none */
  int standby_rank;   /* its node rank, -1 when none */
} dtr__rdzv_result;

/* "rdzv/<run_id>/r<round>/<suffix>" into out. */
void dtr__rdzv_key(char *out, size_t cap, const char *run_id, int round, const char *suffix);

/* Join round `round` or, arriving late, the first open round after it. On success *out is filled
 * (free with dtr__rdzv_result_free). Errors: DTR_ERR_TIMEOUT (not enough agents in time), DTR_ERR_INVALID
 * (inconsistent agents: duplicate node rank, nproc mismatch), DTR_ERR_ABORTED (interrupted by a
 * signal), store errors. err names the culprit. */
dtr_result dtr__rdzv_join(dtr_store *c, const dtr__rdzv_cfg *cfg, int round, dtr__rdzv_result *out, char *err,
                          size_t cap);
void dtr__rdzv_result_free(dtr__rdzv_result *r);

/* The smallest number of nodes a round after one of prev nodes may close with: a majority, or exactly
 * half when tie_wins (pure; unit-tested). 0 when there was no previous round. */
int dtr__rdzv_quorum(int prev, int tie_wins);

/* Deterministic node ranks for n agents (pure; unit-tested). ranks[i] is the rank of nodes[i]. */
dtr_result dtr__rdzv_assign(const dtr__node_info *nodes, int n, int *ranks, char *err, size_t cap);
/* Node info <-> text ("key=value" lines). */
int dtr__node_info_format(const dtr__node_info *ni, char *out, size_t cap);
dtr_result dtr__node_info_parse(const char *text, size_t len, dtr__node_info *ni);

#endif
