/* libFuzzer target for the config loader: the input is a JSON document, optionally followed by
 * a NUL byte and newline-separated NAME=value lines that become MESH_* environment variables
 * (at most 8), so env parsing and per-service overrides are fuzzed with the file. A load that
 * succeeds is also shown, diffed and serialized, to exercise the table walkers. The same document
 * is then loaded as the Consul KV layer (config_load_kv with no file: its origin, the refusal of
 * restart-only keys, its own error labels). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define MAX_ENV 8

static void exercise(const struct mesh_config *cfg)
{
	struct config_diff d;
	FILE *null = fopen("/dev/null", "w");
	char *json;

	if (null) {
		config_show(cfg, false, null);
		config_show(cfg, true, null);
		fclose(null);
	}
	json = config_to_json(cfg);
	free(json);
	if (config_diff(NULL, cfg, &d) == 0)
		config_diff_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), *env[MAX_ENV + 1] = { 0 }, *line, *save = NULL;
	struct config_errors errs = { 0 };
	struct mesh_config *cfg;
	size_t json_len, n = 0;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	json_len = strlen(buf);
	if (json_len < size) {
		for (line = strtok_r(buf + json_len + 1, "\n", &save); line && n < MAX_ENV;
		     line = strtok_r(NULL, "\n", &save)) {
			if (asprintf(&env[n], "%s%s", strncmp(line, "MESH_", 5) ? "MESH_" : "",
				     line) < 0)
				break;
			n++;
		}
	}
	cfg = config_load_buf(buf, json_len, env, &errs);
	if (cfg)
		exercise(cfg);
	config_free(cfg);
	config_errors_free(&errs);
	cfg = config_load_kv(NULL, buf, json_len, env, &errs);
	if (cfg)
		exercise(cfg);
	config_free(cfg);
	config_errors_free(&errs);
	while (n)
		free(env[--n]);
	free(buf);
	return 0;
}
