/* Pieces of the built-in trainer (dtr_train in train.c) that live in their own files: rank 0's
 * progress lines, metrics.csv, summary and loss plot (train_metrics.c), and the checkpoint glue that
 * registers the model, the AdamW moments and the training state and resumes them (train_ckpt.c). */
#ifndef DTRAIN_RUNTIME_TRAIN_INTERNAL_H
#define DTRAIN_RUNTIME_TRAIN_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "dtrain/ckpt.h"
#include "dtrain/recipe.h"
#include "dtrain/runtime.h"
#include "runtime/data.h"
#include "runtime/gpt.h"

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
  double accuracy; /* NAN when not evaluated this step */
} dtr__step_record;

typedef struct dtr__metrics dtr__metrics;

/* Create run_dir (and parents), open metrics.csv: fresh when start_step is 0, else keep the rows of
 * steps <= start_step (the resumed run continues the file). */
dtr_result dtr__metrics_open(const char *run_dir, int64_t start_step, int64_t total_steps, int log_every,
                             dtr__metrics **out, char *err, size_t errcap);
/* Append a CSV row; print a progress line when the step is the first, a multiple of log_every, or the
 * last. */
void dtr__metrics_step(dtr__metrics *m, const dtr__step_record *rec);
/* Write loss.png with gnuplot when it is on PATH (a warning if it fails). */
void dtr__metrics_plot(dtr__metrics *m);
void dtr__metrics_close(dtr__metrics *m);
/* "12,345" */
void dtr__fmt_thousands(double v, char *buf, size_t cap);

/* ---- checkpoint glue */

typedef struct dtr__train_ckpt dtr__train_ckpt;

/* Create the checkpointer over comm and register every parameter, both AdamW moments (each saved in
 * DP slabs: part dp_rank of dp) and the blobs train_state and data_pos. COLLECTIVE over comm. */
dtr_result dtr__train_ckpt_create(const dtr_recipe *r, const char *dir, dtr_comm *comm, int dp_rank, int dp,
                                  dtr_gpt *model, dtr_adamw *opt, dtr__train_state *state, dtr_data *data,
                                  dtr__train_ckpt **out, char *err, size_t errcap);
/* Load the newest checkpoint when there is one: *step is its step (0 when none). COLLECTIVE. */
dtr_result dtr__train_ckpt_resume(dtr__train_ckpt *c, int64_t *step, char *err, size_t errcap);
/* Save step (async per the recipe). COLLECTIVE. */
dtr_result dtr__train_ckpt_save(dtr__train_ckpt *c, int64_t step, char *err, size_t errcap);
/* Wait for a save in flight; its result. */
dtr_result dtr__train_ckpt_wait(dtr__train_ckpt *c, char *err, size_t errcap);
/* Seconds the last save blocked training. */
double dtr__train_ckpt_blocking_s(const dtr__train_ckpt *c);
void dtr__train_ckpt_destroy(dtr__train_ckpt *c);

#endif
