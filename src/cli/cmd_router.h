/* cmd_router: `msoa router train|eval`, training and evaluating the router
 * and guard model (src/route/train.h). */
#ifndef MSOA_CLI_CMD_ROUTER_H
#define MSOA_CLI_CMD_ROUTER_H

/* argv: the arguments after "router" (train|eval, flags). Returns the
 * process exit code. */
int cmd_router(int argc, char **argv);

#endif
