/* Reads one rank's shard file: checks the header on open, reads the index (footer first) on demand,
 * and reads, checksums and decodes single chunks. Every length and offset from the file is checked
 * against the file's size before it is used, so no input makes it crash or allocate without bound. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "checkpoint/shard_internal.h"
#include "common/check.h"
#include "common/fsutil.h"

struct dtr__shard {
  int fd;
  char *path;
  uint64_t size;         /* of the file */
  uint64_t header_bytes; /* chunks start here */
  uint64_t chunk_bytes;
  int64_t step;
  int rank, world, level;
  char *job_id;
  /* the index, once read */
  int index_loaded, nentries;
  dtr__shard_index_entry *entries;
  uint8_t *index_buf; /* the raw index, kept for its checksum's sake until close */
  /* reused across chunk reads (one thread at a time uses a shard) */
  dtr__codec_ctx *cx;
  uint8_t *stored, *scratch;
  size_t stored_cap, scratch_cap;
};

/* Fill len bytes at off or fail: a short read means the file is truncated. */
static dtr_result read_at(dtr__shard *s, void *buf, size_t len, uint64_t off, const char *what, char *err,
                          size_t errcap) {
  uint8_t *p = buf;
  if (off > s->size || len > s->size - off)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                     "%s: %s at offset %" PRIu64 " (%zu bytes) lies beyond the end of the file (%" PRIu64
                     " bytes): truncated?",
                     s->path, what, off, len, s->size);
  while (len > 0) {
    ssize_t n = pread(s->fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: reading %s at offset %" PRIu64 ": %s", s->path, what,
                       off, strerror(errno));
    if (n == 0)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: %s at offset %" PRIu64 ": file truncated", s->path,
                       what, off);
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return DTR_OK;
}

static dtr_result check_header(dtr__shard *s, const char *job_id, int64_t step, int rank, char *err,
                               size_t errcap) {
  uint8_t fixed[DTR__SHARD_HDR_FIXED];
  if (s->size < DTR__SHARD_HDR_FIXED)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: %" PRIu64 " bytes is too short for a shard header",
                     s->path, s->size);
  DTR_CHECK(read_at(s, fixed, sizeof fixed, 0, "header", err, errcap));
  if (memcmp(fixed, DTR__SHARD_MAGIC, 8) != 0)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: not a dtrain shard file (bad magic)", s->path);
  uint32_t version = dtr__get_u32(fixed + 8);
  if (version > DTR__SHARD_VERSION)
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                     "%s: shard format version %u is newer than this dtrain reads (%d): upgrade dtrain",
                     s->path, version, DTR__SHARD_VERSION);
  if (version == 0) return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: shard format version 0", s->path);
  uint32_t hb = dtr__get_u32(fixed + 12), jl = dtr__get_u32(fixed + 36);
  if (jl > DTR__SHARD_MAX_JOB || hb != DTR__SHARD_HDR_FIXED + jl + 8)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                     "%s: header length %u / job id length %u are inconsistent", s->path, hb, jl);
  uint8_t *h = malloc(hb);
  if (!h) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", s->path);
  dtr_result rc = read_at(s, h, hb, 0, "header", err, errcap);
  if (rc == DTR_OK && dtr__get_u64(h + DTR__SHARD_HDR_FIXED + jl) != XXH64(h, DTR__SHARD_HDR_FIXED + jl, 0))
    rc = dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: header checksum mismatch", s->path);
  if (rc == DTR_OK) {
    s->job_id = malloc(jl + 1);
    if (!s->job_id) rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", s->path);
  }
  if (rc != DTR_OK) {
    free(h);
    return rc;
  }
  memcpy(s->job_id, h + DTR__SHARD_HDR_FIXED, jl);
  s->job_id[jl] = 0;
  free(h);
  s->header_bytes = hb;
  s->step = (int64_t)dtr__get_u64(fixed + 16);
  s->rank = (int32_t)dtr__get_u32(fixed + 24);
  s->world = (int32_t)dtr__get_u32(fixed + 28);
  s->level = (int32_t)dtr__get_u32(fixed + 32);
  s->chunk_bytes = dtr__get_u64(fixed + 40);
  if (memchr(s->job_id, 0, jl))
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: job id contains a NUL byte", s->path);
  if (job_id && *job_id && strcmp(job_id, s->job_id) != 0)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: written by job '%s', not by this job '%s'", s->path,
                     s->job_id, job_id);
  if (step >= 0 && s->step != step)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: holds step %" PRId64 ", expected step %" PRId64,
                     s->path, s->step, step);
  if (rank >= 0 && s->rank != rank)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: holds rank %d, expected rank %d", s->path, s->rank,
                     rank);
  if (s->rank < 0 || s->world <= 0 || s->rank >= s->world)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: rank %d of world %d is impossible", s->path, s->rank,
                     s->world);
  return DTR_OK;
}

