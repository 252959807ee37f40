/* The rendezvous store client (store.h): one blocking connection, a deadline on every call and an
 * abort flag polled while waiting. A connection that broke or lost track of a reply is closed and
 * reopened at the start of the next call; the failed call itself is never retried. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/check.h"
#include "common/param.h"
#include "common/sock.h"
#include "common/store_internal.h"
#include "common/store_proto.h"
#include "dtrain/store.h"

/* A blocking call's server-side deadline is its timeout; the client waits this much longer for
 * the server's own timeout answer before it declares the server unresponsive. */
#define REPLY_GRACE_MS 2000
#define CONNECT_RETRY_MS 100

struct dtr_store {
  int fd;
  int port;
  char host[256];
  char token[DTR_STORE_MAX_TOKEN + 1];
  int default_ms;
  int grace_ms; /* REPLY_GRACE_MS unless dtr__store_set_timeouts says otherwise */
  atomic_int abort_flag;
  dtr__sp_buf wbuf, rbuf;
  size_t roff;
  char local[64];
  char err[512];
};

static int64_t deadline_in(int ms) {
  return ms < 0 ? -1 : dtr__now_ms() + ms;
}

static void drop_connection(dtr_store *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->rbuf.len = c->roff = 0;
}

/* Read more bytes into rbuf before the deadline, waking every 100 ms to look at the abort flag. */
static dtr_result recv_more(dtr_store *c, size_t room, int64_t deadline, char *err, size_t cap) {
  if (dtr__sp_reserve(&c->rbuf, room)) return dtr__fail(err, cap, DTR_ERR_NOMEM, "out of memory for a reply");
  for (;;) {
    if (atomic_load(&c->abort_flag)) return dtr__fail(err, cap, DTR_ERR_ABORTED, "aborted");
    int left = dtr__ms_left(deadline);
    if (left == 0) return dtr__fail(err, cap, DTR_ERR_TIMEOUT, "no reply before the deadline");
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int n = poll(&p, 1, left < 0 || left > 100 ? 100 : left);
    if (n < 0 && errno != EINTR) return dtr__fail(err, cap, DTR_ERR_SYSTEM, "poll: %s", strerror(errno));
    if (n <= 0) continue;
    ssize_t r = recv(c->fd, c->rbuf.p + c->rbuf.len, c->rbuf.cap - c->rbuf.len, MSG_DONTWAIT);
    if (r > 0) {
      c->rbuf.len += (size_t)r;
      return DTR_OK;
    }
    if (r == 0) return dtr__fail(err, cap, DTR_ERR_CONNECTION, "the store closed the connection");
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      return dtr__fail(err, cap, DTR_ERR_CONNECTION, "recv: %s", strerror(errno));
  }
}

/* Receive one response frame; resp points into rbuf until the next receive. */
static dtr_result read_response(dtr_store *c, int64_t deadline, dtr__sp_response *resp, char *err,
                                size_t cap) {
  if (c->roff > 0) { /* drop the previous reply */
    memmove(c->rbuf.p, c->rbuf.p + c->roff, c->rbuf.len - c->roff);
    c->rbuf.len -= c->roff;
    c->roff = 0;
  }
  for (;;) {
    size_t need = 4;
    if (c->rbuf.len >= 4) {
      uint32_t flen;
      DTR_CHECK(dtr__sp_frame_len(c->rbuf.p, DTR__SP_MAX_FRAME, &flen, err, cap));
      need = 4 + (size_t)flen;
      if (c->rbuf.len >= need) {
        DTR_CHECK(dtr__sp_parse_response(c->rbuf.p + 4, flen, resp, err, cap));
        c->roff = need;
        return DTR_OK;
      }
    }
    size_t room = need - c->rbuf.len;
    DTR_CHECK(recv_more(c, room < 65536 ? 65536 : room, deadline, err, cap));
  }
}

