/* The monotonic clock every deadline, timing and report in dtrain reads: one CLOCK_MONOTONIC in three
 * units, and the milliseconds left until a deadline on it. Never fails; thread-safe. */
#ifndef DTRAIN_COMMON_CLOCK_H
#define DTRAIN_COMMON_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds, for deadlines. */
int64_t dtr__now_ms(void);
/* The same clock in nanoseconds, for timing work. */
int64_t dtr__now_ns(void);
/* The same clock in seconds, for reports and statistics. */
double dtr__now_s(void);
/* Milliseconds left until deadline (never negative); deadline < 0 means "no deadline" -> -1. */
int dtr__ms_left(int64_t deadline);

#endif
