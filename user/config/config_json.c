/* Memory for parsed config documents: while a load runs, cJSON's allocation hooks hand out
 * memory from an arena owned by the loading thread, and the whole tree (about a million nodes
 * and key strings for 10,000 services) is dropped in a few free() calls instead of node by node.
 * Outside a load, and on every other thread, the hooks are plain malloc/free, so the other
 * modules' cJSON use is unchanged. The hooks are installed before main, before any thread.
 * Blocks are faulted in with one call (the tree fills them anyway), and the big ones are backed
 * by transparent huge pages where the kernel allows. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "config/config_int.h"

#define ARENA_FIRST_BLOCK (64u << 10)
#define ARENA_MAX_BLOCK (4u << 20)
#define ARENA_ALIGN _Alignof(max_align_t)
#define HUGE_PAGE (2u << 20)

/* A mapping of `size` bytes: this header, then `cap` bytes handed out from the start. */
struct cfg_arena_block {
	struct cfg_arena_block *next;
	size_t used, cap, size;
	_Alignas(max_align_t) char data[];
};

/* The arena of the load running on this thread, or NULL. */
static _Thread_local struct cfg_arena *active;

/* A block of `size` bytes, faulted in. Blocks of whole huge pages are aligned to one and asked
 * to be backed by them: a 10,000-service tree spans ~35 MB, and walking it over 4 KiB pages
 * costs a TLB miss every few nodes. Both madvise calls are best effort (THP may be off;
 * MADV_POPULATE_WRITE needs Linux 5.14, else pages fault in on use). */
static void *map_block(size_t size)
{
	const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
	size_t head;
	char *p, *q;

	if (size % HUGE_PAGE) {
		p = mmap(NULL, size, prot, flags | MAP_POPULATE, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	p = mmap(NULL, size + HUGE_PAGE, prot, flags, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	q = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	head = (size_t)(q - p);
	if (head)
		munmap(p, head);
	munmap(q + size, HUGE_PAGE - head);
	madvise(q, size, MADV_HUGEPAGE);
	madvise(q, size, MADV_POPULATE_WRITE);
	return q;
}

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
		b = map_block(size);
		if (!b)
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