/* Connect, send our hello and read the server's verdict. */
static dtr_result open_connection(dtr_store *c, int64_t deadline) {
  char detail[256];
  dtr_result rc = dtr__connect(c->host, c->port, deadline, CONNECT_RETRY_MS, &c->abort_flag, &c->fd, detail,
                               sizeof detail);
  if (rc) {
    c->fd = -1;
    return dtr__fail(c->err, sizeof c->err, rc, "store %s:%d: %s", c->host, c->port, detail);
  }
  c->rbuf.len = c->roff = 0;
  c->wbuf.len = 0;
  DTR_CHECK_GOTO(dtr__sp_encode_hello(&c->wbuf, c->token, strlen(c->token)), rc, fail);
  DTR_CHECK_GOTO(
      dtr__write_full(c->fd, c->wbuf.p, c->wbuf.len, deadline, &c->abort_flag, detail, sizeof detail), rc,
      fail);
  for (int guard = 0; guard < 1000; guard++) {
    uint16_t version;
    uint8_t status;
    dtr__sp_bytes msg;
    long n =
        dtr__sp_parse_hello_reply(c->rbuf.p, c->rbuf.len, &version, &status, &msg, detail, sizeof detail);
    if (n < 0) {
      rc = DTR_ERR_PROTOCOL;
      goto fail;
    }
    if (n > 0) {
      if (status != DTR_OK) {
        rc = status == DTR_ERR_AUTH ? DTR_ERR_AUTH : DTR_ERR_PROTOCOL;
        snprintf(detail, sizeof detail, "refused us: %.*s", (int)msg.len, (const char *)msg.p);
        goto fail;
      }
      c->roff = (size_t)n;
      dtr__sock_local_addr(c->fd, c->local, sizeof c->local);
      return DTR_OK;
    }
    rc = recv_more(c, 1024, deadline, detail, sizeof detail);
    /* A peer that hangs up mid-handshake without a word is no dtrain store we can talk to. */
    if (rc == DTR_ERR_CONNECTION)
      snprintf(detail, sizeof detail, "closed the connection during the handshake");
    if (rc) goto fail;
  }
  rc = DTR_ERR_PROTOCOL;
  snprintf(detail, sizeof detail, "handshake did not complete");
fail:
  drop_connection(c);
  return dtr__fail(c->err, sizeof c->err, rc, "store %s:%d: %s", c->host, c->port, detail);
}

dtr_result dtr_store_connect(const char *host, int port, const char *token, int timeout_ms, dtr_store **out,
                             char *err, size_t errcap) {
  *out = NULL;
  size_t tlen = token ? strlen(token) : 0;
  if (!host || strlen(host) >= 256 || port <= 0 || port > 65535 || tlen > DTR_STORE_MAX_TOKEN)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "bad store address %s:%d or token (%zu bytes, limit %d)",
                     host ? host : "(null)", port, tlen, DTR_STORE_MAX_TOKEN);
  dtr_store *c = calloc(1, sizeof *c);
  if (!c) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
  c->fd = -1;
  snprintf(c->host, sizeof c->host, "%s", host);
  c->port = port;
  if (tlen) memcpy(c->token, token, tlen);
  c->default_ms = (int)dtr__param_int("DTRAIN_STORE_TIMEOUT_MS", 30000);
  if (c->default_ms <= 0) c->default_ms = 30000;
  c->grace_ms = REPLY_GRACE_MS;
  int64_t deadline = deadline_in(timeout_ms < 0 ? c->default_ms : timeout_ms);
  dtr_result rc = open_connection(c, deadline);
  if (rc) {
    if (err && errcap) snprintf(err, errcap, "%s", c->err);
    dtr_store_close(c);
    return rc;
  }
  *out = c;
  return DTR_OK;
}

dtr_result dtr_store_connect_env(int timeout_ms, dtr_store **out, char *err, size_t errcap) {
  *out = NULL;
  const char *addr = dtr__param_str("DTRAIN_STORE", NULL);
  const char *token = dtr__param_str("DTRAIN_JOB_TOKEN", NULL);
  if (!addr) return dtr__fail(err, errcap, DTR_ERR_INVALID, "DTRAIN_STORE is not set (expected HOST:PORT)");
  if (!token)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "DTRAIN_JOB_TOKEN is not set (the store's job token)");
  char host[256], detail[256];
  int port;
  if (dtr__parse_hostport(addr, host, sizeof host, &port, detail, sizeof detail))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "DTRAIN_STORE: %s", detail);
  return dtr_store_connect(host[0] ? host : "127.0.0.1", port, token, timeout_ms, out, err, errcap);
}

