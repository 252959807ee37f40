/* Pieces of the built-in trainer (dtr_train in train.c) that live in their own files: rank 0's
 * progress lines, metrics.csv, summary and loss plot (train_metrics.c), the checkpoint glue that
 * registers the model, the AdamW moments and the training state and resumes them (train_ckpt.c), and
 * the step on a CUDA device (train_cuda.c). */
#ifndef DTRAIN_RUNTIME_TRAIN_INTERNAL_H
#define DTRAIN_RUNTIME_TRAIN_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "dtrain/ckpt.h"
#include "dtrain/parallel.h"
#include "dtrain/recipe.h"
#include "dtrain/runtime.h"
#include "runtime/model/data.h"
#include "runtime/model/gpt.h"

#define DTR_TRAIN_STATE_MAGIC 0x4e415254u /* "TRAN" */
#define DTR_TRAIN_STATE_VERSION 1u

/* Scalars of the training state, saved as the checkpoint blob "train_state". The step is the number
 * of optimizer steps taken; losses are for the summary of a resumed run. */
typedef struct dtr__train_state {
  uint32_t magic, version;
  int64_t step;
  int64_t adamw_t;
  double first_loss;
  uint64_t seed;
} dtr__train_state;

/* ---- metrics (rank 0 only; other ranks pass NULL everywhere) */

typedef struct dtr__step_record {
  int64_t step; /* 1-based: the step just finished */
  double loss, lr, tokens_per_s, step_ms, grad_norm, dp_wait_ms;
  double accuracy;  /* NAN when not evaluated this step */
  const char *note; /* appended to this step's progress line (which is then printed); NULL: none */
} dtr__step_record;

typedef struct dtr__metrics dtr__metrics;

/* Create run_dir (and parents), open metrics.csv: fresh when start_step is 0, else keep the rows of
 * steps <= start_step (the resumed run continues the file). */
dtr_result dtr__metrics_open(const char *run_dir, int64_t start_step, int64_t total_steps, int log_every,
                             dtr__metrics **out, char *err, size_t errcap);
/* Append a CSV row; print a progress line when the step is the first of this run (1, or the one after
 * the checkpoint it resumed from), a multiple of log_every, or the last. */
void dtr__metrics_step(dtr__metrics *m, const dtr__step_record *rec);
/* Write loss.png with gnuplot when it is on PATH (a warning if it fails): the loss on a log axis, the
 * accuracy when evaluated, under `title` (the recipe and its layout). */
void dtr__metrics_plot(dtr__metrics *m, const char *title);
void dtr__metrics_close(dtr__metrics *m);
/* "12,345" */
void dtr__fmt_thousands(double v, char *buf, size_t cap);

/* ---- checkpoint glue */

typedef struct dtr__train_ckpt dtr__train_ckpt;

/* What a checkpoint holds of the model: the parameter table and three flat fp32 buffers laid out by it
 * (parameters, AdamW m and v), in host memory (the cpu trainer) or in the CUDA device memory of the
 * device current at registration (the cuda trainer: device DTR_CKPT_CUDA). The table's tensors may be
 * tensor-parallel slices (tp > 1: each registered as the boxes of the whole tensor it holds) and may
 * include the last pipeline stage's tied copy of wte (loaded, never saved). With ZeRO-1 the moments
 * hold only `shards` of the flat buffer, packed in order. */
typedef struct dtr__train_bufs {
  const dtr__gpt_param *tab;
  int ntensors;
  float *params, *adam_m, *adam_v;
  int device;              /* a dtr_ckpt_device */
  int tp, tp_rank;         /* the split of tab's tensors; 1, 0: whole */
  const dtr_range *shards; /* ZeRO-1: the moments' ranges of the flat buffer; NULL: the whole buffer */
  int nshards;
} dtr__train_bufs;

/* Create the checkpointer over comm (host memory: the world on the host backend) and register every
 * parameter and both AdamW moments as the boxes of the whole tensors this rank holds, each saved once
 * across the job (replicas save slabs: part dp_rank of dp, and of dp x tp for tensors every tp rank
 * holds; a ZeRO-1 shard saves itself), and the blobs train_state and data_pos. opt supplies AdamW's step
 * count t (its moments are the bufs'). COLLECTIVE over comm. */
dtr_result dtr__train_ckpt_create(const dtr_recipe *r, const char *dir, dtr_comm *comm, int dp_rank, int dp,
                                  const dtr__train_bufs *bufs, dtr_adamw *opt, dtr__train_state *state,
                                  dtr_data *data, dtr__train_ckpt **out, char *err, size_t errcap);
