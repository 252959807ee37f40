/* The rendezvous store's wire format, shared by the server, the client and the fuzz target.
 * Everything is little-endian and length-prefixed; every length is bounded by the limits in store.h,
 * and the parse functions are pure (no I/O, no allocation) so a fuzzer can drive them directly.
 *
 * Handshake, once per connection:
 *   client -> server  "DTRS" u16 version u16 token_len token[token_len]
 *   server -> client  "DTRS" u16 version u8 status u8 0 u16 msg_len msg[msg_len]
 *                     (status DTR_OK, or DTR_ERR_AUTH / DTR_ERR_PROTOCOL with a one-line reason)
 * Then frames, each "u32 body_len body[body_len]":
 *   request body   u8 op u8 flags u16 nkeys i32 timeout_ms i64 delta
 *                  nkeys x (u16 key_len key)  then, by op:
 *                  SET: u32 len value;  CAS: [u32 len expected, if flags & HAS_EXPECTED] u32 len desired
 *                  MIRROR (delta = epoch): u32 len value unless flags & DELETE;  EPOCH: no key, no value
 *   response body  u8 status u8 flags u16 0 u32 nitems i64 num  nitems x (u32 len bytes)
 *                  GET/TRY_GET: item 0 = value; CAS: flags SWAPPED|PRESENT, item 0 = value now stored;
 *                  ADD: num = new value; DELETE: flags EXISTED; LIST: items = keys; EPOCH, MIRROR and a
 *                  FENCED refusal: num = the epoch in force;
 *                  any failure status: item 0 (optional) = a one-line reason.
 */
#ifndef DTRAIN_COMMON_STORE_PROTO_H
#define DTRAIN_COMMON_STORE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/store.h"

#define DTR__SP_MAGIC "DTRS"
#define DTR__SP_VERSION 1
#define DTR__SP_HELLO_FIXED 8        /* magic + version + token length */
#define DTR__SP_HELLO_REPLY_FIXED 10 /* magic + version + status + pad + message length */
#define DTR__SP_REQ_FIXED 16
#define DTR__SP_RESP_FIXED 16
/* The largest frame body either side accepts: a CAS carrying two maximal values is the biggest
 * legitimate request; a WAIT with every key at the limit (4096 x 1026 bytes) fits as well. */
#define DTR__SP_MAX_FRAME (2u * DTR_STORE_MAX_VALUE + DTR_STORE_MAX_KEY + 64u)
#define DTR__SP_MAX_MSG 512 /* bytes in a refusal or error reason */

typedef enum dtr__sp_op {
  DTR__SP_SET = 1,
  DTR__SP_GET = 2,
  DTR__SP_TRY_GET = 3,
  DTR__SP_ADD = 4,
  DTR__SP_CAS = 5,
  DTR__SP_DELETE = 6,
  DTR__SP_WAIT = 7,
  DTR__SP_LIST = 8,
  DTR__SP_MIRROR =
      9, /* a primary's change at its standby: 1 key, a value unless flags & DELETE; delta = epoch */
  DTR__SP_EPOCH = 10, /* no key; delta = the epoch proposed (0: read); response num = the epoch in force */
} dtr__sp_op;

enum { DTR__SP_REQ_HAS_EXPECTED = 1, DTR__SP_REQ_DELETE = 2 }; /* request flags: CAS, MIRROR */
#define DTR__SP_LAST_STATUS DTR_ERR_FENCED                     /* the highest dtr_result a response carries */
enum { DTR__SP_RESP_SWAPPED = 1, DTR__SP_RESP_PRESENT = 2, DTR__SP_RESP_EXISTED = 4 }; /* response flags */

typedef struct dtr__sp_bytes {
  const uint8_t *p;
  uint32_t len;
} dtr__sp_bytes;

/* A parsed request; every pointer points into the frame it was parsed from. */
typedef struct dtr__sp_request {
  uint8_t op, flags;
  uint16_t nkeys;
  int32_t timeout_ms;            /* GET/WAIT: -1 = forever */
  int64_t delta;                 /* ADD */
  dtr__sp_bytes key;             /* the first (for most ops the only) key; LIST: the prefix */
  const uint8_t *keys;           /* all nkeys "u16 len key" records, for WAIT; walk with dtr__sp_next_key */
  dtr__sp_bytes value, expected; /* SET/CAS value (desired); CAS expected when HAS_EXPECTED */
} dtr__sp_request;