void dtr_store_close(dtr_store *c) {
  if (!c) return;
  drop_connection(c);
  dtr__sp_buf_free(&c->wbuf);
  dtr__sp_buf_free(&c->rbuf);
  memset(c->token, 0, sizeof c->token);
  free(c);
}

void dtr_store_abort(dtr_store *c) {
  if (c) atomic_store(&c->abort_flag, 1);
}

const char *dtr_store_last_error(const dtr_store *c) {
  return c ? c->err : "no store client";
}
const char *dtr_store_local_addr(const dtr_store *c) {
  return c ? c->local : "";
}

/* ---------------------------------------------------------------- requests */

static const char *op_name(uint8_t op) {
  static const char *names[] = {"?",      "set",  "get",  "try_get", "add",  "cas",
                                "delete", "wait", "list", "mirror",  "epoch"};
  return op <= DTR__SP_EPOCH ? names[op] : "?";
}

static dtr_result check_key(dtr_store *c, const char *what, const char *key, int allow_empty) {
  if (!key) return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "%s: key is NULL", what);
  size_t n = strlen(key);
  if ((n == 0 && !allow_empty) || n > DTR_STORE_MAX_KEY)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "%s: key '%.64s%s' is %zu bytes (allowed 1..%d)",
                     what, key, n > 64 ? "..." : "", n, DTR_STORE_MAX_KEY);
  return DTR_OK;
}

static dtr_result check_value(dtr_store *c, const char *what, const char *key, const void *v, size_t n) {
  if (n > DTR_STORE_MAX_VALUE)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID,
                     "%s '%.100s': value of %zu bytes exceeds the limit of %u", what, key, n,
                     DTR_STORE_MAX_VALUE);
  if (n && !v)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "%s '%.100s': value is NULL", what, key);
  return DTR_OK;
}

typedef struct call {
  uint8_t op, flags;
  int32_t timeout_ms; /* server-side wait for GET/WAIT */
  int64_t delta;
  int nkeys;
  const char *const *keys;
  int nvals;
  const void *vals[2];
  size_t vlens[2];
  int wait_ms; /* client's own budget (before the grace), -1 forever */
} call;

/* Send one request and read its reply. A failure of the exchange itself drops the connection, since
 * its reply may still be on the way; a failure status from the server keeps it. */
