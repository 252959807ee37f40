/* Saving: the snapshot (copies of every saved box and blob, taken on the caller's thread), then on the
 * background thread the shard write, agreement between ranks, rank 0's manifest, the rename that
 * commits, `latest`, and rotation. A failure anywhere before the rename leaves committed steps alone. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/box.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/ckpt_paths.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"

/* ------------------------------------------------------------------ snapshot */

/* Registration i's staging buffer of at least `bytes`. Kept from one save to the next, so a snapshot
 * after the first is a memcpy into memory already faulted in (it is what the caller waits for). A
 * device tensor's is pinned, so its device-to-host copy runs at full link speed. */
static void *stage_buffer(dtr_ckpt *ck, int i, size_t bytes) {
  if (ck->nstage < ck->nregs) {
    void **b = realloc(ck->stage, sizeof *b * (size_t)ck->nregs);
    if (!b) return NULL;
    ck->stage = b;
    size_t *c = realloc(ck->stage_cap, sizeof *c * (size_t)ck->nregs);
    if (!c) return NULL;
    ck->stage_cap = c;
    for (int k = ck->nstage; k < ck->nregs; k++) ck->stage[k] = NULL, ck->stage_cap[k] = 0;
    ck->nstage = ck->nregs;
  }
  if (!bytes) bytes = 1;
  if (ck->stage_cap[i] < bytes) {
    dtr__ckpt_stage_free(ck->stage[i]);
    ck->stage[i] = dtr__ckpt_stage_alloc(bytes, ck->regs[i].device == DTR_CKPT_CUDA);
    ck->stage_cap[i] = ck->stage[i] ? bytes : 0;
  }
  return ck->stage[i];
}

/* Copy r's save box out of its held box into contiguous dst (row-major in the save box). */
static void copy_box_out(const dtr__ckpt_reg *r, void *dst) {
  dtr__box held = dtr__box_make(r->ndim, r->offset, r->extent);
  dtr__box saved = dtr__box_make(r->ndim, r->save_offset, r->save_extent);
  dtr__box_copy(dst, &saved, r->data, &held, 0, dtr__box_elems(r->ndim, r->extent), dtr_dtype_size(r->dtype),
                NULL);
}

static dtr_result snapshot(dtr_ckpt *ck, int64_t step) {
  dtr_result drc = DTR_OK;
  dtr__ckpt_snapshot *s = &ck->snap;
  dtr__ckpt_snapshot_free(s);
  s->step = step;
  s->t_start = dtr__now_s();
  int n = 0;
  for (int i = 0; i < ck->nregs; i++) n += ck->regs[i].saves;
  s->sources = calloc((size_t)n + 1, sizeof *s->sources);
  s->reg_index = calloc((size_t)n + 1, sizeof *s->reg_index);
  s->buffers = calloc((size_t)n + 1, sizeof *s->buffers);
  if (!s->sources || !s->reg_index || !s->buffers) goto nomem;
  for (int i = 0; i < ck->nregs; i++) {
    const dtr__ckpt_reg *r = &ck->regs[i];
    if (!r->saves) continue;
    uint64_t bytes = r->is_blob
                         ? r->blob_size
                         : (uint64_t)dtr__box_elems(r->ndim, r->save_extent) * dtr_dtype_size(r->dtype);
    void *buf = stage_buffer(ck, i, bytes);
    if (!buf) goto nomem;
    if (r->is_blob) {
      if (bytes) memcpy(buf, r->data, bytes);
    } else if (r->device == DTR_CKPT_CUDA) {
      /* Queued on the checkpointer's stream: the host copies of the next registrations overlap it. */
      DTR_CHECK_GOTO(dtr__ckpt_dev_copy_out(ck, r, buf), drc, devfail);
    } else {
      copy_box_out(r, buf);
    }
    dtr__shard_source *src = &s->sources[s->n];
    src->name = r->name;
    src->is_blob = r->is_blob;
    src->dtype = r->dtype;
    src->data = buf;
    src->raw_bytes = bytes;
    s->buffers[s->n] = buf;
    s->reg_index[s->n] = i;
    s->n++;
    s->raw_bytes += bytes;
  }
  DTR_CHECK_GOTO(dtr__ckpt_dev_sync(ck), drc, devfail); /* the one wait for device tensors */
  ck->stats.blocking_s = dtr__now_s() - s->t_start;
  return DTR_OK;
devfail:
  (void)dtr__ckpt_dev_sync(ck); /* no queued copy may still write into the staging */
  dtr__ckpt_snapshot_free(s);
  return drc;
nomem:
  (void)dtr__ckpt_dev_sync(ck); /* device copies queued before the failure */
  dtr__ckpt_snapshot_free(s);
  return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_NOMEM, "step %lld: out of memory for the snapshot",
                   (long long)step);
}

