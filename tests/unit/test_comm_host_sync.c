/* The host backend's synchronisation under failure, with forked ranks on one shared segment: a rank
 * that arrives late is named in the survivors' timeout, a rank that dies is reported within a fraction
 * of the deadline, an abort on one rank ends its peers' waits at once, and nothing is left in /dev/shm.
 * Each scenario is bounded: the parent kills its children after 30 s. */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/comm.h"
#include "dtrain/store.h"
#include "tests/unit/test_util.h"

#define TOKEN "host-sync-test-token"
#define NRANKS 4

static int g_port;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Rank 0 of every job this test ran: a segment's name starts with its creator's pid. */
static pid_t g_creators[8];
static int g_ncreators;

/* Names in /dev/shm of segments created by this test's jobs (other tests may run beside it). */
static int count_our_segments(void) {
  int k = 0;
  DIR *d = opendir("/dev/shm");
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "dtrain.", 7) != 0) continue;
    long pid = strtol(e->d_name + 7, NULL, 10);
    for (int i = 0; i < g_ncreators; i++)
      if (pid == (long)g_creators[i]) {
        fprintf(stderr, "left behind: /dev/shm/%s\n", e->d_name);
        k++;
      }
  }
  closedir(d);
  return k;
}

typedef int (*rank_fn)(dtr_comm *c, int rank);

/* In a child: connect, create the communicator named `name`, run fn; exit status = failed checks. */
static void child(const char *name, int rank, int timeout_ms, rank_fn fn) {
  dtr_store *st = NULL;
  char err[512];
  if (dtr_store_connect("127.0.0.1", g_port, TOKEN, 10000, &st, err, sizeof err)) {
    fprintf(stderr, "rank %d: connect: %s\n", rank, err);
    _exit(100);
  }
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.backend = DTR_BACKEND_HOST;
  cfg.timeout_ms = timeout_ms;
  cfg.name = name;
  dtr_comm *c = NULL;
  dtr_result rc = dtr_comm_create(st, rank, NRANKS, &cfg, &c, err, sizeof err);
  if (rc) {
    fprintf(stderr, "rank %d: create: %s: %s\n", rank, dtr_strerror(rc), err);
    _exit(101);
  }
  int fails = fn(c, rank);
  dtr_comm_destroy(c);
  dtr_store_close(st);
  _exit(fails > 99 ? 99 : fails);
}

/* Fork NRANKS ranks, wait (at most 30 s); returns the summed failures (a killed-on-purpose rank
 * reporting SIGKILL counts as 0). */
static int run_ranks(const char *name, int timeout_ms, rank_fn fn) {
  pid_t pids[NRANKS];
  for (int r = 0; r < NRANKS; r++) {
    pids[r] = fork();
    if (pids[r] == 0) child(name, r, timeout_ms, fn);
  }
  if (g_ncreators < (int)(sizeof g_creators / sizeof g_creators[0])) g_creators[g_ncreators++] = pids[0];
  int fails = 0;
  long long until = now_ms() + 30000;
  for (int r = 0; r < NRANKS; r++) {
    int st = 0;
    for (;;) {
      pid_t p = waitpid(pids[r], &st, WNOHANG);
      if (p == pids[r]) break;
      if (now_ms() > until) {
        fprintf(stderr, "%s: rank %d hangs; killing it\n", name, r);
        kill(pids[r], SIGKILL);
        waitpid(pids[r], &st, 0);
        fails++;
        break;
      }
      usleep(10000);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
      fprintf(stderr, "%s: rank %d exited with %d\n", name, r, WEXITSTATUS(st));
      fails += WEXITSTATUS(st);
    } else if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL) {
      fprintf(stderr, "%s: rank %d killed by signal %d\n", name, r, WTERMSIG(st));
      fails++;
    }
  }
  return fails;
}

/* ---- scenarios (each returns its failed checks; run inside a child) */

static int sum_ok(dtr_comm *c, int rank) {
  int fails = 0;
  float v[1000], out[1000];
  for (int i = 0; i < 1000; i++) v[i] = (float)(rank + i);
  dtr_result rc = dtr_all_reduce(c, v, out, 1000, DTR_F32, DTR_SUM, NULL);
  if (rc) {
    fprintf(stderr, "rank %d: all-reduce: %s\n", rank, dtr_comm_last_error(c));
    return 1;
  }
  for (int i = 0; i < 1000; i++)
    if (out[i] != (float)(6 + 4 * i)) fails++;
  return fails ? 1 : 0;
}

