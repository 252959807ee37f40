/* The synthetic addition task: "a+b=" then the sum's digits reversed, every problem a pure function
 * of (seed, step, sample) so any number of DP ranks, and a resumed job, draw the same ones. A hashed
 * 1/64 of all problems is held out for the exact-match evaluation and never trained on. */
#include <stdint.h>

#include "runtime/model/data.h"

#define HELDOUT_MOD 64
/* Bounded redraws: the chance that 4096 draws in a row are all held out (or, for the evaluation, all
 * trainable) is nil for digits >= 2; with 1 digit the held-out set may be empty and we take what we got. */
#define MAX_DRAWS 4096

uint64_t dtr__data_mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

static int64_t pow10i(int d) {
  int64_t p = 1;
  for (int i = 0; i < d; i++) p *= 10;
  return p;
}

int dtr__addition_is_heldout(uint64_t seed, int digits, int64_t a, int64_t b) {
  uint64_t key = (uint64_t)a * (uint64_t)pow10i(digits) + (uint64_t)b;
  return dtr__data_mix(dtr__data_mix(seed ^ 0x686f6c646f7574ull) ^ key) % HELDOUT_MOD == 0;
}

/* seq receives 3*digits+3 tokens: a (digits, most significant first), '+', b, '=', sum reversed. */
static void encode(int digits, int64_t a, int64_t b, int32_t *seq) {
  int64_t x = a;
  for (int i = digits - 1; i >= 0; i--, x /= 10) seq[i] = (int32_t)(x % 10);
  seq[digits] = DTR_ADD_PLUS;
  x = b;
  for (int i = digits - 1; i >= 0; i--, x /= 10) seq[digits + 1 + i] = (int32_t)(x % 10);
  seq[2 * digits + 1] = DTR_ADD_EQUALS;
  x = a + b;
  for (int i = 0; i <= digits; i++, x /= 10) seq[2 * digits + 2 + i] = (int32_t)(x % 10);
}

/* Draw problems from the stream `state` until one is (want_heldout) held out or not. */
static void draw(uint64_t seed, int digits, uint64_t state, int want_heldout, int32_t *seq) {
  int64_t lim = pow10i(digits), a = 0, b = 0;
  for (int k = 0; k < MAX_DRAWS; k++) {
    state = dtr__data_mix(state + 0x61ull);
    a = (int64_t)(state % (uint64_t)lim);
    state = dtr__data_mix(state + 0x62ull);
    b = (int64_t)(state % (uint64_t)lim);
    if (dtr__addition_is_heldout(seed, digits, a, b) == want_heldout) break;
  }
  encode(digits, a, b, seq);
}

void dtr__addition_sample(uint64_t seed, int digits, int64_t step, int64_t j, int32_t *seq) {
  uint64_t st =
      dtr__data_mix(dtr__data_mix(dtr__data_mix(seed ^ 0x747261696eull) + (uint64_t)step) + (uint64_t)j);
  draw(seed, digits, st, 0, seq);
}

void dtr__addition_heldout(uint64_t seed, int digits, int64_t i, int32_t *seq) {
  uint64_t st = dtr__data_mix(dtr__data_mix(seed ^ 0x6576616cull) + (uint64_t)i);
  draw(seed, digits, st, 1, seq);
}
