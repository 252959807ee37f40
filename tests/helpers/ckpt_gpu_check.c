/* Checkpoints of tensors in CUDA device memory (DTR_CKPT_CUDA), checked bit for bit against values
 * computed here: f32 and bf16 tensors, whole and sharded (held box a part of the global shape, save box
 * a strided sub-box of it), a host tensor and a blob beside them; a sync save, then an async save whose
 * device memory is overwritten right after it returns; both steps loaded into fresh device buffers in
 * another layout. Prints the blocking time of the sync and the async save. Usage: ckpt_gpu_check DIR.
 * Exits 77 with a reason when the build has no CUDA or no device is visible, 1 on any failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/device.h"
#include "dtrain/ckpt.h"
#include "dtrain/common.h"
#include "runtime/model/kernels_cuda.h"

static int g_checks, g_failed;

static void report(int ok, const char *fmt, const char *what, const char *detail) {
  g_checks++;
  if (!ok) g_failed++;
  printf("%s ", ok ? "ok  " : "FAIL");
  printf(fmt, what, detail);
  printf("\n");
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One test tensor: the global shape, and a held box and save box for the save and a held box for the
 * load (another layout). */
typedef struct spec {
  const char *name;
  dtr_dtype dtype;
  int ndim;
  int64_t shape[3];
  int64_t off[3], ext[3];   /* held when saving */
  int64_t soff[3], sext[3]; /* saved */
  int64_t loff[3], lext[3]; /* held when loading (inside the saved box) */
} spec;

#define NSPEC 5
static const spec SPECS[NSPEC] = {
    /* big and whole: one contiguous device-to-host copy; loaded as a row slab */
    {"big_f32",
     DTR_F32,
     2,
     {16384, 2048, 0},
     {0, 0, 0},
     {16384, 2048, 0},
     {0, 0, 0},
     {16384, 2048, 0},
     {100, 0, 0},
     {7000, 2048, 0}},
    /* whole, loaded as a column slab (the load's strided case) */
    {"w_bf16",
     DTR_BF16,
     2,
     {1024, 1536, 0},
     {0, 0, 0},
     {1024, 1536, 0},
     {0, 0, 0},
     {1024, 1536, 0},
     {0, 512, 0},
     {1024, 512, 0}},
    /* a data-parallel share: save box a slab of dimension 0 inside the held box */
    {"slab_f32",
     DTR_F32,
     2,
     {999, 300, 0},
     {0, 0, 0},
     {999, 300, 0},
     {0, 0, 0},
     {999, 300, 0},
     {0, 0, 0},
     {999, 300, 0}},
    /* save box restricts the last dimension: one pitched 2-D copy */
    {"cols_bf16",
     DTR_BF16,
     2,
     {300, 256, 0},
     {0, 0, 0},
     {300, 256, 0},
     {0, 64, 0},
     {300, 128, 0},
     {10, 64, 0},
     {200, 128, 0}},
    /* sharded 3-D: held box a part of the global shape, save box a sub-box in every dimension (a 2-D
     * copy per index of dimension 0) */
    {"shard_f32",
     DTR_F32,
     3,
     {4, 96, 200},
     {0, 32, 0},
     {4, 64, 200},
     {1, 32, 20},
     {3, 64, 150},
     {1, 40, 50},
     {2, 50, 100}},
};

static int64_t elems(int nd, const int64_t *ext) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= ext[d];
  return n;
}

/* The value of global element g of tensor k at step s, as the dtype's bytes. */
static void value(dtr_dtype t, int k, int64_t s, uint64_t g, void *out) {
  uint64_t h = (g + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(k * 1000003 + s * 7919);
  h ^= h >> 29;
  if (t == DTR_F32) {
    float f = (float)(h % 200003) * 0.001f - 100.0f + (float)s;
    memcpy(out, &f, 4);
  } else {
    uint16_t b = (uint16_t)(0x3c00 + (h & 0x7ff)); /* finite bf16 patterns */
    memcpy(out, &b, 2);
  }
}

/* Fill a host buffer holding box (off, ext) of spec k's global shape with step s's values. */
static void fill_box(const spec *sp, int k, int64_t s, const int64_t *off, const int64_t *ext, void *out) {
  size_t es = dtr_dtype_size(sp->dtype);
  int nd = sp->ndim;
  int64_t n = elems(nd, ext), idx[3] = {0, 0, 0};
  for (int64_t i = 0; i < n; i++) {
    uint64_t g = 0;
    for (int d = 0; d < nd; d++) g = g * (uint64_t)sp->shape[d] + (uint64_t)(off[d] + idx[d]);
    value(sp->dtype, k, s, g, (char *)out + (size_t)i * es);
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < ext[d]) break;
      idx[d] = 0;
    }
  }
}

