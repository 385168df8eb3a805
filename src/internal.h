/*
 * Shared internals of nabla: the tensor and tape structures and the helpers
 * that every op uses.  Not installed; users see include/nabla.h only.
 */
#ifndef NABLA_INTERNAL_H
#define NABLA_INTERNAL_H

#include "nabla.h"
#include "nabla_op.h"
#include "nabla_kernel.h" /* NB_KERNEL, the clones of the element-wise kernels */
#include "files.h" /* the readers' and writers' helpers (src/tensor/files.c) */

#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#define NB_MAX_INPUTS 3
#define NB_ALIGN 64 /* buffers of 64 bytes or more are aligned for vector loads */
#define NB_SMALL_ALIGN 16 /* smaller ones (and headers) only to 16 bytes */

/* The alignment a buffer of that many bytes gets. */
static inline size_t nb_align_for(size_t bytes) { return bytes >= NB_ALIGN ? NB_ALIGN : NB_SMALL_ALIGN; }

/* A parameter's part in nb_backward_sgd: a candidate, read by one entry
 * (its update can be applied where that entry computes its gradient), or
 * read by several (updated by the optimizer as usual). */
enum { NB_SGD_NO = 0, NB_SGD_CANDIDATE, NB_SGD_ONE_READER, NB_SGD_MANY_READERS };

/* Gradient state of a tensor during/after backward.  APPLIED: plain SGD was
 * applied to this parameter inside backward (nb_backward_sgd_) and its
 * gradient not kept; until nb_zero_grad, nothing can be added to it. */
enum { NB_GRAD_NONE = 0, NB_GRAD_ZERO, NB_GRAD_SET, NB_GRAD_APPLIED };

/* Where a tensor lives.  Zero is no tensor: the header of a tensor whose
 * tape was reset or freed may read as zeros (src/tensor/headers.c), and must
 * be refused as stale, never taken for a heap tensor. */
enum { NB_HOME_NONE = 0, NB_HOME_HEAP, NB_HOME_TAPE };

/* 72 bytes, plus 8 per dimension: a tape records one per op, and every byte
 * here costs time in graphs of many small ops (measured: 32 more bytes took
 * a 1-element op from 19 to 28 ns, as each op writes fresh memory; `base`
 * unpacked, rounding a 1-D header from 80 to 96 bytes, took a chain of (3,)
 * ops from 30 to 32 ns, so home and sgd share a byte, uses is a byte and
 * entry 32 bits: written once or never per op, they cost nothing packed). */
struct nb_tensor {
    uint8_t dtype;         /* nb_dtype */
    uint8_t ndim;
    uint8_t status;        /* nb_status: NB_OK, or why this is an errored nil tensor */
    uint8_t grad_state;    /* NB_GRAD_*: NONE means no gradient reached it */
    bool requires_grad;
    bool is_leaf;          /* made by the user, not by an op */
    uint8_t home : 2;      /* NB_HOME_*: on the heap or on `tape`; NONE for a retired header */
    uint8_t sgd : 2;       /* NB_SGD_*: during nb_backward_sgd only */
    uint8_t no_grad : 1;   /* an op's result made in no-grad mode (nb_tape_no_grad): no entry */
    uint8_t grad_slot : 1; /* its first gradient took the slot after its value (NB_SLOT_BYTES) */
    uint8_t uses;          /* entries that read it (an input used twice counts twice), up to 255:
                              only whether it is exactly 1 matters (nb_grad_share) */
    unsigned grad_pass;    /* the backward pass that wrote grad (op results only) */
    uint32_t generation;   /* tape tensors: the tape's generation (resets) when made */
    uint32_t version;      /* the write clock when last written (see nb_mark_written) */
    uint32_t entry;        /* index+1 of the entry that produced it; 0 for leaves (a tape
                              holds fewer than 2^32 entries: nb_tape_grow) */
    size_t size;           /* product of shape; 1 for 0-d */
    void *data;
    void *grad;            /* same dtype and size as data, or NULL */
    nb_tape *tape;         /* tape that owns it (home TAPE) */
    char *name;            /* "" or a copy: heap tensors carry NB_NAME_MAX bytes for
                              it after the shape; tape tensors copy into the arena */
    /* A view (reshape, detach, a custom op's view): the tensor that owns
     * the storage it shares, at the root of any chain of views; NULL for
     * others.  Writes and version checks go through it (nb_mark_written),
     * even for a view whose entry a callback's return took off the tape. */
    nb_tensor *base;
    size_t shape[];        /* ndim sizes */
};

/* Changed after use.  An entry keeps the write clock's value when it was
 * recorded (its stamp); a write through the API (nb_set, nb_tensor_data,
 * optimizer steps, loading) gives the tensor a version newer than every
 * stamp taken before it.  A tensor whose version is newer than the stamp of
 * an entry that read it was changed after that op used it, and backward
 * refuses the entry (PyTorch keeps a counter per tensor for the same).
 *
 * The clock ticks only when a write follows a recording (a write with no
 * recording since the last tick reuses the value), so it counts steps of
 * record-then-write rather than writes, and 32 bits last; versions and
 * stamps are compared as serial numbers (RFC 1982), correct while fewer
 * than 2^31 ticks separate them. */
