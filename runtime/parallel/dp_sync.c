/* Data-parallel gradient buckets: the flat gradient buffer is cut into buckets from its END (backward
 * produces the last parameters first), the first one small so that communication starts early; each
 * bucket's asynchronous all-reduce (DTR_AVG, deterministic on the host backend) starts the moment
 * backward has marked all of it ready, so it overlaps the rest of backward.
 * Gradient accumulation: on inner micro-steps the caller neither marks nor finishes; it marks and
 * finishes on the last micro-step only, so the exchange runs once per optimizer step.
 * ZeRO-1 (dtr_dp_sync_create_zero1): the same buckets, each reduce-scattered instead: DP rank r owns the
 * r-th of dp equal parts of every bucket (bucket sizes are multiples of dp; the one bucket that is not,
 * at the buffer's start, goes through a zero-padded copy), updates only its parts, and
 * dtr_dp_sync_gather_params all-gathers them back into every replica's parameters. */
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/clock.h"
#include "runtime/runtime_internal.h"

#define DEFAULT_BUCKET_BYTES ((size_t)25 << 20) /* PyTorch DDP's bucket_cap_mb */
#define DEFAULT_FIRST_BYTES \
  ((size_t)1 << 20) /* DDP's first bucket: small, so the first all-reduce starts early */

typedef struct range {
  size_t a, b; /* [a, b) */
} range;

struct dtr_dp_sync {
  dtr_comm *comm;
  float *grads;
  size_t n, first_elems, elems;
  int overlap, nb, started;
  size_t *off, *cnt, *ready;
  dtr_request **req;
  /* ZeRO-1 */
  int zero, dp, rank;
  size_t *part;      /* per bucket: elements per rank's part, ceil(cnt / dp) */
  float **pad;       /* per bucket: dp * part floats where cnt is not a multiple of dp, else NULL */
  dtr_range *shards; /* this rank's non-empty parts; plain mode: the whole buffer */
  int nshards;
  range *marks; /* ranges marked this step, sorted and merged, to refuse a range marked twice */
  int nmarks, capmarks;
  double last_wait, total_wait;
};

static dtr_result create(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes, size_t first_bucket_bytes,
                         int overlap, int zero, dtr_dp_sync **out);

dtr_result dtr_dp_sync_create(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes,
                              size_t first_bucket_bytes, int overlap, dtr_dp_sync **out) {
  return create(dp, grads, n, bucket_bytes, first_bucket_bytes, overlap, 0, out);
}

dtr_result dtr_dp_sync_create_zero1(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes,
                                    size_t first_bucket_bytes, int overlap, dtr_dp_sync **out) {
  return create(dp, grads, n, bucket_bytes, first_bucket_bytes, overlap, 1, out);
}

/* Rank r's part of bucket i: [*a, *b) of the flat buffer (empty for trailing ranks of a small bucket). */
static void part_of(const dtr_dp_sync *s, int i, int r, size_t *a, size_t *b) {
  size_t lo = (size_t)r * s->part[i], hi = lo + s->part[i];
  if (lo > s->cnt[i]) lo = s->cnt[i];
  if (hi > s->cnt[i]) hi = s->cnt[i];
  *a = s->off[i] + lo;
  *b = s->off[i] + hi;
}

/* Parts per bucket, padding buffers and this rank's shard list. */
static dtr_result plan_shards(dtr_dp_sync *s) {
  s->part = calloc((size_t)s->nb + 1, sizeof *s->part);
  s->pad = calloc((size_t)s->nb + 1, sizeof *s->pad);
  s->shards = calloc((size_t)s->nb + 1, sizeof *s->shards);
  if (!s->part || !s->pad || !s->shards) return DTR_ERR_NOMEM;
  if (!s->zero) {
    s->shards[0] = (dtr_range){0, s->n};
    s->nshards = s->n > 0;
    return DTR_OK;
  }
  for (int i = 0; i < s->nb; i++) {
    s->part[i] = (s->cnt[i] + (size_t)s->dp - 1) / (size_t)s->dp;
    if (s->part[i] * (size_t)s->dp != s->cnt[i]) {
      s->pad[i] = calloc(s->part[i] * (size_t)s->dp, sizeof(float));
      if (!s->pad[i]) return DTR_ERR_NOMEM;
    }
  }
  /* ascending offsets: the buckets run from the end of the buffer */
  for (int i = s->nb - 1; i >= 0; i--) {
    size_t a, b;
    part_of(s, i, s->rank, &a, &b);
    if (b > a) s->shards[s->nshards++] = (dtr_range){a, b - a};
  }
  return DTR_OK;
}

