/* `dtrain ckpt` behind the CLI: ls, verify, inspect, export to safetensors and import from it. Reads go
 * through the manifest and shard readers (ckpt_format.h); import writes through the public checkpointer
 * so what it produces is exactly what a run would have saved. */
#define _GNU_SOURCE
#include "checkpoint/ckpt_tools.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/box.h"
#include "checkpoint/ckpt_format.h"
#include "checkpoint/ckpt_paths.h"
#include "checkpoint/safetensors.h"
#include "collectives/comm_internal.h"
#include "common/check.h"
#include "common/log.h"
#include "dtrain/ckpt.h"

#define PATH_CAP 4096

/* ---------------------------------------------------------------- small helpers */

static const char *human(uint64_t b, char *buf, size_t cap) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  int u = 0;
  while (v >= 1024.0 && u < 4) v /= 1024.0, u++;
  if (u == 0)
    snprintf(buf, cap, "%llu B", (unsigned long long)b);
  else
    snprintf(buf, cap, "%.1f %s", v, units[u]);
  return buf;
}

static const char *dims_str(int ndim, const int64_t *v, char *buf, size_t cap) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && n < cap; d++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)v[d]);
  if (n < cap) snprintf(buf + n, cap - n, "]");
  return buf;
}

static const char *box_str(int ndim, const int64_t *off, const int64_t *ext, char *buf, size_t cap) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && n < cap; d++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld:%lld", d ? ", " : "", (long long)off[d],
                          (long long)(off[d] + ext[d]));
  if (n < cap) snprintf(buf + n, cap - n, "]");
  return buf;
}

static const char *codec_name(uint32_t c) {
  switch (c) {
    case DTR__CODEC_RAW:
      return "raw";
    case DTR__CODEC_ZSTD:
      return "zstd";
    case DTR__CODEC_PLANES_ZSTD:
      return "planes+zstd";
  }
  return "unknown";
}

static size_t esize_of(const dtr__entry *e) {
  return e->is_blob ? 1 : dtr_dtype_size(e->dtype);
}

static int is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The step to use: the given one, or the latest committed one. */
static dtr_result resolve_step(const char *dir, int64_t step, int64_t *out, char *err, size_t errcap) {
  if (!is_dir(dir)) return dtr__fail(err, errcap, DTR_ERR_NOT_FOUND, "%s: no such checkpoint directory", dir);
  if (step < 0) {
    DTR_CHECK(dtr_ckpt_latest_step(dir, &step));
    if (step < 0) return dtr__fail(err, errcap, DTR_ERR_NOT_FOUND, "%s: no committed checkpoint", dir);
  }
  char sd[PATH_CAP];
  dtr__ckpt_step_dir(sd, sizeof sd, dir, step);
  if (!is_dir(sd))
    return dtr__fail(err, errcap, DTR_ERR_NOT_FOUND, "%s: no step %lld (%s does not exist)", dir,
                     (long long)step, sd);
  *out = step;
  return DTR_OK;
}

static dtr_result read_manifest(const char *dir, int64_t step, char *sd, size_t sdcap, dtr__manifest **m,
                                char *err, size_t errcap) {
  char mp[PATH_CAP + 32];
  dtr__ckpt_step_dir(sd, sdcap, dir, step);
  snprintf(mp, sizeof mp, "%s/manifest.yaml", sd);
  DTR_CHECK(dtr__manifest_read(mp, m, err, errcap));
  if ((*m)->step != step) {
    dtr_result rc = dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: says step %lld but lies in %s", mp,
                              (long long)(*m)->step, sd);
    dtr__manifest_free(*m);
    *m = NULL;
    return rc;
  }
  return DTR_OK;
}

/* Bytes of the regular files directly inside a directory. */
static uint64_t dir_bytes(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 0;
  uint64_t sum = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char p[PATH_CAP + 256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) sum += (uint64_t)st.st_size;
  }
  closedir(d);
  return sum;
}

/* A reader's message without its leading "path: " when we are about to name the path ourselves. */
static const char *after_path(const char *msg, const char *path) {
  size_t n = strlen(path);
  return strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
}

/* ---------------------------------------------------------------- ls */

