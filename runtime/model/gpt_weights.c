/* Pretrained weights for the reference GPT (gpt_weights.h): which layout a safetensors file uses, the
 * dtrain <-> GPT-2 name map, the shape check that lists every difference, and the load of a part's
 * slices through dtr__gpt_param_pieces (the same mapping the checkpoint registers its boxes with). */
#define _GNU_SOURCE
#include "runtime/model/gpt_weights.h"

#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"
#include "collectives/comm_internal.h"
#include "common/check.h"
#include "common/strbuf.h"
#include "runtime/model/gpt_layout.h"

/* GPT-2's names of the per-layer tensors, in gpt.h's order; 1: stored [in, out] (Conv1D). */
static const struct {
  const char *name;
  int transpose;
} HF_LAYER[DTR_GPT_PER_LAYER] = {
    {"ln_1.weight", 0},        {"ln_1.bias", 0},        {"attn.c_attn.weight", 1}, {"attn.c_attn.bias", 0},
    {"attn.c_proj.weight", 1}, {"attn.c_proj.bias", 0}, {"ln_2.weight", 0},        {"ln_2.bias", 0},
    {"mlp.c_fc.weight", 1},    {"mlp.c_fc.bias", 0},    {"mlp.c_proj.weight", 1},  {"mlp.c_proj.bias", 0}};
/* GPT-2's buffers that are no parameters: the causal masks of older checkpoints. */
static const char *const HF_IGNORED[] = {"attn.bias", "attn.masked_bias"};
static const char *const HF_TIED_HEAD = "lm_head.weight";

struct dtr__gpt_weights {
  dtr__sft_file *f;
  dtr__gpt_wlayout layout;
  const char *prefix; /* of the model's names in this file: "model/", "transformer." or "" */
  dtr__gpt_config cfg;
  char n_head_source[4200];
};

const char *dtr__gpt_layout_name(dtr__gpt_wlayout l) {
  return l == DTR__GPT_LAYOUT_HF_GPT2 ? "hf-gpt2" : "dtrain";
}

dtr_result dtr__gpt_layout_parse(const char *s, dtr__gpt_wlayout *out) {
  if (strcmp(s, "dtrain") == 0)
    *out = DTR__GPT_LAYOUT_DTRAIN;
  else if (strcmp(s, "hf-gpt2") == 0)
    *out = DTR__GPT_LAYOUT_HF_GPT2;
  else
    return DTR_ERR_INVALID;
  return DTR_OK;
}

/* "h.<l>.<rest>": the layer and where rest starts; -1 otherwise. */
static int layer_of(const char *name, const char **rest) {
  if (strncmp(name, "h.", 2) != 0) return -1;
  const char *p = name + 2;
  long l = 0;
  int digits = 0;
  while (*p >= '0' && *p <= '9' && digits < 7) l = l * 10 + (*p++ - '0'), digits++;
  if (!digits || *p != '.' || (digits > 1 && name[2] == '0')) return -1;
  *rest = p + 1;
  return (int)l;
}

dtr_result dtr__gpt_layout_name_of(dtr__gpt_wlayout l, const char *name, char *out, size_t cap,
                                   int *transpose) {
  static const char *const ends[][2] = {
      {"wte", "wte.weight"}, {"wpe", "wpe.weight"}, {"lnf.w", "ln_f.weight"}, {"lnf.b", "ln_f.bias"}};
  *transpose = 0;
  for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
    if (strcmp(name, ends[i][0]) == 0) {
      snprintf(out, cap, "%s", l == DTR__GPT_LAYOUT_HF_GPT2 ? ends[i][1] : name);
      return DTR_OK;
    }
  const char *rest;
  int layer = layer_of(name, &rest);
  for (int k = 0; layer >= 0 && k < DTR_GPT_PER_LAYER; k++) {
    if (strcmp(rest, dtr__gpt_layer_names[k]) != 0) continue;
    if (l == DTR__GPT_LAYOUT_HF_GPT2) {
      snprintf(out, cap, "h.%d.%s", layer, HF_LAYER[k].name);
      *transpose = HF_LAYER[k].transpose;
    } else {
      snprintf(out, cap, "%s", name);
    }
    return DTR_OK;
  }
  return DTR_ERR_NOT_FOUND;
}

