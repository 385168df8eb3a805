/*
 * add, sub, mul, div, maximum, minimum with NumPy broadcasting.
 *
 * Broadcasting: shapes are aligned from the right; each pair of sizes must be
 * equal or one of them 1, and a missing leading dimension counts as 1.  So
 * (4, 3) + (3,) and (4, 1) * (1, 5) broadcast, but (2, 3) + (2,) does not.
 *
 * Backward: if input a was broadcast along an axis, each of its elements was
 * used once per position along that axis, so its gradient is the *sum* of the
 * contributions over that axis (the chain rule adds over every use):
 *     dL/da[j] = sum over outputs i that read a[j] of  dL/dy[i] * dy[i]/da[j]
 *
 * The loops walk the output in rows: dimensions that are contiguous in all
 * three tensors are merged first, so the common cases (same shapes, a bias
 * row added to a matrix) become a few long rows.
 */
#include "../internal.h"

#include <string.h>

/* ---------------------------------------------------------------- plan */

typedef struct {
    int nd;                      /* merged dimensions, >= 1 */
    size_t shape[NB_MAX_DIMS];   /* of the output */
    size_t sa[NB_MAX_DIMS];      /* element strides of a and b; 0 where broadcast */
    size_t sb[NB_MAX_DIMS];
} bcast_plan;

static void make_plan(const nb_tensor *a, const nb_tensor *b, const nb_tensor *out,
                      bcast_plan *p) {
    int n = out->ndim;
    size_t sa[NB_MAX_DIMS] = {0}, sb[NB_MAX_DIMS] = {0};
    nb_broadcast_strides(a, n, sa);
    nb_broadcast_strides(b, n, sb);
    if (n == 0) { /* both scalars */
        p->nd = 1;
        p->shape[0] = 1;
        p->sa[0] = p->sb[0] = 1;
        return;
    }
    /* Merge dimension d into the one after it when, for a and b alike, a step
     * along d equals a full run along d+1 (always true for the output). */
    int m = 0;
    p->shape[0] = out->shape[0];
    p->sa[0] = sa[0];
    p->sb[0] = sb[0];
    for (int d = 1; d < n; d++) {
        if (p->sa[m] == sa[d] * out->shape[d] && p->sb[m] == sb[d] * out->shape[d]) {
            p->shape[m] *= out->shape[d];
            p->sa[m] = sa[d];
            p->sb[m] = sb[d];
        } else {
            m++;
            p->shape[m] = out->shape[d];
            p->sa[m] = sa[d];
            p->sb[m] = sb[d];
        }
    }
    p->nd = m + 1;
}

/* No broadcasting at all: both inputs have the output's size. */
static bool same_shapes(const nb_entry *e) {
    return e->in[0]->size == e->out->size && e->in[1]->size == e->out->size;
}

/* Visits the output row by row (a row runs along the last merged dimension);
 * for each row, oa/ob/oo are the offsets of its first element in a, b and
 * the output.  ia/ib are the strides along the row (0 or 1). */
#define FOR_EACH_ROW(p, ...)                                                               \
    do {                                                                                    \
        size_t idx_[NB_MAX_DIMS] = {0}, oa = 0, ob = 0, oo = 0;                             \
        const size_t n_ = (p)->shape[(p)->nd - 1];                                          \
        const size_t ia = (p)->sa[(p)->nd - 1], ib = (p)->sb[(p)->nd - 1];                  \
        (void)ia, (void)ib;                                                                 \
        for (;;) {                                                                          \
            __VA_ARGS__;                                                                    \
            oo += n_;                                                                       \
            int d_ = (p)->nd - 2;                                                           \
            for (; d_ >= 0; d_--) {                                                         \
                oa += (p)->sa[d_];                                                          \
                ob += (p)->sb[d_];                                                          \
                if (++idx_[d_] < (p)->shape[d_]) break;                                     \
                oa -= (p)->sa[d_] * (p)->shape[d_];                                         \
                ob -= (p)->sb[d_] * (p)->shape[d_];                                         \
                idx_[d_] = 0;                                                               \
            }                                                                               \
            if (d_ < 0) break;                                                              \
        }                                                                                   \
    } while (0)

