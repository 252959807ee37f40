/* Checkpointing tensors that live in CUDA device memory (DTR_CKPT_CUDA): the checks at registration,
 * pinned host staging for the snapshot, the device-to-host snapshot copies on the checkpointer's own
 * stream, and the host-to-device copy of a load. Without DTRAIN_HAVE_CUDA only the refusal remains. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/box.h"
#include "checkpoint/ckpt_internal.h"
#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device.h"
#include "common/log.h"

#ifdef DTRAIN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

/* ------------------------------------------------------------------ staging memory */

/* A staging buffer carries a small header saying how it was allocated, so the free needs no table
 * beside the checkpointer's stage array (64 bytes keep the data as aligned as malloc's). */
#define STAGE_HDR 64
#define STAGE_MAGIC 0x4b434454u /* "TDCK" */

typedef struct stage_hdr {
  uint32_t magic;
  int32_t pinned;
} stage_hdr;

void *dtr__ckpt_stage_alloc(size_t bytes, int pinned) {
  if (bytes > SIZE_MAX - STAGE_HDR) return NULL;
  void *p = NULL;
  int got_pinned = 0;
#ifdef DTRAIN_HAVE_CUDA
  if (pinned) {
    /* Pinned: a device-to-host cudaMemcpyAsync into it is a DMA at full link speed; into pageable
     * memory the driver bounces through its own buffer, about half as fast. */
    cudaError_t e = cudaHostAlloc(&p, bytes + STAGE_HDR, cudaHostAllocDefault);
    if (e == cudaSuccess) {
      got_pinned = 1;
    } else {
      (void)cudaGetLastError();
      p = NULL;
      DTR_WARN(
          "checkpoint: cannot pin %zu bytes of staging memory (%s); using pageable memory, the "
          "snapshot of device tensors will be slower",
          bytes, cudaGetErrorString(e));
    }
  }
#else
  (void)pinned;
#endif
  if (!p) p = malloc(bytes + STAGE_HDR);
  if (!p) return NULL;
  stage_hdr *h = p;
  h->magic = STAGE_MAGIC;
  h->pinned = got_pinned;
  return (char *)p + STAGE_HDR;
}

void dtr__ckpt_stage_free(void *p) {
  if (!p) return;
  stage_hdr *h = (stage_hdr *)((char *)p - STAGE_HDR);
  if (h->magic != STAGE_MAGIC) {
    DTR_ERROR("checkpoint: staging buffer %p has a bad header; leaking it", p);
    return;
  }
  h->magic = 0;
#ifdef DTRAIN_HAVE_CUDA
  if (h->pinned) {
    cudaError_t e = cudaFreeHost(h);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      DTR_WARN("checkpoint: cudaFreeHost of a staging buffer: %s", cudaGetErrorString(e));
    }
    return;
  }
#endif
  free(h);
}

/* ------------------------------------------------------------------ registration */

static dtr_result register_cuda(dtr_ckpt *ck, const dtr_ckpt_tensor *t);

dtr_result dtr__ckpt_dev_register(dtr_ckpt *ck, const dtr_ckpt_tensor *t) {
  if (t->device == DTR_CKPT_HOST) return DTR_OK;
  if (t->device != DTR_CKPT_CUDA)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                     "tensor '%s': device %d: expected DTR_CKPT_HOST (0) or DTR_CKPT_CUDA (1)", t->name,
                     t->device);
  return register_cuda(ck, t);
}

#ifndef DTRAIN_HAVE_CUDA

/* A DTR_CKPT_CUDA tensor: this build's checks (no CUDA: refused; CUDA: the pointer and device). */
static dtr_result register_cuda(dtr_ckpt *ck, const dtr_ckpt_tensor *t) {
  return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_UNSUPPORTED,
                   "tensor '%s': registered in CUDA device memory (DTR_CKPT_CUDA), but this build of dtrain "
                   "has no CUDA (configure with the CUDA toolkit and DTRAIN_CUDA=AUTO or ON)",
                   t->name);
}

dtr_result dtr__ckpt_dev_copy_out(dtr_ckpt *ck, const dtr__ckpt_reg *r, void *dst) {
  (void)dst;
  return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_UNSUPPORTED, "tensor '%s': device memory without CUDA",
                   r->name);
}

dtr_result dtr__ckpt_dev_sync(dtr_ckpt *ck) {
  (void)ck;
  return DTR_OK;
}

dtr_result dtr__ckpt_dev_upload(dtr_ckpt *ck, const dtr__ckpt_reg *r, const void *src, char *err,
                                size_t errcap) {
  (void)ck;
  (void)src;
  return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED, "tensor '%s': device memory without CUDA", r->name);
}

