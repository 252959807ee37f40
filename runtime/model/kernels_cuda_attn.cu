/* Causal multi-head attention on the GPU, in the shape of llm.c's CUDA version: q, k, v are rearranged
 * to [B,NH,T,hs] so the scores and att @ v are strided-batched cuBLAS GEMMs (one batch entry per
 * (b, h)), with a masked softmax kernel in between and its backward on the way back. */
#include <math.h>

#include "runtime/model/kernels_cuda_internal.cuh"

/* The element of a [B,T,nc,NH,hs] tensor (qkv: nc = 3; an activation: nc = 1) that lands at position
 * idx of nc blocks of [B,NH,T,hs]. */
__device__ __forceinline__ size_t heads_src(size_t idx, int B, int T_, int NH, int hs, int nc) {
  size_t d = idx % hs, r = idx / hs;
  size_t t = r % T_;
  r /= T_;
  size_t h = r % NH;
  r /= NH;
  size_t b = r % B, k = r / B;
  return ((b * T_ + t) * nc + k) * (size_t)NH * hs + h * hs + d;
}

template <typename T>
__global__ void split_heads_kernel(T *dst, const T *src, int B, int T_, int NH, int hs, int nc) {
  size_t total = (size_t)nc * B * NH * T_ * hs;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x)
    dst[i] = src[heads_src(i, B, T_, NH, hs, nc)];
}

template <typename T>
__global__ void merge_heads_kernel(T *dst, const T *src, int B, int T_, int NH, int hs, int nc) {
  size_t total = (size_t)nc * B * NH * T_ * hs;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x)
    dst[heads_src(i, B, T_, NH, hs, nc)] = src[i];
}

/* In place over att[B*NH*T, T] holding scaled scores: row r is query t = r % T; keys j <= t get the
 * softmax, keys above the diagonal 0 (so the full-width GEMM with v adds nothing from them). */
template <typename T>
__global__ void causal_softmax_kernel(T *att, int T_) {
  __shared__ float sh[32];
  size_t row = blockIdx.x;
  int t = (int)(row % (size_t)T_);
  T *x = att + row * T_;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) mx = fmaxf(mx, dtr__ld(x + j));
  mx = dtr__block_max(mx, sh);
  float s = 0.0f;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) s += expf(dtr__ld(x + j) - mx);
  float inv = 1.0f / dtr__block_sum(s, sh);
  for (int j = threadIdx.x; j < T_; j += blockDim.x)
    dtr__st(x + j, j <= t ? expf(dtr__ld(x + j) - mx) * inv : 0.0f);
}

/* In place over datt: dpre[j] = scale * att[j] * (datt[j] - sum_k att[k] datt[k]) for j <= t, else 0;
 * the scale of the forward's scores is folded in here. */
template <typename T>
__global__ void causal_softmax_bwd_kernel(T *datt, const T *att, int T_, float scale) {
  __shared__ float sh[32];
  size_t row = blockIdx.x;
  int t = (int)(row % (size_t)T_);
  T *g = datt + row * T_;
  const T *p = att + row * T_;
  float s = 0.0f;
  for (int j = threadIdx.x; j <= t; j += blockDim.x) s += dtr__ld(p + j) * dtr__ld(g + j);
  s = dtr__block_sum(s, sh);
  for (int j = threadIdx.x; j < T_; j += blockDim.x)
    dtr__st(g + j, j <= t ? scale * dtr__ld(p + j) * (dtr__ld(g + j) - s) : 0.0f);
}

static dtr_result check_attn(dtr_cuda_ctx *c, const char *op, dtr_dtype dt, int B, int T, int C, int NH) {
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  DTR_CU_ARG(c, op, B > 0 && T > 0 && C > 0 && NH > 0);
  DTR_CU_ARG(c, op, C % NH == 0);
  return DTR_OK;
}

template <typename T>
static dtr_result heads(dtr_cuda_ctx *c, int merge, T *dst, const T *src, int B, int T_, int NH, int hs,
                        int nc) {
  size_t total = (size_t)nc * B * NH * T_ * hs;
  unsigned grid = dtr__cuda_grid(c, total, 256);
  if (merge)
    merge_heads_kernel<<<grid, 256, 0, c->stream>>>(dst, src, B, T_, NH, hs, nc);
  else
    split_heads_kernel<<<grid, 256, 0, c->stream>>>(dst, src, B, T_, NH, hs, nc);
  return DTR_CU_LAUNCHED(c, merge ? "merge_heads_kernel" : "split_heads_kernel");
}

