/* The built-in trainer behind `dtrain train`: the reference GPT on a dp x tp x pp mesh. Each step reads
 * this rank's slice of a global batch that depends only on (seed, step), runs its micro-batches through
 * the pipeline schedule (train_step.c: tensor-parallel layers inside each stage), exchanges gradients
 * in DP buckets (or ZeRO-1) while the last backward still runs, clips, takes an AdamW step, and every
 * `checkpoint.every` steps saves asynchronously, layout-free; a restarted job resumes bit for bit. With
 * train.device cuda the model, its gradients and AdamW live on this rank's GPU (train_cuda.c, data
 * parallel only) and the buckets go over NCCL; the rest (data, losses, metrics, checkpoint agreement)
 * stays here. */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/device.h"
#include "common/param.h"
#include "runtime/model/gpt_internal.h"
#include "runtime/model/gpt_weights.h"
#include "runtime/train/train_internal.h"

#define MAX_SKIPPED_IN_A_ROW 10

typedef dtr__trainer trainer;

static dtr_result comm_fail(trainer *t, dtr_result rc, const char *what) {
  return dtr__fail(t->err, t->errcap, rc, "%s: %s", what, dtr_comm_last_error(t->dp_comm));
}

static int on_cuda(const dtr_recipe *r) {
  return strcmp(r->train.device, "cuda") == 0;
}

dtr_result dtr_train_check(const dtr_recipe *r, char *err, size_t errcap) {
  if (on_cuda(r) && (r->parallel.tp > 1 || r->parallel.pp > 1 || r->train.zero)) {
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                     "%s: train.device=cuda with parallel.tp=%d pp=%d train.zero=%d: the GPU trainer is data "
                     "parallel only so far (tensor and pipeline parallelism and ZeRO-1 train on the cpu)",
                     r->path, r->parallel.tp, r->parallel.pp, r->train.zero);
  }
  /* dtr_recipe_load refuses the same with the file:line:col of the value; these guard recipes built in
   * code. */
  if (on_cuda(r)) {
#ifndef DTRAIN_HAVE_CUDA
    return dtr__fail(
        err, errcap, DTR_ERR_UNSUPPORTED,
        "%s: train.device=cuda: this dtrain was built without CUDA (rebuild with the CUDA toolkit "
        "and NCCL, cmake -DDTRAIN_CUDA=ON), or set train.device=cpu",
        r->path);
#endif
    if (strcmp(r->launch.backend, "nccl") != 0) {
      return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                       "%s: train.device=cuda needs launch.backend=nccl, not %s: the gradients live in GPU "
                       "memory, which only NCCL moves",
                       r->path, r->launch.backend[0] ? r->launch.backend : "(unset)");
    }
    if (dtr__cuda_device_count() == 0) {
      const char *vis = dtr__param_str("CUDA_VISIBLE_DEVICES", NULL);
      return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                       "%s: train.device=cuda: no CUDA device is visible on this machine%s%s%s (set "
                       "train.device=cpu, or run where the GPUs are)",
                       r->path, vis ? " (CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "", vis ? ")" : "");
    }
    if (r->train.precision[0] && strcmp(r->train.precision, "fp32") != 0 &&
        strcmp(r->train.precision, "bf16") != 0) {
      return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                       "%s: train.precision=%s: the cuda trainer computes in fp32 or bf16", r->path,
                       r->train.precision);
    }
  } else if (strcmp(r->train.device, "cpu") != 0 && r->train.device[0]) {
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                     "%s: train.device=%s: the reference GPT trains on the cpu or cuda", r->path,
                     r->train.device);
  } else if (r->train.precision[0] && strcmp(r->train.precision, "fp32") != 0) {
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                     "%s: train.precision=%s: the cpu trainer computes in fp32", r->path, r->train.precision);
  }
  if (r->train.steps < 0 || r->train.global_batch < 1 || r->train.micro_batch < 1) {
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: train.steps=%lld global_batch=%d micro_batch=%d",
                     r->path, (long long)r->train.steps, r->train.global_batch, r->train.micro_batch);
  }
  return DTR_OK;
}