/* ------------------------------------------------------------------ the chunk lists, serialized */

/* The lists are built in a strbuf (its NUL terminator is never sent: only len bytes are). */
static void put_u64(dtr__sbuf *b, uint64_t v) {
  dtr__sbuf_put(b, &v, 8);
}

/* Every registered tensor (so an entry exists even where nothing is saved) and the piece, if any. */
static void serialize(const dtr_ckpt *ck, const dtr__piece *pieces, dtr__sbuf *b) {
  put_u64(b, (uint64_t)ck->nregs);
  int si = 0;
  for (int i = 0; i < ck->nregs; i++) {
    const dtr__ckpt_reg *r = &ck->regs[i];
    uint64_t nl = strlen(r->name);
    put_u64(b, nl);
    dtr__sbuf_put(b, r->name, nl);
    put_u64(b, (uint64_t)r->is_blob);
    put_u64(b, (uint64_t)r->dtype);
    put_u64(b, (uint64_t)(r->scalar ? 0 : r->ndim));
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) put_u64(b, (uint64_t)r->shape[d]);
    const dtr__piece *p = NULL;
    if (si < ck->snap.n && ck->snap.reg_index[si] == i) p = &pieces[si++];
    put_u64(b, p ? 1 : 0);
    if (!p) continue;
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) put_u64(b, (uint64_t)p->offset[d]);
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) put_u64(b, (uint64_t)p->extent[d]);
    put_u64(b, p->raw_bytes);
    put_u64(b, (uint64_t)p->nchunks);
    for (int c = 0; c < p->nchunks; c++) {
      const dtr__chunk *ch = &p->chunks[c];
      put_u64(b, ch->elem_begin);
      put_u64(b, ch->elem_count);
      put_u64(b, ch->file_offset);
      put_u64(b, ch->stored_bytes);
      put_u64(b, ch->checksum);
      put_u64(b, ch->codec);
    }
  }
}

typedef struct rbuf {
  const unsigned char *p;
  size_t len, off;
  int bad;
} rbuf;

static uint64_t get_u64(rbuf *b) {
  uint64_t v = 0;
  if (b->bad || b->len - b->off < 8) {
    b->bad = 1;
    return 0;
  }
  memcpy(&v, b->p + b->off, 8);
  b->off += 8;
  return v;
}

static dtr__entry *find_or_add(dtr__manifest *m, const char *name, size_t nl, int *cap) {
  for (int i = 0; i < m->nentries; i++)
    if (strlen(m->entries[i].name) == nl && memcmp(m->entries[i].name, name, nl) == 0) return &m->entries[i];
  if (m->nentries == *cap) {
    int nc = *cap ? *cap * 2 : 16;
    dtr__entry *ne = realloc(m->entries, sizeof *ne * (size_t)nc);
    if (!ne) return NULL;
    m->entries = ne;
    *cap = nc;
  }
  dtr__entry *e = &m->entries[m->nentries];
  memset(e, 0, sizeof *e);
  e->name = strndup(name, nl);
  if (!e->name) return NULL;
  e->ndim = -1; /* filled by the first rank that mentions it */
  m->nentries++;
  return e;
}

/* Merge one rank's serialized list into m; a tensor whose kind, dtype or shape differs between ranks
 * fails the commit naming it. */
