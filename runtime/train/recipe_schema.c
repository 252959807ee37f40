/* The recipe schema: one table row per key (section, name, type, place in dtr_recipe), the defaults
 * docs/recipes.md lists, typed parsing of one value, "did you mean" suggestions, and the writer of the
 * effective recipe. The table is the single source of the key names: loader, writer and docs agree. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/check.h"
#include "common/log.h"
#include "runtime/train/recipe_internal.h"

#define F(field) offsetof(dtr_recipe, field), sizeof(((dtr_recipe *)0)->field)
#define ROW(sec, name, type) \
  { #sec, #name, DTR__RK_##type, F(sec.name), NULL }
#define ROWC(sec, name, type, ch) \
  { #sec, #name, DTR__RK_##type, F(sec.name), ch }

const char *const dtr__recipe_sections[] = {"job",  "launch", "parallel",   "model",
                                            "data", "train",  "checkpoint", "slurm"};
const int dtr__recipe_nsections = (int)(sizeof dtr__recipe_sections / sizeof dtr__recipe_sections[0]);

const dtr__rkey dtr__recipe_keys[] = {
    ROW(job, name, STR),
    ROW(job, seed, U64),
    ROW(job, run_dir, STR),

    ROW(launch, nproc_per_node, INT),
    {"launch", "nnodes", DTR__RK_NNODES, F(launch.nnodes_min), NULL},
    ROW(launch, max_restarts, INT),
    ROWC(launch, backend, CHOICE, "host|nccl|mpi"),
    ROW(launch, rdzv_endpoint, STR),
    ROW(launch, rdzv_id, STR),
    ROW(launch, node_rank, INT),
    ROW(launch, worker_timeout, DOUBLE),
    ROW(launch, worker_start_timeout, DOUBLE),

    ROW(parallel, dp, INT),
    ROW(parallel, tp, INT),
    ROW(parallel, pp, INT),
    ROWC(parallel, schedule, CHOICE, "gpipe|1f1b|interleaved"),
    ROW(parallel, virtual_stages, INT),
    ROW(parallel, layers_per_stage, INTS),

    ROW(model, vocab_size, INT),
    ROW(model, block_size, INT),
    ROW(model, n_layer, INT),
    ROW(model, n_head, INT),
    ROW(model, n_embd, INT),
    ROW(model, init_from, STR),

    ROWC(data, kind, KIND, "addition|text|tokens"),
    ROW(data, path, STR),
    ROW(data, digits, INT),

    ROW(train, steps, I64),
    ROW(train, global_batch, INT),
    ROW(train, micro_batch, INT),
    ROW(train, lr, DOUBLE),
    ROW(train, min_lr, DOUBLE),
    ROW(train, warmup_steps, I64),
    ROW(train, weight_decay, DOUBLE),
    ROW(train, beta1, DOUBLE),
    ROW(train, beta2, DOUBLE),
    ROW(train, eps, DOUBLE),
    ROW(train, grad_clip, DOUBLE),
    ROW(train, log_every, INT),
    ROW(train, eval_every, INT),
    ROW(train, bucket_mb, DOUBLE),
    ROW(train, first_bucket_mb, DOUBLE),
    ROW(train, overlap, BOOL),
    ROW(train, threads, INT),
    ROW(train, zero, INT),
    ROWC(train, precision, CHOICE, "fp32|bf16"),
    ROWC(train, device, CHOICE, "cpu|cuda"),
    ROWC(train, on_divergence, CHOICE, "stop|restart"),
    ROW(train, divergence_lr_factor, DOUBLE),

    ROW(checkpoint, dir, STR),
    ROW(checkpoint, every, I64),
    ROW(checkpoint, keep, INT),
    ROW(checkpoint, async, BOOL),
    ROW(checkpoint, level, INT),
    ROW(checkpoint, resume, BOOL),

    ROW(slurm, nodes, INT),
    ROW(slurm, gpus_per_node, INT),
    ROW(slurm, cpus_per_node, INT),
    ROW(slurm, mem, STR),
    ROW(slurm, time, STR),
    ROW(slurm, partition, STR),
    ROW(slurm, account, STR),
    ROW(slurm, qos, STR),
    ROW(slurm, constraint, STR),
    ROWC(slurm, signal, CHOICE, "USR1|USR2"),
    ROW(slurm, signal_lead, INT),
    ROW(slurm, max_requeues, INT),
    ROW(slurm, output, STR),
    ROW(slurm, extra, STR),
};
const int dtr__recipe_nkeys = (int)(sizeof dtr__recipe_keys / sizeof dtr__recipe_keys[0]);

void dtr_recipe_defaults(dtr_recipe *r) {
  memset(r, 0, sizeof *r);
  strcpy(r->job.name, "dtrain"); /* dtr_recipe_load uses the recipe file's name when job.name is unset */
  r->job.seed = 1337;
  r->launch.nproc_per_node = 1;
  r->launch.nnodes_min = r->launch.nnodes_max = 1;
  r->launch.max_restarts = 0;
  strcpy(r->launch.backend, "host");
  r->launch.node_rank = -1;
  r->launch.worker_timeout = 180;
  r->launch.worker_start_timeout = 900;
  r->parallel.dp = 0;
  r->parallel.tp = 1;
  r->parallel.pp = 1;
  strcpy(r->parallel.schedule, "1f1b");
  r->parallel.virtual_stages = 1;
  r->model.vocab_size = 0;
  r->model.block_size = 32;
  r->model.n_layer = 2;
  r->model.n_head = 4;
  r->model.n_embd = 64;
  r->data.kind = DTR_DATA_ADDITION;
  r->data.digits = 3;
  r->train.steps = 100;
  r->train.global_batch = 64;
  r->train.micro_batch = 16;
  r->train.lr = 1e-3;
  r->train.min_lr = 1e-4;
  r->train.warmup_steps = 10;
  r->train.weight_decay = 0.1;
  r->train.beta1 = 0.9;
  r->train.beta2 = 0.95;
  r->train.eps = 1e-8;
  r->train.grad_clip = 1.0;
  r->train.log_every = 10;
  r->train.eval_every = 0;
  r->train.bucket_mb = 25;
  r->train.first_bucket_mb = 1;
  r->train.overlap = 1;
  r->train.threads = 0;
  strcpy(r->train.precision, "fp32");
  strcpy(r->train.device, "cpu");
  strcpy(r->train.on_divergence, "stop");
  r->train.divergence_lr_factor = 0.1;
  r->checkpoint.every = 0;
  r->checkpoint.keep = 2;
  r->checkpoint.async = 1;
  r->checkpoint.level = 3;
  r->checkpoint.resume = 1;
  strcpy(r->slurm.signal, "USR2");
  r->slurm.signal_lead = 120;
  r->slurm.max_requeues = 3;
}

