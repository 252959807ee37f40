/* Box arithmetic (checkpoint/box.c), which the snapshot, the loader and `dtrain ckpt export` share: the
 * element count and its one overflow rule, the meeting of two boxes, and the strided copy, mark and
 * "lacks" of a range of a source box into a destination box, each against an element-by-element
 * reference over random boxes of 1 to 4 dimensions (empty boxes and ranges included, and boxes that
 * hold the same range of their last dimensions, which the walk folds into longer runs). */
// ctest-labels: ckpt
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/box.h"
#include "tests/unit/test_util.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static int64_t below(int64_t n) { /* 0 .. n-1 (n >= 1) */
  return (int64_t)(test_xorshift64(&rng) % (uint64_t)n);
}

/* A random box inside shape, empty now and then. */
static dtr__box random_box(int nd, const int64_t *shape) {
  int64_t off[DTR_CKPT_MAX_DIMS], ext[DTR_CKPT_MAX_DIMS];
  for (int d = 0; d < nd; d++) {
    off[d] = below(shape[d]);
    ext[d] = below(shape[d] - off[d] + 1);
    if (below(8) && !ext[d]) ext[d] = 1; /* mostly non-empty */
    if (off[d] + ext[d] > shape[d]) off[d] = shape[d] - ext[d];
  }
  return dtr__box_make(nd, off, ext);
}

/* Element i of box b (row-major) in global coordinates. */
static void coords(const dtr__box *b, int64_t i, int64_t *g) {
  for (int d = b->nd - 1; d >= 0; d--) {
    g[d] = b->off[d] + i % b->ext[d];
    i /= b->ext[d];
  }
}

/* The index of global g in box b, or -1 when b does not hold it. */
static int64_t index_in(const dtr__box *b, const int64_t *g) {
  int64_t i = 0;
  for (int d = 0; d < b->nd; d++) {
    if (g[d] < b->off[d] || g[d] >= b->off[d] + b->ext[d]) return -1;
    i = i * b->ext[d] + (g[d] - b->off[d]);
  }
  return i;
}

static int bit(const uint8_t *m, int64_t i) {
  return (m[i >> 3] >> (i & 7)) & 1;
}

static void check_elems(void) {
  CHECK_EQ_INT(dtr__box_elems(0, NULL), 1);
  CHECK_EQ_INT(dtr__box_elems(2, (int64_t[]){3, 4}), 12);
  CHECK_EQ_INT(dtr__box_elems(2, (int64_t[]){3, 0}), 0);
  CHECK_EQ_INT(dtr__box_elems(2, (int64_t[]){0, -1}), -1); /* negative anywhere: -1, even beside a 0 */
  CHECK_EQ_INT(dtr__box_elems(2, (int64_t[]){-1, 0}), -1);
  CHECK_EQ_INT(dtr__box_elems(2, (int64_t[]){(int64_t)1 << 31, (int64_t)1 << 31}), (int64_t)1 << 62);
  CHECK_EQ_INT(dtr__box_elems(2, (int64_t[]){INT64_MAX / 2 + 1, 2}), -1); /* overflow: -1 */
  CHECK_EQ_INT(dtr__box_elems(3, (int64_t[]){INT64_MAX, INT64_MAX, 0}), 0);
  dtr__box s = dtr__box_make(0, NULL, NULL); /* a scalar: one element of one dimension */
  CHECK_EQ_INT(s.nd, 1);
  CHECK_EQ_INT(s.off[0], 0);
  CHECK_EQ_INT(s.ext[0], 1);
}

static void check_meet(void) {
  dtr__box a = dtr__box_make(2, (int64_t[]){0, 2}, (int64_t[]){4, 4});
  dtr__box b = dtr__box_make(2, (int64_t[]){3, 5}, (int64_t[]){5, 5});
  dtr__box m;
  CHECK(dtr__box_meet(&a, &b, &m));
  CHECK(m.off[0] == 3 && m.ext[0] == 1 && m.off[1] == 5 && m.ext[1] == 1);
  dtr__box c = dtr__box_make(2, (int64_t[]){4, 0}, (int64_t[]){1, 9}); /* touches a's end: no element */
  CHECK(!dtr__box_meet(&a, &c, NULL));
  dtr__box e = dtr__box_make(2, (int64_t[]){1, 3}, (int64_t[]){0, 2}); /* empty */
  CHECK(!dtr__box_meet(&a, &e, NULL));
}

