/* The communicator core with several ranks in one process (one thread and one store client per rank,
 * host backend): split membership and ordering, debug-mode mismatch detection, a deadline that
 * expires (the communicator aborts, names itself and dumps its flight recorder), async requests
 * mixed with blocking calls. The host backend's own correctness is tested elsewhere. */
// ctest-timeout: 90
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/comm_internal.h"
#include "tests/unit/test_store_util.h"

#define NR 4

static int g_port;
typedef struct rank_ctx {
  int rank;
  dtr_store *store;
  void (*body)(struct rank_ctx *);
  const char *name;
  int timeout_ms;
  /* results */
  dtr_result rc[8];
  char err[8][1024];
  int ival[8];
} rank_ctx;

static pthread_mutex_t check_mu = PTHREAD_MUTEX_INITIALIZER;
#define TCHECK(cond)                 \
  do {                               \
    pthread_mutex_lock(&check_mu);   \
    CHECK(cond);                     \
    pthread_mutex_unlock(&check_mu); \
  } while (0)

static dtr_comm *create(rank_ctx *x) {
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.name = x->name;
  cfg.timeout_ms = x->timeout_ms;
  dtr_comm *c = NULL;
  char err[1024];
  dtr_result rc = dtr_comm_create(x->store, x->rank, NR, &cfg, &c, err, sizeof err);
  if (rc) fprintf(stderr, "rank %d: create: %s\n", x->rank, err);
  TCHECK(rc == DTR_OK);
  return c;
}

static void *thread_main(void *arg) {
  rank_ctx *x = arg;
  x->store = connect_ok(g_port);
  x->body(x);
  dtr_store_close(x->store);
  return NULL;
}

static void run_ranks(void (*body)(rank_ctx *), const char *name, int timeout_ms, rank_ctx *ctx) {
  pthread_t th[NR];
  for (int r = 0; r < NR; r++) {
    memset(&ctx[r], 0, sizeof ctx[r]);
    ctx[r].rank = r;
    ctx[r].body = body;
    ctx[r].name = name;
    ctx[r].timeout_ms = timeout_ms;
    pthread_create(&th[r], NULL, thread_main, &ctx[r]);
  }
  for (int r = 0; r < NR; r++) pthread_join(th[r], NULL);
}

/* ---- basic + async */
static void body_basic(rank_ctx *x) {
  dtr_comm *c = create(x);
  if (!c) return;
  int32_t v = x->rank + 1, s = 0;
  x->rc[0] = dtr_all_reduce(c, &v, &s, 1, DTR_I32, DTR_SUM, NULL);
  x->ival[0] = s;
  enum { K = 8 };
  dtr_request *r[K];
  int32_t in[K], out[K];
  for (int i = 0; i < K; i++) {
    in[i] = x->rank * 100 + i;
    dtr_all_reduce(c, &in[i], &out[i], 1, DTR_I32, DTR_MAX, &r[i]);
  }
  int32_t b = x->rank == 2 ? 77 : 0;
  x->rc[1] = dtr_broadcast(c, &b, 1, DTR_I32, 2, NULL); /* queued behind the requests */
  x->ival[1] = b;
  int ok = 1;
  for (int i = 0; i < K; i++) {
    ok = ok && dtr_request_wait(r[i]) == DTR_OK && out[i] == (NR - 1) * 100 + i;
    dtr_request_free(r[i]);
  }
  x->ival[2] = ok;
  dtr_comm_destroy(c);
}

static void test_basic(void) {
  rank_ctx ctx[NR];
  run_ranks(body_basic, "basic", 20000, ctx);
  for (int r = 0; r < NR; r++) {
    CHECK_EQ_INT(ctx[r].rc[0], DTR_OK);
    CHECK_EQ_INT(ctx[r].ival[0], NR * (NR + 1) / 2);
    CHECK_EQ_INT(ctx[r].rc[1], DTR_OK);
    CHECK_EQ_INT(ctx[r].ival[1], 77);
    CHECK_EQ_INT(ctx[r].ival[2], 1);
  }
}

/* ---- split: colors by parity, keys reversed; rank 0 sits out of a second split */
static void body_split(rank_ctx *x) {
  dtr_comm *c = create(x);
  if (!c) return;
  dtr_comm *child = NULL, *child2 = NULL;
  x->rc[0] = dtr_comm_split(c, x->rank % 2, -x->rank, &child);
  if (child) {
    x->ival[0] = dtr_comm_rank(child);
    x->ival[1] = dtr_comm_size(child);
    x->ival[2] = child->world_ranks[0];
    snprintf(x->err[0], sizeof x->err[0], "%s|%s", child->name, child->prefix);
    int32_t v = x->rank, s = -1;
    x->rc[1] = dtr_all_reduce(child, &v, &s, 1, DTR_I32, DTR_SUM, NULL);
    x->ival[3] = s;
  }
  x->rc[2] = dtr_comm_split(c, x->rank == 0 ? -1 : 5, 0, &child2);
  x->ival[4] = child2 ? dtr_comm_size(child2) : 0;
  x->ival[5] = child2 ? dtr_comm_rank(child2) : -1;
  /* the parent still works after splitting */
  int32_t v = 1, s = 0;
  x->rc[3] = dtr_all_reduce(c, &v, &s, 1, DTR_I32, DTR_SUM, NULL);
  x->ival[6] = s;
  dtr_comm_destroy(child2);
  dtr_comm_destroy(child);
  dtr_comm_destroy(c);
}

