/* Writes one rank's shard file: header, chunks compressed by `threads` workers (each with its own
 * codec context) and appended in whatever order they finish, then the index and the footer, fsynced.
 * A failed write removes the partial file. shard_internal.h has the byte layout. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "checkpoint/shard_internal.h"
#include "common/check.h"

typedef struct job {
  int src;   /* index into sources */
  int chunk; /* index into pieces[src].chunks */
  uint64_t esize;
} job;

typedef struct writer {
  const char *path;
  int fd;
  const dtr__shard_source *sources;
  const dtr__shard_params *p;
  dtr__piece *pieces;
  job *jobs;
  size_t njobs, next_job;
  uint64_t max_raw;   /* the largest chunk, for per-thread buffers */
  uint64_t next_off;  /* the file's end: where the next finished chunk goes */
  pthread_mutex_t mu; /* next_job, next_off, rc, err */
  dtr_result rc;
  char *err;
  size_t errcap;
} writer;

static size_t esize_of(const dtr__shard_source *s) {
  return s->is_blob ? 1 : dtr_dtype_size(s->dtype);
}

static dtr_result write_all(writer *w, const void *buf, size_t len, uint64_t off, char *err, size_t errcap) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(w->fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      /* a write that writes nothing means the device is full */
      int e = n < 0 ? errno : ENOSPC;
      return dtr__fail(err, errcap, dtr__errno_result(e), "%s: write at offset %llu: %s", w->path,
                       (unsigned long long)off, strerror(e));
    }
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return DTR_OK;
}

/* Record the first failure only; later ones are usually its consequences. */
static void set_failure(writer *w, dtr_result rc, const char *msg) {
  pthread_mutex_lock(&w->mu);
  if (w->rc == DTR_OK) {
    w->rc = rc;
    snprintf(w->err, w->errcap, "%s", msg);
  }
  pthread_mutex_unlock(&w->mu);
}

static void *worker_main(void *arg) {
  writer *w = arg;
  char err[512];
  dtr__codec_ctx *cx = NULL;
  size_t cap = dtr__codec_bound(w->max_raw);
  uint8_t *scratch = malloc(w->max_raw ? w->max_raw : 1), *out = malloc(cap);
  if (!scratch || !out || dtr__codec_ctx_create(&cx) != DTR_OK) {
    snprintf(err, sizeof err, "%s: out of memory for compression buffers (%llu bytes)", w->path,
             (unsigned long long)(w->max_raw + cap));
    set_failure(w, DTR_ERR_NOMEM, err);
    goto done;
  }
  for (;;) {
    pthread_mutex_lock(&w->mu);
    size_t j = w->rc == DTR_OK && w->next_job < w->njobs ? w->next_job++ : w->njobs;
    pthread_mutex_unlock(&w->mu);
    if (j >= w->njobs) break;
    const job *jb = &w->jobs[j];
    const dtr__shard_source *s = &w->sources[jb->src];
    dtr__chunk *c = &w->pieces[jb->src].chunks[jb->chunk];
    size_t raw = (size_t)(c->elem_count * jb->esize), stored;
    dtr_result rc =
        dtr__codec_encode(cx, (const uint8_t *)s->data + c->elem_begin * jb->esize, raw,
                          s->is_blob ? DTR_U8 : s->dtype, w->p->level, scratch, out, cap, &stored, &c->codec);
    if (rc != DTR_OK) {
      snprintf(err, sizeof err, "%s: compressing chunk %d of %s (level %d): %s", w->path, jb->chunk, s->name,
               w->p->level, dtr_strerror(rc));
      set_failure(w, rc, err);
      break;
    }
    c->stored_bytes = stored;
    c->checksum = XXH64(out, stored, 0);
    pthread_mutex_lock(&w->mu);
    c->file_offset = w->next_off;
    w->next_off += stored;
    pthread_mutex_unlock(&w->mu);
    rc = write_all(w, out, stored, c->file_offset, err, sizeof err);
    if (rc != DTR_OK) {
      set_failure(w, rc, err);
      break;
    }
  }
done:
  dtr__codec_ctx_destroy(cx);
  free(scratch);
  free(out);
  return NULL;
}

