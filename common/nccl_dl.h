/* NCCL, opened with dlopen when the first nccl communicator is made (or `--version` asks), never linked:
 * a program that uses no GPU loads without libnccl. The backend (collectives/comm_nccl.c) still reads as
 * NCCL code: each function it calls is a macro of NCCL's own name for a pointer of the table below, so
 * include this instead of <nccl.h>, and call dtr__nccl_load before the first of them. The library is
 * DTRAIN_NCCL_LIBRARY when set, else libnccl.so.<major of the nccl.h we were built with>, else
 * libnccl.so. A function that NCCL adds to the backend gets a table entry, a name in nccl_dl.c and a
 * macro here. Only in builds with CUDA (DTRAIN_HAVE_CUDA). */
#ifndef DTRAIN_COMMON_NCCL_DL_H
#define DTRAIN_COMMON_NCCL_DL_H
#ifdef DTRAIN_HAVE_CUDA

#include <nccl.h>
#include <stddef.h>

#include "dtrain/common.h"

/* clang-format off */
#define DTR__NCCL_FUNCTIONS(X) \
  X(GetVersion) X(GetUniqueId) X(CommInitRankConfig) X(CommSplit) X(CommAbort) \
  X(CommDestroy) X(CommFinalize) X(CommGetAsyncError) X(CommUserRank) X(CommCount) \
  X(GetErrorString) X(GetLastError) X(GroupStart) X(GroupEnd) X(AllReduce) \
  X(Broadcast) X(Reduce) X(AllGather) X(ReduceScatter) X(AlltoAll) \
  X(Send) X(Recv)
/* clang-format on */

typedef struct dtr__nccl_api {
#define DTR__NCCL_SLOT(n) __typeof__(nccl##n) *n;
  DTR__NCCL_FUNCTIONS(DTR__NCCL_SLOT)
#undef DTR__NCCL_SLOT
} dtr__nccl_api;

/* Filled once by dtr__nccl_load, then only read (any thread). */
extern dtr__nccl_api dtr__nccl;

/* Load NCCL once per process (thread-safe); later calls return the first one's result. DTR_OK, or
 * DTR_ERR_UNSUPPORTED with err naming the library tried and why. */
dtr_result dtr__nccl_load(char *err, size_t errcap);

#define ncclGetVersion dtr__nccl.GetVersion
#define ncclGetUniqueId dtr__nccl.GetUniqueId
#define ncclCommInitRankConfig dtr__nccl.CommInitRankConfig
#define ncclCommSplit dtr__nccl.CommSplit
#define ncclCommAbort dtr__nccl.CommAbort
#define ncclCommDestroy dtr__nccl.CommDestroy
#define ncclCommFinalize dtr__nccl.CommFinalize
#define ncclCommGetAsyncError dtr__nccl.CommGetAsyncError
#define ncclCommUserRank dtr__nccl.CommUserRank
#define ncclCommCount dtr__nccl.CommCount
#define ncclGetErrorString dtr__nccl.GetErrorString
#define ncclGetLastError dtr__nccl.GetLastError
#define ncclGroupStart dtr__nccl.GroupStart
#define ncclGroupEnd dtr__nccl.GroupEnd
#define ncclAllReduce dtr__nccl.AllReduce
#define ncclBroadcast dtr__nccl.Broadcast
#define ncclReduce dtr__nccl.Reduce
#define ncclAllGather dtr__nccl.AllGather
#define ncclReduceScatter dtr__nccl.ReduceScatter
#define ncclAlltoAll dtr__nccl.AlltoAll
#define ncclSend dtr__nccl.Send
#define ncclRecv dtr__nccl.Recv

#endif /* DTRAIN_HAVE_CUDA */
#endif
