/* On-disk discovery state: a small line format, written atomically and parsed strictly.
 *
 *   meshd-discovery-state 3
 *   service api consul 120 2     name, source, source index, backend count
 *   backend 127.0.0.1 8081 1 0   address, port, weight, mesh port (0: mtls.inbound_listen's)
 *   backend ::1 8082 10 15009
 *   end 1                        number of services: a truncated file never parses
 *
 * Version 4, written only when some set needs it, adds what Consul-driven sets carry: the
 * split's entry count to `service` lines, then optionally the VIP address and port of a service
 * the source defined itself (catalog discovery); the subset labels to `backend` lines that have
 * some; and the split after the backends (a split driven from Consul's config entries,
 * docs/split.md):
 *
 *   service api consul 120 2 2
 *   backend 127.0.0.1 8081 1 0 v1
 *   backend 127.0.0.1 8082 1 0 v2,canary
 *   split v1 9000                subset, weight in 0.01%
 *   split v2 1000
 *   service shop consul 42 1 0 127.77.100.20 80
 *   backend 127.0.0.1 8090 1 0
 *
 * A file without any of them stays version 3, so a meshd that knows version 3 still reads it.
 * Version 1 had no source field (every set came from Consul), version 2 no mesh port; all are
 * still read. Anything else
 * (another magic, version, count or a stray line) makes the whole file invalid. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "discovery/state.h"

#define STATE_MAGIC "meshd-discovery-state"
#define STATE_VERSION 3	     /* sets without subsets, split or VIP */
#define STATE_VERSION_EXT 4  /* ... with some */
#define STATE_LABELS_MAX 200 /* a backend's subset labels, in a state file */
#define STATE_MAX_FILE (16u << 20)
#define STATE_MAX_SERVICES 65536

/* ---- format --------------------------------------------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		char *np = n < 0 ? NULL : realloc(b->p, b->cap * 2 + (size_t)n + 1);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = b->cap * 2 + (size_t)n + 1;
	}
}

static void format_backend(struct sbuf *b, const struct config_backend *be)
{
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(be->endpoint.family, &be->endpoint.addr, ip, sizeof(ip));
	sb_printf(b, "backend %s %u %u %u%s%s\n", ip, be->endpoint.port, be->weight, be->mesh_port,
		  be->subset ? " " : "", be->subset ? be->subset : "");
}

/* Whether any set needs version 4 (subsets, a split or a VIP). */
static bool needs_version_ext(const struct state_saved *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->svcs[i].n_split || s->svcs[i].has_vip)
			return true;
		for (size_t j = 0; j < s->svcs[i].n_backends; j++)
			if (s->svcs[i].backends[j].subset)
				return true;
	}
	return false;
}

