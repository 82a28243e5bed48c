/* cli: the `msoa` command line: sub-command table, help texts, exit codes. */
#ifndef MSOA_CLI_H
#define MSOA_CLI_H

int cli_main(int argc, char **argv);

#endif
