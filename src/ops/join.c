/*
 * Joining tensors: concat along an existing axis, stack along a new one
 * (where, which picks each element from one of two tensors, is in where.c).
 *
 * concat / stack: the output, viewed as (outer, N, inner) around the axis,
 * holds input k in positions [o_k, o_k + n_k) along it (n_k is input k's
 * size there; 1 for stack).  Backward hands each input its block of the
 * upstream gradient: dL/dx_k = dL/dy[:, o_k : o_k + n_k, :].
 */
#include "../internal.h"

#include <string.h>

/* ---------------------------------------------------------------- concat, stack */

/* Calls fn for every block: input k, outer index o, and where the block
 * starts in the output and in the input (in elements). */
#define FOR_EACH_BLOCK(e, ...)                                                                       \
    do {                                                                                             \
        size_t outer_ = 1, inner_ = 1, total_ = (e)->out->shape[(e)->axis];                          \
        for (int d = 0; d < (e)->axis; d++) outer_ *= (e)->out->shape[d];                            \
        for (int d = (e)->axis + 1; d < (e)->out->ndim; d++) inner_ *= (e)->out->shape[d];           \
        for (int k = 0, start_ = 0; k < (e)->n_in; k++) {                                            \
            nb_tensor *x = nb_entry_input(e, k);                                                     \
            size_t len = (e)->flag0 ? 1 : x->shape[(e)->axis], block = len * inner_;                 \
            for (size_t o = 0; o < outer_; o++) {                                                    \
                size_t out_at = (o * total_ + (size_t)start_) * inner_, in_at = o * block;           \
                __VA_ARGS__;                                                                         \
            }                                                                                        \
            start_ += (int)len;                                                                      \
        }                                                                                            \
    } while (0)

static void concat_forward(nb_entry *e) {
    size_t w = nb_dtype_size(e->out->dtype);
    FOR_EACH_BLOCK(e, memcpy((char *)e->out->data + out_at * w, (const char *)x->data + in_at * w, block * w));
}

static void concat_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    bool acc = false;
    void *gx_ = NULL;
    nb_tensor *current = NULL;
    FOR_EACH_BLOCK(e, {
        if (!x->requires_grad) continue;
        if (x != current || o == 0) { /* the first block of this input: where it goes */
            current = x;
            if (!(gx_ = nb_grad_target(tp, x, &acc))) return;
        }
        NB_DISPATCH(x->dtype, {
            const T *g = (const T *)e->out->grad + out_at;
            T *gx = (T *)gx_ + in_at;
            for (size_t i = 0; i < block; i++) gx[i] = acc ? gx[i] + g[i] : g[i];
        });
    });
}

/* Each input's block of G, as a slice (and, for stack, without the axis). */
static void concat_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    long start = 0;
    for (int k = 0; k < e->n_in; k++) {
        nb_tensor *x = nb_entry_input(e, k);
        long len = e->flag0 ? 1 : (long)x->shape[e->axis];
        if (x->requires_grad) {
            nb_tensor *g = nb_slice_(tp, G, e->axis, start, start + len, 1, e->file, e->line);
            grad_in[k] = e->flag0 ? nb_squeeze_(tp, g, e->axis, e->file, e->line) : g;
        }
        start += len;
    }
}

static const nb_op concat_op = {.name = "concat", .forward = concat_forward, .backward = concat_backward,
                                .derivative = {"its block of G"}, .backward_graph = concat_graph};
static const nb_op stack_op = {.name = "stack", .forward = concat_forward, .backward = concat_backward,
                               .derivative = {"its slice of G"}, .backward_graph = concat_graph};

nb_tensor *nb_concat_(nb_tape *tp, nb_tensor *const *tensors, int n, int axis, bool stack, const char *file,
                      int line) {
    const nb_op *op = stack ? &stack_op : &concat_op;
    if (n < 1 || !tensors)
        return nb_fail(tp, n < 1 ? NB_ERR_ARG : NB_ERR_NULL, file, line, "%s: %s", op->name,
                       n < 1 ? "no tensors to join" : "the list of tensors is NULL");
    nb_tensor *failed = nb_check(tp, op, file, line, n, tensors);
    if (failed) return failed;
    const nb_tensor *first = tensors[0];
    int nd = first->ndim + (stack ? 1 : 0);
    int ax = axis < 0 ? axis + nd : axis;
    char s0[128], sk[128];
    if (ax < 0 || ax >= nd || (stack && nd > NB_MAX_DIMS))
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: axis %d is out of range for %s (%d dimensions)", op->name,
                       axis, nb_format_shape(first->ndim, first->shape, s0, sizeof s0), nd);
    size_t shape[NB_MAX_DIMS], along = 0;
    for (int k = 0; k < n; k++) {
        const nb_tensor *t = tensors[k];
        bool same = t->ndim == first->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = (!stack && d == ax) || t->shape[d] == first->shape[d];
        if (!same)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: tensor %d is %s, tensor 1 is %s (%s)", op->name, k + 1,
                           nb_format_shape(t->ndim, t->shape, sk, sizeof sk),
                           nb_format_shape(first->ndim, first->shape, s0, sizeof s0),
                           stack ? "stack needs equal shapes" : "concat needs equal sizes except along the axis");
        along += stack ? 1 : t->shape[ax];
    }
    /* concat: the first's shape with the sizes along the axis added up;
     * stack: the first's shape with a new axis of n */
    for (int d = 0, k = 0; d < nd; d++) {
        shape[d] = d == ax ? along : first->shape[k];
        if (d != ax || !stack) k++;
    }
    nb_entry *e = nb_emit(tp, op, n, tensors, first->dtype, nd, shape, file, line, &failed);
    if (!e) return failed;
    e->axis = ax;
    e->flag0 = stack;
    return nb_run(e);
}
