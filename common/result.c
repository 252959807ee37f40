/* dtr_strerror, the errno converter and the version/feature strings of this build. */
#include <errno.h>

#include "common/check.h"
#include "dtrain/common.h"

dtr_result dtr__errno_result(int e) {
  switch (e) {
    case ENOSPC:
    case EDQUOT:
    case EROFS:
      return DTR_ERR_STORAGE;
    case ENOMEM:
      return DTR_ERR_NOMEM;
    default:
      return DTR_ERR_SYSTEM;
  }
}

const char *dtr_strerror(dtr_result r) {
  switch (r) {
    case DTR_OK:
      return "success";
    case DTR_ERR_INVALID:
      return "invalid argument";
    case DTR_ERR_NOMEM:
      return "out of memory";
    case DTR_ERR_SYSTEM:
      return "system call failed";
    case DTR_ERR_TIMEOUT:
      return "timed out";
    case DTR_ERR_CONNECTION:
      return "connection failed";
    case DTR_ERR_AUTH:
      return "authentication failed";
    case DTR_ERR_PROTOCOL:
      return "protocol error";
    case DTR_ERR_NOT_FOUND:
      return "not found";
    case DTR_ERR_EXISTS:
      return "already exists";
    case DTR_ERR_ABORTED:
      return "aborted";
    case DTR_ERR_ADDRINUSE:
      return "address already in use";
    case DTR_ERR_UNSUPPORTED:
      return "not supported by this build";
    case DTR_ERR_INTERNAL:
      return "internal error";
    case DTR_ERR_STORAGE:
      return "the file system refused the write (full or read-only)";
    case DTR_ERR_PERMANENT:
      return "permanent failure (retrying will not help)";
    case DTR_ERR_FENCED:
      return "superseded by a newer epoch of the store";
    case DTR_ERR_STOPPED:
      return "stopped on request";
  }
  return "unknown dtrain result code";
}

const char *dtr_version(void) {
  return DTRAIN_VERSION_STRING;
}

const char *dtr_build_features(void) {
  return "host"
#ifdef DTRAIN_HAVE_CUDA
         " cuda nccl"
#endif
#ifdef DTRAIN_HAVE_MPI
         " mpi"
#endif
      ;
}
