/* A small tensor type for the runtime: dtype, shape (up to 4 dims, row-major, contiguous), device
 * (cpu or cuda) and a data pointer that is either owned (create/free) or borrowed (view). Kernels take
 * raw pointers; the tensor is the bookkeeping around them (sizes, where the bytes live). */
#ifndef DTRAIN_RUNTIME_TENSOR_H
#define DTRAIN_RUNTIME_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

#define DTR_TENSOR_MAX_DIMS 4

typedef enum dtr__dtype { DTR_DT_F32 = 0, DTR_DT_I32 = 1, DTR_DT_BF16 = 2, DTR_DT_F16 = 3 } dtr__dtype;
typedef enum dtr__devtype { DTR_DEV_CPU = 0, DTR_DEV_CUDA = 1 } dtr__devtype;

typedef struct dtr__tensor {
  dtr__dtype dtype;
  dtr__devtype device;
  int ndim;
  int64_t shape[DTR_TENSOR_MAX_DIMS];
  void *data;
  int owned; /* 1: dtr__tensor_free releases data */
} dtr__tensor;

/* Bytes of one element of dtype (0 for an unknown value). */
size_t dtr__dtype_size(dtr__dtype dt);
const char *dtr__dtype_name(dtr__dtype dt);
/* Number of elements (1 for ndim 0) and bytes. */
int64_t dtr__tensor_numel(const dtr__tensor *t);
size_t dtr__tensor_nbytes(const dtr__tensor *t);

/* Allocate a zero-filled CPU tensor of shape[0..ndim) (64-byte aligned). CUDA tensors are allocated by
 * the CUDA side (the .cu files) and wrapped with dtr__tensor_view; DTR_ERR_UNSUPPORTED here. Bad ndim,
 * negative dims or an unknown dtype: DTR_ERR_INVALID. On failure *out is left empty (data NULL). */
dtr_result dtr__tensor_create(dtr__tensor *out, dtr__dtype dt, dtr__devtype dev, int ndim,
                              const int64_t *shape);
/* A borrowed tensor over data (not freed by dtr__tensor_free). Same checks as create. */
dtr_result dtr__tensor_view(dtr__tensor *out, void *data, dtr__dtype dt, dtr__devtype dev, int ndim,
                            const int64_t *shape);
/* Release owned data; a view or an empty tensor only gets cleared. NULL is fine. */
void dtr__tensor_free(dtr__tensor *t);
/* Pointer to element index (flat, in elements) of a CPU tensor; NULL when out of range. */
void *dtr__tensor_at(const dtr__tensor *t, int64_t index);

#endif
