/* Worker output fan-in: bytes read from a worker's stdout/stderr pipe become whole lines, each written
 * with one write() as "[NODE:RANK] line\n" to the agent's own stdout/stderr, and raw to the per-rank
 * log files. The last lines of each rank are kept for the failure report.
 * Not thread-safe: one dtr__out_rank is fed by the agent's main loop only. */
#ifndef DTRAIN_LAUNCHER_OUTPUT_H
#define DTRAIN_LAUNCHER_OUTPUT_H

#include <stddef.h>
#include <stdio.h>

#include "common/fsutil.h" /* dtr__mkdir_p, dtr__write_all: used with these streams */
#include "dtrain/common.h"

#define DTR_OUT_MAX_LINE (64 * 1024) /* a longer line is split into pieces of this size */
#define DTR_OUT_TAIL_LINES 20        /* lines kept per rank for the failure report */
#define DTR_OUT_TAIL_LINE_MAX 400    /* bytes kept of each of those lines */

enum { DTR_OUT_STDOUT = 0, DTR_OUT_STDERR = 1 };

typedef struct dtr__out_rank dtr__out_rank;

/* One rank's output. console_fd[s] receives stream s when bit s of console_mask is set (-1: never).
 * attempt_dir (NULL: no files) gets rank_<rank>.stdout and rank_<rank>.stderr, created (with missing
 * parent directories) now. Returns NULL with err filled when a file cannot be created. */
dtr__out_rank *dtr__out_rank_create(int node, int rank, const int console_fd[2], int console_mask,
                                    const char *attempt_dir, char *err, size_t cap);
/* Feed bytes of one stream; whole lines are emitted at once, a partial line is kept. */
void dtr__out_rank_feed(dtr__out_rank *r, int stream, const char *data, size_t n);
/* Read what fd has now (non-blocking fd) and feed it. Returns 1 while the pipe is open, 0 on EOF. */
int dtr__out_rank_drain(dtr__out_rank *r, int stream, int fd);
/* Emit partial lines of both streams as lines (at worker exit). */
void dtr__out_rank_flush(dtr__out_rank *r);
/* The kept last lines, oldest first, into lines[0..max); returns how many. Pointers stay valid until
 * the next feed or destroy. */
int dtr__out_rank_tail(const dtr__out_rank *r, const char **lines, int max);
/* Close files and free. NULL is fine. */
void dtr__out_rank_destroy(dtr__out_rank *r);

/* Write s to f as one shell word: as is when it is made of safe characters, else single-quoted, so that
 * a printed command line (`dtrain run --dry-run`) or a generated job script (`dtrain sbatch`) can be run. */
void dtr__shell_quote(FILE *f, const char *s);

#endif
