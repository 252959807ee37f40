/* Looking a program up in PATH, once for every caller: the launcher (a worker's program, before anything
 * starts) and the trainer (gnuplot for the loss plot, which is optional and so must fail silently). */
#ifndef DTRAIN_COMMON_PATH_SEARCH_H
#define DTRAIN_COMMON_PATH_SEARCH_H

#include <stddef.h>

/* 0 when path names a file (not a directory) this process may execute; otherwise -1 with errno ENOENT
 * (it cannot be stat'ed, whatever the reason), EISDIR (a directory) or EACCES (no execute permission). */
int dtr__executable(const char *path);

/* Find name (which holds no '/') the way execvp does: in each directory of $PATH in turn, an empty entry
 * meaning the current directory, /usr/local/bin:/usr/bin:/bin when PATH is unset or empty. Directories
 * of that name are passed over, and so are candidates that do not fit in cap bytes. Returns 0 with the
 * first executable candidate in out; otherwise -1 with errno EACCES when a file of that name exists but
 * cannot be executed (out then holds the first such file) or ENOENT when none exists. */
int dtr__find_in_path(const char *name, char *out, size_t cap);

#endif
