/* launch_perf — how fast `dtrain launch` starts a job and restarts one after a crash, next to mpirun.
 *
 * Three measurements, each repeated R times after W warm-up runs, reported as min / median / p90:
 *   start    `dtrain launch --standalone --nproc-per-node N -- launch_worker barrier`, spawn to exit;
 *   mpirun   `mpirun --allow-run-as-root --oversubscribe -np N true`, the anchor for the same;
 *   restart  `dtrain launch ... --max-restarts 1` where rank N-1 exits 3 right after the first barrier:
 *            from the crash (the worker's CLOCK_REALTIME stamp just before it exits) to the last
 *            restarted worker past its barrier (each worker stamps that moment into a shared file).
 * The restart worker is this program itself (`launch_perf --as-restart-worker FILE CRASH_RANK`), so the
 * measurement needs nothing but dtrain and its store. --threshold makes the exit code say whether the
 * medians are within budget (start <= 100 ms, restart <= 1000 ms by default).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/store.h"

extern char **environ;

#define MAX_ARGS 32
#define RUN_TIMEOUT_MS 60000

typedef struct opts {
  const char *dtrain, *worker, *mpirun, *json, *monitor_interval;
  int repeats, warmup, nproc, threshold, skip_mpirun, skip_restart, verbose;
  double max_start_ms, max_restart_ms;
} opts;

typedef struct series {
  const char *name; /* short key for JSON */
  const char *what; /* one line for the table */
  double *ms;
  int n, fail;
  double min, median, p90;
  int valid;
} series;

static char self_dir[PATH_MAX];
static char self_exe[PATH_MAX];

