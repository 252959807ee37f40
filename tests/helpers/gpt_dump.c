/* Writes one forward/backward of the reference GPT to a file for tests/integration/gpt_torch_ref.py:
 * config, weights, inputs, targets (some -1), loss, logits and gradients, so PyTorch can rebuild the
 * same model and compare. Format (little-endian): "DTRGPTD1", int32 V, block, layers, heads, embd, B,
 * T, int64 nparams, f32 params[nparams], i32 inputs[B*T], i32 targets[B*T], f32 loss,
 * f32 logits[B*T*V], f32 grads[nparams].
 * usage: gpt_dump OUT [--vocab V] [--block N] [--layers L] [--heads H] [--embd C] [--batch B] [--T T]
 *                    [--seed S] [--threads N] [--perturb X] [--accum K] [--init-from FILE]
 * --init-from: the weights of a safetensors file (runtime/model/gpt_weights.h: dtrain's or GPT-2's layout),
 * loaded as the trainer's model.init_from loads them (each tp rank its slice straight from the file); the
 * shape comes from the file, but for the flags given (--heads where the file does not say). --perturb and
 * --seed's weights do not apply then (the seed still draws the batch).
 * Under `dtrain launch` with WORLD_SIZE > 1 the ranks form a tensor-parallel group: each runs its slice of
 * the same (perturbed) model, forward and backward with the tp all-reduces, and writes OUT.rankR:
 * "DTRGPTP1", int32 tp, rank, ntensors; per tensor int32 name length, the name, int32 split, int64
 * shape[2], gshape[2], f32 grads of its slice; then f32 logits of its vocabulary slice [B*T*V/tp] and
 * f32 loss. Rank 0 also writes OUT as above (the whole model's weights, for the reference). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "dtrain/comm.h"
#include "dtrain/parallel.h"
#include "dtrain/store.h"
#include "runtime/model/gpt.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/model/gpt_weights.h"

static uint64_t rng_state;
static double urand(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

static int write_all(FILE *f, const void *p, size_t n, const char *path) {
  if (fwrite(p, 1, n, f) != n) {
    fprintf(stderr, "gpt_dump: write to %s failed\n", path);
    return -1;
  }
  return 0;
}

/* This rank's slice of the whole model m, run forward and backward over tp, written to path.rankR; rank
 * 0 also writes path as the single-rank dump (the whole model's weights, the tp run's loss). */
