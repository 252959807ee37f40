/* common/strbuf.c and common/fsutil.c: the JSON escaping in both modes byte for byte, printf past the
 * small stack buffer, binary appends; mkdir -p over existing, nested, file-blocked and too-long paths,
 * and write_all through a pipe in pieces. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/strbuf.h"
#include "tests/unit/test_util.h"

static void test_json(void) {
  const char *in = "a\"b\\c\nd\te\rf\x01g\x7fh\xc3\xa9";
  dtr__sbuf b = {0};
  dtr__sbuf_json_str(&b, in, 0);
  CHECK_EQ_STR(b.p, "\"a\\\"b\\\\c\\u000ad\\u0009e\\u000df\\u0001g\x7fh\xc3\xa9\"");
  CHECK_EQ_INT(b.len, strlen(b.p));
  dtr__sbuf_free(&b);
  dtr__sbuf_json_str(&b, in, DTR__SBUF_JSON_SHORT | DTR__SBUF_JSON_DEL);
  CHECK_EQ_STR(b.p, "\"a\\\"b\\\\c\\nd\\te\\rf\\u0001g\\u007fh\xc3\xa9\"");
  dtr__sbuf_free(&b);
  dtr__sbuf_json_str(&b, "", 0);
  CHECK_EQ_STR(b.p, "\"\"");
  dtr__sbuf_free(&b);
  CHECK(b.p == NULL && b.len == 0 && b.cap == 0);
}

static void test_printf_and_bytes(void) {
  dtr__sbuf b = {0};
  dtr__sbuf_puts(&b, "x=");
  dtr__sbuf_printf(&b, "%d,%s", 42, "y");
  CHECK_EQ_STR(b.p, "x=42,y");
  /* longer than any internal stack buffer: nothing may be cut */
  char big[10000];
  memset(big, 'q', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  dtr__sbuf_printf(&b, "[%s]%d", big, 7);
  CHECK_EQ_INT(b.len, 6 + 1 + (sizeof big - 1) + 2);
  CHECK(b.p[6] == '[' && b.p[6 + sizeof big] == ']' && strcmp(b.p + b.len - 2, "]7") == 0);
  CHECK(strspn(b.p + 7, "q") == sizeof big - 1);
  CHECK(!b.oom);
  dtr__sbuf_free(&b);
  /* binary data with NULs: len counts them, a NUL still follows */
  uint64_t v = 0x0102030400000000ULL;
  dtr__sbuf_put(&b, &v, 8);
  dtr__sbuf_put(&b, "", 0);
  CHECK_EQ_INT(b.len, 8);
  CHECK(memcmp(b.p, &v, 8) == 0 && b.p[8] == '\0');
  dtr__sbuf_free(&b);
}

static void test_mkdir_p(const char *root) {
  char p[PATH_MAX], f[PATH_MAX];
  struct stat st;
  snprintf(p, sizeof p, "%s/a/b//c/", root);
  CHECK_EQ_INT(dtr__mkdir_p(p, 0755), 0);
  snprintf(p, sizeof p, "%s/a/b/c", root);
  CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
  CHECK_EQ_INT(dtr__mkdir_p(p, 0755), 0); /* exists: fine */
  snprintf(f, sizeof f, "%s/file", root);
  int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0);
  if (fd >= 0) close(fd);
  errno = 0;
  CHECK_EQ_INT(dtr__mkdir_p(f, 0755), -1); /* the path itself is a file */
  CHECK_EQ_INT(errno, ENOTDIR);
  snprintf(p, sizeof p, "%s/file/sub", root);
  errno = 0;
  CHECK_EQ_INT(dtr__mkdir_p(p, 0755), -1);
  CHECK_EQ_INT(errno, ENOTDIR);
  char *longp = malloc(PATH_MAX + 16);
  memset(longp, 'x', PATH_MAX + 15);
  longp[PATH_MAX + 15] = '\0';
  errno = 0;
  CHECK_EQ_INT(dtr__mkdir_p(longp, 0755), -1);
  CHECK_EQ_INT(errno, ENAMETOOLONG);
  CHECK_EQ_INT(dtr__mkdir_p("", 0755), -1);
  free(longp);
}

static void test_write_all(const char *root) {
  char f[PATH_MAX];
  snprintf(f, sizeof f, "%s/w.bin", root);
  size_t n = 1 << 20;
  unsigned char *buf = malloc(n), *back = malloc(n);
  for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 131 + 7);
  int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK_EQ_INT(dtr__write_all(fd, buf, n), 0);
  close(fd);
  fd = open(f, O_RDONLY);
  size_t got = 0;
  ssize_t r;
  while (fd >= 0 && got < n && (r = read(fd, back + got, n - got)) > 0) got += (size_t)r;
  if (fd >= 0) close(fd);
  CHECK_EQ_INT(got, n);
  CHECK(memcmp(buf, back, n) == 0);
  CHECK_EQ_INT(dtr__write_all(-1, buf, 1), -1);
  CHECK_EQ_INT(errno, EBADF);
  free(buf);
  free(back);
}

int main(void) {
  char root[] = "/tmp/dtr_fsutil_XXXXXX";
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  test_json();
  test_printf_and_bytes();
  test_mkdir_p(root);
  test_write_all(root);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return TEST_EXIT();
}
