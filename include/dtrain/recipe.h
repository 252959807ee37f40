/* dtrain/recipe.h — the recipe: one YAML file that says what to train, on how many ranks, and how.
 *
 * `dtrain run RECIPE` launches `dtrain train RECIPE` on every rank with the launch section's settings;
 * the trainer reads the same file. Parsing is strict so that mistakes stop before any process starts:
 * an unknown key is rejected with a suggestion ("did you mean 'n_head'?"), a wrong type or an
 * impossible combination (dp*tp*pp != ranks, n_embd not divisible by n_head, a missing data file,
 * a global batch that micro batches and DP ranks cannot make) is reported as `file:line:col: what`.
 *
 * Sections (docs/recipes.md is the reference, with every key, its type and default):
 *   job         name, seed, run_dir
 *   launch      nproc_per_node, nnodes, max_restarts, backend, rdzv settings
 *   parallel    dp, tp, pp, schedule, virtual_stages, layers_per_stage
 *   model       vocab_size, block_size, n_layer, n_head, n_embd, init_from (pretrained weights)
 *   data        kind (addition | text | tokens) and its settings
 *   train       steps, batches, learning-rate schedule, AdamW, clipping, logging, buckets
 *   checkpoint  dir, every, keep, async, level, resume
 *   slurm       the job script `dtrain sbatch` writes: nodes, GPUs, CPUs, time, partition, account, the
 *               preemption signal and its lead time, the requeue limit (docs/slurm.md)
 *
 * Overrides: `section.key=value` strings (from the command line) are applied after the file and
 * checked the same way; their messages name the override instead of a line.
 */
#ifndef DTRAIN_RECIPE_H
#define DTRAIN_RECIPE_H

#include <stdint.h>

#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DTR_RECIPE_STR 512
#define DTR_RECIPE_MAX_STAGES 64 /* entries of parallel.layers_per_stage */

typedef enum dtr_data_kind {
  DTR_DATA_ADDITION = 0, /* synthetic: "123+456=579" sequences generated from the seed */
  DTR_DATA_TEXT = 1,     /* any text file, byte-level tokens (vocab 256) */
  DTR_DATA_TOKENS = 2,   /* a binary file of little-endian uint16 tokens */
} dtr_data_kind;

