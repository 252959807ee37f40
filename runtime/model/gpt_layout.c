/* The reference GPT's parameter table and config checks (runtime/model/gpt_layout.h): one definition of
 * the flat-buffer layout for the CPU and GPU models and the checkpoint names derived from it. */
#include "runtime/model/gpt_layout.h"

#include <stdio.h>
#include <string.h>

#include "common/check.h"

static void add(dtr__gpt_param *t, size_t *off, const char *name, int64_t d0, int64_t d1, int split, int tp) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->ndim = d1 > 0 ? 2 : 1;
  t->gshape[0] = d0;
  t->gshape[1] = d1 > 0 ? d1 : 0;
  t->shape[0] = split == DTR__GPT_ROWS || split == DTR__GPT_QKV ? d0 / tp : d0;
  t->shape[1] = split == DTR__GPT_COLS ? d1 / tp : t->gshape[1];
  t->count = (size_t)t->shape[0] * (size_t)(d1 > 0 ? t->shape[1] : 1);
  t->offset = *off;
  t->decay = t->ndim == 2;
  t->split = split;
  *off += t->count;
}

const char *const dtr__gpt_layer_names[DTR_GPT_PER_LAYER] = {
    "ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b",
    "ln2.w", "ln2.b", "mlp.fc.w",   "mlp.fc.b",   "mlp.proj.w",  "mlp.proj.b"};

int dtr__gpt_part_num_tensors(const dtr__gpt_part *p) {
  int n = (p->first || p->last) + p->first + 2 * p->last;
  for (int k = 0; k < p->nchunks; k++) n += DTR_GPT_PER_LAYER * (p->layer_end[k] - p->layer_begin[k]);
  return n;
}

size_t dtr__gpt_layout_part(const dtr__gpt_config *c, const dtr__gpt_part *p, dtr__gpt_param *out) {
  int64_t C = c->n_embd;
  int tp = p->tp ? p->tp->size : 1;
  size_t off = 0;
  int i = 0;
  char name[64];
  if (p->first || p->last) {
    add(&out[i], &off, "wte", c->vocab_size, C, DTR__GPT_ROWS, tp);
    out[i++].tied = p->last && !p->first;
  }
  if (p->first) add(&out[i++], &off, "wpe", c->block_size, C, DTR__GPT_WHOLE, tp);
  const int64_t shapes[DTR_GPT_PER_LAYER][2] = {{C, 0}, {C, 0}, {3 * C, C}, {3 * C, 0}, {C, C},     {C, 0},
                                                {C, 0}, {C, 0}, {4 * C, C}, {4 * C, 0}, {C, 4 * C}, {C, 0}};
  static const int splits[DTR_GPT_PER_LAYER] = {
      DTR__GPT_WHOLE, DTR__GPT_WHOLE, DTR__GPT_QKV,  DTR__GPT_QKV,  DTR__GPT_COLS, DTR__GPT_WHOLE,
      DTR__GPT_WHOLE, DTR__GPT_WHOLE, DTR__GPT_ROWS, DTR__GPT_ROWS, DTR__GPT_COLS, DTR__GPT_WHOLE};
  for (int k = 0; k < p->nchunks; k++)
    for (int l = p->layer_begin[k]; l < p->layer_end[k]; l++)
      for (int j = 0; j < DTR_GPT_PER_LAYER; j++) {
        snprintf(name, sizeof name, "h.%d.%s", l, dtr__gpt_layer_names[j]);
        add(&out[i++], &off, name, shapes[j][0], shapes[j][1], splits[j], tp);
      }
  if (p->last) {
    add(&out[i++], &off, "lnf.w", C, 0, DTR__GPT_WHOLE, tp);
    add(&out[i++], &off, "lnf.b", C, 0, DTR__GPT_WHOLE, tp);
  }
  return off;
}

size_t dtr__gpt_layout(const dtr__gpt_config *c, dtr__gpt_param *out) {
  dtr__gpt_part whole = dtr__gpt_whole(c);
  return dtr__gpt_layout_part(c, &whole, out);
}

dtr__gpt_part dtr__gpt_whole(const dtr__gpt_config *cfg) {
  dtr__gpt_part p;
  memset(&p, 0, sizeof p);
  p.nchunks = 1;
  p.layer_end[0] = cfg->n_layer;
  p.first = p.last = 1;
  p.slots = 1;
  return p;
}

