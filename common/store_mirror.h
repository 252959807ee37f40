/* The store's mirror: a thread of the primary store server that forwards every change of a mirrored key
 * to the standby store, in order, over an ordinary client connection (the MIRROR request, which carries
 * the primary's epoch). The server's event loop queues each change and holds the answer to the client
 * that made it until the standby acknowledged it (synchronous mirroring without blocking the loop); the
 * thread wakes the loop through an eventfd whenever it acknowledged something or stopped. It stops for
 * good when the standby cannot be reached (the server then runs unmirrored: availability first) or
 * answers DTR_ERR_FENCED (a newer epoch exists: the primary was superseded and must stop serving). */
#ifndef DTRAIN_COMMON_STORE_MIRROR_H
#define DTRAIN_COMMON_STORE_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

typedef struct dtr__mirror dtr__mirror;

typedef enum dtr__mirror_state {
  DTR__MIRROR_UP = 0,
  DTR__MIRROR_LOST = 1,
  DTR__MIRROR_FENCED = 2
} dtr__mirror_state;

/* Start the thread toward host:port. Every exchange has timeout_ms; wake_fd is written (8 bytes) after
 * each acknowledgement and when the thread stops. *out is owned by the caller (dtr__mirror_stop). */
dtr_result dtr__mirror_start(const char *host, int port, const char *token, int timeout_ms, int wake_fd,
                             dtr__mirror **out);
/* Queue a change (del 0: key now holds val[0..vlen); del 1: key was deleted) made under epoch; returns
 * its sequence number, or 0 when the mirror has stopped (nothing to wait for). Event-loop thread only. */
uint64_t dtr__mirror_push(dtr__mirror *m, int64_t epoch, int del, const void *key, size_t klen,
                          const void *val, size_t vlen);
/* The highest acknowledged sequence number and the state; for DTR__MIRROR_FENCED *newer receives the
 * epoch that superseded the primary, for both stopped states why[] says what happened. */
uint64_t dtr__mirror_acked(dtr__mirror *m, dtr__mirror_state *state, int64_t *newer, char *why, size_t cap);
/* "host:port" of the standby. */
const char *dtr__mirror_target(const dtr__mirror *m);
/* Tell the thread to stop (its exchange in flight is aborted; a connect still in progress runs out its
 * timeout); pushes return 0 from now on. dtr__mirror_exited says when it is gone. */
void dtr__mirror_retire(dtr__mirror *m);
int dtr__mirror_exited(dtr__mirror *m);
/* Retire, join the thread (waits for it) and free everything. NULL is fine. */
void dtr__mirror_stop(dtr__mirror *m);

#endif
