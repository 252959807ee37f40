/* The checkpointer on one rank (no communicator): round trip of every dtype, scalars and blobs across
 * many small chunks; an async save whose registered memory changes right after it returns; rotation;
 * resharding by registering a different held box; a corrupt newest step skipped; another job's
 * checkpoint refused; NOT_FOUND touching nothing; bad registrations named. */
// ctest-timeout: 120
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ckpt_format.h"
#include "checkpoint/ckpt_tools.h"
#include "dtrain/ckpt.h"
#include "tests/unit/test_util.h"

#define NT 7
static const dtr_dtype TYPES[NT] = {DTR_F32, DTR_F64, DTR_F16, DTR_BF16, DTR_I32, DTR_I64, DTR_U8};

/* The value of element i of tensor k at step s, as bytes, so every dtype is checked bit for bit. */
static void fill(void *p, dtr_dtype t, int64_t n, int k, int64_t s) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t v = (uint64_t)(i * 2654435761u) ^ (uint64_t)(k * 97 + s * 7919);
    switch (t) {
      case DTR_F32:
        ((float *)p)[i] = (float)(i % 1000) * 0.5f + (float)k + (float)s * 0.25f;
        break;
      case DTR_F64:
        ((double *)p)[i] = (double)i * 1.25 - (double)k + (double)s / 3.0;
        break;
      case DTR_F16:
      case DTR_BF16:
        ((uint16_t *)p)[i] = (uint16_t)(0x3c00 + (v & 0x3ff));
        break;
      case DTR_I32:
        ((int32_t *)p)[i] = (int32_t)(v & 0x7fffffff) - 1000;
        break;
      case DTR_I64:
        ((int64_t *)p)[i] = (int64_t)v;
        break;
      case DTR_U8:
        ((uint8_t *)p)[i] = (uint8_t)v;
        break;
    }
  }
}

static char g_dir[256];

static dtr_ckpt *make(const char *sub, int keep, const char *job) {
  dtr_ckpt_config cfg = dtr_ckpt_config_default(NULL);
  char *dir = malloc(512);
  snprintf(dir, 512, "%s/%s", g_dir, sub);
  cfg.dir = dir;
  cfg.keep = keep;
  cfg.chunk_bytes = 96; /* many chunks per tensor */
  cfg.job_id = job;
  dtr_ckpt *ck = NULL;
  char err[512];
  dtr_result rc = dtr_ckpt_create(&cfg, &ck, err, sizeof err);
  if (rc != DTR_OK) fprintf(stderr, "create %s: %s\n", dir, err);
  free(dir);
  return ck;
}

typedef struct model {
  void *t[NT];
  int64_t n[NT];
  int64_t shape[NT][3];
  double scalar;
  uint8_t blob[37];
  char empty_blob[1];
} model;

static void model_init(model *m) {
  static const int64_t shapes[NT][3] = {{7, 11, 3},  {50, 1, 1}, {9, 9, 1},  {3, 3, 40},
                                        {101, 1, 1}, {1, 13, 5}, {200, 1, 1}};
  for (int k = 0; k < NT; k++) {
    memcpy(m->shape[k], shapes[k], sizeof shapes[k]);
    m->n[k] = shapes[k][0] * shapes[k][1] * shapes[k][2];
    m->t[k] = calloc((size_t)m->n[k], 8);
  }
}

static void model_fill(model *m, int64_t s) {
  for (int k = 0; k < NT; k++) fill(m->t[k], TYPES[k], m->n[k], k, s);
  m->scalar = 0.5 + (double)s;
  fill(m->blob, DTR_U8, sizeof m->blob, 99, s);
}

static void model_zero(model *m) {
  for (int k = 0; k < NT; k++) memset(m->t[k], 0, (size_t)m->n[k] * 8);
  m->scalar = 0;
  memset(m->blob, 0, sizeof m->blob);
}

