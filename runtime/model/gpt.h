/* The reference GPT model (internal to runtime/): token + position embeddings, pre-norm blocks of
 * causal multi-head attention and a GELU MLP, a final layer norm and an output head tied to the token
 * embedding, cross-entropy loss; forward and backward in fp32 on the CPU (CBLAS matrix products).
 *
 * One rank holds a part of the model (dtr__gpt_part): the whole of it, or a tensor-parallel slice of
 * every layer it holds (the blocks of dtrain/parallel.h, over a dtr_tp), and/or a pipeline stage's
 * layers, as one or more chunks (the interleaved schedule's virtual stages). The first stage holds the
 * embeddings, the last one the final norm, the head and the loss; with several stages both hold the tied
 * token embedding, the last stage's copy marked `tied`. A part's parameters are initialised to exactly
 * its slice of the whole model's initialisation from the same seed. Parameters and gradients each live
 * in one flat buffer; activations in `slots`, one per micro-batch in flight. */
#ifndef DTRAIN_RUNTIME_GPT_H
#define DTRAIN_RUNTIME_GPT_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"
#include "dtrain/parallel.h"

typedef struct dtr__gpt_config {
  int vocab_size, block_size, n_layer, n_head, n_embd;
} dtr__gpt_config;

#define DTR__GPT_MAX_CHUNKS 16

/* Which part of the model a rank holds. */
typedef struct dtr__gpt_part {
  dtr_tp *tp;  /* the tensor-parallel group (its size splits heads, MLP width and vocabulary); NULL: tp 1 */
  int nchunks; /* model chunks on this rank (interleaved pipeline: v), 1 .. DTR__GPT_MAX_CHUNKS */
  int layer_begin[DTR__GPT_MAX_CHUNKS], layer_end[DTR__GPT_MAX_CHUNKS]; /* each chunk's layers, >= 1 */
  int first; /* chunk 0 begins with the embeddings: the first pipeline stage */
  int last;  /* the last chunk ends with the final norm, the head and the loss: the last stage */
  int slots; /* activation slots (micro-batches in flight), >= 1 */
} dtr__gpt_part;

/* The whole model on one rank: one chunk of every layer, both ends, one slot. */
dtr__gpt_part dtr__gpt_whole(const dtr__gpt_config *cfg);

/* How a tensor is split over the tp ranks. */
typedef enum dtr__gpt_split {
  DTR__GPT_WHOLE = 0, /* every tp rank holds all of it: norms, wpe, biases of row-parallel layers */
  DTR__GPT_ROWS = 1,  /* rows split: column-parallel weights and biases, wte's vocabulary */
  DTR__GPT_COLS = 2,  /* columns split: row-parallel weights */
  DTR__GPT_QKV = 3,   /* rows split in each of the q, k and v blocks: this rank's heads */
} dtr__gpt_split;

/* One parameter tensor inside the flat buffers. The whole model's order: wte [V,C], wpe [T,C], then for
 * each layer l: h.l.ln1.w [C], h.l.ln1.b [C], h.l.attn.qkv.w [3C,C], h.l.attn.qkv.b [3C],
 * h.l.attn.proj.w [C,C], h.l.attn.proj.b [C], h.l.ln2.w [C], h.l.ln2.b [C], h.l.mlp.fc.w [4C,C],
 * h.l.mlp.fc.b [4C], h.l.mlp.proj.w [C,4C], h.l.mlp.proj.b [C]; then lnf.w [C], lnf.b [C]. A part
 * keeps that order for what it holds (its chunks' layers in chunk order). Weights are [out, in] like
 * torch.nn.Linear. Names are these strings, the same in every part. */
typedef struct dtr__gpt_param {
  char name[64];
  int ndim;
  int64_t shape[2];     /* this rank's (shape[1] 0 for 1-D) */
  int64_t gshape[2];    /* the whole tensor's */
  size_t offset, count; /* in floats, inside the flat buffers */
  int decay;            /* 1 for 2-D weights (AdamW decays them), 0 for biases, norms */
  int split;            /* dtr__gpt_split */
  int tied;             /* the last stage's copy of wte when the first stage holds the other */
} dtr__gpt_param;

/* Where this rank's rows of a tensor lie in the whole tensor: rows [lrow, lrow + rows) of the local
 * tensor are rows [grow, grow + rows) and columns [gcol, gcol + local columns) of the whole one (1-D
 * tensors: rows are elements, gcol 0). Returns the count (1, or 3 for DTR__GPT_QKV). */
typedef struct dtr__gpt_piece {
  int64_t lrow, rows, grow, gcol;
} dtr__gpt_piece;
int dtr__gpt_param_pieces(const dtr__gpt_param *p, int tp, int tp_rank, dtr__gpt_piece out[3]);
/* Copy the slice that p holds on tp rank tp_rank of the whole tensor `whole` (p->gshape, row-major; rows
 * [0, have_rows) present) into dst (p's local layout), piece by piece. Rows of the slice at or past
 * have_rows are left as they are. */
