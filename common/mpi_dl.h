/* MPI, opened with dlopen when the first mpi communicator is made (or `--version` asks), never linked:
 * a program that uses no MPI loads without libmpi. The backend (collectives/comm_mpi*.c) still reads as
 * MPI code: each function it calls is a macro of MPI's own name for a pointer of the table below, and
 * Open MPI's predefined handles (MPI_COMM_WORLD, MPI_BYTE, MPI_REQUEST_NULL, ...: addresses of globals
 * in libmpi, through OMPI_PREDEFINED_GLOBAL) are looked up in the loaded library by that macro, so any
 * handle mpi.h names works without a list. Include this instead of <mpi.h> and call dtr__mpi_load before
 * the first call. The library is DTRAIN_MPI_LIBRARY when set, else the soname of the libmpi we were
 * built against (DTRAIN_MPI_SONAME, found by CMake), else libmpi.so; it is opened RTLD_GLOBAL, as Open
 * MPI's own plugins need. A function the backend starts to use gets a table entry and a macro here.
 * Only in builds with MPI (DTRAIN_HAVE_MPI). */
#ifndef DTRAIN_COMMON_MPI_DL_H
#define DTRAIN_COMMON_MPI_DL_H
#ifdef DTRAIN_HAVE_MPI

#include <mpi.h>
#include <stddef.h>

#include "dtrain/common.h"

/* clang-format off */
#define DTR__MPI_FUNCTIONS(X) \
  X(Init_thread) X(Initialized) X(Finalized) X(Finalize) X(Query_thread) \
  X(Comm_rank) X(Comm_size) X(Comm_split) X(Comm_dup) X(Comm_free) \
  X(Comm_set_errhandler) X(Isend) X(Irecv) X(Testall) X(Request_get_status) \
  X(Ibcast) X(Ibarrier) X(Error_string) X(Error_class) X(Get_library_version)
/* clang-format on */

typedef struct dtr__mpi_api {
#define DTR__MPI_SLOT(n) __typeof__(MPI_##n) *n;
  DTR__MPI_FUNCTIONS(DTR__MPI_SLOT)
#undef DTR__MPI_SLOT
} dtr__mpi_api;

/* Filled once by dtr__mpi_load, then only read (any thread). */
extern dtr__mpi_api dtr__mpi_fn;

/* Load MPI once per process (thread-safe); later calls return the first one's result. DTR_OK, or
 * DTR_ERR_UNSUPPORTED with err naming the library tried and why. */
dtr_result dtr__mpi_load(char *err, size_t errcap);

/* The address of libmpi's global `name` (Open MPI's predefined handles), looked up once and kept;
 * NULL before dtr__mpi_load succeeded or for a name libmpi lacks. */
void *dtr__mpi_global(const char *name);

#ifdef OMPI_PREDEFINED_GLOBAL
#undef OMPI_PREDEFINED_GLOBAL
#define OMPI_PREDEFINED_GLOBAL(type, global) ((type)dtr__mpi_global(#global))
#endif

#define MPI_Init_thread dtr__mpi_fn.Init_thread
#define MPI_Initialized dtr__mpi_fn.Initialized
#define MPI_Finalized dtr__mpi_fn.Finalized
#define MPI_Finalize dtr__mpi_fn.Finalize
#define MPI_Query_thread dtr__mpi_fn.Query_thread
#define MPI_Comm_rank dtr__mpi_fn.Comm_rank
#define MPI_Comm_size dtr__mpi_fn.Comm_size
#define MPI_Comm_split dtr__mpi_fn.Comm_split
#define MPI_Comm_dup dtr__mpi_fn.Comm_dup
#define MPI_Comm_free dtr__mpi_fn.Comm_free
#define MPI_Comm_set_errhandler dtr__mpi_fn.Comm_set_errhandler
#define MPI_Isend dtr__mpi_fn.Isend
#define MPI_Irecv dtr__mpi_fn.Irecv
#define MPI_Testall dtr__mpi_fn.Testall
#define MPI_Request_get_status dtr__mpi_fn.Request_get_status
#define MPI_Ibcast dtr__mpi_fn.Ibcast
#define MPI_Ibarrier dtr__mpi_fn.Ibarrier
#define MPI_Error_string dtr__mpi_fn.Error_string
#define MPI_Error_class dtr__mpi_fn.Error_class
#define MPI_Get_library_version dtr__mpi_fn.Get_library_version

#endif /* DTRAIN_HAVE_MPI */
#endif
