/* What the launcher's agents need of the store beyond the public API (store.h): a standby copy of the
 * rendezvous state and fenced epochs, so that losing the store's host does not end the job
 * (docs/store.md, "Standby and epochs"). Not exported: the agents link the internal library.
 *
 * Every server has an epoch, 0 at creation. A primary mirrors each change of a key under its mirror
 * prefix to one standby server (MIRROR requests carrying the primary's epoch) before it answers the
 * client that made the change. A standby applies MIRROR requests from its own epoch or a newer one
 * (adopting it) and refuses older ones with DTR_ERR_FENCED. The EPOCH request raises a server's epoch:
 * the agents promote the standby that way when the primary is lost, after which the old primary, if it
 * comes back, gets DTR_ERR_FENCED for its next change and answers every client with it from then on. */
#ifndef DTRAIN_COMMON_STORE_INTERNAL_H
#define DTRAIN_COMMON_STORE_INTERNAL_H

#include <stdint.h>

#include "dtrain/store.h"

/* ---- server */

/* Mirror the keys starting with prefix to the standby at host:port (token: the job's), starting with a
 * copy of every such key the server holds; replaces an earlier standby. host NULL stops mirroring.
 * timeout_ms bounds each exchange (a standby that does not answer in time is dropped: the server goes
 * on unmirrored). Safe from any thread: the event loop applies it. */
dtr_result dtr__store_server_mirror(dtr_store_server *s, const char *host, int port, const char *token,
                                    const char *prefix, int timeout_ms);
/* The server's epoch, and whether a newer epoch fenced it. Safe from any thread. */
int64_t dtr__store_server_epoch(const dtr_store_server *s);
int dtr__store_server_fenced(const dtr_store_server *s);
/* Changes acknowledged by the standby so far (tests). Safe from any thread. */
uint64_t dtr__store_server_mirrored(const dtr_store_server *s);

/* ---- client */

/* Raise the server's epoch to propose when it is lower (0: only read it); *epoch receives the epoch
 * now in force (the higher of the two). */
dtr_result dtr__store_epoch(dtr_store *c, int64_t propose, int64_t *epoch);
/* Apply one change at a standby under epoch: set key to val[0..len) (del 0) or delete it (del 1).
 * DTR_ERR_FENCED when the standby knows a newer epoch (*newer receives it). */
dtr_result dtr__store_mirror_op(dtr_store *c, int64_t epoch, int del, const char *key, size_t klen,
                                const void *val, size_t len, int64_t *newer);
/* Deadlines of this client: default_ms for calls without one (set, add, cas, ...), grace_ms how long a
 * blocking get or wait may outlast its own timeout before the server counts as unresponsive. */
void dtr__store_set_timeouts(dtr_store *c, int default_ms, int grace_ms);
/* 1 when the client holds an open connection: after DTR_ERR_TIMEOUT, 0 means no answer came at all (a
 * lost server) rather than the server's own "still missing at the deadline". */
int dtr__store_connected(const dtr_store *c);
/* "host:port" this client talks to. */
const char *dtr__store_endpoint(const dtr_store *c, char *buf, size_t cap);

#endif
