/* What the files of the host backend share: the layout of the shared-memory segment that joins the
 * ranks of one node, the per-rank state, and the synchronisation primitives (step counters, doorbells,
 * futex waits with deadlines, abort and dead-peer checks). */
#ifndef DTRAIN_COLLECTIVES_COMM_HOST_INTERNAL_H
#define DTRAIN_COLLECTIVES_COMM_HOST_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "collectives/comm_internal.h"

#define DTR__HOST_MAGIC 0x6d68737274647444ull /* "DtdtrShm" */
#define DTR__HOST_VERSION 4u
#define DTR__HOST_LINE 128 /* keep writers of different ranks on different cache lines (and pairs) */
#define DTR__HOST_EAGER 8  /* eager entries per rank: a broadcast's root may run this many calls ahead */

/* Segment header: written by rank 0 before it publishes the segment's name, read-only after. Every
 * size that changes how many steps an operation takes lives here, so all ranks agree on it. */
typedef struct dtr__host_hdr {
  uint64_t magic;
  uint32_t version, nranks;
  uint64_t total_bytes;
  uint64_t slot_bytes;  /* per rank and buffer; two buffers (double-buffering) */
  uint64_t chunk_bytes; /* all-reduce / reduce chunk, <= slot_bytes */
  uint64_t small_bytes; /* all-reduce / reduce at most this size: latency path */
  uint64_t round_bytes; /* reduce-scatter, all-gather, all-to-all, broadcast: slot bytes per round */
  uint64_t eager_bytes; /* broadcasts of at most this size go through the eager entries (0: none) */
  uint64_t ring_bytes;  /* per ordered pair of ranks (p2p) */
  uint64_t balance;     /* 1: all-reduce pieces follow the ranks' busy times (comm_host_share.c) */
  uint64_t step0;       /* every rank's first step (0; DTRAIN_HOST_TEST_STEP0 in tests: counters wrap) */
  uint64_t off_ctl, off_chan, off_slots, off_rings, off_eager;
} dtr__host_hdr;

/* One rank's control block. `step` is published by its owner only (monotonic, wraps); waiters sleep
 * on it with FUTEX_WAIT and announce themselves in step_waiters so the owner only pays a FUTEX_WAKE
 * syscall when someone sleeps. `bell` is rung by peers whenever a p2p channel of this rank moved. */
typedef struct dtr__host_ctl {
  _Atomic uint32_t step;
  _Atomic uint32_t step_waiters;
  char pad0[DTR__HOST_LINE - 8];
  _Atomic uint32_t bell;
  _Atomic uint32_t bell_waiters;
  char pad1[DTR__HOST_LINE - 8];
  int32_t pid;
  _Atomic int32_t aborted; /* this rank aborted the communicator: peers fail at once */
  /* How long this rank was busy (not waiting) in its last measured all-reduce; written before the
   * operation's final step is published, read by every rank before its next one (comm_host_share.c). */
  uint64_t busy_ns;
  char pad2[DTR__HOST_LINE - 16];
  /* Hierarchical communicators (comm_host_hier.c): why this rank gave up an operation (an error of the
   * whole communicator, naming its ranks), written before `aborted`, so that the node's other ranks
   * report the cause instead of "rank j aborted". why_rc 0: no reason given. */
  int32_t why_rc;
  char why[3 * DTR__HOST_LINE - 4];
} dtr__host_ctl;

/* A single-producer single-consumer byte ring from rank i to rank j: head advanced by i, tail by j. */
typedef struct dtr__host_chan {
  _Atomic uint64_t head;
  char pad0[DTR__HOST_LINE - 8];
  _Atomic uint64_t tail;
  char pad1[DTR__HOST_LINE - 8];
} dtr__host_chan;

