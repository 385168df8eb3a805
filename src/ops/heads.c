/*
 * Attention heads: split and merge, each one copy (forward and backward),
 * in place of a reshape, a permute and, for a fused qkv projection, slices.
 *
 *   split_heads(x, H), x (..., T, H·hd):       y (..., H, T, hd)
 *       y[r, h, t, i] = x[r, t, h·hd + i]
 *   part p of P (nb_split_qkv: P = 3), x (..., T, P·H·hd):
 *       y[r, h, t, i] = x[r, t, (p·H + h)·hd + i]
 *   merge_heads(x), x (..., H, T, hd):         y (..., T, H·hd)
 *       y[r, t, h·hd + i] = x[r, h, t, i]
 *
 * r runs over the leading axes.  Each output element is one input element,
 * so each backward moves G back to where the element came from:
 *   split:  dL/dx = merge_heads(G), in part p of the last axis (0 elsewhere)
 *   merge:  dL/dx = split_heads(G, H)
 * which are also the backward graphs (with a pad for a part).  Every
 * element is written once, by one thread: the bits do not depend on the
 * thread count.
 */
#include "../internal.h"

#include <string.h>

/* x's flat layout (R, T, P, H, hd) and the split one (R, H, T, hd). */
typedef struct {
    size_t rows, T, parts, part, H, hd;
} heads_plan;

typedef struct {
    const heads_plan *p;
    nb_dtype dt;
    const char *src;
    char *dst;
    bool to_split; /* flat -> split; else split -> flat */
    bool acc;      /* add into dst */
} heads_job;

/* Offsets, in elements, of block (r, h, t) in each layout. */
static size_t flat_at(const heads_plan *p, size_t r, size_t h, size_t t) {
    return ((r * p->T + t) * p->parts + p->part) * p->H * p->hd + h * p->hd;
}
static size_t split_at(const heads_plan *p, size_t r, size_t h, size_t t) { return ((r * p->H + h) * p->T + t) * p->hd; }

/* Blocks begin..end of hd elements, in the destination's order: b = (r H +
 * h) T + t into the split layout, b = (r T + t) H + h into the flat one;
 * the indices are found once and then counted on. */
NB_VECTOR_CLONES static void move_blocks(void *ctx, size_t begin, size_t end) {
    const heads_job *j = ctx;
    const heads_plan *p = j->p;
    size_t w = nb_dtype_size(j->dt), hd = p->hd;
    size_t inner = j->to_split ? p->T : p->H, middle = j->to_split ? p->H : p->T;
    size_t a = begin % inner, m = begin / inner % middle, r = begin / inner / middle;
    for (size_t b = begin; b < end; b++) {
        size_t h = j->to_split ? m : a, t = j->to_split ? a : m;
        size_t from = j->to_split ? flat_at(p, r, h, t) : split_at(p, r, h, t);
        size_t to = j->to_split ? split_at(p, r, h, t) : flat_at(p, r, h, t);
        if (!j->acc) memcpy(j->dst + to * w, j->src + from * w, hd * w);
        else
            NB_DISPATCH(j->dt, {
                const T *s = (const T *)(const void *)j->src + from;
                T *d = (T *)(void *)j->dst + to;
                for (size_t i = 0; i < hd; i++) d[i] += s[i];
            });
        if (++a == inner) {
            a = 0;
            if (++m == middle) m = 0, r++;
        }
    }
}

static void move(const heads_plan *p, nb_dtype dt, const void *src, void *dst, bool to_split, bool acc) {
    heads_job j = {p, dt, src, dst, to_split, acc};
    nb_parallel(p->rows * p->H * p->T, NB_PARALLEL_GRAIN / p->hd + 1, move_blocks, &j);
}

/* ---------------------------------------------------------------- split */

static void split_forward(nb_entry *e) { move(e->saved, e->out->dtype, e->in[0]->data, e->out->data, true, false); }

/* The first contribution to a part's x: zeros where the other parts go
 * (they add theirs), rows begin..end of (R·T) rows. */
typedef struct {
    const heads_plan *p;
    size_t w;
    char *gx;
} zero_job;

static void zero_other_parts(void *ctx, size_t begin, size_t end) {
    const zero_job *z = ctx;
    size_t D = z->p->H * z->p->hd * z->w;
    for (size_t row = begin; row < end; row++)
        for (size_t q = 0; q < z->p->parts; q++)
            if (q != z->p->part) memset(z->gx + (row * z->p->parts + q) * D, 0, D);
}

static void split_backward(nb_entry *e) {
    const heads_plan *p = e->saved;
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx = nb_grad_target(e->out->tape, x, &acc);
    if (!gx) return;
    if (!acc && p->parts > 1) { /* this part is copied in, the others' places zeroed */
        zero_job z = {p, nb_dtype_size(x->dtype), gx};
        nb_parallel(p->rows * p->T, NB_PARALLEL_GRAIN / (p->H * p->hd * p->parts) + 1, zero_other_parts, &z);
    }
    move(p, x->dtype, e->out->grad, gx, false, acc);
}

static void split_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    const heads_plan *p = e->saved;
    nb_tape *tp = e->out->tape;
    nb_tensor *g = nb_merge_heads_(tp, G, e->file, e->line);
    if (p->parts > 1) { /* zeros around part p of the last axis */
        size_t pads[2 * NB_MAX_DIMS] = {0}, D = p->H * p->hd;
        size_t last = (size_t)e->in[0]->ndim - 1;
        pads[2 * last] = p->part * D;
        pads[2 * last + 1] = (p->parts - 1 - p->part) * D;
        g = nb_pad_(tp, g, pads, e->file, e->line);
    }
    grad_in[0] = g;
}

