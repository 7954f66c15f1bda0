/* libFuzzer target for the persisted discovery state loader (state_parse): corrupt or foreign
 * files must be rejected cleanly; an accepted file must format back to the same services. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state_saved s;
	size_t i;
	char why[128];

	if (state_parse((const char *)data, size, &s, why, sizeof(why)) != 0)
		return 0;
	struct state_saved back;
	size_t len;
	char *text;

	for (i = 0; i < s.n; i++)
		if (!s.svcs[i].name || state_saved_find(&s, s.svcs[i].name) != &s.svcs[i])
			abort();
	text = state_format(&s, &len); /* subsets and splits (version 4) come back the same */
	if (text && state_parse(text, len, &back, why, sizeof(why)) != 0)
		abort();
	for (i = 0; text && i < s.n; i++)
		if (back.svcs[i].n_backends != s.svcs[i].n_backends ||
		    back.svcs[i].n_split != s.svcs[i].n_split ||
		    !state_backends_equal(back.svcs[i].backends, back.svcs[i].n_backends,
					  s.svcs[i].backends, s.svcs[i].n_backends))
			abort();
	if (text)
		state_saved_free(&back);
	free(text);
	state_saved_free(&s);
	return 0;
}