static dtr_result merge_rank(dtr_ckpt *ck, dtr__manifest *m, int *cap, int rank, rbuf *b) {
  uint64_t nregs = get_u64(b);
  for (uint64_t i = 0; i < nregs && !b->bad; i++) {
    uint64_t nl = get_u64(b);
    if (b->bad || nl >= DTR_CKPT_MAX_NAME || b->len - b->off < nl) break;
    const char *name = (const char *)b->p + b->off;
    b->off += nl;
    int is_blob = (int)get_u64(b);
    dtr_dtype dtype = (dtr_dtype)get_u64(b);
    int ndim = (int)get_u64(b);
    int64_t shape[DTR_CKPT_MAX_DIMS];
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) shape[d] = (int64_t)get_u64(b);
    if (b->bad) break;
    dtr__entry *e = find_or_add(m, name, nl, cap);
    if (!e) return DTR_ERR_NOMEM;
    if (e->ndim < 0) {
      e->is_blob = is_blob;
      e->dtype = dtype;
      e->ndim = is_blob ? 0 : ndim;
      memcpy(e->shape, shape, sizeof shape);
    } else if (e->is_blob != is_blob ||
               (!is_blob && (e->dtype != dtype || e->ndim != ndim ||
                             memcmp(e->shape, shape, sizeof(int64_t) * (size_t)ndim)))) {
      return dtr__fail(
          ck->err, sizeof ck->err, DTR_ERR_INVALID,
          "step %lld: '%s' is registered differently on rank %d than on a lower rank (kind, dtype or "
          "shape)",
          (long long)ck->snap.step, e->name, rank);
    }
    if (get_u64(b) == 0) continue;
    dtr__piece p;
    memset(&p, 0, sizeof p);
    p.rank = rank;
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) p.offset[d] = (int64_t)get_u64(b);
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) p.extent[d] = (int64_t)get_u64(b);
    if (ndim == 0) p.offset[0] = p.extent[0] = 0;
    p.raw_bytes = get_u64(b);
    uint64_t nc = get_u64(b);
    if (b->bad || nc > (b->len - b->off) / 48) break;
    p.nchunks = (int)nc;
    p.chunks = calloc(nc ? nc : 1, sizeof *p.chunks);
    if (!p.chunks) return DTR_ERR_NOMEM;
    for (uint64_t c = 0; c < nc; c++) {
      p.chunks[c].elem_begin = get_u64(b);
      p.chunks[c].elem_count = get_u64(b);
      p.chunks[c].file_offset = get_u64(b);
      p.chunks[c].stored_bytes = get_u64(b);
      p.chunks[c].checksum = get_u64(b);
      p.chunks[c].codec = (uint32_t)get_u64(b);
    }
    dtr__piece *np = realloc(e->pieces, sizeof *np * (size_t)(e->npieces + 1));
    if (!np) {
      free(p.chunks);
      return DTR_ERR_NOMEM;
    }
    e->pieces = np;
    e->pieces[e->npieces++] = p;
  }
  if (b->bad)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INTERNAL, "rank %d's chunk list is malformed", rank);
  return DTR_OK;
}

/* ------------------------------------------------------------------ commit */

static void iso_now(char *out, size_t cap) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void rotate(dtr_ckpt *ck, int64_t committed) {
  if (ck->keep <= 0) return; /* keep all */
  dtr__ckpt_step *steps;
  int n;
  if (dtr__ckpt_list_steps(ck->dir, 0, &steps, &n, NULL, 0) != DTR_OK) return;
  for (int i = ck->keep; i < n; i++) {
    if (steps[i].step == committed) continue; /* never the step just committed, whatever its number */
    char p[4096];
    dtr__ckpt_step_dir(p, sizeof p, ck->dir, steps[i].step);
    if (dtr__ckpt_remove_dir(p) != 0)
      DTR_WARN("rotation: cannot remove %s: %s", p, strerror(errno));
    else
      DTR_DEBUG("rotation removed %s", p);
  }
  free(steps);
}

