/* Loading: every rank tries the same candidate steps newest first; each checks the manifest against
 * what it registered, then fills every held box from the saved boxes that overlap it, reading only
 * the chunks that hold elements it still lacks (element ranges of a piece -> row segments of the held
 * box). The ranks agree (all-reduce) before a step counts as loaded; a bad one is skipped by all. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint/box.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/ckpt_paths.h"
#include "common/check.h"
#include "common/log.h"

#define MAX_CANDIDATES 4096

/* The piece's box in the registration's terms (a saved scalar has no dimensions; ours has [1]). */
static dtr__box piece_box(const dtr__entry *e, const dtr__piece *p) {
  return dtr__box_make(e->ndim, p->offset, p->extent);
}

/* ------------------------------------------------------------------ one step on one rank */

typedef struct loader {
  dtr_ckpt *ck;
  int64_t step;
  char step_dir[4096];
  dtr__manifest *m;
  dtr__shard **shards; /* opened on first use, m->world of them */
  void *buf;
  size_t bufcap;
  void *held; /* a device tensor's held box, assembled on the host before one copy to the device */
  size_t heldcap;
  char *err;
  size_t errcap;
} loader;

static dtr_result shard_of(loader *L, int rank, dtr__shard **out) {
  if (!L->shards[rank]) {
    char path[4096];
    dtr__ckpt_shard_path(path, sizeof path, L->step_dir, rank);
    /* Shards must belong to their manifest's job (the manifest was checked against ours already). */
    DTR_CHECK(dtr__shard_open(path, L->m->job_id[0] ? L->m->job_id : NULL, L->step, rank, &L->shards[rank],
                              L->err, L->errcap));
    /* The index and footer sit at the end of the file: reading them (checksummed) catches a truncated
     * or torn shard even when the chunks this rank needs happen to be intact. */
    const dtr__shard_index_entry *ents;
    int n;
    DTR_CHECK(dtr__shard_index(L->shards[rank], &ents, &n, L->err, L->errcap));
  }
  *out = L->shards[rank];
  return DTR_OK;
}

static dtr_result read_chunk(loader *L, const dtr__entry *e, const dtr__piece *p, const dtr__chunk *c,
                             void *dst) {
  dtr__shard *s;
  DTR_CHECK(shard_of(L, p->rank, &s));
  return dtr__shard_read_chunk(s, e->name, e->dtype, c, dst, L->err, L->errcap);
}

/* Phase 1 for a tensor: the entry matches the registration and the saved boxes cover the held box. */
static dtr_result check_tensor(loader *L, const dtr__ckpt_reg *r, const dtr__entry *e, const char *mpath) {
  if (e->is_blob)
    return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID, "%s: '%s' is a blob there, a tensor here", mpath,
                     r->name);
  if (e->dtype != r->dtype)
    return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID, "%s: tensor '%s' was saved as %s, registered as %s",
                     mpath, r->name, dtr_dtype_name(e->dtype), dtr_dtype_name(r->dtype));
  int same = r->scalar ? e->ndim == 0
                       : e->ndim == r->ndim && !memcmp(e->shape, r->shape, sizeof(int64_t) * (size_t)r->ndim);
  if (!same) {
    char a[256] = "", b[256] = "";
    for (int d = 0; d < e->ndim; d++)
      snprintf(a + strlen(a), sizeof a - strlen(a), "%s%" PRId64, d ? "," : "", e->shape[d]);
    for (int d = 0; !r->scalar && d < r->ndim; d++)
      snprintf(b + strlen(b), sizeof b - strlen(b), "%s%" PRId64, d ? "," : "", r->shape[d]);
    return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID,
                     "%s: tensor '%s' was saved with shape [%s], registered as [%s]", mpath, r->name, a, b);
  }
  int64_t n = dtr__box_elems(r->ndim, r->extent);
  if (n == 0) return DTR_OK;
  uint8_t *mask = calloc((size_t)(n + 7) / 8, 1);
  if (!mask) return DTR_ERR_NOMEM;
  dtr__box h = dtr__box_make(r->ndim, r->offset, r->extent);
  for (int j = 0; j < e->npieces; j++) {
    dtr__box p = piece_box(e, &e->pieces[j]);
    dtr__box_mark(mask, &h, &p, 0, dtr__box_elems(p.nd, p.ext));
  }
  int64_t missing = dtr__mask_first_clear(mask, n);
  free(mask);
  if (missing < 0) return DTR_OK;
  char coord[256] = "";
  int64_t rem = missing, idx[DTR_CKPT_MAX_DIMS];
  for (int d = r->ndim - 1; d >= 0; d--) {
    idx[d] = r->offset[d] + rem % r->extent[d];
    rem /= r->extent[d];
  }
  for (int d = 0; d < r->ndim; d++)
    snprintf(coord + strlen(coord), sizeof coord - strlen(coord), "%s%" PRId64, d ? "," : "", idx[d]);
  return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID, "%s: tensor '%s': no saved piece holds element [%s]",
                   mpath, r->name, coord);
}

