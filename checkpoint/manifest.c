/* manifest.yaml: written by rank 0 at commit, read (strictly) by every rank at load and by the tools.
 * Reading goes through libyaml's document API so every complaint carries path:line:col; validation
 * checks every box against its shape and that each piece's chunks cover it exactly, once. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "checkpoint/ckpt_format.h"
#include "common/check.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/yaml_error.h"

/* ------------------------------------------------------------------ writing */

static void put_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\x%02x", *p);
    /* Unicode line breaks would be folded by a YAML reader: escape them to read back the same bytes. */
    else if (p[0] == 0xc2 && p[1] == 0x85)
      fputs("\\N", f), p++;
    else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
      fputs(p[2] == 0xa8 ? "\\L" : "\\P", f), p += 2;
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void put_dims(FILE *f, int n, const int64_t *v) {
  fputc('[', f);
  for (int i = 0; i < n; i++) fprintf(f, "%s%" PRId64, i ? ", " : "", v[i]);
  fputc(']', f);
}

static void emit(FILE *f, const dtr__manifest *m) {
  fprintf(f, "# dtrain checkpoint manifest (docs/checkpoint.md)\n");
  fprintf(f, "format: %d\njob_id: ", m->format);
  put_str(f, m->job_id ? m->job_id : "");
  fprintf(f, "\nstep: %" PRId64 "\nworld: %d\nlevel: %d\nchunk_bytes: %" PRIu64 "\ncreated: ", m->step,
          m->world, m->level, m->chunk_bytes);
  put_str(f, m->created ? m->created : "");
  fprintf(f, "\nraw_bytes: %" PRIu64 "\nstored_bytes: %" PRIu64 "\nentries:%s\n", m->raw_bytes,
          m->stored_bytes, m->nentries ? "" : " []");
  for (int i = 0; i < m->nentries; i++) {
    const dtr__entry *e = &m->entries[i];
    fprintf(f, "  - name: ");
    put_str(f, e->name);
    fprintf(f, "\n    kind: %s\n", e->is_blob ? "blob" : "tensor");
    if (!e->is_blob) {
      fprintf(f, "    dtype: %s\n    shape: ", dtr_dtype_name(e->dtype));
      put_dims(f, e->ndim, e->shape);
      fputc('\n', f);
    }
    fprintf(f, "    pieces:%s\n", e->npieces ? "" : " []");
    for (int j = 0; j < e->npieces; j++) {
      const dtr__piece *p = &e->pieces[j];
      fprintf(f, "      - rank: %d\n", p->rank);
      if (!e->is_blob) {
        fprintf(f, "        offset: ");
        put_dims(f, e->ndim, p->offset);
        fprintf(f, "\n        extent: ");
        put_dims(f, e->ndim, p->extent);
        fputc('\n', f);
      }
      fprintf(f, "        raw_bytes: %" PRIu64 "\n        chunks:%s\n", p->raw_bytes,
              p->nchunks ? "" : " []");
      for (int k = 0; k < p->nchunks; k++) {
        const dtr__chunk *c = &p->chunks[k];
        fprintf(f,
                "          - {begin: %" PRIu64 ", count: %" PRIu64 ", offset: %" PRIu64 ", bytes: %" PRIu64
                ", xxh64: 0x%016" PRIx64 ", codec: %u}\n",
                c->elem_begin, c->elem_count, c->file_offset, c->stored_bytes, c->checksum, c->codec);
      }
    }
  }
}

dtr_result dtr__manifest_write(const char *path, const dtr__manifest *m, char *err, size_t errcap) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return dtr__fail(err, errcap, dtr__errno_result(errno), "cannot create manifest %s: %s", path,
                     strerror(errno));
  FILE *f = fdopen(fd, "w");
  if (!f) {
    int e = errno;
    close(fd);
    unlink(path);
    return dtr__fail(err, errcap, dtr__errno_result(e), "cannot write manifest %s: %s", path, strerror(e));
  }
  errno = 0;
  emit(f, m);
  int bad = ferror(f) || fflush(f) != 0;
  int e = errno;
  if (!bad && fsync(fd) != 0) bad = 1, e = errno;
  if (fclose(f) != 0 && !bad) bad = 1, e = errno;
  if (bad) {
    unlink(path);
    return dtr__fail(err, errcap, dtr__errno_result(e ? e : EIO), "cannot write manifest %s: %s", path,
                     strerror(e ? e : EIO));
  }
  return DTR_OK;
}

