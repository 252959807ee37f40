/* Shard files (checkpoint/shard_write.c, shard_read.c): write/read round trips with 1 and 3 threads,
 * the index against the pieces the writer returned, and refusals that name the culprit: a flipped
 * byte (file + chunk offset + piece), a truncated file, a newer version, another job, step or rank,
 * an existing file (O_EXCL, left untouched), a bad source, a directory that does not exist. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ckpt_format.h"
#include "checkpoint/shard_internal.h"
#include "tests/unit/test_util.h"

static char dir[256];

static uint64_t rng = 12345;
static uint32_t next_u32(void) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng >> 33);
}

enum { NSRC = 5 };
typedef struct state {
  float *w;     /* f32 weights */
  uint16_t *h;  /* bf16 */
  int64_t *ids; /* i64 */
  uint8_t blob[1000];
  dtr__shard_source src[NSRC];
} state;

static void make_state(state *st) {
  size_t nw = 100003, nh = 40001, ni = 5000;
  st->w = malloc(nw * 4);
  st->h = malloc(nh * 2);
  st->ids = malloc(ni * 8);
  for (size_t i = 0; i < nw; i++) st->w[i] = ((int)(next_u32() % 20001) - 10000) * 2e-6f;
  for (size_t i = 0; i < nh; i++) st->h[i] = (uint16_t)(0x3c00 + next_u32() % 0x300 + (next_u32() & 0x8000));
  for (size_t i = 0; i < ni; i++) st->ids[i] = (int64_t)i * 7 - 300;
  for (size_t i = 0; i < sizeof st->blob; i++) st->blob[i] = (uint8_t)next_u32();
  st->src[0] = (dtr__shard_source){"layers.0.weight", 0, DTR_F32, st->w, nw * 4};
  st->src[1] = (dtr__shard_source){"layers.0.bias_bf16", 0, DTR_BF16, st->h, nh * 2};
  st->src[2] = (dtr__shard_source){"token_ids", 0, DTR_I64, st->ids, ni * 8};
  st->src[3] = (dtr__shard_source){"rng", 1, DTR_U8, st->blob, sizeof st->blob};
  st->src[4] = (dtr__shard_source){"empty", 0, DTR_F32, NULL, 0};
}

static dtr__shard_params params(int threads) {
  dtr__shard_params p = {.level = 1,
                         .chunk_bytes = 64 * 1024 + 3,
                         .threads = threads,
                         .job_id = "job-A",
                         .step = 100,
                         .rank = 2,
                         .world = 4};
  return p;
}

static void free_pieces(dtr__piece *pc, int n) {
  for (int i = 0; i < n; i++) free(pc[i].chunks);
}

/* Read every chunk of every source through the index, compare with the source bytes. */
static void check_readback(const char *path, const state *st, const dtr__piece *pc) {
  char err[512];
  dtr__shard *s = NULL;
  CHECK(dtr__shard_open(path, "job-A", 100, 2, &s, err, sizeof err) == DTR_OK);
  if (!s) {
    fprintf(stderr, "open: %s\n", err);
    return;
  }
  const dtr__shard_index_entry *ent;
  int n = 0;
  CHECK(dtr__shard_index(s, &ent, &n, err, sizeof err) == DTR_OK);
  CHECK_EQ_INT(n, NSRC);
  for (int i = 0; i < n && i < NSRC; i++) {
    const dtr__shard_source *src = &st->src[i];
    CHECK_EQ_STR(ent[i].name, src->name);
    CHECK_EQ_INT(ent[i].is_blob, src->is_blob);
    CHECK_EQ_INT(ent[i].dtype, src->dtype);
    CHECK_EQ_INT(ent[i].raw_bytes, src->raw_bytes);
    CHECK_EQ_INT(ent[i].nchunks, pc[i].nchunks);
    CHECK_EQ_INT(pc[i].raw_bytes, src->raw_bytes);
    CHECK_EQ_INT(pc[i].rank, 2);
    size_t es = dtr_dtype_size(src->dtype);
    uint8_t *back = malloc(src->raw_bytes + 1);
    uint64_t covered = 0;
    for (int k = 0; k < ent[i].nchunks && k < pc[i].nchunks; k++) {
      const dtr__chunk *c = &ent[i].chunks[k];
      CHECK(memcmp(c, &pc[i].chunks[k], sizeof *c) == 0 ||
            (c->elem_begin == pc[i].chunks[k].elem_begin && c->checksum == pc[i].chunks[k].checksum));
      CHECK(c->elem_count * es <= 64 * 1024 + 3);
      covered += c->elem_count;
      CHECK(dtr__shard_read_chunk(s, src->name, src->dtype, c, back + c->elem_begin * es, err, sizeof err) ==
            DTR_OK);
    }
    CHECK_EQ_INT(covered * es, src->raw_bytes);
    CHECK(src->raw_bytes == 0 || memcmp(back, src->data, src->raw_bytes) == 0);
    free(back);
  }
  /* The float tensors went through the planes codec. */
  CHECK(n > 1 && ent[0].nchunks > 0 && ent[0].chunks[0].codec == DTR__CODEC_PLANES_ZSTD);
  dtr__shard_close(s);
}

