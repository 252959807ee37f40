/* Inside the reference GPT (runtime/model/gpt.c, runtime/model/gpt_pass.c): the model struct, its parameter
 * table and activation slots. Other files include this only for dtr__gpt_last_error. */
#ifndef DTRAIN_RUNTIME_GPT_INTERNAL_H
#define DTRAIN_RUNTIME_GPT_INTERNAL_H

#include "runtime/model/gpt.h"

/* Per-layer parameter pointers (into params or grads). */
typedef struct dtr__gpt_layer {
  float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} dtr__gpt_layer;

/* One slot's activations of one chunk's forward, sized for max_batch x block_size and the part's largest
 * chunk (Lc layers); C is the whole width, Cl = C/tp, NHl = n_head/tp, Vl = vocab_size/tp. */
typedef struct dtr__gpt_acts {
  float *encoded;                   /* [B,T,C]: the chunk's input (the embeddings, or x_in) */
  float *ln1, *ln1_mean, *ln1_rstd; /* [Lc,B,T,C], [Lc,B,T] */
  float *qkv;                       /* [Lc,B,T,3Cl] */
  float *atty;                      /* [Lc,B,T,Cl]: the heads' outputs */
  float *att;                       /* [Lc,B,NHl,T,T] */
  float *residual2;                 /* [Lc,B,T,C] */
  float *ln2, *ln2_mean, *ln2_rstd;
  float *fch, *fch_gelu; /* [Lc,B,T,4Cl] */
  float *residual3;      /* [Lc,B,T,C] */
  float *lnf, *lnf_mean, *lnf_rstd;
  float *probs;           /* [B,T,Vl]: logits, then probabilities, then (backward) dlogits */
  float *losses;          /* [B,T] */
  int32_t *ids, *targets; /* [B*T]: copies of the forward's */
  int B, T, chunk, have_targets, have_logits, nscored;
} dtr__gpt_acts;

struct dtr__gpt {
  dtr__gpt_config cfg;
  dtr__gpt_part part;
  dtr_tp tp_one; /* the group of one when part.tp is NULL */
  dtr_tp *tp;    /* part.tp or &tp_one */
  int threads, max_batch;
  int V, v0; /* this rank's vocabulary slice [v0, v0 + V) */
  size_t nparams;
  float *params, *grads;
  int ntensors;
  dtr__gpt_param *tensors;
  int wte, wpe, lnf;                    /* table indices (lnf: lnf.w), -1 where this part has none */
  int nlayers;                          /* layers held, all chunks */
  int chunk_first[DTR__GPT_MAX_CHUNKS]; /* local index of each chunk's first layer */
  dtr__gpt_acts *slots;                 /* part.slots of them */
  float *arena;                         /* every slot's activations and the backward scratch */
  int32_t *id_arena;                    /* every slot's ids and targets */
  size_t arena_bytes;
  float *dres, *dln, *dbig, *dqkv,
      *datty;  /* backward scratch: [B,T,C], [B,T,C], [B,T,4Cl], [B,T,3Cl], [B,T,Cl] */
  float *xent; /* [3 B T]: the vocabulary-parallel cross-entropy's row statistics */
  char err[512];
};

/* Parameter views of a flat buffer (params or grads): layers[i] for the part's i-th layer in buffer order
 * (layers has room for m->nlayers); wte, wpe, lnfw, lnfb NULL where the part has none. */
void dtr__gpt_views(const dtr__gpt *m, float *base, float **wte, float **wpe, dtr__gpt_layer *layers,
                    float **lnfw, float **lnfb);
/* Why the last call on m failed ("" when none did). */
const char *dtr__gpt_last_error(const dtr__gpt *m);

#endif
