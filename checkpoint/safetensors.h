/* The safetensors file format (Hugging Face), written and read without any dependency: 8 bytes of
 * little-endian header length N, N bytes of JSON header (padded with spaces), then the tensors' bytes.
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into
 * the data section) and may hold "__metadata__": {string: string}. `dtrain ckpt export/import` use it.
 *
 * The reader is strict and trusts no size: the header length against the file, every offset against
 * the data section, shape x dtype size against the byte range, and the ranges must tile the data section
 * without holes or overlaps (what the reference Rust implementation also demands). Errors name the file,
 * the tensor and, for JSON, the byte offset in the header. */
#ifndef DTRAIN_CHECKPOINT_SAFETENSORS_H
#define DTRAIN_CHECKPOINT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/ckpt.h"

#define DTR__SFT_MAX_HEADER (100u << 20) /* the reference implementation's limit too */
#define DTR__SFT_MAX_META 256            /* __metadata__ entries */

/* The dtype's safetensors name ("F32", "BF16", ...), or NULL for a type the format cannot name. */
const char *dtr__sft_dtype_name(dtr_dtype t);
/* Parse a safetensors dtype name; DTR_ERR_UNSUPPORTED for a valid name dtrain has no type for
 * ("I8", "BOOL", "F8_E4M3", ...), DTR_ERR_INVALID for anything else. */
dtr_result dtr__sft_dtype_parse(const char *s, dtr_dtype *out);

/* One tensor of a file. */
typedef struct dtr__sft_tensor {
  char *name; /* UTF-8, NUL-free */
  dtr_dtype dtype;
  int ndim;
  int64_t shape[DTR_CKPT_MAX_DIMS];
  uint64_t begin, end; /* byte range in the data section */
} dtr__sft_tensor;

typedef struct dtr__sft_meta {
  char *key, *value;
} dtr__sft_meta;

/* ---- reading */
typedef struct dtr__sft_file {
  char *path;
  int fd;
  uint64_t header_len; /* N */
  uint64_t data_start; /* 8 + N */
  uint64_t data_bytes; /* file size - data_start */
  int ntensors;        /* in header order */
  dtr__sft_tensor *tensors;
  int nmeta;
  dtr__sft_meta *meta;
} dtr__sft_file;

/* Open path and validate its header completely (see above). On success *out is owned by the caller
 * (dtr__sft_close). err names the file and what is wrong. */
dtr_result dtr__sft_open(const char *path, dtr__sft_file **out, char *err, size_t errcap);
void dtr__sft_close(dtr__sft_file *f); /* NULL is fine */
/* Parse a header held in memory (`name` in messages) for a data section of data_bytes: the fuzzable
 * core of dtr__sft_open. *tensors (each name malloc'ed) and *meta are owned by the caller
 * (dtr__sft_free_parsed). */
dtr_result dtr__sft_parse_header(const char *json, size_t len, uint64_t data_bytes, const char *name,
                                 dtr__sft_tensor **tensors, int *ntensors, dtr__sft_meta **meta, int *nmeta,
                                 char *err, size_t errcap);
void dtr__sft_free_parsed(dtr__sft_tensor *tensors, int ntensors, dtr__sft_meta *meta, int nmeta);
/* The tensor named name, or NULL. */
const dtr__sft_tensor *dtr__sft_find(const dtr__sft_file *f, const char *name);
/* The value of a __metadata__ key, or NULL. */
const char *dtr__sft_meta_get(const dtr__sft_file *f, const char *key);
/* Read tensor i's bytes (end - begin of them; dst must hold that). err names file and tensor. */
dtr_result dtr__sft_read(const dtr__sft_file *f, int i, void *dst, char *err, size_t errcap);

/* ---- writing: the header first (every tensor declared up front), then each tensor's bytes in the
 * declared order, appended in as many pieces as the caller likes. The file is built as `path.tmp`,
 * fsynced and renamed over path by dtr__sft_writer_finish; a writer destroyed before that removes it. */
typedef struct dtr__sft_writer dtr__sft_writer;
/* tensors[i].begin/end are ignored (laid out back to back in the given order). meta may be NULL. */
dtr_result dtr__sft_writer_create(const char *path, const dtr__sft_tensor *tensors, int n,
                                  const dtr__sft_meta *meta, int nmeta, dtr__sft_writer **out, char *err,
                                  size_t errcap);
/* Append bytes of the data section (they belong to the tensors in order). More than declared fails. */
dtr_result dtr__sft_writer_append(dtr__sft_writer *w, const void *data, size_t bytes, char *err,
                                  size_t errcap);
/* Check every declared byte arrived, fsync, rename into place. The writer stays to be destroyed. */
dtr_result dtr__sft_writer_finish(dtr__sft_writer *w, char *err, size_t errcap);
/* Close; removes the temporary file unless finish succeeded. NULL is fine. */
void dtr__sft_writer_destroy(dtr__sft_writer *w);

/* A top-level non-negative integer member `key` of the JSON object in json[0..len) (a Hugging Face
 * config.json's "n_head"): DTR_OK with *out, DTR_ERR_NOT_FOUND when the object has no such integer
 * member, DTR_ERR_PROTOCOL naming the byte for malformed JSON. Other members of any kind are skipped. */
dtr_result dtr__json_member_int(const char *json, size_t len, const char *key, int64_t *out, char *err,
                                size_t errcap);

/* The bytes of one tensor of the given dtype and shape (0 for a scalar's shape: 1 element); returns 0
 * and sets *bytes, or -1 on overflow or a negative dimension. */
int dtr__sft_tensor_bytes(dtr_dtype t, int ndim, const int64_t *shape, uint64_t *bytes);

#endif
