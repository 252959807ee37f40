/* The trainer's failures that a restart would not fix (docs/resilience.md): a divergence (stop, or
 * restart once from the checkpoint before it with a lower learning rate), a resume with no valid
 * checkpoint, and saves the file system refuses. Each turns into DTR_ERR_PERMANENT, which `dtrain train`
 * reports with the exit code 80 that tells its agent not to restart the job. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/param.h"
#include "runtime/train/train_internal.h"

typedef dtr__trainer trainer;

/* ---- divergence: stop, or restart once from the checkpoint before it with a lower learning rate.
 * The restart is the agent's: this run moves the checkpoints of the diverged steps aside, leaves
 * CHECKPOINT_DIR/divergence (the factor and the step) and exits as a transient failure; the next attempt
 * reads the file (setup_divergence), resumes from the newest checkpoint left and scales the learning
 * rate. A second divergence is permanent. */

#define DIVERGENCE_FILE "divergence"

/* Rank 0 reads CHECKPOINT_DIR/divergence and every rank learns what it says: the learning rate's scale. */
dtr_result dtr__train_divergence_setup(trainer *t) {
  double v[2] = {1.0, 0.0}; /* scale, restarted */
  if (t->rank == 0) {
    char p[DTR_RECIPE_STR + 32];
    snprintf(p, sizeof p, "%s/" DIVERGENCE_FILE, t->r->checkpoint.dir);
    FILE *f = fopen(p, "r");
    double factor;
    if (f) {
      if (fscanf(f, "lr_factor=%lf", &factor) == 1 && factor > 0 && factor < 1) {
        v[0] = factor;
        v[1] = 1;
      } else {
        DTR_WARN("%s: not a divergence record (lr_factor=...); ignoring it", p);
      }
      fclose(f);
    }
  }
  dtr_result rc = dtr_broadcast(dtr_runtime_world(t->rt), v, 2, DTR_F64, 0, NULL);
  if (rc != DTR_OK)
    return dtr__fail(t->err, t->errcap, rc, "sharing the divergence record: %s",
                     dtr_comm_last_error(dtr_runtime_world(t->rt)));
  t->lr_scale = v[0];
  t->divergence_restarted = v[1] != 0;
  if (t->rank == 0 && t->divergence_restarted)
    printf("restarted after a divergence: learning rate x %g\n", t->lr_scale);
  return DTR_OK;
}

/* first_bad: the first step (0-based) of the non-finite run. */
dtr_result dtr__train_diverged(trainer *t, int64_t first_bad) {
  const dtr_recipe *r = t->r;
  int can_restart =
      !strcmp(r->train.on_divergence, "restart") && !t->divergence_restarted &&
      dtr__param_int("DTRAIN_RESTART_COUNT", 0) < dtr__param_int("TORCHELASTIC_MAX_RESTARTS", 0);
  char what[256], scale[32] = "";
  if (t->lr_scale != 1.0) snprintf(scale, sizeof scale, " x %g", t->lr_scale);
  snprintf(
      what, sizeof what,
      "training diverged: %d steps in a row from step %lld had a non-finite gradient norm (train.lr=%g%s)",
      (int)t->skipped_in_a_row, (long long)first_bad + 1, r->train.lr, scale);
  if (!can_restart) {
    const char *why = t->divergence_restarted ? "again after the restart with a lower learning rate"
                      : strcmp(r->train.on_divergence, "restart")
                          ? "(train.on_divergence: stop)"
                          : "(on_divergence restart: no restart left)";
    dtr__fail(t->err, t->errcap, DTR_ERR_PERMANENT, "%s %s; lower train.lr or set train.grad_clip", what,
              why);
    return DTR_ERR_PERMANENT;
  }
  (void)dtr__train_ckpt_wait(t->ck, t->err, t->errcap); /* no save of the diverged run may land later */
  if (t->rank == 0) {
    dtr__train_ckpt_set_aside(t->ck, first_bad); /* their weights were already on the way out */
    char p[DTR_RECIPE_STR + 32], line[96];
    snprintf(p, sizeof p, "%s/" DIVERGENCE_FILE, r->checkpoint.dir);
    int n = snprintf(line, sizeof line, "lr_factor=%.17g\nat_step=%lld\n", r->train.divergence_lr_factor,
                     (long long)first_bad + 1);
    int fd = dtr__mkdir_p(r->checkpoint.dir, 0777) == 0
                 ? open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)
                 : -1;
    if (fd < 0 || dtr__write_all(fd, line, (size_t)n) != 0 || fsync(fd) != 0) {
      if (fd >= 0) close(fd);
      dtr__fail(t->err, t->errcap, DTR_ERR_PERMANENT, "%s, and %s cannot be written to restart: %s", what, p,
                strerror(errno));
      return DTR_ERR_PERMANENT;
    }
    close(fd);
  }
  dtr__fail(
      t->err, t->errcap, DTR_ERR_INVALID,
      "%s; restarting from the checkpoint before step %lld with the learning rate x %g (train.on_divergence: "
      "restart)",
      what, (long long)first_bad + 1, r->train.divergence_lr_factor);
  return DTR_ERR_INVALID;
}

