/* `dtrain launch`: parse and check everything that can be checked before a process starts (flags, the
 * program, the Slurm job around it), pick the run id and job token, host or reach the rendezvous store,
 * then hand over to the agent; after a stop request, requeue the Slurm job. dtr__cmd_launch is that
 * sequence; each step is one function below. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/param.h"
#include "common/sock.h"
#include "common/strbuf.h"
#include "dtrain/store.h"
#include "launcher/agent.h"
#include "launcher/commands.h"
#include "launcher/launch_args.h"
#include "launcher/orphan_guard.h"
#include "launcher/output.h"
#include "launcher/slurm.h"
#include "launcher/workers.h"

#define CTX "dtrain launch: "

/* A token every node derives alike from the run id (FNV-1a over four seeds: spread, not secret). */
static void derive_token(const char *run_id, char *out) {
  unsigned char b[32];
  for (int s = 0; s < 4; s++) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(s + 1) * 0x9E3779B97F4A7C15ULL;
    const char *salt = "dtrain-job-token/";
    for (const char *p = salt; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (const char *p = run_id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (int k = 0; k < 8; k++) b[s * 8 + k] = (unsigned char)(h >> (8 * k));
  }
  dtr__hex(b, sizeof b, out);
}

/* Everything dtr__cmd_launch prepares for the agent, and what it must release on the way out. */
typedef struct launch_state {
  dtr_launch_args args;
  char exe[PATH_MAX];
  char **prog_argv; /* the program's argv, behind python [-m] when it runs under python */
  int standalone;
  char host[DTR_LAUNCH_MAX_STR];
  int port;
  char desc[DTR_LAUNCH_MAX_STR + 16]; /* "host:port" for messages */
  char run_id[129];
  char token[DTR_STORE_MAX_TOKEN + 1]; /* never printed */
  char log_run_dir[PATH_MAX];
  char error_file[PATH_MAX];
  int console_mask;
  int sigfd;
  dtr__orphan_guard guard;
  dtr_store_server *server;
  dtr_store *main_store, *listener_store;
  int hosting;
  dtr__slurm slurm;        /* the Slurm job around this launch (slurm.in_job 0 outside Slurm) */
  pid_t parent;            /* who started dtrain: in a batch script, dtrain stops when it goes */
  char stop_dir[PATH_MAX]; /* the agent's directory of the workers' DTRAIN_STOP_FILE */
  char stop_file[PATH_MAX + 8];
  int secret_token; /* the token comes from secret_path and the Slurm job id */
  char secret_path[PATH_MAX];
} launch_state;

/* dtr_store_connect cut into slices of 250 ms, so that TERM/INT/HUP/QUIT (read from the signalfd; they
 * are blocked) end a long wait for an unreachable store. *sig receives the signal (DTR_ERR_ABORTED). */
static dtr_result connect_sliced(const char *host, int port, const char *token, int64_t total_ms, int sigfd,
                                 int *sig, dtr_store **out, char *err, size_t cap) {
  int64_t start = dtr__now_ms(), deadline = start + total_ms, said = start;
  int say_ms = (int)dtr__param_int("DTRAIN_WAIT_REPORT_MS", 5000);
  for (;;) {
    int left = dtr__ms_left(deadline);
    int slice = left > 250 ? 250 : left < 1 ? 1 : left;
    dtr_result rc = dtr_store_connect(host, port, token, slice, out, err, cap);
    if (rc != DTR_ERR_TIMEOUT || dtr__ms_left(deadline) == 0) return rc;
    if (say_ms > 0 && dtr__now_ms() - said >= say_ms) { /* waiting is never silent */
      said = dtr__now_ms();
      DTR_INFO("waiting %.0f s for the rendezvous store at %s:%d (%s); giving up in %.0f s",
               (said - start) / 1000.0, host, port, err, dtr__ms_left(deadline) / 1000.0);
    }
    struct signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
      int s = (int)si.ssi_signo;
      if (s == SIGTERM || s == SIGINT || s == SIGHUP || s == SIGQUIT) {
        *sig = s;
        return dtr__fail(err, cap, DTR_ERR_ABORTED, "interrupted by SIG%s", sigabbrev_np(s));
      }
    }
  }
}