/* What a file tensor is, in the file's layout: a model tensor (*layer its layer or -1), a tensor the
 * loader ignores, the tied head, or something it does not know. */
enum { T_MODEL, T_IGNORED, T_HEAD, T_UNKNOWN };

static int classify(const dtr__gpt_weights *w, const char *fname, int *layer) {
  *layer = -1;
  size_t pl = strlen(w->prefix);
  if (w->layout == DTR__GPT_LAYOUT_DTRAIN) {
    if (strncmp(fname, w->prefix, pl) != 0) return pl ? T_IGNORED : T_UNKNOWN;
    if (!pl && (!strncmp(fname, "adamw.", 6) || !strncmp(fname, "__blob__/", 9))) return T_IGNORED;
  } else {
    if (strcmp(fname, HF_TIED_HEAD) == 0) return T_HEAD;
    if (strncmp(fname, w->prefix, pl) != 0) return T_UNKNOWN;
  }
  const char *n = fname + pl, *rest;
  char out[128];
  int tr;
  *layer = layer_of(n, &rest);
  if (w->layout == DTR__GPT_LAYOUT_DTRAIN)
    return dtr__gpt_layout_name_of(DTR__GPT_LAYOUT_DTRAIN, n, out, sizeof out, &tr) == DTR_OK ? T_MODEL
                                                                                              : T_UNKNOWN;
  if (*layer < 0) {
    static const char *const ends[] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
      if (strcmp(n, ends[i]) == 0) return T_MODEL;
    return T_UNKNOWN;
  }
  for (int k = 0; k < DTR_GPT_PER_LAYER; k++)
    if (strcmp(rest, HF_LAYER[k].name) == 0) return T_MODEL;
  for (size_t i = 0; i < sizeof HF_IGNORED / sizeof HF_IGNORED[0]; i++)
    if (strcmp(rest, HF_IGNORED[i]) == 0) return T_IGNORED;
  return T_UNKNOWN;
}

/* The file tensor holding dtrain tensor `name`, or NULL; *transpose as dtr__gpt_layout_name_of. */
static const dtr__sft_tensor *find(const dtr__gpt_weights *w, const char *name, int *transpose, char *fname,
                                   size_t cap) {
  char ln[128];
  if (dtr__gpt_layout_name_of(w->layout, name, ln, sizeof ln, transpose) != DTR_OK) return NULL;
  snprintf(fname, cap, "%s%s", w->prefix, ln);
  return dtr__sft_find(w->f, fname);
}

/* n_head from a Hugging Face config.json beside the file, when there is one that says. */
static void n_head_from_config(dtr__gpt_weights *w) {
  char dir[4096], path[4200];
  snprintf(dir, sizeof dir, "%s", w->f->path);
  snprintf(path, sizeof path, "%s/config.json", dirname(dir));
  FILE *f = fopen(path, "rb");
  if (!f) return;
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf, f);
  int whole = feof(f);
  fclose(f);
  int64_t v = 0;
  char e[256];
  if (!whole || dtr__json_member_int(buf, n, "n_head", &v, e, sizeof e) != DTR_OK || v < 1 || v > 65536)
    return;
  w->cfg.n_head = (int)v;
  snprintf(w->n_head_source, sizeof w->n_head_source, "%s", path);
}

