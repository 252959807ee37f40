/* manifest.c: a manifest written and read back is the same manifest, and every kind of bad manifest
 * is refused with path:line:col and the reason (missing and unknown keys, a newer format, boxes
 * outside their shape, chunks that skip or overlap, malformed YAML). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/ckpt_format.h"
#include "tests/unit/test_util.h"

static dtr__chunk CH_A[2] = {{0, 6, 64, 20, 0x0123456789abcdefULL, DTR__CODEC_PLANES_ZSTD},
                             {6, 2, 84, 8, 0xfedcba9876543210ULL, DTR__CODEC_RAW}};
static dtr__chunk CH_B[1] = {{0, 8, 92, 30, 42, DTR__CODEC_ZSTD}};
static dtr__chunk CH_C[1] = {{0, 5, 200, 5, 7, DTR__CODEC_RAW}};
static dtr__chunk CH_S[1] = {{0, 1, 300, 8, 9, DTR__CODEC_RAW}};

static dtr__manifest sample(dtr__piece *pa, dtr__piece *pb, dtr__piece *pc, dtr__piece *ps, dtr__entry *e) {
  memset(pa, 0, sizeof *pa * 2);
  pa[0].rank = 0;
  pa[0].offset[0] = 0, pa[0].extent[0] = 2, pa[0].extent[1] = 4;
  pa[0].raw_bytes = 8 * 4;
  pa[0].nchunks = 2, pa[0].chunks = CH_A;
  pa[1].rank = 1;
  pa[1].offset[0] = 2, pa[1].extent[0] = 2, pa[1].extent[1] = 4;
  pa[1].raw_bytes = 8 * 4;
  pa[1].nchunks = 1, pa[1].chunks = CH_B;
  memset(pc, 0, sizeof *pc);
  pc->rank = 1, pc->raw_bytes = 5, pc->nchunks = 1, pc->chunks = CH_C;
  memset(ps, 0, sizeof *ps);
  ps->rank = 0, ps->raw_bytes = 8, ps->nchunks = 1, ps->chunks = CH_S;
  (void)pb;
  memset(e, 0, sizeof *e * 3);
  e[0].name = "layer.0/w \"quoted\"\t";
  e[0].dtype = DTR_F32;
  e[0].ndim = 2, e[0].shape[0] = 4, e[0].shape[1] = 4;
  e[0].npieces = 2, e[0].pieces = pa;
  e[1].name = "rng";
  e[1].is_blob = 1, e[1].dtype = DTR_U8;
  e[1].npieces = 1, e[1].pieces = pc;
  e[2].name = "lr";
  e[2].dtype = DTR_F64;
  e[2].npieces = 1, e[2].pieces = ps;
  dtr__manifest m;
  memset(&m, 0, sizeof m);
  m.format = 1, m.job_id = "job-1", m.step = 1234, m.world = 2, m.level = 3, m.chunk_bytes = 24;
  m.created = "2026-11-23T00:00:00Z", m.raw_bytes = 77, m.stored_bytes = 63;
  m.nentries = 3, m.entries = e;
  return m;
}

static void test_roundtrip(const char *dir) {
  dtr__piece pa[2], pb, pc, ps;
  dtr__entry e[3];
  dtr__manifest m = sample(pa, &pb, &pc, &ps, e);
  char path[512], err[1024];
  snprintf(path, sizeof path, "%s/manifest.yaml", dir);
  CHECK_EQ_INT(dtr__manifest_write(path, &m, err, sizeof err), DTR_OK);
  /* O_EXCL: a second write to the same path is refused, naming it. */
  CHECK_EQ_INT(dtr__manifest_write(path, &m, err, sizeof err), DTR_ERR_SYSTEM);
  CHECK(strstr(err, path) != NULL);
  dtr__manifest *r = NULL;
  CHECK_EQ_INT(dtr__manifest_read(path, &r, err, sizeof err), DTR_OK);
  if (!r) {
    fprintf(stderr, "read failed: %s\n", err);
    return;
  }
  CHECK_EQ_INT(r->format, 1);
  CHECK_EQ_STR(r->job_id, "job-1");
  CHECK_EQ_INT(r->step, 1234);
  CHECK_EQ_INT(r->world, 2);
  CHECK_EQ_INT(r->level, 3);
  CHECK_EQ_INT(r->chunk_bytes, 24);
  CHECK_EQ_STR(r->created, "2026-11-23T00:00:00Z");
  CHECK_EQ_INT(r->raw_bytes, 77);
  CHECK_EQ_INT(r->stored_bytes, 63);
  CHECK_EQ_INT(r->nentries, 3);
  const dtr__entry *w = dtr__manifest_find(r, "layer.0/w \"quoted\"\t");
  CHECK(w != NULL);
  if (w) {
    CHECK_EQ_INT(w->is_blob, 0);
    CHECK_EQ_INT(w->dtype, DTR_F32);
    CHECK_EQ_INT(w->ndim, 2);
    CHECK_EQ_INT(w->shape[1], 4);
    CHECK_EQ_INT(w->npieces, 2);
    CHECK_EQ_INT(w->pieces[1].rank, 1);
    CHECK_EQ_INT(w->pieces[1].offset[0], 2);
    CHECK_EQ_INT(w->pieces[1].extent[1], 4);
    CHECK_EQ_INT(w->pieces[0].nchunks, 2);
    CHECK(memcmp(w->pieces[0].chunks, CH_A, sizeof CH_A) == 0);
    CHECK(memcmp(w->pieces[1].chunks, CH_B, sizeof CH_B) == 0);
  }
  const dtr__entry *b = dtr__manifest_find(r, "rng");
  CHECK(b && b->is_blob && b->npieces == 1 && b->pieces[0].rank == 1 && b->pieces[0].raw_bytes == 5);
  const dtr__entry *s = dtr__manifest_find(r, "lr");
  CHECK(s && !s->is_blob && s->ndim == 0 && s->dtype == DTR_F64 && s->pieces[0].chunks[0].elem_count == 1);
  CHECK(dtr__manifest_find(r, "nope") == NULL);
  dtr__manifest_free(r);
  /* A missing file is NOT_FOUND naming the path. */
  snprintf(path, sizeof path, "%s/absent.yaml", dir);
  CHECK_EQ_INT(dtr__manifest_read(path, &r, err, sizeof err), DTR_ERR_NOT_FOUND);
  CHECK(strstr(err, "absent.yaml") != NULL);
}

