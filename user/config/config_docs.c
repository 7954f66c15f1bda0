/* Reference text generated from the key table: `meshd config env` (one line per MESH_*
 * variable) and `meshd config docs` (docs/configuration.md). Editing a key in config_table.c
 * changes both; tests/e2e/test_config_cli.sh fails when the committed docs are stale. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/strbuf.h"
#include "config/config_int.h"

static const char *type_name(const struct cfg_key *k)
{
	static const char *const names[] = {
		[CT_BOOL] = "bool",	      [CT_UINT] = "integer",
		[CT_INT] = "integer",	      [CT_RATIO] = "ratio",
		[CT_DURATION] = "duration",   [CT_STRING] = "string",
		[CT_PATH] = "path",	      [CT_URL] = "url",
		[CT_ENDPOINT] = "endpoint",   [CT_ADDR] = "address",
		[CT_PORT] = "port",	      [CT_ENUM] = "enum",
		[CT_STRLIST] = "string list", [CT_EPLIST] = "endpoint list",
		[CT_PORTLIST] = "port list",  [CT_LIST] = "object list",
		[CT_PERCENT] = "percent",
	};

	return names[k->type];
}

static const char *text_or(const char *s, const char *none)
{
	return s && *s ? s : none;
}

/* A service key that copies the global key of the same path (documented once, globally). */
static bool copies_global(const struct cfg_key *k)
{
	return (k->flags & CF_INHERIT) && !strcmp(k->path, cfg_root_desc.keys[k->src_idx].path);
}

/* Default shown in listings: the table's text, "[]" for lists, "unset" otherwise. */
static const char *default_text(const struct cfg_key *k)
{
	if (k->flags & CF_INHERIT)
		return copies_global(k) ? "the global value" : cfg_root_desc.keys[k->src_idx].path;
	if (k->flags & CF_REQUIRED)
		return "required";
	if (k->def_from)
		return k->def_from; /* a key path: "node.datacenter" */
	if (k->def)
		return k->def;
	return k->type >= CT_STRLIST ? "[]" : "unset";
}

static int env_lines(FILE *out, const struct cfg_desc *d, const char *prefix)
{
	char name[256], rule[200];
	size_t i;

	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];

		if (k->flags & CF_NOENV || k->type == CT_LIST)
			continue;
		cfg_env_name(prefix, k->path, name, sizeof(name));
		if (fprintf(out, "%s (%s, default %s%s%s; %s)%s: %s%s%s%s\n", name, type_name(k),
			    default_text(k), k->prod ? ", production " : "", k->prod ? k->prod : "",
			    cfg_rule(k, rule, sizeof(rule)),
			    k->flags & CF_SECRET ? " [secret]" : "", k->doc,
			    k->not_yet ? " [not supported yet: " : "", k->not_yet ? k->not_yet : "",
			    k->not_yet ? "]" : "") < 0)
			return -EIO;
	}
	return 0;
}

int config_print_env(FILE *out)
{
	int err;

	if (fprintf(out, "MESH_CONFIG (path, default unset; a file name): Config file to load when "
			 "no --config is given.\n") < 0)
		return -EIO;
	err = env_lines(out, &cfg_root_desc, "");
	if (!err)
		err = env_lines(out, &cfg_service_desc, "SERVICES__<NAME>__");
	return err;
}

/* Markdown-safe cell: '|' would split the table. */
static const char *cell(const char *s, char *buf, size_t len)
{
	size_t i, j;

	for (i = j = 0; s[i] && j + 3 < len; i++) {
		if (s[i] == '|')
			buf[j++] = '\\';
		buf[j++] = s[i];
	}
	buf[j] = '\0';
	return buf;
}

/* " **Not supported yet** ..." after the doc of a key that is not built, else "". */
static const char *not_yet_note(const struct cfg_key *k, char *buf, size_t len)
{
	if (!k->not_yet)
		return "";
	if (k->not_yet_value)
		snprintf(buf, len, " **Not supported yet**: `%s` is refused (%s).",
			 k->not_yet_value, k->not_yet);
	else
		snprintf(buf, len, " **Not supported yet** (%s): only the default is accepted.",
			 k->not_yet);
	return buf;
}

