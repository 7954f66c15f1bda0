/* Test tool: runs the Consul watcher (user/consul) on its own and prints one line per query
 * result, so e2e tests can exercise the real client against the emulator without meshd:
 *   consul_watch --address URL [--dc DC] [--token-file F] [--wait 2s] [--seconds N] [--rate 1s]
 *                [--register ID:NAME:IPV4:PORT]... [--deregister ID]... SERVICE...
 * Line format: `update service=web err=0 status=200 index=13 backends=127.0.0.1:22001/1,...`. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "discovery/consul/consul.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void print_update(struct consul_update *u, void *arg)
{
	char ip[INET6_ADDRSTRLEN];
	size_t i;

	pthread_mutex_lock(&out_lock);
	printf("update service=%s err=%d status=%ld index=%llu backends=", u->service, u->err,
	       u->status, (unsigned long long)u->index);
	for (i = 0; i < u->n_backends; i++) {
		inet_ntop(u->backends[i].endpoint.family, &u->backends[i].endpoint.addr, ip,
			  sizeof(ip));
		printf("%s%s:%u/%u", i ? "," : "", ip, u->backends[i].endpoint.port,
		       u->backends[i].weight);
	}
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
	consul_update_free(u);
}

/* Converts "2s"/"500ms" to ns; only the units the tests use. */
static uint64_t parse_wait(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (strcmp(end, "ms") == 0)
		return v * 1000000ull;
	return v * 1000000000ull;
}

/* ID:NAME:IPV4:PORT, parsed in place (the strings point into `arg`). */
static int parse_reg(char *arg, struct consul_registration *r)
{
	char *name = strchr(arg, ':'), *ip = name ? strchr(name + 1, ':') : NULL;
	char *port = ip ? strchr(ip + 1, ':') : NULL;

	if (!port)
		return -EINVAL;
	*name++ = *ip++ = *port++ = '\0';
	memset(r, 0, sizeof(*r)); /* a tcp check every 10 s (the defaults) */
	r->id = arg;
	r->name = name;
	r->endpoint.family = AF_INET;
	r->endpoint.port = (uint16_t)atoi(port);
	r->deregister_critical_after_ns = 60000000000ull;
	return inet_pton(AF_INET, ip, &r->endpoint.addr.v4) == 1 ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "address", required_argument, NULL, 'a' },
		{ "dc", required_argument, NULL, 'd' },
		{ "token-file", required_argument, NULL, 't' },
		{ "wait", required_argument, NULL, 'w' },
		{ "seconds", required_argument, NULL, 's' },
		{ "register", required_argument, NULL, 'r' },
		{ "rate", required_argument, NULL, 'R' },
		{ "deregister", required_argument, NULL, 'D' },
		{ 0 },
	};
	struct consul_watch_opts o = { .wait_ns = 2000000000ull };
	struct consul_registration regs[8];
	const char *deregs[8];
	struct consul_watch *w;
	char *token = NULL;
	int c, seconds = 10;

	log_setup(LOG_LEVEL_DEBUG, LOG_FORMAT_LOGFMT, 2);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			o.address = optarg;
			break;
		case 'd':
			o.datacenter = optarg;
			break;
		case 't':
			token = consul_read_token(optarg);
			if (!token) {
				fprintf(stderr, "cannot read token file: %s\n", strerror(errno));
				return 1;
			}
			break;
		case 'w':
			o.wait_ns = parse_wait(optarg);
			break;
		case 's':
			seconds = atoi(optarg);
			break;
		case 'R':
			o.rate_period_ns = parse_wait(optarg);
			break;
		case 'r':
			if (o.n_regs == 8 || parse_reg(optarg, &regs[o.n_regs]))
				return 2;
			o.n_regs++;
			break;
		case 'D':
			if (o.n_deregs == 8)
				return 2;
			deregs[o.n_deregs++] = optarg;
			break;
		default:
			return 2;
		}
	}
	if (!o.address) {
		fprintf(stderr, "usage: consul_watch --address URL [options] SERVICE...\n");
		return 2;
	}
	o.token = token;
	o.regs = regs;
	o.deregs = deregs;
	o.services = (const char *const *)&argv[optind];
	o.n_services = (size_t)(argc - optind);
	w = consul_watch_new(&o, print_update, NULL);
	if (!w) {
		fprintf(stderr, "cannot start watcher: %s\n", strerror(errno));
		return 1;
	}
	sleep((unsigned)seconds);
	consul_watch_free(w);
	free(token);
	return 0;
}
