/* Linear layers on the GPU: out = inp @ w^T + bias through cuBLAS (fp32 compute for fp32 and bf16
 * storage), and the backward's three products: dinp (GEMM), dw (GEMM into fp32 gradients, also from
 * bf16 operands) and dbias (a two-pass column sum in a fixed order: deterministic). */
#include "runtime/model/kernels_cuda_internal.cuh"

/* out[n,:] = bias: the GEMM then adds inp @ w^T with beta = 1, so bf16 outputs are rounded once. */
template <typename T>
__global__ void bias_broadcast_kernel(T *out, const T *bias, size_t N, int OC) {
  size_t total = N * (size_t)OC;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = bias[i % (size_t)OC];
}

/* Column sums of dout[N,OC] for dbias, first pass: 32 columns per block (coalesced rows), 16 row lanes
 * per column reduced in shared memory in lane order, the rows split over gridDim.y; block (x, y) writes
 * its partial sums to part[y][col], and dtr__cuda_sum_partials adds the gridDim.y partials in order. No
 * atomics: the order of every addition depends only on N and OC (see BIAS_GRAD_SPLITS). */
template <typename T>
__global__ void bias_grad_kernel(float *part, const T *dout, int N, int OC) {
  __shared__ float sh[16][33];
  int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0.0f;
  if (col < OC)
    for (size_t r = blockIdx.y * 16 + threadIdx.y; r < (size_t)N; r += (size_t)gridDim.y * 16)
      s += dtr__ld(dout + r * OC + col);
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < OC) {
    float t = 0.0f;
    for (int i = 0; i < 16; i++) t += sh[i][threadIdx.x];
    part[(size_t)blockIdx.y * OC + col] = t;
  }
}

/* At most this many row splits (each of at least 64 rows): a function of N alone, not of the device's
 * SM count, so the order of the sums does not change with the GPU either. */
#define BIAS_GRAD_SPLITS 64

static dtr_result check_dims(dtr_cuda_ctx *c, const char *op, dtr_dtype dt, int N, int C, int OC) {
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dt) != 0);
  DTR_CU_ARG(c, op, N > 0 && C > 0 && OC > 0);
  return DTR_OK;
}

dtr_result dtr__matmul_fwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *out, const void *inp, const void *w,
                                const void *bias, int N, int C, int OC) {
  static const char *op = "matmul_fwd_cuda";
  DTR_CHECK(check_dims(c, op, dt, N, C, OC));
  DTR_CU_ARG(c, op, out && inp && w);
  float beta = 0.0f;
  if (bias) {
    size_t total = (size_t)N * OC;
    unsigned grid = dtr__cuda_grid(c, total, 256);
    if (dt == DTR_BF16)
      bias_broadcast_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)out, (const dtr__bf16 *)bias, (size_t)N,
                                                         OC);
    else
      bias_broadcast_kernel<<<grid, 256, 0, c->stream>>>((float *)out, (const float *)bias, (size_t)N, OC);
    DTR_CHECK(DTR_CU_LAUNCHED(c, "bias_broadcast_kernel"));
    beta = 1.0f;
  }
  /* out[N,OC] = inp[N,C] @ w^T, w stored [OC,C]. */
  return dtr__cuda_gemm(c, dt, dt, 0, 1, N, OC, C, 1.0f, inp, w, beta, out, 1, 0, 0, 0);
}

dtr_result dtr__matmul_bwd_cuda(dtr_cuda_ctx *c, dtr_dtype dt, void *dinp, float *dw, float *dbias,
                                const void *dout, const void *inp, const void *w, int N, int C, int OC) {
  static const char *op = "matmul_bwd_cuda";
  DTR_CHECK(check_dims(c, op, dt, N, C, OC));
  DTR_CU_ARG(c, op, dw && dout && inp && w);
  /* dinp[N,C] += dout[N,OC] @ w[OC,C] */
  if (dinp) DTR_CHECK(dtr__cuda_gemm(c, dt, dt, 0, 0, N, C, OC, 1.0f, dout, w, 1.0f, dinp, 1, 0, 0, 0));
  /* dw[OC,C] += dout^T @ inp (dout stored [N,OC]); fp32 output even for bf16 operands. */
  DTR_CHECK(dtr__cuda_gemm(c, dt, DTR_F32, 1, 0, OC, C, N, 1.0f, dout, inp, 1.0f, dw, 1, 0, 0, 0));
  if (dbias) {
    unsigned gx = (unsigned)((OC + 31) / 32), rows = (unsigned)((N + 63) / 64);
    unsigned gy = rows < BIAS_GRAD_SPLITS ? rows : BIAS_GRAD_SPLITS;
    void *part;
    DTR_CHECK(dtr__cuda_scratch(c, (size_t)gy * OC * sizeof(float), &part));
    dim3 grid(gx, gy), block(32, 16);
    if (dt == DTR_BF16)
      bias_grad_kernel<<<grid, block, 0, c->stream>>>((float *)part, (const dtr__bf16 *)dout, N, OC);
    else
      bias_grad_kernel<<<grid, block, 0, c->stream>>>((float *)part, (const float *)dout, N, OC);
    DTR_CHECK(DTR_CU_LAUNCHED(c, "bias_grad_kernel"));
    DTR_CHECK(dtr__cuda_sum_partials(c, dbias, NULL, (const float *)part, (int)gy, OC));
  }
  return DTR_OK;
}
