/* Private to the recipe code: the schema table (every section and key, its type and where it lives in
 * dtr_recipe), typed value parsing and the "did you mean" suggestion. recipe.c walks the YAML and
 * validates; recipe_schema.c owns the table, the defaults and the writer. */
#ifndef DTRAIN_RUNTIME_RECIPE_INTERNAL_H
#define DTRAIN_RUNTIME_RECIPE_INTERNAL_H

#include <stddef.h>

#include "dtrain/recipe.h"

typedef enum dtr__rk_type {
  DTR__RK_INT,    /* int */
  DTR__RK_I64,    /* int64_t */
  DTR__RK_U64,    /* uint64_t */
  DTR__RK_DOUBLE, /* double */
  DTR__RK_BOOL,   /* int 0/1 from true/false/yes/no/on/off/1/0 */
  DTR__RK_STR,    /* char[size] */
  DTR__RK_CHOICE, /* char[size], one of choices ("a|b|c") */
  DTR__RK_KIND,   /* dtr_data_kind from addition|text|tokens */
  DTR__RK_NNODES, /* "N" or "MIN:MAX" into launch.nnodes_min/max */
  DTR__RK_INTS, /* a list of positive ints, { int n; int v[]; } (YAML sequence, or "2,2" on the command line)
                 */
} dtr__rk_type;

typedef struct dtr__rkey {
  const char *section;
  const char *name;
  dtr__rk_type type;
  size_t off, size;    /* inside dtr_recipe */
  const char *choices; /* CHOICE/KIND: "host|nccl|mpi" */
} dtr__rkey;

extern const char *const dtr__recipe_sections[];
extern const int dtr__recipe_nsections;
extern const dtr__rkey dtr__recipe_keys[];
extern const int dtr__recipe_nkeys;

/* Index of section.name in dtr__recipe_keys, or -1. */
int dtr__recipe_key_find(const char *section, const char *name);
/* Index of a section name, or -1. */
int dtr__recipe_section_find(const char *section);

/* Parse text as key k's type into r. On failure returns DTR_ERR_INVALID and msg holds
 * "train.lr: expected a number, got 'fast'" (no location). */
dtr_result dtr__recipe_set(dtr_recipe *r, int k, const char *text, char *msg, size_t cap);

/* The closest of cands[0..n) to word by edit distance when it is close enough to be a likely typo,
 * else NULL. */
const char *dtr__recipe_suggest(const char *word, const char *const *cands, int n);

/* The slurm: section's own rules (recipe_slurm.c): -1 when they hold, else the index of the key at fault
 * (and in *k2 another key the fault may lie with, or -1) with msg saying what is wrong (no location). */
int dtr__recipe_check_slurm(const dtr_recipe *r, int *k2, char *msg, size_t cap);
/* Slurm's time format (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in seconds; 0 for UNLIMITED or INFINITE,
 * -1 when malformed. */
long long dtr__slurm_time_seconds(const char *t);

/* The layers [*begin, *end) of virtual pipeline stage q (0 .. pp*virtual_stages-1; chunk c of stage s is
 * q = c*pp + s): parallel.layers_per_stage when given, else as even as possible, the first stages taking
 * one more when the layers do not divide. The recipe must be valid. */
void dtr__recipe_stage_layers(const dtr_recipe *r, int q, int *begin, int *end);

#endif