typedef struct dtr__host {
  int n, r;
  int fd;
  uint8_t *base;
  size_t map_bytes;
  char shm_name[64];
  int unlinked;
  dtr__host_hdr *hdr;
  dtr__host_ctl *ctl;   /* n */
  dtr__host_chan *chan; /* n*n, [from*n + to] */
  uint8_t *slots;       /* [2][n][slot_bytes] */
  uint8_t *rings;       /* [n*n][ring_bytes] */
  uint8_t *eager;       /* [n][DTR__HOST_EAGER][eager_bytes]: small broadcasts, written by their root */
  size_t slot_bytes, chunk_bytes, small_bytes, round_bytes, ring_bytes, eager_bytes;
  uint32_t step;                           /* the value this rank published last */
  uint32_t release[2];                     /* every rank past this step: buffer b may be overwritten */
  int buf;                                 /* next buffer to use */
  uint32_t eager_release[DTR__HOST_EAGER]; /* every rank past this step: eager entry e may be rewritten */
  int eager_next;                          /* next eager entry to use */
  size_t stream_bytes; /* all-reduce results at least this large are written with streaming stores */
  int stream_in;       /* every rank has a core of its own: large all-reduce copy-ins stream too */
  uint32_t *cut;       /* n+1 piece boundaries of the pipelined all-reduce, in DTR__SHARE_ONE units */
  int balance;         /* hdr->balance: large all-reduces measure busy times and move the cuts */
  int slow_reduce;     /* DTRAIN_HOST_TEST_SLOW_REDUCE (tests): reduces take this many times as long */
  int busy_fresh;      /* the last pipelined all-reduce published busy_ns: update cut before the next */
  int spin;            /* polls before yielding */
  int yields;          /* sched_yield calls before sleeping on the futex */
  int64_t next_live_check;
  struct dtr__host_tcp *tcp;   /* set when the ranks span nodes: every operation goes over TCP instead */
  struct dtr__host_hier *hier; /* set when they span nodes in equal blocks (comm_host_hier.c) */
} dtr__host;

/* A communicator whose ranks sit on N >= 2 nodes in contiguous blocks of L ranks each: a full TCP mesh
 * (h->tcp) for every operation, plus, for large all-reduces, reduce-scatters, all-gathers and
 * broadcasts, the node's own segment among its L ranks and the "rail" of the ranks with the same local
 * index (a chain for reductions; comm_host_hier.c). */
typedef struct dtr__host_hier {
  int nodes, per_node; /* N, L */
  int node, li;        /* this rank's node (block) and index inside it: rank = node * L + li */
  dtr__host *local;    /* the node's segment, local ranks 0..L-1 (NULL when L == 1) */
  int *rail;           /* the N communicator ranks li, L + li, 2L + li, ... in node order */
  size_t min_bytes;    /* L > 1: all-reduces of at least this many bytes take the hierarchy */
  size_t rs_min_bytes; /* L > 1: reduce-scatters of at least this many bytes (all n blocks); SIZE_MAX: off */
  size_t chain_bytes;  /* L == 1: all-reduces of at least this many bytes take the chain ... */
  int chain_nodes;     /* ... when there are at least this many nodes */
  int direct;          /* chain results sent by the last node to each (else back along the chain) */
  size_t chunk_bytes;  /* outer chunk of the hierarchical all-reduce and reduce-scatter */
  uint8_t *buf;        /* their scratch: all-to-all results, staging, result slices */
  size_t buf_cap;
  unsigned used; /* bit 1 << kind: its hierarchical path ran (logged once, debug) */
} dtr__host_hier;

static inline int dtr__host_ge(uint32_t v, uint32_t target) {
  return (int32_t)(v - target) >= 0;
}

static inline uint8_t *dtr__host_slot(const dtr__host *h, int b, int j) {
  return h->slots + ((size_t)b * (size_t)h->n + (size_t)j) * h->slot_bytes;
}

/* Futex on a 32-bit word in shared memory (not FUTEX_PRIVATE: the word is shared across processes). */
void dtr__host_futex_wake(_Atomic uint32_t *addr);
/* 0 on wake or value mismatch, -1 with errno ETIMEDOUT etc. */
int dtr__host_futex_wait(_Atomic uint32_t *addr, uint32_t val, int ms);

/* Publish the next step of this rank. */
void dtr__host_publish(dtr__host *h);

/* Wait until every rank in [0,n) (or only `only` when only >= 0) published `target`; the deadline,
 * c->aborted, peers' abort flags and dead peers end the wait with an error naming the ranks. */
dtr_result dtr__host_wait_step(dtr_comm *c, dtr__host *h, int only, uint32_t target, const dtr__op *op,
                               int64_t deadline);

