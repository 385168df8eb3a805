/*
 * Reverse mode.  For a loss L and every recorded entry out = f(in_1..in_k),
 * walking the tape backwards guarantees that dL/d out is complete (every op
 * that used `out` ran later, so its backward ran earlier) before f's backward
 * turns it into contributions dL/d in_i = dL/d out . d out/d in_i, which are
 * *added* into each input: a tensor used by several ops receives the sum of
 * their contributions (the multivariable chain rule).
 *
 * First write sets, later writes add: a gradient buffer is not zeroed before
 * a pass; the first contribution overwrites it (nb_grad_target reports
 * accumulate = false) and the following ones add.
 */
#include "../internal.h"
#include "replay.h"
#include "recompute.h"

#include <string.h>

void *nb_grad_alloc(nb_tape *tp, nb_tensor *t) {
    if (nb_has_grad_slot(t)) { /* never reused: a later gradient comes from the arena */
        t->grad_slot = 1;
        return t->grad = (char *)t->data + sizeof(double);
    }
    size_t bytes = t->size * nb_dtype_size(t->dtype);
    if (nb_on_tape(t)) t->tape->kept_allocs++;
    t->grad = nb_on_tape(t) ? nb_tape_alloc(tp, bytes) : nb_malloc_aligned(bytes);
    if (!t->grad) nb_set_error(tp, NB_ERR_NOMEM, NULL, 0, "nb_backward: cannot allocate a %zu-byte gradient", bytes);
    return t->grad;
}

_Atomic long nb_applied_count;

void nb_fail_applied(nb_tape *tp, const nb_tensor *t, const char *file, int line) {
    char shape[128];
    nb_set_error(tp, NB_ERR_STATE, file, line,
                 "nb_backward: parameter '%s' %s had its SGD update applied inside the last "
                 "nb_optimizer_backward_step, which keeps no gradient, and its gradient was not zeroed "
                 "since; adding to it cannot give what nb_backward + nb_optimizer_step would. Zero the "
                 "gradients between steps (nb_params_zero_grad), or use nb_backward + nb_optimizer_step",
                 t->name, nb_format_shape(t->ndim, t->shape, shape, sizeof shape));
}

void *nb_grad_target_zeroed(nb_tape *tp, nb_tensor *t) {
    bool accumulate;
    void *g = nb_grad_target(tp, t, &accumulate);
    if (g && !accumulate) memset(g, 0, t->size * nb_dtype_size(t->dtype));
    return g;
}

/* Explain mode: before an entry's backward, copy each input's gradient so
 * far (NULL stands for zero); afterwards, the difference is the entry's
 * contribution to that input, kept on the entry for pictures.  An input
 * that appears twice (x * x) gets its total on its first edge. */
static bool snapshot_inputs(nb_tape *tp, const nb_entry *e, void ***before) {
    if (!(*before = nb_tape_alloc(tp, (size_t)e->n_in * sizeof **before))) return false;
    for (int i = 0; i < e->n_in; i++) {
        nb_tensor *x = nb_entry_input(e, i);
        (*before)[i] = NULL;
        if (!x->requires_grad || !nb_grad_live(x) || x->grad_state != NB_GRAD_SET) continue;
        size_t bytes = x->size * nb_dtype_size(x->dtype);
        if (!((*before)[i] = nb_tape_alloc(tp, bytes))) return false;
        memcpy((*before)[i], x->grad, bytes);
    }
    return true;
}

