/* The CUDA kernel context (device, stream, cuBLAS handle, scratch), device memory helpers, dtype
 * conversion and the row-major GEMM wrapper that the matmul and attention files share. The ops
 * themselves live in kernels_cuda_{matmul,norm,attn,elem}.cu. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model/kernels_cuda_internal.cuh"

extern "C" {
#include "common/dlib.h"
}

/* ---------------------------------------------------------------- errors */

dtr_result dtr__cuda_result(dtr_cuda_ctx *c, cudaError_t e, const char *call) {
  if (e == cudaSuccess) return DTR_OK;
  char why[256];
  dtr_result rc = dtr__from_cuda(e, why, sizeof why);
  int namelen = (int)strcspn(call, "(");
  return dtr__fail(c->err, sizeof c->err, rc, "cuda: %.*s failed on device %d: %s", namelen, call, c->device,
                   why);
}

dtr_result dtr__cublas_result(dtr_cuda_ctx *c, cublasStatus_t s, const char *call) {
  if (s == CUBLAS_STATUS_SUCCESS) return DTR_OK;
  dtr_result rc = (s == CUBLAS_STATUS_ALLOC_FAILED)    ? DTR_ERR_NOMEM
                  : (s == CUBLAS_STATUS_INVALID_VALUE) ? DTR_ERR_INVALID
                  : (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH)
                      ? DTR_ERR_UNSUPPORTED
                      : DTR_ERR_SYSTEM;
  int namelen = (int)strcspn(call, "(");
  return dtr__fail(c->err, sizeof c->err, rc, "cublas: %.*s failed on device %d: %s (%s)", namelen, call,
                   c->device, c->fn.status_string ? c->fn.status_string(s) : "?",
                   c->fn.status_name ? c->fn.status_name(s) : "?");
}

/* Open cuBLAS (the soname of the toolkit we were built with, then the unversioned name) through the
 * one loader (common/dlib.h) and take the entry points the kernels use. */
static dtr_result cublas_open(dtr_cuda_ctx *c) {
  char soname[64];
  snprintf(soname, sizeof soname, "libcublas.so.%d", CUBLAS_VER_MAJOR);
  const char *const names[] = {soname, "libcublas.so"};
  const dtr__dl_sym want[] = {
      {"cublasCreate_v2", (void **)&c->fn.create},
      {"cublasDestroy_v2", (void **)&c->fn.destroy},
      {"cublasSetStream_v2", (void **)&c->fn.set_stream},
      {"cublasSetMathMode", (void **)&c->fn.set_math_mode},
      {"cublasSetWorkspace_v2", (void **)&c->fn.set_workspace},
      {"cublasSetAtomicsMode", (void **)&c->fn.set_atomics_mode},
      {"cublasGemmEx", (void **)&c->fn.gemm_ex},
      {"cublasGemmStridedBatchedEx", (void **)&c->fn.gemm_strided_batched_ex},
      {"cublasGetStatusString", (void **)&c->fn.status_string},
      {"cublasGetStatusName", (void **)&c->fn.status_name},
  };
  return dtr__dl_load("cuBLAS", NULL, names, 2, RTLD_NOW | RTLD_LOCAL, want,
                      (int)(sizeof want / sizeof want[0]), &c->fn.lib, c->err, sizeof c->err);
}

dtr_result dtr__cuda_invalid(dtr_cuda_ctx *c, const char *op, const char *what) {
  return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "%s: invalid argument: %s does not hold", op,
                   what);
}

/* ---------------------------------------------------------------- context */

size_t dtr__cuda_dtype_size(dtr_dtype dt) {
  return dt == DTR_F32 ? 4 : dt == DTR_BF16 ? 2 : 0;
}