/* Rank 0, once every shard is in the temporary directory: manifest, rename, `latest`, rotation. */
static dtr_result commit_rank0(dtr_ckpt *ck, dtr__manifest *m, const char *tmp) {
  int64_t step = ck->snap.step;
  char path[4096 + 32], final[4096], old[4096 + 32];
  snprintf(path, sizeof path, "%s/manifest.yaml", tmp);
  unlink(path); /* from an earlier failed attempt at this step */
  DTR_CHECK(dtr__manifest_write(path, m, ck->err, sizeof ck->err));
  if (dtr__ckpt_fsync_dir(tmp) != 0)
    return dtr__fail(ck->err, sizeof ck->err, dtr__errno_result(errno), "cannot fsync %s: %s", tmp,
                     strerror(errno));
  dtr__ckpt_step_dir(final, sizeof final, ck->dir, step);
  /* A step directory of the same number exists when an earlier run committed this step and the job
   * resumed from an older one (say this one was corrupt): move it aside, then replace it. */
  old[0] = 0;
  struct stat st;
  if (stat(final, &st) == 0) {
    snprintf(old, sizeof old, "%s/.old_step_%08lld", ck->dir, (long long)step);
    dtr__ckpt_remove_dir(old);
    if (rename(final, old) != 0)
      return dtr__fail(ck->err, sizeof ck->err, dtr__errno_result(errno), "cannot move the old %s aside: %s",
                       final, strerror(errno));
  }
  if (rename(tmp, final) != 0)
    return dtr__fail(ck->err, sizeof ck->err, dtr__errno_result(errno), "cannot rename %s to %s: %s", tmp,
                     final, strerror(errno));
  if (dtr__ckpt_fsync_dir(ck->dir) != 0)
    return dtr__fail(ck->err, sizeof ck->err, dtr__errno_result(errno), "cannot fsync %s: %s", ck->dir,
                     strerror(errno));
  /* Committed: the step directory with its manifest is what load trusts; `latest` is a hint. */
  dtr_result rc = dtr__ckpt_write_latest(ck->dir, step, ck->err, sizeof ck->err);
  if (rc != DTR_OK) DTR_WARN("step %lld committed, but %s", (long long)step, ck->err);
  if (old[0]) dtr__ckpt_remove_dir(old);
  rotate(ck, step);
  return DTR_OK;
}

typedef struct shared_result {
  int32_t rc;
  char msg[1020];
} shared_result;

