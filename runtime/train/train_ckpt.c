/* Checkpoint glue for the trainer: what a resumed run needs to continue bit for bit — every parameter,
 * both AdamW moments (each DP replica saves a slab, so shards stay balanced), the step and AdamW's t
 * (train_state) and the data position (data_pos). Nothing else carries state across steps: the learning
 * rate is a function of the step, the samples of (seed, step), and the model has no dropout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ckpt_paths.h"
#include "common/check.h"
#include "runtime/train/train_internal.h"

struct dtr__train_ckpt {
  char dir[DTR_RECIPE_STR];
  dtr_ckpt *ck;
  int async;
  dtr__train_state *state;
  dtr_adamw *opt;
  dtr_data *data;
};

/* How a rank saves what it registers: a slab `part` of `parts` of each box (replicas), all of it, or
 * nothing (a copy another rank saves). */
typedef struct save_rule {
  int part, parts; /* parts 0: save nothing; part -1: save all held */
} save_rule;

/* Register rows [r0, r1) of local tensor t (all columns), or of one row r0 columns [c0, c1) when c1 > 0,
 * whose first element is at data: one box of the whole tensor per tensor-parallel piece they touch. */
static dtr_result add_run(dtr_ckpt *ck, const char *name, const dtr__gpt_param *t, const dtr__train_bufs *b,
                          int64_t r0, int64_t r1, int64_t c0, int64_t c1, float *data, save_rule save) {
  dtr__gpt_piece pc[3];
  int np = dtr__gpt_param_pieces(t, b->tp, b->tp_rank, pc);
  int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
  if (c1 <= 0) c0 = 0, c1 = cols;
  for (int k = 0; k < np; k++) {
    int64_t a = r0 > pc[k].lrow ? r0 : pc[k].lrow,
            e = r1 < pc[k].lrow + pc[k].rows ? r1 : pc[k].lrow + pc[k].rows;
    if (a >= e) continue;
    dtr_ckpt_tensor x = dtr_ckpt_tensor_full(name, DTR_F32, t->ndim, t->gshape, data + (a - r0) * cols);
    x.offset[0] = pc[k].grow + (a - pc[k].lrow);
    x.extent[0] = e - a;
    if (t->ndim == 2) {
      x.offset[1] = pc[k].gcol + c0;
      x.extent[1] = c1 - c0;
    }
    x.device = b->device;
    memcpy(x.save_offset, x.offset, sizeof x.offset);
    memcpy(x.save_extent, x.extent, sizeof x.extent);
    if (save.parts == 0)
      memset(x.save_extent, 0, sizeof x.save_extent);
    else if (save.part >= 0)
      x = dtr_ckpt_tensor_save_part(x, save.part, save.parts);
    DTR_CHECK(dtr_ckpt_add_tensor(ck, &x));
  }
  return DTR_OK;
}

/* Register local elements [e0, e1) of tensor t (data: element e0) as runs of whole boxes: the rest of a
 * first row, whole rows, the start of a last row. */
static dtr_result add_range(dtr_ckpt *ck, const char *name, const dtr__gpt_param *t, const dtr__train_bufs *b,
                            int64_t e0, int64_t e1, float *data, save_rule save) {
  int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
  while (e0 < e1) {
    int64_t r = e0 / cols, c = e0 % cols;
    if (c != 0 || e1 - e0 < cols) { /* part of one row */
      int64_t end = (r + 1) * cols < e1 ? (r + 1) * cols : e1;
      DTR_CHECK(add_run(ck, name, t, b, r, r + 1, c, c + (end - e0), data, save));
      data += end - e0;
      e0 = end;
    } else { /* whole rows */
      int64_t rows = (e1 - e0) / cols;
      DTR_CHECK(add_run(ck, name, t, b, r, r + rows, 0, 0, data, save));
      data += rows * cols;
      e0 += rows * cols;
    }
  }
  return DTR_OK;
}

