/* The checkpointer object: configuration, create/destroy, registration of tensors and blobs, the
 * tensor helpers, and the bookkeeping of the save in flight (test/wait). The writer itself is in
 * ckpt_save.c, the loader in ckpt_load.c; both call into this file, never the other way round. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/box.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/ckpt_paths.h"
#include "common/check.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/param.h"

dtr_ckpt_config dtr_ckpt_config_default(const char *dir) {
  dtr_ckpt_config c;
  memset(&c, 0, sizeof c);
  c.dir = dir;
  c.keep = 3;
  return c;
}

dtr_result dtr_ckpt_create(const dtr_ckpt_config *cfg, dtr_ckpt **out, char *err, size_t errcap) {
  if (out) *out = NULL;
  if (!cfg || !out || !cfg->dir || !cfg->dir[0])
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_ckpt_create: config and dir are required");
  if (strlen(cfg->dir) > 3000)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "checkpoint dir: path too long");
  if (cfg->chunk_bytes > ((size_t)1 << 30))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "chunk_bytes %zu: at most 1 GiB", cfg->chunk_bytes);
  if (cfg->threads < 0 || cfg->threads > 256)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "threads %d: expected 0..256", cfg->threads);
  dtr_ckpt *ck = calloc(1, sizeof *ck);
  if (!ck) return DTR_ERR_NOMEM;
  ck->dir = strdup(cfg->dir);
  ck->job_id = strdup(cfg->job_id ? cfg->job_id : "");
  pthread_mutex_init(&ck->mu, NULL);
  pthread_cond_init(&ck->cv, NULL);
  if (!ck->dir || !ck->job_id) {
    dtr_ckpt_destroy(ck);
    return DTR_ERR_NOMEM;
  }
  ck->keep = cfg->keep > 0 ? cfg->keep : 0; /* 0 (or negative): keep every committed step */
  ck->level = cfg->level ? cfg->level : (int)dtr__param_int("DTRAIN_CKPT_LEVEL", 1);
  if (ck->level < -131072 || ck->level > 22) {
    DTR_WARN("checkpoint level %d is outside zstd's range; using 1", ck->level);
    ck->level = 1;
  }
  ck->chunk_bytes = cfg->chunk_bytes ? cfg->chunk_bytes : (uint64_t)4 << 20;
  ck->threads = cfg->threads ? cfg->threads : 1;
  ck->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 0;
  ck->test_delay_ms = (int)dtr__param_int("DTRAIN_CKPT_TEST_DELAY_MS", 0);
  ck->rank = cfg->comm ? dtr_comm_rank(cfg->comm) : 0;
  ck->world = cfg->comm ? dtr_comm_size(cfg->comm) : 1;

  /* Each rank creates the root itself (a shared file system may not show rank 0's mkdir at once). A
   * failure here is not fatal yet: a read-only, already existing directory still loads. */
  int mk = dtr__mkdir_p(ck->dir, 0755);
  int mk_errno = errno;
  if (ck->rank == 0 && mk == 0) dtr__ckpt_remove_stale(ck->dir);
  if (cfg->comm) {
    /* The split is collective, so no rank starts a save before rank 0 removed the stale directories. */
    dtr_result rc = dtr_comm_split(cfg->comm, 0, ck->rank, &ck->comm);
    if (rc != DTR_OK) {
      dtr__fail(err, errcap, rc, "checkpoint %s: cannot split a communicator: %s", ck->dir,
                dtr_comm_last_error(cfg->comm));
      dtr_ckpt_destroy(ck);
      return rc;
    }
  }
  if (mk != 0) {
    struct stat st;
    if (stat(ck->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      dtr_result rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot create checkpoint directory %s: %s",
                                ck->dir, strerror(mk_errno));
      dtr_ckpt_destroy(ck);
      return rc;
    }
  }
  *out = ck;
  return DTR_OK;
}

void dtr__ckpt_snapshot_free(dtr__ckpt_snapshot *s) {
  free(s->buffers); /* the buffers themselves are the checkpointer's staging area */
  free(s->sources);
  free(s->reg_index);
  memset(s, 0, sizeof *s);
}

void dtr_ckpt_destroy(dtr_ckpt *ck) {
  if (!ck) return;
  (void)dtr_ckpt_wait(ck); /* the writer thread logged a failure */
  dtr__ckpt_snapshot_free(&ck->snap);
  for (int i = 0; i < ck->nstage; i++) dtr__ckpt_stage_free(ck->stage[i]);
  free(ck->stage);
  free(ck->stage_cap);
  for (int i = 0; i < ck->nregs; i++) free(ck->regs[i].name);
  free(ck->regs);
  dtr__ckpt_dev_release(ck);
  dtr_comm_destroy(ck->comm);
  pthread_mutex_destroy(&ck->mu);
  pthread_cond_destroy(&ck->cv);
  free(ck->dir);
  free(ck->job_id);
  free(ck);
}

