/* The cpu trainer's step over the three axes of the mesh. Every step runs the micro-batches through the
 * pipeline executor (one stage when pp is 1: forward and backward of each micro-batch in turn, as plain
 * gradient accumulation); inside a stage the model's layers run their tensor-parallel all-reduces; the
 * last micro-batch's backward marks finished gradient ranges so the DP buckets (or ZeRO-1's
 * reduce-scatters) start while backward goes on. After the schedule: the tied embedding's gradient is
 * summed between the first and last stage (Megatron's embedding group) before its DP bucket starts,
 * the loss (kept by the last stage) is averaged over DP and sent to every stage, the global gradient
 * norm sums every stage's and tp slice's squares once, and AdamW updates what this rank owns. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/train/recipe_internal.h"
#include "runtime/train/train_internal.h"

static dtr_result comm_fail(dtr__trainer *t, dtr_comm *c, dtr_result rc, const char *what) {
  return dtr__fail(t->err, t->errcap, rc, "%s: %s", what, dtr_comm_last_error(c));
}

static dtr_result gpt_fail(dtr__trainer *t, dtr_result rc, const char *what) {
  return dtr__fail(t->err, t->errcap, rc, "%s: %s", what, dtr__gpt_last_error(t->model));
}

/* ---- the stage callbacks of the pipeline executor */

static int first_virtual(const dtr__trainer *t, int chunk) {
  return t->stage == 0 && chunk == 0;
}
static int last_virtual(const dtr__trainer *t, int chunk) {
  return t->stage == t->pp - 1 && chunk == t->chunks - 1;
}

static dtr_result stage_forward(void *arg, int mb, int chunk, int slot, const float *in, float *out) {
  dtr__trainer *t = arg;
  int first = first_virtual(t, chunk), last = last_virtual(t, chunk);
  if (first || last) {
    dtr_result rc = dtr__data_batch(t->data, t->first + mb * t->micro, t->micro, t->x, t->y);
    if (rc != DTR_OK) return dtr__fail(t->err, t->errcap, rc, "data batch of micro-batch %d", mb);
  }
  float loss = 0;
  dtr_result rc = dtr__gpt_forward_chunk(t->model, chunk, slot, first ? t->x : NULL, in, last ? t->y : NULL,
                                         t->micro, t->T, out, last ? &loss : NULL);
  if (rc != DTR_OK) return gpt_fail(t, rc, "forward");
  t->loss_sum += loss;
  return DTR_OK;
}

/* Backward reports finished gradient ranges; each may complete a bucket whose exchange starts. The tied
 * wte waits for the embedding group's sum, after the schedule. */
static dtr_result on_grads_ready(void *arg, size_t offset, size_t count) {
  dtr__trainer *t = arg;
  size_t a = offset, b = offset + count, wa = t->wte_off, wb = t->wte_off + t->wte_count;
  if (t->wte_count == 0 || b <= wa || a >= wb) return dtr_dp_sync_ready(t->sync, offset, count);
  if (a < wa) DTR_CHECK(dtr_dp_sync_ready(t->sync, a, wa - a));
  if (b > wb) DTR_CHECK(dtr_dp_sync_ready(t->sync, wb, b - wb));
  return DTR_OK;
}

static dtr_result stage_backward(void *arg, int mb, int chunk, int slot, const float *dout, float *din) {
  dtr__trainer *t = arg;
  /* a chunk's backwards take the micro-batches in order: the last one's gradients are final */
  int final = mb == t->accum - 1;
  dtr_result rc = dtr__gpt_backward_chunk(t->model, chunk, slot, 1.0f / (float)t->accum, dout, din,
                                          final ? on_grads_ready : NULL, final ? t : NULL);
  if (rc != DTR_OK)
    return rc == DTR_ERR_INVALID ? gpt_fail(t, rc, "backward") : comm_fail(t, t->dp_comm, rc, "backward");
  return DTR_OK;
}

/* ---- setup */

/* This rank's part: the chunks of its pipeline stage (chunk c is virtual stage c*pp + stage). */
static dtr__gpt_part make_part(dtr__trainer *t, int slots) {
  dtr__gpt_part p;
  memset(&p, 0, sizeof p);
  p.tp = &t->tp;
  p.nchunks = t->chunks;
  for (int c = 0; c < t->chunks; c++)
    dtr__recipe_stage_layers(t->r, c * t->pp + t->stage, &p.layer_begin[c], &p.layer_end[c]);
  p.first = t->stage == 0;
  p.last = t->stage == t->pp - 1;
  p.slots = slots;
  return p;
}

