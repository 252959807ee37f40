/* The GPU GPT (runtime/model/gpt_cuda.c) against the CPU reference model (runtime/model/gpt.c) from the same
 * weights and batches: parameter tables, losses, logits, accumulated gradients and the ready-callback order
 * in fp32 (loss 1e-5 relative, gradients 1e-4 of each tensor's max abs) and bf16 mixed precision (loss 2e-2
 * relative, gradients per tensor cosine > 0.99 and norm within 10%), AdamW steps that track the CPU
 * optimizer, determinism (two runs from the same weights and batches: losses, every gradient, the
 * gradient norm and the weights after AdamW bit-identical), then tokens/s of forward + backward + AdamW
 * on the CPU and the GPU.
 * Exits 77 with a reason when there is no CUDA device (after checking that create refuses cleanly), 1
 * on any failure. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/device.h"
#include "dtrain/common.h"
#include "dtrain/runtime.h"
#include "runtime/model/gpt.h"
#include "runtime/model/gpt_cuda.h"
#include "runtime/model/kernels_cuda.h"

#define TOL_LOSS_F32 1e-5
#define TOL_GRAD_F32 1e-4
#define TOL_LOSS_BF16 2e-2
#define MIN_COS_BF16 0.99
#define TOL_NORM_BF16 0.10
#define TOL_ADAM_F32                                                                     \
  1e-3 /* Adam's g/sqrt(v) turns rounding-level gradient differences into lr-sized steps \
        */
#define TOL_ADAM_BF16 3e-2

typedef struct cfgcase {
  const char *name;
  dtr__gpt_config cfg;
  int B;
} cfgcase;

static int g_checks, g_failed, g_threads;
static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
  g_checks++;
  if (!ok) g_failed++;
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "ok  " : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

