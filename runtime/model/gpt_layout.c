/* The reference GPT's parameter table and config checks (runtime/model/gpt_layout.h): one definition of
 * the flat-buffer layout for the CPU and GPU models and the checkpoint names derived from it. */
#include "runtime/model/gpt_layout.h"

#include <stdio.h>

#include "common/check.h"

static void add(dtr__gpt_param *t, size_t *off, const char *name, int64_t d0, int64_t d1) {
  snprintf(t->name, sizeof t->name, "%s", name);
  t->ndim = d1 > 0 ? 2 : 1;
  t->shape[0] = d0;
  t->shape[1] = d1 > 0 ? d1 : 0;
  t->count = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
  t->offset = *off;
  t->decay = t->ndim == 2;
  *off += t->count;
}

size_t dtr__gpt_layout(const dtr__gpt_config *c, dtr__gpt_param *out) {
  int64_t C = c->n_embd;
  size_t off = 0;
  int i = 0;
  char name[64];
  add(&out[i++], &off, "wte", c->vocab_size, C);
  add(&out[i++], &off, "wpe", c->block_size, C);
  static const char *const names[DTR_GPT_PER_LAYER] = {
      "ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b",
      "ln2.w", "ln2.b", "mlp.fc.w",   "mlp.fc.b",   "mlp.proj.w",  "mlp.proj.b"};
  const int64_t shapes[DTR_GPT_PER_LAYER][2] = {{C, 0}, {C, 0}, {3 * C, C}, {3 * C, 0}, {C, C},     {C, 0},
                                                {C, 0}, {C, 0}, {4 * C, C}, {4 * C, 0}, {C, 4 * C}, {C, 0}};
  for (int l = 0; l < c->n_layer; l++) {
    for (int k = 0; k < DTR_GPT_PER_LAYER; k++) {
      snprintf(name, sizeof name, "h.%d.%s", l, names[k]);
      add(&out[i++], &off, name, shapes[k][0], shapes[k][1]);
    }
  }
  add(&out[i++], &off, "lnf.w", C, 0);
  add(&out[i++], &off, "lnf.b", C, 0);
  return off;
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
