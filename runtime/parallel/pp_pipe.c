/* The pipeline executor: one loop that runs any schedule of pp_schedule.c over the stage's compute
 * callbacks. Activations and their gradients travel over four 2-rank link communicators split from
 * the pp communicator (activations in and out, gradients in and out), each carrying one direction
 * only, so a receive posted ahead never holds up a send (a communicator runs its operations in issue
 * order). Receives are posted as soon as a buffer is free, two per link, so a transfer overlaps the
 * compute before it; sends are asynchronous, two per link in flight. The k-th message on a link is
 * the k-th action of the schedule that uses the link on both sides (pp_schedule.c keeps the orders of
 * neighbours equal; tests/unit/test_pp_schedule.c checks it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/clock.h"
#include "dtrain/parallel.h"
#include "runtime/model/kernels_cuda.h"

#define RING 2 /* buffers per link: one in use by the stage, one in flight */

enum { ACT_IN, ACT_OUT, GRAD_IN, GRAD_OUT, NLINKS };
static const char *const link_what[NLINKS] = {"activation", "activation", "gradient", "gradient"};

typedef struct link {
  dtr_comm *c; /* NULL: this stage has no such link */
  int peer;    /* the other rank in c */
  int peer_stage;
  int recv;    /* 1: messages come in */
  int nmsg;    /* messages per step */
  int *action; /* action index that sends / consumes message k */
  float *buf[RING];
  dtr_request *req[RING];
  int posted, used; /* recv: messages posted, consumed; send: messages sent, (unused) */
} link;

struct dtr_pp_pipe {
  dtr_comm *pp;
  int device; /* the CUDA device of the link buffers (nccl links), -1: host memory */
  int p, stage, m, v;
  dtr_pp_schedule_kind kind;
  size_t act;
  dtr_pp_stage st;
  dtr_pp_action *a;
  int n, nslots;
  int *slot;
  link l[NLINKS];
  double *t_start, *t_end, total;
  int broken; /* a link failed: the links were aborted */
};

/* The virtual stage of chunk c: what comes before it and after it. */
static int first_virtual(const dtr_pp_pipe *p, int chunk) {
  return chunk == 0 && p->stage == 0;
}
static int last_virtual(const dtr_pp_pipe *p, int chunk) {
  return chunk == p->v - 1 && p->stage == p->p - 1;
}

/* Which link action i uses in each direction (-1: none). */
static int input_link(const dtr_pp_pipe *p, const dtr_pp_action *x) {
  if (!x->backward) return first_virtual(p, x->chunk) ? -1 : ACT_IN;
  return last_virtual(p, x->chunk) ? -1 : GRAD_IN;
}
static int output_link(const dtr_pp_pipe *p, const dtr_pp_action *x) {
  if (!x->backward) return last_virtual(p, x->chunk) ? -1 : ACT_OUT;
  return first_virtual(p, x->chunk) ? -1 : GRAD_OUT;
}

/* After a failure the step cannot go on and its posted receives would wait out the deadline: abort the
 * links (every wait in them returns at once, and so does a later step). */
static void break_links(dtr_pp_pipe *p) {
  if (p->broken) return;
  p->broken = 1;
  for (int i = 0; i < NLINKS; i++)
    if (p->l[i].c) dtr_comm_abort(p->l[i].c);
}

static dtr_result link_fail(dtr_pp_pipe *p, int li, int k, dtr_result rc, char *err, size_t errcap) {
  link *L = &p->l[li];
  const dtr_pp_action *x = &p->a[L->action[k]];
  char chunk[32] = "";
  if (p->v > 1) snprintf(chunk, sizeof chunk, " (chunk %d)", x->chunk);
  dtr_result r = dtr__fail(err, errcap, rc, "pipeline stage %d: %s %s of micro-batch %d%s %s stage %d: %s",
                           p->stage, L->recv ? "receiving the" : "sending the", link_what[li], x->micro,
                           chunk, L->recv ? "from" : "to", L->peer_stage, dtr_comm_last_error(L->c));
  break_links(p);
  return r;
}

/* Post receives on L while buffers are free (message k goes to buf[k % RING] once k - RING is used). */
static dtr_result post_recvs(dtr_pp_pipe *p, int li, char *err, size_t errcap) {
  link *L = &p->l[li];
  while (L->c && L->posted < L->nmsg && L->posted - L->used < RING) {
    int k = L->posted, b = k % RING;
    dtr_result rc = dtr_recv(L->c, L->buf[b], p->act, DTR_F32, L->peer, &L->req[b]);
    if (rc != DTR_OK) return link_fail(p, li, k, rc, err, errcap);
    L->posted++;
  }
  return DTR_OK;
}