extern _Atomic uint32_t nb_write_clock;
extern _Atomic bool nb_write_clock_seen; /* read by a recording since its last tick */
static inline uint32_t nb_clock_for_recording(void) {
    if (!atomic_load_explicit(&nb_write_clock_seen, memory_order_relaxed))
        atomic_store_explicit(&nb_write_clock_seen, true, memory_order_relaxed);
    return atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
}
static inline bool nb_newer(uint32_t version, uint32_t stamp) { return (int32_t)(version - stamp) > 0; }
/* Marks t (and the tensors it is a view of) written now. */
void nb_mark_written(nb_tensor *t);
/* Was t, or a tensor it is a view of, written after `stamp` was taken? */
bool nb_written_since(const nb_tensor *t, uint32_t stamp);

/* Runs fn(ctx, begin, end) on [0, n) split into parts of at least `grain`
 * items, one per thread of nb_set_threads (the caller runs the first), and
 * returns when all are done; serially with one thread, or when the pool is
 * already busy (src/tensor/threads.c). */
typedef void (*nb_range_fn)(void *ctx, size_t begin, size_t end);
void nb_parallel_for(size_t n, size_t grain, nb_range_fn fn, void *ctx);
/* The same in exactly `parts` ranges (fewer if there are fewer threads or
 * items); part p covers [nb_part_begin(n, p, parts), nb_part_begin(n, p + 1, parts)). */
void nb_parallel_parts(size_t n, int parts, nb_range_fn fn, void *ctx);
static inline size_t nb_part_begin(size_t n, size_t part, size_t parts) {
    return n * part / parts; /* n is an element count: no overflow for parts <= 64 */
}
uint64_t nb_parallel_jobs(void); /* how many calls were split, for tests */
/* The same, with the small case (no split possible) decided here, where the
 * compiler can inline fn: the path of every op on small tensors. */
static inline void nb_parallel(size_t n, size_t grain, nb_range_fn fn, void *ctx) {
    if (n < 2 * grain)
        fn(ctx, 0, n);
    else
        nb_parallel_for(n, grain, fn, ctx);
}
/* For the element-wise kernels: GCC compiles the function for AVX-512,
 * AVX2 and the baseline, and picks one at load time for the machine it runs
 * on (the build stays portable to any x86-64).  -DNB_NO_CLONES builds one
 * version for the -march given: `make BUILD=build/avx2 OPT="-O3 -march=haswell
 * -DNB_NO_CLONES"` runs as an AVX2-only CPU would (docs/performance.md).
 *
 * Beware: GCC 12.2 miscompiles, in the avx512f clone, a conditional sum
 * into a local array (`lane[k] += y[k] > 0 ? g[k] : 0`: garbage in a lane;
 * the same loop is right with -mavx512f and in the other clones).  Found
 * in the fused conv + relu's bias gradient, which is not cloned;
 * tests/test_conv.c compares that gradient bit for bit with the unfused
 * one.  Keep such loops out of cloned functions. */
#define NB_VECTOR_CLONES NB_KERNEL /* include/nabla_kernel.h, which users' kernels get too */

/* Element-wise kernels split only above this many elements per thread. */
#define NB_PARALLEL_GRAIN NB_KERNEL_GRAIN

/* Bytes of a tensor's header with its shape, rounded for what follows. */
static inline size_t nb_header_bytes(int ndim) {
    return (sizeof(nb_tensor) + (size_t)ndim * sizeof(size_t) + 15) & ~(size_t)15;
}

extern char nb_unnamed[1]; /* "", the name of unnamed tape tensors (never written) */

/* ---------------------------------------------------------------- arena */

/* A bump allocator made of chunks.  reset() rewinds to the first chunk and
 * keeps all of them, so the same sequence of requests after a reset is served
 * without calling malloc. */
typedef struct nb_chunk nb_chunk;
struct nb_chunk {
    nb_chunk *next;
    size_t size;  /* usable bytes after the header */
    size_t used;
    /* data follows, at NB_CHUNK_HEADER bytes from the start */
};
#define NB_CHUNK_HEADER ((sizeof(nb_chunk) + NB_ALIGN - 1) / NB_ALIGN * NB_ALIGN)

typedef struct {
    nb_chunk *first, *current;
    size_t total;          /* bytes held in all chunks */
} nb_arena;

void nb_arena_init(nb_arena *a);
void *nb_arena_alloc_slow(nb_arena *a, size_t bytes, size_t align);
/* bytes at a multiple of align (a power of two up to NB_ALIGN); NULL on
 * failure.  The common case, room in the current chunk, is decided inline
 * (a mask, not a division: it runs once or twice per op). */
/* Takes bytes from c at the next multiple of align (a power of two), or
 * NULL if they do not fit. */
static inline void *nb_chunk_bump(nb_chunk *c, size_t bytes, size_t align) {
    size_t start = (c->used + align - 1) & ~(align - 1);
    if (start > c->size || c->size - start < bytes) return NULL;
    c->used = start + bytes;
    return (unsigned char *)c + NB_CHUNK_HEADER + start;
}
static inline void *nb_arena_alloc(nb_arena *a, size_t bytes, size_t align) {
    void *p = a->current && bytes ? nb_chunk_bump(a->current, bytes, align) : NULL;
    return p ? p : nb_arena_alloc_slow(a, bytes, align);
}
void nb_arena_reset(nb_arena *a);
/* Gives back everything allocated since the arena's current chunk held
 * `used` bytes in chunk `at` (NULL: since the start): nb_no_grad_end. */
void nb_arena_rewind(nb_arena *a, nb_chunk *at, size_t used);
void nb_arena_free(nb_arena *a);

/* ---------------------------------------------------------------- headers */

/* The memory of a tape's tensor headers (and names, and tiny values):
 * addresses that are never given to a second header, so that a tensor kept
 * across any number of resets is recognised (src/tensor/headers.c). */
