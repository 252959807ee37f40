/* The store's non-blocking operations against an in-process server: set/get/try_get, add, both
 * paths of compare-and-set, delete, list by prefix, client-side limits and connect_env. */
// ctest-timeout: 60
#include <stdlib.h>
#include <string.h>

#include "tests/unit/test_store_util.h"

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_set_get(dtr_store *c) {
  void *v = NULL;
  size_t n = 0;
  CHECK_EQ_INT(dtr_store_set(c, "alpha", "one", 3), DTR_OK);
  CHECK_EQ_INT(dtr_store_get(c, "alpha", 1000, &v, &n), DTR_OK);
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_STR((char *)v, "one"); /* NUL-terminated past len */
  free(v);
  CHECK_EQ_INT(dtr_store_set(c, "alpha", "second", 6), DTR_OK);
  CHECK_EQ_INT(dtr_store_try_get(c, "alpha", &v, &n), DTR_OK);
  CHECK_EQ_STR((char *)v, "second");
  free(v);
  CHECK_EQ_INT(dtr_store_try_get(c, "missing", &v, &n), DTR_ERR_NOT_FOUND);
  CHECK(v == NULL);
  /* Binary values with NULs, and the empty value. */
  const char bin[5] = {1, 0, 2, 0, 3};
  CHECK_EQ_INT(dtr_store_set(c, "bin", bin, sizeof bin), DTR_OK);
  CHECK_EQ_INT(dtr_store_get(c, "bin", 0, &v, &n), DTR_OK);
  CHECK(n == 5 && memcmp(v, bin, 5) == 0);
  free(v);
  CHECK_EQ_INT(dtr_store_set(c, "empty", NULL, 0), DTR_OK);
  CHECK_EQ_INT(dtr_store_get(c, "empty", 0, &v, &n), DTR_OK);
  CHECK_EQ_INT(n, 0);
  free(v);
  /* A large value (4 MiB) survives the trip intact. */
  size_t big = 4u << 20;
  char *b = malloc(big);
  for (size_t i = 0; i < big; i++) b[i] = (char)(i * 131 + 7);
  CHECK_EQ_INT(dtr_store_set(c, "big", b, big), DTR_OK);
  CHECK_EQ_INT(dtr_store_get(c, "big", 1000, &v, &n), DTR_OK);
  CHECK(n == big && v && memcmp(v, b, big) == 0);
  free(v);
  free(b);
}

static void test_add(dtr_store *c) {
  int64_t nv = -1;
  CHECK_EQ_INT(dtr_store_add(c, "ctr", 5, &nv), DTR_OK);
  CHECK_EQ_INT(nv, 5);
  CHECK_EQ_INT(dtr_store_add(c, "ctr", -7, &nv), DTR_OK);
  CHECK_EQ_INT(nv, -2);
  void *v;
  size_t n;
  CHECK_EQ_INT(dtr_store_get(c, "ctr", 0, &v, &n), DTR_OK);
  CHECK_EQ_STR((char *)v, "-2");
  free(v);
  CHECK_EQ_INT(dtr_store_add(c, "alpha", 1, &nv), DTR_ERR_INVALID); /* "second" is no counter */
  CHECK(strstr(dtr_store_last_error(c), "alpha") != NULL);
  CHECK_EQ_INT(dtr_store_set(c, "huge", "9223372036854775807", 19), DTR_OK);
  CHECK_EQ_INT(dtr_store_add(c, "huge", 1, &nv), DTR_ERR_INVALID); /* overflow refused */
}

