/* The chunk codec: float elements are bit-rotated so the whole exponent lands in one byte, split into
 * byte planes (exponent plane first), and each plane is zstd-compressed, bit-packed (a constant sign)
 * or stored raw; other dtypes go through plain zstd. docs/checkpoint-format.md has the stored bytes. */
/* For ZSTD_c_literalCompressionMode and ZSTD_ps_enable (zstd.h's experimental section, 1.5.x): only
 * numbers passed through the stable ZSTD_CCtx_setParameter, no static-only symbol is linked, and a
 * library that refused them would still compress correctly. */
#define ZSTD_STATIC_LINKING_ONLY
/* The plane split/join loops must be vectorised to keep up with zstd (2x the throughput of -O2's
 * cheap cost model with GCC 12); clang vectorises them at -O2 already. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "checkpoint/ckpt_format.h"
#include "common/check.h"

struct dtr__codec_ctx {
  ZSTD_CCtx *cc; /* plain zstd at the level asked for (integers, blobs) */
  ZSTD_CCtx *cp; /* byte planes: entropy coding first, see set_level */
  ZSTD_DCtx *dc;
  int level; /* the level cc and cp are set to; 0 before the first encode */
};

/* Planes header: magic byte, plane count, then per plane a mode byte and a u32 stored length. */
#define PLANES_MAGIC 0xD7
#define PLANE_RAW 0
#define PLANE_ZSTD 1
#define PLANE_PACK7_0 2 /* bit 0 of every byte is 0: bits 7..1 packed, 8 bytes into 7 */
#define PLANE_PACK7_1 3 /* the same with bit 0 set */
#define PLANES_HDR(n) (2 + 5 * (size_t)(n))
#define MAX_PLANES 8

dtr_result dtr__codec_ctx_create(dtr__codec_ctx **out) {
  dtr__codec_ctx *cx = calloc(1, sizeof *cx);
  if (!cx) return DTR_ERR_NOMEM;
  cx->cc = ZSTD_createCCtx();
  cx->cp = ZSTD_createCCtx();
  cx->dc = ZSTD_createDCtx();
  if (!cx->cc || !cx->cp || !cx->dc) {
    dtr__codec_ctx_destroy(cx);
    return DTR_ERR_NOMEM;
  }
  *out = cx;
  return DTR_OK;
}

void dtr__codec_ctx_destroy(dtr__codec_ctx *cx) {
  if (!cx) return;
  ZSTD_freeCCtx(cx->cc);
  ZSTD_freeCCtx(cx->cp);
  ZSTD_freeDCtx(cx->dc);
  free(cx);
}

size_t dtr__codec_bound(size_t raw_bytes) {
  /* Every path falls back to raw when it does not shrink, so the stored size never exceeds raw; the
   * slack only keeps callers safe if that rule is ever loosened. */
  return raw_bytes + PLANES_HDR(MAX_PLANES);
}