static dtr_result setup(trainer *t) {
  const dtr_recipe *r = t->r;
  char *err = t->err;
  size_t errcap = t->errcap;
  dtr_progress_phase("start-up", 1);
  /* what this trainer cannot run now it will not run after a restart either: a missing GPU, say */
  if (dtr_train_check(r, err, errcap) != DTR_OK) return DTR_ERR_PERMANENT;
  t->threads = r->train.threads > 0 ? r->train.threads : (int)dtr__param_int("OMP_NUM_THREADS", 1);
  if (t->threads < 1) t->threads = 1;

  dtr_runtime_config rc_cfg = dtr_runtime_config_default();
  if (r->launch.backend[0] && dtr_backend_parse(r->launch.backend, &rc_cfg.backend) != DTR_OK)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: launch.backend=%s: unknown", r->path,
                     r->launch.backend);
  if (rc_cfg.backend == DTR_BACKEND_NCCL && !on_cuda(r)) {
    return dtr__fail(
        err, errcap, DTR_ERR_UNSUPPORTED,
        "%s: launch.backend=nccl: the cpu trainer's gradients live in host memory (use host or mpi)",
        r->path);
  }
  if (on_cuda(r)) {
    /* launch.backend nccl names how the gradients travel; what stays in host memory (the checkpoint's
     * agreement, losses, metrics) needs a host-memory world, and NCCL gets a DP group of its own. */
    rc_cfg.backend = DTR_BACKEND_HOST;
    rc_cfg.nccl_dp = 1;
  }
  rc_cfg.dp = r->parallel.dp;
  rc_cfg.tp = r->parallel.tp;
  rc_cfg.pp = r->parallel.pp;
  DTR_CHECK(dtr_init(&rc_cfg, &t->rt, err, errcap));
  const dtr_mesh *mesh = dtr_runtime_mesh(t->rt);
  t->rank = dtr_runtime_identity(t->rt)->rank;
  t->world = dtr_runtime_identity(t->rt)->world_size;
  t->dp = mesh->dp;
  t->dp_rank = mesh->dp_rank;
  t->tp_size = mesh->tp;
  t->tp_rank = mesh->tp_rank;
  t->pp = mesh->pp;
  t->stage = mesh->pp_rank;
  t->chunks = r->parallel.virtual_stages > 0 ? r->parallel.virtual_stages : 1;
  t->dp_comm = dtr_runtime_dp(t->rt);
  t->tp_comm = dtr_runtime_tp(t->rt);
  t->pp_comm = dtr_runtime_pp(t->rt);
  t->grad_comm = on_cuda(r) ? dtr_runtime_dp_nccl(t->rt) : t->dp_comm;

  int G = r->train.global_batch, mb = r->train.micro_batch;
  if (G % (mb * t->dp) != 0) {
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "%s: train.global_batch=%d is not a multiple of micro_batch=%d x %d DP ranks", r->path,
                     G, mb, t->dp);
  }
  t->micro = mb;
  t->accum = G / (mb * t->dp);

  dtr_data_config dc = {0};
  dc.kind = r->data.kind;
  dc.path = r->data.path;
  dc.digits = r->data.digits;
  dc.block_size = r->model.block_size;
  dc.vocab_size = r->model.vocab_size;
  dc.seed = r->job.seed;
  dc.global_batch = G;
  dc.dp_rank = t->dp_rank;
  dc.dp = t->dp;
  DTR_CHECK(dtr__data_open(&dc, &t->data, err, errcap));
  t->T = dtr__data_seq_len(t->data);
  dtr__data_rank_range(t->data, &t->first, &t->count);

  dtr__gpt_config gc = {r->model.vocab_size > 0 ? r->model.vocab_size : dtr__data_vocab(t->data),
                        r->model.block_size, r->model.n_layer, r->model.n_head, r->model.n_embd};
  if (gc.vocab_size < dtr__data_vocab(t->data)) {
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "%s: model.vocab_size=%d is smaller than the data's %d tokens", r->path, gc.vocab_size,
                     dtr__data_vocab(t->data));
  }
  t->x = malloc((size_t)mb * t->T * sizeof *t->x);
  t->y = malloc((size_t)mb * t->T * sizeof *t->y);
  if (!t->x || !t->y) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "trainer: out of memory");
  if (!on_cuda(r)) {
    DTR_CHECK(dtr__train_setup_cpu(t, &gc));
  } else {
    /* The host model holds the seeded initial weights (both devices start alike) and serves the
     * accuracy evaluation's greedy decoding (batch 1) from downloaded weights. */
    DTR_CHECK(dtr__gpt_create(&gc, r->job.seed, t->threads, 1, &t->model, err, errcap));
    t->nparams = dtr__gpt_num_params(t->model);
    DTR_CHECK(dtr__gpu_create(r, &gc, dtr__gpt_params(t->model), t->nparams, dtr_runtime_cuda_device(t->rt),
                              mb, t->grad_comm, &t->gpu, err, errcap));
    DTR_CHECK(dtr_adamw_init(&t->opt, t->nparams, r->train.beta1, r->train.beta2, r->train.eps,
                             r->train.weight_decay));
    t->opt_ready = 1;
    size_t bucket = (size_t)(r->train.bucket_mb * 1048576.0),
           first = (size_t)(r->train.first_bucket_mb * 1048576.0);
    if (bucket < 4096) bucket = 4096;
    if (first < 4096) first = 4096;
    DTR_CHECK(dtr_dp_sync_create(t->grad_comm, dtr__gpu_grads(t->gpu), t->nparams, bucket, first,
                                 r->train.overlap, &t->sync));
  }

  t->state.magic = DTR_TRAIN_STATE_MAGIC;
  t->state.version = DTR_TRAIN_STATE_VERSION;
  t->state.seed = r->job.seed;
  t->state.first_loss = NAN;
  int nshards = 0;
  const dtr_range *shards = r->train.zero ? dtr_dp_sync_shards(t->sync, &nshards) : NULL;
  dtr__train_bufs bufs = {dtr__gpt_tensor(t->model, 0),
                          dtr__gpt_num_tensors(t->model),
                          dtr__gpt_params(t->model),
                          t->opt.m,
                          t->opt.v,
                          DTR_CKPT_HOST,
                          t->tp_size,
                          t->tp_rank,
                          shards,
                          nshards};
  if (t->gpu) bufs = dtr__gpu_bufs(t->gpu);
  DTR_CHECK(dtr__train_ckpt_create(r, r->checkpoint.dir, dtr_runtime_world(t->rt), t->dp_rank, t->dp, &bufs,
                                   &t->opt, &t->state, t->data, &t->ck, err, errcap));
  return DTR_OK;
}

