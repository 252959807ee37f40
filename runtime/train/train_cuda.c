/* The trainer's step on a CUDA device (train.device: cuda): the reference GPT of gpt_cuda.c in fp32 or
 * bf16 mixed precision, its gradient buckets all-reduced over an nccl DP communicator that is ordered
 * after the model's stream (so a bucket starts while backward still runs, without a synchronization),
 * clipping from the device's sum of squares, and AdamW on the device. The data stays on the host: the
 * forward uploads each micro-batch's ids. train.c drives it; the cpu path never comes here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "dtrain/ckpt.h"
#include "runtime/model/gpt_cuda.h"
#include "runtime/train/train_internal.h"

struct dtr__gpu {
  dtr__gpt_cuda *model;
  dtr_comm *grad_comm; /* ordered after the model's stream while g lives */
  double beta1, beta2, eps, weight_decay;
  char desc[48];
};

static dtr_result model_fail(dtr__gpu *g, char *err, size_t errcap, dtr_result rc, const char *what) {
  return dtr__fail(err, errcap, rc, "%s on %s: %s", what, g->desc, dtr__gpt_cuda_last_error(g->model));
}

dtr_result dtr__gpu_create(const dtr_recipe *r, const dtr__gpt_config *gc, const float *init, size_t n,
                           int device, int max_batch, dtr_comm *grad_comm, dtr__gpu **out, char *err,
                           size_t errcap) {
  *out = NULL;
  int bf16 = strcmp(r->train.precision, "bf16") == 0;
  dtr__gpu *g = calloc(1, sizeof *g);
  if (!g) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "trainer: out of memory");
  g->beta1 = r->train.beta1;
  g->beta2 = r->train.beta2;
  g->eps = r->train.eps;
  g->weight_decay = r->train.weight_decay;
  snprintf(g->desc, sizeof g->desc, "cuda:%d %s", device, bf16 ? "bf16" : "fp32");
  dtr_result rc =
      dtr__gpt_cuda_create(gc, init, n, device, bf16 ? DTR_BF16 : DTR_F32, max_batch, &g->model, err, errcap);
  if (rc != DTR_OK) {
    free(g);
    return rc;
  }
  if (grad_comm) {
    rc = dtr_comm_set_cuda_stream(grad_comm, dtr__gpt_cuda_stream(g->model));
    if (rc != DTR_OK) {
      dtr__fail(err, errcap, rc, "trainer on %s: ordering the gradient all-reduces after the model: %s",
                g->desc, dtr_comm_last_error(grad_comm));
      dtr__gpu_destroy(g);
      return rc;
    }
    g->grad_comm = grad_comm;
  }
  *out = g;
  return DTR_OK;
}

void dtr__gpu_destroy(dtr__gpu *g) {
  if (!g) return;
  /* The stream dies with the model: later operations on the communicator must not wait on it. */
  if (g->grad_comm) dtr_comm_set_cuda_stream(g->grad_comm, NULL);
  dtr__gpt_cuda_destroy(g->model);
  free(g);
}

float *dtr__gpu_grads(dtr__gpu *g) {
  return dtr__gpt_cuda_grads_dev(g->model);
}

dtr__train_bufs dtr__gpu_bufs(dtr__gpu *g) {
  dtr__train_bufs b = {dtr__gpt_cuda_tensor(g->model, 0),
                       dtr__gpt_cuda_num_tensors(g->model),
                       dtr__gpt_cuda_params_dev(g->model),
                       dtr__gpt_cuda_adam_m_dev(g->model),
                       dtr__gpt_cuda_adam_v_dev(g->model),
                       DTR_CKPT_CUDA,
                       1,
                       0,
                       NULL,
                       0};
  return b;
}

const char *dtr__gpu_describe(const dtr__gpu *g) {
  return g ? g->desc : "cpu";
}

/* Backward reports finished gradient ranges (queued on the model's stream, not yet computed); each may
 * complete a bucket, whose all-reduce the nccl communicator orders after that queued work. */
static dtr_result on_grads_ready(void *arg, size_t offset, size_t count) {
  return dtr_dp_sync_ready((dtr_dp_sync *)arg, offset, count);
}