/* One random case: copy, mark and lacks of [first, first + count) of src into dst, against the reference. */
static void check_random(int iter) {
  int nd = 1 + (int)below(4);
  int64_t shape[DTR_CKPT_MAX_DIMS];
  for (int d = 0; d < nd; d++) shape[d] = 1 + below(6);
  dtr__box src = random_box(nd, shape), dst = random_box(nd, shape);
  if (below(3) == 0) /* the same range in the last dimensions (a slab, folded into longer runs) */
    for (int d = (int)below(nd); d < nd; d++) dst.off[d] = src.off[d], dst.ext[d] = src.ext[d];
  int64_t ns = dtr__box_elems(nd, src.ext), ndst = dtr__box_elems(nd, dst.ext);
  int64_t first = below(ns + 1), count = below(ns - first + 1);
  if (below(4) == 0) first = 0, count = ns; /* the whole box, as save and export use it */
  int32_t *s = malloc(sizeof *s * (size_t)(count + 1));
  int32_t *got = calloc((size_t)ndst + 1, sizeof *got), *want = calloc((size_t)ndst + 1, sizeof *want);
  size_t mbytes = (size_t)ndst / 8 + 1;
  uint8_t *gmask = calloc(mbytes, 1), *wmask = calloc(mbytes, 1), *pre = calloc(mbytes, 1);
  for (int64_t i = 0; i < count; i++) s[i] = (int32_t)(first + i);
  for (int64_t i = 0; i < ndst; i++) got[i] = want[i] = -1;
  for (int64_t i = 0; i < ndst; i++)
    if (below(3) == 0) pre[i >> 3] |= (uint8_t)(1u << (i & 7));

  int64_t g[DTR_CKPT_MAX_DIMS];
  int want_lacks = 0;
  for (int64_t i = first; i < first + count; i++) {
    coords(&src, i, g);
    int64_t di = index_in(&dst, g);
    if (di < 0) continue;
    want[di] = (int32_t)i;
    wmask[di >> 3] |= (uint8_t)(1u << (di & 7));
    if (!bit(pre, di)) want_lacks = 1;
  }

  dtr__box_copy(got, &dst, s, &src, first, count, sizeof *got, gmask);
  int same = memcmp(got, want, sizeof *got * (size_t)ndst) == 0;
  for (int64_t i = 0; i < ndst; i++) same &= bit(gmask, i) == bit(wmask, i);
  uint8_t *marked = calloc(mbytes, 1);
  dtr__box_mark(marked, &dst, &src, first, count);
  for (int64_t i = 0; i < ndst; i++) same &= bit(marked, i) == bit(wmask, i);
  same &= dtr__box_lacks(pre, &dst, &src, first, count) == want_lacks;
  int64_t clear = -1;
  for (int64_t i = 0; i < ndst && clear < 0; i++)
    if (!bit(wmask, i)) clear = i;
  same &= dtr__mask_first_clear(gmask, ndst) == clear;
  if (!same) {
    fprintf(stderr, "case %d: nd %d, src", iter, nd);
    for (int d = 0; d < nd; d++)
      fprintf(stderr, " [%lld+%lld]", (long long)src.off[d], (long long)src.ext[d]);
    fprintf(stderr, ", dst");
    for (int d = 0; d < nd; d++)
      fprintf(stderr, " [%lld+%lld]", (long long)dst.off[d], (long long)dst.ext[d]);
    fprintf(stderr, ", elements %lld+%lld\n", (long long)first, (long long)count);
  }
  CHECK(same);
  free(s);
  free(got);
  free(want);
  free(gmask);
  free(wmask);
  free(pre);
  free(marked);
}

/* The snapshot's case: a save box of a held box out to contiguous memory; and export's: pieces into the
 * whole tensor, covering it exactly. */
static void check_save_and_assemble(void) {
  int64_t shape[2] = {6, 5};
  dtr__box whole = dtr__box_make(2, NULL, shape);
  int32_t full[30], out[6];
  for (int i = 0; i < 30; i++) full[i] = i;
  dtr__box saved = dtr__box_make(2, (int64_t[]){2, 1}, (int64_t[]){2, 3});
  dtr__box_copy(out, &saved, full, &whole, 0, 30, sizeof *full, NULL);
  int32_t expect[6] = {11, 12, 13, 16, 17, 18};
  CHECK(memcmp(out, expect, sizeof out) == 0);

  int32_t back[30];
  uint8_t covered[4] = {0};
  memset(back, 0xff, sizeof back);
  for (int p = 0; p < 3; p++) { /* three row slabs of two rows each */
    dtr__box piece = dtr__box_make(2, (int64_t[]){2 * p, 0}, (int64_t[]){2, 5});
    dtr__box_copy(back, &whole, full + 10 * p, &piece, 0, 10, sizeof *full, covered);
    CHECK_EQ_INT(dtr__mask_first_clear(covered, 30), p < 2 ? 10 * (p + 1) : -1);
  }
  CHECK(memcmp(back, full, sizeof full) == 0);
}

int main(void) {
  check_elems();
  check_meet();
  check_save_and_assemble();
  for (int i = 0; i < 20000; i++) check_random(i);
  return TEST_EXIT();
}
