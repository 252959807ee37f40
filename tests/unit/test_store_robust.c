/* Bad input at the store: wrong and missing tokens, oversized, truncated and garbage messages from
 * raw sockets, a client that never says hello, a closed port, a port already taken, a non-store peer.
 * Each must close only the culprit's connection (counted and logged) while the server keeps serving. */
// ctest-timeout: 60
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/sock.h"
#include "tests/unit/test_store_util.h"

static int g_port;
static dtr_store_server *g_srv;

/* The server still answers a well-behaved client. */
static int server_healthy(void) {
  dtr_store *c = NULL;
  char err[256];
  if (dtr_store_connect("127.0.0.1", g_port, TOKEN, 2000, &c, err, sizeof err)) return 0;
  void *v = NULL;
  size_t n;
  int ok = dtr_store_set(c, "health", "ok", 2) == DTR_OK && dtr_store_get(c, "health", 500, &v, &n) == DTR_OK;
  free(v);
  dtr_store_close(c);
  return ok;
}

static void test_tokens(void) {
  dtr_store *c = (dtr_store *)1;
  char err[256] = "";
  uint64_t before = stats_of(g_srv).auth_refused;
  CHECK_EQ_INT(dtr_store_connect("127.0.0.1", g_port, "not-the-token", 2000, &c, err, sizeof err),
               DTR_ERR_AUTH);
  CHECK(c == NULL);
  CHECK(strstr(err, "wrong job token") != NULL);
  CHECK(strstr(err, "not-the-token") == NULL); /* the token is never echoed */
  CHECK_EQ_INT(stats_of(g_srv).auth_refused, before + 1);
  CHECK_EQ_INT(dtr_store_connect("127.0.0.1", g_port, NULL, 2000, &c, err, sizeof err), DTR_ERR_AUTH);
  CHECK(strstr(err, "no job token") != NULL);
  CHECK_EQ_INT(stats_of(g_srv).auth_refused, before + 2);
  CHECK(server_healthy());
}

/* Open a raw authenticated connection, send bytes, expect the server to drop it and count it. */
static void expect_dropped(const char *what, const void *bytes, size_t n, int hello, int shut_wr) {
  uint64_t before = stats_of(g_srv).protocol_errors;
  int fd = raw_connect(g_port);
  CHECK(fd >= 0);
  if (fd < 0) return;
  if (hello) CHECK_EQ_INT(raw_hello(fd, TOKEN), 0);
  CHECK_EQ_INT(raw_send(fd, bytes, n), 0);
  if (shut_wr) shutdown(fd, SHUT_WR);
  int closed = raw_wait_closed(fd, 2000);
  if (!closed) fprintf(stderr, "%s: connection was not closed\n", what);
  CHECK(closed);
  close(fd);
  /* The counter moves on the loop thread just before the close we saw; allow it a moment. */
  for (int i = 0; i < 100 && stats_of(g_srv).protocol_errors == before; i++) sleep_ms(10);
  CHECK_EQ_INT(stats_of(g_srv).protocol_errors, before + 1);
  CHECK(server_healthy());
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_bad_messages(void) {
  /* A frame header announcing 4 GiB: refused from the header alone. */
  uint8_t huge[4];
  put32(huge, 0xfffffff0u);
  expect_dropped("huge frame", huge, sizeof huge, 1, 0);
  /* A well-sized frame whose SET value claims 17 MiB: the server's own value limit. */
  uint8_t big[64] = {0};
  size_t o = 4;
  big[o++] = DTR__SP_SET;
  big[o++] = 0;
  big[o++] = 1; /* nkeys = 1 */
  big[o++] = 0;
  o += 12;      /* timeout, delta */
  big[o++] = 1; /* key length 1 */
  big[o++] = 0;
  big[o++] = 'k';
  put32(big + o, DTR_STORE_MAX_VALUE + (1u << 20));
  o += 4;
  put32(big, (uint32_t)(o - 4));
  expect_dropped("oversized value", big, o, 1, 0);
  /* An unknown opcode. */
  uint8_t unk[4 + DTR__SP_REQ_FIXED] = {0};
  put32(unk, DTR__SP_REQ_FIXED);
  unk[4] = 0x77;
  expect_dropped("unknown opcode", unk, sizeof unk, 1, 0);
  /* Garbage instead of a hello (an HTTP client that wandered in). */
  const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  expect_dropped("garbage hello", http, sizeof http - 1, 0, 0);
  /* Random bytes after a good hello. */
  uint8_t noise[256];
  uint32_t x = 12345;
  for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
  put32(noise, 200); /* plausible length, garbage body */
  expect_dropped("noise", noise, 204, 1, 0);
  /* Half a frame, then the client hangs up its sending side: a truncated message. */
  uint8_t half[10] = {0};
  put32(half, 40);
  half[4] = DTR__SP_SET;
  expect_dropped("truncated frame", half, sizeof half, 1, 1);
  /* Half a hello, then hang up. */
  expect_dropped("truncated hello", "DTRS\x01", 5, 0, 1);
}

static void test_silent_client(void) {
  /* DTRAIN_STORE_HANDSHAKE_MS=300 was set before the server was created. */
  int fd = raw_connect(g_port);
  CHECK(fd >= 0);
  int64_t t0 = dtr__now_ms();
  CHECK(raw_wait_closed(fd, 3000));
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt >= 250 && dt < 1500);
  close(fd);
  CHECK(server_healthy());
}

/* The memory this process (the server runs in it) has allocated, in bytes: its virtual size, since
 * an untouched allocation is not resident yet but is the store's all the same. */