dtr_result dtr__ckpt_tool_ls(const char *dir, FILE *out, char *err, size_t errcap) {
  dtr__ckpt_step *steps = NULL;
  int n = 0;
  DTR_CHECK(dtr__ckpt_list_steps(dir, 1, &steps, &n, err, errcap));
  int64_t latest = -1;
  dtr_ckpt_latest_step(dir, &latest);
  fprintf(out, "%s: %d step director%s, latest committed: ", dir, n, n == 1 ? "y" : "ies");
  if (latest >= 0)
    fprintf(out, "%lld\n", (long long)latest);
  else
    fprintf(out, "none\n");
  if (n > 0)
    fprintf(out, "%-10s %-10s %5s %7s %5s %10s %10s %7s %10s  %-20s %s\n", "STEP", "STATE", "RANKS",
            "TENSORS", "BLOBS", "RAW", "STORED", "RATIO", "ON DISK", "CREATED", "JOB");
  for (int i = n - 1; i >= 0; i--) { /* oldest first */
    char sd[PATH_CAP], h1[32], h2[32], h3[32];
    if (steps[i].tmp) {
      dtr__ckpt_tmp_dir(sd, sizeof sd, dir, steps[i].step);
      fprintf(out,
              "%-10lld %-10s %5s %7s %5s %10s %10s %7s %10s  (a save that did not commit, or is running)\n",
              (long long)steps[i].step, "unfinished", "-", "-", "-", "-", "-", "-",
              human(dir_bytes(sd), h3, sizeof h3));
      continue;
    }
    dtr__manifest *m = NULL;
    char merr[1024] = "";
    dtr_result rc = read_manifest(dir, steps[i].step, sd, sizeof sd, &m, merr, sizeof merr);
    if (rc != DTR_OK) {
      fprintf(out, "%-10lld %-10s %s\n", (long long)steps[i].step, "BROKEN", merr);
      continue;
    }
    int nt = 0, nb = 0;
    for (int k = 0; k < m->nentries; k++) m->entries[k].is_blob ? nb++ : nt++;
    char ratio[32];
    if (m->stored_bytes > 0)
      snprintf(ratio, sizeof ratio, "%.2fx", (double)m->raw_bytes / (double)m->stored_bytes);
    else
      snprintf(ratio, sizeof ratio, "-");
    /* A quick look only (verify reads the chunks): every shard the manifest counts must exist. */
    int missing = 0, first_missing = -1;
    for (int r = 0; r < m->world; r++) {
      char shard[PATH_CAP + 32];
      struct stat st;
      dtr__ckpt_shard_path(shard, sizeof shard, sd, r);
      if (stat(shard, &st) != 0 && missing++ == 0) first_missing = r;
    }
    fprintf(out, "%-10lld %-10s %5d %7d %5d %10s %10s %7s %10s  %-20s %s", (long long)m->step,
            missing                   ? "BROKEN"
            : steps[i].step == latest ? "latest"
                                      : "committed",
            m->world, nt, nb, human(m->raw_bytes, h1, sizeof h1), human(m->stored_bytes, h2, sizeof h2),
            ratio, human(dir_bytes(sd), h3, sizeof h3), m->created ? m->created : "-",
            m->job_id && m->job_id[0] ? m->job_id : "-");
    if (missing)
      fprintf(out, "  (%d shard file%s missing, first rank_%05d.dtck)", missing, missing == 1 ? "" : "s",
              first_missing);
    fputc('\n', out);
    dtr__manifest_free(m);
  }
  free(steps);
  return DTR_OK;
}

/* ---------------------------------------------------------------- verify */

typedef struct vstate {
  FILE *out;
  int problems;
  char *err; /* the first problem */
  size_t errcap;
  uint64_t chunks, bytes;
} vstate;