static void teardown(trainer *t) {
  dtr__train_ckpt_destroy(t->ck);
  dtr_dp_sync_destroy(t->sync);
  dtr_pp_pipe_destroy(t->pipe);
  dtr_comm_destroy(t->emb_comm);
  if (t->opt_ready) dtr_adamw_free(&t->opt);
  dtr__gpu_destroy(t->gpu);
  dtr__gpt_destroy(t->model);
  dtr__data_close(t->data);
  dtr__metrics_close(t->metrics);
  free(t->x);
  free(t->y);
  free(t->decay);
  free(t->counted);
  dtr_finalize(t->rt);
}

/* The end of a step on either device, after the gradients are averaged and (cpu) clipped: the
 * learning rate, the data position, and AdamW unless the norm says the batch overflowed. coef: the
 * clipping factor the device's AdamW applies (the cpu clipped in place already). */
static dtr_result finish_step(trainer *t, int64_t step, double *lr, double gnorm, double coef) {
  const dtr_recipe *r = t->r;
  *lr = t->lr_scale * dtr_lr_at(step, r->train.warmup_steps, r->train.steps, r->train.lr, r->train.min_lr);
  dtr__data_advance(t->data);
  /* An overflowing batch must not poison the weights and moments: skip its update (every rank sees
   * the same averaged gradients, so every rank skips), and give up when it keeps happening. */
  if (!isfinite(gnorm)) {
    t->skipped++;
    if (t->rank == 0) DTR_WARN("step %lld: gradient norm %g: update skipped", (long long)step + 1, gnorm);
    if (++t->skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW)
      return dtr__train_diverged(t, step + 1 - t->skipped_in_a_row);
    return DTR_OK;
  }
  t->skipped_in_a_row = 0;
  if (t->gpu) return dtr__gpu_adamw(t->gpu, &t->opt, *lr, coef, t->err, t->errcap);
  return dtr__train_cpu_update(t, *lr);
}

