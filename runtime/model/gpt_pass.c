/* The reference GPT's forward and backward passes over the kernels of kernels_cpu.c. Backward walks
 * the layers from the last to the first and reports each finished range of parameter gradients to the
 * ready callback, so the data-parallel buckets can start their all-reduce while backward goes on. */
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/model/kernels.h"

#define MAX_LAYERS_ON_STACK 64

dtr_result dtr__gpt_forward(dtr__gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                            float *loss, float *logits) {
  const dtr__gpt_config *c = &m->cfg;
  int V = c->vocab_size, C = c->n_embd, NH = c->n_head, L = c->n_layer, th = m->threads;
  if (!inputs) return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt forward: inputs is NULL");
  if (B <= 0 || B > m->max_batch)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt forward: batch %d outside 1..%d (max_batch)", B, m->max_batch);
  if (T <= 0 || T > c->block_size)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt forward: T %d outside 1..%d (block_size)",
                     T, c->block_size);
  if (L > MAX_LAYERS_ON_STACK)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_UNSUPPORTED, "gpt forward: n_layer %d > %d", L,
                     MAX_LAYERS_ON_STACK);
  int N = B * T;
  int nscored = 0;
  for (int i = 0; i < N; i++) {
    if (inputs[i] < 0 || inputs[i] >= V)
      return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                       "gpt forward: input token %d at [%d,%d] outside 0..%d", inputs[i], i / T, i % T,
                       V - 1);
    if (targets) {
      if (targets[i] < -1 || targets[i] >= V)
        return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                         "gpt forward: target %d at [%d,%d] outside -1..%d", targets[i], i / T, i % T, V - 1);
      nscored += targets[i] >= 0;
    }
  }
  m->have_targets = 0; /* until this forward completes */
  memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
  if (targets) memcpy(m->targets, targets, (size_t)N * sizeof(int32_t));

  float *wte, *wpe, *lnfw, *lnfb;
  dtr__gpt_layer P[MAX_LAYERS_ON_STACK];
  dtr__gpt_views(m, m->params, &wte, &wpe, P, &lnfw, &lnfb);
  dtr__gpt_acts *a = &m->a;
  size_t NC = (size_t)N * C;

  dtr__embedding_fwd_cpu(a->encoded, inputs, wte, wpe, B, T, C, th);
  for (int l = 0; l < L; l++) {
    const float *x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * NC;
    float *ln1 = a->ln1 + l * NC, *qkv = a->qkv + l * 3 * NC, *atty = a->atty + l * NC;
    float *att = a->att + (size_t)l * B * NH * T * T, *res2 = a->residual2 + l * NC, *ln2 = a->ln2 + l * NC;
    float *fch = a->fch + l * 4 * NC, *fchg = a->fch_gelu + l * 4 * NC, *res3 = a->residual3 + l * NC;
    dtr__layernorm_fwd_cpu(ln1, a->ln1_mean + (size_t)l * N, a->ln1_rstd + (size_t)l * N, x, P[l].ln1w,
                           P[l].ln1b, N, C, th);
    dtr__matmul_fwd_cpu(qkv, ln1, P[l].qkvw, P[l].qkvb, N, C, 3 * C, th);
    if (dtr__attention_fwd_cpu(atty, att, qkv, B, T, C, NH, th) != DTR_OK)
      return dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt forward: attention scratch");
    /* the attention projection goes into res2, which then takes the residual */
    dtr__matmul_fwd_cpu(res2, atty, P[l].attprojw, P[l].attprojb, N, C, C, th);
    dtr__residual_fwd_cpu(res2, res2, x, NC, th);
    dtr__layernorm_fwd_cpu(ln2, a->ln2_mean + (size_t)l * N, a->ln2_rstd + (size_t)l * N, res2, P[l].ln2w,
                           P[l].ln2b, N, C, th);
    dtr__matmul_fwd_cpu(fch, ln2, P[l].fcw, P[l].fcb, N, C, 4 * C, th);
    dtr__gelu_fwd_cpu(fchg, fch, 4 * NC, th);
    dtr__matmul_fwd_cpu(res3, fchg, P[l].fcprojw, P[l].fcprojb, N, 4 * C, C, th);
    dtr__residual_fwd_cpu(res3, res3, res2, NC, th);
  }
  dtr__layernorm_fwd_cpu(a->lnf, a->lnf_mean, a->lnf_rstd, a->residual3 + (size_t)(L - 1) * NC, lnfw, lnfb, N,
                         C, th);
  dtr__matmul_fwd_cpu(a->probs, a->lnf, wte, NULL, N, C, V, th); /* tied head: logits = lnf @ wte^T */
  if (logits) memcpy(logits, a->probs, (size_t)N * V * sizeof(float));
  if (!targets) {
    if (loss) *loss = 0.0f;
    m->B = B;
    m->T = T;
    return DTR_OK;
  }
  dtr__softmax_xent_fwd_cpu(a->probs, a->losses, a->probs, m->targets, N, V, th);
  double sum = 0.0;
  for (int i = 0; i < N; i++) sum += a->losses[i];
  if (loss) *loss = nscored ? (float)(sum / nscored) : 0.0f;
  m->B = B;
  m->T = T;
  m->nscored = nscored;
  m->have_targets = 1;
  return DTR_OK;
}

