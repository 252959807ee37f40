/* GPU kernels of the reference GPT: the operations of runtime/model/kernels.h on a CUDA device, with cuBLAS
 * for the matrix products. Plain C declarations (no CUDA headers needed by callers); in a build without
 * CUDA every entry point exists (runtime/model/cuda_stub.c) and returns DTR_ERR_UNSUPPORTED.
 *
 * Conventions, as in kernels.h: row-major, weights [out, in]; "fwd" overwrites its output; "bwd" ADDS
 * into parameter gradients and, unless said otherwise, into the input gradient. Each op takes a dtype
 * (dtr_dtype, dtrain/common.h) for its activations and parameter copies: DTR_F32 (float, fp32
 * throughout) or DTR_BF16 (bfloat16 stored as uint16_t, rounded to nearest even from fp32; fp32
 * arithmetic and fp32 accumulation in every reduction and GEMM: mixed precision); other dtypes are
 * refused.
 * Parameter GRADIENTS are always fp32 (float *), whatever the dtype, so micro-steps accumulate and
 * data-parallel all-reduces run without bf16 rounding; AdamW keeps fp32 master weights and writes
 * the bf16 copy the next forward reads. Row statistics (layer-norm mean/rstd, losses) are fp32.
 *
 * All pointers are device pointers (from dtr__cuda_alloc or cudaMalloc) unless said otherwise. Ops are
 * asynchronous on the context's stream: a result is ready after dtr__cuda_sync or a download. A
 * context is not thread-safe; use it from one thread at a time, with its device current (create makes
 * it current on the calling thread). Launch failures and bad arguments return non-zero with the
 * detail in dtr__cuda_ctx_error; a kernel fault surfaces at the next sync.
 *
 * Deterministic: the same inputs give the same output bits on every run. No op adds floats with
 * atomics; every reduction (row statistics, weight gradients: matmul dbias, layernorm dw/db, embedding
 * dwte/dwpe, and sumsq) adds in an order fixed by the problem's shape alone (partials per block, then
 * a second pass over the blocks in order), and the cuBLAS handle is set up for reproducible GEMMs (see
 * dtr__cuda_ctx_create). Scope: the same GPU model, build, and CUDA/cuBLAS versions (cuBLAS's own
 * promise; our kernels do not depend on the SM count). fp32 embedding gradients add in the order of
 * kernels_cpu.c; other sums differ from the CPU's by rounding only. */
#ifndef DTRAIN_RUNTIME_KERNELS_CUDA_H
#define DTRAIN_RUNTIME_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Layer-norm epsilon; equal to kernels.h's DTR_LN_EPS so both paths compute the same function. */
#define DTR_CUDA_LN_EPS 1e-5f

typedef struct dtr_cuda_ctx dtr_cuda_ctx;

/* Bytes per element of dt (4 or 2); 0 for a dtype the kernels do not take (other than DTR_F32 and
 * DTR_BF16). */
size_t dtr__cuda_dtype_size(dtr_dtype dt);

/* ---- context: device, stream, cuBLAS handle, scratch memory (attention, the reductions' partials) */

/* Select device (cudaSetDevice on the calling thread), create a stream and a cuBLAS handle (pure fp32
 * math: no TF32, so fp32 results match the CPU to rounding; its own workspace of 4 MiB, 32 MiB on
 * Hopper and later, and no atomics, for reproducible results). On failure *out is NULL and err says why
 * (no device: DTR_ERR_UNSUPPORTED; a build without CUDA: DTR_ERR_UNSUPPORTED). */
dtr_result dtr__cuda_ctx_create(int device, dtr_cuda_ctx **out, char *err, size_t errcap);
/* Waits for queued work, then frees everything the context owns. NULL is accepted. */
void dtr__cuda_ctx_destroy(dtr_cuda_ctx *c);
/* The last failure's detail ("" when none). Valid until the next call on c. */
const char *dtr__cuda_ctx_error(const dtr_cuda_ctx *c);
/* The cudaStream_t the ops run on, as void * (for callers that queue their own work, e.g. NCCL). */
void *dtr__cuda_ctx_stream(dtr_cuda_ctx *c);
/* Wait for every queued op; reports an asynchronous kernel fault. */
dtr_result dtr__cuda_sync(dtr_cuda_ctx *c);

