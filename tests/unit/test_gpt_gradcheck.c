/* The reference GPT's gradients against central finite differences on a tiny config (a sample of
 * entries from every parameter tensor), plus what the trainer relies on: gradient accumulation by
 * adding, the ready-callback order and coverage, -1 targets, determinism, and input checks.
 * Tolerance: |analytic - numeric| <= 2e-3 * max(|analytic|, |numeric|) + 5e-5 (fp32 loss, eps 1e-2). */
// ctest-labels: model
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model/gpt.h"
#include "tests/unit/test_util.h"

#define B 3
#define T 7

static const dtr__gpt_config cfg = {
    .vocab_size = 11, .block_size = 8, .n_layer = 2, .n_head = 2, .n_embd = 8};
static int32_t inputs[B * T], targets[B * T];

/* unit tests do not link libm: the few functions needed, in double */
static double dabs(double x) {
  return x < 0 ? -x : x;
}
static double dmax(double a, double b) {
  return a > b ? a : b;
}
static double dexp(double x) { /* x = k ln2 + r, |r| <= ln2/2; Taylor on r */
  int k = (int)(x / 0.6931471805599453 + (x < 0 ? -0.5 : 0.5));
  double r = x - k * 0.6931471805599453, term = 1, sum = 1;
  for (int i = 1; i < 25; i++) sum += (term *= r / i);
  for (; k > 0; k--) sum *= 2;
  for (; k < 0; k++) sum *= 0.5;
  return sum;
}
static double dlog(double y) { /* Halley iterations on dexp(z) = y */
  double z = 0;
  for (int i = 0; i < 100; i++) {
    double e = dexp(z), step = 2 * (y - e) / (y + e);
    z += step;
    if (dabs(step) < 1e-15) break;
  }
  return z;
}

static uint64_t rng = 12345;
static double urand(void) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static dtr__gpt *make(int threads) {
  dtr__gpt *m = NULL;
  char err[256] = "";
  dtr_result rc = dtr__gpt_create(&cfg, 7, threads, B, &m, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "create: %s\n", err);
    exit(1);
  }
  /* larger weights than the 0.02 init, so every path carries a gradient well above fp32 noise */
  float *p = dtr__gpt_params(m);
  rng = 99;
  for (size_t i = 0; i < dtr__gpt_num_params(m); i++) p[i] += (float)(urand() - 0.5) * 0.6f;
  return m;
}

static float loss_of(dtr__gpt *m) {
  float loss = -1.0f;
  CHECK(dtr__gpt_forward(m, inputs, targets, B, T, &loss, NULL) == DTR_OK);
  return loss;
}

/* ---- finite differences */
static void test_gradcheck(void) {
  dtr__gpt *m = make(1);
  size_t n = dtr__gpt_num_params(m);
  dtr__gpt_zero_grad(m);
  loss_of(m);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_OK);
  float *g = malloc(n * sizeof(float));
  memcpy(g, dtr__gpt_grads(m), n * sizeof(float));
  float *p = dtr__gpt_params(m);
  const float eps = 1e-2f;
  int checked = 0, bad = 0;
  double worst = 0;
  for (int ti = 0; ti < dtr__gpt_num_tensors(m); ti++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(m, ti);
    int nonzero = 0;
    for (int s = 0; s < 6; s++) {
      size_t k = t->offset + (s == 0 ? 0 : s == 1 ? t->count - 1 : (size_t)(urand() * t->count));
      float orig = p[k];
      p[k] = orig + eps;
      double lp = loss_of(m);
      p[k] = orig - eps;
      double lm = loss_of(m);
      p[k] = orig;
      double num = (lp - lm) / (2.0 * eps), ana = g[k];
      double err = dabs(num - ana), tol = 2e-3 * dmax(dabs(num), dabs(ana)) + 5e-5;
      worst = dmax(worst, err / tol);
      nonzero += dabs(ana) > 1e-3;
      checked++;
      if (err > tol) {
        bad++;
        fprintf(stderr, "gradcheck %s[%zu]: analytic %.6g numeric %.6g\n", t->name, k - t->offset, ana, num);
      }
    }
    /* wte rows of unused tokens and unused wpe rows are legitimately 0; elsewhere a zero sample is
     * suspicious: check that at least one sampled entry of each tensor carries gradient */
    if (strcmp(t->name, "wpe") != 0 && strcmp(t->name, "wte") != 0 && !nonzero)
      fprintf(stderr, "gradcheck %s: all sampled gradients ~0\n", t->name), bad++;
  }
  printf("gradcheck: %d entries over %d tensors, worst err/tol %.3f\n", checked, dtr__gpt_num_tensors(m),
         worst);
  CHECK(bad == 0);
  CHECK(checked == 6 * dtr__gpt_num_tensors(m));
  free(g);
  dtr__gpt_destroy(m);
}

