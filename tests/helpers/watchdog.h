/* The bound on a test helper's run: watchdog_start(who, seconds) arms SIGALRM; when it fires, the
 * helper writes "<who>: watchdog expired after <seconds> s, giving up" to stderr and _exits with 3,
 * whatever it is blocked in (the message is formatted up front: the handler only writes). */
#ifndef DTRAIN_TESTS_HELPERS_WATCHDOG_H
#define DTRAIN_TESTS_HELPERS_WATCHDOG_H

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static char watchdog_msg[192];
static size_t watchdog_len;

static void watchdog_fire(int sig) {
  (void)sig;
  ssize_t w = write(2, watchdog_msg, watchdog_len);
  (void)w;
  _exit(3);
}

static inline void watchdog_start(const char *who, unsigned seconds) {
  int n = snprintf(watchdog_msg, sizeof watchdog_msg, "%s: watchdog expired after %u s, giving up\n", who,
                   seconds);
  watchdog_len = n < 0 ? 0 : (size_t)n < sizeof watchdog_msg ? (size_t)n : sizeof watchdog_msg - 1;
  signal(SIGALRM, watchdog_fire);
  alarm(seconds);
}

#endif