/* ------------------------------------------------------------------ reading */

typedef struct parse_ctx {
  yaml_document_t *doc;
  const char *name;
  char *err;
  size_t errcap;
} parse_ctx;

__attribute__((format(printf, 3, 4))) static dtr_result bad(parse_ctx *x, const yaml_node_t *n,
                                                            const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  size_t line = n ? n->start_mark.line + 1 : 1, col = n ? n->start_mark.column + 1 : 1;
  return dtr__fail(x->err, x->errcap, DTR_ERR_PROTOCOL, "%s:%zu:%zu: %s", x->name, line, col, msg);
}

static const char *scalar(const yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static dtr_result get_i64(parse_ctx *x, const yaml_node_t *n, const char *key, int64_t lo, int64_t hi,
                          int64_t *out) {
  const char *s = scalar(n);
  if (!s) return bad(x, n, "%s: expected an integer", key);
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end) return bad(x, n, "%s: '%s' is not an integer", key, s);
  if (v < lo || v > hi)
    return bad(x, n, "%s: %lld is out of range [%lld, %lld]", key, v, (long long)lo, (long long)hi);
  *out = v;
  return DTR_OK;
}

static dtr_result get_u64(parse_ctx *x, const yaml_node_t *n, const char *key, uint64_t hi, uint64_t *out) {
  const char *s = scalar(n);
  if (!s) return bad(x, n, "%s: expected an unsigned integer", key);
  int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  const char *d = hex ? s + 2 : s;
  if (!*d || *d == '-' || *d == '+' || *d == ' ')
    return bad(x, n, "%s: '%s' is not an unsigned integer", key, s);
  char *end;
  errno = 0;
  unsigned long long v = strtoull(d, &end, hex ? 16 : 10);
  if (errno || *end) return bad(x, n, "%s: '%s' is not an unsigned integer", key, s);
  if (v > hi) return bad(x, n, "%s: %llu is too large", key, v);
  *out = v;
  return DTR_OK;
}

static dtr_result get_int(parse_ctx *x, const yaml_node_t *n, const char *key, int lo, int hi, int *out) {
  int64_t v = 0;
  DTR_CHECK(get_i64(x, n, key, lo, hi, &v));
  *out = (int)v;
  return DTR_OK;
}

static dtr_result get_str(parse_ctx *x, const yaml_node_t *n, const char *key, size_t maxlen, char **out) {
  const char *s = scalar(n);
  if (!s) return bad(x, n, "%s: expected a string", key);
  if (strlen(s) != n->data.scalar.length) return bad(x, n, "%s: contains a NUL byte", key);
  if (strlen(s) > maxlen) return bad(x, n, "%s: longer than %zu bytes", key, maxlen);
  *out = strdup(s);
  return *out ? DTR_OK : DTR_ERR_NOMEM;
}

static dtr_result get_dims(parse_ctx *x, const yaml_node_t *n, const char *key, int *ndim, int64_t *v) {
  if (!n || n->type != YAML_SEQUENCE_NODE) return bad(x, n, "%s: expected a list of integers", key);
  int len = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (len > DTR_CKPT_MAX_DIMS) return bad(x, n, "%s: %d dimensions, at most %d", key, len, DTR_CKPT_MAX_DIMS);
  for (int i = 0; i < len; i++) {
    yaml_node_t *it = yaml_document_get_node(x->doc, n->data.sequence.items.start[i]);
    DTR_CHECK(get_i64(x, it, key, 0, INT64_MAX / 2, &v[i]));
  }
  *ndim = len;
  return DTR_OK;
}

