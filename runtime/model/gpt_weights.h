/* Pretrained weights for the reference GPT (internal to runtime/): a safetensors file in one of two
 * naming layouts, converted on read into gpt.h's tensors and on export into the other way round.
 *
 *   dtrain    `dtrain ckpt export`'s names: model/wte, model/h.0.attn.qkv.w [3C, C], ... (also without
 *             "model/"); the optimizer's adamw.m/... and adamw.v/... and __blob__/... are ignored.
 *   hf-gpt2   Hugging Face GPT-2: wte.weight, wpe.weight, h.N.ln_1.weight, h.N.attn.c_attn.weight
 *             [C, 3C] (Conv1D: [in, out], transposed on read), h.N.attn.c_proj, h.N.ln_2, h.N.mlp.c_fc,
 *             h.N.mlp.c_proj, ln_f; with or without "transformer."; lm_head.weight, when present, must
 *             equal wte.weight (the head is tied); the attention-mask buffers h.N.attn.bias and
 *             h.N.attn.masked_bias are ignored.
 *
 * F32, BF16, F16 and F64 tensors load into fp32. The file's model: vocab_size and n_embd from wte,
 * block_size from wpe, n_layer from the h.N present, n_head from the __metadata__ key "n_head" (which
 * `dtrain ckpt export --layout hf-gpt2` writes) or a config.json beside the file (Hugging Face's); 0 when
 * neither says. A model may have a larger vocabulary than the file (the rows the file lacks keep their
 * seeded initialisation: a vocabulary padded for tensor parallelism) and a shorter block than the file's
 * wpe (its first block_size rows). Everything else must match exactly. */
#ifndef DTRAIN_RUNTIME_GPT_WEIGHTS_H
#define DTRAIN_RUNTIME_GPT_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint/ckpt_tools.h"
#include "dtrain/common.h"
#include "runtime/model/gpt.h"

typedef enum dtr__gpt_wlayout {
  DTR__GPT_LAYOUT_DTRAIN = 0,
  DTR__GPT_LAYOUT_HF_GPT2 = 1,
} dtr__gpt_wlayout;

/* "dtrain", "hf-gpt2". */
const char *dtr__gpt_layout_name(dtr__gpt_wlayout l);
/* Parse a layout name; DTR_ERR_INVALID for anything else. */
dtr_result dtr__gpt_layout_parse(const char *s, dtr__gpt_wlayout *out);

typedef struct dtr__gpt_weights dtr__gpt_weights;

/* Open path, validate its safetensors header and recognise its layout (err lists a few of its tensor
 * names when it is neither). *out is owned by the caller (dtr__gpt_weights_close). */
dtr_result dtr__gpt_weights_open(const char *path, dtr__gpt_weights **out, char *err, size_t errcap);
void dtr__gpt_weights_close(dtr__gpt_weights *w); /* NULL is fine */
dtr__gpt_wlayout dtr__gpt_weights_layout(const dtr__gpt_weights *w);
/* The file's model (n_head 0 when the file does not say; see above). */
dtr__gpt_config dtr__gpt_weights_config(const dtr__gpt_weights *w);
/* Where n_head came from: "its metadata", "path/config.json", or NULL. */
const char *dtr__gpt_weights_n_head_source(const dtr__gpt_weights *w);

/* Check that the file loads into the whole model cfg: every tensor present, of a float dtype, in the
 * shape the layout gives it, nothing else of the model's names in the file. On a mismatch err holds
 * every difference, one per line after the first (tensors of consecutive layers that differ alike on
 * one line: "h.0-11.attn.c_attn.weight: [768, 2304] in the file, the model needs [64, 192]"). */
dtr_result dtr__gpt_weights_check(const dtr__gpt_weights *w, const dtr__gpt_config *cfg, char *err,
                                  size_t errcap);

/* Fill the parameters of model m (a whole model or any part: its tensor-parallel slices and pipeline
 * chunks, the tied copy of wte included) from the file, each tensor's slice taken through
 * dtr__gpt_param_pieces. cfg is m's config; the file must pass dtr__gpt_weights_check for it (checked
 * again here). Local: no collective. */
dtr_result dtr__gpt_weights_load(const dtr__gpt_weights *w, dtr__gpt *m, const dtr__gpt_config *cfg,
                                 char *err, size_t errcap);

/* Export: the name and orientation of dtrain tensor `name` (wte, h.3.attn.qkv.w, lnf.b, ...: gpt.h's
 * names, without "model/") in layout l: *transpose is 1 when the layout stores it as [in, out].
 * DTR_ERR_NOT_FOUND for a name that is not one of the model's. */
dtr_result dtr__gpt_layout_name_of(dtr__gpt_wlayout l, const char *name, char *out, size_t cap,
                                   int *transpose);

/* ---- export (`dtrain ckpt export --layout`): the model's weights of a checkpoint (its model/ tensors; the
 * optimizer's and the blobs are left out) in layout l, with the model's config in __metadata__
 * (hf-gpt2: GPT2Config's keys, model_type gpt2, n_positions, n_ctx, activation_function gelu_new,
 * layer_norm_epsilon 1e-05; dtrain: the recipe's model keys). n_head is not in the tensors' shapes:
 * the caller knows it (the run's recipe). */
typedef struct dtr__gpt_export dtr__gpt_export;
dtr_result dtr__gpt_export_create(dtr__gpt_wlayout l, int n_head, dtr__gpt_export **out, char *err,
                                  size_t errcap);
void dtr__gpt_export_destroy(dtr__gpt_export *x); /* NULL is fine */
/* The map for dtr__ckpt_tool_export; its finish fails naming what the checkpoint lacks or holds beyond
 * the model of its wte, wpe and layers. */
dtr__ckpt_export_map dtr__gpt_export_map(dtr__gpt_export *x);
/* After the export: the model's config (valid once the map's finish succeeded). */
dtr__gpt_config dtr__gpt_export_config(const dtr__gpt_export *x);
/* Hugging Face's config.json of a GPT-2 of config c (what from_pretrained reads beside
 * model.safetensors), written to path (replaced atomically). */
dtr_result dtr__gpt_hf_config_write(const dtr__gpt_config *c, const char *path, char *err, size_t errcap);

#endif
