/*
 * uthash, configured for nabla: it allocates through nb_malloc (so that its
 * allocations are counted and can be made to fail in tests), and running
 * out of memory is not fatal: the add is abandoned and nb_hash_oom is set,
 * for the caller to report.  By default uthash would exit the process.
 */
#ifndef NABLA_HASH_H
#define NABLA_HASH_H

#include "internal.h"

extern _Thread_local bool nb_hash_oom;

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(size) nb_malloc(size)
#define uthash_free(ptr, size) nb_free(ptr)
#define uthash_nonfatal_oom(element) (nb_hash_oom = true)
#include <uthash.h>

#endif
