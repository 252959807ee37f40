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

static pthread_once_t once = PTHREAD_ONCE_INIT;
static dtr_result load_rc;
static char load_err[1024];
static void *lib;

static void load(void) {
  static const dtr__dl_sym syms[] = {
#define DTR__MPI_SYM(n) {"MPI_" #n, (void **)&dtr__mpi_fn.n},
      DTR__MPI_FUNCTIONS(DTR__MPI_SYM)
#undef DTR__MPI_SYM
  };
  const char *names[] = {DTRAIN_MPI_SONAME, "libmpi.so"};
  load_rc = dtr__dl_load("MPI", "DTRAIN_MPI_LIBRARY", names, 2, RTLD_NOW | RTLD_GLOBAL, syms,
                         (int)(sizeof syms / sizeof syms[0]), &lib, load_err, sizeof load_err);
}

dtr_result dtr__mpi_load(char *err, size_t errcap) {
  pthread_once(&once, load);
  if (load_rc != DTR_OK) return dtr__fail(err, errcap, load_rc, "%s", load_err);
  return DTR_OK;
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
  if (!lib) return NULL;
  void *addr = dlsym(lib, name);
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