static dtr_result create(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes, size_t first_bucket_bytes,
                         int overlap, int zero, dtr_dp_sync **out) {
  if (!out) return DTR_ERR_INVALID;
  *out = NULL;
  if (!dp || (!grads && n)) {
    DTR_WARN("dtr_dp_sync_create: %s is NULL", dp ? "grads" : "the communicator");
    return DTR_ERR_INVALID;
  }
  dtr_dp_sync *s = calloc(1, sizeof *s);
  if (!s) return DTR_ERR_NOMEM;
  s->comm = dp;
  s->grads = grads;
  s->n = n;
  s->overlap = overlap != 0;
  size_t bb = bucket_bytes ? bucket_bytes : DEFAULT_BUCKET_BYTES;
  size_t fb = first_bucket_bytes
                  ? first_bucket_bytes
                  : (bucket_bytes && bucket_bytes < DEFAULT_FIRST_BYTES ? bb : DEFAULT_FIRST_BYTES);
  s->elems = bb / sizeof(float) ? bb / sizeof(float) : 1;
  s->first_elems = fb / sizeof(float) ? fb / sizeof(float) : 1;
  s->zero = zero;
  s->dp = dtr_comm_size(dp);
  s->rank = dtr_comm_rank(dp);
  if (zero) { /* whole parts per rank in every bucket but the last */
    size_t d = (size_t)s->dp;
    s->elems = (s->elems + d - 1) / d * d;
    s->first_elems = (s->first_elems + d - 1) / d * d;
  }
  if (n > 0) {
    size_t first = s->first_elems < n ? s->first_elems : n;
    size_t rest = n - first;
    s->nb = 1 + (int)((rest + s->elems - 1) / s->elems);
  }
  s->off = calloc((size_t)s->nb + 1, sizeof *s->off);
  s->cnt = calloc((size_t)s->nb + 1, sizeof *s->cnt);
  s->ready = calloc((size_t)s->nb + 1, sizeof *s->ready);
  s->req = calloc((size_t)s->nb + 1, sizeof *s->req);
  if (!s->off || !s->cnt || !s->ready || !s->req) {
    dtr_dp_sync_destroy(s);
    return DTR_ERR_NOMEM;
  }
  size_t end = n;
  for (int i = 0; i < s->nb; i++) {
    size_t want = i == 0 ? s->first_elems : s->elems;
    size_t c = want < end ? want : end;
    s->off[i] = end - c;
    s->cnt[i] = c;
    end -= c;
  }
  if (plan_shards(s) != DTR_OK) {
    dtr_dp_sync_destroy(s);
    return DTR_ERR_NOMEM;
  }
  *out = s;
  return DTR_OK;
}

static void wait_all(dtr_dp_sync *s) {
  for (int i = 0; i < s->nb; i++) {
    dtr_request_free(s->req[i]); /* waits first */
    s->req[i] = NULL;
  }
}

void dtr_dp_sync_destroy(dtr_dp_sync *s) {
  if (!s) return;
  if (s->req) wait_all(s);
  free(s->off);
  free(s->cnt);
  free(s->ready);
  free(s->req);
  free(s->marks);
  for (int i = 0; s->pad && i < s->nb; i++) free(s->pad[i]);
  free(s->pad);
  free(s->part);
  free(s->shards);
  free(s);
}

/* The bucket holding element i (buckets count from the end of the buffer). */
static int bucket_of(const dtr_dp_sync *s, size_t i) {
  size_t first_start = s->n - s->cnt[0];
  if (i >= first_start) return 0;
  return 1 + (int)((first_start - 1 - i) / s->elems);
}