/* Walk a mapping: every key must be in `keys` (at most once); vals[i] receives keys[i]'s node. */
static dtr_result get_map(parse_ctx *x, const yaml_node_t *n, const char *what, const char *const *keys,
                          int nkeys, yaml_node_t **vals) {
  if (!n || n->type != YAML_MAPPING_NODE) return bad(x, n, "%s: expected a mapping", what);
  for (int i = 0; i < nkeys; i++) vals[i] = NULL;
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
    const char *ks = scalar(k);
    if (!ks) return bad(x, k, "%s: keys must be strings", what);
    int found = -1;
    for (int i = 0; i < nkeys; i++)
      if (strcmp(ks, keys[i]) == 0) found = i;
    if (found < 0) return bad(x, k, "%s: unknown key '%s'", what, ks);
    if (vals[found]) return bad(x, k, "%s: duplicate key '%s'", what, ks);
    vals[found] = yaml_document_get_node(x->doc, p->value);
  }
  return DTR_OK;
}

static dtr_result need(parse_ctx *x, const yaml_node_t *map, yaml_node_t *v, const char *what,
                       const char *key) {
  if (!v) return bad(x, map, "%s: missing key '%s'", what, key);
  return DTR_OK;
}

static int seq_len(const yaml_node_t *n) {
  return (int)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static dtr_result parse_chunks(parse_ctx *x, yaml_node_t *n, const char *ename, uint64_t elems,
                               dtr__piece *p) {
  if (!n || n->type != YAML_SEQUENCE_NODE) return bad(x, n, "entry '%s': chunks: expected a list", ename);
  int len = seq_len(n);
  if ((elems == 0) != (len == 0))
    return bad(x, n, "entry '%s': %d chunks for a piece of %" PRIu64 " elements", ename, len, elems);
  p->chunks = calloc((size_t)(len ? len : 1), sizeof *p->chunks);
  if (!p->chunks) return DTR_ERR_NOMEM;
  p->nchunks = len;
  static const char *const keys[] = {"begin", "count", "offset", "bytes", "xxh64", "codec"};
  uint64_t next = 0;
  for (int i = 0; i < len; i++) {
    yaml_node_t *it = yaml_document_get_node(x->doc, n->data.sequence.items.start[i]), *v[6];
    DTR_CHECK(get_map(x, it, "chunk", keys, 6, v));
    for (int k = 0; k < 6; k++) DTR_CHECK(need(x, it, v[k], "chunk", keys[k]));
    dtr__chunk *c = &p->chunks[i];
    uint64_t codec;
    DTR_CHECK(get_u64(x, v[0], "begin", UINT64_MAX, &c->elem_begin));
    DTR_CHECK(get_u64(x, v[1], "count", UINT64_MAX, &c->elem_count));
    DTR_CHECK(get_u64(x, v[2], "offset", (uint64_t)INT64_MAX, &c->file_offset));
    DTR_CHECK(get_u64(x, v[3], "bytes", (uint64_t)INT64_MAX, &c->stored_bytes));
    DTR_CHECK(get_u64(x, v[4], "xxh64", UINT64_MAX, &c->checksum));
    DTR_CHECK(get_u64(x, v[5], "codec", DTR__CODEC_PLANES_ZSTD, &codec));
    c->codec = (uint32_t)codec;
    if (c->elem_begin != next)
      return bad(x, it,
                 "entry '%s': chunk %d begins at element %" PRIu64 ", expected %" PRIu64
                 " (chunks must cover the piece in order)",
                 ename, i, c->elem_begin, next);
    if (c->elem_count == 0 || c->elem_count > elems - next)
      return bad(x, it, "entry '%s': chunk %d has %" PRIu64 " elements; %" PRIu64 " remain in the piece",
                 ename, i, c->elem_count, elems - next);
    if (c->stored_bytes == 0 || c->file_offset > (uint64_t)INT64_MAX - c->stored_bytes)
      return bad(x, it, "entry '%s': chunk %d has a bad byte range", ename, i);
    next += c->elem_count;
  }
  if (next != elems)
    return bad(x, n, "entry '%s': chunks cover %" PRIu64 " of the piece's %" PRIu64 " elements", ename, next,
               elems);
  return DTR_OK;
}

static dtr_result parse_piece(parse_ctx *x, yaml_node_t *n, const dtr__manifest *m, const dtr__entry *e,
                              dtr__piece *p) {
  static const char *const keys[] = {"rank", "offset", "extent", "raw_bytes", "chunks"};
  yaml_node_t *v[5];
  DTR_CHECK(get_map(x, n, "piece", keys, 5, v));
  DTR_CHECK(need(x, n, v[0], "piece", "rank"));
  DTR_CHECK(need(x, n, v[3], "piece", "raw_bytes"));
  DTR_CHECK(need(x, n, v[4], "piece", "chunks"));
  DTR_CHECK(get_int(x, v[0], "rank", 0, m->world - 1, &p->rank));
  DTR_CHECK(get_u64(x, v[3], "raw_bytes", (uint64_t)INT64_MAX, &p->raw_bytes));
  uint64_t elems;
  if (e->is_blob) {
    if (v[1] || v[2])
      return bad(x, v[1] ? v[1] : v[2], "blob '%s': a blob piece has no offset or extent", e->name);
    elems = p->raw_bytes;
  } else {
    DTR_CHECK(need(x, n, v[1], "piece", "offset"));
    DTR_CHECK(need(x, n, v[2], "piece", "extent"));
    int no, ne;
    DTR_CHECK(get_dims(x, v[1], "offset", &no, p->offset));
    DTR_CHECK(get_dims(x, v[2], "extent", &ne, p->extent));
    if (no != e->ndim || ne != e->ndim)
      return bad(x, n, "tensor '%s': offset and extent need %d dimensions (got %d and %d)", e->name, e->ndim,
                 no, ne);
    uint64_t cnt = 1;
    for (int d = 0; d < e->ndim; d++) {
      if (p->offset[d] + p->extent[d] > e->shape[d])
        return bad(x, v[2],
                   "tensor '%s': box [%" PRId64 ", %" PRId64
                   ") of dimension %d lies outside its size %" PRId64,
                   e->name, p->offset[d], p->offset[d] + p->extent[d], d, e->shape[d]);
      cnt *= (uint64_t)
                 p->extent[d]; /* bounded: every extent <= its shape dimension, whose product was checked */
    }
    elems = cnt;
    if (p->raw_bytes != cnt * dtr_dtype_size(e->dtype))
      return bad(x, v[3],
                 "tensor '%s': raw_bytes %" PRIu64 " does not match its box (%" PRIu64 " elements of %s)",
                 e->name, p->raw_bytes, cnt, dtr_dtype_name(e->dtype));
  }
  return parse_chunks(x, v[4], e->name, elems, p);
}

static dtr_result parse_entry(parse_ctx *x, yaml_node_t *n, const dtr__manifest *m, dtr__entry *e) {
  static const char *const keys[] = {"name", "kind", "dtype", "shape", "pieces"};
  yaml_node_t *v[5];
  DTR_CHECK(get_map(x, n, "entry", keys, 5, v));
  DTR_CHECK(need(x, n, v[0], "entry", "name"));
  DTR_CHECK(need(x, n, v[1], "entry", "kind"));
  DTR_CHECK(need(x, n, v[4], "entry", "pieces"));
  DTR_CHECK(get_str(x, v[0], "name", DTR_CKPT_MAX_NAME - 1, &e->name));
  if (!e->name[0]) return bad(x, v[0], "name: empty");
  const char *kind = scalar(v[1]);
  if (kind && strcmp(kind, "blob") == 0)
    e->is_blob = 1;
  else if (!kind || strcmp(kind, "tensor") != 0)
    return bad(x, v[1], "entry '%s': kind must be tensor or blob", e->name);
  if (e->is_blob) {
    if (v[2] || v[3]) return bad(x, v[2] ? v[2] : v[3], "blob '%s': a blob has no dtype or shape", e->name);
    e->dtype = DTR_U8;
    e->ndim = 0;
  } else {
    DTR_CHECK(need(x, n, v[2], "entry", "dtype"));
    DTR_CHECK(need(x, n, v[3], "entry", "shape"));
    const char *ds = scalar(v[2]);
    if (!ds || dtr_dtype_parse(ds, &e->dtype) != DTR_OK)
      return bad(x, v[2], "tensor '%s': unknown dtype '%s'", e->name, ds ? ds : "");
    DTR_CHECK(get_dims(x, v[3], "shape", &e->ndim, e->shape));
    uint64_t total = dtr_dtype_size(e->dtype);
    for (int d = 0; d < e->ndim; d++) {
      if (e->shape[d] && total > ((uint64_t)1 << 62) / (uint64_t)e->shape[d])
        return bad(x, v[3], "tensor '%s': shape is too large", e->name);
      total *= (uint64_t)e->shape[d];
    }
  }
  if (v[4]->type != YAML_SEQUENCE_NODE) return bad(x, v[4], "entry '%s': pieces: expected a list", e->name);
  int len = seq_len(v[4]);
  e->pieces = calloc((size_t)(len ? len : 1), sizeof *e->pieces);
  if (!e->pieces) return DTR_ERR_NOMEM;
  for (int i = 0; i < len; i++) {
    yaml_node_t *it = yaml_document_get_node(x->doc, v[4]->data.sequence.items.start[i]);
    e->npieces = i + 1;
    DTR_CHECK(parse_piece(x, it, m, e, &e->pieces[i]));
    if (e->is_blob)
      for (int j = 0; j < i; j++)
        if (e->pieces[j].rank == e->pieces[i].rank)
          return bad(x, it, "blob '%s': rank %d has two pieces", e->name, e->pieces[i].rank);
  }
  return DTR_OK;
}

static dtr_result parse_root(parse_ctx *x, yaml_node_t *root, dtr__manifest *m) {
  static const char *const keys[] = {"format",      "job_id",  "step",      "world",        "level",
                                     "chunk_bytes", "created", "raw_bytes", "stored_bytes", "entries"};
  enum { NK = 10 };
  yaml_node_t *v[NK];
  if (!root) return bad(x, NULL, "empty manifest");
  DTR_CHECK(get_map(x, root, "manifest", keys, NK, v));
  /* The format first: a newer manifest may have keys we do not know; say "newer", not "unknown key". */
  DTR_CHECK(need(x, root, v[0], "manifest", "format"));
  DTR_CHECK(get_int(x, v[0], "format", 1, INT_MAX, &m->format));
  if (m->format > DTR__MANIFEST_VERSION)
    return bad(x, v[0], "format %d is newer than this dtrain reads (%d); upgrade dtrain", m->format,
               DTR__MANIFEST_VERSION);
  for (int i = 1; i < NK; i++) DTR_CHECK(need(x, root, v[i], "manifest", keys[i]));
  DTR_CHECK(get_str(x, v[1], "job_id", 4096, &m->job_id));
  DTR_CHECK(get_i64(x, v[2], "step", 0, INT64_MAX, &m->step));
  DTR_CHECK(get_int(x, v[3], "world", 1, 1 << 20, &m->world));
  DTR_CHECK(get_int(x, v[4], "level", -131072, 22, &m->level));
  DTR_CHECK(get_u64(x, v[5], "chunk_bytes", (uint64_t)INT64_MAX, &m->chunk_bytes));
  if (m->chunk_bytes == 0) return bad(x, v[5], "chunk_bytes: must be positive");
  DTR_CHECK(get_str(x, v[6], "created", 64, &m->created));
  DTR_CHECK(get_u64(x, v[7], "raw_bytes", UINT64_MAX, &m->raw_bytes));
  DTR_CHECK(get_u64(x, v[8], "stored_bytes", UINT64_MAX, &m->stored_bytes));
  if (v[9]->type != YAML_SEQUENCE_NODE) return bad(x, v[9], "entries: expected a list");
  int len = seq_len(v[9]);
  m->entries = calloc((size_t)(len ? len : 1), sizeof *m->entries);
  if (!m->entries) return DTR_ERR_NOMEM;
  for (int i = 0; i < len; i++) {
    yaml_node_t *it = yaml_document_get_node(x->doc, v[9]->data.sequence.items.start[i]);
    m->nentries = i + 1;
    DTR_CHECK(parse_entry(x, it, m, &m->entries[i]));
    for (int j = 0; j < i; j++)
      if (strcmp(m->entries[j].name, m->entries[i].name) == 0)
        return bad(x, it, "entry '%s' appears twice", m->entries[i].name);
  }
  return DTR_OK;
}

dtr_result dtr__manifest_parse(const char *text, size_t len, const char *name, dtr__manifest **out, char *err,
                               size_t errcap) {
  *out = NULL;
  if (!name) name = "manifest";
  DTR_CHECK(dtr__yaml_check_input(text, len, DTR__YAML_MAX_FLOW_DEPTH, name, DTR_ERR_PROTOCOL, err, errcap));
  yaml_parser_t parser;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&parser)) return DTR_ERR_NOMEM;
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    dtr_result rc = dtr__yaml_parse_fail(&parser, name, text, len, DTR_ERR_PROTOCOL, err, errcap);
    yaml_parser_delete(&parser);
    return rc;
  }
  dtr__manifest *m = calloc(1, sizeof *m);
  dtr_result rc = DTR_ERR_NOMEM;
  if (m) {
    parse_ctx x = {&doc, name, err, errcap};
    rc = parse_root(&x, yaml_document_get_root_node(&doc), m);
    /* One document only: a second one would be silently ignored otherwise. */
    if (rc == DTR_OK) {
      yaml_document_t more;
      if (!yaml_parser_load(&parser, &more)) {
        rc = dtr__yaml_parse_fail(&parser, name, text, len, DTR_ERR_PROTOCOL, err, errcap);
      } else {
        if (yaml_document_get_root_node(&more))
          rc = dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s:%zu:%zu: a second YAML document", name,
                         more.start_mark.line + 1, more.start_mark.column + 1);
        yaml_document_delete(&more);
      }
    }
  }
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  if (rc != DTR_OK) {
    dtr__manifest_free(m);
    return rc;
  }
  *out = m;
  return DTR_OK;
}

