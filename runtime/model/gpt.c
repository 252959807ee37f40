/* The reference GPT's construction: config and part checks, the parameter table (names, shapes, offsets
 * in the flat buffers), seeded initialisation, the activation slots, accessors and greedy generation.
 * The forward and backward passes are in gpt_pass.c.
 *
 * Initialisation draws one stream of normals for the whole model, tensor after tensor in the whole
 * model's order (splitmix64 outputs, Box-Muller on consecutive pairs). splitmix64's k-th output depends on
 * the seed and k alone, so any element's value can be computed where it is needed: a part fills exactly
 * its slice of the whole model, bit for bit, without drawing the rest. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/model/gpt_layout.h"
#include "runtime/model/kernels.h"

#define PER_LAYER DTR_GPT_PER_LAYER
#define GOLDEN 0x9E3779B97F4A7C15ull

static void *xalloc(size_t bytes) {
  bytes = (bytes ? bytes : 1);
  bytes = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

/* splitmix64's output k (0-based) from seed: a small, seekable generator */
static uint64_t splitmix_at(uint64_t seed, uint64_t k) {
  uint64_t z = seed + (k + 1) * GOLDEN;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Elements e (even) and e+1 of a tensor whose stream starts at output `base`: Box-Muller on outputs
 * base + e and base + e + 1, cosine and sine, exactly as the whole model's sequential fill computes them. */
static void normal_pair(uint64_t seed, uint64_t base, uint64_t e, float std, float out[2]) {
  uint64_t k = base + e;
  double u1 = ((splitmix_at(seed, k) >> 11) + 1.0) / 9007199254740992.0;
  double u2 = (splitmix_at(seed, k + 1) >> 11) / 9007199254740992.0;
  double r = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
  out[0] = (float)(r * cos(th)) * std;
  out[1] = (float)(r * sin(th)) * std;
}

/* Where each 2-D tensor of the whole model starts in the stream: every one consumes its count rounded
 * up to even (a pair per two elements). bases[i] for the whole table's entry i (-1 for 1-D). */
static dtr_result stream_bases(const dtr__gpt_config *cfg, dtr__gpt_param **table, int64_t **bases, int *n) {
  *n = dtr__gpt_config_num_tensors(cfg);
  *table = calloc((size_t)*n, sizeof **table);
  *bases = calloc((size_t)*n, sizeof **bases);
  if (!*table || !*bases) return DTR_ERR_NOMEM;
  dtr__gpt_layout(cfg, *table);
  int64_t pos = 0;
  for (int i = 0; i < *n; i++) {
    (*bases)[i] = (*table)[i].ndim == 2 ? pos : -1;
    if ((*table)[i].ndim == 2) pos += (int64_t)(((*table)[i].count + 1) / 2 * 2);
  }
  return DTR_OK;
}

/* This rank's slice of the whole model's initial value of tensor t (GPT-2 / nanoGPT: weights
 * N(0, 0.02), residual projections scaled by 1/sqrt(2L); biases 0, norms 1). base: its stream start. */
static void init_tensor(dtr__gpt *m, const dtr__gpt_param *t, int64_t base, uint64_t seed) {
  float *p = m->params + t->offset;
  if (t->ndim != 2) {
    size_t len = strlen(t->name);
    if (strstr(t->name, "ln") && t->name[len - 1] == 'w')
      for (size_t k = 0; k < t->count; k++) p[k] = 1.0f;
    return;
  }
  int resid = strstr(t->name, "attn.proj.w") || strstr(t->name, "mlp.proj.w");
  float std = resid ? 0.02f / sqrtf(2.0f * m->cfg.n_layer) : 0.02f, pair[2];
  dtr__gpt_piece pc[3];
  int np = dtr__gpt_param_pieces(t, m->tp->size, m->tp->rank, pc);
  int64_t cols = t->shape[1], gcols = t->gshape[1];
  for (int k = 0; k < np; k++)
    for (int64_t r = 0; r < pc[k].rows; r++) {
      float *row = p + (size_t)(pc[k].lrow + r) * (size_t)cols;
      uint64_t e0 = (uint64_t)((pc[k].grow + r) * gcols + pc[k].gcol);
      for (int64_t c = 0; c < cols;) {
        uint64_t e = e0 + (uint64_t)c;
        normal_pair(seed, (uint64_t)base, e & ~(uint64_t)1, std, pair);
        row[c++] = pair[e & 1];
        if (!(e & 1) && c < cols) row[c++] = pair[1];
      }
    }
}

static dtr_result init_params(dtr__gpt *m, uint64_t seed) {
  dtr__gpt_param *table = NULL;
  int64_t *bases = NULL;
  int n = 0;
  dtr_result rc = stream_bases(&m->cfg, &table, &bases, &n);
  for (int i = 0; i < m->ntensors && rc == DTR_OK; i++) {
    int j = 0;
    while (j < n && strcmp(table[j].name, m->tensors[i].name) != 0) j++;
    if (j == n)
      rc = DTR_ERR_INTERNAL;
    else
      init_tensor(m, &m->tensors[i], bases[j], seed);
  }
  free(table);
  free(bases);
  return rc;
}

void dtr__gpt_views(const dtr__gpt *m, float *base, float **wte, float **wpe, dtr__gpt_layer *layers,
                    float **lnfw, float **lnfb) {
  const dtr__gpt_param *t = m->tensors;
  *wte = m->wte >= 0 ? base + t[m->wte].offset : NULL;
  *wpe = m->wpe >= 0 ? base + t[m->wpe].offset : NULL;
  int first = m->part.first ? 2 : m->wte >= 0 ? 1 : 0; /* the first layer tensor */
  for (int l = 0; l < m->nlayers; l++) {
    const dtr__gpt_param *p = t + first + l * PER_LAYER;
    float **dst[PER_LAYER] = {&layers[l].ln1w, &layers[l].ln1b,     &layers[l].qkvw,
                              &layers[l].qkvb, &layers[l].attprojw, &layers[l].attprojb,
                              &layers[l].ln2w, &layers[l].ln2b,     &layers[l].fcw,
                              &layers[l].fcb,  &layers[l].fcprojw,  &layers[l].fcprojb};
    for (int k = 0; k < PER_LAYER; k++) *dst[k] = base + p[k].offset;
  }
  *lnfw = m->lnf >= 0 ? base + t[m->lnf].offset : NULL;
  *lnfb = m->lnf >= 0 ? base + t[m->lnf + 1].offset : NULL;
}

const char *dtr__gpt_last_error(const dtr__gpt *m) {
  return m ? m->err : "no model";
}

/* Every slot's activations (sizes of dtr__gpt_acts) and the backward scratch, in one arena. */
static dtr_result alloc_slots(dtr__gpt *m) {
  const dtr__gpt_config *c = &m->cfg;
  int tpn = m->tp->size, Lc = 0;
  for (int k = 0; k < m->part.nchunks; k++) {
    int n = m->part.layer_end[k] - m->part.layer_begin[k];
    if (n > Lc) Lc = n;
  }
  size_t B = (size_t)m->max_batch, T = (size_t)c->block_size, C = (size_t)c->n_embd, BT = B * T;
  size_t Cl = C / (size_t)tpn, NHl = (size_t)c->n_head / (size_t)tpn, V = (size_t)m->V, L = (size_t)Lc;
  size_t head = m->part.last ? 1 : 0;
  size_t sizes[] = {BT * C,      L * BT * C,          L * BT,          L * BT,     L * BT * 3 * Cl,
                    L * BT * Cl, L * B * NHl * T * T, L * BT * C,      L * BT * C, L * BT,
                    L * BT,      L * BT * 4 * Cl,     L * BT * 4 * Cl, L * BT * C, head * BT * C,
                    head * BT,   head * BT,           head * BT * V,   head * BT};
  size_t scratch[] = {BT * C, BT * C, BT * 4 * Cl, BT * 3 * Cl, BT * Cl, 3 * BT};
  size_t nsz = sizeof sizes / sizeof sizes[0], nsc = sizeof scratch / sizeof scratch[0];
  size_t slot = 0, total = 0;
  for (size_t i = 0; i < nsz; i++) slot += (sizes[i] + 15) / 16 * 16;
  for (size_t i = 0; i < nsc; i++) total += (scratch[i] + 15) / 16 * 16;
  total += slot * (size_t)m->part.slots;
  m->arena_bytes = total * sizeof(float) + 2 * BT * (size_t)m->part.slots * sizeof(int32_t);
  m->arena = xalloc(total * sizeof(float));
  m->id_arena = xalloc(2 * BT * (size_t)m->part.slots * sizeof(int32_t));
  m->slots = calloc((size_t)m->part.slots, sizeof *m->slots);
  if (!m->arena || !m->id_arena || !m->slots) return DTR_ERR_NOMEM;
  float *cur = m->arena;
  for (int s = 0; s < m->part.slots; s++) {
    dtr__gpt_acts *a = &m->slots[s];
    float **ptrs[] = {&a->encoded,  &a->ln1,      &a->ln1_mean,  &a->ln1_rstd,  &a->qkv,
                      &a->atty,     &a->att,      &a->residual2, &a->ln2,       &a->ln2_mean,
                      &a->ln2_rstd, &a->fch,      &a->fch_gelu,  &a->residual3, &a->lnf,
                      &a->lnf_mean, &a->lnf_rstd, &a->probs,     &a->losses};
    _Static_assert(sizeof sizes / sizeof sizes[0] == sizeof ptrs / sizeof ptrs[0], "one size per activation");
    for (size_t i = 0; i < nsz; i++) {
      *ptrs[i] = cur;
      cur += (sizes[i] + 15) / 16 * 16;
    }
    a->ids = m->id_arena + (size_t)s * 2 * BT;
    a->targets = a->ids + BT;
  }
  float **sp[] = {&m->dres, &m->dln, &m->dbig, &m->dqkv, &m->datty, &m->xent};
  _Static_assert(sizeof scratch / sizeof scratch[0] == sizeof sp / sizeof sp[0], "one size per scratch");
  for (size_t i = 0; i < nsc; i++) {
    *sp[i] = cur;
    cur += (scratch[i] + 15) / 16 * 16;
  }
  return DTR_OK;
}

dtr_result dtr__gpt_create(const dtr__gpt_config *cfg, uint64_t seed, int threads, int max_batch,
                           dtr__gpt **out, char *err, size_t errcap) {
  if (!cfg) return dtr__fail(err, errcap, DTR_ERR_INVALID, "gpt config: NULL");
  dtr__gpt_part whole = dtr__gpt_whole(cfg);
  return dtr__gpt_create_part(cfg, &whole, seed, threads, max_batch, out, err, errcap);
}

dtr_result dtr__gpt_create_part(const dtr__gpt_config *cfg, const dtr__gpt_part *part, uint64_t seed,
                                int threads, int max_batch, dtr__gpt **out, char *err, size_t errcap) {
  dtr_result rc = DTR_OK;
  if (!out || !part) return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr__gpt_create: out or part is NULL");
  *out = NULL;
  DTR_CHECK(dtr__gpt_check_config(cfg, max_batch, "gpt", err, errcap));
  DTR_CHECK(dtr__gpt_check_part(cfg, part, "gpt part", err, errcap));
  dtr__gpt *m = calloc(1, sizeof *m);
  if (!m) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "gpt: out of memory");
  m->cfg = *cfg;
  m->part = *part;
  m->threads = threads > 0 ? threads : 1;
  m->tp_one = dtr_tp_make(NULL, m->threads);
  m->tp = part->tp ? part->tp : &m->tp_one;
  m->max_batch = max_batch;
  m->V = cfg->vocab_size / m->tp->size;
  m->v0 = m->tp->rank * m->V;
  for (int k = 0; k < part->nchunks; k++) {
    m->chunk_first[k] = m->nlayers;
    m->nlayers += part->layer_end[k] - part->layer_begin[k];
  }
  m->ntensors = dtr__gpt_part_num_tensors(part);
  m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
  if (!m->tensors) goto nomem;
  m->nparams = dtr__gpt_layout_part(cfg, part, m->tensors);
  m->wte = part->first || part->last ? 0 : -1;
  m->wpe = part->first ? 1 : -1;
  m->lnf = part->last ? m->ntensors - 2 : -1;
  m->params = xalloc(m->nparams * sizeof(float));
  m->grads = xalloc(m->nparams * sizeof(float));
  if (!m->params || !m->grads) goto nomem;
  if (init_params(m, seed) != DTR_OK || alloc_slots(m) != DTR_OK) goto nomem;
  dtr__kernels_set_threads(m->threads);
  *out = m;
  return DTR_OK;
nomem:
  rc = dtr__fail(err, errcap, DTR_ERR_NOMEM,
                 "gpt: out of memory for %zu parameters and activations of batch %d in %d slots", m->nparams,
                 max_batch, part->slots);
  dtr__gpt_destroy(m);
  return rc;
}

