/* Box arithmetic and the one strided copy between boxes (box.h): the walk over the rows two boxes share,
 * which the snapshot, the loader and the export each use instead of a loop of their own. */
#include "checkpoint/box.h"

#include <string.h>

int64_t dtr__box_elems(int ndim, const int64_t *extent) {
  int empty = 0;
  for (int d = 0; d < ndim; d++) {
    if (extent[d] < 0) return -1;
    if (extent[d] == 0) empty = 1;
  }
  if (empty) return 0;
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (n > INT64_MAX / extent[d]) return -1;
    n *= extent[d];
  }
  return n;
}

dtr__box dtr__box_make(int ndim, const int64_t *off, const int64_t *ext) {
  dtr__box b;
  memset(&b, 0, sizeof b);
  if (ndim <= 0) { /* a scalar: one element */
    b.nd = 1;
    b.ext[0] = 1;
    return b;
  }
  b.nd = ndim;
  for (int d = 0; d < ndim; d++) {
    b.off[d] = off ? off[d] : 0;
    b.ext[d] = ext[d];
  }
  return b;
}

int dtr__box_meet(const dtr__box *a, const dtr__box *b, dtr__box *out) {
  dtr__box m;
  memset(&m, 0, sizeof m);
  m.nd = a->nd;
  for (int d = 0; d < a->nd; d++) {
    int64_t lo = a->off[d] > b->off[d] ? a->off[d] : b->off[d];
    int64_t ahi = a->off[d] + a->ext[d], bhi = b->off[d] + b->ext[d];
    int64_t hi = ahi < bhi ? ahi : bhi;
    if (lo >= hi) return 0;
    m.off[d] = lo;
    m.ext[d] = hi - lo;
  }
  if (out) *out = m;
  return 1;
}

/* Move the outer coordinates c[0..n) of a row to the first row at or after it (row-major order) whose
 * coordinates all lie in [lo, hi); 0 when there is none. */
static int next_row_in(int n, int64_t *c, const int64_t *lo, const int64_t *hi) {
  int d = 0;
  while (d < n) {
    if (c[d] < lo[d]) { /* every row from lo on in this and the later dimensions is after c */
      for (int k = d; k < n; k++) c[k] = lo[k];
      return 1;
    }
    if (c[d] >= hi[d]) { /* past the end in dimension d: carry into d - 1 */
      if (d == 0) return 0;
      for (int k = d; k < n; k++) c[k] = lo[k];
      c[--d]++;
      continue;
    }
    d++;
  }
  return 1;
}

/* The same boxes with their trailing dimensions folded into one wherever src and dst hold exactly the
 * same range of them (a slab along dimension 0 becomes one row): fewer, longer runs, the same order of
 * elements. `in` is their meeting. */
static void fold(dtr__box *src, dtr__box *dst, dtr__box *in) {
  int k = src->nd - 1;
  while (k > 0 && src->off[k] == dst->off[k] && src->ext[k] == dst->ext[k]) k--;
  if (k == src->nd - 1) return;
  int64_t span = 1; /* elements of one index of dimension k */
  for (int d = k + 1; d < src->nd; d++) span *= src->ext[d];
  dtr__box *b[3] = {src, dst, in};
  for (int i = 0; i < 3; i++) {
    b[i]->off[k] *= span;
    b[i]->ext[k] *= span;
    b[i]->nd = k + 1;
  }
}

/* Called for each run of `len` consecutive elements that the walk finds: element `si` of the source box
 * (its row-major index there) is element `di` of the destination box. Non-zero stops the walk. */
typedef int (*run_fn)(void *ctx, int64_t si, int64_t di, int64_t len);

/* Walk the elements [first, first + count) of box src_box that lie in box dst_box, in order, as runs
 * along the last (folded) dimension, visiting only rows that hold such elements. Returns fn's first
 * non-zero value, or 0. Static and inline so that each caller's fn is inlined into its own copy. */