static int model_check(const model *m, int64_t s) {
  int bad = 0;
  char ref[200 * 8 * 6];
  for (int k = 0; k < NT; k++) {
    fill(ref, TYPES[k], m->n[k], k, s);
    size_t bytes = (size_t)m->n[k] * dtr_dtype_size(TYPES[k]);
    if (memcmp(ref, m->t[k], bytes) != 0) {
      fprintf(stderr, "tensor %d (%s) differs from step %lld's values\n", k, dtr_dtype_name(TYPES[k]),
              (long long)s);
      bad = 1;
    }
  }
  if (m->scalar != 0.5 + (double)s)
    fprintf(stderr, "scalar %g, expected %g\n", m->scalar, 0.5 + (double)s), bad = 1;
  fill(ref, DTR_U8, sizeof m->blob, 99, s);
  if (memcmp(ref, m->blob, sizeof m->blob) != 0) fprintf(stderr, "blob differs\n"), bad = 1;
  return !bad;
}

static void model_register(dtr_ckpt *ck, model *m) {
  for (int k = 0; k < NT; k++) {
    char name[32];
    snprintf(name, sizeof name, "t%d.%s", k, dtr_dtype_name(TYPES[k]));
    int nd = m->shape[k][2] > 1 ? 3 : m->shape[k][1] > 1 ? 2 : 1;
    dtr_ckpt_tensor t = dtr_ckpt_tensor_full(name, TYPES[k], nd, m->shape[k], m->t[k]);
    CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &t), DTR_OK);
  }
  dtr_ckpt_tensor s = dtr_ckpt_tensor_full("lr", DTR_F64, 0, NULL, &m->scalar);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &s), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_add_blob(ck, "rng", m->blob, sizeof m->blob), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_add_blob(ck, "empty", m->empty_blob, 0), DTR_OK);
}

static void model_free(model *m) {
  for (int k = 0; k < NT; k++) free(m->t[k]);
}

static int exists(const char *sub, const char *name) {
  char p[512];
  struct stat st;
  snprintf(p, sizeof p, "%s/%s/%s", g_dir, sub, name);
  return stat(p, &st) == 0;
}

/* What the `latest` file says (-1: nothing readable). */
static int64_t latest_file(const char *sub) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s/latest", g_dir, sub);
  FILE *f = fopen(p, "r");
  long long v = -1;
  if (f) {
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

static int64_t latest(const char *sub) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", g_dir, sub);
  int64_t s = -2;
  CHECK_EQ_INT(dtr_ckpt_latest_step(p, &s), DTR_OK);
  return s;
}

