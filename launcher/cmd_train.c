/* `dtrain train RECIPE [section.key=value ...]`: one rank of the built-in trainer. `dtrain run` starts
 * it on every rank; mpirun, srun or torchrun can start it too. The recipe is validated against the
 * world size this process was started with before any communicator is built. Stop requests come as
 * signals too (Slurm's); started by srun, rank 0 requeues the Slurm job after a stop. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/progress.h"
#include "dtrain/recipe.h"
#include "dtrain/runtime.h"
#include "launcher/commands.h"
#include "launcher/slurm.h"

#define CTX "dtrain train: "

static void usage(FILE *f) {
  fputs(
      "usage: dtrain train RECIPE [section.key=value ...]\n"
      "\n"
      "Train RECIPE on this process's rank: the worker that `dtrain run` starts on every rank. The rank and\n"
      "world size come from the launcher's environment (dtrain launch, torchrun, mpirun, srun); alone it\n"
      "runs as rank 0 of 1. Overrides such as train.steps=20 apply after the file (docs/recipes.md).\n"
      "\n"
      "USR1, USR2 and TERM ask every rank to stop after the same step and save (a TERM from the dtrain\n"
      "agent that started this rank ends it at once); under srun, rank 0 then requeues the Slurm job.\n"
      "\n"
      "Exit codes: 0 done, 2 bad usage or an invalid recipe (file:line:col: what), 1 training failed,\n"
      "80 training failed in a way a restart would repeat (the file system refuses the checkpoint the run\n"
      "needs, diverged, no valid checkpoint to resume from, no GPU): `dtrain launch` stops the job,\n"
      "85-88 stopped on request after saving (see `dtrain launch --help`).\n",
      f);
}

/* Set by the handler below: the stop request came as SIGTERM (scancel, Slurm's time limit). */
static volatile sig_atomic_t got_term;
/* The dtrain agent that started this rank (its SIGTERM ends the rank at once), 0 without one. */
static pid_t agent;

static void on_stop_signal(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  if (sig == SIGTERM) {
    if (agent > 0 && si && si->si_pid == agent) {
      signal(SIGTERM, SIG_DFL); /* pending once this handler returns */
      raise(SIGTERM);
      return;
    }
    got_term = 1;
  }
  dtr_stop_request();
}

/* USR1, USR2 and TERM ask for a stop at the next step boundary (dtr_stop_request) instead of killing
 * the rank: Slurm signals every process of a job step, this one included. */
static void catch_stop_signals(void) {
  if (getenv("DTRAIN_STOP_FILE")) agent = getppid();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_stop_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* After a stop: without a dtrain agent (srun, mpirun, alone), rank 0 does what the agent would do. */
static int stopped(const dtr_recipe *r, const dtr_identity *id) {
  if (agent > 0) return DTR_EXIT_PREEMPTED; /* the agent's contract: saved and stopped; it knows why */
  int code = got_term ? DTR_EXIT_STOPPED_TERM : DTR_EXIT_PREEMPTED;
  dtr__slurm slurm;
  char err[512];
  if (dtr__slurm_read(NULL, &slurm, err, sizeof err) != DTR_OK) {
    fprintf(stderr, CTX "%s\n", err);
    return code;
  }
  return dtr__slurm_after_stop(&slurm, code, r->slurm.max_requeues, id->rank == 0);
}

int dtr__cmd_train(int argc, char **argv) {
  const char *recipe = NULL;
  const char **overrides = calloc((size_t)argc, sizeof *overrides);
  int nov = 0, code = 2;
  if (!overrides) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      code = 0;
      goto out;
    }
    if (a[0] == '-' && a[1]) {
      fprintf(stderr, CTX "unknown option '%s' (try 'dtrain train --help')\n", a);
      goto out;
    }
    if (!recipe) {
      recipe = a;
    } else if (strchr(a, '=')) {
      overrides[nov++] = a;
    } else {
      fprintf(stderr, CTX "unexpected argument '%s' (overrides are section.key=value)\n", a);
      goto out;
    }
  }
  if (!recipe) {
    fprintf(stderr, CTX "no recipe given (usage: dtrain train RECIPE [section.key=value ...])\n");
    goto out;
  }

  /* the world this rank belongs to, exactly as dtr_init will see it */
  char err[2048];
  dtr_identity id;
  if (dtr_identity_from_env(NULL, &id, err, sizeof err) != DTR_OK) {
    fprintf(stderr, CTX "%s\n", err);
    goto out;
  }
  static dtr_recipe r;
  if (dtr_recipe_load(recipe, overrides, nov, id.world_size, &r, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "%s\n", err);
    goto out;
  }
  if (r.warnings[0] && id.rank == 0) fprintf(stderr, "dtrain: warning: %s\n", r.warnings);
  code = 0;
  catch_stop_signals();
  /* under dtrain launch: the agent may ask for this rank's thread stacks when it stops making progress */
  (void)dtr__progress_enable_dumps();
  dtr_result rc = dtr_train(&r, err, sizeof err);
  if (rc == DTR_ERR_STOPPED) {
    code = stopped(&r, &id);
  } else if (rc != DTR_OK) {
    fprintf(stderr, CTX "rank %d: %s%s\n", id.rank, rc == DTR_ERR_PERMANENT ? "permanent failure: " : "",
            err);
    code = rc == DTR_ERR_PERMANENT ? DTR_EXIT_PERMANENT : 1;
  }
out:
  free(overrides);
  return code;
}
