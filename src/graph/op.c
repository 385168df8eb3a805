/*
 * The op interface of include/nabla_op.h: recording a call of any op
 * definition, and what its callbacks can ask of the call.
 *
 * Built-in ops in src/ops/ are the same nb_op_defs; most of them record
 * through the inline nb_emit() of internal.h rather than nb_op(), which
 * saves a function call and the parameter copy on every call (a tiny op's
 * whole cost is about 25 ns, so it shows), and reach their inputs as
 * e->in[k].  The ops in src/ops/functions.c go through here, as a user's
 * would.
 */
#include "../internal.h"

#include <stdarg.h>
#include <string.h>

/* A view's shape: as nb_tensor_alloc checks an output's (dimensions, NULL,
 * empty, a count that overflows), then the count, which must be its
 * input's.  NULL when it can be, else the errored tensor. */
static nb_tensor *check_view(nb_tape *tp, const nb_op_def *def, const nb_tensor *src, nb_dtype dtype, int ndim,
                             const size_t *shape, const char *file, int line) {
    char want[128], have[128];
    if (!src)
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: a view needs an input (input 1, whose storage it shares)",
                       def->name);
    if (ndim < 0 || ndim > NB_MAX_DIMS)
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: %d dimensions (allowed: 0 to %d)", def->name, ndim,
                       NB_MAX_DIMS);
    if (ndim > 0 && !shape)
        return nb_fail(tp, NB_ERR_NULL, file, line, "%s: shape is NULL for %d dimensions", def->name, ndim);
    nb_format_shape(ndim, shape, want, sizeof want);
    nb_format_shape(src->ndim, src->shape, have, sizeof have);
    if (dtype != src->dtype)
        return nb_fail(tp, NB_ERR_DTYPE, file, line, "%s: a view keeps its input's dtype (%s), not %s", def->name,
                       src->dtype == NB_F32 ? "float32" : "float64", dtype == NB_F32 ? "float32" : "float64");
    size_t size = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: view shape %s has an empty dimension (size 0 at axis %d); empty tensors are not "
                           "supported", def->name, want, d);
        if (__builtin_mul_overflow(size, shape[d], &size))
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: view shape %s has more elements than memory can address (input 1 %s has %zu)",
                           def->name, want, have, src->size);
    }
    if (size != src->size)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: a view must have its input's number of elements: shape %s has %zu, input 1 %s has %zu",
                       def->name, want, size, have, src->size);
    return NULL;
}

nb_tensor *nb_op_(nb_tape *tp, const nb_op_def *def, nb_tensor *const *inputs, int n_inputs, nb_dtype dtype,
                  int ndim, const size_t *shape, const void *params, size_t params_bytes, const char *file,
                  int line) {
    if (!def || !def->name || !def->forward)
        return nb_fail(tp, NB_ERR_ARG, file, line, "nb_op: the op definition %s", !def ? "is NULL"
                       : !def->name ? "has no name" : "has no forward");
    if (n_inputs < 0 || (n_inputs > 0 && !inputs))
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: %d inputs given%s", def->name, n_inputs,
                       n_inputs > 0 ? " in a NULL array" : "");
    if (params_bytes && !params)
        return nb_fail(tp, NB_ERR_NULL, file, line, "%s: %zu bytes of parameters from NULL", def->name, params_bytes);
    nb_tensor *failed = nb_check(tp, def, file, line, n_inputs, inputs);
    if (failed) return failed;
    if (dtype != NB_F32 && dtype != NB_F64)
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: unknown output dtype %d", def->name, (int)dtype);
    void *copy = NULL;
    if (params_bytes) {
        if (!(copy = nb_tape_alloc(tp, params_bytes)))
            return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory for its parameters", def->name);
        memcpy(copy, params, params_bytes);
    }
    nb_entry *e;
    if (def->view) { /* the output is input 0 with another shape: check that it can be */
        nb_tensor *src = n_inputs ? inputs[0] : NULL;
        if ((failed = check_view(tp, def, src, dtype, ndim, shape, file, line))) return failed;
        nb_tensor *out = nb_result_view(tp, src, ndim, shape, def->name, file, line);
        if (out->status != NB_OK) return out;
        if (!(e = nb_record(tp, def, out, n_inputs, inputs, file, line))) return nb_nil(NB_ERR_NOMEM);
    } else if (!(e = nb_emit(tp, def, n_inputs, inputs, dtype, ndim, shape, file, line, &failed))) {
        return failed;
    }
    e->saved = copy;
    e->state = NULL;
    if (!def->backward) e->out->requires_grad = false; /* no gradient flows through it */
    nb_status before = tp->status;
    nb_tensor *out = nb_run(e);
    /* A forward that reported an error (nb_op_fail) gives no result.
     * (nb_run can change tp->status, which cppcheck does not see.) */
    // cppcheck-suppress incorrectLogicOperator
    return before == NB_OK && tp->status != NB_OK ? nb_nil(tp->status) : out;
}