static dtr_result start(dtr_dp_sync *s, int i) {
  if (s->req[i]) return DTR_OK;
  float *p = s->grads + s->off[i];
  dtr_result rc;
  if (!s->zero) {
    rc = dtr_all_reduce(s->comm, p, p, s->cnt[i], DTR_F32, DTR_AVG, &s->req[i]);
  } else if (!s->pad[i]) { /* in place: this rank's part of the bucket receives its average */
    rc = dtr_reduce_scatter(s->comm, p, p + (size_t)s->rank * s->part[i], s->part[i], DTR_F32, DTR_AVG,
                            &s->req[i]);
  } else { /* through the zero-padded copy; finish copies this rank's part back */
    memcpy(s->pad[i], p, s->cnt[i] * sizeof(float));
    float *q = s->pad[i];
    rc = dtr_reduce_scatter(s->comm, q, q + (size_t)s->rank * s->part[i], s->part[i], DTR_F32, DTR_AVG,
                            &s->req[i]);
  }
  if (rc) {
    DTR_WARN("dp sync: bucket %d (%zu floats at %zu) could not start: %s", i, s->cnt[i], s->off[i],
             dtr_comm_last_error(s->comm));
    s->req[i] = NULL;
    return rc;
  }
  s->started++;
  return DTR_OK;
}

/* Record [a, b) in the sorted, merged list of marks; DTR_ERR_INVALID if any of it was marked already. */
static dtr_result add_mark(dtr_dp_sync *s, size_t a, size_t b) {
  int lo = 0, hi = s->nmarks; /* first mark with m.b > a */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (s->marks[mid].b > a)
      hi = mid;
    else
      lo = mid + 1;
  }
  if (lo < s->nmarks && s->marks[lo].a < b) {
    DTR_WARN("dtr_dp_sync_ready: [%zu, %zu) overlaps [%zu, %zu), already marked ready this step", a, b,
             s->marks[lo].a, s->marks[lo].b);
    return DTR_ERR_INVALID;
  }
  int join_prev = lo > 0 && s->marks[lo - 1].b == a, join_next = lo < s->nmarks && s->marks[lo].a == b;
  if (join_prev && join_next) {
    s->marks[lo - 1].b = s->marks[lo].b;
    memmove(s->marks + lo, s->marks + lo + 1, sizeof *s->marks * (size_t)(s->nmarks - lo - 1));
    s->nmarks--;
  } else if (join_prev) {
    s->marks[lo - 1].b = b;
  } else if (join_next) {
    s->marks[lo].a = a;
  } else {
    if (s->nmarks == s->capmarks) {
      int nc = s->capmarks ? 2 * s->capmarks : 64;
      range *m = realloc(s->marks, sizeof *m * (size_t)nc);
      if (!m) return DTR_ERR_NOMEM;
      s->marks = m;
      s->capmarks = nc;
    }
    memmove(s->marks + lo + 1, s->marks + lo, sizeof *s->marks * (size_t)(s->nmarks - lo));
    s->marks[lo] = (range){a, b};
    s->nmarks++;
  }
  return DTR_OK;
}

dtr_result dtr_dp_sync_ready(dtr_dp_sync *s, size_t offset, size_t count) {
  if (!s) return DTR_ERR_INVALID;
  if (offset > s->n || count > s->n - offset) {
    DTR_WARN("dtr_dp_sync_ready: range [%zu, %zu + %zu) is outside the %zu gradients", offset, offset, count,
             s->n);
    return DTR_ERR_INVALID;
  }
  if (count == 0) return DTR_OK;
  size_t a = offset, b = offset + count;
  DTR_CHECK(add_mark(s, a, b));
  int hi = bucket_of(s, a), lo = bucket_of(s, b - 1);
  for (int i = lo; i <= hi; i++) {
    size_t ba = s->off[i], bb = s->off[i] + s->cnt[i];
    size_t x = a > ba ? a : ba, y = b < bb ? b : bb;
    s->ready[i] += y - x;
  }
  if (!s->overlap) return DTR_OK;
  for (int i = lo; i <= hi; i++)
    if (s->ready[i] == s->cnt[i]) DTR_CHECK(start(s, i));
  return DTR_OK;
}

