/*
 * Tensors: creation, properties, element access, gradient access.
 *
 * A tensor is a header (struct nb_tensor) and a contiguous row-major buffer.
 * Heap tensors get both in one allocation; tape tensors get both from the
 * tape's arena.  A heap tensor's gradient is allocated the first time a
 * backward pass reaches it and kept for later passes.
 */
#include "../internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A heap tensor is one block: the header and shape, room for its name, then
 * the values at an offset aligned for their size.  A tape tensor's header
 * comes from the tape's header arena (see struct nb_tape) and its values
 * from the main arena, except small values (under NB_ALIGN bytes), which
 * follow the header: one allocation for the 1-element ops whose cost is
 * mostly the tape's own. */
#define SMALL_VALUES (NB_ALIGN - 1)
#define HEADER_BYTES nb_header_bytes(NB_MAX_DIMS) /* the most a header takes */
static size_t data_offset(size_t header_bytes, size_t data_bytes) {
    size_t align = nb_align_for(data_bytes); /* a power of two */
    return (header_bytes + align - 1) & ~(align - 1);
}

/* The header's size is part of every op's cost (see internal.h). */
_Static_assert(sizeof(void *) != 8 || sizeof(nb_tensor) == 72, "a tensor header is 72 bytes on 64-bit machines");

/* The name of every unnamed tape tensor (never written: naming one copies). */
char nb_unnamed[1];

_Atomic uint32_t nb_write_clock;
_Atomic bool nb_write_clock_seen;

/* A write marks the tensor and, if it is a view, the tensor that owns the
 * storage it shares (its base); a check looks at the tensor and its base.
 * Every view of a storage has the same base, so a write seen through any
 * view of it is seen from every other, and from the base itself. */
void nb_mark_written(nb_tensor *t) {
    if (atomic_exchange_explicit(&nb_write_clock_seen, false, memory_order_relaxed))
        atomic_fetch_add_explicit(&nb_write_clock, 1, memory_order_relaxed);
    uint32_t now = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
    t->version = now;
    if (t->base) t->base->version = now;
}

bool nb_written_since(const nb_tensor *t, uint32_t stamp) {
    return nb_newer(t->version, stamp) || (t->base && nb_newer(t->base->version, stamp));
}

/* Checks ndim and shape and computes the element count; 0 on error (with
 * the error recorded). */
static size_t checked_size(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                           const char *op, const char *file, int line, nb_status *status) {
    char buf[128];
    if (dt != NB_F32 && dt != NB_F64) {
        *status = NB_ERR_ARG;
        nb_set_error(tp, NB_ERR_ARG, file, line, "%s: unknown dtype %d", op, (int)dt);
        return 0;
    }
    if (ndim < 0 || ndim > NB_MAX_DIMS) {
        *status = NB_ERR_ARG;
        nb_set_error(tp, NB_ERR_ARG, file, line, "%s: %d dimensions (allowed: 0 to %d)", op,
                     ndim, NB_MAX_DIMS);
        return 0;
    }
    if (ndim > 0 && !shape) {
        *status = NB_ERR_NULL;
        nb_set_error(tp, NB_ERR_NULL, file, line, "%s: shape is NULL for %d dimensions", op,
                     ndim);
        return 0;
    }
    /* The byte count must fit in a size_t with room for the header; the
     * dtype's size is 4 or 8, so the limit is a shift, not a division. */
    size_t size = 1, limit = (SIZE_MAX - 4 * HEADER_BYTES) >> (dt == NB_F32 ? 2 : 3);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) {
            *status = NB_ERR_SHAPE;
            nb_set_error(tp, NB_ERR_SHAPE, file, line,
                         "%s: shape %s has an empty dimension (size 0 at axis %d); "
                         "empty tensors are not supported",
                         op, nb_format_shape(ndim, shape, buf, sizeof buf), d);
            return 0;
        }
        size_t product;
        if (__builtin_mul_overflow(size, shape[d], &product) || product > limit) {
            *status = NB_ERR_SHAPE;
            nb_set_error(tp, NB_ERR_SHAPE, file, line,
                         "%s: shape %s has more elements than memory can address", op,
                         nb_format_shape(ndim, shape, buf, sizeof buf));
            return 0;
        }
        size = product;
    }
    return size;
}

