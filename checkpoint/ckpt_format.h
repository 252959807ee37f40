/* The checkpoint's on-disk pieces as the rest of checkpoint/ sees them: the manifest (manifest.c,
 * YAML through libyaml) and the shard files (shard_write.c / shard_read.c, chunks through codec.c).
 * docs/checkpoint-format.md describes the bytes; this header is the contract between those files, the
 * checkpointer (ckpt.c and friends) and the `dtrain ckpt` tools. */
#ifndef DTRAIN_CHECKPOINT_FORMAT_H
#define DTRAIN_CHECKPOINT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/ckpt.h"

#define DTR__MANIFEST_VERSION 1 /* manifest.yaml `format: 1`; a newer one is refused */
#define DTR__SHARD_VERSION 1    /* the shard header's version; a newer one is refused */

/* How one chunk's bytes are stored. */
typedef enum dtr__codec {
  DTR__CODEC_RAW = 0,         /* as is */
  DTR__CODEC_ZSTD = 1,        /* zstd of the raw bytes (integers, blobs) */
  DTR__CODEC_PLANES_ZSTD = 2, /* float elements split into byte planes (exponent bytes first), then zstd */
} dtr__codec;

/* One independently readable chunk: a run of whole elements of a piece, in row-major order of the
 * piece's box. */
typedef struct dtr__chunk {
  uint64_t elem_begin, elem_count; /* blobs: byte range (elements of one byte) */
  uint64_t file_offset;            /* where its stored bytes start in the shard file */
  uint64_t stored_bytes;
  uint64_t checksum; /* XXH64 (seed 0) of the stored bytes */
  uint32_t codec;    /* dtr__codec */
} dtr__chunk;

/* One saved box of a tensor, or one rank's blob, in the shard file of `rank`. */
typedef struct dtr__piece {
  int rank;
  int64_t offset[DTR_CKPT_MAX_DIMS], extent[DTR_CKPT_MAX_DIMS]; /* tensors only */
  uint64_t raw_bytes;
  int nchunks;
  dtr__chunk *chunks;
} dtr__piece;

/* A named tensor (with every saved box) or a named blob (one piece per saving rank). */
typedef struct dtr__entry {
  char *name;
  int is_blob;
  dtr_dtype dtype; /* blobs: DTR_U8 */
  int ndim;
  int64_t shape[DTR_CKPT_MAX_DIMS];
  int npieces;
  dtr__piece *pieces;
} dtr__entry;

typedef struct dtr__manifest {
  int format; /* DTR__MANIFEST_VERSION */
  char *job_id;
  int64_t step;
  int world; /* shard files rank_00000 .. rank_{world-1} */
  int level; /* zstd level used */
  uint64_t chunk_bytes;
  char *created; /* UTC, ISO 8601 */
  uint64_t raw_bytes, stored_bytes;
  int nentries;
  dtr__entry *entries;
} dtr__manifest;

/* ---- manifest.c */
/* Write m as YAML to path (O_EXCL|O_CREAT, then fsync). err names the path and the cause. */
dtr_result dtr__manifest_write(const char *path, const dtr__manifest *m, char *err, size_t errcap);
/* Read and validate a manifest. Every problem is reported as `path:line:col: what` (a missing key,
 * a wrong type, a box outside its shape, chunks that do not cover a piece, format newer than ours).
 * On success *out is owned by the caller (dtr__manifest_free). */
dtr_result dtr__manifest_read(const char *path, dtr__manifest **out, char *err, size_t errcap);
/* The same from memory (`name` in messages); the fuzz target's entry. */
dtr_result dtr__manifest_parse(const char *text, size_t len, const char *name, dtr__manifest **out, char *err,
                               size_t errcap);
void dtr__manifest_free(dtr__manifest *m);
/* The entry named `name`, or NULL. */
const dtr__entry *dtr__manifest_find(const dtr__manifest *m, const char *name);

/* ---- shard_write.c: one rank's shard file */
typedef struct dtr__shard_source {
  const char *name;
  int is_blob;
  dtr_dtype dtype;
  const void *data; /* raw_bytes of row-major elements of the saved box (or the blob) */
  uint64_t raw_bytes;
} dtr__shard_source;

