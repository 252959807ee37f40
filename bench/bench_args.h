/* Argument parsing the benchmark programs share (header-only: bench/CMakeLists.txt builds one
 * program per .c file). */
#ifndef DTRAIN_BENCH_ARGS_H
#define DTRAIN_BENCH_ARGS_H

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

/* A byte count with an optional K/M/G suffix (powers of 1024) and an optional trailing B:
 * "64K", "1.5MB", "4096". 0 on success, -1 for anything else. */
static inline int bench_parse_bytes(const char *s, size_t *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0) return -1;
  switch (toupper((unsigned char)*end)) {
    case 'K':
      v *= 1024.0;
      end++;
      break;
    case 'M':
      v *= 1024.0 * 1024;
      end++;
      break;
    case 'G':
      v *= 1024.0 * 1024 * 1024;
      end++;
      break;
    default:
      break;
  }
  if (*end == 'B' || *end == 'b') end++;
  if (*end) return -1;
  *out = (size_t)v;
  return 0;
}

#endif
