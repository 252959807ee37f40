/* dtrain/ckpt.h — sharded, compressed checkpoints that survive crashes and load into a new layout.
 *
 * A checkpoint is what lets a job come back after a node dies. Each rank registers what it owns: named
 * tensors (dtype, the global shape, and the box of that shape this rank holds in memory) and opaque
 * blobs (RNG state, data position, optimizer scalars, the step). A save writes, per rank, one shard
 * file of independently readable chunks: float data is split into byte planes (the exponent-carrying
 * bytes apart from the mantissa bytes) before zstd, and every chunk carries an xxHash checksum. Rank 0
 * then writes a YAML manifest naming every tensor, its global shape and dtype, and which shard holds
 * which box, where its chunks lie and their checksums.
 *
 * On disk (docs/checkpoint.md has the protocol, docs/checkpoint-format.md the bytes):
 *
 *     <dir>/step_00000100/manifest.yaml
 *     <dir>/step_00000100/rank_00003.dtck
 *     <dir>/latest                          the newest committed step ("100\n"), replaced atomically
 *
 * Commit: shards go to <dir>/.tmp_step_00000100, are fsynced, the ranks agree that every shard was
 * written, rank 0 writes and fsyncs the manifest, renames the directory into place, fsyncs <dir> and
 * replaces `latest`. A save that fails anywhere (disk full, a rank killed, a read-only directory)
 * leaves every committed checkpoint as it was. Rotation keeps the newest `keep` committed steps and
 * never removes the newest committed one before a newer one has committed.
 *
 * Load finds the newest valid checkpoint (the step directories, newest first; `latest` is a hint), checks
 * the manifest and the checksum of every chunk it reads, and fills each registered tensor's box from
 * whatever saved boxes overlap it, reading only those chunks: a checkpoint written by 4 ranks loads
 * into 2 (resharding). A torn or corrupted checkpoint is reported with the file and chunk and the one
 * before it loads; every rank loads the same step.
 *
 * Saving replicated state: a tensor's `save` box (a sub-box of its held box) is the part this rank
 * writes. Data-parallel replicas hold the whole tensor and each save a different slab of it, so the
 * shards stay balanced, and load still fills the whole held box.
 *
 * Collectives: with a communicator, create, save, wait and load are COLLECTIVE over it (every rank
 * calls them, in the same order, with the same step). The checkpointer splits its own communicator
 * from the one given, so the background commit never shares one with the caller's operations.
 * Without a communicator (comm NULL) the checkpointer is a single rank (world 1): tools and tests.
 *
 * Threads and the snapshot: one thread at a time calls a checkpointer's functions. The background
 * writer owns the snapshot; the registered memory may change as soon as dtr_ckpt_save_async returns.
 * The snapshot is the only part a caller waits for: a memcpy of host tensors, and for tensors in CUDA
 * device memory (DTR_CKPT_CUDA) a device-to-host copy into pinned staging memory on the checkpointer's
 * own stream, waited for once before save_async returns, so the wait is one copy at PCIe/NVLink speed.
 * Work the caller queued on its own streams that writes registered device memory must be complete
 * (say, its stream synchronized) before the save: the checkpointer's stream does not wait for others.
 */
#ifndef DTRAIN_CKPT_H
#define DTRAIN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/comm.h"
#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DTR_CKPT_MAX_DIMS 8
#define DTR_CKPT_MAX_NAME 256

typedef struct dtr_ckpt dtr_ckpt;

typedef struct dtr_ckpt_config {
  const char *dir;    /* checkpoint root; created if missing */
  dtr_comm *comm;     /* the ranks that save together; NULL: a single rank */
  int keep;           /* committed steps to keep; 0 (or < 0): keep all; dtr_ckpt_config_default: 3 */
  int level;          /* zstd level; 0: DTRAIN_CKPT_LEVEL or the default (1, chosen for throughput) */
  size_t chunk_bytes; /* uncompressed bytes per chunk; 0: 4 MiB */
  int threads;        /* background compression threads; 0: 1 */
  const char *job_id; /* recorded in manifests; a load refuses a checkpoint of another job (one saved
                         with no job id loads anywhere). NULL: "" (loads any job's) */
  int timeout_ms;     /* agreement between ranks; 0: the communicator's timeout */
} dtr_ckpt_config;

/* A config with defaults for dir. */
DTR_API dtr_ckpt_config dtr_ckpt_config_default(const char *dir);

/* Create a checkpointer. COLLECTIVE over cfg->comm when given (splits its own communicator from it).
 * On success *out is owned by the caller (dtr_ckpt_destroy). On failure err names the cause. */
DTR_API dtr_result dtr_ckpt_create(const dtr_ckpt_config *cfg, dtr_ckpt **out, char *err, size_t errcap);
/* Wait for a save in flight (its result is logged if it failed), release everything. NULL is fine. */
DTR_API void dtr_ckpt_destroy(dtr_ckpt *ck);
/* Detail of the last failure: the file, chunk, rank, step or key. */
DTR_API const char *dtr_ckpt_last_error(const dtr_ckpt *ck);