static void test_roundtrip(const state *st) {
  for (int threads = 1; threads <= 3; threads += 2) {
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/rt_%d.dtck", dir, threads);
    dtr__piece pc[NSRC];
    dtr__shard_params p = params(threads);
    dtr_result rc = dtr__shard_write(path, st->src, NSRC, &p, pc, err, sizeof err);
    CHECK(rc == DTR_OK);
    if (rc != DTR_OK) {
      fprintf(stderr, "write: %s\n", err);
      continue;
    }
    CHECK_EQ_INT(pc[0].nchunks, (100003 + 16383) / 16384); /* 65539 bytes: 16384 f32 elements a chunk */
    CHECK_EQ_INT(pc[4].nchunks, 0);
    check_readback(path, st, pc);
    /* O_EXCL: a second write to the same path is refused and leaves the first file readable. */
    dtr__piece pc2[NSRC];
    CHECK_EQ_INT(dtr__shard_write(path, st->src, NSRC, &p, pc2, err, sizeof err), DTR_ERR_EXISTS);
    CHECK(strstr(err, path) != NULL);
    check_readback(path, st, pc);
    free_pieces(pc, NSRC);
  }
}

static long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void patch(const char *path, long off, const void *bytes, size_t n) {
  int fd = open(path, O_WRONLY);
  CHECK(fd >= 0 && pwrite(fd, bytes, n, off) == (ssize_t)n);
  if (fd >= 0) close(fd);
}

static void copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  char buf[65536];
  size_t n;
  while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
  if (a) fclose(a);
  if (b) fclose(b);
}

