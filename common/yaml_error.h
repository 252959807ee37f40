/* libyaml enters dtrain here: its parse errors become one message for a recipe and a checkpoint
 * manifest alike, `path:line:col: YAML syntax error: problem context`, with the position of the problem
 * (for a byte that is not UTF-8, whose position libyaml gives as an offset only, the line and column of
 * that offset); and input is checked before libyaml sees it, for what would make libyaml slow: its
 * scanner does work proportional to the nesting of flow collections ([ and {) at every token, so a
 * document nested deeply enough takes time quadratic in its size. */
#ifndef DTRAIN_COMMON_YAML_ERROR_H
#define DTRAIN_COMMON_YAML_ERROR_H

#include <stddef.h>
#include <yaml.h>

#include "dtrain/common.h"

/* Flow collections may nest this deep in dtrain's YAML (a recipe or a manifest needs 2). */
#define DTR__YAML_MAX_FLOW_DEPTH 64

/* After a yaml_parser_* call on p failed: write the message above into err (cap bytes; line and column
 * 1-based) and return rc, the caller's class of bad input; DTR_ERR_NOMEM instead when libyaml ran out of
 * memory. path names the input in the message; input[0..len) is the text parsed (NULL when unknown),
 * from which the position of a reader error is computed. */
dtr_result dtr__yaml_parse_fail(const yaml_parser_t *p, const char *path, const char *input, size_t len,
                                dtr_result rc, char *err, size_t cap);

/* Check input[0..len) before parsing it: flow collections nested deeper than max_depth (counted outside
 * quoted scalars and comments) fail with `path:line:col: ... nested deeper than N` and rc. DTR_OK
 * otherwise. Linear in len. */
dtr_result dtr__yaml_check_input(const char *input, size_t len, int max_depth, const char *path,
                                 dtr_result rc, char *err, size_t cap);

#endif
