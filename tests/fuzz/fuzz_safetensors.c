/* libFuzzer target for the safetensors reader (checkpoint/safetensors.c; `dtrain ckpt import` and
 * pretrained weights read files from anywhere): any bytes are a file. The header is parsed in memory
 * (dtr__sft_parse_header) and the file opened from disk (dtr__sft_open) — both must agree — and every
 * tensor of an accepted file is read back; an accepted file's tensors must lie inside its data section,
 * tile it in order, and match their shape x dtype size. A refusal must name the file. Built with
 * -DDTRAIN_FUZZ_REPLAY it replays files or a directory (ctest: tests/fuzz/corpus_safetensors). By hand:
 *   build-clang/bin/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus_safetensors */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"

static void check_tensors(const dtr__sft_tensor *t, int n, uint64_t data_bytes) {
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    uint64_t elems = 1;
    for (int d = 0; d < t[i].ndim; d++) elems *= (uint64_t)t[i].shape[d];
    if (t[i].begin > t[i].end || t[i].end > data_bytes ||
        t[i].end - t[i].begin != elems * dtr_dtype_size(t[i].dtype)) {
      fprintf(stderr, "accepted tensor %d (%s) has the range [%llu, %llu) in %llu bytes\n", i, t[i].name,
              (unsigned long long)t[i].begin, (unsigned long long)t[i].end, (unsigned long long)data_bytes);
      abort();
    }
    at += t[i].end - t[i].begin;
  }
  if (at != data_bytes) {
    fprintf(stderr, "accepted tensors cover %llu of %llu data bytes\n", (unsigned long long)at,
            (unsigned long long)data_bytes);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024], path[128];
  int mem_ok = -1;
  if (size >= 8) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | data[i];
    if (n <= size - 8 && n <= DTR__SFT_MAX_HEADER) {
      dtr__sft_tensor *t = NULL;
      dtr__sft_meta *m = NULL;
      int nt = 0, nm = 0;
      mem_ok = dtr__sft_parse_header((const char *)data + 8, (size_t)n, size - 8 - n, "fuzz", &t, &nt, &m,
                                     &nm, err, sizeof err) == DTR_OK;
      if (mem_ok) check_tensors(t, nt, size - 8 - n);
      dtr__sft_free_parsed(t, nt, m, nm);
    }
  }
  snprintf(path, sizeof path, "/dev/shm/fuzz_safetensors.%d", (int)getpid());
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) abort();
  close(fd);
  dtr__sft_file *f = NULL;
  dtr_result rc = dtr__sft_open(path, &f, err, sizeof err);
  if (rc == DTR_OK) {
    if (mem_ok == 0) {
      fprintf(stderr, "the file opens but its header alone was refused\n");
      abort();
    }
    check_tensors(f->tensors, f->ntensors, f->data_bytes);
    for (int i = 0; i < f->ntensors; i++) {
      size_t bytes = (size_t)(f->tensors[i].end - f->tensors[i].begin);
      void *buf = malloc(bytes ? bytes : 1);
      if (!buf || dtr__sft_read(f, i, buf, err, sizeof err) != DTR_OK) {
        fprintf(stderr, "tensor %d of an accepted file cannot be read: %s\n", i, buf ? err : "no memory");
        abort();
      }
      free(buf);
    }
    dtr__sft_close(f);
  } else if (mem_ok == 1) {
    fprintf(stderr, "the header was accepted but the file refused: %s\n", err);
    abort();
  } else if (!strstr(err, path)) {
    fprintf(stderr, "a refusal that does not name the file: %s\n", err);
    abort();
  }
  unlink(path);
  return 0;
}

#ifdef DTRAIN_FUZZ_REPLAY
#define DTR_REPLAY_PROG "fuzz_safetensors_replay"
#define DTR_REPLAY_STEP(n) ((n) / 64 + 1)
#define DTR_REPLAY_FLIPS 1
#include "tests/fuzz/replay_main.h"
#endif