static void test_corruption(const state *st) {
  char path[512], bad[600], err[512];
  snprintf(path, sizeof path, "%s/good.dtck", dir);
  dtr__piece pc[NSRC];
  dtr__shard_params p = params(2);
  CHECK(dtr__shard_write(path, st->src, NSRC, &p, pc, err, sizeof err) == DTR_OK);

  /* A flipped byte inside chunk 3 of the weights: that chunk fails naming file, offset and piece;
   * its neighbours still read (chunks are independent). */
  snprintf(bad, sizeof bad, "%s/flipped.dtck", dir);
  copy_file(path, bad);
  const dtr__chunk *c3 = &pc[0].chunks[3];
  uint8_t byte = 0;
  FILE *f = fopen(bad, "rb");
  CHECK(f && fseek(f, (long)c3->file_offset + 17, SEEK_SET) == 0 && fread(&byte, 1, 1, f) == 1);
  if (f) fclose(f);
  byte ^= 0x40;
  patch(bad, (long)c3->file_offset + 17, &byte, 1);
  dtr__shard *s = NULL;
  CHECK(dtr__shard_open(bad, "job-A", 100, 2, &s, err, sizeof err) == DTR_OK);
  float *buf = malloc(70000);
  if (s) {
    CHECK_EQ_INT(dtr__shard_read_chunk(s, "layers.0.weight", DTR_F32, c3, buf, err, sizeof err),
                 DTR_ERR_PROTOCOL);
    char want[64];
    snprintf(want, sizeof want, "offset %" PRIu64, c3->file_offset);
    printf("checksum error: %s\n", err);
    CHECK(strstr(err, bad) != NULL);
    CHECK(strstr(err, want) != NULL);
    CHECK(strstr(err, "layers.0.weight") != NULL);
    CHECK(strstr(err, "checksum") != NULL);
    CHECK(dtr__shard_read_chunk(s, "layers.0.weight", DTR_F32, &pc[0].chunks[2], buf, err, sizeof err) ==
          DTR_OK);
    CHECK(memcmp(buf, st->w + pc[0].chunks[2].elem_begin, pc[0].chunks[2].elem_count * 4) == 0);
    /* A chunk record that points outside the file or claims too much is refused, not followed. */
    dtr__chunk wild = *c3;
    wild.file_offset = (uint64_t)file_size(bad) - 10;
    CHECK_EQ_INT(dtr__shard_read_chunk(s, "w", DTR_F32, &wild, buf, err, sizeof err), DTR_ERR_PROTOCOL);
    wild = *c3;
    wild.elem_count = (uint64_t)1 << 40;
    CHECK_EQ_INT(dtr__shard_read_chunk(s, "w", DTR_F32, &wild, buf, err, sizeof err), DTR_ERR_PROTOCOL);
    dtr__shard_close(s);
  }

  /* Truncated: the header still opens, the index is refused, chunks past the cut are refused. */
  snprintf(bad, sizeof bad, "%s/truncated.dtck", dir);
  copy_file(path, bad);
  CHECK(truncate(bad, file_size(path) / 2) == 0);
  s = NULL;
  CHECK(dtr__shard_open(bad, "job-A", 100, 2, &s, err, sizeof err) == DTR_OK);
  if (s) {
    const dtr__shard_index_entry *ent;
    int n;
    CHECK_EQ_INT(dtr__shard_index(s, &ent, &n, err, sizeof err), DTR_ERR_PROTOCOL);
    printf("truncated: %s\n", err);
    CHECK(strstr(err, bad) != NULL);
    dtr_result rc = DTR_OK;
    for (int i = 0; i < NSRC && rc == DTR_OK; i++)
      for (int k = 0; k < pc[i].nchunks; k++) {
        const dtr__chunk *c = &pc[i].chunks[k];
        if (c->file_offset + c->stored_bytes > (uint64_t)file_size(bad)) {
          rc = dtr__shard_read_chunk(s, "x", st->src[i].dtype, c, buf, err, sizeof err);
          break;
        }
      }
    CHECK_EQ_INT(rc, DTR_ERR_PROTOCOL);
    CHECK(strstr(err, "truncated") != NULL || strstr(err, "end of the file") != NULL);
    dtr__shard_close(s);
  }
  CHECK(truncate(bad, 20) == 0);
  CHECK_EQ_INT(dtr__shard_open(bad, NULL, -1, -1, &s, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, bad) != NULL);

  /* A newer version is refused with a message saying so. */
  snprintf(bad, sizeof bad, "%s/newer.dtck", dir);
  copy_file(path, bad);
  uint8_t v[4];
  dtr__put_u32(v, DTR__SHARD_VERSION + 1);
  patch(bad, 8, v, 4);
  CHECK_EQ_INT(dtr__shard_open(bad, "job-A", 100, 2, &s, err, sizeof err), DTR_ERR_UNSUPPORTED);
  printf("newer: %s\n", err);
  CHECK(strstr(err, "newer") != NULL && strstr(err, bad) != NULL);
  /* A flipped header byte: its checksum catches it. */
  snprintf(bad, sizeof bad, "%s/header.dtck", dir);
  copy_file(path, bad);
  uint8_t b7 = 7;
  patch(bad, 17, &b7, 1);
  CHECK_EQ_INT(dtr__shard_open(bad, "job-A", -1, 2, &s, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "header checksum") != NULL);
  /* Not a shard at all. */
  patch(bad, 0, "NOTSHARD", 8);
  CHECK_EQ_INT(dtr__shard_open(bad, NULL, -1, -1, &s, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "magic") != NULL);

  /* Another job, step or rank. */
  CHECK_EQ_INT(dtr__shard_open(path, "job-B", 100, 2, &s, err, sizeof err), DTR_ERR_PROTOCOL);
  printf("wrong job: %s\n", err);
  CHECK(strstr(err, "job-A") != NULL && strstr(err, "job-B") != NULL && strstr(err, path) != NULL);
  CHECK_EQ_INT(dtr__shard_open(path, "job-A", 101, 2, &s, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "step") != NULL);
  CHECK_EQ_INT(dtr__shard_open(path, "job-A", 100, 1, &s, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "rank") != NULL);
  s = NULL;
  CHECK(dtr__shard_open(path, "", 100, 2, &s, err, sizeof err) == DTR_OK); /* "" accepts any job */
  dtr__shard_close(s);
  snprintf(bad, sizeof bad, "%s/missing.dtck", dir);
  CHECK_EQ_INT(dtr__shard_open(bad, NULL, -1, -1, &s, err, sizeof err), DTR_ERR_NOT_FOUND);
  free(buf);
  free_pieces(pc, NSRC);
}

