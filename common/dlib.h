/* Libraries opened with dlopen on first use instead of linked: a program that never asks for NCCL or
 * MPI (or whose machine lacks them) loads and runs without them. One loader for all of them: open the
 * first name that loads, resolve a table of symbols, say which library or symbol is missing. */
#ifndef DTRAIN_COMMON_DLIB_H
#define DTRAIN_COMMON_DLIB_H

#include <stddef.h>

#include "dtrain/common.h"

typedef struct dtr__dl_sym {
  const char *name;
  void **slot;
} dtr__dl_sym;

/* Open `what` (for messages: "NCCL") from the environment variable `param` when set (a path or a
 * soname, documented in docs/environment.md), else the first of names[0..nnames) that loads, with
 * dlopen flags `flags`; resolve every symbol into its slot. On failure nothing stays open and err
 * names the library, the names tried and dlerror's reason, or the missing symbol: DTR_ERR_UNSUPPORTED.
 * *handle is the library (kept open for the process's life). Thread-safe as dlopen is; callers load
 * once (pthread_once) and keep the result. */
dtr_result dtr__dl_load(const char *what, const char *param, const char *const *names, int nnames, int flags,
                        const dtr__dl_sym *syms, int nsyms, void **handle, char *err, size_t errcap);

/* A library loaded once per process: the arguments of dtr__dl_load, and what the first attempt gave. */
typedef struct dtr__dl_once {
  const char *what, *param;
  const char *names[2];
  int flags;
  const dtr__dl_sym *syms;
  int nsyms;
  /* filled by dtr__dl_load_once */
  int tried;
  dtr_result rc;
  char err[1024];
  void *handle;
} dtr__dl_once;

/* dtr__dl_load for l the first time it is called (every thread waits for that one), the first result
 * (its message in err) every time after. */
dtr_result dtr__dl_load_once(dtr__dl_once *l, char *err, size_t errcap);

#endif