/* ---- memory (device buffers; alloc of 0 bytes gives NULL and DTR_OK; free accepts NULL) */

dtr_result dtr__cuda_alloc(dtr_cuda_ctx *c, size_t bytes, void **out);
void dtr__cuda_free(dtr_cuda_ctx *c, void *p);
dtr_result dtr__cuda_zero(dtr_cuda_ctx *c, void *p, size_t bytes); /* async */
/* Host <-> device copies; both wait for the stream, so the host buffer is free to reuse on return. */
dtr_result dtr__cuda_upload(dtr_cuda_ctx *c, void *dst_dev, const void *src_host, size_t bytes);
dtr_result dtr__cuda_download(dtr_cuda_ctx *c, void *dst_host, const void *src_dev, size_t bytes);
/* dst[i] = (dst_dt) src[i] for n elements, on the device (fp32 -> bf16 rounds to nearest even). */
dtr_result dtr__cuda_convert(dtr_cuda_ctx *c, dtr_dtype dst_dt, void *dst, dtr_dtype src_dt, const void *src,
                             size_t n);

/* ---- the model's operations (same math and argument order as kernels.h, after ctx and dtype) */

/* out[N,OC] = inp[N,C] @ w[OC,C]^T + bias[OC] (bias may be NULL); cuBLAS, fp32 accumulate. */
dtr_result dtr__matmul_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *inp, const void *w,
                                const void *bias, int N, int C, int OC);
/* dinp[N,C] += dout[N,OC] @ w (dinp NULL: skipped); dw[OC,C] += dout^T @ inp (fp32); dbias[OC] += column
 * sums of dout (fp32; NULL: skipped). */
dtr_result dtr__matmul_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, float *dw, float *dbias,
                                const void *dout, const void *inp, const void *w, int N, int C, int OC);

/* Per row of inp[N,C]: out = (x - mean) * rstd * w + b; mean[N], rstd[N] (fp32; NULL: not kept). */
dtr_result dtr__layernorm_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, float *mean, float *rstd,
                                   const void *inp, const void *w, const void *b, int N, int C);
/* dinp[N,C] += d/dinp; dw[C], db[C] (fp32) += parameter gradients. */
dtr_result dtr__layernorm_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, float *dw, float *db,
                                   const void *dout, const void *inp, const void *w, const float *mean,
                                   const float *rstd, int N, int C);

/* GELU, tanh approximation. bwd OVERWRITES dinp = dout * gelu'(inp); dinp may alias dout. */
dtr_result dtr__gelu_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *inp, size_t n);
dtr_result dtr__gelu_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, const void *inp, const void *dout,
                              size_t n);

/* Causal multi-head self-attention over qkv[B,T,3C] into out[B,T,C]; att[B,NH,T,T] receives the
 * probabilities (zero above the diagonal). Scores and att @ v are strided-batched cuBLAS GEMMs around a
 * masked-softmax kernel; q, k, v are rearranged per head in context scratch (fwd: 4*B*T*C elements).
 * bwd OVERWRITES dqkv[B,T,3C] given dout[B,T,C] (scratch: 7*B*T*C + B*NH*T*T elements). */
dtr_result dtr__attention_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, void *att, const void *qkv,
                                   int B, int T, int C, int NH);
dtr_result dtr__attention_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dqkv, const void *dout,
                                   const void *att, const void *qkv, int B, int T, int C, int NH);

/* out = a + b over n elements (out may alias a or b). */
dtr_result dtr__residual_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *a, const void *b,
                                  size_t n);
/* y += x over n elements: how a backward adds a branch's gradient into the residual stream. */
dtr_result dtr__add_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *y, const void *x, size_t n);

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]. inp are device ids; the caller validates them (an id
 * outside [0,V) yields a row of NaN here rather than a wild read). */
dtr_result dtr__embedding_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const int32_t *inp,
                                   const void *wte, const void *wpe, int B, int T, int C, int V);
/* dwte[inp[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:] (fp32; dwpe NULL: skipped; ids outside
 * [0,V) are ignored). Each element adds its terms in increasing b*T + t (as kernels_cpu.c), through a
 * counting sort of the ids on the device (context scratch: (2V + 1 + 2BT) ints). */