dtr_result dtr__gpt_weights_open(const char *path, dtr__gpt_weights **out, char *err, size_t errcap) {
  *out = NULL;
  dtr__gpt_weights *w = calloc(1, sizeof *w);
  if (!w) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", path);
  dtr_result rc = dtr__sft_open(path, &w->f, err, errcap);
  if (rc != DTR_OK) {
    free(w);
    return rc;
  }
  static const struct {
    const char *wte;
    dtr__gpt_wlayout layout;
    const char *prefix;
  } KINDS[] = {{"model/wte", DTR__GPT_LAYOUT_DTRAIN, "model/"},
               {"wte", DTR__GPT_LAYOUT_DTRAIN, ""},
               {"transformer.wte.weight", DTR__GPT_LAYOUT_HF_GPT2, "transformer."},
               {"wte.weight", DTR__GPT_LAYOUT_HF_GPT2, ""}};
  const dtr__sft_tensor *wte = NULL;
  for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0] && !wte; i++) {
    wte = dtr__sft_find(w->f, KINDS[i].wte);
    w->layout = KINDS[i].layout;
    w->prefix = KINDS[i].prefix;
  }
  if (!wte) {
    dtr__sbuf b = {0};
    for (int i = 0; i < w->f->ntensors && i < 6; i++)
      dtr__sbuf_printf(&b, "%s'%s'", i ? ", " : "", w->f->tensors[i].name);
    if (w->f->ntensors > 6) dtr__sbuf_printf(&b, " and %d more", w->f->ntensors - 6);
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                   "%s: not GPT weights in a layout dtrain knows: no token embedding 'model/wte' (dtrain's "
                   "layout) or 'wte.weight' (Hugging Face GPT-2's); its tensors: %s",
                   path, b.p ? b.p : "none");
    dtr__sbuf_free(&b);
    dtr__gpt_weights_close(w);
    return rc;
  }
  if (wte->ndim != 2) {
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: the token embedding '%s' has %d dimensions, not 2",
                   path, wte->name, wte->ndim);
    dtr__gpt_weights_close(w);
    return rc;
  }
  w->cfg.vocab_size = (int)(wte->shape[0] < 1 << 30 ? wte->shape[0] : 1 << 30);
  w->cfg.n_embd = (int)(wte->shape[1] < 1 << 30 ? wte->shape[1] : 1 << 30);
  char fname[256];
  int tr;
  const dtr__sft_tensor *wpe = find(w, "wpe", &tr, fname, sizeof fname);
  if (wpe && wpe->ndim >= 1) w->cfg.block_size = (int)(wpe->shape[0] < 1 << 30 ? wpe->shape[0] : 1 << 30);
  for (int i = 0; i < w->f->ntensors; i++) {
    int layer;
    if (classify(w, w->f->tensors[i].name, &layer) == T_MODEL && layer >= w->cfg.n_layer)
      w->cfg.n_layer = layer + 1;
  }
  const char *nh = dtr__sft_meta_get(w->f, "n_head");
  if (nh) {
    char *end;
    errno = 0;
    long v = strtol(nh, &end, 10);
    if (errno || end == nh || *end || v < 1 || v > 65536) {
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: __metadata__ n_head '%s' is not a head count", path,
                     nh);
      dtr__gpt_weights_close(w);
      return rc;
    }
    w->cfg.n_head = (int)v;
    snprintf(w->n_head_source, sizeof w->n_head_source, "its metadata");
  } else {
    n_head_from_config(w);
  }
  *out = w;
  return DTR_OK;
}

void dtr__gpt_weights_close(dtr__gpt_weights *w) {
  if (!w) return;
  dtr__sft_close(w->f);
  free(w);
}

dtr__gpt_wlayout dtr__gpt_weights_layout(const dtr__gpt_weights *w) {
  return w->layout;
}

dtr__gpt_config dtr__gpt_weights_config(const dtr__gpt_weights *w) {
  return w->cfg;
}

const char *dtr__gpt_weights_n_head_source(const dtr__gpt_weights *w) {
  return w->n_head_source[0] ? w->n_head_source : NULL;
}

/* ---------------------------------------------------------------- the check */

enum { D_MISSING, D_SHAPE, D_DTYPE, D_UNEXPECTED };

typedef struct diff {
  int kind, layer; /* layer -1: not a layer's tensor */
  const char *pre; /* the prefix before "h.<l>." */
  char what[160];  /* the name after "h.<l>." for a layer's tensor (else all of it), then what differs */
} diff;

static int is_float(dtr_dtype t) {
  return t == DTR_F32 || t == DTR_BF16 || t == DTR_F16 || t == DTR_F64;
}

static void dims(char *out, size_t cap, int ndim, const int64_t *s) {
  size_t at = (size_t)snprintf(out, cap, "[");
  for (int d = 0; d < ndim && at < cap; d++)
    at += (size_t)snprintf(out + at, cap - at, "%s%lld", d ? ", " : "", (long long)s[d]);
  if (at < cap) snprintf(out + at, cap - at, "]");
}

