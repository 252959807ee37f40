/* `dtrain train`: being written (placeholder so the CLI links while its owner works on it). */
#include <stdio.h>

#include "commands.h"

int dtr_cmd_train(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "dtrain train: not built yet\n");
  return 2;
}
