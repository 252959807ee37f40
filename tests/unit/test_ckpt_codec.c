/* The chunk codec (checkpoint/codec.c): bit-exact round trips for every dtype, element counts 0, 1,
 * odd and large, special float values, every level class; the ratio it must reach on gaussian data;
 * and malformed stored bytes (flipped, truncated, wrong codec) give DTR_ERR_PROTOCOL, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ckpt_format.h"
#include "tests/unit/test_util.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) {
  return test_xorshift64(&rng);
}
static double uniform(void) {
  return ((next_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
/* Irwin-Hall: the sum of 12 uniforms less 6 is close to N(0,1), without libm (tests link no -lm). */
static double gauss(void) {
  double s = 0;
  for (int i = 0; i < 12; i++) s += uniform();
  return s - 6.0;
}
static uint16_t to_bf16(float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  return (uint16_t)((v + 0x7fff + ((v >> 16) & 1)) >> 16);
}

static const dtr_dtype ALL[] = {DTR_F32, DTR_F64, DTR_F16, DTR_BF16, DTR_I32, DTR_I64, DTR_U8};

/* Fill n elements of t: pattern 0 gaussian-like values, 1 zeros, 2 random bytes (NaNs, infinities,
 * denormals included), 3 a constant, 4 the gaussians made non-negative and 5 non-positive (the sign
 * bit constant: the packed last plane). */
static void fill(void *buf, size_t n, dtr_dtype t, int pattern) {
  size_t es = dtr_dtype_size(t);
  uint8_t *b = buf;
  for (size_t i = 0; i < n; i++) {
    uint64_t bits = 0;
    double g = gauss() * 0.02;
    switch (pattern) {
      case 0:
        if (t == DTR_F32) {
          float f = (float)g;
          memcpy(&bits, &f, 4);
        } else if (t == DTR_F64) {
          memcpy(&bits, &g, 8);
        } else if (t == DTR_BF16) {
          bits = to_bf16((float)g);
        } else if (t == DTR_F16) {
          bits = (next_u64() & 0x83ff) | 0x2000 | ((next_u64() & 3) << 10); /* small half floats */
        } else {
          bits = (uint64_t)(int64_t)(g * 5000);
        }
        break;
      case 1:
        bits = 0;
        break;
      case 2:
        bits = next_u64();
        break;
      case 3:
        bits = 0x3f8000003f800000ull;
        break;
      default:
        fill(&bits, 1, t, 0);
        if (t == DTR_F32 || t == DTR_F64 || t == DTR_F16 || t == DTR_BF16) {
          uint64_t sign = 1ull << (8 * es - 1);
          bits = pattern == 4 ? bits & ~sign : bits | sign;
        }
        break;
    }
    memcpy(b + i * es, &bits, es);
  }
}

static int roundtrip(dtr__codec_ctx *cx, const void *src, size_t raw, dtr_dtype t, int level,
                     size_t *stored_out, uint32_t *codec_out) {
  size_t cap = dtr__codec_bound(raw);
  uint8_t *scratch = malloc(raw + 1), *dst = malloc(cap + 1), *back = malloc(raw + 1);
  size_t stored = 0;
  uint32_t codec = 99;
  int ok = 1;
  dtr_result rc = dtr__codec_encode(cx, src, raw, t, level, scratch, dst, cap, &stored, &codec);
  if (rc != DTR_OK || stored > cap || codec > DTR__CODEC_PLANES_ZSTD) {
    fprintf(stderr, "encode %s raw %zu level %d: rc %d stored %zu codec %u\n", dtr_dtype_name(t), raw, level,
            rc, stored, codec);
    ok = 0;
  } else {
    memset(back, 0xAB, raw + 1);
    rc = dtr__codec_decode(cx, codec, dst, stored, t, back, raw, scratch);
    if (rc != DTR_OK || (raw && memcmp(back, src, raw) != 0) || back[raw] != 0xAB) {
      fprintf(stderr, "decode %s raw %zu level %d codec %u: rc %d, data %s\n", dtr_dtype_name(t), raw, level,
              codec, rc, raw && memcmp(back, src, raw) ? "differs" : "same");
      ok = 0;
    }
  }
  if (stored_out) *stored_out = stored;
  if (codec_out) *codec_out = codec;
  free(scratch);
  free(dst);
  free(back);
  return ok;
}

