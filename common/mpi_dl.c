/* The MPI table of common/mpi_dl.h, filled on first use, and the lookup of Open MPI's handles. */
#ifdef DTRAIN_HAVE_MPI
#define _GNU_SOURCE
#include "common/mpi_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "common/dlib.h"
#include "common/log.h"

#ifndef DTRAIN_MPI_SONAME
#define DTRAIN_MPI_SONAME "libmpi.so"
#endif

dtr__mpi_api dtr__mpi_fn;

static const dtr__dl_sym syms[] = {
#define DTR__MPI_SYM(n) {"MPI_" #n, (void **)&dtr__mpi_fn.n},
    DTR__MPI_FUNCTIONS(DTR__MPI_SYM)
#undef DTR__MPI_SYM
};

static dtr__dl_once lib = {.what = "MPI",
                           .param = "DTRAIN_MPI_LIBRARY",
                           .names = {DTRAIN_MPI_SONAME, "libmpi.so"},
                           .flags = RTLD_NOW | RTLD_GLOBAL, /* Open MPI's plugins resolve against libmpi */
                           .syms = syms,
                           .nsyms = (int)(sizeof syms / sizeof syms[0])};

dtr_result dtr__mpi_load(char *err, size_t errcap) {
  return dtr__dl_load_once(&lib, err, errcap);
}

/* The handles a process uses are few (a communicator, a datatype, null handles): a small table of
 * (name, address), filled under a lock, read without one once published. */
#define MAX_GLOBALS 32
static struct {
  const char *name;
  void *addr;
} globals[MAX_GLOBALS];
static atomic_int nglobals;
static pthread_mutex_t globals_mu = PTHREAD_MUTEX_INITIALIZER;

void *dtr__mpi_global(const char *name) {
  int n = atomic_load_explicit(&nglobals, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (globals[i].name == name || strcmp(globals[i].name, name) == 0) return globals[i].addr;
  if (!lib.handle) return NULL;
  void *addr = dlsym(lib.handle, name);
  pthread_mutex_lock(&globals_mu);
  n = atomic_load_explicit(&nglobals, memory_order_relaxed);
  if (addr && n < MAX_GLOBALS) {
    globals[n].name = name;
    globals[n].addr = addr;
    atomic_store_explicit(&nglobals, n + 1, memory_order_release);
  }
  pthread_mutex_unlock(&globals_mu);
  if (!addr) DTR_WARN("MPI: libmpi has no %s", name);
  return addr;
}

#else
typedef int dtr__mpi_dl_unused; /* ISO C wants a translation unit to declare something */
#endif