dtr_result dtr__manifest_read(const char *path, dtr__manifest **out, char *err, size_t errcap) {
  *out = NULL;
  int fd = dtr__open_regular(path, O_RDONLY);
  if (fd < 0 && errno == EINVAL)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: not a regular file of at most 1 GiB", path);
  if (fd < 0)
    return dtr__fail(err, errcap, errno == ENOENT ? DTR_ERR_NOT_FOUND : DTR_ERR_SYSTEM, "cannot open %s: %s",
                     path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)1 << 30) {
    close(fd);
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: not a regular file of at most 1 GiB", path);
  }
  size_t len = (size_t)st.st_size, got = 0;
  char *buf = malloc(len + 1);
  if (!buf) {
    close(fd);
    return DTR_ERR_NOMEM;
  }
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  if (got != len) {
    free(buf);
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot read %s: short read", path);
  }
  dtr_result rc = dtr__manifest_parse(buf, len, path, out, err, errcap);
  free(buf);
  return rc;
}

void dtr__manifest_free(dtr__manifest *m) {
  if (!m) return;
  for (int i = 0; i < m->nentries; i++) {
    dtr__entry *e = &m->entries[i];
    for (int j = 0; j < e->npieces; j++) free(e->pieces[j].chunks);
    free(e->pieces);
    free(e->name);
  }
  free(m->entries);
  free(m->job_id);
  free(m->created);
  free(m);
}

const dtr__entry *dtr__manifest_find(const dtr__manifest *m, const char *name) {
  for (int i = 0; m && name && i < m->nentries; i++)
    if (strcmp(m->entries[i].name, name) == 0) return &m->entries[i];
  return NULL;
}