template <typename T>
static dtr_result attention_fwd(dtr_cuda_ctx *c, dtr_dtype dt, T *out, T *att, const T *qkv, int B, int T_,
                                int C, int NH) {
  int hs = C / NH, batch = B * NH;
  size_t btc = (size_t)B * T_ * C;
  void *scratch;
  DTR_CHECK(dtr__cuda_scratch(c, 4 * btc * sizeof(T), &scratch));
  T *q = (T *)scratch, *k = q + btc, *v = k + btc, *y = v + btc;
  DTR_CHECK(heads(c, 0, q, qkv, B, T_, NH, hs, 3));
  float scale = 1.0f / sqrtf((float)hs);
  long long sq = (long long)T_ * hs, sa = (long long)T_ * T_;
  /* att = scale * q @ k^T per (b, h) */
  DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 0, 1, T_, T_, hs, scale, q, k, 0.0f, att, batch, sq, sq, sa));
  causal_softmax_kernel<<<(unsigned)((size_t)batch * T_), dtr__row_block(T_), 0, c->stream>>>(att, T_);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "causal_softmax_kernel"));
  /* y = att @ v */
  DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 0, 0, T_, hs, T_, 1.0f, att, v, 0.0f, y, batch, sa, sq, sq));
  return heads(c, 1, out, (const T *)y, B, T_, NH, hs, 1);
}

template <typename T>
static dtr_result attention_bwd(dtr_cuda_ctx *c, dtr_dtype dt, T *dqkv, const T *dout, const T *att,
                                const T *qkv, int B, int T_, int C, int NH) {
  int hs = C / NH, batch = B * NH;
  size_t btc = (size_t)B * T_ * C, btt = (size_t)batch * T_ * T_;
  void *scratch;
  DTR_CHECK(dtr__cuda_scratch(c, (7 * btc + btt) * sizeof(T), &scratch));
  T *q = (T *)scratch, *k = q + btc, *v = k + btc, *dy = v + btc, *dq = dy + btc, *dk = dq + btc,
    *dv = dk + btc;
  T *datt = dv + btc;
  DTR_CHECK(heads(c, 0, q, qkv, B, T_, NH, hs, 3));
  DTR_CHECK(heads(c, 0, dy, dout, B, T_, NH, hs, 1));
  float scale = 1.0f / sqrtf((float)hs);
  long long sq = (long long)T_ * hs, sa = (long long)T_ * T_;
  /* datt = dy @ v^T; dv = att^T @ dy */
  DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 0, 1, T_, T_, hs, 1.0f, dy, v, 0.0f, datt, batch, sq, sq, sa));
  DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 1, 0, T_, hs, T_, 1.0f, att, dy, 0.0f, dv, batch, sa, sq, sq));
  causal_softmax_bwd_kernel<<<(unsigned)((size_t)batch * T_), dtr__row_block(T_), 0, c->stream>>>(datt, att,
                                                                                                  T_, scale);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "causal_softmax_bwd_kernel"));
  /* dq = dpre @ k; dk = dpre^T @ q */
  DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 0, 0, T_, hs, T_, 1.0f, datt, k, 0.0f, dq, batch, sa, sq, sq));
  DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 1, 0, T_, hs, T_, 1.0f, datt, q, 0.0f, dk, batch, sa, sq, sq));
  return heads(c, 1, dqkv, (const T *)dq, B, T_, NH, hs, 3);
}

dtr_result dtr__attention_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, void *att, const void *qkv,
                                   int B, int T, int C, int NH) {
  static const char *op = "attention_fwd_cuda";
  DTR_CHECK(check_attn(c, op, dt, B, T, C, NH));
  DTR_CU_ARG(c, op, out && att && qkv);
  if (dt == DTR_BF16)
    return attention_fwd(c, dt, (dtr__bf16 *)out, (dtr__bf16 *)att, (const dtr__bf16 *)qkv, B, T, C, NH);
  return attention_fwd(c, dt, (float *)out, (float *)att, (const float *)qkv, B, T, C, NH);
}

dtr_result dtr__attention_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dqkv, const void *dout,
                                   const void *att, const void *qkv, int B, int T, int C, int NH) {
  static const char *op = "attention_bwd_cuda";
  DTR_CHECK(check_attn(c, op, dt, B, T, C, NH));
  DTR_CU_ARG(c, op, dqkv && dout && att && qkv);
  if (dt == DTR_BF16)
    return attention_bwd(c, dt, (dtr__bf16 *)dqkv, (const dtr__bf16 *)dout, (const dtr__bf16 *)att,
                         (const dtr__bf16 *)qkv, B, T, C, NH);
  return attention_bwd(c, dt, (float *)dqkv, (const float *)dout, (const float *)att, (const float *)qkv, B,
                       T, C, NH);
}
