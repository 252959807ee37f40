/* The store's wire format: pure parsers (bounded reads only, so the fuzz target can hammer them) and
 * the encoders both ends use. See store_proto.h for the layout. */
#include "common/store_proto.h"

#include <stdlib.h>
#include <string.h>

#include "common/check.h"

static uint16_t get_u16(const uint8_t *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
uint32_t dtr__sp_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_u64(const uint8_t *p) {
  return (uint64_t)dtr__sp_get_u32(p) | ((uint64_t)dtr__sp_get_u32(p + 4) << 32);
}

long dtr__sp_parse_hello(const uint8_t *buf, size_t len, uint16_t *version, dtr__sp_bytes *token, char *err,
                         size_t cap) {
  /* Judge the magic as soon as its bytes arrive so garbage is refused without waiting for more. */
  if (len == 0) return 0;
  size_t m = len < 4 ? len : 4;
  if (memcmp(buf, DTR__SP_MAGIC, m) != 0) {
    dtr__fail(err, cap, DTR_ERR_PROTOCOL, "not a dtrain store client (bad magic)");
    return -1;
  }
  if (len < DTR__SP_HELLO_FIXED) return 0;
  uint16_t tlen = get_u16(buf + 6);
  if (tlen > DTR_STORE_MAX_TOKEN) {
    dtr__fail(err, cap, DTR_ERR_PROTOCOL, "hello carries a %u-byte token (limit %d)", tlen,
              DTR_STORE_MAX_TOKEN);
    return -1;
  }
  if (len < (size_t)DTR__SP_HELLO_FIXED + tlen) return 0;
  *version = get_u16(buf + 4);
  token->p = buf + DTR__SP_HELLO_FIXED;
  token->len = tlen;
  return (long)(DTR__SP_HELLO_FIXED + tlen);
}

long dtr__sp_parse_hello_reply(const uint8_t *buf, size_t len, uint16_t *version, uint8_t *status,
                               dtr__sp_bytes *msg, char *err, size_t cap) {
  if (len == 0) return 0;
  size_t m = len < 4 ? len : 4;
  if (memcmp(buf, DTR__SP_MAGIC, m) != 0) {
    dtr__fail(err, cap, DTR_ERR_PROTOCOL, "the peer is not a dtrain store (bad magic)");
    return -1;
  }
  if (len < DTR__SP_HELLO_REPLY_FIXED) return 0;
  uint16_t mlen = get_u16(buf + 8);
  if (mlen > DTR__SP_MAX_MSG) {
    dtr__fail(err, cap, DTR_ERR_PROTOCOL, "hello reply carries a %u-byte message (limit %d)", mlen,
              DTR__SP_MAX_MSG);
    return -1;
  }
  if (len < (size_t)DTR__SP_HELLO_REPLY_FIXED + mlen) return 0;
  *version = get_u16(buf + 4);
  *status = buf[6];
  msg->p = buf + DTR__SP_HELLO_REPLY_FIXED;
  msg->len = mlen;
  return (long)(DTR__SP_HELLO_REPLY_FIXED + mlen);
}

dtr_result dtr__sp_frame_len(const uint8_t hdr[4], uint32_t max, uint32_t *len, char *err, size_t cap) {
  uint32_t n = dtr__sp_get_u32(hdr);
  if (n > max)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "frame of %u bytes exceeds the limit of %u", n, max);
  *len = n;
  return DTR_OK;
}

/* A bounded reader: every take checks the bytes left, so no parse can run past the frame. */
typedef struct reader {
  const uint8_t *p, *end;
} reader;

static int take(reader *r, size_t n, const uint8_t **out) {
  if ((size_t)(r->end - r->p) < n) return 0;
  *out = r->p;
  r->p += n;
  return 1;
}

static dtr_result read_key(reader *r, int allow_empty, dtr__sp_bytes *key, char *err, size_t cap) {
  const uint8_t *h;
  if (!take(r, 2, &h)) return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request truncated in a key length");
  uint16_t n = get_u16(h);
  if (n > DTR_STORE_MAX_KEY)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "key of %u bytes exceeds the limit of %d", n,
                     DTR_STORE_MAX_KEY);
  if (n == 0 && !allow_empty) return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "empty key");
  if (!take(r, n, &key->p)) return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request truncated in a key");
  if (memchr(key->p, 0, n)) return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "key contains a NUL byte");
  key->len = n;
  return DTR_OK;
}

static dtr_result read_value(reader *r, dtr__sp_bytes *v, char *err, size_t cap) {
  const uint8_t *h;
  if (!take(r, 4, &h)) return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request truncated in a value length");
  uint32_t n = dtr__sp_get_u32(h);
  if (n > DTR_STORE_MAX_VALUE)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "value of %u bytes exceeds the limit of %u", n,
                     DTR_STORE_MAX_VALUE);
  if (!take(r, n, &v->p)) return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request truncated in a value");
  v->len = n;
  return DTR_OK;
}

