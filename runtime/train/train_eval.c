/* What the trainer reports about its model: the addition task's exact-match accuracy, decoded greedily by
 * the model wherever its parts live (each token's forward goes through every pipeline stage in turn, the
 * tp group picks the largest logit across its vocabulary slices, the last stage tells every stage the
 * token), and the digest of the weights and AdamW moments that a run's summary prints. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/check.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/train/train_internal.h"

#define EVAL_PROBLEMS 256

static dtr_result gpt_fail(dtr__trainer *t, dtr_result rc, const char *what) {
  return dtr__fail(t->err, t->errcap, rc, "%s: %s", what, dtr__gpt_last_error(t->model));
}

static dtr_result comm_fail(dtr__trainer *t, dtr_comm *c, dtr_result rc, const char *what) {
  return dtr__fail(t->err, t->errcap, rc, "%s: %s", what, dtr_comm_last_error(c));
}

/* Greedy decoding of n tokens after prompt[0..len) through every stage of the pipeline: chunk c of stage
 * s is virtual stage c*pp + s; activations go stage to stage over the pp communicator (each stage
 * receives, computes, sends: a chain, so blocking calls in this order cannot deadlock). */
static dtr_result generate_pipelined(dtr__trainer *t, const int32_t *prompt, int len, int n, int32_t *out,
                                     float *buf) {
  int Tmax = t->r->model.block_size, C = t->r->model.n_embd, nv = t->pp * t->chunks;
  int32_t ctx[128];
  if (len + n > (int)(sizeof ctx / sizeof ctx[0]))
    return dtr__fail(t->err, t->errcap, DTR_ERR_INVALID, "evaluation: a prompt of %d + %d tokens", len, n);
  memcpy(ctx, prompt, (size_t)len * sizeof *ctx);
  int prev = (t->stage - 1 + t->pp) % t->pp, next = (t->stage + 1) % t->pp;
  for (int i = 0; i < n; i++) {
    int cur = len + i, T = cur < Tmax ? cur : Tmax;
    int32_t tok = 0;
    for (int c = 0; c < t->chunks; c++) {
      int q = c * t->pp + t->stage, first = q == 0, last = q == nv - 1;
      dtr_result rc;
      if (!first && (rc = dtr_recv(t->pp_comm, buf, (size_t)T * C, DTR_F32, prev, NULL)) != DTR_OK)
        return comm_fail(t, t->pp_comm, rc, "evaluation: activation from the previous stage");
      rc = dtr__gpt_forward_chunk(t->model, c, 0, first ? ctx + cur - T : NULL, first ? NULL : buf, NULL, 1,
                                  T, last ? NULL : buf, NULL);
      if (rc != DTR_OK) return gpt_fail(t, rc, "evaluation");
      if (last && (rc = dtr__gpt_argmax(t->model, 0, 0, T - 1, &tok)) != DTR_OK)
        return gpt_fail(t, rc, "evaluation");
      if (!last && (rc = dtr_send(t->pp_comm, buf, (size_t)T * C, DTR_F32, next, NULL)) != DTR_OK)
        return comm_fail(t, t->pp_comm, rc, "evaluation: activation to the next stage");
    }
    dtr_result rc = dtr_broadcast(t->pp_comm, &tok, 1, DTR_I32, t->pp - 1, NULL);
    if (rc != DTR_OK) return comm_fail(t, t->pp_comm, rc, "evaluation: the token from the last stage");
    ctx[cur] = tok;
    out[i] = tok;
  }
  return DTR_OK;
}

