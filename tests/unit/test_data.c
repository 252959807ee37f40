/* The trainer's data: addition problems are right and reproducible, held-out problems never reach
 * training, DP ranks' slices concatenate to the 1-rank batch, a saved position resumes the same stream,
 * text windows are the file's bytes and each epoch visits every window once, and bad files are named. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/model/data.h"
#include "tests/unit/test_util.h"

static dtr_data_config add_cfg(int G, int dp_rank, int dp) {
  dtr_data_config c = {0};
  c.kind = DTR_DATA_ADDITION;
  c.digits = 3;
  c.block_size = 16;
  c.seed = 1337;
  c.global_batch = G;
  c.dp_rank = dp_rank;
  c.dp = dp;
  return c;
}

static int64_t digits_value(const int32_t *t, int n, int reversed) {
  int64_t v = 0;
  for (int i = 0; i < n; i++) v = v * 10 + t[reversed ? n - 1 - i : i];
  return v;
}

static void test_addition(void) {
  char err[512];
  dtr_data *d = NULL;
  dtr_data_config c = add_cfg(64, 0, 1);
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_OK);
  if (!d) return;
  int T = dtr__data_seq_len(d), D = 3;
  CHECK_EQ_INT(T, 11);
  CHECK_EQ_INT(dtr__data_vocab(d), 14);
  int32_t x[64 * 11], y[64 * 11], x2[64 * 11], y2[64 * 11];
  int distinct = 0, steps = 50;
  for (int s = 0; s < steps; s++) {
    CHECK_EQ_INT(dtr__data_batch(d, 0, 64, x, y), DTR_OK);
    for (int b = 0; b < 64; b++) {
      const int32_t *xi = x + b * T, *yi = y + b * T;
      int64_t a = digits_value(xi, D, 0), bb = digits_value(xi + D + 1, D, 0);
      CHECK(xi[D] == DTR_ADD_PLUS && xi[2 * D + 1] == DTR_ADD_EQUALS);
      /* the answer is the targets of the last D+1 positions, least significant digit first */
      int64_t sum = digits_value(yi + 2 * D + 1, D + 1, 1);
      if (sum != a + bb) {
        fprintf(stderr, "step %d sample %d: %lld+%lld gave %lld\n", s, b, (long long)a, (long long)bb,
                (long long)sum);
        test_failures++;
      }
      for (int t = 0; t < 2 * D + 1; t++) CHECK(yi[t] == -1);
      for (int t = 2 * D + 1; t + 1 < T; t++) CHECK(xi[t + 1] == yi[t]); /* teacher forcing */
      CHECK(!dtr__addition_is_heldout(1337, D, a, bb));
      if (b > 0 && memcmp(xi, xi - T, sizeof(int32_t) * T) != 0) distinct++;
    }
    dtr__data_advance(d);
  }
  CHECK(distinct > steps * 60); /* 1e6 problems: repeats within a batch are rare */
  /* pure in (seed, step, j): seek back and read again */
  dtr__data_seek(d, 7);
  CHECK_EQ_INT(dtr__data_batch(d, 0, 64, x, y), DTR_OK);
  dtr__data_seek(d, 0);
  for (int s = 0; s < 7; s++) dtr__data_advance(d);
  CHECK_EQ_INT(dtr__data_pos(d)->step, 7);
  CHECK_EQ_INT(dtr__data_pos(d)->samples, 7 * 64);
  CHECK_EQ_INT(dtr__data_batch(d, 0, 64, x2, y2), DTR_OK);
  CHECK(memcmp(x, x2, sizeof x) == 0 && memcmp(y, y2, sizeof y) == 0);
  /* another seed, another stream */
  dtr_data *e = NULL;
  c.seed = 1338;
  CHECK_EQ_INT(dtr__data_open(&c, &e, err, sizeof err), DTR_OK);
  if (e) {
    dtr__data_seek(e, 7);
    CHECK_EQ_INT(dtr__data_batch(e, 0, 64, x2, y2), DTR_OK);
    CHECK(memcmp(x, x2, sizeof x) != 0);
  }
  dtr__data_close(e);

  /* held-out problems: right, held out, mostly distinct, and about 1/64 of all problems */
  int32_t p[16], ans[16];
  int pl = 0, al = 0, same = 0;
  int64_t prev = -1;
  for (int i = 0; i < 200; i++) {
    CHECK_EQ_INT(dtr__data_eval_problem(d, i, p, &pl, ans, &al), DTR_OK);
    CHECK_EQ_INT(pl, 2 * D + 2);
    CHECK_EQ_INT(al, D + 1);
    int64_t a = digits_value(p, D, 0), bb = digits_value(p + D + 1, D, 0);
    CHECK(p[D] == DTR_ADD_PLUS && p[2 * D + 1] == DTR_ADD_EQUALS);
    CHECK_EQ_INT(digits_value(ans, D + 1, 1), a + bb);
    CHECK(dtr__addition_is_heldout(1337, D, a, bb));
    if (a * 1000 + bb == prev) same++;
    prev = a * 1000 + bb;
  }
  CHECK(same < 5);
  int held = 0;
  for (int a = 0; a < 1000; a += 7)
    for (int b = 0; b < 1000; b += 3) held += dtr__addition_is_heldout(1337, D, a, b);
  int total = ((1000 + 6) / 7) * ((1000 + 2) / 3);
  CHECK(held > total / 64 / 2 && held < total / 64 * 2);
  char buf[64];
  dtr__data_format(d, p, pl, buf, sizeof buf);
  CHECK(strlen(buf) == 8 && buf[3] == '+' && buf[7] == '=');
  dtr__data_close(d);
}

