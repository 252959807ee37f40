/* The trainer's data (internal to runtime/): the synthetic addition task and text / uint16 token files,
 * read as a global batch per step in which sample j of step s depends only on (seed, s, j), so 1, 2 or
 * 4 data-parallel ranks see the same samples and a resumed job reads what the uninterrupted one read.
 *
 * Addition: "123+456=" followed by the sum's D+1 digits least significant first ("9750": reversed,
 * so each answer digit depends only on digits already seen), tokens 0-9, '+' 10, '=' 11. Only answer
 * positions are scored (targets -1 elsewhere). A fixed 1/64 of all problems (chosen by a hash of the
 * problem and the seed) is held out: training never draws them, the exact-match evaluation only them.
 *
 * Text: bytes of any file (vocab 256); tokens: a file of little-endian uint16 ids. Sequences are
 * windows of block_size+1 tokens; each epoch visits every window once in a seeded order.
 *
 * Sharding: DP rank r reads samples [r*G/dp, (r+1)*G/dp) of each step (dtr__data_rank_range). The
 * position (dtr_data_pos) is a small plain struct meant to be saved as a checkpoint blob. */
#ifndef DTRAIN_RUNTIME_DATA_H
#define DTRAIN_RUNTIME_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"
#include "dtrain/recipe.h"

#define DTR_DATA_POS_MAGIC 0x534f5044u /* "DPOS" */
#define DTR_DATA_POS_VERSION 1u

/* Addition tokens. */
enum { DTR_ADD_PLUS = 10, DTR_ADD_EQUALS = 11, DTR_ADD_VOCAB = 14 };

/* Where the reader is: saved in checkpoints, restored on resume. Plain data, fixed layout. */
typedef struct dtr_data_pos {
  uint32_t magic, version;
  uint64_t seed;          /* the job seed the samples come from */
  int64_t step;           /* the next step to read */
  int64_t samples;        /* global samples consumed so far (step * global_batch) */
  int64_t epoch;          /* text/tokens: full passes over the file completed; addition: 0 */
  uint64_t source_hash;   /* xxh64 of the file's tokens (0 for addition) */
  uint64_t source_tokens; /* tokens in the file (addition: digits) */
} dtr_data_pos;

typedef struct dtr_data_config {
  dtr_data_kind kind;
  const char *path; /* text / tokens */
  int digits;       /* addition */
  int block_size;   /* text / tokens: sequence length; addition: at least 3*digits+2 */
  int vocab_size;   /* tokens: ids must be below it (0: 65536); others: 0 or at least the natural vocab */
  uint64_t seed;
  int global_batch;
  int dp_rank, dp;
} dtr_data_config;

typedef struct dtr_data dtr_data;

/* Open (read the file, validate: too short, odd byte count, token >= vocab, each named with the path
 * and offset). On failure err says why. *out owned by the caller: dtr__data_close (NULL fine). */
dtr_result dtr__data_open(const dtr_data_config *cfg, dtr_data **out, char *err, size_t errcap);
void dtr__data_close(dtr_data *d);

/* Sequence length T of inputs and targets; the vocabulary the data needs (14, 256, max id + 1 or
 * the configured one for tokens); tokens in the source (0 for addition). */
int dtr__data_seq_len(const dtr_data *d);
int dtr__data_vocab(const dtr_data *d);
int64_t dtr__data_num_tokens(const dtr_data *d);
/* This DP rank's samples of each step: [*first, *first + *count). */
void dtr__data_rank_range(const dtr_data *d, int *first, int *count);

/* Fill B sequences of the current step (pos.step): global samples j0 .. j0+B-1, inputs[B*T] and
 * targets[B*T] (-1: not scored). Pure in (seed, step, j). */
dtr_result dtr__data_batch(dtr_data *d, int j0, int B, int32_t *inputs, int32_t *targets);
/* The current step is done: pos.step += 1 (samples, epoch follow). */
void dtr__data_advance(dtr_data *d);
/* The position, for registering as a checkpoint blob (stable address while d lives). */
dtr_data_pos *dtr__data_pos(dtr_data *d);
/* After a checkpoint filled the blob: check magic, version, seed and source, then continue from
 * pos->step. A different source or seed fails with DTR_ERR_INVALID naming what changed. */
dtr_result dtr__data_resume(dtr_data *d, char *err, size_t errcap);
/* Move to a step (as if steps 0..step-1 had been read). */
void dtr__data_seek(dtr_data *d, int64_t step);

/* Addition only: held-out problem i (i >= 0) as a prompt "a+b=" (2*digits+2 tokens) and its answer
 * (digits+1 tokens, reversed). Returns the lengths through the pointers. DTR_ERR_INVALID for other
 * kinds. */
dtr_result dtr__data_eval_problem(const dtr_data *d, int64_t i, int32_t *prompt, int *prompt_len,
                                  int32_t *answer, int *answer_len);

/* Readable form of tokens for messages ("123+456=9750"; text bytes as they are; tokens as ids). */
void dtr__data_format(const dtr_data *d, const int32_t *tok, int n, char *buf, size_t cap);

/* ---- shared by the data_*.c files */

/* A 64-bit mix of a key (splitmix64 finaliser). */
uint64_t dtr__data_mix(uint64_t x);
/* Addition: fill one training sample (global sample j of step s) as a full sequence of 3*digits+3
 * tokens; and held-out problem i. */
void dtr__addition_sample(uint64_t seed, int digits, int64_t step, int64_t j, int32_t *seq);
void dtr__addition_heldout(uint64_t seed, int digits, int64_t i, int32_t *seq);
/* 1 when a+b belongs to the held-out set of this seed. */
int dtr__addition_is_heldout(uint64_t seed, int digits, int64_t a, int64_t b);
/* Text / tokens: read path into *tok (malloc'd, *n ids); is_tokens: uint16 little-endian, else bytes.
 * vocab > 0: every id must be below it (the first one that is not is named with its offset). */
dtr_result dtr__text_load(const char *path, int is_tokens, int vocab, uint16_t **tok, int64_t *n, int *max_id,
                          char *err, size_t errcap);
/* Windows of T+1 tokens in a file of n tokens: how many per epoch, and where global sample g starts. */
int64_t dtr__text_windows(int64_t n, int T);
int64_t dtr__text_window_start(uint64_t seed, int64_t n, int T, int64_t g);

#endif
