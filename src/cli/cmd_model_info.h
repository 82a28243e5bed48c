/* cmd_model_info: `msoa model info MODEL.gguf`, what a model file holds. */
#ifndef MSOA_CMD_MODEL_INFO_H
#define MSOA_CMD_MODEL_INFO_H

/* argv holds the arguments after "model info" (the file, options). */
int cmd_model_info(int argc, char **argv);

#endif
