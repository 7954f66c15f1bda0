/* dptool: a small CLI over user/datapath/datapath.h so tests and benchmarks can drive the BPF
 * datapath without meshd. Builds config_service structs by hand (no config file).
 *   dptool --pin DIR [--cgroup CG] open|set|del|prune|health|stats|counters|events|cleanup|batch
 * Output is key=value lines (or JSON with -o json); exit 0 ok, 1 failure, 2 usage. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "datapath/datapath.h"

#define MAX_BACKENDS MESH_MAX_BACKENDS_PER_SVC

static const char *const alg_names[MESH_LB__COUNT] = { "random",   "round_robin", "least_request",
						       "weighted", "maglev",	  "peak_ewma" };

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: dptool --pin DIR [--cgroup CG] [--max-services N] [--max-backends N] [-v] "
	    "COMMAND\n"
	    "  open                     load or adopt, attach to --cgroup\n"
	    "  set --name N --vip ADDR:PORT [--alg A] [--backend ADDR:PORT[@W][/SUBSET]]...\n"
	    "      [--split SUBSET=PERCENT]...\n"
	    "      [--consecutive N] [--error-rate F] [--volume N] [--window D] [--open D]\n"
	    "      [--max-open D] [--probes N] [--max-conn N] [--max-ejection PCT]\n"
	    "      [--panic F] [--choices N] [--policy reject|passthrough] [--proto tcp|udp]\n"
	    "      [--hash-key cgroup|process] [--backends-from FILE] [--decay D]\n"
	    "  del --name N | prune [--keep N]... | health --name N --backend ADDR:PORT up|down\n"
	    "  drain --name N --backend ADDR:PORT  close that backend's connections now\n"
	    "  stats [-o json] | counters | events [--wait MS] | cleanup\n"
	    "  batch                    the commands above from stdin, one a line, on one open\n"
	    "                           datapath (its memory kept between them, as in meshd);\n"
	    "                           `done RC` after each\n");
	return 2;
}

static int die(const char *what, int err)
{
	fprintf(stderr, "dptool: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

/* ADDR:PORT or [ADDR6]:PORT, optional @WEIGHT. */
static int parse_ep(const char *s, struct config_endpoint *ep, uint32_t *weight)
{
	char buf[128], *port, *at, *host = buf;

	snprintf(buf, sizeof(buf), "%s", s);
	at = strchr(buf, '@');
	if (at) {
		*at++ = 0;
		if (weight)
			*weight = (uint32_t)strtoul(at, NULL, 10);
	}
	port = strrchr(buf, ':');
	if (!port)
		return -EINVAL;
	*port++ = 0;
	if (*host == '[') {
		host++;
		host[strlen(host) - 1] = 0;
	}
	memset(ep, 0, sizeof(*ep));
	ep->port = (uint16_t)strtoul(port, NULL, 10);
	if (inet_pton(AF_INET, host, &ep->addr.v4) == 1)
		ep->family = AF_INET;
	else if (inet_pton(AF_INET6, host, &ep->addr.v6) == 1)
		ep->family = AF_INET6;
	else
		return -EINVAL;
	return 0;
}

static const char *ep_str(const struct config_endpoint *ep, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(ep->family, &ep->addr, ip, sizeof(ip));
	snprintf(buf, len, ep->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, ep->port);
	return buf;
}

/* 500ms, 2s, 1m, 100us, or plain nanoseconds. */
static uint64_t parse_dur(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (!strcmp(end, "ms"))
		return (uint64_t)(v * 1e6);
	if (!strcmp(end, "us"))
		return (uint64_t)(v * 1e3);
	if (!strcmp(end, "s"))
		return (uint64_t)(v * 1e9);
	if (!strcmp(end, "m"))
		return (uint64_t)(v * 60e9);
	return (uint64_t)v;
}

static int parse_alg(const char *s)
{
	for (int i = 0; i < MESH_LB__COUNT; i++)
		if (!strcmp(s, alg_names[i]))
			return i;
	return -1;
}