/* The shape dtrain tensor p has in the file (transposed for Conv1D). */
static void file_shape(const dtr__gpt_param *p, int transpose, int64_t out[2]) {
  out[0] = transpose ? p->gshape[1] : p->gshape[0];
  out[1] = transpose ? p->gshape[0] : p->gshape[1];
}

static int fits(const dtr__gpt_param *p, const dtr__sft_tensor *t, int transpose) {
  int64_t want[2];
  file_shape(p, transpose, want);
  if (t->ndim != p->ndim) return 0;
  if (p->ndim == 2 && t->shape[1] != want[1]) return 0;
  if (!strcmp(p->name, "wte")) return t->shape[0] >= 1 && t->shape[0] <= want[0]; /* a padded vocabulary */
  if (!strcmp(p->name, "wpe")) return t->shape[0] >= want[0];                     /* a shorter block */
  return t->shape[0] == want[0];
}

static dtr_result add_diff(diff **d, int *n, int kind, const char *fname, const char *prefix, const char *fmt,
                           ...) __attribute__((format(printf, 6, 7)));
static dtr_result add_diff(diff **d, int *n, int kind, const char *fname, const char *prefix, const char *fmt,
                           ...) {
  diff *nd = realloc(*d, sizeof **d * (size_t)(*n + 1));
  if (!nd) return DTR_ERR_NOMEM;
  *d = nd;
  diff *x = &nd[(*n)++];
  x->kind = kind;
  size_t pl = strlen(prefix);
  const char *rest = NULL;
  x->pre = strncmp(fname, prefix, pl) == 0 ? prefix : "";
  x->layer = layer_of(fname + strlen(x->pre), &rest);
  int at = snprintf(x->what, sizeof x->what, "%s", x->layer >= 0 ? rest : fname);
  va_list ap;
  va_start(ap, fmt);
  if (at >= 0 && (size_t)at < sizeof x->what) vsnprintf(x->what + at, sizeof x->what - (size_t)at, fmt, ap);
  va_end(ap);
  return DTR_OK;
}