dtr_result dtr__shard_open_fd(int fd, const char *name, const char *job_id, int64_t step, int rank,
                              dtr__shard **out, char *err, size_t errcap) {
  char dummy[8];
  if (!err || errcap == 0) {
    err = dummy;
    errcap = sizeof dummy;
  }
  if (!out || !name) {
    if (fd >= 0) close(fd);
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "shard open: missing argument");
  }
  *out = NULL;
  dtr__shard *s = calloc(1, sizeof *s);
  if (!s || !(s->path = strdup(name))) {
    free(s);
    close(fd);
    return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", name);
  }
  s->fd = fd;
  struct stat st;
  dtr_result rc;
  if (fstat(fd, &st) != 0) {
    rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: stat: %s", name, strerror(errno));
    goto fail;
  }
  s->size = (uint64_t)st.st_size;
  DTR_CHECK_GOTO(check_header(s, job_id, step, rank, err, errcap), rc, fail);
  if (dtr__codec_ctx_create(&s->cx) != DTR_OK) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory for a codec context", name);
    goto fail;
  }
  *out = s;
  return DTR_OK;
fail:
  dtr__shard_close(s);
  return rc;
}

dtr_result dtr__shard_open(const char *path, const char *job_id, int64_t step, int rank, dtr__shard **out,
                           char *err, size_t errcap) {
  if (!path) return DTR_ERR_INVALID;
  int fd = dtr__open_regular(path, O_RDONLY);
  if (fd < 0) {
    int e = errno;
    if (e == EINVAL) return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: not a regular file", path);
    return dtr__fail(err, errcap, e == ENOENT ? DTR_ERR_NOT_FOUND : DTR_ERR_SYSTEM, "%s: open: %s", path,
                     strerror(e));
  }
  return dtr__shard_open_fd(fd, path, job_id, step, rank, out, err, errcap);
}

void dtr__shard_close(dtr__shard *s) {
  if (!s) return;
  if (s->fd >= 0) close(s->fd);
  if (s->entries)
    for (int i = 0; i < s->nentries; i++) {
      free((void *)s->entries[i].name);
      free((void *)s->entries[i].chunks);
    }
  free(s->entries);
  free(s->index_buf);
  dtr__codec_ctx_destroy(s->cx);
  free(s->stored);
  free(s->scratch);
  free(s->job_id);
  free(s->path);
  free(s);
}

static dtr_result grow(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap) return DTR_OK;
  uint8_t *p = realloc(*buf, need ? need : 1);
  if (!p) return DTR_ERR_NOMEM;
  *buf = p;
  *cap = need;
  return DTR_OK;
}

/* The largest raw size a chunk of this shard may claim: what the writer's chunk size allows. Bounds
 * the buffers a corrupt record can make us allocate. */
static uint64_t max_chunk_raw(const dtr__shard *s) {
  uint64_t m = s->chunk_bytes < 8 ? 8 : s->chunk_bytes;
  return m > ((uint64_t)1 << 32) ? (uint64_t)1 << 32 : m;
}

