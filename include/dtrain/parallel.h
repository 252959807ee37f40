/* dtrain/parallel.h — model parallelism: pipeline schedules (and, below, the pieces that split a model
 * over ranks).
 *
 * Pipeline parallelism cuts the layers into p contiguous stages on p ranks (the pp group of the mesh)
 * and feeds m micro-batches through them: a stage receives the previous stage's activation, runs its
 * layers and sends its output on; backward sends activation gradients the other way. How a stage
 * orders its m forwards and m backwards is the schedule:
 *
 *   gpipe        every forward, then every backward; m micro-batches of activations in flight.
 *   1f1b         p-1-stage forwards to fill the pipe, then one forward and one backward in turn, then the
 *                remaining backwards: at most p micro-batches in flight on stage 0, the same idle time
 *                ("bubble", (p-1)/m of the compute) as gpipe.
 *   interleaved  Megatron's virtual stages: each rank holds v model chunks (virtual stage c*p + s on
 *                stage s), micro-batches go round the stages in groups of p; the bubble shrinks to
 *                (p-1)/(v*m). m must be a multiple of p.
 *
 * A schedule is data: dtr_pp_schedule lists one stage's actions (micro-batch, chunk, forward or
 * backward) and one loop runs any list, so a schedule can be checked without a model. Every backward
 * comes after its own forward, and the actions of neighbouring stages match: what stage s sends in its
 * order, stage s+1 receives in its order.
 *
 * The executor (dtr_pp_pipe) runs a schedule over the pp communicator: activations travel from stage to
 * stage through 2-rank communicators split from it, one per direction of each neighbouring pair, so that
 * a receive posted ahead (the transfer then overlaps the stage's compute) never queues in front of a
 * send going the other way (operations on one communicator run in issue order, comm.h). The message
 * size is agreed once, when the pipe is created. A peer that dies or stalls ends in the communicator's
 * deadline, reported with the stage, the micro-batch and the chunk that were waited for.
 *
 * Threads: the schedule functions are pure and thread-safe; a pipe is used by one thread.
 */
#ifndef DTRAIN_PARALLEL_H
#define DTRAIN_PARALLEL_H

#include <stddef.h>

#include "dtrain/comm.h"
#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- pipeline schedules */

typedef enum dtr_pp_schedule_kind {
  DTR_PP_GPIPE = 0,
  DTR_PP_1F1B = 1,
  DTR_PP_INTERLEAVED = 2,
} dtr_pp_schedule_kind;

/* "gpipe", "1f1b", "interleaved" (and back: DTR_ERR_INVALID for anything else). */
const char *dtr_pp_schedule_name(dtr_pp_schedule_kind k);
dtr_result dtr_pp_schedule_parse(const char *s, dtr_pp_schedule_kind *out);

/* One step of a stage's schedule. */
typedef struct dtr_pp_action {
  int micro;    /* micro-batch, 0 .. m-1 */
  int chunk;    /* model chunk on this stage, 0 .. v-1 (0 unless interleaved) */
  int backward; /* 0: forward, 1: backward */
} dtr_pp_action;

/* Whether (kind, p stages, m micro-batches, v chunks per stage) is a schedule: all >= 1, v == 1 unless
 * interleaved, m a multiple of p for interleaved. DTR_ERR_INVALID with err saying which rule broke. */
dtr_result dtr_pp_schedule_check(dtr_pp_schedule_kind kind, int p, int m, int v, char *err, size_t errcap);
/* Actions per stage: 2*m*v. */
int dtr_pp_schedule_length(int m, int v);
/* Fill out[0 .. *n) with stage's actions in execution order (*n = 2*m*v; cap must be at least that).
 * DTR_ERR_INVALID (err says why) for a bad schedule, stage outside 0..p-1 or too little room. */
dtr_result dtr_pp_schedule(dtr_pp_schedule_kind kind, int p, int m, int v, int stage, dtr_pp_action *out,
                           int cap, int *n, char *err, size_t errcap);

/* Activation slots: the executor gives the forward of each (micro-batch, chunk) the lowest slot no
 * micro-batch in flight holds, and frees it at its backward. slot_of[i] (may be NULL) receives action
 * i's slot; returns the number of slots the list needs (its peak of activations in flight). */
int dtr_pp_schedule_slots(const dtr_pp_action *a, int n, int *slot_of);

/* ---- the pipeline executor */

/* A stage's compute, called by dtr_pp_pipe_step on the calling thread in schedule order. Activations
 * and their gradients are act_count floats. forward: `in` is the previous virtual stage's output (NULL
 * on the first virtual stage: the stage reads its own input) and is valid during the call only (keep a
 * copy of what backward needs); the chunk's output goes to `out` (NULL on the last virtual stage,
 * which computes its loss). backward: `dout` is the gradient of the chunk's output (NULL on the last
 * virtual stage), the gradient of its input goes to `din` (NULL on the first). `slot` is the
 * activation slot of dtr_pp_schedule_slots. A non-OK result stops the step and is returned. */
typedef struct dtr_pp_stage {
  dtr_result (*forward)(void *arg, int micro, int chunk, int slot, const float *in, float *out);
  dtr_result (*backward)(void *arg, int micro, int chunk, int slot, const float *dout, float *din);
  void *arg;
} dtr_pp_stage;

typedef struct dtr_pp_config {
  dtr_pp_schedule_kind schedule;
  int micro_batches; /* m */
  int chunks;        /* v: model chunks per stage (interleaved), else 1 */
  size_t act_count;  /* floats in one activation message (micro x T x C) */
} dtr_pp_config;

typedef struct dtr_pp_pipe dtr_pp_pipe;

/* Build the executor for this rank's stage (its rank in pp) and the link communicators; agree on
 * act_count with the neighbours (a mismatch fails naming both sizes). pp and stage stay owned by the
 * caller and must outlive the pipe. pp NULL or of size 1: one stage, no communication. Interleaved
 * needs at least 2 stages. COLLECTIVE over pp. On failure err names the cause. */
dtr_result dtr_pp_pipe_create(dtr_comm *pp, const dtr_pp_config *cfg, const dtr_pp_stage *stage,
                              dtr_pp_pipe **out, char *err, size_t errcap);
/* Wait for sends in flight, release the link communicators. NULL is fine. */
void dtr_pp_pipe_destroy(dtr_pp_pipe *p);
/* This stage's schedule and the slots it needs. */
const dtr_pp_action *dtr_pp_pipe_actions(const dtr_pp_pipe *p, int *n);
int dtr_pp_pipe_slots(const dtr_pp_pipe *p);
/* Run one step: every action of the schedule, then wait for this stage's sends. COLLECTIVE over pp. A
 * communication failure names the stage, micro-batch and chunk; the link communicators are then
 * aborted (a later step fails at once). */
dtr_result dtr_pp_pipe_step(dtr_pp_pipe *p, char *err, size_t errcap);

/* Timing of the last step, seconds from its start: each action's start and end (in schedule order),
 * and the total. Idle time (the bubble, plus waiting on slow links) is total minus the sum of the
 * actions. The arrays belong to the pipe. */
typedef struct dtr_pp_timing {
  const double *start, *end;
  int n;
  double total;
} dtr_pp_timing;
void dtr_pp_pipe_timing(const dtr_pp_pipe *p, dtr_pp_timing *out);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_PARALLEL_H */
