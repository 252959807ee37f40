/* Store throughput: N client threads, each on its own connection, doing synchronous SETs for a fixed
 * time and then GETs of the keys they wrote (no pipelining, like `redis-benchmark -P 1`). Reports
 * ops/s per phase and a #wrong count (GETs that returned the wrong bytes); --threshold sets the exit code.
 * Without --port it runs an in-process server on loopback. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "dtrain/store.h"

typedef struct opts {
  const char *host, *token;
  int port, clients, value_size, keyspace, json;
  double seconds, threshold;
} opts;

/* Workers connect, check in, and sleep until every one is connected; then the clock starts. */
typedef struct start_gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ready, open;
  int64_t end_ms;
} start_gate;

static int64_t gate_wait(start_gate *g) {
  pthread_mutex_lock(&g->mu);
  g->ready++;
  pthread_cond_broadcast(&g->cv);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  int64_t end = g->end_ms;
  pthread_mutex_unlock(&g->mu);
  return end;
}

typedef struct worker {
  const opts *o;
  int id;
  int phase; /* 0 set, 1 get */
  struct start_gate *gate;
  uint64_t written; /* get phase: how many keys the set phase wrote */
  uint64_t ops, wrong, errors;
} worker;

static void fill_value(char *v, int n, int id, int k) {
  for (int i = 0; i < n; i++) v[i] = (char)('a' + (id * 7 + k * 13 + i) % 26);
}

static void *run_worker(void *arg) {
  worker *w = arg;
  const opts *o = w->o;
  dtr_store *c = NULL;
  char err[256];
  if (dtr_store_connect(o->host, o->port, o->token, 30000, &c, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "store_perf: client %d: %s\n", w->id, err);
    w->errors++;
    gate_wait(w->gate);
    return NULL;
  }
  char *val = malloc((size_t)o->value_size + 1);
  /* The get phase reads only keys the set phase wrote. */
  int kmax =
      w->phase == 0 ? o->keyspace : (w->written < (uint64_t)o->keyspace ? (int)w->written : o->keyspace);
  if (kmax < 1) kmax = 1;
  int64_t end_ms = gate_wait(w->gate);
  for (int k = 0; dtr__now_ms() < end_ms; k = (k + 1) % kmax) {
    char key[64];
    snprintf(key, sizeof key, "perf/%d/%d", w->id, k);
    fill_value(val, o->value_size, w->id, k);
    if (w->phase == 0) {
      if (dtr_store_set(c, key, val, (size_t)o->value_size) != DTR_OK) w->errors++;
    } else {
      void *got = NULL;
      size_t n = 0;
      dtr_result rc = dtr_store_get(c, key, 1000, &got, &n);
      if (rc != DTR_OK)
        w->errors++;
      else if (n != (size_t)o->value_size || memcmp(got, val, n) != 0)
        w->wrong++;
      free(got);
    }
    w->ops++;
  }
  free(val);
  dtr_store_close(c);
  return NULL;
}

/* One timed phase over every client; returns ops/s and adds to the totals. */
static double run_phase(const opts *o, int phase, uint64_t *written, uint64_t *wrong, uint64_t *errors) {
  worker *ws = calloc((size_t)o->clients, sizeof *ws);
  pthread_t *ts = calloc((size_t)o->clients, sizeof *ts);
  start_gate gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  for (int i = 0; i < o->clients; i++) {
    ws[i] = (worker){.o = o, .id = i, .phase = phase, .gate = &gate, .written = written[i]};
    pthread_create(&ts[i], NULL, run_worker, &ws[i]);
  }
  /* Connection setup is not part of the figure: the clock starts once every client is connected. */
  pthread_mutex_lock(&gate.mu);
  while (gate.ready < o->clients) pthread_cond_wait(&gate.cv, &gate.mu);
  int64_t start_ms = dtr__now_ms();
  gate.end_ms = start_ms + (int64_t)(o->seconds * 1000);
  gate.open = 1;
  pthread_cond_broadcast(&gate.cv);
  pthread_mutex_unlock(&gate.mu);
  uint64_t ops = 0;
  for (int i = 0; i < o->clients; i++) {
    pthread_join(ts[i], NULL);
    ops += ws[i].ops;
    if (phase == 0) written[i] = ws[i].ops;
    *wrong += ws[i].wrong;
    *errors += ws[i].errors;
  }
  double secs = (double)(dtr__now_ms() - start_ms) / 1000.0;
  free(ws);
  free(ts);
  return secs > 0 ? (double)ops / secs : 0;
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: store_perf [--clients N] [--seconds S] [--value-size B] [--keys K] [--host H --port P]\n"
      "                  [--token T] [--json] [--threshold OPS_PER_S]\n"
      "Without --port an in-process server on 127.0.0.1 is used. The token defaults to DTRAIN_JOB_TOKEN.\n");
}

