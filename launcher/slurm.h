/* Slurm: what dtrain reads from a Slurm job's environment (docs/slurm.md), the launch it implies (the
 * rendezvous on the step's first node, a port and an id from the job id, a token from a secret only the
 * job's user can read), and the end of a job that stopped on request: `scontrol requeue` while the job's
 * requeue count is under its limit. Nothing here needs scontrol except that last step. */
#ifndef DTRAIN_LAUNCHER_SLURM_H
#define DTRAIN_LAUNCHER_SLURM_H

#include <stddef.h>

#include "dtrain/runtime.h"

/* Exit codes of a job that stopped on request (docs/cli.md), beside DTR_EXIT_PREEMPTED (86: a preemption
 * signal or the time limit; requeued, or to be resumed by hand outside Slurm). The workers stopped at a
 * step boundary and saved their state first. */
#define DTR_EXIT_STOPPED_TERM 85   /* SIGTERM inside Slurm (scancel, the batch script gone): not requeued */
#define DTR_EXIT_REQUEUE_LIMIT 87  /* preempted, but the job was requeued its limit of times already */
#define DTR_EXIT_REQUEUE_FAILED 88 /* preempted, but scontrol is missing or refused (it says what it ran) */

/* The Slurm ports: the rendezvous store of a job that spans nodes listens on 10000 + job id % 10000, so
 * two jobs whose ids are less than 10000 apart never share one (below the ephemeral range, apart from
 * the 20000-29999 of `srun dtrain train`'s stores, runtime/identity.c). */
#define DTR_SLURM_PORT_BASE 10000
#define DTR_SLURM_PORT_SPAN 10000

typedef struct dtr__slurm {
  int in_job;           /* SLURM_JOB_ID is set */
  int in_step;          /* started by srun: SLURM_STEP_ID (or SLURM_STEPID) is a number */
  int interactive;      /* SLURM_JOB_NAME is "interactive" or "bash": an interactive allocation */
  int managed;          /* Slurm shapes the launch: in a step, or in a batch job's script */
  int batch;            /* a batch job (not interactive): one that scontrol requeue accepts */
  char job_id[32];      /* SLURM_JOB_ID (SLURM_JOBID) */
  char requeue_id[64];  /* what scontrol requeue takes: ARRAYJOB_TASK for an array task, else job_id */
  char job_name[128];   /* SLURM_JOB_NAME, "" when unset */
  int step_nodes;       /* nodes of this step (SLURM_STEP_NUM_NODES), 1 outside a step */
  int alloc_nodes;      /* nodes of the allocation (SLURM_JOB_NUM_NODES, SLURM_NNODES), 1 when unset */
  int tasks_on_node;    /* this step's tasks on this node (SLURM_STEP_TASKS_PER_NODE), 1 outside a step */
  int procid;           /* SLURM_PROCID, 0 when unset */
  int restart_count;    /* SLURM_RESTART_COUNT: how many times the job was requeued, 0 when unset */
  int cpus_on_node;     /* SLURM_CPUS_ON_NODE, 0 when unset */
  int gpus_on_node;     /* SLURM_GPUS_ON_NODE, 0 when unset */
  char first_host[256]; /* the first name of the step's node list (else the job's), "" when unset */
} dtr__slurm;

/* Read the Slurm variables of envp (NULL: this process's environment) into *s; outside Slurm s->in_job
 * is 0 and the rest zero. A malformed value fails with DTR_ERR_INVALID naming the variable. Pure. */
dtr_result dtr__slurm_read(char *const *envp, dtr__slurm *s, char *err, size_t cap);

/* The rendezvous store's port for a job id (see DTR_SLURM_PORT_BASE). */
int dtr__slurm_port(const char *job_id);

/* The launch Slurm implies when the flags (or the recipe) name no rendezvous endpoint. */
typedef struct dtr__slurm_shape {
  int nnodes_min, nnodes_max; /* the launch's, with the step's node count where it gave 1 */
  int spans_nodes;            /* the job runs on several nodes: meet at endpoint, with id */
  char endpoint[300];         /* "first_host:port" */
  char id[40];                /* the job id */
  int unused_nodes;           /* started by the batch script of an allocation of this many nodes: only its
                                 first node runs (the caller warns); 0 otherwise */
} dtr__slurm_shape;

/* Under a managed Slurm job a step of N nodes makes nnodes N when the launch asked for 1 (the default), and
 * must fall within MIN:MAX otherwise; an agent per node: a step with several tasks on this node is refused
 * (`dtrain launch` starts the node's ranks itself). Outside Slurm the shape is the launch's own.
 * DTR_ERR_INVALID with one line saying what to change. Pure. */
dtr_result dtr__slurm_launch_shape(const dtr__slurm *s, int nnodes_min, int nnodes_max, dtr__slurm_shape *out,
                                   char *err, size_t cap);

/* The job token of a job that spans nodes when DTRAIN_JOB_TOKEN is unset: hex HMAC-SHA-256 of "dtrain-slurm/"
 * + the job id under a secret only the job's user can read: the file DTRAIN_SECRET_FILE (default
 * $HOME/.dtrain/secret), 32 random bytes in hex, created (mode 0600, directory 0700) on first use. A file
 * that others may read, or that is not the user's, is refused. out receives 64 hex digits and a NUL;
 * path (may be NULL) the secret file's name. */
dtr_result dtr__slurm_token(const char *job_id, char out[65], char *path, size_t pcap, char *err, size_t cap);

/* The end of a job whose workers stopped on request, code DTR_EXIT_PREEMPTED (a preemption signal) or
 * DTR_EXIT_STOPPED_TERM (SIGTERM). In a batch job the leader (SLURM_PROCID 0: the one process that acts
 * and speaks for the job) requeues it with `scontrol requeue` while s->restart_count < max_requeues; after
 * SIGTERM only when `scontrol show job` says the time limit ran out (a job cancelled with scancel stays
 * cancelled). The leader says what it does; every caller gets the exit code: 85-88 (see above; after
 * SIGTERM the others return 85, not knowing). Outside a batch job: code, and how to resume. */
int dtr__slurm_after_stop(const dtr__slurm *s, int code, int max_requeues, int leader);

/* Run argv[0] (found in PATH) with argv, stdout and stderr captured into out (NUL-terminated, cut at cap),
 * signals at their defaults in the child and TERM, INT, HUP, QUIT, USR1 and USR2 blocked (Slurm signals
 * every process of a job it is ending). Returns its exit status (128+N for signal N), 127 when it is not
 * on PATH, -1 when it cannot be started. */
int dtr__run_capture(char *const argv[], char *out, size_t cap);

#endif