static void test_roundtrip_async_rotation(void) {
  model m;
  model_init(&m);
  dtr_ckpt *ck = make("a", 2, "job-a");
  CHECK(ck != NULL);
  if (!ck) return;
  model_register(ck, &m);
  CHECK_EQ_INT(latest("a"), -1);

  /* Synchronous save, then zeros, then load: every dtype bit for bit. */
  model_fill(&m, 10);
  CHECK_EQ_INT(dtr_ckpt_save(ck, 10), DTR_OK);
  dtr_ckpt_stats st;
  dtr_ckpt_last_stats(ck, &st);
  CHECK(st.raw_bytes > 0 && st.stored_bytes > 0 && st.total_s >= st.blocking_s);
  CHECK(exists("a", "step_00000010/manifest.yaml") && exists("a", "step_00000010/rank_00000.dtck"));
  CHECK(!exists("a", ".tmp_step_00000010"));
  CHECK_EQ_INT(latest("a"), 10);
  model_zero(&m);
  int64_t step = -1;
  CHECK_EQ_INT(dtr_ckpt_load(ck, &step), DTR_OK);
  CHECK_EQ_INT(step, 10);
  CHECK(model_check(&m, 10));

  /* Async: the memory changes as soon as save_async returns; the snapshot is what lands on disk. */
  model_fill(&m, 20);
  CHECK_EQ_INT(dtr_ckpt_save_async(ck, 20), DTR_OK);
  model_fill(&m, 21);
  int done = 0;
  for (int i = 0; i < 20000 && !done; i++) {
    CHECK_EQ_INT(dtr_ckpt_test(ck, &done), DTR_OK);
    if (!done) usleep(1000);
  }
  CHECK(done);
  CHECK_EQ_INT(dtr_ckpt_wait(ck), DTR_OK);
  model_zero(&m);
  CHECK_EQ_INT(dtr_ckpt_load(ck, &step), DTR_OK);
  CHECK_EQ_INT(step, 20);
  CHECK(model_check(&m, 20));
  /* load_step of an older one */
  CHECK_EQ_INT(dtr_ckpt_load_step(ck, 10), DTR_OK);
  CHECK(model_check(&m, 10));

  /* Rotation keeps 2: after 30, step 10 is gone; the newest is never removed. */
  model_fill(&m, 30);
  CHECK_EQ_INT(dtr_ckpt_save_async(ck, 30), DTR_OK);
  model_fill(&m, 40);
  CHECK_EQ_INT(dtr_ckpt_save_async(ck, 40), DTR_OK); /* waits for 30 first */
  CHECK_EQ_INT(dtr_ckpt_wait(ck), DTR_OK);
  CHECK(!exists("a", "step_00000010") && !exists("a", "step_00000020"));
  CHECK(exists("a", "step_00000030") && exists("a", "step_00000040"));
  CHECK_EQ_INT(latest("a"), 40);
  /* A lower step number committed after a higher one (a job resumed from an older step) survives. */
  model_fill(&m, 5);
  CHECK_EQ_INT(dtr_ckpt_save(ck, 5), DTR_OK);
  CHECK(exists("a", "step_00000005") && exists("a", "step_00000040"));
  CHECK_EQ_INT(latest_file("a"), 5); /* the file says what committed last */
  /* `latest` is a hint: the newest committed step number loads (issue 19: `latest` naming an older step
   * used to win over newer valid steps) */
  model_zero(&m);
  CHECK_EQ_INT(dtr_ckpt_load(ck, &step), DTR_OK);
  CHECK_EQ_INT(step, 40);
  CHECK(model_check(&m, 40));
  int64_t newest = -1;
  char dir_a[512];
  snprintf(dir_a, sizeof dir_a, "%s/a", g_dir);
  CHECK_EQ_INT(dtr_ckpt_latest_step(dir_a, &newest), DTR_OK);
  CHECK_EQ_INT(newest, 40);

  /* Saving a step that already exists replaces it. */
  model_fill(&m, 77);
  CHECK_EQ_INT(dtr_ckpt_save(ck, 40), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_load_step(ck, 40), DTR_OK);
  CHECK(model_check(&m, 77));

  /* Registration while a save is in flight is refused, naming it. */
  setenv("DTRAIN_CKPT_TEST_DELAY_MS", "300", 1);
  dtr_ckpt *slow = make("slow", 0, NULL);
  unsetenv("DTRAIN_CKPT_TEST_DELAY_MS");
  double x = 1;
  dtr_ckpt_tensor tx = dtr_ckpt_tensor_full("x", DTR_F64, 0, NULL, &x);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(slow, &tx), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_save_async(slow, 1), DTR_OK);
  dtr_ckpt_tensor ty = dtr_ckpt_tensor_full("y", DTR_F64, 0, NULL, &x);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(slow, &ty), DTR_ERR_INVALID);
  CHECK(strstr(dtr_ckpt_last_error(slow), "in flight") != NULL);
  dtr_ckpt_destroy(slow); /* waits for the save */
  CHECK(exists("slow", "step_00000001/manifest.yaml"));

  dtr_ckpt_destroy(ck);
  model_free(&m);
}

