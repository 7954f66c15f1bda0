/* MESH_* environment overrides: `MESH_` + the JSON path upper-cased with `__` between levels
 * for global keys, `MESH_SERVICES__<NAME>__<KEY>` for one service's keys, parsed with the same
 * rules as the file. Unknown MESH_* names are errors with a did-you-mean suggestion. Runs inside
 * a load, after the file and before services inherit the global values. */
#include <stdio.h>
#include <string.h>

#include "config/config_int.h"

/* Upper-cases a service name the way MESH_SERVICES__<NAME>__ spells it ('-' becomes '_'). */
static bool env_name_matches(const char *svc, const char *env, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char c = svc[i] == '-'
			     ? '_'
			     : (char)(svc[i] >= 'a' && svc[i] <= 'z' ? svc[i] - 32 : svc[i]);

		if (!svc[i] || c != env[i])
			return false;
	}
	return svc[len] == '\0';
}

/* Finds the key of `d` whose MESH_ name (after `prefix`) is `name`. */
static const struct cfg_key *find_env_key(const struct cfg_desc *d, const char *prefix,
					  const char *name, size_t *idx, char *hint, size_t hlen)
{
	size_t i, best = 3, dist;
	char buf[256];

	for (i = 0; i < d->n_keys; i++) {
		cfg_env_name(prefix, d->keys[i].path, buf, sizeof(buf));
		if (!strcmp(buf, name)) {
			*idx = i;
			return &d->keys[i];
		}
		dist = cfg_edit_distance(buf, name);
		if (dist < best) {
			best = dist;
			snprintf(hint, hlen, ", did you mean %s?", buf);
		}
	}
	return NULL;
}

/* MESH_* variables that are not configuration keys: the file name, and the build directory the
 * test harness exports. Any other unknown MESH_* name is an error, never silently ignored. */
static const char *const env_not_keys[] = { "MESH_CONFIG", "MESH_BUILD", NULL };

static bool env_is_not_key(const char *name)
{
	size_t i;

	for (i = 0; env_not_keys[i]; i++)
		if (!strcmp(name, env_not_keys[i]))
			return true;
	return false;
}

/* Sets key `k` of `base` from variable `name`; `origin` is the key's origin record. */
static void env_set(struct config_errors *errs, const struct cfg_key *k, void *base,
		    uint8_t *origin, const char *path, const char *name, const char *value)
{
	struct cfg_in in = { .text = value, .env = name };

	if (k->flags & CF_NOENV || k->type == CT_LIST) {
		cfg_errf(errs,
			 "%s: cannot be set from the environment in %s (got \"%.64s\", expected it "
			 "in the config file)",
			 path, name, value);
		return;
	}
	*origin = ORIGIN_ENV;
	cfg_set(k, base, &in, path, errs);
}

/* MESH_SERVICES__<NAME>__<KEY>: a per-service override, by service name. */
static void apply_service_env(struct mesh_config *cfg, struct config_errors *errs, const char *name,
			      const char *value)
{
	const char *rest = name + strlen("MESH_SERVICES__"), *sep = strstr(rest, "__");
	int len = sep ? (int)(sep - rest) : (int)strlen(rest);
	char prefix[300], hint[300] = "", path[400];
	const struct cfg_key *k;
	size_t i, idx;

	for (i = 0; sep && i < cfg->n_services; i++)
		if (env_name_matches(cfg->services[i].name ? cfg->services[i].name : "", rest,
				     (size_t)len))
			break;
	if (!sep || i == cfg->n_services) {
		cfg_errf(errs,
			 "services: no such service in %s (got \"%.*s\", expected "
			 "MESH_SERVICES__<NAME>__<KEY> naming an entry of services)",
			 name, len > 64 ? 64 : len, rest);
		return;
	}
	snprintf(prefix, sizeof(prefix), "SERVICES__%.*s__", len > 200 ? 200 : len, rest);
	k = find_env_key(&cfg_service_desc, prefix, name, &idx, hint, sizeof(hint));
	if (!k) {
		cfg_errf(errs,
			 "services[%zu]: unknown variable %s%s (got \"%.64s\", expected a variable "
			 "listed by meshd config env)",
			 i, name, hint, value);
		return;
	}
	snprintf(path, sizeof(path), "services[%zu].%s", i, k->path);
	env_set(errs, k, &cfg->services[i], &cfg_root_list(cfg, "services")[i].origin[idx], path,
		name, value);
}

void cfg_apply_env_var(struct mesh_config *cfg, const char *var, struct config_errors *errs)
{
	const char *eq = strchr(var, '=');
	char name[256], hint[300] = "";
	const struct cfg_key *k;
	size_t idx;

	if (strncmp(var, "MESH_", 5) || !eq)
		return;
	snprintf(name, sizeof(name), "%.*s", (int)(eq - var), var);
	if ((size_t)(eq - var) >= sizeof(name)) {
		cfg_errf(errs,
			 "%.64s...: unknown variable (got a %zu-character name, expected a "
			 "variable listed by meshd config env)",
			 name, (size_t)(eq - var));
		return;
	}
	if (env_is_not_key(name))
		return;
	if (!strncmp(name, "MESH_SERVICES__", 15)) {
		apply_service_env(cfg, errs, name, eq + 1);
		return;
	}
	k = find_env_key(&cfg_root_desc, "", name, &idx, hint, sizeof(hint));
	if (k) {
		env_set(errs, k, cfg, &cfg->meta->root->origin[idx], k->path, name, eq + 1);
	} else {
		cfg_errf(
		    errs,
		    "%s: unknown variable%s (got \"%.64s\", expected a variable listed by meshd "
		    "config env)",
		    name, hint, eq + 1);
	}
}
