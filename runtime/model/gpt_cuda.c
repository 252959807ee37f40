/* The reference GPT on a CUDA device (runtime/model/gpt_cuda.h): construction, the parameter table (the
 * layout of gpt.c), forward, backward and AdamW as sequences of the ops of kernels_cuda.h, in the order
 * of gpt_pass.c so both models compute the same function. In a build without CUDA the kernel entry
 * points are stubs (cuda_stub.c) and create refuses with DTR_ERR_UNSUPPORTED before touching them. */
#include "runtime/model/gpt_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/model/gpt_layout.h"

#ifdef DTRAIN_HAVE_CUDA
#define HAVE_CUDA 1
#else
#define HAVE_CUDA 0
#endif

#define PER_LAYER DTR_GPT_PER_LAYER
#define MAX_LAYERS 64

/* Index of each per-layer tensor in the table, after wte and wpe (gpt.h's order). */
enum { LN1W, LN1B, QKVW, QKVB, APROJW, APROJB, LN2W, LN2B, FCW, FCB, FPROJW, FPROJB };

/* Activations in the model's dtype (void *) and fp32 row statistics, sized for max_batch; per-layer
 * arrays are [L, ...] as in gpt_internal.h. */
typedef struct acts {
  void *encoded, *ln1, *qkv, *atty, *att, *res2, *ln2, *fch, *fchg, *res3, *lnf, *probs;
  float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lnf_mean, *lnf_rstd, *losses;
  void *dres, *dln, *dbig, *dqkv, *datty; /* backward scratch */
} acts;

struct dtr__gpt_cuda {
  dtr__gpt_config cfg;
  dtr_dtype dt;
  size_t es; /* bytes per activation element */
  int max_batch;
  size_t nparams;
  int ntensors;
  dtr__gpt_param *tensors;
  dtr_cuda_ctx *ctx;
  float *params, *grads, *adam_m, *adam_v; /* device, fp32, nparams each */
  void *wlp;      /* bf16 copy of params (bf16 precision), else NULL: matmuls read params */
  uint8_t *decay; /* device decay mask, nparams */
  float *sumsq;   /* device, one float */
  void *arena;
  acts a;
  int32_t *inputs, *targets; /* device copies of the last forward's */
  float *host_losses;        /* [max_batch*block_size] */
  uint16_t *host_lp;         /* bf16 logits staging, allocated when first asked for */
  int B, T, have_targets, nscored;
  char err[512];
};

/* ---------------------------------------------------------------- errors */