static dtr_cuda_ctx *g_ctx;

typedef struct bufs {
  void *dev[NSPEC];
  size_t bytes[NSPEC];
} bufs;

static void bufs_free(bufs *b) {
  for (int k = 0; k < NSPEC; k++) dtr__cuda_free(g_ctx, b->dev[k]);
  memset(b, 0, sizeof *b);
}

/* Fill device buffers of the save layout (load = 0) or the load layout (load = 1) with step s's
 * values (s >= 0) or zeros (s < 0). */
static int bufs_fill(bufs *b, int load, int64_t s) {
  for (int k = 0; k < NSPEC; k++) {
    const spec *sp = &SPECS[k];
    const int64_t *off = load ? sp->loff : sp->off, *ext = load ? sp->lext : sp->ext;
    if (s < 0) {
      if (dtr__cuda_zero(g_ctx, b->dev[k], b->bytes[k]) != DTR_OK) return -1;
      continue;
    }
    void *h = malloc(b->bytes[k]);
    if (!h) return -1;
    fill_box(sp, k, s, off, ext, h);
    dtr_result rc = dtr__cuda_upload(g_ctx, b->dev[k], h, b->bytes[k]);
    free(h);
    if (rc != DTR_OK) {
      printf("FAIL upload: %s\n", dtr__cuda_ctx_error(g_ctx));
      return -1;
    }
  }
  return dtr__cuda_sync(g_ctx) == DTR_OK ? 0 : -1;
}

static int bufs_make(bufs *b, int load, int64_t s) {
  memset(b, 0, sizeof *b);
  for (int k = 0; k < NSPEC; k++) {
    const spec *sp = &SPECS[k];
    b->bytes[k] = (size_t)elems(sp->ndim, load ? sp->lext : sp->ext) * dtr_dtype_size(sp->dtype);
    if (dtr__cuda_alloc(g_ctx, b->bytes[k], &b->dev[k]) != DTR_OK) {
      printf("FAIL cudaMalloc of %zu bytes: %s\n", b->bytes[k], dtr__cuda_ctx_error(g_ctx));
      return -1;
    }
  }
  return bufs_fill(b, load, s);
}

#define HOST_N 1000
#define BLOB_N 77

static dtr_ckpt *make_ckpt(const char *dir, bufs *b, int load, float *host, uint8_t *blob) {
  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  cfg.keep = -1;
  cfg.threads = 4;
  dtr_ckpt *ck = NULL;
  char err[512] = "";
  if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) != DTR_OK) {
    printf("FAIL create %s: %s\n", dir, err);
    return NULL;
  }
  for (int k = 0; k < NSPEC; k++) {
    const spec *sp = &SPECS[k];
    dtr_ckpt_tensor t;
    memset(&t, 0, sizeof t);
    t.name = sp->name;
    t.dtype = sp->dtype;
    t.ndim = sp->ndim;
    t.data = b->dev[k];
    t.device = DTR_CKPT_CUDA;
    for (int d = 0; d < sp->ndim; d++) {
      t.shape[d] = sp->shape[d];
      t.offset[d] = load ? sp->loff[d] : sp->off[d];
      t.extent[d] = load ? sp->lext[d] : sp->ext[d];
      t.save_offset[d] = load ? t.offset[d] : sp->soff[d];
      t.save_extent[d] = load ? t.extent[d] : sp->sext[d];
    }
    if (dtr_ckpt_add_tensor(ck, &t) != DTR_OK) {
      printf("FAIL register %s: %s\n", sp->name, dtr_ckpt_last_error(ck));
      dtr_ckpt_destroy(ck);
      return NULL;
    }
  }
  int64_t hn = HOST_N;
  dtr_ckpt_tensor ht = dtr_ckpt_tensor_full("host_f32", DTR_F32, 1, &hn, host);
  if (dtr_ckpt_add_tensor(ck, &ht) != DTR_OK || dtr_ckpt_add_blob(ck, "blob", blob, BLOB_N) != DTR_OK) {
    printf("FAIL register host tensor/blob: %s\n", dtr_ckpt_last_error(ck));
    dtr_ckpt_destroy(ck);
    return NULL;
  }
  return ck;
}

static void host_values(float *host, uint8_t *blob, int64_t s) {
  for (int i = 0; i < HOST_N; i++) host[i] = (float)i * 0.5f + (float)s;
  for (int i = 0; i < BLOB_N; i++) blob[i] = (uint8_t)(i * 3 + s);
}

