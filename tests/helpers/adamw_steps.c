/* adamw_steps — AdamW, the LR schedule and gradient clipping on deterministic values, printed for a
 * comparison with PyTorch (tests/integration/test_optim_vs_torch.sh):
 *   adamw_steps [--n N] [--steps S] [--clip MAX_NORM]
 * Prints, with %.9g (a float's exact round trip):
 *   "hyper lr min_lr warmup total beta1 beta2 eps weight_decay clip", "mask i 0|1" (decay mask),
 *   "init i p", and per step "lr s value", "grad s i g" (before clipping), "norm s value", "cgrad s i g"
 *   (after clipping),
 *   "param s i p" (after the step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtrain/runtime.h"
#include "tests/helpers/mix64.h"

static double unit(uint64_t k) { /* [-1, 1) */
  return (double)(mix(k) >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
}

int main(int argc, char **argv) {
  int n = 1000, steps = 20;
  double clip = 1.0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--n") && i + 1 < argc)
      n = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--clip") && i + 1 < argc)
      clip = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: adamw_steps [--n N] [--steps S] [--clip MAX_NORM]\n");
      return 2;
    }
  }
  if (n < 1 || steps < 1) {
    fprintf(stderr, "adamw_steps: --n and --steps must be positive\n");
    return 2;
  }
  const double lr = 1e-2, min_lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  const int64_t warmup = steps / 4, total = steps;
  float *p = malloc(sizeof *p * (size_t)n), *g = malloc(sizeof *g * (size_t)n);
  uint8_t *mask = malloc((size_t)n);
  dtr_adamw o;
  if (!p || !g || !mask || dtr_adamw_init(&o, (size_t)n, b1, b2, eps, wd) != DTR_OK) {
    fprintf(stderr, "adamw_steps: out of memory\n");
    return 1;
  }
  printf("hyper %.17g %.17g %lld %lld %.17g %.17g %.17g %.17g %.17g\n", lr, min_lr, (long long)warmup,
         (long long)total, b1, b2, eps, wd, clip);
  for (int i = 0; i < n; i++) {
    mask[i] = i % 5 != 0; /* every fifth parameter (biases, norms) without decay */
    p[i] = (float)(unit(1000000 + (uint64_t)i) * 2.0);
    printf("mask %d %d\ninit %d %.9g\n", i, mask[i], i, p[i]);
  }
  for (int s = 0; s < steps; s++) {
    double l = dtr_lr_at(s, warmup, total, lr, min_lr);
    printf("lr %d %.17g\n", s, l);
    for (int i = 0; i < n; i++) {
      /* magnitudes from 1e-4 to 1, some exactly zero */
      double u = unit((uint64_t)s * 7777777 + (uint64_t)i);
      double scale = i % 3 == 0 ? 1e-4 : i % 3 == 1 ? 1e-2 : 0.2;
      g[i] = i % 97 == 0 ? 0.0f : (float)(u * scale);
      printf("grad %d %d %.9g\n", s, i, g[i]);
    }
    double norm = dtr_clip_grad_norm(g, (size_t)n, clip);
    printf("norm %d %.17g\n", s, norm);
    for (int i = 0; i < n; i++) printf("cgrad %d %d %.9g\n", s, i, g[i]);
    dtr_adamw_step(&o, p, g, mask, l);
    for (int i = 0; i < n; i++) printf("param %d %d %.9g\n", s, i, p[i]);
  }
  dtr_adamw_free(&o);
  free(p);
  free(g);
  free(mask);
  return 0;
}
