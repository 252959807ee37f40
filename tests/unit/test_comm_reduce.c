/* dtr__reduce_n against a naive element-by-element reference for every dtype x reduction, at sizes
 * around the kernel's block size, in place and out of place; dtr__reduce_fold (the chained form) bit
 * for bit against dtr__reduce_n over every cut of its inputs; and the f16/bf16 conversions: every f16
 * and bf16 value round-trips, halfway cases round to even, specials (inf, NaN, subnormals, signed
 * zero) come out right. Bit-exact: the reduction order is fixed, so there is no tolerance. */
// ctest-timeout: 120
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collectives/comm_internal.h"
#include "tests/unit/test_util.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  return test_xorshift64(&rng_state);
}

static float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* libm-free helpers (the unit tests do not link libm). */
static double pow2(int e) {
  double v = 1;
  for (; e > 0; e--) v *= 2;
  for (; e < 0; e++) v /= 2;
  return v;
}
#define ldexp(m, e) ((double)(m)*pow2(e))
/* The next float toward +inf (up) or toward zero (down), for positive finite f. */
static float next_up(float f) {
  return u2f(f2u(f) + 1);
}
static float next_down(float f) {
  return u2f(f2u(f) - 1);
}

/* Independent reference decoders, written from the format definitions. */
static double ref_f16(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31)
    v = m ? NAN : INFINITY;
  else if (e == 0)
    v = ldexp(m, -24);
  else
    v = ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

static void test_f16_conversions(void) {
  int bad_decode = 0, bad_roundtrip = 0, bad_half = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = dtr__f16_to_f32((uint16_t)h);
    double r = ref_f16((uint16_t)h);
    if (isnan(r)) {
      if (!isnan(f) || (f2u(f) >> 31) != (h >> 15)) bad_decode++;
      uint16_t back = dtr__f32_to_f16(f);
      if ((back & 0x7c00) != 0x7c00 || !(back & 0x3ff) || (back >> 15) != (h >> 15)) bad_roundtrip++;
      continue;
    }
    if ((double)f != r || !signbit(f) != !signbit(r)) bad_decode++;
    if (dtr__f32_to_f16(f) != h) bad_roundtrip++;
  }
  /* Halfway between neighbours: ties to even; one float ulp either side: the nearer one. */
  for (uint32_t h = 0; h < 0x7c00; h++) {
    float lo = dtr__f16_to_f32((uint16_t)h);
    double hi = h + 1 == 0x7c00 ? 65536.0 : (double)dtr__f16_to_f32((uint16_t)(h + 1));
    float mid = (float)(((double)lo + hi) / 2); /* exact: 12 significant bits */
    uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
    if (dtr__f32_to_f16(mid) != even) bad_half++;
    if (dtr__f32_to_f16(next_down(mid)) != h) bad_half++;
    if (dtr__f32_to_f16(next_up(mid)) != h + 1) bad_half++;
    if (dtr__f32_to_f16(-mid) != (even | 0x8000)) bad_half++;
  }
  CHECK_EQ_INT(bad_decode, 0);
  CHECK_EQ_INT(bad_roundtrip, 0);
  CHECK_EQ_INT(bad_half, 0);
  CHECK_EQ_INT(dtr__f32_to_f16(INFINITY), 0x7c00);
  CHECK_EQ_INT(dtr__f32_to_f16(-INFINITY), 0xfc00);
  CHECK_EQ_INT(dtr__f32_to_f16(1e10f), 0x7c00);
  CHECK_EQ_INT(dtr__f32_to_f16(65504.0f), 0x7bff);
  CHECK_EQ_INT(dtr__f32_to_f16(65519.99f), 0x7bff);
  CHECK_EQ_INT(dtr__f32_to_f16(65520.0f), 0x7c00);
  CHECK_EQ_INT(dtr__f32_to_f16(-0.0f), 0x8000);
  CHECK_EQ_INT(dtr__f32_to_f16(1e-10f), 0);          /* underflows to zero */
  CHECK_EQ_INT(dtr__f32_to_f16(u2f(0x33000000)), 0); /* 2^-25: tie between 0 and 2^-24 -> even (0) */
  CHECK_EQ_INT(dtr__f32_to_f16(u2f(0x33000001)), 1);
  CHECK_EQ_INT(dtr__f32_to_f16(1.0f), 0x3c00);
  CHECK((dtr__f32_to_f16(NAN) & 0x7fff) > 0x7c00);
