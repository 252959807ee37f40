/* The one converter of libyaml parse errors; see yaml_error.h. */
#include "common/yaml_error.h"

#include "common/log.h"

dtr_result dtr__yaml_parse_fail(const yaml_parser_t *p, const char *path, dtr_result rc, char *err,
                                size_t cap) {
  if (p->error == YAML_MEMORY_ERROR)
    return dtr__fail(err, cap, DTR_ERR_NOMEM, "%s: out of memory while parsing YAML", path);
  return dtr__fail(err, cap, rc, "%s:%zu:%zu: YAML syntax error: %s%s%s", path, p->problem_mark.line + 1,
                   p->problem_mark.column + 1, p->problem ? p->problem : "malformed input",
                   p->context ? " " : "", p->context ? p->context : "");
}
