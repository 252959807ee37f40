/* safetensors reader and writer (format: checkpoint/safetensors.h). The JSON parser here knows only
 * the shape of a safetensors header, which keeps it small and lets every message say which tensor and
 * which key is wrong; nothing read from the file is trusted before it is checked. */
#define _GNU_SOURCE
#include "checkpoint/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/strbuf.h"

static const struct {
  const char *name;
  dtr_dtype t;
} ST_TYPES[] = {{"F32", DTR_F32}, {"F64", DTR_F64}, {"F16", DTR_F16}, {"BF16", DTR_BF16},
                {"I32", DTR_I32}, {"I64", DTR_I64}, {"U8", DTR_U8}};
/* Valid in the format, without a dtrain type: refused as unsupported rather than as malformed. */
static const char *ST_OTHER[] = {"BOOL",    "I8",      "I16",     "U16",     "U32", "U64", "F8_E4M3",
                                 "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64"};

const char *dtr__sft_dtype_name(dtr_dtype t) {
  for (size_t i = 0; i < sizeof ST_TYPES / sizeof ST_TYPES[0]; i++)
    if (ST_TYPES[i].t == t) return ST_TYPES[i].name;
  return NULL;
}

dtr_result dtr__sft_dtype_parse(const char *s, dtr_dtype *out) {
  for (size_t i = 0; i < sizeof ST_TYPES / sizeof ST_TYPES[0]; i++)
    if (strcmp(ST_TYPES[i].name, s) == 0) {
      *out = ST_TYPES[i].t;
      return DTR_OK;
    }
  for (size_t i = 0; i < sizeof ST_OTHER / sizeof ST_OTHER[0]; i++)
    if (strcmp(ST_OTHER[i], s) == 0) return DTR_ERR_UNSUPPORTED;
  return DTR_ERR_INVALID;
}

int dtr__sft_tensor_bytes(dtr_dtype t, int ndim, const int64_t *shape, uint64_t *bytes) {
  uint64_t n = dtr_dtype_size(t);
  if (n == 0 || ndim < 0 || ndim > DTR_CKPT_MAX_DIMS) return -1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return -1;
    if (shape[d] != 0 && n > UINT64_MAX / (uint64_t)shape[d]) return -1;
    n *= (uint64_t)shape[d];
  }
  *bytes = n;
  return 0;
}

/* ---------------------------------------------------------------- the header parser */

typedef struct parser {
  const char *s;
  size_t len, pos;
  const char *name; /* the file, for messages */
  char *err;
  size_t errcap;
} parser;

static dtr_result perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dtr_result perr(parser *p, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return dtr__fail(p->err, p->errcap, DTR_ERR_PROTOCOL, "%s: safetensors header byte %zu: %s", p->name,
                   p->pos, what);
}