dtr_result dtr__train_setup_cpu(dtr__trainer *t, const dtr__gpt_config *gc) {
  const dtr_recipe *r = t->r;
  char *err = t->err;
  size_t errcap = t->errcap;
  t->tp = dtr_tp_make(t->tp_size > 1 ? t->tp_comm : NULL, t->threads);
  /* the pipeline: its schedule decides how many micro-batches are in flight on this stage */
  dtr_pp_config pc = {DTR_PP_1F1B, t->accum, t->chunks, (size_t)t->micro * t->T * gc->n_embd};
  if (dtr_pp_schedule_parse(r->parallel.schedule, &pc.schedule) != DTR_OK)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: parallel.schedule=%s: unknown", r->path,
                     r->parallel.schedule);
  dtr_pp_stage st = {stage_forward, stage_backward, t};
  DTR_CHECK(dtr_pp_pipe_create(t->pp > 1 ? t->pp_comm : NULL, &pc, &st, &t->pipe, err, errcap));
  if (t->pp > 1) {
    int ends = t->stage == 0 || t->stage == t->pp - 1;
    dtr_result rc = dtr_comm_split(t->pp_comm, ends ? 0 : -1, t->stage, &t->emb_comm);
    if (rc != DTR_OK) return comm_fail(t, t->pp_comm, rc, "the embedding group");
  }
  dtr__gpt_part part = make_part(t, dtr_pp_pipe_slots(t->pipe));
  DTR_CHECK(dtr__gpt_create_part(gc, &part, r->job.seed, t->threads, t->micro, &t->model, err, errcap));
  t->nparams = dtr__gpt_num_params(t->model);
  t->decay = calloc(t->nparams ? t->nparams : 1, 1);
  t->counted = calloc(t->nparams ? t->nparams : 1, 1);
  if (!t->decay || !t->counted) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "trainer: out of memory");
  for (int i = 0; i < dtr__gpt_num_tensors(t->model); i++) {
    const dtr__gpt_param *p = dtr__gpt_tensor(t->model, i);
    if (p->decay) memset(t->decay + p->offset, 1, p->count);
    /* the norm counts a tensor every tp rank holds on the first of them, and the tied copy not at all */
    int counted = !p->tied && (p->split != DTR__GPT_WHOLE || t->tp_rank == 0);
    if (counted) memset(t->counted + p->offset, 1, p->count);
    if (!strcmp(p->name, "wte") && t->pp > 1) t->wte_off = p->offset, t->wte_count = p->count;
  }
  size_t bucket = (size_t)(r->train.bucket_mb * 1048576.0),
         first = (size_t)(r->train.first_bucket_mb * 1048576.0);
  if (bucket < 4096) bucket = 4096;
  if (first < 4096) first = 4096;
  float *grads = dtr__gpt_grads(t->model);
  DTR_CHECK(r->train.zero ? dtr_dp_sync_create_zero1(t->grad_comm, grads, t->nparams, bucket, first,
                                                     r->train.overlap, &t->sync)
                          : dtr_dp_sync_create(t->grad_comm, grads, t->nparams, bucket, first,
                                               r->train.overlap, &t->sync));
  /* AdamW's moments cover what this rank updates: its ZeRO-1 shards, or everything */
  int ns = 0;
  const dtr_range *sh = dtr_dp_sync_shards(t->sync, &ns);
  size_t owned = 0;
  for (int i = 0; i < ns; i++) owned += sh[i].count;
  DTR_CHECK(
      dtr_adamw_init(&t->opt, owned, r->train.beta1, r->train.beta2, r->train.eps, r->train.weight_decay));
  t->opt_ready = 1;
  return DTR_OK;
}

/* ---- the step */

/* Sum of squares of the gradients this rank counts, over the ranges it updates. */
static double local_sumsq(const dtr__trainer *t, const dtr_range *ranges, int n) {
  const float *g = dtr__gpt_grads(t->model);
  double sq = 0;
  for (int k = 0; k < n; k++)
    for (size_t i = ranges[k].offset; i < ranges[k].offset + ranges[k].count; i++)
      if (t->counted[i]) sq += (double)g[i] * g[i];
  return sq;
}

