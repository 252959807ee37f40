/* Line-prefixing fan-in of worker output. Whole lines only: a line is assembled in memory and leaves
 * in a single write(), so lines of different ranks never mix even when the console is one pipe. */
#define _GNU_SOURCE
#include "launcher/output.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

typedef struct stream {
  char *buf; /* partial line, DTR_OUT_MAX_LINE bytes */
  size_t len;
  int console_fd; /* -1: not shown */
  int file_fd;    /* -1: no log file */
} stream;

struct dtr__out_rank {
  char prefix[32];
  size_t prefix_len;
  stream s[2];
  char *out; /* prefix + line + '\n' */
  char tail[DTR_OUT_TAIL_LINES][DTR_OUT_TAIL_LINE_MAX + 1];
  int tail_next, tail_count;
};

dtr__out_rank *dtr__out_rank_create(int node, int rank, const int console_fd[2], int console_mask,
                                    const char *attempt_dir, char *err, size_t cap) {
  dtr__out_rank *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->prefix_len = (size_t)snprintf(r->prefix, sizeof r->prefix, "[%d:%d] ", node, rank);
  r->out = malloc(DTR_OUT_MAX_LINE + sizeof r->prefix + 2);
  for (int i = 0; i < 2; i++) {
    r->s[i].buf = malloc(DTR_OUT_MAX_LINE);
    r->s[i].console_fd = (console_mask & (1 << i)) ? console_fd[i] : -1;
    r->s[i].file_fd = -1;
  }
  if (!r->out || !r->s[0].buf || !r->s[1].buf) {
    dtr__fail(err, cap, DTR_ERR_NOMEM, "out of memory for rank %d's output", rank);
    dtr__out_rank_destroy(r);
    return NULL;
  }
  if (attempt_dir) {
    if (dtr__mkdir_p(attempt_dir, 0777) < 0) {
      dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create log directory %s: %s", attempt_dir, strerror(errno));
      dtr__out_rank_destroy(r);
      return NULL;
    }
    static const char *ext[2] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
      char path[PATH_MAX];
      snprintf(path, sizeof path, "%s/rank_%d.%s", attempt_dir, rank, ext[i]);
      r->s[i].file_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0666);
      if (r->s[i].file_fd < 0) {
        dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create log file %s: %s", path, strerror(errno));
        dtr__out_rank_destroy(r);
        return NULL;
      }
    }
  }
  return r;
}

static void keep_tail(dtr__out_rank *r, const char *line, size_t n) {
  if (n > DTR_OUT_TAIL_LINE_MAX) n = DTR_OUT_TAIL_LINE_MAX;
  char *slot = r->tail[r->tail_next];
  memcpy(slot, line, n);
  slot[n] = '\0';
  r->tail_next = (r->tail_next + 1) % DTR_OUT_TAIL_LINES;
  if (r->tail_count < DTR_OUT_TAIL_LINES) r->tail_count++;
}

static void emit(dtr__out_rank *r, int si, const char *line, size_t n) {
  stream *s = &r->s[si];
  if (n > 0 && line[n - 1] == '\r') n--; /* progress bars and Windows line ends */
  keep_tail(r, line, n);
  if (s->file_fd >= 0) {
    memcpy(r->out, line, n);
    r->out[n] = '\n';
    if (dtr__write_all(s->file_fd, r->out, n + 1) < 0) {
      DTR_WARN("writing a log file failed (%s); rank output goes on to the console only", strerror(errno));
      close(s->file_fd);
      s->file_fd = -1;
    }
  }
  if (s->console_fd >= 0) {
    memcpy(r->out, r->prefix, r->prefix_len);
    memcpy(r->out + r->prefix_len, line, n);
    r->out[r->prefix_len + n] = '\n';
    (void)dtr__write_all(s->console_fd, r->out, r->prefix_len + n + 1);
  }
}

void dtr__out_rank_feed(dtr__out_rank *r, int si, const char *data, size_t n) {
  stream *s = &r->s[si];
  while (n > 0) {
    const char *nl = memchr(data, '\n', n);
    size_t take = nl ? (size_t)(nl - data) : n;
    /* whole line and nothing buffered: emit straight from the input */
    if (nl && s->len == 0 && take <= DTR_OUT_MAX_LINE) {
      emit(r, si, data, take);
      data += take + 1;
      n -= take + 1;
      continue;
    }
    size_t room = DTR_OUT_MAX_LINE - s->len;
    size_t part = take < room ? take : room;
    memcpy(s->buf + s->len, data, part);
    s->len += part;
    data += part;
    n -= part;
    if (s->len == DTR_OUT_MAX_LINE) { /* over-long line: split */
      emit(r, si, s->buf, s->len);
      s->len = 0;
      continue;
    }
    if (nl && part == take) { /* the newline completes the buffered line */
      emit(r, si, s->buf, s->len);
      s->len = 0;
      data++;
      n--;
    }
  }
}

int dtr__out_rank_drain(dtr__out_rank *r, int si, int fd) {
  char buf[65536];
  for (int rounds = 0; rounds < 64; rounds++) { /* bounded so one chatty rank cannot starve the others */
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      dtr__out_rank_feed(r, si, buf, (size_t)n);
      continue;
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
    return 0;
  }
  return 1;
}

void dtr__out_rank_flush(dtr__out_rank *r) {
  for (int i = 0; i < 2; i++) {
    if (r->s[i].len) {
      emit(r, i, r->s[i].buf, r->s[i].len);
      r->s[i].len = 0;
    }
  }
}

int dtr__out_rank_tail(const dtr__out_rank *r, const char **lines, int max) {
  int n = r->tail_count < max ? r->tail_count : max;
  int start = (r->tail_next - r->tail_count + DTR_OUT_TAIL_LINES) % DTR_OUT_TAIL_LINES;
  int skip = r->tail_count - n;
  for (int i = 0; i < n; i++) lines[i] = r->tail[(start + skip + i) % DTR_OUT_TAIL_LINES];
  return n;
}

void dtr__out_rank_destroy(dtr__out_rank *r) {
  if (!r) return;
  for (int i = 0; i < 2; i++) {
    free(r->s[i].buf);
    if (r->s[i].file_fd >= 0) close(r->s[i].file_fd);
  }
  free(r->out);
  free(r);
}

void dtr__shell_quote(FILE *f, const char *s) {
  if (*s &&
      strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@%") == strlen(s)) {
    fputs(s, f);
    return;
  }
  fputc('\'', f);
  for (; *s; s++) {
    if (*s == '\'')
      fputs("'\\''", f);
    else
      fputc(*s, f);
  }
  fputc('\'', f);
}
