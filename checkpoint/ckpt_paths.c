/* Where a checkpoint's pieces live: step and shard paths, the committed steps of a directory, and the
 * `latest` pointer (read leniently, replaced atomically). Shared by the checkpointer and the tools. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ckpt_internal.h"
#include "common/check.h"
#include "common/log.h"

void dtr__ckpt_step_dir(char *out, size_t cap, const char *dir, int64_t step) {
  snprintf(out, cap, "%s/step_%08lld", dir, (long long)step);
}

void dtr__ckpt_tmp_dir(char *out, size_t cap, const char *dir, int64_t step) {
  snprintf(out, cap, "%s/.tmp_step_%08lld", dir, (long long)step);
}

void dtr__ckpt_shard_path(char *out, size_t cap, const char *step_dir, int rank) {
  snprintf(out, cap, "%s/rank_%05d.dtck", step_dir, rank);
}

/* "step_" followed by digits only, and a directory holding a manifest (a committed step). */
static int parse_step_name(const char *name, int64_t *step) {
  if (strncmp(name, "step_", 5) != 0 || !name[5]) return 0;
  int64_t v = 0;
  for (const char *p = name + 5; *p; p++) {
    if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10) return 0;
    v = v * 10 + (*p - '0');
  }
  *step = v;
  return 1;
}

static int cmp_desc(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

dtr_result dtr__ckpt_list_steps(const char *dir, int64_t **steps, int *n) {
  *steps = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? DTR_OK : DTR_ERR_SYSTEM;
  int cap = 16, cnt = 0;
  int64_t *v = malloc(sizeof *v * (size_t)cap);
  if (!v) {
    closedir(d);
    return DTR_ERR_NOMEM;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int64_t s;
    if (!parse_step_name(e->d_name, &s)) continue;
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (cnt == cap) {
      int64_t *nv = realloc(v, sizeof *v * (size_t)(cap *= 2));
      if (!nv) {
        free(v);
        closedir(d);
        return DTR_ERR_NOMEM;
      }
      v = nv;
    }
    v[cnt++] = s;
  }
  closedir(d);
  qsort(v, (size_t)cnt, sizeof *v, cmp_desc);
  *steps = v;
  *n = cnt;
  return DTR_OK;
}

int64_t dtr__ckpt_read_latest(const char *dir) {
  char p[4096], buf[64];
  snprintf(p, sizeof p, "%s/latest", dir);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
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
  char p[4096];
  int64_t l = dtr__ckpt_read_latest(dir);
  if (l >= 0) {
    struct stat st;
    dtr__ckpt_step_dir(p, sizeof p, dir, l);
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      *step = l;
      return DTR_OK;
    }
  }
  int64_t *steps;
  int n;
  DTR_CHECK(dtr__ckpt_list_steps(dir, &steps, &n));
  if (n > 0) *step = steps[0];
  free(steps);
  return DTR_OK;
}