static dtr_result wait_req(dtr_pp_pipe *p, int li, int k, char *err, size_t errcap) {
  link *L = &p->l[li];
  dtr_request **r = &L->req[k % RING];
  if (!*r) return DTR_OK;
  dtr_result rc = dtr_request_wait(*r);
  dtr_request_free(*r);
  *r = NULL;
  return rc == DTR_OK ? DTR_OK : link_fail(p, li, k, rc, err, errcap);
}

/* ---- creation: links, their message lists, the shape handshake */

/* Split one family of links (activations or gradients) off pp. Link i joins stages i and i+1 (mod p);
 * disjoint links split together: even, odd, then the wrap (p-1, 0) of the interleaved ring. */
static dtr_result split_links(dtr_pp_pipe *p, int grad, char *err, size_t errcap) {
  int nlinks = p->v > 1 ? p->p : p->p - 1;
  for (int round = 0; round < 3; round++) {
    int color = -1, key = 0, mine = -1;
    for (int i = 0; i < nlinks; i++) {
      int wrap = i == p->p - 1;
      if (wrap != (round == 2) || (!wrap && i % 2 != round)) continue;
      int lo = i, hi = (i + 1) % p->p; /* activations go lo -> hi, gradients hi -> lo */
      if (p->stage != lo && p->stage != hi) continue;
      color = i;
      int sender = grad ? hi : lo;
      key = p->stage == sender ? 0 : 1;
      mine = p->stage == sender ? (grad ? GRAD_OUT : ACT_OUT) : (grad ? GRAD_IN : ACT_IN);
      break;
    }
    dtr_comm *c = NULL;
    dtr_result rc = dtr_comm_split(p->pp, color, key, &c);
    if (rc != DTR_OK)
      return dtr__fail(err, errcap, rc, "pipeline stage %d: link communicator: %s", p->stage,
                       dtr_comm_last_error(p->pp));
    if (mine < 0) continue;
    link *L = &p->l[mine];
    L->c = c;
    L->peer = 1 - dtr_comm_rank(c);
    L->recv = mine == ACT_IN || mine == GRAD_IN;
    L->peer_stage =
        (mine == ACT_IN || mine == GRAD_OUT) ? (p->stage - 1 + p->p) % p->p : (p->stage + 1) % p->p;
  }
  return DTR_OK;
}

/* Both ends of every link compare act_count once (through device memory on nccl links). */
static dtr_result agree_shape(dtr_pp_pipe *p, char *err, size_t errcap) {
  uint64_t mine = p->act, theirs[NLINKS] = {0}, *dev = NULL;
  dtr_request *req[NLINKS] = {0};
  dtr_result rc = DTR_OK;
  if (p->device >= 0) {
    rc = dtr__cuda_device_alloc(p->device, sizeof(uint64_t) * NLINKS, (void **)&dev);
    for (int i = 0; i < NLINKS && rc == DTR_OK; i++) rc = dtr__cuda_memcpy(dev + i, &mine, sizeof mine);
    if (rc != DTR_OK) {
      dtr__cuda_device_free(dev);
      return dtr__fail(err, errcap, rc, "pipeline stage %d: device memory for the size handshake", p->stage);
    }
  }
  for (int i = 0; i < NLINKS && rc == DTR_OK; i++) {
    link *L = &p->l[i];
    if (!L->c) continue;
    uint64_t *buf = dev ? dev + i : L->recv ? &theirs[i] : &mine;
    rc = L->recv ? dtr_recv(L->c, buf, 1, DTR_I64, L->peer, &req[i])
                 : dtr_send(L->c, buf, 1, DTR_I64, L->peer, &req[i]);
  }
  for (int i = 0; i < NLINKS; i++) {
    if (!req[i]) continue;
    dtr_result r = dtr_request_wait(req[i]);
    dtr_request_free(req[i]);
    if (r == DTR_OK && dev && p->l[i].recv) r = dtr__cuda_memcpy(&theirs[i], dev + i, sizeof theirs[i]);
    if (r != DTR_OK && rc == DTR_OK)
      rc = dtr__fail(err, errcap, r, "pipeline stage %d: agreeing the activation size with stage %d: %s",
                     p->stage, p->l[i].peer_stage, dtr_comm_last_error(p->l[i].c));
    else if (r == DTR_OK && p->l[i].recv && theirs[i] != mine && rc == DTR_OK)
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "pipeline stage %d: activations of %llu floats here, %llu on stage %d (micro_batch x "
                     "block_size x n_embd must agree)",
                     p->stage, (unsigned long long)mine, (unsigned long long)theirs[i], p->l[i].peer_stage);
  }
  dtr__cuda_device_free(dev);
  return rc;
}

