/* CPU kernels of the reference GPT (fp32): matrix products through CBLAS, the rest as plain loops
 * that OpenMP splits over rows or (batch, head) when it pays. The CUDA kernels (the .cu files) mirror
 * these signatures with a _cuda suffix. Conventions: row-major, weights [out, in] like torch.nn.Linear;
 * "fwd" overwrites its output; "bwd" ADDS into parameter gradients and, unless said otherwise, into
 * the input gradient. Results are deterministic for a fixed thread count (no atomics, fixed splits).
 * threads: OpenMP threads (<= 0 means 1); matrix products split their output over them and call a
 * single-threaded OpenBLAS in each (dtr__kernels_set_threads makes OpenBLAS single-threaded). */
#ifndef DTRAIN_RUNTIME_KERNELS_H
#define DTRAIN_RUNTIME_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/cpu_dispatch.h"
#include "dtrain/common.h"

/* The model's hot loops, compiled for x86-64-v3 (AVX2 + FMA) beside baseline x86-64: without it
 * nothing would use AVX2 or FMA instructions. The FMA clone may round differently from the baseline in
 * the last place: results are deterministic on one machine, as above, not across CPU models
 * (common/cpu_dispatch.h). */
#define DTR_VEC DTR_CPU_CLONES("arch=x86-64-v3")

/* Layer-norm epsilon (as torch.nn.LayerNorm's default). */
#define DTR_LN_EPS 1e-5f

/* Make OpenBLAS (process-wide) single-threaded; threads is accepted for symmetry and ignored. */
void dtr__kernels_set_threads(int threads);

/* out[N,OC] = inp[N,C] @ w[OC,C]^T + bias[OC] (bias may be NULL). */
void dtr__matmul_fwd_cpu(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                         int OC, int threads);
/* dinp[N,C] += dout[N,OC] @ w (dinp NULL: skipped); dw[OC,C] += dout^T @ inp; dbias[OC] += column sums
 * of dout (NULL: skipped). */
void dtr__matmul_bwd_cpu(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                         const float *w, int N, int C, int OC, int threads);

/* Per row of inp[N,C]: out = (x - mean) * rstd * w + b; mean[N] and rstd[N] are kept for backward. */
void dtr__layernorm_fwd_cpu(float *out, float *mean, float *rstd, const float *inp, const float *w,
                            const float *b, int N, int C, int threads);
/* dinp[N,C] += d/dinp; dw[C], db[C] += parameter gradients. */
void dtr__layernorm_bwd_cpu(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int N, int C, int threads);

/* GELU, tanh approximation (GPT-2; torch approximate='tanh'). bwd OVERWRITES dinp = dout * gelu'(inp);
 * dinp may alias dout. */
void dtr__gelu_fwd_cpu(float *out, const float *inp, size_t n, int threads);
void dtr__gelu_bwd_cpu(float *dinp, const float *inp, const float *dout, size_t n, int threads);

/* Causal multi-head self-attention over qkv[B,T,3C] (q, k, v blocks of C, head h at h*C/NH) into
 * out[B,T,C]; att[B,NH,T,T] receives the softmax probabilities (zero above the diagonal) for backward.
 * Scale 1/sqrt(C/NH). */
dtr_result dtr__attention_fwd_cpu(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                                  int threads);
/* OVERWRITES dqkv[B,T,3C] with the gradient given dout[B,T,C]. DTR_ERR_NOMEM when the per-thread
 * T x T scratch cannot be allocated. */
dtr_result dtr__attention_bwd_cpu(float *dqkv, const float *dout, const float *att, const float *qkv, int B,
                                  int T, int C, int NH, int threads);

/* out = a + b over n floats (out may alias a or b). */
void dtr__residual_fwd_cpu(float *out, const float *a, const float *b, size_t n, int threads);

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; ids must be in range (the caller validates). */
void dtr__embedding_fwd_cpu(float *out, const int32_t *inp, const float *wte, const float *wpe, int B, int T,
                            int C, int threads);
/* dwte[inp[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:] (dwpe NULL: skipped). */
void dtr__embedding_bwd_cpu(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T,
                            int C, int threads);

/* Row softmax of logits[N,V] into probs (may alias logits); losses[n] = -log p[target] for targets
 * >= 0, 0 for -1 (targets NULL: no losses). */
void dtr__softmax_xent_fwd_cpu(float *probs, float *losses, const float *logits, const int32_t *targets,
                               int N, int V, int threads);
/* OVERWRITES dlogits = (probs - onehot(target)) * dloss on scored rows, 0 on rows with target -1;
 * dlogits may alias probs. */
void dtr__softmax_xent_bwd_cpu(float *dlogits, const float *probs, const int32_t *targets, float dloss, int N,
                               int V, int threads);

/* ---- tensor-parallel pieces: this rank holds vocabulary rows [v0, v0+V) of the embedding and head, and
 * adds biases and positions after an all-reduce instead of inside the fused kernels above. */

/* out[n,:] = wte[inp[n]-v0,:] for ids in [v0, v0+V), else 0 (the all-reduce over tp adds the rows). */
void dtr__vocab_embedding_fwd_cpu(float *out, const int32_t *inp, const float *wte, int v0, int V, int N,
                                  int C, int threads);
/* dwte[inp[n]-v0,:] += dout[n,:] for ids in range; others skipped. */
void dtr__vocab_embedding_bwd_cpu(float *dwte, const float *dout, const int32_t *inp, int v0, int V, int N,
                                  int C, int threads);
/* out[b,t,:] += wpe[t,:]; backward dwpe[t,:] += dout[b,t,:] over b. */
void dtr__position_add_fwd_cpu(float *out, const float *wpe, int B, int T, int C, int threads);
void dtr__position_add_bwd_cpu(float *dwpe, const float *dout, int B, int T, int C, int threads);
/* out[n,:] += bias[:]. */
void dtr__bias_add_cpu(float *out, const float *bias, int N, int C, int threads);

/* Softmax cross-entropy over a vocabulary split across ranks (logits[N,V] are this rank's columns, the
 * global ids v0 .. v0+V-1), in three passes around two all-reduces that the caller runs:
 *   max:    rowmax[n] = max of the row                      -> all-reduce MAX
 *   sum:    sumexp[n] = sum exp(z - M[n]); zt[n] = z[target-v0] where the target is here, else 0
 *                                                           -> all-reduce SUM of sumexp and zt
 *   finish: probs = exp(z - M) / S (probs may alias logits); losses[n] = log S + M - zt (0 for target -1)
 * On one rank this is the same function as dtr__softmax_xent_fwd_cpu (rounding aside). */
void dtr__vocab_xent_max_cpu(float *rowmax, const float *logits, int N, int V, int threads);
void dtr__vocab_xent_sum_cpu(float *sumexp, float *zt, const float *logits, const float *rowmax,
                             const int32_t *targets, int v0, int N, int V, int threads);
void dtr__vocab_xent_finish_cpu(float *probs, float *losses, const float *logits, const float *rowmax,
                                const float *sumexp, const float *zt, const int32_t *targets, int N, int V,
                                int threads);
/* OVERWRITES dlogits = (probs - onehot(target - v0)) * dloss, the one-hot only where the target is one of
 * this rank's ids, 0 on rows with target -1; dlogits may alias probs. */
void dtr__vocab_xent_bwd_cpu(float *dlogits, const float *probs, const int32_t *targets, int v0, float dloss,
                             int N, int V, int threads);

#endif
