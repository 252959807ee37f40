/* Where a checkpoint's pieces live: step and shard paths, the step directories of a directory, the
 * `latest` pointer (read leniently, replaced atomically), and the file-system steps of a commit (fsync of
 * a directory, removal of a step directory and of what crashed saves left). Shared by the checkpointer
 * and the tools; calls nothing else in checkpoint/. */
#define _GNU_SOURCE
#include "checkpoint/ckpt_paths.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/check.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "dtrain/ckpt.h"

void dtr__ckpt_step_dir(char *out, size_t cap, const char *dir, int64_t step) {
  snprintf(out, cap, "%s/step_%08lld", dir, (long long)step);
}

void dtr__ckpt_tmp_dir(char *out, size_t cap, const char *dir, int64_t step) {
  snprintf(out, cap, "%s/.tmp_step_%08lld", dir, (long long)step);
}

void dtr__ckpt_shard_path(char *out, size_t cap, const char *step_dir, int rank) {
  snprintf(out, cap, "%s/rank_%05d.dtck", step_dir, rank);
}

int dtr__ckpt_parse_digits(const char *s, int64_t *v) {
  if (!*s) return 0;
  int64_t x = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || x > (INT64_MAX - 9) / 10) return 0;
    x = x * 10 + (*s - '0');
  }
  *v = x;
  return 1;
}

/* `prefix` followed by digits only; *step their number. */
static int parse_step_name(const char *name, const char *prefix, int64_t *step) {
  size_t pl = strlen(prefix);
  return strncmp(name, prefix, pl) == 0 && dtr__ckpt_parse_digits(name + pl, step);
}

static int cmp_newest_first(const void *a, const void *b) {
  const dtr__ckpt_step *x = a, *y = b;
  if (x->step != y->step) return x->step < y->step ? 1 : -1;
  return y->tmp - x->tmp;
}

dtr_result dtr__ckpt_list_steps(const char *dir, int with_tmp, dtr__ckpt_step **steps, int *n, char *err,
                                size_t errcap) {
  *steps = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return dtr__fail(err, errcap, errno == ENOENT ? DTR_ERR_NOT_FOUND : DTR_ERR_SYSTEM, "%s: cannot open: %s",
                     dir, strerror(errno));
  int cap = 0, cnt = 0;
  dtr__ckpt_step *v = NULL;
  struct dirent *e;
  dtr_result rc = DTR_OK;
  while ((e = readdir(d)) != NULL) {
    dtr__ckpt_step s = {0, 0};
    if (parse_step_name(e->d_name, "step_", &s.step))
      s.tmp = 0;
    else if (with_tmp && parse_step_name(e->d_name, ".tmp_step_", &s.step))
      s.tmp = 1;
    else
      continue;
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (cnt == cap) {
      cap = cap ? cap * 2 : 16;
      dtr__ckpt_step *nv = realloc(v, sizeof *v * (size_t)cap);
      if (!nv) {
        rc = dtr__fail(err, errcap, DTR_ERR_NOMEM, "%s: out of memory listing steps", dir);
        break;
      }
      v = nv;
    }
    v[cnt++] = s;
  }
  closedir(d);
  if (rc != DTR_OK) {
    free(v);
    return rc;
  }
  if (cnt > 1) qsort(v, (size_t)cnt, sizeof *v, cmp_newest_first); /* qsort(NULL, 0) is undefined */
  *steps = v;
  *n = cnt;
  return DTR_OK;
}

int64_t dtr__ckpt_read_latest(const char *dir) {
  char p[4096], buf[64];
  snprintf(p, sizeof p, "%s/latest", dir);
  int fd = dtr__open_regular(p, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *end;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (errno || end == buf || v < 0 || (*end && strcmp(end, "\n") != 0)) {
    DTR_WARN("%s: not a step number ('%.20s'); ignoring it", p, buf);
    return -1;
  }
  return v;
}

dtr_result dtr__ckpt_write_latest(const char *dir, int64_t step, char *err, size_t errcap) {
  char tmp[4096], dst[4096], line[32];
  snprintf(tmp, sizeof tmp, "%s/latest.tmp", dir);
  snprintf(dst, sizeof dst, "%s/latest", dir);
  int len = snprintf(line, sizeof line, "%lld\n", (long long)step);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot create %s: %s", tmp, strerror(errno));
  ssize_t w = write(fd, line, (size_t)len);
  int e = w == len ? 0 : (w < 0 ? errno : ENOSPC);
  if (!e && fsync(fd) != 0) e = errno;
  if (close(fd) != 0 && !e) e = errno;
  if (!e && rename(tmp, dst) != 0) e = errno;
  if (e) {
    unlink(tmp);
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot replace %s: %s", dst, strerror(e));
  }
  if (dtr__ckpt_fsync_dir(dir) != 0)
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "cannot fsync %s: %s", dir, strerror(errno));
  return DTR_OK;
}

dtr_result dtr_ckpt_latest_step(const char *dir, int64_t *step) {
  if (!dir || !step) return DTR_ERR_INVALID;
  *step = -1;
  /* the newest step directory: `latest` is only a hint (docs/checkpoint.md) */
  dtr__ckpt_step *steps;
  int n;
  dtr_result rc = dtr__ckpt_list_steps(dir, 0, &steps, &n, NULL, 0);
  if (rc == DTR_ERR_NOT_FOUND) return DTR_OK; /* no directory: no checkpoint */
  DTR_CHECK(rc);
  if (n > 0) *step = steps[0].step;
  free(steps);
  return DTR_OK;
}

/* ------------------------------------------------------------------ file-system steps of a commit */

int dtr__ckpt_fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

int dtr__ckpt_remove_dir(const char *path) {
  DIR *d = opendir(path);
  if (!d) return errno == ENOENT ? 0 : -1;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    if (unlink(p) != 0 && errno != ENOENT) rc = -1;
  }
  closedir(d);
  if (rmdir(path) != 0 && errno != ENOENT) rc = -1;
  return rc;
}

void dtr__ckpt_remove_stale(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, ".tmp_step_", 10) != 0 && strncmp(e->d_name, ".old_step_", 10) != 0) continue;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (dtr__ckpt_remove_dir(p) != 0)
      DTR_WARN("cannot remove %s left by an interrupted save: %s", p, strerror(errno));
    else
      DTR_INFO("removed %s left by an interrupted save", p);
  }
  closedir(d);
}