static int usage_error(const char *msg) {
  fprintf(stderr, CTX "%s\n", msg);
  return 2;
}

/* The program, found and executable before anything starts; a .py one (or -m) runs under DTRAIN_PYTHON.
 * Returns 0, or the exit code: 127 missing, 126 not executable, 1 out of memory. */
static int find_program(launch_state *st) {
  const dtr_launch_args *args = &st->args;
  char err[1024];
  const char *python = dtr__param_str("DTRAIN_PYTHON", "python3");
  const char *prog = args->prog_argv[0];
  size_t pl = strlen(prog);
  int use_python = !args->no_python && (args->module || (pl > 3 && strcmp(prog + pl - 3, ".py") == 0));
  if (use_python && !args->module && access(prog, F_OK) != 0) {
    fprintf(stderr, CTX "script '%s' does not exist\n", prog);
    return 127;
  }
  dtr_result rc = dtr__find_program(use_python ? python : prog, st->exe, sizeof st->exe, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, CTX "%s%s\n", err, use_python ? " (set DTRAIN_PYTHON, or pass --no-python)" : "");
    return rc == DTR_ERR_NOT_FOUND ? 127 : 126;
  }
  int extra = use_python ? (args->module ? 2 : 1) : 0;
  st->prog_argv = calloc((size_t)(args->prog_argc + extra + 1), sizeof *st->prog_argv);
  if (!st->prog_argv) return 1;
  if (use_python) {
    st->prog_argv[0] = (char *)python;
    if (args->module) st->prog_argv[1] = "-m";
  }
  for (int i = 0; i < args->prog_argc; i++) st->prog_argv[extra + i] = args->prog_argv[i];
  return 0;
}

/* Inside a Slurm job (slurm.h): the step's node count where --nnodes gave 1, and unless given the
 * endpoint (the first node, a port from the job id) and the id (the job id). Returns 0 or 2. */
static int slurm_shape(launch_state *st) {
  dtr_launch_args *args = &st->args;
  char err[512];
  if (dtr__slurm_read(NULL, &st->slurm, err, sizeof err) != DTR_OK) return usage_error(err);
  if (args->standalone || args->master_addr[0]) return 0;
  dtr__slurm_shape sh;
  if (dtr__slurm_launch_shape(&st->slurm, args->nnodes_min, args->nnodes_max, &sh, err, sizeof err) != DTR_OK)
    return usage_error(err);
  if (sh.unused_nodes)
    DTR_WARN(
        "the batch script runs dtrain on the first of this job's %d nodes only: start it with "
        "`srun --ntasks-per-node=1 dtrain ...` to use them all",
        sh.unused_nodes);
  args->nnodes_min = sh.nnodes_min;
  args->nnodes_max = sh.nnodes_max;
  if (sh.spans_nodes && !args->rdzv_endpoint[0]) {
    char perr[256];
    snprintf(args->rdzv_endpoint, sizeof args->rdzv_endpoint, "%s", sh.endpoint);
    if (dtr__parse_hostport(sh.endpoint, args->rdzv_host, sizeof args->rdzv_host, &args->rdzv_port, perr,
                            sizeof perr) != DTR_OK)
      return usage_error(perr);
  }
  if (sh.spans_nodes && !args->rdzv_id[0]) snprintf(args->rdzv_id, sizeof args->rdzv_id, "%s", sh.id);
  return 0;
}

/* Where the store is: a private one on 127.0.0.1 (standalone), --rdzv-endpoint, or torchrun's
 * --master-addr/--master-port. Returns 0, or 2 when several nodes have no way to meet. */
