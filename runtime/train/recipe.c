/* dtr_recipe_load: walk the recipe's YAML (libyaml's document API keeps each node's line and column),
 * apply `section.key=value` overrides, fill defaults and resolve paths, then validate every key and
 * every combination, naming the position of the value at fault so the message reads `file:line:col: ...`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/sock.h"
#include "common/yaml_error.h"
#include "dtrain/runtime.h"
#include "runtime/model/gpt_weights.h"
#include "runtime/train/recipe_internal.h"

enum { SRC_DEFAULT = 0, SRC_FILE = 1, SRC_OVERRIDE = 2 };

typedef struct kpos {
  int src;
  int line, col;        /* SRC_FILE: 1-based position of the value */
  const char *override; /* SRC_OVERRIDE: the whole "k=v" string */
} kpos;

typedef struct ctx {
  dtr_recipe *r;
  const char *path; /* as the caller gave it: messages use it */
  kpos pos[96];
  char *err;
  size_t cap;
  dtr__gpt_weights *init; /* model.init_from, open while validating */
} ctx;

/* Where key k's value came from: "file:line:col", "override 'k=v'", or the file alone for a default. */
static void where(const ctx *c, int k, char *out, size_t cap) {
  const kpos *p = &c->pos[k];
  if (p->src == SRC_FILE)
    snprintf(out, cap, "%s:%d:%d", c->path, p->line, p->col);
  else if (p->src == SRC_OVERRIDE)
    snprintf(out, cap, "override '%s'", p->override);
  else
    snprintf(out, cap, "%s", c->path);
}

static dtr_result fail_at(ctx *c, int k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static dtr_result fail_at(ctx *c, int k, const char *fmt, ...) {
  char loc[DTR_RECIPE_STR + 64], msg[1024];
  where(c, k, loc, sizeof loc);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "%s: %s", loc, msg);
}

/* fail_at for a message of any length (a weights file's list of differences). */
static dtr_result fail_at_long(ctx *c, int k, const char *what, const char *detail) {
  char loc[DTR_RECIPE_STR + 64];
  where(c, k, loc, sizeof loc);
  return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "%s: %s%s", loc, what, detail);
}

static dtr_result fail_mark(ctx *c, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static dtr_result fail_mark(ctx *c, yaml_mark_t m, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "%s:%d:%d: %s", c->path, (int)m.line + 1,
                   (int)m.column + 1, msg);
}

static int K(const char *section, const char *name) {
  return dtr__recipe_key_find(section, name);
}

/* The key to blame for a combination: the first of the list that the file or an override set. */
static int blame(const ctx *c, int n, ...) {
  va_list ap;
  va_start(ap, n);
  int first = -1, pick = -1;
  for (int i = 0; i < n; i++) {
    int k = va_arg(ap, int);
    if (first < 0) first = k;
    if (pick < 0 && c->pos[k].src != SRC_DEFAULT) pick = k;
  }
  va_end(ap);
  return pick >= 0 ? pick : first;
}

static const char *node_kind(const yaml_node_t *n) {
  return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a value";
}

static int is_null_scalar(const yaml_node_t *n) {
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
  const char *s = (const char *)n->data.scalar.value;
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Keys of one section, for suggestions. */
static int section_keys(const char *section, const char **out, int max) {
  int n = 0;
  for (int i = 0; i < dtr__recipe_nkeys && n < max; i++)
    if (!strcmp(dtr__recipe_keys[i].section, section)) out[n++] = dtr__recipe_keys[i].name;
  return n;
}

static void did_you_mean(const char *s, char *out, size_t cap) {
  if (s)
    snprintf(out, cap, " (did you mean '%s'?)", s);
  else
    out[0] = '\0';
}

/* A sequence of scalars as "a,b,c" for a list key. */
static dtr_result join_sequence(ctx *c, yaml_document_t *doc, yaml_node_t *seq, const char *section,
                                const char *name, char *out, size_t cap) {
  size_t at = 0;
  out[0] = '\0';
  for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
    yaml_node_t *x = yaml_document_get_node(doc, *it);
    if (!x || x->type != YAML_SCALAR_NODE)
      return fail_mark(c, x ? x->start_mark : seq->start_mark, "%s.%s: expected a list of numbers, got %s",
                       section, name, x ? node_kind(x) : "nothing");
    int w = snprintf(out + at, cap - at, "%s%s", at ? "," : "", (const char *)x->data.scalar.value);
    if (w < 0 || (size_t)w >= cap - at)
      return fail_mark(c, seq->start_mark, "%s.%s: too long a list", section, name);
    at += (size_t)w;
  }
  return DTR_OK;
}