/* " **Only with** `switch` ..." after the doc of a key under a switch (cfg_key.gate), else "". */
static const char *gate_note(const struct cfg_key *k, char *buf, size_t len)
{
	const struct cfg_key *sw = k->gate ? cfg_find_key(&cfg_root_desc, k->gate, NULL) : NULL;

	if (!sw)
		return "";
	snprintf(buf, len, " **Only with `%s` %s**: set otherwise, it is refused as unused.",
		 sw->path, sw->type == CT_BOOL ? "true" : "set");
	return buf;
}

static int key_table(FILE *out, const struct cfg_desc *d, const char *elem, const char *prefix)
{
	char name[256], rule[200], c[400], note[200], gate[160];
	size_t i;

	fprintf(out, "| Key | Type | Default | Production | Rule | Environment | Description |\n"
		     "|---|---|---|---|---|---|---|\n");
	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];
		bool env = prefix && !(k->flags & CF_NOENV) && k->type != CT_LIST;

		if (copies_global(k))
			continue;
		cfg_env_name(prefix ? prefix : "", k->path, name, sizeof(name));
		fprintf(out, "| `%s%s` | %s | %s | %s | %s | %s | %s%s%s%s%s |\n", elem, k->path,
			type_name(k), default_text(k), text_or(k->prod, "="),
			cell(cfg_rule(k, rule, sizeof(rule)), c, sizeof(c)), env ? name : "-",
			k->doc, k->flags & CF_SECRET ? " **Secret**: path only." : "",
			not_yet_note(k, note, sizeof(note)), gate_note(k, gate, sizeof(gate)),
			k->flags & CF_RESTART
			    ? " **Restart**: a reload that changes it is refused; restart meshd."
			    : "");
	}
	return fprintf(out, "\n") < 0 ? -EIO : 0;
}

static const char doc_intro[] =
    "# meshd configuration reference\n\n"
    "> Generated by `meshd config docs` from the key table in `user/config/config_table.c`.\n"
    "> Do not edit by hand: change the table and run `make docs`.\n\n"
    "## Sources and precedence\n\n"
    "meshd builds its configuration from four layers, lowest first: built-in defaults <\n"
    "preset < config file < `MESH_*` environment variables. With `config_source.consul_kv`, a\n"
    "fifth sits between the file and the environment: the JSON document at that Consul KV key,\n"
    "watched and applied as reloads (docs/consul.md; it may not set restart-only keys);\n"
    "`meshctl config show` prints the running config, that document included.\n"
    "`meshd config show --config FILE` (offline, the file alone) prints every effective value\n"
    "with its origin (`default`, `preset`, `file`, `env`);\n"
    "with `-o json` it prints `{\"values\": ..., \"origins\": ..., \"secrets\": [...]}`, where\n"
    "`values` is itself a complete config file that loads to the same effective config.\n\n"
    "The file is JSON and must contain `\"version\": 1`. Unknown keys are errors.\n\n"
    "- Durations are strings: one or more `<integer><unit>` with units `ns`, `us`, `ms`, `s`,\n"
    "  `m`, `h` (`\"250ms\"`, `\"10s\"`, `\"5m\"`, `\"1h\"`, `\"1m30s\"`).\n"
    "- Endpoints are `\"ip:port\"` or `\"[ipv6]:port\"`; addresses are bare IPv4/IPv6.\n"
    "- Ratios are numbers in 0..1, percents integers in 0..100.\n"
    "- Paths are absolute. An empty string means unset.\n"
    "- Service names are lowercase DNS labels: `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.\n\n"
    "## Environment variables\n\n"
    "Every scalar key can be overridden by `MESH_` + its JSON path upper-cased, with `__`\n"
    "between levels: `MESH_LOG__LEVEL=debug`, `MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=7`,\n"
    "`MESH_DISCOVERY__CONSUL__ADDRESS=http://127.0.0.1:8500`. Values are parsed with the same\n"
    "types and rules as the file: booleans `true`/`false` (or `1`/`0`), numbers in JSON's\n"
    "grammar (`16`, `1e1`, `0.25`; not `0x10`, `+5`, ` 5`, `010` or `.25`), durations like\n"
    "`10s`, string and endpoint lists comma-separated (`MESH_DISCOVERY__CONSUL__SERVICES=api,\n"
    "web`; an empty value is an empty list). A `MESH_*` variable given twice is an error, as\n"
    "is a key given twice in the file. In the file, a string may not contain `\\u0000`.\n\n"
    "Per-service overrides name the service: `MESH_SERVICES__<NAME>__<KEY>`, where `<NAME>` is\n"
    "the service name upper-cased with `-` written as `_`, and `<KEY>` a service key in the\n"
    "same form, e.g. `MESH_SERVICES__API__CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=3` or\n"
    "`MESH_SERVICES__MY_API__LOAD_BALANCER__ALGORITHM=maglev`. A service named in the\n"
    "environment must exist in the file.\n\n"
    "Lists of objects (`services`, their `backends`, `discovery.consul.register`,\n"
    "`discovery.dns.services`, `identities`, `authorization.rules`), a service's `name`,\n"
    "`vip` and `port`, and `version` can only be set in the file. `MESH_CONFIG` names the\n"
    "config file and `MESH_BUILD` is the test harness's build directory; any other `MESH_*`\n"
    "variable must be a key: an unknown one is an error (with a suggestion for near\n"
    "misses), never silently ignored. `meshd config env` lists every variable.\n\n";