/* Defaults are DESIGN.md's, except max_connections (unlimited). */
static void service_defaults(struct config_service *svc)
{
	svc->load_balancer.algorithm = MESH_LB_ROUND_ROBIN;
	svc->load_balancer.choice_count = 2;
	svc->load_balancer.peak_ewma_decay_ns = 10000000000ull;
	svc->load_balancer.panic_threshold = 0.5;
	svc->circuit_breaker = (struct config_circuit_breaker){
		.consecutive_failures = 5,
		.error_rate_threshold = 0.5,
		.request_volume_threshold = 20,
		.window_ns = 10000000000ull,
		.open_duration_ns = 30000000000ull,
		.max_open_duration_ns = 300000000000ull,
		.half_open_probes = 1,
		.max_ejection_percent = 50,
	};
}

/* Backends one per line (ADDR:PORT[@W]) from FILE: services too big for a command line. */
static int backends_from(struct config_service *svc, const char *file, struct config_backend *bes)
{
	char line[160];
	FILE *f = fopen(file, "r");
	int err = f ? 0 : -errno;

	while (!err && f && fgets(line, sizeof(line), f)) {
		struct config_backend *b = &bes[svc->n_backends];

		line[strcspn(line, "\r\n")] = 0;
		if (!line[0])
			continue;
		if (svc->n_backends == MAX_BACKENDS)
			err = -E2BIG;
		else {
			b->weight = 1;
			svc->n_backends++;
			err = parse_ep(line, &b->endpoint, &b->weight);
		}
	}
	if (f)
		fclose(f);
	return err;
}

/* SUBSET=PERCENT (two decimals at most) appended to the service's split. */
static int add_split(struct config_service *svc, const char *arg)
{
	struct config_split *sp = &svc->split[svc->n_split];
	const char *eq = strchr(arg, '=');

	if (!eq || eq == arg || svc->n_split == MESH_SPLIT_MAX)
		return -EINVAL;
	sp->subset = strndup(arg, (size_t)(eq - arg));
	sp->weight = (uint32_t)(atof(eq + 1) * 100 + 0.5);
	svc->n_split++;
	return sp->subset ? 0 : -ENOMEM;
}

static int set_option(struct config_service *svc, int opt, const char *arg,
		      struct config_backend *bes)
{
	struct config_circuit_breaker *cb = &svc->circuit_breaker;
	struct config_load_balancer *lb = &svc->load_balancer;

	switch (opt) {
	case 'n':
		svc->name = (char *)arg;
		return 0;
	case 'V':
		return parse_ep(arg, &svc->vip, NULL);
	case 'a':
		return (int)(lb->algorithm = parse_alg(arg)) < 0 ? -EINVAL : 0;
	case 'b': {
		struct config_backend *b = &bes[svc->n_backends];

		if (svc->n_backends == MAX_BACKENDS)
			return -E2BIG;
		b->weight = 1;
		b->subset = strchr(arg, '/') ? strchr(arg, '/') + 1 : NULL;
		svc->n_backends++;
		return parse_ep(arg, &b->endpoint, &b->weight);
	}
	case 'S':
		return add_split(svc, arg);
	case 'C':
		cb->consecutive_failures = (uint32_t)atoi(arg);
		return 0;
	case 'E':
		cb->error_rate_threshold = atof(arg);
		return 0;
	case 'U':
		cb->request_volume_threshold = (uint32_t)atoi(arg);
		return 0;
	case 'W':
		cb->window_ns = parse_dur(arg);
		return 0;
	case 'O':
		cb->open_duration_ns = parse_dur(arg);
		return 0;
	case 'M':
		cb->max_open_duration_ns = parse_dur(arg);
		return 0;
	case 'P':
		cb->half_open_probes = (uint32_t)atoi(arg);
		return 0;
	case 'X':
		cb->max_connections = (uint32_t)atoi(arg);
		return 0;
	case 'J':
		cb->max_ejection_percent = (uint32_t)atoi(arg);
		return 0;
	case 'T':
		lb->panic_threshold = atof(arg);
		return 0;
	case 'H':
		lb->choice_count = (uint32_t)atoi(arg);
		return 0;
	case 'L':
		lb->no_healthy_backend = !strcmp(arg, "passthrough") ? MESH_NO_HEALTHY_PASSTHROUGH
								     : MESH_NO_HEALTHY_REJECT;
		return 0;
	case 'p':
		svc->protocol = !strcmp(arg, "udp") ? CONFIG_PROTO_UDP : CONFIG_PROTO_TCP;
		return 0;
	case 'K':
		lb->hash_key = !strcmp(arg, "process") ? MESH_HASH_PROCESS : MESH_HASH_CGROUP;
		return 0;
	case 'F':
		return backends_from(svc, arg, bes);
	case 'Y':
		lb->peak_ewma_decay_ns = parse_dur(arg);
		return 0;
	}
	return -EINVAL;
}

