/* ckpt_perf — checkpoint codec and checkpointer figures, nccl-tests style:
 *   ckpt_perf codec [--size 64M] [--chunk 4M] [--level 1] [--json FILE] [--threshold] [--dump DIR] [--wall]
 * One row per tensor kind: size, type, stored bytes, ratio, single-thread compress and decompress GB/s
 * (of raw bytes; best of --reps passes over every chunk), the same for libzstd at --level on the raw
 * bytes of the same chunks (the anchor), and #wrong (bytes that did not round-trip). Speeds are per
 * second of the thread's CPU time (per core, whatever else the machine runs); --wall uses wall time.
 * --threshold exits 1 when a target of the checkpoint issue is missed: ratio bf16 >= 1.45, f32 rows
 * >= 1.18, compress >= 0.7 GB/s, decompress >= 2 GB/s. --dump writes each tensor's raw bytes to
 * DIR/<name>.bin for the anchors in ckpt_vs_anchors.sh (zstd CLI, torch.save).
 *
 * --from EXPORT.safetensors takes real tensors instead: a trainer checkpoint exported with `dtrain ckpt
 * export` (weights, their bf16 rounding, and AdamW's m and v).
 *
 * Synthetic tensors otherwise (seeded, so every run sees the same bytes):
 *   weight_bf16, weight_f32  ~ N(0, 0.02), the usual transformer init (bf16 rounded to nearest even)
 *   exp_avg_f32      Adam m, an EMA of gradients g ~ N(0, 1e-3): m ~ N(0, (0.23e-3)^2), where
 *                    0.23 = sqrt((1-b1)/(1+b1)) for b1 = 0.9
 *   exp_avg_sq_f32   Adam v early in training: (1-b2) times the mean of two squared gradients,
 *                    v = 1e-3 * (1e-3)^2 * (g1^2 + g2^2) / 2, g ~ N(0,1): squares of gaussians, spread
 *                    over many octaves, never negative
 *   exp_avg_rows_f32 exp_avg whose gradient scale varies per row of 4096 (log-normal, sigma 1 in log
 *                    space, around 1e-3): a harder, no-target row showing what spread exponents cost
 *
 *   ckpt_perf save [--size 64M] [--threads 1] [--reps 2] [--dir DIR]
 * The five tensors (the state torch_save.py saves) through the checkpointer (include/dtrain/ckpt.h), one
 * rank: dtr_ckpt_save against dtr_ckpt_save_async, blocking and total wall seconds (best of --reps) and
 * seconds per GB of raw state.
 *
 *   dtrain launch --nproc-per-node 4 -- ckpt_perf reshard --phase save --dir DIR [--size 64M]
 *   dtrain launch --nproc-per-node 2 -- ckpt_perf reshard --phase load --dir DIR [--size 64M]
 * Four [R, 1024] tensors split by rows over the ranks, saved by one launch and loaded by another with
 * any rank count; every loaded element is checked against the generator (#wrong). Time is the
 * slowest rank's. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zstd.h>

#include "bench/bench_args.h"
#include "checkpoint/ckpt_format.h"
#include "checkpoint/safetensors.h"
#include "dtrain/ckpt.h"
#include "dtrain/comm.h"
#include "dtrain/store.h"

typedef struct opts {
  const char *mode;
  size_t size, chunk;
  int level, reps, threshold, threads;
  const char *json, *dump, *dir, *phase, *from;
} opts;

typedef struct tensor {
  const char *name;
  dtr_dtype dtype;
  double min_ratio; /* the target */
  void *data;
  size_t bytes;
} tensor;

/* Per-core figures: this thread's CPU time, so that other processes on a shared machine do not count
 * against the codec (wall time would, and it is what --wall reports). */
static int use_wall;
static double now_s(void) {
  struct timespec ts;
  clock_gettime(use_wall ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: ckpt_perf codec [--size 64M] [--chunk 4M] [--level 1] [--reps 3] [--json FILE]\n"
          "                       [--threshold] [--dump DIR] [--wall] [--from EXPORT.safetensors]\n"
          "       ckpt_perf save [--size 64M] [--chunk 4M] [--level 1] [--threads 1] [--reps 2] [--dir DIR]\n"
          "       dtrain launch --nproc-per-node N -- ckpt_perf reshard --phase save|load --dir DIR [--size "
          "64M]\n");
}

