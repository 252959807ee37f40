/* Internal socket helpers: address parsing, listening, connecting and whole-buffer I/O, each with a
 * deadline and an optional abort flag checked in every wait (the NCCL bootstrap / redis anet habit).
 * All calls retry EINTR. Errors are written into the caller's buffer (err, cap). */
#ifndef DTRAIN_COMMON_SOCK_H
#define DTRAIN_COMMON_SOCK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h" /* deadlines are dtr__now_ms times */
#include "dtrain/common.h"

/* Split "host:port" or "[v6addr]:port" into host and port. host may be empty ("" -> any). */
dtr_result dtr__parse_hostport(const char *s, char *host, size_t hostcap, int *port, char *err, size_t cap);

/* Listen on host:port (port 0: the kernel picks; *bound_port gets the real one). host NULL or ""
 * listens on every IPv4 address. Returns DTR_ERR_ADDRINUSE when the port is taken. The fd is
 * non-blocking and close-on-exec. */
dtr_result dtr__listen(const char *host, int port, int backlog, int *fd, int *bound_port, char *err,
                       size_t cap);

/* Connect to host:port before deadline (absolute, dtr__now_ms based), retrying refused connections
 * every retry_ms until then (0: try once). The returned fd is blocking, close-on-exec, TCP_NODELAY. */
dtr_result dtr__connect(const char *host, int port, int64_t deadline, int retry_ms,
                        const atomic_int *abort_flag, int *fd, char *err, size_t cap);

/* Write or read exactly len bytes before deadline (-1: none). A closed peer on read gives
 * DTR_ERR_CONNECTION. abort_flag (may be NULL) is polled at least every 100 ms. */
dtr_result dtr__write_full(int fd, const void *buf, size_t len, int64_t deadline,
                           const atomic_int *abort_flag, char *err, size_t cap);
dtr_result dtr__read_full(int fd, void *buf, size_t len, int64_t deadline, const atomic_int *abort_flag,
                          char *err, size_t cap);

/* The local IP address (numeric) this connected socket uses: what peers on that network reach us at. */
dtr_result dtr__sock_local_addr(int fd, char *addr, size_t addrcap);
/* The remote "ip:port" of a connected socket, for log messages. */
void dtr__sock_peer_name(int fd, char *out, size_t cap);
/* A TCP port that was free on host a moment ago (bind to port 0, read it, close). */
dtr_result dtr__find_free_port(const char *host, int *port, char *err, size_t cap);
/* True when host (a name or numeric address) resolves to an address of one of this host's interfaces. */
int dtr__host_is_local(const char *host);
/* Make room for `more` descriptors beyond those open now (plus a margin): when the soft open-file limit
 * is too low, raise it (toward the hard limit, never past it); when even the hard limit is too low,
 * fail saying so. *raised_to is the new soft limit when it was raised, else 0. */
dtr_result dtr__fd_room(int more, long *raised_to, char *err, size_t cap);
/* True for the errno values of socket/accept that waiting will not cure (out of descriptors or
 * memory): callers fail at once instead of retrying until their deadline. */
int dtr__fd_exhausted(int err);
/* Fill buf with cryptographically random bytes (getrandom). */
dtr_result dtr__random_bytes(void *buf, size_t len);

#endif