static const char doc_rules[] =
    "## Validation\n\n"
    "`meshd validate [--offline] FILE` (which also applies the environment) prints `configuration "
    "is\n"
    "valid` and exits 0, or prints every problem found, one per line on standard output,\n"
    "and exits 1. Usage errors exit 2. Each problem reads\n\n"
    "    <json.path>: <what is wrong> (got <value>, expected <rule>)\n\n"
    "Paths are dotted JSON paths; list elements carry their 0-based position in the file:\n"
    "`services[1].circuit_breaker.window`, `services[0].backends[2].port`. A problem with a\n"
    "value from the environment names the variable (`... invalid duration in\n"
    "MESH_CIRCUIT_BREAKER__WINDOW (got \"ten\", ...)`); an unknown variable is named by\n"
    "itself. Problems in the file itself use `(root)`.\n\n"
    "Besides each key's type and range (tables below), these rules apply:\n\n"
    "- unknown keys (with a did-you-mean suggestion), duplicate keys;\n"
    "- required: `version`; each service's `name`, `vip`, `port`; each backend's `address`\n"
    "  and `port`; with `discovery.backend` static, at least one backend per service;\n"
    "- service names are unique, and no two services share a VIP and port; a service lists\n"
    "  each backend address:port once;\n"
    "- `retry.backoff_base` <= `retry.backoff_max`, `circuit_breaker.open_duration` <=\n"
    "  `circuit_breaker.max_open_duration`, `health_check.timeout` < `health_check.interval`\n"
    "  (unless the type is `none`), `health_check.http_path` set for `http` checks; all\n"
    "  thresholds >= 1. Checked globally and for each service that overrides either side;\n"
    "- `discovery.backend` consul needs `discovery.consul.address`; dns needs\n"
    "  `discovery.dns.servers` and `discovery.dns.services`; names in\n"
    "  `discovery.consul.services` and `discovery.dns.services[].name` are entries of\n"
    "  `services`; a key of another backend's section (`discovery.consul.*` with\n"
    "  `discovery.backend` static, ...) set to anything but its default would do nothing\n"
    "  and is refused as `unused with discovery.backend <backend>`;\n";