static void problem(vstate *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(vstate *v, const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(v->out, "BROKEN %s\n", line);
  if (v->problems++ == 0) snprintf(v->err, v->errcap, "%s", line);
}

static int same_chunk(const dtr__chunk *a, const dtr__chunk *b) {
  return a->elem_begin == b->elem_begin && a->elem_count == b->elem_count &&
         a->file_offset == b->file_offset && a->stored_bytes == b->stored_bytes &&
         a->checksum == b->checksum && a->codec == b->codec;
}

typedef struct vbuf {
  void *p;
  size_t cap;
} vbuf;

/* Read, check and decode chunk k of one entry; a problem names the file, the chunk and the entry. */
static void verify_chunk(vstate *v, dtr__shard *s, const char *path, const char *name, int is_blob,
                         dtr_dtype dtype, uint64_t raw_bytes, int k, int nchunks, const dtr__chunk *c,
                         vbuf *b) {
  size_t es = is_blob ? 1 : dtr_dtype_size(dtype);
  char e[1024] = "";
  if (es == 0 || c->elem_count > raw_bytes / es) {
    problem(v,
            "%s: chunk %d of %d of '%s' (file offset %llu): claims %llu elements, more than its %llu bytes",
            path, k, nchunks, name, (unsigned long long)c->file_offset, (unsigned long long)c->elem_count,
            (unsigned long long)raw_bytes);
    return;
  }
  size_t need = (size_t)c->elem_count * es;
  if (need > b->cap) {
    void *nb = realloc(b->p, need);
    if (!nb) {
      problem(v, "%s: out of memory for chunk %d of '%s' (%zu bytes)", path, k, name, need);
      return;
    }
    b->p = nb;
    b->cap = need;
  }
  if (dtr__shard_read_chunk(s, name, dtype, c, b->p, e, sizeof e) != DTR_OK) {
    problem(v, "%s: chunk %d of %d of '%s' (file offset %llu, %llu stored bytes, xxh64 %016llx): %s", path, k,
            nchunks, name, (unsigned long long)c->file_offset, (unsigned long long)c->stored_bytes,
            (unsigned long long)c->checksum, after_path(e, path));
    return;
  }
  v->chunks++;
  v->bytes += c->stored_bytes;
}

/* One shard: every chunk its own index lists, then the manifest's view of it. When the index cannot be
 * read (a truncated file), the manifest's chunks of this rank are checked instead, so the report still
 * says which chunks are intact and which are lost. */
static void verify_shard(vstate *v, const dtr__manifest *m, const char *sd, int r) {
  char path[PATH_CAP + 32], e[1024] = "";
  dtr__ckpt_shard_path(path, sizeof path, sd, r);
  dtr__shard *s = NULL;
  if (dtr__shard_open(path, m->job_id, m->step, r, &s, e, sizeof e) != DTR_OK) {
    problem(v, "%s: %s", path, after_path(e, path));
    return;
  }
  vbuf b = {0};
  const dtr__shard_index_entry *ix = NULL;
  int nix = 0;
  int have_index = dtr__shard_index(s, &ix, &nix, e, sizeof e) == DTR_OK;
  if (!have_index) problem(v, "%s: index unreadable: %s", path, after_path(e, path));
  for (int i = 0; have_index && i < nix; i++)
    for (int k = 0; k < ix[i].nchunks; k++)
      verify_chunk(v, s, path, ix[i].name, ix[i].is_blob, ix[i].dtype, ix[i].raw_bytes, k, ix[i].nchunks,
                   &ix[i].chunks[k], &b);
  /* The loader trusts the manifest's chunk table: it must say what the shard itself says. */
  for (int j = 0; j < m->nentries; j++) {
    const dtr__entry *en = &m->entries[j];
    for (int p = 0; p < en->npieces; p++) {
      const dtr__piece *pc = &en->pieces[p];
      if (pc->rank != r) continue;
      if (!have_index) {
        for (int k = 0; k < pc->nchunks; k++)
          verify_chunk(v, s, path, en->name, en->is_blob, en->dtype, pc->raw_bytes, k, pc->nchunks,
                       &pc->chunks[k], &b);
        continue;
      }
      /* a rank may save several pieces of one tensor: its k-th piece is its index's k-th entry of the name */
      int nth = 0;
      for (int q = 0; q < p; q++) nth += en->pieces[q].rank == r;
      const dtr__shard_index_entry *x = NULL;
      for (int i = 0; i < nix && !x; i++)
        if (strcmp(ix[i].name, en->name) == 0 && nth-- == 0) x = &ix[i];
      if (!x) {
        problem(v, "%s: the manifest places '%s' in this shard but its index has no such entry", path,
                en->name);
        continue;
      }
      if (x->nchunks != pc->nchunks || x->raw_bytes != pc->raw_bytes) {
        problem(v, "%s: '%s': the manifest says %d chunks of %llu bytes, the shard's index %d chunks of %llu",
                path, en->name, pc->nchunks, (unsigned long long)pc->raw_bytes, x->nchunks,
                (unsigned long long)x->raw_bytes);
        continue;
      }
      for (int k = 0; k < pc->nchunks; k++)
        if (!same_chunk(&pc->chunks[k], &x->chunks[k]))
          problem(v,
                  "%s: chunk %d of '%s': the manifest (offset %llu, xxh64 %016llx) and the shard's index "
                  "(offset %llu, xxh64 %016llx) disagree",
                  path, k, en->name, (unsigned long long)pc->chunks[k].file_offset,
                  (unsigned long long)pc->chunks[k].checksum, (unsigned long long)x->chunks[k].file_offset,
                  (unsigned long long)x->chunks[k].checksum);
    }
  }
  free(b.p);
  dtr__shard_close(s);
}

static void verify_step(vstate *v, const char *dir, int64_t step) {
  char sd[PATH_CAP], e[1024] = "";
  dtr__manifest *m = NULL;
  int before = v->problems;
  uint64_t c0 = v->chunks, b0 = v->bytes;
  if (read_manifest(dir, step, sd, sizeof sd, &m, e, sizeof e) != DTR_OK) {
    problem(v, "%s", e);
  } else {
    for (int r = 0; r < m->world; r++) verify_shard(v, m, sd, r);
  }
  char h[32];
  if (v->problems == before)
    fprintf(v->out, "step %lld: OK (%d shard%s, %llu chunks, %s checked)\n", (long long)step, m->world,
            m->world == 1 ? "" : "s", (unsigned long long)(v->chunks - c0),
            human(v->bytes - b0, h, sizeof h));
  else
    fprintf(v->out, "step %lld: BROKEN (%d problem%s)\n", (long long)step, v->problems - before,
            v->problems - before == 1 ? "" : "s");
  dtr__manifest_free(m);
}

dtr_result dtr__ckpt_tool_verify(const char *dir, int64_t step, FILE *out, char *err, size_t errcap) {
  vstate v = {.out = out, .err = err, .errcap = errcap};
  if (step >= 0) {
    int64_t s;
    DTR_CHECK(resolve_step(dir, step, &s, err, errcap));
    verify_step(&v, dir, s);
  } else {
    dtr__ckpt_step *steps = NULL;
    int n = 0;
    DTR_CHECK(dtr__ckpt_list_steps(dir, 0, &steps, &n, err, errcap));
    if (n == 0) {
      free(steps);
      return dtr__fail(err, errcap, DTR_ERR_NOT_FOUND, "%s: no committed checkpoint", dir);
    }
    for (int i = n - 1; i >= 0; i--) verify_step(&v, dir, steps[i].step); /* oldest first */
    free(steps);
  }
  return v.problems ? DTR_ERR_PROTOCOL : DTR_OK;
}

/* ---------------------------------------------------------------- inspect */

static void describe_split(const dtr__entry *e, char *buf, size_t cap) {
  if (e->npieces == 0) {
    snprintf(buf, cap, dtr__box_elems(e->ndim, e->shape) == 0 ? "empty" : "not saved: INCOMPLETE");
    return;
  }
  int split[DTR_CKPT_MAX_DIMS] = {0}, nsplit = 0;
  for (int d = 0; d < e->ndim; d++)
    for (int p = 0; p < e->npieces && !split[d]; p++)
      if (e->pieces[p].offset[d] != 0 || e->pieces[p].extent[d] != e->shape[d]) split[d] = 1, nsplit++;
  size_t n;
  if (nsplit == 0) {
    if (e->npieces == 1)
      n = (size_t)snprintf(buf, cap, "whole, saved by rank %d", e->pieces[0].rank);
    else
      n = (size_t)snprintf(buf, cap, "whole, saved by %d ranks (copies)", e->npieces);
  } else {
    n = (size_t)snprintf(buf, cap, "split along dim%s", nsplit > 1 ? "s" : "");
    int first = 1;
    for (int d = 0; d < e->ndim && n < cap; d++)
      if (split[d]) {
        n += (size_t)snprintf(buf + n, cap - n, "%s%d", first ? " " : ",", d);
        first = 0;
      }
    if (n < cap) n += (size_t)snprintf(buf + n, cap - n, " into %d pieces", e->npieces);
  }
  if (nsplit == 0) return; /* copies of the whole: nothing more to say */
  int64_t total = dtr__box_elems(e->ndim, e->shape), held = 0;
  for (int p = 0; p < e->npieces; p++) held += dtr__box_elems(e->ndim, e->pieces[p].extent);
  if (n < cap && held != total)
    snprintf(buf + n, cap - n, " (the pieces hold %lld of %lld elements%s)", (long long)held,
             (long long)total, held < total ? ": INCOMPLETE" : ": overlapping");
}

dtr_result dtr__ckpt_tool_inspect(const char *dir, int64_t step, int chunks, FILE *out, char *err,
                                  size_t errcap) {
  char sd[PATH_CAP], h1[32], h2[32], b1[256], b2[512];
  dtr__manifest *m = NULL;
  DTR_CHECK(resolve_step(dir, step, &step, err, errcap));
  DTR_CHECK(read_manifest(dir, step, sd, sizeof sd, &m, err, errcap));
  int nt = 0, nb = 0;
  for (int k = 0; k < m->nentries; k++) m->entries[k].is_blob ? nb++ : nt++;
  fprintf(out, "step %lld in %s: job '%s', %d rank%s, created %s, zstd level %d, chunks of %llu bytes\n",
          (long long)m->step, sd, m->job_id ? m->job_id : "", m->world, m->world == 1 ? "" : "s",
          m->created ? m->created : "-", m->level, (unsigned long long)m->chunk_bytes);
  fprintf(out, "%d tensors, %d blobs; raw %s, stored %s (ratio %.2fx)\n", nt, nb,
          human(m->raw_bytes, h1, sizeof h1), human(m->stored_bytes, h2, sizeof h2),
          m->stored_bytes ? (double)m->raw_bytes / (double)m->stored_bytes : 0.0);
  for (int k = 0; k < m->nentries; k++) {
    const dtr__entry *e = &m->entries[k];
    uint64_t raw = 0, stored = 0;
    for (int p = 0; p < e->npieces; p++) {
      raw += e->pieces[p].raw_bytes;
      for (int c = 0; c < e->pieces[p].nchunks; c++) stored += e->pieces[p].chunks[c].stored_bytes;
    }
    if (e->is_blob) {
      fprintf(out, "blob %s: %d rank%s, %llu bytes in all\n", e->name, e->npieces, e->npieces == 1 ? "" : "s",
              (unsigned long long)raw);
    } else {
      describe_split(e, b2, sizeof b2);
      fprintf(out, "tensor %s: %s %s, %llu bytes, %llu stored; %s\n", e->name, dtr_dtype_name(e->dtype),
              dims_str(e->ndim, e->shape, b1, sizeof b1),
              (unsigned long long)dtr__box_elems(e->ndim, e->shape) * dtr_dtype_size(e->dtype),
              (unsigned long long)stored, b2);
    }
    for (int p = 0; p < e->npieces; p++) {
      const dtr__piece *pc = &e->pieces[p];
      uint64_t st = 0;
      for (int c = 0; c < pc->nchunks; c++) st += pc->chunks[c].stored_bytes;
      if (e->is_blob)
        fprintf(out, "  rank %d: %llu bytes in %d chunk%s, %llu stored\n", pc->rank,
                (unsigned long long)pc->raw_bytes, pc->nchunks, pc->nchunks == 1 ? "" : "s",
                (unsigned long long)st);
      else
        fprintf(out, "  rank %d: %s %llu bytes in %d chunk%s, %llu stored\n", pc->rank,
                box_str(e->ndim, pc->offset, pc->extent, b1, sizeof b1), (unsigned long long)pc->raw_bytes,
                pc->nchunks, pc->nchunks == 1 ? "" : "s", (unsigned long long)st);
      if (!chunks) continue;
      char shard[PATH_CAP + 32];
      dtr__ckpt_shard_path(shard, sizeof shard, sd, pc->rank);
      for (int c = 0; c < pc->nchunks; c++) {
        const dtr__chunk *ch = &pc->chunks[c];
        fprintf(out,
                "    chunk %d: elements %llu..%llu, %s offset %llu, %llu stored bytes, %s, xxh64 %016llx\n",
                c, (unsigned long long)ch->elem_begin, (unsigned long long)(ch->elem_begin + ch->elem_count),
                shard, (unsigned long long)ch->file_offset, (unsigned long long)ch->stored_bytes,
                codec_name(ch->codec), (unsigned long long)ch->checksum);
      }
    }
  }
  dtr__manifest_free(m);
  return DTR_OK;
}

/* ---------------------------------------------------------------- reading whole pieces */

typedef struct reader {
  const dtr__manifest *m;
  const char *sd;
  dtr__shard **shards; /* opened on first use */
} reader;

static void reader_close(reader *rd) {
  if (!rd->shards) return;
  for (int r = 0; r < rd->m->world; r++) dtr__shard_close(rd->shards[r]);
  free(rd->shards);
  rd->shards = NULL;
}

/* Decode every chunk of piece pc of e into dst (pc->raw_bytes bytes). */
static dtr_result read_piece(reader *rd, const dtr__entry *e, const dtr__piece *pc, void *dst, char *err,
                             size_t errcap) {
  size_t es = esize_of(e);
  int64_t elems = e->is_blob ? (int64_t)pc->raw_bytes : dtr__box_elems(e->ndim, pc->extent);
  if (es == 0 || elems < 0 || (uint64_t)elems * es != pc->raw_bytes || pc->rank < 0 ||
      pc->rank >= rd->m->world)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                     "%s: '%s': the piece of rank %d is inconsistent (%llu bytes)", rd->sd, e->name, pc->rank,
                     (unsigned long long)pc->raw_bytes);
  if (!rd->shards) {
    rd->shards = calloc((size_t)rd->m->world, sizeof *rd->shards);
    if (!rd->shards) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
  }
  char path[PATH_CAP + 32];
  dtr__ckpt_shard_path(path, sizeof path, rd->sd, pc->rank);
  if (!rd->shards[pc->rank])
    DTR_CHECK(
        dtr__shard_open(path, rd->m->job_id, rd->m->step, pc->rank, &rd->shards[pc->rank], err, errcap));
  for (int k = 0; k < pc->nchunks; k++) {
    const dtr__chunk *c = &pc->chunks[k];
    if (c->elem_begin > (uint64_t)elems || c->elem_count > (uint64_t)elems - c->elem_begin)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: chunk %d of '%s' lies outside its piece", path, k,
                       e->name);
    char e2[1024] = "";
    if (dtr__shard_read_chunk(rd->shards[pc->rank], e->name, e->dtype, c, (char *)dst + c->elem_begin * es,
                              e2, sizeof e2) != DTR_OK)
      return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: chunk %d of %d of '%s' (file offset %llu): %s",
                       path, k, pc->nchunks, e->name, (unsigned long long)c->file_offset,
                       after_path(e2, path));
  }
  return DTR_OK;
}