dtr_result dtr__ckpt_commit(dtr_ckpt *ck) {
  dtr__ckpt_snapshot *s = &ck->snap;
  int64_t step = s->step;
  char tmp[4096], shard[4096], lerr[1024] = "";
  dtr_result rc = DTR_OK, local = DTR_OK;
  dtr__piece *pieces = calloc((size_t)s->n + 1, sizeof *pieces);
  dtr__manifest m;
  memset(&m, 0, sizeof m);
  dtr__sbuf wb = {0};
  unsigned char *all = NULL;
  int64_t *lens = NULL;
  uint64_t stored = 0;
  if (!pieces)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_NOMEM, "step %lld: out of memory", (long long)step);

  dtr__ckpt_tmp_dir(tmp, sizeof tmp, ck->dir, step);
  dtr__ckpt_shard_path(shard, sizeof shard, tmp, ck->rank);
  if (s->failed != DTR_OK) {
    /* The snapshot failed here: still take part in the agreement, so the peers fail at once too. */
    local = dtr__fail(lerr, sizeof lerr, s->failed, "%.1000s", ck->err);
  } else if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
    local =
        dtr__fail(lerr, sizeof lerr, dtr__errno_result(errno), "cannot create %s: %s", tmp, strerror(errno));
  } else {
    unlink(shard); /* from an earlier failed attempt at this step */
    dtr__shard_params sp = {ck->level, ck->chunk_bytes, ck->threads, ck->job_id, step, ck->rank, ck->world};
    local = dtr__shard_write(shard, s->sources, s->n, &sp, pieces, lerr, sizeof lerr);
    if (local == DTR_OK) {
      for (int i = 0; i < s->n; i++) {
        const dtr__ckpt_reg *r = &ck->regs[s->reg_index[i]];
        pieces[i].rank = ck->rank;
        pieces[i].raw_bytes = s->sources[i].raw_bytes;
        if (!r->is_blob && !r->scalar)
          for (int d = 0; d < r->ndim; d++) {
            pieces[i].offset[d] = r->save_offset[d];
            pieces[i].extent[d] = r->save_extent[d];
          }
        for (int c = 0; c < pieces[i].nchunks; c++) stored += pieces[i].chunks[c].stored_bytes;
      }
    }
  }
  /* Debug only: the agreement below hands the lowest failing rank's reason to every rank, and rank 0
   * reports it once for the job. */
  if (local != DTR_OK) DTR_DEBUG("rank %d: step %lld: %s", ck->rank, (long long)step, lerr);
  if (ck->test_delay_ms > 0) {
    /* Test-only (DTRAIN_CKPT_TEST_DELAY_MS): widen the window between shard and agreement. */
    struct timespec ts = {ck->test_delay_ms / 1000, (long)(ck->test_delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }

  /* Agreement: the lowest rank that failed, or world when every shard is on disk. */
  int32_t first_bad = local == DTR_OK ? ck->world : ck->rank;
  DTR_CHECK_GOTO(dtr__ckpt_allreduce_i32(ck, &first_bad, 1, DTR_MIN, "agreeing on the shards"), rc, fail);
  if (first_bad != ck->world) {
    /* Every rank reports the lowest failing rank's reason, so all return the same error. */
    shared_result why;
    memset(&why, 0, sizeof why);
    why.rc = (int32_t)(local != DTR_OK ? local : DTR_ERR_SYSTEM);
    snprintf(why.msg, sizeof why.msg, "%.1000s", lerr);
    if (dtr__ckpt_bcast(ck, &why, sizeof why, first_bad, "sharing a shard error") != DTR_OK)
      snprintf(why.msg, sizeof why.msg, "(unknown)");
    rc = why.rc ? (dtr_result)why.rc : DTR_ERR_SYSTEM;
    if (first_bad == ck->rank)
      dtr__fail(ck->err, sizeof ck->err, rc, "step %lld not committed: %s", (long long)step, lerr);
    else
      dtr__fail(ck->err, sizeof ck->err, rc, "step %lld not committed: rank %d: %s", (long long)step,
                first_bad, why.msg);
    goto fail;
  }

  /* Every rank's chunk list to every rank (rank 0 needs them; all-gather keeps the pattern simple). */
  serialize(ck, pieces, &wb);
  if (wb.oom) {
    rc = dtr__fail(ck->err, sizeof ck->err, DTR_ERR_NOMEM, "step %lld: out of memory", (long long)step);
    goto fail; /* the peers will time out in the gather; nothing is committed */
  }
  lens = calloc((size_t)ck->world, sizeof *lens);
  if (!lens) {
    rc = DTR_ERR_NOMEM;
    goto fail;
  }
  lens[ck->rank] = (int64_t)wb.len;
  int64_t maxlen = (int64_t)wb.len;
  if (ck->comm) {
    int64_t mine = (int64_t)wb.len;
    DTR_CHECK_GOTO(dtr__ckpt_all_gather(ck, &mine, lens, 1, DTR_I64, "gathering lengths"), rc, fail);
    for (int r = 0; r < ck->world; r++)
      if (lens[r] > maxlen) maxlen = lens[r];
    all = calloc((size_t)ck->world, (size_t)maxlen);
    unsigned char *mine_pad = calloc(1, (size_t)maxlen);
    if (!all || !mine_pad) {
      free(mine_pad);
      rc = DTR_ERR_NOMEM;
      goto fail;
    }
    memcpy(mine_pad, wb.p, wb.len);
    rc = dtr__ckpt_all_gather(ck, mine_pad, all, (size_t)maxlen, DTR_U8, "gathering chunk lists");
    free(mine_pad);
    if (rc != DTR_OK) goto fail;
  } else {
    all = (unsigned char *)wb.p;
    wb.p = NULL;
  }

  shared_result res;
  memset(&res, 0, sizeof res);
  if (ck->rank == 0) {
    char created[64];
    iso_now(created, sizeof created);
    m.format = DTR__MANIFEST_VERSION;
    m.job_id = ck->job_id;
    m.step = step;
    m.world = ck->world;
    m.level = ck->level;
    m.chunk_bytes = ck->chunk_bytes;
    m.created = created;
    int cap = 0;
    dtr_result mr = DTR_OK;
    for (int r = 0; r < ck->world && mr == DTR_OK; r++) {
      rbuf b = {all + (size_t)r * (size_t)maxlen, (size_t)lens[r], 0, 0};
      mr = merge_rank(ck, &m, &cap, r, &b);
    }
    for (int i = 0; i < m.nentries; i++)
      for (int j = 0; j < m.entries[i].npieces; j++) {
        m.raw_bytes += m.entries[i].pieces[j].raw_bytes;
        for (int c = 0; c < m.entries[i].pieces[j].nchunks; c++)
          m.stored_bytes += m.entries[i].pieces[j].chunks[c].stored_bytes;
      }
    if (mr == DTR_OK) mr = commit_rank0(ck, &m, tmp);
    res.rc = (int32_t)mr;
    if (mr != DTR_OK) snprintf(res.msg, sizeof res.msg, "%.1000s", ck->err);
    m.job_id = NULL;
    m.created = NULL;
  }
  DTR_CHECK_GOTO(dtr__ckpt_bcast(ck, &res, sizeof res, 0, "sharing the commit result"), rc, fail);
  rc = (dtr_result)res.rc;
  if (rc != DTR_OK) {
    if (ck->rank != 0)
      dtr__fail(ck->err, sizeof ck->err, rc, "step %lld not committed: rank 0: %s", (long long)step, res.msg);
    goto fail;
  }
  ck->stats.total_s = dtr__now_s() - s->t_start;
  ck->stats.raw_bytes = s->raw_bytes;
  ck->stats.stored_bytes = stored;
  /* One line per save for the job (rank 0), not one per rank. */
  if (ck->rank == 0)
    DTR_INFO("checkpoint step %lld committed in %s (%.3f s; rank 0's shard %" PRIu64 " -> %" PRIu64 " bytes)",
             (long long)step, ck->dir, ck->stats.total_s, s->raw_bytes, stored);
  else
    DTR_DEBUG("rank %d: step %lld committed (%.3f s, %" PRIu64 " -> %" PRIu64 " bytes)", ck->rank,
              (long long)step, ck->stats.total_s, s->raw_bytes, stored);
  goto out;

fail:
  /* Nothing committed: drop this rank's shard; rank 0 drops the temporary directory. */
  unlink(shard);
  if (ck->rank == 0) dtr__ckpt_remove_dir(tmp);
  if (!ck->err[0]) dtr__fail(ck->err, sizeof ck->err, rc, "step %lld not committed", (long long)step);
out:
  for (int i = 0; i < s->n; i++) free(pieces[i].chunks);
  free(pieces);
  m.job_id = NULL;
  m.created = NULL;
  for (int i = 0; i < m.nentries; i++) {
    for (int j = 0; j < m.entries[i].npieces; j++) free(m.entries[i].pieces[j].chunks);
    free(m.entries[i].pieces);
    free(m.entries[i].name);
  }
  free(m.entries);
  free(wb.p);
  free(all);
  free(lens);
  return rc;
}

/* ------------------------------------------------------------------ save entry points */

static void finish(dtr_ckpt *ck, dtr_result rc) {
  dtr__ckpt_snapshot_free(&ck->snap);
  pthread_mutex_lock(&ck->mu);
  ck->result = rc;
  ck->have_result = 1;
  ck->busy = 0;
  pthread_cond_broadcast(&ck->cv);
  pthread_mutex_unlock(&ck->mu);
}

/* The background writer. Its failure is logged here: an async caller may learn of it much later (or,
 * at destroy, never). */
static void *writer_main(void *arg) {
  dtr_ckpt *ck = arg;
  dtr_result rc = dtr__ckpt_commit(ck);
  if (rc != DTR_OK && ck->rank == 0) DTR_ERROR("checkpoint save failed: %s", ck->err);
  if (rc != DTR_OK && ck->rank != 0) DTR_DEBUG("checkpoint save failed: %s", ck->err);
  finish(ck, rc);
  return NULL;
}

static dtr_result start_save(dtr_ckpt *ck, int64_t step, int async) {
  if (!ck) return DTR_ERR_INVALID;
  if (step < 0)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "step %lld: must be >= 0", (long long)step);
  (void)dtr_ckpt_wait(ck); /* a failed previous save was logged by its writer */
  ck->err[0] = 0;
  memset(&ck->stats, 0, sizeof ck->stats);
  dtr_result src = snapshot(ck, step);
  if (src != DTR_OK) {
    if (!ck->comm) return src;
    ck->snap.step = step; /* a collective save: tell the peers in the agreement rather than vanish */
    ck->snap.failed = src;
  }
  pthread_mutex_lock(&ck->mu);
  ck->busy = 1;
  ck->have_result = 0;
  pthread_mutex_unlock(&ck->mu);
  if (async && pthread_create(&ck->thread, NULL, writer_main, ck) == 0) {
    ck->thread_live = 1;
    return DTR_OK;
  }
  if (async) { /* no thread: write on the caller's, as a synchronous save would */
    writer_main(ck);
    return DTR_OK;
  }
  finish(ck, dtr__ckpt_commit(ck));
  ck->stats.blocking_s = ck->stats.total_s;
  return dtr_ckpt_wait(ck);
}

dtr_result dtr_ckpt_save(dtr_ckpt *ck, int64_t step) {
  return start_save(ck, step, 0);
}

dtr_result dtr_ckpt_save_async(dtr_ckpt *ck, int64_t step) {
  return start_save(ck, step, 1);
}
