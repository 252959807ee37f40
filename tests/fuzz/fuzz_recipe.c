/* libFuzzer target for the recipe loader (runtime/train/recipe.c, the parser that reads users' files):
 * any bytes are written to a scratch file and loaded as a recipe. A refusal must name the file (every
 * message starts with its path); an accepted recipe is written back out as the effective recipe and must
 * load to the same recipe. The time of every load is bounded, per byte: libyaml's scanner is quadratic in
 * the nesting of flow collections, which the loader bounds (common/yaml_error.h); a load slower than
 * 200 ms + 20 us per byte, three times in a row, aborts (200 KB nested 100000 deep took 29 s before the
 * bound; 64 KB about 3 s, over this limit). Built with -DDTRAIN_FUZZ_REPLAY it is a plain program that
 * replays the files named on its command line (or every file of a directory): ctest runs it over
 * tests/fuzz/corpus_recipe. By hand: build-clang/bin/fuzz_recipe -max_len=65536 tests/fuzz/corpus_recipe */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/recipe.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put(const char *path, const uint8_t *data, size_t size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) {
    perror(path);
    abort();
  }
  close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static dtr_recipe r, back;
  char path[128], out[128], err[2048];
  snprintf(path, sizeof path, "/dev/shm/fuzz_recipe.%d.yaml", (int)getpid());
  snprintf(out, sizeof out, "/dev/shm/fuzz_recipe.%d.out.yaml", (int)getpid());
  put(path, data, size);
  /* the bound is on the fastest of up to three loads, so that a busy machine's stall is not a finding */
  double bound = 0.2 + 20e-6 * (double)size, dt = 1e30;
  dtr_result rc = DTR_OK;
  for (int i = 0; i < 3 && dt > bound; i++) {
    double t0 = now_s();
    rc = dtr_recipe_load(path, NULL, 0, 0, &r, err, sizeof err);
    double t = now_s() - t0;
    if (t < dt) dt = t;
  }
  if (dt > bound) {
    fprintf(stderr, "loading %zu bytes took %.3f s (the bound: %.3f s)\n", size, dt, bound);
    abort();
  }
  if (rc != DTR_OK) {
    if (strncmp(err, path, strlen(path)) != 0) {
      fprintf(stderr, "a refusal that does not name the recipe: %s\n", err);
      abort();
    }
  } else {
    if (dtr_recipe_write(&r, out, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "an accepted recipe cannot be written back: %s\n", err);
      abort();
    }
    if (dtr_recipe_load(out, NULL, 0, 0, &back, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "the effective recipe of an accepted one does not load: %s\n", err);
      abort();
    }
    /* the same recipe but for where it came from (and the name, taken from the file's when unset) */
    memset(r.path, 0, sizeof r.path);
    memset(back.path, 0, sizeof back.path);
    if (memcmp(&r, &back, sizeof r) != 0) {
      fprintf(stderr, "the effective recipe loads to a different recipe\n");
      abort();
    }
    unlink(out);
  }
  unlink(path);
  return 0;
}

#ifdef DTRAIN_FUZZ_REPLAY
#define DTR_REPLAY_PROG "fuzz_recipe_replay"
#define DTR_REPLAY_STEP(n) ((n) / 16 + 1) /* some prefixes: each one is a file written and loaded */
#include "tests/fuzz/replay_main.h"
#endif