void dtr__ckpt_dev_release(dtr_ckpt *ck) {
  (void)ck;
}

#else /* DTRAIN_HAVE_CUDA */

/* CUDA errors enter here, through the one converter (common/cuda_check.h). */
static dtr_result cuda_fail(char *err, size_t errcap, cudaError_t e, const char *fmt_what, const char *name,
                            int dev) {
  char why[256];
  dtr_result rc = dtr__from_cuda(e, why, sizeof why);
  return dtr__fail(err, errcap, rc, "tensor '%s': %s (CUDA device %d): %s", name, fmt_what, dev, why);
}

static const char *memory_type_name(enum cudaMemoryType t) {
  switch (t) {
    case cudaMemoryTypeUnregistered:
      return "pageable host";
    case cudaMemoryTypeHost:
      return "pinned host";
    case cudaMemoryTypeDevice:
      return "device";
    case cudaMemoryTypeManaged:
      return "managed";
  }
  return "unknown";
}

/* A DTR_CKPT_CUDA tensor: this build's checks (no CUDA: refused; CUDA: the pointer and device). */
static dtr_result register_cuda(dtr_ckpt *ck, const dtr_ckpt_tensor *t) {
  if (dtr__cuda_device_count() < 1)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_UNSUPPORTED,
                     "tensor '%s': registered in CUDA device memory (DTR_CKPT_CUDA), but no CUDA device is "
                     "visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)",
                     t->name);
  int cur = 0;
  cudaError_t e = cudaGetDevice(&cur);
  if (e != cudaSuccess) return cuda_fail(ck->err, sizeof ck->err, e, "cudaGetDevice", t->name, -1);
  if (!t->data) return DTR_OK; /* an empty held box (add_tensor refuses NULL data otherwise) */
  struct cudaPointerAttributes a;
  memset(&a, 0, sizeof a);
  e = cudaPointerGetAttributes(&a, t->data);
  if (e != cudaSuccess)
    return cuda_fail(ck->err, sizeof ck->err, e, "cudaPointerGetAttributes", t->name, cur);
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                     "tensor '%s': data %p is %s memory, not CUDA device memory (DTR_CKPT_CUDA); register it "
                     "with device DTR_CKPT_HOST",
                     t->name, t->data, memory_type_name(a.type));
  /* Managed memory reports the device it was allocated on; any device can copy it, but keep one. */
  int dev = a.type == cudaMemoryTypeManaged ? cur : a.device;
  if (dev != cur)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                     "tensor '%s': data is on CUDA device %d, but the current device is %d (register it "
                     "with its device current)",
                     t->name, dev, cur);
  if (ck->dev_stream && dev != ck->dev_id)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                     "tensor '%s': on CUDA device %d, but earlier device tensors are on device %d (one "
                     "device per checkpointer)",
                     t->name, dev, ck->dev_id);
  if (!ck->dev_stream) {
    /* Non-blocking: the snapshot's copies neither wait for nor hold up the legacy default stream. */
    cudaStream_t s = NULL;
    e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cuda_fail(ck->err, sizeof ck->err, e, "creating a stream", t->name, dev);
    ck->dev_stream = s;
    ck->dev_id = dev;
  }
  return DTR_OK;
}

/* Make the checkpointer's device current for a copy; *prev is restored by dev_leave. */
static cudaError_t dev_enter(const dtr_ckpt *ck, int *prev) {
  cudaError_t e = cudaGetDevice(prev);
  if (e != cudaSuccess) return e;
  return *prev == ck->dev_id ? cudaSuccess : cudaSetDevice(ck->dev_id);
}

static void dev_leave(const dtr_ckpt *ck, int prev) {
  if (prev != ck->dev_id) (void)cudaSetDevice(prev);
}

/* Bytes between consecutive indices of dimension d in the held box (row-major). */
static void held_strides(const dtr__ckpt_reg *r, size_t *stride) {
  stride[r->ndim - 1] = dtr_dtype_size(r->dtype);
  for (int d = r->ndim - 2; d >= 0; d--) stride[d] = stride[d + 1] * (size_t)r->extent[d + 1];
}

/* The save box is copied as rows that are contiguous in the held box: the dimensions after j are
 * whole, so a row is save_extent[j] consecutive slices of them. j == 0 (a slab along dimension 0, the
 * data-parallel case): one copy. Otherwise one cudaMemcpy2DAsync per index of the dimensions before
 * j-1 (rows of dimension j-1 are a pitched 2-D copy), or per-row copies where the pitch is too wide. */