static const struct option set_opts[] = {
	{ "name", 1, 0, 'n' },
	{ "vip", 1, 0, 'V' },
	{ "alg", 1, 0, 'a' },
	{ "backend", 1, 0, 'b' },
	{ "consecutive", 1, 0, 'C' },
	{ "error-rate", 1, 0, 'E' },
	{ "volume", 1, 0, 'U' },
	{ "window", 1, 0, 'W' },
	{ "open", 1, 0, 'O' },
	{ "max-open", 1, 0, 'M' },
	{ "probes", 1, 0, 'P' },
	{ "max-conn", 1, 0, 'X' },
	{ "max-ejection", 1, 0, 'J' },
	{ "panic", 1, 0, 'T' },
	{ "choices", 1, 0, 'H' },
	{ "policy", 1, 0, 'L' },
	{ "keep", 1, 0, 'k' },
	{ "wait", 1, 0, 'w' },
	{ "output", 1, 0, 'o' },
	{ "proto", 1, 0, 'p' },
	{ "hash-key", 1, 0, 'K' },
	{ "backends-from", 1, 0, 'F' },
	{ "decay", 1, 0, 'Y' },
	{ "split", 1, 0, 'S' },
	{ 0, 0, 0, 0 },
};

static int cmd_set(struct datapath *dp, int argc, char **argv)
{
	static struct config_backend bes[MAX_BACKENDS];
	static struct config_split splits[MESH_SPLIT_MAX];
	struct config_service svc = { .backends = bes, .split = splits };
	int opt, err;

	service_defaults(&svc);
	while ((opt = getopt_long(argc, argv, "", set_opts, NULL)) != -1)
		if (set_option(&svc, opt, optarg, bes))
			return usage();
	if (!svc.name || !svc.vip.family)
		return usage();
	err = datapath_service_set(dp, &svc);
	while (svc.n_split)
		free(splits[--svc.n_split].subset);
	return err ? die("set", err) : 0;
}

/* --name N --backend ADDR:PORT, the arguments of health and drain. Returns 0 or -EINVAL. */
static int name_backend(int argc, char **argv, const char **name, struct config_endpoint *ep)
{
	int opt;

	while ((opt = getopt_long(argc, argv, "", set_opts, NULL)) != -1) {
		if (opt == 'n')
			*name = optarg;
		else if (opt != 'b' || parse_ep(optarg, ep, NULL))
			return -EINVAL;
	}
	return *name && ep->family ? 0 : -EINVAL;
}

static int cmd_health(struct datapath *dp, int argc, char **argv)
{
	struct config_endpoint ep = { 0 };
	const char *name = NULL;
	int err;

	if (name_backend(argc, argv, &name, &ep) || optind >= argc)
		return usage();
	err = datapath_backend_set_health(dp, name, &ep, !strcmp(argv[optind], "up"));
	return err ? die("health", err) : 0;
}

static int cmd_drain(struct datapath *dp, int argc, char **argv)
{
	struct config_endpoint ep = { 0 };
	const char *name = NULL;
	uint64_t closed = 0;
	int err;

	if (name_backend(argc, argv, &name, &ep))
		return usage();
	err = datapath_drain_backend(dp, name, &ep, &closed);
	if (err)
		return die("drain", err);
	printf("closed=%llu\n", (unsigned long long)closed);
	return 0;
}

struct out {
	bool json;
	int n;
};