/* Every tensor of the table from buffer base (laid out like the parameters): replicas save slabs. */
static dtr_result add_buffer(dtr_ckpt *ck, const char *prefix, const dtr__train_bufs *b, float *base,
                             int dp_rank, int dp) {
  char name[DTR_CKPT_MAX_NAME];
  for (int i = 0; i < b->ntensors; i++) {
    const dtr__gpt_param *p = &b->tab[i];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    save_rule save = {dp_rank, dp};
    if (p->tied)
      save.parts = 0;
    else if (p->split == DTR__GPT_WHOLE)
      save = (save_rule){b->tp_rank * dp + dp_rank, b->tp * dp};
    DTR_CHECK(add_range(ck, name, p, b, 0, (int64_t)p->count, base + p->offset, save));
  }
  return DTR_OK;
}

/* ZeRO-1 moments: this rank's shards of the flat buffer, packed in base; each saved by its owner. */
static dtr_result add_shards(dtr_ckpt *ck, const char *prefix, const dtr__train_bufs *b, float *base) {
  char name[DTR_CKPT_MAX_NAME];
  size_t at = 0;
  for (int s = 0; s < b->nshards; s++) {
    size_t a = b->shards[s].offset, e = a + b->shards[s].count;
    for (int i = 0; i < b->ntensors; i++) {
      const dtr__gpt_param *p = &b->tab[i];
      size_t x = a > p->offset ? a : p->offset, y = e < p->offset + p->count ? e : p->offset + p->count;
      if (x >= y) continue;
      snprintf(name, sizeof name, "%s%s", prefix, p->name);
      /* the tied copy and tp replicas of whole tensors hold what another rank saves */
      save_rule save = {-1, 1};
      if (p->tied || (p->split == DTR__GPT_WHOLE && b->tp_rank != 0)) save.parts = 0;
      DTR_CHECK(add_range(ck, name, p, b, (int64_t)(x - p->offset), (int64_t)(y - p->offset),
                          base + at + (x - a), save));
    }
    at += e - a;
  }
  return DTR_OK;
}

dtr_result dtr__train_ckpt_create(const dtr_recipe *r, const char *dir, dtr_comm *comm, int dp_rank, int dp,
                                  const dtr__train_bufs *bufs, dtr_adamw *opt, dtr__train_state *state,
                                  dtr_data *data, dtr__train_ckpt **out, char *err, size_t errcap) {
  dtr_result rc = DTR_OK;
  *out = NULL;
  dtr__train_ckpt *c = calloc(1, sizeof *c);
  if (!c) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "trainer checkpoint: out of memory");
  snprintf(c->dir, sizeof c->dir, "%s", dir);
  c->async = r->checkpoint.async;
  c->state = state;
  c->opt = opt;
  c->data = data;
  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  cfg.comm = comm;
  cfg.keep = r->checkpoint.keep;
  cfg.level = r->checkpoint.level;
  cfg.job_id = r->job.name;
  DTR_CHECK_GOTO(dtr_ckpt_create(&cfg, &c->ck, err, errcap), rc, fail);
  /* The same names and boxes in every layout and on either device: a checkpoint of any (dp, tp, pp,
   * zero) loads into any other, a cuda run's into a cpu run. */
  DTR_CHECK_GOTO(add_buffer(c->ck, "model/", bufs, bufs->params, dp_rank, dp), rc, reg_fail);
  if (bufs->shards) {
    DTR_CHECK_GOTO(add_shards(c->ck, "adamw.m/", bufs, bufs->adam_m), rc, reg_fail);
    DTR_CHECK_GOTO(add_shards(c->ck, "adamw.v/", bufs, bufs->adam_v), rc, reg_fail);
  } else {
    DTR_CHECK_GOTO(add_buffer(c->ck, "adamw.m/", bufs, bufs->adam_m, dp_rank, dp), rc, reg_fail);
    DTR_CHECK_GOTO(add_buffer(c->ck, "adamw.v/", bufs, bufs->adam_v, dp_rank, dp), rc, reg_fail);
  }
  DTR_CHECK_GOTO(dtr_ckpt_add_blob(c->ck, "train_state", state, sizeof *state), rc, reg_fail);
  DTR_CHECK_GOTO(dtr_ckpt_add_blob(c->ck, "data_pos", dtr__data_pos(data), sizeof(dtr_data_pos)), rc,
                 reg_fail);
  *out = c;
  return DTR_OK;
