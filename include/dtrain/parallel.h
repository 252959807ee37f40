/* dtrain/parallel.h — model parallelism: the pieces that split one model over ranks (tensor
 * parallelism, Megatron-LM's scheme) and pipeline schedules with the executor that runs them.
 *
 * Tensor parallelism splits every layer of a transformer over the tp ranks of the mesh (adjacent ranks,
 * one node). Two conjugate operations carry it (Megatron's copy-to and reduce-from region):
 *
 *   f  identity forward; all-reduce (sum) of the input gradient backward: where a replicated activation
 *      enters a split layer (each rank's part contributes to the gradient of the whole input)
 *   g  all-reduce (sum) forward; identity backward: where partial outputs leave a split layer
 *
 * A column-parallel linear splits its weight [out, in] along out (and its bias): y_r = x W_r^T + b_r, no
 * communication forward, f backward. A row-parallel linear splits along in: y = g(sum_r x_r W_r^T) + b,
 * the bias added once after the all-reduce. Attention splits its heads (QKV column-parallel, each rank
 * holding q, k and v of its heads, the output projection row-parallel) and the MLP its hidden width (fc
 * column, proj row): per layer two all-reduces forward (g after each row-parallel) and two backward (f
 * before each column-parallel), of [tokens, n_embd] floats each. The embedding and the tied output head
 * split the vocabulary: an id outside a rank's slice contributes zeros and one all-reduce assembles the
 * embedding; the cross-entropy never gathers the logits: each rank reduces its slice and two all-reduces
 * combine the row maxima and then the sums of exponentials with the target's logit.
 *
 * Replicated: layer norms, position embeddings and the biases of row-parallel layers. Their inputs and
 * output gradients are whole and identical on every tp rank (they sit after a g, before an f), so every
 * rank computes the same gradient for them: no all-reduce is needed (Megatron's sequence parallelism,
 * which splits them by token, would need one; dtrain does not split by token). A global gradient norm
 * counts them once.
 *
 * Buffers are host memory (CPU kernels, the comm on the host or mpi backend), or, for a dtr_tp made by
 * dtr_tp_make_cuda, fp32 memory of its CUDA device (the CUDA kernels, the comm on the nccl backend).
 * Results are deterministic: every rank gets the same bits from the all-reduces, run after run. With tp 1
 * every block runs the fused single-rank kernels with no communication, the same bits as the unsplit
 * model.
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
#include <stdint.h>

#include "dtrain/comm.h"
#include "dtrain/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tensor parallelism */

/* A rank's view of its tp group, passed to every block. */
typedef struct dtr_tp {
  dtr_comm *comm;           /* the tp group; NULL: a single rank */
  int size, rank;           /* of comm (1, 0 without one) */
  int threads;              /* CPU threads for the kernels (<= 0: 1) */
  uint64_t allreduce_calls; /* all-reduces issued through comm so far (statistics) */
  uint64_t allreduce_bytes; /* their payload in bytes */
  void *cuda;               /* NULL: host memory and the CPU kernels; else (dtr_tp_make_cuda) the blocks'
                               CUDA context: every buffer they see is fp32 memory of its device (ids and
                               targets too), comm is an nccl communicator */
  char err[512];            /* why the last block failed */
} dtr_tp;

/* A dtr_tp over comm (NULL: one rank) for host memory. Needs no dtr_tp_free. */
DTR_API dtr_tp dtr_tp_make(dtr_comm *comm, int threads);
/* A dtr_tp whose blocks run on CUDA device `device` (fp32, the kernels behind the same calls) over comm
 * (the nccl backend, on that device; NULL: one rank); comm's operations are ordered after the blocks'
 * stream from here on. DTR_ERR_UNSUPPORTED in a build without CUDA or without the device; err says why.
 * Release with dtr_tp_free. */
DTR_API dtr_result dtr_tp_make_cuda(dtr_comm *comm, int device, dtr_tp *out, char *err, size_t errcap);
/* Wait for the blocks' queued device work (nothing on the host). */
DTR_API dtr_result dtr_tp_sync(dtr_tp *tp);
/* Release what dtr_tp_make_cuda made (stops ordering comm after its stream). NULL, or a host tp: nothing. */
DTR_API void dtr_tp_free(dtr_tp *tp);

/* The part of a dimension of n that rank holds: [*first, *first + *count). DTR_ERR_INVALID (err names
 * the sizes) unless tp divides n. Pure. */
DTR_API dtr_result dtr_tp_split(int n, int tp, int rank, int *first, int *count, char *err, size_t errcap);

/* f backward: dx (n floats, the gradient of a replicated input) summed over the group, in place. g
 * forward: y summed over the group, in place. (f forward and g backward are the identity.) COLLECTIVE
 * over tp. */
