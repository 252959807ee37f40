/* A worker program for `dtrain launch` tests and benchmarks. One mode per run:
 *   env                     print the environment contract as KEY=VALUE lines
 *   barrier                 connect to DTRAIN_STORE, pass one barrier over WORLD_SIZE ranks, exit 0
 *   crash-once RANK [CODE]  barrier; then rank RANK exits CODE (default 3) when DTRAIN_RESTART_COUNT is 0
 *   lines N [LEN]           print N lines of LEN bytes (default 1000) through stdio, as fast as it can
 *   sleep SECONDS           sleep, then exit 0
 *   exit CODE               print a line, exit CODE
 *   kill-self SIGNAL        print a line, raise SIGNAL (default disposition)
 *   trap-term FILE          on SIGTERM write "term RANK" to FILE and exit 0; prints "ready", waits
 *   spawn-grandchild FILE   fork a child that sleeps forever, append its pid to FILE, wait forever
 *   timestamp FILE          barrier; then append "RANK RESTART_COUNT CLOCK_REALTIME_NS" to FILE
 *   progress N MS [R S]     report steps 1..N through dtr_progress_step, one every MS ms, then exit 0; on
 *                           the first attempt rank R enters phase "stuck here" at step S and stops reporting
 *   fail-at S CODE [WHY]    report steps 1..S (20 ms apart), then leave WHY as the reason and exit CODE
 *                           (every attempt)
 * Every wait is bounded (60 s) so a broken launcher cannot leave it running forever. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/runtime.h"
#include "dtrain/store.h"

static const char *env_or(const char *k, const char *d) {
  const char *v = getenv(k);
  return v ? v : d;
}

static int my_rank(void) {
  return atoi(env_or("RANK", "-1"));
}

static int do_barrier(void) {
  dtr_store *c = NULL;
  char err[512];
  dtr_result rc = dtr_store_connect_env(30000, &c, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "launch_worker: cannot connect to the store: %s\n", err);
    return 1;
  }
  char name[256];
  snprintf(name, sizeof name, "launch_worker/%s/%s", env_or("DTRAIN_RUN_ID", "?"),
           env_or("DTRAIN_ATTEMPT", env_or("DTRAIN_RESTART_COUNT", "0")));
  rc = dtr_store_barrier(c, name, atoi(env_or("WORLD_SIZE", "1")), 60000);
  if (rc != DTR_OK) {
    fprintf(stderr, "launch_worker: barrier failed: %s (%s)\n", dtr_strerror(rc), dtr_store_last_error(c));
    dtr_store_close(c);
    return 1;
  }
  dtr_store_close(c);
  return 0;
}

static void append_line(const char *file, const char *line) {
  int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) {
    fprintf(stderr, "launch_worker: cannot open %s: %s\n", file, strerror(errno));
    return;
  }
  ssize_t w = write(fd, line, strlen(line));
  (void)w;
  close(fd);
}

static const char *term_file;

static void on_term(int sig) {
  (void)sig;
  char line[64];
  snprintf(line, sizeof line, "term %d\n", my_rank());
  append_line(term_file, line);
  _exit(0);
}

static void bounded_pause(int seconds) {
  for (int i = 0; i < seconds * 10; i++) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!strcmp(mode, "env")) {
    static const char *keys[] = {"RANK",
                                 "LOCAL_RANK",
                                 "WORLD_SIZE",
                                 "LOCAL_WORLD_SIZE",
                                 "GROUP_RANK",
                                 "GROUP_WORLD_SIZE",
                                 "ROLE_RANK",
                                 "ROLE_WORLD_SIZE",
                                 "ROLE_NAME",
                                 "MASTER_ADDR",
                                 "MASTER_PORT",
                                 "TORCHELASTIC_RESTART_COUNT",
                                 "TORCHELASTIC_MAX_RESTARTS",
                                 "TORCHELASTIC_RUN_ID",
                                 "TORCHELASTIC_USE_AGENT_STORE",
                                 "OMP_NUM_THREADS",
                                 "DTRAIN_STORE",
                                 "DTRAIN_RUN_ID",
                                 "DTRAIN_RESTART_COUNT",
                                 "DTRAIN_NODE_RANK",
                                 "DTRAIN_NNODES",
                                 "DTRAIN_ATTEMPT"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
      printf("%s=%s\n", keys[i], env_or(keys[i], "<unset>"));
    printf("DTRAIN_JOB_TOKEN=%s\n",
           getenv("DTRAIN_JOB_TOKEN") && *getenv("DTRAIN_JOB_TOKEN") ? "<set>" : "<unset>");
    return 0;
  }
  if (!strcmp(mode, "barrier")) return do_barrier();
  if (!strcmp(mode, "crash-once") && argc > 2) {
    if (do_barrier()) return 1;
    int code = argc > 3 ? atoi(argv[3]) : 3;
    if (my_rank() == atoi(argv[2]) && atoi(env_or("DTRAIN_RESTART_COUNT", "0")) == 0) {
      printf("rank %d crashing on purpose with code %d\n", my_rank(), code);
      fflush(stdout);
      return code;
    }
    printf("rank %d done (restart %s)\n", my_rank(), env_or("DTRAIN_RESTART_COUNT", "?"));
    return 0;
  }
  if (!strcmp(mode, "lines") && argc > 2) {
    long n = atol(argv[2]), len = argc > 3 ? atol(argv[3]) : 1000;
    if (len < 16) len = 16;
    char *buf = malloc((size_t)len + 1);
    if (!buf) return 1;
    int rank = my_rank();
    for (long i = 0; i < n; i++) {
      int h = snprintf(buf, (size_t)len + 1, "r%d-l%ld:", rank, i);
      for (long k = h; k < len; k++) buf[k] = (char)('a' + (rank + i + k) % 26);
      buf[len] = '\0';
      fputs(buf, stdout);
      fputc('\n', stdout);
    }
    free(buf);
    return 0;
  }
  if (!strcmp(mode, "sleep") && argc > 2) {
    struct timespec ts;
    double s = atof(argv[2]);
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
    return 0;
  }
  if (!strcmp(mode, "exit") && argc > 2) {
    printf("rank %d exiting with code %s\n", my_rank(), argv[2]);
    fflush(stdout);
    return atoi(argv[2]);
  }
  if (!strcmp(mode, "kill-self") && argc > 2) {
    printf("rank %d raising signal %s\n", my_rank(), argv[2]);
    fflush(stdout);
    signal(atoi(argv[2]), SIG_DFL);
    raise(atoi(argv[2]));
    return 1;
  }
  if (!strcmp(mode, "trap-term") && argc > 2) {
    term_file = argv[2];
    signal(SIGTERM, on_term);
    printf("ready\n");
    fflush(stdout);
    bounded_pause(60);
    return 1;
  }
  if (!strcmp(mode, "spawn-grandchild") && argc > 2) {
    pid_t pid = fork();
    if (pid == 0) {
      bounded_pause(60); /* "forever" for a test */
      _exit(0);
    }
    char line[64];
    snprintf(line, sizeof line, "%d\n", (int)pid);
    append_line(argv[2], line);
    printf("spawned grandchild %d\n", (int)pid);
    fflush(stdout);
    bounded_pause(60);
    return 0;
  }
  if (!strcmp(mode, "timestamp") && argc > 2) {
    if (do_barrier()) return 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char line[128];
    snprintf(line, sizeof line, "%d %s %lld\n", my_rank(), env_or("DTRAIN_RESTART_COUNT", "0"),
             (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    append_line(argv[2], line);
    return 0;
  }
  if (!strcmp(mode, "progress") && argc > 3) {
    long n = atol(argv[2]), ms = atol(argv[3]);
    int hang_rank = argc > 5 ? atoi(argv[4]) : -1;
    long hang_step = argc > 5 ? atol(argv[5]) : -1;
    int first = atoi(env_or("DTRAIN_RESTART_COUNT", "0")) == 0;
    printf("rank %d: progress page %s\n", my_rank(), dtr_progress_active() ? "attached" : "absent");
    fflush(stdout);
    for (long s = 1; s <= n && n <= 100000; s++) {
      dtr_progress_step(s);
      if (first && my_rank() == hang_rank && s == hang_step) {
        dtr_progress_phase("stuck here", 0);
        printf("rank %d: stuck at step %ld on purpose\n", my_rank(), s);
        fflush(stdout);
        bounded_pause(60);
        return 1;
      }
      sleep_ms(ms);
    }
    printf("rank %d: %ld steps done (restart %s)\n", my_rank(), n, env_or("DTRAIN_RESTART_COUNT", "?"));
    return 0;
  }
  if (!strcmp(mode, "fail-at") && argc > 3) {
    long n = atol(argv[2]);
    for (long s = 1; s <= n && n <= 100000; s++) {
      dtr_progress_step(s);
      sleep_ms(20);
    }
    if (argc > 4) dtr_progress_reason(argv[4]);
    printf("rank %d: failing at step %ld with code %s\n", my_rank(), n, argv[3]);
    fflush(stdout);
    return atoi(argv[3]);
  }
  fprintf(stderr, "launch_worker: unknown mode '%s' (see the comment at the top of launch_worker.c)\n", mode);
  return 2;
}
