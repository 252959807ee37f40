/* The store's standby (store_internal.h): a primary mirrors every change of its mirrored keys to a
 * standby before it answers (a set, an add, a cas, a delete, and what a blocked get learns), copies what
 * it already held when the standby is named, keeps other keys to itself; the standby, once promoted to a
 * newer epoch, refuses the old primary's next change, which fences that primary for good; a standby that
 * cannot be reached leaves the primary serving, unmirrored. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/store_internal.h"
#include "tests/unit/test_store_util.h"

/* The standby holds key = want (NULL: does not hold it). */
static int standby_has(dtr_store *b, const char *key, const char *want) {
  void *v = NULL;
  size_t len = 0;
  dtr_result rc = dtr_store_try_get(b, key, &v, &len);
  int ok = want ? rc == DTR_OK && len == strlen(want) && memcmp(v, want, len) == 0 : rc == DTR_ERR_NOT_FOUND;
  free(v);
  return ok;
}

/* Poll up to 3 s for the standby to hold key = want. */
static int eventually(dtr_store *b, const char *key, const char *want) {
  for (int i = 0; i < 300; i++) {
    if (standby_has(b, key, want)) return 1;
    sleep_ms(10);
  }
  return 0;
}

typedef struct getter {
  int port;
  dtr_result rc;
  char val[64];
} getter;

static void *blocked_get(void *arg) {
  getter *g = arg;
  dtr_store *c = connect_ok(g->port);
  void *v = NULL;
  size_t len = 0;
  g->rc = dtr_store_get(c, "rdzv/late", 5000, &v, &len);
  if (v) snprintf(g->val, sizeof g->val, "%.*s", (int)len, (char *)v);
  free(v);
  dtr_store_close(c);
  return NULL;
}