/* A failed kernel-context call: its detail, with the call's name, becomes the model's last error. */
static dtr_result op_fail(dtr__gpt_cuda *m, dtr_result rc, const char *call) {
  int namelen = (int)strcspn(call, "(");
  return dtr__fail(m->err, sizeof m->err, rc, "gpt_cuda: %.*s: %s", namelen, call,
                   dtr__cuda_ctx_error(m->ctx));
}
#define OP(call)                                            \
  do {                                                      \
    dtr_result op_rc_ = (call);                             \
    if (op_rc_ != DTR_OK) return op_fail(m, op_rc_, #call); \
  } while (0)

/* ---------------------------------------------------------------- table */

/* Tensor i as the matmuls and norms read it (bf16 copy or fp32 master), and its gradient. */
static const void *W(const dtr__gpt_cuda *m, int i) {
  size_t off = m->tensors[i].offset;
  return m->wlp ? (const void *)((const uint16_t *)m->wlp + off) : (const void *)(m->params + off);
}
static float *G(const dtr__gpt_cuda *m, int i) {
  return m->grads + m->tensors[i].offset;
}
static int LT(int l, int k) { /* table index of layer l's tensor k */
  return dtr__gpt_layer_tensor(l, k);
}
/* Element i of an activation buffer of the model's dtype. */
static void *E(const dtr__gpt_cuda *m, void *base, size_t i) {
  return (char *)base + i * m->es;
}

/* ---------------------------------------------------------------- create / destroy */

static dtr_result dev_alloc(dtr__gpt_cuda *m, size_t bytes, void **out, const char *what) {
  dtr_result rc = dtr__cuda_alloc(m->ctx, bytes, out);
  if (rc != DTR_OK)
    return dtr__fail(m->err, sizeof m->err, rc, "gpt_cuda: allocating %s (%zu bytes): %s", what, bytes,
                     dtr__cuda_ctx_error(m->ctx));
  return DTR_OK;
}

/* Carve the activations out of one device allocation, each slice 256-byte aligned. */
static dtr_result alloc_acts(dtr__gpt_cuda *m) {
  const dtr__gpt_config *c = &m->cfg;
  size_t L = (size_t)c->n_layer, BT = (size_t)m->max_batch * c->block_size, C = (size_t)c->n_embd;
  size_t V = (size_t)c->vocab_size, NH = (size_t)c->n_head, T = (size_t)c->block_size, es = m->es;
  acts *a = &m->a;
  struct {
    void **p;
    size_t bytes;
  } s[] = {
      {&a->encoded, BT * C * es},
      {&a->ln1, L * BT * C * es},
      {&a->qkv, L * BT * 3 * C * es},
      {&a->atty, L * BT * C * es},
      {&a->att, L * (size_t)m->max_batch * NH * T * T * es},
      {&a->res2, L * BT * C * es},
      {&a->ln2, L * BT * C * es},
      {&a->fch, L * BT * 4 * C * es},
      {&a->fchg, L * BT * 4 * C * es},
      {&a->res3, L * BT * C * es},
      {&a->lnf, BT * C * es},
      {&a->probs, BT * V * es},
      {(void **)&a->ln1_mean, L * BT * 4},
      {(void **)&a->ln1_rstd, L * BT * 4},
      {(void **)&a->ln2_mean, L * BT * 4},
      {(void **)&a->ln2_rstd, L * BT * 4},
      {(void **)&a->lnf_mean, BT * 4},
      {(void **)&a->lnf_rstd, BT * 4},
      {(void **)&a->losses, BT * 4},
      {&a->dres, BT * C * es},
      {&a->dln, BT * C * es},
      {&a->dbig, BT * 4 * C * es},
      {&a->dqkv, BT * 3 * C * es},
      {&a->datty, BT * C * es},
      {(void **)&m->inputs, BT * 4},
      {(void **)&m->targets, BT * 4},
  };
  size_t total = 0;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) total += (s[i].bytes + 255) / 256 * 256;
  DTR_CHECK(dev_alloc(m, total, &m->arena, "activations"));
  char *cur = m->arena;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    *s[i].p = cur;
    cur += (s[i].bytes + 255) / 256 * 256;
  }
  return DTR_OK;
}

