/* tp_check — the tensor-parallel blocks of include/dtrain/parallel.h against the unsplit layers, run as
 * each rank under `dtrain launch` (the world is the tp group). Every rank builds the same seeded full
 * weights and inputs, computes the unsplit reference with tp 1 (no communicator), takes its own slices
 * and runs the split block; then:
 *   - f and g on exact integers: the sum over ranks, bit for bit;
 *   - column- and row-parallel linear: forward output and every gradient (input, weight, bias) against the
 *     matching slice of the unsplit layer's;
 *   - attention with heads split and the MLP with the hidden width split: output, input gradient and the
 *     slices of every parameter gradient;
 *   - vocabulary-parallel embedding (forward, dwte rows, dwpe) and cross-entropy (losses, probabilities,
 *     dlogits) against the full-vocabulary kernels;
 *   - the model's initialisation: every tensor of this rank's tp slice of a GPT equals the matching slice of
 *     the whole model initialised from the same seed, bit for bit.
 * Tolerance: |split - unsplit| <= 2e-5 x max|unsplit| + 1e-6 for each compared tensor (a sum split over
 * ranks adds in another order; measured errors are printed). Prints "tp_check rank R: N checks ok, largest
 * relative error E" or "tp_check rank R: FAILED: what".
 * --cuda: the split side runs on this rank's GPU (device LOCAL_RANK, an nccl tp group, the CUDA kernels):
 * its inputs are copied to the device and its outputs back, the reference stays on the host; exits 77 with
 * "tp_check rank R: skipped: why" when the build has no CUDA or fewer GPUs than ranks are visible. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/device.h"
#include "dtrain/comm.h"
#include "dtrain/parallel.h"
#include "dtrain/store.h"
#include "runtime/model/gpt.h"
#include "runtime/model/kernels_cuda.h"
#include "tests/helpers/time_limit.h"

static int g_rank, g_checks;
static double g_worst;

static int fail(const char *what) {
  printf("tp_check rank %d: FAILED: %s\n", g_rank, what);
  fflush(stdout);
  exit(1);
}

static uint64_t g_seed = 0x243f6a8885a308d3ull;
static float rnd(void) {
  g_seed ^= g_seed << 13, g_seed ^= g_seed >> 7, g_seed ^= g_seed << 17;
  return (float)((double)(g_seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *randv(size_t n, float scale) {
  float *p = malloc(n * sizeof *p + 16);
  if (!p) fail("out of memory");
  for (size_t i = 0; i < n; i++) p[i] = rnd() * scale;
  return p;
}
static float *zeros(size_t n) {
  float *p = calloc(n + 4, sizeof *p);
  if (!p) fail("out of memory");
  return p;
}

/* --cuda: the split side's buffers live on the device. to_dev gives the device copy of a host buffer (the
 * host buffer itself without --cuda), to_host copies a device result back into its host buffer after the
 * blocks' work is done: to_dev, to_devi and to_host. */
static int g_cuda, g_ndev;
static void *g_dev[512];
static dtr_tp *g_tp;
static void *dev_copy(const void *h, size_t bytes) {
  if (!g_cuda) return (void *)h;
  void *d = NULL;
  if (g_ndev == 512 || dtr__cuda_device_alloc(dtr_comm_cuda_device(g_tp->comm), bytes, &d) != DTR_OK ||
      dtr__cuda_memcpy(d, h, bytes) != DTR_OK)
    fail("device copy");
  return g_dev[g_ndev++] = d;
}
static float *to_dev(const float *h, size_t n) {
  return dev_copy(h, n * sizeof(float));
}
static const int32_t *to_devi(const int32_t *h, size_t n) {
  return dev_copy(h, n * sizeof(int32_t));
}
static void to_host(float *h, const float *d, size_t n) {
  if (!g_cuda) return;
  if (dtr_tp_sync(g_tp) != DTR_OK || dtr__cuda_memcpy(h, d, n * sizeof(float)) != DTR_OK) fail("copy back");
}
static void free_dev(void) {
  for (int i = 0; i < g_ndev; i++) dtr__cuda_device_free(g_dev[i]);
  g_ndev = 0;
}

