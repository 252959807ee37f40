/* Accelerator and MPI discovery. The CUDA and MPI calls are compiled only in builds that found them
 * (DTRAIN_HAVE_CUDA / DTRAIN_HAVE_MPI); every query here is safe before MPI_Init and without a GPU. */
#include "common/device.h"

#include <stdio.h>
#include <string.h>

#ifdef DTRAIN_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif
#ifdef DTRAIN_HAVE_MPI
#include <mpi.h>
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
#ifdef DTRAIN_HAVE_CUDA
  int rt = 0, nv = 0;
  cudaRuntimeGetVersion(&rt);
  ncclGetVersion(&nv);
  n += (size_t)snprintf(out + n, cap - n, "cuda runtime %d.%d, nccl %d.%d.%d", rt / 1000, (rt % 1000) / 10,
                        nv / 10000, (nv % 10000) / 100, nv % 100);
#endif
#ifdef DTRAIN_HAVE_MPI
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(lib, &len);
  char *comma = strchr(lib, ',');
  if (comma) *comma = '\0';
  if (n && n < cap) n += (size_t)snprintf(out + n, cap - n, ", ");
  if (n < cap) n += (size_t)snprintf(out + n, cap - n, "%s", lib);
#endif
  if (n == 0) snprintf(out, cap, "no CUDA, no MPI");
}
