/* Slurm integration (see slurm.h): reading a job's environment, the launch it implies, the job token,
 * and requeueing a job that stopped on request. */
#define _GNU_SOURCE
#include "launcher/slurm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/param.h"
#include "common/path_search.h"
#include "common/sha256.h"
#include "common/sock.h"
#include "common/strbuf.h"

extern char **environ;

static int is_number(const char *v) {
  if (!v || !*v) return 0;
  for (const char *p = v; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  return strlen(v) < 19;
}

static const char *first_of(char *const *envp, const char *a, const char *b, const char **which) {
  const char *v = dtr__param_env(envp, a);
  *which = a;
  if (!v && b) {
    v = dtr__param_env(envp, b);
    *which = b;
  }
  return v;
}

dtr_result dtr__slurm_read(char *const *envp, dtr__slurm *s, char *err, size_t cap) {
  memset(s, 0, sizeof *s);
  s->step_nodes = s->alloc_nodes = s->tasks_on_node = 1;
  const char *var;
  const char *job = first_of(envp, "SLURM_JOB_ID", "SLURM_JOBID", &var);
  if (!job) return DTR_OK;
  if (!is_number(job))
    return dtr__fail(err, cap, DTR_ERR_INVALID, "Slurm environment: %s='%.64s' is not a job id", var, job);
  s->in_job = 1;
  snprintf(s->job_id, sizeof s->job_id, "%s", job);
  s->in_step = is_number(first_of(envp, "SLURM_STEP_ID", "SLURM_STEPID", &var));
  const char *name = dtr__param_env(envp, "SLURM_JOB_NAME");
  snprintf(s->job_name, sizeof s->job_name, "%s", name ? name : "");
  s->interactive = !strcmp(s->job_name, "interactive") || !strcmp(s->job_name, "bash");
  const char *env = dtr__param_env(envp, "ENVIRONMENT"); /* "BATCH" in a batch job and its steps */
  s->batch = !s->interactive && env && !strcmp(env, "BATCH");
  s->managed = s->in_step || s->batch;

  const char *aj = dtr__param_env(envp, "SLURM_ARRAY_JOB_ID"),
             *at = dtr__param_env(envp, "SLURM_ARRAY_TASK_ID");
  if (is_number(aj) && is_number(at))
    snprintf(s->requeue_id, sizeof s->requeue_id, "%s_%s", aj, at);
  else
    snprintf(s->requeue_id, sizeof s->requeue_id, "%s", s->job_id);

  const char *nn = dtr__param_env(envp, "SLURM_JOB_NUM_NODES") ? "SLURM_JOB_NUM_NODES" : "SLURM_NNODES";
  DTR_CHECK(dtr__param_env_int(envp, nn, 1, 1 << 20, 1, 1, &s->alloc_nodes, "Slurm", err, cap));
  if (s->in_step) {
    int tasks;
    DTR_CHECK(dtr__param_env_int(envp, "SLURM_STEP_NUM_NODES", 1, 1 << 20, s->alloc_nodes, 1, &s->step_nodes,
                                 "Slurm", err, cap));
    DTR_CHECK(dtr__param_env_int(envp, "SLURM_STEP_NUM_TASKS", 1, INT_MAX, s->step_nodes, 1, &tasks, "Slurm",
                                 err, cap));
    /* several tasks per node: at least one node has more than one (an exact count per node is not needed) */
    s->tasks_on_node = (tasks + s->step_nodes - 1) / s->step_nodes;
  }
  DTR_CHECK(dtr__param_env_int(envp, "SLURM_PROCID", 0, INT_MAX, 0, 1, &s->procid, "Slurm", err, cap));
  DTR_CHECK(dtr__param_env_int(envp, "SLURM_RESTART_COUNT", 0, INT_MAX, 0, 1, &s->restart_count, "Slurm", err,
                               cap));
  DTR_CHECK(
      dtr__param_env_int(envp, "SLURM_CPUS_ON_NODE", 0, INT_MAX, 0, 1, &s->cpus_on_node, "Slurm", err, cap));
  DTR_CHECK(
      dtr__param_env_int(envp, "SLURM_GPUS_ON_NODE", 0, INT_MAX, 0, 1, &s->gpus_on_node, "Slurm", err, cap));

  const char *nl = NULL;
  if (s->in_step) nl = first_of(envp, "SLURM_STEP_NODELIST", NULL, &var);
  if (!nl) nl = first_of(envp, "SLURM_JOB_NODELIST", "SLURM_NODELIST", &var);
  if (nl) {
    int n = 0;
    char e2[300] = "";
    dtr_result rc = dtr_hostlist_expand(nl, NULL, 0, &n, e2, sizeof e2); /* the count */
    char(*names)[256] = rc == DTR_OK && n > 0 ? malloc(sizeof *names * (size_t)n) : NULL;
    if (rc == DTR_OK && !names) return dtr__fail(err, cap, DTR_ERR_NOMEM, "out of memory");
    if (rc == DTR_OK) rc = dtr_hostlist_expand(nl, names, n, &n, e2, sizeof e2);
    if (rc == DTR_OK) snprintf(s->first_host, sizeof s->first_host, "%s", names[0]);
    free(names);
    if (rc != DTR_OK) return dtr__fail(err, cap, DTR_ERR_INVALID, "Slurm environment: %s: %s", var, e2);
  }
  return DTR_OK;
}

int dtr__slurm_port(const char *job_id) {
  unsigned long long id = strtoull(job_id, NULL, 10);
  return DTR_SLURM_PORT_BASE + (int)(id % DTR_SLURM_PORT_SPAN);
}

dtr_result dtr__slurm_launch_shape(const dtr__slurm *s, int nnodes_min, int nnodes_max, dtr__slurm_shape *out,
                                   char *err, size_t cap) {
  memset(out, 0, sizeof *out);
  out->nnodes_min = nnodes_min;
  out->nnodes_max = nnodes_max;
  if (!s->in_job || !s->managed) return DTR_OK;
  if (s->in_step && s->tasks_on_node > 1)
    return dtr__fail(
        err, cap, DTR_ERR_INVALID,
        "this srun step runs %d tasks on a node, but dtrain starts the ranks of its node itself: "
        "run it once per node (srun --ntasks-per-node=1 ...), or use `srun dtrain train` for one "
        "task per rank",
        s->tasks_on_node);
  int nodes = s->in_step ? s->step_nodes : 1;
  if (!s->in_step && s->alloc_nodes > 1) out->unused_nodes = s->alloc_nodes;
  if (nnodes_max == 1) {
    out->nnodes_min = out->nnodes_max = nodes;
  } else if (nodes < nnodes_min || nodes > nnodes_max) {
    if (nnodes_min == nnodes_max)
      return dtr__fail(err, cap, DTR_ERR_INVALID,
                       "the job asks for %d nodes (--nnodes, launch.nnodes), but this Slurm %s has %d: "
                       "give the same count to both (or leave the nodes to Slurm)",
                       nnodes_max, s->in_step ? "step" : "batch script", nodes);
    return dtr__fail(err, cap, DTR_ERR_INVALID,
                     "the job asks for %d:%d nodes (--nnodes, launch.nnodes), but this Slurm %s has %d",
                     nnodes_min, nnodes_max, s->in_step ? "step" : "batch script", nodes);
  }
  if (out->nnodes_max > 1) {
    if (!s->first_host[0])
      return dtr__fail(
          err, cap, DTR_ERR_INVALID,
          "Slurm environment: no node list (SLURM_STEP_NODELIST, SLURM_JOB_NODELIST) to find the "
          "rendezvous node in; give --rdzv-endpoint");
    out->spans_nodes = 1;
    snprintf(out->endpoint, sizeof out->endpoint, strchr(s->first_host, ':') ? "[%s]:%d" : "%s:%d",
             s->first_host, dtr__slurm_port(s->job_id));
    snprintf(out->id, sizeof out->id, "%s", s->job_id);
  }
  return DTR_OK;
}

/* Create the secret file when it does not exist: a new file linked into place, so that two nodes that
 * start at once on a shared home agree on one secret (link fails on the second, which reads the first's). */
static dtr_result create_secret(const char *path, char *err, size_t cap) {
  char dir[PATH_MAX], tmp[PATH_MAX + 64];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (dtr__mkdir_p(dir, 0700) < 0)
      return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create %s for the job secret: %s", dir,
                       strerror(errno));
  }
  unsigned char r[32];
  char line[2 * sizeof r + 2];
  dtr__random_bytes(r, sizeof r);
  dtr__hex(r, sizeof r, line);
  strcat(line, "\n");
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create %s: %s", tmp, strerror(errno));
  int bad = dtr__write_all(fd, line, strlen(line)) != 0 || fsync(fd) != 0;
  close(fd);
  if (!bad && link(tmp, path) != 0 && errno != EEXIST) bad = 1;
  int e = errno;
  unlink(tmp);
  if (bad)
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create the job secret %s: %s", path, strerror(e));
  return DTR_OK;
}

