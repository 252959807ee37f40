/* The reference GPT's construction: config checks, the parameter table (names, shapes, offsets in the
 * flat buffers), seeded initialisation, the activation arena, accessors and greedy generation. The
 * forward and backward passes are in gpt_pass.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/model/gpt_layout.h"
#include "runtime/model/kernels.h"

#define PER_LAYER DTR_GPT_PER_LAYER

static void *xalloc(size_t nfloats) {
  size_t bytes = (nfloats ? nfloats : 1) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

/* splitmix64: a small, seedable generator; the weights depend only on the seed */
static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void fill_normal(float *p, size_t n, float std, uint64_t *s) {
  for (size_t i = 0; i < n; i += 2) {
    /* Box-Muller on two uniforms in (0,1] */
    double u1 = ((next_u64(s) >> 11) + 1.0) / 9007199254740992.0;
    double u2 = (next_u64(s) >> 11) / 9007199254740992.0;
    double r = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    p[i] = (float)(r * cos(th)) * std;
    if (i + 1 < n) p[i + 1] = (float)(r * sin(th)) * std;
  }
}

void dtr__gpt_views(const dtr__gpt *m, float *base, float **wte, float **wpe, dtr__gpt_layer *layers,
                    float **lnfw, float **lnfb) {
  const dtr__gpt_param *t = m->tensors;
  *wte = base + t[0].offset;
  *wpe = base + t[1].offset;
  for (int l = 0; l < m->cfg.n_layer; l++) {
    const dtr__gpt_param *p = t + 2 + l * PER_LAYER;
    float **dst[PER_LAYER] = {&layers[l].ln1w, &layers[l].ln1b,     &layers[l].qkvw,
                              &layers[l].qkvb, &layers[l].attprojw, &layers[l].attprojb,
                              &layers[l].ln2w, &layers[l].ln2b,     &layers[l].fcw,
                              &layers[l].fcb,  &layers[l].fcprojw,  &layers[l].fcprojb};
    for (int k = 0; k < PER_LAYER; k++) *dst[k] = base + p[k].offset;
  }
  *lnfw = base + t[m->ntensors - 2].offset;
  *lnfb = base + t[m->ntensors - 1].offset;
}

const char *dtr__gpt_last_error(const dtr__gpt *m) {
  return m ? m->err : "no model";
}

