/* The launcher's pure parts: node-rank assignment, node info text, line assembly of worker output,
 * the failure record's JSON round trip, environment building and the PATH search. */
// ctest-labels: launch
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher/output.h"
#include "launcher/rendezvous.h"
#include "launcher/report.h"
#include "launcher/workers.h"
#include "tests/unit/test_util.h"

static char err[1024];

static void test_assign(void) {
  dtr__node_info n[4];
  memset(n, 0, sizeof n);
  const char *addrs[4] = {"10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.1"};
  const char *hosts[4] = {"c", "b", "a", "a"};
  for (int i = 0; i < 4; i++) {
    strcpy(n[i].addr, addrs[i]);
    strcpy(n[i].host, hosts[i]);
    n[i].nproc = 2;
    n[i].want_rank = -1;
    n[i].idx = i;
  }
  int r[4];
  CHECK_EQ_INT(dtr__rdzv_assign(n, 4, r, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(r[3], 0); /* 10.0.0.1/a */
  CHECK_EQ_INT(r[1], 1); /* 10.0.0.1/b */
  CHECK_EQ_INT(r[2], 2);
  CHECK_EQ_INT(r[0], 3);
  /* a requested rank wins; the others fill the gaps in order */
  n[0].want_rank = 0;
  CHECK_EQ_INT(dtr__rdzv_assign(n, 4, r, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(r[0], 0);
  CHECK_EQ_INT(r[3], 1);
  CHECK_EQ_INT(r[1], 2);
  CHECK_EQ_INT(r[2], 3);
  /* duplicates and out-of-range ranks are errors naming the nodes */
  n[2].want_rank = 0;
  CHECK_EQ_INT(dtr__rdzv_assign(n, 4, r, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "--node-rank 0") != NULL);
  n[2].want_rank = 9;
  CHECK_EQ_INT(dtr__rdzv_assign(n, 4, r, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "--node-rank 9") != NULL);

  /* node info text round trip */
  char text[1100];
  dtr__node_info back;
  n[1].want_rank = 3;
  n[1].pid = 77;
  strcpy(n[1].store, "10.0.0.1:41000");
  n[1].primary = 1;
  int l = dtr__node_info_format(&n[1], text, sizeof text);
  CHECK_EQ_INT(dtr__node_info_parse(text, (size_t)l, &back), DTR_OK);
  CHECK_EQ_STR(back.host, "b");
  CHECK_EQ_STR(back.addr, "10.0.0.1");
  CHECK_EQ_INT(back.nproc, 2);
  CHECK_EQ_INT(back.want_rank, 3);
  CHECK_EQ_INT(back.pid, 77);
  CHECK_EQ_STR(back.store, "10.0.0.1:41000");
  CHECK_EQ_INT(back.primary, 1);
  CHECK_EQ_INT(dtr__node_info_parse("garbage", 7, &back), DTR_ERR_PROTOCOL);

  /* quorum after a round of prev nodes: a majority, half only for the side that kept the store */
  CHECK_EQ_INT(dtr__rdzv_quorum(0, 1), 0);
  CHECK_EQ_INT(dtr__rdzv_quorum(1, 1), 1);
  CHECK_EQ_INT(dtr__rdzv_quorum(2, 1), 1);
  CHECK_EQ_INT(dtr__rdzv_quorum(2, 0), 2);
  CHECK_EQ_INT(dtr__rdzv_quorum(3, 1), 2);
  CHECK_EQ_INT(dtr__rdzv_quorum(3, 0), 2);
  CHECK_EQ_INT(dtr__rdzv_quorum(4, 0), 3);
  CHECK_EQ_INT(dtr__rdzv_quorum(4, 1), 2);
  CHECK_EQ_INT(dtr__rdzv_quorum(7, 1), 4);
}

static char *slurp(int fd) {
  static char buf[1 << 20];
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

static void test_output(void) {
  char tmpl[] = "/tmp/dtrain_out_XXXXXX";
  int fd = mkstemp(tmpl);
  unlink(tmpl);
  CHECK(fd >= 0);
  int cons[2] = {fd, fd};
  dtr__out_rank *r = dtr__out_rank_create(1, 5, cons, 3, NULL, err, sizeof err);
  CHECK(r != NULL);
  dtr__out_rank_feed(r, DTR_OUT_STDOUT, "hel", 3);
  dtr__out_rank_feed(r, DTR_OUT_STDOUT, "lo\nwor", 6);
  dtr__out_rank_feed(r, DTR_OUT_STDERR, "e1\n", 3);
  dtr__out_rank_feed(r, DTR_OUT_STDOUT, "ld\r\nx\n\n", 7);
  dtr__out_rank_feed(r, DTR_OUT_STDOUT, "partial", 7);
  dtr__out_rank_flush(r);
  CHECK_EQ_STR(slurp(fd), "[1:5] hello\n[1:5] e1\n[1:5] world\n[1:5] x\n[1:5] \n[1:5] partial\n");
  const char *lines[DTR_OUT_TAIL_LINES];
  int n = dtr__out_rank_tail(r, lines, DTR_OUT_TAIL_LINES);
  CHECK_EQ_INT(n, 6);
  CHECK_EQ_STR(lines[0], "hello");
  CHECK_EQ_STR(lines[5], "partial");
  /* the ring keeps the last 20 */
  for (int i = 0; i < 30; i++) {
    char l[32];
    int k = snprintf(l, sizeof l, "line %d\n", i);
    dtr__out_rank_feed(r, DTR_OUT_STDOUT, l, (size_t)k);
  }
  n = dtr__out_rank_tail(r, lines, DTR_OUT_TAIL_LINES);
  CHECK_EQ_INT(n, 20);
  CHECK_EQ_STR(lines[0], "line 10");
  CHECK_EQ_STR(lines[19], "line 29");
  n = dtr__out_rank_tail(r, lines, 3);
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_STR(lines[2], "line 29");
  /* an over-long line is split, never lost */
  ftruncate(fd, 0);
  lseek(fd, 0, SEEK_SET);
  size_t big = DTR_OUT_MAX_LINE + 10;
  char *b = malloc(big + 1);
  memset(b, 'z', big);
  b[big] = '\n';
  dtr__out_rank_feed(r, DTR_OUT_STDOUT, b, big + 1);
  free(b);
  char *out = slurp(fd);
  CHECK_EQ_INT(strlen(out), 2 * 6 + big + 2);
  CHECK(strncmp(out, "[1:5] zzz", 9) == 0);
  dtr__out_rank_destroy(r);
  close(fd);

  /* log files: one per rank and stream, raw lines */
  char dir[] = "/tmp/dtrain_logs_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char sub[256];
  snprintf(sub, sizeof sub, "%s/run/attempt_0", dir);
  int none[2] = {-1, -1};
  r = dtr__out_rank_create(0, 2, none, 0, sub, err, sizeof err);
  CHECK(r != NULL);
  dtr__out_rank_feed(r, DTR_OUT_STDOUT, "a\nb\n", 4);
  dtr__out_rank_feed(r, DTR_OUT_STDERR, "c\n", 2);
  dtr__out_rank_destroy(r);
  char path[300];
  snprintf(path, sizeof path, "%s/rank_2.stdout", sub);
  int lf = open(path, O_RDONLY);
  CHECK(lf >= 0);
  CHECK_EQ_STR(slurp(lf), "a\nb\n");
  close(lf);
  snprintf(path, sizeof path, "%s/rank_2.stderr", sub);
  lf = open(path, O_RDONLY);
  CHECK_EQ_STR(slurp(lf), "c\n");
  close(lf);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

static void test_report(void) {
  dtr__failure f, g;
  memset(&f, 0, sizeof f);
  strcpy(f.kind, "worker");
  f.node_rank = 1;
  strcpy(f.host, "node-\"b\"");
  f.rank = 5;
  f.local_rank = 1;
  f.signal = 9;
  f.pid = 1234;
  f.restart_count = 2;
  strcpy(f.run_id, "job1");
  f.nlines = 2;
  strcpy(f.lines[0], "tab\there \\ \"quoted\"");
  strcpy(f.lines[1], "ctl \x01 end");
  CHECK_EQ_INT(dtr__failure_exit_code(&f), 137);
  char *j = dtr__failure_to_json(&f);
  CHECK(j != NULL);
  CHECK(strstr(j, "\"signal_name\": \"SIGKILL\"") != NULL);
  CHECK_EQ_INT(dtr__failure_from_json(j, strlen(j), &g), DTR_OK);
  CHECK_EQ_STR(g.kind, "worker");
  CHECK_EQ_STR(g.host, "node-\"b\"");
  CHECK_EQ_INT(g.rank, 5);
  CHECK_EQ_INT(g.local_rank, 1);
  CHECK_EQ_INT(g.signal, 9);
  CHECK_EQ_INT(g.pid, 1234);
  CHECK_EQ_INT(g.restart_count, 2);
  CHECK_EQ_INT(g.nlines, 2);
  CHECK_EQ_STR(g.lines[0], "tab\there \\ \"quoted\"");
  CHECK_EQ_STR(g.lines[1], "ctl \x01 end");
  free(j);
  f.signal = 0;
  f.exit_code = 3;
  CHECK_EQ_INT(dtr__failure_exit_code(&f), 3);
  char d[512];
  dtr__failure_describe(&f, d, sizeof d);
  CHECK(strstr(d, "rank 5") && strstr(d, "exited with code 3"));
  /* what the progress page said, and the failure classes */
  f.step = 57;
  strcpy(f.phase, "checkpoint save");
  strcpy(f.reason, "disk \"full\"");
  f.exit_code = 80;
  CHECK(dtr__failure_permanent(&f));
  CHECK_EQ_INT(dtr__failure_exit_code(&f), 80);
  j = dtr__failure_to_json(&f);
  CHECK(j && dtr__failure_from_json(j, strlen(j), &g) == DTR_OK);
  CHECK(g.step == 57);
  CHECK_EQ_STR(g.phase, "checkpoint save");
  CHECK_EQ_STR(g.reason, "disk \"full\"");
  free(j);
  dtr__failure_describe(&f, d, sizeof d);
  CHECK(strstr(d, "a permanent failure: no restart) in phase 'checkpoint save' at step 57: disk \"full\""));
  CHECK(dtr__failure_same(&f, &g));
  g.step = 58;
  CHECK(!dtr__failure_same(&f, &g));
  g.step = f.step = -1; /* an unknown step is never "the same" */
  CHECK(!dtr__failure_same(&f, &g));
  f.exit_code = 3;
  CHECK(!dtr__failure_permanent(&f));
  strcpy(f.kind, "hung");
  f.step = 9;
  f.idle_s = 3.25;
  f.limit_s = 3;
  strcpy(f.dump, "/logs/rank_5.threads.txt");
  CHECK_EQ_INT(dtr__failure_exit_code(&f), 1);
  j = dtr__failure_to_json(&f);
  CHECK(j && dtr__failure_from_json(j, strlen(j), &g) == DTR_OK);
  CHECK(g.idle_s == 3.25 && g.limit_s == 3);
  CHECK_EQ_STR(g.dump, "/logs/rank_5.threads.txt");
  free(j);
  dtr__failure_describe(&f, d, sizeof d);
  CHECK(strstr(d, "made no progress for 3.2 s (limit 3 s) in phase 'checkpoint save' at step 9"));
  /* malformed input is refused, not crashed on */
  const char *bad[] = {
      "", "{", "{\"a\"", "{\"a\":}", "[1]", "{\"last_lines\": [1]}", "{\"x\": \"unterminated"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_EQ_INT(dtr__failure_from_json(bad[i], strlen(bad[i]), &g), DTR_ERR_PROTOCOL);
}

static void test_env_and_path(void) {
  setenv("DTRAIN_TEST_X", "1", 1);
  dtr__env e;
  CHECK_EQ_INT(dtr__env_init(&e, NULL), DTR_OK);
  CHECK_EQ_STR(dtr__env_get(&e, "DTRAIN_TEST_X"), "1");
  CHECK_EQ_INT(dtr__env_set(&e, "DTRAIN_TEST_X", "2"), DTR_OK);
  CHECK_EQ_STR(dtr__env_get(&e, "DTRAIN_TEST_X"), "2");
  CHECK_EQ_INT(dtr__env_default(&e, "DTRAIN_TEST_X", "3"), DTR_OK);
  CHECK_EQ_STR(dtr__env_get(&e, "DTRAIN_TEST_X"), "2");
  CHECK_EQ_INT(dtr__env_default(&e, "DTRAIN_TEST_Y", "4"), DTR_OK);
  CHECK_EQ_STR(dtr__env_get(&e, "DTRAIN_TEST_Y"), "4");
  CHECK(dtr__env_get(&e, "DTRAIN_TEST") == NULL);
  int count = 0;
  for (int i = 0; e.v[i]; i++) count += strncmp(e.v[i], "DTRAIN_TEST_X=", 14) == 0;
  CHECK_EQ_INT(count, 1);
  dtr__env_free(&e);

  char out[4096];
  CHECK_EQ_INT(dtr__find_program("sh", out, sizeof out, err, sizeof err), DTR_OK);
  CHECK(strstr(out, "/sh") != NULL);
  CHECK_EQ_INT(dtr__find_program("no-such-program-dtrain", out, sizeof out, err, sizeof err),
               DTR_ERR_NOT_FOUND);
  CHECK(strstr(err, "no-such-program-dtrain") != NULL);
  CHECK_EQ_INT(dtr__find_program("/etc/passwd", out, sizeof out, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "not executable") != NULL);
  CHECK_EQ_INT(dtr__find_program("/tmp", out, sizeof out, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "directory") != NULL);
  CHECK_EQ_INT(dtr__find_program("/nonexistent/x", out, sizeof out, err, sizeof err), DTR_ERR_NOT_FOUND);
}

int main(void) {
  test_assign();
  test_output();
  test_report();
  test_env_and_path();
  return TEST_EXIT();
}