/* One optimizer step: micro-batches through the pipeline, the gradient exchange (started during the last
 * backward), the global mean loss, clipping, AdamW. */
static dtr_result train_step(trainer *t, int64_t step, double *loss, double *lr, double *gnorm) {
  const dtr_recipe *r = t->r;
  if (t->gpu) {
    double coef = 1.0;
    dtr__step_data d = {t->data, t->x, t->y, t->first, t->micro, t->accum, t->T};
    DTR_CHECK(dtr__gpu_grads_step(t->gpu, &d, step, t->sync, t->dp_comm, r->train.grad_clip, loss, gnorm,
                                  &coef, t->err, t->errcap));
    return finish_step(t, step, lr, *gnorm, coef);
  }
  DTR_CHECK(dtr__train_cpu_grads(t, step, loss, gnorm));
  return finish_step(t, step, lr, *gnorm, 1.0);
}

/* Test-only fault hook (docs/environment.md): DTRAIN_TRAIN_FAULT_STEP=N kills rank
 * DTRAIN_TRAIN_FAULT_RANK (default 0) with SIGKILL right after step N, on the first attempt only
 * (DTRAIN_RESTART_COUNT 0), so that a job under max_restarts comes back and resumes. */
typedef struct fault_hook {
  int64_t step;
  int armed;
} fault_hook;

static fault_hook fault_hook_read(int rank) {
  fault_hook f = {0, 0};
  f.step = dtr__param_int("DTRAIN_TRAIN_FAULT_STEP", 0);
  int64_t frank = dtr__param_int("DTRAIN_TRAIN_FAULT_RANK", 0);
  f.armed = f.step > 0 && frank == rank && dtr__param_int("DTRAIN_RESTART_COUNT", 0) == 0;
  return f;
}

static void fault_hook_fire(const fault_hook *f, int rank, int64_t step) {
  if (!f->armed || step != f->step) return;
  fprintf(stderr, "rank %d: DTRAIN_TRAIN_FAULT_STEP=%lld: killing this rank after step %lld\n", rank,
          (long long)f->step, (long long)step);
  fflush(NULL);
  raise(SIGKILL);
}

/* " x tp 2 x pp 2 (1f1b) (ZeRO-1)": what follows "N DP ranks" ("" for plain data parallelism). */
static void describe_layout(const trainer *t, char *layout, size_t cap) {
  const dtr_recipe *r = t->r;
  layout[0] = '\0';
  if (t->tp_size > 1 || t->pp > 1) {
    snprintf(layout, cap, " x tp %d x pp %d", t->tp_size, t->pp);
    if (t->pp > 1)
      snprintf(layout + strlen(layout), cap - strlen(layout), " (%s%s%.0d%s)", r->parallel.schedule,
               t->chunks > 1 ? ", " : "", t->chunks > 1 ? t->chunks : 0,
               t->chunks > 1 ? " chunks per stage" : "");
  }
  if (r->train.zero) snprintf(layout + strlen(layout), cap - strlen(layout), " (ZeRO-1)");
}

