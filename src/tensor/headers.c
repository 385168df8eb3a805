/*
 * Where a tape keeps its tensor headers, so that a tensor kept across
 * nb_tape_reset is recognised however many resets later.
 *
 * The problem.  Users hold tensors as pointers.  After a reset, a pointer
 * kept from an earlier step is stale; if its address were handed to a new
 * tensor, the stale pointer would BE that new tensor (same address, current
 * generation) and no check could tell them apart: ops would silently use
 * the new tensor's values.  So the rule here is that no address that ever
 * held a tensor header is given to another header.
 *
 * The design.  Headers (and names, and the values of tiny tensors) are
 * bumped out of a window of memory mapped with mmap.  A reset does not
 * rewind the window: the next generation's headers follow the last one's,
 * and an old header, still intact, says by its generation number that it
 * is stale.  When the window has no room left for another generation, its
 * physical pages are moved to fresh addresses with
 * mremap(MREMAP_DONTUNMAP): the headers carry on at the new addresses,
 * while the old range stays mapped but now reads as zeros, and a zero
 * header is no tensor at all (its `home` is NB_HOME_NONE).  Moving pages
 * costs no page faults, no zeroing and no copy (two system calls, a few
 * microseconds, once every several resets: each window holds at least
 * NB_GENERATIONS_PER_WINDOW generations of the largest size seen), and
 * the cost per op is the same bump allocation as before.
 *
 * Fresh addresses come from one large PROT_NONE reservation per process,
 * consumed in order, so that the retired ranges, which are never
 * unmapped, lie side by side and merge into one kernel mapping (the
 * process's map count stays small however long it runs).  A freed tape's
 * windows are retired too, so its tensors are recognised as well.
 *
 * The limit.  Addresses are used up at the rate headers are made (about
 * 100 bytes a tensor), and retired ones stay mapped (no memory, but
 * address space).  A 64-bit process has about 2^47 bytes of them, so
 * detection holds until a process has made some 10^12 tensors.  Under an
 * address-space limit (RLIMIT_AS, `ulimit -v`), retired headers count
 * against it: when no reservation fits, the kernel's own choice of
 * addresses is used, and only when no address at all can be mapped is a
 * window reused in place (then the last NB_GENERATIONS_PER_WINDOW resets
 * stay detected, and a tensor kept for longer may be taken for a new one).  Where mremap lacks
 * MREMAP_DONTUNMAP (kernels before 5.7, valgrind), windows are retired and
 * fresh ones mapped instead: the same guarantee, at the cost of the page
 * faults of fresh memory.
 */
#define _GNU_SOURCE /* mremap */
#include "../internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIN_WINDOW ((size_t)256 << 10)
#define RESERVATION_MAX ((size_t)1 << 40)
#define MIN_BLOCK ((size_t)64 << 20)
#define MAX_BLOCKS 4096

/* ---------------------------------------------------------------- addresses */

/* Blocks of reserved addresses (PROT_NONE) that windows are cut from, in
 * order.  `live` counts a block's windows that still hold headers (not
 * retired).  When no new block can be reserved (an address-space limit:
 * retired ranges count against it), the block retired longest ago, one
 * with no live window, is used again from its start: a tensor kept across
 * resets is then missed only if the process has since made more headers
 * than its address space holds (about 100 bytes a tensor), never after a
 * few resets. */
typedef struct {
    char *base;
    size_t size, next; /* bytes, and the first not yet handed out */
    long live;
} block;
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static block blocks[MAX_BLOCKS];
static int n_blocks, current_block = -1;
static _Atomic bool no_dontunmap; /* mremap refused MREMAP_DONTUNMAP once: map fresh windows */

static size_t page_size(void) {
    static _Atomic size_t cached;
    size_t p = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!p) {
        long s = sysconf(_SC_PAGESIZE);
        p = s > 0 ? (size_t)s : 4096;
        atomic_store_explicit(&cached, p, memory_order_relaxed);
    }
    return p;
}

/* A new block of at least `bytes`, as large as the address space allows up
 * to RESERVATION_MAX; its index, or -1. */
