/* Element-parallel GPU ops of the model: GELU, residual adds, token + position embeddings, the AdamW
 * update over fp32 master weights (with the bf16 copy for the next forward) and a sum of squares for
 * gradient clipping. Grid-stride loops; arithmetic in fp32 for either storage type. */
#include "runtime/model/kernels_cuda_internal.cuh"

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---------------------------------------------------------------- GELU (tanh approximation) */

#define GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_CUBE 0.044715f

template <typename T>
__global__ void gelu_fwd_kernel(T *out, const T *inp, size_t n) {
  GRID_STRIDE(i, n) {
    float x = dtr__ld(inp + i);
    dtr__st(out + i, 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + GELU_CUBE * x * x * x))));
  }
}

template <typename T>
__global__ void gelu_bwd_kernel(T *dinp, const T *inp, const T *dout, size_t n) {
  GRID_STRIDE(i, n) {
    float x = dtr__ld(inp + i);
    float th = tanhf(GELU_SCALE * (x + GELU_CUBE * x * x * x));
    float local =
        0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
    dtr__st(dinp + i, local * dtr__ld(dout + i)); /* dinp may alias dout: same element, read first */
  }
}

static dtr_result check_elem(dtr_cuda_ctx *c, const char *op, dtr_dtype dt) {
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  return DTR_OK;
}

dtr_result dtr__gelu_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *inp, size_t n) {
  DTR_CHECK(check_elem(c, "gelu_fwd_cuda", dt));
  if (n == 0) return DTR_OK;
  DTR_CU_ARG(c, "gelu_fwd_cuda", out && inp);
  unsigned grid = dtr__cuda_grid(c, n, 256);
  if (dt == DTR_BF16)
    gelu_fwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, (const dtr__bf16 *)inp, n);
  else
    gelu_fwd_kernel<<<grid, 256, 0, c->stream>>>((float *)out, (const float *)inp, n);
  return DTR_CU_LAUNCHED(c, "gelu_fwd_kernel");
}

dtr_result dtr__gelu_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, const void *inp, const void *dout,
                              size_t n) {
  DTR_CHECK(check_elem(c, "gelu_bwd_cuda", dt));
  if (n == 0) return DTR_OK;
  DTR_CU_ARG(c, "gelu_bwd_cuda", dinp && inp && dout);
  unsigned grid = dtr__cuda_grid(c, n, 256);
  if (dt == DTR_BF16)
    gelu_bwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)dinp, (const dtr__bf16 *)inp,
                                                 (const dtr__bf16 *)dout, n);
  else
    gelu_bwd_kernel<<<grid, 256, 0, c->stream>>>((float *)dinp, (const float *)inp, (const float *)dout, n);
  return DTR_CU_LAUNCHED(c, "gelu_bwd_kernel");
}

/* ---------------------------------------------------------------- residual */

template <typename T>
__global__ void add_kernel(T *out, const T *a, const T *b, size_t n) {
  GRID_STRIDE(i, n) dtr__st(out + i, dtr__ld(a + i) + dtr__ld(b + i));
}

static dtr_result launch_add(dtr_cuda_ctx *c, const char *op, dtr_dtype dt, void *out, const void *a,
                             const void *b, size_t n) {
  DTR_CHECK(check_elem(c, op, dt));
  if (n == 0) return DTR_OK;
  DTR_CU_ARG(c, op, out && a && b);
  unsigned grid = dtr__cuda_grid(c, n, 256);
  if (dt == DTR_BF16)
    add_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, (const dtr__bf16 *)a, (const dtr__bf16 *)b, n);
  else
    add_kernel<<<grid, 256, 0, c->stream>>>((float *)out, (const float *)a, (const float *)b, n);
  return DTR_CU_LAUNCHED(c, "add_kernel");
}

dtr_result dtr__residual_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *a, const void *b,
                                  size_t n) {
  return launch_add(c, "residual_fwd_cuda", dt, out, a, b, n);
}

dtr_result dtr__add_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *y, const void *x, size_t n) {
  return launch_add(c, "add_cuda", dt, y, y, x, n);
}

/* ---------------------------------------------------------------- embeddings */

template <typename T>
__global__ void embedding_fwd_kernel(T *out, const int32_t *ids, const T *wte, const T *wpe, size_t BT,
                                     int T_, int C, int V) {
  GRID_STRIDE(i, BT * (size_t)C) {
    size_t bt = i / (size_t)C;
    int ch = (int)(i - bt * (size_t)C), t = (int)(bt % (size_t)T_), id = ids[bt];
    float v =
        (id < 0 || id >= V) ? NAN : dtr__ld(wte + (size_t)id * C + ch) + dtr__ld(wpe + (size_t)t * C + ch);
    dtr__st(out + i, v);
  }
}

