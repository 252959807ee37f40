/* The one converter of CUDA runtime errors; see cuda_check.h. Compiled only with CUDA. */
#ifdef DTRAIN_HAVE_CUDA

#include "common/cuda_check.h"

#include <cuda_runtime_api.h>
#include <stdio.h>

dtr_result dtr__from_cuda(int code, char *why, size_t whycap) {
  cudaError_t e = (cudaError_t)code;
  if (e == cudaSuccess) {
    if (why && whycap) why[0] = '\0';
    return DTR_OK;
  }
  (void)cudaGetLastError();
  if (why && whycap) snprintf(why, whycap, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
  switch (e) {
    case cudaErrorMemoryAllocation:
      return DTR_ERR_NOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return DTR_ERR_UNSUPPORTED;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevice:
      return DTR_ERR_INVALID;
    default:
      return DTR_ERR_SYSTEM;
  }
}

#endif