static bool record_contributions(nb_tape *tp, nb_entry *e, void *const *before) {
    if (tp->nested && e->contrib && e->contrib->pass != tp->pass) { /* the outer pass's: keep them */
        if (!nb_keep_contributions_for_outer(tp, (size_t)(e - tp->entries))) return false;
        e->contrib = NULL;
    }
    if (!e->contrib && !(e->contrib = nb_tape_alloc(tp, sizeof *e->contrib + (size_t)e->n_in * sizeof(void *))))
        return false;
    e->contrib->pass = tp->pass;
    for (int i = 0; i < e->n_in; i++) {
        nb_tensor *x = nb_entry_input(e, i);
        bool repeated = false;
        for (int j = 0; j < i; j++) repeated |= nb_entry_input(e, j) == x;
        e->contrib->of_input[i] = NULL;
        if (repeated || !x->requires_grad || !nb_grad_live(x)) continue;
        size_t bytes = x->size * nb_dtype_size(x->dtype);
        if (!(e->contrib->of_input[i] = nb_tape_alloc(tp, bytes))) return false;
        NB_DISPATCH(x->dtype, {
            T *c = e->contrib->of_input[i];
            const T *now = x->grad, *was = before[i];
            for (size_t k = 0; k < x->size; k++) c[k] = was ? now[k] - was[k] : now[k];
        });
    }
    return true;
}

/* The list and the copies live in the tape's arena: a warm loop that
 * computes nb_grad or draws backward passes allocates nothing. */
void nb_restore_leaf_grads(nb_saved_grads *sv) {
    if (sv->tp) sv->tp->aside = sv->outer; /* (sets are made and given back in nested order) */
    for (size_t i = 0; i < sv->n; i++) {
        nb_saved_grad *l = &sv->leaves[i];
        if (l->copy && l->t->grad) /* a copy was made of a gradient that exists */
            memcpy(l->t->grad, l->copy, l->t->size * nb_dtype_size(l->t->dtype));
        nb_set_grad_state(l->t, l->state);
    }
}

static bool save_leaf_grads(nb_tape *tp, const nb_tensor *out, nb_saved_grads *sv);

bool nb_save_leaf_grads(nb_tape *tp, const nb_tensor *out, nb_saved_grads *sv) {
    if (save_leaf_grads(tp, out, sv)) return true;
    nb_restore_leaf_grads(sv); /* the ones set aside before memory ran out */
    return false;
}

static bool save_leaf_grads(nb_tape *tp, const nb_tensor *out, nb_saved_grads *sv) {
    memset(sv, 0, sizeof *sv);
    sv->tp = tp;
    sv->outer = tp->aside;
    sv->running = tp->running;
    tp->aside = sv;
    for (size_t i = 0; i < out->entry; i++) {
        const nb_entry *e = &tp->entries[i];
        for (int k = 0; k < e->n_in; k++) {
            nb_tensor *x = nb_entry_input(e, k);
            if (!x->is_leaf || !x->requires_grad) continue;
            bool seen = false;
            for (size_t j = 0; j < sv->n && !seen; j++) seen = sv->leaves[j].t == x;
            if (seen) continue;
            if (sv->n == sv->cap) {
                size_t cap = sv->cap ? 2 * sv->cap : 16;
                nb_saved_grad *grown = nb_tape_alloc(tp, cap * sizeof *grown);
                if (!grown) return false;
                if (sv->n) memcpy(grown, sv->leaves, sv->n * sizeof *grown);
                sv->leaves = grown;
                sv->cap = cap;
            }
            nb_saved_grad *l = &sv->leaves[sv->n];
            *l = (nb_saved_grad){x, x->grad_state, NULL};
            if (x->grad && x->grad_state == NB_GRAD_SET) {
                size_t bytes = x->size * nb_dtype_size(x->dtype);
                if (!(l->copy = nb_tape_alloc(tp, bytes))) return false;
                memcpy(l->copy, x->grad, bytes);
            }
            sv->n++;
            nb_set_grad_state(x, x->grad ? NB_GRAD_ZERO : NB_GRAD_NONE);
        }
    }
    return true;
}


/* An entry's inputs and output must hold the values the op saw: a tensor
 * written (nb_set, nb_tensor_data, an optimizer step) after the entry was
 * recorded would give a wrong gradient.  False, with the tape errored; `what`
 * names the call (nb_backward, or nb_grad whose create_graph walk checks
 * each entry the same way). */
