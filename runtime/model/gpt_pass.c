/* The reference GPT's forward and backward passes, one chunk of layers and one micro-batch slot at a
 * time, over the tensor-parallel blocks of dtrain/parallel.h (with one tp rank they run the fused CPU
 * kernels of the unsplit model, so a whole-model run keeps its bits). Backward walks the chunk's layers
 * from the last to the first and reports each finished range of parameter gradients to the ready
 * callback, so the data-parallel buckets can start their all-reduce while backward goes on. */
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/model/gpt_layout.h"
#include "runtime/model/kernels.h"

#define MAX_LAYERS_ON_STACK 256

static dtr_result tp_fail(dtr__gpt *m, dtr_result rc, const char *what) {
  return dtr__fail(m->err, sizeof m->err, rc, "gpt %s: %s", what, m->tp->err);
}

/* The blocks of layer l (local index) over views P (params) and G (grads). */
static dtr_tp_attention attention_of(const dtr__gpt *m, const dtr__gpt_layer *P, const dtr__gpt_layer *G) {
  int C = m->cfg.n_embd;
  dtr_tp_attention a = {C,
                        m->cfg.n_head,
                        {DTR_TP_COLUMN, C, 3 * C, P->qkvw, P->qkvb, G->qkvw, G->qkvb},
                        {DTR_TP_ROW, C, C, P->attprojw, P->attprojb, G->attprojw, G->attprojb}};
  return a;
}
static dtr_tp_mlp mlp_of(const dtr__gpt *m, const dtr__gpt_layer *P, const dtr__gpt_layer *G) {
  int C = m->cfg.n_embd;
  dtr_tp_mlp b = {{DTR_TP_COLUMN, C, 4 * C, P->fcw, P->fcb, G->fcw, G->fcb},
                  {DTR_TP_ROW, 4 * C, C, P->fcprojw, P->fcprojb, G->fcprojw, G->fcprojb}};
  return b;
}

static dtr_result check_call(dtr__gpt *m, int chunk, int slot, int B, int T) {
  if (chunk < 0 || chunk >= m->part.nchunks)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt: chunk %d outside 0..%d", chunk,
                     m->part.nchunks - 1);
  if (slot < 0 || slot >= m->part.slots)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt: slot %d outside 0..%d", slot,
                     m->part.slots - 1);
  if (B <= 0 || B > m->max_batch)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt forward: batch %d outside 1..%d (max_batch)", B, m->max_batch);
  if (T <= 0 || T > m->cfg.block_size)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt forward: T %d outside 1..%d (block_size)",
                     T, m->cfg.block_size);
  if (m->nlayers > MAX_LAYERS_ON_STACK)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_UNSUPPORTED, "gpt: %d layers on one rank > %d",
                     m->nlayers, MAX_LAYERS_ON_STACK);
  return DTR_OK;
}

static int first_virtual(const dtr__gpt *m, int chunk) {
  return m->part.first && chunk == 0;
}
static int last_virtual(const dtr__gpt *m, int chunk) {
  return m->part.last && chunk == m->part.nchunks - 1;
}