dtr_result dtr__gpu_grads_step(dtr__gpu *g, const dtr__step_data *d, int64_t step, dtr_dp_sync *sync,
                               dtr_comm *host_dp, double max_norm, double *loss, double *gnorm, double *coef,
                               char *err, size_t errcap) {
  dtr_result rc = dtr__gpt_cuda_zero_grad(g->model);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "zeroing the gradients");
  double sum = 0;
  for (int k = 0; k < d->accum; k++) {
    rc = dtr__data_batch(d->data, d->first + k * d->micro, d->micro, d->x, d->y);
    if (rc != DTR_OK) return dtr__fail(err, errcap, rc, "data batch of step %lld", (long long)step);
    float l = 0;
    rc = dtr__gpt_cuda_forward(g->model, d->x, d->y, d->micro, d->T, &l, NULL);
    if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "forward");
    sum += l;
    /* Only the last micro-step's gradients are final: it alone starts the buckets' all-reduce. */
    int last = k == d->accum - 1;
    rc = dtr__gpt_cuda_backward(g->model, 1.0f / (float)d->accum, last ? on_grads_ready : NULL,
                                last ? sync : NULL);
    if (rc != DTR_OK) {
      if (rc == DTR_ERR_INVALID) return model_fail(g, err, errcap, rc, "backward");
      return dtr__fail(err, errcap, rc, "backward on %s: %s; gradient all-reduce: %s", g->desc,
                       dtr__gpt_cuda_last_error(g->model), dtr_comm_last_error(g->grad_comm));
    }
  }
  rc = dtr_dp_sync_finish(sync);
  if (rc != DTR_OK)
    return dtr__fail(err, errcap, rc, "gradient all-reduce (nccl): %s", dtr_comm_last_error(g->grad_comm));
  /* The all-reduces are complete on the device; the model's stream sees their results. */
  double sumsq = 0;
  rc = dtr__gpt_cuda_grad_sumsq(g->model, &sumsq);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "gradient norm");
  /* The device's sum of squares adds in a fixed order (kernels_cuda_elem.cu), so it is the same bits on
   * every run, and every rank, holding the same all-reduced gradients, computes the same value. It still
   * rides along with the loss's all-reduce (free: one message either way): averaging identical values
   * keeps them identical on every rank, and the ranks clip (or skip) alike even if a collective ever
   * handed them gradients that differ in the last bit, so the replicas can never drift apart. */
  double both[2] = {sum / d->accum, sumsq};
  rc = dtr_all_reduce(host_dp, both, both, 2, DTR_F64, DTR_AVG, NULL);
  if (rc != DTR_OK) return dtr__fail(err, errcap, rc, "loss all-reduce: %s", dtr_comm_last_error(host_dp));
  *loss = both[0];
  *gnorm = sqrt(both[1]);
  *coef = 1.0;
  /* torch.nn.utils.clip_grad_norm_, as dtr_clip_grad_norm: scale by max_norm / (norm + 1e-6) when that
   * is below 1; a norm that is not finite is left for the caller, which skips the step. */
  if (max_norm > 0 && isfinite(*gnorm)) {
    double c = max_norm / (*gnorm + 1e-6);
    if (c < 1.0) *coef = c;
  }
  return DTR_OK;
}

dtr_result dtr__gpu_adamw(dtr__gpu *g, dtr_adamw *opt, double lr, double coef, char *err, size_t errcap) {
  opt->t++;
  opt->lr = lr;
  dtr_cuda_adamw_hp hp = {(float)lr,     (float)g->beta1,        (float)g->beta2,
                          (float)g->eps, (float)g->weight_decay, (float)coef,
                          opt->t};
  dtr_result rc = dtr__gpt_cuda_adamw(g->model, &hp);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "AdamW");
  return DTR_OK;
}

dtr_result dtr__gpu_sync(dtr__gpu *g, char *err, size_t errcap) {
  dtr_result rc = dtr__gpt_cuda_sync(g->model);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "waiting for the device");
  return DTR_OK;
}

dtr_result dtr__gpu_set_params(dtr__gpu *g, const float *params, char *err, size_t errcap) {
  dtr_result rc = dtr__gpt_cuda_set_params(g->model, params);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "uploading the weights");
  return DTR_OK;
}

dtr_result dtr__gpu_params_changed(dtr__gpu *g, char *err, size_t errcap) {
  dtr_result rc = dtr__gpt_cuda_params_changed(g->model);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "refreshing the bf16 weights");
  return DTR_OK;
}

dtr_result dtr__gpu_download(dtr__gpu *g, float *params, float *m, float *v, char *err, size_t errcap) {
  size_t bytes = dtr__gpt_cuda_num_params(g->model) * sizeof(float);
  dtr_cuda_ctx *ctx = dtr__gpt_cuda_ctx(g->model);
  dtr_result rc = dtr__gpt_cuda_get_params(g->model, params);
  if (rc != DTR_OK) return model_fail(g, err, errcap, rc, "downloading the weights");
  if (m && (rc = dtr__cuda_download(ctx, m, dtr__gpt_cuda_adam_m_dev(g->model), bytes)) != DTR_OK)
    return dtr__fail(err, errcap, rc, "downloading AdamW m on %s: %s", g->desc, dtr__cuda_ctx_error(ctx));
  if (v && (rc = dtr__cuda_download(ctx, v, dtr__gpt_cuda_adam_v_dev(g->model), bytes)) != DTR_OK)
    return dtr__fail(err, errcap, rc, "downloading AdamW v on %s: %s", g->desc, dtr__cuda_ctx_error(ctx));
  return DTR_OK;
}