dtr_result dtr__sp_parse_request(const uint8_t *body, size_t len, dtr__sp_request *req, char *err,
                                 size_t cap) {
  memset(req, 0, sizeof *req);
  reader r = {body, body + len};
  const uint8_t *h;
  if (!take(&r, DTR__SP_REQ_FIXED, &h))
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request of %zu bytes is shorter than its header", len);
  req->op = h[0];
  req->flags = h[1];
  req->nkeys = get_u16(h + 2);
  req->timeout_ms = (int32_t)dtr__sp_get_u32(h + 4);
  req->delta = (int64_t)get_u64(h + 8);
  if (req->op < DTR__SP_SET || req->op > DTR__SP_EPOCH)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "unknown request opcode %u", req->op);
  int is_wait = req->op == DTR__SP_WAIT;
  unsigned want = req->op == DTR__SP_EPOCH ? 0 : 1;
  if (is_wait ? (req->nkeys < 1 || req->nkeys > DTR_STORE_MAX_WAIT_KEYS) : req->nkeys != want)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request opcode %u carries %u keys", req->op, req->nkeys);
  unsigned allowed = req->op == DTR__SP_CAS      ? DTR__SP_REQ_HAS_EXPECTED
                     : req->op == DTR__SP_MIRROR ? DTR__SP_REQ_DELETE
                                                 : 0;
  if (req->flags & ~allowed)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "request opcode %u has unknown flags 0x%x", req->op,
                     req->flags);
  if (req->timeout_ms < -1)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "negative timeout %d", req->timeout_ms);
  req->keys = r.p;
  for (unsigned i = 0; i < req->nkeys; i++) {
    dtr__sp_bytes k;
    dtr_result rc = read_key(&r, req->op == DTR__SP_LIST, &k, err, cap);
    if (rc) return rc;
    if (i == 0) req->key = k;
  }
  if (req->op == DTR__SP_SET || (req->op == DTR__SP_MIRROR && !(req->flags & DTR__SP_REQ_DELETE))) {
    dtr_result rc = read_value(&r, &req->value, err, cap);
    if (rc) return rc;
  } else if (req->op == DTR__SP_CAS) {
    if (req->flags & DTR__SP_REQ_HAS_EXPECTED) {
      dtr_result rc = read_value(&r, &req->expected, err, cap);
      if (rc) return rc;
    }
    dtr_result rc = read_value(&r, &req->value, err, cap);
    if (rc) return rc;
  }
  if (r.p != r.end)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "%zu trailing bytes after request opcode %u",
                     (size_t)(r.end - r.p), req->op);
  return DTR_OK;
}

dtr_result dtr__sp_parse_response(const uint8_t *body, size_t len, dtr__sp_response *resp, char *err,
                                  size_t cap) {
  memset(resp, 0, sizeof *resp);
  reader r = {body, body + len};
  const uint8_t *h;
  if (!take(&r, DTR__SP_RESP_FIXED, &h))
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "response of %zu bytes is shorter than its header", len);
  resp->status = h[0];
  resp->flags = h[1];
  resp->nitems = dtr__sp_get_u32(h + 4);
  resp->num = (int64_t)get_u64(h + 8);
  if (resp->status > DTR__SP_LAST_STATUS)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "unknown status %u", h[0]);
  /* Each item needs at least its 4-byte length, which bounds the count before we walk it. */
  if (resp->nitems > (size_t)(r.end - r.p) / 4)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "response claims %u items in %zu bytes", resp->nitems,
                     (size_t)(r.end - r.p));
  resp->items = r.p;
  for (uint32_t i = 0; i < resp->nitems; i++) {
    const uint8_t *lp, *ip;
    if (!take(&r, 4, &lp) || !take(&r, dtr__sp_get_u32(lp), &ip))
      return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "response truncated in item %u", i);
  }
  if (r.p != r.end)
    return dtr__fail(err, cap, DTR_ERR_PROTOCOL, "%zu trailing bytes after a response",
                     (size_t)(r.end - r.p));
  resp->items_len = (size_t)(r.p - resp->items);
  return DTR_OK;
}

dtr__sp_bytes dtr__sp_next_key(const uint8_t **cursor) {
  dtr__sp_bytes b = {*cursor + 2, get_u16(*cursor)};
  *cursor += 2 + b.len;
  return b;
}

dtr__sp_bytes dtr__sp_next_item(const uint8_t **cursor) {
  dtr__sp_bytes b = {*cursor + 4, dtr__sp_get_u32(*cursor)};
  *cursor += 4 + (size_t)b.len;
  return b;
}

/* ---------------------------------------------------------------- encoding */

dtr_result dtr__sp_reserve(dtr__sp_buf *b, size_t n) {
  if (b->cap - b->len >= n) return DTR_OK;
  size_t want = b->cap ? b->cap : 4096;
  while (want - b->len < n) want *= 2;
  uint8_t *p = realloc(b->p, want);
  if (!p) return DTR_ERR_NOMEM;
  b->p = p;
  b->cap = want;
  return DTR_OK;
}

