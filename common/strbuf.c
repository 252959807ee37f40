/* The growable buffer of strbuf.h: one copy of what the checkpoint writers and the launcher's failure
 * records each carried. Output must stay byte-identical to theirs (tests compare the JSON), hence the
 * escaping flags rather than one house style. */
#include "common/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for n more bytes plus the NUL; sets oom and returns 0 on failure or size overflow. */
static int reserve(dtr__sbuf *b, size_t n) {
  if (b->oom) return 0;
  if (n > (size_t)-1 / 4 - b->len) return b->oom = 1, 0;
  size_t need = b->len + n + 1;
  if (need <= b->cap) return 1;
  size_t nc = b->cap ? b->cap : 256;
  while (nc < need) nc *= 2;
  char *np = realloc(b->p, nc);
  if (!np) return b->oom = 1, 0;
  b->p = np;
  b->cap = nc;
  return 1;
}

void dtr__sbuf_put(dtr__sbuf *b, const void *data, size_t n) {
  if (!reserve(b, n)) return;
  if (n) memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void dtr__sbuf_puts(dtr__sbuf *b, const char *s) {
  dtr__sbuf_put(b, s, strlen(s));
}

void dtr__sbuf_vprintf(dtr__sbuf *b, const char *fmt, va_list ap) {
  if (b->oom) return;
  char tmp[256];
  va_list again;
  va_copy(again, ap);
  int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  if (k > 0 && (size_t)k < sizeof tmp) {
    dtr__sbuf_put(b, tmp, (size_t)k);
  } else if (k > 0 && reserve(b, (size_t)k)) {
    vsnprintf(b->p + b->len, (size_t)k + 1, fmt, again);
    b->len += (size_t)k;
  }
  va_end(again);
}

void dtr__sbuf_printf(dtr__sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dtr__sbuf_vprintf(b, fmt, ap);
  va_end(ap);
}

void dtr__sbuf_json_str(dtr__sbuf *b, const char *s, unsigned flags) {
  dtr__sbuf_put(b, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    const char *esc = NULL;
    if (*c == '"')
      esc = "\\\"";
    else if (*c == '\\')
      esc = "\\\\";
    else if ((flags & DTR__SBUF_JSON_SHORT) && *c == '\n')
      esc = "\\n";
    else if ((flags & DTR__SBUF_JSON_SHORT) && *c == '\t')
      esc = "\\t";
    else if ((flags & DTR__SBUF_JSON_SHORT) && *c == '\r')
      esc = "\\r";
    if (esc) {
      dtr__sbuf_put(b, esc, 2);
    } else if (*c < 0x20 || (*c == 0x7f && (flags & DTR__SBUF_JSON_DEL))) {
      char u[8];
      snprintf(u, sizeof u, "\\u%04x", *c);
      dtr__sbuf_put(b, u, 6);
    } else {
      dtr__sbuf_put(b, c, 1);
    }
  }
  dtr__sbuf_put(b, "\"", 1);
}

void dtr__sbuf_free(dtr__sbuf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  b->oom = 0;
}

void dtr__hex(const void *bytes, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  const unsigned char *b = bytes;
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
  out[2 * n] = '\0';
}
