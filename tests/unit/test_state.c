/* Unit tests for the persisted discovery state: text round trip (version 2 with the source of
 * each set, version 4 with subsets and a split; version 1 still read), strict rejection of corrupt, truncated and foreign files,
 * atomic save (mode 0600, no temp file left), load that never blocks (a FIFO is refused). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "discovery/state.h"
#include "test.h"

static struct config_backend be(int family, const char *addr, uint16_t port, uint32_t weight)
{
	struct config_backend b = { .weight = weight };

	b.endpoint.family = family;
	inet_pton(family, addr, &b.endpoint.addr);
	b.endpoint.port = port;
	return b;
}

/* Two discovered sets (one with no backends). */
static void make_saved(struct state_saved *t)
{
	static struct config_backend b[2];

	b[0] = be(AF_INET, "127.0.0.1", 22001, 1);
	b[1] = be(AF_INET6, "::1", 22002, 10);
	b[1].mesh_port = 15009;
	t->svcs = calloc(2, sizeof(*t->svcs));
	t->n = 2;
	t->svcs[0] = (struct state_saved_service){
		.name = "api", .index = 120, .backends = b, .n_backends = 2
	};
	snprintf(t->svcs[0].source, sizeof(t->svcs[0].source), "consul");
	t->svcs[1] = (struct state_saved_service){ .name = "web", .index = 7, .backends = b };
	snprintf(t->svcs[1].source, sizeof(t->svcs[1].source), "dns");
}

static void saved_release(struct state_saved *t)
{
	free(t->svcs); /* names and backends are static here */
	t->svcs = NULL;
	t->n = 0;
}

static int parse(const char *text, struct state_saved *out)
{
	char why[128];

	return state_parse(text, strlen(text), out, why, sizeof(why));
}

TEST(format_then_parse_round_trips_with_sources)
{
	struct state_saved t = { 0 }, s;
	const struct state_saved_service *api;
	char why[128];
	size_t len;
	char *text;

	make_saved(&t);
	text = state_format(&t, &len);
	CHECK(text != NULL);
	CHECK_CONTAINS(text, "meshd-discovery-state 3\nservice api consul 120 2\n"
			     "backend 127.0.0.1 22001 1 0\nbackend ::1 22002 10 15009\n");
	CHECK_CONTAINS(text, "service web dns 7 0\nend 2\n");
	CHECK_INT_EQ(state_parse(text, len, &s, why, sizeof(why)), 0);
	CHECK_INT_EQ(s.n, 2);
	api = state_saved_find(&s, "api");
	CHECK(api && api->index == 120 && api->n_backends == 2);
	if (api) {
		CHECK(state_backends_equal(api->backends, 2, t.svcs[0].backends, 2));
		CHECK_INT_EQ(api->backends[1].mesh_port, 15009);
		CHECK_STR_EQ(api->source, "consul");
	}
	CHECK(state_saved_find(&s, "web") && state_saved_find(&s, "web")->n_backends == 0);
	CHECK_STR_EQ(state_saved_find(&s, "web")->source, "dns");
	state_saved_free(&s);
	free(text);
	saved_release(&t);
}

TEST(version_2_files_have_no_mesh_port)
{
	const char text[] = "meshd-discovery-state 2\nservice api consul 5 1\n"
			    "backend 127.0.0.1 1 1\nend 1\n";
	struct state_saved s;

	CHECK_INT_EQ(parse(text, &s), 0);
	CHECK_INT_EQ(s.n, 1);
	CHECK_INT_EQ(s.svcs[0].backends[0].mesh_port, 0);
	state_saved_free(&s);
}

TEST(version_1_files_are_consul_sets)
{
	const char text[] = "meshd-discovery-state 1\nservice api 120 1\nbackend 127.0.0.1 1 1\n"
			    "end 1\n";
	struct state_saved s;

	CHECK_INT_EQ(parse(text, &s), 0);
	CHECK_INT_EQ(s.n, 1);
	CHECK_STR_EQ(s.svcs[0].source, "consul");
	CHECK_INT_EQ(s.svcs[0].index, 120);
	state_saved_free(&s);
}