bool nb_entry_unchanged(nb_tape *tp, const nb_entry *e, const char *what) {
    for (int i = -1; i < e->n_in; i++) {
        const nb_tensor *x = i < 0 ? e->out : nb_entry_input(e, i);
        if (!nb_written_since(x, e->stamp)) continue;
        char shape[128], name[NB_NAME_MAX + 3] = "";
        if (x->name[0]) snprintf(name, sizeof name, "'%s' ", x->name);
        nb_set_error(tp, NB_ERR_STATE, e->file, e->line,
                     "%s: %s %s%s of %s was changed after the op used it (by nb_set, through "
                     "nb_tensor_data or by an optimizer step), so its gradient would be wrong; run the ops "
                     "again after changing a tensor",
                     what, i < 0 ? "the result" : "an input", name, nb_format_shape(x->ndim, x->shape, shape, sizeof shape),
                     e->op->name);
        return false;
    }
    return true;
}

/* A parameter whose SGD update was applied in an earlier backward, and not
 * zeroed since, cannot take a gradient: is one among the inputs of the
 * entries this pass will run (those whose output leads to `out` and needs a
 * gradient)?  Exact, so that a pass inside a fused one (see nested.c) that
 * does not reach an updated weight may run.  False (with the error) on
 * refusal. */
static bool no_applied_in_reach(nb_tape *tp, const nb_tensor *out, const char *file, int line) {
    bool *reached = nb_tape_alloc(tp, out->entry);
    if (!reached) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_backward: out of memory");
        return false;
    }
    memset(reached, 0, out->entry);
    reached[out->entry - 1] = true;
    for (size_t i = out->entry; i-- > 0;) {
        const nb_entry *e = &tp->entries[i];
        if (!reached[i] || !e->out->requires_grad) continue;
        for (int k = 0; k < e->n_in; k++) {
            const nb_tensor *x = nb_entry_input(e, k);
            if (!x->requires_grad) continue;
            if (x->grad_state == NB_GRAD_APPLIED) {
                nb_fail_applied(NULL, x, file, line);
                return false;
            }
            if (nb_on_tape(x) && x->tape == tp && x->entry >= 1 && x->entry <= i && tp->entries[x->entry - 1].out == x)
                reached[x->entry - 1] = true;
        }
    }
    return true;
}

/* Runs the user's code during a pass (a custom op's backward, the backward
 * hook) with the pass's hooks out of the way: a pass it runs (nb_grad) is
 * then neither shown to them nor filmed as this one.  A hook the callback
 * sets stays.  The ops it records leave the tape when it returns. */
static void run_user_code(nb_tape *tp, size_t i, bool hook) {
    nb_backward_hook h = tp->hook, progress = tp->progress;
    void *user = tp->hook_user, *progress_user = tp->progress_user;
    tp->hook = tp->progress = NULL;
    if (hook) { /* as a custom op's callbacks (op.c): a reset refused, the ops it records dropped */
        size_t n = tp->n_entries;
        nb_user_code outer = nb_user_enter(tp, (nb_user_code){.what = "backward hook", .who = "nb_backward"});
        h(tp, i, user);
        nb_user_leave(tp, outer);
        nb_drop_entries(tp, n);
    } else {
        nb_user_backward(tp, i);
    }
    if (!tp->hook) tp->hook = h, tp->hook_user = user;
    tp->progress = progress, tp->progress_user = progress_user;
}

/* dst += src, n elements of dtype dt. */
static void add_into(nb_dtype dt, void *dst, const void *src, size_t n) {
    NB_DISPATCH(dt, {
        T *d = dst;
        const T *s = src;
        for (size_t i = 0; i < n; i++) d[i] += s[i];
    });
}

/* An nb_backward inside a pass that set the leaves' gradients aside (a
 * custom op's backward, or a backward hook, under nb_grad, nb_hvp, the
 * Jacobians or a picture's pass): the leaves' buffers hold that pass's
 * partial gradients of another output, and they are put back when it ends.
 * Adding into them would give the outer nb_grad this pass's gradient too,
 * and lose it from the leaves (x.x's 2x on top of nb_grad's 6x, and nothing
 * in x's gradient afterwards).  So this pass sets the leaves aside in turn,
 * runs from nothing, and adds what each leaf got into its own gradient: the
 * one set aside first, outside every pass (or, for a leaf no pass set
 * aside, the one it has). */