dtr_result dtr_dp_sync_finish(dtr_dp_sync *s) {
  if (!s) return DTR_ERR_INVALID;
  double t0 = dtr__now_s();
  dtr_result rc = DTR_OK;
  for (int i = 0; i < s->nb; i++) {
    if (s->req[i]) continue;
    rc = start(s, i);
    if (rc) break;
  }
  for (int i = 0; i < s->nb; i++) {
    if (!s->req[i]) continue;
    dtr_result r = dtr_request_wait(s->req[i]);
    if (r && rc == DTR_OK) {
      DTR_WARN("dp sync: all-reduce of bucket %d (%zu floats at %zu) failed: %s", i, s->cnt[i], s->off[i],
               dtr_comm_last_error(s->comm));
      rc = r;
    }
    dtr_request_free(s->req[i]);
    s->req[i] = NULL;
    if (s->zero && s->pad[i] && r == DTR_OK) {
      size_t a, b;
      part_of(s, i, s->rank, &a, &b);
      memcpy(s->grads + a, s->pad[i] + (size_t)s->rank * s->part[i], (b - a) * sizeof(float));
    }
  }
  s->last_wait = dtr__now_s() - t0;
  s->total_wait += s->last_wait;
  memset(s->ready, 0, sizeof *s->ready * (size_t)s->nb);
  s->nmarks = 0;
  s->started = 0;
  return rc;
}

const dtr_range *dtr_dp_sync_shards(const dtr_dp_sync *s, int *n) {
  if (n) *n = s ? s->nshards : 0;
  return s ? s->shards : NULL;
}

dtr_result dtr_dp_sync_gather_params(dtr_dp_sync *s, float *params) {
  if (!s || (!params && s->n)) return DTR_ERR_INVALID;
  if (!s->zero) return DTR_OK;
  dtr_result rc = DTR_OK;
  for (int i = 0; i < s->nb && rc == DTR_OK; i++) {
    float *p = params + s->off[i];
    size_t k = s->part[i], me = (size_t)s->rank * k;
    if (!s->pad[i]) {
      rc = dtr_all_gather(s->comm, p + me, p, k, DTR_F32, &s->req[i]);
    } else {
      size_t a, b;
      part_of(s, i, s->rank, &a, &b);
      memcpy(s->pad[i] + me, params + a, (b - a) * sizeof(float));
      rc = dtr_all_gather(s->comm, s->pad[i] + me, s->pad[i], k, DTR_F32, &s->req[i]);
    }
    if (rc != DTR_OK)
      DTR_WARN("zero-1: all-gather of bucket %d (%zu floats at %zu) could not start: %s", i, s->cnt[i],
               s->off[i], dtr_comm_last_error(s->comm));
  }
  for (int i = 0; i < s->nb; i++) {
    if (!s->req[i]) continue;
    dtr_result r = dtr_request_wait(s->req[i]);
    dtr_request_free(s->req[i]);
    s->req[i] = NULL;
    if (r != DTR_OK && rc == DTR_OK) {
      DTR_WARN("zero-1: all-gather of bucket %d (%zu floats at %zu) failed: %s", i, s->cnt[i], s->off[i],
               dtr_comm_last_error(s->comm));
      rc = r;
    }
    if (r == DTR_OK && s->pad[i]) memcpy(params + s->off[i], s->pad[i], s->cnt[i] * sizeof(float));
  }
  return rc;
}

double dtr_dp_sync_last_wait(const dtr_dp_sync *s) {
  return s ? s->last_wait : 0;
}
int dtr_dp_sync_num_buckets(const dtr_dp_sync *s) {
  return s ? s->nb : 0;
}
int dtr__dp_sync_started(const dtr_dp_sync *s) {
  return s ? s->started : 0;
}
double dtr__dp_sync_total_wait(const dtr_dp_sync *s) {
  return s ? s->total_wait : 0;
}
dtr_result dtr__dp_sync_bucket(const dtr_dp_sync *s, int i, size_t *offset, size_t *count) {
  if (!s || i < 0 || i >= s->nb) return DTR_ERR_INVALID;
  *offset = s->off[i];
  *count = s->cnt[i];
  return DTR_OK;
}
