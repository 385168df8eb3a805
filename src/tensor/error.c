/*
 * Errors, in the manner of cairo: a failed call returns a shared "nil" tensor
 * whose status says what went wrong, the first message is kept on the tape,
 * and every op passes an errored input on without doing anything.
 */
#include "../internal.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[NB_STATUS_COUNT] = {
    [NB_OK] = "no error",
    [NB_ERR_NULL] = "NULL argument",
    [NB_ERR_SHAPE] = "shape mismatch",
    [NB_ERR_DTYPE] = "dtype mismatch",
    [NB_ERR_ARG] = "invalid argument",
    [NB_ERR_NOMEM] = "out of memory",
    [NB_ERR_STATE] = "invalid state",
    [NB_ERR_IO] = "input/output error",
    [NB_ERR_VALUE] = "invalid value",
    [NB_ERR_UNSUPPORTED] = "not supported",
};

const char *nb_status_string(nb_status status) {
    if ((unsigned)status >= NB_STATUS_COUNT) return "unknown status";
    return status_names[status];
}

/* One immutable nil tensor per status.  Its data is NULL and its size 0, so
 * nothing can be read or written through it. */
#define NIL(var, st) static nb_tensor var = {.status = st, .is_leaf = true, .home = NB_HOME_HEAP, .name = nb_unnamed}
NIL(nil_null, NB_ERR_NULL);
NIL(nil_shape, NB_ERR_SHAPE);
NIL(nil_dtype, NB_ERR_DTYPE);
NIL(nil_arg, NB_ERR_ARG);
NIL(nil_nomem, NB_ERR_NOMEM);
NIL(nil_state, NB_ERR_STATE);
NIL(nil_io, NB_ERR_IO);
NIL(nil_value, NB_ERR_VALUE);
NIL(nil_unsupported, NB_ERR_UNSUPPORTED);
static nb_tensor *const nil_tensors[NB_STATUS_COUNT] = {
    [NB_ERR_NULL] = &nil_null,   [NB_ERR_SHAPE] = &nil_shape, [NB_ERR_DTYPE] = &nil_dtype,
    [NB_ERR_ARG] = &nil_arg,     [NB_ERR_NOMEM] = &nil_nomem, [NB_ERR_STATE] = &nil_state,
    [NB_ERR_IO] = &nil_io,       [NB_ERR_VALUE] = &nil_value, [NB_ERR_UNSUPPORTED] = &nil_unsupported,
};

nb_tensor *nb_nil(nb_status status) {
    if ((unsigned)status >= NB_STATUS_COUNT || status == NB_OK) status = NB_ERR_STATE;
    return nil_tensors[status];
}

static _Thread_local char last_error[512];
static _Thread_local nb_status last_status;

const char *nb_last_error(void) { return last_error; }
nb_status nb_last_status(void) { return last_status; }