dtr_result dtr__embedding_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwte, float *dwpe, const void *dout,
                                   const int32_t *inp, int B, int T, int C, int V);

/* Row softmax of logits[N,V] into probs (may alias logits); losses[n] (fp32) = -log p[target] for
 * targets >= 0, 0 for -1, NaN for a target >= V (targets NULL: losses not written; losses may be NULL
 * then). The loss comes from the fp32 log-sum-exp, not from the rounded probability. */
dtr_result dtr__softmax_xent_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *probs, float *losses,
                                      const void *logits, const int32_t *targets, int N, int V);
/* OVERWRITES dlogits = (probs - onehot(target)) * dloss on scored rows, 0 on rows with target -1;
 * dlogits may alias probs. */
dtr_result dtr__softmax_xent_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dlogits, const void *probs,
                                      const int32_t *targets, float dloss, int N, int V);

/* AdamW (decoupled weight decay, torch.optim.AdamW; the arithmetic of runtime/train/optim.c) over n fp32
 * master weights, step >= 1:
 *   g = grad * grad_scale; p *= 1 - lr * weight_decay (where decay_mask[i] != 0, or everywhere when
 *   decay_mask is NULL); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= lr / (1-b1^step) * m / (sqrt(v) / sqrt(1-b2^step) + eps)
 * params_bf16, when not NULL, receives the updated weights in bf16 (the next forward's copy). */
typedef struct dtr_cuda_adamw_hp {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  int64_t step;
} dtr_cuda_adamw_hp;
dtr_result dtr__adamw_cuda(dtr_cuda_ctx *c, float *params, uint16_t *params_bf16, const float *grads,
                           float *m, float *v, const uint8_t *decay_mask, size_t n,
                           const dtr_cuda_adamw_hp *hp);

/* sum of x[i]^2 over n fp32 elements into *out_dev (one fp32 on the device; overwritten): the global
 * gradient norm for clipping without a round trip per tensor. Fixed order: per-block partials (at most
 * 1024, in context scratch), then added in block order. */
dtr_result dtr__sumsq_cuda(dtr_cuda_ctx *c, float *out_dev, const float *x, size_t n);

/* ---- the tensor-parallel pieces of kernels.h (kernels_cuda_tp.cu): same arguments and math as the
 * _cpu versions, after ctx and dtype; ids and targets are device ids; gradients and row statistics fp32. */
dtr_result dtr__vocab_embedding_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const int32_t *ids,
                                         const void *wte, int v0, int V, int N, int C);
dtr_result dtr__vocab_embedding_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwte, const void *dout,
                                         const int32_t *ids, int v0, int V, int N, int C);
dtr_result dtr__position_add_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *wpe, int B, int T,
                                      int C);
dtr_result dtr__position_add_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwpe, const void *dout, int B,
                                      int T, int C);
dtr_result dtr__bias_add_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *bias, int N, int C);
dtr_result dtr__vocab_xent_max_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *rowmax, const void *logits, int N,
                                    int V);
dtr_result dtr__vocab_xent_sum_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *sumexp, float *zt,
                                    const void *logits, const float *rowmax, const int32_t *targets, int v0,
                                    int N, int V);
dtr_result dtr__vocab_xent_finish_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *probs, float *losses,
                                       const void *logits, const float *rowmax, const float *sumexp,
                                       const float *zt, const int32_t *targets, int N, int V);
dtr_result dtr__vocab_xent_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dlogits, const void *probs,
                                    const int32_t *targets, int v0, float dloss, int N, int V);

/* Device memory of `device` without a context (the pipeline's link buffers when its communicators are
 * NCCL); bytes 0 gives NULL and DTR_OK; free accepts NULL. */
dtr_result dtr__cuda_device_alloc(int device, size_t bytes, void **out);
void dtr__cuda_device_free(void *p);
/* A synchronous copy between host and device memory, either way (cudaMemcpy with the kind inferred). */
dtr_result dtr__cuda_memcpy(void *dst, const void *src, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_RUNTIME_KERNELS_CUDA_H */
