/* The runtime's small tensor type: creation of zeroed, aligned CPU buffers and views over memory
 * someone else owns (activations inside the model's arena, CUDA buffers from the .cu side). */
#include "runtime/tensor.h"

#include <stdlib.h>
#include <string.h>

size_t dtr__dtype_size(dtr__dtype dt) {
  switch (dt) {
    case DTR_DT_F32:
    case DTR_DT_I32:
      return 4;
    case DTR_DT_BF16:
    case DTR_DT_F16:
      return 2;
  }
  return 0;
}

const char *dtr__dtype_name(dtr__dtype dt) {
  switch (dt) {
    case DTR_DT_F32:
      return "f32";
    case DTR_DT_I32:
      return "i32";
    case DTR_DT_BF16:
      return "bf16";
    case DTR_DT_F16:
      return "f16";
  }
  return "?";
}

int64_t dtr__tensor_numel(const dtr__tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t dtr__tensor_nbytes(const dtr__tensor *t) {
  return (size_t)dtr__tensor_numel(t) * dtr__dtype_size(t->dtype);
}

static dtr_result fill_header(dtr__tensor *out, dtr__dtype dt, dtr__devtype dev, int ndim,
                              const int64_t *shape) {
  memset(out, 0, sizeof *out);
  if (ndim < 0 || ndim > DTR_TENSOR_MAX_DIMS || (ndim > 0 && !shape)) return DTR_ERR_INVALID;
  if (dtr__dtype_size(dt) == 0) return DTR_ERR_INVALID;
  if (dev != DTR_DEV_CPU && dev != DTR_DEV_CUDA) return DTR_ERR_INVALID;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return DTR_ERR_INVALID;
    out->shape[i] = shape[i];
  }
  out->dtype = dt;
  out->device = dev;
  out->ndim = ndim;
  return DTR_OK;
}

dtr_result dtr__tensor_create(dtr__tensor *out, dtr__dtype dt, dtr__devtype dev, int ndim,
                              const int64_t *shape) {
  dtr_result rc = fill_header(out, dt, dev, ndim, shape);
  if (rc != DTR_OK) return rc;
  if (dev != DTR_DEV_CPU) {
    memset(out, 0, sizeof *out);
    return DTR_ERR_UNSUPPORTED;
  }
  size_t bytes = dtr__tensor_nbytes(out);
  size_t rounded = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) {
    memset(out, 0, sizeof *out);
    return DTR_ERR_NOMEM;
  }
  memset(p, 0, rounded ? rounded : 64);
  out->data = p;
  out->owned = 1;
  return DTR_OK;
}

dtr_result dtr__tensor_view(dtr__tensor *out, void *data, dtr__dtype dt, dtr__devtype dev, int ndim,
                            const int64_t *shape) {
  dtr_result rc = fill_header(out, dt, dev, ndim, shape);
  if (rc != DTR_OK) return rc;
  out->data = data;
  return DTR_OK;
}

void dtr__tensor_free(dtr__tensor *t) {
  if (!t) return;
  if (t->owned) free(t->data);
  memset(t, 0, sizeof *t);
}

void *dtr__tensor_at(const dtr__tensor *t, int64_t index) {
  if (!t->data || index < 0 || index >= dtr__tensor_numel(t)) return NULL;
  return (char *)t->data + (size_t)index * dtr__dtype_size(t->dtype);
}