/* Load the newest checkpoint when there is one: *step is its step (0 when none). COLLECTIVE. */
dtr_result dtr__train_ckpt_resume(dtr__train_ckpt *c, int64_t *step, char *err, size_t errcap);
/* Save step (async per the recipe). COLLECTIVE. */
dtr_result dtr__train_ckpt_save(dtr__train_ckpt *c, int64_t step, char *err, size_t errcap);
/* Wait for a save in flight; its result. */
dtr_result dtr__train_ckpt_wait(dtr__train_ckpt *c, char *err, size_t errcap);
/* Rank 0: rename the committed steps >= from to diverged_step_N, where no load looks. */
void dtr__train_ckpt_set_aside(dtr__train_ckpt *c, int64_t from);
/* Seconds the last save blocked training. */
double dtr__train_ckpt_blocking_s(const dtr__train_ckpt *c);
void dtr__train_ckpt_destroy(dtr__train_ckpt *c);

/* ---- the device path (train_cuda.c): the reference GPT on this rank's CUDA device */

typedef struct dtr__gpu dtr__gpu;

/* Where one step's micro-batches come from: micro-batch k is sequences first + k*micro .. + micro of
 * the global batch, T tokens each, read into the host buffers x and y (the model uploads them). */
typedef struct dtr__step_data {
  dtr_data *data;
  int32_t *x, *y;
  int first, micro, accum, T;
} dtr__step_data;

/* The model on `device` in precision r->train.precision (fp32 | bf16), starting from init[0..n) (the
 * CPU model's seeded weights, so both devices start alike); grad_comm (nccl, the DP group) is ordered
 * after the model's stream from here on (dtr_comm_set_cuda_stream). A build without CUDA:
 * DTR_ERR_UNSUPPORTED. */
dtr_result dtr__gpu_create(const dtr_recipe *r, const dtr__gpt_config *gc, const float *init, size_t n,
                           int device, int max_batch, dtr_comm *grad_comm, dtr__gpu **out, char *err,
                           size_t errcap);
/* Stops ordering grad_comm after the model's stream, frees the model. NULL is fine. */
void dtr__gpu_destroy(dtr__gpu *g);
/* The device buffers, for the DP buckets (grads) and the checkpoint (bufs: device DTR_CKPT_CUDA). */
float *dtr__gpu_grads(dtr__gpu *g);
dtr__train_bufs dtr__gpu_bufs(dtr__gpu *g);
/* The gradient half of a step: zero, every micro-batch's forward and backward (the last backward's
 * finished ranges start sync's nccl all-reduces at once), wait for them; then the loss (mean over
 * micro-batches and DP ranks) and the global gradient norm, both averaged over host_dp so that every
 * rank takes the same decisions. *coef: the clipping factor AdamW applies to the gradients (1: none,
 * torch's clip_grad_norm_ rule for max_norm > 0). COLLECTIVE over the DP group. */
dtr_result dtr__gpu_grads_step(dtr__gpu *g, const dtr__step_data *d, int64_t step, dtr_dp_sync *sync,
                               dtr_comm *host_dp, double max_norm, double *loss, double *gnorm, double *coef,
                               char *err, size_t errcap);
/* AdamW on the device with learning rate lr over coef x the gradients; counts the step in opt->t
 * (opt's moments stay unused: the device keeps its own). */
dtr_result dtr__gpu_adamw(dtr__gpu *g, dtr_adamw *opt, double lr, double coef, char *err, size_t errcap);
/* Wait for the queued device work: before a checkpoint snapshots the device buffers. */
dtr_result dtr__gpu_sync(dtr__gpu *g, char *err, size_t errcap);
/* Upload the parameters from host buffer params (n floats, laid out like the table): model.init_from. */
dtr_result dtr__gpu_set_params(dtr__gpu *g, const float *params, char *err, size_t errcap);
/* The parameters were written behind the model's back (a checkpoint load): refresh its bf16 copy. */
dtr_result dtr__gpu_params_changed(dtr__gpu *g, char *err, size_t errcap);
/* Copy parameters (and the AdamW moments, when m and v are not NULL) into host buffers of n floats. */
dtr_result dtr__gpu_download(dtr__gpu *g, float *params, float *m, float *v, char *err, size_t errcap);
/* "cuda:0 bf16" */
const char *dtr__gpu_describe(const dtr__gpu *g);

/* ---- the trainer (train.c: setup, the loop, the summary; train_step.c: the cpu step over the
 * pipeline, tensor-parallel and data-parallel groups; train_eval.c: evaluation and the weights digest) */

