/* The reference GPT model (internal to runtime/): token + position embeddings, pre-norm blocks of
 * causal multi-head attention and a GELU MLP, a final layer norm and an output head tied to the token
 * embedding, cross-entropy loss; forward and backward in fp32 on the CPU (CBLAS matrix products).
 * The trainer owns one per rank; parameters and gradients each live in one flat buffer. */
#ifndef DTRAIN_RUNTIME_GPT_H
#define DTRAIN_RUNTIME_GPT_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

typedef struct dtr__gpt_config {
  int vocab_size, block_size, n_layer, n_head, n_embd;
} dtr__gpt_config;

/* One parameter tensor inside the flat buffers. Order in the buffer: wte [V,C], wpe [T,C], then for
 * each layer l: h.l.ln1.w [C], h.l.ln1.b [C], h.l.attn.qkv.w [3C,C], h.l.attn.qkv.b [3C],
 * h.l.attn.proj.w [C,C], h.l.attn.proj.b [C], h.l.ln2.w [C], h.l.ln2.b [C], h.l.mlp.fc.w [4C,C],
 * h.l.mlp.fc.b [4C], h.l.mlp.proj.w [C,4C], h.l.mlp.proj.b [C]; then lnf.w [C], lnf.b [C].
 * Weights are [out, in] like torch.nn.Linear. Names are these strings. */
typedef struct dtr__gpt_param {
  char name[64];
  int ndim;
  int64_t shape[2];
  size_t offset, count; /* in floats, inside the flat buffers */
  int decay;            /* 1 for 2-D weights (AdamW decays them), 0 for biases, norms */
} dtr__gpt_param;

typedef struct dtr__gpt dtr__gpt;

/* Validate cfg (n_embd % n_head, sizes > 0) with err naming the field; allocate; initialise the
 * weights from seed (normal(0, 0.02); projections into the residual stream 0.02/sqrt(2*n_layer);
 * biases 0, norms 1). threads: compute threads (OpenBLAS and OpenMP), 0 = 1. max_batch: the largest
 * B the forward will be given (activations are sized for B x block_size). */
dtr_result dtr__gpt_create(const dtr__gpt_config *cfg, uint64_t seed, int threads, int max_batch,
                           dtr__gpt **out, char *err, size_t errcap);
void dtr__gpt_destroy(dtr__gpt *m);

size_t dtr__gpt_num_params(const dtr__gpt *m);
float *dtr__gpt_params(dtr__gpt *m);
float *dtr__gpt_grads(dtr__gpt *m);
int dtr__gpt_num_tensors(const dtr__gpt *m);
const dtr__gpt_param *dtr__gpt_tensor(const dtr__gpt *m, int i);

/* Forward over inputs[B*T] (token ids, T <= block_size); with targets (ids, or -1 = not scored) the
 * mean cross-entropy over scored positions goes to *loss. Keeps the activations for backward.
 * logits, when not NULL, receives B*T*V floats. */
dtr_result dtr__gpt_forward(dtr__gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                            float *loss, float *logits);

/* Called during backward each time a contiguous range of parameter gradients is final (the output
 * layer norm first, then each layer from the last, then the embeddings): ranges come from the end of
 * the flat buffer towards its start. */
typedef dtr_result (*dtr__gpt_grad_ready_fn)(void *arg, size_t offset, size_t count);

/* Backward of the last forward (which must have had targets): ADDS the gradient of the loss times
 * grad_scale (1/accumulation steps) into the gradient buffer, so micro-steps accumulate. ready may
 * be NULL. */
dtr_result dtr__gpt_backward(dtr__gpt *m, float grad_scale, dtr__gpt_grad_ready_fn ready, void *ready_arg);
void dtr__gpt_zero_grad(dtr__gpt *m);

/* Greedy decoding of n tokens after prompt[0..len) (for the addition task's exact-match accuracy);
 * out receives the n generated ids. Uses the forward; batch 1. */
dtr_result dtr__gpt_generate(dtr__gpt *m, const int32_t *prompt, int len, int n, int32_t *out);

#endif