/* Slow-path checks shared by every wait: our abort flag, a peer's abort, the deadline, a dead peer
 * among `peers` (checked at most every 50 ms). Returns DTR_OK to keep waiting. `what` describes what
 * we were waiting for, for the message. */
typedef struct dtr__host_waitctx {
  const int *peers; /* ranks we are waiting on */
  int npeers;
  const dtr__op *op;
  int64_t deadline;
  const char *what; /* e.g. "did not arrive" detail appended to messages (may be NULL) */
  /* Asked when rank j is found gone: did what we wait for from it arrive after all? A rank may publish
   * its last part and exit between the caller's last look and the liveness check. NULL: no. */
  int (*arrived)(const dtr__host *h, int j, const void *arg);
  const void *arg;
} dtr__host_waitctx;
dtr_result dtr__host_check(dtr_comm *c, dtr__host *h, const dtr__host_waitctx *w);
/* Is rank j still attached (its lock on the segment is held)? */
int dtr__host_peer_alive(const dtr__host *h, int j);
/* An OFD write lock on bytes [start, start+len) of fd (len 0: to the end of the file). cmd F_OFD_SETLK
 * takes it (0, or -1 when held elsewhere or on error); F_OFD_GETLK asks (1 held by another open file,
 * 0 free, -1 cannot tell). */
int dtr__host_lock(int fd, off_t start, off_t len, int cmd);
/* How long one futex sleep may last so that aborts and deadlines are noticed. */
int dtr__host_slice_ms(int64_t deadline);
void dtr__host_relax(void);

/* Segment lifecycle (comm_host_shm.c). */
dtr_result dtr__host_init(dtr_comm *c);
void dtr__host_abort(dtr_comm *c);
void dtr__host_destroy(dtr_comm *c);
/* Create (h->r == 0) or open and attach the segment of the h->n ranks that h->r belongs to, its store
 * keys under kp. COLLECTIVE over those h->n ranks. c is the communicator (store, deadline, errors;
 * messages name ranks 0..h->n-1). On failure the caller still calls dtr__host_segment_release. */
dtr_result dtr__host_segment_setup(dtr_comm *c, dtr__host *h, const char *kp, int64_t deadline);
/* Unmap, close and (rank 0, if not yet done) unlink; h itself is not freed. */
void dtr__host_segment_release(dtr__host *h);
/* Set this rank's abort flag in the segment and wake every waiter. */
void dtr__host_segment_abort(dtr__host *h);

/* Hierarchical communicators (comm_host_hier.c). ids[j]: rank j's node identity string. Decides the
 * topology; when it is hierarchical sets h->hier (and builds the node segment), else leaves it NULL
 * and says why at debug level. h->tcp must be connected already. COLLECTIVE. */
dtr_result dtr__host_hier_init(dtr_comm *c, dtr__host *h, char *const *ids, const char *kp, int64_t deadline);
dtr_result dtr__host_hier_run(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline);
void dtr__host_hier_abort(dtr__host *h);
void dtr__host_hier_destroy(dtr__host *h);

/* Piece shares of the pipelined all-reduce (comm_host_share.c): cut[0] = 0 <= cut[1] <= ... <= cut[n] =
 * DTR__SHARE_ONE; rank j reduces the part of every chunk between cut[j] and cut[j+1]. */
#define DTR__SHARE_ONE 65536u
/* Equal shares. */
void dtr__host_share_even(uint32_t *cut, int n);
/* Move the shares against the ranks' measured busy times: one that was busy longer than the mean gets
 * a smaller share. Integer arithmetic only, so every rank computes the same cuts from the same inputs. */
void dtr__host_share_update(uint32_t *cut, const uint64_t *busy_ns, int n);
/* Rank j's part [off, off+len) of a chunk of total elements; boundaries on multiples of align. */
void dtr__host_share_piece(const uint32_t *cut, size_t total, size_t align, int j, size_t *off, size_t *len);

/* Operations (comm_host_coll.c, comm_host_p2p.c). */
dtr_result dtr__host_collective(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline);
dtr_result dtr__host_p2p(dtr_comm *c, dtr__host *h, const dtr__op *op, int64_t deadline);

#endif