static dtr_result report(dtr__gpt *m, dtr__gpt_grad_ready_fn ready, void *arg, size_t off, size_t count) {
  if (!ready) return DTR_OK;
  dtr_result rc = ready(arg, off, count);
  if (rc != DTR_OK)
    return dtr__fail(m->err, sizeof m->err, rc,
                     "gpt backward: ready callback failed for grads [%zu, %zu): %s", off, off + count,
                     dtr_strerror(rc));
  return DTR_OK;
}

dtr_result dtr__gpt_backward(dtr__gpt *m, float grad_scale, dtr__gpt_grad_ready_fn ready, void *ready_arg) {
  if (!m->have_targets)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt backward: the last forward had no targets");
  const dtr__gpt_config *c = &m->cfg;
  int B = m->B, T = m->T, V = c->vocab_size, C = c->n_embd, NH = c->n_head, L = c->n_layer, th = m->threads;
  int N = B * T;
  size_t NC = (size_t)N * C;
  float *wte, *wpe, *lnfw, *lnfb, *gwte, *gwpe, *glnfw, *glnfb;
  dtr__gpt_layer P[MAX_LAYERS_ON_STACK], G[MAX_LAYERS_ON_STACK];
  dtr__gpt_views(m, m->params, &wte, &wpe, P, &lnfw, &lnfb);
  dtr__gpt_views(m, m->grads, &gwte, &gwpe, G, &glnfw, &glnfb);
  dtr__gpt_acts *a = &m->a;
  const dtr__gpt_param *tab = m->tensors;

  /* loss = mean over scored positions, times grad_scale */
  float dloss = m->nscored ? grad_scale / (float)m->nscored : 0.0f;
  float *dlogits = a->probs;
  dtr__softmax_xent_bwd_cpu(dlogits, a->probs, m->targets, dloss, N, V, th);
  memset(a->dln, 0, NC * sizeof(float));
  dtr__matmul_bwd_cpu(a->dln, gwte, NULL, dlogits, a->lnf, wte, N, C, V, th);
  memset(a->dres, 0, NC * sizeof(float));
  dtr__layernorm_bwd_cpu(a->dres, glnfw, glnfb, a->dln, a->residual3 + (size_t)(L - 1) * NC, lnfw,
                         a->lnf_mean, a->lnf_rstd, N, C, th);
  const dtr__gpt_param *lnf = &tab[m->ntensors - 2];
  DTR_CHECK(report(m, ready, ready_arg, lnf->offset, m->nparams - lnf->offset));

  /* dres holds d(loss)/d(residual stream) above the layer being processed */
  for (int l = L - 1; l >= 0; l--) {
    const float *x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * NC;
    const float *ln1 = a->ln1 + l * NC, *qkv = a->qkv + l * 3 * NC, *atty = a->atty + l * NC;
    const float *att = a->att + (size_t)l * B * NH * T * T, *res2 = a->residual2 + l * NC,
                *ln2 = a->ln2 + l * NC;
    const float *fch = a->fch + l * 4 * NC, *fchg = a->fch_gelu + l * 4 * NC;
    /* MLP: res3 = res2 + proj(gelu(fc(ln2(res2)))) */
    memset(a->dbig, 0, 4 * NC * sizeof(float));
    dtr__matmul_bwd_cpu(a->dbig, G[l].fcprojw, G[l].fcprojb, a->dres, fchg, P[l].fcprojw, N, 4 * C, C, th);
    dtr__gelu_bwd_cpu(a->dbig, fch, a->dbig, 4 * NC, th);
    memset(a->dln, 0, NC * sizeof(float));
    dtr__matmul_bwd_cpu(a->dln, G[l].fcw, G[l].fcb, a->dbig, ln2, P[l].fcw, N, C, 4 * C, th);
    dtr__layernorm_bwd_cpu(a->dres, G[l].ln2w, G[l].ln2b, a->dln, res2, P[l].ln2w,
                           a->ln2_mean + (size_t)l * N, a->ln2_rstd + (size_t)l * N, N, C, th);
    /* attention: res2 = x + proj(attn(qkv(ln1(x)))) */
    memset(a->datty, 0, NC * sizeof(float));
    dtr__matmul_bwd_cpu(a->datty, G[l].attprojw, G[l].attprojb, a->dres, atty, P[l].attprojw, N, C, C, th);
    if (dtr__attention_bwd_cpu(a->dqkv, a->datty, att, qkv, B, T, C, NH, th) != DTR_OK)
      return dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt backward: attention scratch");
    memset(a->dln, 0, NC * sizeof(float));
    dtr__matmul_bwd_cpu(a->dln, G[l].qkvw, G[l].qkvb, a->dqkv, ln1, P[l].qkvw, N, C, 3 * C, th);
    dtr__layernorm_bwd_cpu(a->dres, G[l].ln1w, G[l].ln1b, a->dln, x, P[l].ln1w, a->ln1_mean + (size_t)l * N,
                           a->ln1_rstd + (size_t)l * N, N, C, th);
    const dtr__gpt_param *first = &tab[2 + l * 12], *last = &tab[2 + l * 12 + 11];
    DTR_CHECK(report(m, ready, ready_arg, first->offset, last->offset + last->count - first->offset));
  }
  dtr__embedding_bwd_cpu(gwte, gwpe, a->dres, m->inputs, B, T, C, th);
  DTR_CHECK(report(m, ready, ready_arg, 0, tab[1].offset + tab[1].count));
  m->have_targets = 0; /* the probabilities became dlogits: a second backward would be wrong */
  return DTR_OK;
}
