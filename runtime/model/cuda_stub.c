/* The GPU kernel entry points of runtime/model/kernels_cuda.h in a build without CUDA: each returns
 * DTR_ERR_UNSUPPORTED (or does nothing), so callers link and decide at run time whether to use the
 * CPU path. With CUDA (DTRAIN_HAVE_CUDA) this file is empty and the .cu files define them. */
#include "runtime/model/kernels_cuda.h"

#ifndef DTRAIN_HAVE_CUDA

#include "common/log.h"

static dtr_result no_cuda(void) {
  return DTR_ERR_UNSUPPORTED;
}

size_t dtr__cuda_dtype_size(dtr_dtype dt) {
  return dt == DTR_F32 ? 4 : dt == DTR_BF16 ? 2 : 0;
}

dtr_result dtr__cuda_ctx_create(int device, dtr_cuda_ctx **out, char *err, size_t errcap) {
  *out = NULL;
  return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED, "cuda: device %d requested but this build has no CUDA",
                   device);
}
void dtr__cuda_ctx_destroy(dtr_cuda_ctx *c) {
  (void)c;
}
const char *dtr__cuda_ctx_error(const dtr_cuda_ctx *c) {
  return "this build has no CUDA";
}
void *dtr__cuda_ctx_stream(dtr_cuda_ctx *c) {
  return NULL;
}
dtr_result dtr__cuda_sync(dtr_cuda_ctx *c) {
  return no_cuda();
}

dtr_result dtr__cuda_alloc(dtr_cuda_ctx *c, size_t bytes, void **out) {
  *out = NULL;
  return no_cuda();
}
void dtr__cuda_free(dtr_cuda_ctx *c, void *p) {}
dtr_result dtr__cuda_zero(dtr_cuda_ctx *c, void *p, size_t bytes) {
  return no_cuda();
}
dtr_result dtr__cuda_upload(dtr_cuda_ctx *c, void *dst_dev, const void *src_host, size_t bytes) {
  return no_cuda();
}
dtr_result dtr__cuda_download(dtr_cuda_ctx *c, void *dst_host, const void *src_dev, size_t bytes) {
  return no_cuda();
}
dtr_result dtr__cuda_convert(dtr_cuda_ctx *c, dtr_dtype dst_dt, void *dst, dtr_dtype src_dt, const void *src,
                             size_t n) {
  return no_cuda();
}

dtr_result dtr__matmul_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *inp, const void *w,
                                const void *bias, int N, int C, int OC) {
  return no_cuda();
}
dtr_result dtr__matmul_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, float *dw, float *dbias,
                                const void *dout, const void *inp, const void *w, int N, int C, int OC) {
  return no_cuda();
}
dtr_result dtr__layernorm_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, float *mean, float *rstd,
                                   const void *inp, const void *w, const void *b, int N, int C) {
  return no_cuda();
}
dtr_result dtr__layernorm_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, float *dw, float *db,
                                   const void *dout, const void *inp, const void *w, const float *mean,
                                   const float *rstd, int N, int C) {
  return no_cuda();
}
dtr_result dtr__gelu_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *inp, size_t n) {
  return no_cuda();
}
dtr_result dtr__gelu_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, const void *inp, const void *dout,
                              size_t n) {
  return no_cuda();
}
dtr_result dtr__attention_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, void *att, const void *qkv,
                                   int B, int T, int C, int NH) {
  return no_cuda();
}
dtr_result dtr__attention_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dqkv, const void *dout,
                                   const void *att, const void *qkv, int B, int T, int C, int NH) {
  return no_cuda();
}
dtr_result dtr__residual_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *a, const void *b,
                                  size_t n) {
  return no_cuda();
}
dtr_result dtr__add_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *y, const void *x, size_t n) {
  return no_cuda();
}
dtr_result dtr__embedding_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const int32_t *inp,
                                   const void *wte, const void *wpe, int B, int T, int C, int V) {
  return no_cuda();
}
dtr_result dtr__embedding_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwte, float *dwpe, const void *dout,
                                   const int32_t *inp, int B, int T, int C, int V) {
  return no_cuda();
}
dtr_result dtr__softmax_xent_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *probs, float *losses,
                                      const void *logits, const int32_t *targets, int N, int V) {
  return no_cuda();
}
dtr_result dtr__softmax_xent_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dlogits, const void *probs,
                                      const int32_t *targets, float dloss, int N, int V) {
  return no_cuda();
}
dtr_result dtr__adamw_cuda(dtr_cuda_ctx *c, float *params, uint16_t *params_bf16, const float *grads,
                           float *m, float *v, const uint8_t *decay_mask, size_t n,
                           const dtr_cuda_adamw_hp *hp) {
  return no_cuda();
}
dtr_result dtr__sumsq_cuda(dtr_cuda_ctx *c, float *out_dev, const float *x, size_t n) {
  return no_cuda();
}
dtr_result dtr__vocab_embedding_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const int32_t *ids,
                                         const void *wte, int v0, int V, int N, int C) {
  return no_cuda();
}
dtr_result dtr__vocab_embedding_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwte, const void *dout,
                                         const int32_t *ids, int v0, int V, int N, int C) {
  return no_cuda();
}
dtr_result dtr__position_add_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *wpe, int B, int T,
                                      int C) {
  return no_cuda();
}
dtr_result dtr__position_add_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwpe, const void *dout, int B,
                                      int T, int C) {
  return no_cuda();
}
dtr_result dtr__bias_add_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *bias, int N, int C) {
  return no_cuda();
}
dtr_result dtr__vocab_xent_max_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *rowmax, const void *logits, int N,
                                    int V) {
  return no_cuda();
}
dtr_result dtr__vocab_xent_sum_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *sumexp, float *zt,
                                    const void *logits, const float *rowmax, const int32_t *targets, int v0,
                                    int N, int V) {
  return no_cuda();
}
dtr_result dtr__vocab_xent_finish_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *probs, float *losses,
                                       const void *logits, const float *rowmax, const float *sumexp,
                                       const float *zt, const int32_t *targets, int N, int V) {
  return no_cuda();
}
dtr_result dtr__vocab_xent_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dlogits, const void *probs,
                                    const int32_t *targets, int v0, float dloss, int N, int V) {
  return no_cuda();
}
dtr_result dtr__cuda_device_alloc(int device, size_t bytes, void **out) {
  *out = NULL;
  return bytes ? no_cuda() : DTR_OK;
}
void dtr__cuda_device_free(void *p) {
  (void)p;
}
dtr_result dtr__cuda_memcpy(void *dst, const void *src, size_t bytes) {
  return bytes ? no_cuda() : DTR_OK;
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int dtr__cuda_stub_unused;
#endif
