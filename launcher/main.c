/* The dtrain CLI entry point: global flags (--help, --version) and dispatch to a subcommand. The only
 * place in dtrain that exits. */
#include <stdio.h>
#include <string.h>

#include "common/device.h"
#include "common/log.h"
#include "dtrain/common.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
  fputs(
      "usage: dtrain [--help] [--version] COMMAND [ARGS...]\n"
      "\n"
      "dtrain starts and supervises distributed training jobs.\n"
      "\n"
      "Commands:\n"
      "  launch    run a program on every rank of this node, after a rendezvous with the other nodes\n"
      "            (a drop-in for torchrun); see `dtrain launch --help`\n"
      "  run       train a recipe on this node's ranks: launch + train; see `dtrain run --help`\n"
      "  train     one rank of the built-in trainer (what `run` starts on every rank)\n"
      "  ckpt      inspect, verify, export and import checkpoints; see `dtrain ckpt --help`\n"
      "  store     run a standalone rendezvous store; see `dtrain store --help`\n"
      "  sbatch    write a Slurm job script from a recipe and submit it; see `dtrain sbatch --help`\n"
      "\n"
      "Options:\n"
      "  -h, --help     this text\n"
      "  --version      version and build features\n"
      "\n"
      "Environment: DTRAIN_LOG_LEVEL (error, warn, info, debug; default info), DTRAIN_JOB_TOKEN.\n",
      f);
}

int main(int argc, char **argv) {
  dtr__log_set_default(DTR_LOG_INFO);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
    char libs[256];
    dtr__describe_libraries(libs, sizeof libs);
    printf("dtrain %s (features: %s)\nlibraries: %s; GPUs visible: %d\n", dtr_version(), dtr_build_features(),
           libs, dtr__cuda_device_count());
    return 0;
  }
  if (strcmp(cmd, "launch") == 0) return dtr__cmd_launch(argc - 1, argv + 1);
  if (strcmp(cmd, "store") == 0) return dtr__cmd_store(argc - 1, argv + 1);
  if (strcmp(cmd, "run") == 0) return dtr__cmd_run(argc - 1, argv + 1);
  if (strcmp(cmd, "train") == 0) return dtr__cmd_train(argc - 1, argv + 1);
  if (strcmp(cmd, "ckpt") == 0) return dtr__cmd_ckpt(argc - 1, argv + 1);
  if (strcmp(cmd, "sbatch") == 0) return dtr__cmd_sbatch(argc - 1, argv + 1);
  if (cmd[0] == '-')
    fprintf(stderr, "dtrain: unknown option '%s' (try 'dtrain --help')\n", cmd);
  else
    fprintf(stderr, "dtrain: unknown command '%s' (try 'dtrain --help')\n", cmd);
  return 2;
}