dtr_result dtr__slurm_token(const char *job_id, char out[65], char *path, size_t pcap, char *err,
                            size_t cap) {
  char file[PATH_MAX];
  const char *set = dtr__param_str("DTRAIN_SECRET_FILE", NULL), *home = dtr__param_str("HOME", NULL);
  if (set)
    snprintf(file, sizeof file, "%s", set);
  else if (home)
    snprintf(file, sizeof file, "%s/.dtrain/secret", home);
  else
    return dtr__fail(err, cap, DTR_ERR_NOT_FOUND, "neither DTRAIN_SECRET_FILE nor HOME is set");
  if (path) snprintf(path, pcap, "%s", file);
  int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    DTR_CHECK(create_secret(file, err, cap));
    fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0)
    return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot read the job secret %s: %s", file, strerror(errno));
  struct stat st;
  char buf[256];
  ssize_t n = -1;
  dtr_result rc = DTR_OK;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    rc = dtr__fail(err, cap, DTR_ERR_INVALID, "the job secret %s is not a regular file", file);
  else if (st.st_uid != geteuid() || (st.st_mode & 077))
    rc = dtr__fail(err, cap, DTR_ERR_INVALID,
                   "the job secret %s must belong to this user and be readable by no one else (chmod 600 %s)",
                   file, file);
  else if ((n = read(fd, buf, sizeof buf - 1)) < 16)
    rc = dtr__fail(err, cap, DTR_ERR_INVALID, "the job secret %s holds fewer than 16 bytes", file);
  close(fd);
  if (rc) return rc;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) n--;
  char msg[80];
  int ml = snprintf(msg, sizeof msg, "dtrain-slurm/%s", job_id);
  unsigned char mac[DTR_SHA256_BYTES];
  dtr__hmac_sha256(buf, (size_t)n, msg, (size_t)ml, mac);
  dtr__hex(mac, sizeof mac, out);
  return DTR_OK;
}

