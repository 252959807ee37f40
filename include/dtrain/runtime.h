/* dtrain/runtime.h — what a training process needs around its model: who it is, its groups, and
 * the data-parallel gradient exchange and optimizer the built-in trainer uses.
 *
 * dtr_init works out this process's identity from whichever launcher started it — dtrain launch
 * (DTRAIN_STORE, RANK, ...), a torchrun-style environment (MASTER_ADDR/MASTER_PORT, RANK,
 * WORLD_SIZE), Open MPI's mpirun (OMPI_COMM_WORLD_*), Slurm's srun (SLURM_PROCID, SLURM_NTASKS,
 * SLURM_JOB_NODELIST in hostlist syntax) — or runs as a single process. It then builds the world
 * communicator and a device mesh dp x tp x pp (= world size, else a clear error) in Megatron order:
 * tensor-parallel ranks are adjacent (TP fastest), pipeline stages are furthest apart (PP slowest).
 *
 * The DP helper keeps every gradient in one flat buffer split into buckets (the first small, so the
 * first all-reduce starts early); as backward finishes a range of gradients the caller marks it
 * ready, and each bucket's asynchronous all-reduce starts the moment it is complete, so communication
 * overlaps the rest of backward. Inner micro-steps of gradient accumulation skip the exchange.
 *
 * Threads: one thread uses a runtime and its helpers. Functions marked COLLECTIVE must be called by
 * every rank of the named group in the same order.
 */
#ifndef DTRAIN_RUNTIME_H
#define DTRAIN_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/comm.h"
#include "dtrain/common.h"
#include "dtrain/recipe.h"
#include "dtrain/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- identity */

typedef enum dtr_launcher_kind {
  DTR_LAUNCHER_SINGLE = 0, /* no launcher: rank 0 of 1 */
  DTR_LAUNCHER_DTRAIN = 1, /* dtrain launch / dtrain run */
  DTR_LAUNCHER_TORCHRUN = 2,
  DTR_LAUNCHER_MPIRUN = 3,
  DTR_LAUNCHER_SLURM = 4,
} dtr_launcher_kind;

/* The launcher's name for messages: "single", "dtrain", "torchrun", "mpirun", "slurm"; "?launcher" for a
 * value outside the enum. Static storage; pure, thread-safe. */
DTR_API const char *dtr_launcher_name(dtr_launcher_kind k);

typedef struct dtr_identity {
  dtr_launcher_kind launcher;
  int rank, world_size, local_rank, local_world_size, node_rank, nnodes;
  char store_host[256]; /* where the job's store is (dtrain: DTRAIN_STORE; others: MASTER_ADDR or the
                           first Slurm node), "" when none is needed (single, mpi backend) */
  int store_port;
  int store_is_ours; /* 1: rank 0 must host the store (torchrun/slurm/mpirun without dtrain launch) */
} dtr_identity;

/* Read the identity from an environment (envp NULL: this process's). Precedence: dtrain, torchrun,
 * Open MPI, Slurm, single. Inconsistent values (RANK >= WORLD_SIZE, a bad hostlist) fail with
 * DTR_ERR_INVALID naming the variable. Pure: starts nothing. */
DTR_API dtr_result dtr_identity_from_env(char *const *envp, dtr_identity *out, char *err, size_t errcap);

/* Expand a Slurm hostlist ("gpu[01-04,07],login1") into at most cap names of up to 255 characters;
 * *n receives the count. DTR_ERR_INVALID names the malformed part. */
DTR_API dtr_result dtr_hostlist_expand(const char *list, char (*names)[256], int cap, int *n, char *err,
                                       size_t errcap);

/* ---- stop requests (preemption)
 *
 * A job that must end early (a Slurm preemption signal, the end of its time limit) is asked to stop at
 * its next step boundary, save its state and exit with DTR_EXIT_PREEMPTED, so that it can resume where it
 * stopped. `dtrain launch` gives every worker DTRAIN_STOP_FILE, a path in a directory of its agent's;
 * when a stop is requested on any node every agent creates that file (docs/environment.md). A C program
 * polls dtr_stop_requested() at its step boundaries (a stat: cheap enough for every step), a Python one
 * tests os.path.exists(os.environ["DTRAIN_STOP_FILE"]). Ranks see the request at slightly different
 * times: a program agrees on the step to stop after (the built-in trainer all-reduces the flag with MAX
 * at every step boundary) so that no rank saves step N while another saves N+1. */