typedef struct dtr__trainer {
  const dtr_recipe *r;
  dtr_runtime *rt;
  dtr_comm *dp_comm;   /* host memory: losses, accuracy, the summary; the cpu trainer's gradients too */
  dtr_comm *grad_comm; /* the gradient buckets: dp_comm, or the nccl DP communicator on cuda */
  dtr_comm *tp_comm, *pp_comm;
  dtr_comm *emb_comm; /* the first and last pipeline stage of this rank's (dp, tp): the tied wte (pp > 1) */
  dtr_tp tp;          /* the model's tensor-parallel group */
  dtr__gpu *gpu;      /* train.device cuda; NULL on the cpu */
  int rank, world, threads;
  int dp, dp_rank, tp_size, tp_rank, pp, stage, chunks;
  dtr_data *data;
  dtr__gpt *model;
  dtr_pp_pipe *pipe; /* the cpu step's schedule of micro-batches (one stage when pp is 1) */
  dtr_adamw opt;
  int opt_ready;
  uint8_t *decay;   /* AdamW decays the element (2-D weights) */
  uint8_t *counted; /* the element counts in the global gradient norm (each parameter once in the job) */
  size_t wte_off,
      wte_count; /* the tied wte this rank shares with the other end of the pipeline (count 0: none) */
  dtr_dp_sync *sync;
  dtr__train_ckpt *ck;
  dtr__metrics *metrics; /* rank 0 only */
  dtr__train_state state;
  int32_t *x, *y;
  int T, micro, accum, first, count;
  size_t nparams;
  double loss_sum; /* last stage: this step's micro-batch losses */
  /* totals over this process's steps */
  double sum_step_s, sum_wait_s, sum_tokens;
  uint64_t tp_bytes_last; /* tp all-reduce payload of the last step */
  int tied_identical;     /* dtr__train_tied_identical at the end (-1: not checked here) */
  int64_t steps_run, skipped, skipped_in_a_row;
  double lr_scale;           /* 1, or train.divergence_lr_factor after a restart for divergence */
  int divergence_restarted;  /* this run already restarted once for a divergence */
  int failed_saves_in_a_row; /* periodic saves the file system refused, in a row */
  char *err;
  size_t errcap;
} dtr__trainer;

/* The cpu trainer's parallel pieces (after dtr_init, the data and the config are known): the model's
 * part, the pipeline, the DP buckets (or ZeRO-1), AdamW over what this rank updates, and the masks.
 * COLLECTIVE over the world. */
dtr_result dtr__train_setup_cpu(dtr__trainer *t, const dtr__gpt_config *gc);
/* The gradient half of a cpu step: every micro-batch through the pipeline schedule, the tied embedding
 * and DP exchanges, the loss (mean over micro-batches and DP ranks, known on every rank), the global
 * gradient norm over every stage and tp slice, clipping. COLLECTIVE over the world. */
dtr_result dtr__train_cpu_grads(dtr__trainer *t, int64_t step, double *loss, double *gnorm);
/* AdamW on what this rank updates (its ZeRO-1 shards, or everything), then the all-gather of ZeRO-1.
 * COLLECTIVE over the DP group (ZeRO-1). */
dtr_result dtr__train_cpu_update(dtr__trainer *t, double lr);
/* Exact-match accuracy on held-out additions, the problems split over the DP ranks, each decoded by
 * the whole pipeline and tp group. COLLECTIVE over the world. */
dtr_result dtr__train_evaluate(dtr__trainer *t, double *acc);
/* With pp > 1, on the first and last stage: 1 when their copies of the tied embedding (and of its AdamW
 * moments, without ZeRO-1) are bit for bit the same, 0 when not (warned), -1 on other ranks or when it
 * could not be checked. COLLECTIVE over the first and last stage of this rank's (dp, tp). */
int dtr__train_tied_identical(dtr__trainer *t);
/* ---- failures a restart would not fix (train_faults.c) */

/* The divergence record of an earlier attempt (CHECKPOINT_DIR/divergence): its learning rate's scale, on
 * every rank. COLLECTIVE over the world. */
dtr_result dtr__train_divergence_setup(dtr__trainer *t);
/* Training diverged from step first_bad (0-based): set the checkpoints of the diverged steps aside and
 * leave the record for a restart (DTR_ERR_INVALID: transient), or DTR_ERR_PERMANENT when the recipe says
 * stop, it happened again, or no restart is left. */
dtr_result dtr__train_diverged(dtr__trainer *t, int64_t first_bad);
/* Resume from the newest valid checkpoint; no valid one among those there is DTR_ERR_PERMANENT. */
dtr_result dtr__train_resume(dtr__trainer *t, int64_t *start);
/* A periodic save (waiting for the asynchronous one before it, *pending) and what its result means:
 * a warning, or DTR_ERR_PERMANENT at the second refusal of the file system in a row. */
dtr_result dtr__train_periodic_save(dtr__trainer *t, int64_t step, int *pending);
dtr_result dtr__train_save_outcome(dtr__trainer *t, dtr_result rc);
/* The final save's result: a refusal of the file system is permanent. */
dtr_result dtr__train_required_save(dtr_result rc);

/* xxh64 of the weights and AdamW moments (rank 0's answer): a replica's own when every rank holds the
 * whole model, else of every rank's digest in rank order. COLLECTIVE over the world. */
uint64_t dtr__train_digest(dtr__trainer *t);

#endif
