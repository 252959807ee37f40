/* Shared scaffolding for the store tests: an in-process server on a kernel-picked loopback port,
 * raw sockets for speaking broken protocol at it, and a millisecond clock. */
#ifndef DTRAIN_TEST_STORE_UTIL_H
#define DTRAIN_TEST_STORE_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/store_proto.h"
#include "dtrain/store.h"
#include "tests/unit/test_util.h"

#define TOKEN "test-token-5f1c2a"

static inline void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Start a server with its own loop thread; aborts the test on failure (nothing else can run). */
static inline dtr_store_server *start_server(int *port) {
  dtr_store_server *s = NULL;
  char err[256] = "";
  if (dtr_store_server_create("127.0.0.1", 0, TOKEN, &s, err, sizeof err) != DTR_OK ||
      dtr_store_server_start(s) != DTR_OK) {
    fprintf(stderr, "cannot start the store server: %s\n", err);
    exit(1);
  }
  *port = dtr_store_server_port(s);
  return s;
}

static inline dtr_store *connect_ok(int port) {
  dtr_store *c = NULL;
  char err[256] = "";
  if (dtr_store_connect("127.0.0.1", port, TOKEN, 5000, &c, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "cannot connect to the store: %s\n", err);
    exit(1);
  }
  return c;
}

/* A blocking TCP socket to the server with a 3 s receive timeout, so no test read hangs. */
static inline int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static inline int raw_send(int fd, const void *p, size_t n) {
  return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* Send a valid hello and consume the OK reply; 0 on success. */
static inline int raw_hello(int fd, const char *token) {
  dtr__sp_buf b = {0};
  if (dtr__sp_encode_hello(&b, token, strlen(token))) return -1;
  int rc = raw_send(fd, b.p, b.len);
  dtr__sp_buf_free(&b);
  uint8_t reply[DTR__SP_HELLO_REPLY_FIXED];
  if (rc || recv(fd, reply, sizeof reply, MSG_WAITALL) != (ssize_t)sizeof reply) return -1;
  return reply[6] == DTR_OK ? 0 : -1;
}

/* 1 when the server closes fd within ms (EOF or reset), discarding anything it sends first. */
static inline int raw_wait_closed(int fd, int ms) {
  int64_t end = dtr__now_ms() + ms;
  char buf[4096];
  while (dtr__now_ms() < end) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) return 1;
    if (n < 0 && errno == ECONNRESET) return 1;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
  }
  return 0;
}

static inline dtr_store_server_stats stats_of(dtr_store_server *s) {
  dtr_store_server_stats st;
  dtr_store_server_get_stats(s, &st);
  return st;
}

#endif
