/* Tensor-parallel building blocks (include/dtrain/parallel.h): the conjugate all-reduces f and g,
 * column- and row-parallel linears, attention with its heads split, the MLP with its hidden width split,
 * and the vocabulary-parallel embedding and cross-entropy, over the CPU kernels of
 * runtime/model/kernels.h, or the CUDA kernels of kernels_cuda.h (fp32) for a dtr_tp of a device. With
 * one rank every block runs the same fused kernels in the same order as the unsplit model, so a tp 1 run
 * keeps its bits. */
#include <string.h>

#include "common/check.h"
#include "dtrain/parallel.h"
#include "runtime/model/kernels.h"
#include "runtime/model/kernels_cuda.h"

dtr_tp dtr_tp_make(dtr_comm *comm, int threads) {
  dtr_tp tp;
  memset(&tp, 0, sizeof tp);
  tp.comm = comm;
  tp.size = comm ? dtr_comm_size(comm) : 1;
  tp.rank = comm ? dtr_comm_rank(comm) : 0;
  tp.threads = threads > 0 ? threads : 1;
  return tp;
}

dtr_result dtr_tp_make_cuda(dtr_comm *comm, int device, dtr_tp *out, char *err, size_t errcap) {
  *out = dtr_tp_make(comm, 1);
  dtr_cuda_ctx *ctx = NULL;
  DTR_CHECK(dtr__cuda_ctx_create(device, &ctx, err, errcap));
  if (comm) {
    dtr_result rc = dtr_comm_set_cuda_stream(comm, dtr__cuda_ctx_stream(ctx));
    if (rc != DTR_OK) {
      dtr__cuda_ctx_destroy(ctx);
      return dtr__fail(err, errcap, rc,
                       "tensor parallel on cuda:%d: the tp communicator (%s) cannot follow a CUDA "
                       "stream: %s",
                       device, dtr_backend_name(dtr_comm_backend(comm)), dtr_comm_last_error(comm));
    }
  }
  out->cuda = ctx;
  return DTR_OK;
}

dtr_result dtr_tp_sync(dtr_tp *tp) {
  if (!tp->cuda) return DTR_OK;
  dtr_result rc = dtr__cuda_sync(tp->cuda);
  if (rc != DTR_OK)
    dtr__fail(tp->err, sizeof tp->err, rc, "tensor parallel: %s", dtr__cuda_ctx_error(tp->cuda));
  return rc;
}

void dtr_tp_free(dtr_tp *tp) {
  if (!tp || !tp->cuda) return;
  if (tp->comm) dtr_comm_set_cuda_stream(tp->comm, NULL);
  dtr__cuda_ctx_destroy(tp->cuda);
  tp->cuda = NULL;
}

dtr_result dtr_tp_split(int n, int tp, int rank, int *first, int *count, char *err, size_t errcap) {
  if (tp < 1 || rank < 0 || rank >= tp)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "tensor parallel: rank %d of %d", rank, tp);
  if (n < 0 || n % tp != 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "tensor parallel: %d is not divisible by tp %d", n, tp);
  *count = n / tp;
  *first = rank * *count;
  return DTR_OK;
}

/* A CUDA kernel's result: its context's detail into tp->err. */
static dtr_result gpu(dtr_tp *tp, dtr_result rc, const char *what) {
  if (rc != DTR_OK)
    dtr__fail(tp->err, sizeof tp->err, rc, "tensor parallel %s on the GPU: %s", what,
              dtr__cuda_ctx_error(tp->cuda));
  return rc;
}
#define GPU(tp, call, what) DTR_CHECK(gpu((tp), (call), (what)))

/* Reduce over the group in place (the one communication of every block). */
static dtr_result reduce(dtr_tp *tp, float *x, size_t n, dtr_redop op, const char *what) {
  if (tp->size == 1 || n == 0) return DTR_OK;
  tp->allreduce_calls++;
  tp->allreduce_bytes += n * sizeof(float);
  dtr_result rc = dtr_all_reduce(tp->comm, x, x, n, DTR_F32, op, NULL);
  if (rc != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, rc,
                     "tensor parallel %s (all-reduce of %zu floats over %d ranks): %s", what, n, tp->size,
                     dtr_comm_last_error(tp->comm));
  return DTR_OK;
}