/* The whole tensor e into a fresh buffer (*out, *bytes). */
static dtr_result assemble(reader *rd, const dtr__entry *e, void **out, uint64_t *bytes, char *err,
                           size_t errcap) {
  *out = NULL;
  size_t es = dtr_dtype_size(e->dtype);
  int64_t total = dtr__box_elems(e->ndim, e->shape);
  uint64_t nbytes;
  if (total < 0 || dtr__sft_tensor_bytes(e->dtype, e->ndim, e->shape, &nbytes) != 0)
    return dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: tensor '%s' has an impossible shape", rd->sd,
                     e->name);
  char *full = malloc(nbytes ? (size_t)nbytes : 1);
  uint8_t *covered = calloc((size_t)total / 8 + 1, 1);
  char *piece = NULL;
  dtr_result rc = DTR_OK;
  dtr__box whole = dtr__box_make(e->ndim, NULL, e->shape);
  if (!full || !covered) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory for tensor '%s' (%llu bytes)", e->name,
                   (unsigned long long)nbytes);
    goto done;
  }
  for (int p = 0; p < e->npieces; p++) {
    const dtr__piece *pc = &e->pieces[p];
    for (int d = 0; d < e->ndim; d++)
      if (pc->offset[d] < 0 || pc->extent[d] < 0 || pc->offset[d] > e->shape[d] ||
          pc->extent[d] > e->shape[d] - pc->offset[d]) {
        rc = dtr__fail(err, errcap, DTR_ERR_PROTOCOL,
                       "%s: tensor '%s': the box of rank %d lies outside its shape", rd->sd, e->name,
                       pc->rank);
        goto done;
      }
    char *np = realloc(piece, pc->raw_bytes ? (size_t)pc->raw_bytes : 1);
    if (!np) {
      rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory for a piece of '%s'", e->name);
      goto done;
    }
    piece = np;
    DTR_CHECK_GOTO(read_piece(rd, e, pc, piece, err, errcap), rc, done);
    dtr__box sbox = dtr__box_make(e->ndim, pc->offset, pc->extent);
    dtr__box_copy(full, &whole, piece, &sbox, 0, dtr__box_elems(sbox.nd, sbox.ext), es, covered);
  }
  int64_t missing = dtr__mask_first_clear(covered, total);
  if (missing >= 0) {
    rc = dtr__fail(
        err, errcap, DTR_ERR_PROTOCOL,
        "%s: tensor '%s': element %lld is in no saved piece (the checkpoint does not hold it whole)", rd->sd,
        e->name, (long long)missing);
    goto done;
  }
  *out = full;
  *bytes = nbytes;
  full = NULL;