dtr_result dtr__gpt_cuda_create(const dtr__gpt_config *cfg, const float *params, size_t nparams, int device,
                                dtr_dtype precision, int max_batch, dtr__gpt_cuda **out, char *err,
                                size_t errcap) {
  if (!out) return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr__gpt_cuda_create: out is NULL");
  *out = NULL;
  DTR_CHECK(dtr__gpt_check_config(cfg, max_batch, "gpt_cuda", err, errcap));
  if (cfg->n_layer > MAX_LAYERS)
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED, "gpt_cuda config: n_layer %d > %d", cfg->n_layer,
                     MAX_LAYERS);
  if (precision != DTR_F32 && precision != DTR_BF16)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "gpt_cuda: precision %d is neither f32 nor bf16",
                     (int)precision);
  if (!params) return dtr__fail(err, errcap, DTR_ERR_INVALID, "gpt_cuda: initial params are NULL");
  /* Refused before any stub is touched; the code below still compiles without CUDA. */
  if (!HAVE_CUDA)
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                     "gpt_cuda: device %d requested but this build has no CUDA (use the CPU model)", device);
  dtr_result rc = DTR_OK;
  dtr__gpt_cuda *m = calloc(1, sizeof *m);
  if (!m) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "gpt_cuda: out of memory");
  m->cfg = *cfg;
  m->dt = precision;
  m->es = dtr__cuda_dtype_size(precision);
  m->max_batch = max_batch;
  m->ntensors = dtr__gpt_config_num_tensors(cfg);
  m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
  size_t BT = (size_t)max_batch * cfg->block_size;
  m->host_losses = calloc(BT, sizeof(float));
  if (!m->tensors || !m->host_losses) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "gpt_cuda: out of memory");
    goto fail;
  }
  m->nparams = dtr__gpt_layout(cfg, m->tensors);
  if (nparams != m->nparams) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                   "gpt_cuda: %zu initial params given but this config has %zu (vocab %d, block %d, %d "
                   "layers, embd %d)",
                   nparams, m->nparams, cfg->vocab_size, cfg->block_size, cfg->n_layer, cfg->n_embd);
    goto fail;
  }
  char cerr[384] = "";
  rc = dtr__cuda_ctx_create(device, &m->ctx, cerr, sizeof cerr);
  if (rc != DTR_OK) {
    rc = dtr__fail(err, errcap, rc, "gpt_cuda: %s", cerr);
    goto fail;
  }
  size_t pb = m->nparams * sizeof(float);
  DTR_CHECK_GOTO(dev_alloc(m, pb, (void **)&m->params, "params"), rc, fail_m);
  DTR_CHECK_GOTO(dev_alloc(m, pb, (void **)&m->grads, "grads"), rc, fail_m);
  DTR_CHECK_GOTO(dev_alloc(m, pb, (void **)&m->adam_m, "AdamW m"), rc, fail_m);
  DTR_CHECK_GOTO(dev_alloc(m, pb, (void **)&m->adam_v, "AdamW v"), rc, fail_m);
  DTR_CHECK_GOTO(dev_alloc(m, m->nparams, (void **)&m->decay, "decay mask"), rc, fail_m);
  DTR_CHECK_GOTO(dev_alloc(m, sizeof(float), (void **)&m->sumsq, "sumsq"), rc, fail_m);
  if (precision == DTR_BF16) DTR_CHECK_GOTO(dev_alloc(m, m->nparams * 2, &m->wlp, "bf16 params"), rc, fail_m);
  DTR_CHECK_GOTO(alloc_acts(m), rc, fail_m);

  uint8_t *mask = malloc(m->nparams);
  if (!mask) {
    rc = dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt_cuda: out of memory for the decay mask");
    goto fail_m;
  }
  for (int i = 0; i < m->ntensors; i++)
    memset(mask + m->tensors[i].offset, m->tensors[i].decay ? 1 : 0, m->tensors[i].count);
  rc = dtr__cuda_upload(m->ctx, m->decay, mask, m->nparams);
  free(mask);
  if (rc != DTR_OK) {
    rc = op_fail(m, rc, "upload(decay mask)");
    goto fail_m;
  }
  if ((rc = dtr__cuda_zero(m->ctx, m->grads, pb)) != DTR_OK || (rc = dtr__cuda_zero(m->ctx, m->adam_m, pb)) ||
      (rc = dtr__cuda_zero(m->ctx, m->adam_v, pb))) {
    rc = op_fail(m, rc, "zero(grads, moments)");
    goto fail_m;
  }
  DTR_CHECK_GOTO(dtr__gpt_cuda_set_params(m, params), rc, fail_m);
  *out = m;
  return DTR_OK;
fail_m:
  dtr__fail(err, errcap, rc, "%s", m->err);
fail:
  dtr__gpt_cuda_destroy(m);
  return rc;
}

void dtr__gpt_cuda_destroy(dtr__gpt_cuda *m) {
  if (!m) return;
  if (m->ctx) {
    (void)dtr__cuda_sync(m->ctx);
    void *bufs[] = {m->params, m->grads, m->adam_m, m->adam_v, m->wlp, m->decay, m->sumsq, m->arena};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dtr__cuda_free(m->ctx, bufs[i]);
    dtr__cuda_ctx_destroy(m->ctx);
  }
  free(m->tensors);
  free(m->host_losses);
  free(m->host_lp);
  free(m);
}

/* ---------------------------------------------------------------- accessors and copies */

