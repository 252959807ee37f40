/* Small file-system helpers shared by the checkpoint writer, the launcher and the trainer: each was
 * written more than once before. All return 0, or -1 with errno set (callers add the path to the
 * message, since they know what the directory or file is for). */
#ifndef DTRAIN_COMMON_FSUTIL_H
#define DTRAIN_COMMON_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p with mode for the directories it creates (umask applies). A directory that exists is fine,
 * even on a read-only file system (checked with stat before mkdir, which would say EROFS there); a
 * component that exists but is not a directory gives ENOTDIR; longer than PATH_MAX: ENAMETOOLONG. */
int dtr__mkdir_p(const char *path, mode_t mode);
/* Open a file to read (flags: O_RDONLY or O_RDWR; O_CLOEXEC is added) that must be a regular file. A
 * FIFO, a socket or a device in its place is refused without blocking (a FIFO's open would wait for a
 * writer forever): -1 with errno EINVAL. Any other failure: -1 with open's errno. */
int dtr__open_regular(const char *path, int flags);
/* write() all of buf, retrying EINTR and short writes. */
int dtr__write_all(int fd, const void *buf, size_t len);

#endif
