/*
 * Every allocation nabla makes goes through here, so that it can be counted
 * (a warm training loop must make none) and, later, made to fail on purpose.
 */
#include "../internal.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Atomic uint64_t alloc_count;

void *nb_malloc(size_t bytes) {
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    return malloc(bytes ? bytes : 1);
}

void *nb_realloc(void *p, size_t bytes) {
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    return realloc(p, bytes ? bytes : 1);
}

/* NB_ALIGN-aligned memory, released with nb_free(). */
void *nb_malloc_aligned(size_t bytes) {
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    void *p = NULL;
    if (posix_memalign(&p, NB_ALIGN, bytes ? bytes : 1) != 0) return NULL;
    return p;
}

void nb_free(void *p) { free(p); }

uint64_t nb_alloc_count(void) { return atomic_load(&alloc_count); }

size_t nb_dtype_size(nb_dtype dt) { return dt == NB_F64 ? sizeof(double) : sizeof(float); }