dtr_result dtr__shard_read_chunk(dtr__shard *s, const char *piece_name, dtr_dtype dtype, const dtr__chunk *c,
                                 void *dst, char *err, size_t errcap) {
  char dummy[8];
  if (!err || errcap == 0) {
    err = dummy;
    errcap = sizeof dummy;
  }
  if (!s || !c || (!dst && c->elem_count))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "shard read: missing argument");
  const char *pn = piece_name ? piece_name : "?";
  size_t es = dtr_dtype_size(dtype);
  if (es == 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %s: unknown dtype %d", s->path, pn, (int)dtype);
  uint64_t lim = max_chunk_raw(s);
  if (c->elem_count > lim / es || c->stored_bytes > dtr__codec_bound((size_t)(c->elem_count * es)))
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                     "%s: chunk at offset %" PRIu64 " of %s: %" PRIu64 " elements / %" PRIu64
                     " stored bytes exceed the shard's chunk size %" PRIu64,
                     s->path, c->file_offset, pn, c->elem_count, c->stored_bytes, s->chunk_bytes);
  if (c->file_offset < s->header_bytes)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                     "%s: chunk at offset %" PRIu64 " of %s overlaps the header", s->path, c->file_offset,
                     pn);
  size_t raw = (size_t)(c->elem_count * es), stored = (size_t)c->stored_bytes;
  if (grow(&s->stored, &s->stored_cap, stored) != DTR_OK || grow(&s->scratch, &s->scratch_cap, raw) != DTR_OK)
    return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory for chunk at offset %" PRIu64 " of %s",
                     s->path, c->file_offset, pn);
  char what[300];
  snprintf(what, sizeof what, "chunk of %s", pn);
  DTR_CHECK(read_at(s, s->stored, stored, c->file_offset, what, err, errcap));
  uint64_t sum = XXH64(s->stored, stored, 0);
  if (sum != c->checksum)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                     "%s: chunk at offset %" PRIu64 " of %s (elements %" PRIu64 "..%" PRIu64
                     "): checksum mismatch (expected %016" PRIx64 ", file has %016" PRIx64 ")",
                     s->path, c->file_offset, pn, c->elem_begin, c->elem_begin + c->elem_count, c->checksum,
                     sum);
  dtr_result rc = dtr__codec_decode(s->cx, c->codec, s->stored, stored, dtype, dst, raw, s->scratch);
  if (rc != DTR_OK)
    return dtr__fail(err, errcap, rc == DTR_ERR_PROTOCOL ? DTR_ERR_PROTOCOL : rc,
                     "%s: chunk at offset %" PRIu64 " of %s: cannot decode (codec %u, %zu -> %zu bytes): %s",
                     s->path, c->file_offset, pn, c->codec, stored, raw, dtr_strerror(rc));
  return DTR_OK;
}

/* Parse the index bytes; every count is bounded by the bytes that remain. */
static dtr_result parse_index(dtr__shard *s, uint64_t index_off, size_t len, char *err, size_t errcap) {
  const uint8_t *b = s->index_buf, *end = b + len;
  if (len < 4)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: index of %zu bytes is too short", s->path, len);
  uint32_t n = dtr__get_u32(b);
  b += 4;
  if (n > (len - 4) / DTR__SHARD_ENTRY_FIXED)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: index claims %u entries in %zu bytes", s->path, n,
                     len);
  s->entries = calloc(n ? n : 1, sizeof *s->entries);
  if (!s->entries) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", s->path);
  /* Names are copied out (the byte after a name in the index is the next field, not a NUL). */
  for (uint32_t i = 0; i < n; i++) {
    dtr__shard_index_entry *e = &s->entries[i];
    if ((size_t)(end - b) < 4) goto trunc;
    uint32_t nl = dtr__get_u32(b);
    if (nl == 0 || nl > DTR__SHARD_MAX_NAME || (size_t)(end - b) < 4 + (size_t)nl + 16) goto trunc;
    char *name = malloc(nl + 1);
    if (!name) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", s->path);
    memcpy(name, b + 4, nl);
    name[nl] = 0;
    e->name = name;
    s->nentries = (int)i + 1;
    b += 4 + nl;
    e->is_blob = b[0];
    e->dtype = (dtr_dtype)b[1];
    e->raw_bytes = dtr__get_u64(b + 4);
    uint32_t nch = dtr__get_u32(b + 12);
    b += 16;
    if (memchr(name, 0, nl))
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: index entry %u has a NUL in its name", s->path, i);
    size_t es = e->is_blob ? 1 : dtr_dtype_size(e->dtype);
    if (e->is_blob > 1 || es == 0 || (e->is_blob && e->dtype != DTR_U8) || e->raw_bytes % es)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: index entry %s: bad dtype %u / size %" PRIu64,
                       s->path, name, b[-15], e->raw_bytes);
    if (nch > (size_t)(end - b) / DTR__SHARD_CHUNK_REC) goto trunc;
    dtr__chunk *cs = calloc(nch ? nch : 1, sizeof *cs);
    if (!cs) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", s->path);
    e->chunks = cs;
    e->nchunks = (int)nch;
    uint64_t next = 0, elems = e->raw_bytes / es, lim = max_chunk_raw(s) / es;
    for (uint32_t k = 0; k < nch; k++, b += DTR__SHARD_CHUNK_REC) {
      dtr__chunk *c = &cs[k];
      c->elem_begin = dtr__get_u64(b);
      c->elem_count = dtr__get_u64(b + 8);
      c->file_offset = dtr__get_u64(b + 16);
      c->stored_bytes = dtr__get_u64(b + 24);
      c->checksum = dtr__get_u64(b + 32);
      c->codec = dtr__get_u32(b + 40);
      if (c->elem_begin != next || c->elem_count == 0 || c->elem_count > lim ||
          c->elem_count > elems - next || c->codec > DTR__CODEC_PLANES_ZSTD ||
          c->file_offset < s->header_bytes || c->file_offset > index_off ||
          c->stored_bytes > index_off - c->file_offset)
        return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                         "%s: index entry %s: chunk %u (offset %" PRIu64 ", elements %" PRIu64 "+%" PRIu64
                         ") is inconsistent",
                         s->path, name, k, c->file_offset, c->elem_begin, c->elem_count);
      next += c->elem_count;
    }
    if (next != elems)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                       "%s: index entry %s: chunks cover %" PRIu64 " of %" PRIu64 " elements", s->path, name,
                       next, elems);
  }
  if (b != end)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: %zu stray bytes after the index", s->path,
                     (size_t)(end - b));
  return DTR_OK;