static int cmp_int(const void *a, const void *b) {
  return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* One line per difference, the layers that differ alike on one: "  h.0-3,5.attn.c_attn.weight: ...". */
static dtr_result print_diffs(dtr__sbuf *b, const diff *d, int n) {
  char *done = calloc((size_t)n + 1, 1);
  int *layers = calloc((size_t)n + 1, sizeof *layers);
  if (!done || !layers) {
    free(done);
    free(layers);
    return DTR_ERR_NOMEM;
  }
  for (int i = 0; i < n; i++) {
    if (done[i]) continue;
    if (d[i].layer < 0) {
      dtr__sbuf_printf(b, "\n  %s", d[i].what);
      continue;
    }
    int nl = 0;
    for (int j = i; j < n; j++)
      if (!done[j] && d[j].layer >= 0 && d[j].kind == d[i].kind && d[j].pre == d[i].pre &&
          strcmp(d[j].what, d[i].what) == 0) {
        done[j] = 1;
        layers[nl++] = d[j].layer;
      }
    qsort(layers, (size_t)nl, sizeof *layers, cmp_int);
    dtr__sbuf_printf(b, "\n  %sh.", d[i].pre);
    for (int a = 0, e; a < nl; a = e) {
      for (e = a + 1; e < nl && layers[e] == layers[e - 1] + 1;) e++;
      if (e - a > 1)
        dtr__sbuf_printf(b, "%s%d-%d", a ? "," : "", layers[a], layers[e - 1]);
      else
        dtr__sbuf_printf(b, "%s%d", a ? "," : "", layers[a]);
    }
    dtr__sbuf_printf(b, ".%s", d[i].what);
  }
  free(done);
  free(layers);
  return b->oom ? DTR_ERR_NOMEM : DTR_OK;
}

dtr_result dtr__gpt_weights_check(const dtr__gpt_weights *w, const dtr__gpt_config *cfg, char *err,
                                  size_t errcap) {
  dtr_result rc = DTR_OK;
  int nt = dtr__gpt_config_num_tensors(cfg);
  dtr__gpt_param *tab = calloc((size_t)nt, sizeof *tab);
  char *used = calloc((size_t)w->f->ntensors + 1, 1);
  diff *d = NULL;
  int nd = 0;
  if (!tab || !used) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", w->f->path);
    goto done;
  }
  dtr__gpt_layout(cfg, tab);
  for (int i = 0; i < nt && rc == DTR_OK; i++) {
    char fname[256], have[64], want[64];
    int tr;
    const dtr__sft_tensor *t = find(w, tab[i].name, &tr, fname, sizeof fname);
    int64_t ws[2];
    file_shape(&tab[i], tr, ws);
    dims(want, sizeof want, tab[i].ndim, ws);
    if (!t) {
      rc = add_diff(&d, &nd, D_MISSING, fname, w->prefix, ": missing; the model needs %s", want);
      continue;
    }
    used[t - w->f->tensors] = 1;
    dims(have, sizeof have, t->ndim, t->shape);
    if (!is_float(t->dtype))
      rc = add_diff(&d, &nd, D_DTYPE, fname, w->prefix, ": dtype %s, not a float (F32, BF16, F16, F64)",
                    dtr__sft_dtype_name(t->dtype));
    else if (!fits(&tab[i], t, tr))
      rc = add_diff(&d, &nd, D_SHAPE, fname, w->prefix, ": %s in the file, the model needs %s%s", have, want,
                    t->ndim == 2 && t->shape[0] == ws[1] && t->shape[1] == ws[0] && ws[0] != ws[1]
                        ? (tr ? " (transposed: GPT-2 stores Conv1D weights [in, out])"
                              : " (transposed: dtrain stores weights [out, in])")
                    : t->ndim != 2 || t->shape[1] != ws[1] ? ""
                    : !strcmp(tab[i].name, "wte")          ? " (or fewer rows: the vocabulary padded)"
                    : !strcmp(tab[i].name, "wpe")          ? " (or more rows: a longer block cropped)"
                                                           : "");
  }
  for (int i = 0; i < w->f->ntensors && rc == DTR_OK; i++) {
    const dtr__sft_tensor *t = &w->f->tensors[i];
    int layer, kind = classify(w, t->name, &layer);
    char have[64];
    dims(have, sizeof have, t->ndim, t->shape);
    if (kind == T_HEAD) {
      char fname[256];
      int tr;
      const dtr__sft_tensor *wte = find(w, "wte", &tr, fname, sizeof fname);
      if (wte && (t->ndim != wte->ndim || memcmp(t->shape, wte->shape, sizeof t->shape) != 0))
        rc = add_diff(&d, &nd, D_SHAPE, t->name, "",
                      ": %s, not the shape of %s (the output head is tied to it)", have, fname);
    } else if ((kind == T_MODEL && !used[i]) || kind == T_UNKNOWN) {
      rc = add_diff(&d, &nd, D_UNEXPECTED, t->name, w->prefix, ": %s in the file, %s", have,
                    kind == T_MODEL ? "not in the model" : "not a tensor of this layout's GPT");
    }
  }
  if (rc != DTR_OK) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", w->f->path);
    goto done;
  }
  if (nd > 0) {
    dtr__sbuf b = {0};
    dtr__gpt_config fc = w->cfg;
    dtr__sbuf_printf(
        &b,
        "%s (%s layout: vocab_size %d, block_size %d, n_layer %d, n_embd %d) does not fit the model "
        "(vocab_size %d, block_size %d, n_layer %d, n_embd %d): %d tensor%s differ%s:",
        w->f->path, dtr__gpt_layout_name(w->layout), fc.vocab_size, fc.block_size, fc.n_layer, fc.n_embd,
        cfg->vocab_size, cfg->block_size, cfg->n_layer, cfg->n_embd, nd, nd == 1 ? "" : "s",
        nd == 1 ? "s" : "");
    if (print_diffs(&b, d, nd) != DTR_OK || b.oom)
      rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory", w->f->path);
    else
      rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s", b.p);
    dtr__sbuf_free(&b);
  }