static int store_address(launch_state *st) {
  const dtr_launch_args *args = &st->args;
  st->standalone =
      args->standalone || (!args->rdzv_endpoint[0] && !args->master_addr[0] && args->nnodes_max == 1);
  st->port = 0;
  if (st->standalone) {
    strcpy(st->host, "127.0.0.1");
  } else if (args->rdzv_endpoint[0]) {
    snprintf(st->host, sizeof st->host, "%s", args->rdzv_host);
    st->port = args->rdzv_port;
  } else if (args->master_addr[0]) {
    snprintf(st->host, sizeof st->host, "%s", args->master_addr);
    st->port = args->master_port > 0 ? args->master_port : DTR_LAUNCH_DEFAULT_RDZV_PORT;
  } else {
    char err[256];
    snprintf(err, sizeof err,
             "--nnodes %d:%d needs --rdzv-endpoint HOST:PORT (or --master-addr) so the nodes can meet",
             args->nnodes_min, args->nnodes_max);
    return usage_error(err);
  }
  snprintf(st->desc, sizeof st->desc, strchr(st->host, ':') ? "[%s]:%d" : "%s:%d", st->host, st->port);
  return 0;
}

/* The token of a job that spans Slurm nodes (slurm.h): 0, or -1 (said why) to fall back. */
static int slurm_token(launch_state *st) {
  char err[512];
  if (dtr__slurm_token(st->slurm.job_id, st->token, st->secret_path, sizeof st->secret_path, err,
                       sizeof err) != DTR_OK) {
    DTR_WARN("cannot derive the job token from a secret: %s", err);
    return -1;
  }
  st->secret_token = 1;
  DTR_DEBUG("job token: from %s and Slurm job %s", st->secret_path, st->slurm.job_id);
  return 0;
}

/* The run id (--rdzv-id; random for one node, "none" for several) and the job token (DTRAIN_JOB_TOKEN;
 * random for one node; for several, inside Slurm derived from the user's secret and the job id, else
 * from the run id). Returns 0, or 2 for a token too long. */
static int choose_run_id_and_token(launch_state *st) {
  const dtr_launch_args *args = &st->args;
  if (args->rdzv_id[0]) {
    snprintf(st->run_id, sizeof st->run_id, "%s", args->rdzv_id);
  } else if (st->standalone) {
    unsigned char r[4];
    char h[9];
    dtr__random_bytes(r, sizeof r);
    dtr__hex(r, sizeof r, h);
    snprintf(st->run_id, sizeof st->run_id, "dtr-%s", h);
  } else {
    strcpy(st->run_id, "none");
  }
  const char *env_token = dtr__param_str("DTRAIN_JOB_TOKEN", NULL);
  if (env_token) {
    if (strlen(env_token) > DTR_STORE_MAX_TOKEN) {
      fprintf(stderr, CTX "DTRAIN_JOB_TOKEN is longer than %d bytes\n", DTR_STORE_MAX_TOKEN);
      return 2;
    }
    strcpy(st->token, env_token);
  } else if (st->standalone) {
    unsigned char r[32];
    dtr__random_bytes(r, sizeof r);
    dtr__hex(r, sizeof r, st->token);
  } else if (st->slurm.managed && slurm_token(st) == 0) {
    /* a secret only the job's user reads, and the job id */
  } else {
    derive_token(st->run_id, st->token);
    DTR_WARN(
        "DTRAIN_JOB_TOKEN is not set: using a token derived from the run id '%s', which is not secret; set "
        "the same DTRAIN_JOB_TOKEN on every node",
        st->run_id);
  }
  return 0;
}