static dtr_result sum_over(dtr__trainer *t, dtr_comm *c, double *v, const char *what) {
  if (!c || dtr_comm_size(c) == 1) return DTR_OK;
  dtr_result rc = dtr_all_reduce(c, v, v, 1, DTR_F64, DTR_SUM, NULL);
  return rc == DTR_OK ? DTR_OK : comm_fail(t, c, rc, what);
}

dtr_result dtr__train_cpu_grads(dtr__trainer *t, int64_t step, double *loss, double *gnorm) {
  const dtr_recipe *r = t->r;
  dtr__gpt_zero_grad(t->model);
  t->loss_sum = 0;
  uint64_t tp0 = t->tp.allreduce_bytes;
  dtr_result rc = dtr_pp_pipe_step(t->pipe, t->err, t->errcap);
  if (rc != DTR_OK) {
    if (!t->err[0]) dtr__fail(t->err, t->errcap, rc, "step %lld: pipeline", (long long)step + 1);
    return rc;
  }
  t->tp_bytes_last = t->tp.allreduce_bytes - tp0;
  if (t->wte_count) {
    /* the tied embedding: the first stage's embedding gradient plus the last stage's head gradient, on
     * both, before its DP bucket starts */
    float *g = dtr__gpt_grads(t->model) + t->wte_off;
    rc = dtr_all_reduce(t->emb_comm, g, g, t->wte_count, DTR_F32, DTR_SUM, NULL);
    if (rc != DTR_OK) return comm_fail(t, t->emb_comm, rc, "tied embedding all-reduce");
    DTR_CHECK(dtr_dp_sync_ready(t->sync, t->wte_off, t->wte_count));
  }
  rc = dtr_dp_sync_finish(t->sync);
  if (rc != DTR_OK)
    return comm_fail(t, t->grad_comm, rc, r->train.zero ? "gradient reduce-scatter" : "gradient all-reduce");
  /* Every rank's local mean is over the same number of scored tokens: the DP average is the global mean. */
  double mean = t->loss_sum / t->accum;
  rc = dtr_all_reduce(t->dp_comm, &mean, &mean, 1, DTR_F64, DTR_AVG, NULL);
  if (rc != DTR_OK) return comm_fail(t, t->dp_comm, rc, "loss all-reduce");
  if (t->pp > 1) { /* only the last stage has it */
    rc = dtr_broadcast(t->pp_comm, &mean, 1, DTR_F64, t->pp - 1, NULL);
    if (rc != DTR_OK) return comm_fail(t, t->pp_comm, rc, "loss broadcast");
  }
  *loss = mean;
  /* the global norm: every parameter's gradient once, wherever it lives */
  int ns = 0;
  const dtr_range *sh = dtr_dp_sync_shards(t->sync, &ns);
  double sq = local_sumsq(t, sh, ns);
  if (r->train.zero) DTR_CHECK(sum_over(t, t->dp_comm, &sq, "gradient norm over dp"));
  DTR_CHECK(sum_over(t, t->tp_comm, &sq, "gradient norm over tp"));
  DTR_CHECK(sum_over(t, t->pp_comm, &sq, "gradient norm over pp"));
  double norm = sqrt(sq);
  /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when below 1. A norm that is
   * not finite leaves the gradients alone: the step is skipped. */
  if (r->train.grad_clip > 0 && isfinite(norm)) {
    double coef = r->train.grad_clip / (norm + 1e-6);
    if (coef < 1.0) {
      float *g = dtr__gpt_grads(t->model);
      for (int k = 0; k < ns; k++)
        for (size_t i = sh[k].offset; i < sh[k].offset + sh[k].count; i++) g[i] = g[i] * (float)coef;
    }
  }
  *gnorm = norm;
  return DTR_OK;
}

dtr_result dtr__train_cpu_update(dtr__trainer *t, double lr) {
  float *params = dtr__gpt_params(t->model), *grads = dtr__gpt_grads(t->model);
  if (!t->r->train.zero) {
    dtr_adamw_step(&t->opt, params, grads, t->decay, lr);
    return DTR_OK;
  }
  int ns = 0;
  const dtr_range *sh = dtr_dp_sync_shards(t->sync, &ns);
  dtr_adamw_step_ranges(&t->opt, params, grads, t->decay, sh, ns, lr);
  dtr_result rc = dtr_dp_sync_gather_params(t->sync, params);
  return rc == DTR_OK ? DTR_OK : comm_fail(t, t->grad_comm, rc, "ZeRO-1 parameter all-gather");
}
