/* coll_ref.h — what the collective tests and benchmarks share: f16/bf16 <-> f32 conversions written
 * independently of the library (round to nearest even), a deterministic input generator that lets any
 * rank produce any other rank's data, and the serial reference reduction in rank order.
 * Header-only (static functions) so helpers and bench programs can include it without a library. */
#ifndef DTRAIN_TESTS_COLL_REF_H
#define DTRAIN_TESTS_COLL_REF_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dtrain/comm.h"

/* ---- half precision, round to nearest even */

static inline uint16_t cref_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
  if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
    if (ax < 0x33000000u) return (uint16_t)sign;            /* <= 2^-25 (ties to even zero) */
    uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = (ax >> 13) - (112u << 10), rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
  return (uint16_t)(sign | r);
}

static inline float cref_f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0) {
    float v = (float)m * 0x1p-24f;
    return sign ? -v : v;
  }
  if (e == 31)
    x = sign | 0x7f800000u | (m << 13);
  else
    x = sign | ((e + 112u) << 23) | (m << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static inline uint16_t cref_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline float cref_bf16_to_f32(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static inline size_t cref_esz(dtr_dtype t) {
  switch (t) {
    case DTR_F32:
    case DTR_I32:
      return 4;
    case DTR_F64:
    case DTR_I64:
      return 8;
    case DTR_F16:
    case DTR_BF16:
      return 2;
    case DTR_U8:
      return 1;
  }
  return 0;
}

static inline int cref_is_float(dtr_dtype t) {
  return t == DTR_F32 || t == DTR_F64 || t == DTR_F16 || t == DTR_BF16;
}

/* ---- deterministic inputs: element i of rank r's buffer for a test tagged `tag` */

static inline uint64_t cref_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static inline uint64_t cref_tag(uint64_t seed, int kind, dtr_dtype t, dtr_redop op, size_t count) {
  return cref_mix(seed ^
                  cref_mix(((uint64_t)kind << 48) ^ ((uint64_t)t << 40) ^ ((uint64_t)op << 32) ^ count));
}

/* Values keep every reduction of up to 64 ranks in range: floats in [-4, 4] away from zero (sum, avg,
 * max, min) or in [0.75, 1.25] (prod); integers small; u8 sums stay below 256 for 8 ranks (u8 prod
 * wraps modulo 256, which is well defined whatever the accumulator width). */
static inline void cref_gen(void *dst, dtr_dtype t, dtr_redop op, uint64_t tag, int rank, size_t i) {
  uint64_t h = cref_mix(tag ^ cref_mix(((uint64_t)(uint32_t)rank << 40) ^ (uint64_t)i));
  double u = (double)(h >> 11) * 0x1p-53; /* [0, 1) */
  double fv;
  if (op == DTR_PROD) {
    fv = 0.75 + 0.5 * u;
  } else {
    fv = 8.0 * u - 4.0;
    if (fabs(fv) < 1.0 / 256) fv = 1.0 / 256;
  }
  switch (t) {
    case DTR_F32: {
      float v = (float)fv;
      memcpy(dst, &v, 4);
      break;
    }
    case DTR_F64:
      memcpy(dst, &fv, 8);
      break;
    case DTR_F16: {
      uint16_t v = cref_f32_to_f16((float)fv);
      memcpy(dst, &v, 2);
      break;
    }
    case DTR_BF16: {
      uint16_t v = cref_f32_to_bf16((float)fv);
      memcpy(dst, &v, 2);
      break;
    }
    case DTR_I32: {
      static const int32_t p[4] = {-2, -1, 1, 2};
      int32_t v = op == DTR_PROD ? p[h & 3] : (int32_t)(h % 201) - 100;
      memcpy(dst, &v, 4);
      break;
    }
    case DTR_I64: {
      static const int64_t p[4] = {-2, -1, 1, 2};
      int64_t v = op == DTR_PROD ? p[h & 3] : (int64_t)(h % 2000001) - 1000000;
      memcpy(dst, &v, 8);
      break;
    }
    case DTR_U8: {
      uint8_t v = op == DTR_PROD ? (uint8_t)(1 + h % 3) : (uint8_t)(h % 32);
      *(uint8_t *)dst = v;
      break;
    }
  }
}

static inline void cref_fill(void *buf, dtr_dtype t, dtr_redop op, uint64_t tag, int rank, size_t gbase,
                             size_t n) {
  size_t es = cref_esz(t);
  for (size_t i = 0; i < n; i++) cref_gen((char *)buf + i * es, t, op, tag, rank, gbase + i);
}

/* An element as a double (for messages and tolerances). */
static inline double cref_as_double(const void *p, dtr_dtype t) {
  switch (t) {
    case DTR_F32: {
      float v;
      memcpy(&v, p, 4);
      return v;
    }
    case DTR_F64: {
      double v;
      memcpy(&v, p, 8);
      return v;
    }
    case DTR_F16: {
      uint16_t v;
      memcpy(&v, p, 2);
      return cref_f16_to_f32(v);
    }
    case DTR_BF16: {
      uint16_t v;
      memcpy(&v, p, 2);
      return cref_bf16_to_f32(v);
    }
    case DTR_I32: {
      int32_t v;
      memcpy(&v, p, 4);
      return v;
    }
    case DTR_I64: {
      int64_t v;
      memcpy(&v, p, 8);
      return (double)v;
    }
    case DTR_U8:
      return *(const uint8_t *)p;
  }
  return 0;
}

#define CREF_COMBINE(acc, v, op) \
  do {                           \
    switch (op) {                \
      case DTR_SUM:              \
      case DTR_AVG:              \
        acc = acc + v;           \
        break;                   \
      case DTR_PROD:             \
        acc = acc * v;           \
        break;                   \
      case DTR_MAX:              \
        acc = v > acc ? v : acc; \
        break;                   \
      case DTR_MIN:              \
        acc = v < acc ? v : acc; \
        break;                   \
    }                            \
  } while (0)

/* The serial reference: out[i] = op over members[0..m-1] (in that order) of element gbase+i of each
 * member's input; f16/bf16 accumulated in f32 and rounded once; avg divides the sum by m (integers
 * truncate toward zero). This is the order the host backend promises, so its bits must match. */
static inline void cref_reduce(void *out, dtr_dtype t, dtr_redop op, uint64_t tag, const int *members, int m,
                               size_t gbase, size_t n) {
  unsigned char e[8];
  for (size_t i = 0; i < n; i++) {
    switch (t) {
      case DTR_F32: {
        float acc = 0, v;
        for (int k = 0; k < m; k++) {
          cref_gen(e, t, op, tag, members[k], gbase + i);
          memcpy(&v, e, 4);
          if (k == 0)
            acc = v;
          else
            CREF_COMBINE(acc, v, op);
        }
        if (op == DTR_AVG) acc = acc / (float)m;
        memcpy((char *)out + 4 * i, &acc, 4);
        break;
      }
      case DTR_F64: {
        double acc = 0, v;
        for (int k = 0; k < m; k++) {
          cref_gen(e, t, op, tag, members[k], gbase + i);
          memcpy(&v, e, 8);
          if (k == 0)
            acc = v;
          else
            CREF_COMBINE(acc, v, op);
        }
        if (op == DTR_AVG) acc = acc / (double)m;
        memcpy((char *)out + 8 * i, &acc, 8);
        break;
      }
      case DTR_F16:
      case DTR_BF16: {
        float acc = 0, v;
        for (int k = 0; k < m; k++) {
          uint16_t h;
          cref_gen(&h, t, op, tag, members[k], gbase + i);
          v = t == DTR_F16 ? cref_f16_to_f32(h) : cref_bf16_to_f32(h);
          if (k == 0)
            acc = v;
          else
            CREF_COMBINE(acc, v, op);
        }
        if (op == DTR_AVG) acc = acc / (float)m;
        uint16_t r = t == DTR_F16 ? cref_f32_to_f16(acc) : cref_f32_to_bf16(acc);
        memcpy((char *)out + 2 * i, &r, 2);
        break;
      }
      case DTR_I32: {
        int32_t acc = 0, v;
        for (int k = 0; k < m; k++) {
          cref_gen(&v, t, op, tag, members[k], gbase + i);
          if (k == 0)
            acc = v;
          else
            CREF_COMBINE(acc, v, op);
        }
        if (op == DTR_AVG) acc = acc / m;
        memcpy((char *)out + 4 * i, &acc, 4);
        break;
      }
      case DTR_I64: {
        int64_t acc = 0, v;
        for (int k = 0; k < m; k++) {
          cref_gen(&v, t, op, tag, members[k], gbase + i);
          if (k == 0)
            acc = v;
          else
            CREF_COMBINE(acc, v, op);
        }
        if (op == DTR_AVG) acc = acc / m;
        memcpy((char *)out + 8 * i, &acc, 8);
        break;
      }
      case DTR_U8: {
        uint32_t acc = 0;
        for (int k = 0; k < m; k++) {
          uint8_t v8;
          cref_gen(&v8, t, op, tag, members[k], gbase + i);
          uint32_t v = v8;
          if (k == 0)
            acc = v;
          else
            CREF_COMBINE(acc, v, op);
          acc &= 0xffu;
        }
        if (op == DTR_AVG) acc = acc / (uint32_t)m;
        ((uint8_t *)out)[i] = (uint8_t)acc;
        break;
      }
    }
  }
}

/* Tolerance for backends that do not promise our order (mpi): |got - ref| <= (m + 2) * eps * mag, with
 * eps the type's unit roundoff times two and mag the sum of |inputs| (sum), that over m (avg), or the
 * product of |inputs| (prod). max/min and integers are exact. */
static inline double cref_tolerance(dtr_dtype t, dtr_redop op, uint64_t tag, const int *members, int m,
                                    size_t gi) {
  double eps = t == DTR_F32    ? 0x1p-23
               : t == DTR_F64  ? 0x1p-52
               : t == DTR_F16  ? 0x1p-10
               : t == DTR_BF16 ? 0x1p-7
                               : 0;
  if (eps == 0 || op == DTR_MAX || op == DTR_MIN) return 0;
  unsigned char e[8];
  double mag = op == DTR_PROD ? 1 : 0;
  for (int k = 0; k < m; k++) {
    cref_gen(e, t, op, tag, members[k], gi);
    double v = fabs(cref_as_double(e, t));
    mag = op == DTR_PROD ? mag * v : mag + v;
  }
  if (op == DTR_AVG) mag /= m;
  return (m + 2) * eps * mag;
}

#endif
