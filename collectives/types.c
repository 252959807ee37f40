/* Names, sizes and parsers for the element types (dtrain/common.h) and the communicator's enums
 * (reduction, backend, operation kind), and the default configuration. Pure functions: no state, safe from
 * any thread. */
#include <string.h>

#include "collectives/comm_internal.h"

static const char *const dtype_names[] = {"f32", "f64", "f16", "bf16", "i32", "i64", "u8"};
static const size_t dtype_sizes[] = {4, 8, 2, 2, 4, 8, 1};
static const char *const redop_names[] = {"sum", "avg", "max", "min", "prod"};
static const char *const backend_names[] = {"host", "nccl", "mpi"};
static const char *const op_kind_names[] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast",
                                            "reduce",     "all_to_all",     "barrier",    "p2p"};

#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

size_t dtr_dtype_size(dtr_dtype t) {
  return ((int)t >= 0 && (int)t < COUNT_OF(dtype_sizes)) ? dtype_sizes[t] : 0;
}

const char *dtr_dtype_name(dtr_dtype t) {
  return ((int)t >= 0 && (int)t < COUNT_OF(dtype_names)) ? dtype_names[t] : "?dtype";
}

const char *dtr_redop_name(dtr_redop op) {
  return ((int)op >= 0 && (int)op < COUNT_OF(redop_names)) ? redop_names[op] : "?redop";
}

const char *dtr_backend_name(dtr_backend b) {
  return ((int)b >= 0 && (int)b < COUNT_OF(backend_names)) ? backend_names[b] : "?backend";
}

const char *dtr__op_kind_name(dtr__op_kind k) {
  return ((int)k >= 0 && (int)k < COUNT_OF(op_kind_names)) ? op_kind_names[k] : "?op";
}

/* Case-sensitive lookup in a name table; a few common aliases are accepted by the callers. */
static int lookup(const char *s, const char *const *names, int n) {
  if (!s) return -1;
  for (int i = 0; i < n; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

dtr_result dtr_backend_parse(const char *s, dtr_backend *out) {
  int i = lookup(s, backend_names, COUNT_OF(backend_names));
  if (i < 0 || !out) return DTR_ERR_INVALID;
  *out = (dtr_backend)i;
  return DTR_OK;
}

dtr_result dtr_dtype_parse(const char *s, dtr_dtype *out) {
  int i = lookup(s, dtype_names, COUNT_OF(dtype_names));
  if (i < 0 && s) {
    /* The spellings people type from PyTorch and numpy. */
    static const struct {
      const char *alias;
      dtr_dtype t;
    } aliases[] = {{"float32", DTR_F32}, {"float", DTR_F32}, {"float64", DTR_F64},   {"double", DTR_F64},
                   {"float16", DTR_F16}, {"half", DTR_F16},  {"bfloat16", DTR_BF16}, {"int32", DTR_I32},
                   {"int64", DTR_I64},   {"uint8", DTR_U8}};
    for (int k = 0; k < COUNT_OF(aliases); k++)
      if (strcmp(s, aliases[k].alias) == 0) i = (int)aliases[k].t;
  }
  if (i < 0 || !out) return DTR_ERR_INVALID;
  *out = (dtr_dtype)i;
  return DTR_OK;
}

dtr_result dtr_redop_parse(const char *s, dtr_redop *out) {
  int i = lookup(s, redop_names, COUNT_OF(redop_names));
  if (i < 0 || !out) return DTR_ERR_INVALID;
  *out = (dtr_redop)i;
  return DTR_OK;
}

dtr_comm_config dtr_comm_config_default(void) {
  dtr_comm_config c;
  memset(&c, 0, sizeof c);
  c.backend = DTR_BACKEND_HOST;
  c.timeout_ms = 0;
  c.cuda_device = -1;
  c.name = "world";
  return c;
}
