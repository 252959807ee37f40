/* How the pipelined all-reduce of the host backend (comm_host_coll.c) splits each chunk among the
 * ranks that reduce it. All ranks start with equal shares. After every large all-reduce each rank
 * publishes how long it was busy (not waiting for the others); before the next one every rank reads
 * all the figures and moves the shares by the same integer rule, so all ranks agree on the cuts
 * without exchanging them. A rank busy longer than the mean gets a smaller share: it reduces less
 * and copies in more, which is cheaper per byte. Which rank reduces an element never changes its bits
 * (every element is folded in rank order), so the results stay the same bits on every run.
 *
 * Why: on this kind of VM one vCPU reduces 60% slower than the other for a whole run (which one
 * varies with the run; its copies are not slower), and with even pieces the faster rank waited a
 * quarter of the time; the cuts settle near 22/78 within a few operations (docs/collectives.md). */
#include <stddef.h>
#include <stdint.h>

#include "collectives/comm_host_internal.h"

/* A rank busy 10% longer than the mean loses 20% of its share, but at most a quarter (STEP_MAX of
 * 1024) per operation, so that one noisy figure cannot swing it. */
#define GAIN 2
#define STEP_MAX 256

void dtr__host_share_even(uint32_t *cut, int n) {
  for (int j = 0; j <= n; j++) cut[j] = (uint32_t)((uint64_t)DTR__SHARE_ONE * (uint64_t)j / (uint64_t)n);
}

void dtr__host_share_update(uint32_t *cut, const uint64_t *busy_ns, int n) {
  if (n < 2) return;
  uint64_t sum = 0;
  for (int j = 0; j < n; j++) sum += busy_ns[j];
  const int64_t mean = (int64_t)(sum / (uint64_t)n);
  if (mean <= 0) return;
  /* Never below a quarter of an even share: a rank that was only unlucky once keeps some work. */
  int64_t floor_w = (int64_t)DTR__SHARE_ONE / (4 * (int64_t)n);
  if (floor_w < 1) floor_w = 1;
  int64_t w[n], total = 0;
  for (int j = 0; j < n; j++) {
    int64_t share = (int64_t)cut[j + 1] - (int64_t)cut[j];
    int64_t step = ((int64_t)busy_ns[j] - mean) * 1024 * GAIN / mean; /* relative excess, 1/1024 */
    if (step > STEP_MAX) step = STEP_MAX;
    if (step < -STEP_MAX) step = -STEP_MAX;
    w[j] = share - share * step / 1024;
    if (w[j] < floor_w) w[j] = floor_w;
    total += w[j];
  }
  /* Renormalise through prefix sums: monotone cuts that end exactly at DTR__SHARE_ONE. */
  int64_t prefix = 0;
  cut[0] = 0;
  for (int j = 0; j < n; j++) {
    prefix += w[j];
    cut[j + 1] = (uint32_t)(prefix * (int64_t)DTR__SHARE_ONE / total);
  }
}

static size_t boundary(uint32_t c, size_t total, size_t align) {
  if (c >= DTR__SHARE_ONE) return total;
  size_t b = (size_t)((uint64_t)total * c / DTR__SHARE_ONE) / align * align;
  return b < total ? b : total;
}

void dtr__host_share_piece(const uint32_t *cut, size_t total, size_t align, int j, size_t *off, size_t *len) {
  size_t a = boundary(cut[j], total, align), b = boundary(cut[j + 1], total, align);
  *off = a;
  *len = b - a;
}
