/* Test server for the HTTP module (common/http.c) on the real event loop, so e2e tests can probe
 * limits, timeouts, pipelining and unix-socket handling without a daemon.
 *   http_serve (--tcp IP:PORT | --unix PATH) [--timeout-ms N] [--max-conns N]
 * Routes: GET /hello -> "hello"; POST /echo -> the body; GET /big?bytes=N -> N bytes of 'x';
 * GET /stream?chunks=N -> N streamed pieces "piece <i>\n" of 100,000 bytes each (chunked);
 * anything else 404. Prints "listening" once ready; SIGTERM stops it cleanly. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"

static struct evloop *loop;

struct stream {
	int next, n;
};

static int stream_produce(void *state, struct strbuf *body)
{
	struct stream *st = state;

	strbuf_printf(body, "piece %d\n", st->next);
	while (body->len < 99999)
		strbuf_putc(body, '.');
	strbuf_putc(body, '\n');
	return ++st->next < st->n ? 1 : 0;
}

static void stream_release(void *state)
{
	free(state);
}

static void handle(const struct http_request *req, struct http_response *resp, void *arg)
{
	char v[32];

	if (!strcmp(req->path, "/hello") && req->method != HTTP_METHOD_POST) {
		strbuf_puts(&resp->body, "hello\n");
	} else if (!strcmp(req->path, "/echo") && req->method == HTTP_METHOD_POST) {
		strbuf_append(&resp->body, req->body, req->body_len);
	} else if (!strcmp(req->path, "/big") &&
		   !http_query_get(req->query, "bytes", v, sizeof(v))) {
		size_t n = strtoul(v, NULL, 10);

		if (!strbuf_reserve(&resp->body, n)) {
			memset(resp->body.data, 'x', n);
			resp->body.len = n;
		}
	} else if (!strcmp(req->path, "/stream") &&
		   !http_query_get(req->query, "chunks", v, sizeof(v))) {
		struct stream *st = calloc(1, sizeof(*st));

		if (!st)
			return;
		st->n = atoi(v);
		resp->produce = stream_produce;
		resp->release = stream_release;
		resp->state = st;
	} else {
		resp->status = 404;
		strbuf_puts(&resp->body, "not found\n");
	}
}

static int parse_tcp(const char *s, struct config_endpoint *ep)
{
	char ip[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, (size_t)(colon - s));
	ip[colon - s] = '\0';
	ep->family = AF_INET;
	ep->port = (uint16_t)atoi(colon + 1);
	return inet_pton(AF_INET, ip, &ep->addr.v4) == 1 ? 0 : -EINVAL;
}

static void on_term(int sig)
{
	evloop_stop(loop);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tcp", required_argument, NULL, 't' },
		{ "unix", required_argument, NULL, 'u' },
		{ "timeout-ms", required_argument, NULL, 'T' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ 0 },
	};
	struct http_server_opts o = { .name = "test" };
	const char *tcp = NULL, *path = NULL;
	struct config_endpoint ep;
	struct http_server *srv;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 't')
			tcp = optarg;
		else if (c == 'u')
			path = optarg;
		else if (c == 'T')
			o.timeout_ms = (unsigned)atoi(optarg);
		else if (c == 'm')
			o.max_conns = (unsigned)atoi(optarg);
		else
			return 2;
	}
	loop = evloop_new();
	if (!loop || (!tcp && !path) || (tcp && parse_tcp(tcp, &ep)))
		return 2;
	srv = tcp ? http_server_listen_tcp(loop, &ep, &o, handle, NULL)
		  : http_server_listen_unix(loop, path, &o, handle, NULL);
	if (!srv) {
		fprintf(stderr, "http_serve: listen: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGTERM, on_term);
	printf("listening\n");
	fflush(stdout);
	evloop_run(loop);
	http_server_free(srv);
	evloop_free(loop);
	return 0;
}