static dtr_result walk_section(ctx *c, yaml_document_t *doc, const char *section, yaml_node_t *map) {
  if (is_null_scalar(map)) return DTR_OK; /* "train:" with nothing under it: all defaults */
  if (map->type != YAML_MAPPING_NODE)
    return fail_mark(c, map->start_mark, "section '%s' must be a mapping of keys, got %s", section,
                     node_kind(map));
  for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
    yaml_node_t *kn = yaml_document_get_node(doc, pr->key);
    yaml_node_t *vn = yaml_document_get_node(doc, pr->value);
    if (!kn || !vn) return fail_mark(c, map->start_mark, "malformed mapping in section '%s'", section);
    if (kn->type != YAML_SCALAR_NODE)
      return fail_mark(c, kn->start_mark, "keys in section '%s' must be names, got %s", section,
                       node_kind(kn));
    const char *name = (const char *)kn->data.scalar.value;
    int k = K(section, name);
    if (k < 0) {
      const char *cands[32];
      int n = section_keys(section, cands, 32);
      char dym[128];
      did_you_mean(dtr__recipe_suggest(name, cands, n), dym, sizeof dym);
      return fail_mark(c, kn->start_mark, "unknown key '%s' in %s%s", name, section, dym);
    }
    if (c->pos[k].src == SRC_FILE)
      return fail_mark(c, kn->start_mark, "duplicate key '%s' in %s (first at line %d)", name, section,
                       c->pos[k].line);
    c->pos[k].src = SRC_FILE;
    c->pos[k].line = (int)vn->start_mark.line + 1;
    c->pos[k].col = (int)vn->start_mark.column + 1;
    char list[1024];
    const char *text;
    if (dtr__recipe_keys[k].type == DTR__RK_INTS && vn->type == YAML_SEQUENCE_NODE) {
      DTR_CHECK(join_sequence(c, doc, vn, section, name, list, sizeof list));
      text = list;
    } else if (vn->type != YAML_SCALAR_NODE) {
      return fail_mark(c, vn->start_mark, "%s.%s: expected a single value, got %s", section, name,
                       node_kind(vn));
    } else {
      text = (const char *)vn->data.scalar.value;
    }
    if (dtr__recipe_keys[k].type == DTR__RK_STR && is_null_scalar(vn)) text = "";
    char msg[768];
    if (dtr__recipe_set(c->r, k, text, msg, sizeof msg) != DTR_OK)
      return fail_mark(c, vn->start_mark, "%s", msg);
  }
  return DTR_OK;
}

#define RECIPE_MAX_BYTES (4u << 20) /* a recipe is a page of keys; anything this big is a mistake */

/* The recipe file's bytes (NUL-terminated, malloc'ed) in *text. A FIFO in its place is refused, not
 * waited on. */
static dtr_result read_recipe(ctx *c, char **text, size_t *len) {
  *text = NULL;
  int fd = dtr__open_regular(c->path, O_RDONLY);
  if (fd < 0 && errno == EINVAL)
    return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "%s: the recipe is not a regular file", c->path);
  if (fd < 0)
    return dtr__fail(c->err, c->cap, DTR_ERR_NOT_FOUND, "%s: cannot open the recipe: %s", c->path,
                     strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size > (off_t)RECIPE_MAX_BYTES) {
    close(fd);
    return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "%s: the recipe is larger than %u bytes", c->path,
                     RECIPE_MAX_BYTES);
  }
  char *buf = malloc((size_t)st.st_size + 1);
  size_t got = 0;
  while (buf && got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  int e = errno;
  close(fd);
  if (!buf) return dtr__fail(c->err, c->cap, DTR_ERR_NOMEM, "%s: out of memory reading the recipe", c->path);
  if (got != (size_t)st.st_size) {
    free(buf);
    return dtr__fail(c->err, c->cap, DTR_ERR_SYSTEM, "%s: cannot read the recipe: %s", c->path, strerror(e));
  }
  buf[got] = '\0';
  *text = buf;
  *len = got;
  return DTR_OK;
}

static dtr_result walk_file(ctx *c) {
  char *text = NULL;
  size_t tlen = 0;
  DTR_CHECK(read_recipe(c, &text, &tlen));
  /* bounded nesting keeps libyaml linear in the file's size (yaml_error.h) */
  dtr_result rc =
      dtr__yaml_check_input(text, tlen, DTR__YAML_MAX_FLOW_DEPTH, c->path, DTR_ERR_INVALID, c->err, c->cap);
  if (rc != DTR_OK) {
    free(text);
    return rc;
  }
  yaml_parser_t p;
  yaml_document_t doc;
  int have_doc = 0;
  if (!yaml_parser_initialize(&p)) {
    free(text);
    return dtr__fail(c->err, c->cap, DTR_ERR_NOMEM, "%s: cannot initialise the YAML parser", c->path);
  }
  yaml_parser_set_input_string(&p, (const unsigned char *)text, tlen);
  if (!yaml_parser_load(&p, &doc)) {
    rc = dtr__yaml_parse_fail(&p, c->path, text, tlen, DTR_ERR_INVALID, c->err, c->cap);
    goto out;
  }
  have_doc = 1;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (!root || is_null_scalar(root)) {
    rc = dtr__fail(c->err, c->cap, DTR_ERR_INVALID,
                   "%s:1:1: the recipe is empty (expected sections such as job:, "
                   "model:, train:)",
                   c->path);
    goto out;
  }
  if (root->type != YAML_MAPPING_NODE) {
    rc = fail_mark(c, root->start_mark, "expected a mapping of sections (job:, launch:, ...), got %s",
                   node_kind(root));
    goto out;
  }
  int seen_line[16] = {0};
  for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
    yaml_node_t *kn = yaml_document_get_node(&doc, pr->key);
    yaml_node_t *vn = yaml_document_get_node(&doc, pr->value);
    if (!kn || !vn) {
      rc = fail_mark(c, root->start_mark, "malformed mapping");
      goto out;
    }
    if (kn->type != YAML_SCALAR_NODE) {
      rc = fail_mark(c, kn->start_mark, "section names must be names, got %s", node_kind(kn));
      goto out;
    }
    const char *name = (const char *)kn->data.scalar.value;
    int s = dtr__recipe_section_find(name);
    if (s < 0) {
      char dym[128];
      did_you_mean(dtr__recipe_suggest(name, dtr__recipe_sections, dtr__recipe_nsections), dym, sizeof dym);
      rc = fail_mark(c, kn->start_mark, "unknown section '%s'%s", name, dym);
      goto out;
    }
    if (seen_line[s]) {
      rc = fail_mark(c, kn->start_mark, "duplicate section '%s' (first at line %d)", name, seen_line[s]);
      goto out;
    }
    seen_line[s] = (int)kn->start_mark.line + 1;
    DTR_CHECK_GOTO(walk_section(c, &doc, name, vn), rc, out);
  }
  /* a second document ("---") would be silently ignored otherwise */
  yaml_document_delete(&doc);
  have_doc = 0;
  if (!yaml_parser_load(&p, &doc)) {
    rc = dtr__yaml_parse_fail(&p, c->path, text, tlen, DTR_ERR_INVALID, c->err, c->cap);
    goto out;
  }
  have_doc = 1;
  yaml_node_t *second = yaml_document_get_root_node(&doc);
  if (second) rc = fail_mark(c, second->start_mark, "a recipe is one YAML document; found a second one");
