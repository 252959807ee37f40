/* Inside the reference GPT (runtime/model/gpt.c, runtime/model/gpt_pass.c): the model struct, its parameter
 * table and activation arena. Other runtime files include this only for dtr__gpt_last_error. */
#ifndef DTRAIN_RUNTIME_GPT_INTERNAL_H
#define DTRAIN_RUNTIME_GPT_INTERNAL_H

#include "runtime/model/gpt.h"

/* Per-layer parameter pointers (into params or grads). */
typedef struct dtr__gpt_layer {
  float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} dtr__gpt_layer;

/* Activations of one forward, sized for max_batch x block_size; per layer arrays are [L, ...]. */
typedef struct dtr__gpt_acts {
  float *encoded;                   /* [B,T,C] */
  float *ln1, *ln1_mean, *ln1_rstd; /* [L,B,T,C], [L,B,T] */
  float *qkv;                       /* [L,B,T,3C] */
  float *atty;                      /* [L,B,T,C] */
  float *att;                       /* [L,B,NH,T,T] */
  float *residual2;                 /* [L,B,T,C] */
  float *ln2, *ln2_mean, *ln2_rstd;
  float *fch, *fch_gelu; /* [L,B,T,4C] */
  float *residual3;      /* [L,B,T,C] */
  float *lnf, *lnf_mean, *lnf_rstd;
  float *probs;  /* [B,T,V]: logits, then probabilities, then (backward) dlogits */
  float *losses; /* [B,T] */
  /* backward scratch */
  float *dres, *dln, *dbig, *dqkv, *datty; /* [B,T,C], [B,T,C], [B,T,4C], [B,T,3C], [B,T,C] */
} dtr__gpt_acts;

struct dtr__gpt {
  dtr__gpt_config cfg;
  int threads, max_batch;
  size_t nparams;
  float *params, *grads;
  int ntensors;
  dtr__gpt_param *tensors;
  float *arena; /* all activations */
  dtr__gpt_acts a;
  int32_t *inputs, *targets; /* copies of the last forward's, [max_batch*block_size] */
  int B, T, have_targets, nscored;
  char err[256];
};

/* Parameter views of a flat buffer (params or grads) in the order of gpt.h. */
void dtr__gpt_views(const dtr__gpt *m, float *base, float **wte, float **wpe, dtr__gpt_layer *layers,
                    float **lnfw, float **lnfb);
/* Why the last call on m failed ("" when none did). */
const char *dtr__gpt_last_error(const dtr__gpt *m);

#endif