void nb_vset_error(nb_tape *tp, nb_status status, const char *file, int line,
                   const char *fmt, va_list ap) {
    char msg[512];
    /* ap comes initialised from nb_set_error and nb_fail (va_start) */
    int n = vsnprintf(msg, sizeof msg, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
    if (n >= 0 && (size_t)n < sizeof msg && file)
        snprintf(msg + n, sizeof msg - (size_t)n, " (at %s:%d)", file, line);
    memcpy(last_error, msg, sizeof msg);
    last_status = status;
    if (tp && tp->status == NB_OK) {
        tp->status = status;
        memcpy(tp->error, msg, sizeof msg);
    }
}

void nb_set_error(nb_tape *tp, nb_status status, const char *file, int line,
                  const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    nb_vset_error(tp, status, file, line, fmt, ap);
    va_end(ap);
}

nb_tensor *nb_fail(nb_tape *tp, nb_status status, const char *file, int line,
                   const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    nb_vset_error(tp, status, file, line, fmt, ap);
    va_end(ap);
    return nb_nil(status);
}

nb_tensor *nb_check_inputs(nb_tape *tp, const char *op, const char *file, int line, int n,
                           nb_tensor *const *in) {
    if (!tp) {
        nb_set_error(NULL, NB_ERR_NULL, file, line, "%s: the tape is NULL", op);
        return nb_nil(NB_ERR_NULL);
    }
    for (int i = 0; i < n; i++) {
        if (!in[i])
            return nb_fail(tp, NB_ERR_NULL, file, line, "%s: input %d is NULL", op, i + 1);
        if (in[i]->status != NB_OK) {
            /* Already reported where it happened; make sure the tape knows. */
            if (tp->status == NB_OK)
                nb_set_error(tp, in[i]->status, file, line,
                             "%s: input %d is an errored tensor (%s)", op, i + 1,
                             nb_status_string(in[i]->status));
            return nb_nil(in[i]->status);
        }
        if (nb_on_tape(in[i]) && in[i]->tape != tp)
            return nb_fail(tp, NB_ERR_STATE, file, line,
                           "%s: input %d belongs to another tape", op, i + 1);
        if (!nb_alive(in[i])) return nb_fail_stale(tp, op, i, in[i], file, line);
    }
    return NULL;
}

nb_tensor *nb_fail_stale(nb_tape *tp, const char *op, int i, const nb_tensor *t, const char *file, int line) {
    if (t->home == NB_HOME_NONE) /* a retired header: nothing is left to say what it was */
        return nb_fail(tp, NB_ERR_STATE, file, line,
                       "%s: input %d is a tensor of a tape that was reset (or freed) since it was made, or "
                       "of a no-grad scope that has ended (nb_no_grad_end); a tape's tensors last until its "
                       "next reset; to keep values across steps copy them to the heap with nb_copy(NULL, t) "
                       "before the reset",
                       op, i + 1);
    char shape[128], name[NB_NAME_MAX + 3] = "", made[256] = "made";
    if (t->name && t->name[0]) snprintf(name, sizeof name, "'%s' ", t->name);
    /* Say where, if the entry that made it is not yet overwritten by this
     * step's (its output is then still t: no tensor of this step can have
     * t's address, since header addresses are never reused). */
    const nb_tape *owner = t->tape;
    if (t->entry > owner->n_entries && t->entry <= owner->cap_entries && owner->entries[t->entry - 1].out == t) {
        const nb_entry *e = &owner->entries[t->entry - 1];
        snprintf(made, sizeof made, "made by %s at %s:%d", e->op->name, e->file ? e->file : "?", e->line);
    }
    return nb_fail(tp, NB_ERR_STATE, file, line,
                   "%s: input %d %s%s was %s before nb_tape_reset, which ended it (a tape's tensors last "
                   "until its next reset; to keep values across steps copy them to the heap with "
                   "nb_copy(NULL, t) before the reset)",
                   op, i + 1, name, nb_format_shape(t->ndim, t->shape, shape, sizeof shape), made);
}

nb_tensor *nb_check_same_dtype(nb_tape *tp, const char *op, const char *file, int line,
                               int n, nb_tensor *const *in) {
    for (int i = 1; i < n; i++)
        if (in[i]->dtype != in[0]->dtype)
            return nb_fail(tp, NB_ERR_DTYPE, file, line,
                           "%s: inputs have different dtypes (input 1 is %s, input %d is %s); "
                           "convert one with nb_cast",
                           op, in[0]->dtype == NB_F32 ? "float32" : "float64", i + 1,
                           in[i]->dtype == NB_F32 ? "float32" : "float64");
    return NULL;
}

char *nb_format_shape(int ndim, const size_t *shape, char *buf, size_t n) {
    size_t used = 0;
    int w = snprintf(buf, n, "(");
    if (w > 0) used = (size_t)w;
    for (int d = 0; d < ndim && used < n; d++) {
        w = snprintf(buf + used, n - used, d ? ", %zu" : "%zu", shape[d]);
        if (w > 0) used += (size_t)w;
    }
    if (used < n) snprintf(buf + used, n - used, ndim == 1 ? ",)" : ")");
    return buf;
}

int nb_norm_axis(int axis, int ndim) {
    if (axis < 0) axis += ndim;
    return (axis < 0 || axis >= ndim) ? -1 : axis;
}

nb_tensor *nb_check_axis(nb_tape *tp, const char *op, const nb_tensor *t, int axis, int *ax,
                         const char *file, int line) {
    *ax = nb_norm_axis(axis, t->ndim);
    if (*ax >= 0) return NULL;
    char s[128];
    return nb_fail(tp, NB_ERR_ARG, file, line,
                   "%s: axis %d is out of range for shape %s (%d dimensions)", op, axis,
                   nb_format_shape(t->ndim, t->shape, s, sizeof s), t->ndim);
}
