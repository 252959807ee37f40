/* The store's blocking calls: a get woken by a set from another thread, get and wait timeouts (within
 * a stated tolerance), wait on several keys, abort from another thread, and barriers over threads. */
// ctest-timeout: 60
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/test_store_util.h"

static int g_port;

typedef struct setter {
  int delay_ms;
  const char *keys[4];
  int nkeys;
} setter;

static void *set_later(void *arg) {
  setter *st = arg;
  dtr_store *c = connect_ok(g_port);
  for (int i = 0; i < st->nkeys; i++) {
    sleep_ms(st->delay_ms);
    if (dtr_store_set(c, st->keys[i], "woke", 4) != DTR_OK) fprintf(stderr, "setter failed\n");
  }
  dtr_store_close(c);
  return NULL;
}

static void test_get_woken(dtr_store *c) {
  setter st = {.delay_ms = 200, .keys = {"late"}, .nkeys = 1};
  pthread_t t;
  pthread_create(&t, NULL, set_later, &st);
  int64_t t0 = dtr__now_ms();
  void *v = NULL;
  size_t n = 0;
  CHECK_EQ_INT(dtr_store_get(c, "late", 5000, &v, &n), DTR_OK);
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt >= 150 && dt < 2000);
  CHECK_EQ_STR((char *)v, "woke");
  free(v);
  pthread_join(t, NULL);
}

static void test_get_timeout(dtr_store *c) {
  int64_t t0 = dtr__now_ms();
  void *v = (void *)1;
  size_t n;
  CHECK_EQ_INT(dtr_store_get(c, "never", 300, &v, &n), DTR_ERR_TIMEOUT);
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt >= 290 && dt < 800); /* tolerance: -10 ms / +500 ms */
  CHECK(v == NULL);
  const char *e = dtr_store_last_error(c);
  CHECK(strstr(e, "never") != NULL && strstr(e, "300 ms") != NULL);
  /* The server answered the timeout itself, so the connection is still in step. */
  CHECK_EQ_INT(dtr_store_set(c, "after-timeout", "1", 1), DTR_OK);
  CHECK_EQ_INT(dtr_store_get(c, "after-timeout", 0, &v, &n), DTR_OK);
  free(v);
}

static void test_wait_many(dtr_store *c) {
  setter st = {.delay_ms = 80, .keys = {"w/1", "w/2", "w/3"}, .nkeys = 3};
  pthread_t t;
  pthread_create(&t, NULL, set_later, &st);
  const char *keys[] = {"w/1", "w/2", "w/3", "w/1"}; /* a duplicate is harmless */
  int64_t t0 = dtr__now_ms();
  CHECK_EQ_INT(dtr_store_wait(c, keys, 4, 5000), DTR_OK);
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt >= 200 && dt < 3000); /* the third key arrives after ~240 ms */
  pthread_join(t, NULL);
  const char *some_missing[] = {"w/1", "w/missing"};
  t0 = dtr__now_ms();
  CHECK_EQ_INT(dtr_store_wait(c, some_missing, 2, 200), DTR_ERR_TIMEOUT);
  dt = dtr__now_ms() - t0;
  CHECK(dt >= 190 && dt < 700);
  CHECK(strstr(dtr_store_last_error(c), "w/1") != NULL);
}

typedef struct aborter {
  dtr_store *c;
  int delay_ms;
} aborter;

static void *abort_later(void *arg) {
  aborter *a = arg;
  sleep_ms(a->delay_ms);
  dtr_store_abort(a->c);
  return NULL;
}

static void test_abort(void) {
  dtr_store *c = connect_ok(g_port);
  aborter a = {c, 200};
  pthread_t t;
  pthread_create(&t, NULL, abort_later, &a);
  int64_t t0 = dtr__now_ms();
  void *v;
  size_t n;
  CHECK_EQ_INT(dtr_store_get(c, "forever", -1, &v, &n), DTR_ERR_ABORTED);
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt >= 190 && dt < 200 + 400); /* abort is honoured within 100 ms (+ scheduling slack) */
  pthread_join(t, NULL);
  CHECK_EQ_INT(dtr_store_set(c, "x", "1", 1), DTR_ERR_ABORTED); /* every later call too */
  dtr_store_close(c);
}

