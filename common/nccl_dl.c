/* The NCCL table of common/nccl_dl.h, filled on first use. */
#ifdef DTRAIN_HAVE_CUDA
#define _GNU_SOURCE
#include "common/nccl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "common/dlib.h"
#include "common/log.h"

dtr__nccl_api dtr__nccl;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static dtr_result load_rc;
static char load_err[1024];

static void load(void) {
  static const dtr__dl_sym syms[] = {
#define DTR__NCCL_SYM(n) {"nccl" #n, (void **)&dtr__nccl.n},
      DTR__NCCL_FUNCTIONS(DTR__NCCL_SYM)
#undef DTR__NCCL_SYM
  };
  char soname[32];
  snprintf(soname, sizeof soname, "libnccl.so.%d", NCCL_MAJOR);
  const char *names[] = {soname, "libnccl.so"};
  void *h;
  load_rc = dtr__dl_load("NCCL", "DTRAIN_NCCL_LIBRARY", names, 2, RTLD_NOW | RTLD_LOCAL, syms,
                         (int)(sizeof syms / sizeof syms[0]), &h, load_err, sizeof load_err);
}

dtr_result dtr__nccl_load(char *err, size_t errcap) {
  pthread_once(&once, load);
  if (load_rc != DTR_OK) return dtr__fail(err, errcap, load_rc, "%s", load_err);
  return DTR_OK;
}

#else
typedef int dtr__nccl_dl_unused; /* ISO C wants a translation unit to declare something */
#endif
