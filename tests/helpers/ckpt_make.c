/* ckpt_make — writes and checks checkpoints of known values through the public ckpt.h API, for the
 * `dtrain ckpt` tool tests. Alone it is one rank; under `dtrain launch --nproc-per-node N` each rank
 * holds its part of every tensor (split along dim 0, dim 1, replicated with a DP share, or saved by
 * rank 0 only), in one of two layouts (a, b) that split each tensor differently, so a checkpoint
 * written in one layout and checked in the other exercises resharding.
 *   ckpt_make write DIR [--steps 100,200] [--layout a|b] [--job-id ID] [--chunk-bytes N]
 *   ckpt_make check DIR [--step N] [--layout a|b] [--job-id ID] [--saved-world W] [--no-blobs]
 *   ckpt_make spec      the tensor table as JSON (name, dtype, shape, id) for the Python side
 * Element g (row-major index in the global shape) of tensor id at step s, with k = id*13 + s:
 *   floats ((g*7 + k) % 251 - 125) * 0.5 (exact in f16 and bf16); i32 g*3 - k*1000;
 *   i64 g*1000003 + k*2^33; u8 (g*5 + k) & 255.
 * Blobs per rank r: "rng" 24 bytes (r*31 + i*7 + s) & 255, "data_pos" int64 1000*s + r.
 * Exit 0 when every check held, 1 on a wrong value or failed call, 2 on bad usage. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtrain/ckpt.h"
#include "dtrain/comm.h"
#include "dtrain/store.h"
#include "tests/helpers/time_limit.h"

enum { SPLIT0, SPLIT1, REPL_PART, REPL_R0 };

typedef struct spec {
  const char *name;
  dtr_dtype t;
  int ndim;
  int64_t shape[2];
  int mode_a, mode_b;
} spec;

static const spec SPECS[] = {
    {"embed.weight", DTR_F32, 2, {256, 48}, SPLIT0, SPLIT1},
    {"proj.weight", DTR_BF16, 2, {40, 96}, SPLIT1, SPLIT0},
    {"ln.bias", DTR_F32, 1, {48, 0}, REPL_PART, REPL_PART},
    {"head.weight", DTR_F16, 2, {10, 3}, SPLIT0, REPL_PART},
    {"tok.count", DTR_I32, 2, {7, 5}, REPL_R0, SPLIT1},
    {"pos.ids", DTR_I64, 1, {300, 0}, SPLIT0, REPL_R0},
    {"mask", DTR_U8, 1, {17, 0}, REPL_R0, SPLIT0},
    {"temp", DTR_F64, 0, {0, 0}, REPL_R0, REPL_R0},
};
#define NSPECS ((int)(sizeof SPECS / sizeof SPECS[0]))
#define RNG_BYTES 24

static uint16_t f32_to_f16(float f) { /* exact for the values used here (no subnormals, no rounding) */
  uint32_t b;
  memcpy(&b, &f, 4);
  uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
  if ((b & 0x7fffffff) == 0) return sign;
  int e = (int)((b >> 23) & 0xff) - 127 + 15;
  return (uint16_t)(sign | (uint16_t)(e << 10) | (uint16_t)((b >> 13) & 0x3ff));
}

/* Element g of tensor id at step s, in the tensor's dtype, into out. */
static void value(int id, dtr_dtype t, int64_t g, int64_t s, void *out) {
  int64_t k = id * 13 + s;
  double fv = (double)(((g * 7 + k) % 251) - 125) * 0.5;
  switch (t) {
    case DTR_F32: {
      float f = (float)fv;
      memcpy(out, &f, 4);
      break;
    }
    case DTR_F64:
      memcpy(out, &fv, 8);
      break;
    case DTR_F16: {
      uint16_t h = f32_to_f16((float)fv);
      memcpy(out, &h, 2);
      break;
    }
    case DTR_BF16: {
      float f = (float)fv;
      uint32_t b;
      memcpy(&b, &f, 4);
      uint16_t h = (uint16_t)(b >> 16);
      memcpy(out, &h, 2);
      break;
    }
    case DTR_I32: {
      int32_t v = (int32_t)(g * 3 - k * 1000);
      memcpy(out, &v, 4);
      break;
    }
    case DTR_I64: {
      int64_t v = g * 1000003 + k * ((int64_t)1 << 33);
      memcpy(out, &v, 8);
      break;
    }
    case DTR_U8:
      *(uint8_t *)out = (uint8_t)((g * 5 + k) & 255);
      break;
  }
}

static void split(int64_t n, int parts, int part, int64_t *off, int64_t *ext) {
  *off = n * part / parts;
  *ext = n * (part + 1) / parts - *off;
}