static long vm_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0;
  if (f) {
    if (fscanf(f, "%ld", &pages) != 1) pages = 0;
    fclose(f);
  }
  return pages * sysconf(_SC_PAGESIZE);
}

/* Issue 19: an authenticated connection that trickles a message, or announces a 32 MiB frame and
 * stops, used to be kept forever with the whole announced size allocated (20 of them took the store
 * from 9 MB to 632 MB). Now the buffer grows with the bytes that arrive, and a message must be whole
 * within DTRAIN_STORE_FRAME_MS (500 ms here). */
static void test_slow_and_partial_messages(void) {
  long before = vm_bytes();
  int fds[20];
  for (int i = 0; i < 20; i++) {
    fds[i] = raw_connect(g_port);
    CHECK(fds[i] >= 0 && raw_hello(fds[i], TOKEN) == 0);
    uint8_t head[104] = {0};
    put32(head, 32u << 20); /* a SET of 32 MiB is announced; 100 bytes of it arrive */
    head[4] = DTR__SP_SET;
    CHECK(raw_send(fds[i], head, sizeof head) == 0);
  }
  sleep_ms(200);
  long grown = vm_bytes() - before;
  CHECK(grown < 32L << 20); /* was 20 x 32 MiB */
  printf("20 partial 32 MiB frames: the process's memory grew by %ld KiB\n", grown / 1024);
  for (int i = 0; i < 20; i++) {
    CHECK(raw_wait_closed(fds[i], 3000)); /* dropped at the frame deadline */
    close(fds[i]);
  }
  /* one byte every 100 ms of an otherwise valid request: dropped after 500 ms, not served at 3 s */
  int fd = raw_connect(g_port);
  CHECK(fd >= 0 && raw_hello(fd, TOKEN) == 0);
  dtr__sp_buf b = {0};
  const char *key = "slow";
  size_t kl = 4;
  CHECK(dtr__sp_encode_request(&b, DTR__SP_TRY_GET, 0, 0, 0, 1, &key, &kl, 0, NULL, NULL) == DTR_OK);
  int64_t t0 = dtr__now_ms();
  int sent = 0;
  for (size_t i = 0; i + 1 < b.len; i++) {
    if (raw_send(fd, b.p + i, 1) != 0) break;
    sent++;
    sleep_ms(100);
    if (dtr__now_ms() - t0 > 3000) break;
  }
  CHECK(raw_wait_closed(fd, 3000));
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt < 2500);
  printf("a request trickled one byte per 100 ms: dropped after %lld ms (%d of %zu bytes sent)\n",
         (long long)dt, sent, b.len);
  dtr__sp_buf_free(&b);
  close(fd);
  CHECK(server_healthy());
}

static void test_closed_port(void) {
  int port;
  char err[256] = "";
  CHECK_EQ_INT(dtr__find_free_port("127.0.0.1", &port, err, sizeof err), DTR_OK);
  dtr_store *c = NULL;
  int64_t t0 = dtr__now_ms();
  CHECK_EQ_INT(dtr_store_connect("127.0.0.1", port, TOKEN, 400, &c, err, sizeof err), DTR_ERR_TIMEOUT);
  int64_t dt = dtr__now_ms() - t0;
  CHECK(dt >= 350 && dt < 1500);
  CHECK(c == NULL);
  char want[32];
  snprintf(want, sizeof want, ":%d", port);
  CHECK(strstr(err, want) != NULL);
}

static void test_port_taken(void) {
  dtr_store_server *s2 = (dtr_store_server *)1;
  char err[256] = "";
  CHECK_EQ_INT(dtr_store_server_create("127.0.0.1", g_port, TOKEN, &s2, err, sizeof err), DTR_ERR_ADDRINUSE);
  CHECK(s2 == NULL);
  CHECK(strstr(err, "Address already in use") != NULL);
  CHECK_EQ_INT(dtr_store_server_create("127.0.0.1", 0, "", &s2, err, sizeof err), DTR_ERR_INVALID);
  CHECK(s2 == NULL);
}

/* A peer that speaks something else (it greets with text) is reported as not a store. */
static void *fake_server(void *arg) {
  int lfd = *(int *)arg;
  int fd = accept(lfd, NULL, NULL);
  if (fd >= 0) {
    const char hi[] = "+OK welcome to something else\r\n";
    send(fd, hi, sizeof hi - 1, MSG_NOSIGNAL);
    sleep_ms(300);
    close(fd);
  }
  return NULL;
}

static void test_not_a_store(void) {
  int lfd, port;
  char err[256];
  CHECK_EQ_INT(dtr__listen("127.0.0.1", 0, 4, &lfd, &port, err, sizeof err), DTR_OK);
  fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) & ~O_NONBLOCK); /* the fake server's accept blocks */
  pthread_t t;
  pthread_create(&t, NULL, fake_server, &lfd);
  dtr_store *c = NULL;
  CHECK_EQ_INT(dtr_store_connect("127.0.0.1", port, TOKEN, 2000, &c, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "not a dtrain store") != NULL);
  pthread_join(t, NULL);
  close(lfd);
}

int main(void) {
  setenv("DTRAIN_STORE_HANDSHAKE_MS", "300", 1);
  setenv("DTRAIN_STORE_FRAME_MS", "500", 1);
  g_srv = start_server(&g_port);
  test_tokens();
  test_bad_messages();
  test_silent_client();
  test_slow_and_partial_messages();
  test_closed_port();
  test_port_taken();
  test_not_a_store();
  CHECK(server_healthy());
  dtr_store_server_destroy(g_srv);
  return TEST_EXIT();
}