/* Exit code of a worker (and of `dtrain train`) that stopped on request after saving its state. A worker
 * that exits 0 has finished its work: the job is then not requeued. */
#define DTR_EXIT_PREEMPTED 86

/* 1 when a stop was requested: the file DTRAIN_STOP_FILE names exists, or dtr_stop_request was called in
 * this process; else 0. Thread-safe; not collective (each rank sees its own answer: agree on it). */
DTR_API int dtr_stop_requested(void);
/* Mark a stop as requested in this process, e.g. from a signal handler of the program's own
 * (async-signal-safe). It cannot be withdrawn. */
DTR_API void dtr_stop_request(void);

/* ---- mesh */

typedef struct dtr_mesh {
  int dp, tp, pp;                /* sizes; dp*tp*pp = world size */
  int dp_rank, tp_rank, pp_rank; /* this rank's coordinates */
} dtr_mesh;

/* Coordinates of `rank` in a dp x tp x pp mesh of `world` ranks (TP fastest, PP slowest): rank =
 * pp_rank*(dp*tp) + dp_rank*tp + tp_rank. dp 0 means world/(tp*pp). DTR_ERR_INVALID with the sizes
 * when they do not multiply to world. Pure. */
DTR_API dtr_result dtr_mesh_make(int world, int dp, int tp, int pp, int rank, dtr_mesh *out, char *err,
                                 size_t errcap);
/* The world rank at given coordinates. */
DTR_API int dtr_mesh_rank_of(const dtr_mesh *m, int dp_rank, int tp_rank, int pp_rank);

/* ---- runtime */

typedef struct dtr_runtime dtr_runtime;

typedef struct dtr_runtime_config {
  dtr_backend backend;
  int dp, tp, pp;       /* mesh; dp 0: the rest (world / (tp*pp)); tp or pp 0: 1 */
  int timeout_ms;       /* communicator deadline; 0: default */
  int store_timeout_ms; /* connecting to / hosting the store; 0: 60000 */
  int nccl_dp;          /* 1: also an nccl communicator over this rank's DP group (dtr_runtime_dp_nccl) for
                           buffers in GPU memory, beside the groups above, which stay on `backend` (host
                           memory: checkpoint agreement, losses, metrics). Needs a build with CUDA. */
  int cuda_device;      /* the device of nccl communicators (nccl_dp, or backend nccl); -1: the identity's
                           local rank (LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID), or 0 where
                           this process sees one device only (CUDA_VISIBLE_DEVICES set per rank) */
} dtr_runtime_config;

DTR_API dtr_runtime_config dtr_runtime_config_default(void);

/* Identity, store (connect, or host it on rank 0 when the launcher did not), world communicator,
 * mesh and its dp/tp/pp communicators. COLLECTIVE over the job. On failure err names the cause. */
DTR_API dtr_result dtr_init(const dtr_runtime_config *cfg, dtr_runtime **out, char *err, size_t errcap);
/* Destroy the communicators, the store client and a store this rank hosted. NULL is fine. */
DTR_API void dtr_finalize(dtr_runtime *rt);

DTR_API const dtr_identity *dtr_runtime_identity(const dtr_runtime *rt);
DTR_API const dtr_mesh *dtr_runtime_mesh(const dtr_runtime *rt);
DTR_API dtr_store *dtr_runtime_store(dtr_runtime *rt); /* NULL for the mpi backend without a store */
DTR_API dtr_comm *dtr_runtime_world(dtr_runtime *rt);
DTR_API dtr_comm *dtr_runtime_dp(dtr_runtime *rt); /* the ranks with the same tp and pp coordinates */
DTR_API dtr_comm *dtr_runtime_tp(dtr_runtime *rt);
DTR_API dtr_comm *dtr_runtime_pp(dtr_runtime *rt);
/* The nccl communicator over this rank's DP group (cfg.nccl_dp), NULL otherwise. Ranks as in
 * dtr_runtime_dp; its device is dtr_runtime_cuda_device. */
