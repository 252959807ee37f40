/* How the ranks of a checkpointer agree: the collectives over its own communicator (split at create),
 * each given up after cfg.timeout_ms by aborting that communicator, so a dead peer fails a save or a
 * load instead of hanging it. Used by ckpt_save.c (shards on disk, chunk lists, commit result) and
 * ckpt_load.c (candidate steps, the loaded step). */
#define _GNU_SOURCE
#include <time.h>

#include "checkpoint/ckpt_internal.h"
#include "common/log.h"
#include "common/sock.h"

/* Wait for req, aborting the checkpointer's communicator when cfg.timeout_ms passes first. */
static dtr_result coll_wait(dtr_ckpt *ck, dtr_result issued, dtr_request *req, const char *what) {
  dtr_result rc = issued;
  if (rc == DTR_OK) {
    if (ck->timeout_ms <= 0) {
      rc = dtr_request_wait(req);
    } else {
      double deadline = dtr__now_s() + ck->timeout_ms / 1000.0;
      int done = 0;
      while ((rc = dtr_request_test(req, &done)) == DTR_OK && !done) {
        if (dtr__now_s() > deadline) {
          dtr_comm_abort(ck->comm);
          rc = dtr_request_wait(req);
          if (rc == DTR_OK || rc == DTR_ERR_ABORTED) rc = DTR_ERR_TIMEOUT;
          break;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
      }
    }
  }
  dtr_request_free(req);
  if (rc != DTR_OK)
    return dtr__fail(ck->err, sizeof ck->err, rc, "checkpoint %s: %s between ranks failed: %s", ck->dir, what,
                     dtr_comm_last_error(ck->comm));
  return DTR_OK;
}

dtr_result dtr__ckpt_allreduce_i32(dtr_ckpt *ck, int32_t *v, int n, dtr_redop op, const char *what) {
  if (!ck->comm) return DTR_OK;
  dtr_request *req = NULL;
  dtr_result rc = dtr_all_reduce(ck->comm, v, v, (size_t)n, DTR_I32, op, &req);
  return coll_wait(ck, rc, req, what);
}

dtr_result dtr__ckpt_bcast(dtr_ckpt *ck, void *buf, size_t bytes, int root, const char *what) {
  if (!ck->comm) return DTR_OK;
  dtr_request *req = NULL;
  dtr_result rc = dtr_broadcast(ck->comm, buf, bytes, DTR_U8, root, &req);
  return coll_wait(ck, rc, req, what);
}

dtr_result dtr__ckpt_all_gather(dtr_ckpt *ck, const void *send, void *recv, size_t count, dtr_dtype dtype,
                                const char *what) {
  if (!ck->comm) return DTR_OK;
  dtr_request *req = NULL;
  dtr_result rc = dtr_all_gather(ck->comm, send, recv, count, dtype, &req);
  return coll_wait(ck, rc, req, what);
}