nb_tensor *nb_tensor_alloc(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                           const char *op, const char *file, int line) {
    nb_status status = NB_OK;
    size_t size = checked_size(tp, dt, ndim, shape, op, file, line, &status);
    if (!size) return nb_nil(status);
    size_t data_bytes = size * nb_dtype_size(dt);
    size_t header = nb_header_bytes(ndim);
    nb_tensor *t;
    void *data;
    char *name;
    if (tp && data_bytes <= SMALL_VALUES) { /* one block in the header arena */
        size_t offset = data_offset(header, data_bytes);
        /* (one element: its gradient's slot too; see NB_SLOT_BYTES) */
        t = nb_header_alloc(tp, offset + (size == 1 ? NB_SLOT_BYTES : data_bytes));
        data = t ? (char *)t + offset : NULL;
        name = nb_unnamed;
    } else if (tp) { /* the header there, the values in the tape's main arena */
        t = nb_header_alloc(tp, header);
        data = t ? nb_arena_alloc(&tp->arena, data_bytes, nb_align_for(data_bytes)) : NULL;
        name = nb_unnamed;
    } else { /* one block: header, shape, room for the name, values */
        size_t offset = data_offset(header + NB_NAME_MAX, data_bytes);
        t = nb_malloc_aligned(offset + data_bytes);
        data = t ? (char *)t + offset : NULL;
        name = t ? (char *)t + header : NULL;
        if (name) name[0] = '\0';
    }
    if (!t || !data) {
        char buf[128];
        if (!tp) nb_free(t);
        return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: cannot allocate %zu bytes for %s",
                       op, header + data_bytes, nb_format_shape(ndim, shape, buf, sizeof buf));
    }
    /* A compound literal rather than memset: for a header this small the
     * compiler's plain stores beat memset's start-up cost (measured). */
    *t = (nb_tensor){.dtype = (uint8_t)dt, .ndim = (uint8_t)ndim, .size = size, .data = data,
                     .status = NB_OK, .is_leaf = true, .home = tp ? NB_HOME_TAPE : NB_HOME_HEAP, .tape = tp, .name = name,
                     .generation = tp ? tp->generation : 0};
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    return t;
}

nb_tensor *nb_empty_(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                     const char *file, int line) {
    return nb_tensor_alloc(tp, dt, ndim, shape, "nb_empty", file, line);
}

static void fill(nb_tensor *t, double v) {
    if (t->dtype == NB_F32)
        for (size_t i = 0; i < t->size; i++) NB_F(t)[i] = (float)v;
    else
        for (size_t i = 0; i < t->size; i++) NB_D(t)[i] = v;
}

nb_tensor *nb_full_(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape, double value,
                    const char *file, int line) {
    nb_tensor *t = nb_tensor_alloc(tp, dt, ndim, shape, "nb_full", file, line);
    if (t->status == NB_OK) fill(t, value);
    return t;
}

nb_tensor *nb_from_f32_(nb_tape *tp, int ndim, const size_t *shape, const float *data,
                        const char *file, int line) {
    if (!data) return nb_fail(tp, NB_ERR_NULL, file, line, "nb_from_f32: data is NULL");
    nb_tensor *t = nb_tensor_alloc(tp, NB_F32, ndim, shape, "nb_from_f32", file, line);
    if (t->status == NB_OK) memcpy(t->data, data, t->size * sizeof(float));
    return t;
}

nb_tensor *nb_from_f64_(nb_tape *tp, int ndim, const size_t *shape, const double *data,
                        const char *file, int line) {
    if (!data) return nb_fail(tp, NB_ERR_NULL, file, line, "nb_from_f64: data is NULL");
    nb_tensor *t = nb_tensor_alloc(tp, NB_F64, ndim, shape, "nb_from_f64", file, line);
    if (t->status == NB_OK) memcpy(t->data, data, t->size * sizeof(double));
    return t;
}