reg_fail:
  dtr__fail(err, errcap, rc, "checkpoint %s: %s", dir, dtr_ckpt_last_error(c->ck));
fail:
  dtr__train_ckpt_destroy(c);
  return rc;
}

dtr_result dtr__train_ckpt_resume(dtr__train_ckpt *c, int64_t *step, char *err, size_t errcap) {
  *step = 0;
  dtr__train_state keep = *c->state;
  dtr_result rc = dtr_ckpt_load(c->ck, step);
  if (rc == DTR_ERR_NOT_FOUND) {
    *step = 0;
    return DTR_OK;
  }
  if (rc != DTR_OK) return dtr__fail(err, errcap, rc, "resuming: %s", dtr_ckpt_last_error(c->ck));
  dtr__train_state *s = c->state;
  if (s->magic != DTR_TRAIN_STATE_MAGIC || s->version != DTR_TRAIN_STATE_VERSION || s->step != *step ||
      s->adamw_t < 0) {
    rc = dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "checkpoint step %lld: blob train_state is not this trainer's (magic 0x%08x version %u step %lld)",
        (long long)*step, s->magic, s->version, (long long)s->step);
    *c->state = keep;
    return rc;
  }
  c->opt->t = s->adamw_t;
  DTR_CHECK(dtr__data_resume(c->data, err, errcap));
  if (dtr__data_pos(c->data)->step != *step) {
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "checkpoint step %lld: blob data_pos is at step %lld",
                     (long long)*step, (long long)dtr__data_pos(c->data)->step);
  }
  return DTR_OK;
}

dtr_result dtr__train_ckpt_save(dtr__train_ckpt *c, int64_t step, char *err, size_t errcap) {
  c->state->step = step;
  c->state->adamw_t = c->opt->t;
  dtr_result rc = c->async ? dtr_ckpt_save_async(c->ck, step) : dtr_ckpt_save(c->ck, step);
  if (rc != DTR_OK)
    return dtr__fail(err, errcap, rc, "checkpoint step %lld: %s", (long long)step,
                     dtr_ckpt_last_error(c->ck));
  return DTR_OK;
}

dtr_result dtr__train_ckpt_wait(dtr__train_ckpt *c, char *err, size_t errcap) {
  dtr_result rc = dtr_ckpt_wait(c->ck);
  if (rc != DTR_OK) return dtr__fail(err, errcap, rc, "checkpoint: %s", dtr_ckpt_last_error(c->ck));
  return DTR_OK;
}

void dtr__train_ckpt_set_aside(dtr__train_ckpt *c, int64_t from) {
  dtr__ckpt_step *steps;
  int n;
  if (dtr__ckpt_list_steps(c->dir, 0, &steps, &n, NULL, 0) != DTR_OK) return;
  for (int i = 0; i < n; i++) {
    if (steps[i].step < from) continue;
    char a[DTR_RECIPE_STR + 32], b[DTR_RECIPE_STR + 40];
    dtr__ckpt_step_dir(a, sizeof a, c->dir, steps[i].step);
    snprintf(b, sizeof b, "%s/diverged_step_%08lld", c->dir, (long long)steps[i].step);
    if (rename(a, b) == 0)
      DTR_WARN("moved %s aside to %s: saved after the divergence began", a, b);
    else
      DTR_WARN("cannot move %s aside (%s): a restart may load it", a, strerror(errno));
  }
  free(steps);
}

double dtr__train_ckpt_blocking_s(const dtr__train_ckpt *c) {
  dtr_ckpt_stats st;
  dtr_ckpt_last_stats(c->ck, &st);
  return st.blocking_s;
}

void dtr__train_ckpt_destroy(dtr__train_ckpt *c) {
  if (!c) return;
  dtr_ckpt_destroy(c->ck);
  free(c);
}
