/* Uses only the installed public headers: starts a store on an ephemeral port, connects, round-trips
 * a key, and checks that a wrong token is refused. Exit 0 when all of that holds. */
#include <dtrain/common.h>
#include <dtrain/store.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  char err[256];
  dtr_store_server *srv = NULL;
  if (dtr_store_server_create("127.0.0.1", 0, "consumer-token", &srv, err, sizeof err) != DTR_OK ||
      dtr_store_server_start(srv) != DTR_OK) {
    fprintf(stderr, "consumer: server: %s\n", err);
    return 1;
  }
  int port = dtr_store_server_port(srv), ok = 1;
  dtr_store *c = NULL;
  if (dtr_store_connect("127.0.0.1", port, "consumer-token", 5000, &c, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "consumer: connect: %s\n", err);
    ok = 0;
  } else {
    void *v = NULL;
    size_t n = 0;
    ok = dtr_store_set(c, "k", "v1", 2) == DTR_OK && dtr_store_get(c, "k", 1000, &v, &n) == DTR_OK &&
         n == 2 && memcmp(v, "v1", 2) == 0;
    free(v);
    dtr_store_close(c);
  }
  dtr_store *bad = NULL;
  dtr_result rc = dtr_store_connect("127.0.0.1", port, "wrong-token", 3000, &bad, err, sizeof err);
  if (rc != DTR_ERR_AUTH) {
    fprintf(stderr, "consumer: a wrong token gave '%s', expected an auth refusal\n", dtr_strerror(rc));
    ok = 0;
  }
  dtr_store_close(bad);
  dtr_store_server_destroy(srv);
  printf("consumer: dtrain %s (%s): %s\n", dtr_version(), dtr_build_features(), ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