size_t dtr__gpt_cuda_num_params(const dtr__gpt_cuda *m) {
  return m->nparams;
}
int dtr__gpt_cuda_num_tensors(const dtr__gpt_cuda *m) {
  return m->ntensors;
}
const dtr__gpt_param *dtr__gpt_cuda_tensor(const dtr__gpt_cuda *m, int i) {
  return i >= 0 && i < m->ntensors ? &m->tensors[i] : NULL;
}
dtr_dtype dtr__gpt_cuda_precision(const dtr__gpt_cuda *m) {
  return m->dt;
}
const char *dtr__gpt_cuda_last_error(const dtr__gpt_cuda *m) {
  return m ? m->err : "no model";
}
float *dtr__gpt_cuda_params_dev(dtr__gpt_cuda *m) {
  return m->params;
}
float *dtr__gpt_cuda_grads_dev(dtr__gpt_cuda *m) {
  return m->grads;
}
float *dtr__gpt_cuda_adam_m_dev(dtr__gpt_cuda *m) {
  return m->adam_m;
}
float *dtr__gpt_cuda_adam_v_dev(dtr__gpt_cuda *m) {
  return m->adam_v;
}
dtr_cuda_ctx *dtr__gpt_cuda_ctx(dtr__gpt_cuda *m) {
  return m->ctx;
}
void *dtr__gpt_cuda_stream(dtr__gpt_cuda *m) {
  return dtr__cuda_ctx_stream(m->ctx);
}
dtr_result dtr__gpt_cuda_sync(dtr__gpt_cuda *m) {
  OP(dtr__cuda_sync(m->ctx));
  return DTR_OK;
}

dtr_result dtr__gpt_cuda_get_params(dtr__gpt_cuda *m, float *host) {
  OP(dtr__cuda_download(m->ctx, host, m->params, m->nparams * sizeof(float)));
  return DTR_OK;
}
dtr_result dtr__gpt_cuda_get_grads(dtr__gpt_cuda *m, float *host) {
  OP(dtr__cuda_download(m->ctx, host, m->grads, m->nparams * sizeof(float)));
  return DTR_OK;
}
dtr_result dtr__gpt_cuda_params_changed(dtr__gpt_cuda *m) {
  if (m->wlp) OP(dtr__cuda_convert(m->ctx, DTR_BF16, m->wlp, DTR_F32, m->params, m->nparams));
  return DTR_OK;
}
dtr_result dtr__gpt_cuda_set_params(dtr__gpt_cuda *m, const float *host) {
  OP(dtr__cuda_upload(m->ctx, m->params, host, m->nparams * sizeof(float)));
  return dtr__gpt_cuda_params_changed(m);
}
dtr_result dtr__gpt_cuda_zero_grad(dtr__gpt_cuda *m) {
  OP(dtr__cuda_zero(m->ctx, m->grads, m->nparams * sizeof(float)));
  return DTR_OK;
}

dtr_result dtr__gpt_cuda_grad_sumsq(dtr__gpt_cuda *m, double *out) {
  float s = 0.0f;
  OP(dtr__sumsq_cuda(m->ctx, m->sumsq, m->grads, m->nparams));
  OP(dtr__cuda_download(m->ctx, &s, m->sumsq, sizeof s));
  *out = s;
  return DTR_OK;
}

dtr_result dtr__gpt_cuda_adamw(dtr__gpt_cuda *m, const dtr_cuda_adamw_hp *hp) {
  if (!hp) return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt_cuda adamw: hp is NULL");
  OP(dtr__adamw_cuda(m->ctx, m->params, m->wlp, m->grads, m->adam_m, m->adam_v, m->decay, m->nparams, hp));
  return DTR_OK;
}

/* bf16 bits to float (the logits copy of a bf16 model). */
static float bf16_to_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* ---------------------------------------------------------------- forward */

