/* `dtrain launch` flag parsing: torchrun's spellings, N and MIN:MAX, and error messages that name the
 * flag and the bad value. */
// ctest-labels: launch
#define _GNU_SOURCE
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/launch_args.h"
#include "tests/unit/test_util.h"

static char errbuf[1024];

/* Parse a NULL-terminated list of words (argv[0] = "launch" is added). */
static dtr_result parse(dtr_launch_args *a, const char *first, ...) {
  static char *argv[64];
  int argc = 0;
  argv[argc++] = "launch";
  va_list ap;
  va_start(ap, first);
  for (const char *w = first; w && argc < 63; w = va_arg(ap, const char *)) argv[argc++] = (char *)w;
  va_end(ap);
  argv[argc] = NULL;
  errbuf[0] = '\0';
  return dtr__launch_args_parse(argc, argv, a, errbuf, sizeof errbuf);
}

#define ERR_HAS(s) CHECK(strstr(errbuf, (s)) != NULL)

int main(void) {
  dtr_launch_args a;

  /* defaults */
  CHECK_EQ_INT(parse(&a, "--", "prog", NULL), DTR_OK);
  CHECK_EQ_INT(a.nnodes_min, 1);
  CHECK_EQ_INT(a.nnodes_max, 1);
  CHECK_EQ_INT(a.nproc_per_node, 1);
  CHECK_EQ_INT(a.node_rank, -1);
  CHECK_EQ_INT(a.max_restarts, 0);
  CHECK(a.monitor_interval > 0.099 && a.monitor_interval < 0.101);
  CHECK(a.rdzv_timeout == 900);
  CHECK(a.grace_period == 5);
  CHECK(a.worker_timeout == 180 && a.worker_start_timeout == 900);
  CHECK_EQ_INT(a.prog_argc, 1);
  CHECK_EQ_STR(a.prog_argv[0], "prog");
  CHECK_EQ_STR(a.role, "default");

  /* dash, underscore and = spellings */
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "4", "--", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nproc_per_node, 4);
  CHECK_EQ_INT(parse(&a, "--nproc_per_node=3", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nproc_per_node, 3);
  CHECK_EQ_INT(parse(&a, "--nproc-per-node=2", "--max_restarts", "5", "--monitor-interval=0.25", "p", NULL),
               DTR_OK);
  CHECK_EQ_INT(a.nproc_per_node, 2);
  CHECK_EQ_INT(a.max_restarts, 5);
  CHECK(a.monitor_interval > 0.249 && a.monitor_interval < 0.251);

  /* program arguments stay the program's, flags included */
  CHECK_EQ_INT(parse(&a, "--nnodes", "1", "--", "prog", "--nnodes", "7", NULL), DTR_OK);
  CHECK_EQ_INT(a.prog_argc, 3);
  CHECK_EQ_STR(a.prog_argv[1], "--nnodes");
  CHECK_EQ_INT(a.nnodes_max, 1);
  /* torchrun's positional form: the first non-flag word starts the program */
  CHECK_EQ_INT(parse(&a, "--standalone", "train.py", "--lr", "3", NULL), DTR_OK);
  CHECK_EQ_INT(a.standalone, 1);
  CHECK_EQ_INT(a.prog_argc, 3);
  CHECK_EQ_STR(a.prog_argv[0], "train.py");

  /* nnodes N and MIN:MAX */
  CHECK_EQ_INT(parse(&a, "--nnodes", "2", "--rdzv-endpoint", "h:1", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nnodes_min, 2);
  CHECK_EQ_INT(a.nnodes_max, 2);
  CHECK_EQ_INT(parse(&a, "--nnodes=1:4", "--rdzv_endpoint=h:29500", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nnodes_min, 1);
  CHECK_EQ_INT(a.nnodes_max, 4);
  CHECK_EQ_STR(a.rdzv_host, "h");
  CHECK_EQ_INT(a.rdzv_port, 29500);
  CHECK_EQ_INT(parse(&a, "--nnodes", "3:2", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--nnodes");
  ERR_HAS("3:2");
  CHECK_EQ_INT(parse(&a, "--nnodes", "0", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--nnodes");
  CHECK_EQ_INT(parse(&a, "--nnodes", "x", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("'x'");
  CHECK_EQ_INT(parse(&a, "--nnodes", "1:", "p", NULL), DTR_ERR_INVALID);
  CHECK_EQ_INT(parse(&a, "--nnodes", ":2", "p", NULL), DTR_ERR_INVALID);
  CHECK_EQ_INT(parse(&a, "--nnodes", "-1", "p", NULL), DTR_ERR_INVALID);

  /* nproc: 0, junk, cpu, auto */
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "0", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--nproc-per-node");
  ERR_HAS("at least 1");
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "two", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("'two'");
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "-3", "p", NULL), DTR_ERR_INVALID);
  /* cpu: the CPUs this process may use, at most a Slurm job's allocation on the node */
  cpu_set_t cpus;
  CHECK(sched_getaffinity(0, sizeof cpus, &cpus) == 0);
  unsetenv("SLURM_CPUS_ON_NODE");
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "cpu", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nproc_per_node, CPU_COUNT(&cpus));
  setenv("SLURM_CPUS_ON_NODE", "1", 1);
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "cpu", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nproc_per_node, 1);
  setenv("SLURM_CPUS_ON_NODE", "100000", 1); /* more than the machine: the machine's */
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "cpu", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.nproc_per_node, CPU_COUNT(&cpus));
  unsetenv("SLURM_CPUS_ON_NODE");
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "auto", "p", NULL), DTR_OK);
  CHECK(a.nproc_per_node >= 1);
  int n = 0;
  dtr_result grc = dtr__launch_parse_nproc("gpu", &n, errbuf, sizeof errbuf);
  CHECK(grc == DTR_OK ? n >= 1 : strstr(errbuf, "no GPU") != NULL);

  /* unknown and malformed flags name the culprit */
  CHECK_EQ_INT(parse(&a, "--bogus-flag", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("unknown flag '--bogus-flag'");
  CHECK_EQ_INT(parse(&a, "--bogus=3", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("'--bogus'");
  CHECK_EQ_INT(parse(&a, "-x", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("'-x'");
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", NULL), DTR_ERR_INVALID);
  ERR_HAS("--nproc-per-node needs a value");
  CHECK_EQ_INT(parse(&a, "--standalone=yes", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--standalone takes no value");
  CHECK_EQ_INT(parse(&a, "--max-restarts", "-1", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--max-restarts");
  CHECK_EQ_INT(parse(&a, "--monitor-interval", "0", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--monitor-interval");
  CHECK_EQ_INT(parse(&a, "--rdzv-timeout", "soon", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--rdzv-timeout");
  CHECK_EQ_INT(parse(&a, "--master-port", "70000", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--master-port");
  CHECK_EQ_INT(parse(&a, "--tee", "4", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--tee");
  CHECK_EQ_INT(parse(&a, "-t", "1", "--log-dir", "/tmp/x", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.tee, 1);
  CHECK_EQ_INT(parse(&a, "--redirects", "3", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--log-dir");
  CHECK_EQ_INT(parse(&a, "--rdzv-endpoint", "host:notaport", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--rdzv-endpoint");
  CHECK_EQ_INT(parse(&a, "--rdzv-endpoint", "somehost", "p", NULL), DTR_OK);
  CHECK_EQ_INT(a.rdzv_port, 29400);
  CHECK_EQ_INT(parse(&a, "--rdzv-endpoint", "[::1]:5000", "p", NULL), DTR_OK);
  CHECK_EQ_STR(a.rdzv_host, "::1");
  CHECK_EQ_INT(a.rdzv_port, 5000);
  CHECK_EQ_INT(parse(&a, "--rdzv-id", "../etc", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--rdzv-id");
  CHECK_EQ_INT(parse(&a, "--rdzv-backend", "etcd", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("etcd");
  CHECK_EQ_INT(
      parse(&a, "--rdzv-backend=c10d", "--rdzv-conf", "join_timeout=7,last_call_timeout=2", "p", NULL),
      DTR_OK);
  CHECK(a.rdzv_timeout == 7);
  CHECK(a.last_call == 2);
  CHECK_EQ_INT(parse(&a, "--node-rank", "2", "--nnodes", "2", "--rdzv-endpoint", "h:1", "p", NULL),
               DTR_ERR_INVALID);
  ERR_HAS("--node-rank 2");
  CHECK_EQ_INT(parse(&a, "--standalone", "--nnodes", "2", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--standalone");
  CHECK_EQ_INT(
      parse(&a, "--grace-period", "2.5", "--master-addr", "10.0.0.1", "--master-port", "1234", "p", NULL),
      DTR_OK);
  CHECK(a.grace_period == 2.5);
  CHECK_EQ_INT(parse(&a, "--worker-timeout", "0", "--worker_start_timeout=12.5", "p", NULL), DTR_OK);
  CHECK(a.worker_timeout == 0 && a.worker_start_timeout == 12.5);
  CHECK_EQ_INT(parse(&a, "--worker-timeout", "-1", "p", NULL), DTR_ERR_INVALID);
  ERR_HAS("--worker-timeout");
  CHECK_EQ_INT(
      parse(&a, "--grace-period", "2.5", "--master-addr", "10.0.0.1", "--master-port", "1234", "p", NULL),
      DTR_OK);
  CHECK_EQ_STR(a.master_addr, "10.0.0.1");
  CHECK_EQ_INT(a.master_port, 1234);

  /* no program */
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "2", NULL), DTR_ERR_INVALID);
  ERR_HAS("no program");
  CHECK_EQ_INT(parse(&a, "--nproc-per-node", "2", "--", NULL), DTR_ERR_INVALID);
  ERR_HAS("no program");

  /* help wins, whatever follows */
  CHECK_EQ_INT(parse(&a, "--help", "--bogus", NULL), DTR_OK);
  CHECK_EQ_INT(a.help, 1);
  CHECK_EQ_INT(parse(&a, "-h", NULL), DTR_OK);
  CHECK_EQ_INT(a.help, 1);
  /* every message is one line */
  CHECK_EQ_INT(parse(&a, "--nnodes", "a:b", "p", NULL), DTR_ERR_INVALID);
  CHECK(strchr(errbuf, '\n') == NULL);
  return TEST_EXIT();
}