static dtr_result build_messages(dtr_pp_pipe *p) {
  for (int li = 0; li < NLINKS; li++) {
    link *L = &p->l[li];
    if (!L->c) continue;
    L->action = calloc((size_t)p->n, sizeof *L->action);
    if (!L->action) return DTR_ERR_NOMEM;
    for (int i = 0; i < p->n; i++)
      if ((L->recv ? input_link(p, &p->a[i]) : output_link(p, &p->a[i])) == li) L->action[L->nmsg++] = i;
    for (int b = 0; b < RING; b++) {
      if (p->device >= 0) {
        DTR_CHECK(dtr__cuda_device_alloc(p->device, p->act * sizeof(float), (void **)&L->buf[b]));
      } else if (!(L->buf[b] = malloc(p->act * sizeof(float) + 64))) {
        return DTR_ERR_NOMEM;
      }
    }
  }
  return DTR_OK;
}

dtr_result dtr_pp_pipe_create(dtr_comm *pp, const dtr_pp_config *cfg, const dtr_pp_stage *stage,
                              dtr_pp_pipe **out, char *err, size_t errcap) {
  if (!out || !cfg || !stage || !stage->forward || !stage->backward)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "pipeline: NULL config, stage or callback");
  *out = NULL;
  int P = pp ? dtr_comm_size(pp) : 1, s = pp ? dtr_comm_rank(pp) : 0;
  DTR_CHECK(dtr_pp_schedule_check(cfg->schedule, P, cfg->micro_batches, cfg->chunks, err, errcap));
  if (cfg->chunks > 1 && P < 2)
    return dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "pipeline: %d model chunks on one stage: the interleaved schedule needs at least 2 stages",
        cfg->chunks);
  if (P > 1 && cfg->act_count == 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "pipeline: activations of 0 floats");
  dtr_result rc = DTR_OK;
  dtr_pp_pipe *p = calloc(1, sizeof *p);
  if (!p) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "pipeline: out of memory");
  p->pp = P > 1 ? pp : NULL;
  p->p = P;
  p->stage = s;
  p->m = cfg->micro_batches;
  p->v = cfg->chunks;
  p->kind = cfg->schedule;
  p->act = cfg->act_count;
  p->st = *stage;
  int cap = dtr_pp_schedule_length(p->m, p->v);
  p->a = calloc((size_t)cap, sizeof *p->a);
  p->slot = calloc((size_t)cap, sizeof *p->slot);
  p->t_start = calloc((size_t)cap, sizeof *p->t_start);
  p->t_end = calloc((size_t)cap, sizeof *p->t_end);
  if (!p->a || !p->slot || !p->t_start || !p->t_end) goto nomem;
  DTR_CHECK_GOTO(dtr_pp_schedule(p->kind, P, p->m, p->v, s, p->a, cap, &p->n, err, errcap), rc, fail);
  p->nslots = dtr_pp_schedule_slots(p->a, p->n, p->slot);
  if (p->nslots < 0) goto nomem;
  p->device = -1;
  if (p->pp) {
    DTR_CHECK_GOTO(split_links(p, 0, err, errcap), rc, fail);
    DTR_CHECK_GOTO(split_links(p, 1, err, errcap), rc, fail);
    p->device = dtr_comm_cuda_device(pp);
    rc = build_messages(p);
    if (rc == DTR_ERR_NOMEM) goto nomem;
    if (rc != DTR_OK) {
      dtr__fail(err, errcap, rc, "pipeline stage %d: link buffers of %zu floats on cuda:%d", s, p->act,
                p->device);
      goto fail;
    }
    DTR_CHECK_GOTO(agree_shape(p, err, errcap), rc, fail);
  }
  *out = p;
  return DTR_OK;
nomem:
  rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "pipeline: out of memory");
fail:
  dtr_pp_pipe_destroy(p);
  return rc;
}

