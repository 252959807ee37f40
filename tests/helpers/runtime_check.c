/* runtime_check — dtr_init under any launcher, then its mesh groups against the Megatron layout:
 *   runtime_check [--backend host|mpi] [--mesh DPxTPxPP]... [--timeout-ms MS] [--max-seconds S]
 * For each --mesh (default 0x1x1; dp 0 = the rest) it runs dtr_init, prints this rank's identity
 *   "runtime_check rank R: launcher L world W local LR/LW node NR/NN store HOST:PORT ours O"
 * and checks: the mesh coordinates against an independent computation; every group's size, and this
 * rank's place in it (its coordinate); an all-gather of world ranks over each group equals the ranks
 * expected there, in coordinate order; an all-reduce (sum) of world ranks equals their sum. Then
 * dtr_finalize. Prints "runtime_check rank R: mesh DxTxP at (d,t,p): N checks, F failed" per mesh;
 * a failed dtr_init prints "runtime_check rank R: dtr_init failed: <reason>" on stderr and exits 1.
 * Exit 0 when every check held, 1 otherwise, 2 for bad usage. A time limit bounds the run. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtrain/runtime.h"
#include "tests/helpers/time_limit.h"

static int g_rank = -1;
static long checks, failed;

#define EXPECT(cond, ...)                                          \
  do {                                                             \
    checks++;                                                      \
    if (!(cond)) {                                                 \
      failed++;                                                    \
      fprintf(stderr, "runtime_check rank %d: MISMATCH ", g_rank); \
      fprintf(stderr, __VA_ARGS__);                                \
      fprintf(stderr, "\n");                                       \
    }                                                              \
  } while (0)

/* The world ranks of this rank's group `which` ('d', 't', 'p'), in the group's coordinate order. */
static int expected_members(const dtr_mesh *m, char which, int *out) {
  int n = 0;
  if (which == 'd')
    for (int d = 0; d < m->dp; d++) out[n++] = dtr_mesh_rank_of(m, d, m->tp_rank, m->pp_rank);
  if (which == 't')
    for (int t = 0; t < m->tp; t++) out[n++] = dtr_mesh_rank_of(m, m->dp_rank, t, m->pp_rank);
  if (which == 'p')
    for (int p = 0; p < m->pp; p++) out[n++] = dtr_mesh_rank_of(m, m->dp_rank, m->tp_rank, p);
  if (which == 'w')
    for (int r = 0; r < m->dp * m->tp * m->pp; r++) out[n++] = r;
  return n;
}

static void check_group(dtr_comm *c, const dtr_mesh *m, char which, int coord, int world_rank) {
  static const char *names[] = {"dp", "tp", "pp", "world"};
  const char *name = names[which == 'd' ? 0 : which == 't' ? 1 : which == 'p' ? 2 : 3];
  EXPECT(c != NULL, "%s communicator is NULL", name);
  if (!c) return;
  int want[4096];
  int n = expected_members(m, which, want);
  EXPECT(dtr_comm_size(c) == n, "%s group has %d ranks, expected %d", name, dtr_comm_size(c), n);
  EXPECT(dtr_comm_rank(c) == coord, "%s group rank %d, expected %d (this rank's coordinate)", name,
         dtr_comm_rank(c), coord);
  if (dtr_comm_size(c) != n) return;
  int *got = calloc((size_t)n, sizeof *got);
  int32_t me = world_rank;
  dtr_result rc = dtr_all_gather(c, &me, got, 1, DTR_I32, NULL);
  EXPECT(rc == DTR_OK, "%s all_gather: %s: %s", name, dtr_strerror(rc), dtr_comm_last_error(c));
  for (int i = 0; rc == DTR_OK && i < n; i++)
    EXPECT(got[i] == want[i], "%s group member %d is world rank %d, expected %d", name, i, got[i], want[i]);
  int64_t sum = world_rank, want_sum = 0;
  for (int i = 0; i < n; i++) want_sum += want[i];
  rc = dtr_all_reduce(c, &sum, &sum, 1, DTR_I64, DTR_SUM, NULL);
  EXPECT(rc == DTR_OK && sum == want_sum, "%s all_reduce of world ranks: %s, %lld, expected %lld", name,
         dtr_strerror(rc), (long long)sum, (long long)want_sum);
  free(got);
}

