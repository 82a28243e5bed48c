/* cmd_route: `msoa route`, the router and guard decision for a text, from
 * the command line or as a JSON Lines filter. */
#ifndef MSOA_CLI_CMD_ROUTE_H
#define MSOA_CLI_CMD_ROUTE_H

/* argv: the arguments after "route". Returns the process exit code. */
int cmd_route(int argc, char **argv);

#endif
