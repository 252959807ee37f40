/* The reference GPT's parameter table and config checks, shared by the CPU model (gpt.c) and the GPU
 * model (gpt_cuda.c) so that both lay out the flat buffers identically (gpt.h has the contract). */
#ifndef DTRAIN_RUNTIME_GPT_LAYOUT_H
#define DTRAIN_RUNTIME_GPT_LAYOUT_H

#include <stddef.h>

#include "runtime/model/gpt.h"

#define DTR_GPT_PER_LAYER 12 /* tensors per block */

/* The per-layer tensors' names after "h.<l>." in gpt.h's order: "ln1.w", "ln1.b", "attn.qkv.w", ... */
extern const char *const dtr__gpt_layer_names[DTR_GPT_PER_LAYER];

/* Tensors a config has: wte, wpe, DTR_GPT_PER_LAYER per layer, lnf.w, lnf.b. */
static inline int dtr__gpt_config_num_tensors(const dtr__gpt_config *c) {
  return 4 + DTR_GPT_PER_LAYER * c->n_layer;
}
/* Table index of layer l's tensor k (k in gpt.h's per-layer order). */
static inline int dtr__gpt_layer_tensor(int l, int k) {
  return 2 + l * DTR_GPT_PER_LAYER + k;
}
/* Fill out[0 .. dtr__gpt_config_num_tensors(c)) in gpt.h's order; returns the total parameter count. */
size_t dtr__gpt_layout(const dtr__gpt_config *c, dtr__gpt_param *out);
/* The same for a part: dtr__gpt_part_num_tensors(p) entries with this rank's shapes (the part must pass
 * dtr__gpt_check_part); returns its parameter count. */
int dtr__gpt_part_num_tensors(const dtr__gpt_part *p);
size_t dtr__gpt_layout_part(const dtr__gpt_config *c, const dtr__gpt_part *p, dtr__gpt_param *out);
/* The part fits the config: tp divides n_head, n_embd and vocab_size; 1..DTR__GPT_MAX_CHUNKS chunks of
 * at least one layer inside 0..n_layer; slots >= 1. err starts with `who`. */
dtr_result dtr__gpt_check_part(const dtr__gpt_config *c, const dtr__gpt_part *p, const char *who, char *err,
                               size_t errcap);
/* Sizes > 0, n_embd divisible by n_head, activations for max_batch that fit; err starts with `who`. */
dtr_result dtr__gpt_check_config(const dtr__gpt_config *c, int max_batch, const char *who, char *err,
                                 size_t errcap);

#endif