/* The tensor as this rank holds and saves it in a layout. */
static dtr_ckpt_tensor make_tensor(const spec *s, int mode, int rank, int world) {
  dtr_ckpt_tensor t = dtr_ckpt_tensor_full(s->name, s->t, s->ndim, s->shape, NULL);
  if ((mode == SPLIT0 || mode == SPLIT1) && s->ndim > (mode == SPLIT1)) {
    int d = mode == SPLIT1;
    split(s->shape[d], world, rank, &t.offset[d], &t.extent[d]);
    t.save_offset[d] = t.offset[d];
    t.save_extent[d] = t.extent[d];
  } else if (mode == REPL_PART && s->ndim > 0) {
    t = dtr_ckpt_tensor_save_part(t, rank, world);
  } else if (rank != 0) { /* REPL_R0: only rank 0 saves */
    for (int d = 0; d < DTR_CKPT_MAX_DIMS; d++) t.save_extent[d] = 0;
  }
  return t;
}

static int64_t elems(int ndim, const int64_t *ext) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= ext[d];
  return n;
}

/* Global row-major index of the i-th element of t's held box. */
static int64_t global_index(const dtr_ckpt_tensor *t, int64_t i) {
  int64_t g = 0, stride = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t local = i % t->extent[d];
    i /= t->extent[d];
    g += (t->offset[d] + local) * stride;
    stride *= t->shape[d];
  }
  return g;
}

