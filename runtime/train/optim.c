/* The optimizer side of a step: AdamW with PyTorch's torch.optim.AdamW semantics (bias-corrected moments,
 * decoupled weight decay), the warmup + cosine learning-rate schedule, and clipping by global L2 norm.
 * Moments and arithmetic are float, in torch's order (see dtr_adamw_step). */
#include <math.h>
#include <stdlib.h>

#include "common/check.h"
#include "dtrain/runtime.h"
#include "runtime/model/kernels.h"

dtr_result dtr_adamw_init(dtr_adamw *o, size_t n, double beta1, double beta2, double eps,
                          double weight_decay) {
  if (!o) return DTR_ERR_INVALID;
  *o = (dtr_adamw){0};
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps >= 0) || !(weight_decay >= 0)) {
    DTR_WARN("dtr_adamw_init: beta1 %g and beta2 %g must be in [0, 1), eps %g and weight_decay %g >= 0",
             beta1, beta2, eps, weight_decay);
    return DTR_ERR_INVALID;
  }
  o->m = calloc(n ? n : 1, sizeof(float));
  o->v = calloc(n ? n : 1, sizeof(float));
  if (!o->m || !o->v) {
    dtr_adamw_free(o);
    return DTR_ERR_NOMEM;
  }
  o->n = n;
  o->beta1 = beta1;
  o->beta2 = beta2;
  o->eps = eps;
  o->weight_decay = weight_decay;
  return DTR_OK;
}

void dtr_adamw_free(dtr_adamw *o) {
  if (!o) return;
  free(o->m);
  free(o->v);
  o->m = o->v = NULL;
  o->n = 0;
}

/* The per-element update over n elements, moments m and v of those elements. DTR_VEC: with FMA
 * instructions fmaf is one instruction instead of a libm call (about 6x faster here); the arithmetic, and
 * so the bits, are the same in both clones. Static, so that the clones' resolver stays inside the
 * library: the dtr_adamw_step* functions below are the exported names. The scalars are rounded to float
 * and each element's arithmetic runs in float, in the order of torch's single-tensor AdamW (whose
 * vectorized add-with-alpha and addcmul are fused multiply-adds), so the two agree to rounding:
 *   p *= 1 - lr*wd; m = m*b1 + (1-b1)*g; v = v*b2 + (1-b2)*g*g;
 *   p += (-lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps) */
typedef struct adamw_scalars {
  float decay, w1, fb1, fb2, w2, fbc2, feps, neg_step;
} adamw_scalars;

DTR_VEC static void adamw_update(const adamw_scalars *k, float *params, const float *grads,
                                 const uint8_t *decay_mask, float *m, float *v, size_t n) {
  const float decay = k->decay, w1 = k->w1, fb1 = k->fb1, fb2 = k->fb2, w2 = k->w2, fbc2 = k->fbc2,
              feps = k->feps, neg_step = k->neg_step;
  for (size_t i = 0; i < n; i++) {
    float g = grads[i], p = params[i];
    if (!decay_mask || decay_mask[i]) p = p * decay;
    float mi = fmaf(w1, g, m[i] * fb1);
    float vi = fmaf(w2 * g, g, v[i] * fb2);
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / fbc2 + feps;
    params[i] = p + neg_step * mi / denom;
  }
}

/* Count the step and work out its scalars. */
static adamw_scalars adamw_begin(dtr_adamw *o, double lr) {
  o->t++;
  o->lr = lr;
  const double b1 = o->beta1, b2 = o->beta2, eps = o->eps;
  const double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
  const double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);
  adamw_scalars k = {(float)(1.0 - lr * o->weight_decay),
                     (float)(1.0 - b1),
                     (float)b1,
                     (float)b2,
                     (float)(1.0 - b2),
                     (float)bc2_sqrt,
                     (float)eps,
                     (float)-step_size};
  return k;
}

void dtr_adamw_step(dtr_adamw *o, float *params, const float *grads, const uint8_t *decay_mask, double lr) {
  if (!o || !o->m || (o->n && (!params || !grads))) return;
  adamw_scalars k = adamw_begin(o, lr);
  adamw_update(&k, params, grads, decay_mask, o->m, o->v, o->n);
}

void dtr_adamw_step_ranges(dtr_adamw *o, float *params, const float *grads, const uint8_t *decay_mask,
                           const dtr_range *ranges, int nranges, double lr) {
  if (!o || !o->m || (o->n && (!params || !grads))) return;
  adamw_scalars k = adamw_begin(o, lr);
  size_t at = 0;
  for (int r = 0; r < nranges && at + ranges[r].count <= o->n; r++) {
    size_t a = ranges[r].offset;
    adamw_update(&k, params + a, grads + a, decay_mask ? decay_mask + a : NULL, o->m + at, o->v + at,
                 ranges[r].count);
    at += ranges[r].count;
  }
}

double dtr_lr_at(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr) {
  if (step < 0) step = 0;
  /* warmup: (step+1)/warmup of lr, so step 0 already learns and step warmup-1 reaches lr */
  if (warmup > 0 && step < warmup) return lr * (double)(step + 1) / (double)warmup;
  if (step >= total || total <= warmup) return min_lr;
  double ratio = (double)(step - warmup) / (double)(total - warmup);
  double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
  return min_lr + coeff * (lr - min_lr);
}

double dtr_clip_grad_norm(float *grads, size_t n, double max_norm) {
  if (!grads && n) return 0;
  double sq = 0;
  for (size_t i = 0; i < n; i++) sq += (double)grads[i] * grads[i];
  double norm = sqrt(sq);
  /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when below 1. A norm that
   * is not finite leaves the gradients alone: the caller sees it and skips the step. */
  if (max_norm > 0 && isfinite(norm)) {
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (size_t i = 0; i < n; i++) grads[i] = grads[i] * (float)coef; /* in float, as torch scales */
  }
  return norm;
}