/* An inner loop over one row, specialised on which input is broadcast along
 * it, so that the compiler sees unit strides.  EXPR uses A(k), B(k) and k. */
#define ROW_LOOP(n, ia, ib, ...)                                                           \
    do {                                                                                    \
        if (ia && ib) {                                                                     \
            for (size_t k = 0; k < (n); k++) { const size_t ka = k, kb = k; __VA_ARGS__; }         \
        } else if (ib) {                                                                    \
            for (size_t k = 0; k < (n); k++) { const size_t ka = 0, kb = k; __VA_ARGS__; }         \
        } else if (ia) {                                                                    \
            for (size_t k = 0; k < (n); k++) { const size_t ka = k, kb = 0; __VA_ARGS__; }         \
        } else {                                                                            \
            for (size_t k = 0; k < (n); k++) { const size_t ka = 0, kb = 0; __VA_ARGS__; }         \
        }                                                                                   \
    } while (0)

/* ---------------------------------------------------------------- ops */

/* Defines the forward of an op from EXPR in terms of a and b. */
#define BINARY_FORWARD(name, EXPR)                                                          \
    static void name##_forward_any(nb_entry *e);                                            \
    static void name##_forward(nb_entry *e) {                                               \
        if (e->out->size != 1) {                                                            \
            name##_forward_any(e);                                                          \
            return;                                                                         \
        }                                                                                   \
        NB_DISPATCH(e->out->dtype, { /* scalar code: one element, nothing to plan */        \
            const T a = *(const T *)e->in[0]->data, b = *(const T *)e->in[1]->data;        \
            *(T *)e->out->data = (EXPR);                                                    \
        });                                                                                 \
    }                                                                                       \
    static void name##_forward_any(nb_entry *e) {                                           \
        bcast_plan p;                                                                       \
        bool same = same_shapes(e);                                                         \
        if (!same) make_plan(e->in[0], e->in[1], e->out, &p);                               \
        NB_DISPATCH(e->out->dtype, {                                                        \
            const T *A = e->in[0]->data, *B = e->in[1]->data;                               \
            T *Y = e->out->data;                                                            \
            if (same) {                                                                     \
                for (size_t k = 0; k < e->out->size; k++) {                                 \
                    const T a = A[k], b = B[k];                                             \
                    Y[k] = (EXPR);                                                          \
                }                                                                           \
                return;                                                                     \
            }                                                                               \
            FOR_EACH_ROW(&p, {                                                              \
                const T *ra = A + oa, *rb = B + ob;                                         \
                T *ry = Y + oo;                                                             \
                ROW_LOOP(n_, ia, ib, {                                                      \
                    const T a = ra[ka], b = rb[kb];                                         \
                    ry[k] = (EXPR);                                                         \
                });                                                                         \
            });                                                                             \
        });                                                                                 \
    }

/* Adds dL/dy * (dy/d input) into the gradient of input `which` (0 for a, 1 for
 * b), where DA/DB are the local derivatives in terms of a, b, y, and ONE_A/
 * ONE_B say whether they are exactly 1.  An input that
 * was not broadcast gets each element once and may be overwritten on the
 * first contribution; a broadcast one collects sums and is zeroed first. */