static double now_ms(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------ the restart worker */

/* Append one line with a single write(2) on an O_APPEND file: lines from concurrent ranks never mix. */
static int stamp(const char *file, int rank, int restart, const char *what) {
  char line[128];
  int n = snprintf(line, sizeof line, "%d %d %lld %s\n", rank, restart, (long long)realtime_ns(), what);
  int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  ssize_t w = write(fd, line, (size_t)n);
  close(fd);
  return w == n ? 0 : -1;
}

static int env_int(const char *name, int dflt) {
  const char *v = getenv(name);
  return v && *v ? atoi(v) : dflt;
}

static int restart_worker(const char *file, int crash_rank) {
  int rank = env_int("RANK", -1), world = env_int("WORLD_SIZE", -1);
  int restart = env_int("DTRAIN_RESTART_COUNT", env_int("TORCHELASTIC_RESTART_COUNT", 0));
  char err[256], name[64];
  dtr_store *st = NULL;
  if (rank < 0 || world < 1) {
    fprintf(stderr, "launch_perf worker: RANK/WORLD_SIZE not set\n");
    return 2;
  }
  dtr_result rc = dtr_store_connect_env(30000, &st, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "launch_perf worker %d: store: %s\n", rank, err);
    return 2;
  }
  snprintf(name, sizeof name, "launch_perf/barrier/%d", restart);
  rc = dtr_store_barrier(st, name, world, 30000);
  if (rc != DTR_OK) {
    fprintf(stderr, "launch_perf worker %d: barrier: %s\n", rank, dtr_store_last_error(st));
    dtr_store_close(st);
    return 2;
  }
  dtr_store_close(st);
  if (restart == 0 && rank == crash_rank) {
    stamp(file, rank, restart, "crash");
    return 3;
  }
  if (stamp(file, rank, restart, "passed") != 0) return 2;
  if (restart == 0) {
    sleep(60); /* the agent stops us when the crash opens a new round */
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------ running one command */

/* Spawn argv in its own process group with stdout/stderr to /dev/null (or inherited with -v), wait at
 * most RUN_TIMEOUT_MS. Returns the exit status (128+sig if killed, -1 if it could not start or hung)
 * and the spawn-to-exit time in *ms. */
static int run_cmd(char *const argv[], int verbose, double *ms) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  pid_t pid;
  int status = 0, rc;
  posix_spawn_file_actions_init(&fa);
  if (!verbose) {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  posix_spawnattr_init(&at);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&at, 0);
  double t0 = now_ms(CLOCK_MONOTONIC);
  rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (rc != 0) {
    fprintf(stderr, "launch_perf: cannot start %s: %s\n", argv[0], strerror(rc));
    return -1;
  }
  /* A pidfd gives an exact wake-up on exit with a deadline; fall back to polling if it is missing. */
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
  double deadline = t0 + RUN_TIMEOUT_MS;
  for (;;) {
    /* WNOWAIT: see the exit but leave the zombie, so the pid (our group id) cannot be reused before the
     * group is cleaned up below. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int w = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if (w == 0 && si.si_pid == pid) break;
    if (w < 0 && errno != EINTR) break;
    double left = deadline - now_ms(CLOCK_MONOTONIC);
    if (left <= 0) {
      fprintf(stderr, "launch_perf: %s ran past %d ms; killing its process group\n", argv[0], RUN_TIMEOUT_MS);
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      if (pfd >= 0) close(pfd);
      return -1;
    }
    if (pfd >= 0) {
      struct pollfd p = {.fd = pfd, .events = POLLIN};
      poll(&p, 1, (int)(left + 1));
    } else {
      usleep(500);
    }
  }
  *ms = now_ms(CLOCK_MONOTONIC) - t0;
  if (pfd >= 0) close(pfd);
  /* Whatever the launcher left in its group must not leak into the next run. */
  kill(-pid, SIGKILL);
  if (waitpid(pid, &status, 0) != pid) status = -1;
  if (status == -1) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/* ------------------------------------------------------------------ statistics */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(const double *sorted, int n, double p) { /* nearest rank */
  int i = (int)(p * n + 0.999999) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return sorted[i];
}

static void summarize(series *s) {
  s->valid = s->n > 0;
  if (!s->valid) return;
  qsort(s->ms, (size_t)s->n, sizeof(double), cmp_double);
  s->min = s->ms[0];
  s->median = s->n % 2 ? s->ms[s->n / 2] : (s->ms[s->n / 2 - 1] + s->ms[s->n / 2]) / 2;
  s->p90 = pct(s->ms, s->n, 0.9);
}

/* ------------------------------------------------------------------ the measurements */

static void build_launch_argv(const opts *o, char **argv, int restart, char *nproc, const char *file) {
  int i = 0;
  argv[i++] = (char *)o->dtrain;
  argv[i++] = "launch";
  argv[i++] = "--standalone";
  argv[i++] = "--nproc-per-node";
  argv[i++] = nproc;
  if (restart) {
    argv[i++] = "--max-restarts";
    argv[i++] = "1";
    if (o->monitor_interval) {
      argv[i++] = "--monitor-interval";
      argv[i++] = (char *)o->monitor_interval;
    }
  }
  argv[i++] = "--";
  if (restart) {
    static char crash[16];
    snprintf(crash, sizeof crash, "%d", o->nproc - 1);
    argv[i++] = self_exe;
    argv[i++] = "--as-restart-worker";
    argv[i++] = (char *)file;
    argv[i++] = crash;
  } else {
    argv[i++] = (char *)o->worker;
    argv[i++] = "barrier";
  }
  argv[i] = NULL;
}

static void measure_simple(const opts *o, series *s, char **argv) {
  double ms;
  for (int it = 0; it < o->warmup + o->repeats; it++) {
    int rc = run_cmd(argv, o->verbose, &ms);
    if (it < o->warmup) continue;
    if (rc == 0)
      s->ms[s->n++] = ms;
    else {
      s->fail++;
      if (s->fail <= 3) fprintf(stderr, "launch_perf: %s run %d exited %d\n", s->name, it - o->warmup, rc);
    }
  }
  summarize(s);
}

/* Parse the stamp file of one restart run: the crash stamp and the latest "passed" of restart 1, which
 * must come from every rank. Returns the latency in ms or -1 with a reason. */
static double restart_latency(const char *file, int nproc, char *why, size_t whycap) {
  FILE *f = fopen(file, "r");
  if (!f) {
    snprintf(why, whycap, "no stamp file %s", file);
    return -1;
  }
  long long crash = -1, last = -1;
  int passed1 = 0, rank, restart;
  long long ns;
  char what[16];
  while (fscanf(f, "%d %d %lld %15s", &rank, &restart, &ns, what) == 4) {
    if (!strcmp(what, "crash") && restart == 0) crash = ns;
    if (!strcmp(what, "passed") && restart == 1) {
      passed1++;
      if (ns > last) last = ns;
    }
  }
  fclose(f);
  if (crash < 0 || passed1 != nproc) {
    snprintf(why, whycap, "crash stamp %s, %d of %d ranks past the barrier after the restart",
             crash < 0 ? "missing" : "present", passed1, nproc);
    return -1;
  }
  return (last - crash) / 1e6;
}

static void measure_restart(const opts *o, series *s) {
  char file[PATH_MAX], nproc[16], why[PATH_MAX + 160];
  char *argv[MAX_ARGS];
  double ms;
  snprintf(nproc, sizeof nproc, "%d", o->nproc);
  snprintf(file, sizeof file, "%s/launch_perf.%d.stamps", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           (int)getpid());
  build_launch_argv(o, argv, 1, nproc, file);
  for (int it = 0; it < o->warmup + o->repeats; it++) {
    unlink(file);
    int rc = run_cmd(argv, o->verbose, &ms);
    double lat = rc == 0 ? restart_latency(file, o->nproc, why, sizeof why) : -1;
    if (rc != 0) snprintf(why, sizeof why, "dtrain launch exited %d", rc);
    if (it < o->warmup) continue;
    if (lat >= 0)
      s->ms[s->n++] = lat;
    else {
      s->fail++;
      if (s->fail <= 3) fprintf(stderr, "launch_perf: restart run %d: %s\n", it - o->warmup, why);
    }
  }
  unlink(file);
  summarize(s);
}

/* ------------------------------------------------------------------ report */

static void print_row(const series *s) {
  if (s->valid)
    printf("  %-44s %5d %5d %10.1f %10.1f %10.1f\n", s->what, s->n, s->fail, s->min, s->median, s->p90);
  else
    printf("  %-44s %5d %5d %10s %10s %10s\n", s->what, s->n, s->fail, "n/a", "n/a", "n/a");
}

static void json_series(FILE *f, const series *s, int last) {
  fprintf(f, "    \"%s\": {\"runs\": %d, \"fail\": %d", s->name, s->n, s->fail);
  if (s->valid)
    fprintf(f, ", \"min_ms\": %.6f, \"median_ms\": %.6f, \"p90_ms\": %.6f", s->min, s->median, s->p90);
  fprintf(f, "}%s\n", last ? "" : ",");
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: launch_perf [options]\n"
          "  -n, --repeats R          measured runs of each kind (default 20)\n"
          "  -w, --warmup W           unmeasured runs first (default 1)\n"
          "  -p, --nproc N            workers per job (default 4)\n"
          "  --dtrain PATH            the dtrain CLI (default: dtrain beside this program)\n"
          "  --worker PATH            the barrier worker (default: launch_worker beside this program)\n"
          "  --mpirun PATH            the mpirun anchor (default: mpirun on PATH)\n"
          "  --monitor-interval S     passed to dtrain launch for the restart measurement\n"
          "  --no-mpirun, --no-restart  skip a measurement\n"
          "  --json FILE              also write the results as JSON to FILE\n"
          "  --threshold              exit 1 if a median is over budget (see the two below)\n"
          "  --max-start-ms MS        start-to-finish budget (default 100)\n"
          "  --max-restart-ms MS      restart latency budget (default 1000)\n"
          "  -v, --verbose            show the launched commands' output\n");
}

static int parse(int argc, char **argv, opts *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                              \
  do {                                                       \
    if (!v) {                                                \
      fprintf(stderr, "launch_perf: %s needs a value\n", a); \
      return -1;                                             \
    }                                                        \
    i++;                                                     \
  } while (0)
    if (!strcmp(a, "-n") || !strcmp(a, "--repeats")) {
      NEEDV();
      o->repeats = atoi(v);
    } else if (!strcmp(a, "-w") || !strcmp(a, "--warmup")) {
      NEEDV();
      o->warmup = atoi(v);
    } else if (!strcmp(a, "-p") || !strcmp(a, "--nproc")) {
      NEEDV();
      o->nproc = atoi(v);
    } else if (!strcmp(a, "--dtrain")) {
      NEEDV();
      o->dtrain = v;
    } else if (!strcmp(a, "--worker")) {
      NEEDV();
      o->worker = v;
    } else if (!strcmp(a, "--mpirun")) {
      NEEDV();
      o->mpirun = v;
    } else if (!strcmp(a, "--monitor-interval")) {
      NEEDV();
      o->monitor_interval = v;
    } else if (!strcmp(a, "--json")) {
      NEEDV();
      o->json = v;
    } else if (!strcmp(a, "--max-start-ms")) {
      NEEDV();
      o->max_start_ms = atof(v);
    } else if (!strcmp(a, "--max-restart-ms")) {
      NEEDV();
      o->max_restart_ms = atof(v);
    } else if (!strcmp(a, "--threshold")) {
      o->threshold = 1;
    } else if (!strcmp(a, "--no-mpirun")) {
      o->skip_mpirun = 1;
    } else if (!strcmp(a, "--no-restart")) {
      o->skip_restart = 1;
    } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
      o->verbose = 1;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 1;
    } else {
      fprintf(stderr, "launch_perf: unknown option %s\n", a);
      usage(stderr);
      return -1;
    }
#undef NEEDV
  }
  if (o->repeats < 1 || o->repeats > 10000 || o->warmup < 0 || o->nproc < 2 || o->nproc > 256) {
    fprintf(stderr, "launch_perf: need 1 <= repeats <= 10000, warmup >= 0, 2 <= nproc <= 256\n");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "--as-restart-worker")) return restart_worker(argv[2], atoi(argv[3]));

  ssize_t len = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (len <= 0) {
    fprintf(stderr, "launch_perf: cannot find my own executable\n");
    return 2;
  }
  self_exe[len] = 0;
  strcpy(self_dir, self_exe);
  *strrchr(self_dir, '/') = 0;
  static char def_dtrain[PATH_MAX + 16], def_worker[PATH_MAX + 16];
  snprintf(def_dtrain, sizeof def_dtrain, "%s/dtrain", self_dir);
  snprintf(def_worker, sizeof def_worker, "%s/launch_worker", self_dir);

  opts o = {.dtrain = def_dtrain,
            .worker = def_worker,
            .mpirun = "mpirun",
            .repeats = 20,
            .warmup = 1,
            .nproc = 4,
            .max_start_ms = 100,
            .max_restart_ms = 1000};
  int pr = parse(argc, argv, &o);
  if (pr) return pr > 0 ? 0 : 2;
  if (access(o.dtrain, X_OK) != 0 || access(o.worker, X_OK) != 0) {
    fprintf(stderr, "launch_perf: %s or %s is not executable (see --dtrain, --worker)\n", o.dtrain, o.worker);
    return 2;
  }
  double *buf = calloc((size_t)3 * (size_t)(o.repeats), sizeof(double));
  if (!buf) return 2;
  series start = {"dtrain_start", "start-to-finish: dtrain launch (barrier)", buf, 0, 0, 0, 0, 0, 0};
  series mpi = {"mpirun_start", "start-to-finish: mpirun (true)", buf + o.repeats, 0, 0, 0, 0, 0, 0};
  series rst = {
      "dtrain_restart", "restart latency: crash -> all past barrier", buf + 2 * o.repeats, 0, 0, 0, 0, 0, 0};

  char nproc[16], *argv_launch[MAX_ARGS];
  snprintf(nproc, sizeof nproc, "%d", o.nproc);
  build_launch_argv(&o, argv_launch, 0, nproc, NULL);
  char *argv_mpi[] = {(char *)o.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", nproc, "true", NULL};

  printf("# launch_perf: nproc %d, repeats %d, warmup %d\n# dtrain: %s\n# worker: %s\n", o.nproc, o.repeats,
         o.warmup, o.dtrain, o.worker);
  printf("#\n#  %-44s %5s %5s %10s %10s %10s\n", "measurement", "runs", "fail", "min(ms)", "median(ms)",
         "p90(ms)");
  fflush(stdout);
  measure_simple(&o, &start, argv_launch);
  print_row(&start);
  fflush(stdout);
  if (!o.skip_mpirun) {
    measure_simple(&o, &mpi, argv_mpi);
    print_row(&mpi);
    fflush(stdout);
  }
  if (!o.skip_restart) {
    measure_restart(&o, &rst);
    print_row(&rst);
  }
  printf("#\n");
  if (start.valid && mpi.valid)
    printf("# start-to-finish median, dtrain / mpirun: %.2f\n", start.median / mpi.median);
  if (start.valid && rst.valid)
    printf("# restart latency / start-to-finish (medians): %.2f\n", rst.median / start.median);

  int over = 0;
  if (o.threshold) {
    if (!start.valid || start.fail || start.median > o.max_start_ms) over = 1;
    if (!o.skip_restart && (!rst.valid || rst.fail || rst.median > o.max_restart_ms)) over = 1;
    printf(
        "# threshold: start-to-finish median <= %.0f ms, restart latency median <= %.0f ms, no failures: "
        "%s\n",
        o.max_start_ms, o.max_restart_ms, over ? "FAILED" : "ok");
  }
  fflush(stdout);

  if (o.json) {
    FILE *f = fopen(o.json, "w");
    if (!f) {
      fprintf(stderr, "launch_perf: cannot write %s: %s\n", o.json, strerror(errno));
      free(buf);
      return 2;
    }
    fprintf(f, "{\n  \"nproc\": %d, \"repeats\": %d, \"warmup\": %d,\n  \"results\": {\n", o.nproc, o.repeats,
            o.warmup);
    json_series(f, &start, 0);
    json_series(f, &mpi, 0);
    json_series(f, &rst, 1);
    fprintf(f,
            "  },\n  \"threshold\": {\"enabled\": %s, \"max_start_ms\": %.1f, \"max_restart_ms\": %.1f, "
            "\"passed\": %s}\n}\n",
            o.threshold ? "true" : "false", o.max_start_ms, o.max_restart_ms, over ? "false" : "true");
    fclose(f);
  }
  free(buf);
  return over ? 1 : 0;
}