static int reserve_block(size_t bytes) {
    if (n_blocks == MAX_BLOCKS) return -1;
    size_t floor = bytes > MIN_BLOCK ? bytes : MIN_BLOCK;
    for (size_t r = RESERVATION_MAX;; r /= 2) {
        if (r < floor) r = bytes; /* last try: just what is asked */
        void *p = mmap(NULL, r, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            blocks[n_blocks] = (block){p, r, 0, 0};
            return n_blocks++;
        }
        if (r == bytes) return -1;
    }
}

/* The block retired longest ago that can take `bytes` again, or -1. */
static int reuse_block(size_t bytes) {
    for (int k = 1; k <= n_blocks; k++) {
        int b = (current_block + k) % n_blocks;
        if (blocks[b].live == 0 && blocks[b].size >= bytes) {
            blocks[b].next = 0;
            return b;
        }
    }
    return -1;
}

/* `bytes` of addresses no live header holds (reserved, PROT_NONE, or a
 * retired range of the oldest block), or NULL. */
static char *fresh_addresses(size_t bytes) {
    pthread_mutex_lock(&blocks_lock);
    char *a = NULL;
    if (current_block < 0 || blocks[current_block].size - blocks[current_block].next < bytes) {
        int b = reserve_block(bytes);
        if (b < 0 && n_blocks) b = reuse_block(bytes);
        if (b >= 0) current_block = b;
    }
    block *c = current_block >= 0 ? &blocks[current_block] : NULL;
    if (c && c->size - c->next >= bytes) {
        a = c->base + c->next;
        c->next += bytes;
        c->live++;
    }
    pthread_mutex_unlock(&blocks_lock);
    return a;
}

/* A window of a block is given back: retired, or never mapped. */
static void release_addresses(const char *base) {
    pthread_mutex_lock(&blocks_lock);
    for (int b = 0; b < n_blocks; b++)
        if (base >= blocks[b].base && base < blocks[b].base + blocks[b].size) {
            blocks[b].live--;
            break;
        }
    pthread_mutex_unlock(&blocks_lock);
}

/* A new window of `bytes` (a multiple of the page size), readable and
 * writable, or NULL.  Outside the blocks (the kernel's choice) when no
 * block has room. */
static char *map_window(size_t bytes) {
    if (!nb_allocation_allowed()) return NULL;
    char *at = fresh_addresses(bytes);
    /* populated now, so that the first steps through it do not fault page by page */
    void *p = mmap(at, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | (at ? MAP_FIXED : 0),
                   -1, 0);
    /* On failure the range stays counted as live: a failed MAP_FIXED may
     * have unmapped it, and another mapping may take it, so its block must
     * never be mapped over again. */
    return p == MAP_FAILED ? NULL : p;
}

/* The range keeps its addresses but loses its pages: from now on it reads
 * as zeros, which no live header is.  Mapped afresh rather than only
 * emptied (madvise), so that it merges with the retired ranges beside it. */
static void retire(char *base, size_t bytes) {
    void *p = mmap(base, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) madvise(base, bytes, MADV_DONTNEED); /* zeros all the same */
    release_addresses(base);
}

/* The window's pages at fresh addresses (returned), its old range retired;
 * NULL when that cannot be done (the window is then as it was). */