out:
  if (have_doc) yaml_document_delete(&doc);
  yaml_parser_delete(&p);
  free(text);
  return rc;
}

static dtr_result apply_override(ctx *c, const char *ov) {
  const char *eq = strchr(ov, '=');
  const char *dot = eq ? memchr(ov, '.', (size_t)(eq - ov)) : NULL;
  if (!eq || !dot || dot == ov || dot + 1 == eq || (size_t)(eq - ov) >= 128)
    return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "override '%s': expected section.key=value", ov);
  char section[128], name[128];
  snprintf(section, sizeof section, "%.*s", (int)(dot - ov), ov);
  snprintf(name, sizeof name, "%.*s", (int)(eq - dot - 1), dot + 1);
  char dym[128];
  if (dtr__recipe_section_find(section) < 0) {
    did_you_mean(dtr__recipe_suggest(section, dtr__recipe_sections, dtr__recipe_nsections), dym, sizeof dym);
    return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "override '%s': unknown section '%s'%s", ov, section,
                     dym);
  }
  int k = K(section, name);
  if (k < 0) {
    const char *cands[32];
    int n = section_keys(section, cands, 32);
    did_you_mean(dtr__recipe_suggest(name, cands, n), dym, sizeof dym);
    return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "override '%s': unknown key '%s' in %s%s", ov, name,
                     section, dym);
  }
  char msg[768];
  if (dtr__recipe_set(c->r, k, eq + 1, msg, sizeof msg) != DTR_OK)
    return dtr__fail(c->err, c->cap, DTR_ERR_INVALID, "override '%s': %s", ov, msg);
  c->pos[k].src = SRC_OVERRIDE;
  c->pos[k].override = ov;
  return DTR_OK;
}

/* dir + "/" + rel into out (DTR_RECIPE_STR), unless rel is already absolute; out may be rel. -1 when
 * the result does not fit. */
static int join_path(const char *dir, const char *rel, char *out) {
  const size_t rl = strlen(rel), dl = rel[0] == '/' ? 0 : strlen(dir) + 1;
  if (dl + rl >= DTR_RECIPE_STR) return -1;
  memmove(out + dl, rel, rl + 1);
  if (dl) {
    memcpy(out, dir, dl - 1);
    out[dl - 1] = '/';
  }
  return 0;
}

static int name_ok(const char *s) {
  if (!*s || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          strchr("._-", *s)))
      return 0;
  return 1;
}

static dtr_result resolve_paths(ctx *c, const char *recipe_dir) {
  dtr_recipe *r = c->r;
  char cwd[PATH_MAX];
  if (!name_ok(r->job.name))
    return fail_at(c, K("job", "name"),
                   "job.name: '%s' must be letters, digits, '.', '_' or '-' (it names the run "
                   "directory)",
                   r->job.name);
  if (!getcwd(cwd, sizeof cwd))
    return dtr__fail(c->err, c->cap, DTR_ERR_SYSTEM, "getcwd: %s", strerror(errno));
  if (!r->job.run_dir[0]) snprintf(r->job.run_dir, sizeof r->job.run_dir, "runs/%s", r->job.name);
  if (join_path(cwd, r->job.run_dir, r->job.run_dir) != 0)
    return fail_at(c, blame(c, 2, K("job", "run_dir"), K("job", "name")),
                   "job.run_dir: the resolved path is too long");
  if (!r->checkpoint.dir[0]) {
    if (join_path(r->job.run_dir, "checkpoints", r->checkpoint.dir) != 0)
      return fail_at(c, K("job", "run_dir"), "job.run_dir: too long to hold checkpoints/");
  } else if (join_path(cwd, r->checkpoint.dir, r->checkpoint.dir) != 0) {
    return fail_at(c, K("checkpoint", "dir"), "checkpoint.dir: the resolved path is too long");
  }
  if (r->data.kind != DTR_DATA_ADDITION && r->data.path[0] &&
      join_path(recipe_dir, r->data.path, r->data.path) != 0)
    return fail_at(c, K("data", "path"), "data.path: the resolved path is too long");
  if (r->model.init_from[0] && join_path(recipe_dir, r->model.init_from, r->model.init_from) != 0)
    return fail_at(c, K("model", "init_from"), "model.init_from: the resolved path is too long");
  return DTR_OK;
}

