/* Endpoint <-> socket address conversions behind sockaddr.h. */
#include <arpa/inet.h>
#include <string.h>

#include "common/sockaddr.h"

socklen_t sockaddr_from_endpoint(const struct config_endpoint *ep, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (ep->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = ep->addr.v6;
		s6->sin6_port = htons(ep->port);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

	s4->sin_family = AF_INET;
	s4->sin_addr = ep->addr.v4;
	s4->sin_port = htons(ep->port);
	return sizeof(*s4);
}

void sockaddr_to_endpoint(const struct sockaddr_storage *ss, struct config_endpoint *ep)
{
	memset(ep, 0, sizeof(*ep));
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		ep->family = AF_INET6;
		ep->addr.v6 = s6->sin6_addr;
		ep->port = ntohs(s6->sin6_port);
	} else if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		ep->family = AF_INET;
		ep->addr.v4 = s4->sin_addr;
		ep->port = ntohs(s4->sin_port);
	}
}