static nb_status backward_inside_aside(nb_tape *tp, nb_tensor *out, const nb_tensor *seed, const char *file,
                                       int line) {
    nb_saved_grads mine;
    nb_status st = NB_OK;
    if (!nb_save_leaf_grads(tp, out, &mine)) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_backward: out of memory setting the gradients aside");
        return NB_ERR_NOMEM;
    }
    nb_pass_guard guard;
    nb_pass_enter(tp, &guard);
    st = nb_backward_pass(out, seed, file, line);
    nb_pass_leave(tp, &guard);
    for (size_t i = 0; st == NB_OK && i < mine.n; i++) {
        nb_saved_grad *l = &mine.leaves[i], *own = l;
        nb_tensor *t = l->t;
        if (!t->grad || t->grad_state != NB_GRAD_SET) continue; /* nothing reached it */
        for (nb_saved_grads *s = mine.outer; s; s = s->outer)
            for (size_t j = 0; j < s->n; j++)
                if (s->leaves[j].t == t) own = &s->leaves[j];
        size_t bytes = t->size * nb_dtype_size(t->dtype);
        if (own->state == NB_GRAD_APPLIED) {
            nb_fail_applied(tp, t, file, line);
            st = tp->status != NB_OK ? tp->status : NB_ERR_STATE;
        } else if (own->copy) {
            add_into(t->dtype, own->copy, t->grad, t->size);
        } else if (own == l) { /* it had no gradient: this pass's, in its buffer, is it */
            l->state = NB_GRAD_SET;
        } else if ((own->copy = nb_tape_alloc(tp, bytes))) {
            memcpy(own->copy, t->grad, bytes);
            own->state = NB_GRAD_SET;
        } else {
            nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_backward: out of memory adding into the gradients");
            st = NB_ERR_NOMEM;
        }
    }
    nb_restore_leaf_grads(&mine);
    return st;
}

/* A mistaken call (no seed, a wrong seed, nothing to differentiate) is
 * reported through nb_last_error() but leaves the tape as it was, so the
 * caller can correct the call; failures during the pass error the tape. */
nb_status nb_backward_(nb_tensor *out, const nb_tensor *seed, const char *file, int line) {
    nb_tape *tp = out && out->status == NB_OK ? out->tape : NULL;
    if (!tp) return nb_backward_pass(out, seed, file, line); /* refused before anything runs */
    if (tp->aside && tp->running > tp->aside->running && nb_recorded(out))
        return backward_inside_aside(tp, out, seed, file, line);
    nb_pass_guard guard;
    nb_pass_enter(tp, &guard);
    nb_status st = nb_backward_pass(out, seed, file, line);
    nb_pass_leave(tp, &guard);
    return st;
}

