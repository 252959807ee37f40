/* `dtrain launch`: parse and check everything that can be checked before a process starts (flags, the
 * program), pick the job token, host or reach the rendezvous store, then hand over to the agent. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/param.h"
#include "common/sock.h"
#include "dtrain/store.h"
#include "launcher/agent.h"
#include "launcher/commands.h"
#include "launcher/launch_args.h"
#include "launcher/output.h"
#include "launcher/watchdog.h"
#include "launcher/workers.h"

#define CTX "dtrain launch: "

static void hex(const unsigned char *b, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
  out[2 * n] = '\0';
}

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
  hex(b, sizeof b, out);
}

typedef struct launch_state {
  dtr_store_server *server;
  dtr_store *main_store, *watch_store;
  dtr__watchdog wd;
  int sigfd;
} launch_state;

/* dtr_store_connect cut into slices of 250 ms, so that TERM/INT/HUP/QUIT (read from the signalfd; they
 * are blocked) end a long wait for an unreachable store. *sig receives the signal (DTR_ERR_ABORTED). */
static dtr_result connect_sliced(const char *host, int port, const char *token, int64_t total_ms, int sigfd,
                                 int *sig, dtr_store **out, char *err, size_t cap) {
  int64_t deadline = dtr__now_ms() + total_ms;
  for (;;) {
    int left = dtr__ms_left(deadline);
    int slice = left > 250 ? 250 : left < 1 ? 1 : left;
    dtr_result rc = dtr_store_connect(host, port, token, slice, out, err, cap);
    if (rc != DTR_ERR_TIMEOUT || dtr__ms_left(deadline) == 0) return rc;
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

int dtr__cmd_launch(int argc, char **argv) {
  dtr_launch_args args;
  char err[1024];
  int code = 1;
  launch_state st;
  memset(&st, 0, sizeof st);
  st.sigfd = -1;
  st.wd.fd = -1;
  st.wd.pid = -1;
  char **prog_argv = NULL;

  if (dtr__launch_args_parse(argc, argv, &args, err, sizeof err) != DTR_OK) return usage_error(err);
  if (args.help) {
    dtr__launch_usage(stdout);
    return 0;
  }
  if (args.warned_standalone_endpoint) DTR_WARN("--standalone ignores --rdzv-endpoint");

  /* ---- the program: found and executable before anything starts */
  const char *python = dtr__param_str("DTRAIN_PYTHON", "python3");
  const char *prog = args.prog_argv[0];
  size_t pl = strlen(prog);
  int use_python = !args.no_python && (args.module || (pl > 3 && strcmp(prog + pl - 3, ".py") == 0));
  char exe[PATH_MAX];
  if (use_python && !args.module && access(prog, F_OK) != 0) {
    fprintf(stderr, CTX "script '%s' does not exist\n", prog);
    return 127;
  }
  dtr_result rc = dtr__find_program(use_python ? python : prog, exe, sizeof exe, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, CTX "%s%s\n", err, use_python ? " (set DTRAIN_PYTHON, or pass --no-python)" : "");
    return rc == DTR_ERR_NOT_FOUND ? 127 : 126;
  }
  int extra = use_python ? (args.module ? 2 : 1) : 0;
  prog_argv = calloc((size_t)(args.prog_argc + extra + 1), sizeof *prog_argv);
  if (!prog_argv) return 1;
  if (use_python) {
    prog_argv[0] = (char *)python;
    if (args.module) prog_argv[1] = "-m";
  }
  for (int i = 0; i < args.prog_argc; i++) prog_argv[extra + i] = args.prog_argv[i];

  /* ---- where the store is */
  int standalone =
      args.standalone || (!args.rdzv_endpoint[0] && !args.master_addr[0] && args.nnodes_max == 1);
  char host[DTR_LAUNCH_MAX_STR];
  int port = 0;
  if (!standalone) {
    if (args.rdzv_endpoint[0]) {
      snprintf(host, sizeof host, "%s", args.rdzv_host);
      port = args.rdzv_port;
    } else if (args.master_addr[0]) {
      snprintf(host, sizeof host, "%s", args.master_addr);
      port = args.master_port > 0 ? args.master_port : DTR_LAUNCH_DEFAULT_RDZV_PORT;
    } else {
      free(prog_argv);
      snprintf(err, sizeof err,
               "--nnodes %d:%d needs --rdzv-endpoint HOST:PORT (or --master-addr) so the nodes "
               "can meet",
               args.nnodes_min, args.nnodes_max);
      return usage_error(err);
    }
  } else {
    strcpy(host, "127.0.0.1");
  }
  char desc[DTR_LAUNCH_MAX_STR + 16];
  snprintf(desc, sizeof desc, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);

  /* ---- run id and token (the token is never printed) */
  char run_id[129];
  if (args.rdzv_id[0]) {
    snprintf(run_id, sizeof run_id, "%s", args.rdzv_id);
  } else if (standalone) {
    unsigned char r[4];
    char h[9];
    dtr__random_bytes(r, sizeof r);
    hex(r, sizeof r, h);
    snprintf(run_id, sizeof run_id, "dtr-%s", h);
  } else {
    strcpy(run_id, "none");
  }
  char token[DTR_STORE_MAX_TOKEN + 1];
  const char *env_token = dtr__param_str("DTRAIN_JOB_TOKEN", NULL);
  if (env_token) {
    if (strlen(env_token) > DTR_STORE_MAX_TOKEN) {
      free(prog_argv);
      fprintf(stderr, CTX "DTRAIN_JOB_TOKEN is longer than %d bytes\n", DTR_STORE_MAX_TOKEN);
      return 2;
    }
    strcpy(token, env_token);
  } else if (standalone) {
    unsigned char r[32];
    dtr__random_bytes(r, sizeof r);
    hex(r, sizeof r, token);
  } else {
    derive_token(run_id, token);
    DTR_WARN(
        "DTRAIN_JOB_TOKEN is not set: using a token derived from the run id '%s', which is not secret; set "
        "the same DTRAIN_JOB_TOKEN on every node",
        run_id);
  }

  /* ---- output and error file */
  char log_run_dir[PATH_MAX] = "";
  if (args.log_dir[0]) snprintf(log_run_dir, sizeof log_run_dir, "%s/%s", args.log_dir, run_id);
  char error_file[PATH_MAX] = "";
  int efl = 0;
  if (args.error_file[0])
    efl = snprintf(error_file, sizeof error_file, "%s", args.error_file);
  else if (dtr__param_str("TORCHELASTIC_ERROR_FILE", NULL))
    efl = snprintf(error_file, sizeof error_file, "%s", dtr__param_str("TORCHELASTIC_ERROR_FILE", ""));
  else if (log_run_dir[0])
    efl = snprintf(error_file, sizeof error_file, "%s/error.json", log_run_dir);
  if (efl < 0 || efl >= (int)sizeof error_file) {
    fprintf(stderr, CTX "the error file path is too long\n");
    goto out;
  }
  if (log_run_dir[0] && dtr__mkdir_p(log_run_dir, 0777) < 0) {
    fprintf(stderr, CTX "--log-dir: cannot create %s: %s\n", log_run_dir, strerror(errno));
    goto out;
  }
  int console_mask = 3;
  if (args.log_dir[0]) console_mask = 3 & ~(args.redirects & ~args.tee);

  /* ---- signals: blocked in every thread, read from a signalfd by the agent */
  sigset_t set;
  sigemptyset(&set);
  int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&set, sigs[i]);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  st.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (st.sigfd < 0) {
    fprintf(stderr, CTX "signalfd: %s\n", strerror(errno));
    goto out;
  }

  /* ---- the orphan guard, before any thread exists */
  if (dtr__watchdog_start(&st.wd) != DTR_OK) {
    fprintf(stderr, CTX "cannot start the watchdog process: %s\n", strerror(errno));
    goto out;
  }

  /* ---- host or reach the store */
  int hosting = 0, sig = 0;
  char serr[512] = "";
  int64_t rdzv_ms = (int64_t)(args.rdzv_timeout * 1000);
  if (standalone || dtr__host_is_local(host)) {
    rc = dtr_store_server_create(host, standalone ? 0 : port, token, &st.server, serr, sizeof serr);
    if (rc == DTR_OK) rc = dtr_store_server_start(st.server);
    if (rc == DTR_OK) {
      hosting = 1;
      if (standalone) {
        port = dtr_store_server_port(st.server);
        snprintf(desc, sizeof desc, "%s:%d", host, port);
      }
    } else if (rc == DTR_ERR_ADDRINUSE && !standalone) {
      dtr_store_server_destroy(st.server);
      st.server = NULL;
      /* taken: maybe by `dtrain store` or the agent of another node of this job */
      int probe_ms = rdzv_ms < 5000 ? (int)rdzv_ms : 5000;
      rc = connect_sliced(host, port, token, probe_ms, st.sigfd, &sig, &st.main_store, serr, sizeof serr);
      if (rc == DTR_ERR_ABORTED) goto interrupted;
      if (rc == DTR_ERR_AUTH) {
        fprintf(stderr,
                CTX
                "the dtrain store at %s refused this job's token (set the same DTRAIN_JOB_TOKEN on "
                "every node and for `dtrain store`)\n",
                desc);
        goto out;
      }
      if (rc != DTR_OK) {
        fprintf(stderr, CTX "%s is taken by something that is not this job's dtrain store (%s)\n", desc,
                serr[0] ? serr : dtr_strerror(rc));
        goto out;
      }
    } else {
      fprintf(stderr, CTX "cannot host the rendezvous store at %s: %s\n", desc,
              serr[0] ? serr : dtr_strerror(rc));
      goto out;
    }
  }
  if (!st.main_store) {
    rc = connect_sliced(host, port, token, hosting ? 10000 : rdzv_ms, st.sigfd, &sig, &st.main_store, serr,
                        sizeof serr);
    if (rc == DTR_ERR_ABORTED) goto interrupted;
    if (rc == DTR_ERR_AUTH) {
      fprintf(stderr,
              CTX
              "the dtrain store at %s refused this job's token (set the same DTRAIN_JOB_TOKEN on every "
              "node and for `dtrain store`)\n",
              desc);
      goto out;
    }
    if (rc == DTR_ERR_PROTOCOL) {
      fprintf(stderr, CTX "%s is not a dtrain store (%s)\n", desc, serr[0] ? serr : dtr_strerror(rc));
      goto out;
    }
    if (rc != DTR_OK) {
      fprintf(stderr, CTX "cannot reach the rendezvous store at %s within %g s (%s)\n", desc,
              args.rdzv_timeout, serr[0] ? serr : dtr_strerror(rc));
      goto out;
    }
  }
  rc = dtr_store_connect(host, port, token, 10000, &st.watch_store, serr, sizeof serr);
  if (rc != DTR_OK) {
    fprintf(stderr, CTX "cannot open a second connection to the store at %s: %s\n", desc, serr);
    goto out;
  }

  dtr__agent_cfg cfg = {
      .args = &args,
      .exe_path = exe,
      .argv = prog_argv,
      .run_id = run_id,
      .token = token,
      .store_host = host,
      .store_port = port,
      .store_desc = desc,
      .error_file = error_file,
      .log_run_dir = log_run_dir,
      .console_mask = console_mask,
      .hosting = hosting,
      .sigfd = st.sigfd,
      .main_store = st.main_store,
      .watch_store = st.watch_store,
      .watchdog = &st.wd,
  };
  code = dtr__agent_run(&cfg);
  goto out;

interrupted:
  fprintf(stderr, CTX "got SIG%s while connecting to the rendezvous store at %s; giving up\n",
          sigabbrev_np(sig), desc);
  code = 128 + sig;

out:
  dtr_store_close(st.watch_store);
  dtr_store_close(st.main_store);
  dtr_store_server_destroy(st.server);
  dtr__watchdog_stop(&st.wd);
  if (st.sigfd >= 0) close(st.sigfd);
  free(prog_argv);
  return code;
}
