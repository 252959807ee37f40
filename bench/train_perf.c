/* Single-rank training throughput of the reference GPT: tokens/s of forward + backward + AdamW step
 * (dtr_adamw_step) for gpt-tiny and a larger model at given thread counts. bench/torch_gpt.py runs the
 * same models, batches and optimizer in PyTorch; bench/train_vs_torch.sh prints both with ratios.
 * usage: train_perf [--model tiny|larger|all] [--threads 1,2] [--steps N] [--warmup N] [--seconds S]
 *                   [--json] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtrain/runtime.h"
#include "runtime/model/gpt.h"
#include "runtime/model/gpt_internal.h"

typedef struct {
  const char *name;
  dtr__gpt_config cfg;
  int batch, steps;
} bench_model;

static const bench_model models[] = {
    {"tiny", {.vocab_size = 14, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 64}, 16, 200},
    {"larger", {.vocab_size = 256, .block_size = 128, .n_layer = 4, .n_head = 8, .n_embd = 256}, 8, 10},
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: train_perf [--model tiny|larger|all] [--threads 1,2] [--steps N] [--warmup N] [--seconds S] "
      "[--json]\n"
      "  tokens/s of forward+backward+AdamW for gpt-tiny (block 16, 2 layers, 64 embd, 4 heads, vocab 14,\n"
      "  batch 16) and larger (block 128, 4 layers, 256 embd, 8 heads, vocab 256, batch 8); --steps 0 uses\n"
      "  each model's default; timing stops early after --seconds (default 20) per run\n");
}

static int run_one(const bench_model *bm, int threads, int steps, int warmup, double max_s, int json) {
  char err[256] = "";
  dtr__gpt *m = NULL;
  int B = bm->batch, T = bm->cfg.block_size, V = bm->cfg.vocab_size;
  if (dtr__gpt_create(&bm->cfg, 1337, threads, B, &m, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "train_perf: %s: %s\n", bm->name, err);
    return 1;
  }
  size_t n = dtr__gpt_num_params(m);
  uint8_t *mask = malloc(n);
  int32_t *in = malloc((size_t)B * (T + 1) * sizeof(int32_t)), *tg = malloc((size_t)B * T * sizeof(int32_t));
  dtr_adamw opt;
  if (!mask || !in || !tg || dtr_adamw_init(&opt, n, 0.9, 0.95, 1e-8, 0.1) != DTR_OK) {
    fprintf(stderr, "train_perf: out of memory\n");
    return 1;
  }
  for (int i = 0; i < dtr__gpt_num_tensors(m); i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(m, i);
    memset(mask + t->offset, t->decay, t->count);
  }
  uint64_t s = 42;
  for (int i = 0; i < B * (T + 1); i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    in[i] = (int32_t)((s >> 33) % (uint64_t)V);
  }
  for (int b = 0; b < B; b++) memcpy(tg + b * T, in + b * (T + 1) + 1, (size_t)T * sizeof(int32_t));
  for (int b = 0; b < B; b++) memmove(in + b * T, in + b * (T + 1), (size_t)T * sizeof(int32_t));
  float loss = 0, first = 0;
  double t0 = 0;
  int done = 0, rc = 0;
  for (int it = 0; it < warmup + steps; it++) {
    if (it == warmup) t0 = now();
    dtr__gpt_zero_grad(m);
    if (dtr__gpt_forward(m, in, tg, B, T, &loss, NULL) != DTR_OK ||
        dtr__gpt_backward(m, 1.0f, NULL, NULL) != DTR_OK) {
      fprintf(stderr, "train_perf: %s\n", dtr__gpt_last_error(m));
      rc = 1;
      break;
    }
    dtr_adamw_step(&opt, dtr__gpt_params(m), dtr__gpt_grads(m), mask, 1e-3);
    if (it == 0) first = loss;
    if (it >= warmup) {
      done++;
      if (now() - t0 > max_s) break;
    }
  }
  double el = now() - t0;
  if (rc == 0 && done > 0) {
    double tps = (double)done * B * T / el;
    if (json)
      printf(
          "{\"impl\": \"dtrain\", \"model\": \"%s\", \"params\": %zu, \"batch\": %d, \"T\": %d, \"threads\": "
          "%d, "
          "\"steps\": %d, \"step_ms\": %.3f, \"tokens_per_s\": %.1f, \"loss_first\": %.4f, \"loss_last\": "
          "%.4f}\n",
          bm->name, n, B, T, threads, done, el / done * 1e3, tps, first, loss);
    else
      printf("%-8s %10zu %6d %5d %8d %6d %10.3f %12.1f %8.4f %8.4f\n", bm->name, n, B, T, threads, done,
             el / done * 1e3, tps, first, loss);
    fflush(stdout);
  }
  dtr_adamw_free(&opt);
  free(mask);
  free(in);
  free(tg);
  dtr__gpt_destroy(m);
  return rc;
}

int main(int argc, char **argv) {
  const char *model = "all", *threads = "1,2";
  int steps = 0, warmup = 2, json = 0;
  double max_s = 20;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage();
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "train_perf: %s needs a value\n", a);
      usage();
      return 2;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--model"))
      model = v;
    else if (!strcmp(a, "--threads"))
      threads = v;
    else if (!strcmp(a, "--steps"))
      steps = atoi(v);
    else if (!strcmp(a, "--warmup"))
      warmup = atoi(v);
    else if (!strcmp(a, "--seconds"))
      max_s = atof(v);
    else {
      fprintf(stderr, "train_perf: unknown flag %s\n", a);
      usage();
      return 2;
    }
    if (steps < 0 || warmup < 0 || max_s <= 0) {
      fprintf(stderr, "train_perf: %s: bad value '%s'\n", a, v);
      return 2;
    }
  }
  int nsel = 0;
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++)
    nsel += !strcmp(model, "all") || !strcmp(model, models[k].name);
  if (!nsel) {
    fprintf(stderr, "train_perf: --model %s: expected tiny, larger or all\n", model);
    return 2;
  }
  if (!json)
    printf("# %-6s %10s %6s %5s %8s %6s %10s %12s %8s %8s\n", "model", "params", "batch", "T", "threads",
           "steps", "step_ms", "tokens/s", "loss0", "lossN");
  int rc = 0;
  char list[256];
  snprintf(list, sizeof list, "%s", threads);
  for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
    if (strcmp(model, "all") && strcmp(model, models[k].name)) continue;
    char copy[256];
    memcpy(copy, list, sizeof copy);
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      int th = atoi(tok);
      if (th <= 0) {
        fprintf(stderr, "train_perf: --threads: bad count '%s'\n", tok);
        return 2;
      }
      rc |= run_one(&models[k], th, steps ? steps : models[k].steps, warmup, max_s, json);
    }
  }
  return rc;
}