nb_status nb_backward_pass(nb_tensor *out, const nb_tensor *seed, const char *file, int line) {
    char shape[128], seed_shape[128];
    if (!out) {
        nb_set_error(NULL, NB_ERR_NULL, file, line, "nb_backward: the output is NULL");
        return NB_ERR_NULL;
    }
    if (out->status != NB_OK) {
        nb_set_error(NULL, out->status, file, line,
                     "nb_backward: the output is an errored tensor (%s)",
                     nb_status_string(out->status));
        return out->status;
    }
    if (out->no_grad && nb_alive(out)) {
        nb_set_error(NULL, NB_ERR_STATE, file, line,
                     "nb_backward: the output was computed in no-grad mode (nb_tape_no_grad or "
                     "nb_no_grad_begin), which records no graph to go back through; compute it with "
                     "gradients on");
        return NB_ERR_STATE;
    }
    if (!nb_recorded(out)) {
        nb_set_error(NULL, NB_ERR_STATE, file, line,
                     "nb_backward: the output was not produced by an op on a live tape "
                     "(it is a leaf, or it dates from before nb_tape_reset)");
        return NB_ERR_STATE;
    }
    nb_tape *tp = out->tape;
    if (tp->status != NB_OK) {
        nb_set_error(NULL, tp->status, file, line, "nb_backward: the tape has an error: %s",
                     tp->error);
        return tp->status;
    }
    nb_format_shape(out->ndim, out->shape, shape, sizeof shape);
    if (!out->requires_grad) {
        nb_set_error(NULL, NB_ERR_STATE, file, line,
                     "nb_backward: the output %s does not depend on any tensor that requires "
                     "a gradient (mark parameters with nb_requires_grad)",
                     shape);
        return NB_ERR_STATE;
    }
    if (!seed && out->size != 1) {
        nb_set_error(NULL, NB_ERR_SHAPE, file, line,
                     "nb_backward: the output has shape %s; backward from a non-scalar needs a "
                     "seed gradient of that shape (nb_backward_seed)",
                     shape);
        return NB_ERR_SHAPE;
    }
    if (seed) {
        if (seed->status != NB_OK) {
            nb_set_error(NULL, seed->status, file, line, "nb_backward: the seed is errored");
            return seed->status;
        }
        if (!nb_alive(seed)) {
            nb_set_error(NULL, NB_ERR_STATE, file, line,
                         "nb_backward: the seed %s dates from before nb_tape_reset, which ended it (its memory "
                         "now holds other values; copy a seed to keep across steps with nb_copy(NULL, t))",
                         nb_format_shape(seed->ndim, seed->shape, seed_shape, sizeof seed_shape));
            return NB_ERR_STATE;
        }
        if (nb_on_tape(seed) && seed->tape != out->tape) { /* as every op and nb_grad_seed */
            nb_set_error(NULL, NB_ERR_STATE, file, line,
                         "nb_backward: the seed %s belongs to another tape than the output %s (make it on the "
                         "output's tape, or copy it with nb_copy(NULL, seed))",
                         nb_format_shape(seed->ndim, seed->shape, seed_shape, sizeof seed_shape), shape);
            return NB_ERR_STATE;
        }
        if (seed->size != out->size || seed->dtype != out->dtype) {
            nb_status st = seed->dtype != out->dtype ? NB_ERR_DTYPE : NB_ERR_SHAPE;
            nb_set_error(NULL, st, file, line,
                         "nb_backward: the seed %s %s does not match the output %s %s",
                         nb_format_shape(seed->ndim, seed->shape, seed_shape, sizeof seed_shape),
                         seed->dtype == NB_F32 ? "float32" : "float64", shape,
                         out->dtype == NB_F32 ? "float32" : "float64");
            return st;
        }
    }

    /* Refuse before changing any gradient. */
    if (atomic_load_explicit(&nb_applied_count, memory_order_relaxed) > 0 && !no_applied_in_reach(tp, out, file, line))
        return tp->status != NB_OK ? tp->status : NB_ERR_STATE;

    /* A new pass: gradients of op results from an earlier pass over the same
     * tape are now stale (nb_grad_live); leaf gradients add up across passes
     * until nb_zero_grad. */
    size_t last = out->entry; /* entries after this one cannot lead to `out` */
    tp->pass++;

    bool accumulate;
    void *g = nb_grad_target(tp, out, &accumulate);
    if (!g) return tp->status;
    if (seed)
        memcpy(g, seed->data, out->size * nb_dtype_size(out->dtype));
    else if (out->dtype == NB_F32)
        *(float *)g = 1.0f;
    else
        *(double *)g = 1.0;

    return nb_backward_entries(tp, 0, last);
}