DTR_API dtr_comm *dtr_runtime_dp_nccl(dtr_runtime *rt);
/* The CUDA device this rank's nccl communicators use (cfg.cuda_device's rule); -1 for NULL. */
DTR_API int dtr_runtime_cuda_device(const dtr_runtime *rt);

/* ---- data-parallel gradient buckets */

typedef struct dtr_dp_sync dtr_dp_sync;

/* Buckets over grads[0..n): bucket 0 is the first_bucket_bytes at the END of the buffer (backward
 * produces the last parameters first), then bucket_bytes each towards the start. overlap 0: nothing
 * starts before dtr_dp_sync_finish. The comm (the DP group) and grads stay owned by the caller. */
DTR_API dtr_result dtr_dp_sync_create(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes,
                                      size_t first_bucket_bytes, int overlap, dtr_dp_sync **out);
DTR_API void dtr_dp_sync_destroy(dtr_dp_sync *s);
/* grads[offset, offset+count) are final for this step; a bucket whose every element is final starts
 * its asynchronous all-reduce (average over the DP group). COLLECTIVE over the DP group in effect:
 * every rank marks the same ranges. */
DTR_API dtr_result dtr_dp_sync_ready(dtr_dp_sync *s, size_t offset, size_t count);
/* Start whatever has not started, wait for every bucket; grads then hold the DP average on every
 * rank. Resets the ready marks for the next step. */
DTR_API dtr_result dtr_dp_sync_finish(dtr_dp_sync *s);
/* ZeRO stage 1 over the same buckets: each is reduce-scattered (DP average) instead of all-reduced, and
 * DP rank r owns the r-th of dp equal parts of every bucket. After dtr_dp_sync_finish only this rank's
 * parts (dtr_dp_sync_shards) hold the averaged gradients (the rest of grads is stale): the caller's
 * optimizer updates those parts of the parameters and dtr_dp_sync_gather_params all-gathers them.
 * Arguments as dtr_dp_sync_create. */
DTR_API dtr_result dtr_dp_sync_create_zero1(dtr_comm *dp, float *grads, size_t n, size_t bucket_bytes,
                                            size_t first_bucket_bytes, int overlap, dtr_dp_sync **out);
/* An element range [offset, offset + count) of a flat buffer. */
typedef struct dtr_range {
  size_t offset, count;
} dtr_range;
/* The ranges of the flat buffer this rank updates, ascending: with ZeRO-1 its non-empty part of each
 * bucket; without, the whole buffer (one range). *n receives the count; the array belongs to s. */
DTR_API const dtr_range *dtr_dp_sync_shards(const dtr_dp_sync *s, int *n);
/* ZeRO-1: every rank's parts of params (laid out as grads) all-gathered in place, so every DP replica
 * holds the updated parameters. Without ZeRO: nothing. COLLECTIVE over the DP group. */
DTR_API dtr_result dtr_dp_sync_gather_params(dtr_dp_sync *s, float *params);
/* Seconds dtr_dp_sync_finish spent waiting in the last step, and in all steps. */
DTR_API double dtr_dp_sync_last_wait(const dtr_dp_sync *s);
DTR_API int dtr_dp_sync_num_buckets(const dtr_dp_sync *s);

/* ---- optimizer */

typedef struct dtr_adamw {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t t;    /* steps taken */
  float *m, *v; /* first and second moments, n floats each, owned */
  size_t n;
} dtr_adamw;

DTR_API dtr_result dtr_adamw_init(dtr_adamw *o, size_t n, double beta1, double beta2, double eps,
                                  double weight_decay);
DTR_API void dtr_adamw_free(dtr_adamw *o);
/* One step over params[0..n) with learning rate lr; decay applies where decay_mask[i] != 0 (NULL:
 * everywhere). PyTorch's torch.optim.AdamW semantics (bias-corrected, decoupled decay). */
DTR_API void dtr_adamw_step(dtr_adamw *o, float *params, const float *grads, const uint8_t *decay_mask,
                            double lr);