dtr_result dtr_tp_f_backward(dtr_tp *tp, float *dx, size_t n) {
  return reduce(tp, dx, n, DTR_SUM, "f backward");
}

dtr_result dtr_tp_g_forward(dtr_tp *tp, float *y, size_t n) {
  return reduce(tp, y, n, DTR_SUM, "g forward");
}

/* This rank's columns of the weight's input (row) or rows of its output (column). */
static void local_dims(const dtr_tp *tp, const dtr_tp_linear *l, int *in, int *out) {
  *in = l->kind == DTR_TP_ROW ? l->in / tp->size : l->in;
  *out = l->kind == DTR_TP_COLUMN ? l->out / tp->size : l->out;
}

/* y = x w^T (+ b): the one product both devices run. */
static dtr_result matmul_fwd(dtr_tp *tp, float *y, const float *x, const float *w, const float *b, int N,
                             int in, int out) {
  if (tp->cuda)
    return gpu(tp, dtr__matmul_fwd_cuda(tp->cuda, DTR_F32, y, x, w, b, N, in, out), "linear forward");
  dtr__matmul_fwd_cpu(y, x, w, b, N, in, out, tp->threads);
  return DTR_OK;
}

dtr_result dtr_tp_linear_forward(dtr_tp *tp, const dtr_tp_linear *l, const float *x, float *y, int N) {
  int in, out;
  local_dims(tp, l, &in, &out);
  if (l->kind == DTR_TP_COLUMN || tp->size == 1) return matmul_fwd(tp, y, x, l->w, l->b, N, in, out);
  /* row-parallel: partial products, g, then the bias once */
  DTR_CHECK(matmul_fwd(tp, y, x, l->w, NULL, N, in, out));
  DTR_CHECK(dtr_tp_g_forward(tp, y, (size_t)N * out));
  if (!l->b) return DTR_OK;
  if (tp->cuda) return gpu(tp, dtr__bias_add_cuda(tp->cuda, DTR_F32, y, l->b, N, out), "bias");
  dtr__bias_add_cpu(y, l->b, N, out, tp->threads);
  return DTR_OK;
}

dtr_result dtr_tp_linear_backward(dtr_tp *tp, const dtr_tp_linear *l, const float *dy, const float *x,
                                  float *dx, int N) {
  int in, out;
  local_dims(tp, l, &in, &out);
  size_t bytes = (size_t)N * in * sizeof(float);
  if (tp->cuda) {
    if (dx) GPU(tp, dtr__cuda_zero(tp->cuda, dx, bytes), "linear backward");
    GPU(tp, dtr__matmul_bwd_cuda(tp->cuda, DTR_F32, dx, l->dw, l->db, dy, x, l->w, N, in, out),
        "linear backward");
  } else {
    if (dx) memset(dx, 0, bytes);
    dtr__matmul_bwd_cpu(dx, l->dw, l->db, dy, x, l->w, N, in, out, tp->threads);
  }
  if (dx && l->kind == DTR_TP_COLUMN) DTR_CHECK(dtr_tp_f_backward(tp, dx, (size_t)N * in));
  return DTR_OK;
}

/* Heads split evenly, or the kernels would divide by zero. */
static dtr_result check_heads(dtr_tp *tp, const dtr_tp_attention *a) {
  if (a->n_head < tp->size || a->n_head % tp->size || a->n_embd % a->n_head)
    return dtr__fail(tp->err, sizeof tp->err, DTR_ERR_INVALID,
                     "tensor parallel attention: %d heads of n_embd %d do not split over tp %d", a->n_head,
                     a->n_embd, tp->size);
  return DTR_OK;
}

dtr_result dtr_tp_attention_forward(dtr_tp *tp, const dtr_tp_attention *a, const float *x, int B, int T,
                                    float *qkv, float *att, float *heads, float *out) {
  DTR_CHECK(check_heads(tp, a));
  int N = B * T, C = a->n_embd / tp->size, NH = a->n_head / tp->size;
  DTR_CHECK(dtr_tp_linear_forward(tp, &a->qkv, x, qkv, N));
  if (tp->cuda)
    GPU(tp, dtr__attention_fwd_cuda(tp->cuda, DTR_F32, heads, att, qkv, B, T, C, NH), "attention forward");
  else if (dtr__attention_fwd_cpu(heads, att, qkv, B, T, C, NH, tp->threads) != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, DTR_ERR_NOMEM, "attention forward: out of memory for scratch");
  return dtr_tp_linear_forward(tp, &a->proj, heads, out, N);
}

