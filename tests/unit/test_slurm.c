/* Slurm's pure parts: reading a job's environment (batch script, srun step, interactive allocation, an
 * array task, malformed values), the launch shape it implies, the port from the job id, the job token
 * (HMAC-SHA-256 under a per-user secret file, checked against the FIPS 180-4 and RFC 4231 vectors, and the
 * file's creation and permission rules), Slurm's time format, the stop request API, and the recipe's
 * slurm: section. */
// ctest-labels: launch recipe
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sha256.h"
#include "dtrain/recipe.h"
#include "dtrain/runtime.h"
#include "launcher/slurm.h"
#include "runtime/train/recipe_internal.h"
#include "tests/unit/test_util.h"

static char err[1024];

static void hexs(const uint8_t *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static void test_sha256(void) {
  uint8_t d[32];
  char h[65];
  dtr__sha256("abc", 3, d);
  hexs(d, 32, h);
  CHECK_EQ_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  dtr__sha256("", 0, d);
  hexs(d, 32, h);
  CHECK_EQ_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* two blocks */
  dtr__sha256(two, strlen(two), d);
  hexs(d, 32, h);
  CHECK_EQ_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  /* RFC 4231 test cases 1 and 2, and 6 (a key longer than a block) */
  uint8_t key[131];
  memset(key, 0x0b, 20);
  dtr__hmac_sha256(key, 20, "Hi There", 8, d);
  hexs(d, 32, h);
  CHECK_EQ_STR(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  dtr__hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
  hexs(d, 32, h);
  CHECK_EQ_STR(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  memset(key, 0xaa, sizeof key);
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  dtr__hmac_sha256(key, sizeof key, m6, strlen(m6), d);
  hexs(d, 32, h);
  CHECK_EQ_STR(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_read(void) {
  dtr__slurm s;
  /* outside Slurm */
  char *none[] = {"PATH=/bin", NULL};
  CHECK_EQ_INT(dtr__slurm_read(none, &s, err, sizeof err), DTR_OK);
  CHECK(!s.in_job && !s.managed && !s.batch);

  /* the batch script of a two-node job (not in a step): managed, a batch job, its first node */
  char *batch[] = {"SLURM_JOB_ID=123",
                   "SLURM_JOB_NAME=train.sbatch",
                   "ENVIRONMENT=BATCH",
                   "SLURM_JOB_NODELIST=gpu[07-08]",
                   "SLURM_JOB_NUM_NODES=2",
                   "SLURM_PROCID=0",
                   "SLURM_RESTART_COUNT=2",
                   "SLURM_CPUS_ON_NODE=16",
                   NULL};
  CHECK_EQ_INT(dtr__slurm_read(batch, &s, err, sizeof err), DTR_OK);
  CHECK(s.in_job && !s.in_step && s.batch && s.managed && !s.interactive);
  CHECK_EQ_STR(s.job_id, "123");
  CHECK_EQ_STR(s.requeue_id, "123");
  CHECK_EQ_STR(s.first_host, "gpu07");
  CHECK_EQ_INT(s.alloc_nodes, 2);
  CHECK_EQ_INT(s.step_nodes, 1);
  CHECK_EQ_INT(s.restart_count, 2);
  CHECK_EQ_INT(s.cpus_on_node, 16);

  /* an srun step of an array task: the step's node list wins */
  char *step[] = {"SLURM_JOB_ID=130",          "SLURM_ARRAY_JOB_ID=128",
                  "SLURM_ARRAY_TASK_ID=2",     "SLURM_STEP_ID=0",
                  "ENVIRONMENT=BATCH",         "SLURM_JOB_NAME=seeds",
                  "SLURM_JOB_NODELIST=n[1-4]", "SLURM_STEP_NODELIST=n[2-4]",
                  "SLURM_STEP_NUM_NODES=3",    "SLURM_STEP_NUM_TASKS=3",
                  "SLURM_JOB_NUM_NODES=4",     "SLURM_PROCID=1",
                  "SLURM_GPUS_ON_NODE=8",      NULL};
  CHECK_EQ_INT(dtr__slurm_read(step, &s, err, sizeof err), DTR_OK);
  CHECK(s.in_step && s.batch && s.managed);
  CHECK_EQ_STR(s.requeue_id, "128_2");
  CHECK_EQ_STR(s.first_host, "n2");
  CHECK_EQ_INT(s.step_nodes, 3);
  CHECK_EQ_INT(s.tasks_on_node, 1);
  CHECK_EQ_INT(s.procid, 1);
  CHECK_EQ_INT(s.gpus_on_node, 8);

  /* an interactive allocation's shell: not managed, not a batch job; srun inside it is managed */
  char *shell[] = {"SLURM_JOB_ID=140", "SLURM_JOB_NAME=interactive", "SLURM_JOB_NODELIST=a,b", NULL};
  CHECK_EQ_INT(dtr__slurm_read(shell, &s, err, sizeof err), DTR_OK);
  CHECK(s.in_job && s.interactive && !s.managed && !s.batch);
  char *istep[] = {"SLURM_JOB_ID=140",       "SLURM_JOB_NAME=bash",     "SLURM_STEPID=3",
                   "SLURM_STEP_NUM_NODES=2", "SLURM_STEP_NODELIST=a,b", NULL};
  CHECK_EQ_INT(dtr__slurm_read(istep, &s, err, sizeof err), DTR_OK);
  CHECK(s.in_step && s.managed && !s.batch);
  /* salloc with its own name: no ENVIRONMENT=BATCH, so not a batch job either */
  char *salloc[] = {"SLURM_JOB_ID=141", "SLURM_JOB_NAME=mine", NULL};
  CHECK_EQ_INT(dtr__slurm_read(salloc, &s, err, sizeof err), DTR_OK);
  CHECK(!s.batch && !s.managed);

  /* malformed values are named */
  char *bad1[] = {"SLURM_JOB_ID=12x", NULL};
  CHECK_EQ_INT(dtr__slurm_read(bad1, &s, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "SLURM_JOB_ID='12x'") != NULL);
  char *bad2[] = {"SLURM_JOB_ID=12", "SLURM_RESTART_COUNT=-1", NULL};
  CHECK_EQ_INT(dtr__slurm_read(bad2, &s, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "SLURM_RESTART_COUNT") != NULL);
  char *bad3[] = {"SLURM_JOB_ID=12", "ENVIRONMENT=BATCH", "SLURM_JOB_NODELIST=gpu[01-", NULL};
  CHECK_EQ_INT(dtr__slurm_read(bad3, &s, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "SLURM_JOB_NODELIST") != NULL);
}

static void test_shape(void) {
  dtr__slurm s;
  dtr__slurm_shape sh;
  char *step[] = {"SLURM_JOB_ID=20071",
                  "SLURM_STEP_ID=0",
                  "ENVIRONMENT=BATCH",
                  "SLURM_STEP_NODELIST=n[1-3]",
                  "SLURM_STEP_NUM_NODES=3",
                  "SLURM_STEP_NUM_TASKS=3",
                  NULL};
  CHECK_EQ_INT(dtr__slurm_read(step, &s, err, sizeof err), DTR_OK);
  /* --nnodes 1 (the default) becomes the step's 3 nodes, meeting on n1 at a port from the job id */
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 1, 1, &sh, err, sizeof err), DTR_OK);
  CHECK(sh.spans_nodes);
  CHECK_EQ_INT(sh.nnodes_min, 3);
  CHECK_EQ_INT(sh.nnodes_max, 3);
  CHECK_EQ_STR(sh.endpoint, "n1:10071");
  CHECK_EQ_STR(sh.id, "20071");
  /* MIN:MAX is kept when the step fits in it, refused when not */
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 2, 3, &sh, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(sh.nnodes_min, 2);
  CHECK_EQ_INT(sh.nnodes_max, 3);
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 4, 6, &sh, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "4:6 nodes") && strstr(err, "has 3"));
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 2, 2, &sh, err, sizeof err), DTR_ERR_INVALID);
  /* several tasks on a node: an agent per node is the rule */
  char *many[] = {"SLURM_JOB_ID=5",         "SLURM_STEP_ID=0",        "SLURM_STEP_NODELIST=n1",
                  "SLURM_STEP_NUM_NODES=1", "SLURM_STEP_NUM_TASKS=4", NULL};
  CHECK_EQ_INT(dtr__slurm_read(many, &s, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 1, 1, &sh, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "--ntasks-per-node=1") && strstr(err, "srun dtrain train"));
  /* the batch script of a 2-node allocation runs on one node; the caller warns */
  char *batch[] = {"SLURM_JOB_ID=6", "ENVIRONMENT=BATCH", "SLURM_JOB_NODELIST=n[1-2]",
                   "SLURM_JOB_NUM_NODES=2", NULL};
  CHECK_EQ_INT(dtr__slurm_read(batch, &s, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 1, 1, &sh, err, sizeof err), DTR_OK);
  CHECK(!sh.spans_nodes);
  CHECK_EQ_INT(sh.unused_nodes, 2);
  /* outside Slurm, and in an interactive shell: the launch's own shape */
  char *none[] = {NULL};
  CHECK_EQ_INT(dtr__slurm_read(none, &s, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(dtr__slurm_launch_shape(&s, 2, 4, &sh, err, sizeof err), DTR_OK);
  CHECK(!sh.spans_nodes && sh.nnodes_min == 2 && sh.nnodes_max == 4);
  /* ports: jobs whose ids differ by less than the span never share one */
  CHECK_EQ_INT(dtr__slurm_port("0"), 10000);
  CHECK_EQ_INT(dtr__slurm_port("9999"), 19999);
  CHECK_EQ_INT(dtr__slurm_port("123456"), 13456);
  CHECK(dtr__slurm_port("123456") != dtr__slurm_port("123457"));
}

static void test_token(void) {
  char dir[] = "/tmp/dtrain-test-slurm-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256], got[256], t1[65], t2[65], t3[65], t4[65];
  snprintf(path, sizeof path, "%s/sub/secret", dir);
  setenv("DTRAIN_SECRET_FILE", path, 1);
  /* created on first use: 0600 in a 0700 directory; the same job id gives the same token */
  CHECK_EQ_INT(dtr__slurm_token("77", t1, got, sizeof got, err, sizeof err), DTR_OK);
  CHECK_EQ_STR(got, path);
  struct stat st;
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
  snprintf(got, sizeof got, "%s/sub", dir);
  CHECK(stat(got, &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK_EQ_INT((int)strlen(t1), 64);
  CHECK_EQ_INT(dtr__slurm_token("77", t2, NULL, 0, err, sizeof err), DTR_OK);
  CHECK_EQ_STR(t1, t2);
  CHECK_EQ_INT(dtr__slurm_token("78", t3, NULL, 0, err, sizeof err), DTR_OK);
  CHECK(strcmp(t1, t3) != 0);
  /* it is the documented HMAC: the file's line as the key */
  FILE *f = fopen(path, "r");
  char line[128] = "";
  CHECK(f && fgets(line, sizeof line, f));
  if (f) fclose(f);
  line[strcspn(line, "\n")] = '\0';
  uint8_t mac[32];
  char want[65];
  dtr__hmac_sha256(line, strlen(line), "dtrain-slurm/77", 15, mac);
  hexs(mac, 32, want);
  CHECK_EQ_STR(t1, want);
  /* another secret, another token */
  CHECK(chmod(path, 0600) == 0);
  f = fopen(path, "w");
  CHECK(f != NULL);
  if (f) fputs("another secret of enough bytes\n", f), fclose(f);
  CHECK_EQ_INT(dtr__slurm_token("77", t4, NULL, 0, err, sizeof err), DTR_OK);
  CHECK(strcmp(t1, t4) != 0);
  /* a secret others may read is refused, and so is one too short */
  CHECK(chmod(path, 0644) == 0);
  CHECK_EQ_INT(dtr__slurm_token("77", t4, NULL, 0, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "chmod 600") != NULL);
  CHECK(chmod(path, 0600) == 0);
  f = fopen(path, "w");
  if (f) fputs("short\n", f), fclose(f);
  CHECK_EQ_INT(dtr__slurm_token("77", t4, NULL, 0, err, sizeof err), DTR_ERR_INVALID);
  unlink(path);
  rmdir(got);
  rmdir(dir);
  unsetenv("DTRAIN_SECRET_FILE");
}

static void test_time(void) {
  CHECK_EQ_INT(dtr__slurm_time_seconds("30"), 1800);
  CHECK_EQ_INT(dtr__slurm_time_seconds("5:30"), 330);
  CHECK_EQ_INT(dtr__slurm_time_seconds("01:00:00"), 3600);
  CHECK_EQ_INT(dtr__slurm_time_seconds("2-0"), 172800);
  CHECK_EQ_INT(dtr__slurm_time_seconds("1-2:3"), 93780);
  CHECK_EQ_INT(dtr__slurm_time_seconds("1-02:03:04"), 93784);
  CHECK_EQ_INT(dtr__slurm_time_seconds("UNLIMITED"), 0);
  const char *bad[] = {"", "1h", "1:2:3:4", "-5", "1-", "1-2:3:4:5", "01:00:00 ", "12345678901"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK_EQ_INT(dtr__slurm_time_seconds(bad[i]), -1);
}

static void test_stop_api(void) {
  char dir[] = "/tmp/dtrain-test-stop-XXXXXX", path[128];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/stop", dir);
  unsetenv("DTRAIN_STOP_FILE");
  CHECK_EQ_INT(dtr_stop_requested(), 0);
  setenv("DTRAIN_STOP_FILE", path, 1);
  CHECK_EQ_INT(dtr_stop_requested(), 0);
  int fd = open(path, O_CREAT | O_WRONLY, 0644);
  CHECK(fd >= 0);
  if (fd >= 0) close(fd);
  CHECK_EQ_INT(dtr_stop_requested(), 1);
  unlink(path);
  rmdir(dir);
  CHECK_EQ_INT(dtr_stop_requested(), 0);
  dtr_stop_request(); /* for good */
  CHECK_EQ_INT(dtr_stop_requested(), 1);
  unsetenv("DTRAIN_STOP_FILE");
  CHECK_EQ_INT(dtr_stop_requested(), 1);
}

/* The slurm: section: defaults, and each refusal with the position of the value at fault. */
static void test_recipe(void) {
  char dir[] = "/tmp/dtrain-test-slurm-recipe-XXXXXX", path[128];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/r.yaml", dir);
  static dtr_recipe r;
  struct {
    const char *yaml, *want;
  } cases[] = {
      {"slurm:\n  time: 1h\n", "r.yaml:2:9: slurm.time: '1h' is not a Slurm time"},
      {"slurm:\n  time: \"2\"\n  signal_lead: 120\n", "r.yaml:3:16: slurm.signal_lead: 120 s before the end"},
      {"slurm:\n  signal_lead: 120\n  time: \"2\"\n", "r.yaml:2:16: slurm.signal_lead: 120 s before the end"},
      {"slurm:\n  signal: TERM\n", "r.yaml:2:11: slurm.signal: expected one of USR1, USR2, got 'TERM'"},
      {"slurm:\n  mem: 64GB\n", "r.yaml:2:8: slurm.mem: '64GB' is not a Slurm memory size"},
      {"slurm:\n  partition: \"a b\"\n", "r.yaml:2:14: slurm.partition: 'a b' holds a blank"},
      {"slurm:\n  extra: \"--exclusive mail\"\n", "r.yaml:2:10: slurm.extra: 'mail' is not an sbatch option"},
      {"slurm:\n  max_requeues: -1\n", "r.yaml:2:17: slurm.max_requeues: -1 is not between 0 and 1000000"},
      {"launch:\n  nnodes: \"2:3\"\n  rdzv_endpoint: h:1\nslurm:\n  nodes: 4\n",
       "r.yaml:5:10: slurm.nodes: 4 nodes, but launch.nnodes asks for 2:3"},
      {"slurm:\n  gpus: 4\n", "r.yaml:2:3: unknown key 'gpus' in slurm (did you mean 'gpus_per_node'?)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    FILE *f = fopen(path, "w");
    if (!f) continue;
    fputs(cases[i].yaml, f);
    fclose(f);
    CHECK_EQ_INT(dtr_recipe_load(path, NULL, 0, 1, &r, err, sizeof err), DTR_ERR_INVALID);
    if (!strstr(err, cases[i].want)) fprintf(stderr, "case %zu: got '%s'\n", i, err);
    CHECK(strstr(err, cases[i].want) != NULL);
  }
  FILE *f = fopen(path, "w");
  if (f) fputs("slurm:\n  time: \"1-00:00:00\"\n  extra: \"--exclusive --mail-type=END\"\n", f), fclose(f);
  CHECK_EQ_INT(dtr_recipe_load(path, NULL, 0, 1, &r, err, sizeof err), DTR_OK);
  CHECK_EQ_STR(r.slurm.signal, "USR2");
  CHECK_EQ_INT(r.slurm.signal_lead, 120);
  CHECK_EQ_INT(r.slurm.max_requeues, 3);
  const char *ov[] = {"slurm.max_requeues=7", "slurm.signal=USR1"};
  CHECK_EQ_INT(dtr_recipe_load(path, ov, 2, 1, &r, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(r.slurm.max_requeues, 7);
  CHECK_EQ_STR(r.slurm.signal, "USR1");
  unlink(path);
  rmdir(dir);
}

int main(void) {
  test_sha256();
  test_read();
  test_shape();
  test_token();
  test_time();
  test_stop_api();
  test_recipe();
  return TEST_EXIT();
}