void dtr_pp_pipe_destroy(dtr_pp_pipe *p) {
  if (!p) return;
  for (int li = 0; li < NLINKS; li++) {
    link *L = &p->l[li];
    for (int b = 0; b < RING; b++) {
      dtr_request_free(L->req[b]); /* waits (an aborted link fails at once) */
      if (p->device >= 0)
        dtr__cuda_device_free(L->buf[b]);
      else
        free(L->buf[b]);
    }
    free(L->action);
    dtr_comm_destroy(L->c);
  }
  free(p->a);
  free(p->slot);
  free(p->t_start);
  free(p->t_end);
  free(p);
}

const dtr_pp_action *dtr_pp_pipe_actions(const dtr_pp_pipe *p, int *n) {
  if (n) *n = p ? p->n : 0;
  return p ? p->a : NULL;
}

int dtr_pp_pipe_slots(const dtr_pp_pipe *p) {
  return p ? p->nslots : 0;
}

void dtr_pp_pipe_timing(const dtr_pp_pipe *p, dtr_pp_timing *out) {
  out->start = p->t_start;
  out->end = p->t_end;
  out->n = p->n;
  out->total = p->total;
}

/* ---- one step */

/* Message index of action i on link li (its position in the link's list). */
static int message_of(const link *L, int i, int from) {
  for (int k = from; k < L->nmsg; k++)
    if (L->action[k] == i) return k;
  return -1;
}

dtr_result dtr_pp_pipe_step(dtr_pp_pipe *p, char *err, size_t errcap) {
  if (!p) return dtr__fail(err, errcap, DTR_ERR_INVALID, "pipeline: NULL pipe");
  if (p->broken)
    return dtr__fail(err, errcap, DTR_ERR_ABORTED, "pipeline stage %d: a link failed in an earlier step",
                     p->stage);
  dtr_result rc = DTR_OK;
  int sent[NLINKS] = {0};
  for (int li = 0; li < NLINKS; li++) p->l[li].posted = p->l[li].used = 0;
  double t0 = dtr__now_s();
  for (int li = 0; li < NLINKS; li++)
    if (p->l[li].recv) DTR_CHECK(post_recvs(p, li, err, errcap));
  for (int i = 0; i < p->n; i++) {
    const dtr_pp_action *x = &p->a[i];
    int in = input_link(p, x), outl = output_link(p, x);
    const float *src = NULL;
    float *dst = NULL;
    if (in >= 0) {
      link *L = &p->l[in];
      int k = L->used; /* messages are consumed in order */
      if (k >= L->nmsg || L->action[k] != i)
        return dtr__fail(err, errcap, DTR_ERR_INTERNAL,
                         "pipeline stage %d: action %d expects message %d of %d", p->stage, i,
                         message_of(L, i, 0), L->nmsg);
      DTR_CHECK(wait_req(p, in, k, err, errcap));
      src = L->buf[k % RING];
    }
    if (outl >= 0) {
      link *L = &p->l[outl];
      int k = sent[outl];
      if (k >= RING) DTR_CHECK(wait_req(p, outl, k - RING, err, errcap)); /* the buffer's last send */
      dst = L->buf[k % RING];
    }
    p->t_start[i] = dtr__now_s() - t0;
    rc = x->backward ? p->st.backward(p->st.arg, x->micro, x->chunk, p->slot[i], src, dst)
                     : p->st.forward(p->st.arg, x->micro, x->chunk, p->slot[i], src, dst);
    p->t_end[i] = dtr__now_s() - t0;
    if (rc != DTR_OK) {
      if (errcap && !err[0])
        dtr__fail(err, errcap, rc, "pipeline stage %d: %s of micro-batch %d failed", p->stage,
                  x->backward ? "backward" : "forward", x->micro);
      break_links(p);
      return rc;
    }
    if (in >= 0) {
      p->l[in].used++;
      DTR_CHECK(post_recvs(p, in, err, errcap));
    }
    if (outl >= 0) {
      link *L = &p->l[outl];
      int k = sent[outl]++;
      rc = dtr_send(L->c, dst, p->act, DTR_F32, L->peer, &L->req[k % RING]);
      if (rc != DTR_OK) return link_fail(p, outl, k, rc, err, errcap);
    }
  }
  for (int li = 0; li < NLINKS; li++) {
    if (!p->l[li].c || p->l[li].recv) continue;
    for (int k = sent[li] - RING < 0 ? 0 : sent[li] - RING; k < sent[li]; k++)
      DTR_CHECK(wait_req(p, li, k, err, errcap));
  }
  p->total = dtr__now_s() - t0;
  return DTR_OK;
}
