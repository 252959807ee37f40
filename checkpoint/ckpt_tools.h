/* The library side of `dtrain ckpt` (launcher/cmd_ckpt.c is only flags and exit codes): list, verify,
 * inspect, export to safetensors and import from it. Each reads a checkpoint directory through the
 * manifest and shard readers of ckpt_format.h, prints its report on `out`, and on failure returns a
 * code with err naming the file, chunk, tensor or step. None of them is collective; none needs a
 * communicator. docs/checkpoint-tools.md is the user's guide. */
#ifndef DTRAIN_CHECKPOINT_CKPT_TOOLS_H
#define DTRAIN_CHECKPOINT_CKPT_TOOLS_H

#include <stdint.h>
#include <stdio.h>

#include "checkpoint/safetensors.h"
#include "dtrain/common.h"

/* Prefix of the safetensors names that carry blobs: "__blob__/<name>/rank_<r>". */
#define DTR__CKPT_BLOB_PREFIX "__blob__/"

/* Every step directory under dir (committed, `latest`, unfinished .tmp_step_*, unreadable) with its
 * layout, sizes and compression ratio. DTR_ERR_NOT_FOUND when dir is missing. */
dtr_result dtr__ckpt_tool_ls(const char *dir, FILE *out, char *err, size_t errcap);

/* Read every chunk of every shard of one step (step >= 0) or of every committed step (step < 0),
 * checking each checksum and decoding it, and compare each shard's own index with the manifest.
 * Prints one line per problem ("BROKEN <file>: chunk K of '<tensor>' ...") and a verdict per step.
 * DTR_OK when all is intact, DTR_ERR_PROTOCOL when anything is broken (err: the first problem),
 * DTR_ERR_NOT_FOUND when there is no such step. */
dtr_result dtr__ckpt_tool_verify(const char *dir, int64_t step, FILE *out, char *err, size_t errcap);

/* Tensors (name, dtype, shape, bytes) and blobs of one step (step < 0: the latest), and how each is
 * split: which rank saved which box; with chunks != 0 also every chunk's place, size, codec, checksum. */
dtr_result dtr__ckpt_tool_inspect(const char *dir, int64_t step, int chunks, FILE *out, char *err,
                                  size_t errcap);

/* How an export names and shapes what it writes: another framework's layout of a model's tensors. */
typedef struct dtr__ckpt_export_map {
  void *arg;
  /* Tensor `name` [shape] of the checkpoint: 1 to write it as out (*transpose 1: a 2-D tensor written
   * [cols, rows]), 0 to leave it out. */
  int (*tensor)(void *arg, const char *name, int ndim, const int64_t *shape, char *out, size_t cap,
                int *transpose);
  /* After every tensor was offered: DTR_OK and __metadata__ entries to add (owned by arg), or a failure
   * naming what the layout misses. */
  dtr_result (*finish)(void *arg, const dtr__sft_meta **meta, int *nmeta, char *err, size_t errcap);
} dtr__ckpt_export_map;

typedef struct dtr__ckpt_export_opts {
  int blobs; /* also each rank's blobs, as U8 tensors DTR__CKPT_BLOB_PREFIX "<name>/rank_<r>" */
  int dtype; /* -1: keep; else a float dtr_dtype every float tensor is converted to (rounded to
                nearest even) */
  const dtr__ckpt_export_map *map; /* NULL: every tensor under its own name */
} dtr__ckpt_export_opts;

/* Reassemble every tensor of one step (step < 0: the latest) whole and write them to a safetensors
 * file (metadata: format=pt, dtrain_step, dtrain_job_id, dtrain_world, dtrain_created, and the map's).
 * Fails naming the tensor when the saved boxes do not cover it. The file appears only when complete. */
dtr_result dtr__ckpt_tool_export(const char *dir, int64_t step, const char *path,
                                 const dtr__ckpt_export_opts *o, FILE *out, char *err, size_t errcap);

/* Write the tensors of a safetensors file as a committed single-shard checkpoint of dir at `step`,
 * through the public checkpointer (so any layout can load it with dtr_ckpt_load). Tensors named
 * DTR__CKPT_BLOB_PREFIX "<name>/rank_0" (or "<name>") become blob <name>; other ranks' blobs are
 * skipped with a note. job_id NULL: "" (any job may load it). Refuses a step that already exists. */
dtr_result dtr__ckpt_tool_import(const char *path, const char *dir, int64_t step, const char *job_id,
                                 FILE *out, char *err, size_t errcap);

#endif
