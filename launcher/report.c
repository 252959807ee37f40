/* Failure records as JSON (written and read back without a JSON library: the format is ours and
 * flat), the console report and the error file. */
#define _GNU_SOURCE
#include "launcher/report.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "dtrain/runtime.h"

int dtr__failure_exit_code(const dtr__failure *f) {
  if (strcmp(f->kind, "worker") != 0) return 1;
  if (f->signal > 0) return 128 + f->signal;
  if (f->exit_code > 0 && f->exit_code < 256) return f->exit_code;
  return 1;
}

int dtr__failure_permanent(const dtr__failure *f) {
  return strcmp(f->kind, "worker") == 0 && f->signal == 0 && f->exit_code == DTR_EXIT_PERMANENT;
}

int dtr__failure_same(const dtr__failure *a, const dtr__failure *b) {
  if (strcmp(a->kind, b->kind) != 0 || strcmp(a->kind, "node") == 0) return 0;
  if (a->step < 0 || a->step != b->step || a->exit_code != b->exit_code || a->signal != b->signal) return 0;
  /* an exit code is the program's verdict, whichever rank reported first; a signal or a hang could come
   * from outside (a kill, a stall), so it counts only on the same rank */
  return (strcmp(a->kind, "worker") == 0 && a->signal == 0) || a->rank == b->rank;
}

void dtr__failure_describe(const dtr__failure *f, char *out, size_t cap) {
  if (strcmp(f->kind, "node") == 0) {
    snprintf(out, cap, "node %d (host %s) stopped heartbeating", f->node_rank, f->host);
    return;
  }
  char how[512], at[160] = "";
  int phase = f->phase[0] && strcmp(f->phase, "step") != 0; /* "in phase 'step' at step 3" says it twice */
  if (phase && f->step >= 0)
    snprintf(at, sizeof at, " in phase '%s' at step %lld", f->phase, (long long)f->step);
  else if (phase)
    snprintf(at, sizeof at, " in phase '%s'", f->phase);
  else if (f->step >= 0)
    snprintf(at, sizeof at, " at step %lld", (long long)f->step);
  if (strcmp(f->kind, "hung") == 0) {
    snprintf(how, sizeof how, "made no progress for %.1f s (limit %.0f s)%s", f->idle_s, f->limit_s, at);
  } else if (f->signal > 0) {
    const char *abbrev = sigabbrev_np(f->signal);
    snprintf(how, sizeof how, "was killed by SIG%s (signal %d)%s", abbrev ? abbrev : "?", f->signal, at);
  } else if (dtr__failure_permanent(f)) {
    snprintf(how, sizeof how, "exited with code %d (a permanent failure: no restart)%s%s%s", f->exit_code, at,
             f->reason[0] ? ": " : "", f->reason);
  } else {
    snprintf(how, sizeof how, "exited with code %d%s%s%s", f->exit_code, at, f->reason[0] ? ": " : "",
             f->reason);
  }
  snprintf(out, cap, "rank %d (local rank %d on node %d, host %s, pid %d) %s", f->rank, f->local_rank,
           f->node_rank, f->host, f->pid, how);
}

/* ---------------------------------------------------------------- JSON writing */

/* Readable escapes (\n, \t, \r; DEL as \u007f): the error file is read by people too. */
#define JSON_ESC (DTR__SBUF_JSON_SHORT | DTR__SBUF_JSON_DEL)

