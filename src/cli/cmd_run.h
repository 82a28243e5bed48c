/* cmd_run: `msoa run MODEL.gguf -p PROMPT`, text generation on the console
 * with the built-in engine. */
#ifndef MSOA_CMD_RUN_H
#define MSOA_CMD_RUN_H

/* argv holds the arguments after "run". */
int cmd_run(int argc, char **argv);

#endif