#define BINARY_BACKWARD(name, DA, DB, ONE_A, ONE_B)                                         \
    static void name##_backward_any(nb_entry *e);                                           \
    static void name##_backward(nb_entry *e) {                                              \
        if (e->out->size != 1) {                                                            \
            name##_backward_any(e);                                                         \
            return;                                                                         \
        }                                                                                   \
        /* scalar code: one element, the same arithmetic as the loop below */               \
        nb_tape *tp = e->out->tape;                                                         \
        for (int which = 0; which < 2; which++) {                                           \
            nb_tensor *x = e->in[which];                                                    \
            if (!x->requires_grad) continue;                                                \
            if ((which ? ONE_B : ONE_A) && nb_grad_share(tp, x, e->out)) continue;          \
            bool acc;                                                                       \
            void *gx_ = nb_grad_target(tp, x, &acc);                                        \
            if (!gx_) return;                                                               \
            NB_DISPATCH(e->out->dtype, {                                                    \
                const T a = *(const T *)e->in[0]->data, b = *(const T *)e->in[1]->data;    \
                const T y = *(const T *)e->out->data;                                       \
                (void)a, (void)b, (void)y;                                                  \
                const T g = *(const T *)e->out->grad;                                       \
                const T d = which == 0 ? (DA) : (DB);          \
                T *GX = gx_;                                                                \
                *GX = acc ? *GX + d : d;                                                    \
            });                                                                             \
        }                                                                                   \
    }                                                                                       \
    static void name##_backward_any(nb_entry *e) {                                          \
        nb_tape *tp = e->out->tape;                                                         \
        bcast_plan p;                                                                       \
        bool same = same_shapes(e);                                                         \
        if (!same) make_plan(e->in[0], e->in[1], e->out, &p);                               \
        for (int which = 0; which < 2; which++) {                                           \
            nb_tensor *x = e->in[which];                                                    \
            if (!x->requires_grad) continue;                                                \
            /* dy/dx = 1: the gradient is the output's, shared without a copy */            \
            if ((which ? ONE_B : ONE_A) && nb_grad_share(tp, x, e->out)) continue;          \
            bool acc = true;                                                                \
            void *gx_ = x->size == e->out->size ? nb_grad_target(tp, x, &acc)               \
                                                : nb_grad_target_zeroed(tp, x);             \
            if (!gx_) return;                                                               \
            NB_DISPATCH(e->out->dtype, {                                                    \
                const T *A = e->in[0]->data, *B = e->in[1]->data, *Y = e->out->data;        \
                const T *G = e->out->grad;                                                  \
                T *GX = gx_;                                                                \
                if (same) {                                                                 \
                    for (size_t k = 0; k < e->out->size; k++) {                             \
                        const T a = A[k], b = B[k], y = Y[k];                               \
                        (void)a, (void)b, (void)y;                                          \
                        const T g = G[k];                                                           \
                        const T d = which == 0 ? (DA) : (DB);                      \
                        GX[k] = acc ? GX[k] + d : d;                                        \
                    }                                                                       \
                } else                                                                      \
                FOR_EACH_ROW(&p, {                                                          \
                    const T *ra = A + oa, *rb = B + ob, *ry = Y + oo, *rg = G + oo;         \
                    T *rgx = GX + (which ? ob : oa);                                        \
                    if (which == 0) {                                                       \
                        ROW_LOOP(n_, ia, ib, {                                              \
                            const T a = ra[ka], b = rb[kb], y = ry[k];                      \
                            (void)a, (void)b, (void)y;                                      \
                            const T g = rg[k];                                          \
                            const T d = DA;                                       \
                            rgx[ka] = acc ? rgx[ka] + d : d;                                \
                        });                                                                 \
                    } else {                                                                \
                        ROW_LOOP(n_, ia, ib, {                                              \
                            const T a = ra[ka], b = rb[kb], y = ry[k];                      \
                            (void)a, (void)b, (void)y;                                      \
                            const T g = rg[k];                                          \
                            const T d = DB;                                       \
                            rgx[kb] = acc ? rgx[kb] + d : d;                                \
                        });                                                                 \
                    }                                                                       \
                });                                                                         \
            });                                                                             \
        }                                                                                   \
    }

/* y = a + b:   dy/da = 1,    dy/db = 1 */
BINARY_FORWARD(add, a + b)
BINARY_BACKWARD(add, g, g, true, true)
/* y = a - b:   dy/da = 1,    dy/db = -1 */
BINARY_FORWARD(sub, a - b)
BINARY_BACKWARD(sub, g, -g, true, false)
/* y = a * b:   dy/da = b,    dy/db = a */
BINARY_FORWARD(mul, a * b)
BINARY_BACKWARD(mul, g * b, g * a, false, false)
/* y = a / b:   dy/da = 1/b,  dy/db = -a/b² = -y/b */
BINARY_FORWARD(div, a / b)
BINARY_BACKWARD(div, g * (1 / b), g * (-y / b), false, false)