/* got[r, c] (rows x gcols, this rank's) against want[r, c0 + c] (rows x wcols) */
static void near(const char *what, const float *got, int rows, int gcols, const float *want, int wcols,
                 int c0) {
  double mx = 0, worst = 0;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < gcols; c++) mx = fmax(mx, fabs(want[(size_t)r * wcols + c0 + c]));
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < gcols; c++) {
      double d = fabs((double)got[(size_t)r * gcols + c] - want[(size_t)r * wcols + c0 + c]);
      if (d > worst) worst = d;
      if (d > 2e-5 * mx + 1e-6) {
        char m[256];
        snprintf(m, sizeof m, "%s: [%d,%d] is %.9g, unsplit %.9g (max |unsplit| %.3g)", what, r, c,
                 (double)got[(size_t)r * gcols + c], (double)want[(size_t)r * wcols + c0 + c], mx);
        fail(m);
      }
    }
  g_checks++;
  if (mx > 0 && worst / mx > g_worst) g_worst = worst / mx;
}

static void check_rc(dtr_result rc, dtr_tp *tp, const char *what) {
  if (rc == DTR_OK) return;
  char m[768];
  snprintf(m, sizeof m, "%s: %s: %s", what, dtr_strerror(rc), tp->err);
  fail(m);
}

static void fg(dtr_tp *tp) {
  const int n = 1000;
  float *x = zeros(n), *y = zeros(n);
  for (int i = 0; i < n; i++) x[i] = y[i] = (float)(tp->rank * 1000 + i);
  check_rc(dtr_tp_g_forward(tp, y, n), tp, "g forward");
  check_rc(dtr_tp_f_backward(tp, x, n), tp, "f backward");
  int P = tp->size;
  for (int i = 0; i < n; i++) {
    float want = (float)(1000 * P * (P - 1) / 2 + P * i);
    if (x[i] != want || y[i] != want) {
      char m[160];
      snprintf(m, sizeof m, "f/g element %d: %g / %g, want %g", i, (double)x[i], (double)y[i], (double)want);
      fail(m);
    }
  }
  g_checks += 2;
  free(x), free(y);
}

/* rows [r0, r0+nr) of a [rows, cols] matrix */
static float *rows_of(const float *m, int cols, int r0, int nr) {
  float *p = zeros((size_t)nr * cols);
  memcpy(p, m + (size_t)r0 * cols, (size_t)nr * cols * sizeof *p);
  return p;
}
/* columns [c0, c0+nc) of a [rows, cols] matrix */
static float *cols_of(const float *m, int rows, int cols, int c0, int nc) {
  float *p = zeros((size_t)rows * nc);
  for (int r = 0; r < rows; r++)
    memcpy(p + (size_t)r * nc, m + (size_t)r * cols + c0, (size_t)nc * sizeof *p);
  return p;
}