nb_tensor *nb_from_array_(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                          const double *data, const char *file, int line) {
    if (!data) return nb_fail(tp, NB_ERR_NULL, file, line, "nb_from_array: data is NULL");
    nb_tensor *t = nb_tensor_alloc(tp, dt, ndim, shape, "nb_from_array", file, line);
    if (t->status != NB_OK) return t;
    NB_DISPATCH(dt, {
        T *values = t->data;
        for (size_t i = 0; i < t->size; i++) values[i] = (T)data[i];
    });
    return t;
}

nb_tensor *nb_copy_(nb_tape *tp, const nb_tensor *src, const char *file, int line) {
    if (!src) return nb_fail(tp, NB_ERR_NULL, file, line, "nb_copy: tensor is NULL");
    if (src->status != NB_OK) return nb_nil(src->status);
    if (!nb_alive(src)) return nb_fail_stale(tp, "nb_copy", 0, src, file, line);
    nb_tensor *t = nb_tensor_alloc(tp, src->dtype, src->ndim, src->shape, "nb_copy", file, line);
    if (t->status == NB_OK) {
        memcpy(t->data, src->data, t->size * nb_dtype_size(t->dtype));
        nb_tensor_set_name(t, src->name);
    }
    return t;
}

void nb_tensor_free(nb_tensor *t) {
    if (!t || t->status != NB_OK || t->home != NB_HOME_HEAP) return;
    nb_set_grad_state(t, NB_GRAD_NONE);
    nb_free(t->grad);
    nb_free(t);
}

/* ---------------------------------------------------------------- properties */

/* A usable tensor: not NULL, not errored, not gone with a tape reset. */
static bool ok(const nb_tensor *t) { return t && t->status == NB_OK && nb_alive(t); }

nb_status nb_tensor_status(const nb_tensor *t) {
    return !t ? NB_ERR_NULL : t->status != NB_OK ? (nb_status)t->status : nb_alive(t) ? NB_OK : NB_ERR_STATE;
}
nb_dtype nb_tensor_dtype(const nb_tensor *t) { return ok(t) ? t->dtype : NB_F32; }
int nb_tensor_ndim(const nb_tensor *t) { return ok(t) ? t->ndim : 0; }
size_t nb_tensor_size(const nb_tensor *t) { return ok(t) ? t->size : 0; }
const size_t *nb_tensor_shape(const nb_tensor *t) { return ok(t) ? t->shape : NULL; }

size_t nb_tensor_dim(const nb_tensor *t, int axis) {
    if (!ok(t)) return 0;
    int a = nb_norm_axis(axis, t->ndim);
    return a < 0 ? 0 : t->shape[a];
}