static int parse_args(int argc, char **argv, opts *o) {
  *o = (opts){.mode = NULL, .size = 64u << 20, .chunk = 4u << 20, .level = 1, .reps = 3, .threads = 1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(s) (!strcmp(a, s) && v && (i++, 1))
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      exit(0);
    } else if (ARG("--size")) {
      if (bench_parse_bytes(v, &o->size) || o->size < 1024)
        return fprintf(stderr, "ckpt_perf: bad --size %s\n", v), -1;
    } else if (ARG("--chunk")) {
      if (bench_parse_bytes(v, &o->chunk) || o->chunk < 64)
        return fprintf(stderr, "ckpt_perf: bad --chunk %s\n", v), -1;
    } else if (ARG("--level")) {
      o->level = atoi(v);
    } else if (ARG("--reps")) {
      o->reps = atoi(v);
      if (o->reps < 1 || o->reps > 100) return fprintf(stderr, "ckpt_perf: bad --reps %s\n", v), -1;
    } else if (ARG("--json")) {
      o->json = v;
    } else if (ARG("--from")) {
      o->from = v;
    } else if (ARG("--dump")) {
      o->dump = v;
    } else if (ARG("--dir")) {
      o->dir = v;
    } else if (ARG("--phase")) {
      o->phase = v;
    } else if (ARG("--threads")) {
      o->threads = atoi(v);
      if (o->threads < 1 || o->threads > 256) return fprintf(stderr, "ckpt_perf: bad --threads %s\n", v), -1;
    } else if (!strcmp(a, "--wall")) {
      use_wall = 1;
    } else if (!strcmp(a, "--threshold")) {
      o->threshold = 1;
    } else if (!o->mode && a[0] != '-') {
      o->mode = a;
    } else {
      return fprintf(stderr, "ckpt_perf: unknown or incomplete argument %s\n", a), -1;
    }
#undef ARG
  }
  if (!o->mode) return fprintf(stderr, "ckpt_perf: which mode? (codec, save, reshard)\n"), -1;
  return 0;
}