#define NB_GENERATIONS_PER_WINDOW 4
#define NB_MAX_FULL_WINDOWS 40
typedef struct { char *base; size_t size; } nb_window;
typedef struct {
    char *base;                /* the window headers are bumped out of */
    size_t size, used;
    size_t generation_start;   /* where the current generation began in it */
    size_t generation_bytes;   /* what the generation took in windows it filled */
    size_t largest_generation; /* bytes: the most any generation took */
    nb_window full[NB_MAX_FULL_WINDOWS]; /* filled by this generation, retired at the reset */
    int n_full;
} nb_headers;
void nb_headers_init(nb_headers *h);
void *nb_headers_alloc_slow(nb_headers *h, size_t bytes);
static inline void *nb_headers_alloc(nb_headers *h, size_t bytes) {
    bytes = (bytes + NB_SMALL_ALIGN - 1) & ~(size_t)(NB_SMALL_ALIGN - 1);
    if (h->size - h->used < bytes || !bytes) return nb_headers_alloc_slow(h, bytes ? bytes : NB_SMALL_ALIGN);
    void *p = h->base + h->used;
    h->used += bytes;
    return p;
}
/* Ends a generation: the headers made so far become stale (recognisably);
 * `move` forces their addresses to be retired now (moved, or zeroed in
 * place when no fresh addresses can be had). */
void nb_headers_reset(nb_headers *h, bool move);
/* Retires (zeroes: no tensor) every header made since the window was
 * `base` with `used` bytes taken and `n_full` windows filled (nb_no_grad_end);
 * their addresses are not given out again.  Whole pages are handed back to
 * the kernel (they read as zeros). */
void nb_headers_retire_since(nb_headers *h, const char *base, size_t used, int n_full);
void nb_headers_free(nb_headers *h);
size_t nb_headers_memory(const nb_headers *h);

/* ---------------------------------------------------------------- tape */

/* An op is an nb_op_def (include/nabla_op.h): the same definition for the
 * built-in ops and for users' own.  A recorded call of one is an entry of
 * the tape, struct nb_op_call, which users see only through accessors. */
typedef nb_op_def nb_op;
typedef struct nb_op_call nb_entry;

/* In explain mode: what an entry's backward added into each input's
 * gradient (arena buffers of the inputs' shapes, or NULL), for one pass. */
typedef struct {
    unsigned pass;
    void *of_input[];      /* n_in of them */
} nb_contributions;

/* 96 bytes; the explain-mode extras hang off one pointer.  Up to
 * NB_MAX_INPUTS inputs are kept in the entry itself (the built-in ops reach
 * them as e->in[k]); an op with more keeps them in the arena (`many`), and
 * code that handles any entry reaches them through nb_entry_input(). */
struct nb_op_call {
    const nb_op *op;
    nb_tensor *out;
    union {
        nb_tensor *in[NB_MAX_INPUTS];
        nb_tensor **many;  /* n_in > NB_MAX_INPUTS */
    };
    /* Op parameters (which ones are set depends on the op). */
    union {
        double scalar;
        void *state;       /* nb_op_save's memory, for ops defined through nb_op */
    };
    void *saved;           /* op-specific data kept for backward, in the arena
                              (nb_op: a copy of the parameters) */
    const char *file;
    nb_contributions *contrib; /* explain mode only, else NULL */
    int n_in;
    int axis;
    int line;
    int scope;             /* index into the tape's scopes, or -1 */
    uint32_t stamp;        /* the write clock when recorded (see nb_newer) */
    bool flag0, flag1;
    bool user;             /* recorded by nb_op(): its callbacks get a copy of the entry (src/graph/op.c) */
    uint8_t phase;         /* on that copy: NB_IN_FORWARD or NB_IN_BACKWARD while one runs, else 0 */
};
enum { NB_IN_FORWARD = 1, NB_IN_BACKWARD, NB_IN_REPLAY /* a forward replayed (src/graph/replay.c) */ };

static inline nb_tensor *nb_entry_input(const nb_entry *e, int i) {
    /* i < NB_MAX_INPUTS always holds when in[] is used; said so for cppcheck */
    return e->n_in <= NB_MAX_INPUTS && i < NB_MAX_INPUTS ? e->in[i] : e->many[i];
}

/* The picture's formula for input i (see nb_op_def.derivative). */
static inline const char *nb_op_formula(const nb_op *op, int i) {
    for (int k = i < NB_OP_FORMULAS ? i : NB_OP_FORMULAS - 1; k >= 0; k--)
        if (op->derivative[k]) return op->derivative[k];
    return "?";
}

typedef struct {
    char name[NB_NAME_MAX];
    int parent;            /* enclosing scope, or -1 */
} nb_scope;

typedef struct {
    const char *what;      /* "forward", "backward hook", ...; NULL when no user code runs */
    const nb_op_call *call; /* the op call whose callback it is (a copy, valid while it runs), or NULL */
    const char *who;       /* without a call: the API call that runs it ("nb_backward") */
    bool may_reset;        /* only nb_tape_free is refused (nb_gradcheck's function) */
    bool scopes_free;      /* no-grad scopes opened inside free their tensors (nb_recompute's function) */
} nb_user_code;