done:
  free(d);
  free(used);
  free(tab);
  return rc;
}

/* ---------------------------------------------------------------- the load */

/* File tensor t as fp32 in dtrain's orientation ([rows, cols] of the file's [cols, rows] when transposed);
 * *out owned by the caller. */
static dtr_result read_f32(const dtr__gpt_weights *w, const dtr__sft_tensor *t, int transpose, float **out,
                           char *err, size_t errcap) {
  *out = NULL;
  size_t bytes = (size_t)(t->end - t->begin), n = bytes / dtr_dtype_size(t->dtype);
  void *raw = malloc(bytes ? bytes : 1);
  float *f = malloc((n ? n : 1) * sizeof *f);
  dtr_result rc = DTR_OK;
  if (!raw || !f) {
    rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory for tensor '%s'", w->f->path, t->name);
    goto fail;
  }
  DTR_CHECK_GOTO(dtr__sft_read(w->f, (int)(t - w->f->tensors), raw, err, errcap), rc, fail);
  int64_t r = t->ndim == 2 ? t->shape[0] : (int64_t)n, c = t->ndim == 2 ? t->shape[1] : 1;
  for (size_t i = 0; i < n; i++) {
    float v;
    switch (t->dtype) {
      case DTR_F32:
        memcpy(&v, (const char *)raw + 4 * i, 4);
        break;
      case DTR_F64: {
        double x;
        memcpy(&x, (const char *)raw + 8 * i, 8);
        v = (float)x;
        break;
      }
      case DTR_F16:
      case DTR_BF16: {
        uint16_t h;
        memcpy(&h, (const char *)raw + 2 * i, 2);
        v = t->dtype == DTR_F16 ? dtr__f16_to_f32(h) : dtr__bf16_to_f32(h);
        break;
      }
      default:
        rc = dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: tensor '%s' has dtype %s, not a float", w->f->path,
                       t->name, dtr__sft_dtype_name(t->dtype));
        goto fail;
    }
    /* element (i / c, i % c) of the file's [r, c]; transposed: (i % c, i / c) of [c, r] */
    f[transpose ? (size_t)(i % (size_t)c) * (size_t)r + i / (size_t)c : i] = v;
  }
  free(raw);
  *out = f;
  return DTR_OK;
fail:
  free(raw);
  free(f);
  return rc;
}

dtr_result dtr__gpt_weights_load(const dtr__gpt_weights *w, dtr__gpt *m, const dtr__gpt_config *cfg,
                                 char *err, size_t errcap) {
  DTR_CHECK(dtr__gpt_weights_check(w, cfg, err, errcap));
  const dtr__gpt_part *part = dtr__gpt_part_of(m);
  int tp = part->tp ? part->tp->size : 1, tp_rank = part->tp ? part->tp->rank : 0;
  float *params = dtr__gpt_params(m);
  for (int i = 0; i < dtr__gpt_num_tensors(m); i++) {
    const dtr__gpt_param *p = dtr__gpt_tensor(m, i);
    char fname[256];
    int tr;
    const dtr__sft_tensor *t = find(w, p->name, &tr, fname, sizeof fname);
    float *whole = NULL;
    if (!t) return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: no tensor '%s'", w->f->path, fname);
    DTR_CHECK(read_f32(w, t, tr, &whole, err, errcap));
    if (!strcmp(p->name, "wte") && w->layout == DTR__GPT_LAYOUT_HF_GPT2) {
      /* a head stored apart must be the embedding it is tied to */
      const dtr__sft_tensor *head = dtr__sft_find(w->f, HF_TIED_HEAD);
      float *h = NULL;
      dtr_result rc = head ? read_f32(w, head, 0, &h, err, errcap) : DTR_OK;
      if (rc == DTR_OK && h && memcmp(h, whole, (size_t)(t->shape[0] * t->shape[1]) * sizeof(float)) != 0)
        rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                       "%s: %s differs from %s: dtrain's GPT ties its output head to the token embedding, so "
                       "it cannot load an untied head",
                       w->f->path, HF_TIED_HEAD, fname);
      free(h);
      if (rc != DTR_OK) {
        free(whole);
        return rc;
      }
    }
    int64_t rows = t->ndim == 2 ? (tr ? t->shape[1] : t->shape[0]) : t->shape[0];
    dtr__gpt_copy_slice(p, tp, tp_rank, whole, rows < p->gshape[0] ? rows : p->gshape[0], params + p->offset);
    free(whole);
  }
  return DTR_OK;
}