/* Load step s into fresh zeroed device buffers in the load layout and compare bit for bit. */
static void check_load(const char *dir, int64_t s) {
  bufs b;
  float host[HOST_N];
  uint8_t blob[BLOB_N];
  memset(host, 0, sizeof host);
  memset(blob, 0, sizeof blob);
  char what[128];
  snprintf(what, sizeof what, "step %lld", (long long)s);
  if (bufs_make(&b, 1, -1) != 0) {
    report(0, "%s: load buffers%s", what, "");
    bufs_free(&b);
    return;
  }
  dtr_ckpt *ck = make_ckpt(dir, &b, 1, host, blob);
  dtr_result rc = ck ? dtr_ckpt_load_step(ck, s) : DTR_ERR_INVALID;
  report(rc == DTR_OK, "%s: loaded into device buffers in another layout%s", what,
         rc == DTR_OK ? "" : (ck ? dtr_ckpt_last_error(ck) : " (no checkpointer)"));
  if (rc == DTR_OK) {
    for (int k = 0; k < NSPEC; k++) {
      const spec *sp = &SPECS[k];
      void *got = malloc(b.bytes[k]), *want = malloc(b.bytes[k]);
      int ok = got && want && dtr__cuda_download(g_ctx, got, b.dev[k], b.bytes[k]) == DTR_OK;
      size_t bad = 0, es = dtr_dtype_size(sp->dtype);
      if (ok) {
        fill_box(sp, k, s, sp->loff, sp->lext, want);
        for (size_t i = 0; i < b.bytes[k] / es; i++)
          if (memcmp((char *)got + i * es, (char *)want + i * es, es)) bad++;
      }
      char detail[160];
      snprintf(detail, sizeof detail, " (%zu bytes, %s, %zu wrong elements)", b.bytes[k],
               dtr_dtype_name(sp->dtype), bad);
      char w[200];
      snprintf(w, sizeof w, "%s: %s", what, sp->name);
      report(ok && bad == 0, "%s equals the saved values bit for bit%s", w, detail);
      free(got);
      free(want);
    }
    float hw[HOST_N];
    uint8_t bw[BLOB_N];
    host_values(hw, bw, s);
    report(!memcmp(host, hw, sizeof hw) && !memcmp(blob, bw, sizeof bw), "%s: host tensor and blob%s", what,
           "");
  }
  dtr_ckpt_destroy(ck);
  bufs_free(&b);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc != 2) {
    fprintf(stderr, "usage: ckpt_gpu_check DIR (an empty scratch directory)\n");
    return 2;
  }
  const char *features = dtr_build_features();
  int has_cuda = strstr(features, "cuda") != NULL;
  int ndev = dtr__cuda_device_count();
  float host[HOST_N];
  uint8_t blob[BLOB_N];
  if (!has_cuda || ndev < 1) {
    /* Even then a device tensor must be refused cleanly, naming it. */
    char sub[4096], err[256] = "";
    snprintf(sub, sizeof sub, "%s/nodev", argv[1]);
    dtr_ckpt_config cfg = dtr_ckpt_config_default(sub);
    dtr_ckpt *ck = NULL;
    if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) != DTR_OK) {
      printf("FAIL ckpt_gpu_check: create %s: %s\n", sub, err);
      return 1;
    }
    int64_t n = HOST_N;
    dtr_ckpt_tensor t = dtr_ckpt_tensor_full("dev_tensor", DTR_F32, 1, &n, host);
    t.device = DTR_CKPT_CUDA;
    dtr_result rc = dtr_ckpt_add_tensor(ck, &t);
    int ok = rc == DTR_ERR_UNSUPPORTED && strstr(dtr_ckpt_last_error(ck), "'dev_tensor'");
    printf("%s device tensor refused: %s (%s)\n", ok ? "ok  " : "FAIL", dtr_strerror(rc),
           dtr_ckpt_last_error(ck));
    dtr_ckpt_destroy(ck);
    if (!ok) return 1;
    printf("ckpt_gpu_check: skipped: %s\n", has_cuda ? "no CUDA device visible" : "this build has no CUDA");
    return 77;
  }
  char err[512] = "";
  if (dtr__cuda_ctx_create(0, &g_ctx, err, sizeof err) != DTR_OK) {
    printf("FAIL ckpt_gpu_check: %d device(s) visible but the context failed: %s\n", ndev, err);
    return 1;
  }

  /* A host pointer registered as device memory is refused, naming the tensor. */
  {
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/refuse", argv[1]);
    dtr_ckpt_config cfg = dtr_ckpt_config_default(sub);
    dtr_ckpt *ck = NULL;
    if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) == DTR_OK) {
      int64_t n = HOST_N;
      dtr_ckpt_tensor t = dtr_ckpt_tensor_full("host_as_dev", DTR_F32, 1, &n, host);
      t.device = DTR_CKPT_CUDA;
      dtr_result rc = dtr_ckpt_add_tensor(ck, &t);
      report(rc == DTR_ERR_INVALID && strstr(dtr_ckpt_last_error(ck), "'host_as_dev'") &&
                 strstr(dtr_ckpt_last_error(ck), "not CUDA device memory"),
             "host memory registered as DTR_CKPT_CUDA refused: %s%s", dtr_ckpt_last_error(ck), "");
    } else {
      report(0, "create %s%s", sub, "");
    }
    dtr_ckpt_destroy(ck);
  }

  char dir[4096];
  snprintf(dir, sizeof dir, "%s/ck", argv[1]);
  bufs b;
  uint64_t raw = 0;
  if (bufs_make(&b, 0, 1) != 0) {
    printf("FAIL ckpt_gpu_check: device buffers\n");
    bufs_free(&b);
    dtr__cuda_ctx_destroy(g_ctx);
    return 1;
  }
  host_values(host, blob, 1);
  dtr_ckpt *ck = make_ckpt(dir, &b, 0, host, blob);
  if (!ck) {
    bufs_free(&b);
    dtr__cuda_ctx_destroy(g_ctx);
    return 1;
  }
  /* Warm-up save (step 0): allocates the pinned staging, so the timed saves compare like with like. */
  dtr_result rc = dtr_ckpt_save(ck, 0);
  report(rc == DTR_OK, "warm-up sync save%s%s", rc == DTR_OK ? "" : ": ",
         rc == DTR_OK ? "" : dtr_ckpt_last_error(ck));

  /* Step 1: synchronous. */
  dtr_ckpt_stats sync_st, async_st;
  double t0 = now();
  rc = dtr_ckpt_save(ck, 1);
  double sync_call = now() - t0;
  dtr_ckpt_last_stats(ck, &sync_st);
  report(rc == DTR_OK, "sync save of step 1%s%s", rc == DTR_OK ? "" : ": ",
         rc == DTR_OK ? "" : dtr_ckpt_last_error(ck));
  raw = sync_st.raw_bytes;

  /* Step 2: asynchronous; new values, overwritten (zeroed, host values changed) right after return. */
  int filled = bufs_fill(&b, 0, 2) == 0;
  report(filled, "step 2 values on the device%s%s", "", "");
  host_values(host, blob, 2);
  t0 = now();
  rc = dtr_ckpt_save_async(ck, 2);
  double async_call = now() - t0;
  int overwritten = 1;
  for (int k = 0; k < NSPEC; k++)
    if (b.dev[k] && dtr__cuda_zero(g_ctx, b.dev[k], b.bytes[k]) != DTR_OK) overwritten = 0;
  overwritten = overwritten && dtr__cuda_sync(g_ctx) == DTR_OK;
  host_values(host, blob, 99);
  dtr_result wrc = dtr_ckpt_wait(ck);
  dtr_ckpt_last_stats(ck, &async_st);
  report(rc == DTR_OK && wrc == DTR_OK && overwritten && filled,
         "async save of step 2, memory overwritten after return%s%s",
         rc == DTR_OK && wrc == DTR_OK ? "" : ": ",
         rc == DTR_OK && wrc == DTR_OK ? "" : dtr_ckpt_last_error(ck));
  dtr_ckpt_destroy(ck);
  bufs_free(&b);

  check_load(dir, 1);
  check_load(dir, 2);

  printf("snapshot: %.1f MB of device tensors + %d host bytes\n", (double)raw / 1e6,
         (int)(sizeof host + sizeof blob));
  printf("sync save:  blocked %.4f s (call %.4f s)\n", sync_st.blocking_s, sync_call);
  printf(
      "async save: blocked %.4f s (call %.4f s; %.1f GB/s device-to-host), total %.4f s in the background\n",
      async_st.blocking_s, async_call,
      async_st.blocking_s > 0 ? (double)raw / async_st.blocking_s / 1e9 : 0.0, async_st.total_s);
  /* The point of the async save: the caller waits for the copy, not for compression and the disk. */
  report(async_call < sync_call, "async save blocks less than a sync save%s%s", "", "");
  dtr__cuda_ctx_destroy(g_ctx);
  printf("ckpt_gpu_check: %d checks, %d failed\n", g_checks, g_failed);
  return g_failed ? 1 : 0;
}
