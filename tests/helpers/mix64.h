/* A 64-bit finalizer (MurmurHash3's fmix64) for test helpers that derive reproducible pseudo-random
 * values from (rank, step, index) keys without carrying generator state between ranks. */
#ifndef DTRAIN_TESTS_HELPERS_MIX64_H
#define DTRAIN_TESTS_HELPERS_MIX64_H

#include <stdint.h>

static inline uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

#endif