/* The forward; logits (NULL: not wanted) receives this rank's B*T*Vl logits on the last chunk. */
static dtr_result forward(dtr__gpt *m, int chunk, int slot, const int32_t *ids, const float *x_in,
                          const int32_t *targets, int B, int T, float *x_out, float *loss, float *logits) {
  DTR_CHECK(check_call(m, chunk, slot, B, T));
  const dtr__gpt_config *c = &m->cfg;
  int V = c->vocab_size, C = c->n_embd, th = m->threads, tpn = m->tp->size;
  int N = B * T, NHl = c->n_head / tpn, Cl = C / tpn;
  int first = first_virtual(m, chunk), last = last_virtual(m, chunk);
  dtr__gpt_acts *a = &m->slots[slot];
  a->have_targets = a->have_logits = 0; /* until this forward completes */
  if (first && !ids) return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt forward: inputs is NULL");
  if (!first && !x_in) return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt forward: x_in is NULL");
  if (!last && !x_out) return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt forward: x_out is NULL");
  int nscored = 0;
  for (int i = 0; i < N; i++) {
    if (first && (ids[i] < 0 || ids[i] >= V))
      return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                       "gpt forward: input token %d at [%d,%d] outside 0..%d", ids[i], i / T, i % T, V - 1);
    if (last && targets) {
      if (targets[i] < -1 || targets[i] >= V)
        return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                         "gpt forward: target %d at [%d,%d] outside -1..%d", targets[i], i / T, i % T, V - 1);
      nscored += targets[i] >= 0;
    }
  }
  float *wte, *wpe, *lnfw, *lnfb, *gwte, *gwpe, *glnfw, *glnfb;
  dtr__gpt_layer P[MAX_LAYERS_ON_STACK], G[MAX_LAYERS_ON_STACK];
  dtr__gpt_views(m, m->params, &wte, &wpe, P, &lnfw, &lnfb);
  dtr__gpt_views(m, m->grads, &gwte, &gwpe, G, &glnfw, &glnfb);
  size_t NC = (size_t)N * C;

  if (first) {
    memcpy(a->ids, ids, (size_t)N * sizeof(int32_t));
    dtr_result rc = dtr_tp_embedding_forward(m->tp, wte, m->v0, m->V, wpe, ids, B, T, C, a->encoded);
    if (rc != DTR_OK) return tp_fail(m, rc, "embedding");
  } else {
    memcpy(a->encoded, x_in, NC * sizeof(float));
  }
  int l0 = m->chunk_first[chunk], nl = m->part.layer_end[chunk] - m->part.layer_begin[chunk];
  for (int j = 0; j < nl; j++) {
    const dtr__gpt_layer *p = &P[l0 + j];
    const float *x = j == 0 ? a->encoded : a->residual3 + (size_t)(j - 1) * NC;
    float *ln1 = a->ln1 + j * NC, *qkv = a->qkv + j * 3 * (size_t)N * Cl,
          *atty = a->atty + j * (size_t)N * Cl;
    float *att = a->att + (size_t)j * B * NHl * T * T, *res2 = a->residual2 + j * NC, *ln2 = a->ln2 + j * NC;
    float *fch = a->fch + j * 4 * (size_t)N * Cl, *fchg = a->fch_gelu + j * 4 * (size_t)N * Cl;
    float *res3 = a->residual3 + j * NC;
    dtr__layernorm_fwd_cpu(ln1, a->ln1_mean + (size_t)j * N, a->ln1_rstd + (size_t)j * N, x, p->ln1w, p->ln1b,
                           N, C, th);
    dtr_tp_attention at = attention_of(m, p, &G[l0 + j]);
    dtr_result rc = dtr_tp_attention_forward(m->tp, &at, ln1, B, T, qkv, att, atty, res2);
    if (rc != DTR_OK) return tp_fail(m, rc, "attention forward");
    dtr__residual_fwd_cpu(res2, res2, x, NC, th);
    dtr__layernorm_fwd_cpu(ln2, a->ln2_mean + (size_t)j * N, a->ln2_rstd + (size_t)j * N, res2, p->ln2w,
                           p->ln2b, N, C, th);
    dtr_tp_mlp ml = mlp_of(m, p, &G[l0 + j]);
    rc = dtr_tp_mlp_forward(m->tp, &ml, ln2, N, fch, fchg, res3);
    if (rc != DTR_OK) return tp_fail(m, rc, "mlp forward");
    dtr__residual_fwd_cpu(res3, res3, res2, NC, th);
  }
  const float *top = nl > 0 ? a->residual3 + (size_t)(nl - 1) * NC : a->encoded;
  a->B = B;
  a->T = T;
  a->chunk = chunk;
  if (!last) {
    memcpy(x_out, top, NC * sizeof(float));
    return DTR_OK;
  }
  dtr__layernorm_fwd_cpu(a->lnf, a->lnf_mean, a->lnf_rstd, top, lnfw, lnfb, N, C, th);
  /* the tied head, column-parallel over the vocabulary: logits = lnf @ wte^T */
  dtr_tp_linear head = {DTR_TP_COLUMN, C, V, wte, NULL, gwte, NULL};
  dtr_result rc = dtr_tp_linear_forward(m->tp, &head, a->lnf, a->probs, N);
  if (rc != DTR_OK) return tp_fail(m, rc, "head forward");
  if (logits) memcpy(logits, a->probs, (size_t)N * m->V * sizeof(float));
  if (!targets) {
    if (loss) *loss = 0.0f;
    a->have_logits = 1;
    return DTR_OK;
  }
  memcpy(a->targets, targets, (size_t)N * sizeof(int32_t));
  rc = dtr_tp_cross_entropy_forward(m->tp, a->probs, a->targets, m->v0, m->V, N, a->losses, m->xent);
  if (rc != DTR_OK) return tp_fail(m, rc, "cross-entropy");
  double sum = 0.0;
  for (int i = 0; i < N; i++) sum += a->losses[i];
  if (loss) *loss = nscored ? (float)(sum / nscored) : 0.0f;
  a->nscored = nscored;
  a->have_targets = 1;
  return DTR_OK;
}

