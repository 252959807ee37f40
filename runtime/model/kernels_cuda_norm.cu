/* Row-wise reductions on the GPU: layer norm forward/backward and the softmax + cross-entropy of the
 * output head. One block per row with shared-memory reductions; every statistic in fp32. */
#include "runtime/model/kernels_cuda_internal.cuh"

/* ---------------------------------------------------------------- layer norm */

template <typename T>
__global__ void layernorm_fwd_kernel(T *out, float *mean, float *rstd, const T *inp, const T *w, const T *b,
                                     int C) {
  __shared__ float sh[32];
  const T *x = inp + (size_t)blockIdx.x * C;
  T *o = out + (size_t)blockIdx.x * C;
  float s = 0.0f;
  for (int i = threadIdx.x; i < C; i += blockDim.x) s += dtr__ld(x + i);
  float m = dtr__block_sum(s, sh) / C;
  float v = 0.0f; /* two passes: the variance of (x - mean) keeps precision when |mean| >> std */
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    float d = dtr__ld(x + i) - m;
    v += d * d;
  }
  float r = rsqrtf(dtr__block_sum(v, sh) / C + DTR_CUDA_LN_EPS);
  for (int i = threadIdx.x; i < C; i += blockDim.x)
    dtr__st(o + i, (dtr__ld(x + i) - m) * r * dtr__ld(w + i) + dtr__ld(b + i));
  if (threadIdx.x == 0) {
    if (mean) mean[blockIdx.x] = m;
    if (rstd) rstd[blockIdx.x] = r;
  }
}

/* Rows are spread over LN_BWD_BLOCKS blocks, block k taking rows k, k + gridDim.x, ... in increasing
 * order. Each block sums its rows' dw, db contributions into its own partial row part[k] = [dw C | db C]
 * (column i and C + i are owned by one thread in every loop, so no races and a fixed order), kept in
 * shared memory when 2*C floats fit and in the global part row otherwise (same additions, same order),
 * and written to the global part row at the end. dtr__cuda_sum_partials then adds the blocks' rows in
 * block order: no atomics, the same bits run after run. */
template <typename T>
__global__ void layernorm_bwd_kernel(T *dinp, float *part_out, const T *dout, const T *inp, const T *w,
                                     const float *mean, const float *rstd, int N, int C, int use_shared) {
  extern __shared__ float sh_part[]; /* [0,C): dw, [C,2C): db, when use_shared */
  __shared__ float sh[32];
  float *out = part_out + (size_t)blockIdx.x * 2 * C;
  float *part = use_shared ? sh_part : out;
  for (int i = threadIdx.x; i < C; i += blockDim.x) part[i] = part[C + i] = 0.0f;
  for (int row = blockIdx.x; row < N; row += gridDim.x) {
    const T *x = inp + (size_t)row * C, *g = dout + (size_t)row * C;
    T *dx = dinp + (size_t)row * C;
    float m = mean[row], r = rstd[row];
    float a = 0.0f, bsum = 0.0f; /* sum(dnorm), sum(dnorm * norm) */
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
      float dn = dtr__ld(g + i) * dtr__ld(w + i);
      a += dn;
      bsum += dn * (dtr__ld(x + i) - m) * r;
    }
    float dn_mean = dtr__block_sum(a, sh) / C;
    float dnn_mean = dtr__block_sum(bsum, sh) / C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
      float gi = dtr__ld(g + i), norm = (dtr__ld(x + i) - m) * r;
      float dn = gi * dtr__ld(w + i);
      dtr__st(dx + i, dtr__ld(dx + i) + (dn - dn_mean - norm * dnn_mean) * r);
      part[i] += gi * norm;
      part[C + i] += gi;
    }
  }
  if (use_shared)
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
      out[i] = part[i];
      out[C + i] = part[C + i];
    }
}

/* Blocks of the backward (fewer when N is smaller): a constant, not the device's SM count, so the
 * order of the dw, db sums does not change with the GPU either. */
#define LN_BWD_BLOCKS 256

dtr_result dtr__layernorm_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, float *mean, float *rstd,
                                   const void *inp, const void *w, const void *b, int N, int C) {
  static const char *op = "layernorm_fwd_cuda";
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  DTR_CU_ARG(c, op, N > 0 && C > 0);
  DTR_CU_ARG(c, op, out && inp && w && b);
  unsigned block = dtr__row_block(C);
  if (dt == DTR_BF16)
    layernorm_fwd_kernel<<<N, block, 0, c->stream>>>((dtr__bf16 *)out, mean, rstd, (const dtr__bf16 *)inp,
                                                     (const dtr__bf16 *)w, (const dtr__bf16 *)b, C);
  else
    layernorm_fwd_kernel<<<N, block, 0, c->stream>>>((float *)out, mean, rstd, (const float *)inp,
                                                     (const float *)w, (const float *)b, C);
  return DTR_CU_LAUNCHED(c, "layernorm_fwd_kernel");
}

