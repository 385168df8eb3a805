/*
 * sum and mean, over all elements or along one axis.
 *
 *   y = sum_i x_i        dy/dx_i = 1
 *   y = (1/N) sum_i x_i  dy/dx_i = 1/N
 *
 * so backward spreads the upstream gradient back over the summed elements
 * (times 1/N for mean).  Along an axis, the tensor is viewed as
 * (outer, n, inner) and the axis of size n is the one reduced.  Sums run in
 * double precision whatever the dtype.
 */
#include "../internal.h"

static void sum_all_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    double total = 0;
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        for (size_t i = 0; i < x->size; i++) total += xs[i];
        *(T *)e->out->data = (T)(e->flag0 ? total / (double)x->size : total);
    });
}

static void sum_all_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx_ = nb_grad_target(tp, x, &acc);
    if (!gx_) return;
    NB_DISPATCH(x->dtype, {
        T g = *(const T *)e->out->grad;
        if (e->flag0) g /= (T)x->size;
        T *gx = gx_;
        for (size_t i = 0; i < x->size; i++) gx[i] = acc ? gx[i] + g : g;
    });
}

/* Backward graphs: G spread back over x, as ops.  sum and mean of all
 * elements: broadcast_to(G, x's shape) (times 1/N); along an axis: G with
 * the axis put back (unsqueeze, unless kept), then broadcast. */
static void sum_all_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0];
    nb_tensor *g = e->flag0 ? nb_scale_(tp, G, 1.0 / (double)x->size, e->file, e->line) : G;
    grad_in[0] = nb_broadcast_to_(tp, g, x->ndim, x->shape, e->file, e->line);
}

static void sum_axis_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0];
    nb_tensor *g = e->flag1 ? G : nb_unsqueeze_(tp, G, e->axis, e->file, e->line);
    if (e->flag0) g = nb_scale_(tp, g, 1.0 / (double)x->shape[e->axis], e->file, e->line);
    grad_in[0] = nb_broadcast_to_(tp, g, x->ndim, x->shape, e->file, e->line);
}

static const nb_op sum_op = {.name = "sum", .forward = sum_all_forward, .backward = sum_all_backward,
    .derivative = {"G spread over x"}, .elementwise = false, .backward_graph = sum_all_graph};
static const nb_op mean_op = {.name = "mean", .forward = sum_all_forward, .backward = sum_all_backward,
    .derivative = {"G/N spread over x"}, .elementwise = false, .backward_graph = sum_all_graph};

nb_tensor *nb_sum_all_(nb_tape *tp, nb_tensor *a, bool mean, const char *file, int line) {
    const nb_op *op = mean ? &mean_op : &sum_op;
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &a);
    if (failed) return failed;
    nb_entry *e = nb_emit(tp, op, 1, &a, a->dtype, 0, NULL, file, line, &failed);
    if (!e) return failed;
    e->flag0 = mean;
    return nb_run(e);
}

/* ---------------------------------------------------------------- along an axis */


static void sum_axis_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    size_t outer, n, inner;
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    double scale = e->flag0 ? 1.0 / (double)n : 1.0;
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        T *ys = e->out->data;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                double total = 0;
                for (size_t k = 0; k < n; k++) total += xs[(o * n + k) * inner + i];
                ys[o * inner + i] = (T)(total * scale);
            }
    });
}

static void sum_axis_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx_ = nb_grad_target(tp, x, &acc);
    if (!gx_) return;
    size_t outer, n, inner;
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        const T scale = e->flag0 ? (T)1 / (T)n : (T)1;
        for (size_t o = 0; o < outer; o++)
            for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < inner; i++) {
                    size_t j = (o * n + k) * inner + i;
                    T g = gy[o * inner + i] * scale;
                    gx[j] = acc ? gx[j] + g : g;
                }
    });
}

static const nb_op sum_axis_op = {.name = "sum_axis", .forward = sum_axis_forward, .backward = sum_axis_backward,
    .derivative = {"G spread along the axis"}, .elementwise = false, .backward_graph = sum_axis_graph};
static const nb_op mean_axis_op = {.name = "mean_axis", .forward = sum_axis_forward, .backward = sum_axis_backward,
    .derivative = {"G/n spread along the axis"}, .elementwise = false, .backward_graph = sum_axis_graph};

nb_tensor *nb_sum_axis_(nb_tape *tp, nb_tensor *a, int axis, bool keepdims, bool mean,
                        const char *file, int line) {
    const nb_op *op = mean ? &mean_axis_op : &sum_axis_op;
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &a);
    if (failed) return failed;
    int ax;
    failed = nb_check_axis(tp, op->name, a, axis, &ax, file, line);
    if (failed) return failed;
    size_t shape[NB_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (d != ax)
            shape[nd++] = a->shape[d];
        else if (keepdims)
            shape[nd++] = 1;
    }
    nb_entry *e = nb_emit(tp, op, 1, &a, a->dtype, nd, shape, file, line, &failed);
    if (!e) return failed;
    e->axis = ax;
    e->flag0 = mean;
    e->flag1 = keepdims;
    return nb_run(e);
}
