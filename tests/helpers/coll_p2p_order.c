/* coll_p2p_order — p2p messages and collectives interleaved across a pair, run as each rank under
 * `dtrain launch` (any host transport). Round k: rank r sends a 4 KiB message to r+1 (it completes once
 * buffered), then every rank all-reduces (sizes from 64 B to 1 MiB, so hierarchical and flat paths both
 * run), then rank r receives r-1's message. The message was sent before the collective and is received
 * after it: on a transport where p2p and collectives shared one stream, the all-reduce would read the
 * message's bytes. Checks every all-reduce result and every message exactly.
 * Prints "coll_p2p_order rank R: N rounds ok" or "... FAILED: why" and exits 0 or 1. A time limit bounds
 * a run to 60 s. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtrain/comm.h"
#include "dtrain/store.h"
#include "tests/helpers/time_limit.h"

#define ROUNDS 24
#define MSG_WORDS 1024

static int g_rank;

static int fail(const char *what, const char *detail) {
  printf("coll_p2p_order rank %d: FAILED: %s%s%s\n", g_rank, what, detail ? ": " : "", detail ? detail : "");
  fflush(stdout);
  return 1;
}

/* The word rank `from` sends in round k at index i. */
static uint32_t word(int from, int k, int i) {
  return 0x9e3779b9u * (uint32_t)(from + 1) ^ (uint32_t)k << 20 ^ (uint32_t)i;
}

int main(void) {
  const char *rs = getenv("RANK"), *ws = getenv("WORLD_SIZE");
  if (!rs || !ws) {
    fprintf(stderr, "coll_p2p_order: run under dtrain launch\n");
    return 2;
  }
  const int rank = atoi(rs), size = atoi(ws);
  g_rank = rank;
  time_limit_start("coll_p2p_order", 60);
  char err[512] = "";
  dtr_store *store = NULL;
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) return fail("store", err);
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.timeout_ms = 20000;
  dtr_comm *c = NULL;
  if (dtr_comm_create(store, rank, size, &cfg, &c, err, sizeof err) != DTR_OK) return fail("create", err);
  const int to = (rank + 1) % size, from = (rank + size - 1) % size;
  const size_t max_count = (size_t)1 << 18; /* 1 MiB of f32 */
  float *x = malloc(max_count * sizeof *x);
  uint32_t *out = malloc(MSG_WORDS * sizeof *out), *in = malloc(MSG_WORDS * sizeof *in);
  if (!x || !out || !in) return fail("out of memory", NULL);
  char what[160];
  for (int k = 0; k < ROUNDS; k++) {
    const size_t count = (size_t)16 << (k % 15); /* 64 B .. 1 MiB */
    for (int i = 0; i < MSG_WORDS; i++) out[i] = word(rank, k, i);
    for (size_t i = 0; i < count; i++) x[i] = (float)((rank + 1) * (int)(i % 1000) + k);
    memset(in, 0, MSG_WORDS * sizeof *in);
    snprintf(what, sizeof what, "round %d: send to rank %d", k, to);
    if (dtr_send(c, out, MSG_WORDS, DTR_I32, to, NULL) != DTR_OK) return fail(what, dtr_comm_last_error(c));
    snprintf(what, sizeof what, "round %d: all-reduce of %zu floats", k, count);
    if (dtr_all_reduce(c, x, x, count, DTR_F32, DTR_SUM, NULL) != DTR_OK)
      return fail(what, dtr_comm_last_error(c));
    const int tri = size * (size + 1) / 2;
    for (size_t i = 0; i < count; i++) {
      float want = (float)(tri * (int)(i % 1000) + size * k);
      if (x[i] != want) {
        char d[128];
        snprintf(d, sizeof d, "element %zu is %g, want %g", i, (double)x[i], (double)want);
        return fail(what, d);
      }
    }
    snprintf(what, sizeof what, "round %d: receive from rank %d", k, from);
    if (dtr_recv(c, in, MSG_WORDS, DTR_I32, from, NULL) != DTR_OK) return fail(what, dtr_comm_last_error(c));
    for (int i = 0; i < MSG_WORDS; i++)
      if (in[i] != word(from, k, i)) {
        char d[128];
        snprintf(d, sizeof d, "word %d is %08x, want %08x", i, in[i], word(from, k, i));
        return fail(what, d);
      }
  }
  printf("coll_p2p_order rank %d: %d rounds ok\n", rank, ROUNDS);
  free(x), free(out), free(in);
  dtr_comm_destroy(c);
  dtr_store_close(store);
  return 0;
}