/* DP ranks' slices of a step concatenate to the single rank's batch, and positions resume. */
static void test_sharding_and_resume(dtr_data_kind kind, const char *path) {
  char err[512];
  enum { G = 8 };
  int32_t ref_x[G * 32], ref_y[G * 32], x[G * 32], y[G * 32];
  for (int s = 0; s < 3; s++) {
    for (int dp = 1; dp <= 4; dp *= 2) {
      for (int r = 0; r < dp; r++) {
        dtr_data_config c = add_cfg(G, r, dp);
        c.kind = kind;
        c.path = path;
        c.block_size = kind == DTR_DATA_ADDITION ? 16 : 32;
        dtr_data *d = NULL;
        CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_OK);
        if (!d) return;
        int T = dtr__data_seq_len(d), first = -1, count = -1;
        dtr__data_rank_range(d, &first, &count);
        CHECK_EQ_INT(first, r * G / dp);
        CHECK_EQ_INT(count, G / dp);
        dtr__data_seek(d, 100 + s);
        /* read the slice in two micro-batches when it has two samples or more */
        int half = count / 2 ? count / 2 : count;
        for (int k = 0; k < count; k += half) {
          int n = k + half <= count ? half : count - k;
          CHECK_EQ_INT(dtr__data_batch(d, first + k, n, x + (first + k) * T, y + (first + k) * T), DTR_OK);
        }
        if (dp == 1) {
          memcpy(ref_x, x, sizeof(int32_t) * G * T);
          memcpy(ref_y, y, sizeof(int32_t) * G * T);
        }
        /* a position saved as a blob and loaded into a fresh reader continues the same stream */
        dtr_data_pos saved = *dtr__data_pos(d);
        dtr__data_advance(d);
        int32_t nx[G * 32], ny[G * 32], rx[G * 32], ry[G * 32];
        CHECK_EQ_INT(dtr__data_batch(d, first, count, nx, ny), DTR_OK);
        dtr_data *e = NULL;
        CHECK_EQ_INT(dtr__data_open(&c, &e, err, sizeof err), DTR_OK);
        if (e) {
          *dtr__data_pos(e) = saved;
          CHECK_EQ_INT(dtr__data_resume(e, err, sizeof err), DTR_OK);
          CHECK_EQ_INT(dtr__data_pos(e)->step, 100 + s);
          dtr__data_advance(e);
          CHECK_EQ_INT(dtr__data_batch(e, first, count, rx, ry), DTR_OK);
          CHECK(memcmp(nx, rx, sizeof(int32_t) * count * T) == 0);
          CHECK(memcmp(ny, ry, sizeof(int32_t) * count * T) == 0);
          dtr_data_pos bad = saved;
          bad.magic = 0;
          *dtr__data_pos(e) = bad;
          CHECK_EQ_INT(dtr__data_resume(e, err, sizeof err), DTR_ERR_INVALID);
          CHECK(strstr(err, "data_pos") != NULL);
        }
        dtr__data_close(e);
        dtr__data_close(d);
      }
      int T = kind == DTR_DATA_ADDITION ? 11 : 32;
      CHECK(memcmp(ref_x, x, sizeof(int32_t) * G * T) == 0);
      CHECK(memcmp(ref_y, y, sizeof(int32_t) * G * T) == 0);
    }
  }
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    test_failures++;
    return;
  }
  fwrite(data, 1, n, f);
  fclose(f);
}