int main(int argc, char **argv) {
  opts o = {.host = "127.0.0.1", .clients = 8, .value_size = 3, .keyspace = 1000, .seconds = 5};
  o.token = getenv("DTRAIN_JOB_TOKEN");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--json") == 0) {
      o.json = 1;
      continue;
    }
    if (!v || strncmp(a, "--", 2) != 0) {
      usage();
      return 2;
    }
    i++;
    if (strcmp(a, "--clients") == 0)
      o.clients = atoi(v);
    else if (strcmp(a, "--seconds") == 0)
      o.seconds = atof(v);
    else if (strcmp(a, "--value-size") == 0)
      o.value_size = atoi(v);
    else if (strcmp(a, "--keys") == 0)
      o.keyspace = atoi(v);
    else if (strcmp(a, "--host") == 0)
      o.host = v;
    else if (strcmp(a, "--port") == 0)
      o.port = atoi(v);
    else if (strcmp(a, "--token") == 0)
      o.token = v;
    else if (strcmp(a, "--threshold") == 0)
      o.threshold = atof(v);
    else {
      fprintf(stderr, "store_perf: unknown flag '%s'\n", a);
      return 2;
    }
  }
  if (o.clients < 1 || o.clients > 4096 || o.seconds <= 0 || o.value_size < 0 ||
      o.value_size > (int)DTR_STORE_MAX_VALUE || o.keyspace < 1) {
    usage();
    return 2;
  }
  dtr_store_server *srv = NULL;
  if (o.port == 0) {
    char err[256];
    if (!o.token) o.token = "store-perf-token";
    if (dtr_store_server_create("127.0.0.1", 0, o.token, &srv, err, sizeof err) ||
        dtr_store_server_start(srv)) {
      fprintf(stderr, "store_perf: %s\n", err);
      return 1;
    }
    o.port = dtr_store_server_port(srv);
  } else if (!o.token) {
    fprintf(stderr, "store_perf: --port needs a token (--token or DTRAIN_JOB_TOKEN)\n");
    return 2;
  }

  uint64_t wrong = 0, errors = 0;
  uint64_t *written = calloc((size_t)o.clients, sizeof *written);
  double set_ops = run_phase(&o, 0, written, &wrong, &errors);
  double get_ops = run_phase(&o, 1, written, &wrong, &errors);
  free(written);
  double mean = (set_ops + get_ops) / 2;
  if (o.json) {
    printf(
        "{\"clients\": %d, \"value_size\": %d, \"seconds\": %.1f, \"set_ops_per_s\": %.0f, "
        "\"get_ops_per_s\": %.0f, \"mean_ops_per_s\": %.0f, \"wrong\": %llu, \"errors\": %llu}\n",
        o.clients, o.value_size, o.seconds, set_ops, get_ops, mean, (unsigned long long)wrong,
        (unsigned long long)errors);
  } else {
    printf("# dtrain store_perf: %d clients, %d-byte values, %.1f s per op, %s server %s:%d\n", o.clients,
           o.value_size, o.seconds, srv ? "in-process" : "external", o.host, o.port);
    printf("# %6s %8s %10s %14s %8s %8s\n", "op", "clients", "size(B)", "ops/s", "#wrong", "#errors");
    printf("  %6s %8d %10d %14.0f %8s %8s\n", "set", o.clients, o.value_size, set_ops, "-", "-");
    printf("  %6s %8d %10d %14.0f %8llu %8llu\n", "get", o.clients, o.value_size, get_ops,
           (unsigned long long)wrong, (unsigned long long)errors);
    printf("# mean set/get ops/s: %.0f\n", mean);
  }
  dtr_store_server_destroy(srv);
  if (wrong || errors) return 1;
  if (o.threshold > 0 && mean < o.threshold) {
    fprintf(stderr, "store_perf: %.0f ops/s is below the threshold %.0f\n", mean, o.threshold);
    return 1;
  }
  return 0;
}
