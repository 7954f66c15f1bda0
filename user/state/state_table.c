/* The in-memory service table of discovery: deep copies of config services, their comparison
 * (to program the datapath only for what changed) and canonical backend order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "state/state.h"

int state_svc_copy(struct config_service *dst, const struct config_service *src,
		   const struct config_backend *backends, size_t n)
{
	const char *path = src->load_balancer.health_check.http_path;

	*dst = *src;
	dst->name = strdup(src->name ? src->name : "");
	dst->load_balancer.health_check.http_path = path ? strdup(path) : NULL;
	dst->backends = n ? calloc(n, sizeof(*backends)) : NULL;
	dst->n_backends = n;
	if (!dst->name || (path && !dst->load_balancer.health_check.http_path) ||
	    (n && !dst->backends)) {
		state_svc_release(dst);
		return -ENOMEM;
	}
	if (n)
		memcpy(dst->backends, backends, n * sizeof(*backends));
	return 0;
}

void state_svc_release(struct config_service *svc)
{
	free(svc->name);
	free(svc->load_balancer.health_check.http_path);
	free(svc->backends);
	memset(svc, 0, sizeof(*svc));
}

static bool endpoint_equal(const struct config_endpoint *a, const struct config_endpoint *b)
{
	if (a->family != b->family || a->port != b->port)
		return false;
	if (a->family == AF_INET6)
		return memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6)) == 0;
	return a->addr.v4.s_addr == b->addr.v4.s_addr;
}

bool state_backends_equal(const struct config_backend *a, size_t na, const struct config_backend *b,
			  size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (!endpoint_equal(&a[i].endpoint, &b[i].endpoint) || a[i].weight != b[i].weight)
			return false;
	return true;
}

static bool str_equal(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool lb_equal(const struct config_load_balancer *a, const struct config_load_balancer *b)
{
	const struct config_health_check *ha = &a->health_check, *hb = &b->health_check;
	const struct config_retry *ra = &a->retry, *rb = &b->retry;

	return a->algorithm == b->algorithm && a->choice_count == b->choice_count &&
	       a->no_healthy_backend == b->no_healthy_backend &&
	       a->panic_threshold == b->panic_threshold && ha->type == hb->type &&
	       ha->interval_ns == hb->interval_ns && ha->timeout_ns == hb->timeout_ns &&
	       ha->unhealthy_threshold == hb->unhealthy_threshold &&
	       ha->healthy_threshold == hb->healthy_threshold &&
	       str_equal(ha->http_path, hb->http_path) &&
	       ra->connect_attempts == rb->connect_attempts &&
	       ra->backoff_base_ns == rb->backoff_base_ns &&
	       ra->backoff_max_ns == rb->backoff_max_ns && ra->budget_percent == rb->budget_percent;
}

static bool cb_equal(const struct config_circuit_breaker *a, const struct config_circuit_breaker *b)
{
	return a->consecutive_failures == b->consecutive_failures &&
	       a->error_rate_threshold == b->error_rate_threshold &&
	       a->request_volume_threshold == b->request_volume_threshold &&
	       a->window_ns == b->window_ns && a->open_duration_ns == b->open_duration_ns &&
	       a->max_open_duration_ns == b->max_open_duration_ns &&
	       a->half_open_probes == b->half_open_probes &&
	       a->max_connections == b->max_connections &&
	       a->max_ejection_percent == b->max_ejection_percent;
}

bool state_svc_equal(const struct config_service *a, const struct config_service *b)
{
	return str_equal(a->name, b->name) && endpoint_equal(&a->vip, &b->vip) &&
	       state_backends_equal(a->backends, a->n_backends, b->backends, b->n_backends) &&
	       lb_equal(&a->load_balancer, &b->load_balancer) &&
	       cb_equal(&a->circuit_breaker, &b->circuit_breaker) && a->mtls == b->mtls;
}

static int backend_cmp(const void *pa, const void *pb)
{
	const struct config_endpoint *a = &((const struct config_backend *)pa)->endpoint;
	const struct config_endpoint *b = &((const struct config_backend *)pb)->endpoint;
	int r;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->family == AF_INET6)
		r = memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6));
	else
		r = memcmp(&a->addr.v4, &b->addr.v4, sizeof(a->addr.v4));
	if (r)
		return r;
	return (int)a->port - (int)b->port;
}

void state_backends_sort(struct config_backend *b, size_t n)
{
	if (n > 1)
		qsort(b, n, sizeof(*b), backend_cmp);
}

struct state_entry *state_table_find(const struct state_table *t, const char *name)
{
	size_t i;

	for (i = 0; t && name && i < t->n; i++)
		if (t->ents[i].svc.name && strcmp(t->ents[i].svc.name, name) == 0)
			return &t->ents[i];
	return NULL;
}

void state_table_free(struct state_table *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		state_svc_release(&t->ents[i].svc);
	free(t->ents);
	t->ents = NULL;
	t->n = 0;
}
