/* pp_check — the pipeline executor (dtr_pp_pipe) with a synthetic stage, as each rank under `dtrain
 * launch` (every rank one stage). A forward of micro-batch mb on virtual stage q writes the value
 * act(q, mb, i) into element i of its output and checks that its input is act(q-1, mb, i); backward
 * writes grad(q, mb, i) and checks grad(q+1, mb, i): a message that arrives at the wrong stage, for the
 * wrong micro-batch or chunk, or out of order fails with what it got. Each rank also checks that it
 * ran every (micro-batch, chunk) once forward and once backward per step.
 *   pp_check --schedule 1f1b|gpipe|interleaved --micro M [--chunks V] [--act N] [--steps S]
 *            [--delay-stage S --delay-ms D]   a random 0..D ms sleep before each action of stage S
 *            [--cuda]  the pp group on the nccl backend (device LOCAL_RANK): link buffers in GPU memory
 *            [--stall-stage S --stall-micro MB]  stage S stops forever at the forward of MB (the others
 *                                                must fail on the communicator's deadline)
 * Prints "pp_check stage S: N steps, K messages ok" or "pp_check stage S: FAILED: why". */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/device.h"
#include "dtrain/comm.h"
#include "dtrain/parallel.h"
#include "dtrain/store.h"
#include "runtime/model/kernels_cuda.h"
#include "tests/helpers/time_limit.h"

typedef struct ctx {
  int stage, p, v, m;
  size_t act;
  int delay_stage, delay_ms, stall_stage, stall_micro;
  uint64_t rng;
  long checked;
  int ran[64][8][2]; /* [micro][chunk][backward] */
  int cuda;          /* --cuda: the link buffers are device memory, staged through host[] */
  float *host[2];
  char why[256];
} ctx;

/* --cuda: a device buffer's contents in host memory (slot k of two), or the buffer itself. */
static const float *readable(ctx *c, const float *p, int k) {
  if (!c->cuda || !p) return p;
  if (dtr__cuda_memcpy(c->host[k], p, c->act * sizeof(float)) != DTR_OK) return NULL;
  return c->host[k];
}
static float *writable(ctx *c, float *p, int k) {
  return c->cuda && p ? c->host[k] : p;
}
static dtr_result publish(ctx *c, float *dev, const float *host) {
  if (!c->cuda || !dev) return DTR_OK;
  if (dtr__cuda_memcpy(dev, host, c->act * sizeof(float)) != DTR_OK)
    return snprintf(c->why, sizeof c->why, "copy to the device failed"), DTR_ERR_SYSTEM;
  return DTR_OK;
}

static float act_value(int q, int mb, size_t i) {
  return (float)(q * 100000 + mb * 100 + (int)(i % 97));
}
static float grad_value(int q, int mb, size_t i) {
  return -(float)(q * 100000 + mb * 100 + (int)(i % 89));
}

static void maybe_delay(ctx *c) {
  if (c->stage != c->delay_stage || c->delay_ms <= 0) return;
  c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
  usleep((useconds_t)(c->rng % (uint64_t)(c->delay_ms + 1)) * 1000);
}

static dtr_result check_in(ctx *c, const float *in, int want_q, int mb, int grad) {
  if (!in) {
    snprintf(c->why, sizeof c->why, "no %s input for micro-batch %d", grad ? "gradient" : "activation", mb);
    return DTR_ERR_INTERNAL;
  }
  for (size_t i = 0; i < c->act; i++) {
    float want = grad ? grad_value(want_q, mb, i) : act_value(want_q, mb, i);
    if (in[i] != want) {
      snprintf(c->why, sizeof c->why,
               "%s input of micro-batch %d: element %zu is %.0f, want %.0f (from virtual stage %d)",
               grad ? "gradient" : "activation", mb, i, (double)in[i], (double)want, want_q);
      return DTR_ERR_INTERNAL;
    }
  }
  c->checked++;
  return DTR_OK;
}

static dtr_result fwd(void *arg, int mb, int chunk, int slot, const float *in, float *out) {
  ctx *c = arg;
  int q = chunk * c->p + c->stage, last = q == c->p * c->v - 1;
  if (c->stage == c->stall_stage && mb == c->stall_micro) {
    printf("pp_check stage %d: stalling at the forward of micro-batch %d\n", c->stage, mb);
    fflush(stdout);
    for (;;) pause();
  }
  maybe_delay(c);
  c->ran[mb][chunk][0]++;
  if (q > 0) DTR_CHECK(check_in(c, readable(c, in, 0), q - 1, mb, 0));
  if (!last && !out) return snprintf(c->why, sizeof c->why, "no output buffer"), DTR_ERR_INTERNAL;
  if (last && out)
    return snprintf(c->why, sizeof c->why, "an output buffer on the last stage"), DTR_ERR_INTERNAL;
  float *o = writable(c, out, 1);
  for (size_t i = 0; o && i < c->act; i++) o[i] = act_value(q, mb, i);
  (void)slot;
  return publish(c, out, o);
}

