/* ckpt_worker — one rank of a checkpointing job, run under `dtrain launch --nproc-per-node N`:
 *   ckpt_worker --dir D [--save 10,20] [--async] [--fail-ok] [--load-expect STEP|none|error]
 *               [--saved-world W] [--job ID] [--keep K] [--chunk-bytes B] [--pad-step S]
 *               [--kill-rank R --kill-step S]
 * It registers a row-sharded f32 tensor, a column-sharded f64 tensor, replicated tensors that each
 * rank saves a different slab of (save_part), a replicated scalar, and two per-rank blobs; every value
 * is a formula of (coordinates, step), so after a load with any rank count each rank checks every
 * element it holds. --async mutates the memory right after save_async returns. --fail-ok: a failed
 * save is reported ("save step S failed: ...") and the program goes on. --pad-step S: a 1 MiB
 * incompressible blob at that step only (disk-full tests). --kill-rank/--kill-step: that rank
 * SIGKILLs itself while the save of that step is in flight (use DTRAIN_CKPT_TEST_DELAY_MS).
 * Exit 0 when everything expected happened, 1 otherwise, 2 for bad usage. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtrain/ckpt.h"
#include "dtrain/comm.h"
#include "dtrain/store.h"

enum { ER = 37, EC = 6, PR = 8, PC = 10, NR = 13, BR = 5, BC = 3, PAD = 1 << 20 };

static int g_rank, g_world;

static float emb_v(int64_t i, int64_t j, int64_t s) {
  return (float)(i * 1000 + j) + (float)s * 0.5f;
}
static double proj_v(int64_t i, int64_t j, int64_t s) {
  return (double)i / 7.0 + (double)j * 3.0 - (double)s;
}
static float norm_v(int64_t i, int64_t s) {
  return 1.0f + (float)i * 0.25f + (float)s;
}
static int64_t bias_v(int64_t i, int64_t j, int64_t s) {
  return (i * 31 + j) * 1000003 + s;
}
static uint8_t rng_v(int rank, int k, int64_t s) {
  return (uint8_t)(rank * 37 + k * 5 + s);
}

/* The slab [*off, *off + *len) of n items that part p of parts owns. */
static void slab(int64_t n, int p, int parts, int64_t *off, int64_t *len) {
  int64_t base = n / parts, rem = n % parts;
  *off = p * base + (p < rem ? p : rem);
  *len = base + (p < rem ? 1 : 0);
}

typedef struct state {
  int64_t eo, el; /* emb rows held */
  int64_t po, pl; /* proj columns held */
  float *emb;
  double *proj;
  float norm[NR];
  int64_t bias[BR * BC];
  double lr;
  uint8_t rng[16];
  int64_t stepblob;
  uint8_t *pad;
} state;

static void set_values(state *x, int64_t s) {
  for (int64_t i = 0; i < x->el; i++)
    for (int j = 0; j < EC; j++) x->emb[i * EC + j] = emb_v(x->eo + i, j, s);
  for (int i = 0; i < PR; i++)
    for (int64_t j = 0; j < x->pl; j++) x->proj[i * x->pl + j] = proj_v(i, x->po + j, s);
  for (int i = 0; i < NR; i++) x->norm[i] = norm_v(i, s);
  for (int i = 0; i < BR; i++)
    for (int j = 0; j < BC; j++) x->bias[i * BC + j] = bias_v(i, j, s);
  x->lr = 0.001 * (double)s;
  for (int k = 0; k < 16; k++) x->rng[k] = rng_v(g_rank, k, s);
  x->stepblob = s;
}

static void scramble(state *x) {
  memset(x->emb, 0xab, sizeof(float) * (size_t)(x->el * EC));
  memset(x->proj, 0xcd, sizeof(double) * (size_t)(x->pl * PR));
  memset(x->norm, 0x11, sizeof x->norm);
  memset(x->bias, 0x22, sizeof x->bias);
  x->lr = -1;
  memset(x->rng, 0x33, sizeof x->rng);
  x->stepblob = -1;
}

/* Every held value against the formula; the blob as saved by rank `from`. */
static long check_values(const state *x, int64_t s, int from, long *checked) {
  long bad = 0, n = 0;
  for (int64_t i = 0; i < x->el; i++)
    for (int j = 0; j < EC; j++, n++) bad += x->emb[i * EC + j] != emb_v(x->eo + i, j, s);
  for (int i = 0; i < PR; i++)
    for (int64_t j = 0; j < x->pl; j++, n++) bad += x->proj[i * x->pl + j] != proj_v(i, x->po + j, s);
  for (int i = 0; i < NR; i++, n++) bad += x->norm[i] != norm_v(i, s);
  for (int i = 0; i < BR; i++)
    for (int j = 0; j < BC; j++, n++) bad += x->bias[i * BC + j] != bias_v(i, j, s);
  bad += x->lr != 0.001 * (double)s, n++;
  for (int k = 0; k < 16; k++, n++) bad += x->rng[k] != rng_v(from, k, s);
  bad += x->stepblob != s, n++;
  *checked = n;
  return bad;
}