static dtr_result roundtrip(dtr_store *c, const call *k, dtr__sp_response *resp) {
  const char *key0 = k->nkeys > 0 ? k->keys[0] : "";
  const char *what = op_name(k->op);
  if (atomic_load(&c->abort_flag))
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_ABORTED, "%s '%.100s': the client was aborted", what,
                     key0);
  int64_t deadline = k->wait_ms < 0 ? -1
                                    : dtr__now_ms() + k->wait_ms +
                                          (k->op == DTR__SP_GET || k->op == DTR__SP_WAIT ? c->grace_ms : 0);
  if (c->fd < 0) DTR_CHECK(open_connection(c, deadline));
  size_t klens_small[4], *klens = k->nkeys <= 4 ? klens_small : malloc((size_t)k->nkeys * sizeof *klens);
  if (!klens) return dtr__fail(c->err, sizeof c->err, DTR_ERR_NOMEM, "%s: out of memory", what);
  for (int i = 0; i < k->nkeys; i++) klens[i] = strlen(k->keys[i]);
  c->wbuf.len = 0;
  dtr_result rc = dtr__sp_encode_request(&c->wbuf, k->op, k->flags, k->timeout_ms, k->delta, k->nkeys,
                                         k->keys, klens, k->nvals, k->vals, k->vlens);
  if (klens != klens_small) free(klens);
  if (rc) return dtr__fail(c->err, sizeof c->err, rc, "%s '%.100s': cannot encode the request", what, key0);
  char detail[256];
  rc = dtr__write_full(c->fd, c->wbuf.p, c->wbuf.len, deadline, &c->abort_flag, detail, sizeof detail);
  if (rc == DTR_OK) rc = read_response(c, deadline, resp, detail, sizeof detail);
  if (rc) {
    drop_connection(c);
    if (rc == DTR_ERR_TIMEOUT)
      return dtr__fail(c->err, sizeof c->err, rc, "%s '%.100s': store %s:%d did not answer within %d ms",
                       what, key0, c->host, c->port, k->wait_ms);
    return dtr__fail(c->err, sizeof c->err, rc, "%s '%.100s': store %s:%d: %s", what, key0, c->host, c->port,
                     detail);
  }
  if (resp->status == DTR_OK) return DTR_OK;
  const uint8_t *cur = resp->items;
  dtr__sp_bytes m = resp->nitems ? dtr__sp_next_item(&cur) : (dtr__sp_bytes){NULL, 0};
  dtr_result st = (dtr_result)resp->status;
  if (st == DTR_ERR_TIMEOUT)
    return dtr__fail(c->err, sizeof c->err, st, "%s '%.100s'%s: still missing after %d ms (store %s:%d)",
                     what, key0, k->nkeys > 1 ? " and others" : "", k->timeout_ms, c->host, c->port);
  return dtr__fail(c->err, sizeof c->err, st, "%s '%.100s': %.*s%s%s (store %s:%d)", what, key0, (int)m.len,
                   m.p ? (const char *)m.p : "", m.len ? ": " : "", dtr_strerror(st), c->host, c->port);
}

/* Copy an item out as a malloc'ed, NUL-terminated buffer. */
static dtr_result copy_item(dtr_store *c, dtr__sp_bytes b, void **val, size_t *len) {
  char *p = malloc((size_t)b.len + 1);
  if (!p) return dtr__fail(c->err, sizeof c->err, DTR_ERR_NOMEM, "out of memory for a %u-byte value", b.len);
  if (b.len) memcpy(p, b.p, b.len);
  p[b.len] = 0;
  *val = p;
  if (len) *len = b.len;
  return DTR_OK;
}

dtr_result dtr_store_set(dtr_store *c, const char *key, const void *val, size_t len) {
  DTR_CHECK(check_key(c, "set", key, 0));
  DTR_CHECK(check_value(c, "set", key, val, len));
  call k = {.op = DTR__SP_SET,
            .nkeys = 1,
            .keys = &key,
            .nvals = 1,
            .vals = {val},
            .vlens = {len},
            .wait_ms = c->default_ms};
  dtr__sp_response r;
  return roundtrip(c, &k, &r);
}

static dtr_result get_common(dtr_store *c, uint8_t op, const char *key, int timeout_ms, void **val,
                             size_t *len) {
  *val = NULL;
  if (len) *len = 0;
  DTR_CHECK(check_key(c, op_name(op), key, 0));
  if (timeout_ms < -1) timeout_ms = -1;
  call k = {.op = op,
            .timeout_ms = timeout_ms,
            .nkeys = 1,
            .keys = &key,
            .wait_ms = op == DTR__SP_GET ? timeout_ms : c->default_ms};
  dtr__sp_response r;
  DTR_CHECK(roundtrip(c, &k, &r));
  if (r.nitems != 1)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_PROTOCOL, "%s '%.100s': reply has %u items", op_name(op),
                     key, r.nitems);
  const uint8_t *cur = r.items;
  return copy_item(c, dtr__sp_next_item(&cur), val, len);
}

dtr_result dtr_store_get(dtr_store *c, const char *key, int timeout_ms, void **val, size_t *len) {
  return get_common(c, DTR__SP_GET, key, timeout_ms, val, len);
}

dtr_result dtr_store_try_get(dtr_store *c, const char *key, void **val, size_t *len) {
  return get_common(c, DTR__SP_TRY_GET, key, 0, val, len);
}

