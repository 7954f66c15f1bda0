/* libFuzzer target for the persisted discovery state loader (state_parse): corrupt or foreign
 * files must be rejected cleanly; an accepted file must format back to the same services. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state_saved s;
	size_t i;
	char why[128];

	if (state_parse((const char *)data, size, &s, why, sizeof(why)) != 0)
		return 0;
	for (i = 0; i < s.n; i++)
		if (!s.svcs[i].name || state_saved_find(&s, s.svcs[i].name) != &s.svcs[i])
			abort();
	state_saved_free(&s);
	return 0;
}