static void test_split(void) {
  rank_ctx ctx[NR];
  run_ranks(body_split, "splitme", 20000, ctx);
  for (int r = 0; r < NR; r++) {
    CHECK_EQ_INT(ctx[r].rc[0], DTR_OK);
    CHECK_EQ_INT(ctx[r].ival[1], NR / 2);
    /* keys are -rank: the highest parent rank of each color comes first */
    int members = NR / 2, pos = 0;
    for (int q = NR - 1; q >= 0; q--)
      if (q % 2 == r % 2) {
        if (q == r) break;
        pos++;
      }
    CHECK_EQ_INT(ctx[r].ival[0], pos);
    CHECK_EQ_INT(ctx[r].ival[2], (NR - 1) - ((NR - 1) % 2 != r % 2)); /* world rank of child rank 0 */
    CHECK_EQ_INT(ctx[r].rc[1], DTR_OK);
    int sum = 0;
    for (int q = 0; q < NR; q++)
      if (q % 2 == r % 2) sum += q;
    CHECK_EQ_INT(ctx[r].ival[3], sum);
    CHECK(strstr(ctx[r].err[0], r % 2 ? "splitme/s0c1|" : "splitme/s0c0|") == ctx[r].err[0]);
    CHECK(strcmp(ctx[r].err[0], ctx[(r + 2) % NR].err[0]) == 0); /* same name and prefix on every member */
    CHECK_EQ_INT(ctx[r].rc[2], DTR_OK);
    CHECK_EQ_INT(ctx[r].ival[4], r == 0 ? 0 : NR - 1);
    CHECK_EQ_INT(ctx[r].ival[5], r - 1);
    CHECK_EQ_INT(ctx[r].rc[3], DTR_OK);
    CHECK_EQ_INT(ctx[r].ival[6], NR);
    (void)members;
  }
}

/* ---- debug mode: rank 1 issues a different count */
static void body_debug(rank_ctx *x) {
  dtr_comm *c = create(x);
  if (!c) return;
  x->ival[0] = c->debug;
  float a[8] = {0}, b[8];
  x->rc[0] = dtr_all_reduce(c, a, b, 8, DTR_F32, DTR_SUM, NULL);
  x->rc[1] = dtr_all_reduce(c, a, b, x->rank == 1 ? 4 : 8, DTR_F32, DTR_SUM, NULL);
  snprintf(x->err[1], sizeof x->err[1], "%s", dtr_comm_last_error(c));
  dtr_comm_destroy(c);
}

static void test_debug(void) {
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", g_port);
  setenv("DTRAIN_STORE", addr, 1);
  setenv("DTRAIN_JOB_TOKEN", TOKEN, 1);
  setenv("DTRAIN_COMM_DEBUG", "1", 1);
  rank_ctx ctx[NR];
  run_ranks(body_debug, "dbg", 20000, ctx);
  unsetenv("DTRAIN_COMM_DEBUG");
  for (int r = 0; r < NR; r++) {
    CHECK_EQ_INT(ctx[r].ival[0], 1);
    CHECK_EQ_INT(ctx[r].rc[0], DTR_OK);
    CHECK_EQ_INT(ctx[r].rc[1], DTR_ERR_INVALID);
    CHECK(strstr(ctx[r].err[1], "rank 0 issued \"seq 1 all_reduce count 8 f32 sum root -1\"") != NULL);
    CHECK(strstr(ctx[r].err[1], "rank 1 issued \"seq 1 all_reduce count 4") != NULL);
  }
  printf("debug mismatch message: %s\n", ctx[0].err[1]);
}

/* ---- deadline: rank 0 never joins the second all-reduce (the flight recorder lands on stderr) */
static void body_timeout(rank_ctx *x) {
  dtr_comm *c = create(x);
  if (!c) return;
  int32_t v = 1, s = 0;
  x->rc[0] = dtr_all_reduce(c, &v, &s, 1, DTR_I32, DTR_SUM, NULL);
  if (x->rank != 0) {
    int64_t t0 = dtr__now_ms();
    x->rc[1] = dtr_all_reduce(c, &v, &s, 1, DTR_I32, DTR_SUM, NULL);
    x->ival[0] = (int)(dtr__now_ms() - t0);
    snprintf(x->err[1], sizeof x->err[1], "%s", dtr_comm_last_error(c));
    x->rc[2] = dtr_barrier(c, NULL);
    dtr_request *r = NULL;
    x->rc[3] = dtr_all_reduce(c, &v, &s, 1, DTR_I32, DTR_SUM, &r);
    dtr_request_free(r);
  } else {
    sleep_ms(1500); /* alive but absent: the others must time out, not see a departure */
  }
  dtr_comm_destroy(c);
}

static void test_timeout(void) {
  rank_ctx ctx[NR];
  run_ranks(body_timeout, "late", 500, ctx);
  for (int r = 1; r < NR; r++) {
    CHECK_EQ_INT(ctx[r].rc[0], DTR_OK);
    CHECK_EQ_INT(ctx[r].rc[1], DTR_ERR_TIMEOUT);
    CHECK(ctx[r].ival[0] >= 450 && ctx[r].ival[0] < 5000);
    CHECK(strstr(ctx[r].err[1], "(communicator late, op all_reduce seq 1)") != NULL);
    CHECK_EQ_INT(ctx[r].rc[2], DTR_ERR_ABORTED);
    CHECK_EQ_INT(ctx[r].rc[3], DTR_ERR_ABORTED);
  }
  printf("timeout message: %s\n", ctx[1].err[1]);
}

int main(void) {
  dtr_store_server *srv = start_server(&g_port);
  test_basic();
  test_split();
  test_debug();
  test_timeout();
  dtr_store_server_destroy(srv);
  return TEST_EXIT();
}
