/* The progress page: one 4 KiB shared file per worker through which a worker tells its agent that it
 * still advances (a counter it bumps, the step, the phase it is in, whether it waits inside a
 * collective) and the agent asks things of the worker (a thread dump now; later a stop at the next step
 * boundary, in the reserved request word). The agent creates the file and passes its path in
 * DTRAIN_PROGRESS_FILE; the worker maps it. The layout is a versioned on-disk format that programs in
 * any language may write (docs/environment.md, "Progress page"); every field is little-endian and
 * naturally aligned, so a Python program packs it with struct and mmap.
 *
 *   off  size  field        writer  meaning
 *     0     4  magic        agent   "DTPG" (0x47505444)
 *     4     4  version      agent   1
 *     8     4  size         agent   4096
 *    12     4  flags        worker  ATTACHED 1 | DUMPS 2 | STEPPED 4
 *    16     8  counter      worker  bumped by every report, written last
 *    24     8  step         worker  the step being worked on (-1: none yet)
 *    32     4  pid          worker  the process that attached (a launcher script's child, say)
 *    36     4  waiting      worker  > 0 while a thread waits inside a collective operation
 *    40     4  slow         worker  1: this phase may take long (start-up, checkpoint): start-up allowance
 *    44     4  dumped       worker  bumped when a thread dump the agent asked for is complete
 *    48     8  updated_ns   worker  CLOCK_REALTIME of the last report, for people
 *    56     4  request      agent   0; reserved for the agent's requests (stop at the next step boundary)
 *    60     4  request_arg  agent   reserved
 *    64    64  phase        worker  NUL-terminated name of what the worker does ("step", "checkpoint save")
 *   128   256  reason       worker  NUL-terminated last words: why it exits (read by the agent's report)
 *   384   256  dump_path    agent   NUL-terminated file the thread dump goes to
 *   640  3456  reserved     -       zero
 */
#ifndef DTRAIN_COMMON_PROGRESS_H
#define DTRAIN_COMMON_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/common.h"

#define DTR__PG_MAGIC 0x47505444u /* "DTPG" little-endian */
#define DTR__PG_VERSION 1u
#define DTR__PG_SIZE 4096u
#define DTR__PG_ENV "DTRAIN_PROGRESS_FILE"

enum { DTR__PG_ATTACHED = 1, DTR__PG_DUMPS = 2, DTR__PG_STEPPED = 4 };

typedef struct dtr__progress_page {
  uint32_t magic, version, size, flags;
  uint64_t counter;
  int64_t step;
  uint32_t pid, waiting, slow, dumped;
  uint64_t updated_ns;
  uint32_t request, request_arg;
  char phase[64];
  char reason[256];
  char dump_path[256];
  uint8_t reserved[DTR__PG_SIZE - 640];
} dtr__progress_page;

_Static_assert(sizeof(dtr__progress_page) == DTR__PG_SIZE, "the progress page is one 4 KiB page");

/* ---- the agent's side */

/* Create (replace) the page file at path, mode 0600, initialised (magic, version, size, step -1) and
 * mapped shared into *out. err names the path. */
dtr_result dtr__progress_create(const char *path, dtr__progress_page **out, char *err, size_t cap);
/* Unmap a page from dtr__progress_create (NULL is fine); the file stays. */
void dtr__progress_unmap(dtr__progress_page *p);

/* A consistent copy of what the worker wrote (the counter is read before and after). */
typedef struct dtr__progress_view {
  uint32_t flags, pid, waiting, slow, dumped;
  uint64_t counter;
  int64_t step;
  char phase[64];
  char reason[256];
} dtr__progress_view;
void dtr__progress_read(const dtr__progress_page *p, dtr__progress_view *v);

/* ---- the worker's side: the page of this process (DTRAIN_PROGRESS_FILE), attached on first use */

/* The page, or NULL when the launcher gave none (or it was unusable: a warning says why, once). */
dtr__progress_page *dtr__progress_self(void);
/* Bracket a wait inside a collective operation: the agent does not blame a rank that waits for others. */
void dtr__progress_wait_begin(void);
void dtr__progress_wait_end(void);
/* Answer the agent's SIGURG with a dump of every thread's stack into the page's dump_path (the built-in
 * trainer calls it; a library does not install signal handlers behind a program's back). */
dtr_result dtr__progress_enable_dumps(void);

#endif
