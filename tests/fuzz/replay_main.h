/* The replay main() shared by the fuzz targets' plain (-DDTRAIN_FUZZ_REPLAY) builds: runs the target's
 * LLVMFuzzerTestOneInput over the files named on the command line (or every file of a directory), and
 * over prefixes of each (truncated inputs are what parsers meet most), so ctest exercises the parsers
 * without clang. Included once, at the end of a target, after it defines:
 *   DTR_REPLAY_PROG       the program name, for the usage line
 *   DTR_REPLAY_STEP(n)    optional: the stride between prefixes of an n-byte input (default 1: all)
 *   DTR_REPLAY_FLIPS      optional: also the whole input with one byte flipped at a spread of positions
 * Each input is an exact-size heap copy, so ASan builds catch reads past its end. */
#ifndef DTRAIN_TESTS_FUZZ_REPLAY_MAIN_H
#define DTRAIN_TESTS_FUZZ_REPLAY_MAIN_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef DTR_REPLAY_STEP
#define DTR_REPLAY_STEP(n) 1
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void replay_one(const uint8_t *buf, size_t n) {
  uint8_t *copy = malloc(n ? n : 1);
  if (!copy) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  memcpy(copy, buf, n);
  LLVMFuzzerTestOneInput(copy, n);
  free(copy);
}

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    return 1;
  }
  static uint8_t buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  size_t step = (size_t)(DTR_REPLAY_STEP(n));
  if (step == 0) step = 1;
  for (size_t cut = 0; cut < n; cut += step) replay_one(buf, cut);
  replay_one(buf, n);
#ifdef DTR_REPLAY_FLIPS
  uint8_t *copy = malloc(n ? n : 1);
  for (size_t pos = 0; copy && pos < n; pos += 1 + pos / 32) {
    memcpy(copy, buf, n);
    copy[pos] ^= 0x5A;
    LLVMFuzzerTestOneInput(copy, n);
  }
  free(copy);
#endif
  printf("replayed %s (%zu bytes and its prefixes)\n", path, n);
  return 0;
}

int main(int argc, char **argv) {
  int files = 0, bad = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      DIR *d = opendir(argv[i]);
      if (!d) {
        fprintf(stderr, "cannot open directory %s\n", argv[i]);
        bad++;
        continue;
      }
      struct dirent *e;
      while ((e = readdir(d)) != NULL && files < 10000) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
        bad += replay_file(p);
        files++;
      }
      closedir(d);
    } else {
      bad += replay_file(argv[i]);
      files++;
    }
  }
  if (files == 0) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", DTR_REPLAY_PROG);
    return 1;
  }
  printf("%d files replayed\n", files);
  return bad ? 1 : 0;
}

#endif