const char *dtr_ckpt_last_error(const dtr_ckpt *ck) {
  return ck ? ck->err : "no checkpointer";
}

dtr_ckpt_tensor dtr_ckpt_tensor_full(const char *name, dtr_dtype dtype, int ndim, const int64_t *shape,
                                     void *data) {
  dtr_ckpt_tensor t;
  memset(&t, 0, sizeof t);
  t.name = name;
  t.dtype = dtype;
  t.ndim = ndim;
  t.data = data;
  for (int d = 0; d < ndim && d < DTR_CKPT_MAX_DIMS; d++)
    t.shape[d] = t.extent[d] = t.save_extent[d] = shape[d];
  return t;
}

dtr_ckpt_tensor dtr_ckpt_tensor_save_part(dtr_ckpt_tensor t, int part, int parts) {
  /* A scalar cannot be split: every replica saves it (a few bytes), and load takes any copy. */
  if (t.ndim < 1 || t.ndim > DTR_CKPT_MAX_DIMS || parts < 1 || part < 0 || part >= parts) return t;
  int64_t e = t.save_extent[0], base = e / parts, rem = e % parts;
  int64_t begin = (int64_t)part * base + (part < rem ? part : rem);
  int64_t len = base + (part < rem ? 1 : 0);
  if (len == 0) {
    for (int d = 0; d < t.ndim; d++) t.save_extent[d] = 0;
    return t;
  }
  t.save_offset[0] += begin;
  t.save_extent[0] = len;
  return t;
}

/* pieces_ok: a tensor may be registered again under its name as another piece (add_tensor checks it). */
static dtr_result check_name(dtr_ckpt *ck, const char *name, int pieces_ok) {
  if (!name || !name[0]) return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "name: empty");
  if (strlen(name) >= DTR_CKPT_MAX_NAME)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "name '%.40s...': longer than %d bytes", name,
                     DTR_CKPT_MAX_NAME - 1);
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "name '%s': contains a control character",
                       name);
  for (int i = 0; i < ck->nregs && !pieces_ok; i++)
    if (strcmp(ck->regs[i].name, name) == 0)
      return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "name '%s': already registered", name);
  pthread_mutex_lock(&ck->mu);
  int busy = ck->busy;
  pthread_mutex_unlock(&ck->mu);
  if (busy)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                     "'%s': cannot register while a save is in flight", name);
  return DTR_OK;
}

static dtr_result push_reg(dtr_ckpt *ck, dtr__ckpt_reg *r, const char *name) {
  if (ck->nregs == ck->capregs) {
    int cap = ck->capregs ? ck->capregs * 2 : 16;
    dtr__ckpt_reg *n = realloc(ck->regs, sizeof *n * (size_t)cap);
    if (!n) return DTR_ERR_NOMEM;
    ck->regs = n;
    ck->capregs = cap;
  }
  r->name = strdup(name);
  if (!r->name) return DTR_ERR_NOMEM;
  ck->regs[ck->nregs++] = *r;
  return DTR_OK;
}

/* A tensor registered again under its name is another piece of the same tensor (a rank holding
 * several boxes of it): same dtype and shape, a held box that meets none of the earlier pieces'. */
static dtr_result check_piece(dtr_ckpt *ck, const dtr__ckpt_reg *r, const char *nm) {
  dtr__box mine = dtr__box_make(r->ndim, r->offset, r->extent);
  for (int i = 0; i < ck->nregs; i++) {
    const dtr__ckpt_reg *o = &ck->regs[i];
    if (strcmp(o->name, nm) != 0) continue;
    if (o->is_blob)
      return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "name '%s': already registered as a blob",
                       nm);
    if (o->dtype != r->dtype || o->scalar != r->scalar || o->ndim != r->ndim ||
        memcmp(o->shape, r->shape, sizeof(int64_t) * (size_t)r->ndim) != 0)
      return dtr__fail(
          ck->err, sizeof ck->err, DTR_ERR_INVALID,
          "tensor '%s': registered again with another dtype or shape (a second piece of a tensor "
          "must match the first)",
          nm);
    dtr__box theirs = dtr__box_make(o->ndim, o->offset, o->extent);
    if (r->scalar || dtr__box_meet(&mine, &theirs, NULL))
      return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                       "tensor '%s': already registered, and this piece's held box overlaps an earlier one",
                       nm);
  }
  return DTR_OK;
}