/* The same step over the elements of ranges[0..nranges) of params, grads and decay_mask (flat buffers)
 * only, with o's moments holding those elements packed in range order (o->n = their total): a ZeRO-1
 * shard (dtr_dp_sync_shards). One step: t counts once. */
DTR_API void dtr_adamw_step_ranges(dtr_adamw *o, float *params, const float *grads, const uint8_t *decay_mask,
                                   const dtr_range *ranges, int nranges, double lr);
/* Linear warmup over warmup steps to lr, cosine decay to min_lr at total steps (step counts from 0). */
DTR_API double dtr_lr_at(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);
/* Scale grads so their global L2 norm is at most max_norm (0: no clipping); returns the norm before
 * clipping. The norm is over the n floats given (callers with sharded grads all-reduce the square). */
DTR_API double dtr_clip_grad_norm(float *grads, size_t n, double max_norm);

/* ---- progress: what the agent of `dtrain launch` watches to find a hung rank
 *
 * Under `dtrain launch` every worker gets a progress page (DTRAIN_PROGRESS_FILE, docs/environment.md).
 * Once a process reports into it, its agent treats the rank as hung when the reports stop for
 * --worker-timeout (--worker-start-timeout before the first step and in slow phases) while it is not
 * waiting inside a collective operation for other ranks: the agent names the rank, its phase and step,
 * and restarts the job. Without a page (another launcher, or none) these calls do nothing and cost a
 * pointer test. Cheap enough to call every step or every micro-batch; safe from any thread. */

/* A worker that exits with this code says "do not restart me": the failure will recur (a full disk, a
 * missing file, diverged training). The agent stops the whole job at once and exits with it. */
#define DTR_EXIT_PERMANENT 80
/* The agent's exit code when the same failure repeated at the same step (it stops instead of spending
 * the rest of --max-restarts). */
#define DTR_EXIT_REPEATED 81

/* 1 when this process has a progress page (runs under dtrain launch and attached it), else 0. */
DTR_API int dtr_progress_active(void);
/* Work on `step` goes on: counts as progress, records the step, sets the phase "step" (not slow). */
DTR_API void dtr_progress_step(int64_t step);
/* Entering a phase (a name of up to 63 bytes, shown in the hang report). slow != 0: it may legitimately
 * take long (start-up, loading or saving a checkpoint), so the start-up allowance applies until the
 * next report. Counts as progress. */
DTR_API void dtr_progress_phase(const char *phase, int slow);
/* Leave a reason (up to 255 bytes) for the agent's report, typically just before exiting with
 * DTR_EXIT_PERMANENT. Counts as progress. */
DTR_API void dtr_progress_reason(const char *reason);

/* ---- the built-in trainer */

/* Whether the built-in trainer can run a valid recipe: DTR_ERR_UNSUPPORTED naming the key for what it
 * does not do yet (on cuda: tp or pp > 1, ZeRO-1, a precision other than fp32/bf16; on the cpu, one
 * other than fp32; device cuda in a build without CUDA, or without launch.backend nccl). Pure. */
DTR_API dtr_result dtr_train_check(const dtr_recipe *r, char *err, size_t errcap);
/* Whether this machine can run it: DTR_ERR_UNSUPPORTED for train.device cuda where no CUDA device is
 * visible. Apart from dtr_train_check because it is not pure: `dtrain sbatch` checks a GPU recipe on a
 * login node without GPUs (dtr_train_check only); `dtrain run` (--dry-run too) calls both before
 * starting a rank, and dtr_train fails with DTR_ERR_PERMANENT when either refuses. */
DTR_API dtr_result dtr_train_check_here(const dtr_recipe *r, char *err, size_t errcap);

/* Train the recipe on this process's rank (dtr_init inside). Returns DTR_OK when the steps are done, and
 * DTR_ERR_STOPPED when a stop was requested (dtr_stop_requested on any rank): every rank then stopped after
 * the same step and that step's checkpoint is saved (committed) before it returns. */
DTR_API dtr_result dtr_train(const dtr_recipe *r, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_RUNTIME_H */