dtr_result dtr_tp_attention_backward(dtr_tp *tp, const dtr_tp_attention *a, const float *x, const float *qkv,
                                     const float *att, const float *heads, const float *dout, int B, int T,
                                     float *dx, float *dqkv, float *dheads) {
  DTR_CHECK(check_heads(tp, a));
  int N = B * T, C = a->n_embd / tp->size, NH = a->n_head / tp->size;
  DTR_CHECK(dtr_tp_linear_backward(tp, &a->proj, dout, heads, dheads, N));
  if (tp->cuda)
    GPU(tp, dtr__attention_bwd_cuda(tp->cuda, DTR_F32, dqkv, dheads, att, qkv, B, T, C, NH),
        "attention backward");
  else if (dtr__attention_bwd_cpu(dqkv, dheads, att, qkv, B, T, C, NH, tp->threads) != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, DTR_ERR_NOMEM, "attention backward: out of memory for scratch");
  return dtr_tp_linear_backward(tp, &a->qkv, dqkv, x, dx, N);
}

dtr_result dtr_tp_mlp_forward(dtr_tp *tp, const dtr_tp_mlp *m, const float *x, int N, float *pre, float *act,
                              float *out) {
  DTR_CHECK(dtr_tp_linear_forward(tp, &m->fc, x, pre, N));
  size_t n = (size_t)N * (m->fc.out / tp->size);
  if (tp->cuda)
    GPU(tp, dtr__gelu_fwd_cuda(tp->cuda, DTR_F32, act, pre, n), "gelu");
  else
    dtr__gelu_fwd_cpu(act, pre, n, tp->threads);
  return dtr_tp_linear_forward(tp, &m->proj, act, out, N);
}

dtr_result dtr_tp_mlp_backward(dtr_tp *tp, const dtr_tp_mlp *m, const float *x, const float *pre,
                               const float *act, const float *dout, int N, float *dx, float *dact) {
  DTR_CHECK(dtr_tp_linear_backward(tp, &m->proj, dout, act, dact, N));
  size_t n = (size_t)N * (m->fc.out / tp->size);
  if (tp->cuda)
    GPU(tp, dtr__gelu_bwd_cuda(tp->cuda, DTR_F32, dact, pre, dact, n), "gelu backward");
  else
    dtr__gelu_bwd_cpu(dact, pre, dact, n, tp->threads);
  return dtr_tp_linear_backward(tp, &m->fc, dact, x, dx, N);
}

dtr_result dtr_tp_embedding_forward(dtr_tp *tp, const float *wte, int v0, int V, const float *wpe,
                                    const int32_t *ids, int B, int T, int C, float *out) {
  if (tp->size == 1 && wpe) { /* the fused kernel: the unsplit model's bits */
    if (tp->cuda)
      return gpu(tp, dtr__embedding_fwd_cuda(tp->cuda, DTR_F32, out, ids, wte, wpe, B, T, C, V), "embedding");
    dtr__embedding_fwd_cpu(out, ids, wte, wpe, B, T, C, tp->threads);
    return DTR_OK;
  }
  if (tp->cuda)
    GPU(tp, dtr__vocab_embedding_fwd_cuda(tp->cuda, DTR_F32, out, ids, wte, v0, V, B * T, C), "embedding");
  else
    dtr__vocab_embedding_fwd_cpu(out, ids, wte, v0, V, B * T, C, tp->threads);
  DTR_CHECK(reduce(tp, out, (size_t)B * T * C, DTR_SUM, "embedding"));
  if (!wpe) return DTR_OK;
  if (tp->cuda) return gpu(tp, dtr__position_add_fwd_cuda(tp->cuda, DTR_F32, out, wpe, B, T, C), "positions");
  dtr__position_add_fwd_cpu(out, wpe, B, T, C, tp->threads);
  return DTR_OK;
}