dtr_result dtr__train_evaluate(dtr__trainer *t, double *acc) {
  int32_t prompt[64], answer[16], out[16];
  int pl = 0, al = 0;
  int64_t correct = 0;
  float *buf = NULL;
  if (t->pp > 1) {
    buf = malloc((size_t)t->r->model.block_size * t->r->model.n_embd * sizeof *buf);
    if (!buf) return dtr__fail(t->err, t->errcap, DTR_ERR_NOMEM, "evaluation: out of memory");
  }
  /* On cuda the host model decodes with the device's current weights (batch 1 gains nothing there). */
  dtr_result rc = DTR_OK;
  if (t->gpu) rc = dtr__gpu_download(t->gpu, dtr__gpt_params(t->model), NULL, NULL, t->err, t->errcap);
  for (int64_t i = t->dp_rank; i < EVAL_PROBLEMS && rc == DTR_OK; i += t->dp) {
    rc = dtr__data_eval_problem(t->data, i, prompt, &pl, answer, &al);
    if (rc != DTR_OK) break;
    if (t->pp > 1) {
      rc = generate_pipelined(t, prompt, pl, al, out, buf);
    } else if ((rc = dtr__gpt_generate(t->model, prompt, pl, al, out)) != DTR_OK) {
      gpt_fail(t, rc, "evaluation");
    }
    correct += rc == DTR_OK && memcmp(out, answer, (size_t)al * sizeof *out) == 0;
  }
  free(buf);
  if (rc != DTR_OK) return rc;
  rc = dtr_all_reduce(t->dp_comm, &correct, &correct, 1, DTR_I64, DTR_SUM, NULL);
  if (rc != DTR_OK) return comm_fail(t, t->dp_comm, rc, "accuracy all-reduce");
  *acc = (double)correct / EVAL_PROBLEMS;
  return DTR_OK;
}

int dtr__train_tied_identical(dtr__trainer *t) {
  if (!t->wte_count || !t->emb_comm) return -1;
  uint64_t mine[2] = {XXH64(dtr__gpt_params(t->model) + t->wte_off, t->wte_count * sizeof(float), 0), 0},
           both[4];
  /* the moments too where this rank holds wte's whole (without ZeRO-1 every rank does) */
  if (!t->r->train.zero) {
    XXH64_state_t *h = XXH64_createState();
    if (h) {
      XXH64_reset(h, 0);
      XXH64_update(h, t->opt.m + t->wte_off, t->wte_count * sizeof(float));
      XXH64_update(h, t->opt.v + t->wte_off, t->wte_count * sizeof(float));
      mine[1] = XXH64_digest(h);
      XXH64_freeState(h);
    }
  }
  if (dtr_all_gather(t->emb_comm, mine, both, 2, DTR_I64, NULL) != DTR_OK) {
    DTR_WARN("tied embedding check: %s", dtr_comm_last_error(t->emb_comm));
    return -1;
  }
  int same = both[0] == both[2] && both[1] == both[3];
  if (!same)
    DTR_WARN(
        "the first and last stage's copies of the tied embedding differ (a dtrain bug: please report it)");
  return same;
}

uint64_t dtr__train_digest(dtr__trainer *t) {
  if (t->gpu && dtr__gpu_download(t->gpu, dtr__gpt_params(t->model), t->opt.m, t->opt.v, t->err, t->errcap)) {
    DTR_WARN("weights digest: %s", t->err);
    return 0;
  }
  XXH64_state_t *h = XXH64_createState();
  if (!h) return 0;
  XXH64_reset(h, 0);
  XXH64_update(h, dtr__gpt_params(t->model), t->nparams * sizeof(float));
  XXH64_update(h, t->opt.m, t->opt.n * sizeof(float));
  XXH64_update(h, t->opt.v, t->opt.n * sizeof(float));
  uint64_t d = XXH64_digest(h);
  XXH64_freeState(h);
  /* every rank a replica of the whole: its own digest is the model's */
  if (t->tp_size == 1 && t->pp == 1 && !t->r->train.zero) return d;
  uint64_t *all = calloc((size_t)t->world, sizeof *all);
  dtr_comm *world = dtr_runtime_world(t->rt);
  if (!all || dtr_all_gather(world, &d, all, 1, DTR_I64, NULL) != DTR_OK) {
    DTR_WARN("weights digest: %s", all ? dtr_comm_last_error(world) : "out of memory");
    free(all);
    return 0;
  }
  d = XXH64(all, (size_t)t->world * sizeof *all, 0);
  free(all);
  return d;
}
