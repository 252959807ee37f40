/* The per-node agent's state machine (see agent.h for the store keys it uses). Nothing here sleeps in
 * a loop: the main thread waits in poll() and the event listener thread in a blocking store get, so a
 * failure anywhere reaches every agent as soon as the store delivers the event. */
#define _GNU_SOURCE
#include "launcher/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/param.h"
#include "common/sock.h"
#include "common/store_internal.h"
#include "dtrain/runtime.h"
#include "launcher/rendezvous.h"
#include "launcher/report.h"
#include "launcher/slurm.h"
#include "launcher/watchdog.h"

/* Post f as the round's "fail\n<failure JSON>" event, unless the round has an event already (the first
 * writer wins: compare-and-set on the absent key). DTR_ERR_NOMEM when the event cannot be built. */
static dtr_result post_failure(dtr_store *c, const char *evkey, const dtr__failure *f, int *swapped) {
  char *json = dtr__failure_to_json(f);
  if (!json) return DTR_ERR_NOMEM;
  size_t jl = strlen(json);
  char *val = malloc(jl + 6);
  dtr_result rc = DTR_ERR_NOMEM;
  if (val) {
    memcpy(val, "fail\n", 5);
    memcpy(val + 5, json, jl + 1);
    rc = dtr_store_cas(c, evkey, NULL, 0, val, jl + 5, swapped, NULL, NULL);
  }
  free(val);
  free(json);
  return rc;
}

/* ---------------------------------------------------------------- event listener thread */

/* Waits on the round's event key; every monitor interval without an event it bumps this node's
 * heartbeat and, now and then, checks the other nodes' heartbeats and the late joiners. What it
 * receives, or a lost store, goes to the main loop through evfd. */

typedef struct event_listener {
  pthread_t th;
  int started;
  dtr_store *c;
  const char *run_id;
  int round, node_rank, nnodes, nnodes_max;
  int interval_ms, hb_timeout_ms;
  char (*hosts)[256];
  int restart_count;
  int evfd;
  pthread_mutex_t mu;
  int posted;  /* an event or a lost store was posted; the thread has ended or is ending */
  char *event; /* the round's event value (malloc'ed) */
  size_t event_len;
  int lost;
  char lost_msg[512];
} event_listener;

static void post(event_listener *el, char *event, size_t len, const char *lost_msg) {
  pthread_mutex_lock(&el->mu);
  el->event = event;
  el->event_len = len;
  if (lost_msg) {
    el->lost = 1;
    snprintf(el->lost_msg, sizeof el->lost_msg, "%s", lost_msg);
  }
  el->posted = 1;
  pthread_mutex_unlock(&el->mu);
  uint64_t one = 1;
  ssize_t r = write(el->evfd, &one, sizeof one);
  (void)r;
}

static void node_dead(event_listener *el, int k, const char *evkey) {
  dtr__failure f;
  memset(&f, 0, sizeof f);
  strcpy(f.kind, "node");
  f.node_rank = k;
  snprintf(f.host, sizeof f.host, "%s", el->hosts[k]);
  f.rank = f.local_rank = -1;
  f.step = -1;
  f.exit_code = 1;
  f.restart_count = el->restart_count;
  f.attempt = el->round;
  snprintf(f.run_id, sizeof f.run_id, "%s", el->run_id);
  f.time = (double)time(NULL);
  int swapped = 0;
  DTR_WARN("node %d (host %s) stopped heartbeating for %d ms; stopping the job", k, el->hosts[k],
           el->hb_timeout_ms);
  (void)post_failure(el->c, evkey, &f, &swapped);
}

/* "hb/<run>/r<round>/<node>": heartbeats live outside rdzv/, so that the standby is not sent ten
 * changes a second per node (they say who is alive now, nothing a new primary needs). */
static void hb_key(char *out, size_t cap, const char *run_id, int round, int node) {
  snprintf(out, cap, "hb/%s/r%d/%d", run_id, round, node);
}

/* A store call failed: whether the store is gone. The server answering "still missing at the deadline"
 * is the normal end of a wait; a closed connection, a refusal (fenced) or no answer at all is not. */
static int store_failed(dtr_result rc, dtr_store *c) {
  return rc != DTR_OK && rc != DTR_ERR_EXISTS && !(rc == DTR_ERR_TIMEOUT && dtr__store_connected(c));
}

static void *listener_main(void *arg) {
  event_listener *el = arg;
  char evkey[DTR_STORE_MAX_KEY], key[DTR_STORE_MAX_KEY];
  dtr__rdzv_key(evkey, sizeof evkey, el->run_id, el->round, "event");
  int64_t *last = calloc((size_t)el->nnodes, sizeof *last);
  int64_t *changed = calloc((size_t)el->nnodes, sizeof *changed);
  if (!last || !changed) {
    post(el, NULL, 0, "out of memory in the event listener");
    goto out;
  }
  int64_t start = dtr__now_ms(), last_check = start, last_ok = start;
  for (int k = 0; k < el->nnodes; k++) {
    last[k] = -1;
    changed[k] = start;
  }
  for (;;) {
    void *val = NULL;
    size_t len = 0;
    dtr_result rc = dtr_store_get(el->c, evkey, el->interval_ms, &val, &len);
    if (rc == DTR_OK) {
      post(el, val, len, NULL);
      break;
    }
    if (rc == DTR_ERR_ABORTED) break;
    int64_t now = dtr__now_ms();
    if (!store_failed(rc, el->c)) last_ok = now;
    /* A connection the store closed or refused is a lost store at once; silence only after as long
     * as a silent node gets (a link that drops packets for a moment is not a lost store). */
    if (rc == DTR_ERR_CONNECTION || rc == DTR_ERR_FENCED || now - last_ok > el->hb_timeout_ms) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s (%s)", dtr_strerror(rc), dtr_store_last_error(el->c));
      post(el, NULL, 0, msg);
      break;
    }
    if (store_failed(rc, el->c)) continue; /* try again; the next call reconnects */
    /* one monitor interval passed without an event: heartbeat, and look at the others' */
    int64_t v;
    hb_key(key, sizeof key, el->run_id, el->round, el->node_rank);
    rc = dtr_store_add(el->c, key, 1, &v);
    now = dtr__now_ms();
    /* the others' counters are read a few times per heartbeat timeout, not every interval: with many
     * nodes that would be nnodes^2 requests per interval on the store */
    int check_every = el->hb_timeout_ms / 10 > el->interval_ms ? el->hb_timeout_ms / 10 : el->interval_ms;
    int check = now - last_check >= check_every;
    if (check) last_check = now;
    for (int k = 0; check && rc == DTR_OK && k < el->nnodes; k++) {
      if (k == el->node_rank) continue;
      hb_key(key, sizeof key, el->run_id, el->round, k);
      rc = dtr_store_add(el->c, key, 0, &v);
      if (rc) break;
      if (v != last[k]) {
        last[k] = v;
        changed[k] = now;
      } else if (now - changed[k] > el->hb_timeout_ms) {
        node_dead(el, k, evkey);
        changed[k] = now; /* report once; the event wakes us next */
      }
    }
    if (rc == DTR_OK && el->nnodes < el->nnodes_max) {
      dtr__rdzv_key(key, sizeof key, el->run_id, el->round, "late");
      rc = dtr_store_add(el->c, key, 0, &v);
      if (rc == DTR_OK && v > 0) {
        int swapped = 0;
        rc = dtr_store_cas(el->c, evkey, NULL, 0, "rejoin", 6, &swapped, NULL, NULL);
        if (swapped) DTR_INFO("a new node is waiting to join; restarting the workers to admit it");
      }
    }
    if (rc == DTR_ERR_ABORTED) break;
    if (!store_failed(rc, el->c)) {
      last_ok = dtr__now_ms();
    } else if (rc == DTR_ERR_CONNECTION || rc == DTR_ERR_FENCED) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s (%s)", dtr_strerror(rc), dtr_store_last_error(el->c));
      post(el, NULL, 0, msg);
      break;
    }
  }
