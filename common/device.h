/* What accelerators and MPI library this build and this machine have. Compiled with or without CUDA
 * and MPI; without them the answers are "none". Used by `--nproc-per-node gpu|auto` and `--version`. */
#ifndef DTRAIN_COMMON_DEVICE_H
#define DTRAIN_COMMON_DEVICE_H

#include <stddef.h>

/* Number of CUDA devices visible to this process (honours CUDA_VISIBLE_DEVICES); 0 when the build has
 * no CUDA, the driver is missing, or no GPU is present. Never fails. */
int dtr__cuda_device_count(void);

/* One line describing the CUDA runtime (linked statically), NCCL and MPI (opened here if they were not
 * yet), e.g. "cuda runtime 13.0 (static), nccl 2.28.3, Open MPI v4.1.4", "... nccl not found, MPI not
 * found" where they are missing; parts the build has not are left out ("no CUDA, no MPI"). */
void dtr__describe_libraries(char *out, size_t cap);

#endif