static dtr_result encode_header(const dtr__shard_params *p, uint8_t **out, size_t *len) {
  const char *job = p->job_id ? p->job_id : "";
  size_t jl = strlen(job);
  if (jl > DTR__SHARD_MAX_JOB) return DTR_ERR_INVALID;
  size_t n = DTR__SHARD_HDR_FIXED + jl + 8;
  uint8_t *h = calloc(1, n);
  if (!h) return DTR_ERR_NOMEM;
  memcpy(h, DTR__SHARD_MAGIC, 8);
  dtr__put_u32(h + 8, DTR__SHARD_VERSION);
  dtr__put_u32(h + 12, (uint32_t)n);
  dtr__put_u64(h + 16, (uint64_t)p->step);
  dtr__put_u32(h + 24, (uint32_t)p->rank);
  dtr__put_u32(h + 28, (uint32_t)p->world);
  dtr__put_u32(h + 32, (uint32_t)p->level);
  dtr__put_u32(h + 36, (uint32_t)jl);
  dtr__put_u64(h + 40, p->chunk_bytes ? p->chunk_bytes : (uint64_t)4 << 20);
  memcpy(h + DTR__SHARD_HDR_FIXED, job, jl);
  dtr__put_u64(h + DTR__SHARD_HDR_FIXED + jl, XXH64(h, DTR__SHARD_HDR_FIXED + jl, 0));
  *out = h;
  *len = n;
  return DTR_OK;
}

static dtr_result encode_index(const dtr__shard_source *sources, int n, const dtr__piece *pieces,
                               uint8_t **out, size_t *len) {
  size_t total = 4;
  for (int i = 0; i < n; i++)
    total +=
        DTR__SHARD_ENTRY_FIXED + strlen(sources[i].name) + (size_t)pieces[i].nchunks * DTR__SHARD_CHUNK_REC;
  uint8_t *b = calloc(1, total), *q = b;
  if (!b) return DTR_ERR_NOMEM;
  dtr__put_u32(q, (uint32_t)n);
  q += 4;
  for (int i = 0; i < n; i++) {
    size_t nl = strlen(sources[i].name);
    dtr__put_u32(q, (uint32_t)nl);
    memcpy(q + 4, sources[i].name, nl);
    q += 4 + nl;
    q[0] = (uint8_t)(sources[i].is_blob != 0);
    q[1] = (uint8_t)(sources[i].is_blob ? DTR_U8 : sources[i].dtype);
    dtr__put_u16(q + 2, 0);
    dtr__put_u64(q + 4, sources[i].raw_bytes);
    dtr__put_u32(q + 12, (uint32_t)pieces[i].nchunks);
    q += 16;
    for (int k = 0; k < pieces[i].nchunks; k++) {
      const dtr__chunk *c = &pieces[i].chunks[k];
      dtr__put_u64(q, c->elem_begin);
      dtr__put_u64(q + 8, c->elem_count);
      dtr__put_u64(q + 16, c->file_offset);
      dtr__put_u64(q + 24, c->stored_bytes);
      dtr__put_u64(q + 32, c->checksum);
      dtr__put_u32(q + 40, c->codec);
      dtr__put_u32(q + 44, 0);
      q += DTR__SHARD_CHUNK_REC;
    }
  }
  *out = b;
  *len = total;
  return DTR_OK;
}

/* Validate the arguments and lay out every chunk (elements, not bytes yet) and the job list. */
static dtr_result plan(writer *w, int n, char *err, size_t errcap) {
  const dtr__shard_params *p = w->p;
  uint64_t chunk_bytes = p->chunk_bytes ? p->chunk_bytes : (uint64_t)4 << 20;
  if (chunk_bytes > ((uint64_t)1 << 32))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: chunk_bytes %llu is above the 4 GiB limit", w->path,
                     (unsigned long long)chunk_bytes);
  size_t njobs = 0;
  for (int i = 0; i < n; i++) {
    const dtr__shard_source *s = &w->sources[i];
    size_t es = esize_of(s);
    if (!s->name || !*s->name || strlen(s->name) > DTR__SHARD_MAX_NAME)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: source %d has an empty or too long name", w->path,
                       i);
    if (es == 0)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %s has an unknown dtype %d", w->path, s->name,
                       (int)s->dtype);
    if (s->raw_bytes % es)
      return dtr__fail(err, errcap, DTR_ERR_INVALID,
                       "%s: %s has %llu bytes, not a whole number of %s elements", w->path, s->name,
                       (unsigned long long)s->raw_bytes, dtr_dtype_name(s->dtype));
    if (s->raw_bytes && !s->data)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %s has no data", w->path, s->name);
    uint64_t epc = chunk_bytes / es ? chunk_bytes / es : 1, elems = s->raw_bytes / es;
    uint64_t nch = (elems + epc - 1) / epc;
    if (nch > INT32_MAX)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: %s has too many chunks", w->path, s->name);
    memset(&w->pieces[i], 0, sizeof w->pieces[i]);
    w->pieces[i].rank = p->rank;
    w->pieces[i].raw_bytes = s->raw_bytes;
    w->pieces[i].nchunks = (int)nch;
    if (nch) {
      w->pieces[i].chunks = calloc(nch, sizeof(dtr__chunk));
      if (!w->pieces[i].chunks) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", w->path);
    }
    for (uint64_t k = 0; k < nch; k++) {
      dtr__chunk *c = &w->pieces[i].chunks[k];
      c->elem_begin = k * epc;
      c->elem_count = elems - c->elem_begin < epc ? elems - c->elem_begin : epc;
      if (c->elem_count * es > w->max_raw) w->max_raw = c->elem_count * es;
    }
    njobs += nch;
  }
  w->jobs = calloc(njobs ? njobs : 1, sizeof(job));
  if (!w->jobs) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", w->path);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < w->pieces[i].nchunks; k++)
      w->jobs[w->njobs++] = (job){.src = i, .chunk = k, .esize = esize_of(&w->sources[i])};
  return DTR_OK;
}