static const dtr__piece *blob_piece(loader *L, const dtr__entry *e) {
  const dtr__piece *zero = NULL;
  for (int j = 0; j < e->npieces; j++) {
    if (e->pieces[j].rank == L->ck->rank) return &e->pieces[j];
    if (e->pieces[j].rank == 0) zero = &e->pieces[j];
  }
  return L->ck->rank >= L->m->world ? zero : NULL;
}

static dtr_result check_blob(loader *L, const dtr__ckpt_reg *r, const dtr__entry *e, const char *mpath) {
  if (!e->is_blob)
    return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID, "%s: '%s' is a tensor there, a blob here", mpath,
                     r->name);
  const dtr__piece *p = blob_piece(L, e);
  if (!p)
    return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID, "%s: blob '%s' has no copy for rank %d", mpath,
                     r->name, L->ck->rank);
  if (p->raw_bytes != r->blob_size)
    return dtr__fail(L->err, L->errcap, DTR_ERR_INVALID,
                     "%s: blob '%s' (rank %d's) was saved with %" PRIu64 " bytes, registered with %zu", mpath,
                     r->name, p->rank, p->raw_bytes, r->blob_size);
  return DTR_OK;
}

static void *grow(loader *L, size_t bytes) {
  if (bytes > L->bufcap) {
    void *n = realloc(L->buf, bytes);
    if (!n) return NULL;
    L->buf = n;
    L->bufcap = bytes;
  }
  return L->buf;
}

/* Phase 2 for a tensor: read the chunks that hold elements this rank still lacks. A device tensor's
 * held box is filled on the host (phase 1 proved the pieces cover it) and then copied over at once. */
static dtr_result fill_tensor(loader *L, const dtr__ckpt_reg *r, const dtr__entry *e) {
  int64_t n = dtr__box_elems(r->ndim, r->extent);
  if (n == 0) return DTR_OK;
  size_t es = dtr_dtype_size(r->dtype);
  char *target = r->data;
  if (r->device == DTR_CKPT_CUDA) {
    size_t bytes = (size_t)n * es;
    if (bytes > L->heldcap) {
      void *h = realloc(L->held, bytes);
      if (!h) return DTR_ERR_NOMEM;
      L->held = h;
      L->heldcap = bytes;
    }
    target = L->held;
  }
  uint8_t *mask = calloc((size_t)(n + 7) / 8, 1);
  if (!mask) return DTR_ERR_NOMEM;
  dtr__box h = dtr__box_make(r->ndim, r->offset, r->extent);
  dtr_result rc = DTR_OK;
  for (int j = 0; j < e->npieces && rc == DTR_OK; j++) {
    const dtr__piece *pc = &e->pieces[j];
    dtr__box p = piece_box(e, pc);
    if (!dtr__box_meet(&p, &h, NULL)) continue;
    for (int k = 0; k < pc->nchunks && rc == DTR_OK; k++) {
      const dtr__chunk *c = &pc->chunks[k];
      if (!dtr__box_lacks(mask, &h, &p, (int64_t)c->elem_begin, (int64_t)c->elem_count)) continue;
      void *dst = grow(L, (size_t)c->elem_count * es);
      if (!dst) {
        rc = DTR_ERR_NOMEM;
        break;
      }
      rc = read_chunk(L, e, pc, c, dst);
      if (rc != DTR_OK) break;
      dtr__box_copy(target, &h, dst, &p, (int64_t)c->elem_begin, (int64_t)c->elem_count, es, mask);
    }
  }
  free(mask);
  if (rc == DTR_OK && r->device == DTR_CKPT_CUDA)
    rc = dtr__ckpt_dev_upload(L->ck, r, target, L->err, L->errcap);
  return rc;
}