/* The rules after the one on keys under a switch (gate_rule). */
static const char doc_rules_tail[] =
    "- with `mtls.enabled`: `cert_source` files needs `mtls.ca_file` and `mtls.cert_dir`,\n"
    "  builtin_ca needs `mtls.ca_file` and `mtls.ca_key_file`; `cert_source` consul and\n"
    "  `authorization.intentions` need `discovery.consul.address`; `cert_source` consul\n"
    "  refuses a set `mtls.trust_domain`, `ca_file`, `ca_key_file` or `cert_dir` (Consul\n"
    "  names the domain and issues the certificates); `trust_domain` is a lowercase\n"
    "  domain; inbound and outbound listeners differ. A service with `mtls: true` needs\n"
    "  `mtls.enabled`. The `discovery.consul` agent keys (address, datacenter, token_file,\n"
    "  ca_file, wait) are used by these with any `discovery.backend`;\n"
    "- the datapath's limits: at most `datapath.max_services` services, 1,024 backends per\n"
    "  service (`MESH_MAX_BACKENDS_PER_SVC`) and `datapath.max_backends` - 1 in all;\n"
    "  the problem line names the limit and its value;\n"
    "- on this host (`meshd validate` unless `--offline`, and meshd before it starts):\n"
    "  `cgroup` is an existing directory of the cgroup2 filesystem; `bpf_pin_path` is on\n"
    "  bpffs, or missing below a bpffs mount (meshd creates it); the directory of\n"
    "  `admin.socket` is owned by root (or meshd's user) and writable by no one else, and\n"
    "  so is each directory above it unless sticky like /tmp (a missing one is created\n"
    "  0700): elsewhere another user could replace the socket and answer meshctl;\n"
    "- `identities[].cgroup` values are unique; `authorization.rules[].source` is `*`, a\n"
    "  service of `identities` or a name of `services`; `destination` is `*` or a name of\n"
    "  `services`.\n\n"
    "## Versioning\n\n"
    "`version` is required. A version newer than this meshd understands (or not a positive\n"
    "integer) is an error. Older versions are upgraded in memory by a table of migration\n"
    "steps (version N to N+1) before anything else is read; version 1 is the first format.\n\n"
    "## Secrets\n\n"
    "Tokens and keys never sit in the config: keys marked **Secret** name a file holding\n"
    "them. Such a file must exist, be a regular file and give no access to others (e.g.\n"
    "mode 0600), else validation fails saying which. meshd never prints or logs the\n"
    "contents: `config show` prints the path and marks it `secret`; the admin API JSON and\n"
    "reload diffs print `<redacted>`.\n\n";

static int preset_section(FILE *out)
{
	size_t i;

	fprintf(out,
		"## Presets\n\n"
		"`preset` (or `MESH_PRESET`) picks the defaults. `development`, the default, is\n"
		"the built-in defaults listed below. `production` changes these keys:\n\n"
		"| Key | development | production |\n|---|---|---|\n");
	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];

		if (k->prod)
			fprintf(out, "| `%s` | %s | %s |\n", k->path, text_or(k->def, "unset"),
				k->prod);
	}
	return fprintf(out, "\nNo preset turns on anything that is not supported yet (next "
			    "section).\n\n") < 0
		   ? -EIO
		   : 0;
}

/* The keys of `d` (elements written `elem`) that are not built yet, one bullet each. */
static void not_yet_list(FILE *out, const struct cfg_desc *d, const char *elem)
{
	size_t i;

	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];

		if (!k->not_yet || (k->flags & CF_INHERIT))
			continue;
		if (k->not_yet_value)
			fprintf(out, "- `%s%s`: `%s` (%s)\n", elem, k->path, k->not_yet_value,
				k->not_yet);
		else if (k->type < CT_STRLIST && !k->def)
			fprintf(out, "- `%s%s`: any value (%s)\n", elem, k->path, k->not_yet);
		else
			fprintf(out, "- `%s%s`: anything but `%s` (%s)\n", elem, k->path,
				k->type >= CT_STRLIST ? "[]" : k->def, k->not_yet);
	}
}