static void print_header(trainer *t, int64_t start) {
  const dtr_recipe *r = t->r;
  char what[DTR_RECIPE_STR + 64];
  if (r->data.kind == DTR_DATA_ADDITION)
    snprintf(what, sizeof what, "addition of %d-digit numbers", r->data.digits);
  else
    snprintf(what, sizeof what, "%s (%lld tokens)", r->data.path, (long long)dtr__data_num_tokens(t->data));
  char layout[160];
  describe_layout(t, layout, sizeof layout);
  printf(
      "%s: %d DP rank%s%s x %d thread%s | %.2fM params%s | %lld steps x %d seqs x %d tokens (micro %d, accum "
      "%d) "
      "| %s\n",
      r->job.name, t->dp, t->dp > 1 ? "s" : "", layout, t->threads, t->threads > 1 ? "s" : "",
      (double)t->nparams / 1e6, t->tp_size > 1 || t->pp > 1 ? " on this rank" : "", (long long)r->train.steps,
      r->train.global_batch, t->T, t->micro, t->accum, what);
  if (t->gpu) printf("device %s, gradients all-reduced over NCCL\n", dtr__gpu_describe(t->gpu));
  if (start > 0) printf("resumed from checkpoint step %lld in %s\n", (long long)start, r->checkpoint.dir);
  fflush(stdout);
}

/* The final summary line and run_dir/summary.txt (key=value, for scripts). */
static void summarize(trainer *t, int64_t start, double wall_s, double last_loss, double acc,
                      double wait_share, uint64_t digest) {
  const dtr_recipe *r = t->r;
  double tps = t->sum_step_s > 0 ? t->sum_tokens / t->sum_step_s : 0;
  char tok[32], accs[48] = "";
  dtr__fmt_thousands(tps, tok, sizeof tok);
  if (!isnan(acc)) snprintf(accs, sizeof accs, " | accuracy %.1f%%", 100 * acc);
  printf(
      "done: %lld steps in %.1f s | %s tok/s | loss %.4f -> %.4f%s | "
      "dp wait %.1f%% of step time (overlap %s) | weights xxh64 %016llx\n",
      (long long)t->steps_run, wall_s, tok, t->state.first_loss, last_loss, accs, 100 * wait_share,
      r->train.overlap ? "on" : "off", (unsigned long long)digest);
  fflush(stdout);
  char path[DTR_RECIPE_STR + 32];
  snprintf(path, sizeof path, "%s/summary.txt", r->job.run_dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    DTR_WARN("%s: cannot write the summary", path);
    return;
  }
  fprintf(f, "steps=%lld\nstart_step=%lld\nsteps_run=%lld\nskipped_steps=%lld\n", (long long)r->train.steps,
          (long long)start, (long long)t->steps_run, (long long)t->skipped);
  fprintf(f, "dp=%d\ntp=%d\npp=%d\nschedule=%s\nvirtual_stages=%d\nzero=%d\nthreads=%d\noverlap=%d\n", t->dp,
          t->tp_size, t->pp, r->parallel.schedule, t->chunks, r->train.zero, t->threads, r->train.overlap);
  /* rank 0's: its part of the model, its optimizer state and activations as allocated */
  fprintf(f,
          "params_rank0=%zu\noptimizer_bytes_rank0=%zu\nactivation_bytes_rank0=%zu\ntp_bytes_per_step_rank0=%"
          "llu\n",
          t->nparams, t->opt.n * 2 * sizeof(float),
          t->model && !t->gpu ? dtr__gpt_activation_bytes(t->model) : 0,
          (unsigned long long)t->tp_bytes_last);
  fprintf(f, "wall_s=%.3f\ntokens_per_s=%.1f\nstep_ms=%.3f\n", wall_s, tps,
          t->steps_run ? 1e3 * t->sum_step_s / (double)t->steps_run : 0.0);
  if (t->tied_identical >= 0) fprintf(f, "tied_embedding_identical=%d\n", t->tied_identical);
  fprintf(f, "first_loss=%.9g\nfinal_loss=%.9g\naccuracy=%.4f\ndp_wait_share=%.4f\nweights_xxh64=%016llx\n",
          t->state.first_loss, last_loss, acc, wait_share, (unsigned long long)digest);
  fclose(f);
}

/* Before a save: device buffers are snapshot from the checkpointer's own stream, so the model's queued
 * AdamW must be done. A device fault here ends the run (it is no failed save to train on after). */
static dtr_result quiesce(trainer *t) {
  return t->gpu ? dtr__gpu_sync(t->gpu, t->err, t->errcap) : DTR_OK;
}

/* model.init_from on a run with no checkpoint: every rank reads its part of the file's weights (the
 * optimizer and the data start fresh). Rank 0 says so. */
