/* Data-parallel gradient buckets: the flat gradient buffer is cut into buckets from its END (backward
 * produces the last parameters first), the first one small so that communication starts early; each
 * bucket's asynchronous all-reduce (DTR_AVG, deterministic on the host backend) starts the moment
 * backward has marked all of it ready, so it overlaps the rest of backward.
 * Gradient accumulation: on inner micro-steps the caller neither marks nor finishes; it marks and
 * finishes on the last micro-step only, so the exchange runs once per optimizer step. */
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
  range *marks; /* ranges marked this step, sorted and merged, to refuse a range marked twice */
  int nmarks, capmarks;
  double last_wait, total_wait;
};

dtr_result dtr_dp_sync_create(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes,
                              size_t first_bucket_bytes, int overlap, dtr_dp_sync **out) {
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
  dtr_result rc = dtr_all_reduce(s->comm, p, p, s->cnt[i], DTR_F32, DTR_AVG, &s->req[i]);
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
  }
  s->last_wait = dtr__now_s() - t0;
  s->total_wait += s->last_wait;
  memset(s->ready, 0, sizeof *s->ready * (size_t)s->nb);
  s->nmarks = 0;
  s->started = 0;
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
