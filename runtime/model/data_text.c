/* Text and token files for the trainer: the whole file read into uint16 ids (bytes for text, little-
 * endian uint16 for tokens), and a seeded order of non-overlapping windows per epoch, so global sample g
 * is a pure function of (seed, g) and every window is visited once per epoch. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "runtime/model/data.h"

dtr_result dtr__text_load(const char *path, int is_tokens, int vocab, uint16_t **tok, int64_t *n, int *max_id,
                          char *err, size_t errcap) {
  dtr_result rc = DTR_OK;
  uint8_t *raw = NULL;
  uint16_t *ids = NULL;
  int fd = dtr__open_regular(path, O_RDONLY);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    int e = errno;
    if (fd >= 0) close(fd);
    if (e == EINVAL) return dtr__fail(err, errcap, DTR_ERR_INVALID, "data file %s: not a regular file", path);
    return dtr__fail(err, errcap, e == ENOENT ? DTR_ERR_NOT_FOUND : DTR_ERR_SYSTEM, "data file %s: %s", path,
                     strerror(e));
  }
  long size = -1;
  if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
  if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
    rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "data file %s: cannot tell its size: %s", path,
                   strerror(errno));
    goto done;
  }
  if (is_tokens && size % 2) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                   "data file %s: %ld bytes is not a whole number of uint16 tokens", path, size);
    goto done;
  }
  raw = malloc(size ? (size_t)size : 1);
  int64_t count = is_tokens ? size / 2 : size;
  ids = malloc(count ? (size_t)count * sizeof *ids : 1);
  if (!raw || !ids) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "data file %s: no memory for %ld bytes", path, size);
    goto done;
  }
  if (size && fread(raw, 1, (size_t)size, f) != (size_t)size) {
    rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "data file %s: short read", path);
    goto done;
  }
  int mx = 0;
  for (int64_t i = 0; i < count; i++) {
    ids[i] = is_tokens ? (uint16_t)(raw[2 * i] | (raw[2 * i + 1] << 8)) : raw[i];
    if (vocab > 0 && ids[i] >= vocab) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "data file %s: token %u at byte offset %lld is not below model.vocab_size=%d", path,
                     ids[i], (long long)(is_tokens ? 2 * i : i), vocab);
      goto done;
    }
    if (ids[i] > mx) mx = ids[i];
  }
  *tok = ids;
  ids = NULL;
  *n = count;
  *max_id = mx;
done:
  fclose(f);
  free(raw);
  free(ids);
  return rc;
}

int64_t dtr__text_windows(int64_t n, int T) {
  return T > 0 && n > T ? (n - 1) / T : 0;
}

static uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* Epoch e visits window (a*i + b) mod W for i = 0..W-1 with a coprime to W (a bijection), shifted by
 * a per-epoch offset inside the slack the windows leave at the end of the file. */
int64_t dtr__text_window_start(uint64_t seed, int64_t n, int T, int64_t g) {
  int64_t W = dtr__text_windows(n, T);
  if (W <= 0) return 0;
  int64_t e = g / W, i = g % W;
  uint64_t h = dtr__data_mix(dtr__data_mix(seed ^ 0x74657874ull) + (uint64_t)e);
  uint64_t a = 1, b = 0, shift = 0;
  if (W > 1) {
    a = 1 + dtr__data_mix(h + 1) % (uint64_t)(W - 1);
    while (gcd64(a, (uint64_t)W) != 1) a = a % (uint64_t)(W - 1) + 1;
    b = dtr__data_mix(h + 2) % (uint64_t)W;
  }
  int64_t slack = n - 1 - W * (int64_t)T;
  shift = dtr__data_mix(h + 3) % (uint64_t)(slack + 1);
  uint64_t idx = (uint64_t)(((unsigned __int128)a * (uint64_t)i + b) % (uint64_t)W);
  return (int64_t)idx * T + (int64_t)shift;
}