/* LOG_DIR/RUN_ID (created), the error file and which streams reach the console. Returns 0 or 1. */
static int prepare_output(launch_state *st) {
  const dtr_launch_args *args = &st->args;
  st->log_run_dir[0] = '\0';
  if (args->log_dir[0]) snprintf(st->log_run_dir, sizeof st->log_run_dir, "%s/%s", args->log_dir, st->run_id);
  int efl = 0;
  st->error_file[0] = '\0';
  if (args->error_file[0])
    efl = snprintf(st->error_file, sizeof st->error_file, "%s", args->error_file);
  else if (dtr__param_str("TORCHELASTIC_ERROR_FILE", NULL))
    efl =
        snprintf(st->error_file, sizeof st->error_file, "%s", dtr__param_str("TORCHELASTIC_ERROR_FILE", ""));
  else if (st->log_run_dir[0])
    efl = snprintf(st->error_file, sizeof st->error_file, "%s/error.json", st->log_run_dir);
  if (efl < 0 || efl >= (int)sizeof st->error_file) {
    fprintf(stderr, CTX "the error file path is too long\n");
    return 1;
  }
  if (st->log_run_dir[0] && dtr__mkdir_p(st->log_run_dir, 0777) < 0) {
    fprintf(stderr, CTX "--log-dir: cannot create %s: %s\n", st->log_run_dir, strerror(errno));
    return 1;
  }
  st->console_mask = 3;
  if (args->log_dir[0]) st->console_mask = 3 & ~(args->redirects & ~args->tee);
  return 0;
}

/* The job's signals, blocked in every thread (so before any thread starts) and read from a signalfd by
 * the agent. Returns 0 or 1. */
static int block_signals(launch_state *st) {
  sigset_t set;
  sigemptyset(&set);
  int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&set, sigs[i]);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  st->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (st->sigfd < 0) {
    fprintf(stderr, CTX "signalfd: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}

static void say_token_refused(const launch_state *st) {
  if (st->secret_token)
    fprintf(
        stderr,
        CTX
        "the dtrain store at %s refused this job's token, which comes from the Slurm job id and the secret "
        "file %s: every node must read the same file (a shared home), or export the same DTRAIN_JOB_TOKEN "
        "to every node (in the job script)\n",
        st->desc, st->secret_path);
  else
    fprintf(stderr,
            CTX
            "the dtrain store at %s refused this job's token (set the same DTRAIN_JOB_TOKEN on every node "
            "and for `dtrain store`)\n",
            st->desc);
}

/* Host the store (standalone, or when its host is this machine and the port is free) or reach it, then
 * open the second connection the agent's event listener uses. Returns 0, 1, or 128+signal when TERM, INT, HUP
 * or QUIT ended the wait. */
static int open_store(launch_state *st) {
  char serr[512] = "";
  int sig = 0;
  dtr_result rc;
  int64_t rdzv_ms = (int64_t)(st->args.rdzv_timeout * 1000);
  if (st->standalone || dtr__host_is_local(st->host)) {
    rc = dtr_store_server_create(st->host, st->standalone ? 0 : st->port, st->token, &st->server, serr,
                                 sizeof serr);
    if (rc == DTR_OK) rc = dtr_store_server_start(st->server);
    if (rc == DTR_OK) {
      st->hosting = 1;
      if (st->standalone) {
        st->port = dtr_store_server_port(st->server);
        snprintf(st->desc, sizeof st->desc, "%s:%d", st->host, st->port);
      }
    } else if (rc == DTR_ERR_ADDRINUSE && !st->standalone) {
      dtr_store_server_destroy(st->server);
      st->server = NULL;
      /* taken: maybe by `dtrain store` or the agent of another node of this job */
      int probe_ms = rdzv_ms < 5000 ? (int)rdzv_ms : 5000;
      rc = connect_sliced(st->host, st->port, st->token, probe_ms, st->sigfd, &sig, &st->main_store, serr,
                          sizeof serr);
      if (rc == DTR_ERR_ABORTED) goto interrupted;
      if (rc == DTR_ERR_AUTH) {
        say_token_refused(st);
        return 1;
      }
      if (rc != DTR_OK) {
        fprintf(stderr, CTX "%s is taken by something that is not this job's dtrain store (%s)\n", st->desc,
                serr[0] ? serr : dtr_strerror(rc));
        return 1;
      }
    } else {
      fprintf(stderr, CTX "cannot host the rendezvous store at %s: %s\n", st->desc,
              serr[0] ? serr : dtr_strerror(rc));
      return 1;
    }
  }
  if (!st->main_store) {
    rc = connect_sliced(st->host, st->port, st->token, st->hosting ? 10000 : rdzv_ms, st->sigfd, &sig,
                        &st->main_store, serr, sizeof serr);
    if (rc == DTR_ERR_ABORTED) goto interrupted;
    if (rc == DTR_ERR_AUTH) {
      say_token_refused(st);
      return 1;
    }
    if (rc == DTR_ERR_PROTOCOL) {
      fprintf(stderr, CTX "%s is not a dtrain store (%s)\n", st->desc, serr[0] ? serr : dtr_strerror(rc));
      return 1;
    }
    if (rc != DTR_OK) {
      fprintf(stderr, CTX "cannot reach the rendezvous store at %s within %g s (%s)\n", st->desc,
              st->args.rdzv_timeout, serr[0] ? serr : dtr_strerror(rc));
      return 1;
    }
  }
  rc = dtr_store_connect(st->host, st->port, st->token, 10000, &st->listener_store, serr, sizeof serr);
  if (rc != DTR_OK) {
    fprintf(stderr, CTX "cannot open a second connection to the store at %s: %s\n", st->desc, serr);
    return 1;
  }
  return 0;

interrupted:
  fprintf(stderr, CTX "got SIG%s while connecting to the rendezvous store at %s; giving up\n",
          sigabbrev_np(sig), st->desc);
  return 128 + sig;
}

/* The workers' stop file lives in a directory of the agent's own (it creates the file on a stop request).
 * In the script of a Slurm batch job, dtrain also stops (SIGTERM: save and exit) when that script ends: a
 * script killed by a signal it does not trap would otherwise leave the job's processes running after
 * Slurm ended the job. Returns 0 or 1. */
static int prepare_stop(launch_state *st) {
  const char *tmp = dtr__param_str("TMPDIR", "/tmp");
  snprintf(st->stop_dir, sizeof st->stop_dir, "%s/dtrain-stop-XXXXXX", tmp);
  if (!mkdtemp(st->stop_dir)) {
    fprintf(stderr, CTX "cannot create a directory for the stop file in %s: %s\n", tmp, strerror(errno));
    st->stop_dir[0] = '\0';
    return 1;
  }
  snprintf(st->stop_file, sizeof st->stop_file, "%s/stop", st->stop_dir);
  if (st->slurm.batch && !st->slurm.in_step) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != st->parent) raise(SIGTERM); /* it went before the line above: blocked, read later */
  }
  return 0;
}