static int is_float(dtr_dtype t) {
  return t == DTR_F32 || t == DTR_F64 || t == DTR_F16 || t == DTR_BF16;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Split n elements into planes at dst (plane k at dst + k*n, plane 0 the most significant byte after a
 * left rotation by one bit, i.e. [exponent...][...mantissa sign]). Little-endian host assumed, like
 * the rest of dtrain's on-disk formats. */
static void split_planes(const void *src, size_t n, size_t esize, uint8_t *dst) {
  if (esize == 2) {
    const uint16_t *s = src;
    uint8_t *p0 = dst, *p1 = dst + n;
    for (size_t i = 0; i < n; i++) {
      uint16_t v = (uint16_t)((s[i] << 1) | (s[i] >> 15));
      p0[i] = (uint8_t)(v >> 8);
      p1[i] = (uint8_t)v;
    }
  } else if (esize == 4) {
    const uint32_t *s = src;
    uint8_t *p0 = dst, *p1 = dst + n, *p2 = dst + 2 * n, *p3 = dst + 3 * n;
    for (size_t i = 0; i < n; i++) {
      uint32_t v = (s[i] << 1) | (s[i] >> 31);
      p0[i] = (uint8_t)(v >> 24);
      p1[i] = (uint8_t)(v >> 16);
      p2[i] = (uint8_t)(v >> 8);
      p3[i] = (uint8_t)v;
    }
  } else {
    const uint64_t *s = src;
    for (size_t i = 0; i < n; i++) {
      uint64_t v = (s[i] << 1) | (s[i] >> 63);
      for (size_t k = 0; k < 8; k++) dst[k * n + i] = (uint8_t)(v >> (56 - 8 * k));
    }
  }
}

/* The inverse of split_planes; plane k is read from pl[k] (straight from the stored bytes when it was
 * stored raw, so raw planes are never copied twice). */
static void join_planes(const uint8_t *const *pl, size_t n, size_t esize, void *dst) {
  if (esize == 2) {
    uint16_t *d = dst;
    const uint8_t *p0 = pl[0], *p1 = pl[1];
    for (size_t i = 0; i < n; i++) {
      uint16_t v = (uint16_t)(p0[i] << 8 | p1[i]);
      d[i] = (uint16_t)((v >> 1) | (v << 15));
    }
  } else if (esize == 4) {
    uint32_t *d = dst;
    const uint8_t *p0 = pl[0], *p1 = pl[1], *p2 = pl[2], *p3 = pl[3];
    for (size_t i = 0; i < n; i++) {
      uint32_t v = (uint32_t)p0[i] << 24 | (uint32_t)p1[i] << 16 | (uint32_t)p2[i] << 8 | p3[i];
      d[i] = (v >> 1) | (v << 31);
    }
  } else {
    uint64_t *d = dst;
    for (size_t i = 0; i < n; i++) {
      uint64_t v = 0;
      for (size_t k = 0; k < 8; k++) v |= (uint64_t)pl[k][i] << (56 - 8 * k);
      d[i] = (v >> 1) | (v << 63);
    }
  }
}

/* Mantissa planes are close to random; zstd would spend time finding that out. A histogram of a
 * sample (bytes shifted right by `shift`) says so for the price of a few thousand byte reads: a
 * chi-square against the flat histogram near its expected value (bins - 1, sd sqrt(2 (bins - 1)))
 * means no entropy coder gains enough to matter. The bound is generous: only plainly flat planes
 * skip zstd. */
static int looks_random(const uint8_t *p, size_t n, int shift) {
  if (n < 1024) return 0;
  uint32_t h[256] = {0};
  int bins = 256 >> shift;
  size_t step = n / 4096 ? n / 4096 : 1, cnt = 0;
  for (size_t i = 0; i < n; i += step, cnt++) h[p[i] >> shift]++;
  double expect = (double)cnt / bins, chi = 0;
  for (int i = 0; i < bins; i++) {
    double d = h[i] - expect;
    chi += d * d / expect;
  }
  double sd = shift ? 15.9 : 22.6;
  return chi < (bins - 1) + 6.0 * sd + 0.02 * (double)cnt;
}

/* The last plane holds the sign bit in bit 0 (after the rotation). Tensors that never change sign
 * (Adam's exp_avg_sq, variances, counts) waste that bit in every element; storing the other 7 bits
 * packed saves 1/8 of the plane at memory speed, where Huffman coding the plane to the same size
 * decodes at under 1 GB/s. Returns 0 or 1 for a constant bit 0, -1 otherwise. */
static int const_low_bit(const uint8_t *p, size_t n) {
  uint8_t all_or = 0, all_and = 0xff;
  for (size_t i = 0; i < n; i++) {
    all_or |= p[i];
    all_and &= p[i];
  }
  return (all_or & 1) == (all_and & 1) ? (all_or & 1) : -1;
}

static size_t pack7_len(size_t n) {
  return (7 * n + 7) / 8;
}

/* Bits 7..1 of every byte, 8 bytes into 7 (little-endian bit order). */
static void pack7(const uint8_t *p, size_t n, uint8_t *out) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t x = 0;
    size_t r = n - i < 8 ? n - i : 8;
    memcpy(&x, p + i, r);
    x = (x >> 1) & 0x7f7f7f7f7f7f7f7full;
    x = ((x & 0x7f007f007f007f00ull) >> 1) | (x & 0x007f007f007f007full);
    x = ((x & 0x3fff00003fff0000ull) >> 2) | (x & 0x00003fff00003fffull);
    x = ((x & 0x0fffffff00000000ull) >> 4) | (x & 0x000000000fffffffull);
    memcpy(out + i / 8 * 7, &x, r == 8 ? 7 : (7 * r + 7) / 8);
  }
}

static inline uint64_t spread7(uint64_t x, uint64_t fill) {
  x = ((x & 0x00fffffff0000000ull) << 4) | (x & 0x000000000fffffffull);
  x = ((x & 0x0fffc0000fffc000ull) << 2) | (x & 0x00003fff00003fffull);
  x = ((x & 0x3f803f803f803f80ull) << 1) | (x & 0x007f007f007f007full);
  return (x << 1) | fill;
}

