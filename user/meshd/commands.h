/* meshd subcommands. Each returns the process exit code: 0 ok, 1 failure, 2 usage. */
#ifndef MESHD_COMMANDS_H
#define MESHD_COMMANDS_H

int cmd_validate(int argc, char **argv);  /* cmd_config.c: meshd validate FILE */
int cmd_config(int argc, char **argv);	  /* cmd_config.c: meshd config show|env|docs */
int cmd_run(const char *config_path);	  /* daemon.c: run in the foreground */
int cmd_cleanup(const char *config_path); /* daemon.c: remove everything meshd installed */

#endif