dtr_result dtr__cuda_ctx_create(int device, dtr_cuda_ctx **out, char *err, size_t errcap) {
  *out = NULL;
  if (err && errcap) err[0] = '\0';
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED, "cuda: no CUDA device visible%s%s",
                     e != cudaSuccess ? ": " : "", e != cudaSuccess ? cudaGetErrorString(e) : "");
  }
  if (device < 0 || device >= n)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "cuda: device %d requested but %d device(s) are visible",
                     device, n);
  dtr_cuda_ctx *c = (dtr_cuda_ctx *)calloc(1, sizeof *c);
  if (!c) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "cuda: out of host memory for a kernel context");
  c->device = device;
  dtr_result rc = DTR_OK;
  DTR_CHECK_GOTO(DTR_CU(c, cudaSetDevice(device)), rc, fail);
  DTR_CHECK_GOTO(DTR_CU(c, cudaDeviceGetAttribute(&c->num_sms, cudaDevAttrMultiProcessorCount, device)), rc,
                 fail);
  DTR_CHECK_GOTO(DTR_CU(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)), rc, fail);
  DTR_CHECK_GOTO(cublas_open(c), rc, fail);
  DTR_CHECK_GOTO(DTR_CUBLAS(c, c->fn.create(&c->blas)), rc, fail);
  DTR_CHECK_GOTO(DTR_CUBLAS(c, c->fn.set_stream(c->blas, c->stream)), rc, fail);
  /* Default math with CUBLAS_COMPUTE_32F: fp32 GEMMs stay pure fp32 (TF32 would need opting in), bf16
   * ones use tensor cores with fp32 accumulation. */
  DTR_CHECK_GOTO(DTR_CUBLAS(c, c->fn.set_math_mode(c->blas, CUBLAS_DEFAULT_MATH)), rc, fail);
  /* Reproducible GEMMs. cuBLAS promises bitwise-identical results run after run for one toolkit
   * version on GPUs of the same architecture and SM count, but only while a single stream is active:
   * with concurrent streams (NCCL's kernels run beside ours) it may pick other internal workspaces and
   * kernels. A workspace owned by this handle (cublasSetWorkspace, the documented remedy, like
   * CUBLAS_WORKSPACE_CONFIG without needing the environment) keeps the guarantee; the size is the one
   * cuBLAS recommends (32 MiB on Hopper and later, 4 MiB before); it is set after cublasSetStream,
   * which would reset it to the default pool. Atomics stay disallowed (the default, set explicitly): no
   * cuBLAS routine may then use a non-deterministic variant. */
  {
    int major = 0;
    DTR_CHECK_GOTO(DTR_CU(c, cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)), rc,
                   fail);
    size_t ws = (size_t)(major >= 9 ? 32 : 4) << 20;
    DTR_CHECK_GOTO(DTR_CU(c, cudaMalloc(&c->blas_ws, ws)), rc, fail);
    DTR_CHECK_GOTO(DTR_CUBLAS(c, c->fn.set_workspace(c->blas, c->blas_ws, ws)), rc, fail);
  }
  DTR_CHECK_GOTO(DTR_CUBLAS(c, c->fn.set_atomics_mode(c->blas, CUBLAS_ATOMICS_NOT_ALLOWED)), rc, fail);
  *out = c;
  return DTR_OK;
fail:
  if (err && errcap) snprintf(err, errcap, "%s", c->err);
  dtr__cuda_ctx_destroy(c);
  return rc;
}

void dtr__cuda_ctx_destroy(dtr_cuda_ctx *c) {
  if (!c) return;
  if (c->stream) (void)cudaStreamSynchronize(c->stream);
  if (c->scratch) (void)cudaFree(c->scratch);
  if (c->blas) (void)c->fn.destroy(c->blas);
  if (c->blas_ws) (void)cudaFree(c->blas_ws); /* after the handle that uses it */
  if (c->fn.lib) dlclose(c->fn.lib);
  if (c->stream) (void)cudaStreamDestroy(c->stream);
  (void)cudaGetLastError();
  free(c);
}

const char *dtr__cuda_ctx_error(const dtr_cuda_ctx *c) {
  return c ? c->err : "no CUDA context";
}

void *dtr__cuda_ctx_stream(dtr_cuda_ctx *c) {
  return (void *)c->stream;
}

dtr_result dtr__cuda_sync(dtr_cuda_ctx *c) {
  return DTR_CU(c, cudaStreamSynchronize(c->stream));
}

dtr_result dtr__cuda_scratch(dtr_cuda_ctx *c, size_t bytes, void **out) {
  if (bytes > c->scratch_bytes) {
    /* The old buffer may still be read by queued kernels: wait before freeing it. */
    DTR_CHECK(DTR_CU(c, cudaStreamSynchronize(c->stream)));
    if (c->scratch) (void)cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    DTR_CHECK(DTR_CU(c, cudaMalloc(&c->scratch, bytes)));
    c->scratch_bytes = bytes;
  }
  *out = c->scratch;
  return DTR_OK;
}

/* One thread per column; the loop over rows is the fixed order (see the header). */
__global__ void sum_partials_kernel(float *dst_a, float *dst_b, const float *part, int nparts, int n) {
  size_t width = dst_b ? 2 * (size_t)n : (size_t)n;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < width;
       i += (size_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int p = 0; p < nparts; p++) s += part[(size_t)p * width + i];
    if (i < (size_t)n)
      dst_a[i] += s;
    else
      dst_b[i - n] += s;
  }
}