static void split_describe(const nb_op_call *e, char *buf, size_t size) {
    const heads_plan *p = e->saved;
    if (p->parts > 1) snprintf(buf, size, "%zu heads, part %zu of %zu", p->H, p->part + 1, p->parts);
    else snprintf(buf, size, "%zu heads", p->H);
}

static const nb_op split_op = {.name = "split_heads", .forward = split_forward, .backward = split_backward,
                               .derivative = {"merge_heads(G)"}, .backward_graph = split_graph,
                               .describe = split_describe};
static const nb_op qkv_op = {.name = "split_qkv", .forward = split_forward, .backward = split_backward,
                             .derivative = {"merge_heads(G) in its third"}, .backward_graph = split_graph,
                             .describe = split_describe};

static nb_tensor *split(nb_tape *tp, const nb_op *op, nb_tensor *x, int heads, int parts, int part, const char *file,
                        int line) {
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &x);
    if (failed) return failed;
    char sx[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    if (x->ndim < 2 || x->ndim >= NB_MAX_DIMS)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: x %s must be (..., T, H·hd), with 2 to %d axes", op->name, sx, NB_MAX_DIMS - 1);
    if (heads < 1 || parts < 1 || part < 0 || part >= parts)
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "%s: %d heads, part %d of %d: heads and parts must be at least 1, the part in [0, %d)",
                       op->name, heads, part, parts, parts);
    size_t last = x->shape[x->ndim - 1], per = (size_t)parts * (size_t)heads;
    if (last % per)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: the last axis of %s (%zu) is not a multiple of %s%d heads", op->name, sx, last,
                       parts > 1 ? (parts == 3 ? "3 × " : "parts × ") : "", heads);
    heads_plan *p = nb_tape_alloc(tp, sizeof *p);
    if (!p) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", op->name);
    int nd = x->ndim;
    *p = (heads_plan){.T = x->shape[nd - 2], .parts = (size_t)parts, .part = (size_t)part, .H = (size_t)heads,
                      .hd = last / per};
    p->rows = x->size / (p->T * last);
    size_t shape[NB_MAX_DIMS];
    for (int d = 0; d < nd - 2; d++) shape[d] = x->shape[d];
    shape[nd - 2] = p->H, shape[nd - 1] = p->T, shape[nd] = p->hd;
    nb_entry *e = nb_emit(tp, op, 1, &x, x->dtype, nd + 1, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = p;
    return nb_run(e);
}

nb_tensor *nb_split_heads_(nb_tape *tp, nb_tensor *x, int heads, int parts, int part, const char *file, int line) {
    return split(tp, &split_op, x, heads, parts, part, file, line);
}

nb_status nb_split_qkv_(nb_tape *tp, nb_tensor *qkv, int heads, nb_tensor **out, const char *file, int line) {
    if (!out) return nb_tensor_status(nb_fail(tp, NB_ERR_NULL, file, line, "split_qkv: out (three tensors) is NULL"));
    nb_status st = NB_OK;
    for (int i = 0; i < 3; i++) {
        out[i] = split(tp, &qkv_op, qkv, heads, 3, i, file, line);
        if (st == NB_OK) st = nb_tensor_status(out[i]);
    }
    return st;
}

/* ---------------------------------------------------------------- merge */

static void merge_forward(nb_entry *e) { move(e->saved, e->out->dtype, e->in[0]->data, e->out->data, false, false); }

static void merge_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx = nb_grad_target(e->out->tape, x, &acc);
    if (!gx) return;
    move(e->saved, x->dtype, e->out->grad, gx, true, acc);
}

static void merge_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    const heads_plan *p = e->saved;
    grad_in[0] = nb_split_heads_(e->out->tape, G, (int)p->H, 1, 0, e->file, e->line);
}

static void merge_describe(const nb_op_call *e, char *buf, size_t size) {
    snprintf(buf, size, "%zu heads", ((const heads_plan *)e->saved)->H);
}

static const nb_op merge_op = {.name = "merge_heads", .forward = merge_forward, .backward = merge_backward,
                               .derivative = {"split_heads(G)"}, .backward_graph = merge_graph,
                               .describe = merge_describe};

nb_tensor *nb_merge_heads_(nb_tape *tp, nb_tensor *x, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &merge_op, file, line, 1, &x);
    if (failed) return failed;
    if (x->ndim < 3) {
        char sx[128];
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "merge_heads: x %s must be (..., H, T, hd), with 3 axes or more",
                       nb_format_shape(x->ndim, x->shape, sx, sizeof sx));
    }
    int nd = x->ndim;
    size_t H = x->shape[nd - 3], T = x->shape[nd - 2], hd = x->shape[nd - 1];
    if (H > INT32_MAX) {
        char sx[128];
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "merge_heads: x %s has more than 2^31 - 1 heads",
                       nb_format_shape(x->ndim, x->shape, sx, sizeof sx));
    }
    heads_plan *p = nb_tape_alloc(tp, sizeof *p);
    if (!p) return nb_fail(tp, NB_ERR_NOMEM, file, line, "merge_heads: out of memory");
    *p = (heads_plan){.rows = x->size / (H * T * hd), .T = T, .parts = 1, .part = 0, .H = H, .hd = hd};
    size_t shape[NB_MAX_DIMS];
    for (int d = 0; d < nd - 3; d++) shape[d] = x->shape[d];
    shape[nd - 3] = T, shape[nd - 2] = H * hd;
    nb_entry *e = nb_emit(tp, &merge_op, 1, &x, x->dtype, nd - 1, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = p;
    return nb_run(e);
}
