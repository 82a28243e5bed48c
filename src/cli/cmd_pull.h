/* cmd_pull: `msoa pull URL [--sha256 X] [--dir DIR] [--name FILE]`, download
 * a GGUF model into the model cache (see pull.h). */
#ifndef MSOA_CMD_PULL_H
#define MSOA_CMD_PULL_H

/* argv holds the arguments after "pull". Prints the model's path on stdout;
 * returns 0, 1 when the download fails, 2 for bad usage. */
int cmd_pull(int argc, char **argv);

#endif