static uint64_t next_u64(void) { /* splitmix64 */
  uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Helpers link only libdtrain (no libm): Newton's square root is plenty for printing and ratios. */
static double xsqrt(double a) {
  if (!(a > 0.0)) return 0.0;
  double x = a > 1.0 ? a : 1.0;
  for (int i = 0; i < 200; i++) {
    double y = 0.5 * (x + a / x);
    if (y == x) break;
    x = y;
  }
  return x;
}
static double xabs(double a) {
  return a < 0 ? -a : a;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Token ids in [0, V); about one target in eight is -1 (not scored). */
static void make_batch(int32_t *in, int32_t *tg, int n, int V) {
  for (int i = 0; i < n; i++) {
    in[i] = (int32_t)(next_u64() % (uint64_t)V);
    tg[i] = next_u64() % 8 == 0 ? -1 : (int32_t)(next_u64() % (uint64_t)V);
  }
}

static const char *dtname(dtr_dtype dt) {
  return dt == DTR_BF16 ? "bf16" : "f32";
}

/* Compare got against ref (n values): f32 wants max |diff| <= tol x max |ref|; bf16 wants cosine >
 * MIN_COS_BF16 and the norms within TOL_NORM_BF16. */
static void compare(const char *what, const char *tensor, dtr_dtype dt, const float *got, const float *ref,
                    size_t n) {
  double maxref = 0.0, maxdiff = 0.0, dot = 0.0, ng = 0.0, nr = 0.0;
  int nan = 0;
  for (size_t i = 0; i < n; i++) {
    double g = got[i], r = ref[i];
    if (g != g) nan = 1;
    if (xabs(r) > maxref) maxref = xabs(r);
    if (xabs(g - r) > maxdiff) maxdiff = xabs(g - r);
    dot += g * r;
    ng += g * g;
    nr += r * r;
  }
  if (dt == DTR_F32) {
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    check(!nan && rel <= TOL_GRAD_F32, "%-5s %-8s %-20s max|diff| %.2e = %.2e of max|ref| %.2e (tol %.0e)",
          dtname(dt), what, tensor, maxdiff, rel, maxref, TOL_GRAD_F32);
  } else {
    /* cos = dot / sqrt(ng nr); an all-zero reference must be matched by all zeros */
    double cs = (ng > 0 && nr > 0) ? dot / xsqrt(ng * nr) : (ng == nr ? 1.0 : 0.0);
    double ratio = nr > 0 ? xsqrt(ng / nr) : (ng == 0 ? 1.0 : 0.0);
    check(!nan && cs > MIN_COS_BF16 && xabs(ratio - 1.0) <= TOL_NORM_BF16,
          "%-5s %-8s %-20s cosine %.5f (min %.2f), norm ratio %.4f (tol %.2f), max|diff| %.2e of %.2e",
          dtname(dt), what, tensor, cs, MIN_COS_BF16, ratio, TOL_NORM_BF16, maxdiff, maxref);
  }
}

static void check_loss(const char *what, dtr_dtype dt, float got, float ref) {
  double tol = dt == DTR_F32 ? TOL_LOSS_F32 : TOL_LOSS_BF16;
  double rel = xabs((double)got - ref) / (xabs(ref) > 1e-30 ? xabs(ref) : 1e-30);
  check(got == got && rel <= tol, "%-5s %-8s loss gpu %.7f cpu %.7f rel diff %.2e (tol %.0e)", dtname(dt),
        what, got, ref, rel, tol);
}

/* ---- ready callback: ranges recorded, and each range's values downloaded when reported (so a later
 * write to a reported range, or a range reported before its ops were queued, shows up). */
#define MAX_RANGES 80
typedef struct ready_rec {
  dtr__gpt_cuda *m;
  float *snap;
  int n;
  size_t off[MAX_RANGES], count[MAX_RANGES];
  int download_failed;
} ready_rec;

static dtr_result on_ready(void *arg, size_t off, size_t count) {
  ready_rec *r = arg;
  if (r->n < MAX_RANGES) {
    r->off[r->n] = off;
    r->count[r->n] = count;
  }
  r->n++;
  /* a download waits for the stream: it sees exactly what the queued ops produced */
  if (dtr__cuda_download(dtr__gpt_cuda_ctx(r->m), r->snap + off, dtr__gpt_cuda_grads_dev(r->m) + off,
                         count * sizeof(float)) != DTR_OK)
    r->download_failed = 1;
  return DTR_OK;
}

static void check_ready(const char *name, const ready_rec *r, const dtr__gpt_config *cfg, size_t nparams,
                        const float *final_grads) {
  int ok = r->n == cfg->n_layer + 2 && !r->download_failed;
  size_t end = nparams;
  for (int i = 0; ok && i < r->n; i++) {
    ok = r->count[i] > 0 && r->off[i] + r->count[i] == end;
    end = r->off[i];
  }
  ok = ok && end == 0;
  check(ok, "ready  %-8s %d ranges, contiguous from the end of the flat buffer to its start", name, r->n);
  check(ok && memcmp(r->snap, final_grads, nparams * sizeof(float)) == 0,
        "ready  %-8s every range's gradients were final when reported (stream order)", name);
}

/* ---- the table: same names, shapes, offsets, decay flags */
static void check_table(const cfgcase *cc, dtr__gpt *cpu, dtr__gpt_cuda *gpu) {
  int ok = dtr__gpt_num_tensors(cpu) == dtr__gpt_cuda_num_tensors(gpu) &&
           dtr__gpt_num_params(cpu) == dtr__gpt_cuda_num_params(gpu);
  for (int i = 0; ok && i < dtr__gpt_num_tensors(cpu); i++) {
    const dtr__gpt_param *a = dtr__gpt_tensor(cpu, i), *b = dtr__gpt_cuda_tensor(gpu, i);
    ok = !strcmp(a->name, b->name) && a->ndim == b->ndim && a->shape[0] == b->shape[0] &&
         a->shape[1] == b->shape[1] && a->offset == b->offset && a->count == b->count && a->decay == b->decay;
    if (!ok) printf("  tensor %d: cpu %s @%zu, gpu %s @%zu\n", i, a->name, a->offset, b->name, b->offset);
  }
  check(ok, "table  %-8s %d tensors, %zu params: same names, shapes, offsets and decay flags as gpt.c",
        cc->name, dtr__gpt_num_tensors(cpu), dtr__gpt_num_params(cpu));
}

static dtr__gpt_cuda *make_gpu(const cfgcase *cc, dtr__gpt *cpu, dtr_dtype dt) {
  char err[512] = "";
  dtr__gpt_cuda *g = NULL;
  dtr_result rc = dtr__gpt_cuda_create(&cc->cfg, dtr__gpt_params(cpu), dtr__gpt_num_params(cpu), 0, dt, cc->B,
                                       &g, err, sizeof err);
  if (rc != DTR_OK)
    check(0, "%-5s %-8s dtr__gpt_cuda_create: %s (%s)", dtname(dt), cc->name, dtr_strerror(rc), err);
  return g;
}

static dtr__gpt *make_cpu(const cfgcase *cc, uint64_t seed) {
  char err[256] = "";
  dtr__gpt *m = NULL;
  dtr_result rc = dtr__gpt_create(&cc->cfg, seed, g_threads, cc->B, &m, err, sizeof err);
  if (rc != DTR_OK) {
    check(0, "cpu    %-8s dtr__gpt_create: %s (%s)", cc->name, dtr_strerror(rc), err);
    return NULL;
  }
  /* Perturb every parameter so no two tensors hold the same values (the initial norms are all ones and
   * the biases zeros: a mix-up between them would go unnoticed). */
  float *p = dtr__gpt_params(m);
  for (size_t i = 0; i < dtr__gpt_num_params(m); i++)
    p[i] += 0.05f * (float)((double)(next_u64() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  return m;
}

/* Two micro-steps (full block, then a shorter T) with grad_scale 0.5 each: losses, logits, accumulated
 * gradients per tensor, ready ranges of the second backward, and the gradient sum of squares. */
static void check_pass(const cfgcase *cc, dtr_dtype dt) {
  const dtr__gpt_config *c = &cc->cfg;
  int B = cc->B, V = c->vocab_size;
  dtr__gpt *cpu = make_cpu(cc, 7);
  dtr__gpt_cuda *gpu = cpu ? make_gpu(cc, cpu, dt) : NULL;
  size_t n = cpu ? dtr__gpt_num_params(cpu) : 0, nl = (size_t)B * c->block_size * V;
  int32_t *in = malloc((size_t)B * c->block_size * sizeof(int32_t));
  int32_t *tg = malloc((size_t)B * c->block_size * sizeof(int32_t));
  float *lg_c = malloc(nl * sizeof(float)), *lg_g = malloc(nl * sizeof(float));
  float *gg = malloc((n ? n : 1) * sizeof(float)), *snap = malloc((n ? n : 1) * sizeof(float));
  char what[32];
  if (!gpu || !in || !tg || !lg_c || !lg_g || !gg || !snap) {
    if (gpu) check(0, "%-5s %-8s out of host memory", dtname(dt), cc->name);
    goto done;
  }
  if (dt == DTR_F32) check_table(cc, cpu, gpu);
  dtr__gpt_zero_grad(cpu);
  ready_rec rec = {.m = gpu, .snap = snap};
  for (int step = 0; step < 2; step++) {
    int T = step == 0 || c->block_size < 4 ? c->block_size : c->block_size - 3;
    make_batch(in, tg, B * T, V);
    float lc = 0, lgpu = 0;
    dtr_result rc = dtr__gpt_forward(cpu, in, tg, B, T, &lc, lg_c);
    dtr_result rg = dtr__gpt_cuda_forward(gpu, in, tg, B, T, &lgpu, lg_g);
    snprintf(what, sizeof what, "%s/T%d", cc->name, T);
    if (rc != DTR_OK || rg != DTR_OK) {
      check(0, "%-5s %-8s forward: cpu %s, gpu %s (%s)", dtname(dt), what, dtr_strerror(rc), dtr_strerror(rg),
            dtr__gpt_cuda_last_error(gpu));
      goto done;
    }
    check_loss(what, dt, lgpu, lc);
    compare(what, "logits", dt, lg_g, lg_c, (size_t)B * T * V);
    rec.n = 0;
    rc = dtr__gpt_backward(cpu, 0.5f, NULL, NULL);
    rg = dtr__gpt_cuda_backward(gpu, 0.5f, on_ready, &rec);
    if (rc != DTR_OK || rg != DTR_OK) {
      check(0, "%-5s %-8s backward: cpu %s, gpu %s (%s)", dtname(dt), what, dtr_strerror(rc),
            dtr_strerror(rg), dtr__gpt_cuda_last_error(gpu));
      goto done;
    }
  }
  if (dtr__gpt_cuda_get_grads(gpu, gg) != DTR_OK) {
    check(0, "%-5s %-8s get_grads: %s", dtname(dt), cc->name, dtr__gpt_cuda_last_error(gpu));
    goto done;
  }
  const float *gc = dtr__gpt_grads(cpu);
  snprintf(what, sizeof what, "%s", cc->name);
  for (int i = 0; i < dtr__gpt_num_tensors(cpu); i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(cpu, i);
    compare(what, t->name, dt, gg + t->offset, gc + t->offset, t->count);
  }
  compare(what, "all grads", dt, gg, gc, n);
  check_ready(what, &rec, c, n, gg);
  double ss_g = 0.0, ss_c = 0.0;
  for (size_t i = 0; i < n; i++) ss_c += (double)gc[i] * gc[i];
  dtr_result rs = dtr__gpt_cuda_grad_sumsq(gpu, &ss_g);
  double rel = xabs(ss_g - ss_c) / (ss_c > 0 ? ss_c : 1e-30), tol = dt == DTR_F32 ? 1e-4 : 5e-2;
  check(rs == DTR_OK && rel <= tol, "%-5s %-8s grad sumsq gpu %.6e cpu %.6e rel %.2e (tol %.0e)", dtname(dt),
        what, ss_g, ss_c, rel, tol);

  if (dt == DTR_F32) { /* misuse is refused with a message naming the culprit */
    in[1] = V;
    dtr_result r1 = dtr__gpt_cuda_forward(gpu, in, tg, B, c->block_size, NULL, NULL);
    check(r1 == DTR_ERR_INVALID && strstr(dtr__gpt_cuda_last_error(gpu), "[0,1]"),
          "%-8s out-of-vocabulary input refused: %s", what, dtr__gpt_cuda_last_error(gpu));
    in[1] = 0;
    dtr_result r2 = dtr__gpt_cuda_forward(gpu, in, NULL, B, c->block_size, NULL, NULL);
    dtr_result r3 = dtr__gpt_cuda_backward(gpu, 1.0f, NULL, NULL);
    check(r2 == DTR_OK && r3 == DTR_ERR_INVALID, "%-8s backward after a forward without targets refused: %s",
          what, dtr__gpt_cuda_last_error(gpu));
    dtr_result r4 = dtr__gpt_cuda_forward(gpu, in, tg, B + 1, c->block_size, NULL, NULL);
    check(r4 == DTR_ERR_INVALID, "%-8s batch above max_batch refused: %s", what,
          dtr__gpt_cuda_last_error(gpu));
  }
done:
  dtr__gpt_cuda_destroy(gpu);
  dtr__gpt_destroy(cpu);
  free(in);
  free(tg);
  free(lg_c);
  free(lg_g);
  free(gg);
  free(snap);
}

/* A few AdamW steps on one fixed batch: the GPU losses track the CPU's and fall. */
#define ADAM_STEPS 6
static void check_adamw(const cfgcase *cc, dtr_dtype dt) {
  const dtr__gpt_config *c = &cc->cfg;
  int B = cc->B, T = c->block_size, N = B * T;
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  dtr__gpt *cpu = make_cpu(cc, 11);
  dtr__gpt_cuda *gpu = cpu ? make_gpu(cc, cpu, dt) : NULL;
  size_t n = cpu ? dtr__gpt_num_params(cpu) : 0;
  int32_t *in = malloc((size_t)N * sizeof(int32_t)), *tg = malloc((size_t)N * sizeof(int32_t));
  uint8_t *mask = malloc(n ? n : 1);
  dtr_adamw opt = {0};
  if (!gpu || !in || !tg || !mask || dtr_adamw_init(&opt, n, b1, b2, eps, wd) != DTR_OK) {
    if (gpu) check(0, "%-5s %-8s adamw setup failed", dtname(dt), cc->name);
    goto done;
  }
  for (int i = 0; i < dtr__gpt_num_tensors(cpu); i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(cpu, i);
    memset(mask + t->offset, t->decay ? 1 : 0, t->count);
  }
  make_batch(in, tg, N, c->vocab_size);
  float lc[ADAM_STEPS], lg[ADAM_STEPS];
  double worst = 0.0;
  for (int s = 0; s < ADAM_STEPS; s++) {
    dtr__gpt_zero_grad(cpu);
    dtr_result rc = dtr__gpt_forward(cpu, in, tg, B, T, &lc[s], NULL);
    if (rc == DTR_OK) rc = dtr__gpt_backward(cpu, 1.0f, NULL, NULL);
    dtr_adamw_step(&opt, dtr__gpt_params(cpu), dtr__gpt_grads(cpu), mask, lr);
    dtr_cuda_adamw_hp hp = {.lr = (float)lr,
                            .beta1 = (float)b1,
                            .beta2 = (float)b2,
                            .eps = (float)eps,
                            .weight_decay = (float)wd,
                            .grad_scale = 1.0f,
                            .step = s + 1};
    dtr_result rg = dtr__gpt_cuda_zero_grad(gpu);
    if (rg == DTR_OK) rg = dtr__gpt_cuda_forward(gpu, in, tg, B, T, &lg[s], NULL);
    if (rg == DTR_OK) rg = dtr__gpt_cuda_backward(gpu, 1.0f, NULL, NULL);
    if (rg == DTR_OK) rg = dtr__gpt_cuda_adamw(gpu, &hp);
    if (rc != DTR_OK || rg != DTR_OK) {
      check(0, "%-5s %-8s adamw step %d: cpu %s, gpu %s (%s)", dtname(dt), cc->name, s + 1, dtr_strerror(rc),
            dtr_strerror(rg), dtr__gpt_cuda_last_error(gpu));
      goto done;
    }
    double rel = xabs((double)lg[s] - lc[s]) / lc[s];
    if (!(rel <= worst)) worst = rel; /* NaN sticks */
    printf("       %-5s %-8s adamw step %d: loss gpu %.6f cpu %.6f\n", dtname(dt), cc->name, s + 1, lg[s],
           lc[s]);
  }
  double tol = dt == DTR_F32 ? TOL_ADAM_F32 : TOL_ADAM_BF16;
  check(worst <= tol, "%-5s %-8s %d AdamW steps: GPU losses track the CPU's, worst rel diff %.2e (tol %.0e)",
        dtname(dt), cc->name, ADAM_STEPS, worst, tol);
  check(lg[ADAM_STEPS - 1] < lg[0] && lc[ADAM_STEPS - 1] < lc[0], "%-5s %-8s loss falls: gpu %.4f -> %.4f",
        dtname(dt), cc->name, lg[0], lg[ADAM_STEPS - 1]);
done:
  dtr_adamw_free(&opt);
  dtr__gpt_cuda_destroy(gpu);
  dtr__gpt_destroy(cpu);
  free(in);
  free(tg);
  free(mask);
}

/* ---- determinism: two models made from the same weights run the same micro-steps on the same batches
 * (token ids drawn from 3 values, so each used dwte row sums a third of the positions); every loss, all
 * gradients, the gradient sum of squares, and the weights and moments after an AdamW step must be
 * bit-identical between the two (memcmp), as two runs of a training job must be. */
static size_t first_diff(const void *a, const void *b, size_t n, size_t es) {
  size_t i = 0;
  while (i < n && memcmp((const char *)a + i * es, (const char *)b + i * es, es) == 0) i++;
  return i;
}

#define REPEAT_STEPS 2
static void check_repeat(const cfgcase *cc, dtr_dtype dt) {
  const dtr__gpt_config *c = &cc->cfg;
  int B = cc->B, T = c->block_size, N = B * T, V = c->vocab_size;
  dtr__gpt *cpu = make_cpu(cc, 5);
  size_t n = cpu ? dtr__gpt_num_params(cpu) : 0;
  int32_t *in = malloc((size_t)N * sizeof(int32_t)), *tg = malloc((size_t)N * sizeof(int32_t));
  float *grads[2] = {malloc((n ? n : 1) * sizeof(float)), malloc((n ? n : 1) * sizeof(float))};
  float *params[2] = {malloc((n ? n : 1) * sizeof(float)), malloc((n ? n : 1) * sizeof(float))};
  float *moments[2] = {malloc((n ? n : 1) * sizeof(float)), malloc((n ? n : 1) * sizeof(float))};
  float loss[2][REPEAT_STEPS + 1];
  double ss[2] = {0, 0};
  dtr__gpt_cuda *gpu = NULL;
  if (!cpu || !in || !tg || !grads[0] || !grads[1] || !params[0] || !params[1] || !moments[0] ||
      !moments[1]) {
    check(0, "%-5s %-8s repeat: out of host memory", dtname(dt), cc->name);
    goto done;
  }
  make_batch(in, tg, N, V);
  for (int i = 0; i < N; i++) in[i] = (int32_t)(next_u64() % 3); /* few ids, each at many positions */
  for (int run = 0; run < 2; run++) {
    gpu = make_gpu(cc, cpu, dt);
    if (!gpu) goto done;
    dtr_result rc = dtr__gpt_cuda_zero_grad(gpu);
    /* two accumulated micro-steps (full block, then a shorter T), as in check_pass */
    for (int s = 0; s < REPEAT_STEPS && rc == DTR_OK; s++) {
      int Ts = s == 0 || T < 4 ? T : T - 3;
      rc = dtr__gpt_cuda_forward(gpu, in, tg, B, Ts, &loss[run][s], NULL);
      if (rc == DTR_OK) rc = dtr__gpt_cuda_backward(gpu, 0.5f, NULL, NULL);
    }
    if (rc == DTR_OK) rc = dtr__gpt_cuda_get_grads(gpu, grads[run]);
    if (rc == DTR_OK) rc = dtr__gpt_cuda_grad_sumsq(gpu, &ss[run]);
    dtr_cuda_adamw_hp hp = {.lr = 1e-3f,
                            .beta1 = 0.9f,
                            .beta2 = 0.95f,
                            .eps = 1e-8f,
                            .weight_decay = 0.1f,
                            .grad_scale = 0.5f,
                            .step = 1};
    if (rc == DTR_OK) rc = dtr__gpt_cuda_adamw(gpu, &hp);
    if (rc == DTR_OK) rc = dtr__gpt_cuda_forward(gpu, in, tg, B, T, &loss[run][REPEAT_STEPS], NULL);
    if (rc == DTR_OK) rc = dtr__gpt_cuda_get_params(gpu, params[run]);
    if (rc == DTR_OK)
      rc = dtr__cuda_download(dtr__gpt_cuda_ctx(gpu), moments[run], dtr__gpt_cuda_adam_v_dev(gpu),
                              n * sizeof(float));
    if (rc != DTR_OK) {
      check(0, "%-5s %-8s repeat run %d: %s (%s)", dtname(dt), cc->name, run + 1, dtr_strerror(rc),
            dtr__gpt_cuda_last_error(gpu));
      goto done;
    }
    dtr__gpt_cuda_destroy(gpu);
    gpu = NULL;
  }
  size_t at = first_diff(loss[0], loss[1], REPEAT_STEPS + 1, sizeof(float));
  check(at == REPEAT_STEPS + 1, "%-5s %-8s repeat: %d losses bit-identical in two runs (%.9g, %.9g, %.9g)%s",
        dtname(dt), cc->name, REPEAT_STEPS + 1, loss[0][0], loss[0][1], loss[0][2],
        at <= REPEAT_STEPS ? " -- differ" : "");
  for (int i = 0; i < dtr__gpt_num_tensors(cpu); i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(cpu, i);
    at = first_diff(grads[0] + t->offset, grads[1] + t->offset, t->count, sizeof(float));
    check(at == t->count, "%-5s %-8s repeat: grads %-20s bit-identical in two runs%s", dtname(dt), cc->name,
          t->name, at == t->count ? "" : " -- they differ");
    if (at < t->count)
      printf("       first difference at [%zu]: %.9g vs %.9g\n", at, grads[0][t->offset + at],
             grads[1][t->offset + at]);
  }
  check(memcmp(&ss[0], &ss[1], sizeof ss[0]) == 0, "%-5s %-8s repeat: grad sumsq bit-identical (%.9g, %.9g)",
        dtname(dt), cc->name, ss[0], ss[1]);
  check(memcmp(params[0], params[1], n * sizeof(float)) == 0 &&
            memcmp(moments[0], moments[1], n * sizeof(float)) == 0,
        "%-5s %-8s repeat: weights and AdamW v after a step bit-identical", dtname(dt), cc->name);
done:
  dtr__gpt_cuda_destroy(gpu);
  dtr__gpt_destroy(cpu);
  free(in);
  free(tg);
  for (int k = 0; k < 2; k++) {
    free(grads[k]);
    free(params[k]);
    free(moments[k]);
  }
}

/* ---- speed: forward + backward + AdamW, tokens per second, bounded by count and time */
static double cpu_speed(const cfgcase *cc, const int32_t *in, const int32_t *tg) {
  int B = cc->B, T = cc->cfg.block_size;
  dtr__gpt *m = make_cpu(cc, 3);
  dtr_adamw opt = {0};
  double tps = 0.0;
  if (!m || dtr_adamw_init(&opt, dtr__gpt_num_params(m), 0.9, 0.95, 1e-8, 0.1) != DTR_OK) goto done;
  double t0 = 0.0;
  int it = 0;
  for (; it <= 20; it++) {
    if (it == 1) t0 = now_s(); /* the first iteration warms up */
    if (it > 1 && now_s() - t0 > 5.0) break;
    dtr__gpt_zero_grad(m);
    float loss;
    if (dtr__gpt_forward(m, in, tg, B, T, &loss, NULL) != DTR_OK ||
        dtr__gpt_backward(m, 1.0f, NULL, NULL) != DTR_OK)
      goto done;
    dtr_adamw_step(&opt, dtr__gpt_params(m), dtr__gpt_grads(m), NULL, 1e-4);
  }
  tps = (double)(it - 1) * B * T / (now_s() - t0);
done:
  dtr_adamw_free(&opt);
  dtr__gpt_destroy(m);
  return tps;
}

static double gpu_speed(const cfgcase *cc, dtr_dtype dt, const int32_t *in, const int32_t *tg) {
  int B = cc->B, T = cc->cfg.block_size;
  dtr__gpt *cpu = make_cpu(cc, 3);
  dtr__gpt_cuda *m = cpu ? make_gpu(cc, cpu, dt) : NULL;
  double tps = 0.0, t0 = 0.0;
  int it = 0;
  if (!m) goto done;
  for (; it <= 200; it++) {
    if (it == 3) { /* after warm-up (cuBLAS heuristics, scratch growth) */
      if (dtr__gpt_cuda_sync(m) != DTR_OK) goto fail;
      t0 = now_s();
    }
    if (it > 3 && it % 10 == 0 && now_s() - t0 > 5.0) break;
    dtr_cuda_adamw_hp hp = {.lr = 1e-4f,
                            .beta1 = 0.9f,
                            .beta2 = 0.95f,
                            .eps = 1e-8f,
                            .weight_decay = 0.1f,
                            .grad_scale = 1.0f,
                            .step = it + 1};
    if (dtr__gpt_cuda_zero_grad(m) != DTR_OK ||
        dtr__gpt_cuda_forward(m, in, tg, B, T, NULL, NULL) != DTR_OK ||
        dtr__gpt_cuda_backward(m, 1.0f, NULL, NULL) != DTR_OK || dtr__gpt_cuda_adamw(m, &hp) != DTR_OK)
      goto fail;
  }
  if (dtr__gpt_cuda_sync(m) != DTR_OK) goto fail;
  tps = (double)(it - 3) * B * T / (now_s() - t0);
  goto done;
fail:
  check(0, "%-5s %-8s timed loop: %s", dtname(dt), cc->name, dtr__gpt_cuda_last_error(m));
done:
  dtr__gpt_cuda_destroy(m);
  dtr__gpt_destroy(cpu);
  return tps;
}

static void speed(const cfgcase *cc) {
  int N = cc->B * cc->cfg.block_size;
  int32_t *in = malloc((size_t)N * sizeof(int32_t)), *tg = malloc((size_t)N * sizeof(int32_t));
  if (!in || !tg) {
    free(in);
    free(tg);
    return;
  }
  make_batch(in, tg, N, cc->cfg.vocab_size);
  double c = cpu_speed(cc, in, tg), f = gpu_speed(cc, DTR_F32, in, tg), b = gpu_speed(cc, DTR_BF16, in, tg);
  printf(
      "speed %-8s V=%d T=%d L=%d C=%d NH=%d B=%d (fwd+bwd+AdamW): cpu (%d threads) %.0f tok/s, gpu f32 %.0f "
      "tok/s (%.1fx), gpu bf16 %.0f tok/s (%.1fx)\n",
      cc->name, cc->cfg.vocab_size, cc->cfg.block_size, cc->cfg.n_layer, cc->cfg.n_embd, cc->cfg.n_head,
      cc->B, g_threads, c, f, c > 0 ? f / c : 0.0, b, c > 0 ? b / c : 0.0);
  free(in);
  free(tg);
}

/* Without a usable GPU, create must still refuse cleanly: a bad config first (naming the field), then
 * DTR_ERR_UNSUPPORTED with *out NULL and a reason. */
static int no_gpu(int has_cuda) {
  const cfgcase tiny = {
      "gpt-tiny", {.vocab_size = 14, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 64}, 4};
  dtr__gpt *cpu = make_cpu(&tiny, 1);
  if (!cpu) return 1;
  char err[512] = "";
  dtr__gpt_cuda *g = (dtr__gpt_cuda *)&err; /* must be reset to NULL */
  dtr__gpt_config bad = tiny.cfg;
  bad.n_head = 5;
  dtr_result rc = dtr__gpt_cuda_create(&bad, dtr__gpt_params(cpu), dtr__gpt_num_params(cpu), 0, DTR_BF16, 4,
                                       &g, err, sizeof err);
  check(rc == DTR_ERR_INVALID && g == NULL && strstr(err, "n_head"), "bad config refused: %s", err);
  g = (dtr__gpt_cuda *)&err;
  err[0] = 0;
  rc = dtr__gpt_cuda_create(&tiny.cfg, dtr__gpt_params(cpu), dtr__gpt_num_params(cpu), 0, DTR_F32, 4, &g, err,
                            sizeof err);
  check(rc == DTR_ERR_UNSUPPORTED && g == NULL && err[0], "create without a GPU: %s (%s)", dtr_strerror(rc),
        err);
  if (rc == DTR_OK && g != (dtr__gpt_cuda *)&err) dtr__gpt_cuda_destroy(g);
  dtr__gpt_destroy(cpu);
  if (g_failed) return 1;
  printf("gpt_cuda_check: skipped: %s (create: %s)\n",
         has_cuda ? "no CUDA device visible" : "this build has no CUDA", err);
  return 77;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  g_threads = ncpu < 1 ? 1 : ncpu > 8 ? 8 : (int)ncpu;
  int has_cuda = strstr(dtr_build_features(), "cuda") != NULL;
  if (!has_cuda || dtr__cuda_device_count() < 1) return no_gpu(has_cuda);

  const cfgcase cases[] = {
      {"gpt-tiny", {.vocab_size = 14, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 64}, 4},
      {"odd", {.vocab_size = 97, .block_size = 37, .n_layer = 2, .n_head = 3, .n_embd = 48}, 3},
      {"larger", {.vocab_size = 256, .block_size = 128, .n_layer = 4, .n_head = 8, .n_embd = 256}, 2},
  };
  const dtr_dtype dts[] = {DTR_F32, DTR_BF16};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (size_t d = 0; d < 2; d++) check_pass(&cases[i], dts[d]);
  for (size_t d = 0; d < 2; d++) check_adamw(&cases[0], dts[d]);
  for (size_t d = 0; d < 2; d++) check_adamw(&cases[1], dts[d]);
  /* determinism: a batch of 8 x 128 rows spreads the reductions over many blocks */
  const cfgcase rep[] = {
      {"odd", {.vocab_size = 97, .block_size = 37, .n_layer = 2, .n_head = 3, .n_embd = 48}, 3},
      {"larger", {.vocab_size = 256, .block_size = 128, .n_layer = 4, .n_head = 8, .n_embd = 256}, 8},
  };
  for (size_t i = 0; i < sizeof rep / sizeof rep[0]; i++)
    for (size_t d = 0; d < 2; d++) check_repeat(&rep[i], dts[d]);
  if (!g_failed) {
    const cfgcase timed[] = {
        {"gpt-tiny", {.vocab_size = 14, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 64}, 32},
        {"larger", {.vocab_size = 256, .block_size = 128, .n_layer = 4, .n_head = 8, .n_embd = 256}, 8},
    };
    for (size_t i = 0; i < 2; i++) speed(&timed[i]);
  }
  printf("gpt_cuda_check: %d checks, %d failed\n", g_checks, g_failed);
  return g_failed ? 1 : 0;
}
