/* dtrain/common.h — results, versions and element types shared by every dtrain subsystem.
 *
 * Every dtrain library call returns a dtr_result. DTR_OK is zero; every other value names a class of
 * failure that a caller can act on (retry on DTR_ERR_TIMEOUT, give up on DTR_ERR_AUTH, ...). The detail
 * (which key, which rank, which file) lives in the failing object's last-error string, because a code
 * alone cannot say "key rdzv/job1/r0/event was still missing after 30000 ms".
 *
 * The element types (dtr_dtype) name what a buffer holds wherever dtrain moves or stores one: the
 * communicators' operations, checkpoint tensors, the model's kernels.
 *
 * The numeric values are stable once released: append new codes, never renumber.
 */
#ifndef DTRAIN_COMMON_H
#define DTRAIN_COMMON_H

#include <stddef.h>

/* DTR_API marks the functions libdtrain exports. The library is built with hidden visibility, so a
 * function without it stays inside the library, whatever its name. It is an attribute only: the
 * declarations below sit in extern "C", so C++ callers link the same unmangled names. A program may
 * define DTR_API itself before the first dtrain include (say, as nothing) to override it. */
#ifndef DTR_API
#if defined(__GNUC__) || defined(__clang__)
#define DTR_API __attribute__((visibility("default")))
#else
#define DTR_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DTRAIN_VERSION_MAJOR 0
#define DTRAIN_VERSION_MINOR 1
#define DTRAIN_VERSION_PATCH 0
#define DTRAIN_VERSION_STRING "0.1.0"

typedef enum dtr_result {
  DTR_OK = 0,
  DTR_ERR_INVALID = 1,      /* a bad argument, flag, key or value supplied by the caller */
  DTR_ERR_NOMEM = 2,        /* an allocation failed */
  DTR_ERR_SYSTEM = 3,       /* an operating-system call failed (errno in the detail) */
  DTR_ERR_TIMEOUT = 4,      /* a deadline passed before the operation completed */
  DTR_ERR_CONNECTION = 5,   /* a peer could not be reached, or the connection broke */
  DTR_ERR_AUTH = 6,         /* the peer refused our job token, or presented a wrong one */
  DTR_ERR_PROTOCOL = 7,     /* a message was truncated, oversized, or not a dtrain message */
  DTR_ERR_NOT_FOUND = 8,    /* the key, file or program does not exist */
  DTR_ERR_EXISTS = 9,       /* something already exists (a lost compare-and-set is not an error) */
  DTR_ERR_ABORTED = 10,     /* the operation was aborted from another thread */
  DTR_ERR_ADDRINUSE = 11,   /* the address or port is already taken */
  DTR_ERR_UNSUPPORTED = 12, /* this build lacks the feature (no CUDA, no MPI, ...) */
  DTR_ERR_INTERNAL = 13,    /* a dtrain bug: please report it */
  DTR_ERR_STORAGE = 14,     /* the file system refused a write: full (ENOSPC, EDQUOT) or read-only (EROFS) */
  DTR_ERR_PERMANENT = 15,   /* a failure that recurs if retried as is (diverged training, no valid checkpoint,
                               no GPU, a save that cannot be written): do not restart */
  DTR_ERR_FENCED = 16,      /* the job's store moved on to a newer epoch (its standby took over): this one
                               and whoever talks to it are cut off */
  DTR_ERR_STOPPED = 17,     /* stopped early on request (a preemption) at a step boundary, state saved */
} dtr_result;

/* A static English description of a result code; never NULL, thread-safe. */
DTR_API const char *dtr_strerror(dtr_result r);

typedef enum dtr_dtype {
  DTR_F32 = 0,
  DTR_F64 = 1,
  DTR_F16 = 2,
  DTR_BF16 = 3,
  DTR_I32 = 4,
  DTR_I64 = 5,
  DTR_U8 = 6,
} dtr_dtype;

/* Size in bytes of one element; 0 for an unknown type. Pure, thread-safe. */
DTR_API size_t dtr_dtype_size(dtr_dtype t);
/* The type's name for messages and files ("f32", "bf16", ...; "?dtype" for an unknown one); static. */
DTR_API const char *dtr_dtype_name(dtr_dtype t);
/* Parse a name ("f32", "bf16", ..., and PyTorch's and numpy's "float32", "half", "bfloat16", ...).
 * DTR_ERR_INVALID otherwise. */
DTR_API dtr_result dtr_dtype_parse(const char *s, dtr_dtype *out);

/* The library's version string ("0.1.0") and the features this build has, e.g. "cuda nccl mpi". */
DTR_API const char *dtr_version(void);
DTR_API const char *dtr_build_features(void);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_COMMON_H */