/* A client that disconnects while parked must leave the server clean and serving. */
static void test_parked_disconnect(dtr_store *c) {
  int fd = raw_connect(g_port);
  CHECK(fd >= 0 && raw_hello(fd, TOKEN) == 0);
  dtr__sp_buf b = {0};
  const char *k = "parked/key";
  size_t kl = strlen(k);
  CHECK_EQ_INT(dtr__sp_encode_request(&b, DTR__SP_GET, 0, -1, 0, 1, &k, &kl, 0, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(raw_send(fd, b.p, b.len), 0);
  dtr__sp_buf_free(&b);
  sleep_ms(50);
  close(fd);
  sleep_ms(50);
  CHECK_EQ_INT(dtr_store_set(c, k, "v", 1), DTR_OK);
  void *v;
  size_t n;
  CHECK_EQ_INT(dtr_store_get(c, k, 100, &v, &n), DTR_OK);
  free(v);
}

/* Read n response frames from a raw socket; returns how many parsed, statuses (and the first item of
 * each, if any, up to 15 bytes) in order. */
static int raw_read_responses(int fd, int n, int *status, char (*item)[16]) {
  static uint8_t buf[1 << 16];
  size_t have = 0;
  int got = 0;
  int64_t end = dtr__now_ms() + 5000;
  while (got < n && dtr__now_ms() < end) {
    ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
    if (r <= 0) break;
    have += (size_t)r;
    size_t off = 0;
    while (got < n && have - off >= 4) {
      uint32_t flen = dtr__sp_get_u32(buf + off);
      if (have - off - 4 < flen) break;
      dtr__sp_response resp;
      char err[128];
      if (dtr__sp_parse_response(buf + off + 4, flen, &resp, err, sizeof err)) return got;
      status[got] = resp.status;
      item[got][0] = 0;
      if (resp.nitems) {
        const uint8_t *cur = resp.items;
        dtr__sp_bytes b = dtr__sp_next_item(&cur);
        snprintf(item[got], 16, "%.*s", (int)(b.len < 15 ? b.len : 15), (const char *)b.p);
      }
      got++;
      off += 4 + flen;
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  return got;
}

/* Requests pipelined behind a parked GET wait their turn; replies keep request order; a long
 * pipeline (more than one loop turn's worth) is served completely. */
static void test_pipelining(dtr_store *c) {
  int fd = raw_connect(g_port);
  CHECK(fd >= 0 && raw_hello(fd, TOKEN) == 0);
  dtr__sp_buf b = {0};
  const char *k1 = "pipe/parked", *k2 = "pipe/after";
  size_t l1 = strlen(k1), l2 = strlen(k2);
  const void *v[] = {"second"};
  size_t vl[] = {6};
  CHECK_EQ_INT(dtr__sp_encode_request(&b, DTR__SP_GET, 0, 3000, 0, 1, &k1, &l1, 0, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(dtr__sp_encode_request(&b, DTR__SP_SET, 0, 0, 0, 1, &k2, &l2, 1, v, vl), DTR_OK);
  CHECK_EQ_INT(dtr__sp_encode_request(&b, DTR__SP_TRY_GET, 0, 0, 0, 1, &k2, &l2, 0, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(raw_send(fd, b.p, b.len), 0);
  sleep_ms(100);
  void *val;
  size_t n;
  /* The SET behind the parked GET has not run yet. */
  CHECK_EQ_INT(dtr_store_try_get(c, k2, &val, &n), DTR_ERR_NOT_FOUND);
  CHECK_EQ_INT(dtr_store_set(c, k1, "first", 5), DTR_OK);
  int st[3];
  char items[3][16];
  CHECK_EQ_INT(raw_read_responses(fd, 3, st, items), 3);
  CHECK(st[0] == DTR_OK && strcmp(items[0], "first") == 0);
  CHECK_EQ_INT(st[1], DTR_OK);
  CHECK(st[2] == DTR_OK && strcmp(items[2], "second") == 0);
  /* 300 adds in one write. */
  enum { NP = 300 };
  b.len = 0;
  const char *ck = "pipe/count";
  size_t cl = strlen(ck);
  for (int i = 0; i < NP; i++)
    CHECK_EQ_INT(dtr__sp_encode_request(&b, DTR__SP_ADD, 0, 0, 1, 1, &ck, &cl, 0, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(raw_send(fd, b.p, b.len), 0);
  static int sts[NP];
  static char its[NP][16];
  CHECK_EQ_INT(raw_read_responses(fd, NP, sts, its), NP);
  int64_t total = 0;
  CHECK_EQ_INT(dtr_store_add(c, ck, 0, &total), DTR_OK);
  CHECK_EQ_INT(total, NP);
  dtr__sp_buf_free(&b);
  close(fd);
}

typedef struct barrier_arg {
  int rounds, world, failures;
} barrier_arg;

static void *barrier_thread(void *arg) {
  barrier_arg *b = arg;
  dtr_store *c = connect_ok(g_port);
  for (int r = 0; r < b->rounds; r++) {
    char name[32];
    snprintf(name, sizeof name, "round-%d", r);
    if (dtr_store_barrier(c, name, b->world, 5000) != DTR_OK) {
      fprintf(stderr, "barrier %s: %s\n", name, dtr_store_last_error(c));
      __atomic_add_fetch(&b->failures, 1, __ATOMIC_RELAXED);
    }
  }
  dtr_store_close(c);
  return NULL;
}

static void test_barrier(void) {
  enum { W = 4 };
  barrier_arg b = {.rounds = 5, .world = W};
  pthread_t t[W];
  for (int i = 0; i < W; i++) pthread_create(&t[i], NULL, barrier_thread, &b);
  for (int i = 0; i < W; i++) pthread_join(t[i], NULL);
  CHECK_EQ_INT(b.failures, 0);
  /* A barrier that never fills times out naming itself. */
  dtr_store *c = connect_ok(g_port);
  CHECK_EQ_INT(dtr_store_barrier(c, "short", 2, 150), DTR_ERR_TIMEOUT);
  CHECK(strstr(dtr_store_last_error(c), "short") != NULL);
  dtr_store_close(c);
}

int main(void) {
  dtr_store_server *s = start_server(&g_port);
  dtr_store *c = connect_ok(g_port);
  test_get_woken(c);
  test_get_timeout(c);
  test_wait_many(c);
  test_abort();
  test_parked_disconnect(c);
  test_pipelining(c);
  test_barrier();
  dtr_store_close(c);
  CHECK_EQ_INT(stats_of(s).protocol_errors, 0);
  dtr_store_server_destroy(s);
  return TEST_EXIT();
}
