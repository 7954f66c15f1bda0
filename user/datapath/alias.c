/* Vose's alias method: split the weights into cells of equal mass, each holding at most two
 * entries (its own and an alias). Exact in integer arithmetic: masses are scaled by n so each
 * cell's mass is the total weight, and only the final probability is rounded to 32 bits. */
#include <errno.h>
#include <stdlib.h>

#include "datapath/alias.h"

int alias_build(const uint32_t *w, uint32_t n, uint32_t *prob, uint32_t *alias)
{
	uint64_t *mass, total = 0;
	uint32_t *small, *large, ns = 0, nl = 0;

	if (n == 0)
		return -EINVAL;
	mass = calloc(n, sizeof(*mass));
	small = calloc(n, sizeof(*small));
	large = calloc(n, sizeof(*large));
	if (!mass || !small || !large) {
		free(mass);
		free(small);
		free(large);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++)
		total += w[i] ? w[i] : 1;
	for (uint32_t i = 0; i < n; i++) {
		mass[i] = (uint64_t)(w[i] ? w[i] : 1) * n; /* a full cell holds `total` */
		if (mass[i] < total)
			small[ns++] = i;
		else
			large[nl++] = i;
	}
	while (ns && nl) {
		uint32_t s = small[--ns], l = large[nl - 1];

		prob[s] = (uint32_t)(((unsigned __int128)mass[s] << 32) / total);
		alias[s] = l;
		mass[l] -= total - mass[s];
		if (mass[l] < total) {
			nl--;
			small[ns++] = l;
		}
	}
	while (nl) {
		uint32_t l = large[--nl];

		prob[l] = 0xffffffffu;
		alias[l] = l;
	}
	while (ns) { /* only rounding leaves these: they are full cells */
		uint32_t s = small[--ns];

		prob[s] = 0xffffffffu;
		alias[s] = s;
	}
	free(mass);
	free(small);
	free(large);
	return 0;
}