static dtr_result fill_blob(loader *L, const dtr__ckpt_reg *r, const dtr__entry *e) {
  const dtr__piece *p = blob_piece(L, e);
  for (int k = 0; k < p->nchunks; k++) {
    const dtr__chunk *c = &p->chunks[k];
    DTR_CHECK(read_chunk(L, e, p, c, (char *)r->data + c->elem_begin));
  }
  return DTR_OK;
}

static dtr_result try_step(dtr_ckpt *ck, int64_t step, char *err, size_t errcap) {
  loader L;
  memset(&L, 0, sizeof L);
  L.ck = ck;
  L.step = step;
  L.err = err;
  L.errcap = errcap;
  dtr__ckpt_step_dir(L.step_dir, sizeof L.step_dir, ck->dir, step);
  char mpath[4200];
  snprintf(mpath, sizeof mpath, "%s/manifest.yaml", L.step_dir);
  dtr_result rc = dtr__manifest_read(mpath, &L.m, err, errcap);
  if (rc != DTR_OK) return rc;
  const dtr__manifest *m = L.m;
  if (m->step != step) {
    rc = dtr__fail(err, errcap, DTR_ERR_PROTOCOL, "%s: says step %" PRId64 ", its directory step %" PRId64,
                   mpath, m->step, step);
    goto out;
  }
  /* A checkpoint of no job (an import without --job-id) initialises any run. */
  if (ck->job_id[0] && m->job_id[0] && strcmp(ck->job_id, m->job_id) != 0) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: belongs to job '%s', this is job '%s'; not loading it",
                   mpath, m->job_id, ck->job_id);
    goto out;
  }
  /* Phase 1: everything checkable without reading a chunk, so a mismatch touches no memory. */
  for (int i = 0; i < ck->nregs && rc == DTR_OK; i++) {
    const dtr__ckpt_reg *r = &ck->regs[i];
    const dtr__entry *e = dtr__manifest_find(m, r->name);
    if (!e)
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: has no %s '%s'", mpath,
                     r->is_blob ? "blob" : "tensor", r->name);
    else
      rc = r->is_blob ? check_blob(&L, r, e, mpath) : check_tensor(&L, r, e, mpath);
  }
  if (rc != DTR_OK) goto out;
  L.shards = calloc((size_t)m->world, sizeof *L.shards);
  if (!L.shards) {
    rc = DTR_ERR_NOMEM;
    goto out;
  }
  /* Phase 2: chunks. */
  for (int i = 0; i < ck->nregs && rc == DTR_OK; i++) {
    const dtr__ckpt_reg *r = &ck->regs[i];
    const dtr__entry *e = dtr__manifest_find(m, r->name);
    rc = r->is_blob ? fill_blob(&L, r, e) : fill_tensor(&L, r, e);
  }
out:
  if (L.shards)
    for (int r = 0; r < m->world; r++) dtr__shard_close(L.shards[r]);
  free(L.shards);
  free(L.buf);
  free(L.held);
  dtr__manifest_free(L.m);
  return rc;
}

/* ------------------------------------------------------------------ agreement */

typedef struct shared_error {
  int32_t rc;
  char msg[1020];
} shared_error;

/* Rank 0's list of steps to try, newest first, shared with every rank. fixed >= 0: just that one. */
static dtr_result candidates(dtr_ckpt *ck, int64_t fixed, int64_t *out, int32_t *n) {
  *n = 0;
  if (ck->rank == 0) {
    struct stat st;
    char p[4096];
    if (fixed >= 0) {
      dtr__ckpt_step_dir(p, sizeof p, ck->dir, fixed);
      if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) out[(*n)++] = fixed;
    } else {
      /* Newest step number first. `latest` is a hint for people and tools: a committed step directory
       * newer than it (a crash between the rename and `latest`, or an older step committed after a newer
       * one) must not lose to it. */
      dtr__ckpt_step *steps;
      int ns;
      if (dtr__ckpt_list_steps(ck->dir, 0, &steps, &ns, NULL, 0) == DTR_OK) {
        for (int i = 0; i < ns && *n < MAX_CANDIDATES; i++) out[(*n)++] = steps[i].step;
        free(steps);
      }
      int64_t latest = dtr__ckpt_read_latest(ck->dir);
      dtr__ckpt_step_dir(p, sizeof p, ck->dir, latest);
      if (latest >= 0 && !(stat(p, &st) == 0 && S_ISDIR(st.st_mode)))
        DTR_WARN("%s/latest names step %lld, but %s does not exist; looking at the step directories", ck->dir,
                 (long long)latest, p);
      else if (latest >= 0 && *n > 0 && latest != out[0])
        DTR_INFO("%s/latest names step %lld, but step %lld is newer: trying it first", ck->dir,
                 (long long)latest, (long long)out[0]);
    }
  }
  DTR_CHECK(dtr__ckpt_bcast(ck, n, sizeof *n, 0, "sharing the candidate steps"));
  if (*n < 0 || *n > MAX_CANDIDATES) return DTR_ERR_INTERNAL;
  if (*n) DTR_CHECK(dtr__ckpt_bcast(ck, out, sizeof *out * (size_t)*n, 0, "sharing the candidate steps"));
  return DTR_OK;
}

