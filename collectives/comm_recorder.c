/* The flight recorder: a ring of the last DTR__FR_SIZE operations of a communicator, so that a hang
 * or a timeout can be explained afterwards ("rank 3 was still in all_reduce seq 812 when rank 0 had
 * moved on to seq 813"). Updated under the core mutex; dumped as a table in one write. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "collectives/comm_core.h"
#include "common/fsutil.h"

uint64_t dtr__fr_add(dtr__comm_core *k, const dtr__op *op, dtr__fr_state st, int64_t now) {
  uint64_t id = ++k->fr_next;
  dtr__fr_entry *e = &k->fr[(id - 1) % DTR__FR_SIZE];
  e->id = id;
  e->seq = op->seq;
  e->kind = op->kind;
  e->count = op->count;
  e->dtype = op->dtype;
  e->redop = op->redop;
  e->root = op->root;
  e->np2p = op->np2p;
  e->is_send = op->kind == DTR__OP_P2P && op->np2p > 0 && op->p2p ? op->p2p[0].is_send : 0;
  e->state = st;
  e->t_queued = now;
  e->t_start = st == DTR__FR_RUNNING ? now : -1;
  e->t_end = -1;
  e->result = DTR_OK;
  return id;
}

void dtr__fr_set(dtr__comm_core *k, uint64_t id, dtr__fr_state st, int64_t now, dtr_result rc) {
  dtr__fr_entry *e = &k->fr[(id - 1) % DTR__FR_SIZE];
  if (id == 0 || e->id != id) return; /* overwritten by newer operations */
  e->state = st;
  if (st == DTR__FR_RUNNING)
    e->t_start = now;
  else if (st == DTR__FR_DONE || st == DTR__FR_FAILED)
    e->t_end = now;
  e->result = rc;
}

static const char *state_name(dtr__fr_state s) {
  switch (s) {
    case DTR__FR_QUEUED:
      return "queued";
    case DTR__FR_RUNNING:
      return "running";
    case DTR__FR_DONE:
      return "done";
    case DTR__FR_FAILED:
      return "FAILED";
  }
  return "?";
}

static const char *result_name(dtr_result rc) {
  switch (rc) {
    case DTR_OK:
      return "ok";
    case DTR_ERR_INVALID:
      return "invalid";
    case DTR_ERR_TIMEOUT:
      return "timeout";
    case DTR_ERR_CONNECTION:
      return "connection";
    case DTR_ERR_ABORTED:
      return "aborted";
    case DTR_ERR_NOMEM:
      return "nomem";
    default:
      return dtr_strerror(rc);
  }
}

void dtr_comm_dump_flight_recorder(const dtr_comm *c, int fd) {
  if (!c || !c->core) return;
  dtr__comm_core *k = dtr__core(c);
  dtr__fr_entry ring[DTR__FR_SIZE];
  pthread_mutex_lock(&k->mu);
  memcpy(ring, k->fr, sizeof ring);
  uint64_t last = k->fr_next;
  pthread_mutex_unlock(&k->mu);
  uint64_t first = last > DTR__FR_SIZE ? last - DTR__FR_SIZE + 1 : 1;

  char buf[DTR__FR_SIZE * 160 + 512];
  size_t len = 0;
#define OUT(...)                                                                         \
  do {                                                                                   \
    int n_ = snprintf(buf + len, sizeof buf - len, __VA_ARGS__);                         \
    if (n_ > 0) len = len + (size_t)n_ < sizeof buf ? len + (size_t)n_ : sizeof buf - 1; \
  } while (0)
  OUT("flight recorder of communicator %s (rank %d of %d, backend %s%s): last %llu of %llu operations, "
      "times in ms since creation\n",
      c->name, c->rank, c->size, c->be ? c->be->name : dtr_backend_name(c->backend_kind),
      atomic_load(&c->aborted) ? ", ABORTED" : "", (unsigned long long)(last ? last - first + 1 : 0),
      (unsigned long long)last);
  OUT("  %8s  %-14s %12s %-5s %-5s %-10s %-8s %9s %9s %9s  %s\n", "seq", "op", "count", "type", "redop",
      "root/peer", "state", "queued", "start", "end", "result");
  for (uint64_t id = first; last && id <= last; id++) {
    const dtr__fr_entry *e = &ring[(id - 1) % DTR__FR_SIZE];
    if (e->id != id) continue;
    char who[32], t0[16], t1[16], t2[16];
    if (e->kind == DTR__OP_P2P) {
      if (e->np2p == 1)
        snprintf(who, sizeof who, "%s %d", e->is_send ? "send->" : "recv<-", e->root);
      else
        snprintf(who, sizeof who, "batch of %d", e->np2p);
    } else if (e->kind == DTR__OP_BROADCAST || e->kind == DTR__OP_REDUCE) {
      snprintf(who, sizeof who, "%d", e->root);
    } else {
      snprintf(who, sizeof who, "-");
    }
    snprintf(t0, sizeof t0, "%lld", (long long)(e->t_queued - k->t_created));
    snprintf(t1, sizeof t1, "%lld", (long long)(e->t_start - k->t_created));
    snprintf(t2, sizeof t2, "%lld", (long long)(e->t_end - k->t_created));
    int reduces =
        e->kind == DTR__OP_ALL_REDUCE || e->kind == DTR__OP_REDUCE_SCATTER || e->kind == DTR__OP_REDUCE;
    OUT("  %8llu  %-14s %12zu %-5s %-5s %-10s %-8s %9s %9s %9s  %s\n", (unsigned long long)e->seq,
        dtr__op_kind_name(e->kind), e->count, e->kind == DTR__OP_BARRIER ? "-" : dtr_dtype_name(e->dtype),
        reduces ? dtr_redop_name(e->redop) : "-", who, state_name(e->state), t0, e->t_start >= 0 ? t1 : "-",
        e->t_end >= 0 ? t2 : "-",
        e->state == DTR__FR_DONE || e->state == DTR__FR_FAILED ? result_name(e->result) : "");
  }
#undef OUT
  (void)dtr__write_all(fd, buf, len);
}