static void fill_blobs(uint8_t *rng, int64_t *pos, int rank, int64_t step) {
  for (int i = 0; i < RNG_BYTES; i++) rng[i] = (uint8_t)((rank * 31 + i * 7 + step) & 255);
  *pos = 1000 * step + rank;
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: ckpt_make write DIR [--steps 100,200] [--layout a|b] [--job-id ID] [--chunk-bytes N]\n"
      "       ckpt_make check DIR [--step N] [--layout a|b] [--job-id ID] [--saved-world W] [--no-blobs]\n"
      "       ckpt_make spec\n");
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "spec") == 0) {
    printf("[");
    for (int i = 0; i < NSPECS; i++) {
      printf("%s{\"name\": \"%s\", \"dtype\": \"%s\", \"id\": %d, \"shape\": [", i ? ", " : "", SPECS[i].name,
             dtr_dtype_name(SPECS[i].t), i);
      for (int d = 0; d < SPECS[i].ndim; d++) printf("%s%lld", d ? ", " : "", (long long)SPECS[i].shape[d]);
      printf("]}");
    }
    printf("]\n");
    return 0;
  }
  if (argc < 3 || (strcmp(argv[1], "write") && strcmp(argv[1], "check"))) {
    usage();
    return 2;
  }
  int writing = strcmp(argv[1], "write") == 0;
  const char *dir = argv[2], *steps_s = "100", *layout = "a", *job_id = NULL;
  int64_t step = -1;
  long chunk_bytes = 4096;
  int saved_world = -1, blobs = 1;
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--steps") && v && writing)
      steps_s = v, i++;
    else if (!strcmp(a, "--step") && v && !writing)
      step = atoll(v), i++;
    else if (!strcmp(a, "--layout") && v && (!strcmp(v, "a") || !strcmp(v, "b")))
      layout = v, i++;
    else if (!strcmp(a, "--job-id") && v)
      job_id = v, i++;
    else if (!strcmp(a, "--chunk-bytes") && v)
      chunk_bytes = atol(v), i++;
    else if (!strcmp(a, "--saved-world") && v)
      saved_world = atoi(v), i++;
    else if (!strcmp(a, "--no-blobs"))
      blobs = 0;
    else {
      fprintf(stderr, "ckpt_make: bad argument '%s'\n", a);
      usage();
      return 2;
    }
  }
  const char *re = getenv("RANK"), *we = getenv("WORLD_SIZE");
  int rank = re ? atoi(re) : 0, world = we ? atoi(we) : 1;
  if (world < 1 || rank < 0 || rank >= world) {
    fprintf(stderr, "ckpt_make: bad RANK/WORLD_SIZE\n");
    return 2;
  }
  if (saved_world < 0) saved_world = world;
  char who[48];
  snprintf(who, sizeof who, "ckpt_make rank %d", rank);
  time_limit_start(who, 150);

  char err[1024] = "";
  dtr_store *store = NULL;
  dtr_comm *comm = NULL;
  if (world > 1) {
    if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "ckpt_make rank %d: cannot connect to the store: %s\n", rank, err);
      return 1;
    }
    dtr_comm_config cc = dtr_comm_config_default();
    cc.timeout_ms = 60000;
    if (dtr_comm_create(store, rank, world, &cc, &comm, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "ckpt_make rank %d: dtr_comm_create: %s\n", rank, err);
      dtr_store_close(store);
      return 1;
    }
  }
  dtr_ckpt_config cfg = dtr_ckpt_config_default(dir);
  cfg.comm = comm;
  cfg.chunk_bytes = (size_t)chunk_bytes;
  cfg.job_id = job_id;
  cfg.keep = -1;
  dtr_ckpt *ck = NULL;
  int bad = 0;
  long checked = 0, wrong = 0;
  dtr_ckpt_tensor t[NSPECS];
  void *buf[NSPECS] = {0};
  uint8_t rng[RNG_BYTES];
  int64_t pos = 0;
  if (dtr_ckpt_create(&cfg, &ck, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "ckpt_make rank %d: dtr_ckpt_create: %s\n", rank, err);
    bad = 1;
    goto out;
  }
  for (int i = 0; i < NSPECS; i++) {
    t[i] = make_tensor(&SPECS[i], layout[0] == 'a' ? SPECS[i].mode_a : SPECS[i].mode_b, rank, world);
    size_t es = dtr_dtype_size(t[i].dtype);
    int64_t n = elems(t[i].ndim, t[i].extent);
    buf[i] = malloc((size_t)n * es + 1);
    memset(buf[i], 0xa5, (size_t)n * es + 1);
    t[i].data = buf[i];
    if (dtr_ckpt_add_tensor(ck, &t[i]) != DTR_OK) {
      fprintf(stderr, "ckpt_make rank %d: add_tensor %s: %s\n", rank, t[i].name, dtr_ckpt_last_error(ck));
      bad = 1;
      goto out;
    }
  }
  memset(rng, 0xa5, sizeof rng);
  if (blobs && (dtr_ckpt_add_blob(ck, "rng", rng, sizeof rng) != DTR_OK ||
                dtr_ckpt_add_blob(ck, "data_pos", &pos, sizeof pos) != DTR_OK)) {
    fprintf(stderr, "ckpt_make rank %d: add_blob: %s\n", rank, dtr_ckpt_last_error(ck));
    bad = 1;
    goto out;
  }
  if (writing) {
    char list[256];
    snprintf(list, sizeof list, "%s", steps_s);
    for (char *sv = strtok(list, ","); sv; sv = strtok(NULL, ",")) {
      int64_t s = atoll(sv);
      for (int i = 0; i < NSPECS; i++) {
        size_t es = dtr_dtype_size(t[i].dtype);
        int64_t n = elems(t[i].ndim, t[i].extent);
        for (int64_t e = 0; e < n; e++)
          value(i, t[i].dtype, global_index(&t[i], e), s, (char *)buf[i] + e * es);
      }
      fill_blobs(rng, &pos, rank, s);
      if (dtr_ckpt_save(ck, s) != DTR_OK) {
        fprintf(stderr, "ckpt_make rank %d: save step %lld: %s\n", rank, (long long)s,
                dtr_ckpt_last_error(ck));
        bad = 1;
        goto out;
      }
    }
    printf("ckpt_make rank %d: wrote steps %s (layout %s, world %d)\n", rank, steps_s, layout, world);
  } else {
    dtr_result rc = step >= 0 ? dtr_ckpt_load_step(ck, step) : dtr_ckpt_load(ck, &step);
    if (rc != DTR_OK) {
      fprintf(stderr, "ckpt_make rank %d: load: %s: %s\n", rank, dtr_strerror(rc), dtr_ckpt_last_error(ck));
      bad = 1;
      goto out;
    }
    for (int i = 0; i < NSPECS; i++) {
      size_t es = dtr_dtype_size(t[i].dtype);
      int64_t n = elems(t[i].ndim, t[i].extent);
      for (int64_t e = 0; e < n; e++) {
        unsigned char want[8];
        int64_t g = global_index(&t[i], e);
        value(i, t[i].dtype, g, step, want);
        checked++;
        if (memcmp(want, (char *)buf[i] + e * es, es) != 0 && wrong++ < 10)
          fprintf(stderr, "ckpt_make rank %d: %s element %lld wrong\n", rank, t[i].name, (long long)g);
      }
    }
    if (blobs) {
      uint8_t wr[RNG_BYTES];
      int64_t wp;
      fill_blobs(wr, &wp, rank < saved_world ? rank : 0, step);
      checked += 2;
      if (memcmp(wr, rng, sizeof wr) != 0 && ++wrong)
        fprintf(stderr, "ckpt_make rank %d: blob rng wrong\n", rank);
      if (wp != pos && ++wrong)
        fprintf(stderr, "ckpt_make rank %d: blob data_pos %lld, expected %lld\n", rank, (long long)pos,
                (long long)wp);
    }
    printf("ckpt_make rank %d: step %lld layout %s: %ld values checked, %ld wrong\n", rank, (long long)step,
           layout, checked, wrong);
    if (wrong) bad = 1;
  }
out:
  dtr_ckpt_destroy(ck);
  for (int i = 0; i < NSPECS; i++) free(buf[i]);
  dtr_comm_destroy(comm);
  dtr_store_close(store);
  return bad;
}