void nb_split_axis(const nb_tensor *t, int axis, size_t *outer, size_t *n, size_t *inner) {
    *outer = *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= t->shape[d];
    *n = t->shape[axis];
    for (int d = axis + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

char *nb_shape_string(const nb_tensor *t, char *buf, size_t bufsize) {
    if (!ok(t)) {
        snprintf(buf, bufsize, "(errored)");
        return buf;
    }
    return nb_format_shape(t->ndim, t->shape, buf, bufsize);
}

/* Names longer than NB_NAME_MAX - 1 bytes are cut, at a UTF-8 character
 * boundary.  A heap tensor writes into the room after its header; a tape
 * tensor copies into the arena (and keeps its old name if the arena cannot
 * grow). */
size_t nb_utf8_prefix(const char *s, size_t max) {
    size_t len = strnlen(s, max + 1);
    if (len <= max) return len;
    /* back up over continuation bytes (10xxxxxx) to the start of the
     * character that does not fit */
    for (len = max; len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80; len--) {
    }
    return len;
}

void nb_tensor_set_name(nb_tensor *t, const char *name) {
    if (!ok(t)) return;
    if (!name) name = "";
    size_t len = nb_utf8_prefix(name, NB_NAME_MAX - 1);
    if (nb_on_tape(t)) t->tape->kept_allocs++; /* (see nb_no_grad_end) */
    char *copy = !nb_on_tape(t) ? t->name : len ? nb_header_alloc(t->tape, len + 1) : nb_unnamed;
    if (!copy) return;
    if (copy != nb_unnamed) {
        memcpy(copy, name, len);
        copy[len] = '\0';
    }
    t->name = copy;
}

const char *nb_tensor_name(const nb_tensor *t) { return ok(t) ? t->name : ""; }

/* ---------------------------------------------------------------- values */

void *nb_tensor_data(nb_tensor *t) {
    if (!ok(t)) return NULL;
    nb_mark_written(t); /* the caller may write through it */
    return t->data;
}

const void *nb_tensor_const_data(const nb_tensor *t) { return ok(t) ? t->data : NULL; }

double nb_get(const nb_tensor *t, size_t i) {
    if (!ok(t) || i >= t->size) return NAN;
    return t->dtype == NB_F32 ? (double)NB_F(t)[i] : NB_D(t)[i];
}

void nb_set(nb_tensor *t, size_t i, double v) {
    if (!ok(t) || i >= t->size) return;
    nb_mark_written(t);
    if (t->dtype == NB_F32)
        NB_F(t)[i] = (float)v;
    else
        NB_D(t)[i] = v;
}

/* Flat index of an index tuple, or SIZE_MAX when out of range. */
static size_t flat_index(const nb_tensor *t, const size_t *index) {
    size_t flat = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (index[d] >= t->shape[d]) return SIZE_MAX;
        flat = flat * t->shape[d] + index[d];
    }
    return flat;
}

double nb_get_at(const nb_tensor *t, const size_t *index) {
    if (!ok(t) || (t->ndim && !index)) return NAN;
    return nb_get(t, flat_index(t, index));
}

void nb_set_at(nb_tensor *t, const size_t *index, double v) {
    if (!ok(t) || (t->ndim && !index)) return;
    nb_set(t, flat_index(t, index), v);
}

double nb_item(const nb_tensor *t) { return ok(t) && t->size == 1 ? nb_get(t, 0) : NAN; }

void nb_to_f64(const nb_tensor *t, double *out) {
    if (!ok(t) || !out) return;
    for (size_t i = 0; i < t->size; i++) out[i] = nb_get(t, i);
}

/* ---------------------------------------------------------------- gradients */

void nb_requires_grad(nb_tensor *t, bool on) {
    if (ok(t) && t->is_leaf) t->requires_grad = on;
}

bool nb_tensor_requires_grad(const nb_tensor *t) { return ok(t) && t->requires_grad; }

bool nb_has_grad(const nb_tensor *t) { return ok(t) && nb_grad_live(t); }

void *nb_grad_data(nb_tensor *t) {
    if (!nb_has_grad(t)) return NULL;
    if (t->grad_state == NB_GRAD_ZERO) {
        /* Zeroing is lazy (the next backward overwrites); make it real now. */
        memset(t->grad, 0, t->size * nb_dtype_size(t->dtype));
        t->grad_state = NB_GRAD_SET;
    }
    return t->grad;
}

double nb_grad_get(nb_tensor *t, size_t i) {
    if (!ok(t) || i >= t->size) return NAN;
    void *g = nb_grad_data(t);
    if (!g) return 0.0;
    return t->dtype == NB_F32 ? (double)((float *)g)[i] : ((double *)g)[i];
}

void nb_zero_grad(nb_tensor *t) {
    if (!ok(t)) return;
    if (t->grad)
        nb_set_grad_state(t, NB_GRAD_ZERO);
    else if (t->grad_state == NB_GRAD_APPLIED)
        nb_set_grad_state(t, NB_GRAD_NONE);
}

void nb_zero_grads(nb_tensor *const *params, int n) {
    for (int i = 0; params && i < n; i++) nb_zero_grad(params[i]);
}
