/* coll_fault — communicator failure paths, run as each rank under `dtrain launch` (host backend):
 *   coll_fault deadline    rank size-1 never calls the all-reduce (sleeps, exits 0); the others must get
 *                          DTR_ERR_TIMEOUT after about the comm timeout (--timeout-ms, default 1500), with
 *                          an error text naming the missing rank, and DTR_ERR_ABORTED afterwards
 *   coll_fault deadline-large  the same with a 256 KiB all-reduce (hierarchical on fake nodes: ranks
 *                          of other nodes wait on their rail peer, and must still name the missing rank)
 *   coll_fault peer-exit   rank 1 _exit(0)s in the middle of a series of large all-reduces; the others
 *                          must fail (timeout or connection error) naming rank 1 within the deadline
 *   coll_fault abort       rank 0 blocks in an all-reduce nobody else joins (timeout 60 s); another
 *                          thread's dtr_comm_abort must unblock it with DTR_ERR_ABORTED at once
 *   coll_fault mismatch    with DTRAIN_COMM_DEBUG=1: rank 0 reduces 1024 elements, the others 1000;
 *                          every rank must get DTR_ERR_INVALID naming both counts
 *   coll_fault create      create the communicator, one all-reduce checked, destroy (a plain job: with
 *                          DTRAIN_HOST_TEST_CRASH set, rank 0 dies inside the create instead)
 * Each rank prints "coll_fault rank R: MODE ok ..." or "... FAILED: why" and exits 0 or 1, so the
 * launcher's exit status is the verdict. A time limit bounds every run to 60 s. */
#define _GNU_SOURCE
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/comm.h"
#include "dtrain/store.h"
#include "tests/helpers/time_limit.h"

static int g_rank;
static const char *g_mode;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int verdict_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int verdict_fail(const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("coll_fault rank %d: %s FAILED: %s\n", g_rank, g_mode, msg);
  fflush(stdout);
  return 1;
}

static int verdict_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int verdict_ok(const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("coll_fault rank %d: %s ok: %s\n", g_rank, g_mode, msg);
  fflush(stdout);
  return 0;
}

/* Does text mention `rank` as a whole number, and the word rank at all? */
static int names_rank(const char *text, int rank) {
  char pat[64];
  snprintf(pat, sizeof pat, "(^|[^0-9])%d([^0-9]|$)", rank);
  regex_t re;
  if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) != 0) return 0;
  int hit = regexec(&re, text, 0, NULL, 0) == 0;
  regfree(&re);
  return hit && strcasestr(text, "rank") != NULL;
}

static int names_number(const char *text, long v) {
  char pat[64];
  snprintf(pat, sizeof pat, "(^|[^0-9])%ld([^0-9]|$)", v);
  regex_t re;
  if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) != 0) return 0;
  int hit = regexec(&re, text, 0, NULL, 0) == 0;
  regfree(&re);
  return hit;
}

/* ---- deadline: the last rank never arrives */
static int mode_deadline(dtr_comm *c, int rank, int size, int timeout_ms, size_t count) {
  int missing = size - 1;
  if (rank == missing) {
    sleep_ms(timeout_ms + 4000); /* well past the others' verdicts */
    return verdict_ok("stayed away for %d ms", timeout_ms + 4000);
  }
  static float buf[1 << 16];
  if (count > sizeof buf / sizeof buf[0]) return verdict_fail("count %zu too large", count);
  double t0 = now_ms();
  dtr_result rc = dtr_all_reduce(c, buf, buf, count, DTR_F32, DTR_SUM, NULL);
  double el = now_ms() - t0;
  char e[1024];
  snprintf(e, sizeof e, "%s", dtr_comm_last_error(c)); /* the next operation overwrites it */
  if (rc != DTR_ERR_TIMEOUT)
    return verdict_fail("all_reduce returned %s, expected a timeout (%s)", dtr_strerror(rc), e);
  if (el < timeout_ms - 100 || el > timeout_ms + 3500)
    return verdict_fail("timed out after %.0f ms; the deadline was %d ms", el, timeout_ms);
  if (!names_rank(e, missing))
    return verdict_fail("the error does not name missing rank %d: '%s'", missing, e);
  /* the communicator is aborted now: a later operation fails at once */
  double t1 = now_ms();
  rc = dtr_all_reduce(c, buf, buf, count, DTR_F32, DTR_SUM, NULL);
  if (rc != DTR_ERR_ABORTED)
    return verdict_fail("the operation after the timeout returned %s, expected aborted", dtr_strerror(rc));
  if (now_ms() - t1 > 1000)
    return verdict_fail("the operation after the timeout took %.0f ms", now_ms() - t1);
  int v = verdict_ok("timeout after %.0f ms naming rank %d: %s", el, missing, e);
  /* Stay until the other waiting ranks have reached their own deadlines (they started within a few ms
   * of us, and the missing rank stays longer still): exiting now would close our connections, and a
   * rank a few ms behind would fail on that instead of timing out. */
  sleep_ms(2000);
  return v;
}