dtr_result dtr__cuda_sum_partials(dtr_cuda_ctx *c, float *dst_a, float *dst_b, const float *part, int nparts,
                                  int n) {
  if (n <= 0 || nparts <= 0) return DTR_OK;
  size_t width = dst_b ? 2 * (size_t)n : (size_t)n;
  sum_partials_kernel<<<dtr__cuda_grid(c, width, 256), 256, 0, c->stream>>>(dst_a, dst_b, part, nparts, n);
  return DTR_CU_LAUNCHED(c, "sum_partials_kernel");
}

unsigned dtr__cuda_grid(const dtr_cuda_ctx *c, size_t n, unsigned block) {
  size_t want = (n + block - 1) / block, cap = (size_t)(c->num_sms > 0 ? c->num_sms : 1) * 32;
  if (want < 1) want = 1;
  return (unsigned)(want < cap ? want : cap);
}

/* ---------------------------------------------------------------- memory */

dtr_result dtr__cuda_alloc(dtr_cuda_ctx *c, size_t bytes, void **out) {
  *out = NULL;
  if (bytes == 0) return DTR_OK;
  return DTR_CU(c, cudaMalloc(out, bytes));
}

void dtr__cuda_free(dtr_cuda_ctx *c, void *p) {
  if (!p) return;
  (void)cudaStreamSynchronize(c->stream); /* queued ops may still use p */
  (void)cudaFree(p);
}

dtr_result dtr__cuda_zero(dtr_cuda_ctx *c, void *p, size_t bytes) {
  if (bytes == 0) return DTR_OK;
  return DTR_CU(c, cudaMemsetAsync(p, 0, bytes, c->stream));
}

dtr_result dtr__cuda_upload(dtr_cuda_ctx *c, void *dst_dev, const void *src_host, size_t bytes) {
  if (bytes == 0) return DTR_OK;
  DTR_CHECK(DTR_CU(c, cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, c->stream)));
  return DTR_CU(c, cudaStreamSynchronize(c->stream));
}

dtr_result dtr__cuda_download(dtr_cuda_ctx *c, void *dst_host, const void *src_dev, size_t bytes) {
  if (bytes == 0) return DTR_OK;
  DTR_CHECK(DTR_CU(c, cudaMemcpyAsync(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost, c->stream)));
  return DTR_CU(c, cudaStreamSynchronize(c->stream));
}

template <typename D, typename S>
__global__ void convert_kernel(D *dst, const S *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dtr__st(dst + i, dtr__ld(src + i));
}

dtr_result dtr__cuda_convert(dtr_cuda_ctx *c, dtr_dtype dst_dt, void *dst, dtr_dtype src_dt, const void *src,
                             size_t n) {
  static const char *op = "cuda convert";
  DTR_CU_ARG(c, op, dtr__cuda_dtype_size(dst_dt) && dtr__cuda_dtype_size(src_dt));
  if (n == 0) return DTR_OK;
  DTR_CU_ARG(c, op, dst && src);
  unsigned grid = dtr__cuda_grid(c, n, 256);
  if (dst_dt == DTR_F32 && src_dt == DTR_F32)
    convert_kernel<<<grid, 256, 0, c->stream>>>((float *)dst, (const float *)src, n);
  else if (dst_dt == DTR_F32)
    convert_kernel<<<grid, 256, 0, c->stream>>>((float *)dst, (const dtr__bf16 *)src, n);
  else if (src_dt == DTR_F32)
    convert_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)dst, (const float *)src, n);
  else
    convert_kernel<<<grid, 256, 0, c->stream>>>((dtr__bf16 *)dst, (const dtr__bf16 *)src, n);
  return DTR_CU_LAUNCHED(c, "convert_kernel");
}

/* ---------------------------------------------------------------- GEMM */

dtr_result dtr__cuda_gemm(dtr_cuda_ctx *c, dtr_dtype ab, dtr_dtype cdt, int transA, int transB, int M, int N,
                          int K, float alpha, const void *A, const void *B, float beta, void *C, int batch,
                          long long strideA, long long strideB, long long strideC) {
  /* cuBLAS is column-major: a row-major [R,S] buffer is the column-major [S,R] matrix, its transpose.
   * So row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T, i.e. with the
   * operands swapped; the leading dimension of each stored buffer is its row-major column count. */
  cudaDataType_t tab = ab == DTR_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cudaDataType_t tc = cdt == DTR_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N, opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  int lda = transA ? M : K, ldb = transB ? K : N, ldc = N;
  if (batch == 1)
    return DTR_CUBLAS(c, c->fn.gemm_ex(c->blas, opB, opA, N, M, K, &alpha, B, tab, ldb, A, tab, lda, &beta, C,
                                       tc, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return DTR_CUBLAS(c, c->fn.gemm_strided_batched_ex(c->blas, opB, opA, N, M, K, &alpha, B, tab, ldb, strideB,
                                                     A, tab, lda, strideA, &beta, C, tc, ldc, strideC, batch,
                                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
