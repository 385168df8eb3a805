/*
 * The tape's arena: a chain of chunks handed out by bumping an offset.
 *
 * Nothing is freed one at a time.  nb_arena_reset() rewinds every chunk and
 * starts again from the first, keeping them all; a training step that makes
 * the same requests as the previous one therefore finds room in the chunks it
 * used last time and calls malloc zero times.
 */
#include "../internal.h"

#include <stdint.h>

/* struct nb_chunk is in internal.h, for the inline fast path of
 * nb_arena_alloc; this file has the rest. */
#define CHUNK_HEADER NB_CHUNK_HEADER
#define MIN_CHUNK ((size_t)1 << 20)

void nb_arena_init(nb_arena *a) {
    a->first = a->current = NULL;
    a->total = 0;
}

static nb_chunk *chunk_new(size_t size) {
    if (size > SIZE_MAX - CHUNK_HEADER) return NULL;
    nb_chunk *c = nb_malloc_aligned(CHUNK_HEADER + size);
    if (!c) return NULL;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

static void chunk_free(nb_chunk *c) { nb_free(c); }

void *nb_arena_alloc_slow(nb_arena *a, size_t bytes, size_t align) {
    if (bytes > SIZE_MAX / 2) return NULL;
    if (bytes == 0) bytes = 1;
    /* Try the current chunk, then the ones after it (kept from earlier steps). */
    for (nb_chunk *c = a->current; c; c = c->next) {
        void *p = nb_chunk_bump(c, bytes, align);
        if (p) {
            a->current = c;
            return p;
        }
    }
    /* A new chunk, at least twice the size of everything so far, so that a
     * growing workload settles after a few steps. */
    size_t size = a->total > MIN_CHUNK ? a->total : MIN_CHUNK;
    if (size < bytes) size = bytes;
    size = (size + NB_ALIGN - 1) / NB_ALIGN * NB_ALIGN;
    nb_chunk *c = chunk_new(size);
    if (!c) return NULL;
    if (!a->first) {
        a->first = c;
    } else {
        nb_chunk *last = a->current ? a->current : a->first;
        while (last->next) last = last->next;
        last->next = c;
    }
    a->total += size;
    a->current = c;
    return nb_chunk_bump(c, bytes, align);
}

void nb_arena_reset(nb_arena *a) {
    for (nb_chunk *c = a->first; c; c = c->next) c->used = 0;
    a->current = a->first;
}

void nb_arena_free(nb_arena *a) {
    nb_chunk *c = a->first;
    while (c) {
        nb_chunk *next = c->next;
        chunk_free(c);
        c = next;
    }
    nb_arena_init(a);
}

void nb_arena_rewind(nb_arena *a, nb_chunk *at, size_t used) {
    if (!at) {
        nb_arena_reset(a);
        return;
    }
    /* Chunks after `at` were empty then (they come from earlier steps, or
     * were added since): empty again. */
    for (nb_chunk *c = at->next; c; c = c->next) c->used = 0;
    at->used = used;
    a->current = at;
}