/* ---- loss value against the returned logits (double precision reference), -1 positions ignored */
static void test_loss_and_ignore(void) {
  dtr__gpt *m = make(2);
  int V = cfg.vocab_size;
  float *logits = malloc((size_t)B * T * V * sizeof(float));
  float loss = 0;
  CHECK(dtr__gpt_forward(m, inputs, targets, B, T, &loss, logits) == DTR_OK);
  double sum = 0;
  int scored = 0;
  for (int i = 0; i < B * T; i++) {
    if (targets[i] < 0) continue;
    const float *z = logits + (size_t)i * V;
    double mx = z[0], s = 0;
    for (int v = 1; v < V; v++) mx = dmax(mx, z[v]);
    for (int v = 0; v < V; v++) s += dexp(z[v] - mx);
    sum += -(z[targets[i]] - mx - dlog(s));
    scored++;
  }
  CHECK(scored > 0 && scored < B * T);
  CHECK(dabs(sum / scored - loss) <= 1e-5 * dabs(loss));

  /* all targets -1: loss 0 and no gradient at all */
  int32_t none[B * T];
  for (int i = 0; i < B * T; i++) none[i] = -1;
  dtr__gpt_zero_grad(m);
  CHECK(dtr__gpt_forward(m, inputs, none, B, T, &loss, NULL) == DTR_OK);
  CHECK(loss == 0.0f);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_OK);
  int nz = 0;
  for (size_t i = 0; i < dtr__gpt_num_params(m); i++) nz += dtr__gpt_grads(m)[i] != 0.0f;
  CHECK_EQ_INT(nz, 0);

  /* greedy generation equals the argmax of the forward's last logits */
  int32_t out[2];
  CHECK(dtr__gpt_generate(m, inputs, 4, 2, out) == DTR_OK);
  CHECK(dtr__gpt_forward(m, inputs, NULL, 1, 4, NULL, logits) == DTR_OK);
  int best = 0;
  for (int v = 1; v < V; v++)
    if (logits[3 * V + v] > logits[3 * V + best]) best = v;
  CHECK_EQ_INT(out[0], best);
  free(logits);
  dtr__gpt_destroy(m);
}

/* max |a - b| over max |b| */
static double max_rel_diff(const float *a, const float *b, size_t n) {
  double md = 0, mx = 0;
  for (size_t i = 0; i < n; i++) {
    md = dmax(md, dabs((double)a[i] - b[i]));
    mx = dmax(mx, dabs(b[i]));
  }
  printf("max diff %.3g of max %.3g\n", md, mx);
  return mx > 0 ? md / mx : md;
}

/* ---- accumulation: two half-scaled backwards equal one; batches add */
static void test_accumulation(void) {
  dtr__gpt *m = make(2);
  size_t n = dtr__gpt_num_params(m);
  float *g1 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
  dtr__gpt_zero_grad(m);
  loss_of(m);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_OK);
  memcpy(g1, dtr__gpt_grads(m), n * sizeof(float));
  dtr__gpt_zero_grad(m);
  for (int k = 0; k < 2; k++) {
    loss_of(m);
    CHECK(dtr__gpt_backward(m, 0.5f, NULL, NULL) == DTR_OK);
  }
  /* accumulating into a non-zero buffer rounds differently from one pass: compare against the largest
   * gradient, not element-wise */
  CHECK(max_rel_diff(dtr__gpt_grads(m), g1, n) <= 1e-6);

  /* different batches add: grad(b1..2) then grad(b0) into the same buffer equals their separate sum */
  dtr__gpt_zero_grad(m);
  float l;
  CHECK(dtr__gpt_forward(m, inputs, targets, 1, T, &l, NULL) == DTR_OK);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_OK);
  memcpy(g2, dtr__gpt_grads(m), n * sizeof(float));
  dtr__gpt_zero_grad(m);
  CHECK(dtr__gpt_forward(m, inputs + T, targets + T, 2, T, &l, NULL) == DTR_OK);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_OK);
  for (size_t i = 0; i < n; i++) g2[i] += dtr__gpt_grads(m)[i];
  CHECK(dtr__gpt_forward(m, inputs, targets, 1, T, &l, NULL) == DTR_OK);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_OK); /* adds onto the second part */
  CHECK(max_rel_diff(dtr__gpt_grads(m), g2, n) <= 1e-6);
  free(g1);
  free(g2);
  dtr__gpt_destroy(m);
}