/* Embedding backward without float atomics, in the order of kernels_cpu.c (which adds dout[bt] into
 * its rows for bt = 0, 1, ...), so every element is a sequential sum in increasing bt starting from the
 * gradient's old value: bitwise the same run after run (and as the CPU's fp32 sum).
 *
 * dwte: the positions bt of each token id are bucketed in increasing bt (a stable counting sort on the
 * device, all integer arithmetic, so exact whatever the thread schedule):
 *   1. rank[bt] = how many earlier positions hold the same id (-1 for an id outside [0,V), which the
 *      backward ignores); count[id] += 1 (an integer atomic: the total does not depend on order);
 *   2. first[id] = exclusive prefix sum of count (one block; first[V] = number of valid positions);
 *   3. pos[first[id] + rank[bt]] = bt: each bucket lists its positions in increasing order;
 *   4. one block per id, one thread per channel: acc = dwte[id,ch]; acc += dout[pos[k],ch] for k over
 *      the bucket in order; dwte[id,ch] = acc.
 * dwpe: one thread per (t, ch) adds dout[b,t,ch] for b = 0, 1, ... onto dwpe[t,ch]. */
#define EMB_TILE 256 /* threads per block of the rank kernel = ids per shared-memory tile */

__global__ void emb_rank_kernel(int *rank, int *count, const int32_t *ids, int BT, int V) {
  __shared__ int32_t tile[EMB_TILE];
  int i = (int)(blockIdx.x * EMB_TILE + threadIdx.x);
  int32_t id = i < BT ? ids[i] : -1;
  int r = 0;
  /* Every tile that holds a position before this block's last one; the same count for all threads of
   * the block (the barriers need that). */
  long long last = (long long)(blockIdx.x + 1) * EMB_TILE;
  int end = last < BT ? (int)last : BT;
  for (int j0 = 0; j0 < end; j0 += EMB_TILE) {
    __syncthreads(); /* everyone is done with the previous tile */
    tile[threadIdx.x] = j0 + (int)threadIdx.x < BT ? ids[j0 + threadIdx.x] : -1;
    __syncthreads();
    int jn = i - j0 < EMB_TILE ? i - j0 : EMB_TILE; /* only positions j < i count */
    for (int k = 0; k < jn; k++) r += tile[k] == id;
  }
  if (i < BT) {
    int valid = id >= 0 && id < V;
    rank[i] = valid ? r : -1;
    if (valid) atomicAdd(count + id, 1);
  }
}

/* first[v] = count[0] + ... + count[v-1] for v in [0, V]; one block of EMB_SCAN_THREADS threads, each
 * owning a contiguous slice of the ids. */
#define EMB_SCAN_THREADS 1024
__global__ void emb_first_kernel(int *first, const int *count, int V) {
  __shared__ int base[EMB_SCAN_THREADS];
  int per = (V + EMB_SCAN_THREADS - 1) / EMB_SCAN_THREADS;
  long long lo_ = (long long)threadIdx.x * per, hi_ = lo_ + per;
  int lo = lo_ < V ? (int)lo_ : V, hi = hi_ < V ? (int)hi_ : V;
  int s = 0;
  for (int v = lo; v < hi; v++) s += count[v];
  base[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int k = 0; k < EMB_SCAN_THREADS; k++) {
      int t = base[k];
      base[k] = run;
      run += t;
    }
    first[V] = run;
  }
  __syncthreads();
  int run = base[threadIdx.x];
  for (int v = lo; v < hi; v++) {
    first[v] = run;
    run += count[v];
  }
}

__global__ void emb_scatter_kernel(int *pos, const int *first, const int *rank, const int32_t *ids, int BT) {
  for (int i = (int)(blockIdx.x * blockDim.x + threadIdx.x); i < BT; i += (int)(gridDim.x * blockDim.x))
    if (rank[i] >= 0) pos[first[ids[i]] + rank[i]] = i;
}

template <typename T>
__global__ void emb_dwte_kernel(float *dwte, const T *dout, const int *pos, const int *first, int V, int C) {
  for (int v = (int)blockIdx.x; v < V; v += (int)gridDim.x) {
    int lo = first[v], hi = first[v + 1]; /* an id absent from the batch: lo == hi, nothing to add */
    for (int ch = (int)threadIdx.x; ch < C && lo < hi; ch += (int)blockDim.x) {
      float *d = dwte + (size_t)v * C + ch;
      float acc = *d;
      for (int k = lo; k < hi; k++) acc += dtr__ld(dout + (size_t)pos[k] * C + ch);
      *d = acc;
    }
  }
}