void dtr__gpt_destroy(dtr__gpt *m) {
  if (!m) return;
  free(m->tensors);
  free(m->params);
  free(m->grads);
  free(m->arena);
  free(m->id_arena);
  free(m->slots);
  free(m);
}

size_t dtr__gpt_num_params(const dtr__gpt *m) {
  return m->nparams;
}
float *dtr__gpt_params(dtr__gpt *m) {
  return m->params;
}
float *dtr__gpt_grads(dtr__gpt *m) {
  return m->grads;
}
int dtr__gpt_num_tensors(const dtr__gpt *m) {
  return m->ntensors;
}
const dtr__gpt_param *dtr__gpt_tensor(const dtr__gpt *m, int i) {
  return i >= 0 && i < m->ntensors ? &m->tensors[i] : NULL;
}
const dtr__gpt_part *dtr__gpt_part_of(const dtr__gpt *m) {
  return &m->part;
}
size_t dtr__gpt_activation_bytes(const dtr__gpt *m) {
  return m->arena_bytes;
}

void dtr__gpt_zero_grad(dtr__gpt *m) {
  memset(m->grads, 0, m->nparams * sizeof(float));
}

dtr_result dtr__gpt_generate(dtr__gpt *m, const int32_t *prompt, int len, int n, int32_t *out) {
  int T = m->cfg.block_size;
  if (!prompt || !out || len <= 0 || n < 0)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt generate: bad prompt (len %d) or count (%d)", len, n);
  if (!m->part.first || !m->part.last || m->part.nchunks != 1)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt generate: the model is split into stages");
  int32_t *ctx = malloc((size_t)(len + n) * sizeof(int32_t));
  if (!ctx) return dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt generate: out of memory");
  dtr_result rc = DTR_OK;
  memcpy(ctx, prompt, (size_t)len * sizeof(int32_t));
  for (int i = 0; i < n && rc == DTR_OK; i++) {
    int cur = len + i;
    int t = cur < T ? cur : T; /* the model sees at most block_size tokens: keep the latest */
    rc = dtr__gpt_forward_chunk(m, 0, 0, ctx + cur - t, NULL, NULL, 1, t, NULL, NULL);
    if (rc == DTR_OK) rc = dtr__gpt_argmax(m, 0, 0, t - 1, &ctx[cur]);
    out[i] = ctx[cur];
  }
  free(ctx);
  return rc;
}
