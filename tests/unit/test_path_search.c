/* common/path_search.c: execvp's order (first executable in PATH order, an empty entry meaning the
 * current directory, the default directories without PATH), directories passed over, a file without
 * execute permission reported as EACCES with its path, and candidates that do not fit skipped. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/path_search.h"
#include "tests/unit/test_util.h"

static char root[] = "/tmp/dtr_path_search_XXXXXX";

static void make_file(const char *sub, mode_t mode) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", root, sub);
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
  CHECK(fd >= 0);
  CHECK(write(fd, "#!/bin/sh\n", 10) == 10);
  close(fd);
  CHECK(chmod(p, mode) == 0);
}

static void make_dir(const char *sub) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", root, sub);
  CHECK(mkdir(p, 0755) == 0);
}

static void set_path(const char *dirs) { /* "a:b" -> "ROOT/a:ROOT/b"; an empty entry stays empty */
  char v[4 * PATH_MAX] = "";
  const char *d = dirs;
  for (;;) {
    size_t n = strcspn(d, ":");
    if (n) snprintf(v + strlen(v), sizeof v - strlen(v), "%s/%.*s", root, (int)n, d);
    if (!d[n]) break;
    strcat(v, ":");
    d += n + 1;
  }
  CHECK(setenv("PATH", v, 1) == 0);
}

int main(void) {
  CHECK(mkdtemp(root) != NULL);
  make_dir("a");
  make_dir("b");
  make_dir("c");
  make_dir("c/prog");
  make_file("a/prog", 0644);
  make_file("b/prog", 0755);
  char out[PATH_MAX], want[PATH_MAX];

  /* dtr__executable */
  snprintf(want, sizeof want, "%s/b/prog", root);
  CHECK_EQ_INT(dtr__executable(want), 0);
  snprintf(want, sizeof want, "%s/a/prog", root);
  CHECK_EQ_INT(dtr__executable(want), -1);
  CHECK_EQ_INT(errno, EACCES);
  snprintf(want, sizeof want, "%s/c/prog", root);
  CHECK_EQ_INT(dtr__executable(want), -1);
  CHECK_EQ_INT(errno, EISDIR);
  snprintf(want, sizeof want, "%s/nothing", root);
  CHECK_EQ_INT(dtr__executable(want), -1);
  CHECK_EQ_INT(errno, ENOENT);

  /* the directory and the file without x are passed over; the first executable wins */
  set_path("c:a:b");
  CHECK_EQ_INT(dtr__find_in_path("prog", out, sizeof out), 0);
  snprintf(want, sizeof want, "%s/b/prog", root);
  CHECK_EQ_STR(out, want);
  /* only a file without x: EACCES, and out names it */
  set_path("c:a");
  CHECK_EQ_INT(dtr__find_in_path("prog", out, sizeof out), -1);
  CHECK_EQ_INT(errno, EACCES);
  snprintf(want, sizeof want, "%s/a/prog", root);
  CHECK_EQ_STR(out, want);
  /* only a directory: nothing found */
  set_path("c");
  CHECK_EQ_INT(dtr__find_in_path("prog", out, sizeof out), -1);
  CHECK_EQ_INT(errno, ENOENT);
  /* a candidate that does not fit is skipped */
  set_path("b");
  CHECK_EQ_INT(dtr__find_in_path("prog", out, strlen(root) + 6), -1);
  CHECK_EQ_INT(errno, ENOENT);
  CHECK_EQ_INT(dtr__find_in_path("prog", out, strlen(root) + 8), 0);
  /* an empty entry is the current directory */
  set_path(":c");
  snprintf(want, sizeof want, "%s/b", root);
  CHECK(chdir(want) == 0);
  CHECK_EQ_INT(dtr__find_in_path("prog", out, sizeof out), 0);
  CHECK_EQ_STR(out, "./prog");
  /* without PATH: /usr/local/bin:/usr/bin:/bin */
  CHECK(unsetenv("PATH") == 0);
  CHECK_EQ_INT(dtr__find_in_path("sh", out, sizeof out), 0);
  CHECK(strcmp(out, "/usr/bin/sh") == 0 || strcmp(out, "/bin/sh") == 0 ||
        strcmp(out, "/usr/local/bin/sh") == 0);

  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
  return TEST_EXIT();
}