DTR_API dtr_result dtr_tp_f_backward(dtr_tp *tp, float *dx, size_t n);
DTR_API dtr_result dtr_tp_g_forward(dtr_tp *tp, float *y, size_t n);

typedef enum dtr_tp_split_kind {
  DTR_TP_COLUMN = 0, /* weight [out/tp, in], bias [out/tp]: output split, input whole */
  DTR_TP_ROW = 1,    /* weight [out, in/tp], bias [out] whole: input split, output whole */
} dtr_tp_split_kind;

/* A linear layer split over tp: this rank's weight and bias and their gradients (shapes above; b and db
 * may be NULL: no bias). in and out are the layer's whole sizes. */
typedef struct dtr_tp_linear {
  dtr_tp_split_kind kind;
  int in, out;
  const float *w, *b;
  float *dw, *db;
} dtr_tp_linear;

/* Column: y[N, out/tp] = x[N, in] w^T + b. Row: y[N, out] = g(x[N, in/tp] w^T) + b. y is overwritten.
 * COLLECTIVE over tp (row). */
DTR_API dtr_result dtr_tp_linear_forward(dtr_tp *tp, const dtr_tp_linear *l, const float *x, float *y, int N);
/* Gradients of the forward above given dy: dw and db are ADDED into (db of a row-parallel layer comes
 * out the same on every rank); dx (x's shape; NULL: not wanted) is OVERWRITTEN — for a column-parallel
 * layer it is the whole input's gradient, f-reduced over the group. COLLECTIVE over tp (column). */
DTR_API dtr_result dtr_tp_linear_backward(dtr_tp *tp, const dtr_tp_linear *l, const float *dy, const float *x,
                                          float *dx, int N);

/* Causal self-attention with heads split over tp: qkv is column-parallel with this rank's rows ordered
 * [q of its heads; k of its heads; v of its heads] (weight [3C/tp, C]), proj row-parallel ([C, C/tp]).
 * Forward keeps what backward needs in the caller's buffers: qkv[N, 3C/tp], att[B, NH/tp, T, T] (softmax
 * probabilities), heads[N, C/tp] (the heads' outputs); out[N, C] (overwritten) is the block's output,
 * bias included. N = B*T. COLLECTIVE over tp (one all-reduce). */
typedef struct dtr_tp_attention {
  int n_embd, n_head; /* whole sizes; n_head and n_embd divisible by tp */
  dtr_tp_linear qkv, proj;
} dtr_tp_attention;
DTR_API dtr_result dtr_tp_attention_forward(dtr_tp *tp, const dtr_tp_attention *a, const float *x, int B,
                                            int T, float *qkv, float *att, float *heads, float *out);
/* dx[N, C] OVERWRITTEN with the gradient of the input (f-reduced); parameter gradients added into.
 * Scratch: dqkv[N, 3C/tp], dheads[N, C/tp]. COLLECTIVE over tp (one all-reduce). */
DTR_API dtr_result dtr_tp_attention_backward(dtr_tp *tp, const dtr_tp_attention *a, const float *x,
                                             const float *qkv, const float *att, const float *heads,
                                             const float *dout, int B, int T, float *dx, float *dqkv,
                                             float *dheads);

/* The GPT MLP: fc column-parallel [H/tp, C], tanh-GELU, proj row-parallel [C, H/tp]. Forward keeps
 * pre[N, H/tp] (fc output) and act[N, H/tp] (after GELU); out[N, C] overwritten. Backward: dx[N, C]
 * OVERWRITTEN, scratch dact[N, H/tp]. COLLECTIVE over tp (one all-reduce each way). */
typedef struct dtr_tp_mlp {
  dtr_tp_linear fc, proj;
} dtr_tp_mlp;
DTR_API dtr_result dtr_tp_mlp_forward(dtr_tp *tp, const dtr_tp_mlp *m, const float *x, int N, float *pre,
                                      float *act, float *out);
DTR_API dtr_result dtr_tp_mlp_backward(dtr_tp *tp, const dtr_tp_mlp *m, const float *x, const float *pre,
                                       const float *act, const float *dout, int N, float *dx, float *dact);

/* Vocabulary-parallel embedding: this rank holds rows [v0, v0+V) of wte [vocab, C]. out[B*T, C] (overwritten)
 * = wte[ids] (ids of the whole vocabulary; one all-reduce assembles the rows) + wpe[t] (wpe [T', C], NULL:
 * none). COLLECTIVE over tp. Backward (local): dwte[id - v0] += dout for this rank's ids, dwpe[t] += dout
 * (NULL: skipped). */
DTR_API dtr_result dtr_tp_embedding_forward(dtr_tp *tp, const float *wte, int v0, int V, const float *wpe,
                                            const int32_t *ids, int B, int T, int C, float *out);
