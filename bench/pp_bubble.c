/* pp_bubble — the pipeline bubble as executed: each rank (one stage, under `dtrain launch`) runs the
 * real executor (dtr_pp_pipe) with a uniform synthetic stage: a forward of one chunk sleeps f/v ms, a
 * backward b/v ms (sleeping, so the ranks do not compete for cores and the idle time is the schedule's,
 * not the machine's), activations of --act floats really travel. Rank 0 gathers every stage's action
 * timings and prints, for the last of --steps steps (every step starts on all stages at once), the idle
 * fraction (idle / compute, the mean over stages, idle counted until the last stage is done) beside the
 * formula (p-1)/m (interleaved: (p-1)/(v m)), and with --picture a time line of
 * every stage drawn from the recorded times.
 *   pp_bubble --schedule 1f1b|gpipe|interleaved --micro M [--chunks V] [--fwd-ms F] [--bwd-ms B]
 *             [--act N] [--steps S] [--picture] [--json]
 * Picture: one row of forwards and one of backwards per stage; a cell shows the micro-batch being run
 * (0-9, then a-z), upper case for chunk 1 of the interleaved schedule (A-Z), '#' beyond; blank = idle. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtrain/comm.h"
#include "dtrain/parallel.h"
#include "dtrain/store.h"

typedef struct work {
  double fwd_s, bwd_s;
} work;

static void nap(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static dtr_result fwd(void *arg, int mb, int chunk, int slot, const float *in, float *out) {
  const work *w = arg;
  nap(w->fwd_s);
  if (out && in) out[0] = in[0] + 1;
  (void)mb, (void)chunk, (void)slot;
  return DTR_OK;
}

static dtr_result bwd(void *arg, int mb, int chunk, int slot, const float *dout, float *din) {
  const work *w = arg;
  nap(w->bwd_s);
  if (din && dout) din[0] = dout[0];
  (void)mb, (void)chunk, (void)slot;
  return DTR_OK;
}

static char cell(const dtr_pp_action *a) {
  const char *digits = a->chunk == 0 ? "0123456789abcdefghijklmnopqrstuvwxyz" : "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  if (a->chunk > 1 || a->micro >= (int)strlen(digits)) return '#';
  return digits[a->micro];
}

int main(int argc, char **argv) {
  const char *rs = getenv("RANK"), *ws = getenv("WORLD_SIZE");
  if (!rs || !ws) {
    fprintf(stderr, "pp_bubble: run under dtrain launch (one rank per stage)\n");
    return 2;
  }
  int rank = atoi(rs), p = atoi(ws), steps = 3, picture = 0, json = 0;
  double fwd_ms = 4, bwd_ms = 8;
  dtr_pp_config cfg = {DTR_PP_1F1B, 8, 1, 16384};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--picture")) {
      picture = 1;
    } else if (!strcmp(a, "--json")) {
      json = 1;
    } else if (!strcmp(a, "--schedule") && ++i) {
      if (dtr_pp_schedule_parse(v, &cfg.schedule) != DTR_OK) return fprintf(stderr, "bad --schedule\n"), 2;
    } else if (!strcmp(a, "--micro") && ++i) {
      cfg.micro_batches = atoi(v);
    } else if (!strcmp(a, "--chunks") && ++i) {
      cfg.chunks = atoi(v);
    } else if (!strcmp(a, "--fwd-ms") && ++i) {
      fwd_ms = atof(v);
    } else if (!strcmp(a, "--bwd-ms") && ++i) {
      bwd_ms = atof(v);
    } else if (!strcmp(a, "--act") && ++i) {
      cfg.act_count = (size_t)atol(v);
    } else if (!strcmp(a, "--steps") && ++i) {
      steps = atoi(v);
    } else {
      fprintf(stderr, "pp_bubble: unknown argument %s (see the comment at the top of bench/pp_bubble.c)\n",
              a);
      return 2;
    }
  }
  work w = {fwd_ms / 1e3 / cfg.chunks, bwd_ms / 1e3 / cfg.chunks};
  char err[512] = "";
  dtr_store *store = NULL;
  dtr_comm *pp = NULL;
  dtr_pp_pipe *pipe = NULL;
  dtr_comm_config cc = dtr_comm_config_default();
  cc.name = "pp";
  dtr_pp_stage st = {fwd, bwd, &w};
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK ||
      dtr_comm_create(store, rank, p, &cc, &pp, err, sizeof err) != DTR_OK ||
      dtr_pp_pipe_create(pp, &cfg, &st, &pipe, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "pp_bubble rank %d: %s\n", rank, err);
    return 1;
  }
  /* every step starts on every stage together (a barrier), so that the stages' clocks, each counted
   * from its own step start, line up in the picture */
  for (int s = 0; s < steps; s++)
    if (dtr_barrier(pp, NULL) != DTR_OK || dtr_pp_pipe_step(pipe, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "pp_bubble rank %d: %s\n", rank, err);
      return 1;
    }
  dtr_pp_timing t;
  dtr_pp_pipe_timing(pipe, &t);
  int n = t.n;
  /* gather [start..., end..., total] of every stage on rank 0 */
  double *mine = malloc(sizeof(double) * (size_t)(2 * n + 1)),
         *all = malloc(sizeof(double) * (size_t)(2 * n + 1) * p);
  memcpy(mine, t.start, sizeof(double) * n);
  memcpy(mine + n, t.end, sizeof(double) * n);
  mine[2 * n] = t.total;
  if (dtr_all_gather(pp, mine, all, (size_t)(2 * n + 1), DTR_F64, NULL) != DTR_OK) {
    fprintf(stderr, "pp_bubble rank %d: gather: %s\n", rank, dtr_comm_last_error(pp));
    return 1;
  }
  if (rank == 0) {
    /* the step lasts until its last stage is done: a stage that finishes early idles until then */
    double idle_sum = 0, span = 0;
    for (int s = 0; s < p; s++)
      if (all[(size_t)s * (2 * n + 1) + 2 * n] > span) span = all[(size_t)s * (2 * n + 1) + 2 * n];
    for (int s = 0; s < p; s++) {
      const double *r = all + (size_t)s * (2 * n + 1);
      double busy = 0;
      for (int i = 0; i < n; i++) busy += r[n + i] - r[i];
      idle_sum += (span - busy) / busy;
    }
    double idle = idle_sum / p, formula = (double)(p - 1) / ((double)cfg.chunks * cfg.micro_batches);
    if (json)
      printf(
          "{\"schedule\": \"%s\", \"p\": %d, \"m\": %d, \"v\": %d, \"idle\": %.4f, \"formula\": %.4f, "
          "\"step_s\": %.4f}\n",
          dtr_pp_schedule_name(cfg.schedule), p, cfg.micro_batches, cfg.chunks, idle, formula, span);
    else
      printf("%-12s p %d  m %2d  v %d  idle/compute %.3f  formula %.3f  ratio %.2f  step %.1f ms\n",
             dtr_pp_schedule_name(cfg.schedule), p, cfg.micro_batches, cfg.chunks, idle, formula,
             formula > 0 ? idle / formula : NAN, 1e3 * span);
    if (picture) {
      /* one column per quarter of the forward time of a chunk */
      double q = w.fwd_s / 2;
      int cols = (int)(span / q) + 1;
      char *row = malloc((size_t)cols + 1);
      for (int s = 0; s < p; s++) {
        const double *r = all + (size_t)s * (2 * n + 1);
        dtr_pp_action a[4096];
        int na = 0;
        dtr_pp_schedule(cfg.schedule, p, cfg.micro_batches, cfg.chunks, s, a, 4096, &na, err, sizeof err);
        for (int b = 0; b < 2; b++) {
          memset(row, ' ', (size_t)cols);
          row[cols] = 0;
          for (int i = 0; i < na; i++) {
            if (a[i].backward != b) continue;
            int c0 = (int)lround(r[i] / q), c1 = (int)lround(r[n + i] / q);
            for (int c = c0; c < c1 && c < cols; c++) row[c] = cell(&a[i]);
          }
          printf("stage %d %s |%s|\n", s, b ? "B" : "F", row);
        }
      }
      free(row);
    }
  }
  free(mine);
  free(all);
  dtr_pp_pipe_destroy(pipe);
  dtr_comm_destroy(pp);
  dtr_store_close(store);
  return 0;
}