nb_status nb_backward_entries(nb_tape *tp, size_t first, size_t last) {
    uint32_t clock = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
    /* Plain: no explain mode, anomaly mode, hook or progress callback, so a
     * built-in op's backward is all there is to run (only the user's code
     * can change that: worked out again after it runs). */
    bool plain = !tp->explain && !tp->anomaly && !tp->hook && !tp->progress;
    for (size_t i = last; i-- > first;) {
        nb_entry *e = &tp->entries[i];
        /* Skip entries that lead to no parameter, and those that do not lead
         * to `out` (no gradient reached their output). */
        if (!e->out->requires_grad || !nb_grad_live(e->out)) continue;
        if (!e->op->backward) {
            nb_set_error(tp, NB_ERR_UNSUPPORTED, e->file, e->line,
                         "nb_backward: op %s has no backward", e->op->name);
            return tp->status;
        }
        /* (no write at all since the entry was recorded: nothing to check) */
        if (e->stamp != clock && !nb_entry_unchanged(tp, e, "nb_backward")) return tp->status;
        if (plain && !e->user) {
            e->op->backward(e);
            if (tp->status != NB_OK) return tp->status;
            continue;
        }
        void **before = NULL;
        bool explained = !tp->explain || snapshot_inputs(tp, e, &before);
        if (explained && e->user) { /* the user's code: it may record ops (moving e), write, run passes */
            run_user_code(tp, i, false);
            e = &tp->entries[i];
            clock = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
        } else if (explained) {
            e->op->backward(e);
        }
        if (explained && tp->explain && tp->status == NB_OK) explained = record_contributions(tp, e, before);
        if (!explained)
            nb_set_error(tp, NB_ERR_NOMEM, e->file, e->line,
                         "nb_backward: out of memory recording the chain rule of %s", e->op->name);
        if (tp->status == NB_OK && tp->anomaly) nb_anomaly_backward(tp, e);
        if (tp->status != NB_OK) return tp->status;
        if (tp->hook) {
            run_user_code(tp, i, true);
            if (tp->status != NB_OK) return tp->status;
            clock = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
        }
        if (tp->progress) tp->progress(tp, i, tp->progress_user);
        plain = !tp->explain && !tp->anomaly && !tp->hook && !tp->progress;
    }
    return NB_OK;
}

void nb_sgd_begin(nb_tape *tp, const nb_tensor *loss, nb_tensor *const *params, size_t n, double lr) {
    /* Candidates: leaf parameters with no gradient waiting to be added to. */
    for (size_t i = 0; i < n; i++) {
        nb_tensor *p = params[i];
        if (p && p->status == NB_OK && p->is_leaf && p->home == NB_HOME_HEAP && p->requires_grad &&
            (p->grad_state == NB_GRAD_NONE || p->grad_state == NB_GRAD_ZERO))
            p->sgd = NB_SGD_CANDIDATE;
    }
    /* Count their readers among the entries that lead up to the loss.  An
     * entry that reads a view reads its base's storage: it counts as a
     * reader of the base (a view made in a callback has no entry of its own
     * that reads the base, and an update applied in place would change
     * what that entry's backward reads). */
    for (size_t i = 0; i < loss->entry; i++) {
        const nb_entry *e = &tp->entries[i];
        for (int k = 0; k < e->n_in; k++) {
            nb_tensor *x = nb_entry_input(e, k);
            if (x->base) x = x->base;
            if (x->sgd != NB_SGD_NO) x->sgd = x->sgd == NB_SGD_CANDIDATE ? NB_SGD_ONE_READER : NB_SGD_MANY_READERS;
        }
    }
    tp->sgd_lr = lr;
}

void nb_sgd_end(nb_tape *tp, nb_tensor *const *params, size_t n) {
    tp->sgd_lr = 0;
    for (size_t i = 0; i < n; i++)
        if (params[i] && params[i]->status == NB_OK) params[i]->sgd = NB_SGD_NO;
}

nb_status nb_backward_sgd_(nb_tensor *loss, nb_tensor *const *params, size_t n, double lr, const char *file,
                           int line) {
    nb_tape *tp = loss && loss->status == NB_OK && nb_recorded(loss) ? loss->tape : NULL;
    if (!tp || tp->explain || tp->anomaly || tp->hook || !(lr > 0)) return nb_backward_(loss, NULL, file, line);
    nb_sgd_begin(tp, loss, params, n, lr);
    nb_status st = nb_backward_(loss, NULL, file, line);
    nb_sgd_end(tp, params, n);
    return st;
}