void dtr__sp_buf_free(dtr__sp_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void dtr__sp_put(dtr__sp_buf *b, const void *p, size_t n) {
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
}
void dtr__sp_put_u8(dtr__sp_buf *b, uint8_t v) {
  b->p[b->len++] = v;
}
void dtr__sp_put_u16(dtr__sp_buf *b, uint16_t v) {
  uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
  dtr__sp_put(b, x, 2);
}
void dtr__sp_put_u32(dtr__sp_buf *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  dtr__sp_put(b, x, 4);
}
void dtr__sp_put_u64(dtr__sp_buf *b, uint64_t v) {
  dtr__sp_put_u32(b, (uint32_t)v);
  dtr__sp_put_u32(b, (uint32_t)(v >> 32));
}

dtr_result dtr__sp_encode_hello(dtr__sp_buf *b, const char *token, size_t tlen) {
  if (tlen > DTR_STORE_MAX_TOKEN) return DTR_ERR_INVALID;
  DTR_CHECK(dtr__sp_reserve(b, DTR__SP_HELLO_FIXED + tlen));
  dtr__sp_put(b, DTR__SP_MAGIC, 4);
  dtr__sp_put_u16(b, DTR__SP_VERSION);
  dtr__sp_put_u16(b, (uint16_t)tlen);
  dtr__sp_put(b, token, tlen);
  return DTR_OK;
}

dtr_result dtr__sp_encode_hello_reply(dtr__sp_buf *b, uint8_t status, const char *msg) {
  size_t mlen = msg ? strlen(msg) : 0;
  if (mlen > DTR__SP_MAX_MSG) mlen = DTR__SP_MAX_MSG;
  DTR_CHECK(dtr__sp_reserve(b, DTR__SP_HELLO_REPLY_FIXED + mlen));
  dtr__sp_put(b, DTR__SP_MAGIC, 4);
  dtr__sp_put_u16(b, DTR__SP_VERSION);
  dtr__sp_put_u8(b, status);
  dtr__sp_put_u8(b, 0);
  dtr__sp_put_u16(b, (uint16_t)mlen);
  dtr__sp_put(b, msg, mlen);
  return DTR_OK;
}

dtr_result dtr__sp_encode_request(dtr__sp_buf *b, uint8_t op, uint8_t flags, int32_t timeout_ms,
                                  int64_t delta, int nkeys, const char *const *keys, const size_t *klens,
                                  int nvals, const void *const *vals, const size_t *vlens) {
  if (nkeys < 0 || nkeys > DTR_STORE_MAX_WAIT_KEYS || nvals < 0 || nvals > 2) return DTR_ERR_INVALID;
  size_t body = DTR__SP_REQ_FIXED;
  for (int i = 0; i < nkeys; i++) {
    if (klens[i] > DTR_STORE_MAX_KEY) return DTR_ERR_INVALID;
    body += 2 + klens[i];
  }
  for (int i = 0; i < nvals; i++) {
    if (vlens[i] > DTR_STORE_MAX_VALUE) return DTR_ERR_INVALID;
    body += 4 + vlens[i];
  }
  if (body > DTR__SP_MAX_FRAME) return DTR_ERR_INVALID;
  DTR_CHECK(dtr__sp_reserve(b, 4 + body));
  dtr__sp_put_u32(b, (uint32_t)body);
  dtr__sp_put_u8(b, op);
  dtr__sp_put_u8(b, flags);
  dtr__sp_put_u16(b, (uint16_t)nkeys);
  dtr__sp_put_u32(b, (uint32_t)timeout_ms);
  dtr__sp_put_u64(b, (uint64_t)delta);
  for (int i = 0; i < nkeys; i++) {
    dtr__sp_put_u16(b, (uint16_t)klens[i]);
    dtr__sp_put(b, keys[i], klens[i]);
  }
  for (int i = 0; i < nvals; i++) {
    dtr__sp_put_u32(b, (uint32_t)vlens[i]);
    dtr__sp_put(b, vals[i], vlens[i]);
  }
  return DTR_OK;
}

dtr_result dtr__sp_response_begin(dtr__sp_buf *b, size_t *start, uint8_t status, uint8_t flags, int64_t num) {
  DTR_CHECK(dtr__sp_reserve(b, 4 + DTR__SP_RESP_FIXED));
  *start = b->len;
  dtr__sp_put_u32(b, 0); /* patched by dtr__sp_response_end */
  dtr__sp_put_u8(b, status);
  dtr__sp_put_u8(b, flags);
  dtr__sp_put_u16(b, 0);
  dtr__sp_put_u32(b, 0);
  dtr__sp_put_u64(b, (uint64_t)num);
  return DTR_OK;
}

dtr_result dtr__sp_response_item(dtr__sp_buf *b, const void *p, size_t n) {
  DTR_CHECK(dtr__sp_reserve(b, 4 + n));
  dtr__sp_put_u32(b, (uint32_t)n);
  dtr__sp_put(b, p, n);
  return DTR_OK;
}

static void put_u32_at(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

void dtr__sp_response_end(dtr__sp_buf *b, size_t start, uint32_t nitems) {
  put_u32_at(b->p + start, (uint32_t)(b->len - start - 4));
  put_u32_at(b->p + start + 8, nitems);
}
