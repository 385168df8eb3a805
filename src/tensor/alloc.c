/*
 * Every allocation nabla makes goes through here, so that it can be counted
 * (a warm training loop must make none) and, later, made to fail on purpose.
 */
#include "../internal.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Atomic uint64_t alloc_count;
/* Tests: the allocation with this number fails (0: none), see
 * nb_test_fail_allocation. */
static _Atomic uint64_t fail_at;
static _Atomic bool failed_one;
_Thread_local bool nb_hash_oom;

/* Fuzzing builds (make fuzz) cap a single allocation: a huge but valid
 * request (an nb_pad of 2^31 a side) is then refused with NB_ERR_MEMORY,
 * as on a machine without that memory, rather than ending the fuzzer with
 * its out-of-memory report.  Other builds have no cap. */
#ifdef NB_MAX_ALLOCATION
#define too_big(bytes) ((bytes) > (size_t)(NB_MAX_ALLOCATION))
#else
#define too_big(bytes) false
#endif

/* Counts an allocation; false if this one is to fail. */
static bool allowed(void) {
    uint64_t n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    if (n != atomic_load(&fail_at)) return true;
    atomic_store(&failed_one, true);
    return false;
}

void nb_test_fail_allocation(uint64_t nth) {
    atomic_store(&failed_one, false);
    atomic_store(&fail_at, nth ? atomic_load(&alloc_count) + nth : 0);
}

bool nb_test_allocation_failed(void) { return atomic_load(&failed_one); }

bool nb_allocation_allowed(void) { return allowed(); }

void *nb_malloc(size_t bytes) { return allowed() && !too_big(bytes) ? malloc(bytes ? bytes : 1) : NULL; }

void *nb_realloc(void *p, size_t bytes) { return allowed() && !too_big(bytes) ? realloc(p, bytes ? bytes : 1) : NULL; }

/* NB_ALIGN-aligned memory, released with nb_free(). */
void *nb_malloc_aligned(size_t bytes) {
    if (!allowed() || too_big(bytes)) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, NB_ALIGN, bytes ? bytes : 1) != 0) return NULL;
    return p;
}

void nb_free(void *p) { free(p); }

uint64_t nb_alloc_count(void) { return atomic_load(&alloc_count); }