#ifdef __FLT16_MAX__
  /* Cross-check against the compiler's own conversion on random floats of every magnitude. */
  int bad_cc = 0;
  for (int i = 0; i < 2000000; i++) {
    float f = u2f((uint32_t)rnd());
    if (isnan(f)) continue;
    _Float16 g = (_Float16)f;
    uint16_t gb;
    memcpy(&gb, &g, 2);
    if (dtr__f32_to_f16(f) != gb) bad_cc++;
  }
  CHECK_EQ_INT(bad_cc, 0);
#endif
}

static uint16_t ref_to_bf16(float f) {
  uint32_t u = f2u(f);
  if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
  uint32_t hi = u >> 16, lo = u & 0xffff;
  if (lo > 0x8000 || (lo == 0x8000 && (hi & 1))) hi++;
  return (uint16_t)hi;
}

static void test_bf16_conversions(void) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = dtr__bf16_to_f32((uint16_t)h);
    if (f2u(f) != h << 16) bad++;
    uint16_t back = dtr__f32_to_bf16(f);
    if (isnan(f) ? !((back & 0x7f80) == 0x7f80 && (back & 0x7f) && (back >> 15) == (h >> 15)) : back != h)
      bad++;
  }
  for (int i = 0; i < 2000000; i++) {
    float f = u2f((uint32_t)rnd());
    if (dtr__f32_to_bf16(f) != ref_to_bf16(f)) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(dtr__f32_to_bf16(u2f(0x3f808000)), 0x3f80); /* tie -> even */
  CHECK_EQ_INT(dtr__f32_to_bf16(u2f(0x3f818000)), 0x3f82); /* tie -> even (up) */
  CHECK_EQ_INT(dtr__f32_to_bf16(u2f(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
  CHECK_EQ_INT(dtr__f32_to_bf16(-INFINITY), 0xff80);
}

/* ---------------------------------------------------------------- the reduction */

static float fmax_nan(float a, float b) {
  return (a > b || a != a) ? a : b;
}
static float fmin_nan(float a, float b) {
  return (a < b || a != a) ? a : b;
}
static double dmax_nan(double a, double b) {
  return (a > b || a != a) ? a : b;
}
static double dmin_nan(double a, double b) {
  return (a < b || a != a) ? a : b;
}

static float comb_f(float a, float b, dtr_redop op) {
  switch (op) {
    case DTR_SUM:
    case DTR_AVG:
      return a + b;
    case DTR_PROD:
      return a * b;
    case DTR_MAX:
      return fmax_nan(a, b);
    case DTR_MIN:
      return fmin_nan(a, b);
  }
  return 0;
}

static double comb_d(double a, double b, dtr_redop op) {
  switch (op) {
    case DTR_SUM:
    case DTR_AVG:
      return a + b;
    case DTR_PROD:
      return a * b;
    case DTR_MAX:
      return dmax_nan(a, b);
    case DTR_MIN:
      return dmin_nan(a, b);
  }
  return 0;
}

/* Naive reference for element i: in[0] op in[1] op ... in the same order, written independently. */
static void ref_elem(void *out, const void *const *in, int nin, size_t i, dtr_dtype t, dtr_redop op,
                     int div) {
  switch (t) {
    case DTR_F32: {
      float a = ((const float *)in[0])[i];
      for (int k = 1; k < nin; k++) a = comb_f(a, ((const float *)in[k])[i], op);
      if (op == DTR_AVG) a /= (float)div;
      ((float *)out)[i] = a;
      break;
    }
    case DTR_F64: {
      double a = ((const double *)in[0])[i];
      for (int k = 1; k < nin; k++) a = comb_d(a, ((const double *)in[k])[i], op);
      if (op == DTR_AVG) a /= (double)div;
      ((double *)out)[i] = a;
      break;
    }
    case DTR_F16:
    case DTR_BF16: {
      float (*dec)(uint16_t) = t == DTR_F16 ? dtr__f16_to_f32 : dtr__bf16_to_f32;
      uint16_t (*enc)(float) = t == DTR_F16 ? dtr__f32_to_f16 : dtr__f32_to_bf16;
      float a = dec(((const uint16_t *)in[0])[i]);
      for (int k = 1; k < nin; k++) a = comb_f(a, dec(((const uint16_t *)in[k])[i]), op);
      if (op == DTR_AVG) a /= (float)div;
      ((uint16_t *)out)[i] = enc(a);
      break;
    }
    case DTR_I32:
    case DTR_I64:
    case DTR_U8: {
      long long v[64] = {0};
      for (int k = 0; k < nin; k++)
        v[k] = t == DTR_I32   ? ((const int32_t *)in[k])[i]
               : t == DTR_I64 ? ((const int64_t *)in[k])[i]
                              : ((const uint8_t *)in[k])[i];
      uint64_t wrap = (uint64_t)v[0];
      __int128 sum = v[0];
      long long mx = v[0], mn = v[0];
      for (int k = 1; k < nin; k++) {
        wrap = op == DTR_PROD ? wrap * (uint64_t)v[k] : wrap + (uint64_t)v[k];
        sum += v[k];
        if (v[k] > mx) mx = v[k];
        if (v[k] < mn) mn = v[k];
      }
      long long r = op == DTR_MAX   ? mx
                    : op == DTR_MIN ? mn
                    : op == DTR_AVG ? (long long)(sum / div)
                                    : (long long)wrap;
      if (t == DTR_I32)
        ((int32_t *)out)[i] = (int32_t)(uint32_t)(uint64_t)r;
      else if (t == DTR_I64)
        ((int64_t *)out)[i] = (int64_t)r;
      else
        ((uint8_t *)out)[i] = (uint8_t)r;
      break;
    }
  }
}

static void fill(void *p, size_t n, dtr_dtype t, dtr_redop op) {
  for (size_t i = 0; i < n; i++) {
    uint64_t r = rnd();
    /* PROD over several inputs stays finite and exercises rounding with values near 1. */
    double x = op == DTR_PROD ? 0.5 + (double)(r % 1000) / 1000.0
                              : ((double)(int64_t)(r % 2000001) - 1000000) / 997.0;
    switch (t) {
      case DTR_F32:
        ((float *)p)[i] = (float)x;
        break;
      case DTR_F64:
        ((double *)p)[i] = x;
        break;
      case DTR_F16:
        ((uint16_t *)p)[i] = dtr__f32_to_f16((float)(x / 64));
        break;
      case DTR_BF16:
        ((uint16_t *)p)[i] = dtr__f32_to_bf16((float)x);
        break;
      case DTR_I32:
        ((int32_t *)p)[i] =
            op == DTR_SUM || op == DTR_PROD ? (int32_t)(uint32_t)r : (int32_t)(r % 2001) - 1000;
        break;
      case DTR_I64:
        ((int64_t *)p)[i] =
            op == DTR_AVG ? (int64_t)(r >> 2) - (int64_t)(r & 1) * (INT64_MAX / 2) : (int64_t)r;
        break;
      case DTR_U8:
        ((uint8_t *)p)[i] = (uint8_t)r;
        break;
    }
  }
  /* A NaN and infinities for the float types' MAX/MIN/SUM: they must propagate like the reference. */
  if (n > 5 && (t == DTR_F32 || t == DTR_F64) && op != DTR_PROD && (rnd() & 1)) {
    size_t j = rnd() % n;
    if (t == DTR_F32)
      ((float *)p)[j] = (rnd() & 1) ? NAN : INFINITY;
    else
      ((double *)p)[j] = (rnd() & 1) ? NAN : -INFINITY;
  }
}

static void test_reduce_all(void) {
  static const size_t sizes[] = {0, 1, 7, 33, 1023, 1024, 1025, 3001};
  static const int nins[] = {1, 2, 3, 5, 8};
  int bad = 0, cases = 0;
  for (int t = 0; t < 7; t++) {
    size_t es = dtr_dtype_size((dtr_dtype)t);
    for (int op = 0; op < 5; op++) {
      for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        for (size_t ni = 0; ni < sizeof nins / sizeof nins[0]; ni++) {
          size_t n = sizes[si];
          int nin = nins[ni];
          int div = nin + (int)(rnd() % 3); /* avg_div need not equal nin */
          void *in[8];
          for (int k = 0; k < nin; k++) {
            in[k] = malloc(n * es + 1);
            fill(in[k], n, (dtr_dtype)t, (dtr_redop)op);
          }
          void *ref = malloc(n * es + 1), *out = malloc(n * es + 1);
          for (size_t i = 0; i < n; i++)
            ref_elem(ref, (const void *const *)in, nin, i, (dtr_dtype)t, (dtr_redop)op, div);
          dtr__reduce_n(out, (const void *const *)in, nin, n, (dtr_dtype)t, (dtr_redop)op, div);
          int ok = memcmp(out, ref, n * es) == 0;
          /* In place: out aliases in[0]. */
          dtr__reduce_n(in[0], (const void *const *)in, nin, n, (dtr_dtype)t, (dtr_redop)op, div);
          ok = ok && memcmp(in[0], ref, n * es) == 0;
          if (!ok) {
            if (bad < 10)
              fprintf(stderr, "reduce mismatch: %s %s n=%zu nin=%d div=%d\n", dtr_dtype_name((dtr_dtype)t),
                      dtr_redop_name((dtr_redop)op), n, nin, div);
            bad++;
          }
          cases++;
          for (int k = 0; k < nin; k++) free(in[k]);
          free(ref);
          free(out);
        }
      }
    }
  }
  printf("reduce: %d cases\n", cases);
  CHECK_EQ_INT(bad, 0);
}

static void test_reduce_specifics(void) {
  /* Integer AVG truncates toward zero; u8 SUM wraps; f16 sums in f32 and rounds once. */
  int32_t a[3] = {-7, 7, INT32_MAX}, b[3] = {0, 0, INT32_MAX}, o[3];
  const void *in[2] = {a, b};
  dtr__reduce_n(o, in, 2, 3, DTR_I32, DTR_AVG, 2);
  CHECK_EQ_INT(o[0], -3);
  CHECK_EQ_INT(o[1], 3);
  CHECK_EQ_INT(o[2], INT32_MAX); /* the sum is exact in 64 bits */
  uint8_t u[2] = {200, 100}, v[2] = {100, 1}, w[2];
  const void *in8[2] = {u, v};
  dtr__reduce_n(w, in8, 2, 2, DTR_U8, DTR_SUM, 2);
  CHECK_EQ_INT(w[0], 44);
  CHECK_EQ_INT(w[1], 101);
  /* 2048 + 1 + 1 in f16: pairwise f16 rounding would give 2048 twice; f32 accumulation gives 2050. */
  uint16_t h0 = dtr__f32_to_f16(2048), h1 = dtr__f32_to_f16(1), ho;
  const void *inh[3] = {&h0, &h1, &h1};
  dtr__reduce_n(&ho, inh, 3, 1, DTR_F16, DTR_SUM, 3);
  CHECK(dtr__f16_to_f32(ho) == 2050.0f);
  /* NaN propagates through MAX whichever input holds it. */
  float x[2] = {NAN, 1}, y[2] = {1, NAN}, z[2];
  const void *inf_[2] = {x, y};
  dtr__reduce_n(z, inf_, 2, 2, DTR_F32, DTR_MAX, 2);
  CHECK(isnan(z[0]) && isnan(z[1]));
}

/* dtr__reduce_fold, the chain's kernel: the inputs cut into consecutive groups (every cut of up to 8
 * inputs into 1-3 groups, the accumulator passed from call to call as a chain of nodes passes it) give
 * the bits of dtr__reduce_n over all of them; the first group starts without an accumulator. In place
 * too: the accumulator folded onto itself, the final result written over in[0]. */
static int fold_chain(void *out, void *acc, void *const *in, int nin, const int *cut, int ncut, size_t n,
                      dtr_dtype t, dtr_redop op, int div) {
  /* groups [0, cut[0]), [cut[0], cut[1]), ..., [cut[ncut-1], nin) */
  int lo = 0;
  for (int g = 0; g <= ncut; g++) {
    int hi = g < ncut ? cut[g] : nin;
    int last = g == ncut;
    const void *const *grp = (const void *const *)in + lo;
    dtr__reduce_fold(last ? out : acc, g ? acc : NULL, grp, hi - lo, n, t, op, last, div);
    lo = hi;
  }
  return 0;
}

static void test_fold_matches_reduce(void) {
  static const size_t sizes[] = {1, 7, 1023, 1024, 1025, 3001};
  int bad = 0, cases = 0;
  for (int t = 0; t < 7; t++) {
    size_t es = dtr_dtype_size((dtr_dtype)t);
    for (int op = 0; op < 5; op++) {
      size_t asz = dtr__reduce_acc_size((dtr_dtype)t, (dtr_redop)op);
      CHECK(asz >= es);
      for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int nin = 1; nin <= 8; nin++) {
          int div = nin + (int)(rnd() % 3);
          void *in[8];
          for (int k = 0; k < nin; k++) {
            in[k] = malloc(n * es);
            fill(in[k], n, (dtr_dtype)t, (dtr_redop)op);
          }
          void *ref = malloc(n * es), *out = malloc(n * es), *acc = malloc(n * asz), *keep = malloc(n * es);
          dtr__reduce_n(ref, (const void *const *)in, nin, n, (dtr_dtype)t, (dtr_redop)op, div);
          /* one cut and two cuts at every position (groups non-empty) and no cut */
          for (int a = 0; a < nin; a++) {
            for (int b = a; b < nin; b++) {
              int cut[2] = {a, b}, ncut = a == 0 ? 0 : (b == a ? 1 : 2);
              if (a == 0 && b != 0) continue;
              memset(out, 0xa5, n * es);
              fold_chain(out, acc, in, nin, cut, ncut, n, (dtr_dtype)t, (dtr_redop)op, div);
              int ok = memcmp(out, ref, n * es) == 0;
              /* in place: the last group's result over its first input */
              memcpy(keep, in[ncut ? cut[ncut - 1] : 0], n * es);
              fold_chain(in[ncut ? cut[ncut - 1] : 0], acc, in, nin, cut, ncut, n, (dtr_dtype)t,
                         (dtr_redop)op, div);
              ok = ok && memcmp(in[ncut ? cut[ncut - 1] : 0], ref, n * es) == 0;
              memcpy(in[ncut ? cut[ncut - 1] : 0], keep, n * es);
              if (!ok) {
                if (bad < 10)
                  fprintf(stderr, "fold mismatch: %s %s n=%zu nin=%d cuts %d/%d/%d\n",
                          dtr_dtype_name((dtr_dtype)t), dtr_redop_name((dtr_redop)op), n, nin, ncut, a, b);
                bad++;
              }
              cases++;
            }
          }
          /* finalising an accumulator with no further inputs */
          dtr__reduce_fold(acc, NULL, (const void *const *)in, nin, n, (dtr_dtype)t, (dtr_redop)op, 0, div);
          dtr__reduce_fold(out, acc, NULL, 0, n, (dtr_dtype)t, (dtr_redop)op, 1, div);
          if (memcmp(out, ref, n * es) != 0) {
            if (bad < 10)
              fprintf(stderr, "fold finalise-only mismatch: %s %s n=%zu nin=%d\n",
                      dtr_dtype_name((dtr_dtype)t), dtr_redop_name((dtr_redop)op), n, nin);
            bad++;
          }
          for (int k = 0; k < nin; k++) free(in[k]);
          free(ref), free(out), free(acc), free(keep);
        }
      }
    }
  }
  printf("fold: %d chains\n", cases);
  CHECK(cases > 1000);
  CHECK_EQ_INT(bad, 0);
  /* The accumulator really is wider where the kernel's is: i32 AVG of INT32_MAX twice is exact. */
  int32_t a = INT32_MAX, o;
  int64_t acc64;
  const void *one[1] = {&a};
  dtr__reduce_fold(&acc64, NULL, one, 1, 1, DTR_I32, DTR_AVG, 0, 2);
  dtr__reduce_fold(&o, &acc64, one, 1, 1, DTR_I32, DTR_AVG, 1, 2);
  CHECK_EQ_INT(o, INT32_MAX);
  CHECK_EQ_INT((int)dtr__reduce_acc_size(DTR_BF16, DTR_SUM), 4);
  CHECK_EQ_INT((int)dtr__reduce_acc_size(DTR_F16, DTR_MAX), 4);
}

