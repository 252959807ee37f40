/* dtr__reduce_n: the element-wise reduction every CPU backend runs in its inner loop, plus the
 * f16/bf16 <-> f32 conversions it needs. Written for memory bandwidth: inputs are combined one block
 * of BLK elements at a time in an L1-resident accumulator (so out may alias in[0] and the loops stay
 * alias-free and vectorizable), always in the fixed order in[0] op in[1] op ... so every rank gets
 * the same bits. f16/bf16 accumulate in f32 and are rounded (to nearest even) once. */
#if defined(__GNUC__) && !defined(__clang__)
/* -O2 in GCC 12 only vectorizes loops whose trip count is a known multiple of the vector width; this
 * file is the hot loop of the host backend, so it gets the full vectorizer. */
#pragma GCC optimize("O3")
#endif

#include <stdint.h>
#include <string.h>

#include "collectives/comm_internal.h"
#include "common/cpu_dispatch.h"

#define BLK 1024

/* ---------------------------------------------------------------- conversions (branch-free so the
 * vectorizer turns them into selects) */

static inline float as_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline uint32_t as_u32(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* All-ones when cond holds, else zero: selects written as masks stay branch-free through GCC's
 * if-conversion, so these loops vectorize. */
static inline uint32_t mask_if(int cond) {
  return (uint32_t)0 - (uint32_t)(cond != 0);
}

/* After F. Giesen's half_to_float: shift exponent and mantissa into place and rebias; inf/NaN get the
 * f32 maximum exponent; zeros and subnormals are renormalised by one exact float subtraction. */
static inline float f16_to_f32(uint16_t h) {
  uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
  uint32_t exp = em & 0x0f800000u; /* 0x7c00 << 13 */
  uint32_t u = em + 0x38000000u;   /* (127 - 15) << 23 */
  u += mask_if(exp == 0x0f800000u) & 0x38000000u;
  uint32_t sub = as_u32(as_f32(u + 0x00800000u) - as_f32(0x38800000u)); /* - 2^-14 */
  uint32_t z = mask_if(exp == 0);
  u = (sub & z) | (u & ~z);
  u |= mask_if(em > 0x0f800000u) & 0x00400000u; /* NaN comes out quiet, payload kept (as F16C does) */
  return as_f32(u | ((uint32_t)(h & 0x8000u) << 16));
}

/* Round to nearest even. Subnormal results come from one float addition of 0.5, whose rounding at
 * 2^-24 is exactly f16's subnormal step; NaN stays NaN: quieted, sign and top payload bits kept. */
static inline uint16_t f32_to_f16(float f) {
  uint32_t u = as_u32(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t ua = u & 0x7fffffffu;
  int32_t a = (int32_t)ua;
  uint32_t norm = (ua + 0xc8000fffu + ((ua >> 13) & 1u)) >> 13; /* rebias by (15-127)<<23, round */
  uint32_t sub = as_u32(as_f32(ua) + 0.5f) - 0x3f000000u;
  uint32_t is_sub = mask_if(a < 0x38800000); /* below 2^-14: subnormal */
  uint32_t big = mask_if(a >= 0x47800000);   /* >= 65536 before rounding: inf, or NaN */
  /* NaN: quiet, payload truncated, exactly like F16C's vcvtps2ph, so both paths give the same bits. */
  uint32_t special = 0x7c00u | (mask_if(a > 0x7f800000) & (0x0200u | ((ua >> 13) & 0x3ffu)));
  uint32_t r = (sub & is_sub) | (norm & ~is_sub);
  r = (special & big) | (r & ~big);
  return (uint16_t)(r | sign);
}

static inline float bf16_to_f32(uint16_t h) {
  return as_f32((uint32_t)h << 16);
}

static inline uint16_t f32_to_bf16(float f) {
  uint32_t u = as_u32(f);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t qnan = (u >> 16) | 0x40u;
  uint32_t nan = mask_if((int32_t)(u & 0x7fffffffu) > 0x7f800000);
  return (uint16_t)((qnan & nan) | (r & ~nan));
}

float dtr__f16_to_f32(uint16_t h) {
  return f16_to_f32(h);
}
uint16_t dtr__f32_to_f16(float f) {
  return f32_to_f16(f);
}
float dtr__bf16_to_f32(uint16_t h) {
  return bf16_to_f32(h);
}
uint16_t dtr__f32_to_bf16(float f) {
  return f32_to_bf16(f);
}

/* ---------------------------------------------------------------- combiners
 * Floating MAX/MIN propagate NaN (like torch.max): the accumulator stays NaN once it is NaN, and a NaN
 * input replaces it. Integer SUM/PROD wrap (two's complement), computed in unsigned arithmetic. */

#define ID(x) (x)
#define ADD(a, b) ((a) + (b))
#define MUL(a, b) ((a) * (b))
#define FMAX(a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))
#define FMIN(a, b) (((a) < (b) || (a) != (a)) ? (a) : (b))
#define IMAX(a, b) ((a) > (b) ? (a) : (b))
#define IMIN(a, b) ((a) < (b) ? (a) : (b))
#define NOFIN(acc, div) (acc)

/* x86-64: an AVX2 clone of every kernel, chosen at load time (ifunc) when the CPU has it; the f16
 * conversions are arithmetic-bound at SSE2 width. "avx2" and not "arch=x86-64-v3": without FMA the
 * clone runs the same operations as the baseline, so ranks on different CPUs get the same bits.
 *
 * One (type, op) kernel. T: element type, A: accumulator type, LOAD: T -> A, COMB: (A, A) -> A,
 * FIN: (A, div) -> T. The accumulator starts from acc_in (type A: an earlier call's, for chains of
 * ranks) or from in[0], takes in[0..nin-1] in order, and leaves either the accumulator (final == 0,
 * type A) or FIN of it (type T). dtr__reduce_n is one call with acc_in NULL and final set, so a fold
 * split over several calls gives exactly its bits. out may alias acc_in or in[0]. */
#define KF(name, T, A, LOAD, COMB, FIN)                                                                    \
  DTR_CPU_CLONES("avx2")                                                                                   \
  static void f_##name(void *out, const void *acc_in, const void *const *in, int nin, size_t n, int final, \
                       int div) {                                                                          \
    A acc[BLK];                                                                                            \
    (void)div;                                                                                             \
    for (size_t base = 0; base < n; base += BLK) {                                                         \
      size_t m = n - base < BLK ? n - base : BLK;                                                          \
      int k = 0;                                                                                           \
      if (acc_in) {                                                                                        \
        const A *a = (const A *)acc_in + base;                                                             \
        for (size_t i = 0; i < m; i++) acc[i] = a[i];                                                      \
      } else if (nin >= 2) { /* the first pair in one pass */                                              \
        const T *x = (const T *)in[0] + base, *y = (const T *)in[1] + base;                                \
        for (size_t i = 0; i < m; i++) acc[i] = COMB(LOAD(x[i]), LOAD(y[i]));                              \
        k = 2;                                                                                             \
      } else {                                                                                             \
        const T *x = (const T *)in[0] + base;                                                              \
        for (size_t i = 0; i < m; i++) acc[i] = LOAD(x[i]);                                                \
        k = 1;                                                                                             \
      }                                                                                                    \
      for (; k < nin; k++) {                                                                               \
        const T *y = (const T *)in[k] + base;                                                              \
        for (size_t i = 0; i < m; i++) acc[i] = COMB(acc[i], LOAD(y[i]));                                  \
      }                                                                                                    \
      if (final) {                                                                                         \
        T *o = (T *)out + base;                                                                            \
        for (size_t i = 0; i < m; i++) o[i] = FIN(acc[i], div);                                            \
      } else {                                                                                             \
        A *o = (A *)out + base;                                                                            \
        for (size_t i = 0; i < m; i++) o[i] = acc[i];                                                      \
      }                                                                                                    \
    }                                                                                                      \
  }

/* f32 */
#define FIN_AVG_F32(acc, div) ((acc) / (float)(div))
KF(f32_sum, float, float, ID, ADD, NOFIN)
KF(f32_avg, float, float, ID, ADD, FIN_AVG_F32)
KF(f32_max, float, float, ID, FMAX, NOFIN)
KF(f32_min, float, float, ID, FMIN, NOFIN)
KF(f32_prod, float, float, ID, MUL, NOFIN)
/* f64 */
#define FIN_AVG_F64(acc, div) ((acc) / (double)(div))
KF(f64_sum, double, double, ID, ADD, NOFIN)
KF(f64_avg, double, double, ID, ADD, FIN_AVG_F64)
KF(f64_max, double, double, ID, FMAX, NOFIN)
KF(f64_min, double, double, ID, FMIN, NOFIN)
KF(f64_prod, double, double, ID, MUL, NOFIN)
/* bf16: f32 accumulators, one rounding at the end (f16 is below: it has a hardware path) */
#define FIN_BF16(acc, div) f32_to_bf16(acc)
#define FIN_BF16_AVG(acc, div) f32_to_bf16((acc) / (float)(div))
KF(bf16_sum, uint16_t, float, bf16_to_f32, ADD, FIN_BF16)
KF(bf16_avg, uint16_t, float, bf16_to_f32, ADD, FIN_BF16_AVG)
KF(bf16_max, uint16_t, float, bf16_to_f32, FMAX, FIN_BF16)
KF(bf16_min, uint16_t, float, bf16_to_f32, FMIN, FIN_BF16)
KF(bf16_prod, uint16_t, float, bf16_to_f32, MUL, FIN_BF16)
/* i32: wrapping SUM/PROD in uint32; AVG sums exactly in int64 and truncates toward zero */
#define LOAD_U32(x) ((uint32_t)(x))
#define LOAD_I64(x) ((int64_t)(x))
#define FIN_I32(acc, div) ((int32_t)(acc))
#define FIN_I32_AVG(acc, div) ((int32_t)((acc) / (int64_t)(div)))
KF(i32_sum, int32_t, uint32_t, LOAD_U32, ADD, FIN_I32)
KF(i32_avg, int32_t, int64_t, LOAD_I64, ADD, FIN_I32_AVG)
KF(i32_max, int32_t, int32_t, ID, IMAX, NOFIN)
KF(i32_min, int32_t, int32_t, ID, IMIN, NOFIN)
KF(i32_prod, int32_t, uint32_t, LOAD_U32, MUL, FIN_I32)
/* i64: AVG sums exactly in 128 bits */
#define LOAD_U64(x) ((uint64_t)(x))
#define LOAD_I128(x) ((__int128)(x))
#define FIN_I64(acc, div) ((int64_t)(acc))
#define FIN_I64_AVG(acc, div) ((int64_t)((acc) / (__int128)(div)))
KF(i64_sum, int64_t, uint64_t, LOAD_U64, ADD, FIN_I64)
KF(i64_avg, int64_t, __int128, LOAD_I128, ADD, FIN_I64_AVG)
KF(i64_max, int64_t, int64_t, ID, IMAX, NOFIN)
KF(i64_min, int64_t, int64_t, ID, IMIN, NOFIN)
KF(i64_prod, int64_t, uint64_t, LOAD_U64, MUL, FIN_I64)
/* u8: SUM/PROD wrap mod 256; AVG sums in uint32 */
#define LOAD_U32B(x) ((uint32_t)(x))
#define FIN_U8(acc, div) ((uint8_t)(acc))
#define FIN_U8_AVG(acc, div) ((uint8_t)((acc) / (uint32_t)(div)))
KF(u8_sum, uint8_t, uint8_t, ID, ADD, FIN_U8)
KF(u8_avg, uint8_t, uint32_t, LOAD_U32B, ADD, FIN_U8_AVG)
KF(u8_max, uint8_t, uint8_t, ID, IMAX, NOFIN)
KF(u8_min, uint8_t, uint8_t, ID, IMIN, NOFIN)
KF(u8_prod, uint8_t, uint8_t, ID, MUL, FIN_U8)

/* f16: converted a block at a time into f32 scratch (with F16C's vcvtph2ps/vcvtps2ph where the CPU has
 * them: the bit-twiddling conversions are the bottleneck otherwise), combined in f32, rounded once.
 * The software conversions match F16C bit for bit, NaN payloads included. */
static void cvt_f16_f32_sw(float *dst, const uint16_t *src, size_t m) {
  for (size_t i = 0; i < m; i++) dst[i] = f16_to_f32(src[i]);
}
static void cvt_f32_f16_sw(uint16_t *dst, const float *src, size_t m) {
  for (size_t i = 0; i < m; i++) dst[i] = f32_to_f16(src[i]);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define HAVE_F16C_PATH 1
__attribute__((target("avx2,f16c"))) static void cvt_f16_f32_hw(float *dst, const uint16_t *src, size_t m) {
  size_t i = 0;
  for (; i + 8 <= m; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < m; i++) dst[i] = f16_to_f32(src[i]);
}
__attribute__((target("avx2,f16c"))) static void cvt_f32_f16_hw(uint16_t *dst, const float *src, size_t m) {
  size_t i = 0;
  for (; i + 8 <= m; i += 8)
    _mm_storeu_si128((__m128i *)(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < m; i++) dst[i] = f32_to_f16(src[i]);
}
#endif

/* acc op= x over m floats, with the same combiners as the other kernels. */
DTR_CPU_CLONES("avx2") static void comb_f32(float *acc, const float *x, size_t m, dtr_redop op) {
  switch (op) {
    case DTR_SUM:
    case DTR_AVG:
      for (size_t i = 0; i < m; i++) acc[i] = ADD(acc[i], x[i]);
      break;
    case DTR_PROD:
      for (size_t i = 0; i < m; i++) acc[i] = MUL(acc[i], x[i]);
      break;
    case DTR_MAX:
      for (size_t i = 0; i < m; i++) acc[i] = FMAX(acc[i], x[i]);
      break;
    case DTR_MIN:
      for (size_t i = 0; i < m; i++) acc[i] = FMIN(acc[i], x[i]);
      break;
  }
}

DTR_CPU_CLONES("avx2") static void div_f32(float *acc, size_t m, float d) {
  for (size_t i = 0; i < m; i++) acc[i] = acc[i] / d;
}

/* The f16 kernel (as KF): an f32 accumulator (acc_in: carried over from an earlier call), rounded once
 * when final. */
static void fold_f16(void *out, const void *acc_in, const void *const *in, int nin, size_t n, dtr_redop op,
                     int final, int div) {
  void (*to32)(float *, const uint16_t *, size_t) = cvt_f16_f32_sw;
  void (*to16)(uint16_t *, const float *, size_t) = cvt_f32_f16_sw;
#ifdef HAVE_F16C_PATH
  if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2")) {
    to32 = cvt_f16_f32_hw;
    to16 = cvt_f32_f16_hw;
  }
#endif
  float acc[BLK], x[BLK];
  for (size_t base = 0; base < n; base += BLK) {
    size_t m = n - base < BLK ? n - base : BLK;
    int k = 0;
    if (acc_in) {
      memcpy(acc, (const float *)acc_in + base, m * sizeof(float));
    } else {
      to32(acc, (const uint16_t *)in[0] + base, m);
      k = 1;
    }
    for (; k < nin; k++) {
      to32(x, (const uint16_t *)in[k] + base, m);
      comb_f32(acc, x, m, op);
    }
    if (final) {
      if (op == DTR_AVG) div_f32(acc, m, (float)div);
      to16((uint16_t *)out + base, acc, m);
    } else {
      memcpy((float *)out + base, acc, m * sizeof(float));
    }
  }
}

typedef void (*fold_fn)(void *, const void *, const void *const *, int, size_t, int, int);

#define F16_FOLD(fname, OP)                                                                             \
  static void fname(void *out, const void *acc_in, const void *const *in, int nin, size_t n, int final, \
                    int div) {                                                                          \
    fold_f16(out, acc_in, in, nin, n, OP, final, div);                                                  \
  }
F16_FOLD(f_f16_sum, DTR_SUM)
F16_FOLD(f_f16_avg, DTR_AVG)
F16_FOLD(f_f16_max, DTR_MAX)
F16_FOLD(f_f16_min, DTR_MIN)
F16_FOLD(f_f16_prod, DTR_PROD)

static const fold_fn folds[7][5] = {
    {f_f32_sum, f_f32_avg, f_f32_max, f_f32_min, f_f32_prod},
    {f_f64_sum, f_f64_avg, f_f64_max, f_f64_min, f_f64_prod},
    {f_f16_sum, f_f16_avg, f_f16_max, f_f16_min, f_f16_prod},
    {f_bf16_sum, f_bf16_avg, f_bf16_max, f_bf16_min, f_bf16_prod},
    {f_i32_sum, f_i32_avg, f_i32_max, f_i32_min, f_i32_prod},
    {f_i64_sum, f_i64_avg, f_i64_max, f_i64_min, f_i64_prod},
    {f_u8_sum, f_u8_avg, f_u8_max, f_u8_min, f_u8_prod},
};

/* The accumulator types of the kernels above, in bytes. */
static const unsigned char acc_bytes[7][5] = {
    {4, 4, 4, 4, 4},  /* f32 */
    {8, 8, 8, 8, 8},  /* f64 */
    {4, 4, 4, 4, 4},  /* f16: f32 */
    {4, 4, 4, 4, 4},  /* bf16: f32 */
    {4, 8, 4, 4, 4},  /* i32: AVG in int64 */
    {8, 16, 8, 8, 8}, /* i64: AVG in int128 */
    {1, 4, 1, 1, 1},  /* u8: AVG in uint32 */
};

size_t dtr__reduce_acc_size(dtr_dtype t, dtr_redop op) {
  if ((unsigned)t >= 7u || (unsigned)op >= 5u) return 0;
  return acc_bytes[t][op];
}

void dtr__reduce_fold(void *out, const void *acc_in, const void *const *in, int nin, size_t n, dtr_dtype t,
                      dtr_redop op, int final, int avg_div) {
  if (n == 0 || (unsigned)t >= 7u || (unsigned)op >= 5u || nin < 0 || (!acc_in && nin <= 0)) return;
  folds[t][op](out, acc_in, in, nin, n, final, avg_div > 0 ? avg_div : 1);
}

void dtr__reduce_n(void *out, const void *const *in, int nin, size_t n, dtr_dtype t, dtr_redop op,
                   int avg_div) {
  if (nin <= 0 || n == 0 || (unsigned)t >= 7u || (unsigned)op >= 5u) return;
  folds[t][op](out, NULL, in, nin, n, 1, avg_div > 0 ? avg_div : 1);
}