static char *move_window(char *base, size_t bytes) {
#ifdef MREMAP_DONTUNMAP
    if (!atomic_load_explicit(&no_dontunmap, memory_order_relaxed)) {
        /* Without a block (an address-space limit refused one, and none
         * can be used again), the kernel picks the addresses: never a
         * retired range, which stays mapped. */
        char *to = fresh_addresses(bytes);
        void *p = to ? mremap(base, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to)
                     : mremap(base, bytes, bytes, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
        if (p != MAP_FAILED) {
            retire(base, bytes);
            return p;
        }
        if (errno != EINVAL) return NULL; /* `to` stays counted as live: see map_window */
        atomic_store_explicit(&no_dontunmap, true, memory_order_relaxed);
        /* the addresses taken stay reserved, unused */
    }
#endif
    char *fresh = map_window(bytes);
    if (fresh) retire(base, bytes);
    return fresh;
}

/* ---------------------------------------------------------------- windows */

void nb_headers_init(nb_headers *h) { memset(h, 0, sizeof *h); }

void *nb_headers_alloc_slow(nb_headers *h, size_t bytes) {
    bytes = (bytes + NB_SMALL_ALIGN - 1) & ~(size_t)(NB_SMALL_ALIGN - 1);
    if (bytes > SIZE_MAX / 4 || h->n_full == NB_MAX_FULL_WINDOWS) return NULL;
    /* The current window is full: keep it (its headers live until the
     * reset) and go on in one at least twice as large. */
    size_t size = h->size ? 2 * h->size : MIN_WINDOW, page = page_size();
    if (size < 2 * bytes) size = 2 * bytes;
    size = (size + page - 1) / page * page;
    char *w = map_window(size);
    if (!w) return NULL;
    if (h->base) {
        h->full[h->n_full++] = (nb_window){h->base, h->size};
        h->generation_bytes += h->used - h->generation_start;
    }
    h->base = w;
    h->size = size;
    h->used = bytes;
    h->generation_start = 0;
    return w;
}

/* Zeroes [from, to): whole pages by handing them back (they read as
 * zeros after), the ends by writing. */
static void zero_range(char *from, char *to) {
    if (to <= from) return;
    uintptr_t page = page_size(), a = ((uintptr_t)from + page - 1) / page * page, b = (uintptr_t)to / page * page;
    if (a < b && madvise((void *)a, b - a, MADV_DONTNEED) == 0) {
        memset(from, 0, (size_t)((char *)a - from));
        memset((char *)b, 0, (size_t)(to - (char *)b));
    } else {
        memset(from, 0, (size_t)(to - from));
    }
}

void nb_headers_reset(nb_headers *h, bool move) {
    size_t bytes = h->generation_bytes + (h->used - h->generation_start), page = page_size();
    if (bytes > h->largest_generation) h->largest_generation = bytes;
    for (int i = 0; i < h->n_full; i++) retire(h->full[i].base, h->full[i].size);
    h->n_full = 0;
    h->generation_bytes = 0;
    if (!h->base) return;
    size_t want = NB_GENERATIONS_PER_WINDOW * h->largest_generation;
    want = want < MIN_WINDOW ? MIN_WINDOW : (want + page - 1) / page * page;
    if (h->size < want) { /* too small for the generations seen: a larger one */
        char *w = map_window(want);
        if (w) {
            retire(h->base, h->size);
            h->base = w;
            h->size = want;
            h->used = h->generation_start = 0;
            return;
        }
    }
    if (move || h->size - h->used < h->largest_generation) {
        char *w = move_window(h->base, h->size);
        if (w) {
            h->base = w;
            h->used = 0;
        } else {
            /* No fresh addresses (an address-space limit): a move that
             * was asked for retires the headers where they are, as zeros
             * (no tensor), so that none can pass for live: a no-grad
             * scope's end relies on it, as its tensors' generation stays
             * current, and so does a wrapped generation count. */
            if (move) zero_range(h->base, h->base + h->used);
            if (h->size - h->used < h->largest_generation) h->used = 0; /* no room left: reuse in place */
        }
    }
    h->generation_start = h->used;
}

void nb_headers_free(nb_headers *h) {
    for (int i = 0; i < h->n_full; i++) retire(h->full[i].base, h->full[i].size);
    if (h->base) retire(h->base, h->size);
    nb_headers_init(h);
}

size_t nb_headers_memory(const nb_headers *h) {
    size_t total = h->size;
    for (int i = 0; i < h->n_full; i++) total += h->full[i].size;
    return total;
}

void nb_headers_retire_since(nb_headers *h, const char *base, size_t used, int n_full) {
    if (!base) { /* no window then: all of this generation's headers */
        for (int i = 0; i < h->n_full; i++) zero_range(h->full[i].base, h->full[i].base + h->full[i].size);
        if (h->base) zero_range(h->base + h->generation_start, h->base + h->used);
        return;
    }
    if (n_full == h->n_full) { /* the same window */
        zero_range((char *)base + used, h->base + h->used);
        return;
    }
    /* The window of the mark was filled since, and others after it. */
    zero_range(h->full[n_full].base + used, h->full[n_full].base + h->full[n_full].size);
    for (int i = n_full + 1; i < h->n_full; i++) zero_range(h->full[i].base, h->full[i].base + h->full[i].size);
    zero_range(h->base, h->base + h->used);
}
