/* The time limit of a test helper's run: time_limit_start(who, seconds) arms SIGALRM; when it fires, the
 * helper writes "<who>: time limit of <seconds> s reached, giving up" to stderr and _exits with 3,
 * whatever it is blocked in (the message is formatted up front: the handler only writes). */
#ifndef DTRAIN_TESTS_HELPERS_TIME_LIMIT_H
#define DTRAIN_TESTS_HELPERS_TIME_LIMIT_H

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static char time_limit_msg[192];
static size_t time_limit_len;

static void time_limit_reached(int sig) {
  (void)sig;
  ssize_t w = write(2, time_limit_msg, time_limit_len);
  (void)w;
  _exit(3);
}

static inline void time_limit_start(const char *who, unsigned seconds) {
  int n = snprintf(time_limit_msg, sizeof time_limit_msg, "%s: time limit of %u s reached, giving up\n", who,
                   seconds);
  time_limit_len = n < 0 ? 0 : (size_t)n < sizeof time_limit_msg ? (size_t)n : sizeof time_limit_msg - 1;
  signal(SIGALRM, time_limit_reached);
  alarm(seconds);
}

#endif