dtr_result dtr__shard_write(const char *path, const dtr__shard_source *sources, int n,
                            const dtr__shard_params *p, dtr__piece *pieces, char *err, size_t errcap) {
  char dummy[8];
  if (!err || errcap == 0) {
    err = dummy;
    errcap = sizeof dummy;
  }
  if (!path || !p || n < 0 || (n > 0 && (!sources || !pieces)))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "shard write: missing path, params, sources or pieces");
  if (p->job_id && strlen(p->job_id) > DTR__SHARD_MAX_JOB)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: job id longer than %d bytes", path,
                     DTR__SHARD_MAX_JOB);
  writer w = {
      .path = path, .fd = -1, .sources = sources, .p = p, .pieces = pieces, .err = err, .errcap = errcap};
  uint8_t *hdr = NULL, *idx = NULL;
  size_t hlen = 0, ilen = 0;
  int created = 0, nthreads = p->threads > 0 ? p->threads : 1;
  pthread_t *tids = NULL;
  dtr_result rc;
  for (int i = 0; i < n; i++) memset(&pieces[i], 0, sizeof pieces[i]);
  pthread_mutex_init(&w.mu, NULL);
  DTR_CHECK_GOTO(plan(&w, n, err, errcap), rc, fail);
  DTR_CHECK_GOTO(encode_header(p, &hdr, &hlen), rc, fail);

  w.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (w.fd < 0) {
    rc = dtr__fail(err, errcap, errno == EEXIST ? DTR_ERR_EXISTS : dtr__errno_result(errno), "%s: create: %s",
                   path, strerror(errno));
    goto fail;
  }
  created = 1;
  DTR_CHECK_GOTO(write_all(&w, hdr, hlen, 0, err, errcap), rc, fail);
  w.next_off = hlen;

  if ((size_t)nthreads > w.njobs) nthreads = w.njobs > 0 ? (int)w.njobs : 1;
  if (nthreads == 1) {
    worker_main(&w);
  } else {
    tids = calloc((size_t)nthreads, sizeof *tids);
    if (!tids) {
      rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", path);
      goto fail;
    }
    int started = 0;
    for (; started < nthreads; started++)
      if (pthread_create(&tids[started], NULL, worker_main, &w) != 0) break;
    if (started == 0) worker_main(&w); /* no thread at all: do the work here */
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
  }
  if ((rc = w.rc) != DTR_OK) goto fail;

  DTR_CHECK_GOTO(encode_index(sources, n, pieces, &idx, &ilen), rc, fail);
  uint64_t index_off = w.next_off;
  DTR_CHECK_GOTO(write_all(&w, idx, ilen, index_off, err, errcap), rc, fail);
  uint8_t foot[DTR__SHARD_FOOTER];
  dtr__put_u64(foot, index_off);
  dtr__put_u64(foot + 8, ilen);
  dtr__put_u64(foot + 16, XXH64(idx, ilen, 0));
  memcpy(foot + 24, DTR__SHARD_END_MAGIC, 8);
  DTR_CHECK_GOTO(write_all(&w, foot, sizeof foot, index_off + ilen, err, errcap), rc, fail);
  if (fsync(w.fd) != 0) {
    rc = dtr__fail(err, errcap, dtr__errno_result(errno), "%s: fsync: %s", path, strerror(errno));
    goto fail;
  }
  if (close(w.fd) != 0) {
    w.fd = -1;
    rc = dtr__fail(err, errcap, dtr__errno_result(errno), "%s: close: %s", path, strerror(errno));
    goto fail;
  }
  free(hdr);
  free(idx);
  free(tids);
  free(w.jobs);
  pthread_mutex_destroy(&w.mu);
  return DTR_OK;

fail:
  if (w.fd >= 0) close(w.fd);
  if (created) unlink(path); /* never a file we did not create (O_EXCL refused an existing one) */
  for (int i = 0; i < n; i++) {
    free(pieces[i].chunks);
    pieces[i].chunks = NULL;
    pieces[i].nchunks = 0;
  }
  free(hdr);
  free(idx);
  free(tids);
  free(w.jobs);
  pthread_mutex_destroy(&w.mu);
  return rc;
}