static const char *GOOD =
    "format: 1\n"
    "job_id: \"j\"\n"
    "step: 5\n"
    "world: 2\n"
    "level: 1\n"
    "chunk_bytes: 16\n"
    "created: \"x\"\n"
    "raw_bytes: 24\n"
    "stored_bytes: 24\n"
    "entries:\n"
    "  - name: \"t\"\n"
    "    kind: tensor\n"
    "    dtype: f32\n"
    "    shape: [2, 2]\n"
    "    pieces:\n"
    "      - rank: 1\n"
    "        offset: [0, 0]\n"
    "        extent: [2, 2]\n"
    "        raw_bytes: 16\n"
    "        chunks:\n"
    "          - {begin: 0, count: 3, offset: 0, bytes: 12, xxh64: 0x10, codec: 0}\n"
    "          - {begin: 3, count: 1, offset: 12, bytes: 4, xxh64: 0x11, codec: 0}\n"
    "  - name: \"b\"\n"
    "    kind: blob\n"
    "    pieces:\n"
    "      - rank: 0\n"
    "        raw_bytes: 8\n"
    "        chunks:\n"
    "          - {begin: 0, count: 8, offset: 16, bytes: 8, xxh64: 0x12, codec: 0}\n";

/* Replace the first occurrence of `from` in GOOD by `to` and expect a refusal containing `want`. */
static void expect_bad(const char *from, const char *to, const char *want) {
  char text[4096];
  const char *at = strstr(GOOD, from);
  if (!at) {
    fprintf(stderr, "test bug: '%s' not in GOOD\n", from);
    CHECK(0);
    return;
  }
  snprintf(text, sizeof text, "%.*s%s%s", (int)(at - GOOD), GOOD, to, at + strlen(from));
  char err[1024] = "";
  dtr__manifest *m = NULL;
  dtr_result rc = dtr__manifest_parse(text, strlen(text), "m.yaml", &m, err, sizeof err);
  CHECK_EQ_INT(rc, DTR_ERR_PROTOCOL);
  CHECK(m == NULL);
  /* path:line:col first */
  int line = 0, col = 0;
  CHECK(sscanf(err, "m.yaml:%d:%d:", &line, &col) == 2 && line >= 1 && col >= 1);
  if (!strstr(err, want)) {
    fprintf(stderr, "replacing '%s' by '%s': error '%s' lacks '%s'\n", from, to, err, want);
    CHECK(0);
  }
  dtr__manifest_free(m);
}