static void skip_ws(parser *p) {
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

/* Skip whitespace and consume c, else fail saying what was expected. */
static dtr_result expect(parser *p, char c, const char *where) {
  skip_ws(p);
  if (p->pos >= p->len) return perr(p, "header ends where '%c' was expected %s", c, where);
  if (p->s[p->pos] != c) return perr(p, "expected '%c' %s, found '%c'", c, where, p->s[p->pos]);
  p->pos++;
  return DTR_OK;
}

/* The next non-blank character, without consuming it ('\0' at the end). */
static char peek(parser *p) {
  skip_ws(p);
  return p->pos < p->len ? p->s[p->pos] : '\0';
}

static int hex4(const char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* A JSON string, unescaped into a fresh NUL-terminated buffer. \u0000 is refused: names are C strings. */
static dtr_result parse_string(parser *p, char **out, const char *what) {
  DTR_CHECK(expect(p, '"', what));
  size_t start = p->pos;
  /* Unescaping never grows the text (\uXXXX: 6 bytes in, at most 4 out; a surrogate pair 12 in, 4 out). */
  size_t end = start;
  while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len) return perr(p, "unterminated string %s", what);
  char *o = malloc(end - start + 1);
  if (!o) return dtr__fail(p->err, p->errcap, DTR_ERR_NOMEM, "%s: out of memory reading the header", p->name);
  size_t n = 0;
  while (p->pos < end) {
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c < 0x20) {
      free(o);
      return perr(p, "control character 0x%02x inside a string %s", c, what);
    }
    if (c != '\\') {
      o[n++] = (char)c;
      p->pos++;
      continue;
    }
    char e = p->s[p->pos + 1];
    p->pos += 2;
    switch (e) {
      case '"':
        o[n++] = '"';
        break;
      case '\\':
        o[n++] = '\\';
        break;
      case '/':
        o[n++] = '/';
        break;
      case 'b':
        o[n++] = '\b';
        break;
      case 'f':
        o[n++] = '\f';
        break;
      case 'n':
        o[n++] = '\n';
        break;
      case 'r':
        o[n++] = '\r';
        break;
      case 't':
        o[n++] = '\t';
        break;
      case 'u': {
        unsigned cp, lo;
        if (p->pos + 4 > end || hex4(p->s + p->pos, &cp)) {
          free(o);
          return perr(p, "bad \\u escape %s", what);
        }
        p->pos += 4;
        if (cp >= 0xd800 && cp < 0xdc00) {
          if (p->pos + 6 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
              hex4(p->s + p->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
            free(o);
            return perr(p, "unpaired UTF-16 surrogate in a \\u escape %s", what);
          }
          p->pos += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp < 0xe000) {
          free(o);
          return perr(p, "unpaired UTF-16 surrogate in a \\u escape %s", what);
        }
        if (cp == 0) {
          free(o);
          return perr(p, "\\u0000 in a string %s (names must not hold NUL)", what);
        }
        n += put_utf8(o + n, cp);
        break;
      }
      default:
        free(o);
        p->pos -= 1;
        return perr(p, "unknown escape '\\%c' %s", e, what);
    }
  }
  o[n] = '\0';
  p->pos = end + 1;
  *out = o;
  return DTR_OK;
}

/* A non-negative JSON integer (no sign, fraction or exponent: offsets and dimensions are counts). */
static dtr_result parse_uint(parser *p, uint64_t *out, const char *what) {
  skip_ws(p);
  size_t start = p->pos;
  uint64_t v = 0;
  while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
    unsigned d = (unsigned)(p->s[p->pos] - '0');
    if (v > (UINT64_MAX - d) / 10) return perr(p, "number too large %s", what);
    v = v * 10 + d;
    p->pos++;
  }
  if (p->pos == start) return perr(p, "expected a non-negative integer %s", what);
  if (p->pos - start > 1 && p->s[start] == '0') return perr(p, "leading zero in a number %s", what);
  if (p->pos < p->len && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
    return perr(p, "expected an integer %s, found a fraction or exponent", what);
  *out = v;
  return DTR_OK;
}

/* [u, u, ...] with at most cap entries. */
static dtr_result parse_uint_array(parser *p, uint64_t *vals, int cap, int *n, const char *what) {
  DTR_CHECK(expect(p, '[', what));
  *n = 0;
  if (peek(p) == ']') {
    p->pos++;
    return DTR_OK;
  }
  for (;;) {
    if (*n >= cap) return perr(p, "more than %d entries %s", cap, what);
    DTR_CHECK(parse_uint(p, &vals[*n], what));
    (*n)++;
    char c = peek(p);
    if (c == ',') {
      p->pos++;
      continue;
    }
    return expect(p, ']', what);
  }
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]} in any order, each exactly once. */
static dtr_result parse_tensor(parser *p, dtr__sft_tensor *t) {
  char what[DTR_CKPT_MAX_NAME + 64];
  snprintf(what, sizeof what, "in tensor '%.*s'", DTR_CKPT_MAX_NAME, t->name);
  DTR_CHECK(expect(p, '{', what));
  int have_dtype = 0, have_shape = 0, have_off = 0;
  if (peek(p) != '}') {
    for (;;) {
      char *key = NULL;
      DTR_CHECK(parse_string(p, &key, what));
      dtr_result rc = expect(p, ':', what);
      if (rc == DTR_OK && strcmp(key, "dtype") == 0) {
        char *dt = NULL;
        if (have_dtype++) rc = perr(p, "'dtype' given twice %s", what);
        if (rc == DTR_OK) rc = parse_string(p, &dt, what);
        if (rc == DTR_OK) {
          dtr_result prc = dtr__sft_dtype_parse(dt, &t->dtype);
          if (prc == DTR_ERR_UNSUPPORTED)
            rc =
                dtr__fail(p->err, p->errcap, DTR_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has dtype %s, which dtrain does not support (F32, F64, F16, BF16, "
                          "I32, I64, U8)",
                          p->name, t->name, dt);
          else if (prc != DTR_OK)
            rc = perr(p, "unknown dtype '%.32s' %s", dt, what);
        }
        free(dt);
      } else if (rc == DTR_OK && strcmp(key, "shape") == 0) {
        uint64_t dims[DTR_CKPT_MAX_DIMS];
        if (have_shape++) rc = perr(p, "'shape' given twice %s", what);
        if (rc == DTR_OK) rc = parse_uint_array(p, dims, DTR_CKPT_MAX_DIMS, &t->ndim, what);
        for (int d = 0; rc == DTR_OK && d < t->ndim; d++) {
          if (dims[d] > (uint64_t)INT64_MAX) rc = perr(p, "dimension %d too large %s", d, what);
          t->shape[d] = (int64_t)dims[d];
        }
      } else if (rc == DTR_OK && strcmp(key, "data_offsets") == 0) {
        uint64_t off[2];
        int n = 0;
        if (have_off++) rc = perr(p, "'data_offsets' given twice %s", what);
        if (rc == DTR_OK) rc = parse_uint_array(p, off, 2, &n, what);
        if (rc == DTR_OK && n != 2) rc = perr(p, "'data_offsets' must be [begin, end] %s", what);
        if (rc == DTR_OK) {
          t->begin = off[0];
          t->end = off[1];
        }
      } else if (rc == DTR_OK) {
        rc = perr(p, "unknown key '%.64s' %s (expected dtype, shape, data_offsets)", key, what);
      }
      free(key);
      DTR_CHECK(rc);
      if (peek(p) == ',') {
        p->pos++;
        continue;
      }
      break;
    }
  }
  DTR_CHECK(expect(p, '}', what));
  if (!have_dtype || !have_shape || !have_off)
    return perr(p, "tensor '%s' lacks '%s'", t->name,
                !have_dtype   ? "dtype"
                : !have_shape ? "shape"
                              : "data_offsets");
  return DTR_OK;
}

static dtr_result parse_meta(parser *p, dtr__sft_meta **meta, int *nmeta) {
  const char *what = "in __metadata__";
  DTR_CHECK(expect(p, '{', what));
  if (peek(p) == '}') {
    p->pos++;
    return DTR_OK;
  }
  for (;;) {
    if (*nmeta >= DTR__SFT_MAX_META) return perr(p, "more than %d __metadata__ entries", DTR__SFT_MAX_META);
    dtr__sft_meta *m = realloc(*meta, sizeof **meta * (size_t)(*nmeta + 1));
    if (!m)
      return dtr__fail(p->err, p->errcap, DTR_ERR_NOMEM, "%s: out of memory reading the header", p->name);
    *meta = m;
    m[*nmeta].key = m[*nmeta].value = NULL;
    (*nmeta)++;
    DTR_CHECK(parse_string(p, &m[*nmeta - 1].key, what));
    DTR_CHECK(expect(p, ':', what));
    if (peek(p) != '"') return perr(p, "__metadata__ value of '%.64s' is not a string", m[*nmeta - 1].key);
    DTR_CHECK(parse_string(p, &m[*nmeta - 1].value, what));
    if (peek(p) == ',') {
      p->pos++;
      continue;
    }
    return expect(p, '}', what);
  }
}

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(const dtr__sft_tensor *const *)a)->name, (*(const dtr__sft_tensor *const *)b)->name);
}
static int cmp_range(const void *a, const void *b) {
  const dtr__sft_tensor *x = *(const dtr__sft_tensor *const *)a, *y = *(const dtr__sft_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* After parsing: names unique, each range the size of its shape, ranges tiling [0, data_bytes). */
static dtr_result check_layout(parser *p, dtr__sft_tensor *t, int n, uint64_t data_bytes) {
  for (int i = 0; i < n; i++) {
    uint64_t want = 0;
    if (t[i].end < t[i].begin)
      return dtr__fail(p->err, p->errcap, DTR_ERR_PROTOCOL,
                       "%s: tensor '%s': data_offsets [%llu, %llu] end before begin", p->name, t[i].name,
                       (unsigned long long)t[i].begin, (unsigned long long)t[i].end);
    if (t[i].end > data_bytes)
      return dtr__fail(
          p->err, p->errcap, DTR_ERR_PROTOCOL,
          "%s: tensor '%s': data_offsets end %llu is past the data section (%llu bytes; truncated file?)",
          p->name, t[i].name, (unsigned long long)t[i].end, (unsigned long long)data_bytes);
    if (dtr__sft_tensor_bytes(t[i].dtype, t[i].ndim, t[i].shape, &want) != 0 || want != t[i].end - t[i].begin)
      return dtr__fail(
          p->err, p->errcap, DTR_ERR_PROTOCOL,
          "%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets [%llu, %llu] hold %llu",
          p->name, t[i].name, dtr__sft_dtype_name(t[i].dtype), (unsigned long long)want,
          (unsigned long long)t[i].begin, (unsigned long long)t[i].end,
          (unsigned long long)(t[i].end - t[i].begin));
  }
  if (n <= 0) {
    if (data_bytes != 0)
      return dtr__fail(p->err, p->errcap, DTR_ERR_PROTOCOL, "%s: no tensors but %llu data bytes", p->name,
                       (unsigned long long)data_bytes);
    return DTR_OK;
  }
  const dtr__sft_tensor **idx = malloc(sizeof *idx * (size_t)n);
  if (!idx) return dtr__fail(p->err, p->errcap, DTR_ERR_NOMEM, "%s: out of memory", p->name);
  for (int i = 0; i < n; i++) idx[i] = &t[i];
  dtr_result rc = DTR_OK;
  qsort(idx, (size_t)n, sizeof *idx, cmp_name);
  for (int i = 1; i < n && rc == DTR_OK; i++)
    if (strcmp(idx[i - 1]->name, idx[i]->name) == 0)
      rc = dtr__fail(p->err, p->errcap, DTR_ERR_PROTOCOL, "%s: tensor '%s' appears twice", p->name,
                     idx[i]->name);
  qsort(idx, (size_t)n, sizeof *idx, cmp_range);
  uint64_t at = 0;
  for (int i = 0; i < n && rc == DTR_OK; i++) {
    if (idx[i]->begin != at)
      rc = dtr__fail(p->err, p->errcap, DTR_ERR_PROTOCOL,
                     "%s: tensor '%s' starts at data byte %llu but the previous tensor ends at %llu (%s)",
                     p->name, idx[i]->name, (unsigned long long)idx[i]->begin, (unsigned long long)at,
                     idx[i]->begin > at ? "a hole" : "overlapping tensors");
    at = idx[i]->end;
  }
  if (rc == DTR_OK && at != data_bytes)
    rc = dtr__fail(p->err, p->errcap, DTR_ERR_PROTOCOL,
                   "%s: the tensors cover %llu data bytes but the file holds %llu after its header", p->name,
                   (unsigned long long)at, (unsigned long long)data_bytes);
  free(idx);
  return rc;
}

void dtr__sft_free_parsed(dtr__sft_tensor *tensors, int ntensors, dtr__sft_meta *meta, int nmeta) {
  for (int i = 0; i < ntensors; i++) free(tensors[i].name);
  free(tensors);
  for (int i = 0; i < nmeta; i++) {
    free(meta[i].key);
    free(meta[i].value);
  }
  free(meta);
}

dtr_result dtr__sft_parse_header(const char *json, size_t len, uint64_t data_bytes, const char *name,
                                 dtr__sft_tensor **tensors, int *ntensors, dtr__sft_meta **meta, int *nmeta,
                                 char *err, size_t errcap) {
  parser p = {.s = json, .len = len, .name = name ? name : "(memory)", .err = err, .errcap = errcap};
  dtr__sft_tensor *t = NULL;
  dtr__sft_meta *m = NULL;
  int n = 0, nm = 0, cap = 0, have_meta = 0;
  dtr_result rc = expect(&p, '{', "at the start of the header");
  if (rc == DTR_OK && peek(&p) == '}') {
    p.pos++;
  } else {
    while (rc == DTR_OK) {
      char *key = NULL;
      DTR_CHECK_GOTO(parse_string(&p, &key, "(a tensor name)"), rc, fail);
      if (strcmp(key, "__metadata__") == 0) {
        free(key);
        if (have_meta++) {
          rc = perr(&p, "__metadata__ given twice");
          goto fail;
        }
        DTR_CHECK_GOTO(expect(&p, ':', "after __metadata__"), rc, fail);
        DTR_CHECK_GOTO(parse_meta(&p, &m, &nm), rc, fail);
      } else {
        if (key[0] == '\0' || strlen(key) >= DTR_CKPT_MAX_NAME) {
          free(key);
          rc = perr(&p, "tensor name empty or longer than %d bytes", DTR_CKPT_MAX_NAME - 1);
          goto fail;
        }
        if (n == cap) {
          int nc = cap ? cap * 2 : 16;
          dtr__sft_tensor *nt = realloc(t, sizeof *t * (size_t)nc);
          if (!nt) {
            free(key);
            rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory reading the header", p.name);
            goto fail;
          }
          t = nt;
          cap = nc;
        }
        memset(&t[n], 0, sizeof t[n]);
        t[n].name = key;
        n++;
        DTR_CHECK_GOTO(expect(&p, ':', "after a tensor name"), rc, fail);
        DTR_CHECK_GOTO(parse_tensor(&p, &t[n - 1]), rc, fail);
      }
      if (peek(&p) == ',') {
        p.pos++;
        continue;
      }
      DTR_CHECK_GOTO(expect(&p, '}', "at the end of the header"), rc, fail);
      break;
    }
  }
  if (rc != DTR_OK) goto fail;
  skip_ws(&p);
  if (p.pos != p.len) {
    rc = perr(&p, "unexpected bytes after the header's closing '}'");
    goto fail;
  }
  DTR_CHECK_GOTO(check_layout(&p, t, n, data_bytes), rc, fail);
  *tensors = t;
  *ntensors = n;
  *meta = m;
  *nmeta = nm;
  return DTR_OK;
fail:
  dtr__sft_free_parsed(t, n, m, nm);
  return rc;
}

/* ---------------------------------------------------------------- other JSON (a config.json) */

/* Skip one JSON value of any kind, nested at most 64 deep. */
static dtr_result skip_value(parser *p, int depth) {
  if (depth > 64) return perr(p, "values nested more than 64 deep");
  char c = peek(p);
  if (c == '"') {
    char *s = NULL;
    DTR_CHECK(parse_string(p, &s, "(a value)"));
    free(s);
    return DTR_OK;
  }
  if (c == '{' || c == '[') {
    char close = c == '{' ? '}' : ']';
    p->pos++;
    if (peek(p) == close) {
      p->pos++;
      return DTR_OK;
    }
    for (;;) {
      if (c == '{') {
        char *k = NULL;
        DTR_CHECK(parse_string(p, &k, "(a key)"));
        free(k);
        DTR_CHECK(expect(p, ':', "after a key"));
      }
      DTR_CHECK(skip_value(p, depth + 1));
      if (peek(p) == ',') {
        p->pos++;
        continue;
      }
      return expect(p, close, "closing a list or object");
    }
  }
  size_t start = p->pos; /* a number, true, false or null */
  while (p->pos < p->len && p->s[p->pos] && strchr("+-.0123456789eEtrufalsn", p->s[p->pos])) p->pos++;
  if (p->pos == start) return perr(p, "expected a value, found '%c'", c ? c : ' ');
  return DTR_OK;
}

dtr_result dtr__json_member_int(const char *json, size_t len, const char *key, int64_t *out, char *err,
                                size_t errcap) {
  parser p = {.s = json, .len = len, .name = "(json)", .err = err, .errcap = errcap};
  DTR_CHECK(expect(&p, '{', "at the start"));
  dtr_result found = DTR_ERR_NOT_FOUND;
  if (peek(&p) == '}') return found;
  for (;;) {
    char *k = NULL;
    DTR_CHECK(parse_string(&p, &k, "(a key)"));
    int want = strcmp(k, key) == 0;
    free(k);
    DTR_CHECK(expect(&p, ':', "after a key"));
    uint64_t v;
    size_t digits = 0;
    if (want && peek(&p))
      while (p.pos + digits < p.len && p.s[p.pos + digits] >= '0' && p.s[p.pos + digits] <= '9') digits++;
    int integer = digits > 0 && (p.pos + digits == p.len || !strchr(".eE", p.s[p.pos + digits]));
    if (want && integer) { /* the wanted key with a value of another kind is skipped like the others */
      DTR_CHECK(parse_uint(&p, &v, "(a count)"));
      if (v > (uint64_t)INT64_MAX) return perr(&p, "'%s' is too large", key);
      *out = (int64_t)v;
      found = DTR_OK;
    } else {
      DTR_CHECK(skip_value(&p, 1));
    }
    if (peek(&p) == ',') {
      p.pos++;
      continue;
    }
    DTR_CHECK(expect(&p, '}', "at the end"));
    return found;
  }
}

/* ---------------------------------------------------------------- files */

static dtr_result pread_all(int fd, void *buf, size_t n, uint64_t off, const char *path, char *err,
                            size_t errcap) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: read failed: %s", path, strerror(errno));
    if (r == 0)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: file ends at byte %llu (truncated?)", path,
                       (unsigned long long)(off + got));
    got += (size_t)r;
  }
  return DTR_OK;
}