/* A service the source defined (catalog) keeps its VIP; the file is version 4 only then. */
TEST(defined_service_vip_round_trips_as_version_4)
{
	struct state_saved t = { 0 }, s;
	const struct state_saved_service *api, *web;
	char *text;
	size_t len;

	make_saved(&t);
	text = state_format(&t, &len);
	CHECK(text && !strncmp(text, "meshd-discovery-state 3\n", 24));
	free(text);
	t.svcs[0].has_vip = true;
	t.svcs[0].vip = be(AF_INET, "127.77.9.1", 80, 1).endpoint;
	text = state_format(&t, &len);
	CHECK(text && !strncmp(text, "meshd-discovery-state 4\n", 24));
	CHECK(strstr(text, "service api consul 120 2 0 127.77.9.1 80\n") != NULL);
	CHECK_INT_EQ(parse(text, &s), 0);
	api = state_saved_find(&s, "api");
	web = state_saved_find(&s, "web");
	CHECK(api && api->has_vip && api->vip.port == 80 && api->vip.family == AF_INET &&
	      api->n_backends == 2);
	CHECK(web && !web->has_vip);
	state_saved_free(&s);
	free(text);
	saved_release(&t);
	CHECK_INT_EQ(
	    parse("meshd-discovery-state 4\nservice api consul 1 0 0 127.0.0.1 0\nend 1\n", &s),
	    -EINVAL); /* port 0 */
	CHECK_INT_EQ(
	    parse("meshd-discovery-state 3\nservice api consul 1 0 127.0.0.1 80\nend 1\n", &s),
	    -EINVAL); /* a VIP needs version 4 */
}

TEST(parse_rejects_foreign_and_other_versions)
{
	struct state_saved s;
	char why[128] = "";

	CHECK_INT_EQ(state_parse("{\"json\":1}\n", 11, &s, why, sizeof(why)), -EINVAL);
	CHECK_STR_EQ(why, "not a meshd discovery state file");
	CHECK_INT_EQ(state_parse("meshd-discovery-state 5\nend 0\n", 30, &s, why, sizeof(why)),
		     -EINVAL);
	CHECK_STR_EQ(why, "unsupported state version 5");
	CHECK_INT_EQ(state_parse("", 0, &s, why, sizeof(why)), -EINVAL);
}

TEST(parse_rejects_truncated_and_corrupt)
{
	static const char *const bad[] = {
		"meshd-discovery-state 1\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend 127.0.0.1 1 1\nend 1",
		"meshd-discovery-state 1\nservice api 1 2\nbackend 127.0.0.1 1 1\nend 1\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend 127.0.0.1 1 1\nend 2\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend 127.0.0.1 1 1\nend 1\nx\n",
		"meshd-discovery-state 1\nservice API 1 0\nend 1\n",
		"meshd-discovery-state 1\nservice api -1 0\nend 1\n",
		"meshd-discovery-state 1\nservice api 1 0\nservice api 1 0\nend 2\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend host 1 1\nend 1\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend 127.0.0.1 0 1\nend 1\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend 127.0.0.1 1 0\nend 1\n",
		"meshd-discovery-state 1\nservice api 1 1\nbackend 127.0.0.1 65536 1\nend 1\n",
		"meshd-discovery-state 1\nservice api 1 99999\nend 1\n",
		"meshd-discovery-state 1\nbackend 127.0.0.1 1 1\nend 0\n",
		"meshd-discovery-state 2\nservice api 1 0\nend 1\n",
		"meshd-discovery-state 2\nservice api Consul 1 0\nend 1\n",
		"meshd-discovery-state 2\nservice api consul 1 1 0\nend 1\n",
		"meshd-discovery-state 2\nservice api consul 1 1\nbackend 127.0.0.1 1 1 0\nend 1\n",
		"meshd-discovery-state 3\nservice api consul 1 1\nbackend 127.0.0.1 1 1\nend 1\n",
		"meshd-discovery-state 3\nservice api consul 1 1\nbackend 127.0.0.1 1 1 65536\nend "
		"1\n",
	};
	struct state_saved s;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &s) != -EINVAL)
			test_fail(__FILE__, __LINE__, "accepted bad state #%zu", i);
		CHECK(s.n == 0 && s.svcs == NULL);
	}
}

TEST(parse_rejects_embedded_nul)
{
	const char text[] = "meshd-discovery-state 1\nservice a\0i 1 0\nend 1\n";
	struct state_saved s;
	char why[128];

	CHECK_INT_EQ(state_parse(text, sizeof(text) - 1, &s, why, sizeof(why)), -EINVAL);
}

static char *tmpdir(void)
{
	static char dir[64];

	snprintf(dir, sizeof(dir), "/tmp/test_state.XXXXXX");
	return mkdtemp(dir);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.' || strlen(e->d_name) > 2;
	if (d)
		closedir(d);
	return n;
}

TEST(save_is_atomic_private_and_loads_back)
{
	struct state_saved t = { 0 };
	struct state_saved s;
	char path[128], why[128];
	struct stat st;
	char *dir = tmpdir();

	CHECK(dir != NULL);
	if (!dir)
		return;
	make_saved(&t);
	CHECK_INT_EQ(state_load(dir, &s, why, sizeof(why)), -ENOENT);
	CHECK_INT_EQ(state_save(dir, &t), 0);
	t.svcs[0].index = 121;
	CHECK_INT_EQ(state_save(dir, &t), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE_NAME);
	CHECK_INT_EQ(stat(path, &st), 0);
	CHECK_INT_EQ(st.st_mode & 0777, 0600);
	CHECK_INT_EQ(count_entries(dir), 1); /* no temp file left behind */
	CHECK_INT_EQ(state_load(dir, &s, why, sizeof(why)), 0);
	CHECK(state_saved_find(&s, "api") && state_saved_find(&s, "api")->index == 121);
	state_saved_free(&s);
	unlink(path);
	rmdir(dir);
	saved_release(&t);
}

