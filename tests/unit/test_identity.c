/* dtr_identity_from_env for every launcher, given as envp arrays: dtrain launch, torchrun-style, Open MPI,
 * Slurm and none; their precedence; the store rule (DTRAIN_STORE_PORT, MASTER_PORT + 1, a port derived
 * from the job id); errors that name the variable; and Slurm hostlists, good and bad. */
#include <stdlib.h>
#include <string.h>

#include "dtrain/runtime.h"
#include "runtime/runtime_internal.h"
#include "tests/unit/test_util.h"

#define ENV(...) ((char *const[]){__VA_ARGS__, NULL})

static dtr_identity id;
static char err[512];

static dtr_result ident(char *const *envp) {
  err[0] = 0;
  memset(&id, 0x5a, sizeof id);
  return dtr_identity_from_env(envp, &id, err, sizeof err);
}

/* The call fails with DTR_ERR_INVALID and err mentions `needle`. */
#define CHECK_FAILS(envp, needle)                                                                 \
  do {                                                                                            \
    CHECK_EQ_INT(ident(envp), DTR_ERR_INVALID);                                                   \
    if (!strstr(err, needle)) fprintf(stderr, "  error text was: %s (wanted %s)\n", err, needle); \
    CHECK(strstr(err, needle) != NULL);                                                           \
  } while (0)

static void test_single(void) {
  CHECK_EQ_INT(ident(ENV("HOME=/root", "PATH=/bin")), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_SINGLE);
  CHECK_EQ_INT(id.rank, 0);
  CHECK_EQ_INT(id.world_size, 1);
  CHECK_EQ_INT(id.local_rank, 0);
  CHECK_EQ_INT(id.local_world_size, 1);
  CHECK_EQ_INT(id.node_rank, 0);
  CHECK_EQ_INT(id.nnodes, 1);
  CHECK_EQ_STR(id.store_host, "");
  CHECK_EQ_INT(id.store_is_ours, 0);
  /* an empty value counts as unset */
  CHECK_EQ_INT(ident(ENV("RANK=", "WORLD_SIZE=")), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_SINGLE);
  /* a prefix of a name is not the name */
  CHECK_EQ_INT(ident(ENV("RANKX=3", "XRANK=2")), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_SINGLE);
}

static void test_dtrain(void) {
  CHECK_EQ_INT(
      ident(ENV("DTRAIN_STORE=node0:29400", "RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=4",
                "GROUP_RANK=1", "GROUP_WORLD_SIZE=2", "MASTER_ADDR=other", "MASTER_PORT=1234")),
      DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_DTRAIN);
  CHECK_EQ_INT(id.rank, 5);
  CHECK_EQ_INT(id.world_size, 8);
  CHECK_EQ_INT(id.local_rank, 1);
  CHECK_EQ_INT(id.local_world_size, 4);
  CHECK_EQ_INT(id.node_rank, 1);
  CHECK_EQ_INT(id.nnodes, 2);
  CHECK_EQ_STR(id.store_host, "node0");
  CHECK_EQ_INT(id.store_port, 29400);
  CHECK_EQ_INT(id.store_is_ours, 0);
  /* DTRAIN_NODE_RANK / DTRAIN_NNODES win over GROUP_* */
  CHECK_EQ_INT(ident(ENV("DTRAIN_STORE=10.0.0.1:1", "RANK=0", "WORLD_SIZE=4", "DTRAIN_NODE_RANK=0",
                         "DTRAIN_NNODES=2", "GROUP_RANK=7", "GROUP_WORLD_SIZE=9", "LOCAL_WORLD_SIZE=2")),
               DTR_OK);
  CHECK_EQ_INT(id.nnodes, 2);
  CHECK_EQ_INT(id.node_rank, 0);
  CHECK_EQ_STR(id.store_host, "10.0.0.1");
  CHECK_EQ_INT(ident(ENV("DTRAIN_STORE=[::1]:29401", "RANK=0", "WORLD_SIZE=1")), DTR_OK);
  CHECK_EQ_STR(id.store_host, "::1");
  CHECK_EQ_INT(id.store_port, 29401);
  /* errors name the variable */
  CHECK_FAILS(ENV("DTRAIN_STORE=node0", "RANK=0", "WORLD_SIZE=1"), "DTRAIN_STORE");
  CHECK_FAILS(ENV("DTRAIN_STORE=node0:99999", "RANK=0", "WORLD_SIZE=1"), "DTRAIN_STORE");
  CHECK_FAILS(ENV("DTRAIN_STORE=:5", "RANK=0", "WORLD_SIZE=1"), "DTRAIN_STORE");
  CHECK_FAILS(ENV("DTRAIN_STORE=[::1:5", "RANK=0", "WORLD_SIZE=1"), "DTRAIN_STORE");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "WORLD_SIZE=2"), "RANK is not set");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=0"), "WORLD_SIZE is not set");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=2", "WORLD_SIZE=2"), "RANK=2 is not below WORLD_SIZE=2");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=x1", "WORLD_SIZE=2"), "RANK='x1'");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=-1", "WORLD_SIZE=2"), "RANK='-1'");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=0", "WORLD_SIZE=0"), "WORLD_SIZE='0'");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2"),
              "LOCAL_RANK=2");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=0", "WORLD_SIZE=4", "GROUP_RANK=2", "GROUP_WORLD_SIZE=2",
                  "LOCAL_WORLD_SIZE=2"),
              "GROUP_RANK=2");
  CHECK_FAILS(ENV("DTRAIN_STORE=h:5", "RANK=0", "WORLD_SIZE=2", "LOCAL_WORLD_SIZE=3"), "WORLD_SIZE=2");
}