dtr_result dtr_store_add(dtr_store *c, const char *key, int64_t delta, int64_t *new_value) {
  DTR_CHECK(check_key(c, "add", key, 0));
  call k = {.op = DTR__SP_ADD, .delta = delta, .nkeys = 1, .keys = &key, .wait_ms = c->default_ms};
  dtr__sp_response r;
  DTR_CHECK(roundtrip(c, &k, &r));
  if (new_value) *new_value = r.num;
  return DTR_OK;
}

dtr_result dtr_store_cas(dtr_store *c, const char *key, const void *expected, size_t elen,
                         const void *desired, size_t dlen, int *swapped, void **actual, size_t *alen) {
  if (swapped) *swapped = 0;
  if (actual) *actual = NULL;
  if (alen) *alen = 0;
  DTR_CHECK(check_key(c, "cas", key, 0));
  if (expected) DTR_CHECK(check_value(c, "cas", key, expected, elen));
  DTR_CHECK(check_value(c, "cas", key, desired, dlen));
  call k = {.op = DTR__SP_CAS, .nkeys = 1, .keys = &key, .wait_ms = c->default_ms};
  if (expected) {
    k.flags = DTR__SP_REQ_HAS_EXPECTED;
    k.vals[k.nvals] = expected;
    k.vlens[k.nvals++] = elen;
  }
  k.vals[k.nvals] = desired;
  k.vlens[k.nvals++] = dlen;
  dtr__sp_response r;
  DTR_CHECK(roundtrip(c, &k, &r));
  if (swapped) *swapped = (r.flags & DTR__SP_RESP_SWAPPED) != 0;
  if (actual && (r.flags & DTR__SP_RESP_PRESENT) && r.nitems == 1) {
    const uint8_t *cur = r.items;
    DTR_CHECK(copy_item(c, dtr__sp_next_item(&cur), actual, alen));
  }
  return DTR_OK;
}

dtr_result dtr_store_delete(dtr_store *c, const char *key, int *existed) {
  if (existed) *existed = 0;
  DTR_CHECK(check_key(c, "delete", key, 0));
  call k = {.op = DTR__SP_DELETE, .nkeys = 1, .keys = &key, .wait_ms = c->default_ms};
  dtr__sp_response r;
  DTR_CHECK(roundtrip(c, &k, &r));
  if (existed) *existed = (r.flags & DTR__SP_RESP_EXISTED) != 0;
  return DTR_OK;
}

dtr_result dtr_store_wait(dtr_store *c, const char *const *keys, int nkeys, int timeout_ms) {
  if (!keys || nkeys < 1 || nkeys > DTR_STORE_MAX_WAIT_KEYS)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "wait: %d keys (allowed 1..%d)", nkeys,
                     DTR_STORE_MAX_WAIT_KEYS);
  for (int i = 0; i < nkeys; i++) DTR_CHECK(check_key(c, "wait", keys[i], 0));
  if (timeout_ms < -1) timeout_ms = -1;
  call k = {
      .op = DTR__SP_WAIT, .timeout_ms = timeout_ms, .nkeys = nkeys, .keys = keys, .wait_ms = timeout_ms};
  dtr__sp_response r;
  return roundtrip(c, &k, &r);
}

dtr_result dtr_store_list(dtr_store *c, const char *prefix, char ***keys, int *nkeys) {
  *keys = NULL;
  *nkeys = 0;
  if (!prefix) prefix = "";
  DTR_CHECK(check_key(c, "list", prefix, 1));
  call k = {.op = DTR__SP_LIST, .nkeys = 1, .keys = &prefix, .wait_ms = c->default_ms};
  dtr__sp_response r;
  DTR_CHECK(roundtrip(c, &k, &r));
  char **out = calloc(r.nitems ? r.nitems : 1, sizeof *out);
  if (!out) return dtr__fail(c->err, sizeof c->err, DTR_ERR_NOMEM, "list: out of memory");
  const uint8_t *cur = r.items;
  for (uint32_t i = 0; i < r.nitems; i++) {
    void *p = NULL;
    if (copy_item(c, dtr__sp_next_item(&cur), &p, NULL)) {
      dtr_store_free_list(out, (int)i);
      return DTR_ERR_NOMEM;
    }
    out[i] = p;
  }
  *keys = out;
  *nkeys = (int)r.nitems;
  return DTR_OK;
}

