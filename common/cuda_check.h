/* CUDA runtime errors enter dtrain here: one mapping from a cudaError_t to a dtr_result, and one rule
 * for the thread's last error, for the nccl backend, the CUDA kernels and the checkpointer's device
 * copies. Declared only in builds with CUDA (DTRAIN_HAVE_CUDA). The code is an int, so C files and
 * .cu files (C++) alike include this without CUDA's headers. */
#ifndef DTRAIN_COMMON_CUDA_CHECK_H
#define DTRAIN_COMMON_CUDA_CHECK_H

#ifdef DTRAIN_HAVE_CUDA

#include <stddef.h>

#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dtr_result for the CUDA runtime's error e (a cudaError_t): DTR_OK for cudaSuccess; out of
 * memory: DTR_ERR_NOMEM; no device, or a driver older than the runtime: DTR_ERR_UNSUPPORTED; a bad
 * argument or device ordinal: DTR_ERR_INVALID; anything else: DTR_ERR_SYSTEM.
 *
 * A failure also reads the calling thread's last error (cudaGetLastError), which clears a non-sticky
 * one (a bad argument, a full device) so that the next call and the next kernel-launch check do not
 * report it again. A sticky error (a kernel fault) cannot be cleared: the context is lost and every
 * later call returns it. why (may be NULL) receives "description (cudaErrorName)" for the message. */
dtr_result dtr__from_cuda(int e, char *why, size_t whycap);

#ifdef __cplusplus
}
#endif

#endif /* DTRAIN_HAVE_CUDA */
#endif
