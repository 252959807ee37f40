/* Accelerator and MPI discovery. The CUDA and MPI calls are compiled only in builds that found them
 * (DTRAIN_HAVE_CUDA / DTRAIN_HAVE_MPI); every query here is safe before MPI_Init and without a GPU.
 * NCCL and MPI are opened here only when asked to describe them (common/nccl_dl.h, mpi_dl.h); the CUDA
 * runtime is linked statically and opens the driver on its first call. */
#include "common/device.h"

#include <stdio.h>
#include <string.h>

#ifdef DTRAIN_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "common/nccl_dl.h"
#endif
#ifdef DTRAIN_HAVE_MPI
#include "common/mpi_dl.h"
#endif

int dtr__cuda_device_count(void) {
#ifdef DTRAIN_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* no driver or no device: clear the sticky error, report none */
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

void dtr__describe_libraries(char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
#if defined(DTRAIN_HAVE_CUDA) || defined(DTRAIN_HAVE_MPI)
  char why[1024];
#endif
#ifdef DTRAIN_HAVE_CUDA
  int rt = 0, nv = 0;
  cudaRuntimeGetVersion(&rt);
  n += (size_t)snprintf(out + n, cap - n, "cuda runtime %d.%d (static), ", rt / 1000, (rt % 1000) / 10);
  if (n < cap && dtr__nccl_load(why, sizeof why) == DTR_OK && ncclGetVersion(&nv) == ncclSuccess)
    n += (size_t)snprintf(out + n, cap - n, "nccl %d.%d.%d", nv / 10000, (nv % 10000) / 100, nv % 100);
  else if (n < cap)
    n += (size_t)snprintf(out + n, cap - n, "nccl not found");
#endif
#ifdef DTRAIN_HAVE_MPI
  char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "MPI not found";
  int len = 0;
  if (dtr__mpi_load(why, sizeof why) == DTR_OK) MPI_Get_library_version(lib, &len);
  char *comma = strchr(lib, ',');
  if (comma) *comma = '\0';
  if (n && n < cap) n += (size_t)snprintf(out + n, cap - n, ", ");
  if (n < cap) n += (size_t)snprintf(out + n, cap - n, "%s", lib);
#endif
  if (n == 0) snprintf(out, cap, "no CUDA, no MPI");
}
