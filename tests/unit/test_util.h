/* Minimal test macros for dtrain's C unit tests: a failed CHECK prints file:line and the expression,
 * counts the failure, and the test's main returns TEST_EXIT() (0 when every check held). */
#ifndef DTRAIN_TEST_UTIL_H
#define DTRAIN_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                            \
  do {                                                                         \
    test_checks++;                                                             \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      test_failures++;                                                         \
    }                                                                          \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                                                   \
  do {                                                                                                       \
    long long a_ = (long long)(a), b_ = (long long)(b);                                                      \
    test_checks++;                                                                                           \
    if (a_ != b_) {                                                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, a_, b_); \
      test_failures++;                                                                                       \
    }                                                                                                        \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                                              \
  do {                                                                                                  \
    const char *a_ = (a), *b_ = (b);                                                                    \
    test_checks++;                                                                                      \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" vs \"%s\")\n", __FILE__, __LINE__, #a, #b, \
              a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                                  \
      test_failures++;                                                                                  \
    }                                                                                                   \
  } while (0)

/* xorshift64: the tests' reproducible pseudo-random numbers, from a state each test seeds itself. */
static inline uint64_t test_xorshift64(uint64_t *state) {
  *state ^= *state << 13;
  *state ^= *state >> 7;
  *state ^= *state << 17;
  return *state;
}

#define TEST_EXIT() (printf("%d checks, %d failed\n", test_checks, test_failures), test_failures ? 1 : 0)

#endif
