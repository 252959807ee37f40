/* Internal logging: one line per message on stderr, filtered by DTRAIN_LOG_LEVEL
 * (error, warn, info, debug; default warn for the library, the CLI raises it to info). */
#ifndef DTRAIN_COMMON_LOG_H
#define DTRAIN_COMMON_LOG_H

#include <stddef.h>

#include "dtrain/common.h"

typedef enum { DTR_LOG_ERROR = 0, DTR_LOG_WARN = 1, DTR_LOG_INFO = 2, DTR_LOG_DEBUG = 3 } dtr__log_level;

/* The effective level: DTRAIN_LOG_LEVEL if set, else the default given by dtr__log_set_default. */
dtr__log_level dtr__log_level_get(void);
/* Called once by main() before any thread starts; the environment variable still wins. */
void dtr__log_set_default(dtr__log_level level);
/* Print one whole line (single write, so lines from threads never interleave). */
void dtr__log(dtr__log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define DTR_ERROR(...) dtr__log(DTR_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define DTR_WARN(...) dtr__log(DTR_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define DTR_INFO(...) dtr__log(DTR_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define DTR_DEBUG(...)                                                                                   \
  do {                                                                                                   \
    if (dtr__log_level_get() >= DTR_LOG_DEBUG) dtr__log(DTR_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/* Format a detail message into an object's last-error buffer, log it at debug level, return rc.
 * The usual way an object records why it failed: `return dtr__fail(s->err, sizeof s->err, rc, ...)`. */
dtr_result dtr__fail(char *buf, size_t cap, dtr_result rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
