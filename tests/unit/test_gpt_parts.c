/* The reference GPT cut into pipeline parts on one process (tp 1): every part's initial parameters are
 * bit for bit its tensors of the whole model's; a chain of stages (and of interleaved chunks) run by
 * hand — each stage's output fed to the next, gradients back — gives the whole model's loss and every
 * parameter gradient bit for bit, except the tied embedding, whose two copies' gradients add up to the
 * whole model's within rounding; micro-batches in different slots do not disturb each other; bad
 * parts are refused naming the field. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model/gpt.h"
#include "tests/unit/test_util.h"

static const dtr__gpt_config CFG = {16, 8, 4, 4, 32}; /* vocab, block, layers, heads, embd */
enum { B = 3, T = 8, N = B * T };

static void batch(int32_t *x, int32_t *y, int k) {
  for (int i = 0; i < N; i++) {
    x[i] = (int32_t)((i * 5 + k * 3 + 1) % CFG.vocab_size);
    y[i] = i % 7 == 0 ? -1 : (int32_t)((i * 3 + k) % CFG.vocab_size);
  }
}

static const float *tensor_of(dtr__gpt *m, const char *name, int grads, const dtr__gpt_param **p) {
  for (int i = 0; i < dtr__gpt_num_tensors(m); i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(m, i);
    if (strcmp(t->name, name) == 0) {
      if (p) *p = t;
      return (grads ? dtr__gpt_grads(m) : dtr__gpt_params(m)) + t->offset;
    }
  }
  return NULL;
}

/* Every tensor of part equals the whole model's of the same name: bit for bit (exact), or within
 * tol of the tensor's largest value. Returns the number of tensors compared. */
static int same_as_whole(dtr__gpt *whole, dtr__gpt *part, int grads, double tol, const char *skip) {
  int n = 0;
  for (int i = 0; i < dtr__gpt_num_tensors(part); i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(part, i);
    if (skip && strcmp(t->name, skip) == 0) continue;
    const float *a = (grads ? dtr__gpt_grads(part) : dtr__gpt_params(part)) + t->offset;
    const float *b = tensor_of(whole, t->name, grads, NULL);
    CHECK(b != NULL);
    if (!b) continue;
    n++;
    if (tol == 0) {
      int eq = memcmp(a, b, t->count * sizeof(float)) == 0;
      if (!eq) fprintf(stderr, "  %s %s differs\n", t->name, grads ? "gradient" : "parameter");
      CHECK(eq);
    } else {
      double mx = 0, d = 0;
      for (size_t k = 0; k < t->count; k++) mx = fmax(mx, fabs(b[k])), d = fmax(d, fabs(a[k] - b[k]));
      if (d > tol * mx) fprintf(stderr, "  %s: differs by %g (max %g)\n", t->name, d, mx);
      CHECK(d <= tol * mx);
    }
  }
  return n;
}

static dtr__gpt *make(const dtr__gpt_part *p) {
  char err[256] = "";
  dtr__gpt *m = NULL;
  dtr_result rc = dtr__gpt_create_part(&CFG, p, 1234, 1, B, &m, err, sizeof err);
  if (rc != DTR_OK) fprintf(stderr, "  create: %s\n", err);
  CHECK_EQ_INT(rc, DTR_OK);
  return m;
}

static dtr__gpt_part stage(int l0, int l1, int first, int last, int slots) {
  dtr__gpt_part p;
  memset(&p, 0, sizeof p);
  p.nchunks = 1;
  p.layer_begin[0] = l0, p.layer_end[0] = l1;
  p.first = first, p.last = last, p.slots = slots;
  return p;
}

/* Two stages (layers 0-1 and 2-3), two micro-batches in two slots each (forwards of both before either
 * backward: gpipe), against the whole model accumulating the same micro-batches. */
static void two_stages(void) {
  char err[256];
  dtr__gpt *whole = NULL;
  CHECK_EQ_INT(dtr__gpt_create(&CFG, 1234, 1, B, &whole, err, sizeof err), DTR_OK);
  dtr__gpt_part pa = stage(0, 2, 1, 0, 2), pb = stage(2, 4, 0, 1, 2);
  dtr__gpt *a = make(&pa), *b = make(&pb);
  if (!whole || !a || !b) return;
  CHECK(same_as_whole(whole, a, 0, 0, NULL) == 2 + 24);
  CHECK(same_as_whole(whole, b, 0, 0, NULL) == 1 + 24 + 2);
  const dtr__gpt_param *tw;
  tensor_of(b, "wte", 0, &tw);
  CHECK(tw->tied == 1);
  tensor_of(a, "wte", 0, &tw);
  CHECK(tw->tied == 0);

  int32_t x[2][N], y[2][N];
  float act[2][N * 32], dact[N * 32], lw[2], ls[2];
  for (int k = 0; k < 2; k++) {
    batch(x[k], y[k], k);
    CHECK_EQ_INT(dtr__gpt_forward(whole, x[k], y[k], B, T, &lw[k], NULL), DTR_OK);
    CHECK_EQ_INT(dtr__gpt_backward(whole, 0.5f, NULL, NULL), DTR_OK);
  }
  for (int k = 0; k < 2; k++) {
    CHECK_EQ_INT(dtr__gpt_forward_chunk(a, 0, k, x[k], NULL, NULL, B, T, act[k], NULL), DTR_OK);
    CHECK_EQ_INT(dtr__gpt_forward_chunk(b, 0, k, NULL, act[k], y[k], B, T, NULL, &ls[k]), DTR_OK);
  }
  for (int k = 0; k < 2; k++) {
    CHECK_EQ_INT(dtr__gpt_backward_chunk(b, 0, k, 0.5f, NULL, dact, NULL, NULL), DTR_OK);
    CHECK_EQ_INT(dtr__gpt_backward_chunk(a, 0, k, 0.5f, dact, NULL, NULL, NULL), DTR_OK);
    CHECK(memcmp(&lw[k], &ls[k], sizeof(float)) == 0);
  }
  same_as_whole(whole, a, 1, 0, "wte");
  same_as_whole(whole, b, 1, 0, "wte");
  /* the two copies of the tied embedding add up to the whole model's gradient */
  const dtr__gpt_param *t;
  const float *ga = tensor_of(a, "wte", 1, &t), *gb = tensor_of(b, "wte", 1, NULL),
              *gw = tensor_of(whole, "wte", 1, NULL);
  double mx = 0, d = 0;
  for (size_t i = 0; i < t->count; i++) mx = fmax(mx, fabs(gw[i])), d = fmax(d, fabs(ga[i] + gb[i] - gw[i]));
  CHECK(d <= 1e-6 * mx);
  /* a second backward of a freed slot is refused */
  CHECK_EQ_INT(dtr__gpt_backward_chunk(a, 0, 0, 0.5f, dact, NULL, NULL, NULL), DTR_ERR_INVALID);
  dtr__gpt_destroy(a), dtr__gpt_destroy(b), dtr__gpt_destroy(whole);
}