/* ---- peer-exit: rank 1 leaves in the middle of a large all-reduce */
static int mode_peer_exit(dtr_comm *c, int rank, int size, int timeout_ms) {
  enum { ITERS = 30, EXIT_AT = 3 };
  size_t n = 4u << 20; /* 16 MiB of f32 */
  float *buf = malloc(n * sizeof(float));
  if (!buf) return verdict_fail("out of memory");
  for (size_t i = 0; i < n; i++) buf[i] = 1.0f;
  for (int it = 0; it < ITERS; it++) {
    if (rank == 1 && it == EXIT_AT) {
      dtr_request *req = NULL;
      dtr_all_reduce(c, buf, buf, n, DTR_F32, DTR_SUM, &req);
      sleep_ms(5); /* the operation is under way */
      printf("coll_fault rank 1: peer-exit: leaving in the middle of all-reduce #%d\n", it);
      fflush(stdout);
      _exit(0);
    }
    double t0 = now_ms();
    dtr_result rc = dtr_all_reduce(c, buf, buf, n, DTR_F32, DTR_SUM, NULL);
    double el = now_ms() - t0;
    if (rc == DTR_OK) {
      if (it >= EXIT_AT + 1 && rank != 1)
        return verdict_fail("all-reduce #%d succeeded although rank 1 had left", it);
      for (size_t i = 0; i < n; i += 4099) buf[i] = 1.0f; /* keep values bounded */
      continue;
    }
    const char *e = dtr_comm_last_error(c);
    free(buf);
    if (it < EXIT_AT)
      return verdict_fail("all-reduce #%d failed before rank 1 left: %s: %s", it, dtr_strerror(rc), e);
    if (rc != DTR_ERR_TIMEOUT && rc != DTR_ERR_CONNECTION)
      return verdict_fail("all-reduce #%d returned %s, expected a timeout or connection error (%s)", it,
                          dtr_strerror(rc), e);
    if (el > timeout_ms + 3500)
      return verdict_fail("the failure took %.0f ms; the deadline was %d ms", el, timeout_ms);
    if (!names_rank(e, 1)) return verdict_fail("the error does not name rank 1: '%s'", e);
    return verdict_ok("all-reduce #%d failed after %.0f ms with %s: %s", it, el, dtr_strerror(rc), e);
  }
  free(buf);
  return rank == 1 ? verdict_ok("?") : verdict_fail("every all-reduce succeeded although rank 1 left");
}

/* ---- abort from another thread */
typedef struct aborter {
  dtr_comm *c;
  int delay_ms;
  double at;
} aborter;

static void *abort_later(void *p) {
  aborter *a = p;
  sleep_ms(a->delay_ms);
  a->at = now_ms();
  dtr_comm_abort(a->c);
  return NULL;
}

static int mode_abort(dtr_comm *c, int rank, int size) {
  if (rank != 0) {
    sleep_ms(3000);
    return verdict_ok("stayed away");
  }
  float buf[256] = {0};
  aborter a = {c, 500, 0};
  pthread_t th;
  if (pthread_create(&th, NULL, abort_later, &a) != 0) return verdict_fail("pthread_create");
  double t0 = now_ms();
  dtr_result rc = dtr_all_reduce(c, buf, buf, 256, DTR_F32, DTR_SUM, NULL);
  double t1 = now_ms();
  pthread_join(th, NULL);
  if (rc != DTR_ERR_ABORTED)
    return verdict_fail("blocked all_reduce returned %s, expected aborted (%s)", dtr_strerror(rc),
                        dtr_comm_last_error(c));
  if (t1 - a.at > 1000)
    return verdict_fail("the all-reduce returned %.0f ms after dtr_comm_abort", t1 - a.at);
  /* later operations, blocking or not, fail the same way */
  dtr_request *req = NULL;
  dtr_result rc2 = dtr_all_reduce(c, buf, buf, 256, DTR_F32, DTR_SUM, &req);
  if (rc2 == DTR_OK && req) rc2 = dtr_request_wait(req);
  dtr_request_free(req);
  if (rc2 != DTR_ERR_ABORTED) return verdict_fail("an operation after abort returned %s", dtr_strerror(rc2));
  return verdict_ok("unblocked %.0f ms after abort (blocked %.0f ms)", t1 - a.at, t1 - t0);
}

