/* GPU versions of the tensor-parallel pieces of kernels.h: a vocabulary slice of the embedding (zeros
 * for ids another rank holds) and of the softmax cross-entropy (row maxima, sum-exp with the target's
 * logit, probabilities and losses from the all-reduced statistics, dlogits), positions and biases added
 * apart. Arithmetic in fp32 for either storage type; no float atomics: every sum runs in a fixed order. */
#include "runtime/model/kernels_cuda_internal.cuh"

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static dtr_result check_dt(dtr_cuda_ctx *c, const char *op, dtr_dtype dt) {
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  return DTR_OK;
}

/* ---------------------------------------------------------------- embeddings and biases */

template <typename T>
__global__ void vocab_embedding_fwd_kernel(T *out, const int32_t *ids, const T *wte, int v0, int V, size_t N,
                                           int C) {
  GRID_STRIDE(i, N * (size_t)C) {
    size_t n = i / (size_t)C;
    int ch = (int)(i - n * (size_t)C), id = ids[n] - v0;
    dtr__st(out + i, id >= 0 && id < V ? dtr__ld(wte + (size_t)id * C + ch) : 0.0f);
  }
}

dtr_result dtr__vocab_embedding_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const int32_t *ids,
                                         const void *wte, int v0, int V, int N, int C) {
  static const char *op = "vocab_embedding_fwd_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, out && ids && wte && V > 0 && N >= 0 && C > 0);
  if (N == 0) return DTR_OK;
  unsigned grid = dtr__cuda_grid(c, (size_t)N * C, 256);
  if (dt == DTR_BF16)
    vocab_embedding_fwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, ids, (const dtr__bf16 *)wte, v0,
                                                            V, (size_t)N, C);
  else
    vocab_embedding_fwd_kernel<<<grid, 256, 0, c->stream>>>((float *)out, ids, (const float *)wte, v0, V,
                                                            (size_t)N, C);
  return DTR_CU_LAUNCHED(c, "vocab_embedding_fwd_kernel");
}

__global__ void shift_ids_kernel(int32_t *dst, const int32_t *src, int v0, size_t n) {
  GRID_STRIDE(i, n) dst[i] = src[i] - v0;
}

dtr_result dtr__vocab_embedding_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwte, const void *dout,
                                         const int32_t *ids, int v0, int V, int N, int C) {
  static const char *op = "vocab_embedding_bwd_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, dwte && dout && ids && V > 0 && N >= 0 && C > 0);
  if (N == 0) return DTR_OK;
  /* The whole-vocabulary backward on ids shifted into this slice: it ignores ids outside [0, V), and
   * keeps its fixed order of additions. The shifted ids live in stream-ordered memory of their own (the
   * context scratch is the backward's). */
  int32_t *shifted = NULL;
  DTR_CHECK(DTR_CU(c, cudaMallocAsync((void **)&shifted, sizeof(int32_t) * (size_t)N, c->stream)));
  shift_ids_kernel<<<dtr__cuda_grid(c, (size_t)N, 256), 256, 0, c->stream>>>(shifted, ids, v0, (size_t)N);
  dtr_result rc = DTR_CU_LAUNCHED(c, "shift_ids_kernel");
  if (rc == DTR_OK) rc = dtr__embedding_bwd_cuda(c, dt, dwte, NULL, dout, shifted, N, 1, C, V);
  dtr_result f = DTR_CU(c, cudaFreeAsync(shifted, c->stream));
  return rc != DTR_OK ? rc : f;
}

template <typename T>
__global__ void position_add_fwd_kernel(T *out, const T *wpe, size_t BT, int T_, int C) {
  GRID_STRIDE(i, BT * (size_t)C) {
    size_t bt = i / (size_t)C;
    int ch = (int)(i - bt * (size_t)C), t = (int)(bt % (size_t)T_);
    dtr__st(out + i, dtr__ld(out + i) + dtr__ld(wpe + (size_t)t * C + ch));
  }
}

/* One thread per (t, channel): the batch added in order b = 0, 1, ... (as kernels_cpu.c). */
template <typename T>
__global__ void position_add_bwd_kernel(float *dwpe, const T *dout, int B, int T_, int C) {
  GRID_STRIDE(i, (size_t)T_ * C) {
    size_t t = i / (size_t)C, ch = i - t * (size_t)C;
    float s = dwpe[i];
    for (int b = 0; b < B; b++) s += dtr__ld(dout + ((size_t)b * T_ + t) * C + ch);
    dwpe[i] = s;
  }
}