void dtr__gpt_copy_slice(const dtr__gpt_param *p, int tp, int tp_rank, const float *whole, int64_t have_rows,
                         float *dst);

typedef struct dtr__gpt dtr__gpt;

/* The whole model: dtr__gpt_create_part with dtr__gpt_whole(cfg). */
dtr_result dtr__gpt_create(const dtr__gpt_config *cfg, uint64_t seed, int threads, int max_batch,
                           dtr__gpt **out, char *err, size_t errcap);
/* Validate cfg (n_embd % n_head, sizes > 0) and the part (heads, n_embd and vocab_size divisible by the
 * tp size, chunks of layers inside 0..n_layer) with err naming the field; allocate; initialise this
 * part's weights from seed as the slice of the whole model's: normal(0, 0.02), projections into the
 * residual stream 0.02/sqrt(2*n_layer), biases 0, norms 1. threads: compute threads (OpenMP), 0 = 1.
 * max_batch: the largest B a forward will be given (each slot holds B x block_size). The part's tp
 * must outlive the model. */
dtr_result dtr__gpt_create_part(const dtr__gpt_config *cfg, const dtr__gpt_part *part, uint64_t seed,
                                int threads, int max_batch, dtr__gpt **out, char *err, size_t errcap);
void dtr__gpt_destroy(dtr__gpt *m);

size_t dtr__gpt_num_params(const dtr__gpt *m);
float *dtr__gpt_params(dtr__gpt *m);
float *dtr__gpt_grads(dtr__gpt *m);
int dtr__gpt_num_tensors(const dtr__gpt *m);
const dtr__gpt_param *dtr__gpt_tensor(const dtr__gpt *m, int i);
const dtr__gpt_part *dtr__gpt_part_of(const dtr__gpt *m);
/* Bytes of activation memory allocated: every slot and the backward scratch. */
size_t dtr__gpt_activation_bytes(const dtr__gpt *m);

/* Called during backward each time a contiguous range of parameter gradients is final (the output
 * layer norm first, then each layer from the last, then the embeddings): ranges come from the end of
 * the flat buffer towards its start. */
typedef dtr_result (*dtr__gpt_grad_ready_fn)(void *arg, size_t offset, size_t count);

/* Forward of one micro-batch [B, T] through chunk `chunk` into activation slot `slot` (kept for its
 * backward). The first chunk of the first stage reads token ids `ids`; every other chunk the previous
 * virtual stage's output x_in [B*T, C]. The last chunk of the last stage computes the loss: the mean
 * cross-entropy over the positions whose target is not -1 goes to *loss (targets NULL: no loss, the
 * slot keeps the vocabulary slice's logits, see dtr__gpt_argmax); every other chunk writes its output to
 * x_out [B*T, C]. COLLECTIVE over the part's tp group. */
dtr_result dtr__gpt_forward_chunk(dtr__gpt *m, int chunk, int slot, const int32_t *ids, const float *x_in,
                                  const int32_t *targets, int B, int T, float *x_out, float *loss);
/* Backward of the slot's forward (which, on the last stage's last chunk, had targets): ADDS grad_scale x
 * the gradient into the gradient buffer (micro-batches accumulate). dx_out: the gradient of the chunk's
 * output (not on the last chunk of the last stage); dx_in receives the gradient of its input (not on the
 * first chunk of the first stage). ready (may be NULL) hears of every finished range of this chunk's
 * parameters. COLLECTIVE over tp. */
dtr_result dtr__gpt_backward_chunk(dtr__gpt *m, int chunk, int slot, float grad_scale, const float *dx_out,
                                   float *dx_in, dtr__gpt_grad_ready_fn ready, void *ready_arg);
/* After a forward without targets on the last stage: the id of the largest logit at position t of
 * sequence b (the lowest id among equals), over the whole vocabulary. COLLECTIVE over tp. */
dtr_result dtr__gpt_argmax(dtr__gpt *m, int slot, int b, int t, int32_t *id);

/* The whole model's one-call forms: chunk 0, slot 0. Forward over inputs[B*T] (token ids, T <=
 * block_size); with targets (ids, or -1 = not scored) the mean cross-entropy over scored positions goes
 * to *loss; logits, when not NULL, receives B*T*V floats. Backward of the last forward (which must have
 * had targets). */
dtr_result dtr__gpt_forward(dtr__gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                            float *loss, float *logits);
dtr_result dtr__gpt_backward(dtr__gpt *m, float grad_scale, dtr__gpt_grad_ready_fn ready, void *ready_arg);
void dtr__gpt_zero_grad(dtr__gpt *m);

/* Greedy decoding of n tokens after prompt[0..len) (for the addition task's exact-match accuracy) by a
 * model that is a whole pipeline stage set on this rank (pp 1; any tp, COLLECTIVE over it); out receives
 * the n generated ids. Batch 1, slot 0. */
dtr_result dtr__gpt_generate(dtr__gpt *m, const int32_t *prompt, int len, int n, int32_t *out);

#endif
