/* libyaml's parse errors enter dtrain here: one message for a recipe and a checkpoint manifest alike,
 * `path:line:col: YAML syntax error: problem context`, with libyaml's position of the problem. */
#ifndef DTRAIN_COMMON_YAML_ERROR_H
#define DTRAIN_COMMON_YAML_ERROR_H

#include <stddef.h>
#include <yaml.h>

#include "dtrain/common.h"

/* After a yaml_parser_* call on p failed: write the message above into err (cap bytes; line and column
 * 1-based) and return rc, the caller's class of bad input; DTR_ERR_NOMEM instead when libyaml ran out of
 * memory. path names the input in the message. */
dtr_result dtr__yaml_parse_fail(const yaml_parser_t *p, const char *path, dtr_result rc, char *err,
                                size_t cap);

#endif