dtr_result dtr_ckpt_add_tensor(dtr_ckpt *ck, const dtr_ckpt_tensor *t) {
  if (!ck || !t) return DTR_ERR_INVALID;
  DTR_CHECK(check_name(ck, t->name, 1));
  const char *nm = t->name;
  if (dtr_dtype_size(t->dtype) == 0)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "tensor '%s': dtype %d is unknown", nm,
                     (int)t->dtype);
  if (t->ndim < 0 || t->ndim > DTR_CKPT_MAX_DIMS)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "tensor '%s': ndim %d: expected 0..%d", nm,
                     t->ndim, DTR_CKPT_MAX_DIMS);
  dtr__ckpt_reg r;
  memset(&r, 0, sizeof r);
  r.dtype = t->dtype;
  r.data = t->data;
  if (t->ndim == 0) {
    r.scalar = 1;
    r.ndim = 1;
    r.shape[0] = r.extent[0] = r.save_extent[0] = 1;
    r.saves = 1;
  } else {
    r.ndim = t->ndim;
    uint64_t total = dtr_dtype_size(t->dtype);
    int any_save = 0;
    for (int d = 0; d < t->ndim; d++) {
      if (t->shape[d] < 0 || t->offset[d] < 0 || t->extent[d] < 0 || t->offset[d] > t->shape[d] ||
          t->extent[d] > t->shape[d] - t->offset[d])
        return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID,
                         "tensor '%s': held box offset[%d]=%lld extent[%d]=%lld is outside shape[%d]=%lld",
                         nm, d, (long long)t->offset[d], d, (long long)t->extent[d], d,
                         (long long)t->shape[d]);
      if (t->shape[d] && total > ((uint64_t)1 << 62) / (uint64_t)t->shape[d])
        return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "tensor '%s': shape is too large", nm);
      total *= (uint64_t)t->shape[d];
      if (t->save_extent[d]) any_save = 1;
      r.shape[d] = t->shape[d];
      r.offset[d] = t->offset[d];
      r.extent[d] = t->extent[d];
      r.save_offset[d] = t->save_offset[d];
      r.save_extent[d] = t->save_extent[d];
    }
    if (any_save) {
      for (int d = 0; d < t->ndim; d++)
        if (t->save_extent[d] < 0 || t->save_offset[d] < t->offset[d] ||
            t->save_offset[d] > t->offset[d] + t->extent[d] ||
            t->save_extent[d] > t->offset[d] + t->extent[d] - t->save_offset[d])
          return dtr__fail(
              ck->err, sizeof ck->err, DTR_ERR_INVALID,
              "tensor '%s': save box save_offset[%d]=%lld save_extent[%d]=%lld is outside the held box "
              "[%lld, %lld)",
              nm, d, (long long)t->save_offset[d], d, (long long)t->save_extent[d], (long long)t->offset[d],
              (long long)(t->offset[d] + t->extent[d]));
      r.saves = dtr__box_elems(r.ndim, r.save_extent) > 0;
    }
  }
  if (!t->data && dtr__box_elems(r.ndim, r.extent) > 0)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "tensor '%s': data is NULL", nm);
  DTR_CHECK(check_piece(ck, &r, nm));
  DTR_CHECK(dtr__ckpt_dev_register(ck, t)); /* DTR_CKPT_CUDA: a build and a device that can copy it */
  r.device = t->device;
  DTR_CHECK(push_reg(ck, &r, nm));
  return DTR_OK;
}

dtr_result dtr_ckpt_add_blob(dtr_ckpt *ck, const char *name, void *data, size_t size) {
  if (!ck) return DTR_ERR_INVALID;
  DTR_CHECK(check_name(ck, name, 0));
  if (!data && size)
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "blob '%s': data is NULL", name);
  if (size > ((size_t)1 << 40))
    return dtr__fail(ck->err, sizeof ck->err, DTR_ERR_INVALID, "blob '%s': %zu bytes is too large", name,
                     size);
  dtr__ckpt_reg r;
  memset(&r, 0, sizeof r);
  r.is_blob = 1;
  r.dtype = DTR_U8;
  r.data = data;
  r.blob_size = size;
  r.saves = 1;
  return push_reg(ck, &r, name);
}

dtr_result dtr_ckpt_test(dtr_ckpt *ck, int *done) {
  if (!ck || !done) return DTR_ERR_INVALID;
  pthread_mutex_lock(&ck->mu);
  int busy = ck->busy;
  pthread_mutex_unlock(&ck->mu);
  if (busy) {
    *done = 0;
    return DTR_OK;
  }
  *done = 1;
  return dtr_ckpt_wait(ck);
}

dtr_result dtr_ckpt_wait(dtr_ckpt *ck) {
  if (!ck) return DTR_ERR_INVALID;
  if (ck->thread_live) {
    pthread_join(ck->thread, NULL);
    ck->thread_live = 0;
  }
  pthread_mutex_lock(&ck->mu);
  dtr_result rc = ck->have_result ? ck->result : DTR_OK;
  ck->have_result = 0;
  pthread_mutex_unlock(&ck->mu);
  return rc;
}

void dtr_ckpt_last_stats(const dtr_ckpt *ck, dtr_ckpt_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (ck) *out = ck->stats;
}
