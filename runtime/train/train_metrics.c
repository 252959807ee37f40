/* Rank 0's view of training: a progress line every log_every steps, metrics.csv with one row per step
 * (a resumed run keeps the rows up to its checkpoint and continues the file), and loss.png drawn by
 * gnuplot when it is installed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/path_search.h"
#include "runtime/train/train_internal.h"

extern char **environ;

#define CSV_HEADER "step,loss,lr,tokens_per_s,step_ms,grad_norm,dp_wait_ms,accuracy\n"

struct dtr__metrics {
  char dir[DTR_RECIPE_STR];
  char csv_path[DTR_RECIPE_STR + 32];
  FILE *csv;
  int64_t total, log_every;
  int64_t first; /* this process's first step: shown, so that a resumed run says when it trains again */
  int has_accuracy;
  /* the window since the last progress line, for smoothed tok/s and ms/step */
  double win_ms, win_tokens;
  int64_t win_steps;
};

/* Keep the header and rows with step <= keep_step of an existing file (a resumed run). */
static dtr_result keep_rows(const char *path, int64_t keep_step, char **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  FILE *f = fopen(path, "r");
  if (!f) return DTR_OK;
  char *buf = NULL, *line = NULL;
  size_t n = 0, lcap = 0;
  FILE *mem = open_memstream(&buf, &n);
  if (!mem) {
    fclose(f);
    return DTR_ERR_NOMEM;
  }
  ssize_t len;
  while ((len = getline(&line, &lcap, f)) > 0) {
    char *end = NULL;
    long long step = strtoll(line, &end, 10);
    if (end == line || *end != ',' || step > keep_step || step < 1) continue;
    fwrite(line, 1, (size_t)len, mem);
  }
  free(line);
  fclose(f);
  fclose(mem);
  *out = buf;
  *outlen = n;
  return DTR_OK;
}

dtr_result dtr__metrics_open(const char *run_dir, int64_t start_step, int64_t total_steps, int log_every,
                             dtr__metrics **out, char *err, size_t errcap) {
  *out = NULL;
  dtr__metrics *m = calloc(1, sizeof *m);
  if (!m) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "metrics: out of memory");
  snprintf(m->dir, sizeof m->dir, "%s", run_dir);
  snprintf(m->csv_path, sizeof m->csv_path, "%s/metrics.csv", run_dir);
  m->total = total_steps;
  m->first = start_step + 1;
  m->log_every = log_every > 0 ? log_every : 1;
  if (dtr__mkdir_p(run_dir, 0755) != 0) {
    dtr_result rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "job.run_dir %s: %s", run_dir, strerror(errno));
    free(m);
    return rc;
  }
  char *rows = NULL;
  size_t nrows = 0;
  if (start_step > 0 && keep_rows(m->csv_path, start_step, &rows, &nrows) != DTR_OK) {
    free(m);
    return dtr__fail(err, errcap, DTR_ERR_NOMEM, "metrics: out of memory");
  }
  m->csv = fopen(m->csv_path, "w");
  if (!m->csv) {
    dtr_result rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: %s", m->csv_path, strerror(errno));
    free(rows);
    free(m);
    return rc;
  }
  fputs(CSV_HEADER, m->csv);
  if (rows) fwrite(rows, 1, nrows, m->csv);
  free(rows);
  fflush(m->csv);
  *out = m;
  return DTR_OK;
}

void dtr__fmt_thousands(double v, char *buf, size_t cap) {
  char raw[64];
  snprintf(raw, sizeof raw, "%.0f", v < 0 ? 0 : v);
  size_t len = strlen(raw), o = 0;
  for (size_t i = 0; i < len && o + 2 < cap; i++) {
    if (i && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = raw[i];
  }
  buf[o] = 0;
}

static void fmt_eta(double s, char *buf, size_t cap) {
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, cap, "%lds", t);
}

