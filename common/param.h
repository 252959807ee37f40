/* The one accessor for DTRAIN_* environment settings (the NCCL_PARAM habit). Every name read here
 * is documented in docs/environment.md; callers read a setting once, when they create their object. */
#ifndef DTRAIN_COMMON_PARAM_H
#define DTRAIN_COMMON_PARAM_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

/* The variable's value, or def when unset or empty. The pointer is owned by the environment. */
const char *dtr__param_str(const char *name, const char *def);
/* The same from an environment array envp ("KEY=VALUE" strings, NULL-terminated); envp NULL reads this
 * process's environment. Unset and empty both give NULL. For code that reads another process's
 * environment or a test's (identity, Slurm). */
const char *dtr__param_env(char *const *envp, const char *name);
/* A strict decimal integer variable of envp (as dtr__param_env) in [lo, hi] into *out. Unset: def when
 * def_ok, else DTR_ERR_INVALID "WHO environment: NAME is not set"; malformed or out of range:
 * DTR_ERR_INVALID "WHO environment: NAME='...' is not an integer in [lo, hi]". who names the launcher
 * the variables come from (Slurm, torchrun, ...). */
dtr_result dtr__param_env_int(char *const *envp, const char *name, long lo, long hi, int def, int def_ok,
                              int *out, const char *who, char *err, size_t cap);
/* The variable as an integer, or def when unset; a malformed value logs a warning naming the
 * variable and yields def. */
int64_t dtr__param_int(const char *name, int64_t def);
/* dtr__param_int kept within [lo, hi]: a value outside logs a warning naming the variable and the range,
 * and yields def (sizes, counts, timeouts). */
int64_t dtr__param_range(const char *name, int64_t def, int64_t lo, int64_t hi);

#endif
