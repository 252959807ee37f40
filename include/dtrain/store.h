/* dtrain/store.h — the rendezvous store: a small TCP key-value server and its client.
 *
 * Every dtrain job has one store. The launcher's agents meet there to form a rendezvous round (who is
 * in the job, which node gets which rank), to announce a failure to every node at once, and to
 * exchange heartbeats; workers use it to bootstrap their communicators (NCCL unique ids, host
 * addresses). It runs inside the node-0 agent, or alone as `dtrain store --host H --port P`.
 *
 * Semantics, all keys being byte strings of at most DTR_STORE_MAX_KEY bytes (no NUL) and values at
 * most DTR_STORE_MAX_VALUE bytes:
 *   set      store a value, waking every client blocked on that key;
 *   get      return a value, blocking until the key exists or the deadline passes;
 *   add      atomically add a signed delta to a counter (a missing key counts as 0; the value is the
 *            decimal text of the counter, so get sees "3"); returns the new value;
 *   cas      compare-and-set: replace the value only if it equals `expected` (or, with expected NULL,
 *            only if the key is absent); always returns the value now stored;
 *   delete   remove a key;
 *   wait     block until every key of a list exists;
 *   list     the keys that start with a prefix.
 *
 * Security: every connection opens with a handshake carrying the job token (DTRAIN_JOB_TOKEN). A
 * client with a wrong or missing token is refused and the server logs its address, never the token.
 * Robustness: messages are length-prefixed and bounded; a truncated, oversized or garbage message
 * closes that one connection and is logged; the server never blocks on one client. Every blocking
 * client call has a deadline; the server also answers a blocked get/wait with a timeout itself.
 *
 * Threads: a dtr_store_server runs its own event-loop thread (or the caller's, with _run). A dtr_store
 * client connection is NOT thread-safe: use one per thread. dtr_store_abort is the one exception.
 */
#ifndef DTRAIN_STORE_H
#define DTRAIN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DTR_STORE_MAX_KEY 1024          /* bytes in one key */
#define DTR_STORE_MAX_VALUE (16u << 20) /* bytes in one value: 16 MiB */
#define DTR_STORE_MAX_TOKEN 256         /* bytes in a job token */
#define DTR_STORE_MAX_WAIT_KEYS 4096    /* keys in one wait */

/* ---------------------------------------------------------------- server */

typedef struct dtr_store_server dtr_store_server;

/* Create a server listening on host:port. host NULL or "" listens on every IPv4 address; port 0 lets
 * the kernel pick (see dtr_store_server_port). token is copied; it must be 1..DTR_STORE_MAX_TOKEN
 * bytes. Returns DTR_ERR_ADDRINUSE when the port is taken. On success *out is owned by the caller and
 * released with dtr_store_server_destroy. On failure err (if not NULL) receives a one-line reason. */
DTR_API dtr_result dtr_store_server_create(const char *host, int port, const char *token,
                                           dtr_store_server **out, char *err, size_t errcap);
/* The port actually bound. */
DTR_API int dtr_store_server_port(const dtr_store_server *s);
/* Start the event loop on a background thread. Call once. */
DTR_API dtr_result dtr_store_server_start(dtr_store_server *s);
/* Run the event loop on the calling thread until dtr_store_server_stop. */
DTR_API dtr_result dtr_store_server_run(dtr_store_server *s);
/* Ask the loop to stop; safe from any thread and from a signal handler. */
DTR_API void dtr_store_server_stop(dtr_store_server *s);
/* Stop (if running), join the loop thread, close every connection, free everything. NULL is fine. */
DTR_API void dtr_store_server_destroy(dtr_store_server *s);
/* Counters for tests and logs: connections accepted / refused for a bad token / closed for a bad
 * message. Safe from any thread. */
typedef struct dtr_store_server_stats {
  uint64_t accepted, auth_refused, protocol_errors, requests;
} dtr_store_server_stats;
DTR_API void dtr_store_server_get_stats(const dtr_store_server *s, dtr_store_server_stats *out);

/* ---------------------------------------------------------------- client */

typedef struct dtr_store dtr_store;

/* Connect and authenticate before timeout_ms passes, retrying refused connections meanwhile (the
 * server may not be up yet). Returns DTR_ERR_TIMEOUT if it never answered, DTR_ERR_AUTH if it refused
 * the token, DTR_ERR_PROTOCOL if whatever listens there is not a dtrain store. On failure *out is NULL
 * and err (if not NULL) names the endpoint and the reason. */
DTR_API dtr_result dtr_store_connect(const char *host, int port, const char *token, int timeout_ms,
                                     dtr_store **out, char *err, size_t errcap);
/* Connect using the worker environment: DTRAIN_STORE (host:port) and DTRAIN_JOB_TOKEN. */
DTR_API dtr_result dtr_store_connect_env(int timeout_ms, dtr_store **out, char *err, size_t errcap);
/* Close the connection and free the client. NULL is fine. */
DTR_API void dtr_store_close(dtr_store *c);
/* Make the blocked call (and every later one) on this client fail with DTR_ERR_ABORTED within 100 ms.
 * The one call that is safe from another thread. */
DTR_API void dtr_store_abort(dtr_store *c);
/* The detail of the last failure on this client (names the key and the deadline). */
DTR_API const char *dtr_store_last_error(const dtr_store *c);
/* The local address of this client's connection: how the store's network sees this host. */
DTR_API const char *dtr_store_local_addr(const dtr_store *c);

/* Default deadline for calls that do not take one (set, add, cas, delete, list): DTRAIN_STORE_TIMEOUT_MS
 * or 30000. Calls that block for a key take their own timeout_ms (-1: wait forever). */

DTR_API dtr_result dtr_store_set(dtr_store *c, const char *key, const void *val, size_t len);
/* On success *val is malloc'ed (caller frees) and NUL-terminated past len for convenience. */
DTR_API dtr_result dtr_store_get(dtr_store *c, const char *key, int timeout_ms, void **val, size_t *len);
/* Like get but never blocks: DTR_ERR_NOT_FOUND when absent. */
DTR_API dtr_result dtr_store_try_get(dtr_store *c, const char *key, void **val, size_t *len);
DTR_API dtr_result dtr_store_add(dtr_store *c, const char *key, int64_t delta, int64_t *new_value);
/* expected NULL: set only if absent. *swapped says whether our value went in; *actual (optional,
 * malloc'ed) receives the value stored after the call. */
DTR_API dtr_result dtr_store_cas(dtr_store *c, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, int *swapped, void **actual, size_t *alen);
/* *existed (optional) says whether the key was there. */
DTR_API dtr_result dtr_store_delete(dtr_store *c, const char *key, int *existed);
DTR_API dtr_result dtr_store_wait(dtr_store *c, const char *const *keys, int nkeys, int timeout_ms);
/* *keys is a malloc'ed array of malloc'ed strings; free with dtr_store_free_list. */
DTR_API dtr_result dtr_store_list(dtr_store *c, const char *prefix, char ***keys, int *nkeys);
DTR_API void dtr_store_free_list(char **keys, int nkeys);

/* A barrier over the store: each of `world` participants calls it once with the same name; returns
 * when all have arrived. Collective over those participants. */
DTR_API dtr_result dtr_store_barrier(dtr_store *c, const char *name, int world, int timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_STORE_H */