typedef struct dtr__sp_response {
  uint8_t status, flags;
  uint32_t nitems;
  int64_t num;
  const uint8_t *items; /* nitems "u32 len bytes" records; walk with dtr__sp_next_item */
  size_t items_len;
} dtr__sp_response;

/* Parse a client hello at the start of buf. Returns the bytes it occupies (>0), 0 when more bytes
 * are needed, or -1 for garbage (bad magic, token longer than DTR_STORE_MAX_TOKEN), with a reason in err.
 * *version receives the client's version (the caller decides whether it is acceptable). */
long dtr__sp_parse_hello(const uint8_t *buf, size_t len, uint16_t *version, dtr__sp_bytes *token, char *err,
                         size_t cap);
/* Same for the server's hello reply. */
long dtr__sp_parse_hello_reply(const uint8_t *buf, size_t len, uint16_t *version, uint8_t *status,
                               dtr__sp_bytes *msg, char *err, size_t cap);
/* The body length in a frame header (4 bytes): DTR_ERR_PROTOCOL when it exceeds max. */
dtr_result dtr__sp_frame_len(const uint8_t hdr[4], uint32_t max, uint32_t *len, char *err, size_t cap);
/* Parse one request body. DTR_ERR_PROTOCOL (reason in err) for anything truncated, oversized, unknown
 * or trailing; never reads outside body[0..len). */
dtr_result dtr__sp_parse_request(const uint8_t *body, size_t len, dtr__sp_request *req, char *err,
                                 size_t cap);
/* Parse one response body, same rules. */
dtr_result dtr__sp_parse_response(const uint8_t *body, size_t len, dtr__sp_response *resp, char *err,
                                  size_t cap);
/* Walk records validated by the parsers: *cursor starts at req->keys / resp->items. */
dtr__sp_bytes dtr__sp_next_key(const uint8_t **cursor);
dtr__sp_bytes dtr__sp_next_item(const uint8_t **cursor);

/* ---- encoding into a growable buffer (used by both ends) */
typedef struct dtr__sp_buf {
  uint8_t *p;
  size_t len, cap;
} dtr__sp_buf;

/* Make room for n more bytes. DTR_ERR_NOMEM on failure (the buffer is unchanged). */
dtr_result dtr__sp_reserve(dtr__sp_buf *b, size_t n);
void dtr__sp_buf_free(dtr__sp_buf *b);
/* The put functions assume dtr__sp_reserve made room. */
void dtr__sp_put(dtr__sp_buf *b, const void *p, size_t n);
void dtr__sp_put_u8(dtr__sp_buf *b, uint8_t v);
void dtr__sp_put_u16(dtr__sp_buf *b, uint16_t v);
void dtr__sp_put_u32(dtr__sp_buf *b, uint32_t v);
void dtr__sp_put_u64(dtr__sp_buf *b, uint64_t v);
uint32_t dtr__sp_get_u32(const uint8_t *p);

dtr_result dtr__sp_encode_hello(dtr__sp_buf *b, const char *token, size_t tlen);
dtr_result dtr__sp_encode_hello_reply(dtr__sp_buf *b, uint8_t status, const char *msg);
/* A whole request frame (length prefix included). keys/klens: nkeys keys; vals/vlens: 0..2 values in
 * wire order (CAS: expected first when flags has HAS_EXPECTED). */
dtr_result dtr__sp_encode_request(dtr__sp_buf *b, uint8_t op, uint8_t flags, int32_t timeout_ms,
                                  int64_t delta, int nkeys, const char *const *keys, const size_t *klens,
                                  int nvals, const void *const *vals, const size_t *vlens);
/* Start a response frame; add items with dtr__sp_response_item, then close with dtr__sp_response_end
 * (which fills in the frame length and item count). */
dtr_result dtr__sp_response_begin(dtr__sp_buf *b, size_t *start, uint8_t status, uint8_t flags, int64_t num);
dtr_result dtr__sp_response_item(dtr__sp_buf *b, const void *p, size_t n);
void dtr__sp_response_end(dtr__sp_buf *b, size_t start, uint32_t nitems);

#endif
