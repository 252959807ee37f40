/* Where a checkpoint's pieces live and the file-system steps that move them (ckpt_paths.c): the paths of
 * a step, the step directories of a checkpoint directory, the `latest` pointer, fsync of a directory and
 * the removal of a step directory. The checkpointer and the `dtrain ckpt` tools both use these; they
 * call nothing else in checkpoint/. */
#ifndef DTRAIN_CHECKPOINT_CKPT_PATHS_H
#define DTRAIN_CHECKPOINT_CKPT_PATHS_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

/* The paths of a step: "<dir>/step_%08lld", "<dir>/.tmp_step_%08lld", "<dir>/step_%08lld/rank_%05d.dtck". */
void dtr__ckpt_step_dir(char *out, size_t cap, const char *dir, int64_t step);
void dtr__ckpt_tmp_dir(char *out, size_t cap, const char *dir, int64_t step);
void dtr__ckpt_shard_path(char *out, size_t cap, const char *step_dir, int rank);

/* One step directory: step_<digits> (committed: the rename that commits comes after the manifest) or
 * .tmp_step_<digits> (a save that did not commit, or is still running). */
typedef struct dtr__ckpt_step {
  int64_t step;
  int tmp;
} dtr__ckpt_step;

/* The step directories under dir, newest first (at one number the unfinished one before the committed
 * one); .tmp_step_* only when with_tmp. *steps is owned by the caller (free()). DTR_ERR_NOT_FOUND when
 * dir does not exist, DTR_ERR_SYSTEM when it cannot be read, DTR_ERR_NOMEM; err names dir. */
dtr_result dtr__ckpt_list_steps(const char *dir, int with_tmp, dtr__ckpt_step **steps, int *n, char *err,
                                size_t errcap);

/* 1 when s is a non-empty run of decimal digits whose number fits in int64_t (*v); else 0. */
int dtr__ckpt_parse_digits(const char *s, int64_t *v);

/* The step `latest` names, or -1 when missing or malformed. */
int64_t dtr__ckpt_read_latest(const char *dir);
/* Replace <dir>/latest atomically: latest.tmp, fsync, rename, fsync dir. */
dtr_result dtr__ckpt_write_latest(const char *dir, int64_t step, char *err, size_t errcap);

/* fsync a directory by path; -1 with errno on failure. */
int dtr__ckpt_fsync_dir(const char *path);
/* rm -rf of one directory (one level of files, as a checkpoint step has); 0 when it is gone. */
int dtr__ckpt_remove_dir(const char *path);
/* Remove .tmp_step_* and .old_step_* directories left by crashed saves (rank 0 at create). */
void dtr__ckpt_remove_stale(const char *dir);

#endif
