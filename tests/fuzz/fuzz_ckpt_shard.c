/* libFuzzer target for the shard reader: the input is a whole shard file (put in a memfd), opened,
 * its index read, and every chunk the index lists read and decoded, plus chunk records bent out of
 * shape. The reader must answer with an error for any bytes, never crash or read out of bounds.
 * Built with -DDTRAIN_FUZZ_REPLAY it is a plain program replaying files or directories (and every
 * prefix of each file: each is a truncated shard), which ctest runs over tests/fuzz/corpus_ckpt_shard. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "checkpoint/ckpt_format.h"
#include "checkpoint/shard_internal.h"
#define XXH_INLINE_ALL /* header-only: the harness recomputes checksums without linking libxxhash */
#include <xxhash.h>

static volatile unsigned sink;

/* Decode the stored bytes of a chunk directly, bypassing the checksum, so mutations of a chunk's
 * payload reach the codec even though the checksum would stop them in dtr__shard_read_chunk. */
static void codec_direct(const uint8_t *data, size_t size) {
  if (size < 4) return;
  dtr__codec_ctx *cx = NULL;
  if (dtr__codec_ctx_create(&cx) != DTR_OK) return;
  uint32_t codec = data[0] % 4;
  dtr_dtype t = (dtr_dtype)(data[1] % 7);
  size_t raw = ((size_t)data[2] << 8 | data[3]) * (dtr_dtype_size(t) ? dtr_dtype_size(t) : 1);
  uint8_t *dst = malloc(raw + 1), *scratch = malloc(raw + 1);
  if (dst && scratch) (void)dtr__codec_decode(cx, codec, data + 4, size - 4, t, dst, raw, scratch);
  free(dst);
  free(scratch);
  dtr__codec_ctx_destroy(cx);
}

static void read_shard(const uint8_t *data, size_t size) {
  int fd = memfd_create("fuzz_shard", MFD_CLOEXEC);
  if (fd < 0) return;
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(fd, data + off, size - off);
    if (n <= 0) {
      close(fd);
      return;
    }
    off += (size_t)n;
  }
  char err[512];
  dtr__shard *s = NULL;
  if (dtr__shard_open_fd(fd, "fuzz.dtck", NULL, -1, -1, &s, err, sizeof err) != DTR_OK) return;
  const dtr__shard_index_entry *ent;
  int n = 0;
  if (dtr__shard_index(s, &ent, &n, err, sizeof err) == DTR_OK) {
    for (int i = 0; i < n; i++) {
      size_t es = ent[i].is_blob ? 1 : dtr_dtype_size(ent[i].dtype);
      for (int k = 0; k < ent[i].nchunks; k++) {
        dtr__chunk c = ent[i].chunks[k];
        uint64_t raw = c.elem_count * es;
        if (raw > ((uint64_t)64 << 20)) continue; /* the index allowed it; the fuzzer's memory does not */
        uint8_t *dst = malloc(raw ? raw : 1);
        if (!dst) continue;
        if (dtr__shard_read_chunk(s, ent[i].name, ent[i].dtype, &c, dst, err, sizeof err) == DTR_OK)
          for (uint64_t b = 0; b < raw; b += 97) sink += dst[b];
        /* The record with a checksum that matches whatever bytes lie there, so mutated payloads
         * reach the codec; then the same under a wrong dtype. */
        if (c.file_offset <= size && c.stored_bytes <= size - c.file_offset) {
          c.checksum = XXH64(data + c.file_offset, (size_t)c.stored_bytes, 0);
          (void)dtr__shard_read_chunk(s, ent[i].name, ent[i].dtype, &c, dst, err, sizeof err);
          if (es >= 2) (void)dtr__shard_read_chunk(s, ent[i].name, DTR_U8, &c, dst, err, sizeof err);
        }
        free(dst);
      }
    }
  }
  dtr__shard_close(s);
}

/* The header and index checksums recomputed over the (mutated) bytes, so that mutations get past
 * them to the parsers behind. Returns 0 when the layout is too broken to place them. */
static int fix_checksums(uint8_t *d, size_t size) {
  if (size < DTR__SHARD_HDR_FIXED + 8 + DTR__SHARD_FOOTER) return 0;
  uint32_t jl = dtr__get_u32(d + 36);
  if (jl > size - DTR__SHARD_HDR_FIXED - 8) return 0;
  dtr__put_u64(d + DTR__SHARD_HDR_FIXED + jl, XXH64(d, DTR__SHARD_HDR_FIXED + jl, 0));
  uint64_t off = dtr__get_u64(d + size - 32), len = dtr__get_u64(d + size - 24);
  if (off > size - DTR__SHARD_FOOTER || len > size - DTR__SHARD_FOOTER - off) return 1;
  dtr__put_u64(d + size - 16, XXH64(d + off, (size_t)len, 0));
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  codec_direct(data, size);
  read_shard(data, size);
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  if (fix_checksums(copy, size)) read_shard(copy, size);
  free(copy);
  return 0;
}

#ifdef DTRAIN_FUZZ_REPLAY
#define DTR_REPLAY_PROG "fuzz_ckpt_shard_replay"
#define DTR_REPLAY_FLIPS 1 /* a flipped byte: a shard whose checksums or lengths lie */
#include "tests/fuzz/replay_main.h"
#endif