static void linear(dtr_tp *tp, dtr_tp_split_kind kind) {
  const int N = 24, in = 64, out = 96;
  dtr_tp one = dtr_tp_make(NULL, 1);
  float *w = randv((size_t)out * in, 0.1f), *b = randv(out, 0.1f), *x = randv((size_t)N * in, 1),
        *dy = randv((size_t)N * out, 1);
  float *y = zeros((size_t)N * out), *dx = zeros((size_t)N * in), *dw = zeros((size_t)out * in),
        *db = zeros(out);
  dtr_tp_linear full = {kind, in, out, w, b, dw, db};
  check_rc(dtr_tp_linear_forward(&one, &full, x, y, N), &one, "unsplit forward");
  check_rc(dtr_tp_linear_backward(&one, &full, dy, x, dx, N), &one, "unsplit backward");
  int P = tp->size, r = tp->rank;
  const char *k = kind == DTR_TP_COLUMN ? "column" : "row";
  char what[64];
  if (kind == DTR_TP_COLUMN) {
    int o0 = r * out / P, no = out / P;
    float *lw = rows_of(w, in, o0, no), *lb = rows_of(b, 1, o0, no), *ldy = cols_of(dy, N, out, o0, no);
    float *ly = zeros((size_t)N * no), *ldx = zeros((size_t)N * in), *ldw = zeros((size_t)no * in),
          *ldb = zeros(no);
    float *Dy = to_dev(ly, (size_t)N * no), *Ddx = to_dev(ldx, (size_t)N * in),
          *Ddw = to_dev(ldw, (size_t)no * in), *Ddb = to_dev(ldb, no), *Dx = to_dev(x, (size_t)N * in);
    dtr_tp_linear l = {kind, in, out, to_dev(lw, (size_t)no * in), to_dev(lb, no), Ddw, Ddb};
    check_rc(dtr_tp_linear_forward(tp, &l, Dx, Dy, N), tp, "column forward");
    check_rc(dtr_tp_linear_backward(tp, &l, to_dev(ldy, (size_t)N * no), Dx, Ddx, N), tp, "column backward");
    to_host(ly, Dy, (size_t)N * no), to_host(ldx, Ddx, (size_t)N * in), to_host(ldw, Ddw, (size_t)no * in),
        to_host(ldb, Ddb, no);
    snprintf(what, sizeof what, "%s y", k), near(what, ly, N, no, y, out, o0);
    snprintf(what, sizeof what, "%s dx", k), near(what, ldx, N, in, dx, in, 0);
    snprintf(what, sizeof what, "%s dw", k), near(what, ldw, no, in, dw + (size_t)o0 * in, in, 0);
    snprintf(what, sizeof what, "%s db", k), near(what, ldb, 1, no, db + o0, no, 0);
    free(lw), free(lb), free(ldy), free(ly), free(ldx), free(ldw), free(ldb);
  } else {
    int i0 = r * in / P, ni = in / P;
    float *lw = cols_of(w, out, in, i0, ni), *lx = cols_of(x, N, in, i0, ni);
    float *ly = zeros((size_t)N * out), *ldx = zeros((size_t)N * ni), *ldw = zeros((size_t)out * ni),
          *ldb = zeros(out);
    float *Dy = to_dev(ly, (size_t)N * out), *Ddx = to_dev(ldx, (size_t)N * ni),
          *Ddw = to_dev(ldw, (size_t)out * ni), *Ddb = to_dev(ldb, out), *Dx = to_dev(lx, (size_t)N * ni);
    dtr_tp_linear l = {kind, in, out, to_dev(lw, (size_t)out * ni), to_dev(b, out), Ddw, Ddb};
    check_rc(dtr_tp_linear_forward(tp, &l, Dx, Dy, N), tp, "row forward");
    check_rc(dtr_tp_linear_backward(tp, &l, to_dev(dy, (size_t)N * out), Dx, Ddx, N), tp, "row backward");
    to_host(ly, Dy, (size_t)N * out), to_host(ldx, Ddx, (size_t)N * ni), to_host(ldw, Ddw, (size_t)out * ni),
        to_host(ldb, Ddb, out);
    snprintf(what, sizeof what, "%s y", k), near(what, ly, N, out, y, out, 0);
    snprintf(what, sizeof what, "%s dx", k), near(what, ldx, N, ni, dx, in, i0);
    snprintf(what, sizeof what, "%s dw", k), near(what, ldw, out, ni, dw, in, i0);
    snprintf(what, sizeof what, "%s db", k), near(what, ldb, 1, out, db, out, 0);
    free(lw), free(lx), free(ly), free(ldx), free(ldw), free(ldb);
  }
  free(w), free(b), free(x), free(dy), free(y), free(dx), free(dw), free(db);
}