static dtr_result load_impl(dtr_ckpt *ck, int64_t fixed, int64_t *loaded) {
  if (!ck) return DTR_ERR_INVALID;
  (void)dtr_ckpt_wait(ck); /* a failed save before this load was logged by its writer */
  ck->err[0] = 0;
  int64_t *cand = malloc(sizeof *cand * MAX_CANDIDATES);
  if (!cand) return DTR_ERR_NOMEM;
  int32_t n = 0;
  dtr_result rc = candidates(ck, fixed, cand, &n);
  if (rc != DTR_OK) goto out;
  if (n == 0) {
    rc = fixed >= 0 ? dtr__fail(ck->err, sizeof ck->err, DTR_ERR_NOT_FOUND, "%s: no step %lld", ck->dir,
                                (long long)fixed)
                    : dtr__fail(ck->err, sizeof ck->err, DTR_ERR_NOT_FOUND, "%s: no checkpoint", ck->dir);
    goto out;
  }
  shared_error first;
  memset(&first, 0, sizeof first);
  for (int i = 0; i < n; i++) {
    char lerr[1024] = "";
    dtr_result lrc = try_step(ck, cand[i], lerr, sizeof lerr);
    if (lrc != DTR_OK) DTR_WARN("rank %d: step %lld: %s", ck->rank, (long long)cand[i], lerr);
    int32_t bad = lrc == DTR_OK ? ck->world : ck->rank;
    DTR_CHECK_GOTO(dtr__ckpt_allreduce_i32(ck, &bad, 1, DTR_MIN, "agreeing on the loaded step"), rc, out);
    if (bad == ck->world) {
      if (loaded) *loaded = cand[i];
      if (ck->rank == 0) DTR_INFO("loaded step %lld from %s", (long long)cand[i], ck->dir);
      rc = DTR_OK;
      goto out;
    }
    /* Every rank learns the lowest failing rank's reason, so all return the same error. */
    shared_error e;
    memset(&e, 0, sizeof e);
    if (ck->rank == bad) {
      e.rc = (int32_t)lrc;
      snprintf(e.msg, sizeof e.msg, "rank %d: step %lld: %.960s", ck->rank, (long long)cand[i], lerr);
    }
    if (ck->comm) {
      dtr_request *req = NULL;
      rc = dtr_broadcast(ck->comm, &e, sizeof e, DTR_U8, bad, &req);
      if (rc == DTR_OK) rc = dtr_request_wait(req);
      dtr_request_free(req);
      if (rc != DTR_OK) {
        dtr__fail(ck->err, sizeof ck->err, rc, "checkpoint %s: sharing a load error failed: %s", ck->dir,
                  dtr_comm_last_error(ck->comm));
        goto out;
      }
    }
    if (ck->rank == 0 && i + 1 < n)
      DTR_WARN("skipping step %lld of %s (%s); trying step %lld", (long long)cand[i], ck->dir, e.msg,
               (long long)cand[i + 1]);
    if (i == 0) first = e;
  }
  rc = first.rc ? (dtr_result)first.rc : DTR_ERR_PROTOCOL;
  dtr__fail(ck->err, sizeof ck->err, rc, "%s: no valid checkpoint among %d step(s); the newest: %s", ck->dir,
            (int)n, first.msg);
out:
  free(cand);
  return rc;
}

dtr_result dtr_ckpt_load(dtr_ckpt *ck, int64_t *step) {
  return load_impl(ck, -1, step);
}

dtr_result dtr_ckpt_load_step(dtr_ckpt *ck, int64_t step) {
  if (ck && step < 0)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "step %lld: must be >= 0", (long long)step);
  return load_impl(ck, step, NULL);
}