static void test_torchrun(void) {
  CHECK_EQ_INT(ident(ENV("RANK=3", "WORLD_SIZE=4", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=2", "GROUP_RANK=1",
                         "GROUP_WORLD_SIZE=2", "MASTER_ADDR=10.1.2.3", "MASTER_PORT=29500")),
               DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_TORCHRUN);
  CHECK_EQ_INT(id.rank, 3);
  CHECK_EQ_INT(id.world_size, 4);
  CHECK_EQ_INT(id.local_rank, 1);
  CHECK_EQ_INT(id.local_world_size, 2);
  CHECK_EQ_INT(id.node_rank, 1);
  CHECK_EQ_INT(id.nnodes, 2);
  CHECK_EQ_STR(id.store_host, "10.1.2.3");
  CHECK_EQ_INT(id.store_port, 29501); /* MASTER_PORT + 1: MASTER_PORT is torchrun's own store */
  CHECK_EQ_INT(id.store_is_ours, 1);
  /* DTRAIN_STORE_PORT wins */
  CHECK_EQ_INT(
      ident(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=29500", "DTRAIN_STORE_PORT=4000")),
      DTR_OK);
  CHECK_EQ_INT(id.store_port, 4000);
  /* a minimal environment: local values default to the global ones */
  CHECK_EQ_INT(ident(ENV("RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=7")), DTR_OK);
  CHECK_EQ_INT(id.local_rank, 1);
  CHECK_EQ_INT(id.local_world_size, 2);
  CHECK_EQ_INT(id.nnodes, 1);
  /* one process needs no master */
  CHECK_EQ_INT(ident(ENV("RANK=0", "WORLD_SIZE=1")), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_TORCHRUN);
  CHECK_EQ_STR(id.store_host, "127.0.0.1");
  CHECK_FAILS(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_PORT=5"), "MASTER_ADDR is not set");
  CHECK_FAILS(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h"), "MASTER_PORT is not set");
  CHECK_FAILS(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=65535"), "MASTER_PORT='65535'");
  CHECK_FAILS(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=p"), "MASTER_PORT='p'");
  CHECK_FAILS(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=5", "DTRAIN_STORE_PORT=0"),
              "DTRAIN_STORE_PORT='0'");
  CHECK_FAILS(ENV("RANK=0", "MASTER_ADDR=h", "MASTER_PORT=5"), "WORLD_SIZE is not set");
  CHECK_FAILS(ENV("WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=5"), "RANK is not set");
  CHECK_FAILS(ENV("RANK=4", "WORLD_SIZE=4", "MASTER_ADDR=h", "MASTER_PORT=5"),
              "torchrun-style environment: RANK=4");
  CHECK_FAILS(ENV("RANK=1", "WORLD_SIZE=4", "MASTER_ADDR=h", "MASTER_PORT=5", "LOCAL_RANK=zz"),
              "LOCAL_RANK='zz'");
}

static void test_mpirun(void) {
  char *const *e = ENV("OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=1",
                       "OMPI_COMM_WORLD_LOCAL_SIZE=4", "OMPI_MCA_ess_base_jobid=1175715841");
  CHECK_EQ_INT(ident(e), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_MPIRUN);
  CHECK_EQ_INT(id.rank, 5);
  CHECK_EQ_INT(id.world_size, 8);
  CHECK_EQ_INT(id.local_rank, 1);
  CHECK_EQ_INT(id.local_world_size, 4);
  CHECK_EQ_INT(id.node_rank, 1);
  CHECK_EQ_INT(id.nnodes, 2);
  CHECK_EQ_STR(id.store_host, ""); /* spans nodes, no MASTER_ADDR: only the mpi backend can run */
  CHECK(id.store_port >= 20000 && id.store_port < 30000);
  CHECK_EQ_INT(id.store_is_ours, 1);
  int derived = id.store_port;
  /* every rank of the job derives the same port; another job another one (almost surely) */
  CHECK_EQ_INT(ident(ENV("OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=0",
                         "OMPI_COMM_WORLD_LOCAL_SIZE=4", "OMPI_MCA_ess_base_jobid=1175715841")),
               DTR_OK);
  CHECK_EQ_INT(id.store_port, derived);
  CHECK_EQ_INT(ident(ENV("OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=0",
                         "OMPI_COMM_WORLD_LOCAL_SIZE=4", "OMPI_MCA_ess_base_jobid=1175715842")),
               DTR_OK);
  CHECK(id.store_port != derived);
  /* one node: loopback */
  CHECK_EQ_INT(ident(ENV("OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_RANK=2",
                         "OMPI_COMM_WORLD_LOCAL_SIZE=4", "PMIX_NAMESPACE=77")),
               DTR_OK);
  CHECK_EQ_STR(id.store_host, "127.0.0.1");
  CHECK_EQ_INT(id.nnodes, 1);
  CHECK_EQ_INT(ident(ENV("OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=4", "MASTER_ADDR=head",
                         "DTRAIN_STORE_PORT=5555")),
               DTR_OK);
  CHECK_EQ_STR(id.store_host, "head");
  CHECK_EQ_INT(id.store_port, 5555);
  CHECK_FAILS(ENV("OMPI_COMM_WORLD_RANK=4", "OMPI_COMM_WORLD_SIZE=4"), "OMPI_COMM_WORLD_RANK=4");
  CHECK_FAILS(ENV("OMPI_COMM_WORLD_RANK=0"), "OMPI_COMM_WORLD_SIZE is not set");
  CHECK_FAILS(ENV("OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_SIZE=0"),
              "OMPI_COMM_WORLD_LOCAL_SIZE='0'");
}

static void test_slurm(void) {
  char *const *e = ENV("SLURM_PROCID=5", "SLURM_NTASKS=7", "SLURM_LOCALID=1", "SLURM_NODEID=2",
                       "SLURM_NNODES=3", "SLURM_TASKS_PER_NODE=2(x2),3", "SLURM_JOB_NODELIST=gpu[01-02,07]",
                       "SLURM_JOB_ID=4242", "SLURM_STEP_ID=0");
  CHECK_EQ_INT(ident(e), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_SLURM);
  CHECK_EQ_INT(id.rank, 5);
  CHECK_EQ_INT(id.world_size, 7);
  CHECK_EQ_INT(id.local_rank, 1);
  CHECK_EQ_INT(id.local_world_size, 3);
  CHECK_EQ_INT(id.node_rank, 2);
  CHECK_EQ_INT(id.nnodes, 3);
  CHECK_EQ_STR(id.store_host, "gpu01");
  CHECK(id.store_port >= 20000 && id.store_port < 30000);
  CHECK_EQ_INT(id.store_is_ours, 1);
  int port = id.store_port;
  /* the step's node list and counts win over the job's; another step, another port */
  CHECK_EQ_INT(
      ident(ENV("SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEP_NUM_NODES=1", "SLURM_NNODES=3",
                "SLURM_STEP_TASKS_PER_NODE=2", "SLURM_TASKS_PER_NODE=9", "SLURM_STEP_NODELIST=n[3-4]-ib",
                "SLURM_JOB_NODELIST=gpu[01-02,07]", "SLURM_JOB_ID=4242", "SLURM_STEP_ID=1")),
      DTR_OK);
  CHECK_EQ_STR(id.store_host, "n3-ib");
  CHECK_EQ_INT(id.nnodes, 1);
  CHECK_EQ_INT(id.local_world_size, 2);
  CHECK(id.store_port != port);
  /* MASTER_ADDR and MASTER_PORT override (the test's localhost case) */
  CHECK_EQ_INT(ident(ENV("SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_JOB_NODELIST=localhost",
                         "MASTER_ADDR=127.0.0.1", "MASTER_PORT=6000")),
               DTR_OK);
  CHECK_EQ_STR(id.store_host, "127.0.0.1");
  CHECK_EQ_INT(id.store_port, 6001);
  CHECK_EQ_INT(id.local_world_size, 2);
  CHECK_FAILS(ENV("SLURM_PROCID=2", "SLURM_NTASKS=2"), "SLURM_PROCID=2 is not below SLURM_NTASKS=2");
  CHECK_FAILS(ENV("SLURM_PROCID=0"), "SLURM_NTASKS is not set");
  CHECK_FAILS(ENV("SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_JOB_NODELIST=gpu[01-"), "SLURM_JOB_NODELIST");
  CHECK_FAILS(ENV("SLURM_PROCID=0", "SLURM_NTASKS=4", "SLURM_NNODES=2", "SLURM_TASKS_PER_NODE=2(x",
                  "SLURM_JOB_NODELIST=a,b"),
              "SLURM_TASKS_PER_NODE");
  CHECK_FAILS(ENV("SLURM_PROCID=3", "SLURM_NTASKS=4", "SLURM_NNODES=3", "SLURM_NODEID=2",
                  "SLURM_TASKS_PER_NODE=2(x2)", "SLURM_JOB_NODELIST=a,b,c"),
              "no count for node 2");
  CHECK_FAILS(ENV("SLURM_PROCID=0", "SLURM_NTASKS=4", "SLURM_NNODES=3", "SLURM_JOB_NODELIST=a,b"),
              "names 2 hosts");
}

static void test_precedence(void) {
  /* dtrain > torchrun > Open MPI > Slurm */
  char *const *all =
      ENV("SLURM_PROCID=3", "SLURM_NTASKS=4", "OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=4", "RANK=1",
          "WORLD_SIZE=4", "MASTER_ADDR=h", "MASTER_PORT=9", "DTRAIN_STORE=s:1");
  CHECK_EQ_INT(ident(all), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_DTRAIN);
  CHECK_EQ_INT(id.rank, 1);
  char *const no_dtrain[] = {"SLURM_PROCID=3",         "SLURM_NTASKS=4", "OMPI_COMM_WORLD_RANK=2",
                             "OMPI_COMM_WORLD_SIZE=4", "RANK=1",         "WORLD_SIZE=4",
                             "MASTER_ADDR=h",          "MASTER_PORT=9",  NULL};
  CHECK_EQ_INT(ident(no_dtrain), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_TORCHRUN);
  CHECK_EQ_INT(id.rank, 1);
  char *const mpi_slurm[] = {"SLURM_PROCID=3", "SLURM_NTASKS=4", "OMPI_COMM_WORLD_RANK=2",
                             "OMPI_COMM_WORLD_SIZE=4", NULL};
  CHECK_EQ_INT(ident(mpi_slurm), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_MPIRUN);
  CHECK_EQ_INT(id.rank, 2);
  char *const slurm[] = {"SLURM_PROCID=3", "SLURM_NTASKS=4", NULL};
  CHECK_EQ_INT(ident(slurm), DTR_OK);
  CHECK_EQ_INT(id.launcher, DTR_LAUNCHER_SLURM);
  CHECK_EQ_INT(id.rank, 3);
  /* names for messages */
  CHECK_EQ_STR(dtr_launcher_name(DTR_LAUNCHER_SINGLE), "single");
  CHECK_EQ_STR(dtr_launcher_name(DTR_LAUNCHER_DTRAIN), "dtrain");
  CHECK_EQ_STR(dtr_launcher_name(DTR_LAUNCHER_TORCHRUN), "torchrun");
  CHECK_EQ_STR(dtr_launcher_name(DTR_LAUNCHER_MPIRUN), "mpirun");
  CHECK_EQ_STR(dtr_launcher_name(id.launcher), "slurm");
  CHECK_EQ_STR(dtr_launcher_name((dtr_launcher_kind)5), "?launcher");
  CHECK_EQ_STR(dtr_launcher_name((dtr_launcher_kind)-1), "?launcher");
  /* a failed read leaves *out zeroed, not half-filled */
  CHECK_EQ_INT(ident(ENV("RANK=9", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=1")), DTR_ERR_INVALID);
  CHECK_EQ_INT(id.rank, 0);
  CHECK_EQ_INT(id.world_size, 0);
}

static void test_token(void) {
  char t1[300], t2[300];
  CHECK_EQ_INT(ident(ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=9")), DTR_OK);
  dtr__identity_token(ENV("RANK=0", "WORLD_SIZE=2", "DTRAIN_JOB_TOKEN=sekrit"), &id, t1, sizeof t1);
  CHECK_EQ_STR(t1, "sekrit");
  dtr__identity_token(ENV("RANK=0", "TORCHELASTIC_RUN_ID=job7"), &id, t1, sizeof t1);
  dtr__identity_token(ENV("RANK=1", "TORCHELASTIC_RUN_ID=job7"), &id, t2, sizeof t2);
  CHECK_EQ_STR(t1, t2); /* every rank derives the same */
  CHECK(strstr(t1, "job7") != NULL);
  dtr__identity_token(ENV("RANK=1", "TORCHELASTIC_RUN_ID=job8"), &id, t2, sizeof t2);
  CHECK(strcmp(t1, t2) != 0);
}

/* Expand and compare with the expected names, joined by spaces. */
static void hl_ok(const char *list, const char *want, int want_n) {
  static char names[64][256];
  int n = -1;
  char e[256] = "";
  dtr_result rc = dtr_hostlist_expand(list, names, 64, &n, e, sizeof e);
  if (rc != DTR_OK) fprintf(stderr, "  hostlist '%s': %s\n", list, e);
  CHECK_EQ_INT(rc, DTR_OK);
  CHECK_EQ_INT(n, want_n);
  char joined[4096] = "";
  for (int i = 0; i < n && rc == DTR_OK; i++) {
    if (i) strcat(joined, " ");
    strcat(joined, names[i]);
  }
  CHECK_EQ_STR(joined, want);
  /* counting mode (names NULL) agrees */
  int cnt = -1;
  CHECK_EQ_INT(dtr_hostlist_expand(list, NULL, 0, &cnt, e, sizeof e), DTR_OK);
  CHECK_EQ_INT(cnt, want_n);
}

static void hl_bad(const char *list, int cap, const char *needle) {
  static char names[64][256];
  int n = -1;
  char e[256] = "";
  CHECK_EQ_INT(dtr_hostlist_expand(list, names, cap, &n, e, sizeof e), DTR_ERR_INVALID);
  if (!strstr(e, needle)) fprintf(stderr, "  hostlist '%s' error: %s (wanted %s)\n", list, e, needle);
  CHECK(strstr(e, needle) != NULL);
  CHECK_EQ_INT(n, 0);
}

static void test_hostlist(void) {
  hl_ok("gpu[01-04,07],login1", "gpu01 gpu02 gpu03 gpu04 gpu07 login1", 6);
  hl_ok("n[1-3]-ib", "n1-ib n2-ib n3-ib", 3);
  hl_ok("localhost", "localhost", 1);
  hl_ok("a,b,c", "a b c", 3);
  hl_ok("n[8-11]", "n8 n9 n10 n11", 4);
  hl_ok("n[098-101]", "n098 n099 n100 n101", 4);
  hl_ok("r[1-2]-n[01-02]", "r1-n01 r1-n02 r2-n01 r2-n02", 4);
  hl_ok("x[5]", "x5", 1);
  hl_ok("[1-2]", "1 2", 2);
  hl_ok("node-1.cluster,gpu[1,3]x", "node-1.cluster gpu1x gpu3x", 3);
  hl_bad("gpu[01-", 64, "'[' without ']'");
  hl_bad("gpu01-]", 64, "']' without '['");
  hl_bad("gpu[04-01]", 64, "runs backwards");
  hl_bad("gpu[a-b]", 64, "digits expected");
  hl_bad("gpu[]", 64, "empty range");
  hl_bad("gpu[1,]", 64, "empty range");
  hl_bad("gpu[,1]", 64, "bad range");
  hl_bad("gpu[1-]", 64, "bad range");
  hl_bad("a,,b", 64, "empty name");
  hl_bad("a,", 64, "empty name");
  hl_bad("", 64, "empty list");
  hl_bad("a b", 64, "white space");
  hl_bad("n[1-[2]]", 64, "nested");
  hl_bad("n[1-100]", 64, "more than 64 names");
  hl_bad("n[0-9999999]", 64, "too long");
}

int main(void) {
  test_single();
  test_dtrain();
  test_torchrun();
  test_mpirun();
  test_slurm();
  test_precedence();
  test_token();
  test_hostlist();
  return TEST_EXIT();
}
