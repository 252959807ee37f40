/* libFuzzer target for the checkpoint manifest reader (checkpoint/manifest.c): any bytes are parsed
 * and validated; an accepted manifest is written back out, re-read, and must come back identical, so
 * the writer and the strict reader cannot drift apart. Every refusal must carry "name:line:col:".
 * Built with -DDTRAIN_FUZZ_REPLAY it is a plain program that replays the files named on its command
 * line (or every file of a directory), which ctest runs over tests/fuzz/corpus_ckpt_manifest. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/ckpt_format.h"

static int same_piece(const dtr__entry *e, const dtr__piece *a, const dtr__piece *b) {
  if (a->rank != b->rank || a->raw_bytes != b->raw_bytes || a->nchunks != b->nchunks) return 0;
  for (int d = 0; !e->is_blob && d < e->ndim; d++)
    if (a->offset[d] != b->offset[d] || a->extent[d] != b->extent[d]) return 0;
  return a->nchunks == 0 || memcmp(a->chunks, b->chunks, sizeof *a->chunks * (size_t)a->nchunks) == 0;
}

static int same(const dtr__manifest *a, const dtr__manifest *b) {
  if (a->format != b->format || strcmp(a->job_id, b->job_id) || a->step != b->step || a->world != b->world ||
      a->level != b->level || a->chunk_bytes != b->chunk_bytes || strcmp(a->created, b->created) ||
      a->raw_bytes != b->raw_bytes || a->stored_bytes != b->stored_bytes || a->nentries != b->nentries)
    return 0;
  for (int i = 0; i < a->nentries; i++) {
    const dtr__entry *x = &a->entries[i], *y = &b->entries[i];
    if (strcmp(x->name, y->name) || x->is_blob != y->is_blob || x->dtype != y->dtype || x->ndim != y->ndim ||
        x->npieces != y->npieces)
      return 0;
    for (int d = 0; d < x->ndim; d++)
      if (x->shape[d] != y->shape[d]) return 0;
    for (int j = 0; j < x->npieces; j++)
      if (!same_piece(x, &x->pieces[j], &y->pieces[j])) return 0;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  dtr__manifest *m = NULL;
  if (dtr__manifest_parse((const char *)data, size, "fuzz.yaml", &m, err, sizeof err) != DTR_OK) {
    if (strncmp(err, "fuzz.yaml:", 10) != 0) {
      fprintf(stderr, "a refusal without name:line:col: %s\n", err);
      abort();
    }
    return 0;
  }
  char path[128];
  snprintf(path, sizeof path, "/dev/shm/fuzz_ckpt_manifest.%d.yaml", (int)getpid());
  unlink(path);
  if (dtr__manifest_write(path, m, err, sizeof err) == DTR_OK) {
    dtr__manifest *back = NULL;
    if (dtr__manifest_read(path, &back, err, sizeof err) != DTR_OK || !same(m, back)) {
      fprintf(stderr, "an accepted manifest did not survive write + read: %s\n",
              back ? "fields differ" : err);
      abort();
    }
    dtr__manifest_free(back);
  }
  unlink(path);
  dtr__manifest_free(m);
  return 0;
}

#ifdef DTRAIN_FUZZ_REPLAY
#define DTR_REPLAY_PROG "fuzz_ckpt_manifest_replay"
#define DTR_REPLAY_STEP(n) ((n) / 4) /* a few prefixes: each accepted input is written and re-read */
#include "tests/fuzz/replay_main.h"
#endif
