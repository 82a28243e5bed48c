/* cmd_quantize: `msoa quantize IN.gguf OUT.gguf --type T`, a model file
 * converted to another tensor type. */
#ifndef MSOA_CMD_QUANTIZE_H
#define MSOA_CMD_QUANTIZE_H

/* argv holds the arguments after "quantize". */
int cmd_quantize(int argc, char **argv);

#endif