/* Flip one byte inside the stored bytes of tensor t0's first chunk of step s (offset from the manifest). */
static void flip_byte(const char *sub, int64_t s) {
  char p[512], err[512];
  snprintf(p, sizeof p, "%s/%s/step_%08lld/manifest.yaml", g_dir, sub, (long long)s);
  dtr__manifest *m = NULL;
  CHECK_EQ_INT(dtr__manifest_read(p, &m, err, sizeof err), DTR_OK);
  const dtr__entry *e = dtr__manifest_find(m, "t0.f32");
  CHECK(e != NULL);
  if (!e) {
    dtr__manifest_free(m);
    return;
  }
  off_t at = (off_t)(e->pieces[0].chunks[0].file_offset + e->pieces[0].chunks[0].stored_bytes / 2);
  dtr__manifest_free(m);
  snprintf(p, sizeof p, "%s/%s/step_%08lld/rank_00000.dtck", g_dir, sub, (long long)s);
  int fd = open(p, O_RDWR);
  CHECK(fd >= 0);
  unsigned char c;
  CHECK(pread(fd, &c, 1, at) == 1);
  c ^= 0x5a;
  CHECK(pwrite(fd, &c, 1, at) == 1);
  close(fd);
}

static void test_corrupt_and_job(void) {
  model m;
  model_init(&m);
  dtr_ckpt *ck = make("c", 0, "job-c");
  model_register(ck, &m);
  model_fill(&m, 1);
  CHECK_EQ_INT(dtr_ckpt_save(ck, 1), DTR_OK);
  model_fill(&m, 2);
  CHECK_EQ_INT(dtr_ckpt_save(ck, 2), DTR_OK);
  flip_byte("c", 2);
  model_zero(&m);
  int64_t step = -1;
  CHECK_EQ_INT(dtr_ckpt_load(ck, &step), DTR_OK);
  CHECK_EQ_INT(step, 1);
  CHECK(model_check(&m, 1));
  /* Loading the corrupt one by number fails and says which file. */
  CHECK(dtr_ckpt_load_step(ck, 2) != DTR_OK);
  CHECK(strstr(dtr_ckpt_last_error(ck), "rank_00000.dtck") != NULL);
  dtr_ckpt_destroy(ck);

  /* Another job's checkpoint is refused (the job id is in the message). */
  dtr_ckpt *other = make("c", 0, "job-other");
  model_register(other, &m);
  model_zero(&m);
  dtr_result rc = dtr_ckpt_load(other, &step);
  CHECK(rc != DTR_OK && rc != DTR_ERR_NOT_FOUND);
  CHECK(strstr(dtr_ckpt_last_error(other), "job-c") != NULL);
  dtr_ckpt_destroy(other);
  /* No job id: any job's checkpoint loads. */
  dtr_ckpt *any = make("c", 0, NULL);
  model_register(any, &m);
  CHECK_EQ_INT(dtr_ckpt_load(any, &step), DTR_OK);
  CHECK(model_check(&m, 1));
  dtr_ckpt_destroy(any);
  model_free(&m);
}

static float val2(int64_t i, int64_t j) {
  return (float)(i * 100 + j) + 0.125f;
}

