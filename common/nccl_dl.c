/* The NCCL table of common/nccl_dl.h, filled on first use. */
#ifdef DTRAIN_HAVE_CUDA
#define _GNU_SOURCE
#include "common/nccl_dl.h"

#include <dlfcn.h>

#include "common/dlib.h"
#include "common/log.h"

dtr__nccl_api dtr__nccl;

static const dtr__dl_sym syms[] = {
#define DTR__NCCL_SYM(n) {"nccl" #n, (void **)&dtr__nccl.n},
    DTR__NCCL_FUNCTIONS(DTR__NCCL_SYM)
#undef DTR__NCCL_SYM
};

#define STR_(x) #x
#define STR(x) STR_(x)
static dtr__dl_once lib = {.what = "NCCL",
                           .param = "DTRAIN_NCCL_LIBRARY",
                           .names = {"libnccl.so." STR(NCCL_MAJOR), "libnccl.so"},
                           .flags = RTLD_NOW | RTLD_LOCAL,
                           .syms = syms,
                           .nsyms = (int)(sizeof syms / sizeof syms[0])};

dtr_result dtr__nccl_load(char *err, size_t errcap) {
  return dtr__dl_load_once(&lib, err, errcap);
}

#else
typedef int dtr__nccl_dl_unused; /* ISO C wants a translation unit to declare something */
#endif