void dtr_store_free_list(char **keys, int nkeys) {
  if (!keys) return;
  for (int i = 0; i < nkeys; i++) free(keys[i]);
  free(keys);
}

/* Arrive by adding to "<name>/arrived"; the last arriver sets "<name>/done", which everyone gets. */
dtr_result dtr_store_barrier(dtr_store *c, const char *name, int world, int timeout_ms) {
  char arrived[DTR_STORE_MAX_KEY + 1], done[DTR_STORE_MAX_KEY + 1];
  if (!name || world < 1 || strlen(name) + 16 > DTR_STORE_MAX_KEY)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "barrier: bad name or world size %d", world);
  snprintf(arrived, sizeof arrived, "barrier/%s/arrived", name);
  snprintf(done, sizeof done, "barrier/%s/done", name);
  int64_t n;
  DTR_CHECK(dtr_store_add(c, arrived, 1, &n));
  if (n > world)
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID,
                     "barrier '%s': %lld arrivals for a world of %d (name reused?)", name, (long long)n,
                     world);
  if (n == world) DTR_CHECK(dtr_store_set(c, done, "1", 1));
  void *v;
  size_t len;
  dtr_result rc = dtr_store_get(c, done, timeout_ms, &v, &len);
  if (rc == DTR_ERR_TIMEOUT)
    return dtr__fail(c->err, sizeof c->err, rc, "barrier '%s': not all %d participants arrived within %d ms",
                     name, world, timeout_ms);
  if (rc) return rc;
  free(v);
  return DTR_OK;
}

/* ---------------------------------------------------------------- the agents' extras (store_internal.h) */

dtr_result dtr__store_epoch(dtr_store *c, int64_t propose, int64_t *epoch) {
  call k = {.op = DTR__SP_EPOCH, .delta = propose, .wait_ms = c->default_ms};
  dtr__sp_response r;
  DTR_CHECK(roundtrip(c, &k, &r));
  if (epoch) *epoch = r.num;
  return DTR_OK;
}

dtr_result dtr__store_mirror_op(dtr_store *c, int64_t epoch, int del, const char *key, size_t klen,
                                const void *val, size_t len, int64_t *newer) {
  if (newer) *newer = 0;
  DTR_CHECK(check_key(c, "mirror", key, 0));
  if (klen != strlen(key))
    return dtr__fail(c->err, sizeof c->err, DTR_ERR_INVALID, "mirror: key length %zu does not match", klen);
  if (!del) DTR_CHECK(check_value(c, "mirror", key, val, len));
  call k = {.op = DTR__SP_MIRROR,
            .flags = del ? DTR__SP_REQ_DELETE : 0,
            .delta = epoch,
            .nkeys = 1,
            .keys = &key,
            .nvals = del ? 0 : 1,
            .vals = {val},
            .vlens = {len},
            .wait_ms = c->default_ms};
  dtr__sp_response r;
  dtr_result rc = roundtrip(c, &k, &r);
  if (rc == DTR_ERR_FENCED && newer) *newer = r.num;
  return rc;
}

void dtr__store_set_timeouts(dtr_store *c, int default_ms, int grace_ms) {
  if (default_ms > 0) c->default_ms = default_ms;
  if (grace_ms >= 0) c->grace_ms = grace_ms;
}

int dtr__store_connected(const dtr_store *c) {
  return c && c->fd >= 0;
}

const char *dtr__store_endpoint(const dtr_store *c, char *buf, size_t cap) {
  snprintf(buf, cap, strchr(c->host, ':') ? "[%s]:%d" : "%s:%d", c->host, c->port);
  return buf;
}