int dtr__recipe_key_find(const char *section, const char *name) {
  for (int i = 0; i < dtr__recipe_nkeys; i++)
    if (strcmp(dtr__recipe_keys[i].section, section) == 0 && strcmp(dtr__recipe_keys[i].name, name) == 0)
      return i;
  return -1;
}

int dtr__recipe_section_find(const char *section) {
  for (int i = 0; i < dtr__recipe_nsections; i++)
    if (strcmp(dtr__recipe_sections[i], section) == 0) return i;
  return -1;
}

/* Optimal string alignment distance (Levenshtein plus adjacent swaps: "n_haed" is one typo). */
static int edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return INT_MAX;
  int d[64][64];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    for (size_t j = 1; j <= lb; j++) {
      int cost = a[i - 1] != b[j - 1];
      int v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  }
  return d[la][lb];
}

const char *dtr__recipe_suggest(const char *word, const char *const *cands, int n) {
  const char *best = NULL;
  int bestd = INT_MAX;
  for (int i = 0; i < n; i++) {
    int dd = edit_distance(word, cands[i]);
    if (dd < bestd) {
      bestd = dd;
      best = cands[i];
    }
  }
  /* close enough to be a typo: a third of the word, at least 1, at most 3 edits; or a prefix
   * ("micro" for "micro_batch") */
  size_t l = strlen(word);
  int limit = (int)(l / 3);
  if (limit < 1) limit = 1;
  if (limit > 3) limit = 3;
  if (best && bestd <= limit) return best;
  for (int i = 0; l >= 3 && i < n; i++)
    if (strncmp(cands[i], word, l) == 0) return cands[i];
  return NULL;
}