void dtr__sft_close(dtr__sft_file *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  dtr__sft_free_parsed(f->tensors, f->ntensors, f->meta, f->nmeta);
  free(f->path);
  free(f);
}

dtr_result dtr__sft_open(const char *path, dtr__sft_file **out, char *err, size_t errcap) {
  *out = NULL;
  dtr__sft_file *f = calloc(1, sizeof *f);
  char *hdr = NULL;
  dtr_result rc = DTR_OK;
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", path);
  }
  f->fd = dtr__open_regular(path, O_RDONLY); /* a FIFO fails here instead of blocking */
  if (f->fd < 0 && errno == EINVAL) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: not a regular file", path);
    goto fail;
  }
  if (f->fd < 0) {
    rc = dtr__fail(err, errcap, errno == ENOENT ? DTR_ERR_NOT_FOUND : DTR_ERR_SYSTEM, "%s: cannot open: %s",
                   path, strerror(errno));
    goto fail;
  }
  struct stat st;
  if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: not a regular file", path);
    goto fail;
  }
  uint64_t size = (uint64_t)st.st_size;
  if (size < 8) {
    rc = dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                   "%s: %llu bytes is too short for a safetensors file (no header length)", path,
                   (unsigned long long)size);
    goto fail;
  }
  unsigned char lenb[8];
  DTR_CHECK_GOTO(pread_all(f->fd, lenb, 8, 0, path, err, errcap), rc, fail);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | lenb[i];
  if (n < 2 || n > DTR__SFT_MAX_HEADER || n > size - 8) {
    rc = dtr__fail(
        err, errcap, DTR_ERR_PROTOCOL,
        "%s: header length %llu is impossible for a file of %llu bytes (limit %u): not a safetensors file, "
        "or truncated",
        path, (unsigned long long)n, (unsigned long long)size, DTR__SFT_MAX_HEADER);
    goto fail;
  }
  hdr = malloc((size_t)n);
  if (!hdr) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path,
                   (unsigned long long)n);
    goto fail;
  }
  DTR_CHECK_GOTO(pread_all(f->fd, hdr, (size_t)n, 8, path, err, errcap), rc, fail);
  f->header_len = n;
  f->data_start = 8 + n;
  f->data_bytes = size - f->data_start;
  DTR_CHECK_GOTO(dtr__sft_parse_header(hdr, (size_t)n, f->data_bytes, path, &f->tensors, &f->ntensors,
                                       &f->meta, &f->nmeta, err, errcap),
                 rc, fail);
  free(hdr);
  *out = f;
  return DTR_OK;