done:
  free(full);
  free(covered);
  free(piece);
  return rc;
}

/* ---------------------------------------------------------------- export */

typedef struct export_item {
  const dtr__entry *e;
  const dtr__piece *blob_piece; /* blobs: the rank's piece */
  int transpose;
} export_item;

static int is_float(dtr_dtype t) {
  return t == DTR_F32 || t == DTR_F64 || t == DTR_F16 || t == DTR_BF16;
}

static float get_f(const void *p, size_t i, dtr_dtype t) {
  const char *b = p;
  uint16_t h;
  float f;
  double d;
  switch (t) {
    case DTR_F64:
      memcpy(&d, b + 8 * i, 8);
      return (float)d;
    case DTR_F16:
    case DTR_BF16:
      memcpy(&h, b + 2 * i, 2);
      return t == DTR_F16 ? dtr__f16_to_f32(h) : dtr__bf16_to_f32(h);
    default:
      memcpy(&f, b + 4 * i, 4);
      return f;
  }
}

static void put_f(void *p, size_t i, dtr_dtype t, float f) {
  char *b = p;
  uint16_t h;
  double d = f;
  switch (t) {
    case DTR_F64:
      memcpy(b + 8 * i, &d, 8);
      break;
    case DTR_F16:
    case DTR_BF16:
      h = t == DTR_F16 ? dtr__f32_to_f16(f) : dtr__f32_to_bf16(f);
      memcpy(b + 2 * i, &h, 2);
      break;
    default:
      memcpy(b + 4 * i, &f, 4);
  }
}