static dtr_result init_from(trainer *t) {
  const dtr_recipe *r = t->r;
  dtr__gpt_weights *w = NULL;
  dtr__gpt_config gc = {r->model.vocab_size, r->model.block_size, r->model.n_layer, r->model.n_head,
                        r->model.n_embd};
  dtr_result rc = dtr__gpt_weights_open(r->model.init_from, &w, t->err, t->errcap);
  if (rc == DTR_OK) rc = dtr__gpt_weights_load(w, t->model, &gc, t->err, t->errcap);
  if (rc == DTR_OK && t->gpu) rc = dtr__gpu_set_params(t->gpu, dtr__gpt_params(t->model), t->err, t->errcap);
  if (rc != DTR_OK) {
    char why[2048];
    snprintf(why, sizeof why, "%s", t->err);
    dtr__gpt_weights_close(w);
    return dtr__fail(t->err, t->errcap, rc, "model.init_from: %s", why);
  }
  if (t->rank == 0) {
    dtr__gpt_config fc = dtr__gpt_weights_config(w);
    char more[160] = "";
    if (fc.vocab_size < gc.vocab_size)
      snprintf(more, sizeof more, "; vocabulary rows %d-%d seeded", fc.vocab_size, gc.vocab_size - 1);
    if (fc.block_size > gc.block_size)
      snprintf(more + strlen(more), sizeof more - strlen(more), "; positions %d of its %d", gc.block_size,
               fc.block_size);
    printf("initialised from %s (%s layout%s); the optimizer and the data start fresh\n", r->model.init_from,
           dtr__gpt_layout_name(dtr__gpt_weights_layout(w)), more);
    fflush(stdout);
  }
  dtr__gpt_weights_close(w);
  return DTR_OK;
}