/* A resume that fails for anything but a lost peer will fail the same way after a restart: every
 * checkpoint in the directory is damaged, a blob is missing, the state is another trainer's. */
dtr_result dtr__train_resume(trainer *t, int64_t *start) {
  dtr_progress_phase("checkpoint load", 1);
  dtr_result rc = dtr__train_ckpt_resume(t->ck, start, t->err, t->errcap);
  if (rc == DTR_OK || rc == DTR_ERR_TIMEOUT || rc == DTR_ERR_CONNECTION || rc == DTR_ERR_ABORTED) return rc;
  size_t l = strlen(t->err);
  snprintf(t->err + l, t->errcap - l,
           " (no valid checkpoint to resume from: move the directory aside, or set "
           "checkpoint.resume=false to train afresh)");
  return DTR_ERR_PERMANENT;
}

/* A periodic save the file system refused (full, read-only) loses that checkpoint, not the run; the
 * second refusal in a row stops the job (permanent) rather than train on for days with nothing saved.
 * Any other failure of a periodic save is only a warning. */
dtr_result dtr__train_save_outcome(trainer *t, dtr_result rc) {
  if (rc == DTR_OK) {
    t->failed_saves_in_a_row = 0;
    return DTR_OK;
  }
  if (rc == DTR_ERR_STORAGE && ++t->failed_saves_in_a_row >= 2) {
    size_t l = strlen(t->err);
    snprintf(t->err + l, t->errcap - l, " (the second save in a row the file system refused: stopping)");
    return DTR_ERR_PERMANENT;
  }
  if (rc != DTR_ERR_STORAGE) t->failed_saves_in_a_row = 0;
  if (t->rank == 0) DTR_WARN("%s; training goes on", t->err);
  t->err[0] = 0;
  return DTR_OK;
}

dtr_result dtr__train_periodic_save(trainer *t, int64_t step, int *pending) {
  /* an asynchronous save says how it went only when waited for: the previous one first */
  if (*pending) {
    *pending = 0;
    DTR_CHECK(dtr__train_save_outcome(t, dtr__train_ckpt_wait(t->ck, t->err, t->errcap)));
  }
  dtr_result rc = dtr__train_ckpt_save(t->ck, step, t->err, t->errcap);
  if (rc == DTR_OK && t->r->checkpoint.async) {
    *pending = 1;
    return DTR_OK;
  }
  return dtr__train_save_outcome(t, rc);
}

/* The last save is the one the run needs: a file system that refuses it will refuse it again. */
dtr_result dtr__train_required_save(dtr_result rc) {
  return rc == DTR_ERR_STORAGE ? DTR_ERR_PERMANENT : rc;
}