static void test_reshard(void) {
  enum { R = 6, C = 5 };
  float full[R * C];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < C; j++) full[i * C + j] = val2(i, j);
  int64_t shape[2] = {R, C};
  dtr_ckpt *a = make("r", 0, NULL);
  dtr_ckpt_tensor t = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, full);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(a, &t), DTR_OK);
  /* A second tensor of which only the first of two slabs is saved. */
  float half[R * C];
  memcpy(half, full, sizeof half);
  dtr_ckpt_tensor h = dtr_ckpt_tensor_save_part(dtr_ckpt_tensor_full("h", DTR_F32, 2, shape, half), 0, 2);
  CHECK_EQ_INT(h.save_offset[0], 0);
  CHECK_EQ_INT(h.save_extent[0], 3);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(a, &h), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_save(a, 3), DTR_OK);
  dtr_ckpt_destroy(a);

  /* Held box rows 2..4, columns 1..3: every value from the saved full box. */
  dtr_ckpt *b = make("r", 0, NULL);
  float part[3 * 3];
  memset(part, 0, sizeof part);
  dtr_ckpt_tensor p = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, part);
  p.offset[0] = 2, p.offset[1] = 1, p.extent[0] = 3, p.extent[1] = 3;
  p.save_offset[0] = 2, p.save_offset[1] = 1, p.save_extent[0] = 3, p.save_extent[1] = 3;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(b, &p), DTR_OK);
  /* Rows 0..2 of h were saved: a held box inside them loads. */
  float hpart[2 * C];
  dtr_ckpt_tensor hp = dtr_ckpt_tensor_full("h", DTR_F32, 2, shape, hpart);
  hp.offset[0] = 1, hp.extent[0] = 2, hp.save_extent[0] = 0, hp.save_extent[1] = 0;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(b, &hp), DTR_OK);
  int64_t step;
  CHECK_EQ_INT(dtr_ckpt_load(b, &step), DTR_OK);
  int bad = 0;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) bad += part[i * 3 + j] != val2(2 + i, 1 + j);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < C; j++) bad += hpart[i * C + j] != val2(1 + i, j);
  CHECK_EQ_INT(bad, 0);
  dtr_ckpt_destroy(b);

  /* A held box reaching into the unsaved half cannot load, and says which element is missing. */
  dtr_ckpt *c = make("r", 0, NULL);
  float hall[R * C];
  for (int i = 0; i < R * C; i++) hall[i] = -1;
  dtr_ckpt_tensor hf = dtr_ckpt_tensor_full("h", DTR_F32, 2, shape, hall);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(c, &hf), DTR_OK);
  CHECK(dtr_ckpt_load(c, &step) != DTR_OK);
  CHECK(strstr(dtr_ckpt_last_error(c), "[3,0]") != NULL);
  int untouched = 1;
  for (int i = 0; i < R * C; i++) untouched &= hall[i] == -1;
  CHECK(untouched);
  dtr_ckpt_destroy(c);
}

/* A tensor held as pieces (several registrations of one name): rows 0-1 and 4-5 in one buffer, rows 2-3
 * in another, saved as three pieces, verified by the tools, loaded into one whole registration and into
 * pieces cut the other way (columns); overlapping or mismatched pieces are refused. */
static void test_pieces(void) {
  enum { R = 6, C = 4 };
  int64_t shape[2] = {R, C};
  float a[4 * C], b[2 * C];
  for (int j = 0; j < C; j++) {
    for (int i = 0; i < 2; i++) a[i * C + j] = val2(i, j), a[(2 + i) * C + j] = val2(4 + i, j);
    for (int i = 0; i < 2; i++) b[i * C + j] = val2(2 + i, j);
  }
  dtr_ckpt *s = make("pieces", 0, NULL);
  const int64_t rows0[3] = {0, 2, 4};
  float *data[3] = {a, b, a + 2 * C};
  for (int k = 0; k < 3; k++) {
    dtr_ckpt_tensor t = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, data[k]);
    t.offset[0] = t.save_offset[0] = rows0[k];
    t.extent[0] = t.save_extent[0] = 2;
    CHECK_EQ_INT(dtr_ckpt_add_tensor(s, &t), DTR_OK);
  }
  dtr_ckpt_tensor over = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, b);
  over.offset[0] = over.save_offset[0] = 3, over.extent[0] = over.save_extent[0] = 2;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(s, &over), DTR_ERR_INVALID); /* rows 3-4 meet two pieces */
  CHECK(strstr(dtr_ckpt_last_error(s), "overlaps") != NULL);
  int64_t other[2] = {R, C + 1};
  dtr_ckpt_tensor odd = dtr_ckpt_tensor_full("w", DTR_F32, 2, other, b);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(s, &odd), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_ckpt_add_blob(s, "w", b, sizeof b), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_ckpt_save(s, 1), DTR_OK);
  dtr_ckpt_destroy(s);
  char dir[300], err[1024] = "";
  snprintf(dir, sizeof dir, "%s/pieces", g_dir);
  FILE *devnull = fopen("/dev/null", "w");
  CHECK_EQ_INT(dtr__ckpt_tool_verify(dir, 1, devnull, err, sizeof err), DTR_OK);
  if (err[0]) fprintf(stderr, "  verify: %s\n", err);
  fclose(devnull);

  /* whole */
  float whole[R * C];
  dtr_ckpt *l = make("pieces", 0, NULL);
  dtr_ckpt_tensor w = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, whole);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(l, &w), DTR_OK);
  int64_t step = 0;
  CHECK_EQ_INT(dtr_ckpt_load(l, &step), DTR_OK);
  int bad = 0;
  for (int i = 0; i < R; i++)
    for (int j = 0; j < C; j++) bad += whole[i * C + j] != val2(i, j);
  CHECK_EQ_INT(bad, 0);
  dtr_ckpt_destroy(l);
  /* columns 0-1 and 2-3 as two pieces of one rank */
  float left[R * 2], right[R * 2];
  dtr_ckpt *c = make("pieces", 0, NULL);
  float *halves[2] = {left, right};
  for (int k = 0; k < 2; k++) {
    dtr_ckpt_tensor t = dtr_ckpt_tensor_full("w", DTR_F32, 2, shape, halves[k]);
    t.offset[1] = 2 * k, t.extent[1] = 2, t.save_extent[0] = t.save_extent[1] = 0;
    CHECK_EQ_INT(dtr_ckpt_add_tensor(c, &t), DTR_OK);
  }
  CHECK_EQ_INT(dtr_ckpt_load(c, &step), DTR_OK);
  bad = 0;
  for (int i = 0; i < R; i++)
    for (int j = 0; j < 2; j++) bad += left[i * 2 + j] != val2(i, j) || right[i * 2 + j] != val2(i, 2 + j);
  CHECK_EQ_INT(bad, 0);
  dtr_ckpt_destroy(c);
}

