/* The one converter of libyaml parse errors and the check of input before libyaml; see yaml_error.h. */
#include "common/yaml_error.h"

#include "common/log.h"

/* 1-based line and column of byte offset off of input[0..len). */
static void position(const char *input, size_t len, size_t off, size_t *line, size_t *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && i < len; i++) {
    if (input[i] == '\n') {
      (*line)++;
      *col = 1;
    } else if (((unsigned char)input[i] & 0xc0) !=
               0x80) { /* count characters, not UTF-8 continuation bytes */
      (*col)++;
    }
  }
}

dtr_result dtr__yaml_parse_fail(const yaml_parser_t *p, const char *path, const char *input, size_t len,
                                dtr_result rc, char *err, size_t cap) {
  if (p->error == YAML_MEMORY_ERROR)
    return dtr__fail(err, cap, DTR_ERR_NOMEM, "%s: out of memory while parsing YAML", path);
  size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
  if (p->error == YAML_READER_ERROR) { /* libyaml gives the byte's offset, its mark stays at 0 */
    if (input) {
      position(input, len, p->problem_offset, &line, &col);
    } else {
      line = 0;
      col = p->problem_offset;
    }
    if (line == 0)
      return dtr__fail(err, cap, rc, "%s: byte %zu: YAML syntax error: %s (value 0x%x)", path, col,
                       p->problem ? p->problem : "malformed input", (unsigned)p->problem_value);
    return dtr__fail(err, cap, rc, "%s:%zu:%zu: YAML syntax error: %s (byte 0x%02x)", path, line, col,
                     p->problem ? p->problem : "malformed input", (unsigned)p->problem_value & 0xff);
  }
  return dtr__fail(err, cap, rc, "%s:%zu:%zu: YAML syntax error: %s%s%s", path, line, col,
                   p->problem ? p->problem : "malformed input", p->context ? " " : "",
                   p->context ? p->context : "");
}

dtr_result dtr__yaml_check_input(const char *input, size_t len, int max_depth, const char *path,
                                 dtr_result rc, char *err, size_t cap) {
  int depth = 0;
  char quote = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = input[i];
    if (quote) {
      if (quote == '"' && ch == '\\') {
        i++; /* an escaped character, whatever it is */
      } else if (ch == quote) {
        if (quote == '\'' && i + 1 < len && input[i + 1] == '\'')
          i++; /* '' inside '...' is a quote */
        else
          quote = 0;
      }
      continue;
    }
    if (ch == '#' && (i == 0 || input[i - 1] == ' ' || input[i - 1] == '\t' || input[i - 1] == '\n')) {
      while (i < len && input[i] != '\n') i++; /* a comment */
    } else if (ch == '"' || ch == '\'') {
      /* a quote opens a quoted scalar where a scalar may start: after an indicator or a blank */
      char prev = i ? input[i - 1] : '\n';
      if (prev == ' ' || prev == '\t' || prev == '\n' || prev == '[' || prev == '{' || prev == ',' ||
          prev == ':' || prev == '-')
        quote = ch;
    } else if (ch == '[' || ch == '{') {
      if (++depth > max_depth) {
        size_t line, col;
        position(input, len, i, &line, &col);
        return dtr__fail(err, cap, rc,
                         "%s:%zu:%zu: flow collections ([ or {) nested deeper than %d; a recipe or manifest "
                         "needs far fewer",
                         path, line, col, max_depth);
      }
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      depth--;
    }
  }
  return DTR_OK;
}