static void print_svc(const struct datapath_service_stats *s, void *arg)
{
	struct out *o = arg;
	char vip[80];

	ep_str(&s->vip, vip, sizeof(vip));
	printf(
	    o->json
		? "%s{\"kind\":\"service\",\"name\":\"%s\",\"vip\":\"%s\",\"id\":%u,"
		  "\"algorithm\":\"%s\",\"backends\":%u,\"active\":%lld,\"redirected\":%llu,"
		  "\"passthrough\":%llu,\"panic\":%llu,\"bytes_sent\":%llu,\"bytes_received\":%llu,"
		  "\"protocol\":\"%s\",\"datagrams_sent\":%llu,\"datagrams_received\":%llu,"
		  "\"drained\":%llu"
		: "%sservice name=%s vip=%s id=%u algorithm=%s backends=%u active=%lld "
		  "redirected=%llu passthrough=%llu panic=%llu bytes_sent=%llu "
		  "bytes_received=%llu protocol=%s datagrams_sent=%llu datagrams_received=%llu "
		  "drained=%llu",
	    o->json && o->n++ ? "," : "", s->service, vip, s->service_id,
	    alg_names[s->algorithm % MESH_LB__COUNT], s->n_backends, (long long)s->active,
	    (unsigned long long)s->redirected, (unsigned long long)s->passthrough,
	    (unsigned long long)s->panic, (unsigned long long)s->bytes_sent,
	    (unsigned long long)s->bytes_received, s->protocol == IPPROTO_UDP ? "udp" : "tcp",
	    (unsigned long long)s->datagrams_sent, (unsigned long long)s->datagrams_received,
	    (unsigned long long)s->drained);
	for (int r = 0; r < MESH_REJECT__COUNT; r++)
		printf(o->json ? ",\"rejects_%s\":%llu" : " rejects_%s=%llu",
		       datapath_reject_reason_name(r), (unsigned long long)s->rejects[r]);
	printf(o->json ? "}" : "\n");
}

static void print_be(const struct datapath_backend_stats *b, void *arg)
{
	struct out *o = arg;
	char addr[80];

	ep_str(&b->backend, addr, sizeof(addr));
	printf(o->json
		   ? "%s{\"kind\":\"backend\",\"service\":\"%s\",\"addr\":\"%s\",\"id\":%u,"
		     "\"weight\":%u,\"healthy\":%d,\"circuit\":\"%s\",\"active\":%llu,"
		     "\"selected\":%llu,\"ok\":%llu,\"failed\":%llu,\"probes\":%llu,\"trips\":%u,"
		     "\"consecutive\":%u,\"to_closed\":%llu,\"to_open\":%llu,"
		     "\"to_half_open\":%llu,\"open_until_ns\":%llu,\"latency_ns\":%llu,"
		     "\"drained\":%llu}"
		   : "%sbackend service=%s addr=%s id=%u weight=%u healthy=%d circuit=%s "
		     "active=%llu selected=%llu ok=%llu failed=%llu probes=%llu trips=%u "
		     "consecutive=%u to_closed=%llu to_open=%llu to_half_open=%llu "
		     "open_until_ns=%llu latency_ns=%llu drained=%llu\n",
	       o->json && o->n++ ? "," : "", b->service, addr, b->backend_id, b->weight, b->healthy,
	       datapath_circuit_name((int)b->circuit), (unsigned long long)b->active,
	       (unsigned long long)b->selected, (unsigned long long)b->conn_ok,
	       (unsigned long long)b->conn_failed, (unsigned long long)b->probes, b->trips,
	       b->consecutive_failures, (unsigned long long)b->transitions_to[0],
	       (unsigned long long)b->transitions_to[1], (unsigned long long)b->transitions_to[2],
	       (unsigned long long)b->open_until_ns, (unsigned long long)b->latency_ewma_ns,
	       (unsigned long long)b->drained);
}

static int cmd_stats(struct datapath *dp, int argc, char **argv)
{
	struct out o = { .json = argc > 2 && !strcmp(argv[1], "-o") && !strcmp(argv[2], "json") };
	int err;

	if (o.json)
		printf("[");
	fflush(stdout);
	err = datapath_stats(dp, print_svc, print_be, &o);
	if (o.json)
		printf("]\n");
	return err ? die("stats", err) : 0;
}

static int cmd_counters(struct datapath *dp)
{
	uint64_t c[MESH_CNT__COUNT];
	int n = datapath_counters(dp, c, MESH_CNT__COUNT);

	if (n < 0)
		return die("counters", n);
	for (int i = 0; i < n; i++)
		printf("%s=%llu\n", datapath_counter_name(i), (unsigned long long)c[i]);
	return 0;
}