static void test_not_found_and_bad_input(void) {
  dtr_ckpt *ck = make("empty", 0, NULL);
  float v[4] = {1, 2, 3, 4};
  uint8_t blob[3] = {7, 8, 9};
  int64_t shape[1] = {4};
  dtr_ckpt_tensor t = dtr_ckpt_tensor_full("v", DTR_F32, 1, shape, v);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &t), DTR_OK);
  CHECK_EQ_INT(dtr_ckpt_add_blob(ck, "b", blob, 3), DTR_OK);
  int64_t step = 123;
  CHECK_EQ_INT(dtr_ckpt_load(ck, &step), DTR_ERR_NOT_FOUND);
  CHECK_EQ_INT(step, 123);
  CHECK(v[0] == 1 && v[3] == 4 && blob[0] == 7 && blob[2] == 9);
  CHECK_EQ_INT(dtr_ckpt_load_step(ck, 999), DTR_ERR_NOT_FOUND);
  CHECK(v[0] == 1 && v[3] == 4);

  /* Bad registrations name the field. */
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &t), DTR_ERR_INVALID);
  CHECK(strstr(dtr_ckpt_last_error(ck), "already registered") != NULL);
  CHECK_EQ_INT(dtr_ckpt_add_blob(ck, "v", blob, 3), DTR_ERR_INVALID);
  dtr_ckpt_tensor b1 = dtr_ckpt_tensor_full("b1", DTR_F32, 1, shape, v);
  b1.extent[0] = 5;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &b1), DTR_ERR_INVALID);
  CHECK(strstr(dtr_ckpt_last_error(ck), "held box") != NULL);
  dtr_ckpt_tensor b2 = dtr_ckpt_tensor_full("b2", DTR_F32, 1, shape, v);
  b2.offset[0] = 1, b2.extent[0] = 3, b2.save_offset[0] = 0, b2.save_extent[0] = 2;
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &b2), DTR_ERR_INVALID);
  CHECK(strstr(dtr_ckpt_last_error(ck), "save box") != NULL);
  dtr_ckpt_tensor b3 = dtr_ckpt_tensor_full("b3", (dtr_dtype)42, 1, shape, v);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &b3), DTR_ERR_INVALID);
  dtr_ckpt_tensor b4 = dtr_ckpt_tensor_full("", DTR_F32, 1, shape, v);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &b4), DTR_ERR_INVALID);
  const int64_t shape9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  dtr_ckpt_tensor b5 = dtr_ckpt_tensor_full("b5", DTR_F32, 9, shape9, v);
  CHECK_EQ_INT(dtr_ckpt_add_tensor(ck, &b5), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_ckpt_save(ck, -1), DTR_ERR_INVALID);

  /* save_part splits 7 rows into 3, 2, 2 and leaves nothing for parts beyond the rows. */
  int64_t s7[2] = {7, 2};
  dtr_ckpt_tensor f = dtr_ckpt_tensor_full("f", DTR_F32, 2, s7, v);
  int64_t off[3] = {0, 3, 5}, ext[3] = {3, 2, 2};
  for (int p = 0; p < 3; p++) {
    dtr_ckpt_tensor q = dtr_ckpt_tensor_save_part(f, p, 3);
    CHECK_EQ_INT(q.save_offset[0], off[p]);
    CHECK_EQ_INT(q.save_extent[0], ext[p]);
    CHECK_EQ_INT(q.save_extent[1], 2);
  }
  dtr_ckpt_tensor q = dtr_ckpt_tensor_save_part(f, 8, 9);
  CHECK_EQ_INT(q.save_extent[0] + q.save_extent[1], 0);
  dtr_ckpt_destroy(ck);
  dtr_ckpt_destroy(NULL);

  /* A bad config is refused with a message. */
  dtr_ckpt_config cfg = dtr_ckpt_config_default(NULL);
  char err[256] = "";
  dtr_ckpt *none = (dtr_ckpt *)1;
  CHECK_EQ_INT(dtr_ckpt_create(&cfg, &none, err, sizeof err), DTR_ERR_INVALID);
  CHECK(none == NULL && err[0]);
  cfg.dir = "/proc/version/sub";
  CHECK(dtr_ckpt_create(&cfg, &none, err, sizeof err) != DTR_OK);
  CHECK(strstr(err, "/proc/version/sub") != NULL);
}