static inline int walk(const dtr__box *src_box, int64_t first, int64_t count, const dtr__box *dst_box,
                       run_fn fn, void *ctx) {
  dtr__box src = *src_box, dst = *dst_box, in;
  if (count <= 0 || !dtr__box_meet(&src, &dst, &in)) return 0;
  fold(&src, &dst, &in);
  int no = src.nd - 1; /* outer dimensions: a row is one index in each of them */
  int64_t inner = src.ext[no];
  int64_t end = first + count;
  int64_t last_row = (end - 1) / inner;
  /* c: the global coordinates of the source row that holds element `first`. */
  int64_t c[DTR_CKPT_MAX_DIMS], lo[DTR_CKPT_MAX_DIMS], hi[DTR_CKPT_MAX_DIMS];
  int64_t rem = first / inner;
  for (int d = no - 1; d >= 0; d--) {
    c[d] = src.off[d] + rem % src.ext[d];
    rem /= src.ext[d];
    lo[d] = in.off[d];
    hi[d] = in.off[d] + in.ext[d];
  }
  int64_t col_lo = in.off[no], col_hi = in.off[no] + in.ext[no]; /* global columns both boxes hold */
  for (;;) {
    if (!next_row_in(no, c, lo, hi)) return 0;
    int64_t srow = 0, drow = 0;
    for (int d = 0; d < no; d++) {
      srow = srow * src.ext[d] + (c[d] - src.off[d]);
      drow = drow * dst.ext[d] + (c[d] - dst.off[d]);
    }
    if (srow > last_row) return 0;
    int64_t start = srow * inner; /* the row's first element in the source box */
    int64_t a = src.off[no] + (first > start ? first - start : 0);
    int64_t z = src.off[no] + (end < start + inner ? end - start : inner);
    if (a < col_lo) a = col_lo;
    if (z > col_hi) z = col_hi;
    if (a < z) {
      int rc = fn(ctx, start + (a - src.off[no]), drow * dst.ext[no] + (a - dst.off[no]), z - a);
      if (rc) return rc;
    }
    if (no == 0) return 0; /* one dimension: a single row */
    c[no - 1]++;
  }
}

static void set_bits(uint8_t *mask, int64_t i, int64_t len) {
  for (int64_t k = i; k < i + len; k++) mask[k >> 3] |= (uint8_t)(1u << (k & 7));
}

typedef struct copy_ctx {
  char *dst;
  const char *src;
  int64_t first;
  size_t es;
  uint8_t *mask;
} copy_ctx;

static int run_copy(void *ctx, int64_t si, int64_t di, int64_t len) {
  copy_ctx *c = ctx;
  memcpy(c->dst + (size_t)di * c->es, c->src + (size_t)(si - c->first) * c->es, (size_t)len * c->es);
  if (c->mask) set_bits(c->mask, di, len);
  return 0;
}

void dtr__box_copy(void *dst, const dtr__box *dbox, const void *src, const dtr__box *sbox, int64_t first,
                   int64_t count, size_t es, uint8_t *mask) {
  copy_ctx c = {dst, src, first, es, mask};
  walk(sbox, first, count, dbox, run_copy, &c);
}

static int run_mark(void *ctx, int64_t si, int64_t di, int64_t len) {
  (void)si;
  set_bits(ctx, di, len);
  return 0;
}

void dtr__box_mark(uint8_t *mask, const dtr__box *dbox, const dtr__box *sbox, int64_t first, int64_t count) {
  walk(sbox, first, count, dbox, run_mark, mask);
}

static int run_lacks(void *ctx, int64_t si, int64_t di, int64_t len) {
  (void)si;
  const uint8_t *mask = ctx;
  for (int64_t k = di; k < di + len; k++)
    if (!(mask[k >> 3] & (1u << (k & 7)))) return 1;
  return 0;
}

int dtr__box_lacks(const uint8_t *mask, const dtr__box *dbox, const dtr__box *sbox, int64_t first,
                   int64_t count) {
  return walk(sbox, first, count, dbox, run_lacks, (void *)mask);
}

int64_t dtr__mask_first_clear(const uint8_t *mask, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!(mask[i >> 3] & (1u << (i & 7)))) return i;
  return -1;
}