dtr_result dtr__gpt_cuda_forward(dtr__gpt_cuda *m, const int32_t *inputs, const int32_t *targets, int B,
                                 int T, float *loss, float *logits) {
  const dtr__gpt_config *c = &m->cfg;
  int V = c->vocab_size, C = c->n_embd, NH = c->n_head, L = c->n_layer;
  dtr_dtype dt = m->dt;
  if (!inputs) return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID, "gpt_cuda forward: inputs is NULL");
  if (B <= 0 || B > m->max_batch)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt_cuda forward: batch %d outside 1..%d (max_batch)", B, m->max_batch);
  if (T <= 0 || T > c->block_size)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt_cuda forward: T %d outside 1..%d (block_size)", T, c->block_size);
  int N = B * T, nscored = 0;
  for (int i = 0; i < N; i++) {
    if (inputs[i] < 0 || inputs[i] >= V)
      return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                       "gpt_cuda forward: input token %d at [%d,%d] outside 0..%d", inputs[i], i / T, i % T,
                       V - 1);
    if (targets) {
      if (targets[i] < -1 || targets[i] >= V)
        return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                         "gpt_cuda forward: target %d at [%d,%d] outside -1..%d", targets[i], i / T, i % T,
                         V - 1);
      nscored += targets[i] >= 0;
    }
  }
  m->have_targets = 0; /* until this forward completes */
  OP(dtr__cuda_upload(m->ctx, m->inputs, inputs, (size_t)N * sizeof(int32_t)));
  if (targets) OP(dtr__cuda_upload(m->ctx, m->targets, targets, (size_t)N * sizeof(int32_t)));

  acts *a = &m->a;
  size_t NC = (size_t)N * C, att_l = (size_t)B * NH * T * T;
  OP(dtr__embedding_fwd_cuda(m->ctx, dt, a->encoded, m->inputs, W(m, 0), W(m, 1), B, T, C, V));
  for (int l = 0; l < L; l++) {
    const void *x = l == 0 ? a->encoded : E(m, a->res3, (size_t)(l - 1) * NC);
    void *ln1 = E(m, a->ln1, l * NC), *qkv = E(m, a->qkv, l * 3 * NC), *atty = E(m, a->atty, l * NC);
    void *att = E(m, a->att, l * att_l), *res2 = E(m, a->res2, l * NC), *ln2 = E(m, a->ln2, l * NC);
    void *fch = E(m, a->fch, l * 4 * NC), *fchg = E(m, a->fchg, l * 4 * NC), *res3 = E(m, a->res3, l * NC);
    size_t so = (size_t)l * N; /* row statistics of layer l */
    OP(dtr__layernorm_fwd_cuda(m->ctx, dt, ln1, a->ln1_mean + so, a->ln1_rstd + so, x, W(m, LT(l, LN1W)),
                               W(m, LT(l, LN1B)), N, C));
    OP(dtr__matmul_fwd_cuda(m->ctx, dt, qkv, ln1, W(m, LT(l, QKVW)), W(m, LT(l, QKVB)), N, C, 3 * C));
    OP(dtr__attention_fwd_cuda(m->ctx, dt, atty, att, qkv, B, T, C, NH));
    /* the attention projection goes into res2, which then takes the residual */
    OP(dtr__matmul_fwd_cuda(m->ctx, dt, res2, atty, W(m, LT(l, APROJW)), W(m, LT(l, APROJB)), N, C, C));
    OP(dtr__residual_fwd_cuda(m->ctx, dt, res2, res2, x, NC));
    OP(dtr__layernorm_fwd_cuda(m->ctx, dt, ln2, a->ln2_mean + so, a->ln2_rstd + so, res2, W(m, LT(l, LN2W)),
                               W(m, LT(l, LN2B)), N, C));
    OP(dtr__matmul_fwd_cuda(m->ctx, dt, fch, ln2, W(m, LT(l, FCW)), W(m, LT(l, FCB)), N, C, 4 * C));
    OP(dtr__gelu_fwd_cuda(m->ctx, dt, fchg, fch, 4 * NC));
    OP(dtr__matmul_fwd_cuda(m->ctx, dt, res3, fchg, W(m, LT(l, FPROJW)), W(m, LT(l, FPROJB)), N, 4 * C, C));
    OP(dtr__residual_fwd_cuda(m->ctx, dt, res3, res3, res2, NC));
  }
  int nt = m->ntensors;
  OP(dtr__layernorm_fwd_cuda(m->ctx, dt, a->lnf, a->lnf_mean, a->lnf_rstd,
                             E(m, a->res3, (size_t)(L - 1) * NC), W(m, nt - 2), W(m, nt - 1), N, C));
  OP(dtr__matmul_fwd_cuda(m->ctx, dt, a->probs, a->lnf, W(m, 0), NULL, N, C, V)); /* tied head */
  if (logits) {
    size_t n = (size_t)N * V;
    if (dt == DTR_F32) {
      OP(dtr__cuda_download(m->ctx, logits, a->probs, n * sizeof(float)));
    } else {
      if (!m->host_lp) m->host_lp = malloc((size_t)m->max_batch * c->block_size * V * sizeof(uint16_t));
      if (!m->host_lp)
        return dtr__fail(m->err, sizeof m->err, DTR_ERR_NOMEM, "gpt_cuda forward: out of memory for logits");
      OP(dtr__cuda_download(m->ctx, m->host_lp, a->probs, n * sizeof(uint16_t)));
      for (size_t i = 0; i < n; i++) logits[i] = bf16_to_float(m->host_lp[i]);
    }
  }
  m->B = B;
  m->T = T;
  if (!targets) {
    if (loss) *loss = 0.0f;
    return DTR_OK;
  }
  OP(dtr__softmax_xent_fwd_cuda(m->ctx, dt, a->probs, a->losses, a->probs, m->targets, N, V));
  if (loss) {
    OP(dtr__cuda_download(m->ctx, m->host_losses, a->losses, (size_t)N * sizeof(float)));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->host_losses[i];
    *loss = nscored ? (float)(sum / nscored) : 0.0f;
  }
  m->nscored = nscored;
  m->have_targets = 1;
  return DTR_OK;
}

