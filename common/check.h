/* Error-flow macros used across dtrain (the NCCL checks.h habit): one way to pass a failure upward,
 * one way to jump to a cleanup label, and one converter for each foreign error source. */
#ifndef DTRAIN_COMMON_CHECK_H
#define DTRAIN_COMMON_CHECK_H

#include <errno.h>

#include "common/log.h"
#include "dtrain/common.h"

/* Evaluate a dtr_result call; on failure log file:line at debug level and return it. */
#define DTR_CHECK(call)                                          \
  do {                                                           \
    dtr_result dtr__rc_ = (call);                                \
    if (dtr__rc_ != DTR_OK) {                                    \
      DTR_DEBUG("%s failed: %s", #call, dtr_strerror(dtr__rc_)); \
      return dtr__rc_;                                           \
    }                                                            \
  } while (0)

/* Evaluate a dtr_result call; on failure store it in rc and jump to label. */
#define DTR_CHECK_GOTO(call, rc, label)                    \
  do {                                                     \
    (rc) = (call);                                         \
    if ((rc) != DTR_OK) {                                  \
      DTR_DEBUG("%s failed: %s", #call, dtr_strerror(rc)); \
      goto label;                                          \
    }                                                      \
  } while (0)

/* Convert an errno-style failure (call returned -1) into DTR_ERR_SYSTEM with a detail message. */
#define DTR_SYSCHECK(call, errbuf, what)                                                             \
  do {                                                                                               \
    if ((call) < 0) {                                                                                \
      return dtr__fail((errbuf), sizeof(errbuf), DTR_ERR_SYSTEM, "%s: %s", (what), strerror(errno)); \
    }                                                                                                \
  } while (0)

#endif