dtr_result dtr__gpt_forward_chunk(dtr__gpt *m, int chunk, int slot, const int32_t *ids, const float *x_in,
                                  const int32_t *targets, int B, int T, float *x_out, float *loss) {
  return forward(m, chunk, slot, ids, x_in, targets, B, T, x_out, loss, NULL);
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

/* The flat range of the part's local layer li (its 12 tensors). */
static void layer_range(const dtr__gpt *m, int li, size_t *off, size_t *count) {
  int t0 = (m->part.first ? 2 : m->wte >= 0 ? 1 : 0) + li * DTR_GPT_PER_LAYER;
  const dtr__gpt_param *a = &m->tensors[t0], *b = &m->tensors[t0 + DTR_GPT_PER_LAYER - 1];
  *off = a->offset;
  *count = b->offset + b->count - a->offset;
}

dtr_result dtr__gpt_backward_chunk(dtr__gpt *m, int chunk, int slot, float grad_scale, const float *dx_out,
                                   float *dx_in, dtr__gpt_grad_ready_fn ready, void *ready_arg) {
  if (chunk < 0 || chunk >= m->part.nchunks || slot < 0 || slot >= m->part.slots)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt backward: chunk %d slot %d", chunk, slot);
  dtr__gpt_acts *a = &m->slots[slot];
  int first = first_virtual(m, chunk), last = last_virtual(m, chunk);
  if (a->chunk != chunk || a->B <= 0)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt backward: slot %d holds no forward of chunk %d", slot, chunk);
  if (last && !a->have_targets)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt backward: the last forward had no targets");
  if (!last && !dx_out)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt backward: dx_out is NULL");
  if (!first && !dx_in)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt backward: dx_in is NULL");
  const dtr__gpt_config *c = &m->cfg;
  int B = a->B, T = a->T, C = c->n_embd, th = m->threads, tpn = m->tp->size;
  int N = B * T, Cl = C / tpn, NHl = c->n_head / tpn;
  size_t NC = (size_t)N * C;
  float *wte, *wpe, *lnfw, *lnfb, *gwte, *gwpe, *glnfw, *glnfb;
  dtr__gpt_layer P[MAX_LAYERS_ON_STACK], G[MAX_LAYERS_ON_STACK];
  dtr__gpt_views(m, m->params, &wte, &wpe, P, &lnfw, &lnfb);
  dtr__gpt_views(m, m->grads, &gwte, &gwpe, G, &glnfw, &glnfb);
  const dtr__gpt_param *tab = m->tensors;
  int l0 = m->chunk_first[chunk], nl = m->part.layer_end[chunk] - m->part.layer_begin[chunk];

  if (last) {
    /* loss = mean over scored positions, times grad_scale */
    float dloss = a->nscored ? grad_scale / (float)a->nscored : 0.0f;
    float *dlogits = a->probs;
    dtr_result rc = dtr_tp_cross_entropy_backward(m->tp, dlogits, a->targets, m->v0, m->V, N, dloss);
    if (rc != DTR_OK) return tp_fail(m, rc, "cross-entropy backward");
    dtr_tp_linear head = {DTR_TP_COLUMN, C, c->vocab_size, wte, NULL, gwte, NULL};
    rc = dtr_tp_linear_backward(m->tp, &head, dlogits, a->lnf, m->dln, N);
    if (rc != DTR_OK) return tp_fail(m, rc, "head backward");
    memset(m->dres, 0, NC * sizeof(float));
    const float *top = nl > 0 ? a->residual3 + (size_t)(nl - 1) * NC : a->encoded;
    dtr__layernorm_bwd_cpu(m->dres, glnfw, glnfb, m->dln, top, lnfw, a->lnf_mean, a->lnf_rstd, N, C, th);
    const dtr__gpt_param *lnf = &tab[m->lnf];
    DTR_CHECK(report(m, ready, ready_arg, lnf->offset, m->nparams - lnf->offset));
    /* the last stage's copy of wte takes no other gradient: final now */
    if (!m->part.first) DTR_CHECK(report(m, ready, ready_arg, tab[m->wte].offset, tab[m->wte].count));
    a->have_targets = 0; /* the probabilities became dlogits: a second backward would be wrong */
  } else {
    memcpy(m->dres, dx_out, NC * sizeof(float));
  }

  /* dres holds d(loss)/d(residual stream) above the layer being processed */
  for (int j = nl - 1; j >= 0; j--) {
    const dtr__gpt_layer *p = &P[l0 + j], *g = &G[l0 + j];
    const float *x = j == 0 ? a->encoded : a->residual3 + (size_t)(j - 1) * NC;
    const float *ln1 = a->ln1 + j * NC, *qkv = a->qkv + j * 3 * (size_t)N * Cl,
                *atty = a->atty + j * (size_t)N * Cl;
    const float *att = a->att + (size_t)j * B * NHl * T * T, *res2 = a->residual2 + j * NC,
                *ln2 = a->ln2 + j * NC;
    const float *fch = a->fch + j * 4 * (size_t)N * Cl, *fchg = a->fch_gelu + j * 4 * (size_t)N * Cl;
    /* MLP: res3 = res2 + proj(gelu(fc(ln2(res2)))) */
    dtr_tp_mlp ml = mlp_of(m, p, g);
    dtr_result rc = dtr_tp_mlp_backward(m->tp, &ml, ln2, fch, fchg, m->dres, N, m->dln, m->dbig);
    if (rc != DTR_OK) return tp_fail(m, rc, "mlp backward");
    dtr__layernorm_bwd_cpu(m->dres, g->ln2w, g->ln2b, m->dln, res2, p->ln2w, a->ln2_mean + (size_t)j * N,
                           a->ln2_rstd + (size_t)j * N, N, C, th);
    /* attention: res2 = x + proj(attn(qkv(ln1(x)))) */
    dtr_tp_attention at = attention_of(m, p, g);
    rc = dtr_tp_attention_backward(m->tp, &at, ln1, qkv, att, atty, m->dres, B, T, m->dln, m->dqkv, m->datty);
    if (rc != DTR_OK) return tp_fail(m, rc, "attention backward");
    dtr__layernorm_bwd_cpu(m->dres, g->ln1w, g->ln1b, m->dln, x, p->ln1w, a->ln1_mean + (size_t)j * N,
                           a->ln1_rstd + (size_t)j * N, N, C, th);
    size_t off, count;
    layer_range(m, l0 + j, &off, &count);
    DTR_CHECK(report(m, ready, ready_arg, off, count));
  }
  if (first) {
    dtr_result rc = dtr_tp_embedding_backward(m->tp, gwte, m->v0, m->V, gwpe, a->ids, m->dres, B, T, C);
    if (rc != DTR_OK) return tp_fail(m, rc, "embedding backward");
    DTR_CHECK(report(m, ready, ready_arg, 0, tab[m->wpe].offset + tab[m->wpe].count));
  } else {
    memcpy(dx_in, m->dres, NC * sizeof(float));
  }
  a->B = 0; /* the slot is free */
  return DTR_OK;
}

dtr_result dtr__gpt_argmax(dtr__gpt *m, int slot, int b, int t, int32_t *id) {
  if (slot < 0 || slot >= m->part.slots || !m->slots[slot].have_logits || b < 0 || b >= m->slots[slot].B ||
      t < 0 || t >= m->slots[slot].T)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt argmax: slot %d holds no logits at [%d,%d]",
                     slot, b, t);
  const dtr__gpt_acts *a = &m->slots[slot];
  const float *row = a->probs + ((size_t)b * a->T + t) * m->V;
  int best = 0;
  for (int v = 1; v < m->V; v++)
    if (row[v] > row[best]) best = v;
  /* over the tp group: the largest value, the lowest id among equals */
  float mine[2] = {row[best], (float)(m->v0 + best)};
  if (m->tp->size == 1) {
    *id = (int32_t)mine[1];
    return DTR_OK;
  }
  float *all = malloc(sizeof(float) * 2 * (size_t)m->tp->size);
  if (!all) return dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt argmax: out of memory");
  dtr_result rc = dtr_all_gather(m->tp->comm, mine, all, 2, DTR_F32, NULL);
  if (rc == DTR_OK) {
    int k = 0;
    for (int r = 1; r < m->tp->size; r++)
      if (all[2 * r] > all[2 * k]) k = r;
    *id = (int32_t)all[2 * k + 1];
  } else {
    dtr__fail(m->err, sizeof m->err, rc, "gpt argmax: all-gather over tp: %s",
              dtr_comm_last_error(m->tp->comm));
  }
  free(all);
  return rc;
}

dtr_result dtr__gpt_forward(dtr__gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                            float *loss, float *logits) {
  if (!m->part.first || !m->part.last || m->part.nchunks != 1 || m->tp->size != 1)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt forward: the model is split (use the chunk calls)");
  return forward(m, 0, 0, inputs, NULL, targets, B, T, NULL, loss, logits);
}

dtr_result dtr__gpt_backward(dtr__gpt *m, float grad_scale, dtr__gpt_grad_ready_fn ready, void *ready_arg) {
  if (!m->slots[0].have_targets)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt backward: the last forward had no targets");
  return dtr__gpt_backward_chunk(m, 0, 0, grad_scale, NULL, NULL, ready, ready_arg);
}
