/* The optimizer helpers against hand-computed references: the warmup + cosine schedule at its corners
 * and in between, clipping by global norm (torch.nn.utils.clip_grad_norm_'s coefficient), and AdamW's
 * first steps (closed form: the first bias-corrected step moves each parameter by about lr*sign(g)),
 * weight decay and its mask. The full comparison with torch.optim.AdamW is
 * tests/integration/test_optim_vs_torch.sh. */
#include <math.h>
#include <stdlib.h>

#include "dtrain/runtime.h"
#include "tests/unit/test_util.h"

/* Unit tests link without libm: a Newton square root and the few cosines needed, as constants. */
static double nsqrt(double x) {
  if (x <= 0) return 0;
  double r = x > 1 ? x : 1;
  for (int i = 0; i < 200; i++) r = 0.5 * (r + x / r);
  return r;
}
#define COS_PI_025 0.70710678118654752440
#define COS_PI_075 (-0.70710678118654752440)
#define COS_PI_099 (-0.99950656036573160)

#define CHECK_NEAR(a, b, tol)                                                                             \
  do {                                                                                                    \
    double a__ = (a), b__ = (b);                                                                          \
    test_checks++;                                                                                        \
    if (!(fabs(a__ - b__) <= (tol))) {                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s ~ %s (%.17g vs %.17g)\n", __FILE__, __LINE__, #a, #b, a__, \
              b__);                                                                                       \
      test_failures++;                                                                                    \
    }                                                                                                     \
  } while (0)

static void test_lr(void) {
  const double lr = 6e-4, mn = 6e-5;
  /* warmup 10 over total 110: (step+1)/10 of lr */
  CHECK_NEAR(dtr_lr_at(0, 10, 110, lr, mn), 6e-5, 1e-18);
  CHECK_NEAR(dtr_lr_at(4, 10, 110, lr, mn), 3e-4, 1e-18);
  CHECK_NEAR(dtr_lr_at(9, 10, 110, lr, mn), 6e-4, 1e-18);
  /* cosine from lr at step 10 to min_lr at step 110: half way is the mean */
  CHECK_NEAR(dtr_lr_at(10, 10, 110, lr, mn), 6e-4, 1e-18);
  CHECK_NEAR(dtr_lr_at(60, 10, 110, lr, mn), (lr + mn) / 2, 1e-15);
  CHECK_NEAR(dtr_lr_at(35, 10, 110, lr, mn), mn + 0.5 * (1 + COS_PI_025) * (lr - mn), 1e-15);
  CHECK_NEAR(dtr_lr_at(85, 10, 110, lr, mn), mn + 0.5 * (1 + COS_PI_075) * (lr - mn), 1e-15);
  CHECK_NEAR(dtr_lr_at(109, 10, 110, lr, mn), mn + 0.5 * (1 + COS_PI_099) * (lr - mn), 1e-15);
  CHECK_NEAR(dtr_lr_at(110, 10, 110, lr, mn), mn, 0);
  CHECK_NEAR(dtr_lr_at(1000, 10, 110, lr, mn), mn, 0);
  /* monotone: up during warmup, down after */
  for (int s = 1; s < 110; s++) {
    double a = dtr_lr_at(s - 1, 10, 110, lr, mn), b = dtr_lr_at(s, 10, 110, lr, mn);
    CHECK(s < 10 ? b > a : b <= a);
  }
  /* no warmup: cosine from step 0 */
  CHECK_NEAR(dtr_lr_at(0, 0, 100, 1.0, 0.0), 1.0, 0);
  CHECK_NEAR(dtr_lr_at(50, 0, 100, 1.0, 0.0), 0.5, 1e-15);
  /* constant when min_lr == lr */
  CHECK_NEAR(dtr_lr_at(57, 5, 100, 0.1, 0.1), 0.1, 1e-17);
  /* negative steps clamp to 0; total <= warmup: min_lr after warmup */
  CHECK_NEAR(dtr_lr_at(-3, 10, 110, lr, mn), 6e-5, 1e-18);
  CHECK_NEAR(dtr_lr_at(10, 10, 10, lr, mn), mn, 0);
}

static void test_clip(void) {
  float g[4] = {3, 4, 0, 0}; /* norm 5 */
  CHECK_NEAR(dtr_clip_grad_norm(g, 4, 0), 5.0, 1e-12);
  CHECK_NEAR(g[0], 3, 0); /* max_norm 0: untouched */
  CHECK_NEAR(dtr_clip_grad_norm(g, 4, 10), 5.0, 1e-12);
  CHECK_NEAR(g[1], 4, 0); /* below the limit: untouched */
  CHECK_NEAR(dtr_clip_grad_norm(g, 4, 1.0), 5.0, 1e-12);
  double coef = 1.0 / (5.0 + 1e-6);
  CHECK_NEAR(g[0], (float)(3 * coef), 0);
  CHECK_NEAR(g[1], (float)(4 * coef), 0);
  double after = nsqrt((double)g[0] * g[0] + (double)g[1] * g[1]);
  CHECK_NEAR(after, 1.0, 1e-6);
  CHECK(after <= 1.0);
  /* many elements: the norm is accumulated in double */
  size_t n = 1000003;
  float *big = malloc(n * sizeof *big);
  for (size_t i = 0; i < n; i++) big[i] = (i % 2) ? 0.001f : -0.001f;
  double want = nsqrt((double)n * (double)0.001f * (double)0.001f);
  CHECK_NEAR(dtr_clip_grad_norm(big, n, 0.5), want,
             want * 1e-10); /* float accumulation would be off by ~1e-4 */
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)big[i] * big[i];
  CHECK_NEAR(nsqrt(s), 0.5, 1e-6);
  free(big);
  /* non-finite: reported, gradients left alone */
  float bad[2] = {INFINITY, 1};
  CHECK(isinf(dtr_clip_grad_norm(bad, 2, 1.0)));
  CHECK_NEAR(bad[1], 1, 0);
  CHECK_NEAR(dtr_clip_grad_norm(NULL, 0, 1.0), 0, 0);
}

static void test_adamw(void) {
  dtr_adamw o;
  CHECK_EQ_INT(dtr_adamw_init(&o, 4, 0.9, 0.999, 1e-8, 0.0), DTR_OK);
  float p[4] = {1, -2, 0.5f, 0}, g[4] = {0.1f, -3, 1e-3f, 0};
  dtr_adamw_step(&o, p, g, NULL, 0.01);
  CHECK_EQ_INT(o.t, 1);
  /* first step: m^ = g, v^ = g^2, update = lr * g / (|g| + eps) */
  CHECK_NEAR(p[0], 1 - 0.01 * 0.1 / (0.1 + 1e-8), 1e-7);
  CHECK_NEAR(p[1], -2 + 0.01 * 3 / (3 + 1e-8), 1e-7);
  CHECK_NEAR(p[2], 0.5 - 0.01 * 1e-3 / (1e-3 + 1e-8), 1e-7);
  CHECK_NEAR(p[3], 0, 0); /* zero gradient, no decay: no move */
  CHECK_NEAR(o.m[1], 0.1 * -3.0, 1e-6);
  CHECK_NEAR(o.v[1], 0.001 * 9.0, 1e-8);
  /* second step by hand */
  double m = 0.9 * (0.1 * 0.1) + 0.1 * 0.1, v = 0.999 * (0.001 * 0.01) + 0.001 * 0.01;
  double mh = m / (1 - 0.81), vh = v / (1 - 0.999 * 0.999);
  double want = p[0] - 0.01 * mh / (nsqrt(vh) + 1e-8);
  dtr_adamw_step(&o, p, g, NULL, 0.01);
  CHECK_NEAR(p[0], want, 1e-7);
  dtr_adamw_free(&o);
  dtr_adamw_free(&o); /* twice is fine */

  /* decoupled weight decay, masked: a zero gradient leaves p*(1 - lr*wd) */
  CHECK_EQ_INT(dtr_adamw_init(&o, 3, 0.9, 0.95, 1e-8, 0.1), DTR_OK);
  float q[3] = {2, 2, 2}, z[3] = {0, 0, 0};
  uint8_t mask[3] = {1, 0, 1};
  dtr_adamw_step(&o, q, z, mask, 0.5);
  CHECK_NEAR(q[0], 2 * (1 - 0.05), 1e-7);
  CHECK_NEAR(q[1], 2, 0);
  CHECK_NEAR(q[2], 2 * (1 - 0.05), 1e-7);
  dtr_adamw_free(&o);

  CHECK_EQ_INT(dtr_adamw_init(&o, 3, 1.0, 0.95, 1e-8, 0.1), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_adamw_init(&o, 3, 0.9, -0.1, 1e-8, 0.1), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_adamw_init(&o, 3, 0.9, 0.95, -1, 0.1), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_adamw_init(NULL, 3, 0.9, 0.95, 1e-8, 0.1), DTR_ERR_INVALID);
}

int main(void) {
  test_lr();
  test_clip();
  test_adamw();
  return TEST_EXIT();
}