/* y = maximum(a, b): dy/da = 1 where a > b, 0 where a < b; at a tie the
 * gradient is split, 1/2 each (PyTorch's convention).  A NaN on either
 * side gives NaN, as in PyTorch, and then both sides get the whole
 * gradient, as PyTorch's formula does (G, masked to 0 only where the other
 * side is strictly larger): 1 - [a<b] - ½[a=b].
 * For minimum, the same with the order reversed. */
/* The share of G that side `mine` gets (T is the element type in scope). */
#define SHARE(mine, other, larger) \
    ((((larger) ? (mine) < (other) : (mine) > (other))) ? (T)0 : (mine) == (other) ? (T)0.5 : (T)1)
/* That share of g, chosen rather than multiplied: the losing side gets 0
 * even where g is inf or NaN (0 · inf would be NaN), as PyTorch's
 * masked_fill gives. */
#define SHARE_OF(g, mine, other, larger) \
    (SHARE(mine, other, larger) == (T)0 ? (T)0 : (g) * SHARE(mine, other, larger))
BINARY_FORWARD(maximum, a != a || a > b ? a : b)
BINARY_BACKWARD(maximum, SHARE_OF(g, a, b, true), SHARE_OF(g, b, a, true), false, false)
BINARY_FORWARD(minimum, a != a || a < b ? a : b)
BINARY_BACKWARD(minimum, SHARE_OF(g, a, b, false), SHARE_OF(g, b, a, false), false, false)

/* ---------------------------------------------------------------- backward graphs */

/* dL/da and dL/db as ops (differentiable again), summed back to each
 * input's shape where it was broadcast. */
static void finish(nb_entry *e, nb_tensor **grad_in, nb_tensor *ga, nb_tensor *gb) {
    nb_tape *tp = e->out->tape;
    nb_tensor *a = e->in[0], *b = e->in[1];
    if (ga && a->requires_grad) grad_in[0] = nb_sum_to_(tp, ga, a->ndim, a->shape, e->file, e->line);
    if (gb && b->requires_grad) grad_in[1] = nb_sum_to_(tp, gb, b->ndim, b->shape, e->file, e->line);
}

#define AT e->file, e->line
static void add_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) { finish(e, grad_in, G, G); }
static void sub_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    finish(e, grad_in, G, e->in[1]->requires_grad ? nb_neg_(e->out->tape, G, AT) : NULL);
}
static void mul_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    finish(e, grad_in, e->in[0]->requires_grad ? nb_mul_(tp, G, e->in[1], AT) : NULL,
           e->in[1]->requires_grad ? nb_mul_(tp, G, e->in[0], AT) : NULL);
}
/* dL/da = G / b;  dL/db = -G y / b (y = a/b) */
static void div_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *ga = e->in[0]->requires_grad ? nb_div_(tp, G, e->in[1], AT) : NULL;
    nb_tensor *gb = e->in[1]->requires_grad ? nb_neg_(tp, nb_div_(tp, nb_mul_(tp, G, e->out, AT), e->in[1], AT), AT)
                                            : NULL;
    finish(e, grad_in, ga, gb);
}

/* maximum and minimum: G times a constant mask (1, 1/2 at a tie, 0; 1 by
 * a NaN), whose own derivative is 0, as PyTorch's; where the mask is 0 the
 * result is chosen to be 0 with where() (G · 0 is NaN for an inf G). */
static nb_tensor *selection_mask(nb_entry *e, int which, bool larger) {
    nb_tape *tp = e->out->tape;
    nb_tensor *mask = nb_tensor_alloc(tp, e->out->dtype, e->out->ndim, e->out->shape, e->op->name, AT);
    if (mask->status != NB_OK) return mask;
    size_t strides[2][NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0}, off[2] = {0};
    nb_broadcast_strides(e->in[0], e->out->ndim, strides[0]);
    nb_broadcast_strides(e->in[1], e->out->ndim, strides[1]);
    NB_DISPATCH(e->out->dtype, {
        const T *A = e->in[0]->data, *B = e->in[1]->data;
        T *m = mask->data;
        for (size_t i = 0; i < e->out->size; i++, nb_odometer_next(e->out->ndim, e->out->shape, idx, 2, off, strides)) {
            T mine = which ? B[off[1]] : A[off[0]], other = which ? A[off[0]] : B[off[1]];
            m[i] = SHARE(mine, other, larger);
        }
    });
    return mask;
}