/* Where a tensor's data lives. */
typedef enum dtr_ckpt_device {
  DTR_CKPT_HOST = 0, /* host memory (the default: a zeroed dtr_ckpt_tensor is a host tensor) */
  DTR_CKPT_CUDA = 1, /* CUDA device memory of the device current when it is registered (cudaMalloc,
                        or managed memory). Only in builds with CUDA and with a device: otherwise
                        dtr_ckpt_add_tensor fails with DTR_ERR_UNSUPPORTED naming the tensor. Save
                        copies it to pinned host memory; load copies the held box back to the device. */
} dtr_ckpt_device;

/* One tensor as this rank sees it. Held box: offset[i] .. offset[i]+extent[i] of the global shape,
 * stored row-major and contiguous at data. Save box: save_offset/save_extent, inside the held box;
 * all save_extent zero means this rank saves nothing of this tensor. */
typedef struct dtr_ckpt_tensor {
  const char *name; /* unique per checkpointer, but for pieces of one tensor (dtr_ckpt_add_tensor); copied */
  dtr_dtype dtype;
  int ndim; /* 0 (a scalar) .. DTR_CKPT_MAX_DIMS */
  int64_t shape[DTR_CKPT_MAX_DIMS];
  int64_t offset[DTR_CKPT_MAX_DIMS];
  int64_t extent[DTR_CKPT_MAX_DIMS];
  int64_t save_offset[DTR_CKPT_MAX_DIMS];
  int64_t save_extent[DTR_CKPT_MAX_DIMS];
  void *data; /* owned by the caller, valid until dtr_ckpt_destroy; host memory unless `device` says */
  int device; /* a dtr_ckpt_device: DTR_CKPT_HOST (0) or DTR_CKPT_CUDA */
} dtr_ckpt_tensor;

/* A tensor this rank holds whole and saves whole (offset 0, extent = save box = shape). */
DTR_API dtr_ckpt_tensor dtr_ckpt_tensor_full(const char *name, dtr_dtype dtype, int ndim,
                                             const int64_t *shape, void *data);
/* Split the save box of t along dimension 0 into `parts` nearly equal slabs and keep slab `part`
 * (the data-parallel replica's share). Returns t changed. */
DTR_API dtr_ckpt_tensor dtr_ckpt_tensor_save_part(dtr_ckpt_tensor t, int part, int parts);

/* Register a tensor / a blob. A tensor may be registered several times under one name, as pieces of it
 * this rank holds apart (a tensor-parallel shard of a fused weight, an optimizer shard cut across rows):
 * each with the same dtype and shape and a held box that meets no earlier piece's; each piece saves its
 * own save box and loads its own held box. Blobs are per rank: a load gives rank r the blob saved by rank r,
 * or by rank 0 when the saved job had fewer ranks; a blob whose saved size differs fails the load naming it.
 * DTR_ERR_INVALID names the field for a bad box, a duplicate name or a save in flight, an unknown
 * `device`, or a DTR_CKPT_CUDA tensor whose data is not device memory of the current device (or of
 * another device than earlier device tensors: one device per checkpointer). DTR_ERR_UNSUPPORTED: a
 * DTR_CKPT_CUDA tensor in a build without CUDA or on a machine without a CUDA device. Blobs are host
 * memory. */
DTR_API dtr_result dtr_ckpt_add_tensor(dtr_ckpt *ck, const dtr_ckpt_tensor *t);
DTR_API dtr_result dtr_ckpt_add_blob(dtr_ckpt *ck, const char *name, void *data, size_t size);

/* Save synchronously: snapshot, write, agree, commit, rotate. COLLECTIVE. DTR_OK only when the step
 * committed on every rank. */
DTR_API dtr_result dtr_ckpt_save(dtr_ckpt *ck, int64_t step);
/* Save asynchronously: the snapshot (a memcpy of every saved box and blob; a device-to-host copy of
 * device tensors, waited for) happens before it returns; compression, writing and the commit run in
 * the background. One save at a time: a second call first waits for the previous. COLLECTIVE. */
DTR_API dtr_result dtr_ckpt_save_async(dtr_ckpt *ck, int64_t step);
/* *done = 1 when no save is in flight (the last one's result is then returned once). Local. */
DTR_API dtr_result dtr_ckpt_test(dtr_ckpt *ck, int *done);
/* Wait for the save in flight; its result (DTR_OK when none). Local: every rank learns the same result. */
DTR_API dtr_result dtr_ckpt_wait(dtr_ckpt *ck);
/* Time the last save blocked its caller (snapshot) and took in all, in seconds; bytes in and on disk. */
typedef struct dtr_ckpt_stats {
  double blocking_s, total_s;
  uint64_t raw_bytes, stored_bytes;
} dtr_ckpt_stats;
DTR_API void dtr_ckpt_last_stats(const dtr_ckpt *ck, dtr_ckpt_stats *out);

/* Load the newest valid checkpoint into the registered tensors and blobs. COLLECTIVE. *step receives
 * its step. DTR_ERR_NOT_FOUND when there is none (nothing registered is touched); a corrupt newer one
 * is skipped with a warning naming the file and chunk. */
DTR_API dtr_result dtr_ckpt_load(dtr_ckpt *ck, int64_t *step);
/* Load a given step (no fallback). COLLECTIVE. */
DTR_API dtr_result dtr_ckpt_load_step(dtr_ckpt *ck, int64_t step);

/* The newest committed step under dir (the newest step directory; `latest` is only a hint), -1 if none. */
DTR_API dtr_result dtr_ckpt_latest_step(const char *dir, int64_t *step);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_CKPT_H */
