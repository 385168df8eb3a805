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
#include "replay.h"

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

/* The callbacks of an op recorded here get a copy of its entry, never the
 * entry itself: ops they record can grow the tape's entry array, which
 * then moves, and nothing may hold a pointer into it across a callback.
 * They run with gradient recording off (as a PyTorch Function's forward and
 * backward do), and the ops they record are taken off the tape when they
 * return (nb_drop_entries): their results keep their values until the next
 * reset, but are no part of the graph, which backward, nb_grad and the
 * pictures walk as it was (a picture counts its entries before it draws
 * them).  A reset of the tape from inside one is refused (see
 * nb_user_enter). */
void nb_drop_entries(nb_tape *tp, size_t n) {
    /* (Their inputs keep the uses they counted: not a tensor of them may be
     * read, since the callback may have freed the heap ones, and a use too
     * many only keeps nb_grad_share from sharing a buffer.  A view among
     * their results keeps its link to the storage it shares in its own
     * header, so writes through it are still seen: see nb_tensor.base.) */
    if (n < tp->n_entries) tp->n_entries = n;
}

/* Runs one callback of entry i (on a copy of it): recording off, the tape
 * marked as running the user's code, the ops it records dropped after.
 * False if it tried to reset or free the tape (refused, the tape errored). */
typedef enum { FORWARD, BACKWARD, DESCRIBE } callback;
static bool run_callback(nb_tape *tp, nb_op_call *call, callback which, char *buf, size_t size) {
    static const char *const names[] = {"forward", "backward", "describe"};
    size_t n = tp->n_entries;
    unsigned refused = tp->refused_resets;
    bool was = tp->grad_enabled;
    tp->grad_enabled = false;
    nb_user_code outer = nb_user_enter(tp, (nb_user_code){.what = names[which], .call = call});
    if (which == FORWARD)
        call->op->forward(call);
    else if (which == BACKWARD)
        call->op->backward(call);
    else
        call->op->describe(call, buf, size);
    nb_user_leave(tp, outer);
    tp->grad_enabled = was;
    nb_drop_entries(tp, n);
    return tp->refused_resets == refused;
}

static nb_tensor *user_forward(nb_tape *tp, size_t i) {
    nb_op_call call = tp->entries[i];
    call.phase = NB_IN_FORWARD;
    if (!run_callback(tp, &call, FORWARD, NULL, 0)) return nb_nil(NB_ERR_STATE);
    nb_entry *e = &tp->entries[i];
    e->state = call.state; /* what nb_op_save kept */
    nb_tensor *out = tp->anomaly ? nb_anomaly_forward(tp, e) : e->out;
    if (nb_recording_nothing(tp)) nb_forget_entry(tp, e);
    return out;
}

/* A replay runs the forward on the entry's recorded parameters and memory:
 * nb_op_save gives back what it gave (see there); ops the callback records
 * are dropped as at recording (their memory is the tape's until reset). */
void nb_user_replay_forward(nb_tape *tp, size_t i) {
    nb_op_call call = tp->entries[i];
    call.phase = NB_IN_REPLAY;
    if (!run_callback(tp, &call, FORWARD, NULL, 0)) return; /* a refused reset errored the tape */
    tp->entries[i].state = call.state;
}

void nb_user_backward(nb_tape *tp, size_t i) {
    nb_op_call call = tp->entries[i];
    call.phase = NB_IN_BACKWARD;
    run_callback(tp, &call, BACKWARD, NULL, 0); /* a refusal errored the tape: the pass stops */
}

/* For pictures, which read the tape as it is.  (The tape is the caller's,
 * not const: the pictures only promise not to change it.) */
void nb_user_describe(const nb_tape *picture_tape, size_t i, char *buf, size_t size) {
    nb_tape *tp = (nb_tape *)picture_tape;
    nb_op_call call = tp->entries[i];
    run_callback(tp, &call, DESCRIBE, buf, size); /* the picture sees a refusal (nb_picture_callbacks_failed) */
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
    e->user = true;
    if (!def->backward) e->out->requires_grad = false; /* no gradient flows through it */
    nb_status before = tp->status;
    nb_tensor *out = user_forward(tp, tp->n_entries - 1);
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

/* The size is kept in front of the memory (at the alignment the tape gives
 * that many bytes), so that a replay, which must not allocate, can give the
 * same memory back to a forward that asks for no more than it had. */
void *nb_op_save(nb_op_call *call, size_t bytes) {
    nb_tape *tp = call->out->tape;
    if (!bytes) bytes = 1;
    if (call->phase == NB_IN_REPLAY) {
        size_t had = call->state ? ((const size_t *)call->state)[-1] : 0;
        if (bytes <= had) return call->state;
        nb_set_error(tp, NB_ERR_STATE, call->file, call->line,
                     "nb_graph_forward: %s asked nb_op_save for %zu bytes in a replay, where its recording kept %zu; "
                     "a replayed forward must keep no more than it did when recorded (record the graph again)",
                     call->op->name, bytes, had);
        return NULL;
    }
    size_t pad = nb_align_for(bytes), total;
    char *p = __builtin_add_overflow(bytes, pad, &total) ? NULL : nb_tape_alloc(tp, total);
    call->state = p ? p + pad : NULL;
    if (!call->state)
        nb_set_error(tp, NB_ERR_NOMEM, call->file, call->line, "%s: out of memory keeping %zu bytes for backward",
                     call->op->name, bytes);
    else
        ((size_t *)call->state)[-1] = bytes;
    return call->state;
}

/* Gradients exist in backward only: elsewhere (in forward, a gradient
 * buffer handed out would be marked as written, and a leaf's kept, with
 * whatever the arena held) there are none to give. */
const void *nb_op_grad_output(const nb_op_call *call) {
    return call->phase == NB_IN_BACKWARD ? call->out->grad : NULL;
}

bool nb_op_needs_grad(const nb_op_call *call, int i) {
    nb_tensor *x = nb_op_input(call, i);
    return x && x->requires_grad;
}

void *nb_op_grad_input(nb_op_call *call, int i, bool *accumulate) {
    nb_tape *tp = call->out->tape;
    if (!accumulate) {
        nb_set_error(tp, NB_ERR_NULL, call->file, call->line,
                     "%s: nb_op_grad_input needs a flag to say whether to add into the buffer, and was given NULL",
                     call->op->name);
        return NULL;
    }
    *accumulate = false;
    if (call->phase != NB_IN_BACKWARD || !nb_op_needs_grad(call, i)) return NULL;
    nb_tensor *x = nb_entry_input(call, i);
    void *g = nb_grad_target(tp, x, accumulate);
    /* One tensor given as several inputs (an op of (x, x)) has one gradient
     * buffer, and the first nb_op_grad_input of it says "set", the next
     * "add".  A backward may take its buffers first and write them in
     * another order (the contract allows it): the "set" of input 0 written
     * after the "add" of input 1 would then wipe input 1's part, and the
     * "add" would land on whatever the buffer held.  So a buffer shared by
     * several inputs is zeroed when fresh, and every input adds into it:
     * the order of the writes no longer matters.  (d/dx f(x, x) is the sum
     * of the partial derivatives in each slot.) */
    if (g && !*accumulate)
        for (int j = 0; j < call->n_in; j++)
            if (j != i && nb_entry_input(call, j) == x) {
                memset(g, 0, x->size * nb_dtype_size(x->dtype));
                *accumulate = true;
                break;
            }
    return g;
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