/* xorshift64* + Box-Muller: fast, seeded, and the same bytes on every run. */
typedef struct rng {
  uint64_t s;
  double spare;
  int has_spare;
} rng;
static double uniform(rng *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return (double)((r->s * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) + 0x1p-54;
}
static double gauss(rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  double m = sqrt(-2 * log(uniform(r))), a = 6.283185307179586 * uniform(r);
  r->spare = m * sin(a);
  r->has_spare = 1;
  return m * cos(a);
}
static uint16_t to_bf16(float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  return (uint16_t)((v + 0x7fff + ((v >> 16) & 1)) >> 16); /* round to nearest even, as torch does */
}

#define ROW 4096 /* elements per "row" sharing one gradient scale */

#define NT 5

static int make_tensors(size_t size, tensor *t) {
  t[0] = (tensor){"weight_bf16", DTR_BF16, 1.45, NULL, size};
  t[1] = (tensor){"weight_f32", DTR_F32, 1.18, NULL, size};
  t[2] = (tensor){"exp_avg_f32", DTR_F32, 1.18, NULL, size};
  t[3] = (tensor){"exp_avg_sq_f32", DTR_F32, 1.18, NULL, size};
  t[4] = (tensor){"exp_avg_rows_f32", DTR_F32, 0, NULL, size}; /* no target: a harder variant */
  rng r = {.s = 0x2545F4914F6CDD1Dull};
  for (int k = 0; k < NT; k++) {
    size_t es = dtr_dtype_size(t[k].dtype), n = size / es;
    t[k].bytes = n * es;
    t[k].data = malloc(t[k].bytes);
    if (!t[k].data) return -1;
    double scale = 1e-3;
    for (size_t i = 0; i < n; i++) {
      if (k == 4 && i % ROW == 0) scale = 1e-3 * exp(gauss(&r));
      double g = gauss(&r);
      switch (k) {
        case 0:
          ((uint16_t *)t[k].data)[i] = to_bf16((float)(0.02 * g));
          break;
        case 1:
          ((float *)t[k].data)[i] = (float)(0.02 * g);
          break;
        case 2:
        case 4:
          ((float *)t[k].data)[i] = (float)(0.2294 * scale * g);
          break;
        default: {
          double g2 = gauss(&r);
          ((float *)t[k].data)[i] = (float)(1e-3 * scale * scale * (g * g + g2 * g2) / 2);
        }
      }
    }
  }
  return 0;
}

/* Real tensors instead of synthetic ones: a trainer checkpoint exported with `dtrain ckpt export`.
 * weight_f32 = every F32 tensor not under adamw.; weight_bf16 = the same values rounded to bf16 (what a
 * bf16 run keeps); exp_avg_f32 / exp_avg_sq_f32 = the tensors under adamw.m/ and adamw.v/. */
static int append_tensor(tensor *t, const void *src, size_t bytes) {
  void *p = realloc(t->data, t->bytes + bytes);
  if (!p) return -1;
  memcpy((char *)p + t->bytes, src, bytes);
  t->data = p;
  t->bytes += bytes;
  return 0;
}

static int load_tensors(const char *path, tensor *t) {
  t[0] = (tensor){"weight_bf16", DTR_BF16, 1.45, NULL, 0};
  t[1] = (tensor){"weight_f32", DTR_F32, 1.18, NULL, 0};
  t[2] = (tensor){"exp_avg_f32", DTR_F32, 1.18, NULL, 0};
  t[3] = (tensor){"exp_avg_sq_f32", DTR_F32, 1.18, NULL, 0};
  t[4] = (tensor){"(none)", DTR_F32, 0, NULL, 0};
  char err[512];
  dtr__sft_file *f = NULL;
  if (dtr__sft_open(path, &f, err, sizeof err)) return fprintf(stderr, "ckpt_perf: %s\n", err), -1;
  int rc = 0;
  for (int i = 0; i < f->ntensors && !rc; i++) {
    const dtr__sft_tensor *x = &f->tensors[i];
    if (x->dtype != DTR_F32) continue;
    size_t bytes = (size_t)(x->end - x->begin);
    float *buf = malloc(bytes ? bytes : 1);
    if (!buf || dtr__sft_read(f, i, buf, err, sizeof err)) {
      fprintf(stderr, "ckpt_perf: %s\n", buf ? err : "out of memory");
      free(buf);
      rc = -1;
      break;
    }
    int k = !strncmp(x->name, "adamw.m/", 8) ? 2 : !strncmp(x->name, "adamw.v/", 8) ? 3 : 1;
    rc = append_tensor(&t[k], buf, bytes);
    if (!rc && k == 1) {
      size_t n = bytes / 4;
      uint16_t *h = malloc(n * 2 + 2);
      if (!h) rc = -1;
      for (size_t j = 0; h && j < n; j++) h[j] = to_bf16(buf[j]);
      if (!rc) rc = append_tensor(&t[0], h, n * 2);
      free(h);
    }
    free(buf);
  }
  dtr__sft_close(f);
  if (!rc && (!t[1].bytes || !t[2].bytes || !t[3].bytes)) {
    fprintf(stderr, "ckpt_perf: %s lacks weights or adamw.m/ and adamw.v/ tensors (a trainer export?)\n",
            path);
    rc = -1;
  }
  return rc;
}

typedef struct row {
  size_t stored, zstored;
  double ratio, comp, decomp, zratio, zcomp, zdecomp;
  long long wrong;
} row;

/* One tensor through the codec and through plain libzstd, chunk by chunk, best of reps passes. */
static int run_codec_row(const opts *o, const tensor *t, row *out) {
  size_t es = dtr_dtype_size(t->dtype), chunk = o->chunk / es * es;
  size_t nch = (t->bytes + chunk - 1) / chunk, cap = dtr__codec_bound(chunk),
         zcap = ZSTD_compressBound(chunk);
  uint8_t *enc = malloc(nch * cap), *zenc = malloc(nch * zcap), *scratch = malloc(chunk),
          *back = malloc(t->bytes);
  size_t *len = calloc(nch, sizeof *len), *zlen = calloc(nch, sizeof *zlen);
  uint32_t *codec = calloc(nch, sizeof *codec);
  dtr__codec_ctx *cx = NULL;
  ZSTD_CCtx *zc = ZSTD_createCCtx();
  ZSTD_DCtx *zd = ZSTD_createDCtx();
  int rc = -1;
  if (!enc || !zenc || !scratch || !back || !len || !zlen || !codec || !zc || !zd ||
      dtr__codec_ctx_create(&cx) != DTR_OK) {
    fprintf(stderr, "ckpt_perf: out of memory for %s\n", t->name);
    goto done;
  }
  ZSTD_CCtx_setParameter(zc, ZSTD_c_compressionLevel, o->level);
  const uint8_t *src = t->data;
  double best[4] = {1e30, 1e30, 1e30, 1e30};
  for (int rep = 0; rep < o->reps; rep++) {
    double t0 = now_s();
    for (size_t c = 0; c < nch; c++) {
      size_t raw = c + 1 < nch ? chunk : t->bytes - c * chunk;
      if (dtr__codec_encode(cx, src + c * chunk, raw, t->dtype, o->level, scratch, enc + c * cap, cap,
                            &len[c], &codec[c]) != DTR_OK) {
        fprintf(stderr, "ckpt_perf: encoding chunk %zu of %s failed\n", c, t->name);
        goto done;
      }
    }
    double t1 = now_s();
    for (size_t c = 0; c < nch; c++) {
      size_t raw = c + 1 < nch ? chunk : t->bytes - c * chunk;
      if (dtr__codec_decode(cx, codec[c], enc + c * cap, len[c], t->dtype, back + c * chunk, raw, scratch) !=
          DTR_OK) {
        fprintf(stderr, "ckpt_perf: decoding chunk %zu of %s failed\n", c, t->name);
        goto done;
      }
    }
    double t2 = now_s();
    for (size_t c = 0; c < nch; c++) {
      size_t raw = c + 1 < nch ? chunk : t->bytes - c * chunk;
      zlen[c] = ZSTD_compress2(zc, zenc + c * zcap, zcap, src + c * chunk, raw);
      if (ZSTD_isError(zlen[c])) goto done;
    }
    double t3 = now_s();
    for (size_t c = 0; c < nch; c++) {
      size_t raw = c + 1 < nch ? chunk : t->bytes - c * chunk;
      if (ZSTD_decompressDCtx(zd, scratch, chunk, zenc + c * zcap, zlen[c]) != raw) goto done;
    }
    double t4 = now_s();
    double d[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
    for (int k = 0; k < 4; k++)
      if (d[k] < best[k]) best[k] = d[k];
  }
  *out = (row){0};
  for (size_t c = 0; c < nch; c++) {
    out->stored += len[c];
    out->zstored += zlen[c];
  }
  for (size_t i = 0; i < t->bytes; i++) out->wrong += back[i] != src[i];
  out->ratio = (double)t->bytes / out->stored;
  out->zratio = (double)t->bytes / out->zstored;
  out->comp = t->bytes / best[0] / 1e9;
  out->decomp = t->bytes / best[1] / 1e9;
  out->zcomp = t->bytes / best[2] / 1e9;
  out->zdecomp = t->bytes / best[3] / 1e9;
  rc = 0;
done:
  dtr__codec_ctx_destroy(cx);
  ZSTD_freeCCtx(zc);
  ZSTD_freeDCtx(zd);
  free(enc);
  free(zenc);
  free(scratch);
  free(back);
  free(len);
  free(zlen);
  free(codec);
  return rc;
}

static int dump_tensor(const char *dir, const tensor *t) {
  char path[4096];
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/%s.bin", dir, t->name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(t->data, 1, t->bytes, f) != t->bytes || fclose(f) != 0) {
    fprintf(stderr, "ckpt_perf: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

static int mode_codec(const opts *o) {
  tensor t[NT];
  if (o->from ? load_tensors(o->from, t) : make_tensors(o->size, t))
    return fprintf(stderr, "ckpt_perf: %s\n", o->from ? "cannot use --from" : "out of memory"), 2;
  FILE *js = NULL;
  if (o->json && !(js = fopen(o->json, "w"))) fprintf(stderr, "ckpt_perf: cannot write %s\n", o->json);
  printf(
      "# ckpt_perf codec: level %d, chunk %zu bytes, best of %d passes, one thread; GB/s of raw bytes per "
      "%s\n",
      o->level, o->chunk, o->reps, use_wall ? "wall second" : "second of thread CPU time");
  printf(
      "# dtrain = byte planes (exponent byte first) + zstd; zstd = libzstd level %d on the same raw chunks\n",
      o->level);
  printf("%12s %16s %6s %12s %8s %10s %10s %8s %10s %10s %7s\n", "size", "tensor", "type", "stored", "ratio",
         "comp", "decomp", "zstd", "zcomp", "zdecomp", "#wrong");
  printf("%12s %16s %6s %12s %8s %10s %10s %8s %10s %10s %7s\n", "(B)", "", "", "(B)", "", "(GB/s)", "(GB/s)",
         "ratio", "(GB/s)", "(GB/s)", "");
  if (js)
    fprintf(
        js,
        "{\"bench\": \"ckpt_perf\", \"mode\": \"codec\", \"level\": %d, \"chunk\": %zu, \"clock\": \"%s\", "
        "\"rows\": [",
        o->level, o->chunk, use_wall ? "wall" : "thread_cpu");
  int missed = 0;
  long long wrong = 0;
  if (o->from)
    printf("# tensors: %s (a trainer checkpoint's export), weight_bf16 = its weights rounded\n", o->from);
  for (int k = 0; k < NT; k++) {
    row r;
    if (!t[k].bytes) continue;
    if (o->dump && dump_tensor(o->dump, &t[k])) return 2;
    if (run_codec_row(o, &t[k], &r)) return fprintf(stderr, "ckpt_perf: %s failed\n", t[k].name), 2;
    wrong += r.wrong;
    printf("%12zu %16s %6s %12zu %8.3f %10.3f %10.3f %8.3f %10.3f %10.3f %7lld\n", t[k].bytes, t[k].name,
           dtr_dtype_name(t[k].dtype), r.stored, r.ratio, r.comp, r.decomp, r.zratio, r.zcomp, r.zdecomp,
           r.wrong);
    if (js)
      fprintf(
          js,
          "%s\n  {\"tensor\": \"%s\", \"dtype\": \"%s\", \"bytes\": %zu, \"stored\": %zu, \"ratio\": %.4f, "
          "\"comp_gbps\": %.4f, \"decomp_gbps\": %.4f, \"zstd_ratio\": %.4f, \"zstd_comp_gbps\": %.4f, "
          "\"zstd_decomp_gbps\": %.4f, \"wrong\": %lld}",
          k ? "," : "", t[k].name, dtr_dtype_name(t[k].dtype), t[k].bytes, r.stored, r.ratio, r.comp,
          r.decomp, r.zratio, r.zcomp, r.zdecomp, r.wrong);
    if (o->threshold) {
      if (t[k].min_ratio > 0 && r.ratio < t[k].min_ratio)
        printf("# %s: ratio %.3f below the target %.2f\n", t[k].name, r.ratio, t[k].min_ratio), missed++;
      if (r.comp < 0.7) printf("# %s: compression %.3f GB/s below 0.7\n", t[k].name, r.comp), missed++;
      if (r.decomp < 2.0) printf("# %s: decompression %.3f GB/s below 2.0\n", t[k].name, r.decomp), missed++;
    }
    free(t[k].data);
  }
  printf("# Out of bounds values : %lld %s\n", wrong, wrong ? "FAILED" : "OK");
  if (o->threshold) printf("# targets: %s\n", missed ? "MISSED (exit 1)" : "met");
  if (js) {
    fprintf(js, "\n], \"wrong\": %lld, \"targets_missed\": %d}\n", wrong, o->threshold ? missed : -1);
    fclose(js);
  }
  return wrong || missed ? 1 : 0;
}

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int rm_rf(const char *dir) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd);
}

/* save: the tensors of the codec mode (bf16 weights, f32 master weights, Adam moments) through the
 * real checkpointer, single rank: dtr_ckpt_save (the caller blocks for
 * snapshot, compression, write, fsync and commit) against dtr_ckpt_save_async (the caller blocks for
 * the snapshot only). Wall time: this is I/O. */
static int mode_save(const opts *o) {
  tensor t[NT];
  if (make_tensors(o->size, t)) return fprintf(stderr, "ckpt_perf: out of memory\n"), 2;
  char tmpl[] = "/tmp/ckpt_perf.XXXXXX";
  const char *dir = o->dir;
  if (!dir && !(dir = mkdtemp(tmpl))) return fprintf(stderr, "ckpt_perf: mkdtemp: %s\n", strerror(errno)), 2;
  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  cfg.level = o->level;
  cfg.chunk_bytes = o->chunk;
  cfg.threads = o->threads;
  cfg.keep = 2;
  cfg.job_id = "ckpt_perf";
  char err[1024] = "";
  dtr_ckpt *ck = NULL;
  int rc = 0;
  if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "ckpt_perf: dtr_ckpt_create: %s\n", err);
    rc = 2;
    goto done;
  }
  for (int k = 0; k < NT; k++) {
    int64_t shape[1] = {(int64_t)(t[k].bytes / dtr_dtype_size(t[k].dtype))};
    dtr_ckpt_tensor ct = dtr_ckpt_tensor_full(t[k].name, t[k].dtype, 1, shape, t[k].data);
    if (dtr_ckpt_add_tensor(ck, &ct) != DTR_OK) {
      fprintf(stderr, "ckpt_perf: add %s: %s\n", t[k].name, dtr_ckpt_last_error(ck));
      rc = 2;
      goto done;
    }
  }
  printf("# ckpt_perf save: %d tensors of %zu bytes, level %d, chunk %zu, %d compression thread(s), dir %s\n",
         NT, o->size, o->level, o->chunk, o->threads, dir);
  printf("# blocking = time the caller waits; total = until committed (fsynced, manifest, rename)\n");
  printf("%6s %12s %12s %7s %10s %10s %10s %10s %9s\n", "mode", "raw(B)", "stored(B)", "ratio", "block(s)",
         "total(s)", "block s/GB", "total s/GB", "GB/s");
  int64_t step = 1;
  for (int async = 0; async < 2 && rc == 0; async++) {
    double best_b = 1e30, best_t = 1e30;
    dtr_ckpt_stats st = {0};
    for (int rep = 0; rep < o->reps; rep++, step++) {
      double t0 = wall_s(), t1, t2;
      dtr_result r;
      if (async) {
        r = dtr_ckpt_save_async(ck, step);
        t1 = wall_s();
        if (r == DTR_OK) r = dtr_ckpt_wait(ck);
        t2 = wall_s();
      } else {
        r = dtr_ckpt_save(ck, step);
        t1 = t2 = wall_s();
      }
      if (r != DTR_OK) {
        fprintf(stderr, "ckpt_perf: %s save of step %lld: %s: %s\n", async ? "async" : "sync",
                (long long)step, dtr_strerror(r), dtr_ckpt_last_error(ck));
        rc = 1;
        break;
      }
      dtr_ckpt_last_stats(ck, &st);
      if (t1 - t0 < best_b) best_b = t1 - t0;
      if (t2 - t0 < best_t) best_t = t2 - t0;
    }
    if (rc) break;
    double gb = st.raw_bytes / 1e9;
    printf("%6s %12llu %12llu %7.3f %10.4f %10.4f %10.4f %10.4f %9.3f\n", async ? "async" : "sync",
           (unsigned long long)st.raw_bytes, (unsigned long long)st.stored_bytes,
           st.stored_bytes ? (double)st.raw_bytes / st.stored_bytes : 0.0, best_b, best_t, best_b / gb,
           best_t / gb, gb / best_t);
  }
done:
  dtr_ckpt_destroy(ck);
  if (!o->dir) rm_rf(dir);
  for (int k = 0; k < NT; k++) free(t[k].data);
  return rc;
}

