/* A growable byte/string buffer for building JSON headers, records and serialized lists in memory.
 * Allocation failure is sticky (oom) so callers append freely and check once at the end; the bytes
 * are always NUL-terminated (p[len] == 0 once anything was appended), which text users rely on. */
#ifndef DTRAIN_COMMON_STRBUF_H
#define DTRAIN_COMMON_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct dtr__sbuf {
  char *p;    /* NULL until the first append; the caller frees it (or takes it) */
  size_t len; /* bytes appended, not counting the terminating NUL */
  size_t cap;
  int oom; /* an allocation failed: later appends are ignored, the contents are incomplete */
} dtr__sbuf;

/* JSON escaping options. Without flags: '"' and '\\' backslashed, every other byte below 0x20 as
 * \u00XX, everything else (UTF-8 included) passed through. */
enum {
  DTR__SBUF_JSON_SHORT = 1, /* \n, \t and \r as two-character escapes rather than \u000a ... */
  DTR__SBUF_JSON_DEL = 2,   /* 0x7f (DEL) escaped as \u007f too */
};

void dtr__sbuf_put(dtr__sbuf *b, const void *data, size_t n);
void dtr__sbuf_puts(dtr__sbuf *b, const char *s);
/* Any length: formatted once into a small stack buffer, again into the buffer itself when longer. */
void dtr__sbuf_printf(dtr__sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dtr__sbuf_vprintf(dtr__sbuf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* s as a quoted JSON string literal; flags: DTR__SBUF_JSON_*. */
void dtr__sbuf_json_str(dtr__sbuf *b, const char *s, unsigned flags);
/* Frees the bytes and resets b to empty (oom cleared). */
void dtr__sbuf_free(dtr__sbuf *b);

/* bytes[0..n) as 2n lowercase hex digits and a NUL into out (2n+1 bytes): tokens and secrets. */
void dtr__hex(const void *bytes, size_t n, char *out);

#endif