/* ---------------------------------------------------------------- export */

typedef struct seen_tensor {
  char name[64]; /* gpt.h's name */
  int ndim;
  int64_t shape[2];
} seen_tensor;

struct dtr__gpt_export {
  dtr__gpt_wlayout layout;
  int n_head;
  seen_tensor *seen;
  int nseen;
  char unknown[256]; /* the first model/ tensor that is none of the model's */
  dtr__gpt_config cfg;
  char vals[8][32];
  dtr__sft_meta meta[12];
};

dtr_result dtr__gpt_export_create(dtr__gpt_wlayout l, int n_head, dtr__gpt_export **out, char *err,
                                  size_t errcap) {
  *out = calloc(1, sizeof **out);
  if (!*out) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
  (*out)->layout = l;
  (*out)->n_head = n_head;
  return DTR_OK;
}

void dtr__gpt_export_destroy(dtr__gpt_export *x) {
  if (!x) return;
  free(x->seen);
  free(x);
}

static int export_tensor(void *arg, const char *name, int ndim, const int64_t *shape, char *out, size_t cap,
                         int *transpose) {
  dtr__gpt_export *x = arg;
  if (strncmp(name, "model/", 6) != 0) return 0; /* the optimizer's moments */
  const char *n = name + 6;
  char ln[128];
  if (ndim < 1 || ndim > 2 || strlen(n) >= sizeof x->seen[0].name ||
      dtr__gpt_layout_name_of(x->layout, n, ln, sizeof ln, transpose) != DTR_OK) {
    if (!x->unknown[0]) snprintf(x->unknown, sizeof x->unknown, "%s", name);
    return 0;
  }
  seen_tensor *s = realloc(x->seen, sizeof *s * (size_t)(x->nseen + 1));
  if (!s) {
    snprintf(x->unknown, sizeof x->unknown, "(out of memory)");
    return 0;
  }
  x->seen = s;
  s = &s[x->nseen++];
  snprintf(s->name, sizeof s->name, "%s", n);
  s->ndim = ndim;
  s->shape[0] = shape[0];
  s->shape[1] = ndim == 2 ? shape[1] : 0;
  snprintf(out, cap, "%s%s", x->layout == DTR__GPT_LAYOUT_DTRAIN ? "model/" : "", ln);
  return 1;
}

static const seen_tensor *seen_find(const dtr__gpt_export *x, const char *name) {
  for (int i = 0; i < x->nseen; i++)
    if (strcmp(x->seen[i].name, name) == 0) return &x->seen[i];
  return NULL;
}

static dtr_result export_finish(void *arg, const dtr__sft_meta **meta, int *nmeta, char *err, size_t errcap) {
  dtr__gpt_export *x = arg;
  if (x->unknown[0])
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "'%s' is not a tensor of dtrain's GPT: not its checkpoint?", x->unknown);
  const seen_tensor *wte = seen_find(x, "wte"), *wpe = seen_find(x, "wpe");
  if (!wte || !wpe || wte->ndim != 2 || wpe->ndim != 2)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "no 2-D model/wte and model/wpe: not a checkpoint of dtrain's GPT (export it without "
                     "--layout)");
  dtr__gpt_config c = {(int)wte->shape[0], (int)wpe->shape[0], 0, x->n_head, (int)wte->shape[1]};
  for (int i = 0; i < x->nseen; i++) {
    const char *rest;
    int l = layer_of(x->seen[i].name, &rest);
    if (l >= c.n_layer) c.n_layer = l + 1;
  }
  if (c.n_head < 1 || c.n_embd % c.n_head != 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "n_head %d does not divide the checkpoint's n_embd %d",
                     c.n_head, c.n_embd);
  int nt = dtr__gpt_config_num_tensors(&c);
  dtr__gpt_param *tab = calloc((size_t)nt, sizeof *tab);
  if (!tab) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
  dtr_result rc = DTR_OK;
  dtr__gpt_layout(&c, tab);
  for (int i = 0; i < nt && rc == DTR_OK; i++) {
    const seen_tensor *s = seen_find(x, tab[i].name);
    if (!s || s->ndim != tab[i].ndim || s->shape[0] != tab[i].gshape[0] || s->shape[1] != tab[i].gshape[1])
      rc = dtr__fail(
          err, errcap, DTR_ERR_INVALID,
          "model/%s: %s; a GPT of vocab_size %d, block_size %d, n_layer %d, n_embd %d has it [%lld%s%.0lld]",
          tab[i].name, s ? "another shape" : "missing", c.vocab_size, c.block_size, c.n_layer, c.n_embd,
          (long long)tab[i].gshape[0], tab[i].ndim == 2 ? ", " : "", (long long)tab[i].gshape[1]);
  }
  free(tab);
  if (rc == DTR_OK && x->nseen != nt)
    rc = dtr__fail(err, errcap, DTR_ERR_INVALID,
                   "the checkpoint holds %d model tensors, a GPT of its shape %d", x->nseen, nt);
  if (rc != DTR_OK) return rc;
  x->cfg = c;
  int n = 0, v = 0;