char *dtr__failure_to_json(const dtr__failure *f) {
  dtr__sbuf b = {0};
  char desc[512];
  dtr__failure_describe(f, desc, sizeof desc);
  dtr__sbuf_puts(&b, "{\"kind\": ");
  dtr__sbuf_json_str(&b, f->kind, JSON_ESC);
  dtr__sbuf_printf(&b, ", \"node_rank\": %d, \"host\": ", f->node_rank);
  dtr__sbuf_json_str(&b, f->host, JSON_ESC);
  dtr__sbuf_printf(&b, ", \"rank\": %d, \"local_rank\": %d, \"exit_code\": %d, \"signal\": %d", f->rank,
                   f->local_rank, f->exit_code, f->signal);
  const char *abbrev = f->signal > 0 ? sigabbrev_np(f->signal) : NULL;
  if (abbrev) dtr__sbuf_printf(&b, ", \"signal_name\": \"SIG%s\"", abbrev);
  dtr__sbuf_printf(
      &b, ", \"dtrain_exit_code\": %d, \"pid\": %d, \"restart_count\": %d, \"attempt\": %d, \"run_id\": ",
      dtr__failure_exit_code(f), f->pid, f->restart_count, f->attempt);
  dtr__sbuf_json_str(&b, f->run_id, JSON_ESC);
  dtr__sbuf_printf(&b, ", \"time\": %.3f, \"step\": %lld, \"phase\": ", f->time, (long long)f->step);
  dtr__sbuf_json_str(&b, f->phase, JSON_ESC);
  dtr__sbuf_puts(&b, ", \"reason\": ");
  dtr__sbuf_json_str(&b, f->reason, JSON_ESC);
  if (strcmp(f->kind, "hung") == 0) {
    dtr__sbuf_printf(&b, ", \"idle_s\": %.3f, \"limit_s\": %.3f, \"thread_dump\": ", f->idle_s, f->limit_s);
    dtr__sbuf_json_str(&b, f->dump, JSON_ESC);
  }
  dtr__sbuf_puts(&b, ", \"message\": ");
  dtr__sbuf_json_str(&b, desc, JSON_ESC);
  dtr__sbuf_puts(&b, ", \"last_lines\": [");
  for (int i = 0; i < f->nlines; i++) {
    if (i) dtr__sbuf_puts(&b, ", ");
    dtr__sbuf_json_str(&b, f->lines[i], JSON_ESC);
  }
  dtr__sbuf_puts(&b, "]}");
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

/* ---------------------------------------------------------------- JSON reading (our flat format) */

typedef struct jp {
  const char *p, *end;
} jp;

static void ws(jp *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')) j->p++;
}

static int lit(jp *j, char c) {
  ws(j);
  if (j->p < j->end && *j->p == c) {
    j->p++;
    return 1;
  }
  return 0;
}

/* Read a string into out (truncated to cap-1); out may be NULL to skip. */
static int jstr(jp *j, char *out, size_t cap) {
  if (!lit(j, '"')) return -1;
  size_t n = 0;
  while (j->p < j->end && *j->p != '"') {
    char c = *j->p++;
    if (c == '\\') {
      if (j->p >= j->end) return -1;
      char e = *j->p++;
      switch (e) {
        case 'n':
          c = '\n';
          break;
        case 't':
          c = '\t';
          break;
        case 'r':
          c = '\r';
          break;
        case 'b':
          c = '\b';
          break;
        case 'f':
          c = '\f';
          break;
        case 'u': {
          if (j->end - j->p < 4) return -1;
          unsigned v = 0;
          for (int k = 0; k < 4; k++) {
            char h = *j->p++;
            v <<= 4;
            if (h >= '0' && h <= '9')
              v |= (unsigned)(h - '0');
            else if (h >= 'a' && h <= 'f')
              v |= (unsigned)(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              v |= (unsigned)(h - 'A' + 10);
            else
              return -1;
          }
          c = v < 0x80 ? (char)v : '?';
          break;
        }
        default:
          c = e;
      }
    }
    if (out && n + 1 < cap) out[n++] = c;
  }
  if (j->p >= j->end) return -1;
  j->p++;
  if (out && cap) out[n] = '\0';
  return 0;
}

static int jnum(jp *j, double *v) {
  ws(j);
  char tmp[64];
  size_t n = 0;
  while (j->p < j->end && n + 1 < sizeof tmp && strchr("+-0123456789.eE", *j->p)) tmp[n++] = *j->p++;
  tmp[n] = '\0';
  if (n == 0) return -1;
  char *e;
  *v = strtod(tmp, &e);
  return *e ? -1 : 0;
}

dtr_result dtr__failure_from_json(const char *json, size_t len, dtr__failure *f) {
  memset(f, 0, sizeof *f);
  f->rank = f->local_rank = -1;
  f->step = -1;
  jp j = {json, json + len};
  if (!lit(&j, '{')) return DTR_ERR_PROTOCOL;
  if (lit(&j, '}')) return DTR_OK;
  for (int guard = 0; guard < 64; guard++) {
    char key[64];
    if (jstr(&j, key, sizeof key) || !lit(&j, ':')) return DTR_ERR_PROTOCOL;
    ws(&j);
    if (j.p >= j.end) return DTR_ERR_PROTOCOL;
    if (*j.p == '"') {
      char *dst = NULL;
      size_t cap = 0;
      if (!strcmp(key, "kind"))
        dst = f->kind, cap = sizeof f->kind;
      else if (!strcmp(key, "host"))
        dst = f->host, cap = sizeof f->host;
      else if (!strcmp(key, "run_id"))
        dst = f->run_id, cap = sizeof f->run_id;
      else if (!strcmp(key, "phase"))
        dst = f->phase, cap = sizeof f->phase;
      else if (!strcmp(key, "reason"))
        dst = f->reason, cap = sizeof f->reason;
      else if (!strcmp(key, "thread_dump"))
        dst = f->dump, cap = sizeof f->dump;
      if (jstr(&j, dst, cap)) return DTR_ERR_PROTOCOL;
    } else if (*j.p == '[') {
      j.p++;
      if (!lit(&j, ']')) {
        for (;;) {
          int keep = !strcmp(key, "last_lines") && f->nlines < DTR_OUT_TAIL_LINES;
          if (jstr(&j, keep ? f->lines[f->nlines] : NULL, sizeof f->lines[0])) return DTR_ERR_PROTOCOL;
          if (keep) f->nlines++;
          if (lit(&j, ']')) break;
          if (!lit(&j, ',')) return DTR_ERR_PROTOCOL;
        }
      }
    } else {
      double v;
      if (jnum(&j, &v)) return DTR_ERR_PROTOCOL;
      if (!strcmp(key, "node_rank"))
        f->node_rank = (int)v;
      else if (!strcmp(key, "rank"))
        f->rank = (int)v;
      else if (!strcmp(key, "local_rank"))
        f->local_rank = (int)v;
      else if (!strcmp(key, "exit_code"))
        f->exit_code = (int)v;
      else if (!strcmp(key, "signal"))
        f->signal = (int)v;
      else if (!strcmp(key, "pid"))
        f->pid = (int)v;
      else if (!strcmp(key, "restart_count"))
        f->restart_count = (int)v;
      else if (!strcmp(key, "attempt"))
        f->attempt = (int)v;
      else if (!strcmp(key, "time"))
        f->time = v;
      else if (!strcmp(key, "step"))
        f->step = (int64_t)v;
      else if (!strcmp(key, "idle_s"))
        f->idle_s = v;
      else if (!strcmp(key, "limit_s"))
        f->limit_s = v;
    }
    if (lit(&j, '}')) return DTR_OK;
    if (!lit(&j, ',')) return DTR_ERR_PROTOCOL;
  }
  return DTR_ERR_PROTOCOL;
}

void dtr__failure_print(const dtr__failure *f) {
  char desc[512];
  dtr__failure_describe(f, desc, sizeof desc);
  DTR_ERROR("job failed (restart %d, run %s); first failure: %s", f->restart_count, f->run_id, desc);
  if (f->dump[0]) DTR_ERROR("thread dump of rank %d: %s", f->rank, f->dump);
  if (f->nlines > 0) {
    DTR_ERROR("last %d line%s of rank %d:", f->nlines, f->nlines == 1 ? "" : "s", f->rank);
    for (int i = 0; i < f->nlines; i++) DTR_ERROR("  | %s", f->lines[i]);
  }
}

dtr_result dtr__failure_write_file(const dtr__failure *f, const char *path, char *err, size_t cap) {
  char dir[PATH_MAX], tmp[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (dtr__mkdir_p(dir, 0777) < 0)
      return dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot create %s for the error file: %s", dir,
                       strerror(errno));
  }
  char *json = dtr__failure_to_json(f);
  if (!json) return dtr__fail(err, cap, DTR_ERR_NOMEM, "out of memory writing the error file");
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  dtr_result rc = DTR_OK;
  if (fd < 0) {
    rc = dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot write error file %s: %s", path, strerror(errno));
  } else {
    size_t l = strlen(json);
    json[l] = '\n'; /* overwrites the NUL; length known */
    int bad = dtr__write_all(fd, json, l + 1) < 0;
    bad |= close(fd) < 0;
    if (bad || rename(tmp, path) < 0) {
      rc = dtr__fail(err, cap, DTR_ERR_SYSTEM, "cannot write error file %s: %s", path, strerror(errno));
      unlink(tmp);
    }
  }
  free(json);
  return rc;
}