static void unpack7(const uint8_t *in, size_t n, int bit0, uint8_t *p) {
  uint64_t fill = bit0 ? 0x0101010101010101ull : 0;
  size_t i = 0;
  /* Whole blocks with fixed-size loads: reading 8 bytes at block j (7j .. 7j+7) stays inside the
   * packed input while at least one more whole block follows it. */
  for (; i + 16 <= n; i += 8) {
    uint64_t x;
    memcpy(&x, in + i / 8 * 7, 8);
    x = spread7(x & 0x00ffffffffffffffull, fill);
    memcpy(p + i, &x, 8);
  }
  for (; i < n; i += 8) {
    uint64_t x = 0;
    size_t r = n - i < 8 ? n - i : 8;
    memcpy(&x, in + i / 8 * 7, r == 8 ? 7 : (7 * r + 7) / 8);
    x = spread7(x, fill);
    memcpy(p + i, &x, r);
  }
}

/* An exponent plane is a stream of a dozen distinct bytes in random order: nearly all of the gain is
 * zstd's Huffman coding of literals, and match finding only costs time and splits the literals into
 * short sequences (level 1 as is: ratio 2.78 at 0.24 GB/s on a gaussian's exponents; higher levels
 * do worse still, level 9 about 2.6 at 0.06 GB/s). The plane context therefore samples for matches
 * sparsely (fast strategy, minimum match 7: long runs such as all-zero planes are still found) and
 * forces literal compression, which fast + targetLength would otherwise switch off. At level <= 1
 * it looks every 4 KiB (targetLength 4096, hash log 6): ratio 3.08 at 0.9 GB/s, decoding 2.5 GB/s.
 * At higher levels every 256 bytes with a larger hash table (ratio 3.07 on gaussian exponents, more
 * matches on structured planes); the level itself then matters for integer and blob chunks. */
