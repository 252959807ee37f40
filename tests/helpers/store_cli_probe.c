/* A tiny store client for shell tests: `store_cli_probe set KEY VALUE | get KEY [TIMEOUT_MS] | add KEY N`
 * against DTRAIN_STORE with DTRAIN_JOB_TOKEN. Prints the value (get) or new count (add); on failure one
 * line naming the reason and the result code as the exit status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtrain/store.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: store_cli_probe set KEY VALUE | get KEY [TIMEOUT_MS] | add KEY N\n");
    return 2;
  }
  char err[512] = "";
  dtr_store *c = NULL;
  dtr_result rc = dtr_store_connect_env(3000, &c, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "store_cli_probe: %s (%s)\n", err, dtr_strerror(rc));
    return (int)rc;
  }
  if (strcmp(argv[1], "set") == 0 && argc == 4) {
    rc = dtr_store_set(c, argv[2], argv[3], strlen(argv[3]));
  } else if (strcmp(argv[1], "get") == 0) {
    void *v = NULL;
    size_t n = 0;
    rc = dtr_store_get(c, argv[2], argc > 3 ? atoi(argv[3]) : 1000, &v, &n);
    if (rc == DTR_OK) printf("%s\n", (char *)v);
    free(v);
  } else if (strcmp(argv[1], "add") == 0 && argc == 4) {
    int64_t nv = 0;
    rc = dtr_store_add(c, argv[2], strtoll(argv[3], NULL, 10), &nv);
    if (rc == DTR_OK) printf("%lld\n", (long long)nv);
  } else {
    fprintf(stderr, "store_cli_probe: unknown command '%s'\n", argv[1]);
    dtr_store_close(c);
    return 2;
  }
  if (rc != DTR_OK) fprintf(stderr, "store_cli_probe: %s (%s)\n", dtr_store_last_error(c), dtr_strerror(rc));
  dtr_store_close(c);
  return (int)rc;
}
