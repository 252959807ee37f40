/* Error-flow macros used across dtrain (the NCCL checks.h habit): one way to pass a failure upward,
 * one way to jump to a cleanup label. Foreign errors are converted where they enter, one converter
 * each: CUDA in common/cuda_check.h and libyaml in common/yaml_error.h (both used by several
 * subsystems), NCCL and MPI in their backends. */
#ifndef DTRAIN_COMMON_CHECK_H
#define DTRAIN_COMMON_CHECK_H

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

/* The one converter of errno values: the file system refusing a write (ENOSPC, EDQUOT, EROFS) is
 * DTR_ERR_STORAGE, so that a caller can tell a full or read-only disk from other system failures;
 * ENOMEM is DTR_ERR_NOMEM; everything else DTR_ERR_SYSTEM (strerror in the detail says which). */
dtr_result dtr__errno_result(int e);

/* Evaluate a dtr_result call; on failure store it in rc and jump to label. */
#define DTR_CHECK_GOTO(call, rc, label)                    \
  do {                                                     \
    (rc) = (call);                                         \
    if ((rc) != DTR_OK) {                                  \
      DTR_DEBUG("%s failed: %s", #call, dtr_strerror(rc)); \
      goto label;                                          \
    }                                                      \
  } while (0)

#endif