static dtr_result set_level(dtr__codec_ctx *cx, int level) {
  if (level == 0) level = 1;
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) return DTR_ERR_INVALID;
  if (cx->level == level) return DTR_OK;
  ZSTD_CCtx_reset(cx->cc, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_reset(cx->cp, ZSTD_reset_session_and_parameters);
  if (ZSTD_isError(ZSTD_CCtx_setParameter(cx->cc, ZSTD_c_compressionLevel, level)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(cx->cp, ZSTD_c_compressionLevel, 1)))
    return DTR_ERR_INVALID;
  /* A libzstd that refuses one of these still compresses correctly, only slower: ignore failures. */
  ZSTD_CCtx_setParameter(cx->cp, ZSTD_c_strategy, ZSTD_fast);
  ZSTD_CCtx_setParameter(cx->cp, ZSTD_c_minMatch, 7);
  ZSTD_CCtx_setParameter(cx->cp, ZSTD_c_hashLog, level <= 1 ? 6 : 14);
  ZSTD_CCtx_setParameter(cx->cp, ZSTD_c_targetLength, level <= 1 ? 4096 : 256);
  ZSTD_CCtx_setParameter(cx->cp, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
  cx->level = level;
  return DTR_OK;
}

/* Plain zstd into dst when it fits in cap bytes; 0 when it does not (the caller stores raw). */
static size_t zstd_into(ZSTD_CCtx *cc, const void *src, size_t n, void *dst, size_t cap) {
  if (n == 0 || cap == 0) return 0;
  size_t r = ZSTD_compress2(cc, dst, cap, src, n);
  if (ZSTD_isError(r)) {
    /* dstSize_tooSmall is the normal "did not shrink"; anything else leaves the context mid-frame. */
    ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
    return 0;
  }
  return r;
}

dtr_result dtr__codec_encode(dtr__codec_ctx *cx, const void *src, size_t raw_bytes, dtr_dtype t, int level,
                             void *scratch, void *dst, size_t dst_cap, size_t *stored, uint32_t *codec) {
  if (!cx || (raw_bytes && (!src || !dst || !scratch)) || !stored || !codec) return DTR_ERR_INVALID;
  size_t esize = dtr_dtype_size(t);
  if (esize == 0) return DTR_ERR_INVALID;
  if (dst_cap < raw_bytes) return DTR_ERR_INVALID;
  DTR_CHECK(set_level(cx, level));
  uint8_t *out = dst;
  size_t n = raw_bytes / esize;
  if (is_float(t) && n > 0) {
    size_t hdr = PLANES_HDR(esize), tail = raw_bytes - n * esize;
    if (hdr + tail < raw_bytes) {
      split_planes(src, n, esize, scratch);
      out[0] = PLANES_MAGIC;
      out[1] = (uint8_t)esize;
      size_t pos = hdr;
      for (size_t k = 0; k < esize && pos <= raw_bytes; k++) {
        const uint8_t *plane = (const uint8_t *)scratch + k * n;
        /* zstd only counts when it beats raw (or packing), inside the room left below raw_bytes. */
        size_t room = raw_bytes - pos, z = 0, best = n;
        int bit0 = k == esize - 1 ? const_low_bit(plane, n) : -1;
        if (bit0 >= 0) best = pack7_len(n);
        if (k == 0 || !looks_random(plane, n, bit0 >= 0))
          z = zstd_into(cx->cp, plane, n, out + pos, best - 1 < room ? best - 1 : room);
        if (z > 0 && z < best) {
          out[2 + 5 * k] = PLANE_ZSTD;
        } else if (best < n && best <= room) {
          pack7(plane, n, out + pos);
          out[2 + 5 * k] = (uint8_t)(PLANE_PACK7_0 + bit0);
          z = best;
        } else if (n <= room) {
          memcpy(out + pos, plane, n);
          out[2 + 5 * k] = PLANE_RAW;
          z = n;
        } else {
          pos = raw_bytes + 1; /* not even raw fits below raw_bytes: give up on planes */
          break;
        }
        put_u32(out + 3 + 5 * k, (uint32_t)z);
        pos += z;
      }
      if (pos + tail < raw_bytes) {
        memcpy(out + pos, (const uint8_t *)src + n * esize, tail);
        *stored = pos + tail;
        *codec = DTR__CODEC_PLANES_ZSTD;
        return DTR_OK;
      }
    }
  } else if (!is_float(t) && raw_bytes > 0) {
    size_t z = zstd_into(cx->cc, src, raw_bytes, out, raw_bytes - 1);
    if (z > 0) {
      *stored = z;
      *codec = DTR__CODEC_ZSTD;
      return DTR_OK;
    }
  }
  if (raw_bytes) memcpy(out, src, raw_bytes);
  *stored = raw_bytes;
  *codec = DTR__CODEC_RAW;
  return DTR_OK;
}

/* One zstd frame (or several) decoding to exactly n bytes. */
static dtr_result unzstd(dtr__codec_ctx *cx, const void *src, size_t len, void *dst, size_t n) {
  if (n == 0) return len == 0 ? DTR_OK : DTR_ERR_PROTOCOL;
  size_t r = ZSTD_decompressDCtx(cx->dc, dst, n, src, len);
  if (ZSTD_isError(r)) {
    ZSTD_DCtx_reset(cx->dc, ZSTD_reset_session_only);
    return DTR_ERR_PROTOCOL;
  }
  return r == n ? DTR_OK : DTR_ERR_PROTOCOL;
}

dtr_result dtr__codec_decode(dtr__codec_ctx *cx, uint32_t codec, const void *src, size_t stored, dtr_dtype t,
                             void *dst, size_t raw_bytes, void *scratch) {
  if (!cx || (stored && !src) || (raw_bytes && (!dst || !scratch))) return DTR_ERR_INVALID;
  size_t esize = dtr_dtype_size(t);
  if (esize == 0) return DTR_ERR_INVALID;
  const uint8_t *in = src;
  switch (codec) {
    case DTR__CODEC_RAW:
      if (stored != raw_bytes) return DTR_ERR_PROTOCOL;
      if (raw_bytes) memcpy(dst, src, raw_bytes);
      return DTR_OK;
    case DTR__CODEC_ZSTD:
      return unzstd(cx, src, stored, dst, raw_bytes);
    case DTR__CODEC_PLANES_ZSTD: {
      if (!is_float(t)) return DTR_ERR_PROTOCOL;
      size_t n = raw_bytes / esize, tail = raw_bytes - n * esize, hdr = PLANES_HDR(esize);
      if (n == 0 || stored < hdr || in[0] != PLANES_MAGIC || in[1] != esize) return DTR_ERR_PROTOCOL;
      size_t pos = hdr;
      const uint8_t *pl[MAX_PLANES];
      for (size_t k = 0; k < esize; k++) {
        uint8_t mode = in[2 + 5 * k];
        size_t len = get_u32(in + 3 + 5 * k);
        if (len > stored - pos) return DTR_ERR_PROTOCOL;
        if (mode == PLANE_RAW) {
          if (len != n) return DTR_ERR_PROTOCOL;
          pl[k] = in + pos;
        } else if (mode == PLANE_ZSTD) {
          DTR_CHECK(unzstd(cx, in + pos, len, (uint8_t *)scratch + k * n, n));
          pl[k] = (uint8_t *)scratch + k * n;
        } else if ((mode == PLANE_PACK7_0 || mode == PLANE_PACK7_1) && len == pack7_len(n)) {
          unpack7(in + pos, n, mode == PLANE_PACK7_1, (uint8_t *)scratch + k * n);
          pl[k] = (uint8_t *)scratch + k * n;
        } else {
          return DTR_ERR_PROTOCOL;
        }
        pos += len;
      }
      if (stored - pos != tail) return DTR_ERR_PROTOCOL;
      join_planes(pl, n, esize, dst);
      if (tail) memcpy((uint8_t *)dst + n * esize, in + pos, tail);
      return DTR_OK;
    }
    default:
      return DTR_ERR_PROTOCOL;
  }
}