fail:
  free(hdr);
  dtr__sft_close(f);
  return rc;
}

const dtr__sft_tensor *dtr__sft_find(const dtr__sft_file *f, const char *name) {
  for (int i = 0; i < f->ntensors; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

const char *dtr__sft_meta_get(const dtr__sft_file *f, const char *key) {
  for (int i = 0; i < f->nmeta; i++)
    if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
  return NULL;
}

dtr_result dtr__sft_read(const dtr__sft_file *f, int i, void *dst, char *err, size_t errcap) {
  if (i < 0 || i >= f->ntensors)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: no tensor %d", f->path, i);
  const dtr__sft_tensor *t = &f->tensors[i];
  char what[DTR_CKPT_MAX_NAME + 4096];
  snprintf(what, sizeof what, "%s (tensor '%s')", f->path, t->name);
  return pread_all(f->fd, dst, (size_t)(t->end - t->begin), f->data_start + t->begin, what, err, errcap);
}

/* ---------------------------------------------------------------- writer */

struct dtr__sft_writer {
  char *path, *tmp;
  int fd;
  uint64_t total, written;
  int finished;
};

static dtr_result write_all(int fd, const void *buf, size_t n, const char *path, char *err, size_t errcap) {
  if (dtr__write_all(fd, buf, n) != 0)
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: write failed: %s", path, strerror(errno));
  return DTR_OK;
}

void dtr__sft_writer_destroy(dtr__sft_writer *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  if (!w->finished && w->tmp) unlink(w->tmp);
  free(w->path);
  free(w->tmp);
  free(w);
}

dtr_result dtr__sft_writer_create(const char *path, const dtr__sft_tensor *tensors, int n,
                                  const dtr__sft_meta *meta, int nmeta, dtr__sft_writer **out, char *err,
                                  size_t errcap) {
  *out = NULL;
  dtr_result rc = DTR_OK;
  dtr__sbuf b = {0};
  dtr__sft_writer *w = calloc(1, sizeof *w);
  if (!w) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", path);
  w->fd = -1;
  size_t plen = strlen(path);
  w->path = strdup(path);
  w->tmp = malloc(plen + 5);
  if (!w->path || !w->tmp) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", path);
    goto fail;
  }
  snprintf(w->tmp, plen + 5, "%s.tmp", path);

  dtr__sbuf_puts(&b, "{");
  int first = 1;
  if (nmeta > 0) {
    dtr__sbuf_puts(&b, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
      if (i) dtr__sbuf_puts(&b, ",");
      dtr__sbuf_json_str(&b, meta[i].key, 0);
      dtr__sbuf_puts(&b, ":");
      dtr__sbuf_json_str(&b, meta[i].value, 0);
    }
    dtr__sbuf_puts(&b, "}");
    first = 0;
  }
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    const dtr__sft_tensor *t = &tensors[i];
    const char *dn = dtr__sft_dtype_name(t->dtype);
    uint64_t bytes;
    if (!dn || !t->name || !t->name[0] || dtr__sft_tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) != 0) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: tensor %d ('%s') has a bad name, dtype or shape",
                     path, i, t->name ? t->name : "(null)");
      goto fail;
    }
    if (!first) dtr__sbuf_puts(&b, ",");
    first = 0;
    dtr__sbuf_json_str(&b, t->name, 0);
    dtr__sbuf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", dn);
    for (int d = 0; d < t->ndim; d++) dtr__sbuf_printf(&b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    dtr__sbuf_printf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                     (unsigned long long)(at + bytes));
    at += bytes;
  }
  dtr__sbuf_puts(&b, "}");
  /* Pad with spaces so the data section starts 8-aligned, as the reference writer does. */
  while (!b.oom && b.len % 8 != 0) dtr__sbuf_puts(&b, " ");
  if (b.oom) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory building the header", path);
    goto fail;
  }
  if (b.len > DTR__SFT_MAX_HEADER) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: header of %zu bytes exceeds the format's limit", path,
                   b.len);
    goto fail;
  }
  w->total = at;
  w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: cannot create: %s", w->tmp, strerror(errno));
    goto fail;
  }
  unsigned char lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
  DTR_CHECK_GOTO(write_all(w->fd, lenb, 8, w->tmp, err, errcap), rc, fail);
  DTR_CHECK_GOTO(write_all(w->fd, b.p, b.len, w->tmp, err, errcap), rc, fail);
  free(b.p);
  *out = w;
  return DTR_OK;
fail:
  free(b.p);
  dtr__sft_writer_destroy(w);
  return rc;
}

dtr_result dtr__sft_writer_append(dtr__sft_writer *w, const void *data, size_t bytes, char *err,
                                  size_t errcap) {
  if (w->finished || bytes > w->total - w->written)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %zu more bytes than the header declared", w->path,
                     (size_t)(w->written + bytes - w->total));
  DTR_CHECK(write_all(w->fd, data, bytes, w->tmp, err, errcap));
  w->written += bytes;
  return DTR_OK;
}

dtr_result dtr__sft_writer_finish(dtr__sft_writer *w, char *err, size_t errcap) {
  if (w->finished) return DTR_OK;
  if (w->written != w->total)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %llu of %llu data bytes written", w->path,
                     (unsigned long long)w->written, (unsigned long long)w->total);
  if (fsync(w->fd) != 0)
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: fsync: %s", w->tmp, strerror(errno));
  int fd = w->fd;
  w->fd = -1;
  if (close(fd) != 0) return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: close: %s", w->tmp, strerror(errno));
  if (rename(w->tmp, w->path) != 0)
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot rename %s to %s: %s", w->tmp, w->path,
                     strerror(errno));
  w->finished = 1;
  return DTR_OK;
}