DTR_API dtr_result dtr_tp_embedding_backward(dtr_tp *tp, float *dwte, int v0, int V, float *dwpe,
                                             const int32_t *ids, const float *dout, int B, int T, int C);

/* Vocabulary-parallel softmax cross-entropy over logits[N, V], this rank's columns (ids v0 .. v0+V-1):
 * logits become the softmax probabilities in place and losses[n] = -log p(target) (0 where target is -1,
 * targets NULL: probabilities only). scratch: 3N floats. COLLECTIVE over tp (two all-reduces). Backward
 * OVERWRITES probs with dlogits = (probs - onehot(target)) * dloss (local). */
DTR_API dtr_result dtr_tp_cross_entropy_forward(dtr_tp *tp, float *logits, const int32_t *targets, int v0,
                                                int V, int N, float *losses, float *scratch);
DTR_API dtr_result dtr_tp_cross_entropy_backward(dtr_tp *tp, float *probs, const int32_t *targets, int v0,
                                                 int V, int N, float dloss);

/* ---- pipeline schedules */

typedef enum dtr_pp_schedule_kind {
  DTR_PP_GPIPE = 0,
  DTR_PP_1F1B = 1,
  DTR_PP_INTERLEAVED = 2,
} dtr_pp_schedule_kind;

/* "gpipe", "1f1b", "interleaved" (and back: DTR_ERR_INVALID for anything else). */
DTR_API const char *dtr_pp_schedule_name(dtr_pp_schedule_kind k);
DTR_API dtr_result dtr_pp_schedule_parse(const char *s, dtr_pp_schedule_kind *out);

/* One step of a stage's schedule. */
typedef struct dtr_pp_action {
  int micro;    /* micro-batch, 0 .. m-1 */
  int chunk;    /* model chunk on this stage, 0 .. v-1 (0 unless interleaved) */
  int backward; /* 0: forward, 1: backward */
} dtr_pp_action;

/* Whether (kind, p stages, m micro-batches, v chunks per stage) is a schedule: all >= 1, v == 1 unless
 * interleaved, m a multiple of p for interleaved. DTR_ERR_INVALID with err saying which rule broke. */
DTR_API dtr_result dtr_pp_schedule_check(dtr_pp_schedule_kind kind, int p, int m, int v, char *err,
                                         size_t errcap);
/* Actions per stage: 2*m*v. */
DTR_API int dtr_pp_schedule_length(int m, int v);
/* Fill out[0 .. *n) with stage's actions in execution order (*n = 2*m*v; cap must be at least that).
 * DTR_ERR_INVALID (err says why) for a bad schedule, stage outside 0..p-1 or too little room. */
DTR_API dtr_result dtr_pp_schedule(dtr_pp_schedule_kind kind, int p, int m, int v, int stage,
                                   dtr_pp_action *out, int cap, int *n, char *err, size_t errcap);

/* Activation slots: the executor gives the forward of each (micro-batch, chunk) the lowest slot no
 * micro-batch in flight holds, and frees it at its backward. slot_of[i] (may be NULL) receives action
 * i's slot; returns the number of slots the list needs (its peak of activations in flight). */
DTR_API int dtr_pp_schedule_slots(const dtr_pp_action *a, int n, int *slot_of);

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
DTR_API dtr_result dtr_pp_pipe_create(dtr_comm *pp, const dtr_pp_config *cfg, const dtr_pp_stage *stage,
                                      dtr_pp_pipe **out, char *err, size_t errcap);
/* Wait for sends in flight, release the link communicators. NULL is fine. */
DTR_API void dtr_pp_pipe_destroy(dtr_pp_pipe *p);
/* This stage's schedule and the slots it needs. */
DTR_API const dtr_pp_action *dtr_pp_pipe_actions(const dtr_pp_pipe *p, int *n);
DTR_API int dtr_pp_pipe_slots(const dtr_pp_pipe *p);
/* Run one step: every action of the schedule, then wait for this stage's sends. COLLECTIVE over pp. A
 * communication failure names the stage, micro-batch and chunk; after any failure (a link's, or a
 * callback's, whose result is returned) the link communicators are aborted: nothing waits out a
 * deadline, and a later step fails at once. */
DTR_API dtr_result dtr_pp_pipe_step(dtr_pp_pipe *p, char *err, size_t errcap);

/* Timing of the last step, seconds from its start: each action's start and end (in schedule order),
 * and the total. Idle time (the bubble, plus waiting on slow links) is total minus the sum of the
 * actions. The arrays belong to the pipe. */
typedef struct dtr_pp_timing {
  const double *start, *end;
  int n;
  double total;
} dtr_pp_timing;
DTR_API void dtr_pp_pipe_timing(const dtr_pp_pipe *p, dtr_pp_timing *out);

#ifdef __cplusplus
}
#endif
#endif /* DTRAIN_PARALLEL_H */
