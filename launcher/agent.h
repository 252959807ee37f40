/* The per-node agent: rendezvous -> spawn workers -> monitor (output, exits, signals, store events,
 * heartbeats) -> stop -> restart or exit. One agent per node; agents coordinate only through the store:
 *   r<r>/event         the round's outcome, first writer wins (cas on an absent key):
 *                        "fail\n<failure JSON>", "stop\n<node> <signal>", "done", "rejoin"
 *   hb/<run>/r<r>/<node>  heartbeat counters, bumped every --monitor-interval by each agent's event listener
 *                      (outside rdzv/: the store's standby is not sent them)
 *   r<r>/ndone         agents whose workers all exited 0; the agent that completes it posts "done"
 *   r<r>/exited/<node> set by each agent as it leaves, so the agent hosting the store stays until all left
 *   stop               (not per round) counts stop requests, so that a round that failed meanwhile is not
 *                      restarted; the request itself travels as the round's event "preempt\n<node> <signal>"
 * The agent's main loop is one poll() over worker pipes, a signalfd and the eventfd of its event
 * listener, the thread that waits on r<r>/event and keeps the heartbeats; every monitor interval it also
 * reads the workers' progress pages (watchdog.h). In a job of several nodes every agent runs a store
 * server: the primary's agent mirrors rdzv/ to the round's standby, and when the primary is lost the
 * agents promote the standby to the next epoch and rejoin there (docs/cli.md, "Store failover"). */
#ifndef DTRAIN_LAUNCHER_AGENT_H
#define DTRAIN_LAUNCHER_AGENT_H

#include "dtrain/store.h"
#include "launcher/launch_args.h"
#include "launcher/orphan_guard.h"
#include "launcher/workers.h"

typedef struct dtr__agent_cfg {
  const dtr_launch_args *args;
  const char *exe_path; /* resolved program */
  char **argv;          /* program argv (argv[0] as the user gave it) */
  const char *run_id;
  const char *token;
  const char *store_host; /* how workers and the event listener reach the store */
  int store_port;
  const char *store_desc;    /* "H:P" for messages */
  const char *error_file;    /* "" when none */
  const char *log_run_dir;   /* LOG_DIR/RUN_ID, "" without --log-dir */
  int console_mask;          /* bit 0 stdout, bit 1 stderr */
  int hosting;               /* this agent runs the store: stay until the others left */
  int sigfd;                 /* signalfd for TERM INT HUP QUIT USR1 USR2 CHLD (blocked in every thread) */
  dtr_store *main_store;     /* this thread's connection */
  dtr_store *listener_store; /* the event listener thread's connection */
  dtr_store_server *server;  /* the store this agent hosts (hosting), else NULL */
  dtr__orphan_guard *orphan_guard;
  const char *stop_file; /* DTRAIN_STOP_FILE of the workers, created on a stop request */
  int term_stops; /* SIGTERM asks for a stop (inside Slurm), like USR1 and USR2, instead of ending at once */
} dtr__agent_cfg;

#define DTR__HEARTBEAT_TIMEOUT_MS 2500 /* DTRAIN_HEARTBEAT_TIMEOUT_MS's default */
#define DTR__EXIT_MINORITY 82          /* this node is on the minority side of a partition */

/* Run the job on this node until it succeeds, fails for good or is stopped. Returns the process exit
 * code: 0, the first failed rank's code (128+signal), 80 (permanent), 81 (repeated), 82 (minority),
 * 128+signal when stopped, 1 on dtrain errors, and after a stop request (the workers stopped at a step
 * boundary) DTR_EXIT_PREEMPTED or, after SIGTERM, DTR_EXIT_STOPPED_TERM (launcher/slurm.h), which the
 * caller turns into a requeue. */
int dtr__agent_run(const dtr__agent_cfg *cfg);

#endif
