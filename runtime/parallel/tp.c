/* Tensor-parallel building blocks (include/dtrain/parallel.h): the conjugate all-reduces f and g,
 * column- and row-parallel linears, attention with its heads split, the MLP with its hidden width split,
 * and the vocabulary-parallel embedding and cross-entropy, over the CPU kernels of
 * runtime/model/kernels.h. With one rank every block runs the same fused kernels in the same order as
 * the unsplit model, so a tp 1 run keeps its bits. */
#include <string.h>

#include "common/check.h"
#include "dtrain/parallel.h"
#include "runtime/model/kernels.h"

dtr_tp dtr_tp_make(dtr_comm *comm, int threads) {
  dtr_tp tp;
  memset(&tp, 0, sizeof tp);
  tp.comm = comm;
  tp.size = comm ? dtr_comm_size(comm) : 1;
  tp.rank = comm ? dtr_comm_rank(comm) : 0;
  tp.threads = threads > 0 ? threads : 1;
  return tp;
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

/* Sum over the group in place (the one communication of every block). */
static dtr_result allreduce(dtr_tp *tp, float *x, size_t n, const char *what) {
  if (tp->size == 1 || n == 0) return DTR_OK;
  tp->allreduce_calls++;
  tp->allreduce_bytes += n * sizeof(float);
  dtr_result rc = dtr_all_reduce(tp->comm, x, x, n, DTR_F32, DTR_SUM, NULL);
  if (rc != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, rc,
                     "tensor parallel %s (all-reduce of %zu floats over %d ranks): %s", what, n, tp->size,
                     dtr_comm_last_error(tp->comm));
  return DTR_OK;
}

dtr_result dtr_tp_f_backward(dtr_tp *tp, float *dx, size_t n) {
  return allreduce(tp, dx, n, "f backward");
}

dtr_result dtr_tp_g_forward(dtr_tp *tp, float *y, size_t n) {
  return allreduce(tp, y, n, "g forward");
}

/* This rank's columns of the weight's input (row) or rows of its output (column). */
static void local_dims(const dtr_tp *tp, const dtr_tp_linear *l, int *in, int *out) {
  *in = l->kind == DTR_TP_ROW ? l->in / tp->size : l->in;
  *out = l->kind == DTR_TP_COLUMN ? l->out / tp->size : l->out;
}

dtr_result dtr_tp_linear_forward(dtr_tp *tp, const dtr_tp_linear *l, const float *x, float *y, int N) {
  int in, out;
  local_dims(tp, l, &in, &out);
  if (l->kind == DTR_TP_COLUMN || tp->size == 1) {
    dtr__matmul_fwd_cpu(y, x, l->w, l->b, N, in, out, tp->threads);
    return DTR_OK;
  }
  /* row-parallel: partial products, g, then the bias once */
  dtr__matmul_fwd_cpu(y, x, l->w, NULL, N, in, out, tp->threads);
  DTR_CHECK(dtr_tp_g_forward(tp, y, (size_t)N * out));
  if (l->b) dtr__bias_add_cpu(y, l->b, N, out, tp->threads);
  return DTR_OK;
}

dtr_result dtr_tp_linear_backward(dtr_tp *tp, const dtr_tp_linear *l, const float *dy, const float *x,
                                  float *dx, int N) {
  int in, out;
  local_dims(tp, l, &in, &out);
  if (dx) memset(dx, 0, (size_t)N * in * sizeof(float));
  dtr__matmul_bwd_cpu(dx, l->dw, l->db, dy, x, l->w, N, in, out, tp->threads);
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
  if (dtr__attention_fwd_cpu(heads, att, qkv, B, T, C, NH, tp->threads) != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, DTR_ERR_NOMEM, "attention forward: out of memory for scratch");
  return dtr_tp_linear_forward(tp, &a->proj, heads, out, N);
}

dtr_result dtr_tp_attention_backward(dtr_tp *tp, const dtr_tp_attention *a, const float *x, const float *qkv,
                                     const float *att, const float *heads, const float *dout, int B, int T,
                                     float *dx, float *dqkv, float *dheads) {
  DTR_CHECK(check_heads(tp, a));
  int N = B * T, C = a->n_embd / tp->size, NH = a->n_head / tp->size;
  DTR_CHECK(dtr_tp_linear_backward(tp, &a->proj, dout, heads, dheads, N));
  if (dtr__attention_bwd_cpu(dqkv, dheads, att, qkv, B, T, C, NH, tp->threads) != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, DTR_ERR_NOMEM, "attention backward: out of memory for scratch");
  return dtr_tp_linear_backward(tp, &a->qkv, dqkv, x, dx, N);
}

dtr_result dtr_tp_mlp_forward(dtr_tp *tp, const dtr_tp_mlp *m, const float *x, int N, float *pre, float *act,
                              float *out) {
  DTR_CHECK(dtr_tp_linear_forward(tp, &m->fc, x, pre, N));
  dtr__gelu_fwd_cpu(act, pre, (size_t)N * (m->fc.out / tp->size), tp->threads);
  return dtr_tp_linear_forward(tp, &m->proj, act, out, N);
}

dtr_result dtr_tp_mlp_backward(dtr_tp *tp, const dtr_tp_mlp *m, const float *x, const float *pre,
                               const float *act, const float *dout, int N, float *dx, float *dact) {
  DTR_CHECK(dtr_tp_linear_backward(tp, &m->proj, dout, act, dact, N));
  dtr__gelu_bwd_cpu(dact, pre, dact, (size_t)N * (m->fc.out / tp->size), tp->threads);
  return dtr_tp_linear_backward(tp, &m->fc, dact, x, dx, N);
}

dtr_result dtr_tp_embedding_forward(dtr_tp *tp, const float *wte, int v0, int V, const float *wpe,
                                    const int32_t *ids, int B, int T, int C, float *out) {
  if (tp->size == 1 && wpe) { /* the fused kernel: the unsplit model's bits */
    dtr__embedding_fwd_cpu(out, ids, wte, wpe, B, T, C, tp->threads);
    return DTR_OK;
  }
  dtr__vocab_embedding_fwd_cpu(out, ids, wte, v0, V, B * T, C, tp->threads);
  DTR_CHECK(allreduce(tp, out, (size_t)B * T * C, "embedding"));
  if (wpe) dtr__position_add_fwd_cpu(out, wpe, B, T, C, tp->threads);
  return DTR_OK;
}

void dtr_tp_embedding_backward(dtr_tp *tp, float *dwte, int v0, int V, float *dwpe, const int32_t *ids,
                               const float *dout, int B, int T, int C) {
  if (tp->size == 1 && dwpe) {
    dtr__embedding_bwd_cpu(dwte, dwpe, dout, ids, B, T, C, tp->threads);
    return;
  }
  dtr__vocab_embedding_bwd_cpu(dwte, dout, ids, v0, V, B * T, C, tp->threads);
  if (dwpe) dtr__position_add_bwd_cpu(dwpe, dout, B, T, C, tp->threads);
}

dtr_result dtr_tp_cross_entropy_forward(dtr_tp *tp, float *logits, const int32_t *targets, int v0, int V,
                                        int N, float *losses, float *scratch) {
  if (tp->size == 1) {
    dtr__softmax_xent_fwd_cpu(logits, losses, logits, targets, N, V, tp->threads);
    return DTR_OK;
  }
  float *mx = scratch, *sum = scratch + N; /* sum[0..N) sum-exp, sum[N..2N) the target's logit */
  dtr__vocab_xent_max_cpu(mx, logits, N, V, tp->threads);
  tp->allreduce_calls++;
  tp->allreduce_bytes += (size_t)N * sizeof(float);
  dtr_result rc = dtr_all_reduce(tp->comm, mx, mx, (size_t)N, DTR_F32, DTR_MAX, NULL);
  if (rc != DTR_OK)
    return dtr__fail(tp->err, sizeof tp->err, rc,
                     "tensor parallel cross-entropy (row maxima over %d ranks): %s", tp->size,
                     dtr_comm_last_error(tp->comm));
  dtr__vocab_xent_sum_cpu(sum, sum + N, logits, mx, targets, v0, N, V, tp->threads);
  DTR_CHECK(allreduce(tp, sum, (size_t)2 * N, "cross-entropy"));
  dtr__vocab_xent_finish_cpu(logits, losses, logits, mx, sum, sum + N, targets, N, V, tp->threads);
  return DTR_OK;
}

void dtr_tp_cross_entropy_backward(dtr_tp *tp, float *probs, const int32_t *targets, int v0, int V, int N,
                                   float dloss) {
  if (tp->size == 1)
    dtr__softmax_xent_bwd_cpu(probs, probs, targets, dloss, N, V, tp->threads);
  else
    dtr__vocab_xent_bwd_cpu(probs, probs, targets, v0, dloss, N, V, tp->threads);
}