trunc:
  return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: index truncated at entry %d", s->path, s->nentries);
}

dtr_result dtr__shard_index(dtr__shard *s, const dtr__shard_index_entry **entries, int *n, char *err,
                            size_t errcap) {
  char dummy[8];
  if (!err || errcap == 0) {
    err = dummy;
    errcap = sizeof dummy;
  }
  if (!s || !entries || !n) return dtr__fail(err, errcap, DTR_ERR_INVALID, "shard index: missing argument");
  if (!s->index_loaded) {
    uint8_t foot[DTR__SHARD_FOOTER];
    if (s->size < s->header_bytes + DTR__SHARD_FOOTER)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: no footer (file of %" PRIu64 " bytes): truncated",
                       s->path, s->size);
    DTR_CHECK(read_at(s, foot, sizeof foot, s->size - DTR__SHARD_FOOTER, "footer", err, errcap));
    if (memcmp(foot + 24, DTR__SHARD_END_MAGIC, 8) != 0)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: footer magic missing: truncated or not finished",
                       s->path);
    uint64_t off = dtr__get_u64(foot), len = dtr__get_u64(foot + 8), sum = dtr__get_u64(foot + 16);
    uint64_t lim = s->size - DTR__SHARD_FOOTER;
    if (off < s->header_bytes || off > lim || len != lim - off)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                       "%s: footer places the index at %" PRIu64 " (+%" PRIu64 ") in a file of %" PRIu64
                       " bytes",
                       s->path, off, len, s->size);
    s->index_buf = malloc(len ? len : 1);
    if (!s->index_buf) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", s->path);
    DTR_CHECK(read_at(s, s->index_buf, (size_t)len, off, "index", err, errcap));
    if (XXH64(s->index_buf, (size_t)len, 0) != sum)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: index checksum mismatch", s->path);
    dtr_result rc = parse_index(s, off, (size_t)len, err, errcap);
    if (rc != DTR_OK) {
      for (int i = 0; i < s->nentries; i++) {
        free((void *)s->entries[i].name);
        free((void *)s->entries[i].chunks);
      }
      free(s->entries);
      s->entries = NULL;
      s->nentries = 0;
      free(s->index_buf);
      s->index_buf = NULL;
      return rc;
    }
    s->index_loaded = 1;
  }
  *entries = s->entries;
  *n = s->nentries;
  return DTR_OK;
}
