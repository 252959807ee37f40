/* The recipe's slurm: section, checked before `dtrain sbatch` writes a job script from it: Slurm's own
 * formats (time, memory), values that become #SBATCH lines (no line breaks, options that look like
 * options), and the lead time of the preemption signal against the time limit. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/train/recipe_internal.h"

/* A run of 1-9 digits at *p (advanced past it) into *v; 0 when there is none. */
static int digits(const char **p, long long *v) {
  const char *s = *p;
  int n = 0;
  *v = 0;
  while (isdigit((unsigned char)*s) && n < 9) *v = *v * 10 + (*s++ - '0'), n++;
  if (n == 0 || isdigit((unsigned char)*s)) return 0;
  *p = s;
  return 1;
}

long long dtr__slurm_time_seconds(const char *t) {
  if (!strcmp(t, "UNLIMITED") || !strcmp(t, "INFINITE") || !strcmp(t, "unlimited") || !strcmp(t, "infinite"))
    return 0;
  long long f[4], days = -1;
  int n = 0;
  const char *p = t;
  if (!digits(&p, &f[0])) return -1;
  if (*p == '-') { /* days-hours[:minutes[:seconds]] */
    days = f[0];
    p++;
    if (!digits(&p, &f[0])) return -1;
  }
  n = 1;
  while (*p == ':' && n < 3) {
    p++;
    if (!digits(&p, &f[n++])) return -1;
  }
  if (*p) return -1;
  if (days >= 0) { /* D-H, D-H:M, D-H:M:S */
    long long h = f[0], m = n > 1 ? f[1] : 0, s = n > 2 ? f[2] : 0;
    return ((days * 24 + h) * 60 + m) * 60 + s;
  }
  if (n == 1) return f[0] * 60;          /* minutes */
  if (n == 2) return f[0] * 60 + f[1];   /* minutes:seconds */
  return (f[0] * 60 + f[1]) * 60 + f[2]; /* hours:minutes:seconds */
}

static int K(const char *name) {
  return dtr__recipe_key_find("slurm", name);
}

/* A value that goes into one #SBATCH line: printable, without blanks. */
static int one_word(const char *s) {
  for (; *s; s++)
    if (!isgraph((unsigned char)*s)) return 0;
  return 1;
}

int dtr__recipe_check_slurm(const dtr_recipe *r, int *k2, char *msg, size_t cap) {
  *k2 = -1;
  const int nn = dtr__recipe_key_find("launch", "nnodes");
  if (r->slurm.nodes < 0 || r->slurm.nodes > 65536) {
    snprintf(msg, cap, "slurm.nodes: %d is not between 0 (launch.nnodes) and 65536", r->slurm.nodes);
    return K("nodes");
  }
  if (r->slurm.nodes > 0 && r->launch.nnodes_max > 1 &&
      (r->slurm.nodes < r->launch.nnodes_min || r->slurm.nodes > r->launch.nnodes_max)) {
    snprintf(msg, cap,
             "slurm.nodes: %d nodes, but launch.nnodes asks for %d:%d (leave slurm.nodes at 0 to take it)",
             r->slurm.nodes, r->launch.nnodes_min, r->launch.nnodes_max);
    *k2 = nn;
    return K("nodes");
  }
  static const char *const counts[] = {"gpus_per_node", "cpus_per_node", "max_requeues"};
  const int cv[] = {r->slurm.gpus_per_node, r->slurm.cpus_per_node, r->slurm.max_requeues};
  for (int i = 0; i < 3; i++)
    if (cv[i] < 0 || cv[i] > 1000000) {
      snprintf(msg, cap, "slurm.%s: %d is not between 0 and 1000000", counts[i], cv[i]);
      return K(counts[i]);
    }
  if (r->slurm.signal_lead < 0 || r->slurm.signal_lead > 65535) {
    snprintf(msg, cap, "slurm.signal_lead: %d is not between 0 and 65535 seconds (Slurm's limit)",
             r->slurm.signal_lead);
    return K("signal_lead");
  }
  long long secs = 0;
  if (r->slurm.time[0] && (secs = dtr__slurm_time_seconds(r->slurm.time)) < 0) {
    snprintf(msg, cap,
             "slurm.time: '%s' is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or "
             "UNLIMITED)",
             r->slurm.time);
    return K("time");
  }
  if (secs > 0 && r->slurm.signal_lead >= secs) {
    snprintf(msg, cap,
             "slurm.signal_lead: %d s before the end is not within slurm.time %s (%lld s): the job would be "
             "preempted as it starts",
             r->slurm.signal_lead, r->slurm.time, secs);
    *k2 = K("time");
    return K("signal_lead");
  }
  if (r->slurm.mem[0]) {
    const char *p = r->slurm.mem;
    long long v;
    if (!digits(&p, &v) || (*p && (strchr("KMGTkmgt", *p) == NULL || p[1]))) {
      snprintf(msg, cap, "slurm.mem: '%s' is not a Slurm memory size (a number of MB, or with K, M, G or T)",
               r->slurm.mem);
      return K("mem");
    }
  }
  static const char *const words[] = {"partition", "account", "qos", "constraint", "output"};
  const char *wv[] = {r->slurm.partition, r->slurm.account, r->slurm.qos, r->slurm.constraint,
                      r->slurm.output};
  for (int i = 0; i < 5; i++)
    if (!one_word(wv[i])) {
      snprintf(msg, cap, "slurm.%s: '%s' holds a blank or a control character", words[i], wv[i]);
      return K(words[i]);
    }
  /* extra: options, each one #SBATCH line */
  char buf[DTR_RECIPE_STR];
  snprintf(buf, sizeof buf, "%s", r->slurm.extra);
  for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
    if (w[0] != '-' || !one_word(w)) {
      snprintf(msg, cap,
               "slurm.extra: '%s' is not an sbatch option (options start with '-', e.g. --exclusive)", w);
      return K("extra");
    }
  }
  return -1;
}
