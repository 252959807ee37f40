/* `dtrain store`: run the rendezvous store alone, in the foreground, until SIGTERM or SIGINT.
 * The loop runs on the server's own thread while this one sleeps in sigwait, so stopping needs no
 * signal handler and no global state. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/param.h"
#include "dtrain/store.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
  fputs(
      "usage: dtrain store [--host H] [--port P] [--token-file F] [--dry-run]\n"
      "\n"
      "Run a standalone rendezvous store in the foreground until SIGTERM or SIGINT.\n"
      "\n"
      "Options:\n"
      "  --host H        address to listen on (default 0.0.0.0: every IPv4 address)\n"
      "  --port P        TCP port (default 29400; 0 lets the kernel pick, printed on start)\n"
      "  --token-file F  read the job token from F (first line); else DTRAIN_JOB_TOKEN\n"
      "  --dry-run       check the flags and the token, say where it would listen; start nothing\n"
      "  -h, --help      this text\n"
      "\n"
      "Clients must present the same token (DTRAIN_JOB_TOKEN). Workers find the store through\n"
      "DTRAIN_STORE=HOST:PORT.\n",
      f);
}

typedef struct store_args {
  const char *host, *port, *token_file;
  int dry_run;
} store_args;

/* Parse flags in "--flag value" or "--flag=value" form. Returns -1 after --help, 0 on success,
 * 2 (the usage exit code) on a bad flag. */
static int parse_args(int argc, char **argv, store_args *a) {
  static const char *names[] = {"--host", "--port", "--token-file"};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      usage(stdout);
      return -1;
    }
    if (strcmp(arg, "--dry-run") == 0) {
      a->dry_run = 1;
      continue;
    }
    int which = -1;
    const char *val = NULL;
    for (int k = 0; k < 3 && which < 0; k++) {
      size_t n = strlen(names[k]);
      if (strncmp(arg, names[k], n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
        which = k;
        val = arg[n] == '=' ? arg + n + 1 : NULL;
      }
    }
    if (which < 0) {
      fprintf(stderr, "dtrain store: unknown flag '%s' (try 'dtrain store --help')\n", arg);
      return 2;
    }
    if (!val) {
      if (i + 1 >= argc) {
        fprintf(stderr, "dtrain store: %s needs a value\n", names[which]);
        return 2;
      }
      val = argv[++i];
    }
    if (which == 0) a->host = val;
    if (which == 1) a->port = val;
    if (which == 2) a->token_file = val;
  }
  return 0;
}

/* The token from --token-file (its first line, trailing whitespace dropped) or DTRAIN_JOB_TOKEN. */
static int read_token(const store_args *a, char *tok, size_t cap) {
  if (a->token_file) {
    FILE *f = fopen(a->token_file, "r");
    if (!f) {
      fprintf(stderr, "dtrain store: cannot read token file '%s': %s\n", a->token_file, strerror(errno));
      return 1;
    }
    char line[DTR_STORE_MAX_TOKEN + 8];
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = ok ? strlen(line) : 0;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
      line[--n] = '\0';
    if (n == 0 || n > DTR_STORE_MAX_TOKEN) {
      fprintf(stderr, "dtrain store: token file '%s' must hold a token of 1 to %d bytes on its first line\n",
              a->token_file, DTR_STORE_MAX_TOKEN);
      return 1;
    }
    snprintf(tok, cap, "%s", line);
    return 0;
  }
  const char *env = dtr__param_str("DTRAIN_JOB_TOKEN", NULL);
  if (!env) {
    fprintf(stderr, "dtrain store: no job token: pass --token-file F or set DTRAIN_JOB_TOKEN\n");
    return 1;
  }
  if (strlen(env) > DTR_STORE_MAX_TOKEN) {
    fprintf(stderr, "dtrain store: DTRAIN_JOB_TOKEN is longer than %d bytes\n", DTR_STORE_MAX_TOKEN);
    return 1;
  }
  snprintf(tok, cap, "%s", env);
  return 0;
}

int dtr__cmd_store(int argc, char **argv) {
  store_args a = {.host = "0.0.0.0", .port = "29400"};
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc < 0 ? 0 : rc;
  char *end;
  errno = 0;
  long port = strtol(a.port, &end, 10);
  if (errno || *end || !*a.port || port < 0 || port > 65535) {
    fprintf(stderr, "dtrain store: --port '%s' is not a port number (0-65535)\n", a.port);
    return 2;
  }
  char token[DTR_STORE_MAX_TOKEN + 1];
  if (read_token(&a, token, sizeof token)) return 1;
  if (a.dry_run) {
    memset(token, 0, sizeof token);
    printf("# dtrain store would listen on %s:%ld (the job token from %s)\n", a.host, port,
           a.token_file ? a.token_file : "DTRAIN_JOB_TOKEN");
    return fflush(stdout) == 0 ? 0 : 1;
  }

  /* Block the stop signals before the loop thread exists so it inherits the mask and only this
   * thread, in sigwait, ever receives them. */
  sigset_t stop_set, old;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_set, &old);

  dtr_store_server *s = NULL;
  char err[256];
  rc = 1;
  if (dtr_store_server_create(a.host, (int)port, token, &s, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "dtrain store: %s\n", err);
    goto done;
  }
  if (dtr_store_server_start(s) != DTR_OK) {
    fprintf(stderr, "dtrain store: cannot start the event loop thread\n");
    goto done;
  }
  fprintf(stderr, "dtrain store: listening on %s:%d\n", a.host, dtr_store_server_port(s));
  int sig = 0;
  for (int guard = 0; guard < 1000000; guard++)
    if (sigwait(&stop_set, &sig) == 0) break;
  dtr_store_server_stats st;
  dtr_store_server_get_stats(s, &st);
  DTR_INFO(
      "store: stopping on signal %d after %llu connections (%llu refused, %llu bad messages), %llu requests",
      sig, (unsigned long long)st.accepted, (unsigned long long)st.auth_refused,
      (unsigned long long)st.protocol_errors, (unsigned long long)st.requests);
  rc = 0;
done:
  dtr_store_server_destroy(s);
  memset(token, 0, sizeof token);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}