/* ---- ready callbacks: from the end towards the start, contiguous, covering everything, final */
typedef struct {
  dtr__gpt *m;
  size_t next_end; /* the next range must end here */
  int calls, order_bad, fail_at;
  float *snap;
} ready_state;

static dtr_result on_ready(void *arg, size_t off, size_t count) {
  ready_state *s = arg;
  if (s->calls++ == s->fail_at) return DTR_ERR_ABORTED;
  if (off + count != s->next_end || count == 0) s->order_bad++;
  s->next_end = off;
  memcpy(s->snap + off, dtr__gpt_grads(s->m) + off, count * sizeof(float));
  return DTR_OK;
}

static void test_ready(void) {
  dtr__gpt *m = make(2);
  size_t n = dtr__gpt_num_params(m);
  ready_state s = {.m = m, .next_end = n, .fail_at = -1, .snap = calloc(n, sizeof(float))};
  dtr__gpt_zero_grad(m);
  loss_of(m);
  CHECK(dtr__gpt_backward(m, 1.0f, on_ready, &s) == DTR_OK);
  CHECK_EQ_INT(s.calls, cfg.n_layer + 2); /* lnf, each layer, embeddings */
  CHECK_EQ_INT(s.order_bad, 0);
  CHECK_EQ_INT(s.next_end, 0);
  CHECK(memcmp(s.snap, dtr__gpt_grads(m), n * sizeof(float)) == 0); /* nothing changed after its report */
  /* a failing callback stops backward with its code */
  ready_state f = {.m = m, .next_end = n, .fail_at = 1, .snap = s.snap};
  loss_of(m);
  CHECK(dtr__gpt_backward(m, 1.0f, on_ready, &f) == DTR_ERR_ABORTED);
  free(s.snap);
  dtr__gpt_destroy(m);
}

/* ---- determinism for a fixed thread count; 1 and 2 threads agree closely. A config big enough that
 * every kernel actually splits its work over 2 threads (the tiny one stays on one). */
static void test_determinism(void) {
  const dtr__gpt_config big = {.vocab_size = 128, .block_size = 64, .n_layer = 1, .n_head = 4, .n_embd = 128};
  enum { BB = 8, TT = 64 };
  static int32_t in[BB * TT], tg[BB * TT];
  for (int i = 0; i < BB * TT; i++) {
    in[i] = (int32_t)(urand() * big.vocab_size);
    tg[i] = i % 7 == 0 ? -1 : (int32_t)(urand() * big.vocab_size);
  }
  dtr__gpt *ms[3] = {NULL, NULL, NULL};
  const int threads[3] = {2, 2, 1};
  char err[256];
  float loss[3];
  for (int i = 0; i < 3; i++) {
    CHECK(dtr__gpt_create(&big, 11, threads[i], BB, &ms[i], err, sizeof err) == DTR_OK);
    if (!ms[i]) return;
    dtr__gpt_zero_grad(ms[i]);
    CHECK(dtr__gpt_forward(ms[i], in, tg, BB, TT, &loss[i], NULL) == DTR_OK);
    CHECK(dtr__gpt_backward(ms[i], 1.0f, NULL, NULL) == DTR_OK);
  }
  size_t n = dtr__gpt_num_params(ms[0]);
  CHECK(loss[0] == loss[1]);
  CHECK(memcmp(dtr__gpt_grads(ms[0]), dtr__gpt_grads(ms[1]), n * sizeof(float)) == 0);
  CHECK(dabs(loss[0] - loss[2]) <= 1e-6f * loss[2]);
  CHECK(max_rel_diff(dtr__gpt_grads(ms[0]), dtr__gpt_grads(ms[2]), n) <= 1e-5);
  for (int i = 0; i < 3; i++) dtr__gpt_destroy(ms[i]);
}

