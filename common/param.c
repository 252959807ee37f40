/* Environment settings: getenv with validation and a warning that names the bad variable. */
#include "common/param.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

const char *dtr__param_str(const char *name, const char *def) {
  const char *v = getenv(name);
  return (v && *v) ? v : def;
}

const char *dtr__param_env(char *const *envp, const char *name) {
  if (!envp) return dtr__param_str(name, NULL);
  size_t len = strlen(name);
  for (char *const *e = envp; *e; e++)
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return (*e)[len + 1] ? *e + len + 1 : NULL;
  return NULL;
}

dtr_result dtr__param_env_int(char *const *envp, const char *name, long lo, long hi, int def, int def_ok,
                              int *out, const char *who, char *err, size_t cap) {
  const char *v = dtr__param_env(envp, name);
  if (!v) {
    if (def_ok) {
      *out = def;
      return DTR_OK;
    }
    return dtr__fail(err, cap, DTR_ERR_INVALID, "%s environment: %s is not set", who, name);
  }
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "%s environment: %s='%.64s' is not an integer in [%ld, %ld]",
                     who, name, v, lo, hi);
  *out = (int)x;
  return DTR_OK;
}

int64_t dtr__param_int(const char *name, int64_t def) {
  const char *v = dtr__param_str(name, NULL);
  if (!v) return def;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || *end) {
    DTR_WARN("ignoring %s='%s': not an integer (using %lld)", name, v, (long long)def);
    return def;
  }
  return x;
}

int64_t dtr__param_range(const char *name, int64_t def, int64_t lo, int64_t hi) {
  int64_t v = dtr__param_int(name, def);
  if (v < lo || v > hi) {
    DTR_WARN("%s=%lld is outside [%lld, %lld]; using %lld", name, (long long)v, (long long)lo, (long long)hi,
             (long long)def);
    v = def;
  }
  return v;
}