int main(int argc, char **argv) {
  const char *backend_s = "host";
  int timeout_ms = 60000, max_seconds = 120, nmesh = 0;
  int meshes[16][3];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
      backend_s = argv[++i];
    } else if (!strcmp(argv[i], "--mesh") && i + 1 < argc && nmesh < 16) {
      int *m = meshes[nmesh++];
      if (sscanf(argv[++i], "%dx%dx%d", &m[0], &m[1], &m[2]) != 3) {
        fprintf(stderr, "runtime_check: --mesh wants DPxTPxPP, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
      timeout_ms = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc) {
      max_seconds = atoi(argv[++i]);
    } else {
      fprintf(stderr,
              "usage: runtime_check [--backend host|mpi] [--mesh DPxTPxPP]... [--timeout-ms MS] "
              "[--max-seconds S]\n");
      return 2;
    }
  }
  if (nmesh == 0) {
    meshes[0][0] = 0, meshes[0][1] = 1, meshes[0][2] = 1;
    nmesh = 1;
  }
  dtr_runtime_config cfg = dtr_runtime_config_default();
  if (dtr_backend_parse(backend_s, &cfg.backend) != DTR_OK) {
    fprintf(stderr, "runtime_check: unknown backend '%s'\n", backend_s);
    return 2;
  }
  cfg.timeout_ms = timeout_ms;
  cfg.store_timeout_ms = timeout_ms;
  time_limit_start("runtime_check", (unsigned)max_seconds);
  setvbuf(stdout, NULL, _IOLBF, 0);
  char err[1024] = "";
  dtr_identity pre;
  if (dtr_identity_from_env(NULL, &pre, err, sizeof err) == DTR_OK) g_rank = pre.rank;

  for (int k = 0; k < nmesh; k++) {
    cfg.dp = meshes[k][0], cfg.tp = meshes[k][1], cfg.pp = meshes[k][2];
    dtr_runtime *rt = NULL;
    dtr_result rc = dtr_init(&cfg, &rt, err, sizeof err);
    if (rc != DTR_OK) {
      fprintf(stderr, "runtime_check rank %d: dtr_init failed: %s: %s\n", g_rank, dtr_strerror(rc), err);
      return 1;
    }
    long c0 = checks, f0 = failed;
    const dtr_identity *id = dtr_runtime_identity(rt);
    const dtr_mesh *m = dtr_runtime_mesh(rt);
    g_rank = id->rank;
    printf("runtime_check rank %d: launcher %s world %d local %d/%d node %d/%d store %s:%d ours %d\n",
           id->rank, dtr_launcher_name(id->launcher), id->world_size, id->local_rank, id->local_world_size,
           id->node_rank, id->nnodes, id->store_host, id->store_port, id->store_is_ours);
    /* independent coordinates: rank = pp*(dp*tp) + dp*tp + tp */
    int dp = m->dp, tp = m->tp, pp = m->pp;
    EXPECT(dp * tp * pp == id->world_size, "mesh %dx%dx%d does not cover %d ranks", dp, tp, pp,
           id->world_size);
    EXPECT(tp == (meshes[k][1] ? meshes[k][1] : 1) && pp == (meshes[k][2] ? meshes[k][2] : 1) &&
               (meshes[k][0] == 0 || dp == meshes[k][0]),
           "mesh is %dx%dx%d, asked for %dx%dx%d", dp, tp, pp, meshes[k][0], meshes[k][1], meshes[k][2]);
    EXPECT(m->tp_rank == id->rank % tp && m->dp_rank == (id->rank / tp) % dp &&
               m->pp_rank == id->rank / (dp * tp),
           "coordinates (%d,%d,%d) of rank %d are not Megatron's", m->dp_rank, m->tp_rank, m->pp_rank,
           id->rank);
    EXPECT(dtr_runtime_store(rt) != NULL || cfg.backend == DTR_BACKEND_MPI, "no store on the host backend");
    dtr_comm *w = dtr_runtime_world(rt);
    EXPECT(w && dtr_comm_backend(w) == cfg.backend, "world communicator missing or on the wrong backend");
    check_group(w, m, 'w', id->rank, id->rank);
    check_group(dtr_runtime_dp(rt), m, 'd', m->dp_rank, id->rank);
    check_group(dtr_runtime_tp(rt), m, 't', m->tp_rank, id->rank);
    check_group(dtr_runtime_pp(rt), m, 'p', m->pp_rank, id->rank);
    /* nobody finalizes (destroying groups) while a peer still uses them */
    if (w) dtr_barrier(w, NULL);
    printf("runtime_check rank %d: mesh %dx%dx%d at (%d,%d,%d): %ld checks, %ld failed\n", id->rank, dp, tp,
           pp, m->dp_rank, m->tp_rank, m->pp_rank, checks - c0, failed - f0);
    dtr_finalize(rt);
  }
  return failed ? 1 : 0;
}
