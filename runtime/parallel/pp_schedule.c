/* Pipeline schedules as data: for one stage, the order of its forward and backward passes over
 * (micro-batch, model chunk). One generator serves GPipe, 1F1B and Megatron's interleaved 1F1B; one
 * executor (pp_pipe.c) runs whatever it returns, and the tests check the lists without a model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "dtrain/parallel.h"

const char *dtr_pp_schedule_name(dtr_pp_schedule_kind k) {
  switch (k) {
    case DTR_PP_GPIPE:
      return "gpipe";
    case DTR_PP_1F1B:
      return "1f1b";
    case DTR_PP_INTERLEAVED:
      return "interleaved";
  }
  return "?";
}

dtr_result dtr_pp_schedule_parse(const char *s, dtr_pp_schedule_kind *out) {
  static const dtr_pp_schedule_kind all[] = {DTR_PP_GPIPE, DTR_PP_1F1B, DTR_PP_INTERLEAVED};
  for (size_t i = 0; s && i < sizeof all / sizeof all[0]; i++)
    if (strcmp(s, dtr_pp_schedule_name(all[i])) == 0) {
      *out = all[i];
      return DTR_OK;
    }
  return DTR_ERR_INVALID;
}

dtr_result dtr_pp_schedule_check(dtr_pp_schedule_kind kind, int p, int m, int v, char *err, size_t errcap) {
  if (p < 1 || m < 1 || v < 1)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "pipeline schedule: stages %d, micro-batches %d and virtual stages %d must all be >= 1",
                     p, m, v);
  if (kind != DTR_PP_GPIPE && kind != DTR_PP_1F1B && kind != DTR_PP_INTERLEAVED)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "pipeline schedule: unknown kind %d", (int)kind);
  if (kind != DTR_PP_INTERLEAVED && v != 1)
    return dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "pipeline schedule %s: virtual stages %d: only the interleaved schedule has more than one "
        "model chunk per stage",
        dtr_pp_schedule_name(kind), v);
  if (kind == DTR_PP_INTERLEAVED && m % p != 0)
    return dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "pipeline schedule interleaved: %d micro-batches is not a multiple of the %d pipeline stages "
        "(the interleaved schedule sends micro-batches round the stages in groups of %d)",
        m, p, p);
  if ((long long)2 * m * v > (1 << 24))
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "pipeline schedule: %d micro-batches x %d chunks is too many", m, v);
  return DTR_OK;
}

/* Megatron's mapping of the k-th forward (or backward) of a stage to (micro-batch, chunk): micro-batches
 * go round the stages in groups of p, each group through chunk 0, then chunk 1, ...; backward visits
 * the chunks in reverse. */
static dtr_pp_action virtual_action(int k, int p, int v, int backward) {
  int in_group = k % (p * v);
  int chunk = in_group / p;
  if (backward) chunk = v - 1 - chunk;
  dtr_pp_action a = {(k / (p * v)) * p + k % p, chunk, backward};
  return a;
}

dtr_result dtr_pp_schedule(dtr_pp_schedule_kind kind, int p, int m, int v, int stage, dtr_pp_action *out,
                           int cap, int *n, char *err, size_t errcap) {
  DTR_CHECK(dtr_pp_schedule_check(kind, p, m, v, err, errcap));
  if (stage < 0 || stage >= p)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "pipeline schedule: stage %d outside 0..%d", stage, p - 1);
  int total = m * v; /* forwards (and backwards) of this stage */
  if (!out || !n || cap < 2 * total)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "pipeline schedule: room for %d actions, %d needed", cap,
                     2 * total);
  int warmup;
  switch (kind) {
    case DTR_PP_GPIPE:
      warmup = total;
      break;
    case DTR_PP_1F1B:
      warmup = p - 1 - stage;
      break;
    default:
      /* Megatron: with as many micro-batches as stages every forward comes first; otherwise two per
       * stage still downstream plus a whole round of the other chunks. */
      warmup = m == p ? total : 2 * (p - 1 - stage) + (v - 1) * p;
      break;
  }
  if (warmup > total) warmup = total;
  int k = 0, f = 0, b = 0;
  for (; f < warmup; f++) out[k++] = virtual_action(f, p, v, 0);
  while (f < total) { /* steady: one forward, one backward */
    out[k++] = virtual_action(f++, p, v, 0);
    out[k++] = virtual_action(b++, p, v, 1);
  }
  while (b < total) out[k++] = virtual_action(b++, p, v, 1);
  *n = k;
  return DTR_OK;
}

int dtr_pp_schedule_length(int m, int v) {
  return 2 * m * v;
}

int dtr_pp_schedule_slots(const dtr_pp_action *a, int n, int *slot_of) {
  /* slots in use as a bit set over (micro, chunk) pairs held; at most n/2 forwards in flight */
  int peak = 0, cap = n / 2 + 1;
  int *held = calloc((size_t)cap, sizeof *held); /* held[slot] = 1 + index of its forward, 0 free */
  if (!held) return -1;
  for (int i = 0; i < n; i++) {
    int s = -1;
    if (!a[i].backward) {
      for (s = 0; s < cap && held[s]; s++) {
      }
      held[s] = i + 1;
      if (s + 1 > peak) peak = s + 1;
    } else {
      for (int k = 0; k < cap; k++) {
        const dtr_pp_action *f = held[k] ? &a[held[k] - 1] : NULL;
        if (f && f->micro == a[i].micro && f->chunk == a[i].chunk) {
          s = k;
          held[k] = 0;
          break;
        }
      }
    }
    if (slot_of) slot_of[i] = s;
  }
  free(held);
  return peak;
}
