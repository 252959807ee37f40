/* The dtrain CLI's subcommands. main() dispatches argv[1] to one of these; each returns the process
 * exit code (0 success, 2 bad usage, otherwise the failure's code) and never calls exit() itself. */
#ifndef DTRAIN_LAUNCHER_COMMANDS_H
#define DTRAIN_LAUNCHER_COMMANDS_H

#include <stdio.h>

/* argv[0] is the subcommand name ("launch", "store"), argv[1..] its arguments. */
int dtr__cmd_launch(int argc, char **argv);
int dtr__cmd_store(int argc, char **argv);
int dtr__cmd_run(int argc, char **argv);    /* launch + train from a recipe */
int dtr__cmd_train(int argc, char **argv);  /* one rank of the built-in trainer */
int dtr__cmd_ckpt(int argc, char **argv);   /* checkpoint tools: ls, verify, inspect, export, import */
int dtr__cmd_sbatch(int argc, char **argv); /* a Slurm job script from a recipe, submitted with sbatch */

#endif