/* ---------------------------------------------------------------- backward */

static dtr_result report(dtr__gpt_cuda *m, dtr__gpt_grad_ready_fn ready, void *arg, size_t off,
                         size_t count) {
  if (!ready) return DTR_OK;
  dtr_result rc = ready(arg, off, count);
  if (rc != DTR_OK)
    return dtr__fail(m->err, sizeof m->err, rc,
                     "gpt_cuda backward: ready callback failed for grads [%zu, %zu): %s", off, off + count,
                     dtr_strerror(rc));
  return DTR_OK;
}

dtr_result dtr__gpt_cuda_backward(dtr__gpt_cuda *m, float grad_scale, dtr__gpt_grad_ready_fn ready,
                                  void *ready_arg) {
  if (!m->have_targets)
    return dtr__fail(m->err, sizeof m->err, DTR_ERR_INVALID,
                     "gpt_cuda backward: the last forward had no targets");
  const dtr__gpt_config *c = &m->cfg;
  int B = m->B, T = m->T, V = c->vocab_size, C = c->n_embd, NH = c->n_head, L = c->n_layer;
  int N = B * T, nt = m->ntensors;
  size_t NC = (size_t)N * C, es = m->es, att_l = (size_t)B * NH * T * T;
  dtr_dtype dt = m->dt;
  dtr_cuda_ctx *x_ = m->ctx;
  acts *a = &m->a;
  const dtr__gpt_param *tab = m->tensors;
  m->have_targets = 0; /* the probabilities become dlogits: a second backward would be wrong */

  /* loss = mean over scored positions, times grad_scale */
  float dloss = m->nscored ? grad_scale / (float)m->nscored : 0.0f;
  void *dlogits = a->probs;
  OP(dtr__softmax_xent_bwd_cuda(x_, dt, dlogits, a->probs, m->targets, dloss, N, V));
  OP(dtr__cuda_zero(x_, a->dln, NC * es));
  OP(dtr__matmul_bwd_cuda(x_, dt, a->dln, G(m, 0), NULL, dlogits, a->lnf, W(m, 0), N, C, V));
  OP(dtr__cuda_zero(x_, a->dres, NC * es));
  OP(dtr__layernorm_bwd_cuda(x_, dt, a->dres, G(m, nt - 2), G(m, nt - 1), a->dln,
                             E(m, a->res3, (size_t)(L - 1) * NC), W(m, nt - 2), a->lnf_mean, a->lnf_rstd, N,
                             C));
  DTR_CHECK(report(m, ready, ready_arg, tab[nt - 2].offset, m->nparams - tab[nt - 2].offset));

  /* dres holds d(loss)/d(residual stream) above the layer being processed */
  for (int l = L - 1; l >= 0; l--) {
    const void *x = l == 0 ? a->encoded : E(m, a->res3, (size_t)(l - 1) * NC);
    const void *ln1 = E(m, a->ln1, l * NC), *qkv = E(m, a->qkv, l * 3 * NC), *atty = E(m, a->atty, l * NC);
    const void *att = E(m, a->att, l * att_l), *res2 = E(m, a->res2, l * NC), *ln2 = E(m, a->ln2, l * NC);
    const void *fch = E(m, a->fch, l * 4 * NC), *fchg = E(m, a->fchg, l * 4 * NC);
    size_t so = (size_t)l * N;
    /* MLP: res3 = res2 + proj(gelu(fc(ln2(res2)))) */
    OP(dtr__cuda_zero(x_, a->dbig, 4 * NC * es));
    OP(dtr__matmul_bwd_cuda(x_, dt, a->dbig, G(m, LT(l, FPROJW)), G(m, LT(l, FPROJB)), a->dres, fchg,
                            W(m, LT(l, FPROJW)), N, 4 * C, C));
    OP(dtr__gelu_bwd_cuda(x_, dt, a->dbig, fch, a->dbig, 4 * NC));
    OP(dtr__cuda_zero(x_, a->dln, NC * es));
    OP(dtr__matmul_bwd_cuda(x_, dt, a->dln, G(m, LT(l, FCW)), G(m, LT(l, FCB)), a->dbig, ln2,
                            W(m, LT(l, FCW)), N, C, 4 * C));
    OP(dtr__layernorm_bwd_cuda(x_, dt, a->dres, G(m, LT(l, LN2W)), G(m, LT(l, LN2B)), a->dln, res2,
                               W(m, LT(l, LN2W)), a->ln2_mean + so, a->ln2_rstd + so, N, C));
    /* attention: res2 = x + proj(attn(qkv(ln1(x)))) */
    OP(dtr__cuda_zero(x_, a->datty, NC * es));
    OP(dtr__matmul_bwd_cuda(x_, dt, a->datty, G(m, LT(l, APROJW)), G(m, LT(l, APROJB)), a->dres, atty,
                            W(m, LT(l, APROJW)), N, C, C));
    OP(dtr__attention_bwd_cuda(x_, dt, a->dqkv, a->datty, att, qkv, B, T, C, NH));
    OP(dtr__cuda_zero(x_, a->dln, NC * es));
    OP(dtr__matmul_bwd_cuda(x_, dt, a->dln, G(m, LT(l, QKVW)), G(m, LT(l, QKVB)), a->dqkv, ln1,
                            W(m, LT(l, QKVW)), N, C, 3 * C));
    OP(dtr__layernorm_bwd_cuda(x_, dt, a->dres, G(m, LT(l, LN1W)), G(m, LT(l, LN1B)), a->dln, x,
                               W(m, LT(l, LN1W)), a->ln1_mean + so, a->ln1_rstd + so, N, C));
    const dtr__gpt_param *first = &tab[LT(l, 0)], *last = &tab[LT(l, PER_LAYER - 1)];
    DTR_CHECK(report(m, ready, ready_arg, first->offset, last->offset + last->count - first->offset));
  }
  OP(dtr__embedding_bwd_cuda(x_, dt, G(m, 0), G(m, 1), a->dres, m->inputs, B, T, C, V));
  DTR_CHECK(report(m, ready, ready_arg, 0, tab[1].offset + tab[1].count));
  return DTR_OK;
}