struct nb_tape {
    nb_arena arena;        /* values, gradients, saved data */
    /* Tensor headers and names, at addresses never reused (see nb_headers),
     * so that a tensor kept across nb_tape_reset is recognised and refused. */
    nb_headers headers;
    uint32_t generation;   /* resets since the tape was made (mod 2^32) */
    nb_entry *entries;
    size_t n_entries, cap_entries;
    bool grad_enabled;
    /* No-grad mode (nb_tape_no_grad, nb_no_grad_begin): ops run but their
     * entries are dropped as soon as they have run, while grad_enabled is
     * false (nb_grad and nb_hvp turn it on for what they record). */
    bool no_record;
    int no_grad_depth;     /* nb_no_grad_begin calls not yet ended */
    struct nb_no_grad_mark *no_grad_marks; /* NB_NO_GRAD_DEPTH of them, when a scope was begun */
    unsigned kept_allocs;  /* gradients and names given to tape tensors, ever (see nb_no_grad_end) */
    /* While a no-grad scope is open, `headers` is the scopes' own store and
     * this the tape's (swapped at the outermost begin and end), so that an
     * end can retire the scope's headers by moving that window's pages to
     * fresh addresses, as a reset does (src/graph/no_grad.c). */
    nb_headers other_headers;
    bool scope_store_kept; /* the scopes' store holds headers of a scope that kept its tensors */
    nb_status status;
    char error[512];
    nb_backward_hook hook;
    void *hook_user;
    bool explain;          /* record per-edge contributions in backward */
    bool anomaly;          /* check every result and gradient for NaN and inf */
    bool training;         /* dropout active (nb_tape_set_training); true by default */
    unsigned pass;         /* backward passes run since the tape was made */
    double sgd_lr;         /* during nb_backward_sgd: the learning rate */
    nb_scope *scopes;      /* named scopes (layers), kept across resets */
    int n_scopes, cap_scopes, current_scope;
    void *scratch;         /* see nb_tape_scratch */
    size_t scratch_bytes;
    /* Called after each entry's backward, like `hook`, but for the
     * library's own use (data-parallel training starts sending a
     * parameter's gradient as soon as it is final): unlike `hook` it does
     * not turn off the shared gradients and the fused SGD update. */
    nb_backward_hook progress;
    void *progress_user;
    int running;           /* backward passes under way (more than 1: passes inside passes) */
    struct nb_nested *nested; /* the innermost pass inside another's, or NULL (see nb_pass_enter) */
    struct nb_saved_grads *aside; /* the leaf gradients set aside last, or NULL (see nb_save_leaf_grads) */
    nb_user_code user_code;   /* the user's callback running on the tape, if any (nb_user_enter) */
    unsigned refused_resets;  /* nb_tape_reset/nb_tape_free calls refused so far (see nb_user_enter) */
};

/* The user's code that a call runs on a tape: a custom op's forward,
 * backward, backward_graph or describe, or the backward hook.  While one
 * runs, the call under way holds pointers into the tape's arena and entries
 * (partial gradients, saved leaf gradients, the nested-pass log, the entry
 * itself), so nb_tape_reset and nb_tape_free of that tape are refused: they
 * do nothing, and the tape is errored (NB_ERR_STATE) naming the callback
 * and its op; the call then fails with that error (src/graph/tape.c).
 * (nb_gradcheck's function may reset the tape it is given, which holds
 * nothing of nb_gradcheck's, but not free it.)  Callbacks nest (a backward
 * that runs nb_grad runs other callbacks): each site saves the outer one
 * and puts it back. */
static inline nb_user_code nb_user_enter(nb_tape *tp, nb_user_code code) {
    nb_user_code outer = tp->user_code;
    tp->user_code = code;
    return outer;
}
static inline void nb_user_leave(nb_tape *tp, nb_user_code outer) { tp->user_code = outer; }

/* Working memory for one entry's forward or backward, gone when it returns
 * (convolutions' unfolded patches): one buffer per tape, grown when a call
 * needs more and otherwise reused, so that a warm loop allocates nothing.
 * Aligned for vector loads; NULL (and the tape errored, naming the entry's
 * op and call site) when memory runs out. */
void *nb_tape_scratch(nb_tape *tp, size_t bytes, const nb_op_call *e);

/* Does the tensor still exist?  Tape tensors cease to at nb_tape_reset; a
 * header is then either intact with an old generation or retired (zeros:
 * home NONE), never another tensor's (see nb_headers). */
static inline bool nb_alive(const nb_tensor *t) {
    return t->home == NB_HOME_HEAP || (t->home == NB_HOME_TAPE && t->generation == t->tape->generation);
}
static inline bool nb_on_tape(const nb_tensor *t) { return t->home == NB_HOME_TAPE; }

/* ---------------------------------------------------------------- errors */

/* Is `out` the output of an entry of its tape?  (It is not if it is a leaf,
 * or if it is left over from before nb_tape_reset().) */
static inline bool nb_recorded(const nb_tensor *out) {
    const nb_tape *tp = out->tape;
    return nb_on_tape(out) && tp && nb_alive(out) && out->entry >= 1 && out->entry <= tp->n_entries &&
           tp->entries[out->entry - 1].out == out;
}

/* Records an error on the tape (the first one sticks) and on the thread, and
 * returns the shared nil tensor for `status`. */