static void test_bad(void) {
  char err[1024];
  dtr__manifest *m = NULL;
  CHECK_EQ_INT(dtr__manifest_parse(GOOD, strlen(GOOD), "m.yaml", &m, err, sizeof err), DTR_OK);
  if (!m) fprintf(stderr, "GOOD refused: %s\n", err);
  dtr__manifest_free(m);

  expect_bad("format: 1", "format: 2", "newer");
  expect_bad("format: 1\n", "", "missing key 'format'");
  expect_bad("step: 5", "step: -5", "step");
  expect_bad("step: 5", "step: five", "not an integer");
  expect_bad("world: 2", "world: 0", "world");
  expect_bad("level: 1\n", "level: 1\nextra: 3\n", "unknown key 'extra'");
  expect_bad("level: 1\n", "level: 1\nlevel: 2\n", "duplicate key 'level'");
  expect_bad("job_id: \"j\"\n", "", "missing key 'job_id'");
  expect_bad("dtype: f32", "dtype: f31", "unknown dtype");
  expect_bad("kind: tensor", "kind: vector", "kind");
  expect_bad("extent: [2, 2]", "extent: [3, 2]", "outside");
  expect_bad("offset: [0, 0]", "offset: [0]", "dimensions");
  expect_bad("raw_bytes: 16", "raw_bytes: 15", "raw_bytes");
  expect_bad("rank: 1", "rank: 2", "rank");
  expect_bad("{begin: 3,", "{begin: 4,", "begins at element 4");
  expect_bad("count: 1,", "count: 2,", "remain");
  expect_bad("count: 1,", "count: 0,", "remain");
  expect_bad("codec: 0}\n  - name", "codec: 9}\n  - name", "codec");
  expect_bad("xxh64: 0x10", "xxh64: -1", "xxh64");
  expect_bad("          - {begin: 3, count: 1, offset: 12, bytes: 4, xxh64: 0x11, codec: 0}\n", "",
             "cover 3 of");
  expect_bad("name: \"b\"", "name: \"t\"", "appears twice");
  expect_bad("name: \"b\"", "name: \"\"", "empty");
  expect_bad("kind: blob\n", "kind: blob\n    shape: [1]\n", "no dtype or shape");
  expect_bad("shape: [2, 2]", "shape: [2, 2, 1, 1, 1, 1, 1, 1, 1]", "at most 8");
  expect_bad("shape: [2, 2]", "shape: {a: 1}", "list of integers");
  expect_bad("entries:\n", "entries: 3\nx:\n", "unknown key");
  expect_bad("step: 5", "step: [5", "");
  expect_bad("format: 1\n", "format: 1\n---\n", "");
  /* Garbage and empty input never crash and name the file. */
  CHECK_EQ_INT(dtr__manifest_parse("", 0, "e.yaml", &m, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "e.yaml:") == err);
  CHECK_EQ_INT(dtr__manifest_parse("\x01\xff", 2, "g.yaml", &m, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK_EQ_INT(dtr__manifest_parse("[1, 2]", 6, "s.yaml", &m, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "expected a mapping") != NULL);
}

int main(void) {
  char dir[] = "/tmp/test_ckpt_manifest.XXXXXX";
  if (!mkdtemp(dir)) return 2;
  test_roundtrip(dir);
  test_bad();
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return TEST_EXIT();
}