static void print_event(const struct datapath_event *ev, void *arg)
{
	char addr[80];

	if (ev->type == MESH_EV_CIRCUIT)
		printf("event=circuit service=%s backend=%s from=%s to=%s\n", ev->service,
		       ep_str(&ev->backend, addr, sizeof(addr)), datapath_circuit_name(ev->from),
		       datapath_circuit_name(ev->to));
	else
		printf("event=reject service=%s reason=%s\n", ev->service,
		       datapath_reject_reason_name(ev->reason));
}

static int cmd_events(struct datapath *dp, int argc, char **argv)
{
	int wait_ms = argc > 2 && !strcmp(argv[1], "--wait") ? atoi(argv[2]) : 0;
	struct pollfd p = { .fd = datapath_event_fd(dp), .events = POLLIN };

	if (p.fd < 0)
		return die("events", p.fd);
	if (wait_ms)
		poll(&p, 1, wait_ms);
	return datapath_drain_events(dp, print_event, NULL) ? 1 : 0;
}

static int run(struct datapath *dp, int argc, char **argv);

/* Runs each line of stdin as a command on `dp`, answering `done RC` (flushed) after each. */
static int cmd_batch(struct datapath *dp)
{
	char line[4096], *args[128], *save;
	int n, rc = 0;

	while (fgets(line, sizeof(line), stdin)) {
		n = 0;
		for (char *w = strtok_r(line, " \t\r\n", &save); w && n < 127;
		     w = strtok_r(NULL, " \t\r\n", &save))
			args[n++] = w;
		args[n] = NULL;
		if (!n)
			continue;
		rc = strcmp(args[0], "batch") ? run(dp, n, args) : 2;
		printf("done %d\n", rc);
		fflush(stdout);
	}
	return rc;
}

static int run(struct datapath *dp, int argc, char **argv)
{
	const char *cmd = argv[0];

	optind = 1;
	if (!strcmp(cmd, "open")) {
		printf("adopted=%d\n", datapath_adopted(dp));
		return 0;
	}
	if (!strcmp(cmd, "set"))
		return cmd_set(dp, argc, argv);
	if (!strcmp(cmd, "del")) {
		int err = argc > 2 ? datapath_service_del(dp, argv[2]) : -EINVAL;

		return err ? die("del", err) : 0;
	}
	if (!strcmp(cmd, "prune")) {
		const char *keep[64];
		size_t n = 0;

		for (int i = 1; i + 1 < argc && n < 64; i += 2)
			keep[n++] = argv[i + 1];
		return datapath_service_prune(dp, keep, n) ? 1 : 0;
	}
	if (!strcmp(cmd, "health"))
		return cmd_health(dp, argc, argv);
	if (!strcmp(cmd, "drain"))
		return cmd_drain(dp, argc, argv);
	if (!strcmp(cmd, "stats"))
		return cmd_stats(dp, argc, argv);
	if (!strcmp(cmd, "counters"))
		return cmd_counters(dp);
	if (!strcmp(cmd, "events"))
		return cmd_events(dp, argc, argv);
	if (!strcmp(cmd, "batch"))
		return cmd_batch(dp);
	return usage();
}

int main(int argc, char **argv)
{
	struct datapath_opts opts = { 0 };
	struct datapath *dp;
	int i = 1, rc;
	bool verbose = false;

	for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
		if (!strcmp(argv[i], "--pin"))
			opts.pin_path = argv[i + 1];
		else if (!strcmp(argv[i], "--cgroup"))
			opts.cgroup = argv[i + 1];
		else if (!strcmp(argv[i], "--max-services"))
			opts.max_services = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--max-backends"))
			opts.max_backends = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "-v"))
			verbose = true, i--;
		else
			return usage();
	}
	if (!opts.pin_path || i >= argc)
		return usage();
	log_setup(verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN, LOG_FORMAT_LOGFMT, 2);
	if (!strcmp(argv[i], "cleanup")) {
		rc = datapath_cleanup(opts.pin_path);
		return rc ? die("cleanup", rc) : 0;
	}
	dp = datapath_open(&opts);
	if (!dp)
		return die("open", errno);
	rc = run(dp, argc - i, argv + i);
	datapath_close(dp);
	return rc;
}