dtr_result dtr__position_add_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *wpe, int B, int T,
                                      int C) {
  static const char *op = "position_add_fwd_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, out && wpe && B >= 0 && T > 0 && C > 0);
  size_t n = (size_t)B * T * C;
  if (n == 0) return DTR_OK;
  unsigned grid = dtr__cuda_grid(c, n, 256);
  if (dt == DTR_BF16)
    position_add_fwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, (const dtr__bf16 *)wpe,
                                                         (size_t)B * T, T, C);
  else
    position_add_fwd_kernel<<<grid, 256, 0, c->stream>>>((float *)out, (const float *)wpe, (size_t)B * T, T,
                                                         C);
  return DTR_CU_LAUNCHED(c, "position_add_fwd_kernel");
}

dtr_result dtr__position_add_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwpe, const void *dout, int B,
                                      int T, int C) {
  static const char *op = "position_add_bwd_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, dwpe && dout && B >= 0 && T > 0 && C > 0);
  unsigned grid = dtr__cuda_grid(c, (size_t)T * C, 256);
  if (dt == DTR_BF16)
    position_add_bwd_kernel<<<grid, 256, 0, c->stream>>>(dwpe, (const dtr__bf16 *)dout, B, T, C);
  else
    position_add_bwd_kernel<<<grid, 256, 0, c->stream>>>(dwpe, (const float *)dout, B, T, C);
  return DTR_CU_LAUNCHED(c, "position_add_bwd_kernel");
}

template <typename T>
__global__ void bias_add_kernel(T *out, const T *bias, size_t N, int C) {
  GRID_STRIDE(i, N * (size_t)C) dtr__st(out + i, dtr__ld(out + i) + dtr__ld(bias + i % (size_t)C));
}

dtr_result dtr__bias_add_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *bias, int N, int C) {
  static const char *op = "bias_add_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, out && bias && N >= 0 && C > 0);
  if (N == 0) return DTR_OK;
  unsigned grid = dtr__cuda_grid(c, (size_t)N * C, 256);
  if (dt == DTR_BF16)
    bias_add_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, (const dtr__bf16 *)bias, (size_t)N, C);
  else
    bias_add_kernel<<<grid, 256, 0, c->stream>>>((float *)out, (const float *)bias, (size_t)N, C);
  return DTR_CU_LAUNCHED(c, "bias_add_kernel");
}

/* ---------------------------------------------------------------- vocabulary-parallel cross-entropy */

/* One block per row throughout (the reductions are block trees: fixed order for a fixed block size). */
template <typename T>
__global__ void vocab_xent_max_kernel(float *rowmax, const T *logits, int V) {
  __shared__ float sh[32];
  const T *x = logits + (size_t)blockIdx.x * V;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, dtr__ld(x + i));
  mx = dtr__block_max(mx, sh);
  if (threadIdx.x == 0) rowmax[blockIdx.x] = mx;
}

template <typename T>
__global__ void vocab_xent_sum_kernel(float *sumexp, float *zt, const T *logits, const float *rowmax,
                                      const int32_t *targets, int v0, int V) {
  __shared__ float sh[32];
  size_t row = blockIdx.x;
  const T *x = logits + row * V;
  float mx = rowmax[row], s = 0.0f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(dtr__ld(x + i) - mx);
  s = dtr__block_sum(s, sh);
  if (threadIdx.x == 0) {
    sumexp[row] = s;
    int t = targets ? targets[row] : -1;
    zt[row] = t >= 0 && t - v0 >= 0 && t - v0 < V ? dtr__ld(x + (t - v0)) : 0.0f;
  }
}

template <typename T>
__global__ void vocab_xent_finish_kernel(T *probs, float *losses, const T *logits, const float *rowmax,
                                         const float *sumexp, const float *zt, const int32_t *targets,
                                         int V) {
  size_t row = blockIdx.x;
  float mx = rowmax[row], s = sumexp[row], inv = 1.0f / s;
  if (threadIdx.x == 0 && losses) losses[row] = targets && targets[row] >= 0 ? logf(s) + mx - zt[row] : 0.0f;
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    dtr__st(probs + row * V + i, expf(dtr__ld(logits + row * V + i) - mx) * inv);
}

template <typename T>
__global__ void vocab_xent_bwd_kernel(T *dlogits, const T *probs, const int32_t *targets, int v0, float dloss,
                                      size_t N, int V) {
  GRID_STRIDE(i, N * (size_t)V) {
    size_t row = i / (size_t)V;
    int col = (int)(i - row * (size_t)V), t = targets[row];
    float g = t < 0 ? 0.0f : (dtr__ld(probs + i) - (t - v0 == col ? 1.0f : 0.0f)) * dloss;
    dtr__st(dlogits + i, g);
  }
}