TEST(load_refuses_a_fifo_without_blocking)
{
	struct state_saved s;
	char path[128], why[128] = "";
	char *dir = tmpdir();

	CHECK(dir != NULL);
	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE_NAME);
	CHECK_INT_EQ(mkfifo(path, 0600), 0);
	/* Without O_NONBLOCK this open would wait for a writer forever. */
	CHECK_INT_EQ(state_load(dir, &s, why, sizeof(why)), -EINVAL);
	CHECK_CONTAINS(why, "not a regular file");
	unlink(path);
	symlink("/etc/hostname", path);
	CHECK_INT_EQ(state_load(dir, &s, why, sizeof(why)), -EINVAL);
	unlink(path);
	rmdir(dir);
}

TEST(load_reports_corrupt_file)
{
	struct state_saved s;
	char path[128], why[128] = "";
	char *dir = tmpdir();
	int fd;

	CHECK(dir != NULL);
	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE_NAME);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	CHECK_INT_EQ(write(fd, "meshd-discovery-state 1\nservice api 1 1\n", 40), 40);
	close(fd);
	CHECK_INT_EQ(state_load(dir, &s, why, sizeof(why)), -EINVAL);
	CHECK_CONTAINS(why, "corrupt");
	CHECK(s.n == 0);
	unlink(path);
	rmdir(dir);
}

TEST(save_fails_cleanly_on_unwritable_dir)
{
	struct state_saved t = { 0 };

	make_saved(&t);
	CHECK(state_save("/proc/self/nonexistent-dir/x", &t) < 0);
	saved_release(&t);
}

/* Version 4: a set with subset labels and a split from the source round-trips; sets without
 * them are still written as version 3 (an older meshd reads them). */
TEST(version_4_keeps_subsets_and_split)
{
	struct config_backend b[2] = { be(AF_INET, "127.0.0.1", 22001, 1),
				       be(AF_INET, "127.0.0.2", 22002, 1) };
	struct config_split sp[2] = { { .subset = "v1", .weight = 9000 },
				      { .subset = "v2", .weight = 1000 } };
	struct state_saved_service svc = {
		.name = "api", .index = 9, .backends = b, .n_backends = 2, .split = sp, .n_split = 2
	};
	struct state_saved t = { .svcs = &svc, .n = 1 }, s;
	const struct state_saved_service *api;
	char why[128], *text;
	size_t len;

	snprintf(svc.source, sizeof(svc.source), "consul");
	b[0].subset = "v1";
	b[1].subset = "v2,canary";
	text = state_format(&t, &len);
	CHECK(text != NULL);
	CHECK_STR_EQ(text, "meshd-discovery-state 4\nservice api consul 9 2 2\n"
			   "backend 127.0.0.1 22001 1 0 v1\nbackend 127.0.0.2 22002 1 0 v2,canary\n"
			   "split v1 9000\nsplit v2 1000\nend 1\n");
	CHECK_INT_EQ(state_parse(text, len, &s, why, sizeof(why)), 0);
	api = state_saved_find(&s, "api");
	CHECK(api && api->n_backends == 2 && api->n_split == 2);
	CHECK_STR_EQ(api->backends[1].subset, "v2,canary");
	CHECK_STR_EQ(api->split[0].subset, "v1");
	CHECK_INT_EQ(api->split[1].weight, 1000);
	state_saved_free(&s);
	free(text);
	b[0].subset = b[1].subset = NULL;
	svc.n_split = 0;
	text = state_format(&t, &len);
	CHECK(text && !strncmp(text, "meshd-discovery-state 3\nservice api consul 9 2\n", 46));
	free(text);
	CHECK_INT_EQ(parse("meshd-discovery-state 4\nservice api consul 9 1 1\n"
			   "backend 127.0.0.1 1 1 0 V1\nsplit v1 10000\nend 1\n",
			   &s),
		     -EINVAL); /* labels are lowercase DNS labels */
	CHECK_INT_EQ(parse("meshd-discovery-state 4\nservice api consul 9 1 1\n"
			   "backend 127.0.0.1 1 1 0 v1\nsplit v1 10001\nend 1\n",
			   &s),
		     -EINVAL);
	CHECK_INT_EQ(parse("meshd-discovery-state 3\nservice api consul 9 1\n"
			   "backend 127.0.0.1 1 1 0 v1\nend 1\n",
			   &s),
		     -EINVAL); /* labels need version 4 */
}
