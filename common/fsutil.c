/* File-system helpers of fsutil.h (mkdir -p from the checkpoint writer, the trainer's metrics and the
 * launcher's log directories; the write loop from the launcher and the safetensors writer; the open of
 * a file that must be regular, for every reader of a user's or a checkpoint's file). */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int dtr__mkdir_p(const char *path, mode_t mode) {
  char p[PATH_MAX];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof p) return errno = ENAMETOOLONG, -1;
  memcpy(p, path, len + 1);
  /* Each prefix ending at a '/' (or the whole path), from the top down. */
  for (size_t i = 1; i <= len; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char c = p[i];
    p[i] = '\0';
    struct stat st;
    if (stat(p, &st) != 0) {
      if (mkdir(p, mode) != 0 && errno != EEXIST) return -1;
    } else if (!S_ISDIR(st.st_mode)) {
      return errno = ENOTDIR, -1;
    }
    p[i] = c;
  }
  return 0;
}

int dtr__open_regular(const char *path, int flags) {
  int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  int bad = fstat(fd, &st) != 0 ? errno : !S_ISREG(st.st_mode) ? EINVAL : 0;
  if (bad) {
    close(fd);
    errno = bad;
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

int dtr__write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}