static size_t not_yet_count(const struct cfg_desc *d)
{
	size_t n = 0;

	for (size_t i = 0; i < d->n_keys; i++)
		n += d->keys[i].not_yet && !(d->keys[i].flags & CF_INHERIT);
	return n;
}

static int not_yet_section(FILE *out)
{
	if (!not_yet_count(&cfg_root_desc) && !not_yet_count(&cfg_service_desc))
		return fprintf(out, "## Not supported yet\n\nNothing: every key of the format "
				    "is built.\n\n") < 0
			   ? -EIO
			   : 0;
	fprintf(
	    out,
	    "## Not supported yet\n\n"
	    "These keys are part of the format but what they configure is not built yet.\n"
	    "Validation refuses them (rather than accepting a setting that would do\n"
	    "nothing) with the rule `not supported yet` and the reason:\n\n"
	    "    <json.path>: not supported yet: <reason> (got <value>, expected <allowed>)\n\n");
	not_yet_list(out, &cfg_root_desc, "");
	not_yet_list(out, &cfg_service_desc, "services[].");
	return fprintf(out, "\nA service's override of a global key above is refused the same "
			    "way.\n\n") < 0
		   ? -EIO
		   : 0;
}

/* Tables for the elements of every list below `d`, e.g. services[] then services[].backends[]. */
static int list_sections(FILE *out, const struct cfg_desc *d, const char *elem)
{
	char path[128], prefix[64];
	size_t i;
	int err = 0;

	for (i = 0; !err && i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];

		if (k->type != CT_LIST)
			continue;
		snprintf(path, sizeof(path), "%s%s[].", elem, k->path);
		snprintf(prefix, sizeof(prefix), "SERVICES__<NAME>__");
		fprintf(out, "### `%.*s`\n\n%s\n\n", (int)strlen(path) - 1, path, k->doc);
		/* only services take MESH_* overrides, by name */
		err = key_table(out, k->sub, path, k->sub == &cfg_service_desc ? prefix : NULL);
		if (!err && k->sub == &cfg_service_desc)
			fprintf(
			    out,
			    "Each service may also carry `load_balancer` and `circuit_breaker`\n"
			    "blocks with any of the global keys of those names; they override\n"
			    "the global values key by key (`services[].load_balancer.algorithm`,\n"
			    "env `MESH_SERVICES__<NAME>__LOAD_BALANCER__ALGORITHM`). Keys not\n"
			    "given take the effective global value.\n\n");
		if (!err)
			err = list_sections(out, k->sub, path);
	}
	return err;
}

/* Length of the section of root key path `p` with its dot ("mtls." for mtls.workers), 0 for a
 * top-level key. */
static size_t section_len(const char *p)
{
	const char *dot = strrchr(p, '.');

	return dot ? (size_t)(dot - p) + 1 : 0;
}

/* Whether key `k` works only under switch `sw` (its cfg_key.gate names it). */
static bool under(const struct cfg_key *k, const struct cfg_key *sw)
{
	return k->gate && !strcmp(k->gate, sw->path);
}

/* Whether root key `sw` is the switch of some root key. */
static bool is_switch(const struct cfg_key *sw)
{
	for (size_t i = 0; i < cfg_root_desc.n_keys; i++)
		if (under(&cfg_root_desc.keys[i], sw))
			return true;
	return false;
}

/* Whether every root key of the `n`-byte section `p` but switch `sw` is under `sw`, and more
 * than one is: the docs then name the section (`mtls.*`) instead of each key. */
static bool section_gated(const char *p, size_t n, const struct cfg_key *sw)
{
	size_t i, gated = 0;

	for (i = 0; n && i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];

		if (k == sw || strncmp(k->path, p, n))
			continue;
		if (!under(k, sw))
			return false;
		gated++;
	}
	return gated > 1;
}