static void test_text(const char *dir) {
  char err[512], path[512];
  snprintf(path, sizeof path, "%s/text.txt", dir);
  enum { N = 1000, T = 16 };
  uint8_t bytes[N];
  for (int i = 0; i < N; i++) bytes[i] = (uint8_t)(32 + (i * 7 + i / 13) % 90);
  write_file(path, bytes, N);
  dtr_data_config c = add_cfg(4, 0, 1);
  c.kind = DTR_DATA_TEXT;
  c.path = path;
  c.block_size = T;
  dtr_data *d = NULL;
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_OK);
  if (!d) return;
  CHECK_EQ_INT(dtr__data_seq_len(d), T);
  CHECK_EQ_INT(dtr__data_vocab(d), 256);
  CHECK_EQ_INT(dtr__data_num_tokens(d), N);
  /* every sample is a window of the file, targets shifted by one */
  int32_t x[4 * T], y[4 * T];
  for (int s = 0; s < 20; s++) {
    CHECK_EQ_INT(dtr__data_batch(d, 0, 4, x, y), DTR_OK);
    for (int b = 0; b < 4; b++) {
      int64_t st = dtr__text_window_start(1337, N, T, (int64_t)s * 4 + b);
      CHECK(st >= 0 && st + T < N);
      int ok = 1;
      for (int t = 0; t < T; t++) ok &= x[b * T + t] == bytes[st + t] && y[b * T + t] == bytes[st + t + 1];
      CHECK(ok);
    }
    dtr__data_advance(d);
  }
  /* one epoch visits each of the W windows once: starts are distinct and T apart modulo the shift */
  int64_t W = dtr__text_windows(N, T);
  CHECK_EQ_INT(W, (N - 1) / T);
  for (int e = 0; e < 3; e++) {
    uint8_t seen[(N - 1) / T] = {0};
    int64_t shift = dtr__text_window_start(1337, N, T, e * W) % T;
    for (int64_t i = 0; i < W; i++) {
      int64_t st = dtr__text_window_start(1337, N, T, e * W + i);
      CHECK_EQ_INT(st % T, shift);
      if (st / T < W) seen[st / T]++;
    }
    int once = 0;
    for (int64_t i = 0; i < W; i++) once += seen[i] == 1;
    CHECK_EQ_INT(once, W);
  }
  CHECK_EQ_INT(dtr__data_pos(d)->epoch, 20 * 4 / W);
  dtr__data_close(d);

  /* too short for one sequence */
  write_file(path, "hello", 5);
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, path) && strstr(err, "too short"));
  /* missing file */
  c.path = "/nonexistent/dtrain-data.txt";
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_NOT_FOUND);
  CHECK(strstr(err, "/nonexistent/dtrain-data.txt") != NULL);
}

static void test_tokens(const char *dir) {
  char err[512], path[512];
  snprintf(path, sizeof path, "%s/tokens.bin", dir);
  enum { N = 600 };
  uint8_t raw[2 * N];
  for (int i = 0; i < N; i++) {
    uint16_t v = (uint16_t)((i * 37) % 1000);
    raw[2 * i] = v & 0xff;
    raw[2 * i + 1] = v >> 8;
  }
  write_file(path, raw, sizeof raw);
  dtr_data_config c = add_cfg(2, 1, 2);
  c.kind = DTR_DATA_TOKENS;
  c.path = path;
  c.block_size = 8;
  c.vocab_size = 1000;
  dtr_data *d = NULL;
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_OK);
  if (d) {
    CHECK_EQ_INT(dtr__data_vocab(d), 1000);
    int32_t x[8], y[8];
    CHECK_EQ_INT(dtr__data_batch(d, 1, 1, x, y), DTR_OK);
    int64_t st = dtr__text_window_start(1337, N, 8, 1);
    for (int t = 0; t < 8; t++) CHECK(x[t] == (st + t) * 37 % 1000 && y[t] == (st + t + 1) * 37 % 1000);
    CHECK_EQ_INT(dtr__data_batch(d, 1, 2, x, y), DTR_ERR_INVALID); /* past the global batch */
    char buf[128];
    dtr__data_format(d, x, 2, buf, sizeof buf);
    char want[64];
    snprintf(want, sizeof want, "%d %d", x[0], x[1]);
    CHECK_EQ_STR(buf, want);
  }
  dtr__data_close(d);
  /* an id not below the vocabulary, named with its byte offset */
  c.vocab_size = 999;
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "token 999") && strstr(err, "vocab_size=999") && strstr(err, path));
  /* an odd number of bytes */
  write_file(path, raw, 101);
  c.vocab_size = 1000;
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "101 bytes") != NULL);
}

static void test_bad_config(void) {
  char err[512];
  dtr_data *d = NULL;
  dtr_data_config c = add_cfg(64, 0, 1);
  c.block_size = 10;
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "block_size=10") != NULL);
  c = add_cfg(6, 0, 4);
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "global_batch=6") != NULL);
  c = add_cfg(8, 0, 1);
  c.digits = 0;
  CHECK_EQ_INT(dtr__data_open(&c, &d, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "digits") != NULL);
  CHECK(d == NULL);
}

int main(void) {
  char dir[] = "/tmp/dtrain-test-data-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_addition();
  test_sharding_and_resume(DTR_DATA_ADDITION, NULL);
  char path[600];
  snprintf(path, sizeof path, "%s/shard.txt", dir);
  char text[4000];
  for (int i = 0; i < (int)sizeof text; i++) text[i] = (char)('a' + (i * 31 + i / 7) % 26);
  write_file(path, text, sizeof text);
  test_sharding_and_resume(DTR_DATA_TEXT, path);
  test_text(dir);
  test_tokens(dir);
  test_bad_config();
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return TEST_EXIT();
}