static void test_cas(dtr_store *c) {
  int swapped = -1;
  void *a = NULL;
  size_t alen = 0;
  /* expected NULL: set only if absent */
  CHECK_EQ_INT(dtr_store_cas(c, "lock", NULL, 0, "me", 2, &swapped, &a, &alen), DTR_OK);
  CHECK_EQ_INT(swapped, 1);
  CHECK(a && alen == 2 && memcmp(a, "me", 2) == 0);
  free(a);
  CHECK_EQ_INT(dtr_store_cas(c, "lock", NULL, 0, "you", 3, &swapped, &a, &alen), DTR_OK);
  CHECK_EQ_INT(swapped, 0);
  CHECK_EQ_STR((char *)a, "me");
  free(a);
  /* expected matches: swap */
  CHECK_EQ_INT(dtr_store_cas(c, "lock", "me", 2, "you", 3, &swapped, &a, &alen), DTR_OK);
  CHECK_EQ_INT(swapped, 1);
  CHECK_EQ_STR((char *)a, "you");
  free(a);
  /* expected differs: keep, report the current value */
  CHECK_EQ_INT(dtr_store_cas(c, "lock", "me", 2, "them", 4, &swapped, &a, &alen), DTR_OK);
  CHECK_EQ_INT(swapped, 0);
  CHECK_EQ_STR((char *)a, "you");
  free(a);
  /* expected given but the key is absent: nothing stored, nothing returned */
  CHECK_EQ_INT(dtr_store_cas(c, "nolock", "x", 1, "y", 1, &swapped, &a, &alen), DTR_OK);
  CHECK_EQ_INT(swapped, 0);
  CHECK(a == NULL && alen == 0);
  void *v;
  size_t n;
  CHECK_EQ_INT(dtr_store_try_get(c, "nolock", &v, &n), DTR_ERR_NOT_FOUND);
  /* optional outputs may be NULL */
  CHECK_EQ_INT(dtr_store_cas(c, "lock", "you", 3, "us", 2, NULL, NULL, NULL), DTR_OK);
  CHECK_EQ_INT(dtr_store_get(c, "lock", 0, &v, &n), DTR_OK);
  CHECK_EQ_STR((char *)v, "us");
  free(v);
}

static void test_delete(dtr_store *c) {
  int existed = -1;
  CHECK_EQ_INT(dtr_store_set(c, "gone", "x", 1), DTR_OK);
  CHECK_EQ_INT(dtr_store_delete(c, "gone", &existed), DTR_OK);
  CHECK_EQ_INT(existed, 1);
  CHECK_EQ_INT(dtr_store_delete(c, "gone", &existed), DTR_OK);
  CHECK_EQ_INT(existed, 0);
  void *v;
  size_t n;
  CHECK_EQ_INT(dtr_store_try_get(c, "gone", &v, &n), DTR_ERR_NOT_FOUND);
  CHECK_EQ_INT(dtr_store_get(c, "gone", 50, &v, &n), DTR_ERR_TIMEOUT);
}

static void test_list(dtr_store *c) {
  CHECK_EQ_INT(dtr_store_set(c, "job/a", "1", 1), DTR_OK);
  CHECK_EQ_INT(dtr_store_set(c, "job/b", "1", 1), DTR_OK);
  CHECK_EQ_INT(dtr_store_set(c, "job/c/d", "1", 1), DTR_OK);
  CHECK_EQ_INT(dtr_store_set(c, "jobx", "1", 1), DTR_OK);
  char **keys = NULL;
  int nk = -1;
  CHECK_EQ_INT(dtr_store_list(c, "job/", &keys, &nk), DTR_OK);
  CHECK_EQ_INT(nk, 3);
  if (nk == 3) {
    qsort(keys, 3, sizeof *keys, cmp_str);
    CHECK_EQ_STR(keys[0], "job/a");
    CHECK_EQ_STR(keys[1], "job/b");
    CHECK_EQ_STR(keys[2], "job/c/d");
  }
  dtr_store_free_list(keys, nk);
  CHECK_EQ_INT(dtr_store_list(c, "nothing/", &keys, &nk), DTR_OK);
  CHECK_EQ_INT(nk, 0);
  dtr_store_free_list(keys, nk);
  CHECK_EQ_INT(dtr_store_list(c, "", &keys, &nk), DTR_OK); /* every key */
  CHECK(nk >= 10);
  dtr_store_free_list(keys, nk);
}