dtr_result dtr__layernorm_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, float *dw, float *db,
                                   const void *dout, const void *inp, const void *w, const float *mean,
                                   const float *rstd, int N, int C) {
  static const char *op = "layernorm_bwd_cuda";
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  DTR_CU_ARG(c, op, N > 0 && C > 0);
  DTR_CU_ARG(c, op, dinp && dw && db && dout && inp && w && mean && rstd);
  unsigned block = dtr__row_block(C);
  size_t shmem = 2 * (size_t)C * sizeof(float);
  int use_shared = shmem <= 32 * 1024; /* leaves room for several blocks per SM */
  if (!use_shared) shmem = 0;
  unsigned grid = N < LN_BWD_BLOCKS ? (unsigned)N : LN_BWD_BLOCKS;
  void *part;
  DTR_CHECK(dtr__cuda_scratch(c, (size_t)grid * 2 * C * sizeof(float), &part));
  if (dt == DTR_BF16)
    layernorm_bwd_kernel<<<grid, block, shmem, c->stream>>>(
        (dtr__bf16 *)dinp, (float *)part, (const dtr__bf16 *)dout, (const dtr__bf16 *)inp,
        (const dtr__bf16 *)w, mean, rstd, N, C, use_shared);
  else
    layernorm_bwd_kernel<<<grid, block, shmem, c->stream>>>((float *)dinp, (float *)part, (const float *)dout,
                                                            (const float *)inp, (const float *)w, mean, rstd,
                                                            N, C, use_shared);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "layernorm_bwd_kernel"));
  return dtr__cuda_sum_partials(c, dw, db, (const float *)part, (int)grid, C);
}

/* ---------------------------------------------------------------- softmax + cross-entropy */

/* One block per row: max, sum of exp, then probabilities; the loss is lse - logit[target] in fp32.
 * probs may alias logits: each element is read (twice) and written by the same thread, and every read
 * of the row happens before the block's second reduction returns. */
template <typename T>
__global__ void softmax_xent_fwd_kernel(T *probs, float *losses, const T *logits, const int32_t *targets,
                                        int V) {
  __shared__ float sh[32];
  size_t row = blockIdx.x;
  const T *x = logits + row * V;
  T *p = probs + row * V;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, dtr__ld(x + i));
  mx = dtr__block_max(mx, sh);
  float s = 0.0f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(dtr__ld(x + i) - mx);
  s = dtr__block_sum(s, sh);
  if (threadIdx.x == 0 && targets) {
    int t = targets[row];
    /* Read before the loop below may overwrite it (aliasing); block_sum's barrier ordered the rest. */
    losses[row] = t < 0 ? 0.0f : t >= V ? NAN : logf(s) + mx - dtr__ld(x + t);
  }
  __syncthreads(); /* thread 0's read of x[t] happens before anyone overwrites it */
  float inv = 1.0f / s;
  for (int i = threadIdx.x; i < V; i += blockDim.x) dtr__st(p + i, expf(dtr__ld(x + i) - mx) * inv);
}

/* Element-parallel: dlogits = (probs - onehot) * dloss on scored rows, 0 elsewhere. */
template <typename T>
__global__ void softmax_xent_bwd_kernel(T *dlogits, const T *probs, const int32_t *targets, float dloss,
                                        size_t N, int V) {
  size_t total = N * (size_t)V;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t row = i / (size_t)V;
    int col = (int)(i - row * (size_t)V), t = targets[row];
    float g = t < 0 ? 0.0f : (dtr__ld(probs + i) - (col == t ? 1.0f : 0.0f)) * dloss;
    dtr__st(dlogits + i, g);
  }
}

dtr_result dtr__softmax_xent_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *probs, float *losses,
                                      const void *logits, const int32_t *targets, int N, int V) {
  static const char *op = "softmax_xent_fwd_cuda";
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  DTR_CU_ARG(c, op, N > 0 && V > 0);
  DTR_CU_ARG(c, op, probs && logits && (!targets || losses));
  unsigned block = dtr__row_block(V);
  if (dt == DTR_BF16)
    softmax_xent_fwd_kernel<<<N, block, 0, c->stream>>>((dtr__bf16 *)probs, losses, (const dtr__bf16 *)logits,
                                                        targets, V);
  else
    softmax_xent_fwd_kernel<<<N, block, 0, c->stream>>>((float *)probs, losses, (const float *)logits,
                                                        targets, V);
  return DTR_CU_LAUNCHED(c, "softmax_xent_fwd_kernel");
}

dtr_result dtr__softmax_xent_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dlogits, const void *probs,
                                      const int32_t *targets, float dloss, int N, int V) {
  static const char *op = "softmax_xent_bwd_cuda";
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  DTR_CU_ARG(c, op, N > 0 && V > 0);
  DTR_CU_ARG(c, op, dlogits && probs && targets);
  unsigned grid = dtr__cuda_grid(c, (size_t)N * V, 256);
  if (dt == DTR_BF16)
    softmax_xent_bwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)dlogits, (const dtr__bf16 *)probs,
                                                         targets, dloss, (size_t)N, V);
  else
    softmax_xent_bwd_kernel<<<grid, 256, 0, c->stream>>>((float *)dlogits, (const float *)probs, targets,
                                                         dloss, (size_t)N, V);
  return DTR_CU_LAUNCHED(c, "softmax_xent_bwd_kernel");
}