#define META(k, fmt, val)                                      \
  do {                                                         \
    snprintf(x->vals[v], sizeof x->vals[v], fmt, val);         \
    x->meta[n++] = (dtr__sft_meta){(char *)(k), x->vals[v++]}; \
  } while (0)
  if (x->layout == DTR__GPT_LAYOUT_HF_GPT2) {
    x->meta[n++] = (dtr__sft_meta){"model_type", "gpt2"};
    META("vocab_size", "%d", c.vocab_size);
    META("n_positions", "%d", c.block_size);
    META("n_ctx", "%d", c.block_size);
    META("n_embd", "%d", c.n_embd);
    META("n_layer", "%d", c.n_layer);
    META("n_head", "%d", c.n_head);
    x->meta[n++] = (dtr__sft_meta){"activation_function", "gelu_new"};
    x->meta[n++] = (dtr__sft_meta){"layer_norm_epsilon", "1e-05"};
    x->meta[n++] = (dtr__sft_meta){"tie_word_embeddings", "true"};
  } else {
    x->meta[n++] = (dtr__sft_meta){"dtrain_model", "gpt"};
    META("vocab_size", "%d", c.vocab_size);
    META("block_size", "%d", c.block_size);
    META("n_layer", "%d", c.n_layer);
    META("n_head", "%d", c.n_head);
    META("n_embd", "%d", c.n_embd);
  }
#undef META
  *meta = x->meta;
  *nmeta = n;
  return DTR_OK;
}

dtr__ckpt_export_map dtr__gpt_export_map(dtr__gpt_export *x) {
  return (dtr__ckpt_export_map){x, export_tensor, export_finish};
}

dtr__gpt_config dtr__gpt_export_config(const dtr__gpt_export *x) {
  return x->cfg;
}

dtr_result dtr__gpt_hf_config_write(const dtr__gpt_config *c, const char *path, char *err, size_t errcap) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: %s", tmp, strerror(errno));
  fprintf(f,
          "{\n"
          "  \"architectures\": [\"GPT2LMHeadModel\"],\n"
          "  \"model_type\": \"gpt2\",\n"
          "  \"vocab_size\": %d,\n"
          "  \"n_positions\": %d,\n"
          "  \"n_ctx\": %d,\n"
          "  \"n_embd\": %d,\n"
          "  \"n_layer\": %d,\n"
          "  \"n_head\": %d,\n"
          "  \"n_inner\": null,\n"
          "  \"activation_function\": \"gelu_new\",\n"
          "  \"layer_norm_epsilon\": 1e-05,\n"
          "  \"tie_word_embeddings\": true\n"
          "}\n",
          c->vocab_size, c->block_size, c->block_size, c->n_embd, c->n_layer, c->n_head);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
    dtr_result rc = dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: %s", path, strerror(errno));
    unlink(tmp);
    return rc;
  }
  return DTR_OK;
}