static void test_wait_present(dtr_store *c) {
  const char *keys[] = {"job/a", "job/b", "alpha"};
  int64_t t0 = dtr__now_ms();
  CHECK_EQ_INT(dtr_store_wait(c, keys, 3, 1000), DTR_OK);
  CHECK(dtr__now_ms() - t0 < 500);
  CHECK_EQ_INT(dtr_store_wait(c, keys, 0, 1000), DTR_ERR_INVALID);
}

static void test_client_limits(dtr_store *c) {
  char *longkey = malloc(DTR_STORE_MAX_KEY + 2);
  memset(longkey, 'k', DTR_STORE_MAX_KEY + 1);
  longkey[DTR_STORE_MAX_KEY + 1] = 0;
  CHECK_EQ_INT(dtr_store_set(c, longkey, "v", 1), DTR_ERR_INVALID);
  longkey[DTR_STORE_MAX_KEY] = 0; /* exactly at the limit is fine */
  CHECK_EQ_INT(dtr_store_set(c, longkey, "v", 1), DTR_OK);
  free(longkey);
  CHECK_EQ_INT(dtr_store_set(c, "", "v", 1), DTR_ERR_INVALID);
  CHECK_EQ_INT(dtr_store_set(c, NULL, "v", 1), DTR_ERR_INVALID);
  /* Oversized value: refused before anything is sent, naming the key; the connection stays usable. */
  static const char one = 'x';
  CHECK_EQ_INT(dtr_store_set(c, "toolarge", &one, (size_t)DTR_STORE_MAX_VALUE + 1), DTR_ERR_INVALID);
  CHECK(strstr(dtr_store_last_error(c), "toolarge") != NULL);
  CHECK_EQ_INT(dtr_store_set(c, "after", "ok", 2), DTR_OK);
}

static void test_connect_env(int port) {
  char addr[64], err[256];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  setenv("DTRAIN_STORE", addr, 1);
  setenv("DTRAIN_JOB_TOKEN", TOKEN, 1);
  dtr_store *c = NULL;
  CHECK_EQ_INT(dtr_store_connect_env(2000, &c, err, sizeof err), DTR_OK);
  if (c) {
    CHECK_EQ_STR(dtr_store_local_addr(c), "127.0.0.1");
    void *v;
    size_t n;
    CHECK_EQ_INT(dtr_store_get(c, "alpha", 100, &v, &n), DTR_OK);
    if (v) free(v);
  }
  dtr_store_close(c);
  unsetenv("DTRAIN_JOB_TOKEN");
  CHECK_EQ_INT(dtr_store_connect_env(2000, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "DTRAIN_JOB_TOKEN") != NULL);
  CHECK(c == NULL);
  setenv("DTRAIN_JOB_TOKEN", TOKEN, 1);
  setenv("DTRAIN_STORE", "nonsense", 1);
  CHECK_EQ_INT(dtr_store_connect_env(2000, &c, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "DTRAIN_STORE") != NULL);
  unsetenv("DTRAIN_STORE");
  unsetenv("DTRAIN_JOB_TOKEN");
}

int main(void) {
  int port;
  dtr_store_server *s = start_server(&port);
  dtr_store *c = connect_ok(port);
  test_set_get(c);
  test_add(c);
  test_cas(c);
  test_delete(c);
  test_list(c);
  test_wait_present(c);
  test_client_limits(c);
  test_connect_env(port);
  CHECK_EQ_INT(dtr_store_barrier(c, "solo", 1, 1000), DTR_OK);
  CHECK_EQ_INT(dtr_store_barrier(c, "solo", 1, 1000), DTR_ERR_INVALID); /* reused name is caught */
  dtr_store_server_stats st = stats_of(s);
  CHECK(st.accepted >= 2);
  CHECK(st.requests >= 40);
  CHECK_EQ_INT(st.auth_refused, 0);
  CHECK_EQ_INT(st.protocol_errors, 0);
  dtr_store_close(c);
  dtr_store_server_destroy(s);
  return TEST_EXIT();
}
