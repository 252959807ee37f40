/* Logging and last-error formatting. The level is read from DTRAIN_LOG_LEVEL once and cached. */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/param.h"

static pthread_once_t level_once = PTHREAD_ONCE_INIT;
static int default_level = DTR_LOG_WARN; /* set by main() before threads exist */
static int env_level = -1;

static void read_level(void) {
  const char *v = dtr__param_str("DTRAIN_LOG_LEVEL", NULL);
  if (!v) return;
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(v, names[i]) == 0) env_level = i;
}

void dtr__log_set_default(dtr__log_level level) {
  default_level = level;
}

dtr__log_level dtr__log_level_get(void) {
  pthread_once(&level_once, read_level);
  return (dtr__log_level)(env_level >= 0 ? env_level : default_level);
}

void dtr__log(dtr__log_level level, const char *file, int line, const char *fmt, ...) {
  if (level > dtr__log_level_get()) return;
  static const char *tags[] = {"error", "warning", "", "debug"};
  char buf[2048];
  int n;
  if (level == DTR_LOG_INFO)
    n = snprintf(buf, sizeof buf, "dtrain: ");
  else if (level == DTR_LOG_DEBUG)
    n = snprintf(buf, sizeof buf, "dtrain debug [%d] %s:%d: ", (int)getpid(), file, line);
  else
    n = snprintf(buf, sizeof buf, "dtrain %s: ", tags[level]);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
  (void)w;
}

dtr_result dtr__fail(char *buf, size_t cap, dtr_result rc, const char *fmt, ...) {
  if (buf && cap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    DTR_DEBUG("%s: %s", dtr_strerror(rc), buf);
  }
  return rc;
}
