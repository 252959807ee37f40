/* libFuzzer target for the store's wire parsers: the input is treated as a client's byte stream
 * (hello, then frames, exactly as the server consumes it) and as a server's reply stream. Parsed
 * requests are re-encoded and must reproduce their bytes, so parser and encoder cannot drift apart.
 * Built with -DDTRAIN_FUZZ_REPLAY it is a plain program that replays the files named on its command
 * line (or every file of a directory), which ctest runs over tests/fuzz/corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/store_proto.h"

/* Touch every byte a parser handed out, so the sanitizer sees any out-of-bounds view. */
static unsigned sum(dtr__sp_bytes b) {
  unsigned s = 0;
  for (uint32_t i = 0; i < b.len; i++) s += b.p[i];
  return s;
}

static void check_roundtrip(const uint8_t *frame, size_t flen, const dtr__sp_request *r) {
  enum { MAXK = DTR_STORE_MAX_WAIT_KEYS };
  static const char *keys[MAXK];
  static size_t klens[MAXK];
  const uint8_t *cur = r->keys;
  for (unsigned i = 0; i < r->nkeys; i++) {
    dtr__sp_bytes k = dtr__sp_next_key(&cur);
    keys[i] = (const char *)k.p;
    klens[i] = k.len;
  }
  const void *vals[2];
  size_t vlens[2];
  int nv = 0;
  if (r->op == DTR__SP_CAS && (r->flags & DTR__SP_REQ_HAS_EXPECTED)) {
    vals[nv] = r->expected.p;
    vlens[nv++] = r->expected.len;
  }
  if (r->op == DTR__SP_SET || r->op == DTR__SP_CAS) {
    vals[nv] = r->value.p;
    vlens[nv++] = r->value.len;
  }
  dtr__sp_buf b = {0};
  if (dtr__sp_encode_request(&b, r->op, r->flags, r->timeout_ms, r->delta, r->nkeys, keys, klens, nv, vals,
                             vlens) != DTR_OK ||
      b.len != flen || memcmp(b.p, frame, flen) != 0) {
    fprintf(stderr, "re-encoding a parsed request did not reproduce it (op %u)\n", r->op);
    abort();
  }
  dtr__sp_buf_free(&b);
}

static volatile unsigned sink;

static void client_stream(const uint8_t *data, size_t size) {
  char err[256];
  uint16_t version;
  dtr__sp_bytes token;
  long n = dtr__sp_parse_hello(data, size, &version, &token, err, sizeof err);
  if (n <= 0) return;
  sink += sum(token) + version;
  size_t off = (size_t)n;
  for (int frames = 0; frames < 10000 && size - off >= 4; frames++) {
    uint32_t flen;
    if (dtr__sp_frame_len(data + off, DTR__SP_MAX_FRAME, &flen, err, sizeof err)) return;
    if (size - off - 4 < flen) return; /* the server would wait for more bytes */
    dtr__sp_request r;
    if (dtr__sp_parse_request(data + off + 4, flen, &r, err, sizeof err)) return;
    const uint8_t *cur = r.keys;
    for (unsigned i = 0; i < r.nkeys; i++) sink += sum(dtr__sp_next_key(&cur));
    sink += sum(r.value) + sum(r.expected);
    check_roundtrip(data + off, 4 + (size_t)flen, &r);
    off += 4 + (size_t)flen;
  }
}

static void server_stream(const uint8_t *data, size_t size) {
  char err[256];
  uint16_t version;
  uint8_t status;
  dtr__sp_bytes msg;
  long n = dtr__sp_parse_hello_reply(data, size, &version, &status, &msg, err, sizeof err);
  if (n > 0) sink += sum(msg) + status;
  size_t off = n > 0 ? (size_t)n : 0;
  for (int frames = 0; frames < 10000 && size - off >= 4; frames++) {
    uint32_t flen;
    if (dtr__sp_frame_len(data + off, DTR__SP_MAX_FRAME, &flen, err, sizeof err)) return;
    if (size - off - 4 < flen) return;
    dtr__sp_response r;
    if (dtr__sp_parse_response(data + off + 4, flen, &r, err, sizeof err)) return;
    const uint8_t *cur = r.items;
    for (uint32_t i = 0; i < r.nitems; i++) sink += sum(dtr__sp_next_item(&cur));
    off += 4 + (size_t)flen;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  client_stream(data, size);
  server_stream(data, size);
  return 0;
}

#ifdef DTRAIN_FUZZ_REPLAY
#define DTR_REPLAY_PROG "fuzz_store_proto_replay"
#include "tests/fuzz/replay_main.h"
#endif