typedef struct dtr__shard_params {
  int level;            /* zstd level */
  uint64_t chunk_bytes; /* raw bytes per chunk, rounded down to whole elements */
  int threads;          /* compression threads */
  const char *job_id;
  int64_t step;
  int rank, world;
} dtr__shard_params;

/* Write sources[0..n) to path (created with O_EXCL; header, chunks, index, footer; fsynced). On
 * success pieces[i] receives sources[i]'s chunks (rank and raw_bytes set; the caller fills the box)
 * and owns pieces[i].chunks (free()). On failure the partial file is removed; err names path and cause
 * (ENOSPC, EROFS, EFBIG ... as text). */
dtr_result dtr__shard_write(const char *path, const dtr__shard_source *sources, int n,
                            const dtr__shard_params *p, dtr__piece *pieces, char *err, size_t errcap);

/* ---- shard_read.c */
typedef struct dtr__shard dtr__shard;
/* Open a shard and check its header: magic, version (newer: DTR_ERR_UNSUPPORTED), job id (when job_id
 * is not NULL or ""), step (unless step < 0) and rank (unless rank < 0); a mismatch is
 * DTR_ERR_PROTOCOL. err names the file. */
dtr_result dtr__shard_open(const char *path, const char *job_id, int64_t step, int rank, dtr__shard **out,
                           char *err, size_t errcap);
void dtr__shard_close(dtr__shard *s);
/* Read one chunk, verify its checksum, decode it into dst (elem_count * dtype size bytes; blobs:
 * elem_count bytes). A mismatch is DTR_ERR_PROTOCOL naming the file, the chunk's offset and the piece. */
dtr_result dtr__shard_read_chunk(dtr__shard *s, const char *piece_name, dtr_dtype dtype, const dtr__chunk *c,
                                 void *dst, char *err, size_t errcap);
/* The shard's own index (written after the chunks), for `dtrain ckpt verify` without a manifest:
 * names, dtypes and chunks of every source. The arrays are owned by s. */
typedef struct dtr__shard_index_entry {
  const char *name;
  int is_blob;
  dtr_dtype dtype;
  uint64_t raw_bytes;
  int nchunks;
  const dtr__chunk *chunks;
} dtr__shard_index_entry;
dtr_result dtr__shard_index(dtr__shard *s, const dtr__shard_index_entry **entries, int *n, char *err,
                            size_t errcap);

/* ---- codec.c: one chunk */
/* A codec context holds one zstd compression and one decompression context, reused chunk after chunk
 * (creating them per chunk costs more than compressing a small chunk). One thread uses a context at a
 * time: a writer with N threads keeps N of them. No global state lives behind these calls. */
typedef struct dtr__codec_ctx dtr__codec_ctx;
/* DTR_ERR_NOMEM when zstd cannot allocate; *out is owned by the caller (dtr__codec_ctx_destroy). */
dtr_result dtr__codec_ctx_create(dtr__codec_ctx **out);
void dtr__codec_ctx_destroy(dtr__codec_ctx *cx); /* NULL is fine */
/* The largest stored size of raw_bytes. */
size_t dtr__codec_bound(size_t raw_bytes);
/* Encode: picks the codec (planes for f32/f64/f16/bf16, plain zstd otherwise; raw when that is not
 * smaller). scratch must hold raw_bytes; dst_cap should be dtr__codec_bound(raw_bytes). level is a
 * zstd level (0: 1). docs/checkpoint-format.md describes the stored bytes. */
dtr_result dtr__codec_encode(dtr__codec_ctx *cx, const void *src, size_t raw_bytes, dtr_dtype t, int level,
                             void *scratch, void *dst, size_t dst_cap, size_t *stored, uint32_t *codec);
/* Decode exactly raw_bytes into dst; a malformed input is DTR_ERR_PROTOCOL, never a crash. scratch
 * must hold raw_bytes. */
dtr_result dtr__codec_decode(dtr__codec_ctx *cx, uint32_t codec, const void *src, size_t stored, dtr_dtype t,
                             void *dst, size_t raw_bytes, void *scratch);

#endif
