/* Checkpoint glue for the trainer: what a resumed run needs to continue bit for bit — every parameter,
 * both AdamW moments (each DP replica saves a slab, so shards stay balanced), the step and AdamW's t
 * (train_state) and the data position (data_pos). Nothing else carries state across steps: the learning
 * rate is a function of the step, the samples of (seed, step), and the model has no dropout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "runtime/train/train_internal.h"

struct dtr__train_ckpt {
  dtr_ckpt *ck;
  int async;
  dtr__train_state *state;
  dtr_adamw *opt;
  dtr_data *data;
};

static dtr_result add_copy(dtr_ckpt *ck, const char *prefix, const dtr__gpt_param *p, float *base, int device,
                           int dp_rank, int dp) {
  char name[DTR_CKPT_MAX_NAME];
  snprintf(name, sizeof name, "%s%s", prefix, p->name);
  dtr_ckpt_tensor t = dtr_ckpt_tensor_full(name, DTR_F32, p->ndim, p->shape, base + p->offset);
  t.device = device;
  t = dtr_ckpt_tensor_save_part(t, dp_rank, dp);
  return dtr_ckpt_add_tensor(ck, &t);
}

dtr_result dtr__train_ckpt_create(const dtr_recipe *r, const char *dir, dtr_comm *comm, int dp_rank, int dp,
                                  const dtr__train_bufs *bufs, dtr_adamw *opt, dtr__train_state *state,
                                  dtr_data *data, dtr__train_ckpt **out, char *err, size_t errcap) {
  dtr_result rc = DTR_OK;
  *out = NULL;
  dtr__train_ckpt *c = calloc(1, sizeof *c);
  if (!c) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "trainer checkpoint: out of memory");
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
  /* The same names and slabs on either device: a checkpoint of a cuda run loads into a cpu run. */
  for (int i = 0; i < bufs->ntensors; i++) {
    const dtr__gpt_param *p = &bufs->tab[i];
    DTR_CHECK_GOTO(add_copy(c->ck, "model/", p, bufs->params, bufs->device, dp_rank, dp), rc, reg_fail);
    DTR_CHECK_GOTO(add_copy(c->ck, "adamw.m/", p, bufs->adam_m, bufs->device, dp_rank, dp), rc, reg_fail);
    DTR_CHECK_GOTO(add_copy(c->ck, "adamw.v/", p, bufs->adam_v, bufs->device, dp_rank, dp), rc, reg_fail);
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