template <typename T>
__global__ void emb_dwpe_kernel(float *dwpe, const T *dout, int B, int T_, int C) {
  size_t TC = (size_t)T_ * C;
  GRID_STRIDE(i, TC) {
    float acc = dwpe[i];
    for (int b = 0; b < B; b++) acc += dtr__ld(dout + (size_t)b * TC + i); /* dout[b,t,ch], i = t*C + ch */
    dwpe[i] = acc;
  }
}

dtr_result dtr__embedding_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const int32_t *inp,
                                   const void *wte, const void *wpe, int B, int T, int C, int V) {
  static const char *op = "embedding_fwd_cuda";
  DTR_CHECK(check_elem(c, op, dt));
  DTR_CU_ARG(c, op, B > 0 && T > 0 && C > 0 && V > 0);
  DTR_CU_ARG(c, op, out && inp && wte && wpe);
  size_t BT = (size_t)B * T;
  unsigned grid = dtr__cuda_grid(c, BT * C, 256);
  if (dt == DTR_BF16)
    embedding_fwd_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, inp, (const dtr__bf16 *)wte,
                                                      (const dtr__bf16 *)wpe, BT, T, C, V);
  else
    embedding_fwd_kernel<<<grid, 256, 0, c->stream>>>((float *)out, inp, (const float *)wte,
                                                      (const float *)wpe, BT, T, C, V);
  return DTR_CU_LAUNCHED(c, "embedding_fwd_kernel");
}

template <typename T>
static dtr_result embedding_bwd(dtr_cuda_ctx *c, float *dwte, float *dwpe, const T *dout, const int32_t *inp,
                                int B, int T_, int C, int V) {
  int BT = B * T_;
  /* scratch, all int: count[V], first[V+1], rank[BT], pos[BT] */
  void *scratch;
  DTR_CHECK(dtr__cuda_scratch(c, (2 * (size_t)V + 1 + 2 * (size_t)BT) * sizeof(int), &scratch));
  int *count = (int *)scratch, *first = count + V, *rank = first + V + 1, *pos = rank + BT;
  DTR_CHECK(DTR_CU(c, cudaMemsetAsync(count, 0, (size_t)V * sizeof(int), c->stream)));
  emb_rank_kernel<<<(unsigned)((BT + EMB_TILE - 1) / EMB_TILE), EMB_TILE, 0, c->stream>>>(rank, count, inp,
                                                                                          BT, V);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "emb_rank_kernel"));
  emb_first_kernel<<<1, EMB_SCAN_THREADS, 0, c->stream>>>(first, count, V);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "emb_first_kernel"));
  emb_scatter_kernel<<<dtr__cuda_grid(c, (size_t)BT, 256), 256, 0, c->stream>>>(pos, first, rank, inp, BT);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "emb_scatter_kernel"));
  unsigned rows = (unsigned)(V < 65535 ? V : 65535); /* grid-stride over ids beyond that */
  emb_dwte_kernel<<<rows, dtr__row_block(C), 0, c->stream>>>(dwte, dout, pos, first, V, C);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "emb_dwte_kernel"));
  if (dwpe) {
    emb_dwpe_kernel<<<dtr__cuda_grid(c, (size_t)T_ * C, 256), 256, 0, c->stream>>>(dwpe, dout, B, T_, C);
    DTR_CHECK(DTR_CU_LAUNCHED(c, "emb_dwpe_kernel"));
  }
  return DTR_OK;
}

dtr_result dtr__embedding_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, float *dwte, float *dwpe, const void *dout,
                                   const int32_t *inp, int B, int T, int C, int V) {
  static const char *op = "embedding_bwd_cuda";
  DTR_CHECK(check_elem(c, op, dt));
  DTR_CU_ARG(c, op, B > 0 && T > 0 && C > 0 && V > 0);
  DTR_CU_ARG(c, op, (long long)B * T <= 0x7fffffff);
  DTR_CU_ARG(c, op, dwte && dout && inp);
  if (dt == DTR_BF16) return embedding_bwd(c, dwte, dwpe, (const dtr__bf16 *)dout, inp, B, T, C, V);
  return embedding_bwd(c, dwte, dwpe, (const float *)dout, inp, B, T, C, V);
}