static void test_roundtrips(dtr__codec_ctx *cx) {
  static const size_t counts[] = {0, 1, 2, 3, 7, 1001, 65537};
  static const int levels[] = {1, 0, -3, 3, 9};
  for (size_t ti = 0; ti < sizeof ALL / sizeof ALL[0]; ti++) {
    dtr_dtype t = ALL[ti];
    size_t es = dtr_dtype_size(t);
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
      for (int pat = 0; pat < 6; pat++) {
        size_t n = counts[ci], raw = n * es;
        uint8_t *src = malloc(raw + 1);
        fill(src, n, t, pat);
        for (size_t li = 0; li < sizeof levels / sizeof levels[0]; li++)
          CHECK(roundtrip(cx, src, raw, t, levels[li], NULL, NULL));
        /* A byte count that is not a whole number of elements: the tail travels raw. */
        if (raw > 1 && es > 1) CHECK(roundtrip(cx, src, raw - 1, t, 1, NULL, NULL));
        free(src);
      }
    }
  }
}

/* Gaussian weights must beat plain zstd clearly (the figures: bf16 >= 1.45x, f32 >= 1.18x);
 * the unit test asks a little less, the bench checks the targets. Constant data must collapse. */
static void test_ratios(dtr__codec_ctx *cx) {
  size_t n = 1 << 20;
  uint8_t *src = malloc(n * 4);
  size_t stored;
  uint32_t codec;
  fill(src, n, DTR_BF16, 0);
  CHECK(roundtrip(cx, src, n * 2, DTR_BF16, 1, &stored, &codec));
  CHECK_EQ_INT(codec, DTR__CODEC_PLANES_ZSTD);
  printf("bf16 gaussian ratio %.3f\n", (double)n * 2 / stored);
  CHECK((double)n * 2 / stored > 1.40);
  fill(src, n, DTR_F32, 0);
  CHECK(roundtrip(cx, src, n * 4, DTR_F32, 1, &stored, &codec));
  printf("f32 gaussian ratio %.3f\n", (double)n * 4 / stored);
  CHECK((double)n * 4 / stored > 1.15);
  /* Never negative (the sign plane packs 8 bytes into 7): better than the signed gaussian. */
  size_t signed_stored = stored;
  fill(src, n, DTR_F32, 4);
  CHECK(roundtrip(cx, src, n * 4, DTR_F32, 1, &stored, &codec));
  printf("f32 non-negative gaussian ratio %.3f\n", (double)n * 4 / stored);
  CHECK(stored + n / 16 < signed_stored);
  fill(src, n, DTR_F32, 1);
  CHECK(roundtrip(cx, src, n * 4, DTR_F32, 1, &stored, &codec));
  CHECK(stored < n * 4 / 100);
  fill(src, n / 2, DTR_I64, 0);
  CHECK(roundtrip(cx, src, n * 4, DTR_I64, 1, &stored, &codec));
  CHECK_EQ_INT(codec, DTR__CODEC_ZSTD);
  /* Random bytes do not shrink: stored raw, never larger. */
  fill(src, n, DTR_U8, 2);
  CHECK(roundtrip(cx, src, n, DTR_U8, 1, &stored, &codec));
  CHECK_EQ_INT(codec, DTR__CODEC_RAW);
  CHECK_EQ_INT(stored, n);
  free(src);
}

/* Every malformed input: decode must answer DTR_OK (garbage that still parses: the shard's checksum is
 * what catches those) or DTR_ERR_PROTOCOL, and never write outside dst. */
static int decode_survives(dtr__codec_ctx *cx, uint32_t codec, const uint8_t *in, size_t len, dtr_dtype t,
                           size_t raw) {
  uint8_t *dst = malloc(raw + 16), *scratch = malloc(raw + 1);
  memset(dst, 0xCD, raw + 16);
  dtr_result rc = dtr__codec_decode(cx, codec, in, len, t, dst, raw, scratch);
  int ok = (rc == DTR_OK || rc == DTR_ERR_PROTOCOL) && dst[raw] == 0xCD && dst[raw + 15] == 0xCD;
  free(dst);
  free(scratch);
  return ok ? (rc == DTR_OK ? 1 : 2) : 0;
}