nb_tensor *nb_fail(nb_tape *tp, nb_status status, const char *file, int line,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void nb_set_error(nb_tape *tp, nb_status status, const char *file, int line,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void nb_vset_error(nb_tape *tp, nb_status status, const char *file, int line,
                   const char *fmt, va_list ap);
nb_tensor *nb_nil(nb_status status);

/* Checks a tape and inputs before an op runs.  Returns NULL when the op may
 * go ahead, else the errored tensor the op must return (an errored input is
 * passed on silently: the first error was recorded where it happened). */
nb_tensor *nb_check_inputs(nb_tape *tp, const char *op, const char *file, int line, int n,
                           nb_tensor *const *in);
/* The NB_ERR_STATE failure for input i (0-based) of op, made before the
 * tape's last reset: the message says where it was made. */
nb_tensor *nb_fail_stale(nb_tape *tp, const char *op, int i, const nb_tensor *t, const char *file, int line);
/* Same dtype for all inputs, else an NB_ERR_DTYPE failure. */
nb_tensor *nb_check_same_dtype(nb_tape *tp, const char *op, const char *file, int line,
                               int n, nb_tensor *const *in);

/* The length of the longest prefix of s of at most max bytes that ends at
 * a UTF-8 character boundary (names are cut there, never mid-character). */
size_t nb_utf8_prefix(const char *s, size_t max);
/* "(2, 3)" for a shape. */
char *nb_format_shape(int ndim, const size_t *shape, char *buf, size_t n);
/* Normalises a possibly negative axis; returns -1 if out of range. */
int nb_norm_axis(int axis, int ndim);
/* Normalises `axis` for t into *ax; on failure returns the errored tensor
 * (NB_ERR_ARG, the message naming op, axis and shape), else NULL. */
nb_tensor *nb_check_axis(nb_tape *tp, const char *op, const nb_tensor *t, int axis, int *ax,
                         const char *file, int line);
/* Views t as (outer, n, inner) around `axis`: outer is the product of the
 * sizes before it, n its size, inner the product of the sizes after it. */
void nb_split_axis(const nb_tensor *t, int axis, size_t *outer, size_t *n, size_t *inner);

/* ---------------------------------------------------------------- memory */

void *nb_malloc(size_t bytes);
/* Counts an allocation made otherwise (a mapping); false if the tests want
 * this one to fail (nb_test_fail_allocation). */
bool nb_allocation_allowed(void);
void *nb_realloc(void *p, size_t bytes);
void *nb_malloc_aligned(size_t bytes);
void nb_free(void *p);
static inline size_t nb_dtype_size(nb_dtype dt) { return dt == NB_F64 ? sizeof(double) : sizeof(float); }

/* Makes an uninitialised tensor on the tape (tp != NULL) or heap. */
nb_tensor *nb_tensor_alloc(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                           const char *op, const char *file, int line);
/* Makes an op result: a tape tensor sharing no data, not yet recorded. */
static inline nb_tensor *nb_result(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape, const char *op,
                                   const char *file, int line) {
    nb_tensor *t = nb_tensor_alloc(tp, dt, ndim, shape, op, file, line);
    if (t->status == NB_OK) t->is_leaf = false;
    return t;
}
/* Makes an op result that shares `data` (views: reshape, detach). */
nb_tensor *nb_result_view(nb_tape *tp, nb_tensor *src, int ndim, const size_t *shape,
                          const char *op, const char *file, int line);
void *nb_tape_alloc(nb_tape *tp, size_t bytes);
/* Room for a tensor header (or a name) in the current generation's header
 * arena. */
static inline void *nb_header_alloc(nb_tape *tp, size_t bytes) { return nb_headers_alloc(&tp->headers, bytes); }

/* A 1-element tape tensor keeps its value right after its header, in a
 * block of header + NB_SLOT_BYTES: the value, then its first gradient (the
 * slot; a gradient allocated per op in bulk with the op's header). */
#define NB_SLOT_BYTES 16
static inline bool nb_has_grad_slot(const nb_tensor *t) {
    return t->home == NB_HOME_TAPE && t->size == 1 && !t->grad_slot &&
           t->data == (const char *)t + nb_header_bytes(t->ndim);
}
/* An op result of x's dtype and shape: for a 1-element x, made here (no
 * shape to check: x's is valid), else by nb_result. */
static inline nb_tensor *nb_result_like(nb_tape *tp, const nb_tensor *x, const char *op, const char *file,
                                        int line) {
    if (x->size != 1) return nb_result(tp, x->dtype, x->ndim, x->shape, op, file, line);
    size_t header = nb_header_bytes(x->ndim);
    nb_tensor *t = nb_header_alloc(tp, header + NB_SLOT_BYTES);
    if (!t) { /* as nb_tensor_alloc says it */
        char buf[128];
        return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: cannot allocate %zu bytes for %s", op,
                       header + nb_dtype_size(x->dtype), nb_format_shape(x->ndim, x->shape, buf, sizeof buf));
    }
    *t = (nb_tensor){.dtype = x->dtype, .ndim = x->ndim, .size = 1, .data = (char *)t + header, .status = NB_OK,
                     .home = NB_HOME_TAPE, .tape = tp, .name = nb_unnamed, .generation = tp->generation};
    for (int d = 0; d < x->ndim; d++) t->shape[d] = 1;
    return t;
}

/* Doubles the tape's entry array; false (and the tape errored) on failure. */
bool nb_tape_grow(nb_tape *tp, const nb_op *op, const char *file, int line);

/* Copies the inputs of an entry with more than NB_MAX_INPUTS of them to
 * the arena; false (the entry taken back, the tape errored) on failure. */
bool nb_record_many(nb_tape *tp, nb_entry *e, nb_tensor *const *in);
/* Records an entry whose output is `out`.  Sets out->requires_grad from the
 * inputs and the tape's grad mode.  Returns the entry (to fill in op
 * parameters) or NULL on allocation failure (then the tape is errored).
 * Inline, with nb_emit below: they run once per op. */
static inline nb_entry *nb_record(nb_tape *tp, const nb_op *op, nb_tensor *out, int n_in, nb_tensor *const *in,
                                  const char *file, int line) {
    if (tp->n_entries == tp->cap_entries && !nb_tape_grow(tp, op, file, line)) return NULL;
    nb_entry *e = &tp->entries[tp->n_entries++];
    /* Field by field: a compound literal became a `rep stosq` per op. */
    e->op = op, e->out = out, e->in[0] = e->in[1] = e->in[2] = NULL;
    e->scalar = 0, e->saved = NULL, e->file = file, e->contrib = NULL;
    e->n_in = n_in, e->axis = 0, e->line = line, e->scope = tp->current_scope;
    e->stamp = nb_clock_for_recording();
    e->flag0 = e->flag1 = e->user = false;
    e->phase = 0;
    if (n_in > NB_MAX_INPUTS && !nb_record_many(tp, e, in)) return NULL;
    bool requires = false;
    for (int i = 0; i < n_in; i++) {
        if (n_in <= NB_MAX_INPUTS) e->in[i] = in[i];
        requires |= in[i]->requires_grad;
        if (in[i]->uses < UINT8_MAX) in[i]->uses++;
    }
    out->is_leaf = false;
    out->requires_grad = requires && tp->grad_enabled;
    out->entry = (uint32_t)tp->n_entries; /* index + 1 (fewer than 2^32: nb_tape_grow) */
    return e;
}

/* The usual start of an op: checks the inputs (NULL, errored, other tape,
 * mixed dtypes).  Returns NULL if all is well, else the tensor to return.
 * The common case is decided inline; the checks that write the message run
 * only when something is wrong. */
nb_tensor *nb_check_slow(nb_tape *tp, const nb_op *op, const char *file, int line, int n,
                         nb_tensor *const *in);
static inline nb_tensor *nb_check(nb_tape *tp, const nb_op *op, const char *file, int line, int n,
                                  nb_tensor *const *in) {
    bool fine = tp != NULL;
    for (int i = 0; fine && i < n; i++)
        fine = in[i] && in[i]->status == NB_OK &&
               (in[i]->home == NB_HOME_HEAP || (in[i]->tape == tp && in[i]->generation == tp->generation)) &&
               in[i]->dtype == in[0]->dtype;
    return fine ? NULL : nb_check_slow(tp, op, file, line, n, in);
}
/* Allocates the result of `op` with the given shape and dtype and records
 * the entry.  On failure returns NULL and stores the tensor to return in
 * *failed.  The caller fills in op parameters, then calls nb_run(). */
static inline nb_entry *nb_emit(nb_tape *tp, const nb_op *op, int n_in, nb_tensor *const *in, nb_dtype dt,
                                int ndim, const size_t *shape, const char *file, int line, nb_tensor **failed) {
    nb_tensor *out = nb_result(tp, dt, ndim, shape, op->name, file, line);
    if (out->status != NB_OK) {
        *failed = out;
        return NULL;
    }
    nb_entry *e = nb_record(tp, op, out, n_in, in, file, line);
    if (!e) *failed = nb_nil(NB_ERR_NOMEM);
    return e;
}
/* The same for an op whose result has the dtype and shape of input `like`. */
static inline nb_entry *nb_emit_like(nb_tape *tp, const nb_op *op, int n_in, nb_tensor *const *in,
                                     const nb_tensor *like, const char *file, int line, nb_tensor **failed) {
    nb_tensor *out = nb_result_like(tp, like, op->name, file, line);
    if (out->status != NB_OK) {
        *failed = out;
        return NULL;
    }
    nb_entry *e = nb_record(tp, op, out, n_in, in, file, line);
    if (!e) *failed = nb_nil(NB_ERR_NOMEM);
    return e;
}
/* Anomaly mode: checks e's output (and non-finite leaf inputs) after its
 * forward; returns e->out, or an errored tensor naming the op. */
nb_tensor *nb_anomaly_forward(nb_tape *tp, const nb_entry *e);
/* After e's backward: checks the gradients it wrote; false (tape errored)
 * on a NaN or infinity. */
bool nb_anomaly_backward(nb_tape *tp, const nb_entry *e);

/* In no-grad mode: takes e, the tape's last entry, off the tape once its
 * forward has run; its result becomes a leaf that requires no gradient (as
 * a result made under torch.no_grad), marked no_grad (src/graph/no_grad.c). */
void nb_forget_entry(nb_tape *tp, nb_entry *e);
static inline bool nb_recording_nothing(const nb_tape *tp) { return tp->no_record && !tp->grad_enabled; }

static inline nb_tensor *nb_run(nb_entry *e) {
    e->op->forward(e);
    nb_tape *tp = e->out->tape;
    nb_tensor *out = tp->anomaly ? nb_anomaly_forward(tp, e) : e->out;
    if (nb_recording_nothing(tp)) nb_forget_entry(tp, e);
    return out;
}

/* A backward pass may run inside another on the same tape: a custom op's
 * backward, or a backward hook, that calls nb_grad or nb_backward (as a
 * PyTorch Function's backward may call autograd.grad).  Every pass runs
 * between nb_pass_enter and nb_pass_leave; an inner one leaves the outer
 * one's state as it found it: the op results' gradients it replaces
 * (nb_grad_target, nb_grad_share) and the entries' explain-mode
 * contributions are logged (nb_keep_for_outer) and put back, with the pass
 * number, by nb_pass_leave (src/graph/backward.c). */
typedef struct {
    nb_tensor *t;          /* whose gradient; NULL: the contributions of `entry` */
    void *was;             /* the gradient buffer, or the contributions */
    size_t entry;
    unsigned pass;
    uint8_t state;
} nb_kept;
typedef struct nb_nested {
    nb_kept *kept;
    size_t n, cap;
} nb_nested;
typedef struct {
    bool nested;
    unsigned pass;         /* the outer pass's number */
    nb_nested log, *outer;
} nb_pass_guard;
bool nb_keep_contributions_for_outer(nb_tape *tp, size_t entry);
void nb_pass_enter(nb_tape *tp, nb_pass_guard *g);
void nb_pass_leave(nb_tape *tp, nb_pass_guard *g);
/* nb_backward_ without its nb_pass_enter/leave, for callers that read the
 * gradients before they leave (nb_grad). */
nb_status nb_backward_pass(nb_tensor *out, const nb_tensor *seed, const char *file, int line);
/* False (the tape errored, the message starting with `what`) when an input
 * or the output of entry e was written after e was recorded. */
bool nb_entry_unchanged(nb_tape *tp, const nb_entry *e, const char *what);
/* The callbacks of an entry recorded by nb_op (src/graph/op.c): backward,
 * and describe for pictures (ops it records are taken off the tape again). */
void nb_user_backward(nb_tape *tp, size_t i);
/* Takes the entries from n on off the tape (those a callback recorded). */
void nb_drop_entries(nb_tape *tp, size_t n);
void nb_user_describe(const nb_tape *tp, size_t i, char *buf, size_t size);

/* Backward from loss with plain SGD folded in: each parameter read by a
 * single entry whose backward knows how (matmul, linear) gets w -= lr dL/dw
 * applied by that backward directly (gemm with alpha = -lr, beta = 1) and no
 * gradient (nb_has_grad is false after); the others get their gradients as
 * usual, for the optimizer to apply.  Falls back to a plain backward in
 * explain mode, anomaly mode or with a hook. */
nb_status nb_backward_sgd_(nb_tensor *loss, nb_tensor *const *params, size_t n, double lr, const char *file,
                           int line);
/* A pass that must leave the leaves' gradients as they were (the pictures'
 * filmed pass, nb_grad): every leaf that leads to `out` starts the pass with
 * no gradient, and gets its gradient back afterwards. */
typedef struct {
    nb_tensor *t;
    uint8_t state;
    void *copy; /* the gradient's values, when it had some */
} nb_saved_grad;
typedef struct nb_saved_grads {
    nb_saved_grad *leaves;
    size_t n, cap;
    /* Sets aside nest (nb_grad inside a custom op's backward inside
     * nb_grad): the tape keeps the innermost (nb_tape.aside), each the one
     * it was made inside, and the tape's pass count when it was made, so
     * that an nb_backward run inside the pass it belongs to adds into the
     * gradients set aside rather than into the pass's own (see
     * nb_backward_). */
    nb_tape *tp;
    struct nb_saved_grads *outer;
    int running;
} nb_saved_grads;
/* False when out of memory, with nothing set aside (the tape not errored:
 * the caller says what it was doing). */
bool nb_save_leaf_grads(nb_tape *tp, const nb_tensor *out, nb_saved_grads *sv);
void nb_restore_leaf_grads(nb_saved_grads *sv);

/* Whether this backward applies x's update itself (see nb_backward_sgd_). */
static inline bool nb_sgd_fused(const nb_tensor *x) { return x->sgd == NB_SGD_ONE_READER; }

/* During backward: the buffer to write d loss/d t into.  *accumulate is set
 * to true when a gradient is already there (add into it) and false when this
 * is the first contribution (overwrite it).  NULL on allocation failure. */
void *nb_grad_alloc(nb_tape *tp, nb_tensor *t); /* t->grad, or NULL (tape errored) */
/* Parameters now in the APPLIED state, process-wide: while there are any,
 * backward checks up front that it will not have to add to one, and
 * refuses before changing anything (nb_fail_applied says why). */
void nb_fail_applied(nb_tape *tp, const nb_tensor *t, const char *file, int line);
extern _Atomic long nb_applied_count;
static inline void nb_set_grad_state(nb_tensor *t, uint8_t state) {
    if (t->grad_state == NB_GRAD_APPLIED) atomic_fetch_sub_explicit(&nb_applied_count, 1, memory_order_relaxed);
    if (state == NB_GRAD_APPLIED) atomic_fetch_add_explicit(&nb_applied_count, 1, memory_order_relaxed);
    t->grad_state = state;
}
bool nb_keep_for_outer(nb_tape *tp, nb_tensor *t); /* see nb_pass_enter */
static inline void *nb_grad_target(nb_tape *tp, nb_tensor *t, bool *accumulate) {
    *accumulate = false;
    if (!t->is_leaf && t->grad_pass != tp->pass) { /* left over from an earlier pass */
        if (tp->nested && !nb_keep_for_outer(tp, t)) return NULL;
        t->grad = NULL;
        t->grad_state = NB_GRAD_NONE;
        t->grad_pass = tp->pass;
    }
    if (t->grad && t->grad_state == NB_GRAD_SET) {
        *accumulate = true;
        return t->grad;
    }
    if (!t->grad && !nb_grad_alloc(tp, t)) return NULL;
    t->grad_state = NB_GRAD_SET;
    return t->grad;
}
/* nb_grad_target, but the buffer is zeroed first when fresh, so callers always add
 * (used when contributions scatter, as in broadcasting). */
void *nb_grad_target_zeroed(nb_tape *tp, nb_tensor *t);
/* Does t hold a gradient from the current backward pass?  An op result's
 * gradient belongs to one pass (stale ones are simply ignored, so backward
 * need not clear them first); a leaf's persists and adds up across passes. */
static inline bool nb_grad_live(const nb_tensor *t) {
    if (!t->grad || t->grad_state == NB_GRAD_NONE || t->grad_state == NB_GRAD_APPLIED) return false;
    return t->is_leaf || !t->tape || t->grad_pass == t->tape->pass;
}

/* For an input x whose gradient is exactly the output's (local derivative 1,
 * same shape): when x is an op result read by this entry alone, x simply
 * shares the output's gradient buffer and true is returned, so the caller
 * skips the copy.  Not in explain mode or with a backward hook, where the
 * pictures need every gradient in its own buffer.  (Inline: scalar code
 * runs it for most adds.) */
static inline bool nb_grad_share(nb_tape *tp, nb_tensor *x, nb_tensor *out) {
    if (tp->explain || tp->hook || x->is_leaf || x->uses != 1 || x->size != out->size ||
        x->dtype != out->dtype || nb_grad_live(x) || (tp->nested && !nb_keep_for_outer(tp, x)))
        return false;
    x->grad = out->grad;
    x->grad_state = NB_GRAD_SET;
    x->grad_pass = tp->pass;
    return true;
}

/* The entry's recorded contribution of input k, if from the latest pass. */
static inline const void *nb_contribution(const nb_tape *tp, const nb_entry *e, int k) {
    return e->contrib && e->contrib->pass == tp->pass ? e->contrib->of_input[k] : NULL;
}

/* Does input i of the entry need a gradient? */
static inline bool nb_needs_grad(const nb_entry *e, int i) {
    return nb_entry_input(e, i)->requires_grad;
}

#define NB_F(t) ((float *)(t)->data)
#define NB_D(t) ((double *)(t)->data)

/* Runs BODY once with T bound to the C type of dtype dt: nabla_op.h's
 * NB_FOR_DTYPE, under the name the library's kernels use. */
#define NB_DISPATCH(dt, ...) NB_FOR_DTYPE(dt, __VA_ARGS__)

/* ---------------------------------------------------------------- broadcasting */

/* NumPy's rule for n tensors: shapes aligned from the right, each size
 * equal to the others or 1.  Writes the result's shape; false if they do
 * not broadcast (src/ops/broadcast.c). */
bool nb_broadcast_shape(int n, nb_tensor *const *t, int *nd, size_t *shape);
/* Element strides of t laid against an nd-dimensional result: 0 where t has
 * size 1 or no dimension. */
void nb_broadcast_strides(const nb_tensor *t, int nd, size_t *strides);
/* "(2, 3), (3,) and (4, 1)": the shapes of n tensors, for messages. */
char *nb_format_shapes(int n, nb_tensor *const *t, char *buf, size_t size);

/* Walks a result of nd dimensions element by element in row-major order,
 * keeping, for each of k operands, the offset of the element it reads:
 *     size_t idx[NB_MAX_DIMS] = {0}, off[K] = {0};
 *     for (size_t i = 0; i < size; i++, nb_odometer_next(nd, shape, idx, K, off, strides)) ...
 * strides[j] are operand j's strides against the result (0 where broadcast). */
static inline void nb_odometer_next(int nd, const size_t *shape, size_t *idx, int k, size_t *off,
                                    const size_t (*strides)[NB_MAX_DIMS]) {
    for (int d = nd - 1; d >= 0; d--) {
        for (int j = 0; j < k; j++) off[j] += strides[j][d];
        if (++idx[d] < shape[d]) return;
        for (int j = 0; j < k; j++) off[j] -= strides[j][d] * shape[d];
        idx[d] = 0;
    }
}

/* ---------------------------------------------------------------- products */

/* C (rows x cols, row-major) = beta C + alpha op(X) · op(Y), with op given
 * by the flags and the inner size k: one CBLAS call, or with nabla's
 * threads several on blocks of rows, bitwise the same (src/ops/matmul.c). */
void nb_gemm(nb_dtype dt, bool tx, bool ty, size_t rows, size_t cols, size_t k, double alpha, const void *x,
             size_t ldx, const void *y, size_t ldy, double beta, void *c);
/* The backward of a product op(A) · op(B) of a 2-D matmul or a linear
 * (in[0], in[1]; flag0/flag1 the transposes), with nb_backward_sgd's fused
 * updates (src/ops/matmul.c). */
void nb_product_backward(nb_entry *e);
/* The backward graph of matmul and batched products. */
void nb_matmul_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in);
/* nb_matmul of operands that are not both matrices (src/ops/batched.c). */
nb_tensor *nb_matmul_batched(nb_tape *tp, nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b,
                             const char *file, int line);

/* The ops of the indexing ops' backward graphs (src/ops/index.c), each the
 * other's adjoint: take gives y[k] = x[from[k]] (y of the given shape), put
 * gives y (of the given shape) = 0 with y[from[k]] += g[k].  `from` must
 * live as long as the tape's entries (the arena). */
nb_tensor *nb_take(nb_tape *tp, nb_tensor *x, const size_t *from, int ndim, const size_t *shape, const char *file,
                   int line);
nb_tensor *nb_put(nb_tape *tp, nb_tensor *g, const size_t *from, int ndim, const size_t *shape, const char *file,
                  int line);

/* Renders dot text to SVG in memory (through libgvc); *svg is NUL-terminated
 * and freed with nb_free. */
nb_status nb_render_svg_data(const char *dot, char **svg, size_t *len);

/* Summary statistics of n values of dtype dt (non-finite values excluded and
 * counted). */
typedef struct { double min, max, mean, std; size_t nonfinite; } nb_stats;
nb_stats nb_compute_stats(nb_dtype dt, size_t n, const void *values);

#endif /* NABLA_INTERNAL_H */
