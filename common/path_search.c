/* The PATH search of path_search.h. */
#include "common/path_search.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int dtr__executable(const char *path) {
  struct stat st;
  if (stat(path, &st) < 0) return errno = ENOENT, -1;
  if (S_ISDIR(st.st_mode)) return errno = EISDIR, -1;
  if (access(path, X_OK) != 0) return errno = EACCES, -1;
  return 0;
}

int dtr__find_in_path(const char *name, char *out, size_t cap) {
  const char *path = getenv("PATH");
  if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
  int not_exec = 0;
  for (const char *p = path;;) {
    const char *colon = strchr(p, ':');
    size_t dl = colon ? (size_t)(colon - p) : strlen(p);
    char cand[PATH_MAX];
    int n = dl ? snprintf(cand, sizeof cand, "%.*s/%s", (int)dl, p, name)
               : snprintf(cand, sizeof cand, "./%s", name);
    if (n > 0 && (size_t)n < sizeof cand && (size_t)n < cap) {
      if (dtr__executable(cand) == 0) {
        memcpy(out, cand, (size_t)n + 1);
        return 0;
      }
      if (errno == EACCES && !not_exec) {
        memcpy(out, cand, (size_t)n + 1);
        not_exec = 1;
      }
    }
    if (!colon) break;
    p = colon + 1;
  }
  errno = not_exec ? EACCES : ENOENT;
  return -1;
}