static dtr_result bad(char *msg, size_t cap, const dtr__rkey *k, const char *what, const char *text) {
  return dtr__fail(msg, cap, DTR_ERR_INVALID, "%s.%s: expected %s, got '%s'", k->section, k->name, what,
                   text);
}

static int parse_i64(const char *s, int64_t *out) {
  if (!*s || strchr(" \t", *s)) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

/* Split "a|b|c" choices into cands (pointers into buf). */
static int split_choices(const char *choices, char *buf, size_t cap, const char **cands, int max) {
  snprintf(buf, cap, "%s", choices);
  int n = 0;
  for (char *save = NULL, *t = strtok_r(buf, "|", &save); t && n < max; t = strtok_r(NULL, "|", &save))
    cands[n++] = t;
  return n;
}

static dtr_result bad_choice(char *msg, size_t cap, const dtr__rkey *k, const char *text) {
  char buf[128], list[160] = "";
  const char *cands[8];
  int n = split_choices(k->choices, buf, sizeof buf, cands, 8);
  for (int i = 0; i < n; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", cands[i]);
  }
  const char *s = dtr__recipe_suggest(text, cands, n);
  return dtr__fail(msg, cap, DTR_ERR_INVALID, "%s.%s: expected one of %s, got '%s'%s%s%s", k->section,
                   k->name, list, text, s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
}

dtr_result dtr__recipe_set(dtr_recipe *r, int ki, const char *text, char *msg, size_t cap) {
  const dtr__rkey *k = &dtr__recipe_keys[ki];
  char *p = (char *)r + k->off;
  int64_t v;
  switch (k->type) {
    case DTR__RK_INT:
      if (parse_i64(text, &v) != 0) return bad(msg, cap, k, "an integer", text);
      if (v < INT_MIN || v > INT_MAX) return bad(msg, cap, k, "an integer that fits in 32 bits", text);
      *(int *)p = (int)v;
      return DTR_OK;
    case DTR__RK_I64:
      if (parse_i64(text, &v) != 0) return bad(msg, cap, k, "an integer", text);
      *(int64_t *)p = v;
      return DTR_OK;
    case DTR__RK_U64: {
      if (!*text || *text == '-' || *text == ' ') return bad(msg, cap, k, "a non-negative integer", text);
      char *end;
      errno = 0;
      unsigned long long u = strtoull(text, &end, 10);
      if (errno || *end) return bad(msg, cap, k, "a non-negative integer", text);
      *(uint64_t *)p = u;
      return DTR_OK;
    }
    case DTR__RK_DOUBLE: {
      if (!*text || strchr(" \t", *text)) return bad(msg, cap, k, "a number", text);
      char *end;
      errno = 0;
      double d = strtod(text, &end);
      if (*end || errno == ERANGE || !isfinite(d)) return bad(msg, cap, k, "a number", text);
      *(double *)p = d;
      return DTR_OK;
    }
    case DTR__RK_BOOL:
      if (!strcasecmp(text, "true") || !strcasecmp(text, "yes") || !strcasecmp(text, "on") ||
          !strcmp(text, "1")) {
        *(int *)p = 1;
        return DTR_OK;
      }
      if (!strcasecmp(text, "false") || !strcasecmp(text, "no") || !strcasecmp(text, "off") ||
          !strcmp(text, "0")) {
        *(int *)p = 0;
        return DTR_OK;
      }
      return bad(msg, cap, k, "true or false", text);
    case DTR__RK_STR:
      if (strlen(text) >= k->size)
        return dtr__fail(msg, cap, DTR_ERR_INVALID, "%s.%s: longer than %zu characters", k->section, k->name,
                         k->size - 1);
      strcpy(p, text);
      return DTR_OK;
    case DTR__RK_CHOICE: {
      char buf[128];
      const char *cands[8];
      int n = split_choices(k->choices, buf, sizeof buf, cands, 8);
      for (int i = 0; i < n; i++)
        if (strcmp(text, cands[i]) == 0) {
          snprintf(p, k->size, "%s", text);
          return DTR_OK;
        }
      return bad_choice(msg, cap, k, text);
    }
    case DTR__RK_KIND: {
      static const char *const kinds[] = {"addition", "text", "tokens"};
      for (int i = 0; i < 3; i++)
        if (strcmp(text, kinds[i]) == 0) {
          *(dtr_data_kind *)p = (dtr_data_kind)i;
          return DTR_OK;
        }
      return bad_choice(msg, cap, k, text);
    }
    case DTR__RK_INTS: {
      /* "2,2,1" or "[2, 2, 1]"; "" or "[]": empty */
      struct ints {
        int n;
        int v[DTR_RECIPE_MAX_STAGES];
      } *l = (struct ints *)p;
      _Static_assert(sizeof(struct ints) == sizeof r->parallel.layers_per_stage, "one list layout");
      char tmp[1024];
      if (strlen(text) >= sizeof tmp) return bad(msg, cap, k, "a short list of integers", text);
      snprintf(tmp, sizeof tmp, "%s", text);
      char *s = tmp, *e = tmp + strlen(tmp);
      while (*s == ' ' || *s == '[') s++;
      while (e > s && (e[-1] == ' ' || e[-1] == ']')) *--e = '\0';
      l->n = 0;
      for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        while (*tok == ' ') tok++;
        char *te = tok + strlen(tok);
        while (te > tok && te[-1] == ' ') *--te = '\0';
        if (parse_i64(tok, &v) != 0 || v < 1 || v > INT_MAX)
          return bad(msg, cap, k, "a list of positive integers", text);
        if (l->n == DTR_RECIPE_MAX_STAGES)
          return dtr__fail(msg, cap, DTR_ERR_INVALID, "%s.%s: more than %d entries", k->section, k->name,
                           DTR_RECIPE_MAX_STAGES);
        l->v[l->n++] = (int)v;
      }
      return DTR_OK;
    }
    case DTR__RK_NNODES: {
      int64_t a, b;
      char tmp[64];
      snprintf(tmp, sizeof tmp, "%s", text);
      char *colon = strchr(tmp, ':');
      if (colon) *colon = '\0';
      if (parse_i64(tmp, &a) != 0 || (colon && parse_i64(colon + 1, &b) != 0) || strlen(text) >= sizeof tmp)
        return bad(msg, cap, k, "N or MIN:MAX", text);
      if (!colon) b = a;
      if (a < 1 || b > 65536 || a > b)
        return dtr__fail(msg, cap, DTR_ERR_INVALID, "launch.nnodes: '%s' needs 1 <= MIN <= MAX <= 65536",
                         text);
      r->launch.nnodes_min = (int)a;
      r->launch.nnodes_max = (int)b;
      return DTR_OK;
    }
  }
  return dtr__fail(msg, cap, DTR_ERR_INTERNAL, "%s.%s: unknown key type", k->section, k->name);
}

/* A double that reads back as the same value, as short as possible ("0.003", not 0.0030000000000000001). */
static void fmt_double(double d, char *out, size_t cap) {
  for (int prec = 6; prec <= 17; prec++) {
    snprintf(out, cap, "%.*g", prec, d);
    if (strtod(out, NULL) == d) break;
  }
  /* keep it a YAML float, not an int, so that a reader sees the type */
  if (!strpbrk(out, ".eE")) {
    size_t l = strlen(out);
    snprintf(out + l, cap - l, ".0");
  }
}

static void write_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\x%02x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void write_value(FILE *f, const dtr_recipe *r, const dtr__rkey *k) {
  const char *p = (const char *)r + k->off;
  char num[64];
  switch (k->type) {
    case DTR__RK_INT:
      fprintf(f, "%d", *(const int *)p);
      break;
    case DTR__RK_I64:
      fprintf(f, "%" PRId64, *(const int64_t *)p);
      break;
    case DTR__RK_U64:
      fprintf(f, "%" PRIu64, *(const uint64_t *)p);
      break;
    case DTR__RK_DOUBLE:
      fmt_double(*(const double *)p, num, sizeof num);
      fputs(num, f);
      break;
    case DTR__RK_BOOL:
      fputs(*(const int *)p ? "true" : "false", f);
      break;
    case DTR__RK_STR:
      write_str(f, p);
      break;
    case DTR__RK_CHOICE:
      fputs(p, f);
      break;
    case DTR__RK_KIND: {
      dtr_data_kind kind = *(const dtr_data_kind *)p;
      fputs(kind == DTR_DATA_TEXT ? "text" : kind == DTR_DATA_TOKENS ? "tokens" : "addition", f);
      break;
    }
    case DTR__RK_INTS: {
      const int *l = (const int *)p; /* n, then the values */
      fputc('[', f);
      for (int i = 0; i < l[0]; i++) fprintf(f, "%s%d", i ? ", " : "", l[1 + i]);
      fputc(']', f);
      break;
    }
    case DTR__RK_NNODES:
      if (r->launch.nnodes_min == r->launch.nnodes_max)
        fprintf(f, "%d", r->launch.nnodes_max);
      else
        fprintf(f, "\"%d:%d\"", r->launch.nnodes_min, r->launch.nnodes_max);
      break;
  }
}

dtr_result dtr_recipe_write(const dtr_recipe *r, const char *path, char *err, size_t errcap) {
  /* "-" writes to stdout (`dtrain run --dry-run`) */
  int to_stdout = strcmp(path, "-") == 0;
  char tmp[DTR_RECIPE_STR + 32];
  if (!to_stdout && snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: path too long", path);
  FILE *f = to_stdout ? stdout : fopen(tmp, "w");
  if (!f) return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot write %s: %s", tmp, strerror(errno));
  fprintf(f, "# The effective recipe (every key, defaults filled in) from %s.\n",
          r->path[0] ? r->path : "(none)");
  const char *sec = NULL;
  for (int i = 0; i < dtr__recipe_nkeys; i++) {
    const dtr__rkey *k = &dtr__recipe_keys[i];
    if (!sec || strcmp(sec, k->section) != 0) {
      fprintf(f, "%s%s:\n", sec ? "\n" : "", k->section);
      sec = k->section;
    }
    fprintf(f, "  %s: ", k->name);
    write_value(f, r, k);
    fputc('\n', f);
  }
  if (to_stdout)
    return fflush(f) == 0 ? DTR_OK : dtr__fail(err, errcap, DTR_ERR_SYSTEM, "stdout: %s", strerror(errno));
  int bad_write = ferror(f);
  if (fclose(f) != 0 || bad_write) {
    unlink(tmp);
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot write %s: %s", tmp, strerror(errno ? errno : EIO));
  }
  /* rename so that a reader (another node's agent writing the same file) never sees half a recipe */
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot write %s: %s", path, strerror(e));
  }
  return DTR_OK;
}