/* The whole tensor buf [rows, cols] of dtype from as dtype to, transposed when asked (the element
 * size stays when only transposing): a fresh buffer in *out. An F64 tensor converted goes through f32. */
static dtr_result convert(const void *buf, const dtr__entry *e, dtr_dtype to, int transpose, void **out,
                          uint64_t *bytes, char *err, size_t errcap) {
  size_t n = (size_t)dtr__box_elems(e->ndim, e->shape), es = dtr_dtype_size(to);
  size_t rows = e->ndim == 2 ? (size_t)e->shape[0] : n, cols = e->ndim == 2 ? (size_t)e->shape[1] : 1;
  char *o = malloc(n * es > 0 ? n * es : 1);
  if (!o) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory converting '%s'", e->name);
  for (size_t i = 0; i < n; i++) {
    size_t at = transpose ? (i % cols) * rows + i / cols : i;
    if (to == e->dtype)
      memcpy(o + at * es, (const char *)buf + i * es, es);
    else
      put_f(o, at, to, get_f(buf, i, e->dtype));
  }
  *out = o;
  *bytes = n * es;
  return DTR_OK;
}

dtr_result dtr__ckpt_tool_export(const char *dir, int64_t step, const char *path,
                                 const dtr__ckpt_export_opts *o, FILE *out, char *err, size_t errcap) {
  const dtr__ckpt_export_opts none = {.dtype = -1};
  if (!o) o = &none;
  if (o->dtype >= 0 && !is_float((dtr_dtype)o->dtype))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "export: %s is not a float dtype",
                     dtr_dtype_name(o->dtype));
  char sd[PATH_CAP];
  dtr__manifest *m = NULL;
  DTR_CHECK(resolve_step(dir, step, &step, err, errcap));
  DTR_CHECK(read_manifest(dir, step, sd, sizeof sd, &m, err, errcap));
  dtr_result rc = DTR_OK;
  reader rd = {.m = m, .sd = sd};
  dtr__sft_writer *w = NULL;
  int cap = 0, n = 0, nmeta = 5, nextra = 0;
  const dtr__sft_meta *extra = NULL;
  dtr__sft_meta *meta = NULL;
  for (int k = 0; k < m->nentries; k++) cap += m->entries[k].is_blob ? m->entries[k].npieces : 1;
  dtr__sft_tensor *desc = calloc((size_t)cap + 1, sizeof *desc);
  export_item *items = calloc((size_t)cap + 1, sizeof *items);
  char **names = calloc((size_t)cap + 1, sizeof *names);
  if (!desc || !items || !names) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int k = 0; k < m->nentries; k++) {
    const dtr__entry *e = &m->entries[k];
    if (!e->is_blob) {
      char mapped[DTR_CKPT_MAX_NAME];
      int tr = 0;
      if (o->map && !o->map->tensor(o->map->arg, e->name, e->ndim, e->shape, mapped, sizeof mapped, &tr))
        continue;
      if (o->map && !(names[n] = strdup(mapped))) {
        rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
        goto done;
      }
      desc[n] = (dtr__sft_tensor){.name = o->map ? names[n] : e->name, .dtype = e->dtype, .ndim = e->ndim};
      if (o->dtype >= 0 && is_float(e->dtype)) desc[n].dtype = (dtr_dtype)o->dtype;
      memcpy(desc[n].shape, e->shape, sizeof e->shape);
      if (tr && e->ndim == 2) {
        desc[n].shape[0] = e->shape[1];
        desc[n].shape[1] = e->shape[0];
      }
      items[n].transpose = tr && e->ndim == 2;
      items[n++].e = e;
      continue;
    }
    if (!o->blobs) continue;
    for (int p = 0; p < e->npieces; p++) {
      size_t len = strlen(DTR__CKPT_BLOB_PREFIX) + strlen(e->name) + 32;
      if (!(names[n] = malloc(len))) {
        rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
        goto done;
      }
      snprintf(names[n], len, DTR__CKPT_BLOB_PREFIX "%s/rank_%d", e->name, e->pieces[p].rank);
      desc[n] = (dtr__sft_tensor){
          .name = names[n], .dtype = DTR_U8, .ndim = 1, .shape = {(int64_t)e->pieces[p].raw_bytes}};
      items[n].e = e;
      items[n++].blob_piece = &e->pieces[p];
    }
  }
  if (o->map && o->map->finish)
    DTR_CHECK_GOTO(o->map->finish(o->map->arg, &extra, &nextra, err, errcap), rc, done);
  char sstep[32], sworld[32];
  snprintf(sstep, sizeof sstep, "%lld", (long long)m->step);
  snprintf(sworld, sizeof sworld, "%d", m->world);
  const dtr__sft_meta base[] = {{"format", "pt"},
                                {"dtrain_step", sstep},
                                {"dtrain_job_id", m->job_id ? m->job_id : ""},
                                {"dtrain_world", sworld},
                                {"dtrain_created", m->created ? m->created : ""}};
  if (!(meta = calloc((size_t)(nmeta + nextra), sizeof *meta))) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
    goto done;
  }
  memcpy(meta, base, sizeof base);
  for (int i = 0; i < nextra; i++) meta[nmeta++] = extra[i];
  DTR_CHECK_GOTO(dtr__sft_writer_create(path, desc, n, meta, nmeta, &w, err, errcap), rc, done);
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    void *buf = NULL;
    uint64_t bytes = 0;
    if (items[i].blob_piece) {
      bytes = items[i].blob_piece->raw_bytes;
      buf = malloc(bytes ? (size_t)bytes : 1);
      if (!buf) {
        rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory for blob '%s'", items[i].e->name);
        goto done;
      }
      rc = read_piece(&rd, items[i].e, items[i].blob_piece, buf, err, errcap);
    } else {
      rc = assemble(&rd, items[i].e, &buf, &bytes, err, errcap);
      if (rc == DTR_OK && (desc[i].dtype != items[i].e->dtype || items[i].transpose)) {
        void *conv = NULL;
        rc = convert(buf, items[i].e, desc[i].dtype, items[i].transpose, &conv, &bytes, err, errcap);
        free(buf);
        buf = conv;
      }
    }
    if (rc == DTR_OK) rc = dtr__sft_writer_append(w, buf, (size_t)bytes, err, errcap);
    free(buf);
    if (rc != DTR_OK) goto done;
    total += bytes;
  }
  DTR_CHECK_GOTO(dtr__sft_writer_finish(w, err, errcap), rc, done);
  char h[32];
  fprintf(out, "exported step %lld of %s (%d rank%s): %d tensors, %s to %s\n", (long long)m->step, dir,
          m->world, m->world == 1 ? "" : "s", n, human(total, h, sizeof h), path);