/* The kernel may convert f16 with F16C instructions: every f16 value (NaNs included) and a spread of
 * f32 roundings must come out exactly as the scalar conversions say. */
static void test_kernel_matches_scalar(void) {
  static uint16_t all[65536], out[65536], half[65536];
  for (uint32_t h = 0; h < 65536; h++) {
    all[h] = (uint16_t)h;
    half[h] = dtr__f32_to_f16(0.5f);
  }
  const void *in1[1] = {all};
  dtr__reduce_n(out, in1, 1, 65536, DTR_F16, DTR_SUM, 1);
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++)
    if (out[h] != dtr__f32_to_f16(dtr__f16_to_f32((uint16_t)h))) bad++;
  /* x * 0.5 and x / 3: subnormal results, ties and overflowless rounding of every input. */
  const void *in2[2] = {all, half};
  dtr__reduce_n(out, in2, 2, 65536, DTR_F16, DTR_PROD, 1);
  for (uint32_t h = 0; h < 65536; h++)
    if (out[h] != dtr__f32_to_f16(dtr__f16_to_f32((uint16_t)h) * 0.5f)) bad++;
  dtr__reduce_n(out, in1, 1, 65536, DTR_F16, DTR_AVG, 3);
  for (uint32_t h = 0; h < 65536; h++)
    if (out[h] != dtr__f32_to_f16(dtr__f16_to_f32((uint16_t)h) / 3.0f)) bad++;
  CHECK_EQ_INT(bad, 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Not a check: how fast the kernel is here, for the record (GB/s of input read). */
static void report_speed(void) {
  size_t n = 8u << 20;
  for (int t = 0; t < 4; t++) {
    size_t es = dtr_dtype_size((dtr_dtype)t);
    void *a = calloc(n, es), *b = calloc(n, es), *o = calloc(n, es);
    const void *in[2] = {a, b};
    dtr__reduce_n(o, in, 2, n, (dtr_dtype)t, DTR_SUM, 2);
    double t0 = now_s();
    int reps = 5;
    for (int r = 0; r < reps; r++) dtr__reduce_n(o, in, 2, n, (dtr_dtype)t, DTR_SUM, 2);
    double dt = (now_s() - t0) / reps;
    printf("speed: %-5s sum of 2 x %zu elements: %.2f ms, %.1f GB/s in+out\n", dtr_dtype_name((dtr_dtype)t),
           n, dt * 1e3, 3.0 * (double)(n * es) / dt / 1e9);
    free(a);
    free(b);
    free(o);
  }
}

int main(void) {
  test_f16_conversions();
  test_bf16_conversions();
  test_reduce_specifics();
  test_reduce_all();
  test_kernel_matches_scalar();
  test_fold_matches_reduce();
  report_speed();
  return TEST_EXIT();
}