char *state_format(const struct state_saved *s, size_t *len)
{
	struct sbuf b = { .cap = 256 };
	size_t i, j;

	b.p = malloc(b.cap);
	if (!b.p)
		return NULL;
	b.p[0] = '\0';
	bool v4 = needs_version_ext(s);

	sb_printf(&b, "%s %d\n", STATE_MAGIC, v4 ? STATE_VERSION_EXT : STATE_VERSION);
	for (i = 0; i < s->n; i++) {
		const struct state_saved_service *e = &s->svcs[i];
		char ip[INET6_ADDRSTRLEN] = "";

		if (e->has_vip)
			inet_ntop(e->vip.family, &e->vip.addr, ip, sizeof(ip));
		sb_printf(&b, "service %s %s %llu %zu", e->name, e->source,
			  (unsigned long long)e->index, e->n_backends);
		if (v4)
			sb_printf(&b, " %zu", e->n_split);
		if (e->has_vip)
			sb_printf(&b, " %s %u", ip, e->vip.port);
		sb_printf(&b, "\n");
		for (j = 0; j < e->n_backends; j++)
			format_backend(&b, &e->backends[j]);
		for (j = 0; j < e->n_split; j++)
			sb_printf(&b, "split %s %u\n", e->split[j].subset, e->split[j].weight);
	}
	sb_printf(&b, "end %zu\n", s->n);
	if (b.oom) {
		free(b.p);
		errno = ENOMEM;
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* ---- parse ---------------------------------------------------------------------------------- */

struct cursor {
	const char *buf;
	size_t len, pos;
	unsigned line;
	char text[256];
	char *f[8];
	int nf;
};

/* Splits the next line into fields. Returns false at end of input, on a line that is too long,
 * unterminated or holds a NUL. */
static bool next_line(struct cursor *c)
{
	size_t n = 0;
	char *save, *tok;

	if (c->pos >= c->len)
		return false;
	while (c->pos + n < c->len && c->buf[c->pos + n] != '\n') {
		if (c->buf[c->pos + n] == '\0' || n + 1 >= sizeof(c->text))
			return false;
		n++;
	}
	if (c->pos + n >= c->len)
		return false; /* no final newline: truncated */
	memcpy(c->text, c->buf + c->pos, n);
	c->text[n] = '\0';
	c->pos += n + 1;
	c->line++;
	c->nf = 0;
	for (tok = strtok_r(c->text, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (c->nf == (int)(sizeof(c->f) / sizeof(c->f[0])))
			return false;
		c->f[c->nf++] = tok;
	}
	return true;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

/* Service names are DNS labels (DESIGN.md). */
static bool valid_name(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* Comma-separated DNS labels (a backend's subsets). */
static bool valid_labels(const char *s)
{
	char buf[STATE_LABELS_MAX + 1], *save = NULL, *l;
	size_t n = strlen(s);

	if (!n || n > STATE_LABELS_MAX || s[0] == ',' || s[n - 1] == ',' || strstr(s, ",,"))
		return false;
	memcpy(buf, s, n + 1);
	for (l = strtok_r(buf, ",", &save); l; l = strtok_r(NULL, ",", &save))
		if (!valid_name(l))
			return false;
	return true;
}

static bool parse_backend(struct cursor *c, int version, struct config_backend *b)
{
	uint64_t port, weight, mesh_port = 0;
	int nf = version >= 3 ? 5 : 4; /* without subset labels */

	memset(b, 0, sizeof(*b));
	if (!next_line(c) || (c->nf != nf && !(version >= 4 && c->nf == nf + 1)) ||
	    strcmp(c->f[0], "backend") != 0)
		return false;
	if (c->nf == nf + 1 && (!valid_labels(c->f[nf]) || !(b->subset = strdup(c->f[nf]))))
		return false;
	if (inet_pton(AF_INET, c->f[1], &b->endpoint.addr.v4) == 1)
		b->endpoint.family = AF_INET;
	else if (inet_pton(AF_INET6, c->f[1], &b->endpoint.addr.v6) == 1)
		b->endpoint.family = AF_INET6;
	else
		return false;
	if (!parse_u64(c->f[2], 65535, &port) || port == 0 || !parse_u64(c->f[3], 65535, &weight) ||
	    weight == 0 || (version >= 3 && !parse_u64(c->f[4], 65535, &mesh_port)))
		return false;
	b->mesh_port = (uint16_t)mesh_port;
	b->endpoint.port = (uint16_t)port;
	b->weight = (uint32_t)weight;
	return true;
}

/* The `split` lines of a service (version 4). */
static int parse_split(struct cursor *c, struct state_saved_service *s, size_t n)
{
	uint64_t w;

	s->split = n ? calloc(n, sizeof(*s->split)) : NULL;
	if (n && !s->split)
		return -ENOMEM;
	for (; s->n_split < n; s->n_split++) {
		if (!next_line(c) || c->nf != 3 || strcmp(c->f[0], "split") != 0 ||
		    !valid_name(c->f[1]) || !parse_u64(c->f[2], MESH_SPLIT_SCALE, &w))
			return -EINVAL;
		s->split[s->n_split].weight = (uint32_t)w;
		if (!(s->split[s->n_split].subset = strdup(c->f[1])))
			return -ENOMEM;
	}
	return 0;
}

/* Parses one `service` line (already split in `c`) and its backend lines into `s`. Version 1
 * lines have no source field. */
static int parse_service(struct cursor *c, int version, struct state_saved *out,
			 struct state_saved_service *s)
{
	int f = version == 1 ? 2 : 3; /* field of the index */
	uint64_t n, n_split = 0, port;
	size_t i;

	if (version >= STATE_VERSION_EXT && c->nf == f + 5) { /* with the VIP */
		s->vip.family = inet_pton(AF_INET, c->f[f + 3], &s->vip.addr.v4) == 1	 ? AF_INET
				: inet_pton(AF_INET6, c->f[f + 3], &s->vip.addr.v6) == 1 ? AF_INET6
											 : 0;
		if (!s->vip.family || !parse_u64(c->f[f + 4], 65535, &port) || !port)
			return -EINVAL;
		s->vip.port = (uint16_t)port;
		s->has_vip = true;
		c->nf -= 2;
	}
	if (c->nf != f + 2 + (version >= STATE_VERSION_EXT) || !valid_name(c->f[1]) ||
	    state_saved_find(out, c->f[1]) ||
	    (version >= STATE_VERSION_EXT && !parse_u64(c->f[f + 2], MESH_SPLIT_MAX, &n_split)) ||
	    (version > 1 && (!valid_name(c->f[2]) || strlen(c->f[2]) >= STATE_SOURCE_MAX)) ||
	    !parse_u64(c->f[f], UINT64_MAX, &s->index) ||
	    !parse_u64(c->f[f + 1], STATE_MAX_BACKENDS, &n))
		return -EINVAL;
	snprintf(s->source, sizeof(s->source), "%s", version == 1 ? "consul" : c->f[2]);
	s->name = strdup(c->f[1]);
	s->backends = calloc(n ? n : 1, sizeof(*s->backends));
	if (!s->name || !s->backends)
		return -ENOMEM;
	for (i = 0; i < n; i++, s->n_backends++)
		if (!parse_backend(c, version, &s->backends[i])) {
			free(s->backends[i].subset);
			return -EINVAL;
		}
	return parse_split(c, s, (size_t)n_split);
}

static int parse_body(struct cursor *c, int version, struct state_saved *out)
{
	struct state_saved_service *ns;
	uint64_t count;
	int err;

	while (next_line(c)) {
		if (c->nf == 2 && strcmp(c->f[0], "end") == 0) {
			if (!parse_u64(c->f[1], STATE_MAX_SERVICES, &count) || count != out->n)
				return -EINVAL;
			return c->pos == c->len ? 0 : -EINVAL;
		}
		if (c->nf < 1 || strcmp(c->f[0], "service") != 0 || out->n >= STATE_MAX_SERVICES)
			return -EINVAL;
		ns = realloc(out->svcs, (out->n + 1) * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		out->svcs = ns;
		memset(&ns[out->n], 0, sizeof(*ns));
		out->n++;
		err = parse_service(c, version, out, &ns[out->n - 1]);
		if (err)
			return err;
	}
	return -EINVAL; /* no `end` line: truncated */
}

int state_parse(const char *buf, size_t len, struct state_saved *out, char *why, size_t why_len)
{
	struct cursor c = { .buf = buf, .len = len };
	int err = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!next_line(&c) || c.nf != 2 || strcmp(c.f[0], STATE_MAGIC) != 0) {
		snprintf(why, why_len, "not a meshd discovery state file");
		return -EINVAL;
	}
	if (strcmp(c.f[1], "1") != 0 && strcmp(c.f[1], "2") != 0 && strcmp(c.f[1], "3") != 0 &&
	    strcmp(c.f[1], "4") != 0) {
		snprintf(why, why_len, "unsupported state version %s", c.f[1]);
		return -EINVAL;
	}
	err = parse_body(&c, c.f[1][0] - '0', out);
	if (err) {
		snprintf(why, why_len, "%s at line %u",
			 err == -ENOMEM ? "out of memory" : "corrupt", c.line);
		state_saved_free(out);
	}
	return err;
}

void state_saved_free(struct state_saved *s)
{
	size_t i;

	for (i = 0; i < s->n; i++) {
		free(s->svcs[i].name);
		state_backends_free(s->svcs[i].backends, s->svcs[i].n_backends);
		state_split_free(s->svcs[i].split, s->svcs[i].n_split);
	}
	free(s->svcs);
	s->svcs = NULL;
	s->n = 0;
}

const struct state_saved_service *state_saved_find(const struct state_saved *s, const char *name)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (s->svcs[i].name && strcmp(s->svcs[i].name, name) == 0)
			return &s->svcs[i];
	return NULL;
}

/* ---- files ---------------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

int state_file_write(const char *dir, const char *name, const char *text, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd, err;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	err = write_all(fd, text, len);
	if (!err && fchmod(fd, 0600))
		err = -errno;
	if (!err && fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	return fsync_dir(dir);
}

int state_save(const char *dir, const struct state_saved *t)
{
	size_t len;
	char *text = state_format(t, &len);
	int err;

	if (!text)
		return -ENOMEM;
	err = state_file_write(dir, STATE_FILE_NAME, text, len);
	free(text);
	return err;
}

int state_file_read(const char *dir, const char *name, size_t max, char **text, size_t *len,
		    char *why, size_t why_len)
{
	char path[PATH_MAX];
	char *buf = NULL;
	struct stat st;
	ssize_t n;
	int fd, err;

	*text = NULL;
	*len = 0;
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer; the regular-file check
	 * comes after the open, so the open itself must never block. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ELOOP)
			snprintf(why, why_len, "a symbolic link");
		return errno == ELOOP ? -EINVAL : -errno;
	}
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		snprintf(why, why_len, "not a regular file or larger than %zu bytes", max);
		err = -EINVAL;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	err = buf ? 0 : -ENOMEM;
	n = buf ? pread(fd, buf, (size_t)st.st_size, 0) : -1;
	if (!err && n != st.st_size) {
		snprintf(why, why_len, "short read");
		err = n < 0 ? -errno : -EINVAL;
	}
	if (!err) {
		buf[n] = '\0';
		*text = buf;
		*len = (size_t)n;
		buf = NULL;
	}
out:
	free(buf);
	close(fd);
	return err;
}

int state_load(const char *dir, struct state_saved *out, char *why, size_t why_len)
{
	size_t len;
	char *buf;
	int err;

	memset(out, 0, sizeof(*out));
	err = state_file_read(dir, STATE_FILE_NAME, STATE_MAX_FILE, &buf, &len, why, why_len);
	if (!err)
		err = state_parse(buf, len, out, why, why_len);
	free(buf);
	return err;
}
