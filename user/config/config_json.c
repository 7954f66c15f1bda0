/* Memory for parsed config documents: while a load runs, cJSON's allocation hooks hand out
 * memory from an arena owned by the loading thread, and the whole tree (about a million nodes
 * and key strings for 10,000 services) is dropped in a few free() calls instead of node by node.
 * Outside a load, and on every other thread, the hooks are plain malloc/free, so the other
 * modules' cJSON use is unchanged. The hooks are installed before main, before any thread.
 * Blocks are mapped with MAP_POPULATE: the tree fills them anyway, and faulting them in with one
 * call is cheaper than a page fault per 4 KiB. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "config/config_int.h"

#define ARENA_FIRST_BLOCK (64u << 10)
#define ARENA_MAX_BLOCK (4u << 20)
#define ARENA_ALIGN _Alignof(max_align_t)

/* A mapping of `size` bytes: this header, then `cap` bytes handed out from the start. */
struct cfg_arena_block {
	struct cfg_arena_block *next;
	size_t used, cap, size;
	_Alignas(max_align_t) char data[];
};

/* The arena of the load running on this thread, or NULL. */
static _Thread_local struct cfg_arena *active;

static void *arena_alloc(struct cfg_arena *a, size_t n)
{
	struct cfg_arena_block *b = a->head;
	size_t size;

	if (n > SIZE_MAX / 2)
		return NULL;
	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (!b || b->cap - b->used < n) {
		size = b ? b->size * 2 : ARENA_FIRST_BLOCK;
		if (size > ARENA_MAX_BLOCK)
			size = ARENA_MAX_BLOCK;
		if (size < sizeof(*b) + n)
			size = sizeof(*b) + n;
		b = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (b == MAP_FAILED)
			return NULL;
		b->next = a->head;
		b->used = 0;
		b->cap = size - sizeof(*b);
		b->size = size;
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
		munmap(b, b->size);
	}
	a->head = NULL;
}