static int late_rank(dtr_comm *c, int rank) {
  if (sum_ok(c, rank)) return 1;
  if (rank == 2) {
    usleep(1500 * 1000);
    return 0; /* its own result does not matter */
  }
  long long t0 = now_ms();
  float x = 1;
  dtr_result rc = dtr_barrier(c, NULL);
  if (rc == DTR_OK) rc = dtr_all_reduce(c, &x, &x, 1, DTR_F32, DTR_SUM, NULL);
  long long dt = now_ms() - t0;
  const char *e = dtr_comm_last_error(c);
  int bad = rc != DTR_ERR_TIMEOUT || !strstr(e, "rank 2 did not arrive") || dt < 450 || dt > 1400;
  if (bad) fprintf(stderr, "rank %d: late peer: rc %s after %lld ms: %s\n", rank, dtr_strerror(rc), dt, e);
  /* the communicator is aborted after a timeout */
  if (dtr_barrier(c, NULL) != DTR_ERR_ABORTED) bad = 1;
  return bad;
}

static int dying_rank(dtr_comm *c, int rank) {
  if (sum_ok(c, rank)) return 1;
  if (rank == 3) raise(SIGKILL);
  long long t0 = now_ms();
  float buf[100000];
  memset(buf, 0, sizeof buf);
  dtr_result rc = DTR_OK;
  for (int i = 0; i < 3 && rc == DTR_OK; i++)
    rc = dtr_all_reduce(c, buf, buf, 100000, DTR_F32, DTR_SUM, NULL);
  long long dt = now_ms() - t0;
  const char *e = dtr_comm_last_error(c);
  /* Rank 3 is noticed through its lock on the segment long before the 20 s deadline; a peer that
   * noticed first and aborted may be named instead. */
  int bad = rc == DTR_OK || dt > 2000 || (!strstr(e, "rank 3") && !strstr(e, "aborted"));
  if (bad) fprintf(stderr, "rank %d: dead peer: rc %s after %lld ms: %s\n", rank, dtr_strerror(rc), dt, e);
  return bad;
}

static int aborting_rank(dtr_comm *c, int rank) {
  if (sum_ok(c, rank)) return 1;
  if (rank == 0) {
    usleep(200 * 1000);
    dtr_comm_abort(c);
    usleep(500 * 1000); /* stay attached: the peers must learn of the abort, not of an exit */
    return 0;
  }
  long long t0 = now_ms();
  dtr_result rc = dtr_barrier(c, NULL);
  long long dt = now_ms() - t0;
  const char *e = dtr_comm_last_error(c);
  int bad = rc != DTR_ERR_ABORTED || dt > 700 || !strstr(e, "rank 0");
  if (bad) fprintf(stderr, "rank %d: aborted peer: rc %s after %lld ms: %s\n", rank, dtr_strerror(rc), dt, e);
  return bad;
}

/* The store runs in its own process so that the ranks, forked from the test, inherit none of its
 * threads or sockets. Returns its pid; g_port is set. */
static pid_t start_store(void) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dtr_store_server *srv = NULL;
    char err[256];
    int port = -1;
    if (dtr_store_server_create("127.0.0.1", 0, TOKEN, &srv, err, sizeof err) == DTR_OK) {
      port = dtr_store_server_port(srv);
    } else {
      fprintf(stderr, "store server: %s\n", err);
    }
    if (write(fds[1], &port, sizeof port) != (ssize_t)sizeof port || port < 0) _exit(1);
    close(fds[1]);
    dtr_store_server_run(srv); /* until killed */
    _exit(0);
  }
  close(fds[1]);
  if (pid < 0 || read(fds[0], &g_port, sizeof g_port) != (ssize_t)sizeof g_port || g_port < 0) pid = -1;
  close(fds[0]);
  return pid;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  alarm(120);
  pid_t store = start_store();
  if (store < 0) {
    fprintf(stderr, "cannot start the store\n");
    return 1;
  }
  CHECK_EQ_INT(run_ranks("late", 600, late_rank), 0);
  CHECK_EQ_INT(run_ranks("dead", 20000, dying_rank), 0);
  CHECK_EQ_INT(run_ranks("abort", 20000, aborting_rank), 0);
  CHECK_EQ_INT(g_ncreators, 3);
  CHECK_EQ_INT(count_our_segments(), 0);
  int st = 0;
  CHECK_EQ_INT(waitpid(store, &st, WNOHANG), 0); /* the store survived the killed rank */
  kill(store, SIGKILL);
  waitpid(store, NULL, 0);
  return TEST_EXIT();
}
