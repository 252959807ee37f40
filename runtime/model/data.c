/* The trainer's data reader: opens the recipe's source (addition, text or tokens), hands each DP rank
 * its slice of every step's global batch, and keeps the resumable position (see data.h). */
#include "runtime/model/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/check.h"

struct dtr_data {
  dtr_data_config cfg;
  char path[DTR_RECIPE_STR];
  int T, vocab;
  uint16_t *tok; /* text / tokens */
  int64_t ntok, windows;
  int32_t *seq; /* addition scratch: one full sequence */
  dtr_data_pos pos;
};

dtr_result dtr__data_open(const dtr_data_config *cfg, dtr_data **out, char *err, size_t errcap) {
  dtr_result rc = DTR_OK;
  *out = NULL;
  if (cfg->global_batch <= 0 || cfg->dp <= 0 || cfg->dp_rank < 0 || cfg->dp_rank >= cfg->dp ||
      cfg->global_batch % cfg->dp) {
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "train.global_batch=%d cannot be split over %d DP ranks",
                     cfg->global_batch, cfg->dp);
  }
  dtr_data *d = calloc(1, sizeof *d);
  if (!d) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "data: out of memory");
  d->cfg = *cfg;
  snprintf(d->path, sizeof d->path, "%s", cfg->path ? cfg->path : "");
  d->cfg.path = d->path;
  d->pos.magic = DTR_DATA_POS_MAGIC;
  d->pos.version = DTR_DATA_POS_VERSION;
  d->pos.seed = cfg->seed;
  if (cfg->kind == DTR_DATA_ADDITION) {
    if (cfg->digits < 1 || cfg->digits > 9) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "data.digits=%d: want 1..9", cfg->digits);
      goto fail;
    }
    d->T = 3 * cfg->digits + 2;
    d->vocab = DTR_ADD_VOCAB;
    if (cfg->block_size < d->T) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "model.block_size=%d is shorter than a %d-digit addition sequence (%d tokens)",
                     cfg->block_size, cfg->digits, d->T);
      goto fail;
    }
    d->seq = malloc((size_t)(d->T + 1) * sizeof *d->seq);
    if (!d->seq) {
      rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "data: out of memory");
      goto fail;
    }
    d->pos.source_tokens = (uint64_t)cfg->digits;
  } else if (cfg->kind == DTR_DATA_TEXT || cfg->kind == DTR_DATA_TOKENS) {
    int is_tokens = cfg->kind == DTR_DATA_TOKENS, mx = 0;
    if (cfg->block_size < 1) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "model.block_size=%d: want at least 1", cfg->block_size);
      goto fail;
    }
    int lim = cfg->vocab_size > 0 ? cfg->vocab_size : (is_tokens ? 65536 : 256);
    DTR_CHECK_GOTO(dtr__text_load(d->path, is_tokens, lim, &d->tok, &d->ntok, &mx, err, errcap), rc, fail);
    d->T = cfg->block_size;
    d->vocab = is_tokens ? (cfg->vocab_size > 0 ? cfg->vocab_size : mx + 1) : 256;
    d->windows = dtr__text_windows(d->ntok, d->T);
    if (d->windows < 1) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "data file %s: %lld tokens is too short for one sequence of model.block_size=%d (+1)",
                     d->path, (long long)d->ntok, d->T);
      goto fail;
    }
    d->pos.source_hash = XXH64(d->tok, (size_t)d->ntok * sizeof *d->tok, 0);
    d->pos.source_tokens = (uint64_t)d->ntok;
  } else {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "data.kind=%d: unknown", (int)cfg->kind);
    goto fail;
  }
  *out = d;
  return DTR_OK;
fail:
  dtr__data_close(d);
  return rc;
}

void dtr__data_close(dtr_data *d) {
  if (!d) return;
  free(d->tok);
  free(d->seq);
  free(d);
}

int dtr__data_seq_len(const dtr_data *d) {
  return d->T;
}
int dtr__data_vocab(const dtr_data *d) {
  return d->vocab;
}
int64_t dtr__data_num_tokens(const dtr_data *d) {
  return d->ntok;
}

void dtr__data_rank_range(const dtr_data *d, int *first, int *count) {
  int per = d->cfg.global_batch / d->cfg.dp;
  *first = d->cfg.dp_rank * per;
  *count = per;
}