/* Appends the keys under switch `sw` to `sb` ("every other `mtls.*` key, `identities` and
 * `authorization.*`"), a section once when all its keys are under `sw`. */
static void gated_keys(const struct cfg_key *sw, struct strbuf *sb)
{
	const char *item[64], *sep;
	size_t i, j, n = 0, cut[64];

	for (i = 0; i < cfg_root_desc.n_keys && n < 64; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];
		size_t sl = section_len(k->path);

		if (!under(k, sw))
			continue;
		if (!section_gated(k->path, sl, sw))
			sl = 0;
		for (j = 0; sl && j < n && (cut[j] != sl || strncmp(item[j], k->path, sl)); j++)
			;
		if (!sl || j == n) {
			item[n] = k->path;
			cut[n++] = sl;
		}
	}
	for (i = 0; i < n; i++) {
		bool own = cut[i] && !strncmp(sw->path, item[i], cut[i]); /* the switch's section */

		sep = !i ? "" : i + 1 < n ? ", " : " and ";
		if (!cut[i])
			strbuf_printf(sb, "%s`%s`", sep, item[i]);
		else
			strbuf_printf(sb, "%s%s`%.*s*`%s", sep, own ? "every other " : "",
				      (int)cut[i], item[i], own ? " key" : "");
	}
}

/* Writes `text` as one markdown bullet wrapped at 88 columns, never inside a `code span`. */
static int bullet(FILE *out, const char *text)
{
	const char *line = text, *brk = NULL, *c;
	bool code = false;

	for (c = text; *c; c++) {
		code ^= *c == '`';
		if (*c == ' ' && !code)
			brk = c;
		if (c - line >= 86 && brk) {
			fprintf(out, "%s%.*s\n", line == text ? "- " : "  ", (int)(brk - line),
				line);
			line = brk + 1;
			brk = NULL;
		}
	}
	return fprintf(out, "%s%s\n", line == text ? "- " : "  ", line) < 0 ? -EIO : 0;
}

/* The rule on keys under a switch (cfg_key.gate), naming them per switch from the table. */
static int gate_rule(FILE *out)
{
	struct strbuf sb = STRBUF_INIT;
	size_t i, n = 0;
	int err;

	strbuf_puts(&sb, "a key that works only under a switch (");
	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *sw = &cfg_root_desc.keys[i];

		if (!is_switch(sw))
			continue;
		if (n++)
			strbuf_puts(&sb, "; ");
		gated_keys(sw, &sb);
		strbuf_printf(&sb, " under `%s`", sw->path);
	}
	strbuf_puts(&sb,
		    ") set by the file, Consul KV or the environment to anything but its default "
		    "while the switch is off would do nothing, and is refused as `unused while "
		    "<switch> is false` (or `unset`). A preset's values are not the user's: "
		    "`production` with `MESH_MTLS__ENABLED=false` still loads;");
	err = sb.err ? sb.err : bullet(out, sb.data);
	strbuf_free(&sb);
	return err;
}

int config_print_docs(FILE *out)
{
	int err;

	fputs(doc_intro, out);
	err = preset_section(out);
	if (!err)
		err = not_yet_section(out);
	if (!err && fputs(doc_rules, out) < 0)
		err = -EIO;
	if (!err)
		err = gate_rule(out);
	if (!err && fputs(doc_rules_tail, out) < 0)
		err = -EIO;
	if (!err && fprintf(out, "## Keys\n\nIn the tables, `=` in the Production column means the "
				 "production preset keeps the\ndefault, and `-` in the Environment "
				 "column means the key is set in the file only.\n\n"
				 "### Top level\n\n") < 0)
		err = -EIO;
	if (!err)
		err = key_table(out, &cfg_root_desc, "", "");
	if (!err)
		err = list_sections(out, &cfg_root_desc, "");
	if (!err && fflush(out))
		err = -EIO;
	return err;
}