/* qkv rows of this rank's heads: q, k and v blocks of C/P rows each, from the [3C, C] weight */
static float *qkv_rows(const float *m, int C, int cols, int r, int P) {
  int n = C / P;
  float *p = zeros((size_t)3 * n * cols);
  for (int j = 0; j < 3; j++)
    memcpy(p + (size_t)j * n * cols, m + ((size_t)j * C + (size_t)r * n) * cols,
           (size_t)n * cols * sizeof *p);
  return p;
}

static void attention(dtr_tp *tp) {
  const int B = 2, T = 8, C = 64, NH = 8, N = B * T, P = tp->size, r = tp->rank, Cl = C / P;
  dtr_tp one = dtr_tp_make(NULL, 1);
  float *wqkv = randv((size_t)3 * C * C, 0.2f), *bqkv = randv(3 * C, 0.1f), *wp = randv((size_t)C * C, 0.2f),
        *bp = randv(C, 0.1f), *x = randv((size_t)N * C, 1), *dout = randv((size_t)N * C, 1);
  float *g_wqkv = zeros((size_t)3 * C * C), *g_bqkv = zeros(3 * C), *g_wp = zeros((size_t)C * C),
        *g_bp = zeros(C);
  float *qkv = zeros((size_t)N * 3 * C), *att = zeros((size_t)B * NH * T * T), *heads = zeros((size_t)N * C),
        *out = zeros((size_t)N * C), *dx = zeros((size_t)N * C), *dqkv = zeros((size_t)N * 3 * C),
        *dheads = zeros((size_t)N * C);
  dtr_tp_attention full = {
      C, NH, {DTR_TP_COLUMN, C, 3 * C, wqkv, bqkv, g_wqkv, g_bqkv}, {DTR_TP_ROW, C, C, wp, bp, g_wp, g_bp}};
  check_rc(dtr_tp_attention_forward(&one, &full, x, B, T, qkv, att, heads, out), &one, "attention");
  check_rc(dtr_tp_attention_backward(&one, &full, x, qkv, att, heads, dout, B, T, dx, dqkv, dheads), &one,
           "attention backward");
  float *lwqkv = qkv_rows(wqkv, C, C, r, P), *lbqkv = qkv_rows(bqkv, C, 1, r, P),
        *lwp = cols_of(wp, C, C, r * Cl, Cl);
  float *lg_wqkv = zeros((size_t)3 * Cl * C), *lg_bqkv = zeros(3 * Cl), *lg_wp = zeros((size_t)C * Cl),
        *lg_bp = zeros(C);
  float *lqkv = zeros((size_t)N * 3 * Cl), *latt = zeros((size_t)B * NH * T * T),
        *lheads = zeros((size_t)N * Cl), *lout = zeros((size_t)N * C), *ldx = zeros((size_t)N * C),
        *ldqkv = zeros((size_t)N * 3 * Cl), *ldheads = zeros((size_t)N * Cl);
  size_t NC = (size_t)N * C, nq = (size_t)3 * Cl * C, na = (size_t)B * NH * T * T, nh = (size_t)N * Cl;
  float *Dgq = to_dev(lg_wqkv, nq), *Dgqb = to_dev(lg_bqkv, 3 * Cl), *Dgp = to_dev(lg_wp, (size_t)C * Cl),
        *Dgpb = to_dev(lg_bp, C);
  float *Dqkv = to_dev(lqkv, (size_t)N * 3 * Cl), *Datt = to_dev(latt, na), *Dheads = to_dev(lheads, nh),
        *Dout = to_dev(lout, NC), *Ddx = to_dev(ldx, NC), *Dx = to_dev(x, NC);
  dtr_tp_attention split = {C,
                            NH,
                            {DTR_TP_COLUMN, C, 3 * C, to_dev(lwqkv, nq), to_dev(lbqkv, 3 * Cl), Dgq, Dgqb},
                            {DTR_TP_ROW, C, C, to_dev(lwp, (size_t)C * Cl), to_dev(bp, C), Dgp, Dgpb}};
  check_rc(dtr_tp_attention_forward(tp, &split, Dx, B, T, Dqkv, Datt, Dheads, Dout), tp, "split attention");
  check_rc(dtr_tp_attention_backward(tp, &split, Dx, Dqkv, Datt, Dheads, to_dev(dout, NC), B, T, Ddx,
                                     to_dev(ldqkv, (size_t)N * 3 * Cl), to_dev(ldheads, nh)),
           tp, "split attention backward");
  to_host(lout, Dout, NC), to_host(lheads, Dheads, nh), to_host(ldx, Ddx, NC), to_host(lg_wqkv, Dgq, nq),
      to_host(lg_bqkv, Dgqb, 3 * Cl);
  to_host(lg_wp, Dgp, (size_t)C * Cl), to_host(lg_bp, Dgpb, C);
  near("attention out", lout, N, C, out, C, 0);
  near("attention heads", lheads, N, Cl, heads, C, r * Cl);
  near("attention dx", ldx, N, C, dx, C, 0);
  float *want = qkv_rows(g_wqkv, C, C, r, P), *wantb = qkv_rows(g_bqkv, C, 1, r, P);
  near("attention d qkv.w", lg_wqkv, 3 * Cl, C, want, C, 0);
  near("attention d qkv.b", lg_bqkv, 1, 3 * Cl, wantb, 3 * Cl, 0);
  near("attention d proj.w", lg_wp, C, Cl, g_wp, C, r * Cl);
  near("attention d proj.b", lg_bp, 1, C, g_bp, C, 0);
  free(want), free(wantb);
  float *bufs[] = {wqkv,  bqkv,  wp,   bp,   x,      dout,   g_wqkv, g_bqkv, g_wp,   g_bp,    qkv,
                   att,   heads, out,  dx,   dqkv,   dheads, lwqkv,  lbqkv,  lwp,    lg_wqkv, lg_bqkv,
                   lg_wp, lg_bp, lqkv, latt, lheads, lout,   ldx,    ldqkv,  ldheads};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void linear_column(dtr_tp *tp) {
  linear(tp, DTR_TP_COLUMN);
}
static void linear_row(dtr_tp *tp) {
  linear(tp, DTR_TP_ROW);
}

static void mlp(dtr_tp *tp) {
  const int N = 20, C = 32, H = 128, P = tp->size, r = tp->rank, Hl = H / P;
  dtr_tp one = dtr_tp_make(NULL, 1);
  float *wfc = randv((size_t)H * C, 0.2f), *bfc = randv(H, 0.1f), *wp = randv((size_t)C * H, 0.1f),
        *bp = randv(C, 0.1f), *x = randv((size_t)N * C, 1), *dout = randv((size_t)N * C, 1);
  float *gwfc = zeros((size_t)H * C), *gbfc = zeros(H), *gwp = zeros((size_t)C * H), *gbp = zeros(C);
  float *pre = zeros((size_t)N * H), *act = zeros((size_t)N * H), *out = zeros((size_t)N * C),
        *dx = zeros((size_t)N * C), *dact = zeros((size_t)N * H);
  dtr_tp_mlp full = {{DTR_TP_COLUMN, C, H, wfc, bfc, gwfc, gbfc}, {DTR_TP_ROW, H, C, wp, bp, gwp, gbp}};
  check_rc(dtr_tp_mlp_forward(&one, &full, x, N, pre, act, out), &one, "mlp");
  check_rc(dtr_tp_mlp_backward(&one, &full, x, pre, act, dout, N, dx, dact), &one, "mlp backward");
  float *lwfc = rows_of(wfc, C, r * Hl, Hl), *lbfc = rows_of(bfc, 1, r * Hl, Hl),
        *lwp = cols_of(wp, C, H, r * Hl, Hl);
  float *lgwfc = zeros((size_t)Hl * C), *lgbfc = zeros(Hl), *lgwp = zeros((size_t)C * Hl), *lgbp = zeros(C);
  float *lpre = zeros((size_t)N * Hl), *lact = zeros((size_t)N * Hl), *lout = zeros((size_t)N * C),
        *ldx = zeros((size_t)N * C), *ldact = zeros((size_t)N * Hl);
  size_t NC = (size_t)N * C, NH_ = (size_t)N * Hl;
  float *Dgfc = to_dev(lgwfc, (size_t)Hl * C), *Dgfcb = to_dev(lgbfc, Hl),
        *Dgp = to_dev(lgwp, (size_t)C * Hl), *Dgpb = to_dev(lgbp, C);
  float *Dpre = to_dev(lpre, NH_), *Dact = to_dev(lact, NH_), *Dout = to_dev(lout, NC),
        *Ddx = to_dev(ldx, NC), *Dx = to_dev(x, NC);
  dtr_tp_mlp split = {{DTR_TP_COLUMN, C, H, to_dev(lwfc, (size_t)Hl * C), to_dev(lbfc, Hl), Dgfc, Dgfcb},
                      {DTR_TP_ROW, H, C, to_dev(lwp, (size_t)C * Hl), to_dev(bp, C), Dgp, Dgpb}};
  check_rc(dtr_tp_mlp_forward(tp, &split, Dx, N, Dpre, Dact, Dout), tp, "split mlp");
  check_rc(dtr_tp_mlp_backward(tp, &split, Dx, Dpre, Dact, to_dev(dout, NC), N, Ddx, to_dev(ldact, NH_)), tp,
           "split mlp backward");
  to_host(lout, Dout, NC), to_host(ldx, Ddx, NC), to_host(lgwfc, Dgfc, (size_t)Hl * C),
      to_host(lgbfc, Dgfcb, Hl);
  to_host(lgwp, Dgp, (size_t)C * Hl), to_host(lgbp, Dgpb, C);
  near("mlp out", lout, N, C, out, C, 0);
  near("mlp dx", ldx, N, C, dx, C, 0);
  near("mlp d fc.w", lgwfc, Hl, C, gwfc + (size_t)r * Hl * C, C, 0);
  near("mlp d fc.b", lgbfc, 1, Hl, gbfc + r * Hl, Hl, 0);
  near("mlp d proj.w", lgwp, C, Hl, gwp, H, r * Hl);
  near("mlp d proj.b", lgbp, 1, C, gbp, C, 0);
  float *bufs[] = {wfc,  bfc,  wp,   bp,  x,     dout,  gwfc, gbfc, gwp,  gbp,  pre,  act, out,  dx,
                   dact, lwfc, lbfc, lwp, lgwfc, lgbfc, lgwp, lgbp, lpre, lact, lout, ldx, ldact};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void vocab(dtr_tp *tp) {
  const int B = 3, T = 8, N = B * T, C = 16, V = 48, P = tp->size, r = tp->rank, Vl = V / P, v0 = r * Vl;
  dtr_tp one = dtr_tp_make(NULL, 1);
  float *wte = randv((size_t)V * C, 1), *wpe = randv((size_t)T * C, 1), *dout = randv((size_t)N * C, 1);
  int32_t ids[B * T], tg[B * T];
  for (int i = 0; i < N; i++) {
    ids[i] = (int32_t)((i * 7 + 3) % V);
    tg[i] = i % 5 == 0 ? -1 : (int32_t)((i * 11 + 1) % V);
  }
  /* embedding: one nonzero row per token, so the split sum is exact */
  float *emb = zeros((size_t)N * C), *dwte = zeros((size_t)V * C), *dwpe = zeros((size_t)T * C);
  check_rc(dtr_tp_embedding_forward(&one, wte, 0, V, wpe, ids, B, T, C, emb), &one, "embedding");
  check_rc(dtr_tp_embedding_backward(&one, dwte, 0, V, dwpe, ids, dout, B, T, C), &one, "embedding backward");
  float *lwte = rows_of(wte, C, v0, Vl), *lemb = zeros((size_t)N * C), *ldwte = zeros((size_t)Vl * C),
        *ldwpe = zeros((size_t)T * C);
  const int32_t *Dids = to_devi(ids, N);
  float *Demb = to_dev(lemb, (size_t)N * C), *Ddwte = to_dev(ldwte, (size_t)Vl * C),
        *Ddwpe = to_dev(ldwpe, (size_t)T * C);
  check_rc(dtr_tp_embedding_forward(tp, to_dev(lwte, (size_t)Vl * C), v0, Vl, to_dev(wpe, (size_t)T * C),
                                    Dids, B, T, C, Demb),
           tp, "split embedding");
  check_rc(dtr_tp_embedding_backward(tp, Ddwte, v0, Vl, Ddwpe, Dids, to_dev(dout, (size_t)N * C), B, T, C),
           tp, "split embedding backward");
  to_host(lemb, Demb, (size_t)N * C), to_host(ldwte, Ddwte, (size_t)Vl * C),
      to_host(ldwpe, Ddwpe, (size_t)T * C);
  if (memcmp(lemb, emb, (size_t)N * C * sizeof *emb) != 0)
    fail("embedding: the split output is not bit-equal");
  g_checks++;
  near("embedding dwte", ldwte, Vl, C, dwte + (size_t)v0 * C, C, 0);
  near("embedding dwpe", ldwpe, T, C, dwpe, C, 0);
  /* cross-entropy */
  float *logits = randv((size_t)N * V, 3), *losses = zeros(N), *scratch = zeros(3 * N);
  float *llog = cols_of(logits, N, V, v0, Vl), *llosses = zeros(N);
  check_rc(dtr_tp_cross_entropy_forward(&one, logits, tg, 0, V, N, losses, scratch), &one, "cross-entropy");
  const int32_t *Dtg = to_devi(tg, N);
  float *Dlog = to_dev(llog, (size_t)N * Vl), *Dlosses = to_dev(llosses, N);
  check_rc(dtr_tp_cross_entropy_forward(tp, Dlog, Dtg, v0, Vl, N, Dlosses, to_dev(scratch, 3 * N)), tp,
           "split cross-entropy");
  to_host(llog, Dlog, (size_t)N * Vl), to_host(llosses, Dlosses, N);
  near("cross-entropy losses", llosses, 1, N, losses, N, 0);
  near("cross-entropy probabilities", llog, N, Vl, logits, V, v0);
  check_rc(dtr_tp_cross_entropy_backward(&one, logits, tg, 0, V, N, 0.25f), &one, "cross-entropy backward");
  check_rc(dtr_tp_cross_entropy_backward(tp, Dlog, Dtg, v0, Vl, N, 0.25f), tp,
           "split cross-entropy backward");
  to_host(llog, Dlog, (size_t)N * Vl);
  near("cross-entropy dlogits", llog, N, Vl, logits, V, v0);
  float *bufs[] = {wte,   wpe,   dout,   emb,    dwte,    dwpe, lwte,   lemb,
                   ldwte, ldwpe, logits, losses, scratch, llog, llosses};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

/* The model's initialisation: this rank's tp slice of every tensor equals, bit for bit, the matching
 * rows / columns / per-head q, k, v rows of the whole model initialised from the same seed. */
static void init_slices(dtr_tp *tp) {
  const dtr__gpt_config cfg = {32, 8, 2, 8, 64}; /* vocab, block, layers, heads, embd */
  char err[512] = "";
  dtr__gpt *whole = NULL, *part = NULL;
  dtr__gpt_part pa = dtr__gpt_whole(&cfg);
  pa.tp = tp;
  if (dtr__gpt_create(&cfg, 4242, 1, 1, &whole, err, sizeof err) != DTR_OK ||
      dtr__gpt_create_part(&cfg, &pa, 4242, 1, 1, &part, err, sizeof err) != DTR_OK)
    fail(err);
  int n = dtr__gpt_num_tensors(part);
  for (int i = 0; i < n; i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(part, i), *w = dtr__gpt_tensor(whole, i);
    if (!w || strcmp(t->name, w->name) != 0) fail("the part's tensors are not the whole model's, in order");
    dtr__gpt_piece pc[3];
    int np = dtr__gpt_param_pieces(t, tp->size, tp->rank, pc);
    int64_t cols = t->ndim == 2 ? t->shape[1] : 1, gcols = t->ndim == 2 ? t->gshape[1] : 1;
    for (int k = 0; k < np; k++)
      for (int64_t r = 0; r < pc[k].rows; r++)
        if (memcmp(dtr__gpt_params(part) + t->offset + (pc[k].lrow + r) * cols,
                   dtr__gpt_params(whole) + w->offset + (pc[k].grow + r) * gcols + pc[k].gcol,
                   (size_t)cols * sizeof(float)) != 0) {
          char m[256];
          snprintf(m, sizeof m, "initialisation: %s row %lld differs from the whole model's row %lld",
                   t->name, (long long)(pc[k].lrow + r), (long long)(pc[k].grow + r));
          fail(m);
        }
    g_checks++;
  }
  dtr__gpt_destroy(part);
  dtr__gpt_destroy(whole);
}

int main(int argc, char **argv) {
  const char *rs = getenv("RANK"), *ws = getenv("WORLD_SIZE"), *ls = getenv("LOCAL_RANK");
  if (!rs || !ws) {
    fprintf(stderr, "tp_check: run under dtrain launch\n");
    return 2;
  }
  g_rank = atoi(rs);
  g_cuda = argc > 1 && !strcmp(argv[1], "--cuda");
  int size = atoi(ws), local = ls ? atoi(ls) : g_rank;
  if (g_cuda) {
    int has = strstr(dtr_build_features(), "cuda") != NULL, ndev = has ? dtr__cuda_device_count() : 0;
    if (ndev <= local) {
      printf("tp_check rank %d: skipped: %s\n", g_rank,
             has ? "fewer CUDA devices visible than ranks on this node" : "this build has no CUDA");
      return 77;
    }
  }
  time_limit_start("tp_check", 120);
  char err[512] = "";
  dtr_store *store = NULL;
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) fail(err);
  dtr_comm_config cc = dtr_comm_config_default();
  cc.name = "tp";
  if (g_cuda) cc.backend = DTR_BACKEND_NCCL, cc.cuda_device = local;
  dtr_comm *c = NULL;
  if (dtr_comm_create(store, g_rank, size, &cc, &c, err, sizeof err) != DTR_OK) fail(err);
  dtr_tp tp = dtr_tp_make(c, 1);
  if (g_cuda && dtr_tp_make_cuda(c, local, &tp, err, sizeof err) != DTR_OK) fail(err);
  g_tp = &tp;
  if (!g_cuda) { /* exact integers through host buffers (the blocks below cover the device's all-reduces), and
                  the model's initialisation, which runs on the host */
    fg(&tp);
    init_slices(&tp);
  }
  void (*checks[])(dtr_tp *) = {linear_column, linear_row, attention, mlp, vocab};
  for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
    checks[i](&tp);
    free_dev();
  }
  printf("tp_check rank %d: %d checks ok, largest relative error %.2e (%llu all-reduces, %llu bytes)%s\n",
         g_rank, g_checks, g_worst, (unsigned long long)tp.allreduce_calls,
         (unsigned long long)tp.allreduce_bytes, g_cuda ? " on the GPU" : "");
  dtr_tp_free(&tp);
  dtr_comm_destroy(c);
  dtr_store_close(store);
  return 0;
}
