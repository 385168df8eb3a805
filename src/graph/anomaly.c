/*
 * Anomaly mode: finding the op that first made a NaN or an infinity.
 *
 * A NaN spreads through everything computed from it, so by the time a loss
 * reads NaN the cause is far away.  In anomaly mode each op's result is
 * checked as soon as it is computed, and each gradient as soon as backward
 * writes it; the first non-finite value errors the tape with the op's name,
 * its call site, the element, and its inputs' statistics.
 */
#include "../internal.h"

#include <math.h>
#include <stdio.h>

void nb_tape_set_anomaly_mode(nb_tape *tp, bool on) {
    if (tp) tp->anomaly = on;
}

/* Index of the first NaN or infinity among n values, or n if none. */
static size_t first_bad(nb_dtype dt, const void *values, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double v = dt == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i];
        if (!isfinite(v)) return i;
    }
    return n;
}

static double at(nb_dtype dt, const void *values, size_t i) {
    return dt == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i];
}

/* "input 1 (2, 3): min -1, mean 0.2, max 4; input 2 ..." */
static void describe_inputs(const nb_entry *e, char *buf, size_t n) {
    size_t used = 0;
    for (int i = 0; i < e->n_in && used < n; i++) {
        const nb_tensor *x = nb_entry_input(e, i);
        char shape[96];
        nb_stats s = nb_compute_stats(x->dtype, x->size, x->data);
        int w = snprintf(buf + used, n - used, "%sinput %d %s: min %g, mean %g, max %g%s", i ? "; " : "", i + 1,
                         nb_format_shape(x->ndim, x->shape, shape, sizeof shape), s.min, s.mean, s.max,
                         s.nonfinite ? " (has non-finite values)" : "");
        if (w < 0) break;
        used += (size_t)w;
    }
}

nb_tensor *nb_anomaly_forward(nb_tape *tp, const nb_entry *e) {
    char inputs[384], shape[96];
    /* A leaf input that holds NaN came from outside the tape: say so. */
    for (int i = 0; i < e->n_in; i++) {
        const nb_tensor *x = nb_entry_input(e, i);
        size_t k = first_bad(x->dtype, x->data, x->size);
        if (x->is_leaf && k < x->size) {
            nb_set_error(tp, NB_ERR_VALUE, e->file, e->line,
                         "anomaly: input %d of %s (%s%s%s, a tensor from outside the tape, shape %s) holds %g "
                         "at element %zu",
                         i + 1, e->op->name, x->name[0] ? "'" : "", x->name[0] ? x->name : "unnamed",
                         x->name[0] ? "'" : "", nb_format_shape(x->ndim, x->shape, shape, sizeof shape),
                         at(x->dtype, x->data, k), k);
            return nb_nil(NB_ERR_VALUE);
        }
    }
    size_t k = first_bad(e->out->dtype, e->out->data, e->out->size);
    if (k == e->out->size) return e->out;
    describe_inputs(e, inputs, sizeof inputs);
    nb_set_error(tp, NB_ERR_VALUE, e->file, e->line,
                 "anomaly: %s produced %g at element %zu of its %s result; %s", e->op->name,
                 at(e->out->dtype, e->out->data, k), k,
                 nb_format_shape(e->out->ndim, e->out->shape, shape, sizeof shape), inputs);
    return nb_nil(NB_ERR_VALUE);
}

bool nb_anomaly_backward(nb_tape *tp, const nb_entry *e) {
    for (int i = 0; i < e->n_in; i++) {
        const nb_tensor *x = nb_entry_input(e, i);
        if (!x->requires_grad || !nb_grad_live(x)) continue;
        size_t k = first_bad(x->dtype, x->grad, x->size);
        if (k == x->size) continue;
        char inputs[384];
        describe_inputs(e, inputs, sizeof inputs);
        nb_set_error(tp, NB_ERR_VALUE, e->file, e->line,
                     "anomaly: the backward of %s made the gradient of input %d %g at element %zu; %s", e->op->name,
                     i + 1, at(x->dtype, x->grad, k), k, inputs);
        return false;
    }
    return true;
}