int main(void) {
  int pa, pb;
  dtr_store_server *a = start_server(&pa), *b = start_server(&pb);
  dtr_store *ca = connect_ok(pa), *cb = connect_ok(pb);

  /* what the primary held before it had a standby is copied when it gets one */
  CHECK_EQ_INT(dtr_store_set(ca, "rdzv/before", "early", 5), DTR_OK);
  CHECK_EQ_INT(dtr__store_server_mirror(a, "127.0.0.1", pb, TOKEN, "rdzv/", 2000), DTR_OK);
  CHECK(eventually(cb, "rdzv/before", "early"));

  /* every change of a mirrored key is at the standby when the primary answers */
  int64_t v = 0;
  CHECK_EQ_INT(dtr_store_set(ca, "rdzv/r0/event", "fail\n{}", 7), DTR_OK);
  CHECK(standby_has(cb, "rdzv/r0/event", "fail\n{}"));
  CHECK_EQ_INT(dtr_store_add(ca, "rdzv/r0/count", 3, &v), DTR_OK);
  CHECK(standby_has(cb, "rdzv/r0/count", "3"));
  int swapped = 0;
  CHECK_EQ_INT(dtr_store_cas(ca, "rdzv/r0/closed", NULL, 0, "2", 1, &swapped, NULL, NULL), DTR_OK);
  CHECK(swapped && standby_has(cb, "rdzv/r0/closed", "2"));
  CHECK_EQ_INT(dtr_store_cas(ca, "rdzv/r0/closed", NULL, 0, "9", 1, &swapped, NULL, NULL), DTR_OK);
  CHECK(!swapped && standby_has(cb, "rdzv/r0/closed", "2"));
  CHECK_EQ_INT(dtr_store_delete(ca, "rdzv/before", NULL), DTR_OK);
  CHECK(standby_has(cb, "rdzv/before", NULL));
  /* the rest (the workers' keys) stays on the primary */
  CHECK_EQ_INT(dtr_store_set(ca, "comm/x", "1", 1), DTR_OK);
  CHECK(standby_has(cb, "comm/x", NULL));

  /* a get blocked on a mirrored key is answered only once the standby has the value */
  getter g = {pa, DTR_ERR_INTERNAL, ""};
  pthread_t th;
  pthread_create(&th, NULL, blocked_get, &g);
  sleep_ms(100);
  CHECK_EQ_INT(dtr_store_set(ca, "rdzv/late", "now", 3), DTR_OK);
  pthread_join(th, NULL);
  CHECK_EQ_INT(g.rc, DTR_OK);
  CHECK_EQ_STR(g.val, "now");
  CHECK(standby_has(cb, "rdzv/late", "now"));
  CHECK(dtr__store_server_mirrored(a) >= 6);

  /* the standby is promoted: the old primary's next change is refused and fences it for good */
  int64_t epoch = -1;
  CHECK_EQ_INT(dtr__store_epoch(cb, 1, &epoch), DTR_OK);
  CHECK_EQ_INT(epoch, 1);
  CHECK_EQ_INT(dtr__store_epoch(cb, 0, &epoch), DTR_OK); /* a read */
  CHECK_EQ_INT(epoch, 1);
  CHECK_EQ_INT(dtr__store_server_epoch(b), 1);
  CHECK_EQ_INT(dtr_store_set(ca, "rdzv/r1/count", "1", 1), DTR_ERR_FENCED);
  CHECK(strstr(dtr_store_last_error(ca), "superseded by epoch 1") != NULL);
  CHECK(standby_has(cb, "rdzv/r1/count", NULL));
  CHECK_EQ_INT(dtr__store_server_fenced(a), 1);
  void *val = NULL;
  CHECK_EQ_INT(dtr_store_try_get(ca, "comm/x", &val, NULL), DTR_ERR_FENCED); /* nothing is answered */
  free(val);
  CHECK_EQ_INT(dtr_store_set(cb, "rdzv/r1/count", "1", 1), DTR_OK); /* the new primary serves */
  /* the old primary's change of an older epoch is refused by the standby itself */
  int64_t newer = 0;
  CHECK_EQ_INT(dtr__store_mirror_op(cb, 0, 0, "rdzv/x", 6, "1", 1, &newer), DTR_ERR_FENCED);
  CHECK_EQ_INT(newer, 1);

  /* a fenced server made the standby of the newer primary follows it again */
  CHECK_EQ_INT(dtr__store_server_mirror(b, "127.0.0.1", pa, TOKEN, "rdzv/", 2000), DTR_OK);
  CHECK_EQ_INT(dtr_store_set(cb, "rdzv/r2/count", "2", 1), DTR_OK);
  for (int i = 0; i < 300 && dtr__store_server_fenced(a); i++) sleep_ms(10);
  CHECK_EQ_INT(dtr__store_server_fenced(a), 0);
  CHECK_EQ_INT(dtr__store_server_epoch(a), 1);
  CHECK(standby_has(ca, "rdzv/r2/count", "2"));

  /* a standby that cannot be reached leaves the primary serving, unmirrored */
  int pc;
  dtr_store_server *c = start_server(&pc);
  dtr_store *cc = connect_ok(pc);
  dtr_store_server_destroy(a); /* b's standby is gone now */
  int64_t t0 = dtr__now_ms();
  CHECK_EQ_INT(dtr_store_set(cb, "rdzv/r3/count", "3", 1), DTR_OK);
  CHECK(dtr__now_ms() - t0 < 4000);
  CHECK_EQ_INT(dtr__store_server_mirror(c, "127.0.0.1", 1, TOKEN, "rdzv/", 500), DTR_OK); /* nobody there */
  t0 = dtr__now_ms();
  for (int i = 0; i < 20; i++) CHECK_EQ_INT(dtr_store_add(cc, "rdzv/hb", 1, &v), DTR_OK);
  CHECK_EQ_INT(v, 20);
  CHECK(dtr__now_ms() - t0 < 3000);

  dtr_store_close(ca);
  dtr_store_close(cb);
  dtr_store_close(cc);
  dtr_store_server_destroy(b);
  dtr_store_server_destroy(c);
  printf("%d checks, %d failed\n", test_checks, test_failures);
  return test_failures ? 1 : 0;
}