static void remove_stop_dir(launch_state *st) {
  if (!st->stop_dir[0]) return;
  unlink(st->stop_file);
  rmdir(st->stop_dir);
}

/* After a stop request: what Slurm should do with the job (slurm.h), and a word when the batch script
 * that started dtrain is gone. Returns the exit code. */
static int after_stop(launch_state *st, int code) {
  if (code == DTR_EXIT_STOPPED_TERM && st->slurm.batch && !st->slurm.in_step && getppid() != st->parent)
    DTR_WARN(
        "the batch script (pid %d) that started dtrain is gone, so Slurm ended the job: dtrain stopped and "
        "saved. Start dtrain with `exec` in the script (or trap the signal), so that the job's signal "
        "reaches dtrain and not the shell",
        (int)st->parent);
  /* one process acts for the job: SLURM_PROCID 0 (the first node's task; the batch script itself) */
  return dtr__slurm_after_stop(&st->slurm, code, st->args.max_requeues, st->slurm.procid == 0);
}

/* The orphan guard, started before any thread exists (it forks). Returns 0 or 1. */
static int start_orphan_guard(launch_state *st) {
  if (dtr__orphan_guard_start(&st->guard) != DTR_OK) {
    fprintf(stderr, CTX "cannot start the orphan guard process: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}

static int run_agent(launch_state *st) {
  dtr__agent_cfg cfg = {
      .args = &st->args,
      .exe_path = st->exe,
      .argv = st->prog_argv,
      .run_id = st->run_id,
      .token = st->token,
      .store_host = st->host,
      .store_port = st->port,
      .store_desc = st->desc,
      .error_file = st->error_file,
      .log_run_dir = st->log_run_dir,
      .console_mask = st->console_mask,
      .hosting = st->hosting,
      .sigfd = st->sigfd,
      .main_store = st->main_store,
      .listener_store = st->listener_store,
      .server = st->hosting ? st->server : NULL,
      .orphan_guard = &st->guard,
      .stop_file = st->stop_file,
      .term_stops = st->slurm.managed,
  };
  return dtr__agent_run(&cfg);
}

/* --dry-run: what would start, after the checks that need no network. */
static int dry_run(const launch_state *st) {
  const dtr_launch_args *a = &st->args;
  char nodes[64];
  if (a->nnodes_min == a->nnodes_max)
    snprintf(nodes, sizeof nodes, "%d node%s", a->nnodes_max, a->nnodes_max == 1 ? "" : "s");
  else
    snprintf(nodes, sizeof nodes, "%d to %d nodes", a->nnodes_min, a->nnodes_max);
  char rank[64] = "node rank 0";
  if (a->node_rank >= 0)
    snprintf(rank, sizeof rank, "node rank %d", a->node_rank);
  else if (!st->standalone)
    snprintf(rank, sizeof rank, "node rank from the rendezvous");
  printf("# dtrain launch would start %d rank%s on this node (%s), max restarts %d; rendezvous: ",
         a->nproc_per_node, a->nproc_per_node == 1 ? "" : "s", rank, a->max_restarts);
  if (st->standalone)
    printf("a private store on 127.0.0.1 (standalone)\n");
  else
    printf("the store at %s, job id '%s'\n", st->desc, a->rdzv_id[0] ? a->rdzv_id : "none");
  printf("# %s, every rank runs:", nodes);
  for (int i = 0; st->prog_argv[i]; i++) {
    fputc(' ', stdout);
    dtr__shell_quote(stdout, i == 0 ? st->exe : st->prog_argv[i]);
  }
  fputc('\n', stdout);
  return fflush(stdout) == 0 ? 0 : 1;
}

int dtr__cmd_launch(int argc, char **argv) {
  launch_state st;
  char err[1024];
  memset(&st, 0, sizeof st);
  st.parent = getppid();
  st.sigfd = -1;
  st.guard.fd = -1;
  st.guard.pid = -1;

  if (dtr__launch_args_parse(argc, argv, &st.args, err, sizeof err) != DTR_OK) return usage_error(err);
  if (st.args.help) {
    dtr__launch_usage(stdout);
    return 0;
  }
  if (st.args.warned_standalone_endpoint) DTR_WARN("--standalone ignores --rdzv-endpoint");

  /* each step prints its own message and returns the exit code when it fails */
  int code = find_program(&st);
  if (!code) code = slurm_shape(&st);
  if (!code) code = store_address(&st);
  if (!code && st.args.dry_run) {
    code = dry_run(&st);
    free(st.prog_argv);
    return code;
  }
  if (!code) code = choose_run_id_and_token(&st);
  if (!code) code = prepare_output(&st);
  if (!code) code = block_signals(&st);
  if (!code) code = prepare_stop(&st);
  if (!code) code = start_orphan_guard(&st);
  if (!code) code = open_store(&st);
  if (!code) code = run_agent(&st);

  dtr_store_close(st.listener_store);
  dtr_store_close(st.main_store);
  dtr_store_server_destroy(st.server);
  dtr__orphan_guard_stop(&st.guard);
  remove_stop_dir(&st);
  /* last: a requeue ends this Slurm job, and this process with it */
  if (code == DTR_EXIT_PREEMPTED || code == DTR_EXIT_STOPPED_TERM) code = after_stop(&st, code);
  if (st.sigfd >= 0) close(st.sigfd);
  free(st.prog_argv);
  return code;
}
