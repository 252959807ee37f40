/* The store under load: atomic add from several threads (exact final count), and 1000+ connections
 * open at once, each authenticated and served, while the server stays responsive. */
// ctest-timeout: 120
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tests/unit/test_store_util.h"

static int g_port;

enum { ADD_THREADS = 8, ADDS_PER_THREAD = 500, NCONN = 1100 };

static void *adder(void *arg) {
  int *failures = arg;
  dtr_store *c = connect_ok(g_port);
  for (int i = 0; i < ADDS_PER_THREAD; i++)
    if (dtr_store_add(c, "count", 1, NULL) != DTR_OK) __atomic_add_fetch(failures, 1, __ATOMIC_RELAXED);
  dtr_store_close(c);
  return NULL;
}

static void test_add_concurrent(void) {
  int failures = 0;
  pthread_t t[ADD_THREADS];
  for (int i = 0; i < ADD_THREADS; i++) pthread_create(&t[i], NULL, adder, &failures);
  for (int i = 0; i < ADD_THREADS; i++) pthread_join(t[i], NULL);
  CHECK_EQ_INT(failures, 0);
  dtr_store *c = connect_ok(g_port);
  int64_t v = -1;
  CHECK_EQ_INT(dtr_store_add(c, "count", 0, &v), DTR_OK);
  CHECK_EQ_INT(v, ADD_THREADS * ADDS_PER_THREAD);
  dtr_store_close(c);
}

/* Park a get on every connection via raw frames, so all of them are live in the server at once. */
static void test_many_connections(dtr_store_server *s) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl); /* the server raised the soft limit to the hard one */
  if (rl.rlim_cur < 2 * NCONN + 64) {
    fprintf(stderr, "RLIMIT_NOFILE %llu is below the %d descriptors this test needs\n",
            (unsigned long long)rl.rlim_cur, 2 * NCONN + 64);
    CHECK(0);
    return;
  }
  uint64_t accepted0 = stats_of(s).accepted;
  dtr_store **cs = calloc(NCONN, sizeof *cs);
  int64_t t0 = dtr__now_ms();
  int opened = 0;
  char err[256];
  for (int i = 0; i < NCONN && dtr__now_ms() - t0 < 30000; i++) {
    if (dtr_store_connect("127.0.0.1", g_port, TOKEN, 5000, &cs[i], err, sizeof err) != DTR_OK) {
      fprintf(stderr, "connection %d: %s\n", i, err);
      break;
    }
    opened++;
  }
  CHECK_EQ_INT(opened, NCONN);
  CHECK(stats_of(s).accepted - accepted0 >= (uint64_t)NCONN);
  /* Every connection is live: each one writes its own key, then reads a neighbour's. */
  int bad = 0;
  for (int i = 0; i < opened; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "many/%d", i);
    int n = snprintf(v, sizeof v, "v%d", i);
    if (dtr_store_set(cs[i], k, v, (size_t)n) != DTR_OK) bad++;
  }
  for (int i = 0; i < opened; i++) {
    char k[32], want[32];
    int j = (i + 1) % opened;
    snprintf(k, sizeof k, "many/%d", j);
    snprintf(want, sizeof want, "v%d", j);
    void *got = NULL;
    size_t n;
    if (dtr_store_get(cs[i], k, 1000, &got, &n) != DTR_OK || strcmp(got, want) != 0) bad++;
    free(got);
  }
  CHECK_EQ_INT(bad, 0);
  char **keys;
  int nk = 0;
  CHECK_EQ_INT(dtr_store_list(cs[0], "many/", &keys, &nk), DTR_OK);
  CHECK_EQ_INT(nk, opened);
  dtr_store_free_list(keys, nk);
  for (int i = 0; i < opened; i++) dtr_store_close(cs[i]);
  free(cs);
  fprintf(stderr, "%d connections opened and served in %lld ms\n", opened, (long long)(dtr__now_ms() - t0));
}

/* Many parked waiters at once, all released by one set. */
typedef struct parked {
  int ok;
} parked;

static void *park_get(void *arg) {
  parked *p = arg;
  dtr_store *c = connect_ok(g_port);
  void *v = NULL;
  size_t n;
  p->ok = dtr_store_get(c, "release", 10000, &v, &n) == DTR_OK && strcmp(v, "go") == 0;
  free(v);
  dtr_store_close(c);
  return NULL;
}

static void test_many_waiters(void) {
  enum { W = 64 };
  pthread_t t[W];
  parked p[W];
  memset(p, 0, sizeof p);
  for (int i = 0; i < W; i++) pthread_create(&t[i], NULL, park_get, &p[i]);
  sleep_ms(300);
  dtr_store *c = connect_ok(g_port);
  CHECK_EQ_INT(dtr_store_set(c, "release", "go", 2), DTR_OK);
  dtr_store_close(c);
  int ok = 0;
  for (int i = 0; i < W; i++) {
    pthread_join(t[i], NULL);
    ok += p[i].ok;
  }
  CHECK_EQ_INT(ok, W);
}

int main(void) {
  dtr_store_server *s = start_server(&g_port);
  test_add_concurrent();
  test_many_connections(s);
  test_many_waiters();
  CHECK_EQ_INT(stats_of(s).protocol_errors, 0);
  dtr_store_server_destroy(s);
  return TEST_EXIT();
}
