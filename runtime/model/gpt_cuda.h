/* The reference GPT of runtime/model/gpt.h on a CUDA device (internal to runtime/): the same parameter table
 * (names, shapes, offsets of the flat buffers), forward, backward with the same ready-callback order,
 * and AdamW, over the ops of runtime/kernels_cuda.h. Master parameters, gradients and AdamW moments are
 * fp32 device buffers laid out like dtr__gpt_params / dtr__gpt_grads. With precision DTR_BF16 the
 * activations are bf16 and the matrix products read a bf16 copy of the parameters (refreshed by every
 * AdamW step and set_params): mixed precision, fp32 accumulation and fp32 gradients. With DTR_F32
 * everything is fp32 and the results match the CPU model to rounding. Either way the model is
 * deterministic: the same weights and batches give the same losses, gradients and updates, bit for bit,
 * on every run (same GPU model and software versions; see kernels_cuda.h).
 *
 * A build without CUDA has every function: create returns DTR_ERR_UNSUPPORTED (after checking the
 * config), so callers decide at run time. A model is not thread-safe; use it from one thread, which
 * create leaves with the model's device current. */
#ifndef DTRAIN_RUNTIME_GPT_CUDA_H
#define DTRAIN_RUNTIME_GPT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"
#include "runtime/model/gpt.h"
#include "runtime/model/kernels_cuda.h"

typedef struct dtr__gpt_cuda dtr__gpt_cuda;

/* Validate cfg (as dtr__gpt_create does, err naming the field: DTR_ERR_INVALID), then make a kernel
 * context on `device` (cudaSetDevice on the calling thread), allocate parameters, gradients (zeroed),
 * AdamW moments (zeroed) and activations for max_batch x block_size, and upload params[0..nparams)
 * (host fp32, e.g. dtr__gpt_params of a CPU model with the same cfg; nparams must equal the table's
 * count). precision: DTR_F32 or DTR_BF16. Errors: DTR_ERR_UNSUPPORTED without CUDA or
 * without that device; DTR_ERR_NOMEM when device memory runs out. On failure *out is NULL. */
dtr_result dtr__gpt_cuda_create(const dtr__gpt_config *cfg, const float *params, size_t nparams, int device,
                                dtr_dtype precision, int max_batch, dtr__gpt_cuda **out, char *err,
                                size_t errcap);
/* Waits for queued work and frees everything. NULL is accepted. */
void dtr__gpt_cuda_destroy(dtr__gpt_cuda *m);

size_t dtr__gpt_cuda_num_params(const dtr__gpt_cuda *m);
int dtr__gpt_cuda_num_tensors(const dtr__gpt_cuda *m);
/* Entry i of the table (as dtr__gpt_tensor: same names, shapes, offsets, decay flags); NULL outside. */
const dtr__gpt_param *dtr__gpt_cuda_tensor(const dtr__gpt_cuda *m, int i);
dtr_dtype dtr__gpt_cuda_precision(const dtr__gpt_cuda *m);
/* Why the last call on m failed ("" when none did), with the kernel context's detail. */
const char *dtr__gpt_cuda_last_error(const dtr__gpt_cuda *m);

/* Device buffers (nparams fp32 each, owned by m, valid until destroy): for NCCL all-reduces of the
 * gradients and checkpoint registration (dtr_ckpt_tensor.device = DTR_CKPT_CUDA). Whoever writes params
 * directly must call dtr__gpt_cuda_params_changed before the next forward (the bf16 copy). */
float *dtr__gpt_cuda_params_dev(dtr__gpt_cuda *m);
float *dtr__gpt_cuda_grads_dev(dtr__gpt_cuda *m);
float *dtr__gpt_cuda_adam_m_dev(dtr__gpt_cuda *m);
float *dtr__gpt_cuda_adam_v_dev(dtr__gpt_cuda *m);
/* The kernel context and its stream (a cudaStream_t as void *): every op of m runs on it in order. */
dtr_cuda_ctx *dtr__gpt_cuda_ctx(dtr__gpt_cuda *m);
void *dtr__gpt_cuda_stream(dtr__gpt_cuda *m);
/* Wait for all queued work; reports an asynchronous kernel fault. */
dtr_result dtr__gpt_cuda_sync(dtr__gpt_cuda *m);

/* Host <-> device copies of the whole flat buffers (nparams floats; they wait for the stream).
 * set_params also refreshes the bf16 copy. */
dtr_result dtr__gpt_cuda_get_params(dtr__gpt_cuda *m, float *host);
dtr_result dtr__gpt_cuda_get_grads(dtr__gpt_cuda *m, float *host);
dtr_result dtr__gpt_cuda_set_params(dtr__gpt_cuda *m, const float *host);
/* Re-derive the bf16 copy from the fp32 master parameters (no-op in fp32). */
dtr_result dtr__gpt_cuda_params_changed(dtr__gpt_cuda *m);

/* As dtr__gpt_forward: inputs/targets are HOST ids [B*T] (validated on the host: an id outside the
 * vocabulary is DTR_ERR_INVALID naming its position), loss and logits (B*T*V floats) are host outputs
 * (NULL: not wanted). Waits for the device only when loss or logits are asked for. */
dtr_result dtr__gpt_cuda_forward(dtr__gpt_cuda *m, const int32_t *inputs, const int32_t *targets, int B,
                                 int T, float *loss, float *logits);

/* As dtr__gpt_backward: ADDS grad_scale x d(loss) into the fp32 gradients and calls ready(arg, offset,
 * count) for the same ranges in the same order as the CPU model (output norm, layers from the last,
 * embeddings: from the end of the flat buffer towards its start). When ready is called, the ops that
 * produce the range are QUEUED on the model's stream, not finished: work queued later on that stream
 * (an ncclAllReduce on dtr__gpt_cuda_stream) sees the final values, another stream must wait on an event
 * recorded on it, and a host reader calls dtr__gpt_cuda_sync (or a download) first. Backward never
 * touches a reported range again. ready may be NULL. */
dtr_result dtr__gpt_cuda_backward(dtr__gpt_cuda *m, float grad_scale, dtr__gpt_grad_ready_fn ready,
                                  void *ready_arg);
dtr_result dtr__gpt_cuda_zero_grad(dtr__gpt_cuda *m);

/* Sum of squares of all gradients (fp32 on the device, returned on the host): the global norm for
 * clipping, whose factor goes to hp.grad_scale of the next step. Waits for the device. */
dtr_result dtr__gpt_cuda_grad_sumsq(dtr__gpt_cuda *m, double *out);

/* One AdamW step on the device over all parameters, weight decay on the 2-D weights (the table's decay
 * flags, as the trainer's mask), moments kept in m; also refreshes the bf16 copy. hp->step >= 1 counts
 * steps from 1 (the bias correction). Same arithmetic as dtr_adamw_step. */
dtr_result dtr__gpt_cuda_adamw(dtr__gpt_cuda *m, const dtr_cuda_adamw_hp *hp);

#endif
