/* The checkpointer's private state, shared by ckpt.c (config, registration, test/wait), ckpt_save.c
 * (snapshot, background commit, rotation), ckpt_load.c (newest valid step, resharding), ckpt_agree.c
 * (collectives with a deadline) and ckpt_device.c (device tensors). Nothing outside checkpoint/ but
 * tests includes this. */
#ifndef DTRAIN_CHECKPOINT_CKPT_INTERNAL_H
#define DTRAIN_CHECKPOINT_CKPT_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "checkpoint/ckpt_format.h"
#include "dtrain/ckpt.h"

/* One registered tensor or blob. Scalars (ndim 0) are kept as ndim 1, shape [1], so box arithmetic
 * has no special case; `scalar` remembers what goes into the manifest. */
typedef struct dtr__ckpt_reg {
  char *name;
  int is_blob;
  int scalar;
  dtr_dtype dtype;
  int ndim;
  int64_t shape[DTR_CKPT_MAX_DIMS];
  int64_t offset[DTR_CKPT_MAX_DIMS], extent[DTR_CKPT_MAX_DIMS];
  int64_t save_offset[DTR_CKPT_MAX_DIMS], save_extent[DTR_CKPT_MAX_DIMS];
  int saves; /* this rank writes a piece of it */
  void *data;
  size_t blob_size;
  int device; /* dtr_ckpt_device; DTR_CKPT_CUDA: data is device memory (ckpt_device.c copies it) */
} dtr__ckpt_reg;

/* What the background writer owns: copies of every saved box and blob, taken before save returns. */
typedef struct dtr__ckpt_snapshot {
  int64_t step;
  dtr_result failed; /* the snapshot could not be taken (the commit reports it to the peers) */
  int n;
  dtr__shard_source *sources;
  int *reg_index; /* sources[i] is regs[reg_index[i]] */
  void **buffers; /* point into ck->stage; not owned */
  uint64_t raw_bytes;
  double t_start;
} dtr__ckpt_snapshot;

struct dtr_ckpt {
  char *dir;
  char *job_id;
  int keep, level, threads, timeout_ms;
  uint64_t chunk_bytes;
  int test_delay_ms; /* DTRAIN_CKPT_TEST_DELAY_MS: test-only pause between shard write and agreement */
  dtr_comm *comm;    /* split from cfg->comm; NULL for a single rank */
  int rank, world;

  dtr__ckpt_reg *regs;
  int nregs, capregs;

  /* The save in flight. `busy` is set by the caller's thread and cleared by the writer under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int thread_live; /* a thread was started and not yet joined */
  int busy;
  int have_result; /* a finished save's result not yet reported by test/wait */
  dtr_result result;
  dtr__ckpt_snapshot snap;
  void **stage; /* per registration: the snapshot's copy, kept between saves */
  size_t *stage_cap;
  int nstage;

  dtr_ckpt_stats stats;
  char err[2048];

  /* Device tensors (ckpt_device.c): the CUDA device they live on and the checkpointer's own stream
   * (a cudaStream_t, created with the first device tensor; NULL while there is none). */
  int dev_id;
  void *dev_stream;
};

/* ckpt.c: free a snapshot's arrays (its buffers are the staging area, kept). */
void dtr__ckpt_snapshot_free(dtr__ckpt_snapshot *s);

/* ckpt_save.c: run the writer for ck->snap on this thread (sync save) or the background thread. */
dtr_result dtr__ckpt_commit(dtr_ckpt *ck);

/* ckpt_agree.c: collectives over ck->comm that give up after cfg.timeout_ms (aborting ck->comm) and
 * then name `what` in ck->err. No-ops for a single rank (ck->comm NULL). Collective over ck->comm. */
dtr_result dtr__ckpt_allreduce_i32(dtr_ckpt *ck, int32_t *v, int n, dtr_redop op, const char *what);
dtr_result dtr__ckpt_bcast(dtr_ckpt *ck, void *buf, size_t bytes, int root, const char *what);
dtr_result dtr__ckpt_all_gather(dtr_ckpt *ck, const void *send, void *recv, size_t count, dtr_dtype dtype,
                                const char *what);

/* ckpt_device.c: tensors in CUDA device memory. Every entry point exists in a build without CUDA
 * (DTRAIN_HAVE_CUDA undefined), where registration refuses device tensors, so the copies are never
 * reached there. All run on the caller's thread (never on the background writer). */
/* Check t->device at registration; a DTR_CKPT_CUDA tensor's data must be device memory of the current
 * device; the first one fixes ck->dev_id and creates ck->dev_stream. ck->err names the tensor. */
dtr_result dtr__ckpt_dev_register(dtr_ckpt *ck, const dtr_ckpt_tensor *t);
/* Snapshot staging memory: pinned (cudaHostAlloc) when `pinned` and the build has CUDA, else (or when
 * pinning fails) malloc; dtr__ckpt_stage_free knows which (NULL is fine). */
void *dtr__ckpt_stage_alloc(size_t bytes, int pinned);
void dtr__ckpt_stage_free(void *p);
/* Queue the copy of r's save box (device memory, row-major held box) into contiguous host dst on
 * ck->dev_stream; dtr__ckpt_dev_sync waits for all queued copies. Failures name the tensor in ck->err. */
dtr_result dtr__ckpt_dev_copy_out(dtr_ckpt *ck, const dtr__ckpt_reg *r, void *dst);
dtr_result dtr__ckpt_dev_sync(dtr_ckpt *ck);
/* Load: copy r's whole held box from contiguous host src to its device memory, waited for. */
dtr_result dtr__ckpt_dev_upload(dtr_ckpt *ck, const dtr__ckpt_reg *r, const void *src, char *err,
                                size_t errcap);
/* Destroy the stream (at dtr_ckpt_destroy, after the writer finished). */
void dtr__ckpt_dev_release(dtr_ckpt *ck);

#endif