dtr_result dtr__data_batch(dtr_data *d, int j0, int B, int32_t *inputs, int32_t *targets) {
  if (j0 < 0 || B < 0 || j0 + B > d->cfg.global_batch) return DTR_ERR_INVALID;
  int T = d->T;
  for (int b = 0; b < B; b++) {
    int64_t j = j0 + b;
    int32_t *x = inputs + (size_t)b * T, *y = targets + (size_t)b * T;
    if (d->cfg.kind == DTR_DATA_ADDITION) {
      int D = d->cfg.digits;
      dtr__addition_sample(d->pos.seed, D, d->pos.step, j, d->seq);
      /* Score only the answer: target t is seq[t+1], an answer digit when t+1 >= 2D+2. */
      for (int t = 0; t < T; t++) {
        x[t] = d->seq[t];
        y[t] = t + 1 >= 2 * D + 2 ? d->seq[t + 1] : -1;
      }
    } else {
      int64_t g = d->pos.step * (int64_t)d->cfg.global_batch + j;
      int64_t s = dtr__text_window_start(d->pos.seed, d->ntok, T, g);
      for (int t = 0; t < T; t++) {
        x[t] = d->tok[s + t];
        y[t] = d->tok[s + t + 1];
      }
    }
  }
  return DTR_OK;
}

void dtr__data_seek(dtr_data *d, int64_t step) {
  d->pos.step = step;
  d->pos.samples = step * (int64_t)d->cfg.global_batch;
  d->pos.epoch = d->windows > 0 ? d->pos.samples / d->windows : 0;
}

void dtr__data_advance(dtr_data *d) {
  dtr__data_seek(d, d->pos.step + 1);
}

dtr_data_pos *dtr__data_pos(dtr_data *d) {
  return &d->pos;
}

dtr_result dtr__data_resume(dtr_data *d, char *err, size_t errcap) {
  dtr_data_pos *p = &d->pos;
  if (p->magic != DTR_DATA_POS_MAGIC || p->version != DTR_DATA_POS_VERSION) {
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "checkpoint blob data_pos: magic 0x%08x version %u, want 0x%08x version %u", p->magic,
                     p->version, DTR_DATA_POS_MAGIC, DTR_DATA_POS_VERSION);
  }
  if (p->step < 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "checkpoint blob data_pos: step %lld", (long long)p->step);
  /* The samples are a pure function of (seed, step): a changed seed or file makes the resumed run a
   * different run, which is allowed (fine-tuning on new data) but worth saying. */
  if (p->seed != d->cfg.seed) {
    DTR_WARN("resuming a checkpoint written with seed %llu under seed %llu: the data order changes",
             (unsigned long long)p->seed, (unsigned long long)d->cfg.seed);
  }
  uint64_t hash = d->cfg.kind == DTR_DATA_ADDITION ? 0 : XXH64(d->tok, (size_t)d->ntok * sizeof *d->tok, 0);
  uint64_t ntok = d->cfg.kind == DTR_DATA_ADDITION ? (uint64_t)d->cfg.digits : (uint64_t)d->ntok;
  if (p->source_hash != hash || p->source_tokens != ntok) {
    DTR_WARN(
        "resuming a checkpoint written on other data (%llu tokens, xxh64 %016llx; now %s: %llu, %016llx)",
        (unsigned long long)p->source_tokens, (unsigned long long)p->source_hash,
        d->cfg.kind == DTR_DATA_ADDITION ? "addition" : d->path, (unsigned long long)ntok,
        (unsigned long long)hash);
  }
  p->seed = d->cfg.seed;
  p->source_hash = hash;
  p->source_tokens = ntok;
  dtr__data_seek(d, p->step);
  return DTR_OK;
}

dtr_result dtr__data_eval_problem(const dtr_data *d, int64_t i, int32_t *prompt, int *prompt_len,
                                  int32_t *answer, int *answer_len) {
  if (d->cfg.kind != DTR_DATA_ADDITION || i < 0) return DTR_ERR_INVALID;
  int D = d->cfg.digits;
  int32_t seq[3 * 9 + 3];
  dtr__addition_heldout(d->cfg.seed, D, i, seq);
  memcpy(prompt, seq, (size_t)(2 * D + 2) * sizeof *seq);
  memcpy(answer, seq + 2 * D + 2, (size_t)(D + 1) * sizeof *seq);
  *prompt_len = 2 * D + 2;
  *answer_len = D + 1;
  return DTR_OK;
}

void dtr__data_format(const dtr_data *d, const int32_t *tok, int n, char *buf, size_t cap) {
  size_t len = 0;
  if (!cap) return;
  buf[0] = 0;
  for (int i = 0; i < n && len + 8 < cap; i++) {
    int t = tok[i];
    if (d->cfg.kind == DTR_DATA_ADDITION) {
      buf[len++] = t >= 0 && t <= 9      ? (char)('0' + t)
                   : t == DTR_ADD_PLUS   ? '+'
                   : t == DTR_ADD_EQUALS ? '='
                                         : '?';
    } else if (d->cfg.kind == DTR_DATA_TEXT) {
      buf[len++] = t >= 32 && t < 127 ? (char)t : t == '\n' ? '\n' : '.';
    } else {
      len += (size_t)snprintf(buf + len, cap - len, i ? " %d" : "%d", t);
    }
  }
  buf[len < cap ? len : cap - 1] = 0;
}