out:
  free(last);
  free(changed);
  return NULL;
}

/* ---------------------------------------------------------------- the agent */

/* OUT_PREEMPT: a stop was requested (preemption); the workers stop at a step boundary by themselves. */
enum outcome { OUT_NONE, OUT_DONE, OUT_FAIL, OUT_STOP, OUT_REJOIN, OUT_LOST, OUT_ERROR, OUT_PREEMPT };

typedef struct agent {
  const dtr__agent_cfg *cfg;
  const dtr_launch_args *args;
  char hostname[256];
  int round, restart_count, prev_size;
  dtr__rdzv_result rz;
  dtr__worker *w;
  int nw;
  event_listener listener;
  int evfd;
  /* per attempt */
  enum outcome outcome;
  int stopping, killed;
  int64_t kill_deadline;
  int local_done;
  int stop_sig;
  dtr__failure first;
  int have_first;
  char lost_msg[512];
  int all_zero; /* every worker of the attempt exited 0 */
  /* the job's stop request (preemption), once made: it outlives the attempt */
  int stop_requested;
  int stop_req_sig; /* the signal that asked (0: a worker stopped by itself) */
  int64_t stop_deadline;
  /* across attempts */
  dtr__watchdog *wd; /* the local ranks' progress pages; NULL when they could not be made */
  dtr__failure prev; /* the failure that ended the previous attempt */
  int have_prev;
  /* the store: the primary in use now, which moves to the standby when the primary is lost */
  dtr_store *main, *lis; /* connections to it: the main thread's and the event listener's */
  int own_clients;       /* main and lis were opened here (after a failover): closed here */
  char store_host[256];
  int store_port;
  char store_desc[300];
  dtr_store_server *own; /* this agent's server: the primary it hosts, or its standby candidate */
  int own_created;       /* created here (a standby candidate): destroyed here */
  char own_addr[300];    /* how the other agents reach it ("addr:port"), "" when none */
  int hosting;           /* own is the job's store now */
  int64_t epoch;         /* the store's epoch as this agent knows it */
  int failed_over;       /* moved to the standby since the last round (loses a quorum tie) */
  char standby[300];     /* the last round's standby store, "" when none */
  int hb_timeout_ms;
} agent;

static int is_stop_signal(int sig) {
  return sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT;
}

/* USR1 and USR2, and TERM inside Slurm: stop at the next step boundary, save, exit (no forwarding). */
static int is_stop_request(const agent *a, int sig) {
  return sig == SIGUSR1 || sig == SIGUSR2 || (sig == SIGTERM && a->cfg->term_stops);
}

/* Rendezvous interrupt check: drain the signalfd, report the first stopping signal (a stop request too:
 * no worker runs, so there is nothing to save). */