static cudaError_t queue_copy_out(const dtr__ckpt_reg *r, char *dst, cudaStream_t s) {
  int nd = r->ndim;
  size_t stride[DTR_CKPT_MAX_DIMS];
  held_strides(r, stride);
  int j = nd - 1;
  while (j > 0 && r->save_offset[j] == r->offset[j] && r->save_extent[j] == r->extent[j]) j--;
  size_t width = (size_t)r->save_extent[j] * stride[j];
  size_t base = 0; /* byte offset of the save box's first element */
  for (int d = 0; d < nd; d++) base += (size_t)(r->save_offset[d] - r->offset[d]) * stride[d];
  const char *src = (const char *)r->data + base;
  if (j == 0) return cudaMemcpyAsync(dst, src, width, cudaMemcpyDeviceToHost, s);
  size_t height = (size_t)r->save_extent[j - 1], pitch = stride[j - 1];
  int64_t outer = dtr__box_elems(j - 1, r->save_extent); /* indices of dimensions 0..j-2 */
  int64_t idx[DTR_CKPT_MAX_DIMS] = {0};
  for (int64_t o = 0; o < outer; o++) {
    size_t off = 0;
    for (int d = 0; d < j - 1; d++) off += (size_t)idx[d] * stride[d];
    cudaError_t e;
    if (height == 1) {
      e = cudaMemcpyAsync(dst, src + off, width, cudaMemcpyDeviceToHost, s);
    } else if (pitch <= INT_MAX && width <= INT_MAX) { /* cudaDeviceProp::memPitch, 2^31-1 on GPUs */
      e = cudaMemcpy2DAsync(dst, width, src + off, pitch, width, height, cudaMemcpyDeviceToHost, s);
    } else {
      e = cudaSuccess;
      for (size_t h = 0; h < height && e == cudaSuccess; h++)
        e = cudaMemcpyAsync(dst + h * width, src + off + h * pitch, width, cudaMemcpyDeviceToHost, s);
    }
    if (e != cudaSuccess) return e;
    dst += height * width;
    for (int d = j - 2; d >= 0; d--) {
      if (++idx[d] < r->save_extent[d]) break;
      idx[d] = 0;
    }
  }
  return cudaSuccess;
}

dtr_result dtr__ckpt_dev_copy_out(dtr_ckpt *ck, const dtr__ckpt_reg *r, void *dst) {
  if (!ck->dev_stream)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INTERNAL, "tensor '%s': no device stream", r->name);
  if (dtr__box_elems(r->ndim, r->save_extent) == 0) return DTR_OK;
  int prev = ck->dev_id;
  cudaError_t e = dev_enter(ck, &prev);
  if (e == cudaSuccess) {
    e = queue_copy_out(r, dst, (cudaStream_t)ck->dev_stream);
    dev_leave(ck, prev);
  }
  if (e != cudaSuccess)
    return cuda_fail(ck->err, sizeof ck->err, e, "snapshot copy to the host", r->name, ck->dev_id);
  return DTR_OK;
}

dtr_result dtr__ckpt_dev_sync(dtr_ckpt *ck) {
  if (!ck->dev_stream) return DTR_OK;
  cudaError_t e = cudaStreamSynchronize((cudaStream_t)ck->dev_stream);
  if (e != cudaSuccess)
    return cuda_fail(ck->err, sizeof ck->err, e, "waiting for the snapshot copies", "(all device tensors)",
                     ck->dev_id);
  return DTR_OK;
}

dtr_result dtr__ckpt_dev_upload(dtr_ckpt *ck, const dtr__ckpt_reg *r, const void *src, char *err,
                                size_t errcap) {
  size_t bytes = (size_t)dtr__box_elems(r->ndim, r->extent) * dtr_dtype_size(r->dtype);
  if (bytes == 0) return DTR_OK;
  if (!ck->dev_stream)
    return dtr__fail(err, errcap, DTR_ERR_INTERNAL, "tensor '%s': no device stream", r->name);
  /* On the checkpointer's stream and waited for: when load returns, the data is on the device
   * whatever stream the caller's kernels read it from. */
  int prev = ck->dev_id;
  cudaError_t e = dev_enter(ck, &prev);
  if (e == cudaSuccess) {
    e = cudaMemcpyAsync(r->data, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)ck->dev_stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize((cudaStream_t)ck->dev_stream);
    dev_leave(ck, prev);
  }
  if (e != cudaSuccess) return cuda_fail(err, errcap, e, "load copy to the device", r->name, ck->dev_id);
  return DTR_OK;
}

void dtr__ckpt_dev_release(dtr_ckpt *ck) {
  if (!ck->dev_stream) return;
  cudaError_t e = cudaStreamDestroy((cudaStream_t)ck->dev_stream);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    DTR_WARN("checkpoint: cudaStreamDestroy: %s", cudaGetErrorString(e));
  }
  ck->dev_stream = NULL;
}

#endif /* DTRAIN_HAVE_CUDA */
