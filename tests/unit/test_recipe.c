/* Recipes: defaults, path resolution, overrides, the effective-recipe writer, and every kind of error
 * with its exact `file:line:col: message` (or `override 'k=v': message`). */
// ctest-labels: recipe
#define _GNU_SOURCE
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "dtrain/recipe.h"
#include "tests/unit/test_util.h"

static char dir[512];
static char err[2048];
static dtr_recipe R;

/* Write name in the scratch directory; returns its path (static buffer of the caller's choice). */
static const char *put(const char *name, const char *text) {
  static char path[8][PATH_MAX];
  static int slot;
  char *p = path[slot++ % 8];
  snprintf(p, PATH_MAX, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  if (!f) {
    perror(p);
    return p;
  }
  fputs(text, f);
  fclose(f);
  return p;
}

/* Load with world and a NULL-terminated list of overrides. */
static dtr_result load(const char *path, int world, ...) {
  const char *ov[16];
  int n = 0;
  va_list ap;
  va_start(ap, world);
  for (const char *o = va_arg(ap, const char *); o && n < 16; o = va_arg(ap, const char *)) ov[n++] = o;
  va_end(ap);
  err[0] = '\0';
  return dtr_recipe_load(path, ov, n, world, &R, err, sizeof err);
}

/* The expected message with "%P" replaced by the recipe's path. */
static const char *expect(const char *path, const char *fmt) {
  static char out[2048];
  const char *p = strstr(fmt, "%P");
  if (!p) {
    snprintf(out, sizeof out, "%s", fmt);
    return out;
  }
  snprintf(out, sizeof out, "%.*s%s%s", (int)(p - fmt), fmt, path, p + 2);
  return out;
}

/* A recipe must fail; the caller checks err itself (messages holding the scratch directory twice). */
#define BADX(text, ...)                                      \
  do {                                                       \
    const char *p_ = put("bad.yaml", text);                  \
    CHECK_EQ_INT(load(p_, 0, __VA_ARGS__), DTR_ERR_INVALID); \
  } while (0)

/* A recipe must fail with exactly this message. */
#define BAD(text, world, want, ...)                              \
  do {                                                           \
    const char *p_ = put("bad.yaml", text);                      \
    CHECK_EQ_INT(load(p_, world, __VA_ARGS__), DTR_ERR_INVALID); \
    CHECK_EQ_STR(err, expect(p_, want));                         \
  } while (0)

static const char *GOOD =
    "# a comment\n"
    "job:\n"
    "  name: tiny\n"
    "  seed: 7\n"
    "launch:\n"
    "  nproc_per_node: 4\n"
    "  backend: host\n"
    "parallel:\n"
    "  dp: 4\n"
    "model:\n"
    "  block_size: 16\n"
    "  n_layer: 2\n"
    "  n_head: 4\n"
    "  n_embd: 64\n"
    "data:\n"
    "  kind: addition\n"
    "  digits: 3\n"
    "train:\n"
    "  steps: 600\n"
    "  global_batch: 64\n"
    "  micro_batch: 16\n"
    "  lr: 3.0e-3\n"
    "  min_lr: 3e-4\n"
    "  warmup_steps: 30\n"
    "  overlap: no\n"
    "checkpoint:\n"
    "  every: 200\n"
    "  async: true\n";

static void test_good(void) {
  char cwd[PATH_MAX], want[PATH_MAX * 2];
  CHECK(getcwd(cwd, sizeof cwd) != NULL);
  const char *p = put("good.yaml", GOOD);
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_STR(err, "");
  CHECK_EQ_STR(R.path, p);
  CHECK_EQ_STR(R.job.name, "tiny");
  CHECK_EQ_INT(R.job.seed, 7);
  CHECK_EQ_INT(R.launch.nproc_per_node, 4);
  CHECK_EQ_INT(R.launch.nnodes_min, 1);
  CHECK_EQ_INT(R.launch.nnodes_max, 1);
  CHECK_EQ_INT(R.launch.node_rank, -1);
  CHECK_EQ_STR(R.launch.backend, "host");
  CHECK_EQ_INT(R.parallel.dp, 4);
  CHECK_EQ_INT(R.parallel.tp, 1);
  CHECK_EQ_INT(R.model.vocab_size, 14); /* from the addition data */
  CHECK_EQ_INT(R.model.n_embd, 64);
  CHECK_EQ_INT(R.data.kind, DTR_DATA_ADDITION);
  CHECK_EQ_INT(R.train.steps, 600);
  CHECK(R.train.lr == 3.0e-3);
  CHECK(R.train.min_lr == 3e-4);
  CHECK(R.train.beta2 == 0.95); /* default */
  CHECK_EQ_INT(R.train.overlap, 0);
  CHECK_EQ_STR(R.train.precision, "fp32");
  CHECK_EQ_INT(R.checkpoint.every, 200);
  CHECK_EQ_INT(R.checkpoint.async, 1);
  CHECK_EQ_INT(R.checkpoint.resume, 1);
  snprintf(want, sizeof want, "%s/runs/tiny", cwd);
  CHECK_EQ_STR(R.job.run_dir, want);
  snprintf(want, sizeof want, "%s/runs/tiny/checkpoints", cwd);
  CHECK_EQ_STR(R.checkpoint.dir, want);

  /* dp 0: the rest of the world; world from the caller beats the launch section */
  CHECK_EQ_INT(load(p, 0, "parallel.dp=0", "train.global_batch=32", "train.micro_batch=4", NULL), DTR_OK);
  CHECK_EQ_INT(R.parallel.dp, 4);
  CHECK_EQ_INT(load(p, 2, "parallel.dp=0", NULL), DTR_OK);
  CHECK_EQ_INT(R.parallel.dp, 2);

  /* overrides, typed like the file */
  CHECK_EQ_INT(load(p, 0, "train.steps=20", "train.lr=0.5", "job.name=other", "checkpoint.async=off",
                    "train.warmup_steps=5", "launch.nnodes=1:2", "launch.rdzv_endpoint=localhost:29400",
                    "parallel.dp=8", "train.micro_batch=8", NULL),
               DTR_OK);
  CHECK_EQ_INT(R.train.steps, 20);
  CHECK(R.train.lr == 0.5);
  CHECK_EQ_INT(R.checkpoint.async, 0);
  CHECK_EQ_INT(R.launch.nnodes_min, 1);
  CHECK_EQ_INT(R.launch.nnodes_max, 2);
  snprintf(want, sizeof want, "%s/runs/other", cwd);
  CHECK_EQ_STR(R.job.run_dir, want);

  /* job.name unset: the file's name; relative run_dir / checkpoint.dir: from the current directory */
  p = put("my-recipe.yaml", "model:\n  n_embd: 32\ncheckpoint:\n  dir: ck\n");
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_STR(R.job.name, "my-recipe");
  snprintf(want, sizeof want, "%s/runs/my-recipe", cwd);
  CHECK_EQ_STR(R.job.run_dir, want);
  snprintf(want, sizeof want, "%s/ck", cwd);
  CHECK_EQ_STR(R.checkpoint.dir, want);
  CHECK_EQ_INT(R.parallel.dp, 1);
  CHECK_EQ_INT(R.launch.nproc_per_node, 1);

  /* empty sections and null strings are allowed */
  p = put("empty-sections.yaml", "job:\n  run_dir: /abs/run\ntrain:\ncheckpoint: ~\n");
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_STR(R.job.run_dir, "/abs/run");
  CHECK_EQ_STR(R.checkpoint.dir, "/abs/run/checkpoints");
}

static void test_data_paths(void) {
  char want[PATH_MAX * 2];
  char text[400];
  memset(text, 'a', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  put("corpus.txt", text);
  const char *p = put("text.yaml", "data:\n  kind: text\n  path: corpus.txt\nmodel:\n  block_size: 32\n");
  /* relative to the recipe's directory, not the current one */
  char old[PATH_MAX];
  CHECK(getcwd(old, sizeof old) != NULL);
  CHECK(chdir("/") == 0);
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK(chdir(old) == 0);
  snprintf(want, sizeof want, "%s/corpus.txt", dir);
  CHECK_EQ_STR(R.data.path, want);
  CHECK_EQ_INT(R.model.vocab_size, 256);
  CHECK_EQ_INT(R.data.kind, DTR_DATA_TEXT);

  /* the file must hold block_size + 1 tokens */
  CHECK_EQ_INT(load(p, 0, "model.block_size=399", NULL), DTR_ERR_INVALID);
  snprintf(want, sizeof want,
           "%s:3:9: data.path: '%s/corpus.txt' holds 399 tokens, fewer than model.block_size + 1 = 400", p,
           dir);
  CHECK_EQ_STR(err, want);

  /* a missing file, with the resolved path */
  BADX("data:\n  kind: text\n  path: nope/missing.txt\n", NULL);
  snprintf(want, sizeof want, "%s/bad.yaml:3:9: data.path: '%s/nope/missing.txt': No such file or directory",
           dir, dir);
  CHECK_EQ_STR(err, want);
  BAD("data:\n  kind: text\n", 0, "%P:2:9: data.kind text needs data.path", NULL);

  /* tokens: uint16, needs vocab_size */
  put("odd.bin", "abc");
  put("even.bin", "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789");
  BAD("data:\n  kind: tokens\n  path: even.bin\n", 0,
      "%P:2:9: data.kind tokens needs model.vocab_size (the largest token id + 1)", NULL);
  p = put("tok.yaml",
          "data:\n  kind: tokens\n  path: even.bin\nmodel:\n  vocab_size: 50257\n  block_size: 8\n");
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_INT(R.model.vocab_size, 50257);
  BADX("data:\n  kind: tokens\n  path: odd.bin\nmodel:\n  vocab_size: 100\n", NULL);
  snprintf(want, sizeof want,
           "%s/bad.yaml:3:9: data.path: '%s/odd.bin' has 3 bytes, not a whole number of uint16 tokens", dir,
           dir);
  CHECK_EQ_STR(err, want);
  /* a directory is not a data file */
  BADX("data:\n  kind: text\n  path: .\n", NULL);
  snprintf(want, sizeof want, "%s/bad.yaml:3:9: data.path: '%s/.' is not a regular file", dir, dir);
  CHECK_EQ_STR(err, want);
}

static void test_syntax_errors(void) {
  /* strict keys, with suggestions */
  BAD("model:\n  n_layer: 2\n  n_heads: 4\n", 0,
      "%P:3:3: unknown key 'n_heads' in model (did you mean 'n_head'?)", NULL);
  BAD("trian:\n  steps: 3\n", 0, "%P:1:1: unknown section 'trian' (did you mean 'train'?)", NULL);
  BAD("optimizer:\n  lr: 3\n", 0, "%P:1:1: unknown section 'optimizer'", NULL);
  BAD("train:\n  learning_rate: 3\n", 0, "%P:2:3: unknown key 'learning_rate' in train", NULL);
  BAD("train:\n  warmup: 3\n", 0, "%P:2:3: unknown key 'warmup' in train (did you mean 'warmup_steps'?)",
      NULL);
  /* types */
  BAD("train:\n  steps: 10\n  lr: fast\n", 0, "%P:3:7: train.lr: expected a number, got 'fast'", NULL);
  BAD("train:\n  steps: 1.5\n", 0, "%P:2:10: train.steps: expected an integer, got '1.5'", NULL);
  BAD("model:\n  n_head: 99999999999\n", 0,
      "%P:2:11: model.n_head: expected an integer that fits in 32 bits, got '99999999999'", NULL);
  BAD("job:\n  seed: -1\n", 0, "%P:2:9: job.seed: expected a non-negative integer, got '-1'", NULL);
  BAD("checkpoint:\n  async: maybe\n", 0, "%P:2:10: checkpoint.async: expected true or false, got 'maybe'",
      NULL);
  BAD("train:\n  lr: .nan\n", 0, "%P:2:7: train.lr: expected a number, got '.nan'", NULL);
  BAD("launch:\n  backend: gloo\n", 0, "%P:2:12: launch.backend: expected one of host, nccl, mpi, got 'gloo'",
      NULL);
  BAD("train:\n  precision: bf61\n", 0,
      "%P:2:14: train.precision: expected one of fp32, bf16, got 'bf61' (did you mean 'bf16'?)", NULL);
  BAD("data:\n  kind: txt\n", 0,
      "%P:2:9: data.kind: expected one of addition, text, tokens, got 'txt' (did you mean "
      "'text'?)",
      NULL);
  BAD("launch:\n  nnodes: 4:2\n", 0, "%P:2:11: launch.nnodes: '4:2' needs 1 <= MIN <= MAX <= 65536", NULL);
  BAD("launch:\n  nnodes: two\n", 0, "%P:2:11: launch.nnodes: expected N or MIN:MAX, got 'two'", NULL);
  BAD("train:\n  lr: [1, 2]\n", 0, "%P:2:7: train.lr: expected a single value, got a list", NULL);
  BAD("train:\n  steps:\n    a: 1\n", 0, "%P:3:5: train.steps: expected a single value, got a mapping", NULL);
  BAD("train:\n  steps:\n", 0, "%P:2:9: train.steps: expected an integer, got ''", NULL);
  /* structure */
  BAD("train:\n  - steps: 3\n", 0, "%P:2:3: section 'train' must be a mapping of keys, got a list", NULL);
  BAD("- job\n", 0, "%P:1:1: expected a mapping of sections (job:, launch:, ...), got a list", NULL);
  BAD("", 0, "%P:1:1: the recipe is empty (expected sections such as job:, model:, train:)", NULL);
  BAD("# only a comment\n", 0, "%P:1:1: the recipe is empty (expected sections such as job:, model:, train:)",
      NULL);
  BAD("train:\n  steps: 3\n  lr: 0.1\n  steps: 4\n", 0,
      "%P:4:3: duplicate key 'steps' in train (first at line 2)", NULL);
  BAD("train:\n  steps: 3\nmodel:\n  n_layer: 1\ntrain:\n  lr: 1\n", 0,
      "%P:5:1: duplicate section 'train' (first at line 1)", NULL);
  BAD("train:\n  steps: 3\n---\ntrain:\n  steps: 4\n", 0,
      "%P:4:1: a recipe is one YAML document; found a second one", NULL);
  /* YAML syntax errors carry libyaml's position */
  BAD("train:\n  steps: 3\n   lr: 0.1\n", 0,
      "%P:3:6: YAML syntax error: mapping values are not allowed in this context", NULL);
  BAD("train:\n  lr: [1, 2\n", 0,
      "%P:3:1: YAML syntax error: did not find expected ',' or ']' while parsing a flow sequence", NULL);
  /* the recipe file itself */
  CHECK_EQ_INT(load("/nonexistent/recipe.yaml", 0, NULL), DTR_ERR_NOT_FOUND);
  CHECK_EQ_STR(err, "/nonexistent/recipe.yaml: cannot open the recipe: No such file or directory");
  CHECK_EQ_INT(load(dir, 0, NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, expect(dir, "%P: the recipe is not a regular file"));
  /* a FIFO is refused at once (issue 19: opening it waited for a writer forever) */
  char fifo[PATH_MAX];
  snprintf(fifo, sizeof fifo, "%s/fifo.yaml", dir);
  CHECK_EQ_INT(mkfifo(fifo, 0600), 0);
  CHECK_EQ_INT(load(fifo, 0, NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, expect(fifo, "%P: the recipe is not a regular file"));
  /* a byte that is not UTF-8 is reported where it is (issue 19: always at 1:1) */
  BAD("job:\n  name: x\ntrain:\n  steps: 5\xff"
      "0\n",
      0, "%P:4:11: YAML syntax error: invalid leading UTF-8 octet (byte 0xff)", NULL);
  BAD("# \xc3\xa9t\xc3\xa9\ntrain: {steps: 3, lr: \xc3}\n", 0,
      "%P:2:24: YAML syntax error: invalid trailing UTF-8 octet (byte 0x7d)", NULL);
  /* nesting is bounded, and so is the time: 200 KB of nested lists took 38 s (quadratic in libyaml's
   * scanner) before the check; now they are refused at the 65th bracket, in well under a second */
  {
    size_t n = 100000;
    char *deep = malloc(2 * n + 32);
    strcpy(deep, "train:\n  steps: ");
    size_t at = strlen(deep);
    memset(deep + at, '[', n);
    memset(deep + at + n, ']', n);
    strcpy(deep + at + 2 * n, "\n");
    int64_t t0 = dtr__now_ms();
    CHECK_EQ_INT(load(put("deep.yaml", deep), 0, NULL), DTR_ERR_INVALID);
    CHECK(dtr__now_ms() - t0 < 1000);
    CHECK(strstr(err, "deep.yaml:2:74: flow collections ([ or {) nested deeper than 64") != NULL);
    /* 64 levels, quoted brackets and comments are fine (they reach the type check) */
    strcpy(deep, "train:\n  steps: ");
    at = strlen(deep);
    memset(deep + at, '[', 64);
    memset(deep + at + 64, ']', 64);
    strcpy(deep + at + 128, " # [[[[\n  precision: '[[[['\n");
    CHECK_EQ_INT(load(put("deep64.yaml", deep), 0, NULL), DTR_ERR_INVALID);
    CHECK(strstr(err, "train.steps: expected a single value, got a list") != NULL);
    free(deep);
  }
  /* the default warmup (10) shrinks to a short run's steps; a warmup set by hand does not */
  CHECK_EQ_INT(load(put("short.yaml", "train:\n  steps: 3\n"), 0, NULL), DTR_OK);
  CHECK_EQ_INT(R.train.warmup_steps, 3);
}

/* Tensor and pipeline parallelism, ZeRO-1: what a consistent mesh still needs. */
static void test_parallel_keys(void) {
  /* accepted: dp 2 x tp 2, the heads and the vocabulary split */
  const char *p =
      put("tp.yaml", "launch:\n  nproc_per_node: 4\nparallel:\n  tp: 2\nmodel:\n  vocab_size: 16\n");
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_INT(R.parallel.dp, 2);
  CHECK_EQ_STR(R.parallel.schedule, "1f1b");
  CHECK_EQ_INT(R.parallel.virtual_stages, 1);
  /* a list of layers per stage, in YAML or on the command line */
  p = put(
      "pp.yaml",
      "launch:\n  nproc_per_node: 2\nparallel:\n  pp: 2\n  layers_per_stage: [3, 1]\nmodel:\n  n_layer: 4\n");
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_INT(R.parallel.layers_per_stage.n, 2);
  CHECK_EQ_INT(R.parallel.layers_per_stage.v[0], 3);
  CHECK_EQ_INT(load(p, 0, "parallel.layers_per_stage=1,3", NULL), DTR_OK);
  CHECK_EQ_INT(R.parallel.layers_per_stage.v[0], 1);
  CHECK_EQ_INT(load(p, 0, "parallel.layers_per_stage=[]", "model.n_layer=5", NULL), DTR_OK);
  CHECK_EQ_INT(R.parallel.layers_per_stage.n, 0);
  /* the vocabulary from the data must split: addition's 14 tokens over tp 4 */
  BAD("launch:\n  nproc_per_node: 4\nparallel:\n  tp: 4\nmodel:\n  n_head: 4\n", 0,
      "%P:4:7: model: vocab_size 14 is not divisible by parallel.tp 4 (tensor parallelism splits the "
      "vocabulary; "
      "set model.vocab_size to a multiple of 4, at least the data's 14 tokens)",
      NULL);
  BAD("launch:\n  nproc_per_node: 2\nparallel:\n  pp: 2\n  virtual_stages: 2\nmodel:\n  n_layer: 4\n", 0,
      "%P:5:19: parallel.virtual_stages 2 needs parallel.schedule interleaved (the 1f1b schedule runs one "
      "model "
      "chunk per stage)",
      NULL);
  BAD("launch:\n  nproc_per_node: 2\nparallel:\n  pp: 2\n  schedule: interleaved\n  virtual_stages: 2\n"
      "model:\n  n_layer: 4\ntrain:\n  global_batch: 48\n  micro_batch: 16\n",
      0,
      "%P:5:13: parallel.schedule interleaved: 3 micro-batches per step (global_batch 48 / (micro_batch 16 x "
      "dp 1)) "
      "is not a multiple of pp 2; the schedule sends micro-batches round the stages in groups of pp",
      NULL);
  BAD("launch:\n  nproc_per_node: 1\nparallel:\n  schedule: interleaved\n", 0,
      "%P:4:13: parallel.schedule interleaved needs parallel.pp of at least 2 (it has 1)", NULL);
  BAD("launch:\n  nproc_per_node: 2\nparallel:\n  pp: 2\n  layers_per_stage: [1, 1, 2]\nmodel:\n  n_layer: "
      "4\n",
      0,
      "%P:5:21: parallel.layers_per_stage: 3 entries, but pp 2 x virtual_stages 1 = 2 stages need one each",
      NULL);
  BAD("launch:\n  nproc_per_node: 2\nparallel:\n  pp: 2\n  layers_per_stage: [1, 2]\nmodel:\n  n_layer: 4\n",
      0, "%P:5:21: parallel.layers_per_stage: the entries add up to 3 layers, model.n_layer is 4", NULL);
  BAD("parallel:\n  layers_per_stage: [1, x]\n", 0,
      "%P:2:21: parallel.layers_per_stage: expected a list of positive integers, got '1,x'", NULL);
  BAD("parallel:\n  layers_per_stage: [1, [2]]\n", 0,
      "%P:2:25: parallel.layers_per_stage: expected a list of numbers, got a list", NULL);
  BAD("train:\n  zero: 2\n", 0, "%P:2:9: train.zero: 2 is not 0 (off) or 1 (ZeRO stage 1)", NULL);
}

static void test_combinations(void) {
  BAD("launch:\n  nproc_per_node: 4\nparallel:\n  dp: 2\n", 0,
      "%P:4:7: parallel: dp*tp*pp = 2*1*1 = 2, but the launch section makes 4 ranks (nproc_per_node 4 x "
      "nnodes 1)",
      NULL);
  BAD("parallel:\n  dp: 2\n  tp: 2\nmodel:\n  n_head: 4\n", 3,
      "%P:2:7: parallel: dp*tp*pp = 2*2*1 = 4, but the job "
      "has 3 ranks",
      NULL);
  /* nothing set by hand: blame the first candidate key, file only */
  BAD("launch:\n  nproc_per_node: 3\nparallel:\n  tp: 2\nmodel:\n  n_head: 4\n", 0,
      "%P:4:7: parallel: tp*pp = 2*1 = 2 does not divide the world, and the launch section makes 3 ranks "
      "(nproc_per_node 3 x nnodes 1)",
      NULL);
  BAD("parallel:\n  dp: 4\n", 1, "%P:2:7: parallel: dp*tp*pp = 4*1*1 = 4, but the job has 1 rank", NULL);
  BAD("model:\n  n_head: 3\n  n_embd: 64\n", 0, "%P:3:11: model: n_embd 64 is not divisible by n_head 3",
      NULL);
  BAD("model:\n  n_head: 4\nparallel:\n  tp: 3\n", 3,
      "%P:4:7: model: n_head 4 is not divisible by parallel.tp 3 (tensor parallelism splits the heads)",
      NULL);
  BAD("model:\n  n_layer: 2\nparallel:\n  pp: 4\n", 4,
      "%P:4:7: model: n_layer 2 is fewer than the 4 pipeline stages (pp 4 x virtual_stages 1): every stage "
      "needs a layer",
      NULL);
  test_parallel_keys();
  BAD("model:\n  block_size: 0\n", 0, "%P:2:15: model.block_size: 0 must be at least 1", NULL);
  BAD("model:\n  block_size: 8\ndata:\n  digits: 3\n", 0,
      "%P:2:15: model.block_size 8 is too short for 3-digit addition (needs 11 tokens)", NULL);
  BAD("model:\n  vocab_size: 10\n", 0,
      "%P:2:15: model.vocab_size: 10 is smaller than the addition task's 14 tokens", NULL);
  BAD("train:\n  global_batch: 64\n  micro_batch: 16\nparallel:\n  dp: 8\nlaunch:\n  nproc_per_node: 8\n", 0,
      "%P:2:17: train: global_batch 64 is not a multiple of micro_batch 16 x dp 8 = 128", NULL);
  BAD("train:\n  steps: 0\n", 0, "%P:2:10: train.steps: 0 must be at least 1", NULL);
  BAD("train:\n  warmup_steps: -1\n", 0, "%P:2:17: train.warmup_steps: -1 is negative", NULL);
  BAD("train:\n  lr: 0.001\n  min_lr: 0.01\n", 0,
      "%P:3:11: train.min_lr: 0.01 is not between 0 and train.lr 0.001", NULL);
  BAD("train:\n  beta2: 1\n", 0, "%P:2:10: train.beta2: 1 is not in [0, 1)", NULL);
  BAD("train:\n  precision: bf16\n", 0,
      "%P:2:14: train.precision bf16 needs train.device cuda (the CPU path is fp32)", NULL);
  BAD("launch:\n  backend: nccl\n", 0,
      "%P:2:12: launch.backend nccl needs train.device cuda (NCCL moves GPU memory)", NULL);
  BAD("launch:\n  nnodes: 2\n", 0,
      "%P:2:11: launch.nnodes: 2 nodes need launch.rdzv_endpoint (host:port) so that they can meet", NULL);
  BAD("launch:\n  nnodes: 2\n  rdzv_endpoint: 'host:'\n", 0,
      "%P:3:18: launch.rdzv_endpoint: 'host:' has a bad port (expected 0-65535)", NULL);
  BAD("launch:\n  node_rank: 1\n", 0,
      "%P:2:14: launch.node_rank: 1 is not between -1 (assigned) and nnodes-1 (0)", NULL);
  BAD("job:\n  name: a/b\n", 0,
      "%P:2:9: job.name: 'a/b' must be letters, digits, '.', '_' or '-' (it names the run directory)", NULL);
  BAD("checkpoint:\n  level: 0\n", 0, "%P:2:10: checkpoint.level: 0 is not a zstd level between 1 and 19",
      NULL);
  BAD("checkpoint:\n  keep: -1\n", 0, "%P:2:9: checkpoint.keep: -1 is negative (0 keeps every checkpoint)",
      NULL);
  BAD("checkpoint:\n  every: -5\n", 0, "%P:2:10: checkpoint.every: -5 is negative (0: only at the end)",
      NULL);
}

static void test_overrides(void) {
  const char *p = put("good.yaml", GOOD);
  CHECK_EQ_INT(load(p, 0, "train.stepz=20", NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, "override 'train.stepz=20': unknown key 'stepz' in train (did you mean 'steps'?)");
  CHECK_EQ_INT(load(p, 0, "trian.steps=20", NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, "override 'trian.steps=20': unknown section 'trian' (did you mean 'train'?)");
  CHECK_EQ_INT(load(p, 0, "train.steps=many", NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, "override 'train.steps=many': train.steps: expected an integer, got 'many'");
  CHECK_EQ_INT(load(p, 0, "steps=20", NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, "override 'steps=20': expected section.key=value");
  CHECK_EQ_INT(load(p, 0, "train.steps", NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(err, "override 'train.steps': expected section.key=value");
  /* a combination broken by an override names the override */
  CHECK_EQ_INT(load(p, 0, "parallel.dp=3", NULL), DTR_ERR_INVALID);
  CHECK_EQ_STR(
      err,
      "override 'parallel.dp=3': parallel: dp*tp*pp = 3*1*1 = 3, but the launch section makes 4 ranks "
      "(nproc_per_node 4 x nnodes 1)");
  /* a warmup longer than the run is clamped to it, with a warning that names where it came from */
  CHECK_EQ_INT(load(p, 0, "train.warmup_steps=700", NULL), DTR_OK);
  CHECK_EQ_INT(R.train.warmup_steps, 600);
  CHECK_EQ_STR(
      R.warnings,
      "override 'train.warmup_steps=700': train.warmup_steps 700 is more than train.steps 600: warming "
      "up over all 600 steps");
  const char *w = put("warm.yaml", "train:\n  steps: 10\n  warmup_steps: 11\n");
  CHECK_EQ_INT(load(w, 0, "train.steps=4", NULL), DTR_OK);
  CHECK_EQ_INT(R.train.warmup_steps, 4);
  CHECK_EQ_STR(
      R.warnings,
      expect(w, "%P:3:17: train.warmup_steps 11 is more than train.steps 4: warming up over all 4 steps"));
  CHECK_EQ_INT(load(p, 0, NULL), DTR_OK);
  CHECK_EQ_STR(R.warnings, "");
  /* the later of two overrides wins */
  CHECK_EQ_INT(load(p, 0, "train.steps=5", "train.steps=50", NULL), DTR_OK);
  CHECK_EQ_INT(R.train.steps, 50);
}

static int slurp(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
  return 0;
}

static void test_write_roundtrip(void) {
  static char a[16384], b[16384];
  char out1[PATH_MAX], out2[PATH_MAX];
  snprintf(out1, sizeof out1, "%s/eff1.yaml", dir);
  snprintf(out2, sizeof out2, "%s/eff2.yaml", dir);
  const char *p = put("good.yaml", GOOD);
  CHECK_EQ_INT(
      load(p, 0, "job.seed=18446744073709551615", "launch.nnodes=1:4", "launch.rdzv_endpoint=h:1",
           "parallel.dp=16", "train.micro_batch=4", "train.lr=0.1", "job.run_dir=/x/\"quoted\" dir", NULL),
      DTR_OK);
  dtr_recipe first = R;
  CHECK_EQ_INT(dtr_recipe_write(&R, out1, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(load(out1, 0, NULL), DTR_OK);
  CHECK_EQ_STR(err, "");
  CHECK_EQ_INT(dtr_recipe_write(&R, out2, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(slurp(out1, a, sizeof a), 0);
  CHECK_EQ_INT(slurp(out2, b, sizeof b), 0);
  /* identical but for the first line, which names the source */
  CHECK(strchr(a, '\n') && strchr(b, '\n'));
  CHECK_EQ_STR(strchr(a, '\n'), strchr(b, '\n'));
  CHECK(R.job.seed == 18446744073709551615ULL);
  CHECK_EQ_INT(R.launch.nnodes_min, 1);
  CHECK_EQ_INT(R.launch.nnodes_max, 4);
  CHECK(R.train.lr == first.train.lr && R.train.eps == first.train.eps &&
        R.train.min_lr == first.train.min_lr);
  CHECK_EQ_STR(R.job.run_dir, "/x/\"quoted\" dir");
  CHECK_EQ_STR(R.job.name, first.job.name);
  CHECK_EQ_INT(R.model.vocab_size, 14);
  CHECK(strstr(a, "\ntrain:\n  steps: 600\n") != NULL);
  CHECK(strstr(a, "  lr: 0.1\n") != NULL);
  CHECK(strstr(a, "  nnodes: \"1:4\"\n") != NULL);
  /* every key of every section appears */
  const char *keys[] = {"name:",
                        "seed:",
                        "run_dir:",
                        "nproc_per_node:",
                        "schedule:",
                        "virtual_stages:",
                        "layers_per_stage: []",
                        "zero: 0",
                        "backend:",
                        "rdzv_id:",
                        "node_rank:",
                        "dp:",
                        "tp:",
                        "pp:",
                        "vocab_size:",
                        "n_embd:",
                        "kind:",
                        "digits:",
                        "bucket_mb:",
                        "first_bucket_mb:",
                        "precision:",
                        "device:",
                        "every:",
                        "keep:",
                        "level:",
                        "resume:"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECK(strstr(a, keys[i]) != NULL);
  CHECK_EQ_INT(dtr_recipe_write(&R, "/nonexistent/dir/r.yaml", err, sizeof err), DTR_ERR_SYSTEM);
  CHECK(strstr(err, "/nonexistent/dir/r.yaml") != NULL);
}

int main(void) {
  char tmpl[] = "/tmp/dtrain-recipe-XXXXXX";
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    return 1;
  }
  char real[PATH_MAX];
  if (!realpath(tmpl, real) || strlen(real) >= sizeof dir) return 1;
  strcpy(dir, real);

  dtr_recipe d;
  dtr_recipe_defaults(&d);
  CHECK_EQ_INT(d.train.log_every, 10);
  CHECK_EQ_STR(d.launch.backend, "host");
  CHECK_EQ_INT(d.checkpoint.level, 3);

  test_good();
  test_data_paths();
  test_syntax_errors();
  test_combinations();
  test_overrides();
  test_write_roundtrip();

  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return TEST_EXIT();
}