dtr_result dtr__vocab_xent_max_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *rowmax, const void *logits, int N,
                                    int V) {
  static const char *op = "vocab_xent_max_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, rowmax && logits && N >= 0 && V > 0);
  if (N == 0) return DTR_OK;
  unsigned block = dtr__row_block(V);
  if (dt == DTR_BF16)
    vocab_xent_max_kernel<<<N, block, 0, c->stream>>>(rowmax, (const dtr__bf16 *)logits, V);
  else
    vocab_xent_max_kernel<<<N, block, 0, c->stream>>>(rowmax, (const float *)logits, V);
  return DTR_CU_LAUNCHED(c, "vocab_xent_max_kernel");
}

dtr_result dtr__vocab_xent_sum_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *sumexp, float *zt,
                                    const void *logits, const float *rowmax, const int32_t *targets, int v0,
                                    int N, int V) {
  static const char *op = "vocab_xent_sum_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, sumexp && zt && logits && rowmax && N >= 0 && V > 0);
  if (N == 0) return DTR_OK;
  unsigned block = dtr__row_block(V);
  if (dt == DTR_BF16)
    vocab_xent_sum_kernel<<<N, block, 0, c->stream>>>(sumexp, zt, (const dtr__bf16 *)logits, rowmax, targets,
                                                      v0, V);
  else
    vocab_xent_sum_kernel<<<N, block, 0, c->stream>>>(sumexp, zt, (const float *)logits, rowmax, targets, v0,
                                                      V);
  return DTR_CU_LAUNCHED(c, "vocab_xent_sum_kernel");
}

dtr_result dtr__vocab_xent_finish_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *probs, float *losses,
                                       const void *logits, const float *rowmax, const float *sumexp,
                                       const float *zt, const int32_t *targets, int N, int V) {
  static const char *op = "vocab_xent_finish_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, probs && logits && rowmax && sumexp && zt && N >= 0 && V > 0);
  if (N == 0) return DTR_OK;
  unsigned block = dtr__row_block(V);
  if (dt == DTR_BF16)
    vocab_xent_finish_kernel<<<N, block, 0, c->stream>>>(
        (dtr__bf16 *)probs, losses, (const dtr__bf16 *)logits, rowmax, sumexp, zt, targets, V);
  else
    vocab_xent_finish_kernel<<<N, block, 0, c->stream>>>((float *)probs, losses, (const float *)logits,
                                                         rowmax, sumexp, zt, targets, V);
  return DTR_CU_LAUNCHED(c, "vocab_xent_finish_kernel");
}

dtr_result dtr__vocab_xent_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dlogits, const void *probs,
                                    const int32_t *targets, int v0, float dloss, int N, int V) {
  static const char *op = "vocab_xent_bwd_cuda";
  DTR_CHECK(check_dt(c, op, dt));
  DTR_CU_ARG(c, op, dlogits && probs && targets && N >= 0 && V > 0);
  if (N == 0) return DTR_OK;
  unsigned grid = dtr__cuda_grid(c, (size_t)N * V, 256);
  if (dt == DTR_BF16)
    vocab_xent_bwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)dlogits, (const dtr__bf16 *)probs,
                                                       targets, v0, dloss, (size_t)N, V);
  else
    vocab_xent_bwd_kernel<<<grid, 256, 0, c->stream>>>((float *)dlogits, (const float *)probs, targets, v0,
                                                       dloss, (size_t)N, V);
  return DTR_CU_LAUNCHED(c, "vocab_xent_bwd_kernel");
}

/* ---------------------------------------------------------------- device memory without a context (the
 * pipeline's) */

dtr_result dtr__cuda_device_alloc(int device, size_t bytes, void **out) {
  *out = NULL;
  if (bytes == 0) return DTR_OK;
  char why[256];
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaMalloc(out, bytes);
  if (e != cudaSuccess) {
    *out = NULL;
    return dtr__from_cuda((int)e, why, sizeof why);
  }
  return DTR_OK;
}

void dtr__cuda_device_free(void *p) {
  if (p) cudaFree(p);
}

dtr_result dtr__cuda_memcpy(void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return DTR_OK;
  char why[256];
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
  return e == cudaSuccess ? DTR_OK : dtr__from_cuda((int)e, why, sizeof why);
}
