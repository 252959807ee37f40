/* The byte layout of a shard file (rank_NNNNN.dtck), shared by shard_write.c and shard_read.c.
 * docs/checkpoint-format.md is the prose version; every integer is little-endian.
 *
 *   header  "DTRSHARD" u32 version, u32 header_bytes, i64 step, i32 rank, i32 world, i32 level,
 *           u32 job_len, u64 chunk_bytes, job_len bytes of job id, u64 XXH64 of everything before it
 *   chunks  stored bytes of every chunk, back to back, in no particular order
 *   index   u32 nentries; per entry u32 name_len, name, u8 is_blob, u8 dtype, u16 0, u64 raw_bytes,
 *           u32 nchunks, then nchunks x (u64 elem_begin, elem_count, file_offset, stored_bytes,
 *           checksum, u32 codec, u32 0)
 *   footer  u64 index_offset, u64 index_bytes, u64 XXH64 of the index, "DTRSEND\0" */
#ifndef DTRAIN_CHECKPOINT_SHARD_INTERNAL_H
#define DTRAIN_CHECKPOINT_SHARD_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "checkpoint/ckpt_format.h"

#define DTR__SHARD_MAGIC "DTRSHARD"
#define DTR__SHARD_END_MAGIC "DTRSEND" /* 8 bytes with its NUL */
#define DTR__SHARD_HDR_FIXED 48        /* header bytes before the job id */
#define DTR__SHARD_MAX_JOB 4096        /* longest job id a header may carry */
#define DTR__SHARD_FOOTER 32
#define DTR__SHARD_ENTRY_FIXED 20 /* index entry bytes besides its name and chunks */
#define DTR__SHARD_CHUNK_REC 48   /* one chunk record in the index */
#define DTR__SHARD_MAX_NAME 4096  /* longest entry name the reader accepts */

static inline void dtr__put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void dtr__put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void dtr__put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t dtr__get_u16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t dtr__get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t dtr__get_u64(const uint8_t *p) {
  return (uint64_t)dtr__get_u32(p) | (uint64_t)dtr__get_u32(p + 4) << 32;
}

/* dtr__shard_open on an already open descriptor (ownership passes to the shard, also on failure);
 * `name` stands for the file in messages. step < 0 or rank < 0 skip those checks. The fuzz target's
 * entry (a memfd), and what dtr__shard_open calls. */
dtr_result dtr__shard_open_fd(int fd, const char *name, const char *job_id, int64_t step, int rank,
                              dtr__shard **out, char *err, size_t errcap);

#endif