static int rdzv_interrupted(void *ctx) {
  agent *a = ctx;
  struct signalfd_siginfo si;
  int stop = 0;
  while (read(a->cfg->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
    if (!stop && (is_stop_signal((int)si.ssi_signo) || is_stop_request(a, (int)si.ssi_signo)))
      stop = (int)si.ssi_signo;
  return stop;
}

static void key_of(agent *a, char *key, size_t cap, const char *suffix) {
  dtr__rdzv_key(key, cap, a->cfg->run_id, a->round, suffix);
}

static dtr_result build_env(agent *a, int local_rank, dtr__env *e) {
  const dtr__rdzv_result *rz = &a->rz;
  const dtr_launch_args *args = a->args;
  char v[64];
  DTR_CHECK(dtr__env_init(e, NULL));
#define SETI(k, x) (snprintf(v, sizeof v, "%d", (int)(x)), dtr__env_set(e, k, v))
  int rank = rz->node_rank * rz->nproc + local_rank;
  DTR_CHECK(SETI("RANK", rank));
  DTR_CHECK(SETI("LOCAL_RANK", local_rank));
  DTR_CHECK(SETI("WORLD_SIZE", rz->world_size));
  DTR_CHECK(SETI("LOCAL_WORLD_SIZE", rz->nproc));
  DTR_CHECK(SETI("GROUP_RANK", rz->node_rank));
  DTR_CHECK(SETI("GROUP_WORLD_SIZE", rz->nnodes));
  DTR_CHECK(SETI("ROLE_RANK", rank));
  DTR_CHECK(SETI("ROLE_WORLD_SIZE", rz->world_size));
  DTR_CHECK(dtr__env_set(e, "ROLE_NAME", args->role));
  DTR_CHECK(dtr__env_set(e, "MASTER_ADDR", rz->master_addr));
  DTR_CHECK(SETI("MASTER_PORT", rz->master_port));
  DTR_CHECK(SETI("TORCHELASTIC_RESTART_COUNT", a->restart_count));
  DTR_CHECK(SETI("TORCHELASTIC_MAX_RESTARTS", args->max_restarts));
  DTR_CHECK(dtr__env_set(e, "TORCHELASTIC_RUN_ID", a->cfg->run_id));
  DTR_CHECK(dtr__env_set(e, "TORCHELASTIC_USE_AGENT_STORE", "False"));
  DTR_CHECK(dtr__env_default(e, "OMP_NUM_THREADS", "1"));
  DTR_CHECK(dtr__env_set(e, "DTRAIN_STORE", a->store_desc));
  DTR_CHECK(dtr__env_set(e, "DTRAIN_RUN_ID", a->cfg->run_id));
  DTR_CHECK(SETI("DTRAIN_RESTART_COUNT", a->restart_count));
  DTR_CHECK(SETI("DTRAIN_ATTEMPT", a->round));
  DTR_CHECK(dtr__env_set(e, "DTRAIN_JOB_TOKEN", a->cfg->token));
  DTR_CHECK(SETI("DTRAIN_NODE_RANK", rz->node_rank));
  DTR_CHECK(SETI("DTRAIN_NNODES", rz->nnodes));
  DTR_CHECK(dtr__env_set(e, "DTRAIN_STOP_FILE", a->cfg->stop_file));
  if (a->wd) DTR_CHECK(dtr__env_set(e, "DTRAIN_PROGRESS_FILE", dtr__watchdog_path(a->wd, local_rank)));
  if (a->cfg->log_run_dir[0]) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/attempt_%d", a->cfg->log_run_dir, a->round);
    DTR_CHECK(dtr__env_set(e, "DTRAIN_DIAG_DIR", dir));
  }
#undef SETI
  return DTR_OK;
}

static void begin_stop(agent *a) {
  if (a->stopping) return;
  a->stopping = 1;
  double g = a->args->grace_period;
  a->kill_deadline = dtr__now_ms() + (int64_t)(g * 1000);
  for (int i = 0; i < a->nw; i++)
    if (a->w[i].running) dtr__worker_signal(&a->w[i], g > 0 ? SIGTERM : SIGKILL);
  if (g <= 0) a->killed = 1;
}

static void set_outcome(agent *a, enum outcome o) {
  /* a stop request beats everything; otherwise the first outcome stands */
  if (a->outcome == OUT_NONE || (o == OUT_STOP && a->outcome != OUT_STOP)) a->outcome = o;
}

static void record_failure(agent *a, const dtr__worker *w, dtr__failure *f) {
  memset(f, 0, sizeof *f);
  strcpy(f->kind, "worker");
  f->node_rank = a->rz.node_rank;
  snprintf(f->host, sizeof f->host, "%s", a->hostname);
  f->rank = w->rank;
  f->local_rank = w->local_rank;
  if (WIFSIGNALED(w->status))
    f->signal = WTERMSIG(w->status);
  else
    f->exit_code = WEXITSTATUS(w->status);
  f->pid = (int)w->pid;
  dtr__progress_view v;
  dtr__watchdog_view(a->wd, w->local_rank, &v);
  f->step = v.step;
  snprintf(f->phase, sizeof f->phase, "%s", v.phase);
  snprintf(f->reason, sizeof f->reason, "%s", v.reason);
  f->restart_count = a->restart_count;
  f->attempt = a->round;
  snprintf(f->run_id, sizeof f->run_id, "%s", a->cfg->run_id);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  f->time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
  const char *lines[DTR_OUT_TAIL_LINES];
  f->nlines = w->out ? dtr__out_rank_tail(w->out, lines, DTR_OUT_TAIL_LINES) : 0;
  for (int i = 0; i < f->nlines; i++) snprintf(f->lines[i], sizeof f->lines[i], "%s", lines[i]);
}

/* Publish f as the round's failure (unless another came first) and stop the local workers. */
static void post_and_stop(agent *a, dtr__failure *f) {
  char desc[1024];
  dtr__failure_describe(f, desc, sizeof desc);
  char key[DTR_STORE_MAX_KEY];
  key_of(a, key, sizeof key, "event");
  int swapped = 0;
  dtr_result rc = post_failure(a->main, key, f, &swapped);
  if (swapped) DTR_INFO("%s; stopping the workers of every node", desc);
  if (rc != DTR_OK && rc != DTR_ERR_EXISTS) {
    /* the store is gone: decide here with what we know */
    a->first = *f;
    a->have_first = 1;
    snprintf(a->lost_msg, sizeof a->lost_msg, "%s (%s)", dtr_strerror(rc), dtr_store_last_error(a->main));
    set_outcome(a, OUT_LOST);
  }
  begin_stop(a);
}

/* Print a thread dump file on the console, bounded, and remove it (no log directory keeps it). */
static void print_dump(const char *path, int rank) {
  FILE *f = fopen(path, "r");
  if (!f) return;
  char line[512];
  int n = 0;
  DTR_ERROR("thread dump of rank %d:", rank);
  while (fgets(line, sizeof line, f) && n++ < 400) {
    line[strcspn(line, "\n")] = '\0';
    DTR_ERROR("  | %s", line);
  }
  fclose(f);
  unlink(path);
}

/* A local rank stopped making progress: ask for its threads' stacks, publish the failure, kill it. */
static void worker_hung(agent *a, const dtr__hang *h) {
  dtr__worker *w = &a->w[h->local_rank];
  dtr__failure f;
  record_failure(a, w, &f);
  strcpy(f.kind, "hung");
  f.pid = h->pid > 0 ? (int)h->pid : (int)w->pid;
  f.step = h->view.step;
  snprintf(f.phase, sizeof f.phase, "%s", h->view.phase);
  f.idle_s = h->idle_s;
  f.limit_s = h->limit_s;
  char path[sizeof f.dump];
  if (a->cfg->log_run_dir[0])
    snprintf(path, sizeof path, "%s/attempt_%d/rank_%d.threads.txt", a->cfg->log_run_dir, a->round, w->rank);
  else
    snprintf(path, sizeof path, "%s/rank_%d.threads.txt", dtr__watchdog_dir(a->wd), w->rank);
  int dumped = dtr__watchdog_dump(a->wd, h->local_rank, (pid_t)f.pid, h->stopped, path, 3000);
  dtr__worker_signal(w, SIGKILL); /* hung: a SIGTERM would wait out the grace period in vain */
  if (h->pid > 0 && h->pid != w->pid) kill(h->pid, SIGKILL);
  if (dumped && a->cfg->log_run_dir[0]) snprintf(f.dump, sizeof f.dump, "%s", path);
  post_and_stop(a, &f);
  if (h->stopped) DTR_ERROR("rank %d (pid %d) was stopped (SIGSTOP or a debugger)", w->rank, f.pid);
  if (f.nlines) DTR_ERROR("last line of rank %d: %s", w->rank, f.lines[f.nlines - 1]);
  if (dumped && !a->cfg->log_run_dir[0])
    print_dump(path, w->rank);
  else if (dumped)
    DTR_ERROR("thread dump of rank %d: %s", w->rank, path);
  else
    DTR_ERROR(
        "no thread dump of rank %d (%s)", w->rank,
        h->view.flags & DTR__PG_DUMPS ? "it did not answer within 3 s" : "the program does not offer one");
}

static void worker_failed(agent *a, const dtr__worker *w) {
  dtr__failure f;
  record_failure(a, w, &f);
  post_and_stop(a, &f);
}

static void local_all_done(agent *a) {
  char key[DTR_STORE_MAX_KEY];
  int64_t v = 0;
  key_of(a, key, sizeof key, "ndone");
  dtr_result rc = dtr_store_add(a->main, key, 1, &v);
  if (rc == DTR_OK && v >= a->rz.nnodes) {
    int swapped;
    key_of(a, key, sizeof key, "event");
    rc = dtr_store_cas(a->main, key, NULL, 0, "done", 4, &swapped, NULL, NULL);
  }
  if (rc != DTR_OK && rc != DTR_ERR_EXISTS) {
    snprintf(a->lost_msg, sizeof a->lost_msg, "%s (%s)", dtr_strerror(rc), dtr_store_last_error(a->main));
    set_outcome(a, OUT_LOST);
  }
}

/* The job's stop counter (agent.h): not per round, so that it outlives a failed round. */
static void stop_key(const agent *a, char *key, size_t cap) {
  snprintf(key, cap, "rdzv/%s/stop", a->cfg->run_id);
}

/* The exit code of an attempt that ended on a stop request. */
static int stop_exit_code(const agent *a) {
  return a->stop_req_sig == SIGTERM ? DTR_EXIT_STOPPED_TERM : DTR_EXIT_PREEMPTED;
}

/* Act on a stop request here: create the workers' stop file and give them --stop-timeout to stop. */
static void stop_locally(agent *a, int sig) {
  if (a->stop_requested) return;
  a->stop_requested = 1;
  a->stop_req_sig = sig;
  a->stop_deadline = dtr__now_ms() + (int64_t)(a->args->stop_timeout * 1000);
  int fd = open(a->cfg->stop_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    DTR_ERROR("cannot create the stop file %s: %s", a->cfg->stop_file, strerror(errno));
  else
    close(fd);
  set_outcome(a, OUT_PREEMPT);
}

/* A stop request made on this node (sig: the signal, 0 for a worker that stopped by itself): counted in
 * the job's "stop" key (a round that fails meanwhile is not restarted) and posted as the round's event,
 * which every agent's listener receives at once. */
static void request_stop(agent *a, int sig) {
  if (a->stop_requested) return;
  if (sig)
    DTR_INFO("got SIG%s: asking every rank to stop at its next step boundary and save (within %g s)",
             sigabbrev_np(sig), a->args->stop_timeout);
  char key[DTR_STORE_MAX_KEY], val[64];
  int64_t v;
  int swapped = 0;
  stop_key(a, key, sizeof key);
  dtr_result rc = dtr_store_add(a->main, key, 1, &v);
  key_of(a, key, sizeof key, "event");
  int vl = snprintf(val, sizeof val, "preempt\n%d %d", a->rz.node_rank, sig);
  if (rc == DTR_OK) rc = dtr_store_cas(a->main, key, NULL, 0, val, (size_t)vl, &swapped, NULL, NULL);
  if (rc != DTR_OK && rc != DTR_ERR_EXISTS)
    DTR_WARN("could not tell the other nodes about the stop request: %s (%s)", dtr_strerror(rc),
             dtr_store_last_error(a->main));
  stop_locally(a, sig);
}

/* Whether any node asked the job to stop (the job's "stop" counter), before a restart. */
static int stop_requested_elsewhere(agent *a) {
  char key[DTR_STORE_MAX_KEY];
  int64_t v = 0;
  stop_key(a, key, sizeof key);
  return dtr_store_add(a->main, key, 0, &v) == DTR_OK && v > 0;
}

/* The worker is gone, having exited with code. */
static int exited_with(const dtr__worker *w, int code) {
  return !w->running && WIFEXITED(w->status) && WEXITSTATUS(w->status) == code;
}

static int all_exited_zero(const agent *a) {
  for (int i = 0; i < a->nw; i++)
    if (!exited_with(&a->w[i], 0)) return 0;
  return 1;
}

static void on_children(agent *a) {
  for (int i = 0; i < a->nw; i++) {
    dtr__worker *w = &a->w[i];
    if (dtr__worker_reap(w)) {
      dtr__worker_close_pipes(w);
      int bad = !exited_with(w, 0);
      /* a worker that saved and stopped by itself (a signal of its own): the job stops, nothing failed */
      if (exited_with(w, DTR_EXIT_PREEMPTED) && a->outcome == OUT_NONE && !a->stopping) {
        DTR_INFO("rank %d stopped on request (exit %d); asking every rank to stop", w->rank,
                 DTR_EXIT_PREEMPTED);
        request_stop(a, 0);
      }
      if (bad && !a->stopping && a->outcome == OUT_NONE) worker_failed(a, w);
      if (bad && a->stop_requested && !exited_with(w, DTR_EXIT_PREEMPTED)) {
        char how[64];
        if (WIFSIGNALED(w->status))
          snprintf(how, sizeof how, "was killed by SIG%s", sigabbrev_np(WTERMSIG(w->status)));
        else
          snprintf(how, sizeof how, "exited with code %d", WEXITSTATUS(w->status));
        DTR_WARN(
            "rank %d %s while stopping (not %d: saved and stopped); the job resumes from the newest "
            "committed checkpoint",
            w->rank, how, DTR_EXIT_PREEMPTED);
      }
    }
  }
  if (!a->local_done && a->outcome == OUT_NONE && !a->stopping && all_exited_zero(a)) {
    a->local_done = 1;
    local_all_done(a);
  }
}

static void on_signal(agent *a, int sig) {
  if (sig == SIGCHLD) {
    on_children(a);
    return;
  }
  if (is_stop_request(a, sig)) {
    request_stop(a, sig);
    return;
  }
  for (int i = 0; i < a->nw; i++)
    if (a->w[i].running) dtr__worker_signal(&a->w[i], sig);
  if (!is_stop_signal(sig)) return;
  if (a->outcome == OUT_STOP) return; /* already stopping for a signal: forwarding was enough */
  DTR_INFO("got SIG%s; stopping the job on every node", sigabbrev_np(sig));
  a->stop_sig = sig;
  char key[DTR_STORE_MAX_KEY], val[64];
  key_of(a, key, sizeof key, "event");
  int vl = snprintf(val, sizeof val, "stop\n%d %d", a->rz.node_rank, sig);
  int swapped;
  (void)dtr_store_cas(a->main, key, NULL, 0, val, (size_t)vl, &swapped, NULL, NULL);
  set_outcome(a, OUT_STOP);
  /* the signal already went to the workers; the grace period starts now */
  if (!a->stopping) {
    a->stopping = 1;
    a->kill_deadline = dtr__now_ms() + (int64_t)(a->args->grace_period * 1000);
  }
}

static void on_event(agent *a) {
  uint64_t cnt;
  ssize_t r = read(a->evfd, &cnt, sizeof cnt);
  (void)r;
  pthread_mutex_lock(&a->listener.mu);
  char *ev = a->listener.event;
  size_t len = a->listener.event_len;
  int lost = a->listener.lost;
  a->listener.event = NULL;
  if (lost) snprintf(a->lost_msg, sizeof a->lost_msg, "%s", a->listener.lost_msg);
  pthread_mutex_unlock(&a->listener.mu);
  if (!lost && !ev) return; /* a wake-up with nothing posted */
  if (lost) {
    set_outcome(a, OUT_LOST);
    begin_stop(a);
  } else if (ev && len >= 5 && memcmp(ev, "fail\n", 5) == 0) {
    if (dtr__failure_from_json(ev + 5, len - 5, &a->first) == DTR_OK) {
      a->have_first = 1;
    } else {
      DTR_WARN("could not read the failure record in the store");
    }
    set_outcome(a, OUT_FAIL);
    begin_stop(a);
  } else if (ev && len >= 5 && memcmp(ev, "stop\n", 5) == 0) {
    int node = -1, sig = SIGTERM;
    if (sscanf(ev + 5, "%d %d", &node, &sig) != 2 || sig <= 0 || sig >= 128) sig = SIGTERM;
    if (a->outcome != OUT_STOP) {
      if (node != a->rz.node_rank)
        DTR_INFO("node %d was asked to stop (SIG%s); stopping", node, sigabbrev_np(sig));
      a->stop_sig = sig;
    }
    set_outcome(a, OUT_STOP);
    begin_stop(a);
  } else if (ev && len >= 8 && memcmp(ev, "preempt\n", 8) == 0) {
    int node = -1, sig = 0;
    if (sscanf(ev + 8, "%d %d", &node, &sig) != 2 || sig < 0 || sig >= 128) sig = 0;
    if (!a->stop_requested && node != a->rz.node_rank)
      DTR_INFO("node %d asked every rank to stop at its next step boundary and save", node);
    stop_locally(a, sig);
  } else if (ev && len == 4 && memcmp(ev, "done", 4) == 0) {
    set_outcome(a, OUT_DONE);
  } else if (ev && len == 6 && memcmp(ev, "rejoin", 6) == 0) {
    set_outcome(a, OUT_REJOIN);
    begin_stop(a);
  } else {
    DTR_WARN("unexpected event in the store: '%.*s'", (int)(len > 60 ? 60 : len), ev ? ev : "");
    set_outcome(a, OUT_FAIL);
    begin_stop(a);
  }
  free(ev);
}

static int running_count(const agent *a) {
  int n = 0;
  for (int i = 0; i < a->nw; i++) n += a->w[i].running;
  return n;
}

static dtr_result spawn_all(agent *a, char *err, size_t cap) {
  const dtr__agent_cfg *cfg = a->cfg;
  char attempt_dir[4096];
  const char *dir = NULL;
  if (cfg->log_run_dir[0]) {
    snprintf(attempt_dir, sizeof attempt_dir, "%s/attempt_%d", cfg->log_run_dir, a->round);
    dir = attempt_dir;
  }
  int console_fd[2] = {STDOUT_FILENO, STDERR_FILENO};
  if (a->wd && dtr__watchdog_arm(a->wd, a->nw, dtr__now_ms(), err, cap) != DTR_OK) {
    DTR_WARN("%s; hung ranks go unnoticed in this attempt", err);
    dtr__watchdog_disarm(a->wd);
  }
  for (int i = 0; i < a->nw; i++) {
    dtr__worker *w = &a->w[i];
    memset(w, 0, sizeof *w);
    w->fd[0] = w->fd[1] = -1;
    w->local_rank = i;
    w->rank = a->rz.node_rank * a->rz.nproc + i;
    w->out = dtr__out_rank_create(a->rz.node_rank, w->rank, console_fd, cfg->console_mask, dir, err, cap);
    if (!w->out) return DTR_ERR_SYSTEM;
  }
  for (int i = 0; i < a->nw; i++) {
    dtr__worker *w = &a->w[i];
    dtr__env env;
    dtr_result rc = build_env(a, i, &env);
    if (rc == DTR_OK)
      rc = dtr__worker_spawn(w, cfg->exe_path, cfg->argv, env.v, err, cap);
    else
      dtr__fail(err, cap, rc, "building the environment of rank %d", w->rank);
    dtr__env_free(&env);
    if (rc) return rc;
    dtr__orphan_guard_add(cfg->orphan_guard, w->pid);
  }
  return DTR_OK;
}

static void stop_listener(agent *a) {
  if (!a->listener.started) return;
  pthread_mutex_lock(&a->listener.mu);
  int posted = a->listener.posted;
  pthread_mutex_unlock(&a->listener.mu);
  if (!posted)
    dtr_store_abort(a->listener.c); /* only on error paths: the connection is unusable afterwards */
  pthread_join(a->listener.th, NULL);
  a->listener.started = 0;
  free(a->listener.event);
  a->listener.event = NULL;
  pthread_mutex_destroy(&a->listener.mu);
}

/* One attempt: spawn, monitor until the round has an outcome and every local worker is gone. */
static enum outcome run_attempt(agent *a) {
  const dtr__agent_cfg *cfg = a->cfg;
  char err[512];
  a->outcome = OUT_NONE;
  a->stopping = a->killed = a->local_done = 0;
  a->have_first = 0;
  a->stop_sig = 0;
  a->all_zero = 0;
  unlink(cfg->stop_file); /* no stop was requested, or no attempt would start */
  a->nw = a->rz.nproc;
  a->w = calloc((size_t)a->nw, sizeof *a->w);
  if (!a->w) return OUT_ERROR;

  uint64_t stale;
  while (read(a->evfd, &stale, sizeof stale) > 0) {
  } /* a wake-up the last attempt's listener left behind */
  memset(&a->listener, 0, sizeof a->listener);
  pthread_mutex_init(&a->listener.mu, NULL);
  a->listener.c = a->lis;
  a->listener.run_id = cfg->run_id;
  a->listener.round = a->round;
  a->listener.node_rank = a->rz.node_rank;
  a->listener.nnodes = a->rz.nnodes;
  a->listener.nnodes_max = a->args->nnodes_max;
  double iv = a->args->monitor_interval * 1000;
  a->listener.interval_ms = iv < 1 ? 1 : (int)iv;
  a->listener.hb_timeout_ms = a->hb_timeout_ms;
  a->listener.hosts = a->rz.hosts;
  a->listener.restart_count = a->restart_count;
  a->listener.evfd = a->evfd;

  dtr_result rc = spawn_all(a, err, sizeof err);
  if (rc != DTR_OK) {
    DTR_ERROR("%s", err);
    a->outcome = OUT_ERROR;
    begin_stop(a);
  }
  if (pthread_create(&a->listener.th, NULL, listener_main, &a->listener) == 0) {
    a->listener.started = 1;
  } else {
    DTR_ERROR("cannot start the event listener thread");
    set_outcome(a, OUT_ERROR);
    begin_stop(a);
  }

  int cap = 2 + 2 * a->nw;
  struct pollfd *pf = calloc((size_t)cap, sizeof *pf);
  int *map = calloc((size_t)cap, sizeof *map);
  int *running = calloc((size_t)a->nw, sizeof *running);
  int64_t next_watch = dtr__now_ms();
  if (!pf || !map || !running) {
    set_outcome(a, OUT_ERROR);
    begin_stop(a);
  }
  on_children(a); /* an exec failure may already be reaped-able; also handles nproc workers exiting at once */
  while (pf && map && running) {
    if (a->outcome != OUT_NONE && running_count(a) == 0) break;
    int n = 0;
    pf[n++] = (struct pollfd){.fd = cfg->sigfd, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = a->evfd, .events = POLLIN};
    for (int i = 0; i < a->nw; i++)
      for (int s = 0; s < 2; s++)
        if (a->w[i].fd[s] >= 0) {
          map[n] = i * 2 + s;
          pf[n++] = (struct pollfd){.fd = a->w[i].fd[s], .events = POLLIN};
        }
    int timeout = (a->stopping && !a->killed)           ? dtr__ms_left(a->kill_deadline)
                  : (a->stop_requested && !a->stopping) ? dtr__ms_left(a->stop_deadline)
                                                        : -1;
    int watching = a->wd && !a->stopping && a->outcome == OUT_NONE;
    if (watching && (timeout < 0 || timeout > a->listener.interval_ms)) timeout = a->listener.interval_ms;
    int pr = poll(pf, (nfds_t)n, timeout);
    if (pr < 0 && errno != EINTR) {
      DTR_ERROR("poll: %s", strerror(errno));
      set_outcome(a, OUT_ERROR);
      begin_stop(a);
    }
    if (a->stop_requested && !a->stopping && dtr__ms_left(a->stop_deadline) == 0 && running_count(a) > 0) {
      DTR_WARN("%d worker%s still running %g s after the stop request (--stop-timeout); stopping them",
               running_count(a), running_count(a) == 1 ? "" : "s", a->args->stop_timeout);
      begin_stop(a);
    }
    if (a->stopping && !a->killed && dtr__ms_left(a->kill_deadline) == 0) {
      a->killed = 1;
      if (running_count(a) > 0)
        DTR_WARN("%d worker%s still running %.1f s after SIGTERM; sending SIGKILL", running_count(a),
                 running_count(a) == 1 ? "" : "s", a->args->grace_period);
      for (int i = 0; i < a->nw; i++)
        if (a->w[i].running) dtr__worker_signal(&a->w[i], SIGKILL);
    }
    if (watching && dtr__ms_left(next_watch) == 0) {
      next_watch = dtr__now_ms() + a->listener.interval_ms;
      for (int i = 0; i < a->nw; i++) running[i] = a->w[i].running;
      dtr__hang h;
      if (dtr__watchdog_check(a->wd, running, dtr__now_ms(), &h)) worker_hung(a, &h);
    }
    if (pr <= 0) continue;
    for (int k = 2; k < n; k++) {
      if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      dtr__worker *w = &a->w[map[k] / 2];
      int s = map[k] % 2;
      if (w->fd[s] >= 0 && !dtr__out_rank_drain(w->out, s, w->fd[s])) {
        close(w->fd[s]);
        w->fd[s] = -1;
      }
    }
    if (pf[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(cfg->sigfd, &si, sizeof si) == (ssize_t)sizeof si) on_signal(a, (int)si.ssi_signo);
    }
    if (pf[1].revents & POLLIN) on_event(a);
  }
  free(pf);
  free(map);
  free(running);

  a->all_zero = all_exited_zero(a);
  /* the attempt is over: nothing of it may outlive it */
  for (int i = 0; i < a->nw; i++) {
    dtr__worker *w = &a->w[i];
    if (w->pid > 0) {
      if (w->running) {
        dtr__worker_signal(w, SIGKILL);
        int st;
        waitpid(w->pid, &st, 0);
        w->running = 0;
      }
      kill(-w->pid, SIGKILL); /* leftovers of its process group */
      dtr__orphan_guard_remove(cfg->orphan_guard, w->pid);
    }
    dtr__worker_close_pipes(w);
    dtr__out_rank_destroy(w->out);
  }
  free(a->w);
  a->w = NULL;
  dtr__watchdog_disarm(a->wd);
  stop_listener(a);
  return a->outcome;
}

static void say_goodbye(agent *a, int wait_for_others) {
  char key[DTR_STORE_MAX_KEY], sfx[64];
  snprintf(sfx, sizeof sfx, "exited/%d", a->rz.node_rank);
  key_of(a, key, sizeof key, sfx);
  (void)dtr_store_set(a->main, key, "1", 1);
  if (!wait_for_others || !a->hosting || a->rz.nnodes <= 1) return;
  char **keys = calloc((size_t)a->rz.nnodes, sizeof *keys);
  if (!keys) return;
  /* a node declared dead will not say goodbye */
  int dead = (a->have_first && strcmp(a->first.kind, "node") == 0) ? a->first.node_rank : -1;
  int nk = 0, ok = 1;
  for (int k = 0; k < a->rz.nnodes; k++) {
    if (k == dead) continue;
    snprintf(sfx, sizeof sfx, "exited/%d", k);
    keys[nk] = malloc(DTR_STORE_MAX_KEY);
    if (!keys[nk])
      ok = 0;
    else
      key_of(a, keys[nk], DTR_STORE_MAX_KEY, sfx);
    nk++;
  }
  /* the other agents may still be stopping their workers: give them the grace period and some (after a
   * stop request, the time their workers have to save as well) */
  int timeout = (int)(a->args->grace_period * 1000) + 5000;
  if (a->stop_requested) timeout += (int)(a->args->stop_timeout * 1000);
  if (ok && nk > 0 && dtr_store_wait(a->main, (const char *const *)keys, nk, 1000) != DTR_OK) {
    DTR_INFO("waiting up to %.0f s more for the other nodes to leave before closing the store",
             (timeout - 1000) / 1000.0);
    if (dtr_store_wait(a->main, (const char *const *)keys, nk, timeout - 1000) != DTR_OK)
      DTR_WARN("not every node said goodbye within %d ms; closing the store anyway", timeout);
  }
  for (int k = 0; k < nk; k++) free(keys[k]);
  free(keys);
}

static void final_report(agent *a) {
  if (!a->have_first) {
    DTR_ERROR("the job failed (the failure record could not be read)");
    return;
  }
  dtr__failure_print(&a->first);
  if (a->cfg->error_file[0]) {
    char err[512];
    if (dtr__failure_write_file(&a->first, a->cfg->error_file, err, sizeof err) != DTR_OK)
      DTR_WARN("%s", err);
  }
}

/* ---------------------------------------------------------------- the store's standby and failover */

static void set_store(agent *a, const char *host, int port) {
  snprintf(a->store_host, sizeof a->store_host, "%s", host);
  a->store_port = port;
  snprintf(a->store_desc, sizeof a->store_desc, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/* Deadlines of the agent's store connections: a lost store is noticed within the heartbeat timeout,
 * not the 30 s a worker's calls may take. */
static void tune_clients(agent *a) {
  int hb = a->hb_timeout_ms;
  dtr__store_set_timeouts(a->main, hb * 2 > 5000 ? hb * 2 : 5000, hb / 2);
  dtr__store_set_timeouts(a->lis, hb, hb / 2);
}

/* In a job of several nodes every agent runs a store server: the one that hosts the primary, the
 * others a standby candidate (on every IPv4 address, a port the kernel picks), announced at every
 * rendezvous so that the primary can mirror to the round's standby. */
static void store_setup(agent *a) {
  const dtr__agent_cfg *cfg = a->cfg;
  a->main = cfg->main_store;
  a->lis = cfg->listener_store;
  set_store(a, cfg->store_host, cfg->store_port);
  snprintf(a->store_desc, sizeof a->store_desc, "%s", cfg->store_desc);
  a->hosting = cfg->hosting;
  a->own = cfg->server;
  tune_clients(a);
  if (a->args->nnodes_max <= 1 || dtr__param_int("DTRAIN_STORE_STANDBY", 1) == 0) return;
  if (a->hosting && a->own) {
    snprintf(a->own_addr, sizeof a->own_addr, "%s", a->store_desc);
    return;
  }
  const char *me = dtr_store_local_addr(a->main);
  char err[256];
  if (!me[0] || strchr(me, ':')) return; /* the standby server listens on IPv4 */
  if (dtr_store_server_create(NULL, 0, cfg->token, &a->own, err, sizeof err) != DTR_OK ||
      dtr_store_server_start(a->own) != DTR_OK) {
    DTR_WARN("cannot start this node's standby store (%s): it will not stand in for the job's store", err);
    dtr_store_server_destroy(a->own);
    a->own = NULL;
    return;
  }
  a->own_created = 1;
  snprintf(a->own_addr, sizeof a->own_addr, "%s:%d", me, dtr_store_server_port(a->own));
}

/* After a rendezvous: the round's standby, and the primary's mirror to it when this agent hosts it. */
static void name_standby(agent *a) {
  snprintf(a->standby, sizeof a->standby, "%s", a->rz.standby);
  a->failed_over = 0;
  if (!a->hosting || !a->own) return;
  char host[256], perr[128];
  int port = 0;
  if (!a->standby[0] ||
      dtr__parse_hostport(a->standby, host, sizeof host, &port, perr, sizeof perr) != DTR_OK) {
    if (a->rz.nnodes > 1) DTR_WARN("no node can stand by for the store: losing this node ends the job");
    dtr__store_server_mirror(a->own, NULL, 0, NULL, NULL, 0);
    return;
  }
  if (dtr__store_server_mirror(a->own, host, port, a->cfg->token, "rdzv/", a->hb_timeout_ms) == DTR_OK)
    DTR_INFO("the store at %s (epoch %lld) is mirrored to node %d's standby at %s", a->store_desc,
             (long long)a->epoch, a->rz.standby_rank, a->standby);
}

/* This agent hosts the store and a newer epoch fenced it: no point asking it again. */
static int store_fenced_here(const agent *a) {
  return a->hosting && a->own && dtr__store_server_fenced(a->own);
}

/* The newest round any agent joined, from the (mirrored) keys rdzv/<run>/r<N>/...; -1 when none. */
static int newest_round(dtr_store *c, const char *run_id) {
  char prefix[DTR_STORE_MAX_KEY], **keys = NULL;
  int n = 0, newest = -1;
  snprintf(prefix, sizeof prefix, "rdzv/%s/r", run_id);
  if (dtr_store_list(c, prefix, &keys, &n) != DTR_OK) return -1;
  size_t pl = strlen(prefix);
  for (int i = 0; i < n; i++) {
    int r = atoi(keys[i] + pl);
    if (r > newest) newest = r;
  }
  dtr_store_free_list(keys, n);
  return newest;
}

/* The primary is lost (or fenced us): go to the last round's standby, promote it to the next epoch
 * (whoever gets there first does; the others find it done), and agree there on a fresh round number.
 * Counts as a restart. Returns 0, or the exit code when the job cannot go on here. */
static int failover(agent *a, const char *why) {
  if (!a->standby[0]) {
    DTR_ERROR("lost the rendezvous store at %s (%s), and no standby was named%s", a->store_desc, why,
              a->args->nnodes_max > 1 ? "" : " (one node: there is nothing to stand in for it)");
    return 1;
  }
  if (a->restart_count >= a->args->max_restarts) {
    DTR_ERROR("lost the rendezvous store at %s (%s); no restart is left to go on with the standby at %s",
              a->store_desc, why, a->standby);
    return 1;
  }
  char host[256], perr[128];
  int port = 0;
  if (dtr__parse_hostport(a->standby, host, sizeof host, &port, perr, sizeof perr) != DTR_OK) {
    DTR_ERROR("lost the rendezvous store; the standby address '%s' is unusable: %s", a->standby, perr);
    return 1;
  }
  DTR_WARN("lost the rendezvous store at %s (%s)", a->store_desc, why);
  /* This node may have been the one cut off, and the store answers again: then rejoin through it, as
   * after any failure, rather than promote the standby and make every node follow (a restart for all). */
  dtr_store *probe = NULL;
  char err[512];
  if (!store_fenced_here(a) && dtr_store_connect(a->store_host, a->store_port, a->cfg->token, 500, &probe,
                                                 err, sizeof err) == DTR_OK) {
    int64_t e = -1;
    dtr_result prc = dtr__store_epoch(probe, 0, &e);
    dtr_store_close(probe);
    if (prc == DTR_OK && e == a->epoch) {
      a->restart_count++;
      a->round++;
      DTR_WARN("the store at %s answers again: rejoining through it (restart %d of %d)", a->store_desc,
               a->restart_count, a->args->max_restarts);
      return 0;
    }
  }
  DTR_INFO("moving to the standby store at %s", a->standby);
  int64_t t0 = dtr__now_ms(), budget = 2 * (int64_t)a->hb_timeout_ms + 5000;
  dtr_store *m = NULL, *l = NULL;
  dtr_result rc = dtr_store_connect(host, port, a->cfg->token, (int)budget, &m, err, sizeof err);
  if (rc == DTR_OK) rc = dtr_store_connect(host, port, a->cfg->token, (int)budget, &l, err, sizeof err);
  int64_t epoch = 0;
  if (rc == DTR_OK) {
    dtr__store_set_timeouts(m, (int)budget, a->hb_timeout_ms / 2);
    rc = dtr__store_epoch(m, a->epoch + 1, &epoch);
    if (rc != DTR_OK) snprintf(err, sizeof err, "%s", dtr_store_last_error(m));
  }
  /* the first round number after anything any agent joined, agreed on by a first-writer-wins cas */
  int round = -1;
  if (rc == DTR_OK) {
    char key[DTR_STORE_MAX_KEY], num[24];
    int nl = snprintf(num, sizeof num, "%d", newest_round(m, a->cfg->run_id) + 1);
    snprintf(key, sizeof key, "rdzv/%s/e%lld/round", a->cfg->run_id, (long long)epoch);
    void *got = NULL;
    int swapped = 0;
    rc = dtr_store_cas(m, key, NULL, 0, num, (size_t)nl, &swapped, &got, NULL);
    if (rc == DTR_OK && got) round = atoi(got);
    if (rc != DTR_OK) snprintf(err, sizeof err, "%s", dtr_store_last_error(m));
    free(got);
  }
  if (rc != DTR_OK || round < 0) {
    DTR_ERROR("the standby store at %s cannot take over: %s", a->standby, rc ? err : "no round number");
    dtr_store_close(m);
    dtr_store_close(l);
    return 1;
  }
  if (a->own_clients) {
    dtr_store_close(a->main);
    dtr_store_close(a->lis);
  }
  a->main = m;
  a->lis = l;
  a->own_clients = 1;
  tune_clients(a);
  set_store(a, host, port);
  a->hosting = a->own && strcmp(a->own_addr, a->standby) == 0;
  a->epoch = epoch;
  a->failed_over = 1;
  a->standby[0] = '\0'; /* the next round names one */
  a->round = round;
  a->restart_count++;
  DTR_INFO(
      "the store is the standby at %s now (epoch %lld%s; the move took %.1f s); rejoining as round %d "
      "(restart %d of %d)",
      a->store_desc, (long long)epoch, a->hosting ? ", on this node" : "", (dtr__now_ms() - t0) / 1000.0,
      round, a->restart_count, a->args->max_restarts);
  return 0;
}

/* A rendezvous failure that means the store is gone, rather than the rendezvous itself failing. */
static int rdzv_store_lost(dtr_result rc, const agent *a) {
  if (a->rz.minority || a->rz.interrupted_by) return 0;
  return rc == DTR_ERR_CONNECTION || rc == DTR_ERR_FENCED || rc == DTR_ERR_ABORTED ||
         (rc == DTR_ERR_TIMEOUT && !dtr__store_connected(a->main));
}

int dtr__agent_run(const dtr__agent_cfg *cfg) {
  agent *a = calloc(1, sizeof *a);
  if (!a) return 1;
  a->cfg = cfg;
  a->args = cfg->args;
  if (gethostname(a->hostname, sizeof a->hostname - 1) < 0) strcpy(a->hostname, "unknown");
  a->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int code = 1;
  if (a->evfd < 0) {
    DTR_ERROR("eventfd: %s", strerror(errno));
    free(a);
    return 1;
  }
  /* a node is dead when its counter stood still this long; never less than a few monitor intervals */
  double iv = a->args->monitor_interval * 1000;
  int64_t hb = dtr__param_int("DTRAIN_HEARTBEAT_TIMEOUT_MS", DTR__HEARTBEAT_TIMEOUT_MS);
  int64_t hb_min = 3 * (int64_t)(iv < 1 ? 1 : iv) + 1000;
  a->hb_timeout_ms = (int)(hb < hb_min ? hb_min : hb > 86400000 ? 86400000 : hb);
  store_setup(a);
  if (a->args->worker_timeout > 0 || a->args->worker_start_timeout > 0) {
    char err[512];
    if (dtr__watchdog_create(cfg->run_id, a->args->nproc_per_node, a->args->worker_timeout,
                             a->args->worker_start_timeout, &a->wd, err, sizeof err) != DTR_OK)
      DTR_WARN("%s; hung ranks will go unnoticed", err);
  }
  int last_call_ms = a->args->last_call >= 0 ? (int)(a->args->last_call * 1000)
                                             : (int)dtr__param_int("DTRAIN_RDZV_LAST_CALL_MS", 1000);
  /* how long the first agent back waits for a majority of the last round before it calls its side a
   * minority: long enough for every agent to stop its workers and come back */
  int64_t quorum_ms = dtr__param_int("DTRAIN_QUORUM_TIMEOUT_MS",
                                     (int64_t)(a->args->grace_period * 1000) + 2 * a->hb_timeout_ms + 5000);
  for (;;) {
    dtr__rdzv_cfg rc_cfg = {
        .run_id = cfg->run_id,
        .nnodes_min = a->args->nnodes_min,
        .nnodes_max = a->args->nnodes_max,
        .nproc = a->args->nproc_per_node,
        .want_rank = a->args->node_rank,
        .hostname = a->hostname,
        .master_addr = a->args->master_addr,
        .timeout_ms = (int64_t)(a->args->rdzv_timeout * 1000),
        .last_call_ms = last_call_ms,
        .prev_size = a->prev_size,
        .prev_rank = a->prev_size > 0 ? a->rz.node_rank : -1,
        .failed_over = a->failed_over,
        .quorum_timeout_ms = quorum_ms,
        .store = a->own_addr,
        .primary = a->hosting,
        .say_every_ms = (int)dtr__param_int("DTRAIN_WAIT_REPORT_MS", 5000),
        .interrupted = rdzv_interrupted,
        .ctx = a,
    };
    char err[1024];
    dtr__rdzv_result_free(&a->rz);
    dtr_result rc = dtr__rdzv_join(a->main, &rc_cfg, a->round, &a->rz, err, sizeof err);
    if (rc == DTR_ERR_ABORTED && a->rz.interrupted_by) {
      int sig = a->rz.interrupted_by;
      DTR_INFO("got SIG%s while waiting for the other nodes; giving up", sigabbrev_np(sig));
      code = 128 + sig;
      if (is_stop_request(a, sig)) { /* no worker runs: the newest checkpoint is the one to resume from */
        a->stop_req_sig = sig;
        code = stop_exit_code(a);
      }
      break;
    }
    if (rc != DTR_OK && a->rz.minority) {
      DTR_ERROR("%s; stopping this node so that the majority can go on", err);
      code = DTR__EXIT_MINORITY;
      break;
    }
    if (rc != DTR_OK && rdzv_store_lost(rc, a)) {
      code = failover(a, err);
      if (code) break;
      continue;
    }
    if (rc != DTR_OK) {
      DTR_ERROR("%s", err);
      code = 1;
      break;
    }
    a->round = a->rz.round;
    /* the store's epoch, which a failover proposes to raise by one (a node that joined late knows no other)
     */
    int64_t epoch = a->epoch;
    if (dtr__store_epoch(a->main, 0, &epoch) == DTR_OK) a->epoch = epoch;
    name_standby(a);
    int first_rank = a->rz.node_rank * a->rz.nproc;
    char ranks[48];
    if (a->rz.nproc == 1)
      snprintf(ranks, sizeof ranks, "rank %d", first_rank);
    else
      snprintf(ranks, sizeof ranks, "ranks %d-%d", first_rank, first_rank + a->rz.nproc - 1);
    DTR_INFO("run %s attempt %d: node %d of %d, %s of %d, master %s:%d%s", cfg->run_id, a->round,
             a->rz.node_rank, a->rz.nnodes, ranks, a->rz.world_size, a->rz.master_addr, a->rz.master_port,
             a->restart_count ? " (restarted)" : "");
    enum outcome o = run_attempt(a);
    a->prev_size = a->rz.nnodes;
    if (o == OUT_PREEMPT) {
      say_goodbye(a, 1);
      code = a->all_zero ? 0 : stop_exit_code(a);
      if (a->all_zero) DTR_INFO("the workers had finished when the stop request came: the job is done");
      break;
    }
    /* a stop request lost its race against a failure or a new node: do not restart into it */
    if ((o == OUT_FAIL || o == OUT_REJOIN) && (a->stop_requested || stop_requested_elsewhere(a))) {
      DTR_INFO("a stop was requested: not restarting; the job resumes from its newest checkpoint");
      say_goodbye(a, 1);
      code = stop_exit_code(a);
      break;
    }
    if (o == OUT_DONE) {
      say_goodbye(a, 1);
      code = 0;
      break;
    }
    if (o == OUT_REJOIN) {
      a->round++;
      continue;
    }
    if (o == OUT_FAIL) {
      char desc[1024] = "a worker failed";
      if (a->have_first) dtr__failure_describe(&a->first, desc, sizeof desc);
      if (a->have_first && dtr__failure_permanent(&a->first)) {
        DTR_ERROR("%s; stopping the job without a restart", desc);
        final_report(a);
        say_goodbye(a, 1);
        code = DTR_EXIT_PERMANENT;
        break;
      }
      if (a->have_first && a->have_prev && dtr__failure_same(&a->prev, &a->first) &&
          a->restart_count < a->args->max_restarts) {
        DTR_ERROR(
            "%s, the same failure as before the last restart: stopping instead of spending the %d "
            "restart%s left on it",
            desc, a->args->max_restarts - a->restart_count,
            a->args->max_restarts - a->restart_count == 1 ? "" : "s");
        final_report(a);
        say_goodbye(a, 1);
        code = DTR_EXIT_REPEATED;
        break;
      }
      a->prev = a->first;
      a->have_prev = a->have_first;
      if (a->restart_count < a->args->max_restarts) {
        a->restart_count++;
        DTR_INFO("%s; restarting every worker (restart %d of %d)", desc, a->restart_count,
                 a->args->max_restarts);
        a->round++;
        continue;
      }
      final_report(a);
      say_goodbye(a, 1);
      code = a->have_first ? dtr__failure_exit_code(&a->first) : 1;
      break;
    }
    if (o == OUT_STOP) {
      say_goodbye(a, 1);
      code = 128 + (a->stop_sig > 0 ? a->stop_sig : SIGTERM);
      break;
    }
    if (o == OUT_LOST) {
      code = failover(a, a->lost_msg);
      if (code == 0) continue;
      if (a->have_first) final_report(a);
      break;
    }
    say_goodbye(a, 0);
    code = 1;
    break;
  }
  dtr__rdzv_result_free(&a->rz);
  dtr__watchdog_destroy(a->wd);
  if (a->own_clients) {
    dtr_store_close(a->main);
    dtr_store_close(a->lis);
  }
  if (a->own_created) dtr_store_server_destroy(a->own);
  close(a->evfd);
  free(a);
  return code;
}