static nb_tensor *selected_share(nb_entry *e, nb_tensor *G, int which, bool larger) {
    nb_tape *tp = e->out->tape;
    if (!e->in[which]->requires_grad) return NULL;
    nb_tensor *mask = selection_mask(e, which, larger);
    nb_tensor *zero = nb_full_(tp, e->out->dtype, 0, NULL, 0, AT);
    return nb_where_(tp, mask, nb_mul_(tp, G, mask, AT), zero, AT);
}

static void select_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in, bool larger) {
    finish(e, grad_in, selected_share(e, G, 0, larger), selected_share(e, G, 1, larger));
}
static void maximum_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) { select_graph(e, G, grad_in, true); }
static void minimum_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) { select_graph(e, G, grad_in, false); }
#undef AT

static const nb_op add_op = {.name = "add", .forward = add_forward, .backward = add_backward,
    .derivative = {"1", "1"}, .elementwise = true, .backward_graph = add_graph};
static const nb_op sub_op = {.name = "sub", .forward = sub_forward, .backward = sub_backward,
    .derivative = {"1", "-1"}, .elementwise = true, .backward_graph = sub_graph};
static const nb_op mul_op = {.name = "mul", .forward = mul_forward, .backward = mul_backward,
    .derivative = {"b", "a"}, .elementwise = true, .backward_graph = mul_graph};
static const nb_op div_op = {.name = "div", .forward = div_forward, .backward = div_backward,
    .derivative = {"1/b", "-a/b²"}, .elementwise = true, .backward_graph = div_graph};

static nb_tensor *binary(nb_tape *tp, const nb_op *op, nb_tensor *a, nb_tensor *b,
                         const char *file, int line) {
    nb_tensor *in[2] = {a, b};
    nb_tensor *failed = nb_check(tp, op, file, line, 2, in);
    if (failed) return failed;
    bool same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
    if (same) { /* the common case: nothing to broadcast */
        nb_entry *e = nb_emit_like(tp, op, 2, in, a, file, line, &failed);
        return e ? nb_run(e) : failed;
    }
    int nd;
    size_t shape[NB_MAX_DIMS];
    if (!nb_broadcast_shape(2, in, &nd, shape)) {
        char sa[128], sb[128];
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: shapes %s and %s do not broadcast (aligned from the right, each "
                       "pair of sizes must be equal or 1)",
                       op->name, nb_format_shape(a->ndim, a->shape, sa, sizeof sa),
                       nb_format_shape(b->ndim, b->shape, sb, sizeof sb));
    }
    nb_entry *e = nb_emit(tp, op, 2, in, a->dtype, nd, shape, file, line, &failed);
    return e ? nb_run(e) : failed;
}


static const nb_op maximum_op = {.name = "maximum", .forward = maximum_forward, .backward = maximum_backward,
    .derivative = {"[a>b] + ½[a=b]", "[b>a] + ½[a=b]"}, .elementwise = true, .backward_graph = maximum_graph};
static const nb_op minimum_op = {.name = "minimum", .forward = minimum_forward, .backward = minimum_backward,
    .derivative = {"[a<b] + ½[a=b]", "[b<a] + ½[a=b]"}, .elementwise = true, .backward_graph = minimum_graph};

nb_tensor *nb_maximum_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    return binary(tp, &maximum_op, a, b, file, line);
}
nb_tensor *nb_minimum_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    return binary(tp, &minimum_op, a, b, file, line);
}
nb_tensor *nb_add_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    return binary(tp, &add_op, a, b, file, line);
}
nb_tensor *nb_sub_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    return binary(tp, &sub_op, a, b, file, line);
}
nb_tensor *nb_mul_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    return binary(tp, &mul_op, a, b, file, line);
}
nb_tensor *nb_div_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    return binary(tp, &div_op, a, b, file, line);
}