void dtr__metrics_step(dtr__metrics *m, const dtr__step_record *rec) {
  if (!m) return;
  /* %.9g round-trips a float and %.17g a double: two runs' CSVs compare bit for bit as text. */
  fprintf(m->csv, "%lld,%.9g,%.9g,%.1f,%.3f,%.9g,%.3f,", (long long)rec->step, rec->loss, rec->lr,
          rec->tokens_per_s, rec->step_ms, rec->grad_norm, rec->dp_wait_ms);
  if (!isnan(rec->accuracy)) {
    fprintf(m->csv, "%.4f", rec->accuracy);
    m->has_accuracy = 1;
  }
  fputc('\n', m->csv);
  m->win_ms += rec->step_ms;
  m->win_tokens += rec->tokens_per_s * rec->step_ms / 1e3;
  m->win_steps++;
  if (rec->step != m->first && rec->step % m->log_every != 0 && rec->step != m->total && !rec->note) return;
  fflush(m->csv);
  double ms = m->win_ms / (double)m->win_steps;
  char tok[32], eta[32], acc[32] = "";
  dtr__fmt_thousands(m->win_ms > 0 ? m->win_tokens / (m->win_ms / 1e3) : 0, tok, sizeof tok);
  fmt_eta(ms / 1e3 * (double)(m->total - rec->step), eta, sizeof eta);
  if (!isnan(rec->accuracy)) snprintf(acc, sizeof acc, " | acc %.1f%%", 100.0 * rec->accuracy);
  int w = snprintf(NULL, 0, "%lld", (long long)m->total);
  printf("step %*lld/%lld | loss %.4f | lr %.1e | %s tok/s | %.1f ms/step | ETA %s%s%s\n", w,
         (long long)rec->step, (long long)m->total, rec->loss, rec->lr, tok, ms, eta, acc,
         rec->note ? rec->note : "");
  fflush(stdout);
  m->win_ms = m->win_tokens = 0;
  m->win_steps = 0;
}

void dtr__metrics_plot(dtr__metrics *m, const char *title) {
  /* looked up first, so that a missing gnuplot is silent, not a spawn error */
  char gnuplot[PATH_MAX];
  if (!m || dtr__find_in_path("gnuplot", gnuplot, sizeof gnuplot) != 0) return;
  fflush(m->csv);
  char gp[DTR_RECIPE_STR + 32], png[DTR_RECIPE_STR + 32];
  snprintf(gp, sizeof gp, "%s/loss.gp", m->dir);
  snprintf(png, sizeof png, "%s/loss.png", m->dir);
  FILE *f = fopen(gp, "w");
  if (!f) {
    DTR_WARN("loss plot: %s: %s", gp, strerror(errno));
    return;
  }
  /* Paths are quoted with '...' in gnuplot; a quote inside one would break the script. */
  if (strchr(m->dir, '\'')) {
    fclose(f);
    DTR_WARN("loss plot skipped: the run directory %s contains a quote", m->dir);
    return;
  }
  /* the title inside '...': a quote in it would end the string */
  char t[256];
  snprintf(t, sizeof t, "%s", title ? title : "");
  for (char *q = t; *q; q++)
    if (*q == '\'' || *q == '\\') *q = '`';
  /* a log axis: the loss falls by orders of magnitude, and below 0.05 a linear one shows a flat line */
  fprintf(f,
          "set terminal png size 900,500\n"
          "set output '%s'\n"
          "set title '%s' noenhanced\n"
          "set datafile separator ','\n"
          "set key autotitle columnhead\n"
          "set logscale y\n"
          "set xlabel 'step'\nset ylabel 'loss (log scale)'\nset grid\n",
          png, t);
  if (m->has_accuracy) {
    fprintf(f,
            "set y2label 'held-out exact-match accuracy'\nset y2range [0:1]\nset y2tics\nset ytics nomirror\n"
            "plot '%s' using 1:2 with lines lw 2 title 'loss', '' using 1:8 axes x1y2 with linespoints "
            "title 'accuracy'\n",
            m->csv_path);
  } else {
    fprintf(f, "plot '%s' using 1:2 with lines lw 2 title 'loss'\n", m->csv_path);
  }
  fclose(f);
  pid_t pid;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  char *argv[] = {"gnuplot", gp, NULL};
  int e = posix_spawn(&pid, gnuplot, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (e != 0) {
    DTR_WARN("loss plot: cannot start gnuplot: %s", strerror(e));
    return;
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) DTR_WARN("loss plot: gnuplot %s failed (status %d)", gp, st);
}

void dtr__metrics_close(dtr__metrics *m) {
  if (!m) return;
  if (m->csv) fclose(m->csv);
  free(m);
}
