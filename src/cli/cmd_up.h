/* cmd_up: `msoa up`, the gateway. */
#ifndef MSOA_CMD_UP_H
#define MSOA_CMD_UP_H

int cmd_up(int argc, char **argv);

#endif
