/* Memory for parsed config documents: while a load runs, cJSON's allocation hooks hand out
 * memory from an arena owned by the loading thread, and the whole tree (about a million nodes
 * and key strings for 10,000 services) is dropped in a few free() calls instead of node by node.
 * Outside a load, and on every other thread, the hooks are plain malloc/free, so the other
 * modules' cJSON use is unchanged. The hooks are installed before main, before any thread. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/config_int.h"

#define ARENA_FIRST_BLOCK (64u << 10)
#define ARENA_MAX_BLOCK (4u << 20)
#define ARENA_ALIGN _Alignof(max_align_t)

struct cfg_arena_block {
	struct cfg_arena_block *next;
	size_t used, cap;
	_Alignas(max_align_t) char data[];
};

/* The arena of the load running on this thread, or NULL. */
static _Thread_local struct cfg_arena *active;

static void *arena_alloc(struct cfg_arena *a, size_t n)
{
	struct cfg_arena_block *b = a->head;
	size_t cap;

	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (!b || b->cap - b->used < n) {
		cap = b ? b->cap * 2 : ARENA_FIRST_BLOCK;
		if (cap > ARENA_MAX_BLOCK)
			cap = ARENA_MAX_BLOCK;
		if (cap < n)
			cap = n;
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
	}
	b->used += n;
	return b->data + b->used - n;
}

static bool arena_owns(const struct cfg_arena *a, const void *p)
{
	const struct cfg_arena_block *b;

	for (b = a->head; b; b = b->next)
		if ((uintptr_t)p >= (uintptr_t)b->data &&
		    (uintptr_t)p < (uintptr_t)b->data + b->cap)
			return true;
	return false;
}

static void *json_malloc(size_t n)
{
	return active ? arena_alloc(active, n) : malloc(n);
}

/* Arena memory is only released with the arena: freeing one of its items is a no-op. */
static void json_free(void *p)
{
	if (!active || !arena_owns(active, p))
		free(p);
}

__attribute__((constructor)) static void install_hooks(void)
{
	cJSON_Hooks hooks = { .malloc_fn = json_malloc, .free_fn = json_free };

	cJSON_InitHooks(&hooks);
}

void cfg_arena_begin(struct cfg_arena *a)
{
	a->head = NULL;
	a->prev = active;
	active = a;
}

void cfg_arena_end(struct cfg_arena *a)
{
	struct cfg_arena_block *b, *next;

	active = a->prev;
	for (b = a->head; b; b = next) {
		next = b->next;
		free(b);
	}
	a->head = NULL;
}