/* model.init_from: open the file, and take its model's shape for the keys the recipe leaves out (their
 * errors then point at init_from). An explicit n_head must agree with the file's when it says. */
static dtr_result init_from_shape(ctx *c) {
  dtr_recipe *r = c->r;
  int ki = K("model", "init_from");
  if (!r->model.init_from[0]) return DTR_OK;
  char e[1024];
  if (dtr__gpt_weights_open(r->model.init_from, &c->init, e, sizeof e) != DTR_OK)
    return fail_at_long(c, ki, "model.init_from: ", e);
  dtr__gpt_config fc = dtr__gpt_weights_config(c->init);
  const struct {
    const char *key;
    int *field, file;
  } keys[] = {{"vocab_size", &r->model.vocab_size, fc.vocab_size},
              {"block_size", &r->model.block_size, fc.block_size},
              {"n_layer", &r->model.n_layer, fc.n_layer},
              {"n_embd", &r->model.n_embd, fc.n_embd},
              {"n_head", &r->model.n_head, fc.n_head}};
  const char *nh_src = dtr__gpt_weights_n_head_source(c->init);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    int k = K("model", keys[i].key);
    if (c->pos[k].src != SRC_DEFAULT) {
      if (keys[i].field == &r->model.n_head && fc.n_head > 0 && r->model.n_head != fc.n_head)
        return fail_at(c, k, "model.n_head: %d, but model.init_from '%s' holds a model of %d heads (per %s)",
                       r->model.n_head, r->model.init_from, fc.n_head, nh_src);
      continue;
    }
    if (keys[i].file > 0) {
      *keys[i].field = keys[i].file;
      c->pos[k] = c->pos[ki];
    } else if (keys[i].field == &r->model.n_head) {
      return fail_at(
          c, ki,
          "model.init_from: '%s' does not say how many attention heads its model has (no n_head in "
          "its __metadata__ and no config.json beside it): set model.n_head",
          r->model.init_from);
    }
  }
  return DTR_OK;
}

/* Pipeline stages: enough layers, the schedule's rules, an explicit split that adds up. */
static dtr_result validate_pipeline(ctx *c) {
  dtr_recipe *r = c->r;
  int pp = r->parallel.pp, v = r->parallel.virtual_stages, L = r->model.n_layer;
  int kvs = K("parallel", "virtual_stages"), ksch = K("parallel", "schedule"),
      kls = K("parallel", "layers_per_stage");
  if (v < 1 || v > DTR_RECIPE_MAX_STAGES)
    return fail_at(c, kvs, "parallel.virtual_stages: %d is not between 1 and %d", v, DTR_RECIPE_MAX_STAGES);
  if (v > 1 && strcmp(r->parallel.schedule, "interleaved") != 0)
    return fail_at(
        c, blame(c, 2, kvs, ksch),
        "parallel.virtual_stages %d needs parallel.schedule interleaved (the %s schedule runs one model "
        "chunk per stage)",
        v, r->parallel.schedule);
  if (!strcmp(r->parallel.schedule, "interleaved") && pp < 2)
    return fail_at(c, blame(c, 2, ksch, K("parallel", "pp")),
                   "parallel.schedule interleaved needs parallel.pp of at least 2 (it has %d)", pp);
  long long nv = (long long)pp * v;
  if (nv > DTR_RECIPE_MAX_STAGES)
    return fail_at(c, blame(c, 2, K("parallel", "pp"), kvs),
                   "parallel: pp %d x virtual_stages %d is more than %d", pp, v, DTR_RECIPE_MAX_STAGES);
  if (r->parallel.layers_per_stage.n == 0) {
    if (L < nv)
      return fail_at(
          c, blame(c, 3, K("parallel", "pp"), kvs, K("model", "n_layer")),
          "model: n_layer %d is fewer than the %lld pipeline stages (pp %d x virtual_stages %d): every "
          "stage needs a layer",
          L, nv, pp, v);
    return DTR_OK;
  }
  if (r->parallel.layers_per_stage.n != nv)
    return fail_at(
        c, kls,
        "parallel.layers_per_stage: %d entries, but pp %d x virtual_stages %d = %lld stages need one each",
        r->parallel.layers_per_stage.n, pp, v, nv);
  long long sum = 0;
  for (int i = 0; i < r->parallel.layers_per_stage.n; i++) sum += r->parallel.layers_per_stage.v[i];
  if (sum != L)
    return fail_at(c, blame(c, 2, kls, K("model", "n_layer")),
                   "parallel.layers_per_stage: the entries add up to %lld layers, model.n_layer is %d", sum,
                   L);
  return DTR_OK;
}