/* ---- mismatched counts under DTRAIN_COMM_DEBUG=1 */
static int mode_mismatch(dtr_comm *c, int rank, int size) {
  const char *dbg = getenv("DTRAIN_COMM_DEBUG");
  if (!dbg || strcmp(dbg, "1") != 0) return verdict_fail("run with DTRAIN_COMM_DEBUG=1");
  float buf[1024];
  for (int i = 0; i < 1024; i++) buf[i] = 1.0f;
  dtr_result rc = dtr_all_reduce(c, buf, buf, 1024, DTR_F32, DTR_SUM, NULL);
  if (rc != DTR_OK)
    return verdict_fail("a matching all-reduce failed in debug mode: %s", dtr_comm_last_error(c));
  if (buf[0] != (float)size) return verdict_fail("matching all-reduce gave %g, expected %d", buf[0], size);
  size_t n = rank == 0 ? 1024 : 1000;
  double t0 = now_ms();
  rc = dtr_all_reduce(c, buf, buf, n, DTR_F32, DTR_SUM, NULL);
  double el = now_ms() - t0;
  const char *e = dtr_comm_last_error(c);
  if (rc != DTR_ERR_INVALID)
    return verdict_fail("mismatched all-reduce returned %s, expected invalid (%s)", dtr_strerror(rc), e);
  if (!names_number(e, 1024) || !names_number(e, 1000))
    return verdict_fail("the error does not name both counts (1024 and 1000): '%s'", e);
  return verdict_ok("invalid after %.0f ms: %s", el, e);
}

static int mode_create(dtr_comm *c, int rank, int size) {
  double v = rank + 1;
  dtr_result rc = dtr_all_reduce(c, &v, &v, 1, DTR_F64, DTR_SUM, NULL);
  if (rc != DTR_OK) return verdict_fail("all-reduce: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  double want = (double)size * (size + 1) / 2;
  if (v != want) return verdict_fail("all-reduce gave %g, expected %g", v, want);
  return verdict_ok("all-reduce gave %g", v);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: coll_fault deadline|deadline-large|peer-exit|abort|mismatch|create [--timeout-ms MS]\n");
    return 2;
  }
  g_mode = argv[1];
  int timeout_ms = 1500;
  for (int i = 2; i + 1 < argc; i += 2)
    if (!strcmp(argv[i], "--timeout-ms")) timeout_ms = atoi(argv[i + 1]);
  if (!strcmp(g_mode, "abort")) timeout_ms = 60000;
  const char *rs = getenv("RANK"), *ws = getenv("WORLD_SIZE");
  if (!rs || !ws) {
    fprintf(stderr, "coll_fault: run under dtrain launch\n");
    return 2;
  }
  int rank = atoi(rs), size = atoi(ws);
  g_rank = rank;
  time_limit_start("coll_fault", 60);
  char err[512] = "";
  dtr_store *store = NULL;
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "coll_fault: store: %s\n", err);
    return 2;
  }
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.timeout_ms = timeout_ms;
  dtr_comm *c = NULL;
  dtr_result rc = dtr_comm_create(store, rank, size, &cfg, &c, err, sizeof err);
  if (rc != DTR_OK) return verdict_fail("dtr_comm_create: %s: %s", dtr_strerror(rc), err);
  int v;
  if (!strcmp(g_mode, "deadline"))
    v = mode_deadline(c, rank, size, timeout_ms, 1024);
  else if (!strcmp(g_mode, "deadline-large"))
    v = mode_deadline(c, rank, size, timeout_ms, 1 << 16);
  else if (!strcmp(g_mode, "peer-exit"))
    v = mode_peer_exit(c, rank, size, timeout_ms);
  else if (!strcmp(g_mode, "abort"))
    v = mode_abort(c, rank, size);
  else if (!strcmp(g_mode, "mismatch"))
    v = mode_mismatch(c, rank, size);
  else if (!strcmp(g_mode, "create"))
    v = mode_create(c, rank, size);
  else {
    fprintf(stderr, "coll_fault: unknown mode %s\n", g_mode);
    v = 2;
  }
  dtr_comm_destroy(c);
  dtr_store_close(store);
  return v;
}