nb_tensor *nb_op_check(nb_tape *tp, const nb_op_def *def, nb_tensor *const *inputs, int n_inputs,
                       const char *file, int line) {
    if (!def || !def->name) return nb_fail(tp, NB_ERR_ARG, file, line, "nb_op_check: the op definition has no name");
    if (n_inputs < 0 || (n_inputs > 0 && !inputs))
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: %d inputs given", def->name, n_inputs);
    return nb_check(tp, def, file, line, n_inputs, inputs);
}

nb_tensor *nb_op_error(nb_tape *tp, nb_status status, const char *file, int line, const char *fmt, ...) {
    if (status == NB_OK) status = NB_ERR_VALUE;
    va_list ap;
    va_start(ap, fmt);
    nb_vset_error(tp, status, file, line, fmt, ap);
    va_end(ap);
    return nb_nil(status);
}

int nb_op_inputs(const nb_op_call *call) { return call->n_in; }
nb_tensor *nb_op_input(const nb_op_call *call, int i) {
    return i >= 0 && i < call->n_in ? nb_entry_input(call, i) : NULL;
}
nb_tensor *nb_op_output(const nb_op_call *call) { return call->out; }
nb_tape *nb_op_tape(const nb_op_call *call) { return call->out->tape; }
const char *nb_op_file(const nb_op_call *call) { return call->file; }
int nb_op_line(const nb_op_call *call) { return call->line; }
const void *nb_op_input_data(const nb_op_call *call, int i) {
    nb_tensor *x = nb_op_input(call, i);
    return x ? x->data : NULL;
}
void *nb_op_output_data(const nb_op_call *call) { return call->out->data; }
size_t nb_op_size(const nb_op_call *call) { return call->out->size; }
const void *nb_op_params(const nb_op_call *call) { return call->saved; }
void *nb_op_saved(const nb_op_call *call) { return call->state; }

void *nb_op_save(nb_op_call *call, size_t bytes) {
    nb_tape *tp = call->out->tape;
    call->state = nb_tape_alloc(tp, bytes ? bytes : 1);
    if (!call->state)
        nb_set_error(tp, NB_ERR_NOMEM, call->file, call->line, "%s: out of memory keeping %zu bytes for backward",
                     call->op->name, bytes);
    return call->state;
}

const void *nb_op_grad_output(const nb_op_call *call) { return call->out->grad; }

bool nb_op_needs_grad(const nb_op_call *call, int i) {
    nb_tensor *x = nb_op_input(call, i);
    return x && x->requires_grad;
}

void *nb_op_grad_input(nb_op_call *call, int i, bool *accumulate) {
    *accumulate = false;
    if (!nb_op_needs_grad(call, i)) return NULL;
    return nb_grad_target(call->out->tape, nb_entry_input(call, i), accumulate);
}

void nb_op_fail(nb_op_call *call, nb_status status, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized): va_start is just above
    va_end(ap);
    nb_set_error(call->out->tape, status == NB_OK ? NB_ERR_VALUE : status, call->file, call->line, "%s: %s",
                 call->op->name, msg);
}