done:
  dtr__sft_writer_destroy(w);
  reader_close(&rd);
  for (int i = 0; names && i < n; i++) free(names[i]);
  free(names);
  free(desc);
  free(items);
  free(meta);
  dtr__manifest_free(m);
  return rc;
}

/* ---------------------------------------------------------------- import */

dtr_result dtr__ckpt_tool_import(const char *path, const char *dir, int64_t step, const char *job_id,
                                 FILE *out, char *err, size_t errcap) {
  if (step < 0) return dtr__fail(err, errcap, DTR_ERR_INVALID, "step %lld: must be >= 0", (long long)step);
  dtr__sft_file *f = NULL;
  DTR_CHECK(dtr__sft_open(path, &f, err, errcap));
  dtr_result rc = DTR_OK;
  dtr_ckpt *ck = NULL;
  void **bufs = calloc((size_t)f->ntensors + 1, sizeof *bufs);
  char sd[PATH_CAP];
  dtr__ckpt_step_dir(sd, sizeof sd, dir, step);
  if (!bufs) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
    goto done;
  }
  if (is_dir(sd)) {
    rc = dtr__fail(err, errcap, DTR_ERR_EXISTS, "%s already exists: pick another --step or another directory",
                   sd);
    goto done;
  }
  int64_t newest = -1;
  if (is_dir(dir) && dtr_ckpt_latest_step(dir, &newest) == DTR_OK && newest > step)
    fprintf(out, "note: %s already holds step %lld, newer than %lld: a run will load that one first\n", dir,
            (long long)newest, (long long)step);
  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  cfg.keep = -1; /* never rotate away what the directory already holds */
  cfg.job_id = job_id ? job_id : "";
  char cerr[1024] = "";
  DTR_CHECK_GOTO(dtr_ckpt_create(&cfg, &ck, cerr, sizeof cerr), rc, ckfail);
  int ntensors = 0, nblobs = 0, skipped = 0;
  for (int i = 0; i < f->ntensors; i++) {
    const dtr__sft_tensor *t = &f->tensors[i];
    bufs[i] = malloc(t->end > t->begin ? (size_t)(t->end - t->begin) : 1);
    if (!bufs[i]) {
      rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory for tensor '%s'", path, t->name);
      goto done;
    }
    DTR_CHECK_GOTO(dtr__sft_read(f, i, bufs[i], err, errcap), rc, done);
    size_t pl = strlen(DTR__CKPT_BLOB_PREFIX);
    if (strncmp(t->name, DTR__CKPT_BLOB_PREFIX, pl) == 0) {
      char bname[DTR_CKPT_MAX_NAME];
      snprintf(bname, sizeof bname, "%s", t->name + pl);
      char *slash = strrchr(bname, '/');
      int rank = 0;
      if (slash && strncmp(slash, "/rank_", 6) == 0) {
        int64_t r;
        if (!dtr__ckpt_parse_digits(slash + 6, &r)) {
          rc =
              dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: blob tensor '%s': bad rank suffix", path, t->name);
          goto done;
        }
        rank = r > 1000000 ? 1000000 : (int)r;
        *slash = '\0';
      }
      if (t->dtype != DTR_U8 || t->ndim != 1 || !bname[0]) {
        rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                       "%s: blob tensor '%s' must be a 1-D U8 tensor named %s<name>/rank_0", path, t->name,
                       DTR__CKPT_BLOB_PREFIX);
        goto done;
      }
      if (rank != 0) {
        fprintf(out, "note: skipping '%s': a single-shard checkpoint holds rank 0's blobs only\n", t->name);
        skipped++;
        continue;
      }
      DTR_CHECK_GOTO(dtr_ckpt_add_blob(ck, bname, bufs[i], (size_t)(t->end - t->begin)), rc, ckfail);
      nblobs++;
      continue;
    }
    dtr_ckpt_tensor ct = dtr_ckpt_tensor_full(t->name, t->dtype, t->ndim, t->shape, bufs[i]);
    DTR_CHECK_GOTO(dtr_ckpt_add_tensor(ck, &ct), rc, ckfail);
    ntensors++;
  }
  DTR_CHECK_GOTO(dtr_ckpt_save(ck, step), rc, ckfail);
  fprintf(out, "imported %s: %d tensors, %d blobs%s as step %lld of %s (1 shard, job '%s')\n", path, ntensors,
          nblobs, skipped ? " (some blobs skipped)" : "", (long long)step, dir, cfg.job_id);
  goto done;
ckfail:
  dtr__fail(err, errcap, rc, "importing %s into %s: %s", path, dir, ck ? dtr_ckpt_last_error(ck) : cerr);
done:
  dtr_ckpt_destroy(ck);
  for (int i = 0; bufs && i < f->ntensors; i++) free(bufs[i]);
  free(bufs);
  dtr__sft_close(f);
  return rc;
}