static void test_corrupt(dtr__codec_ctx *cx) {
  const dtr_dtype types[] = {DTR_BF16, DTR_F32, DTR_F64, DTR_I32};
  for (size_t ti = 0; ti < 4; ti++) {
    dtr_dtype t = types[ti];
    size_t es = dtr_dtype_size(t), n = 3001, raw = n * es, cap = dtr__codec_bound(raw), stored;
    uint8_t *src = malloc(raw), *enc = malloc(cap), *scratch = malloc(raw), *bad = malloc(cap);
    uint32_t codec;
    fill(src, n, t, t == DTR_F32 ? 4 : 0); /* f32: never negative, so a packed plane is in there */
    CHECK(dtr__codec_encode(cx, src, raw, t, 1, scratch, enc, cap, &stored, &codec) == DTR_OK);
    CHECK(codec != DTR__CODEC_RAW);
    int protocol = 0, survived = 0, tries = 0;
    /* Every truncation is detected. */
    for (size_t cut = 0; cut < stored; cut += 1 + cut / 16) {
      int r = decode_survives(cx, codec, enc, cut, t, raw);
      CHECK_EQ_INT(r, 2);
    }
    /* Flipped bytes: some flips land in raw mantissa planes and decode to other values; the rest fail. */
    for (size_t pos = 0; pos < stored && tries < 3000; pos += 1 + pos / 64, tries++) {
      memcpy(bad, enc, stored);
      bad[pos] ^= (uint8_t)(1 + (next_u64() % 255));
      int r = decode_survives(cx, codec, bad, stored, t, raw);
      survived += r != 0;
      protocol += r == 2;
    }
    CHECK_EQ_INT(survived, tries);
    CHECK(protocol > 0);
    /* Random garbage of assorted lengths under every codec number. */
    for (int k = 0; k < 200; k++) {
      size_t len = next_u64() % (stored + 64);
      if (len > cap) len = cap;
      for (size_t i = 0; i < len; i++) bad[i] = (uint8_t)next_u64();
      if (len > 2 && k % 2) {
        bad[0] = enc[0]; /* keep the planes magic so the per-plane parsing is reached */
        bad[1] = enc[1];
      }
      CHECK(decode_survives(cx, (uint32_t)(k % 5), bad, len, t, raw) != 0);
    }
    /* Wrong expectations: a different raw size, planes for an integer dtype, an unknown codec. */
    CHECK_EQ_INT(decode_survives(cx, codec, enc, stored, t, raw + es), 2);
    CHECK_EQ_INT(decode_survives(cx, codec, enc, stored, t, raw - es), 2);
    CHECK_EQ_INT(decode_survives(cx, DTR__CODEC_PLANES_ZSTD, enc, stored, DTR_I64, raw), 2);
    CHECK_EQ_INT(decode_survives(cx, 7, enc, stored, t, raw), 2);
    CHECK_EQ_INT(decode_survives(cx, DTR__CODEC_RAW, enc, stored, t, raw), stored == raw ? 1 : 2);
    free(src);
    free(enc);
    free(scratch);
    free(bad);
  }
}

static void test_args(dtr__codec_ctx *cx) {
  uint8_t src[64] = {0}, scratch[64], dst[128];
  size_t stored;
  uint32_t codec;
  CHECK_EQ_INT(dtr__codec_encode(cx, src, 64, DTR_F32, 100, scratch, dst, sizeof dst, &stored, &codec),
               DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr__codec_encode(cx, src, 64, (dtr_dtype)42, 1, scratch, dst, sizeof dst, &stored, &codec),
               DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr__codec_encode(cx, src, 64, DTR_F32, 1, scratch, dst, 10, &stored, &codec),
               DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr__codec_encode(NULL, src, 64, DTR_F32, 1, scratch, dst, sizeof dst, &stored, &codec),
               DTR_ERR_INVALID);
  CHECK(dtr__codec_bound(1000) >= 1000);
  dtr__codec_ctx_destroy(NULL);
}

int main(void) {
  dtr__codec_ctx *cx = NULL;
  CHECK(dtr__codec_ctx_create(&cx) == DTR_OK);
  if (!cx) return TEST_EXIT();
  test_roundtrips(cx);
  test_ratios(cx);
  test_corrupt(cx);
  test_args(cx);
  dtr__codec_ctx_destroy(cx);
  return TEST_EXIT();
}