int dtr__run_capture(char *const argv[], char *out, size_t cap) {
  char path[PATH_MAX];
  if (cap) out[0] = '\0';
  if (dtr__find_in_path(argv[0], path, sizeof path) != 0) return 127;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  posix_spawnattr_init(&at);
  /* Slurm signals every process of a job it ends, this child too (the time limit's SIGTERM comes more
   * than once): the child keeps the stopping signals blocked, as this process has them, and lives. */
  sigset_t shield, dfl;
  sigemptyset(&shield);
  int shielded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof shielded / sizeof shielded[0]; i++) sigaddset(&shield, shielded[i]);
  sigfillset(&dfl);
  sigdelset(&dfl, SIGKILL);
  sigdelset(&dfl, SIGSTOP);
  posix_spawnattr_setsigmask(&at, &shield);
  posix_spawnattr_setsigdefault(&at, &dfl);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int e = posix_spawn(&pid, path, &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(p[1]);
  if (e != 0) {
    close(p[0]);
    return -1;
  }
  size_t have = 0;
  char sink[4096];
  for (;;) {
    int room = have + 1 < cap;
    ssize_t n = read(p[0], room ? out + have : sink, room ? cap - 1 - have : sizeof sink);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (room) have += (size_t)n;
  }
  if (cap) out[have] = '\0';
  close(p[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* "Reason=TimeLimit" and friends from `scontrol show job -o ID` into reason ("" when it cannot tell). */
static void job_reason(const dtr__slurm *s, char *reason, size_t cap) {
  char out[8192], id[64];
  snprintf(id, sizeof id, "%s", s->job_id);
  char *argv[] = {"scontrol", "show", "job", "-o", id, NULL};
  reason[0] = '\0';
  if (dtr__run_capture(argv, out, sizeof out) != 0) return;
  const char *r = strstr(out, " Reason=");
  if (r) snprintf(reason, cap, "%.*s", (int)strcspn(r + 8, " \n"), r + 8);
}

/* One line, without its newline, for a message. */
static void first_line(char *s) {
  s[strcspn(s, "\n")] = '\0';
}

int dtr__slurm_after_stop(const dtr__slurm *s, int code, int max_requeues, int leader) {
  /* the leader speaks for the job; the others only return the same code (all but after SIGTERM, where
   * only the leader asks Slurm why) */
  if (!s->in_job || !s->batch) {
    if (leader)
      DTR_INFO("stopped on request (exit %d): run the same command again to resume from the checkpoint",
               code);
    return code;
  }
  const char *why = "the preemption signal";
  if (code == DTR_EXIT_STOPPED_TERM) {
    /* SIGTERM comes from scancel, from the end of the time limit or from the batch script's end: only the
     * time limit asks for a requeue, and only Slurm can tell which it was. */
    if (!leader) return code;
    char reason[64];
    job_reason(s, reason, sizeof reason);
    if (strcmp(reason, "TimeLimit") != 0) {
      DTR_INFO("stopped by SIGTERM: Slurm is ending job %s (%s): not requeued", s->job_id,
               reason[0] ? reason : "scancel, or `scontrol show job` could not tell");
      return code;
    }
    why = "the time limit";
  }
  if (s->restart_count >= max_requeues) {
    if (!leader) return DTR_EXIT_REQUEUE_LIMIT;
    DTR_ERROR(
        "stopped by %s, but job %s was requeued %d time%s already (SLURM_RESTART_COUNT=%d; the limit is %d: "
        "slurm.max_requeues, --max-requeues): not requeued; submit it again to resume from the checkpoint",
        why, s->requeue_id, s->restart_count, s->restart_count == 1 ? "" : "s", s->restart_count,
        max_requeues);
    return DTR_EXIT_REQUEUE_LIMIT;
  }
  if (!leader) return DTR_EXIT_PREEMPTED; /* SLURM_PROCID 0 requeues */
  char id[64], out[4096];
  snprintf(id, sizeof id, "%s", s->requeue_id);
  char *argv[] = {"scontrol", "requeue", id, NULL};
  DTR_INFO("stopped by %s: requeueing job %s (requeue %d of %d); it resumes from the checkpoint", why,
           s->requeue_id, s->restart_count + 1, max_requeues);
  int st = dtr__run_capture(argv, out, sizeof out);
  if (st == 0) return DTR_EXIT_PREEMPTED;
  first_line(out);
  if (st == 127)
    DTR_ERROR("scontrol is not on PATH (in a container?): not requeued; would have run: scontrol requeue %s",
              s->requeue_id);
  else if (st < 0)
    DTR_ERROR("cannot start scontrol: not requeued; would have run: scontrol requeue %s", s->requeue_id);
  else
    DTR_ERROR(
        "`scontrol requeue %s` failed with status %d (%s): not requeued; submit the job again to resume",
        s->requeue_id, st, out[0] ? out : "no output");
  return DTR_EXIT_REQUEUE_FAILED;
}