/* Interleaved chunks: 2 stages x 2 chunks of one layer; stage 0 holds layers 0 and 2, stage 1 layers 1
 * and 3; a micro-batch goes 0 -> 1 -> 0 -> 1 and back. */
static void interleaved(void) {
  char err[256];
  dtr__gpt *whole = NULL;
  CHECK_EQ_INT(dtr__gpt_create(&CFG, 1234, 1, B, &whole, err, sizeof err), DTR_OK);
  dtr__gpt_part p0 = stage(0, 1, 1, 0, 2), p1 = stage(1, 2, 0, 1, 2);
  p0.nchunks = p1.nchunks = 2;
  p0.layer_begin[1] = 2, p0.layer_end[1] = 3;
  p1.layer_begin[1] = 3, p1.layer_end[1] = 4;
  dtr__gpt *s0 = make(&p0), *s1 = make(&p1);
  if (!whole || !s0 || !s1) return;
  CHECK(same_as_whole(whole, s0, 0, 0, NULL) == 2 + 24);
  CHECK(same_as_whole(whole, s1, 0, 0, NULL) == 1 + 24 + 2);
  int32_t x[N], y[N];
  batch(x, y, 5);
  static float h1[N * 32], h2[N * 32], h3[N * 32], d1[N * 32], d2[N * 32], d3[N * 32];
  float lw, ls;
  CHECK_EQ_INT(dtr__gpt_forward(whole, x, y, B, T, &lw, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_backward(whole, 1.0f, NULL, NULL), DTR_OK);
  /* chunk c in slot c: each (micro-batch, chunk) in flight holds its own slot */
  CHECK_EQ_INT(dtr__gpt_forward_chunk(s0, 0, 0, x, NULL, NULL, B, T, h1, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_forward_chunk(s1, 0, 0, NULL, h1, NULL, B, T, h2, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_forward_chunk(s0, 1, 1, NULL, h2, NULL, B, T, h3, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_forward_chunk(s1, 1, 1, NULL, h3, y, B, T, NULL, &ls), DTR_OK);
  CHECK(memcmp(&lw, &ls, sizeof lw) == 0);
  /* the slot of chunk 0 is not the one chunk 1's backward may use */
  CHECK_EQ_INT(dtr__gpt_backward_chunk(s1, 1, 0, 1.0f, NULL, d3, NULL, NULL), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr__gpt_backward_chunk(s1, 1, 1, 1.0f, NULL, d3, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_backward_chunk(s0, 1, 1, 1.0f, d3, d2, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_backward_chunk(s1, 0, 0, 1.0f, d2, d1, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__gpt_backward_chunk(s0, 0, 0, 1.0f, d1, NULL, NULL, NULL), DTR_OK);
  CHECK(same_as_whole(whole, s0, 1, 0, "wte") == 1 + 24);
  CHECK(same_as_whole(whole, s1, 1, 0, "wte") == 24 + 2);
  dtr__gpt_destroy(s0), dtr__gpt_destroy(s1), dtr__gpt_destroy(whole);
}

static void refused(const char *needle, dtr__gpt_part p) {
  char err[256] = "";
  dtr__gpt *m = NULL;
  CHECK_EQ_INT(dtr__gpt_create_part(&CFG, &p, 1, 1, B, &m, err, sizeof err), DTR_ERR_INVALID);
  if (!strstr(err, needle)) fprintf(stderr, "  '%s' lacks '%s'\n", err, needle);
  CHECK(strstr(err, needle) != NULL);
  CHECK(m == NULL);
}

int main(void) {
  two_stages();
  interleaved();
  refused("chunk 0 holds layers [2, 2)", stage(2, 2, 1, 1, 1));
  refused("chunk 0 holds layers [0, 5)", stage(0, 5, 1, 1, 1));
  refused("activation slots", stage(0, 4, 1, 1, 0));
  return TEST_EXIT();
}