int dtr__gpt_param_pieces(const dtr__gpt_param *p, int tp, int tp_rank, dtr__gpt_piece out[3]) {
  int64_t rows = p->shape[0];
  switch (p->split) {
    case DTR__GPT_ROWS:
      out[0] = (dtr__gpt_piece){0, rows, tp_rank * rows, 0};
      return 1;
    case DTR__GPT_COLS:
      out[0] = (dtr__gpt_piece){0, rows, 0, tp_rank * p->shape[1]};
      return 1;
    case DTR__GPT_QKV: {
      int64_t n = rows / 3, block = p->gshape[0] / 3;
      for (int j = 0; j < 3; j++) out[j] = (dtr__gpt_piece){j * n, n, j * block + tp_rank * n, 0};
      return 3;
    }
    default:
      (void)tp;
      out[0] = (dtr__gpt_piece){0, rows, 0, 0};
      return 1;
  }
}

void dtr__gpt_copy_slice(const dtr__gpt_param *p, int tp, int tp_rank, const float *whole, int64_t have_rows,
                         float *dst) {
  dtr__gpt_piece pc[3];
  int np = dtr__gpt_param_pieces(p, tp, tp_rank, pc);
  int64_t cols = p->ndim == 2 ? p->shape[1] : 1, gcols = p->ndim == 2 ? p->gshape[1] : 1;
  for (int k = 0; k < np; k++)
    for (int64_t r = 0; r < pc[k].rows && pc[k].grow + r < have_rows; r++)
      memcpy(dst + (pc[k].lrow + r) * cols, whole + (pc[k].grow + r) * gcols + pc[k].gcol,
             (size_t)cols * sizeof(float));
}

dtr_result dtr__gpt_check_part(const dtr__gpt_config *c, const dtr__gpt_part *p, const char *who, char *err,
                               size_t errcap) {
  int tp = p->tp ? p->tp->size : 1;
  if (tp < 1) return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: tp %d", who, tp);
  const struct {
    const char *name;
    int v;
  } f[] = {{"n_head", c->n_head}, {"n_embd", c->n_embd}, {"vocab_size", c->vocab_size}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (f[i].v % tp != 0)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %s %d is not divisible by tp %d", who, f[i].name,
                       f[i].v, tp);
  if (p->nchunks < 1 || p->nchunks > DTR__GPT_MAX_CHUNKS)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %d model chunks (1..%d)", who, p->nchunks,
                     DTR__GPT_MAX_CHUNKS);
  for (int k = 0; k < p->nchunks; k++)
    if (p->layer_begin[k] < 0 || p->layer_end[k] <= p->layer_begin[k] || p->layer_end[k] > c->n_layer)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: chunk %d holds layers [%d, %d) of %d", who, k,
                       p->layer_begin[k], p->layer_end[k], c->n_layer);
  if (p->slots < 1) return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %d activation slots", who, p->slots);
  return DTR_OK;
}

dtr_result dtr__gpt_check_config(const dtr__gpt_config *c, int max_batch, const char *who, char *err,
                                 size_t errcap) {
  if (!c) return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s config: NULL", who);
  const struct {
    const char *name;
    int v;
  } f[] = {{"vocab_size", c->vocab_size}, {"block_size", c->block_size}, {"n_layer", c->n_layer},
           {"n_head", c->n_head},         {"n_embd", c->n_embd},         {"max_batch", max_batch}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (f[i].v <= 0)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s config: %s must be > 0 (got %d)", who, f[i].name,
                       f[i].v);
  if (c->n_embd % c->n_head != 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s config: n_embd (%d) must be a multiple of n_head (%d)",
                     who, c->n_embd, c->n_head);
  /* every index into the activations must fit in size_t comfortably and a row index in int */
  double acts = (double)max_batch * c->block_size *
                ((double)c->n_layer * (16.0 * c->n_embd + c->n_head * (double)c->block_size) + c->vocab_size +
                 16.0 * c->n_embd);
  if (acts > 1e11 || (double)max_batch * c->block_size * c->vocab_size > 2e9)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "%s config: activations for max_batch %d are too large (%.3g)", who, max_batch, acts);
  return DTR_OK;
}
