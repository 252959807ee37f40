/* The smallest multi-rank program on libdtrain: every rank publishes a number in the job's store,
 * waits for all the others, and prints the sum. Run it with
 *   dtrain launch --nproc-per-node 4 -- ./build/bin/hello_ranks */
#include <stdio.h>
#include <stdlib.h>

#include "dtrain/store.h"

int main(void) {
  const char *rank_s = getenv("RANK"), *world_s = getenv("WORLD_SIZE");
  if (!rank_s || !world_s) {
    fprintf(stderr, "hello_ranks: RANK and WORLD_SIZE are not set; run me under `dtrain launch`\n");
    return 2;
  }
  int rank = atoi(rank_s), world = atoi(world_s);
  char err[256];
  dtr_store *store = NULL;
  dtr_result rc = dtr_store_connect_env(30000, &store, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "hello_ranks: rank %d cannot reach the store: %s\n", rank, err);
    return 1;
  }
  char key[64], val[32];
  snprintf(key, sizeof key, "hello/%d", rank);
  int n = snprintf(val, sizeof val, "%d", (rank + 1) * (rank + 1));
  rc = dtr_store_set(store, key, val, (size_t)n);
  long sum = 0;
  for (int r = 0; rc == DTR_OK && r < world; r++) {
    void *v = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "hello/%d", r);
    rc = dtr_store_get(store, key, 30000, &v, &len);
    if (rc == DTR_OK) sum += atol(v);
    free(v);
  }
  if (rc == DTR_OK) rc = dtr_store_barrier(store, "hello/done", world, 30000);
  if (rc != DTR_OK) {
    fprintf(stderr, "hello_ranks: rank %d: %s\n", rank, dtr_store_last_error(store));
    dtr_store_close(store);
    return 1;
  }
  long expect = (long)world * (world + 1) * (2 * world + 1) / 6;
  printf("hello from rank %d of %d: sum of squares 1..%d = %ld (%s)\n", rank, world, world, sum,
         sum == expect ? "ok" : "WRONG");
  dtr_store_close(store);
  return sum == expect ? 0 : 1;
}