static dtr_result run(trainer *t) {
  const dtr_recipe *r = t->r;
  int64_t start = 0, steps = r->train.steps;
  DTR_CHECK(dtr__train_divergence_setup(t));
  if (r->checkpoint.resume) DTR_CHECK(dtr__train_resume(t, &start));
  /* A load wrote the device's fp32 weights behind the model: its bf16 copy follows. */
  if (t->gpu && start > 0) DTR_CHECK(dtr__gpu_params_changed(t->gpu, t->err, t->errcap));
  int initialised = start == 0 && r->model.init_from[0];
  if (t->rank == 0) {
    DTR_CHECK(
        dtr__metrics_open(r->job.run_dir, start, steps, r->train.log_every, &t->metrics, t->err, t->errcap));
    char rp[DTR_RECIPE_STR + 32], e2[256];
    snprintf(rp, sizeof rp, "%s/recipe.yaml", r->job.run_dir);
    if (dtr_recipe_write(r, rp, e2, sizeof e2) != DTR_OK) DTR_WARN("%s: %s", rp, e2);
    print_header(t, start);
    if (start >= steps) {
      printf("checkpoint step %lld: all %lld steps are done ", (long long)start, (long long)steps);
      printf("(remove %s or set checkpoint.resume=false to train again)\n", r->checkpoint.dir);
    }
  }
  if (initialised) DTR_CHECK(init_from(t));
  fault_hook fault = fault_hook_read(t->rank);
  int addition = r->data.kind == DTR_DATA_ADDITION;
  double t_begin = dtr__now_s(), last_loss = NAN, acc = NAN,
         tokens_per_step = (double)r->train.global_batch * t->T;
  int64_t saved = start;
  int save_pending = 0;
  for (int64_t s = start; s < steps; s++) {
    double t0 = dtr__now_s(), loss = 0, lr = 0, gnorm = 0;
    dtr_progress_step(s + 1);
    DTR_CHECK(train_step(t, s, &loss, &lr, &gnorm));
    double dt = dtr__now_s() - t0, wait = dtr_dp_sync_last_wait(t->sync);
    t->sum_step_s += dt;
    t->sum_wait_s += wait;
    t->sum_tokens += tokens_per_step;
    t->steps_run++;
    if (isnan(t->state.first_loss)) t->state.first_loss = loss;
    last_loss = loss;
    dtr__step_record rec = {s + 1, loss, lr, tokens_per_step / dt, 1e3 * dt, gnorm, 1e3 * wait, NAN, NULL};
    char note[96];
    if (initialised && s == start) {
      /* what the pretrained weights bought: a random model's first loss is about ln(vocab_size) */
      snprintf(note, sizeof note, " (weights from init_from; a random model starts near ln %d = %.2f)",
               r->model.vocab_size, log((double)r->model.vocab_size));
      rec.note = note;
    }
    if (addition && r->train.eval_every > 0 && ((s + 1) % r->train.eval_every == 0 || s + 1 == steps)) {
      dtr_progress_phase("evaluation", 1);
      DTR_CHECK(dtr__train_evaluate(t, &acc));
      rec.accuracy = acc;
    }
    dtr__metrics_step(t->metrics, &rec);
    fault_hook_fire(&fault, t->rank, s + 1);
    if (r->checkpoint.every > 0 && (s + 1) % r->checkpoint.every == 0 && s + 1 < steps) {
      /* A save that fails loses this checkpoint, not the run: the newest committed one is untouched and
       * training goes on (periodic_save says when it cannot). Only the final save is required. */
      dtr_progress_phase("checkpoint save", 1);
      DTR_CHECK(quiesce(t));
      DTR_CHECK(dtr__train_periodic_save(t, s + 1, &save_pending));
      saved = s + 1;
    }
  }
  dtr_progress_phase("checkpoint save", 1);
  if (saved < steps) {
    if (save_pending) DTR_CHECK(dtr__train_save_outcome(t, dtr__train_ckpt_wait(t->ck, t->err, t->errcap)));
    DTR_CHECK(quiesce(t));
    DTR_CHECK(dtr__train_required_save(dtr__train_ckpt_save(t->ck, steps, t->err, t->errcap)));
  }
  DTR_CHECK(dtr__train_required_save(dtr__train_ckpt_wait(t->ck, t->err, t->errcap)));
  dtr_progress_phase("summary", 1);
  double wall = dtr__now_s() - t_begin;
  /* The wait share averaged over the DP ranks (each waits for the slowest). */
  double share[2] = {t->sum_wait_s, t->sum_step_s};
  dtr_result rc = dtr_all_reduce(t->dp_comm, share, share, 2, DTR_F64, DTR_SUM, NULL);
  if (rc != DTR_OK) return comm_fail(t, rc, "summary all-reduce");
  uint64_t digest = t->steps_run > 0 ? dtr__train_digest(t) : 0; /* every rank: it may gather */
  t->tied_identical = dtr__train_tied_identical(t);
  if (t->rank == 0 && t->steps_run > 0) {
    summarize(t, start, wall, last_loss, acc, share[1] > 0 ? share[0] / share[1] : 0, digest);
    char layout[160], title[DTR_RECIPE_STR + 400];
    describe_layout(t, layout, sizeof layout);
    const char *init = strrchr(r->model.init_from, '/');
    init = init ? init + 1 : r->model.init_from;
    snprintf(title, sizeof title, "%s: %d DP rank%s%s%s, %lld steps%s%s", r->job.name, t->dp,
             t->dp > 1 ? "s" : "", layout, t->gpu ? ", cuda" : "", (long long)steps,
             r->model.init_from[0] ? ", from " : "", init);
    dtr__metrics_plot(t->metrics, title);
  }
  return DTR_OK;
}

dtr_result dtr_train(const dtr_recipe *r, char *err, size_t errcap) {
  trainer t;
  memset(&t, 0, sizeof t);
  t.r = r;
  t.lr_scale = 1.0;
  t.err = err;
  t.errcap = errcap;
  if (errcap) err[0] = 0;
  dtr_result rc = setup(&t);
  if (rc == DTR_OK) rc = run(&t);
  if (rc != DTR_OK && errcap && !err[0]) snprintf(err, errcap, "%s", dtr_strerror(rc));
  if (rc == DTR_ERR_PERMANENT) dtr_progress_reason(err); /* the agent's report quotes it */
  teardown(&t);
  return rc;
}