/* ---- the parameter table */
static void test_table(void) {
  dtr__gpt *m = make(1);
  int C = cfg.n_embd;
  CHECK_EQ_INT(dtr__gpt_num_tensors(m), 2 + 12 * cfg.n_layer + 2);
  CHECK_EQ_STR(dtr__gpt_tensor(m, 0)->name, "wte");
  CHECK_EQ_STR(dtr__gpt_tensor(m, 4)->name, "h.0.attn.qkv.w");
  CHECK_EQ_INT(dtr__gpt_tensor(m, 4)->shape[0], 3 * C);
  CHECK_EQ_INT(dtr__gpt_tensor(m, 4)->decay, 1);
  CHECK_EQ_INT(dtr__gpt_tensor(m, 5)->decay, 0);
  CHECK_EQ_STR(dtr__gpt_tensor(m, 2 + 12 + 11)->name, "h.1.mlp.proj.b");
  CHECK_EQ_STR(dtr__gpt_tensor(m, dtr__gpt_num_tensors(m) - 1)->name, "lnf.b");
  size_t off = 0;
  for (int i = 0; i < dtr__gpt_num_tensors(m); i++) {
    CHECK_EQ_INT(dtr__gpt_tensor(m, i)->offset, off);
    off += dtr__gpt_tensor(m, i)->count;
  }
  CHECK_EQ_INT(off, dtr__gpt_num_params(m));
  size_t expect =
      (size_t)(cfg.vocab_size + cfg.block_size) * C + 2 * C + (size_t)cfg.n_layer * (12 * C * C + 13 * C);
  CHECK_EQ_INT(dtr__gpt_num_params(m), expect);
  CHECK(dtr__gpt_tensor(m, -1) == NULL && dtr__gpt_tensor(m, dtr__gpt_num_tensors(m)) == NULL);
  dtr__gpt_destroy(m);
  /* the same seed gives the same weights */
  dtr__gpt *x = NULL, *y = NULL;
  char err[128];
  CHECK(dtr__gpt_create(&cfg, 5, 1, 1, &x, err, sizeof err) == DTR_OK);
  CHECK(dtr__gpt_create(&cfg, 5, 1, 1, &y, err, sizeof err) == DTR_OK);
  CHECK(memcmp(dtr__gpt_params(x), dtr__gpt_params(y), dtr__gpt_num_params(x) * sizeof(float)) == 0);
  dtr__gpt_destroy(x);
  dtr__gpt_destroy(y);
}

/* ---- bad input */
static void test_errors(void) {
  char err[256] = "";
  dtr__gpt *m = NULL;
  dtr__gpt_config bad = cfg;
  bad.n_head = 3;
  CHECK(dtr__gpt_create(&bad, 1, 1, 1, &m, err, sizeof err) == DTR_ERR_INVALID && m == NULL);
  CHECK(strstr(err, "n_head") != NULL);
  bad = cfg;
  bad.vocab_size = 0;
  CHECK(dtr__gpt_create(&bad, 1, 1, 1, &m, err, sizeof err) == DTR_ERR_INVALID);
  CHECK(strstr(err, "vocab_size") != NULL);
  m = make(1);
  int32_t in[B * T];
  memcpy(in, inputs, sizeof in);
  in[5] = cfg.vocab_size;
  float l;
  CHECK(dtr__gpt_forward(m, in, targets, B, T, &l, NULL) == DTR_ERR_INVALID);
  CHECK(dtr__gpt_forward(m, inputs, targets, B + 1, T, &l, NULL) == DTR_ERR_INVALID);
  CHECK(dtr__gpt_forward(m, inputs, targets, B, cfg.block_size + 1, &l, NULL) == DTR_ERR_INVALID);
  CHECK(dtr__gpt_forward(m, inputs, NULL, B, T, &l, NULL) == DTR_OK);
  CHECK(dtr__gpt_backward(m, 1.0f, NULL, NULL) == DTR_ERR_INVALID); /* no targets */
  dtr__gpt_destroy(m);
  dtr__gpt_destroy(NULL);
}

int main(void) {
  for (int i = 0; i < B * T; i++) {
    inputs[i] = (int32_t)(urand() * cfg.vocab_size);
    targets[i] = (i % 5 == 2) ? -1 : (int32_t)(urand() * cfg.vocab_size);
  }
  test_table();
  test_gradcheck();
  test_loss_and_ignore();
  test_accumulation();
  test_ready();
  test_determinism();
  test_errors();
  return TEST_EXIT();
}