static dtr_result bwd(void *arg, int mb, int chunk, int slot, const float *dout, float *din) {
  ctx *c = arg;
  int q = chunk * c->p + c->stage, last = q == c->p * c->v - 1;
  maybe_delay(c);
  if (!c->ran[mb][chunk][0])
    return snprintf(c->why, sizeof c->why, "backward before forward"), DTR_ERR_INTERNAL;
  c->ran[mb][chunk][1]++;
  if (!last) DTR_CHECK(check_in(c, readable(c, dout, 0), q + 1, mb, 1));
  if ((q > 0) != (din != NULL))
    return snprintf(c->why, sizeof c->why, "input-gradient buffer %s",
                    din ? "on the first stage" : "missing"),
           DTR_ERR_INTERNAL;
  float *o = writable(c, din, 1);
  for (size_t i = 0; o && i < c->act; i++) o[i] = grad_value(q, mb, i);
  (void)slot;
  return publish(c, din, o);
}

static int fail(int stage, const char *what, const char *detail) {
  printf("pp_check stage %d: FAILED: %s%s%s\n", stage, what, detail ? ": " : "", detail ? detail : "");
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  const char *rs = getenv("RANK"), *ws = getenv("WORLD_SIZE");
  if (!rs || !ws) {
    fprintf(stderr, "pp_check: run under dtrain launch\n");
    return 2;
  }
  static ctx c;
  c.stage = atoi(rs), c.p = atoi(ws), c.v = 1, c.m = 4, c.act = 4096;
  c.delay_stage = c.stall_stage = c.stall_micro = -1;
  c.rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)c.stage;
  dtr_pp_config cfg = {DTR_PP_1F1B, 4, 1, 4096};
  int steps = 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--cuda")) {
      c.cuda = 1;
      continue;
    }
    const char *v = i + 1 < argc ? argv[++i] : "";
    if (!strcmp(a, "--schedule")) {
      if (dtr_pp_schedule_parse(v, &cfg.schedule) != DTR_OK) return fail(c.stage, "bad --schedule", v);
    } else if (!strcmp(a, "--micro")) {
      c.m = atoi(v);
    } else if (!strcmp(a, "--chunks")) {
      c.v = atoi(v);
    } else if (!strcmp(a, "--act")) {
      c.act = (size_t)atol(v);
    } else if (!strcmp(a, "--steps")) {
      steps = atoi(v);
    } else if (!strcmp(a, "--delay-stage")) {
      c.delay_stage = atoi(v);
    } else if (!strcmp(a, "--delay-ms")) {
      c.delay_ms = atoi(v);
    } else if (!strcmp(a, "--stall-stage")) {
      c.stall_stage = atoi(v);
    } else if (!strcmp(a, "--stall-micro")) {
      c.stall_micro = atoi(v);
    } else {
      return fail(c.stage, "unknown argument", a);
    }
  }
  if (c.m < 1 || c.m > 64 || c.v < 1 || c.v > 8) return fail(c.stage, "--micro 1..64, --chunks 1..8", NULL);
  cfg.micro_batches = c.m, cfg.chunks = c.v, cfg.act_count = c.act;
  const char *ls = getenv("LOCAL_RANK");
  int local = ls ? atoi(ls) : c.stage;
  if (c.cuda) {
    int has = strstr(dtr_build_features(), "cuda") != NULL, ndev = has ? dtr__cuda_device_count() : 0;
    if (ndev <= local) {
      printf("pp_check stage %d: skipped: %s\n", c.stage,
             has ? "fewer CUDA devices visible than ranks on this node" : "this build has no CUDA");
      return 77;
    }
    c.host[0] = malloc(c.act * sizeof(float));
    c.host[1] = malloc(c.act * sizeof(float));
    if (!c.host[0] || !c.host[1]) return fail(c.stage, "out of memory", NULL);
  }
  time_limit_start("pp_check", 120);
  char err[512] = "";
  dtr_store *store = NULL;
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) return fail(c.stage, "store", err);
  dtr_comm_config cc = dtr_comm_config_default();
  cc.name = "pp";
  if (c.cuda) cc.backend = DTR_BACKEND_NCCL, cc.cuda_device = local;
  dtr_comm *pp = NULL;
  if (dtr_comm_create(store, c.stage, c.p, &cc, &pp, err, sizeof err) != DTR_OK)
    return fail(c.stage, "comm", err);
  dtr_pp_stage st = {fwd, bwd, &c};
  dtr_pp_pipe *pipe = NULL;
  if (dtr_pp_pipe_create(pp, &cfg, &st, &pipe, err, sizeof err) != DTR_OK) return fail(c.stage, "pipe", err);
  for (int s = 0; s < steps; s++) {
    memset(c.ran, 0, sizeof c.ran);
    if (dtr_pp_pipe_step(pipe, err, sizeof err) != DTR_OK) return fail(c.stage, err, c.why[0] ? c.why : NULL);
    for (int mb = 0; mb < c.m; mb++)
      for (int k = 0; k < c.v; k++)
        if (c.ran[mb][k][0] != 1 || c.ran[mb][k][1] != 1) {
          snprintf(err, sizeof err, "step %d: micro-batch %d chunk %d ran %d forward(s), %d backward(s)", s,
                   mb, k, c.ran[mb][k][0], c.ran[mb][k][1]);
          return fail(c.stage, err, NULL);
        }
  }
  printf("pp_check stage %d: %d steps, %ld messages ok (%d slots)%s\n", c.stage, steps, c.checked,
         dtr_pp_pipe_slots(pipe), c.cuda ? " over nccl" : "");
  dtr_pp_pipe_destroy(pipe);
  dtr_comm_destroy(pp);
  dtr_store_close(store);
  return 0;
}