dtr_result dtr__gpt_create(const dtr__gpt_config *cfg, uint64_t seed, int threads, int max_batch,
                           dtr__gpt **out, char *err, size_t errcap) {
  dtr_result rc = DTR_OK;
  if (!out) return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr__gpt_create: out is NULL");
  *out = NULL;
  DTR_CHECK(dtr__gpt_check_config(cfg, max_batch, "gpt", err, errcap));
  dtr__gpt *m = calloc(1, sizeof *m);
  if (!m) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "gpt: out of memory");
  m->cfg = *cfg;
  m->threads = threads > 0 ? threads : 1;
  m->max_batch = max_batch;
  int L = cfg->n_layer;
  m->ntensors = dtr__gpt_config_num_tensors(cfg);
  m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
  if (!m->tensors) goto nomem;
  m->nparams = dtr__gpt_layout(cfg, m->tensors);
  m->params = xalloc(m->nparams);
  m->grads = xalloc(m->nparams);
  if (!m->params || !m->grads) goto nomem;

  /* initialisation (GPT-2 / nanoGPT): weights N(0, 0.02), residual projections scaled by 1/sqrt(2L) */
  uint64_t s = seed;
  for (int i = 0; i < m->ntensors; i++) {
    dtr__gpt_param *t = &m->tensors[i];
    float *p = m->params + t->offset;
    if (t->ndim == 2) {
      int resid = strstr(t->name, "attn.proj.w") || strstr(t->name, "mlp.proj.w");
      fill_normal(p, t->count, resid ? 0.02f / sqrtf(2.0f * L) : 0.02f, &s);
    } else if (strstr(t->name, "ln") && t->name[strlen(t->name) - 1] == 'w') {
      for (size_t k = 0; k < t->count; k++) p[k] = 1.0f;
    }
  }

  /* activations */
  size_t B = (size_t)max_batch, T = (size_t)cfg->block_size, C = (size_t)cfg->n_embd,
         V = (size_t)cfg->vocab_size;
  size_t NH = (size_t)cfg->n_head, BT = B * T;
  size_t sizes[] = {BT * C, /* encoded */
                    L * BT * C,
                    L * BT,
                    L * BT,             /* ln1 */
                    L * BT * 3 * C,     /* qkv */
                    L * BT * C,         /* atty */
                    L * B * NH * T * T, /* att */
                    L * BT * C,         /* residual2 */
                    L * BT * C,
                    L * BT,
                    L * BT, /* ln2 */
                    L * BT * 4 * C,
                    L * BT * 4 * C, /* fch, fch_gelu */
                    L * BT * C,     /* residual3 */
                    BT * C,
                    BT,
                    BT, /* lnf */
                    BT * V,
                    BT, /* probs, losses */
                    BT * C,
                    BT * C,
                    BT * 4 * C,
                    BT * 3 * C,
                    BT * C};
  float **ptrs[] = {&m->a.encoded,  &m->a.ln1,      &m->a.ln1_mean,  &m->a.ln1_rstd,  &m->a.qkv,
                    &m->a.atty,     &m->a.att,      &m->a.residual2, &m->a.ln2,       &m->a.ln2_mean,
                    &m->a.ln2_rstd, &m->a.fch,      &m->a.fch_gelu,  &m->a.residual3, &m->a.lnf,
                    &m->a.lnf_mean, &m->a.lnf_rstd, &m->a.probs,     &m->a.losses,    &m->a.dres,
                    &m->a.dln,      &m->a.dbig,     &m->a.dqkv,      &m->a.datty};
  _Static_assert(sizeof sizes / sizeof sizes[0] == sizeof ptrs / sizeof ptrs[0], "one size per activation");
  size_t total = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += (sizes[i] + 15) / 16 * 16;
  m->arena = xalloc(total);
  m->inputs = calloc(BT, sizeof(int32_t));
  m->targets = calloc(BT, sizeof(int32_t));
  if (!m->arena || !m->inputs || !m->targets) goto nomem;
  float *cur = m->arena;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    *ptrs[i] = cur;
    cur += (sizes[i] + 15) / 16 * 16;
  }
  dtr__kernels_set_threads(m->threads);
  *out = m;
  return DTR_OK;
nomem:
  rc = dtr__fail(err, errcap, DTR_ERR_NOMEM,
                 "gpt: out of memory for %zu parameters and activations of batch %d", m->nparams, max_batch);
  dtr__gpt_destroy(m);
  return rc;
}

void dtr__gpt_destroy(dtr__gpt *m) {
  if (!m) return;
  free(m->tensors);
  free(m->params);
  free(m->grads);
  free(m->arena);
  free(m->inputs);
  free(m->targets);
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

void dtr__gpt_zero_grad(dtr__gpt *m) {
  memset(m->grads, 0, m->nparams * sizeof(float));
}

dtr_result dtr__gpt_generate(dtr__gpt *m, const int32_t *prompt, int len, int n, int32_t *out) {
  int T = m->cfg.block_size, V = m->cfg.vocab_size;
  if (!prompt || !out || len <= 0 || n < 0)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt generate: bad prompt (len %d) or count (%d)", len, n);
  int32_t *ctx = malloc((size_t)(len + n) * sizeof(int32_t));
  float *logits = malloc((size_t)T * V * sizeof(float));
  dtr_result rc = DTR_OK;
  if (!ctx || !logits) {
    rc = dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt generate: out of memory");
    goto done;
  }
  memcpy(ctx, prompt, (size_t)len * sizeof(int32_t));
  for (int i = 0; i < n; i++) {
    int cur = len + i;
    int t = cur < T ? cur : T; /* the model sees at most block_size tokens: keep the latest */
    DTR_CHECK_GOTO(dtr__gpt_forward(m, ctx + cur - t, NULL, 1, t, NULL, logits), rc, done);
    const float *row = logits + (size_t)(t - 1) * V;
    int best = 0;
    for (int v = 1; v < V; v++)
      if (row[v] > row[best]) best = v;
    ctx[cur] = best;
    out[i] = best;
  }
done:
  free(ctx);
  free(logits);
  return rc;
}
