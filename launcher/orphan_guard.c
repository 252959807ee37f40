/* Orphan guard process: see orphan_guard.h. The child side only uses read(), kill() and _exit(); it never
 * returns into the agent's code. */
#define _GNU_SOURCE
#include "launcher/orphan_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

#define MAX_GROUPS 65536

static void guard_main(int rfd) {
  static pid_t groups[MAX_GROUPS];
  int ngroups = 0;
  setsid();
  static const int ignored[] = {SIGTERM, SIGINT,  SIGHUP,  SIGQUIT, SIGUSR1,
                                SIGUSR2, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU};
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) signal(ignored[i], SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  prctl(PR_SET_NAME, "dtrain-guard");
  /* keep nothing of the agent's open: a console pipe held here would keep a reader waiting */
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
  }
  long maxfd = sysconf(_SC_OPEN_MAX);
  if (maxfd < 0 || maxfd > 65536) maxfd = 65536;
  for (int fd = 3; fd < maxfd; fd++)
    if (fd != rfd) close(fd);

  char buf[4096], line[32];
  size_t ll = 0;
  for (;;) {
    ssize_t n = read(rfd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; i++) {
      char c = buf[i];
      if (c != '\n') {
        if (ll + 1 < sizeof line) line[ll++] = c;
        continue;
      }
      line[ll] = '\0';
      ll = 0;
      long pg = strtol(line + 1, NULL, 10);
      if (pg <= 1) continue;
      if (line[0] == '+' && ngroups < MAX_GROUPS) {
        groups[ngroups++] = (pid_t)pg;
      } else if (line[0] == '-') {
        for (int k = 0; k < ngroups; k++)
          if (groups[k] == (pid_t)pg) {
            groups[k] = groups[--ngroups];
            break;
          }
      }
    }
  }
  for (int k = 0; k < ngroups; k++) kill(-groups[k], SIGKILL);
  _exit(0);
}

dtr_result dtr__orphan_guard_start(dtr__orphan_guard *g) {
  g->fd = -1;
  g->pid = -1;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return DTR_ERR_SYSTEM;
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return DTR_ERR_SYSTEM;
  }
  if (pid == 0) {
    close(p[1]);
    guard_main(p[0]);
  }
  close(p[0]);
  g->fd = p[1];
  g->pid = pid;
  return DTR_OK;
}

static void send_line(dtr__orphan_guard *g, char sign, pid_t pgid) {
  if (g->fd < 0) return;
  char line[32];
  int n = snprintf(line, sizeof line, "%c%d\n", sign, (int)pgid);
  ssize_t r;
  do r = write(g->fd, line, (size_t)n);
  while (r < 0 && errno == EINTR);
}

void dtr__orphan_guard_add(dtr__orphan_guard *g, pid_t pgid) {
  send_line(g, '+', pgid);
}
void dtr__orphan_guard_remove(dtr__orphan_guard *g, pid_t pgid) {
  send_line(g, '-', pgid);
}

void dtr__orphan_guard_stop(dtr__orphan_guard *g) {
  if (g->fd >= 0) close(g->fd);
  g->fd = -1;
  if (g->pid > 0) {
    int st;
    while (waitpid(g->pid, &st, 0) < 0 && errno == EINTR) {
    }
  }
  g->pid = -1;
}
