/* The communicator core on a size-1 communicator (every operation is a local copy the core does
 * itself, no backend involved): argument checks and their messages, every operation and dtype,
 * asynchronous requests in FIFO order, blocking calls queued behind them, self send/recv batches,
 * abort, split, unique store prefixes and the flight recorder. Uses an in-process store server. */
// ctest-timeout: 60
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collectives/comm_internal.h"
#include "tests/unit/test_store_util.h"

static dtr_comm *make(dtr_store *s, const char *name) {
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.name = name;
  dtr_comm *c = NULL;
  char err[512] = "";
  dtr_result rc = dtr_comm_create(s, 0, 1, &cfg, &c, err, sizeof err);
  if (rc) fprintf(stderr, "create %s: %s\n", name, err);
  CHECK_EQ_INT(rc, DTR_OK);
  return c;
}

static void test_create_args(dtr_store *s) {
  dtr_comm_config cfg = dtr_comm_config_default();
  CHECK_EQ_STR(cfg.name, "world");
  CHECK_EQ_INT(cfg.backend, DTR_BACKEND_HOST);
  CHECK_EQ_INT(cfg.cuda_device, -1);
  dtr_comm *c = (dtr_comm *)1;
  char err[512];
  CHECK_EQ_INT(dtr_comm_create(s, 2, 2, &cfg, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(c == NULL);
  CHECK(strstr(err, "rank 2") != NULL);
  CHECK_EQ_INT(dtr_comm_create(s, 0, 0, &cfg, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "size 0") != NULL);
  CHECK_EQ_INT(dtr_comm_create(NULL, 0, 1, &cfg, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "store") != NULL);
  cfg.backend = (dtr_backend)7;
  CHECK_EQ_INT(dtr_comm_create(s, 0, 1, &cfg, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "backend") != NULL);
  cfg = dtr_comm_config_default();
  cfg.name = "has space";
  CHECK_EQ_INT(dtr_comm_create(s, 0, 1, &cfg, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "has space") != NULL);
  cfg = dtr_comm_config_default();
  cfg.timeout_ms = -5;
  CHECK_EQ_INT(dtr_comm_create(s, 0, 1, &cfg, &c, err, sizeof err), DTR_ERR_INVALID);
  if (!strstr(dtr_build_features(), "nccl")) { /* a build without CUDA names what is missing */
    cfg = dtr_comm_config_default();
    cfg.backend = DTR_BACKEND_NCCL;
    CHECK_EQ_INT(dtr_comm_create(s, 0, 1, &cfg, &c, err, sizeof err), DTR_ERR_UNSUPPORTED);
    CHECK(strstr(err, "nccl") != NULL);
  }
  if (!strstr(dtr_build_features(), "mpi")) {
    cfg = dtr_comm_config_default();
    cfg.backend = DTR_BACKEND_MPI;
    CHECK_EQ_INT(dtr_comm_create(NULL, 0, 1, &cfg, &c, err, sizeof err), DTR_ERR_UNSUPPORTED);
    CHECK(strstr(err, "mpi") != NULL);
  }
  /* Enum helpers. */
  dtr_dtype t;
  dtr_redop op;
  dtr_backend b;
  CHECK(dtr_dtype_parse("bf16", &t) == DTR_OK && t == DTR_BF16);
  CHECK(dtr_dtype_parse("float16", &t) == DTR_OK && t == DTR_F16);
  CHECK_EQ_INT(dtr_dtype_parse("f17", &t), DTR_ERR_INVALID);
  CHECK(dtr_redop_parse("prod", &op) == DTR_OK && op == DTR_PROD);
  CHECK_EQ_INT(dtr_redop_parse("mean", &op), DTR_ERR_INVALID);
  CHECK(dtr_backend_parse("mpi", &b) == DTR_OK && b == DTR_BACKEND_MPI);
  CHECK_EQ_INT(dtr_backend_parse("gloo", &b), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_dtype_size(DTR_I64), 8);
  CHECK_EQ_INT(dtr_dtype_size((dtr_dtype)99), 0);
  CHECK_EQ_STR(dtr_dtype_name(DTR_U8), "u8");
  CHECK_EQ_STR(dtr_redop_name(DTR_AVG), "avg");
  CHECK_EQ_STR(dtr_backend_name(DTR_BACKEND_NCCL), "nccl");
  CHECK_EQ_STR(dtr__op_kind_name(DTR__OP_REDUCE_SCATTER), "reduce_scatter");
}

static void test_ops(dtr_comm *c) {
  CHECK_EQ_INT(dtr_comm_rank(c), 0);
  CHECK_EQ_INT(dtr_comm_size(c), 1);
  CHECK_EQ_INT(dtr_comm_backend(c), DTR_BACKEND_HOST);
  for (int t = 0; t < 7; t++) {
    size_t es = dtr_dtype_size((dtr_dtype)t), n = 1001;
    uint8_t *a = malloc(n * es), *b = malloc(n * es);
    for (size_t i = 0; i < n * es; i++) a[i] = (uint8_t)(i * 7 + (size_t)t);
    for (int op = 0; op < 5; op++) {
      memset(b, 0, n * es);
      CHECK_EQ_INT(dtr_all_reduce(c, a, b, n, (dtr_dtype)t, (dtr_redop)op, NULL), DTR_OK);
      CHECK(memcmp(a, b, n * es) == 0);
    }
    memset(b, 0, n * es);
    CHECK_EQ_INT(dtr_reduce_scatter(c, a, b, n, (dtr_dtype)t, DTR_SUM, NULL), DTR_OK);
    CHECK(memcmp(a, b, n * es) == 0);
    memset(b, 0, n * es);
    CHECK_EQ_INT(dtr_all_gather(c, a, b, n, (dtr_dtype)t, NULL), DTR_OK);
    CHECK(memcmp(a, b, n * es) == 0);
    memset(b, 0, n * es);
    CHECK_EQ_INT(dtr_reduce(c, a, b, n, (dtr_dtype)t, DTR_MAX, 0, NULL), DTR_OK);
    CHECK(memcmp(a, b, n * es) == 0);
    memset(b, 0, n * es);
    CHECK_EQ_INT(dtr_all_to_all(c, a, b, n, (dtr_dtype)t, NULL), DTR_OK);
    CHECK(memcmp(a, b, n * es) == 0);
    memcpy(b, a, n * es);
    CHECK_EQ_INT(dtr_broadcast(c, b, n, (dtr_dtype)t, 0, NULL), DTR_OK);
    CHECK(memcmp(a, b, n * es) == 0);
    /* In place. */
    memcpy(b, a, n * es);
    CHECK_EQ_INT(dtr_all_reduce(c, b, b, n, (dtr_dtype)t, DTR_SUM, NULL), DTR_OK);
    CHECK(memcmp(a, b, n * es) == 0);
    free(a);
    free(b);
  }
  CHECK_EQ_INT(dtr_barrier(c, NULL), DTR_OK);
  /* Count 0 with NULL buffers is fine. */
  CHECK_EQ_INT(dtr_all_reduce(c, NULL, NULL, 0, DTR_F32, DTR_SUM, NULL), DTR_OK);
  /* Self send/recv in one batch; a lone send to self is refused rather than hanging. */
  int x[4] = {1, 2, 3, 4}, y[4] = {0};
  dtr_p2p ops[2] = {{.is_send = 0, .peer = 0, .buf = y, .count = 4, .dtype = DTR_I32},
                    {.is_send = 1, .peer = 0, .buf = x, .count = 4, .dtype = DTR_I32}};
  CHECK_EQ_INT(dtr_p2p_batch(c, ops, 2, NULL), DTR_OK);
  CHECK(memcmp(x, y, sizeof x) == 0);
  CHECK_EQ_INT(dtr_send(c, x, 4, DTR_I32, 0, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "never complete") != NULL);
  CHECK_EQ_INT(dtr_p2p_batch(c, NULL, 0, NULL), DTR_OK);
}

static void test_bad_args(dtr_comm *c) {
  float f[4] = {0};
  CHECK_EQ_INT(dtr_all_reduce(c, NULL, f, 4, DTR_F32, DTR_SUM, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "send is NULL") != NULL);
  CHECK(strstr(dtr_comm_last_error(c), "dtr_all_reduce") != NULL);
  CHECK_EQ_INT(dtr_all_gather(c, f, NULL, 4, DTR_F32, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "recv is NULL") != NULL);
  CHECK_EQ_INT(dtr_all_reduce(c, f, f, 4, (dtr_dtype)42, DTR_SUM, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "dtype 42") != NULL);
  CHECK_EQ_INT(dtr_all_reduce(c, f, f, 4, DTR_F32, (dtr_redop)9, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "reduction 9") != NULL);
  CHECK_EQ_INT(dtr_broadcast(c, f, 4, DTR_F32, 1, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "root 1") != NULL);
  CHECK_EQ_INT(dtr_reduce(c, f, NULL, 4, DTR_F32, DTR_SUM, 0, NULL), DTR_ERR_INVALID); /* root needs recv */
  CHECK_EQ_INT(dtr_recv(c, f, 4, DTR_F32, 3, NULL), DTR_ERR_INVALID);
  CHECK(strstr(dtr_comm_last_error(c), "peer 3") != NULL);
  CHECK_EQ_INT(dtr_all_gather(c, f, f, SIZE_MAX / 2, DTR_F32, NULL), DTR_ERR_INVALID);
  dtr_request *r = (dtr_request *)1;
  CHECK_EQ_INT(dtr_all_reduce(c, NULL, f, 4, DTR_F32, DTR_SUM, &r), DTR_ERR_INVALID);
  CHECK(r == NULL);
  CHECK_EQ_INT(dtr_all_reduce(NULL, f, f, 4, DTR_F32, DTR_SUM, NULL), DTR_ERR_INVALID);
  /* ordering after a CUDA stream is an nccl feature; the communicator keeps working after the refusal */
  CHECK_EQ_INT(dtr_comm_set_cuda_stream(c, (void *)1), DTR_ERR_UNSUPPORTED);
  CHECK(strstr(dtr_comm_last_error(c), "only nccl") != NULL);
  CHECK_EQ_INT(dtr_comm_set_cuda_stream(NULL, NULL), DTR_ERR_INVALID);
  f[0] = 3.0f;
  CHECK_EQ_INT(dtr_all_reduce(c, f, f, 1, DTR_F32, DTR_SUM, NULL), DTR_OK);
  CHECK(f[0] == 3.0f);
}

static void test_async(dtr_comm *c) {
  enum { N = 40, LEN = 100000 };
  dtr_request *reqs[N];
  int32_t *src = malloc(sizeof(int32_t) * N * LEN), *dst = calloc((size_t)N * LEN, sizeof(int32_t));
  for (int i = 0; i < N * LEN; i++) src[i] = i;
  for (int i = 0; i < N; i++)
    CHECK_EQ_INT(dtr_all_reduce(c, src + i * LEN, dst + i * LEN, LEN, DTR_I32, DTR_SUM, &reqs[i]), DTR_OK);
  /* A blocking call issued while requests are queued runs after them (FIFO). */
  int32_t one = 5, got = 0;
  CHECK_EQ_INT(dtr_all_reduce(c, &one, &got, 1, DTR_I32, DTR_SUM, NULL), DTR_OK);
  CHECK_EQ_INT(got, 5);
  for (int i = 0; i < N; i++) {
    int done = 0;
    CHECK_EQ_INT(dtr_request_test(reqs[i], &done), DTR_OK);
    CHECK_EQ_INT(done, 1); /* finished before the blocking call returned */
    CHECK_EQ_INT(dtr_request_wait(reqs[i]), DTR_OK);
    CHECK_EQ_INT(dtr_request_wait(reqs[i]), DTR_OK); /* stays valid until freed */
    dtr_request_free(reqs[i]);
  }
  CHECK(memcmp(src, dst, sizeof(int32_t) * N * LEN) == 0);
  /* Free without waiting; a batch copied from a temporary array. */
  dtr_request *r = NULL;
  CHECK_EQ_INT(dtr_barrier(c, &r), DTR_OK);
  dtr_request_free(r);
  int x[3] = {7, 8, 9}, y[3] = {0};
  {
    dtr_p2p ops[2] = {{1, 0, x, 3, DTR_I32}, {0, 0, y, 3, DTR_I32}};
    CHECK_EQ_INT(dtr_p2p_batch(c, ops, 2, &r), DTR_OK);
    memset(ops, 0xff, sizeof ops); /* the core holds its own copy */
  }
  CHECK_EQ_INT(dtr_request_wait(r), DTR_OK);
  dtr_request_free(r);
  CHECK(y[0] == 7 && y[2] == 9);
  dtr_request_free(NULL);
  free(src);
  free(dst);
}

static void test_recorder(dtr_comm *c) {
  char path[] = "/tmp/dtrain_fr_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  dtr_comm_dump_flight_recorder(c, fd);
  lseek(fd, 0, SEEK_SET);
  char buf[32768];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  unlink(path);
  CHECK(n > 0);
  buf[n > 0 ? n : 0] = '\0';
  CHECK(strstr(buf, "flight recorder of communicator") != NULL);
  CHECK(strstr(buf, "all_reduce") != NULL);
  CHECK(strstr(buf, "done") != NULL);
  /* Only the last 64 are kept: count the table's rows. */
  int rows = 0;
  for (char *p = buf; (p = strchr(p, '\n')) != NULL; p++) rows++;
  CHECK_EQ_INT(rows, 2 + 64);
}

static void test_prefix_and_split(dtr_store *s) {
  dtr_comm *a = make(s, "grp"), *b = make(s, "grp");
  if (!a || !b) return;
  CHECK(strcmp(a->prefix, b->prefix) != 0);
  CHECK(strstr(a->prefix, "grp#0/") != NULL);
  CHECK(strstr(b->prefix, "grp#1/") != NULL);
  dtr_comm *child = NULL, *none = (dtr_comm *)1;
  CHECK_EQ_INT(dtr_comm_split(a, 3, 0, &child), DTR_OK);
  CHECK(child != NULL);
  if (child) {
    CHECK_EQ_INT(dtr_comm_size(child), 1);
    CHECK_EQ_STR(child->name, "grp/s0c3");
    CHECK(child->parent == a);
    CHECK(strncmp(child->prefix, a->prefix, strlen(a->prefix)) == 0);
    double v = 2.5, w = 0;
    CHECK_EQ_INT(dtr_all_reduce(child, &v, &w, 1, DTR_F64, DTR_AVG, NULL), DTR_OK);
    CHECK(w == 2.5);
  }
  CHECK_EQ_INT(dtr_comm_split(a, -1, 0, &none), DTR_OK);
  CHECK(none == NULL);
  dtr_comm *c2 = NULL;
  CHECK_EQ_INT(dtr_comm_split(a, 3, 0, &c2), DTR_OK); /* third split of a: generation 2 */
  if (c2) CHECK_EQ_STR(c2->name, "grp/s2c3");
  /* A split waits for queued operations of the parent first. */
  dtr_request *r = NULL;
  int x = 1, y = 0;
  CHECK_EQ_INT(dtr_all_reduce(a, &x, &y, 1, DTR_I32, DTR_SUM, &r), DTR_OK);
  dtr_comm *c3 = NULL;
  CHECK_EQ_INT(dtr_comm_split(a, 0, 0, &c3), DTR_OK);
  int done = 0;
  CHECK_EQ_INT(dtr_request_test(r, &done), DTR_OK);
  CHECK_EQ_INT(done, 1);
  dtr_request_free(r);
  dtr_comm_destroy(c3);
  dtr_comm_destroy(c2);
  dtr_comm_destroy(child);
  dtr_comm_destroy(b);
  dtr_comm_destroy(a);
  dtr_comm_destroy(NULL);
}

static void test_abort(dtr_store *s) {
  dtr_comm *c = make(s, "aborting");
  if (!c) return;
  int x = 1, y = 0;
  dtr_request *r = NULL;
  CHECK_EQ_INT(dtr_all_reduce(c, &x, &y, 1, DTR_I32, DTR_SUM, NULL), DTR_OK);
  dtr_comm_abort(c);
  CHECK_EQ_INT(dtr_all_reduce(c, &x, &y, 1, DTR_I32, DTR_SUM, NULL), DTR_ERR_ABORTED);
  CHECK(strstr(dtr_comm_last_error(c), "dtr_comm_abort") != NULL);
  CHECK_EQ_INT(dtr_barrier(c, &r), DTR_ERR_ABORTED);
  CHECK(r == NULL);
  dtr_comm *child = NULL;
  CHECK_EQ_INT(dtr_comm_split(c, 0, 0, &child), DTR_ERR_ABORTED);
  dtr_comm_destroy(c);

  /* Requests queued before the abort that have not run yet fail with DTR_ERR_ABORTED; a request
   * outlives its communicator. */
  c = make(s, "aborting");
  if (!c) return;
  enum { N = 64, LEN = 1 << 18 };
  float *buf = calloc((size_t)N * LEN, sizeof(float));
  dtr_request *reqs[N];
  for (int i = 0; i < N; i++)
    CHECK_EQ_INT(
        dtr_all_reduce(c, buf + (size_t)i * LEN, buf + (size_t)i * LEN, LEN, DTR_F32, DTR_SUM, &reqs[i]),
        DTR_OK);
  dtr_comm_abort(c);
  int ok = 0, aborted = 0;
  for (int i = 0; i < N; i++) {
    dtr_result rc = dtr_request_wait(reqs[i]);
    if (rc == DTR_OK) ok++;
    if (rc == DTR_ERR_ABORTED) aborted++;
  }
  CHECK_EQ_INT(ok + aborted, N);
  dtr_comm_destroy(c);
  for (int i = 0; i < N; i++) {
    int done = 0;
    dtr_request_test(reqs[i], &done);
    CHECK_EQ_INT(done, 1);
    dtr_request_free(reqs[i]);
  }
  printf("abort: %d of %d queued requests had run, %d aborted\n", ok, N, aborted);
  free(buf);
}

int main(void) {
  int port;
  dtr_store_server *srv = start_server(&port);
  dtr_store *s = connect_ok(port);
  test_create_args(s);
  dtr_comm *c = make(s, "world");
  if (c) {
    test_ops(c);
    test_bad_args(c);
    test_async(c);
    test_recorder(c);
    dtr_comm_destroy(c);
  }
  test_prefix_and_split(s);
  test_abort(s);
  dtr_store_close(s);
  dtr_store_server_destroy(srv);
  return TEST_EXIT();
}