/* Stale .tmp_step_* directories from a crashed save are removed at create. */
static void test_stale(void) {
  char p[512];
  snprintf(p, sizeof p, "%s/s", g_dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/s/.tmp_step_00000007", g_dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/s/.tmp_step_00000007/rank_00000.dtck", g_dir);
  FILE *f = fopen(p, "w");
  if (f) fclose(f);
  dtr_ckpt *ck = make("s", 0, NULL);
  CHECK(!exists("s", ".tmp_step_00000007"));
  dtr_ckpt_destroy(ck);
}

/* keep 0 keeps every committed step (issue 19: it used to keep 3), as a recipe's checkpoint.keep: 0 says;
 * dtr_ckpt_config_default still rotates to 3. */
static void test_keep_all(void) {
  model m;
  model_init(&m);
  dtr_ckpt *ck = make("keep0", 0, NULL);
  CHECK(ck != NULL);
  if (!ck) return;
  model_register(ck, &m);
  for (int s = 1; s <= 6; s++) {
    model_fill(&m, s);
    CHECK_EQ_INT(dtr_ckpt_save(ck, s), DTR_OK);
  }
  for (int s = 1; s <= 6; s++) {
    char name[32];
    snprintf(name, sizeof name, "step_%08d", s);
    CHECK(exists("keep0", name));
  }
  dtr_ckpt_destroy(ck);
  CHECK_EQ_INT(dtr_ckpt_config_default("x").keep, 3);
  model_free(&m);
}

int main(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/test_ckpt_api.XXXXXX");
  if (!mkdtemp(g_dir)) return 2;
  test_roundtrip_async_rotation();
  test_corrupt_and_job();
  test_reshard();
  test_pieces();
  test_not_found_and_bad_input();
  test_stale();
  test_keep_all();
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
  return TEST_EXIT();
}