/* ---------------------------------------------------------------- AdamW and gradient norm */

/* Element arithmetic in float in the order of runtime/train/optim.c (and torch's single-tensor AdamW), so
 * the GPU and CPU optimizers agree to rounding:
 *   p *= 1 - lr*wd (masked); m = m*b1 + (1-b1)*g; v = v*b2 + (1-b2)*g*g;
 *   p += (-lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps) */
__global__ void adamw_kernel(float *p, dtr__bf16 *p16, const float *g, float *m, float *v,
                             const uint8_t *mask, size_t n, float decay, float b1, float w1, float b2,
                             float w2, float bc2_sqrt, float eps, float neg_step, float gscale) {
  GRID_STRIDE(i, n) {
    float gi = g[i] * gscale, pi = p[i];
    if (!mask || mask[i]) pi = pi * decay;
    float mi = fmaf(w1, gi, m[i] * b1);
    float vi = fmaf(w2 * gi, gi, v[i] * b2);
    m[i] = mi;
    v[i] = vi;
    pi = pi + neg_step * mi / (sqrtf(vi) / bc2_sqrt + eps);
    p[i] = pi;
    if (p16) p16[i] = __float2bfloat16_rn(pi);
  }
}

dtr_result dtr__adamw_cuda(dtr_cuda_ctx *c, float *params, uint16_t *params_bf16, const float *grads,
                           float *m, float *v, const uint8_t *decay_mask, size_t n,
                           const dtr_cuda_adamw_hp *hp) {
  static const char *op = "adamw_cuda";
  DTR_CU_ARG(c, op, hp && hp->step >= 1);
  DTR_CU_ARG(c, op, hp->beta1 >= 0.0f && hp->beta1 < 1.0f && hp->beta2 >= 0.0f && hp->beta2 < 1.0f);
  if (n == 0) return DTR_OK;
  DTR_CU_ARG(c, op, params && grads && m && v);
  /* Scalars in double on the host, then rounded to float, as optim.c does: 1 - b2^step loses digits
   * in float for b2 = 0.999. */
  double b1 = hp->beta1, b2 = hp->beta2, lr = hp->lr;
  double bc1 = 1.0 - pow(b1, (double)hp->step), bc2 = 1.0 - pow(b2, (double)hp->step);
  unsigned grid = dtr__cuda_grid(c, n, 256);
  adamw_kernel<<<grid, 256, 0, c->stream>>>(params, (dtr__bf16 *)params_bf16, grads, m, v, decay_mask, n,
                                            (float)(1.0 - lr * hp->weight_decay), (float)b1,
                                            (float)(1.0 - b1), (float)b2, (float)(1.0 - b2), (float)sqrt(bc2),
                                            hp->eps, (float)(-lr / bc1), hp->grad_scale);
  return DTR_CU_LAUNCHED(c, "adamw_kernel");
}

/* Sum of squares in a fixed order: block k's threads take x[i] for i = k*256 + thread, + grid*256, ...
 * (each in increasing i), the block combines its threads in dtr__block_sum's fixed tree and writes
 * part[k]; dtr__cuda_sum_partials adds the parts in block order. The grid depends on n alone (at most
 * SUMSQ_BLOCKS, not the SM count), so the sum is the same bits on every run. */
#define SUMSQ_BLOCKS 1024
__global__ void sumsq_kernel(float *part, const float *x, size_t n) {
  __shared__ float sh[32];
  float s = 0.0f;
  GRID_STRIDE(i, n) s += x[i] * x[i];
  s = dtr__block_sum(s, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

dtr_result dtr__sumsq_cuda(dtr_cuda_ctx *c, float *out_dev, const float *x, size_t n) {
  DTR_CU_ARG(c, "sumsq_cuda", out_dev && (x || n == 0));
  DTR_CHECK(DTR_CU(c, cudaMemsetAsync(out_dev, 0, sizeof(float), c->stream)));
  if (n == 0) return DTR_OK;
  size_t want = (n + 255) / 256;
  unsigned grid = (unsigned)(want < SUMSQ_BLOCKS ? want : SUMSQ_BLOCKS);
  void *part;
  DTR_CHECK(dtr__cuda_scratch(c, grid * sizeof(float), &part));
  sumsq_kernel<<<grid, 256, 0, c->stream>>>((float *)part, x, n);
  DTR_CHECK(DTR_CU_LAUNCHED(c, "sumsq_kernel"));
  return dtr__cuda_sum_partials(c, out_dev, NULL, (const float *)part, (int)grid, 1);
}