/* reshard: every rank holds a slab of rows of four [R, 1024] tensors (as tensor parallelism would)
 * and a per-rank blob. Values are a function of the global element index only, so any layout can
 * check what it loaded. Phase save writes step 1; phase load loads it into however many ranks this
 * launch has, and counts elements that differ from the generator. */
#define RS_COLS 1024
static uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
static float rs_value(int k, uint64_t i) {
  uint64_t h = splitmix(i * 4 + (uint64_t)k);
  double u1 = ((h >> 11) + 0.5) * (1.0 / 9007199254740992.0), u2 = (double)(h & 0x7ff) / 2048.0;
  double g = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
  return (float)(k == 3 ? 1e-9 * g * g : k == 2 ? 2.3e-4 * g : 0.02 * g);
}

static int env_int(const char *k, int def) {
  const char *v = getenv(k);
  return v && *v ? atoi(v) : def;
}

static int mode_reshard(const opts *o) {
  int rank = env_int("RANK", 0), size = env_int("WORLD_SIZE", 1);
  if (!o->dir || !o->phase || (strcmp(o->phase, "save") && strcmp(o->phase, "load")))
    return fprintf(stderr, "ckpt_perf reshard: needs --phase save|load and --dir DIR\n"), 2;
  char err[1024] = "";
  dtr_store *store = NULL;
  dtr_comm *comm = NULL;
  if (size > 1) {
    if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK)
      return fprintf(stderr, "ckpt_perf rank %d: cannot reach the store (run under dtrain launch): %s\n",
                     rank, err),
             2;
    dtr_comm_config cc = dtr_comm_config_default();
    cc.name = "ckpt_perf";
    if (dtr_comm_create(store, rank, size, &cc, &comm, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "ckpt_perf rank %d: dtr_comm_create: %s\n", rank, err);
      dtr_store_close(store);
      return 2;
    }
  }
  /* Rows: a multiple of 4 (and so of 2), about size bytes of f32 per tensor. */
  int64_t rows = (int64_t)(o->size / 4 / RS_COLS) / 4 * 4;
  if (rows < 4) rows = 4;
  int64_t r0 = rows * rank / size, r1 = rows * (rank + 1) / size;
  static const char *names[4] = {"w_bf16", "w_f32", "exp_avg", "exp_avg_sq"};
  static const dtr_dtype types[4] = {DTR_BF16, DTR_F32, DTR_F32, DTR_F32};
  void *data[4] = {0};
  uint8_t blob[64];
  int rc = 0, load = !strcmp(o->phase, "load");
  dtr_ckpt *ck = NULL;
  dtr_ckpt_config cfg = dtr_ckpt_config_default(o->dir);
  cfg.comm = comm;
  cfg.level = o->level;
  cfg.chunk_bytes = o->chunk;
  cfg.threads = o->threads;
  cfg.keep = -1;
  cfg.job_id = "ckpt_perf_reshard";
  if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "ckpt_perf rank %d: dtr_ckpt_create: %s\n", rank, err);
    rc = 2;
    goto done;
  }
  uint64_t raw = 0;
  for (int k = 0; k < 4; k++) {
    size_t es = dtr_dtype_size(types[k]), n = (size_t)((r1 - r0) * RS_COLS);
    data[k] = calloc(n ? n : 1, es);
    if (!data[k]) {
      rc = 2;
      goto done;
    }
    raw += n * es;
    for (size_t i = 0; i < n && !load; i++) {
      float v = rs_value(k, (uint64_t)r0 * RS_COLS + i);
      if (types[k] == DTR_BF16)
        ((uint16_t *)data[k])[i] = to_bf16(v);
      else
        ((float *)data[k])[i] = v;
    }
    dtr_ckpt_tensor t = {.name = names[k], .dtype = types[k], .ndim = 2, .data = data[k]};
    t.shape[0] = rows;
    t.shape[1] = RS_COLS;
    t.offset[0] = t.save_offset[0] = r0;
    t.extent[0] = t.save_extent[0] = r1 - r0;
    t.extent[1] = t.save_extent[1] = RS_COLS;
    if (dtr_ckpt_add_tensor(ck, &t) != DTR_OK) {
      fprintf(stderr, "ckpt_perf rank %d: add %s: %s\n", rank, names[k], dtr_ckpt_last_error(ck));
      rc = 2;
      goto done;
    }
  }
  for (size_t i = 0; i < sizeof blob; i++) blob[i] = load ? 0 : (uint8_t)(rank * 31 + i);
  if (dtr_ckpt_add_blob(ck, "rng", blob, sizeof blob) != DTR_OK) {
    rc = 2;
    goto done;
  }
  double t0 = wall_s();
  int64_t step = 1;
  dtr_result r = load ? dtr_ckpt_load(ck, &step) : dtr_ckpt_save(ck, 1);
  double my_s = wall_s() - t0;
  if (r != DTR_OK) {
    fprintf(stderr, "ckpt_perf rank %d: %s: %s: %s\n", rank, o->phase, dtr_strerror(r),
            dtr_ckpt_last_error(ck));
    rc = 1;
  }
  double wrong = 0;
  if (load && r == DTR_OK) {
    for (int k = 0; k < 4; k++) {
      size_t n = (size_t)((r1 - r0) * RS_COLS);
      for (size_t i = 0; i < n; i++) {
        float v = rs_value(k, (uint64_t)r0 * RS_COLS + i);
        if (types[k] == DTR_BF16)
          wrong += ((uint16_t *)data[k])[i] != to_bf16(v);
        else
          wrong += memcmp(&((float *)data[k])[i], &v, 4) != 0;
      }
    }
    for (size_t i = 0; i < sizeof blob; i++) wrong += blob[i] != (uint8_t)(rank * 31 + i);
    if (step != 1) wrong += 1;
  }
  double agg[3] = {my_s, wrong, (double)raw}, mx[3];
  memcpy(mx, agg, sizeof mx);
  if (comm) {
    dtr_all_reduce(comm, &agg[0], &mx[0], 1, DTR_F64, DTR_MAX, NULL);
    dtr_all_reduce(comm, &agg[1], &mx[1], 2, DTR_F64, DTR_SUM, NULL);
  }
  if (rank == 0) {
    printf("# ckpt_perf reshard: %s with %d rank(s), 4 tensors [%lld, %d] split by rows, level %d, dir %s\n",
           o->phase, size, (long long)rows, RS_COLS, o->level, o->dir);
    printf("%6s %6s %12s %10s %9s %7s\n", "phase", "ranks", "raw(B)", "time(s)", "GB/s", "#wrong");
    printf("%6s %6d %12.0f %10.4f %9.3f %7.0f\n", o->phase, size, mx[2], mx[0], mx[2] / mx[0] / 1e9, mx[1]);
  }
  if (mx[1] != 0) rc = 1;
done:
  dtr_ckpt_destroy(ck);
  for (int k = 0; k < 4; k++) free(data[k]);
  dtr_comm_destroy(comm);
  if (store) dtr_store_close(store);
  return rc;
}

int main(int argc, char **argv) {
  opts o;
  if (parse_args(argc, argv, &o)) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(o.mode, "codec")) return mode_codec(&o);
  if (!strcmp(o.mode, "save")) return mode_save(&o);
  if (!strcmp(o.mode, "reshard")) return mode_reshard(&o);
  fprintf(stderr, "ckpt_perf: unknown mode %s\n", o.mode);
  usage(stderr);
  return 2;
}