static dtr_result validate(ctx *c, int world) {
  dtr_recipe *r = c->r;
  char e[256];

  /* ---- job, launch */
  if (r->launch.nproc_per_node < 1 || r->launch.nproc_per_node > 4096)
    return fail_at(c, K("launch", "nproc_per_node"), "launch.nproc_per_node: %d is not between 1 and 4096",
                   r->launch.nproc_per_node);
  if (r->launch.max_restarts < 0)
    return fail_at(c, K("launch", "max_restarts"), "launch.max_restarts: %d is negative",
                   r->launch.max_restarts);
  if (!(r->launch.worker_timeout >= 0 && r->launch.worker_timeout <= 1e9))
    return fail_at(c, K("launch", "worker_timeout"),
                   "launch.worker_timeout: %g is not a number of seconds >= 0", r->launch.worker_timeout);
  if (!(r->launch.worker_start_timeout >= 0 && r->launch.worker_start_timeout <= 1e9))
    return fail_at(c, K("launch", "worker_start_timeout"),
                   "launch.worker_start_timeout: %g is not a number of seconds >= 0",
                   r->launch.worker_start_timeout);
  if (r->launch.node_rank < -1 || r->launch.node_rank >= r->launch.nnodes_max)
    return fail_at(c, K("launch", "node_rank"),
                   "launch.node_rank: %d is not between -1 (assigned) and nnodes-1 (%d)", r->launch.node_rank,
                   r->launch.nnodes_max - 1);
  if (r->launch.rdzv_endpoint[0]) {
    char host[256];
    int port;
    if (dtr__parse_hostport(r->launch.rdzv_endpoint, host, sizeof host, &port, e, sizeof e) != DTR_OK)
      return fail_at(c, K("launch", "rdzv_endpoint"), "launch.rdzv_endpoint: %s", e);
  } else if (r->launch.nnodes_max > 1) {
    return fail_at(c, K("launch", "nnodes"),
                   "launch.nnodes: %d nodes need launch.rdzv_endpoint (host:port) so "
                   "that they can meet",
                   r->launch.nnodes_max);
  }

  /* ---- parallel */
  if (r->parallel.tp < 1)
    return fail_at(c, K("parallel", "tp"), "parallel.tp: %d must be at least 1", r->parallel.tp);
  if (r->parallel.pp < 1)
    return fail_at(c, K("parallel", "pp"), "parallel.pp: %d must be at least 1", r->parallel.pp);
  if (r->parallel.dp < 0)
    return fail_at(c, K("parallel", "dp"), "parallel.dp: %d is negative (0 means world / (tp*pp))",
                   r->parallel.dp);
  char worlddesc[128];
  if (world > 0)
    snprintf(worlddesc, sizeof worlddesc, "the job has %d rank%s", world, world == 1 ? "" : "s");
  else {
    world = r->launch.nproc_per_node * r->launch.nnodes_max;
    snprintf(worlddesc, sizeof worlddesc, "the launch section makes %d ranks (nproc_per_node %d x nnodes %d)",
             world, r->launch.nproc_per_node, r->launch.nnodes_max);
  }
  /* The mesh's own rule, dp 0 being "the rest", so that the recipe and dtr_init agree on dp. */
  dtr_mesh mesh;
  if (dtr_mesh_make(world, r->parallel.dp, r->parallel.tp, r->parallel.pp, 0, &mesh, NULL, 0) != DTR_OK) {
    long long tpp = (long long)r->parallel.tp * r->parallel.pp;
    if (r->parallel.dp == 0)
      return fail_at(c, blame(c, 3, K("parallel", "tp"), K("parallel", "pp"), K("launch", "nproc_per_node")),
                     "parallel: tp*pp = %d*%d = %lld does not divide the world, and %s", r->parallel.tp,
                     r->parallel.pp, tpp, worlddesc);
    return fail_at(c,
                   blame(c, 5, K("parallel", "dp"), K("parallel", "tp"), K("parallel", "pp"),
                         K("launch", "nproc_per_node"), K("launch", "nnodes")),
                   "parallel: dp*tp*pp = %d*%d*%d = %lld, but %s", r->parallel.dp, r->parallel.tp,
                   r->parallel.pp, r->parallel.dp * tpp, worlddesc);
  }
  r->parallel.dp = mesh.dp;

  /* ---- model */
  DTR_CHECK(init_from_shape(c));
  static const char *const mk[] = {"block_size", "n_layer", "n_head", "n_embd"};
  const int mv[] = {r->model.block_size, r->model.n_layer, r->model.n_head, r->model.n_embd};
  for (int i = 0; i < 4; i++)
    if (mv[i] < 1) return fail_at(c, K("model", mk[i]), "model.%s: %d must be at least 1", mk[i], mv[i]);
  if (r->model.n_embd % r->model.n_head != 0)
    return fail_at(c, blame(c, 2, K("model", "n_embd"), K("model", "n_head")),
                   "model: n_embd %d is not divisible by n_head %d", r->model.n_embd, r->model.n_head);
  if (r->model.n_head % r->parallel.tp != 0)
    return fail_at(
        c, blame(c, 2, K("parallel", "tp"), K("model", "n_head")),
        "model: n_head %d is not divisible by parallel.tp %d (tensor parallelism splits the heads)",
        r->model.n_head, r->parallel.tp);
  DTR_CHECK(validate_pipeline(c));
  int kv = K("model", "vocab_size");
  if (r->model.vocab_size < 0 || r->model.vocab_size > 65536)
    return fail_at(c, kv, "model.vocab_size: %d is not between 0 (from the data) and 65536",
                   r->model.vocab_size);

  /* ---- data */
  int kk = K("data", "kind"), kp = K("data", "path");
  if (r->data.kind == DTR_DATA_ADDITION) {
    if (r->data.digits < 1 || r->data.digits > 9)
      return fail_at(c, K("data", "digits"), "data.digits: %d is not between 1 and 9", r->data.digits);
    int need = 3 * r->data.digits + 2; /* "a+b=" and the digits+1 sum digits, less the last target */
    if (r->model.block_size < need)
      return fail_at(c, blame(c, 2, K("model", "block_size"), K("data", "digits")),
                     "model.block_size %d is too short for %d-digit addition (needs %d tokens)",
                     r->model.block_size, r->data.digits, need);
    if (r->model.vocab_size == 0) r->model.vocab_size = 14;
    if (r->model.vocab_size < 14)
      return fail_at(c, kv, "model.vocab_size: %d is smaller than the addition task's 14 tokens",
                     r->model.vocab_size);
  } else {
    const char *kname = r->data.kind == DTR_DATA_TEXT ? "text" : "tokens";
    if (!r->data.path[0]) return fail_at(c, kk, "data.kind %s needs data.path", kname);
    struct stat st;
    if (stat(r->data.path, &st) != 0)
      return fail_at(c, kp, "data.path: '%s': %s", r->data.path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail_at(c, kp, "data.path: '%s' is not a regular file", r->data.path);
    if (access(r->data.path, R_OK) != 0)
      return fail_at(c, kp, "data.path: '%s': %s", r->data.path, strerror(errno));
    long long ntok = r->data.kind == DTR_DATA_TEXT ? (long long)st.st_size : (long long)st.st_size / 2;
    if (r->data.kind == DTR_DATA_TOKENS && st.st_size % 2 != 0)
      return fail_at(c, kp, "data.path: '%s' has %lld bytes, not a whole number of uint16 tokens",
                     r->data.path, (long long)st.st_size);
    if (ntok < (long long)r->model.block_size + 1)
      return fail_at(c, kp, "data.path: '%s' holds %lld tokens, fewer than model.block_size + 1 = %d",
                     r->data.path, ntok, r->model.block_size + 1);
    if (r->data.kind == DTR_DATA_TEXT) {
      if (r->model.vocab_size == 0) r->model.vocab_size = 256;
      if (r->model.vocab_size < 256)
        return fail_at(c, kv, "model.vocab_size: %d is smaller than the 256 byte values of text data",
                       r->model.vocab_size);
    } else if (r->model.vocab_size == 0) {
      return fail_at(c, blame(c, 2, kv, kk),
                     "data.kind tokens needs model.vocab_size (the largest token id + 1)");
    }
  }

  if (r->model.vocab_size % r->parallel.tp != 0)
    return fail_at(c, blame(c, 2, K("parallel", "tp"), kv),
                   "model: vocab_size %d is not divisible by parallel.tp %d (tensor parallelism splits the "
                   "vocabulary; set model.vocab_size to a multiple of %d, at least the data's %d tokens)",
                   r->model.vocab_size, r->parallel.tp, r->parallel.tp, r->model.vocab_size);
  if (c->init) {
    char *e2 = malloc(16384);
    if (!e2) return dtr__fail(c->err, c->cap, DTR_ERR_NOMEM, "out of memory");
    dtr__gpt_config mc = {r->model.vocab_size, r->model.block_size, r->model.n_layer, r->model.n_head,
                          r->model.n_embd};
    dtr_result rc = dtr__gpt_weights_check(c->init, &mc, e2, 16384);
    if (rc != DTR_OK) rc = fail_at_long(c, K("model", "init_from"), "model.init_from: ", e2);
    free(e2);
    if (rc != DTR_OK) return rc;
  }

  /* ---- train */
  int ks = K("train", "steps");
  if (r->train.steps < 1)
    return fail_at(c, ks, "train.steps: %lld must be at least 1", (long long)r->train.steps);
  if (r->train.global_batch < 1)
    return fail_at(c, K("train", "global_batch"), "train.global_batch: %d must be at least 1",
                   r->train.global_batch);
  if (r->train.micro_batch < 1)
    return fail_at(c, K("train", "micro_batch"), "train.micro_batch: %d must be at least 1",
                   r->train.micro_batch);
  long long per_step = (long long)r->train.micro_batch * r->parallel.dp;
  if (r->train.global_batch % per_step != 0)
    return fail_at(c, blame(c, 3, K("train", "global_batch"), K("train", "micro_batch"), K("parallel", "dp")),
                   "train: global_batch %d is not a multiple of micro_batch %d x dp %d = %lld",
                   r->train.global_batch, r->train.micro_batch, r->parallel.dp, per_step);
  long long micro_per_step = r->train.global_batch / per_step;
  if (!strcmp(r->parallel.schedule, "interleaved") && micro_per_step % r->parallel.pp != 0)
    return fail_at(
        c,
        blame(c, 4, K("parallel", "schedule"), K("train", "global_batch"), K("train", "micro_batch"),
              K("parallel", "pp")),
        "parallel.schedule interleaved: %lld micro-batches per step (global_batch %d / (micro_batch %d x "
        "dp %d)) is not a multiple of pp %d; the schedule sends micro-batches round the stages in "
        "groups of pp",
        micro_per_step, r->train.global_batch, r->train.micro_batch, r->parallel.dp, r->parallel.pp);
  if (r->train.zero < 0 || r->train.zero > 1)
    return fail_at(c, K("train", "zero"), "train.zero: %d is not 0 (off) or 1 (ZeRO stage 1)", r->train.zero);
  if (!(r->train.lr > 0)) return fail_at(c, K("train", "lr"), "train.lr: %g must be positive", r->train.lr);
  if (r->train.min_lr < 0 || r->train.min_lr > r->train.lr)
    return fail_at(c, blame(c, 2, K("train", "min_lr"), K("train", "lr")),
                   "train.min_lr: %g is not between 0 and train.lr %g", r->train.min_lr, r->train.lr);
  if (r->train.warmup_steps < 0)
    return fail_at(c, K("train", "warmup_steps"), "train.warmup_steps: %lld is negative",
                   (long long)r->train.warmup_steps);
  if (r->train.warmup_steps > r->train.steps) {
    /* a short run of a recipe with a long warmup (train.steps=20 on the command line): warm up over all
     * of it rather than refuse */
    char loc[DTR_RECIPE_STR + 64];
    where(c, K("train", "warmup_steps"), loc, sizeof loc);
    size_t at = strlen(r->warnings);
    snprintf(r->warnings + at, sizeof r->warnings - at,
             "%s%s: train.warmup_steps %lld is more than train.steps %lld: warming up over all %lld steps",
             at ? "\n" : "", loc, (long long)r->train.warmup_steps, (long long)r->train.steps,
             (long long)r->train.steps);
    r->train.warmup_steps = r->train.steps;
  }
  if (r->train.weight_decay < 0)
    return fail_at(c, K("train", "weight_decay"), "train.weight_decay: %g is negative",
                   r->train.weight_decay);
  if (r->train.beta1 < 0 || r->train.beta1 >= 1)
    return fail_at(c, K("train", "beta1"), "train.beta1: %g is not in [0, 1)", r->train.beta1);
  if (r->train.beta2 < 0 || r->train.beta2 >= 1)
    return fail_at(c, K("train", "beta2"), "train.beta2: %g is not in [0, 1)", r->train.beta2);
  if (!(r->train.eps > 0))
    return fail_at(c, K("train", "eps"), "train.eps: %g must be positive", r->train.eps);
  if (r->train.grad_clip < 0)
    return fail_at(c, K("train", "grad_clip"), "train.grad_clip: %g is negative (0 turns clipping off)",
                   r->train.grad_clip);
  if (r->train.log_every < 1)
    return fail_at(c, K("train", "log_every"), "train.log_every: %d must be at least 1", r->train.log_every);
  if (r->train.eval_every < 0)
    return fail_at(c, K("train", "eval_every"), "train.eval_every: %d is negative (0 turns it off)",
                   r->train.eval_every);
  if (!(r->train.bucket_mb > 0))
    return fail_at(c, K("train", "bucket_mb"), "train.bucket_mb: %g must be positive", r->train.bucket_mb);
  if (!(r->train.first_bucket_mb > 0))
    return fail_at(c, K("train", "first_bucket_mb"), "train.first_bucket_mb: %g must be positive",
                   r->train.first_bucket_mb);
  if (r->train.threads < 0 || r->train.threads > 1024)
    return fail_at(c, K("train", "threads"), "train.threads: %d is not between 0 (OMP_NUM_THREADS) and 1024",
                   r->train.threads);
  if (!(r->train.divergence_lr_factor > 0 && r->train.divergence_lr_factor < 1))
    return fail_at(c, K("train", "divergence_lr_factor"),
                   "train.divergence_lr_factor: %g is not between 0 and 1 (exclusive)",
                   r->train.divergence_lr_factor);
  if (!strcmp(r->train.precision, "bf16") && strcmp(r->train.device, "cuda") != 0)
    return fail_at(c, blame(c, 2, K("train", "precision"), K("train", "device")),
                   "train.precision bf16 needs train.device cuda (the CPU path is fp32)");
  if (!strcmp(r->launch.backend, "nccl") && strcmp(r->train.device, "cuda") != 0)
    return fail_at(c, blame(c, 2, K("launch", "backend"), K("train", "device")),
                   "launch.backend nccl needs train.device cuda (NCCL moves GPU memory)");
  if (!strcmp(r->train.device, "cuda")) {
#ifndef DTRAIN_HAVE_CUDA
    return fail_at(
        c, K("train", "device"),
        "train.device cuda: this dtrain was built without CUDA (rebuild where the CUDA toolkit and "
        "NCCL are, cmake -DDTRAIN_CUDA=ON), or train on the cpu");
#endif
    if (r->parallel.tp > 1 || r->parallel.pp > 1 || r->train.zero)
      return fail_at(
          c, blame(c, 4, K("train", "device"), K("parallel", "tp"), K("parallel", "pp"), K("train", "zero")),
          "train.device cuda: the GPU trainer is data parallel only so far (tp %d, pp %d, zero %d; tensor "
          "and pipeline parallelism and ZeRO-1 train on the cpu)",
          r->parallel.tp, r->parallel.pp, r->train.zero);
    /* The gradients live in GPU memory: only NCCL moves them (host and mpi move host memory). */
    if (strcmp(r->launch.backend, "nccl") != 0)
      return fail_at(c, blame(c, 2, K("launch", "backend"), K("train", "device")),
                     "train.device cuda needs launch.backend nccl, not %s (the gradients live in GPU memory)",
                     r->launch.backend);
  }

  /* ---- checkpoint */
  if (r->checkpoint.every < 0)
    return fail_at(c, K("checkpoint", "every"), "checkpoint.every: %lld is negative (0: only at the end)",
                   (long long)r->checkpoint.every);
  if (r->checkpoint.keep < 0)
    return fail_at(c, K("checkpoint", "keep"), "checkpoint.keep: %d is negative (0 keeps every checkpoint)",
                   r->checkpoint.keep);
  if (r->checkpoint.level < 1 || r->checkpoint.level > 19)
    return fail_at(c, K("checkpoint", "level"), "checkpoint.level: %d is not a zstd level between 1 and 19",
                   r->checkpoint.level);

  /* ---- slurm */
  char msg[512];
  int k2 = -1, ks2 = dtr__recipe_check_slurm(r, &k2, msg, sizeof msg);
  if (ks2 >= 0) return fail_at(c, k2 >= 0 ? blame(c, 2, ks2, k2) : ks2, "%s", msg);
  return DTR_OK;
}

void dtr__recipe_stage_layers(const dtr_recipe *r, int q, int *begin, int *end) {
  int nv = r->parallel.pp * r->parallel.virtual_stages, L = r->model.n_layer, at = 0;
  for (int i = 0; i < q; i++)
    at += r->parallel.layers_per_stage.n ? r->parallel.layers_per_stage.v[i] : L / nv + (i < L % nv);
  *begin = at;
  *end = at + (r->parallel.layers_per_stage.n ? r->parallel.layers_per_stage.v[q] : L / nv + (q < L % nv));
}

dtr_result dtr_recipe_load(const char *path, const char *const *overrides, int noverrides, int world,
                           dtr_recipe *r, char *err, size_t errcap) {
  if (!path || !r || !err || errcap == 0 || noverrides < 0 || (noverrides > 0 && !overrides))
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_recipe_load: bad arguments");
  ctx c;
  memset(&c, 0, sizeof c);
  c.r = r;
  c.path = path;
  c.err = err;
  c.cap = errcap;
  err[0] = '\0';
  _Static_assert(sizeof c.pos / sizeof c.pos[0] >= 64, "kpos table too small for the schema");
  if (dtr__recipe_nkeys > (int)(sizeof c.pos / sizeof c.pos[0]))
    return dtr__fail(err, errcap, DTR_ERR_INTERNAL, "recipe schema larger than the position table");
  dtr_recipe_defaults(r);

  DTR_CHECK(walk_file(&c));
  for (int i = 0; i < noverrides; i++) DTR_CHECK(apply_override(&c, overrides[i]));

  char real[PATH_MAX];
  if (!realpath(path, real))
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "%s: cannot resolve the path: %s", path, strerror(errno));
  if (strlen(real) >= sizeof r->path)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s: the recipe's path is longer than %d characters", path,
                     DTR_RECIPE_STR - 1);
  strcpy(r->path, real);
  char dirbuf[PATH_MAX];
  strcpy(dirbuf, real);
  const char *dir = dirname(dirbuf);

  /* job.name unset: the recipe file's name without its extension */
  if (c.pos[K("job", "name")].src == SRC_DEFAULT) {
    char base[PATH_MAX];
    strcpy(base, real);
    char *b = basename(base);
    char *ext = strrchr(b, '.');
    if (ext && (!strcmp(ext, ".yaml") || !strcmp(ext, ".yml"))) *ext = '\0';
    if (strlen(b) < sizeof r->job.name && name_ok(b)) strcpy(r->job.name, b);
  }
  /* the default warmup never exceeds a short run's steps (steps: 3 alone is a valid recipe), silently */
  if (c.pos[K("train", "warmup_steps")].src == SRC_DEFAULT && r->train.warmup_steps > r->train.steps)
    r->train.warmup_steps = r->train.steps > 0 ? r->train.steps : 0;
  DTR_CHECK(resolve_paths(&c, dir));
  dtr_result rc = validate(&c, world);
  dtr__gpt_weights_close(c.init);
  return rc;
}