static void test_bad_writes(const state *st) {
  char path[512], err[512];
  dtr__piece pc[NSRC];
  dtr__shard_params p = params(1);
  /* A tensor whose size is not a whole number of elements: nothing is created. */
  dtr__shard_source odd[1] = {{"odd", 0, DTR_F32, st->w, 10}};
  snprintf(path, sizeof path, "%s/odd.dtck", dir);
  CHECK_EQ_INT(dtr__shard_write(path, odd, 1, &p, pc, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "odd") != NULL);
  CHECK_EQ_INT(file_size(path), -1);
  /* A directory that does not exist: the error names the path and the system's reason. */
  snprintf(path, sizeof path, "%s/no/such/dir/rank_00000.dtck", dir);
  CHECK_EQ_INT(dtr__shard_write(path, st->src, NSRC, &p, pc, err, sizeof err), DTR_ERR_SYSTEM);
  CHECK(strstr(err, path) != NULL && strstr(err, "No such file") != NULL);
  /* A bad level: refused before writing a byte; the partial file is removed. */
  p.level = 1000;
  snprintf(path, sizeof path, "%s/level.dtck", dir);
  CHECK(dtr__shard_write(path, st->src, NSRC, &p, pc, err, sizeof err) != DTR_OK);
  CHECK(strstr(err, "level") != NULL);
  CHECK_EQ_INT(file_size(path), -1);
  /* /dev/full: every write fails with ENOSPC (when the file exists we cannot O_EXCL it: EXISTS). */
  p.level = 1;
  CHECK_EQ_INT(dtr__shard_write("/dev/full", st->src, NSRC, &p, pc, err, sizeof err), DTR_ERR_EXISTS);
  /* A write that fails half-way (the file size limit: EFBIG, as a full disk gives ENOSPC) reports
   * the path and the reason and removes the partial file. In a child, so the limit stays there. */
  snprintf(path, sizeof path, "%s/efbig.dtck", dir);
  pid_t pid = fork();
  if (pid == 0) {
    struct rlimit rl = {.rlim_cur = 20000, .rlim_max = 20000};
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(3);
    dtr__piece pcc[NSRC];
    dtr__shard_params pp = params(2);
    dtr_result r = dtr__shard_write(path, st->src, NSRC, &pp, pcc, err, sizeof err);
    printf("file size limit: %s\n", err);
    fflush(stdout);
    _exit(r == DTR_ERR_SYSTEM && strstr(err, path) && strstr(err, "too large") ? 0 : 1);
  }
  int status = -1;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ_INT(file_size(path), -1);
  /* No sources: a valid, empty shard. */
  snprintf(path, sizeof path, "%s/empty.dtck", dir);
  CHECK(dtr__shard_write(path, NULL, 0, &p, NULL, err, sizeof err) == DTR_OK);
  dtr__shard *s = NULL;
  const dtr__shard_index_entry *ent;
  int n = -1;
  CHECK(dtr__shard_open(path, "job-A", 100, 2, &s, err, sizeof err) == DTR_OK);
  CHECK(s && dtr__shard_index(s, &ent, &n, err, sizeof err) == DTR_OK);
  CHECK_EQ_INT(n, 0);
  dtr__shard_close(s);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/dtrain_test_shard_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  state st;
  make_state(&st);
  test_roundtrip(&st);
  test_corruption(&st);
  test_bad_writes(&st);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  free(st.w);
  free(st.h);
  free(st.ids);
  return TEST_EXIT();
}