static int dump_tp(const char *path, dtr__gpt *m, const dtr__gpt_weights *init, const dtr__gpt_config *cfg,
                   const int32_t *in, const int32_t *tg, int B, int T, int accum, int threads) {
  int rank = atoi(getenv("RANK")), size = atoi(getenv("WORLD_SIZE"));
  char err[512] = "";
  dtr_store *store = NULL;
  dtr_comm *c = NULL;
  dtr_comm_config cc = dtr_comm_config_default();
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK ||
      dtr_comm_create(store, rank, size, &cc, &c, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "gpt_dump: %s\n", err);
    return 1;
  }
  dtr_tp tp = dtr_tp_make(c, threads);
  dtr__gpt_part part = dtr__gpt_whole(cfg);
  part.tp = &tp;
  dtr__gpt *s = NULL;
  if (dtr__gpt_create_part(cfg, &part, 1, threads, B, &s, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "gpt_dump: %s\n", err);
    return 1;
  }
  if (init) { /* the slice straight from the file, as the trainer loads it */
    if (dtr__gpt_weights_load(init, s, cfg, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "gpt_dump: %s\n", err);
      return 1;
    }
  } else { /* the slice of the (perturbed) whole model's weights */
    for (int i = 0; i < dtr__gpt_num_tensors(s); i++) {
      const dtr__gpt_param *t = dtr__gpt_tensor(s, i), *w = NULL;
      for (int j = 0; j < dtr__gpt_num_tensors(m) && !w; j++)
        if (!strcmp(dtr__gpt_tensor(m, j)->name, t->name)) w = dtr__gpt_tensor(m, j);
      dtr__gpt_copy_slice(t, size, rank, dtr__gpt_params(m) + w->offset, w->gshape[0],
                          dtr__gpt_params(s) + t->offset);
    }
  }
  int N = B * T, Vl = cfg->vocab_size / size;
  float loss = 0, *logits = malloc((size_t)N * Vl * sizeof(float));
  /* the slice's logits: a forward without targets keeps them (the loss turns them into probabilities) */
  int bad = !logits || dtr__gpt_forward_chunk(s, 0, 0, in, NULL, NULL, B, T, NULL, NULL) != DTR_OK;
  if (!bad) memcpy(logits, s->slots[0].probs, (size_t)N * Vl * sizeof(float));
  dtr__gpt_zero_grad(s);
  for (int k = 0; k < accum && !bad; k++)
    bad = dtr__gpt_forward_chunk(s, 0, 0, in, NULL, tg, B, T, NULL, &loss) != DTR_OK ||
          dtr__gpt_backward_chunk(s, 0, 0, 1.0f / (float)accum, NULL, NULL, NULL, NULL) != DTR_OK;
  if (bad) {
    fprintf(stderr, "gpt_dump: %s\n", logits ? dtr__gpt_last_error(s) : "out of memory");
    return 1;
  }
  char rp[4096];
  snprintf(rp, sizeof rp, "%s.rank%d", path, rank);
  FILE *f = fopen(rp, "wb");
  if (!f) return perror(rp), 1;
  int32_t hdr[3] = {size, rank, dtr__gpt_num_tensors(s)};
  bad = write_all(f, "DTRGPTP1", 8, rp) || write_all(f, hdr, sizeof hdr, rp);
  for (int i = 0; i < dtr__gpt_num_tensors(s) && !bad; i++) {
    const dtr__gpt_param *t = dtr__gpt_tensor(s, i);
    int32_t nl = (int32_t)strlen(t->name), split = t->split;
    bad = write_all(f, &nl, 4, rp) || write_all(f, t->name, (size_t)nl, rp) || write_all(f, &split, 4, rp) ||
          write_all(f, t->shape, 16, rp) || write_all(f, t->gshape, 16, rp) ||
          write_all(f, dtr__gpt_grads(s) + t->offset, t->count * sizeof(float), rp);
  }
  bad = bad || write_all(f, logits, (size_t)N * Vl * sizeof(float), rp) || write_all(f, &loss, 4, rp);
  if (fclose(f) != 0) bad = 1;
  if (rank == 0 && !bad) { /* the whole model's weights and the batch, for the reference */
    f = fopen(path, "wb");
    if (!f) return perror(path), 1;
    int32_t h[7] = {cfg->vocab_size, cfg->block_size, cfg->n_layer, cfg->n_head, cfg->n_embd, B, T};
    int64_t np = (int64_t)dtr__gpt_num_params(m);
    float *zero = calloc((size_t)N * cfg->vocab_size + (size_t)np, sizeof(float));
    bad = !zero || write_all(f, "DTRGPTD1", 8, path) || write_all(f, h, sizeof h, path) ||
          write_all(f, &np, sizeof np, path) ||
          write_all(f, dtr__gpt_params(m), (size_t)np * sizeof(float), path) ||
          write_all(f, in, (size_t)N * sizeof(int32_t), path) ||
          write_all(f, tg, (size_t)N * sizeof(int32_t), path) || write_all(f, &loss, sizeof loss, path) ||
          write_all(f, zero, ((size_t)N * cfg->vocab_size + (size_t)np) * sizeof(float), path);
    free(zero);
    if (fclose(f) != 0) bad = 1;
  }
  printf("gpt_dump: rank %d of tp %d, %zu params, loss %.6f -> %s\n", rank, size, dtr__gpt_num_params(s),
         loss, rp);
  free(logits);
  dtr__gpt_destroy(s);
  dtr_comm_destroy(c);
  dtr_store_close(store);
  return bad ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help")) {
    fprintf(stderr,
            "usage: gpt_dump OUT [--vocab V] [--block N] [--layers L] [--heads H] [--embd C] [--batch B] "
            "[--T T]\n"
            "                    [--seed S] [--threads N] [--perturb X] [--accum K] [--init-from FILE]\n");
    return 2;
  }
  const char *path = argv[1], *init_path = NULL;
  dtr__gpt_config cfg = {.vocab_size = 14, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 64};
  dtr__gpt_config given = {0};
  int B = 4, T = -1, threads = 1, accum = 1;
  long long seed = 1;
  double perturb = 0.0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) {
      fprintf(stderr, "gpt_dump: %s needs a value\n", a);
      return 2;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--init-from")) {
      init_path = v;
      continue;
    }
    char *end;
    double d = strtod(v, &end);
    if (*end || end == v) {
      fprintf(stderr, "gpt_dump: %s: bad number '%s'\n", a, v);
      return 2;
    }
    if (!strcmp(a, "--vocab"))
      given.vocab_size = cfg.vocab_size = (int)d;
    else if (!strcmp(a, "--block"))
      given.block_size = cfg.block_size = (int)d;
    else if (!strcmp(a, "--layers"))
      given.n_layer = cfg.n_layer = (int)d;
    else if (!strcmp(a, "--heads"))
      given.n_head = cfg.n_head = (int)d;
    else if (!strcmp(a, "--embd"))
      given.n_embd = cfg.n_embd = (int)d;
    else if (!strcmp(a, "--batch"))
      B = (int)d;
    else if (!strcmp(a, "--T"))
      T = (int)d;
    else if (!strcmp(a, "--seed"))
      seed = (long long)d;
    else if (!strcmp(a, "--threads"))
      threads = (int)d;
    else if (!strcmp(a, "--perturb"))
      perturb = d;
    else if (!strcmp(a, "--accum"))
      accum = (int)d;
    else {
      fprintf(stderr, "gpt_dump: unknown flag %s\n", a);
      return 2;
    }
  }
  char err[16384] = "";
  dtr__gpt_weights *init = NULL;
  if (init_path) {
    if (dtr__gpt_weights_open(init_path, &init, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "gpt_dump: %s\n", err);
      return 1;
    }
    dtr__gpt_config fc = dtr__gpt_weights_config(init);
    int *fields[] = {&cfg.vocab_size, &cfg.block_size, &cfg.n_layer, &cfg.n_head, &cfg.n_embd};
    const int have[] = {given.vocab_size, given.block_size, given.n_layer, given.n_head, given.n_embd};
    const int file[] = {fc.vocab_size, fc.block_size, fc.n_layer, fc.n_head, fc.n_embd};
    for (int k = 0; k < 5; k++)
      if (!have[k] && file[k] > 0) *fields[k] = file[k];
  }
  if (T < 0) T = cfg.block_size;
  if (accum < 1) accum = 1;
  dtr__gpt *m = NULL;
  if (dtr__gpt_create(&cfg, (uint64_t)seed, threads, B, &m, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "gpt_dump: %s\n", err);
    return 1;
  }
  size_t n = dtr__gpt_num_params(m);
  float *p = dtr__gpt_params(m);
  rng_state = (uint64_t)seed * 7919u + 1;
  if (init && dtr__gpt_weights_load(init, m, &cfg, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "gpt_dump: %s\n", err);
    return 1;
  }
  for (size_t i = 0; i < n && !init; i++) p[i] += (float)((urand() - 0.5) * 2.0 * perturb);
  int N = B * T, V = cfg.vocab_size;
  int32_t *in = malloc((size_t)N * sizeof(int32_t)), *tg = malloc((size_t)N * sizeof(int32_t));
  float *logits = malloc((size_t)N * V * sizeof(float));
  if (!in || !tg || !logits) return 1;
  for (int i = 0; i < N; i++) {
    in[i] = (int32_t)(urand() * V);
    tg[i] = urand() < 0.2 ? -1 : (int32_t)(urand() * V);
  }
  float loss = 0;
  dtr__gpt_zero_grad(m);
  /* accum > 1: the same batch K times with grad_scale 1/K, which must equal one plain backward */
  for (int k = 0; k < accum; k++) {
    if (dtr__gpt_forward(m, in, tg, B, T, &loss, logits) != DTR_OK ||
        dtr__gpt_backward(m, 1.0f / (float)accum, NULL, NULL) != DTR_OK) {
      fprintf(stderr, "gpt_dump: %s\n", dtr__gpt_last_error(m));
      return 1;
    }
  }
  const char *ws = getenv("WORLD_SIZE");
  if (ws && atoi(ws) > 1) {
    int rc = dump_tp(path, m, init, &cfg, in, tg, B, T, accum, threads);
    dtr__gpt_weights_close(init);
    free(in);
    free(tg);
    free(logits);
    dtr__gpt_destroy(m);
    return rc;
  }
  dtr__gpt_weights_close(init);
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    return 1;
  }
  int32_t hdr[7] = {cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, B, T};
  int64_t np = (int64_t)n;
  int bad = write_all(f, "DTRGPTD1", 8, path) || write_all(f, hdr, sizeof hdr, path) ||
            write_all(f, &np, sizeof np, path) || write_all(f, p, n * sizeof(float), path) ||
            write_all(f, in, (size_t)N * sizeof(int32_t), path) ||
            write_all(f, tg, (size_t)N * sizeof(int32_t), path) || write_all(f, &loss, sizeof loss, path) ||
            write_all(f, logits, (size_t)N * V * sizeof(float), path) ||
            write_all(f, dtr__gpt_grads(m), n * sizeof(float), path);
  if (fclose(f) != 0) bad = 1;
  printf("gpt_dump: %zu params, B=%d T=%d, loss %.6f -> %s\n", n, B, T, loss, path);
  free(in);
  free(tg);
  free(logits);
  dtr__gpt_destroy(m);
  return bad ? 1 : 0;
}
