/* Stop requests: the flag a program's own signal handler raises, and the file its launcher creates
 * (DTRAIN_STOP_FILE, see dtrain/runtime.h). Checked at every step boundary, so it costs one stat. */
#include <signal.h>
#include <sys/stat.h>

#include "common/param.h"
#include "dtrain/runtime.h"

/* The one piece of process-wide state here: a signal handler has nothing else to write to. */
static volatile sig_atomic_t stop_flag;

void dtr_stop_request(void) {
  stop_flag = 1;
}

int dtr_stop_requested(void) {
  if (stop_flag) return 1;
  const char *path = dtr__param_str("DTRAIN_STOP_FILE", NULL);
  struct stat st;
  return path && stat(path, &st) == 0;
}
