/* Shared pieces of the CUDA kernel files (runtime/kernels_cuda_*.cu): the context's layout, the CUDA and
 * cuBLAS error converters, scratch memory, the row-major GEMM wrapper, and device helpers for loads,
 * stores and block reductions in fp32 whatever the storage type. Only .cu files include this. */
#ifndef DTRAIN_RUNTIME_KERNELS_CUDA_INTERNAL_CUH
#define DTRAIN_RUNTIME_KERNELS_CUDA_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "runtime/model/kernels_cuda.h"

extern "C" {
#include "common/check.h"
}
#include "common/cuda_check.h"

/* cuBLAS is opened with dlopen when the first context is made, not linked: linking it costs every
 * dtrain process (the CLI, every CPU rank) about 0.3 s and 200 MB at start for a library only GPU
 * runs use. The context keeps the entry points it needs. */
struct dtr__cublas_fns {
  void *lib;
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSetWorkspace_v2) set_workspace;
  decltype(&cublasSetAtomicsMode) set_atomics_mode;
  /* Spelled out: C++ overloads these names (a cudaDataType computeType variant). */
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                            const void *, cudaDataType, int, const void *, cudaDataType, int, const void *,
                            void *, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                            int, const void *, const void *, cudaDataType, int, long long int,
                                            const void *, cudaDataType, int, long long int, const void *,
                                            void *, cudaDataType, int, long long int, int,
                                            cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasGetStatusString) status_string;
  decltype(&cublasGetStatusName) status_name;
};

struct dtr_cuda_ctx {
  int device;
  int num_sms;
  cudaStream_t stream;
  dtr__cublas_fns fn;
  cublasHandle_t blas;
  void *blas_ws; /* the handle's own cuBLAS workspace (reproducible GEMMs, see ctx_create) */
  void *scratch; /* grown on demand; only ever used by ops on this context's stream */
  size_t scratch_bytes;
  char err[512];
};

typedef __nv_bfloat16 dtr__bf16;

/* One converter per foreign error source: CUDA runtime and cuBLAS codes become dtr_result with the
 * failing call's name in the context's last-error string. */
dtr_result dtr__cuda_result(dtr_cuda_ctx *c, cudaError_t e, const char *call);
dtr_result dtr__cublas_result(dtr_cuda_ctx *c, cublasStatus_t s, const char *call);
#define DTR_CU(c, call) dtr__cuda_result((c), (call), #call)
#define DTR_CUBLAS(c, call) dtr__cublas_result((c), (call), #call)
/* After a kernel launch: a bad configuration shows up here, a fault only at the next sync. */
#define DTR_CU_LAUNCHED(c, kernel) dtr__cuda_result((c), cudaGetLastError(), kernel)

/* Reject bad arguments with a message naming the op and the argument. */
dtr_result dtr__cuda_invalid(dtr_cuda_ctx *c, const char *op, const char *what);
#define DTR_CU_ARG(c, op, cond)                              \
  do {                                                       \
    if (!(cond)) return dtr__cuda_invalid((c), (op), #cond); \
  } while (0)

/* A device scratch buffer of at least bytes (previous contents are not kept). One buffer per context,
 * shared by every op: an op may use it only between its own launches (stream order keeps the next op's
 * writes behind them). It grows to the largest request and then stays: steady state allocates nothing. */
dtr_result dtr__cuda_scratch(dtr_cuda_ctx *c, size_t bytes, void **out);

/* The second pass of every weight-gradient reduction (no float atomics anywhere: bitwise the same sums
 * run after run). part holds nparts rows of width n (dst_b NULL) or 2n (dst_b set); for each column i
 * one thread adds the rows in increasing row order, s = ((p0 + p1) + p2) + ..., then dst_a[i] += s
 * (columns [0,n)) or dst_b[i - n] += s (columns [n,2n)). The launch grid only decides which thread
 * takes a column, never the order of its additions. */
dtr_result dtr__cuda_sum_partials(dtr_cuda_ctx *c, float *dst_a, float *dst_b, const float *part, int nparts,
                                  int n);

/* Row-major C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, batch times with element strides;
 * A and B have type ab (storage dtype), C has type cdt; fp32 compute. transA: A is stored [K,M]. */
dtr_result dtr__cuda_gemm(dtr_cuda_ctx *c, dtr_dtype ab, dtr_dtype cdt, int transA, int transB, int M, int N,
                          int K, float alpha, const void *A, const void *B, float beta, void *C, int batch,
                          long long strideA, long long strideB, long long strideC);

/* Grid size for a grid-stride loop over n elements. */
unsigned dtr__cuda_grid(const dtr_cuda_ctx *c, size_t n, unsigned block);

__device__ __forceinline__ float dtr__ld(const float *p) {
  return *p;
}
__device__ __forceinline__ float dtr__ld(const dtr__bf16 *p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ void dtr__st(float *p, float v) {
  *p = v;
}
__device__ __forceinline__ void dtr__st(dtr__bf16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float dtr__warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float dtr__warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
/* Block-wide sum / max (blockDim.x a multiple of 32); every thread gets the result. sh: 32 floats of
 * shared memory, reusable right after the call returns (the leading barrier guards earlier readers). */
__device__ __forceinline__ float dtr__block_sum(float v, float *sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = dtr__warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  return dtr__warp_sum(lane < nw ? sh[lane] : 0.0f);
}
__device__ __forceinline__ float dtr__block_max(float v, float *sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = dtr__warp_max(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  return dtr__warp_max(lane < nw ? sh[lane] : -INFINITY);
}

/* Threads per block for one block per row of n elements: a multiple of 32 in [32, 256]. */
static inline unsigned dtr__row_block(int n) {
  unsigned t = (unsigned)((n + 31) / 32) * 32;
  return t < 32 ? 32 : t > 256 ? 256 : t;
}

#endif
