/* The monotonic clock in milliseconds, nanoseconds and seconds; see clock.h. */
#include "common/clock.h"

#include <time.h>

int64_t dtr__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dtr__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double dtr__now_s(void) {
  return (double)dtr__now_ns() * 1e-9;
}

int dtr__ms_left(int64_t deadline) {
  if (deadline < 0) return -1;
  int64_t left = deadline - dtr__now_ms();
  if (left < 0) return 0;
  return left > 1000000000 ? 1000000000 : (int)left;
}