dtr_result dtr_tp_embedding_backward(dtr_tp *tp, float *dwte, int v0, int V, float *dwpe, const int32_t *ids,
                                     const float *dout, int B, int T, int C) {
  if (tp->cuda) {
    if (tp->size == 1 && dwpe)
      return gpu(tp, dtr__embedding_bwd_cuda(tp->cuda, DTR_F32, dwte, dwpe, dout, ids, B, T, C, V),
                 "embedding backward");
    GPU(tp, dtr__vocab_embedding_bwd_cuda(tp->cuda, DTR_F32, dwte, dout, ids, v0, V, B * T, C),
        "embedding backward");
    return dwpe ? gpu(tp, dtr__position_add_bwd_cuda(tp->cuda, DTR_F32, dwpe, dout, B, T, C),
                      "positions backward")
                : DTR_OK;
  }
  if (tp->size == 1 && dwpe) {
    dtr__embedding_bwd_cpu(dwte, dwpe, dout, ids, B, T, C, tp->threads);
    return DTR_OK;
  }
  dtr__vocab_embedding_bwd_cpu(dwte, dout, ids, v0, V, B * T, C, tp->threads);
  if (dwpe) dtr__position_add_bwd_cpu(dwpe, dout, B, T, C, tp->threads);
  return DTR_OK;
}

dtr_result dtr_tp_cross_entropy_forward(dtr_tp *tp, float *logits, const int32_t *targets, int v0, int V,
                                        int N, float *losses, float *scratch) {
  if (tp->size == 1) {
    if (tp->cuda)
      return gpu(tp, dtr__softmax_xent_fwd_cuda(tp->cuda, DTR_F32, logits, losses, logits, targets, N, V),
                 "cross-entropy");
    dtr__softmax_xent_fwd_cpu(logits, losses, logits, targets, N, V, tp->threads);
    return DTR_OK;
  }
  float *mx = scratch, *sum = scratch + N; /* sum[0..N) sum-exp, sum[N..2N) the target's logit */
  if (tp->cuda)
    GPU(tp, dtr__vocab_xent_max_cuda(tp->cuda, DTR_F32, mx, logits, N, V), "cross-entropy");
  else
    dtr__vocab_xent_max_cpu(mx, logits, N, V, tp->threads);
  DTR_CHECK(reduce(tp, mx, (size_t)N, DTR_MAX, "cross-entropy row maxima"));
  if (tp->cuda)
    GPU(tp, dtr__vocab_xent_sum_cuda(tp->cuda, DTR_F32, sum, sum + N, logits, mx, targets, v0, N, V),
        "cross-entropy");
  else
    dtr__vocab_xent_sum_cpu(sum, sum + N, logits, mx, targets, v0, N, V, tp->threads);
  DTR_CHECK(reduce(tp, sum, (size_t)2 * N, DTR_SUM, "cross-entropy"));
  if (tp->cuda)
    return gpu(tp,
               dtr__vocab_xent_finish_cuda(tp->cuda, DTR_F32, logits, losses, logits, mx, sum, sum + N,
                                           targets, N, V),
               "cross-entropy");
  dtr__vocab_xent_finish_cpu(logits, losses, logits, mx, sum, sum + N, targets, N, V, tp->threads);
  return DTR_OK;
}

dtr_result dtr_tp_cross_entropy_backward(dtr_tp *tp, float *probs, const int32_t *targets, int v0, int V,
                                         int N, float dloss) {
  if (tp->cuda)
    return gpu(tp,
               tp->size == 1
                   ? dtr__softmax_xent_bwd_cuda(tp->cuda, DTR_F32, probs, probs, targets, dloss, N, V)
                   : dtr__vocab_xent_bwd_cuda(tp->cuda, DTR_F32, probs, probs, targets, v0, dloss, N, V),
               "cross-entropy backward");
  if (tp->size == 1)
    dtr__softmax_xent_bwd_cpu(probs, probs, targets, dloss, N, V, tp->threads);
  else
    dtr__vocab_xent_bwd_cpu(probs, probs, targets, v0, dloss, N, V, tp->threads);
  return DTR_OK;
}