typedef struct dtr_recipe {
  char path[DTR_RECIPE_STR]; /* the file it came from */

  struct {
    char name[128];
    uint64_t seed;
    char run_dir[DTR_RECIPE_STR]; /* metrics.csv, loss.png, default checkpoint dir; default runs/<name> */
  } job;

  struct {
    int nproc_per_node;
    int nnodes_min, nnodes_max; /* "2" or "1:4" */
    int max_restarts;
    char backend[16];        /* host | nccl | mpi */
    char rdzv_endpoint[256]; /* host:port; "" = this node hosts the store */
    char rdzv_id[128];
    int node_rank; /* -1: assigned by the rendezvous */

    double worker_timeout;       /* seconds without progress before a rank is hung; 0: off */
    double worker_start_timeout; /* the same before the first step and in slow phases; 0: off */
  } launch;

  struct {
    int dp, tp, pp;     /* dp 0 in the file means "the rest": world / (tp*pp) */
    char schedule[16];  /* pipeline schedule: gpipe | 1f1b | interleaved */
    int virtual_stages; /* model chunks per pipeline stage (interleaved), >= 1 */
    struct {
      int n;                        /* 0: as even as possible */
      int v[DTR_RECIPE_MAX_STAGES]; /* layers of each of the pp x virtual_stages stages, in order */
    } layers_per_stage;
  } parallel;

  struct {
    int vocab_size; /* 0: from the data (addition: 14, text: 256, tokens: required) */
    int block_size; /* context length */
    int n_layer, n_head, n_embd;
    /* "": seeded initialisation. Else a safetensors file of weights (dtrain's export or Hugging Face
     * GPT-2's layout; relative paths are relative to the recipe file) that initialise a run with no
     * checkpoint yet; the shape keys the recipe leaves out come from it. */
    char init_from[DTR_RECIPE_STR];
  } model;

  struct {
    dtr_data_kind kind;
    char path[DTR_RECIPE_STR]; /* text / tokens; relative paths are relative to the recipe file */
    int digits;                /* addition: operand digits */
  } data;

  struct {
    int64_t steps;
    int global_batch; /* sequences per optimizer step, over all DP ranks */
    int micro_batch;  /* sequences per rank per forward/backward; grad_accum = global/(micro*dp) */
    double lr, min_lr;
    int64_t warmup_steps; /* linear warmup, then cosine decay to min_lr at `steps` */
    double weight_decay, beta1, beta2, eps;
    double grad_clip; /* global-norm clipping; 0: off */
    int log_every;
    int eval_every; /* addition: exact-match accuracy on held-out problems; 0: off */
    double bucket_mb, first_bucket_mb;
    int overlap;       /* all-reduce buckets while backward runs (1) or after it (0) */
    int threads;       /* compute threads per rank; 0: OMP_NUM_THREADS or 1 */
    int zero;          /* 1: ZeRO stage 1 (AdamW state sharded over the DP ranks), 0: off */
    char precision[8]; /* fp32 | bf16 (bf16 only on GPU) */
    char device[8];    /* cpu | cuda */

    char on_divergence[16];      /* stop | restart (from the checkpoint before it, lr x factor, once) */
    double divergence_lr_factor; /* restart: the learning rate's factor, in (0, 1) */
  } train;

  struct {
    char dir[DTR_RECIPE_STR]; /* "" = <run_dir>/checkpoints */
    int64_t every;            /* steps; 0: only at the end */
    int keep;
    int async;
    int level;
    int resume; /* load the newest checkpoint at start */
  } checkpoint;

  struct {
    int nodes;         /* 0: launch.nnodes */
    int gpus_per_node; /* 0: none requested */
    int cpus_per_node; /* 0: nproc_per_node x train.threads (at least 1 each) */
    char mem[32];      /* per node, e.g. "64G"; "": the partition's default */
    char time[32];     /* Slurm's time format (minutes, H:M:S, D-H:M:S); "": the partition's */
    char partition[128], account[128], qos[128], constraint[256]; /* "": not asked for */
    char signal[8];              /* the preemption signal Slurm sends before the time limit: USR1 | USR2 */
    int signal_lead;             /* seconds before the time limit it comes; 0: none (SIGTERM at the time
                                    limit, KillWait seconds before SIGKILL, is then the only warning) */
    int max_requeues;            /* requeue a preempted job while SLURM_RESTART_COUNT is below this */
    char output[DTR_RECIPE_STR]; /* the job's output file; "": <run_dir>/slurm-%j.out */
    char extra[DTR_RECIPE_STR];  /* more sbatch options, separated by spaces, e.g. "--exclusive" */
  } slurm;
  /* What dtr_recipe_load adjusted rather than refused ("file:line:col: what", one per line; "" when
   * nothing): for the caller to show once (the CLI, or rank 0 of a job). */
  char warnings[DTR_RECIPE_STR];
} dtr_recipe;

/* Defaults for every field (the values docs/recipes.md lists). */
DTR_API void dtr_recipe_defaults(dtr_recipe *r);

/* Parse path into r, apply overrides ("train.steps=50"), validate. world: the number of ranks the
 * recipe will run on, to check dp*tp*pp (0: take it from launch: nproc_per_node * nnodes_max).
 * On failure err holds `file:line:col: message` (or `override 'k=v': message`) and r is unspecified. */
DTR_API dtr_result dtr_recipe_load(const char *path, const char *const *overrides, int noverrides, int world,
                                   dtr_recipe *r, char *err, size_t errcap);

/* Write the effective recipe as YAML (every key, defaults included), e.g. into the run directory. */
DTR_API dtr_result dtr_recipe_write(const dtr_recipe *r, const char *path, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_RECIPE_H */