static int usage(void) {
  fprintf(stderr,
          "usage: ckpt_worker --dir D [--save a,b] [--async] [--fail-ok] [--load-expect S|none|error] ...\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *dir = NULL, *saves = NULL, *expect = NULL, *job = NULL;
  int async = 0, fail_ok = 0, saved_world = 0, keep = 0, kill_rank = -1;
  long chunk_bytes = 200; /* chunks end mid-row: resharding must handle partial rows */
  int64_t pad_step = -1, kill_step = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--async"))
      async = 1;
    else if (!strcmp(a, "--fail-ok"))
      fail_ok = 1;
    else if (!v)
      return usage();
    else if (!strcmp(a, "--dir"))
      dir = v, i++;
    else if (!strcmp(a, "--save"))
      saves = v, i++;
    else if (!strcmp(a, "--load-expect"))
      expect = v, i++;
    else if (!strcmp(a, "--job"))
      job = v, i++;
    else if (!strcmp(a, "--saved-world"))
      saved_world = atoi(v), i++;
    else if (!strcmp(a, "--keep"))
      keep = atoi(v), i++;
    else if (!strcmp(a, "--chunk-bytes"))
      chunk_bytes = atol(v), i++;
    else if (!strcmp(a, "--pad-step"))
      pad_step = atoll(v), i++;
    else if (!strcmp(a, "--kill-rank"))
      kill_rank = atoi(v), i++;
    else if (!strcmp(a, "--kill-step"))
      kill_step = atoll(v), i++;
    else
      return usage();
  }
  if (!dir) return usage();
  const char *r = getenv("RANK"), *w = getenv("WORLD_SIZE");
  if (!r || !w) {
    fprintf(stderr, "ckpt_worker: RANK/WORLD_SIZE unset (run under dtrain launch)\n");
    return 2;
  }
  g_rank = atoi(r);
  g_world = atoi(w);
  alarm(120); /* bounded, whatever happens */
  char err[1024];
  dtr_store *store = NULL;
  dtr_comm *comm = NULL;
  if (g_world > 1) {
    if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "ckpt_worker rank %d: store: %s\n", g_rank, err);
      return 2;
    }
    dtr_comm_config cc = dtr_comm_config_default();
    cc.timeout_ms = 30000;
    if (dtr_comm_create(store, g_rank, g_world, &cc, &comm, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "ckpt_worker rank %d: comm: %s\n", g_rank, err);
      return 2;
    }
  }
  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  cfg.comm = comm;
  cfg.keep = keep;
  cfg.job_id = job;
  cfg.chunk_bytes = (size_t)chunk_bytes;
  dtr_ckpt *ck = NULL;
  if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "ckpt_worker rank %d: create: %s\n", g_rank, err);
    return 1;
  }

  state x;
  memset(&x, 0, sizeof x);
  slab(ER, g_rank, g_world, &x.eo, &x.el);
  slab(PC, g_rank, g_world, &x.po, &x.pl);
  x.emb = calloc((size_t)(x.el * EC) + 1, sizeof(float));
  x.proj = calloc((size_t)(x.pl * PR) + 1, sizeof(double));
  x.pad = calloc(PAD, 1);
  int64_t es[2] = {ER, EC}, ps[2] = {PR, PC}, ns[1] = {NR}, bs[2] = {BR, BC};
  dtr_ckpt_tensor emb = dtr_ckpt_tensor_full("emb", DTR_F32, 2, es, x.emb);
  emb.offset[0] = emb.save_offset[0] = x.eo;
  emb.extent[0] = emb.save_extent[0] = x.el;
  if (x.el == 0) emb.save_extent[1] = 0;
  dtr_ckpt_tensor proj = dtr_ckpt_tensor_full("proj", DTR_F64, 2, ps, x.proj);
  proj.offset[1] = proj.save_offset[1] = x.po;
  proj.extent[1] = proj.save_extent[1] = x.pl;
  if (x.pl == 0) proj.save_extent[0] = 0;
  dtr_ckpt_tensor norm =
      dtr_ckpt_tensor_save_part(dtr_ckpt_tensor_full("norm", DTR_F32, 1, ns, x.norm), g_rank, g_world);
  dtr_ckpt_tensor bias =
      dtr_ckpt_tensor_save_part(dtr_ckpt_tensor_full("bias", DTR_I64, 2, bs, x.bias), g_rank, g_world);
  dtr_ckpt_tensor lr = dtr_ckpt_tensor_full("lr", DTR_F64, 0, NULL, &x.lr);
  const dtr_ckpt_tensor *all[] = {&emb, &proj, &norm, &bias, &lr};
  int bad = 0;
  for (int i = 0; i < 5; i++)
    if (dtr_ckpt_add_tensor(ck, all[i]) != DTR_OK) {
      fprintf(stderr, "ckpt_worker rank %d: add_tensor: %s\n", g_rank, dtr_ckpt_last_error(ck));
      bad = 1;
    }
  if (dtr_ckpt_add_blob(ck, "rng", x.rng, sizeof x.rng) != DTR_OK ||
      dtr_ckpt_add_blob(ck, "step", &x.stepblob, sizeof x.stepblob) != DTR_OK ||
      (pad_step >= 0 && dtr_ckpt_add_blob(ck, "pad", x.pad, PAD) != DTR_OK)) {
    fprintf(stderr, "ckpt_worker rank %d: add_blob: %s\n", g_rank, dtr_ckpt_last_error(ck));
    bad = 1;
  }

  for (const char *p = saves; p && *p && !bad;) {
    char *end;
    int64_t s = strtoll(p, &end, 10);
    p = *end == ',' ? end + 1 : end;
    set_values(&x, s);
    if (s == pad_step) {
      uint64_t z = 88172645463325252ull ^ (uint64_t)g_rank;
      for (int i = 0; i < PAD; i++) z ^= z << 13, z ^= z >> 7, z ^= z << 17, x.pad[i] = (uint8_t)z;
    } else {
      memset(x.pad, 0, PAD);
    }
    dtr_result rc = async ? dtr_ckpt_save_async(ck, s) : dtr_ckpt_save(ck, s);
    if (async && rc == DTR_OK) {
      scramble(&x); /* the snapshot was taken: the training step may change everything now */
      if (g_rank == kill_rank && s == kill_step) {
        usleep(300000);
        fprintf(stderr, "ckpt_worker rank %d: SIGKILL during the save of step %lld\n", g_rank, (long long)s);
        kill(getpid(), SIGKILL);
      }
      rc = dtr_ckpt_wait(ck);
    }
    if (rc == DTR_OK) {
      dtr_ckpt_stats st;
      dtr_ckpt_last_stats(ck, &st);
      printf("ckpt_worker rank %d: saved step %lld (blocked %.4f s, total %.4f s, %llu -> %llu bytes)\n",
             g_rank, (long long)s, st.blocking_s, st.total_s, (unsigned long long)st.raw_bytes,
             (unsigned long long)st.stored_bytes);
    } else {
      printf("ckpt_worker rank %d: save step %lld failed: %s: %s\n", g_rank, (long long)s, dtr_strerror(rc),
             dtr_ckpt_last_error(ck));
      if (!fail_ok) bad = 1;
    }
    fflush(stdout);
  }

  if (expect && !bad) {
    scramble(&x);
    state before = x;
    int64_t step = -1;
    dtr_result rc = dtr_ckpt_load(ck, &step);
    if (!strcmp(expect, "none") || !strcmp(expect, "error")) {
      int want_nf = !strcmp(expect, "none");
      int ok = want_nf ? rc == DTR_ERR_NOT_FOUND : (rc != DTR_OK && rc != DTR_ERR_NOT_FOUND);
      /* Nothing registered was touched. */
      ok = ok && x.lr == before.lr && x.stepblob == -1 && x.norm[0] == before.norm[0];
      printf("ckpt_worker rank %d: load: %s: %s (%s)\n", g_rank, dtr_strerror(rc), dtr_ckpt_last_error(ck),
             ok ? "as expected" : "NOT as expected");
      bad |= !ok;
    } else if (rc != DTR_OK) {
      printf("ckpt_worker rank %d: load failed: %s: %s\n", g_rank, dtr_strerror(rc), dtr_ckpt_last_error(ck));
      bad = 1;
    } else {
      int from = saved_world > 0 && g_rank >= saved_world ? 0 : g_rank;
      long checked = 0, wrong = check_values(&x, step, from, &checked);
      printf("ckpt_worker rank %d: loaded step %lld, %ld values checked, %ld wrong\n", g_rank,
             (long long)step, checked, wrong);
      if (wrong || step != atoll(expect)) bad = 1;
    }
    fflush(stdout);
  }
  dtr_ckpt_destroy(ck);
  dtr_comm_destroy(comm);
  dtr_store_close(store);
  free(x.emb);
  free(x.proj);
  free(x.pad);
  return bad;
}
