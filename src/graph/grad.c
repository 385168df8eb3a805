/*
 * Gradients as tensors, and derivatives of derivatives.
 *
 * nb_grad(out, wrt) returns d out / d wrt[i] as tensors on out's tape (as
 * PyTorch's autograd.grad), leaving every tensor's own gradient (nb_grad_get)
 * as it was.  Two ways:
 *
 * - create_graph false: the ordinary backward pass (the fast one of
 *   nb_backward), run with the leaves' gradients set aside and given back
 *   afterwards; the results are copied to the tape.
 *
 * - create_graph true: the backward pass is itself recorded as ops.  Walking
 *   the tape's entries in reverse, as backward does, each entry's
 *   backward_graph builds the vector-Jacobian product dL/d input from the
 *   tensor dL/d output with ordinary ops (for y = sin x: G · cos x); a
 *   tensor used several times gets the sum of its contributions (nb_add).
 *   The results are ordinary op results, so they can be differentiated in
 *   turn, to any order: d/dx (G · cos x) brings -G · sin x, and so on.
 *
 * On top: Hessian-vector products (the gradient of g · v, g the gradient),
 * forward-mode products by the double-vjp trick, and dense Jacobians and
 * Hessians row by row, for small inputs.
 */
#include "../internal.h"
#include "recompute.h"

#include <string.h>

/* Checks an output and the tensors to differentiate with respect to. */
static nb_status check_call(const char *what, nb_tensor *out, const nb_tensor *seed, nb_tensor *const *wrt, int n,
                            nb_tensor **results, const char *file, int line) {
    char so[128], ss[128];
    if (!out || !wrt || !results || n < 1) {
        nb_set_error(NULL, NB_ERR_NULL, file, line, "%s: %s", what,
                     !out ? "the output is NULL" : n < 1 ? "no tensors to differentiate with respect to"
                                                         : "a NULL array of tensors");
        return NB_ERR_NULL;
    }
    if (out->status != NB_OK) {
        nb_set_error(NULL, out->status, file, line, "%s: the output is an errored tensor (%s)", what,
                     nb_status_string(out->status));
        return out->status;
    }
    if (out->no_grad && nb_alive(out)) {
        nb_set_error(NULL, NB_ERR_STATE, file, line,
                     "%s: the output was computed in no-grad mode (nb_tape_no_grad or nb_no_grad_begin), which "
                     "records no graph to go back through; compute it with gradients on", what);
        return NB_ERR_STATE;
    }
    if (!nb_recorded(out)) {
        nb_set_error(NULL, NB_ERR_STATE, file, line,
                     "%s: the output was not produced by an op on a live tape (it is a leaf, or it dates from "
                     "before nb_tape_reset)", what);
        return NB_ERR_STATE;
    }
    nb_tape *tp = out->tape;
    if (tp->status != NB_OK) {
        nb_set_error(NULL, tp->status, file, line, "%s: the tape has an error: %s", what, tp->error);
        return tp->status;
    }
    nb_format_shape(out->ndim, out->shape, so, sizeof so);
    if (!seed && out->size != 1) {
        nb_set_error(NULL, NB_ERR_SHAPE, file, line,
                     "%s: the output has shape %s; a non-scalar output needs a seed of that shape", what, so);
        return NB_ERR_SHAPE;
    }
    if (seed && seed->status == NB_OK && !nb_alive(seed)) {
        nb_set_error(NULL, NB_ERR_STATE, file, line, "%s: the seed %s dates from before nb_tape_reset, which ended it",
                     what, nb_format_shape(seed->ndim, seed->shape, ss, sizeof ss));
        return NB_ERR_STATE;
    }
    if (seed && seed->status == NB_OK && nb_on_tape(seed) && seed->tape != tp) {
        nb_set_error(NULL, NB_ERR_STATE, file, line,
                     "%s: the seed %s belongs to another tape than the output %s (make it on the output's tape, "
                     "or copy it with nb_copy(NULL, seed))", what, nb_format_shape(seed->ndim, seed->shape, ss, sizeof ss),
                     so);
        return NB_ERR_STATE;
    }
    if (seed && (seed->status != NB_OK || seed->size != out->size || seed->dtype != out->dtype)) {
        nb_status st = seed->status != NB_OK ? seed->status : seed->dtype != out->dtype ? NB_ERR_DTYPE : NB_ERR_SHAPE;
        nb_set_error(NULL, st, file, line, "%s: the seed %s %s does not fit the output %s %s", what,
                     seed->status == NB_OK ? nb_format_shape(seed->ndim, seed->shape, ss, sizeof ss) : "(errored)",
                     seed->dtype == NB_F32 ? "float32" : "float64", so, out->dtype == NB_F32 ? "float32" : "float64");
        return st;
    }
    for (int i = 0; i < n; i++) {
        const nb_tensor *w = wrt[i];
        if (!w || w->status != NB_OK || !nb_alive(w) || (nb_on_tape(w) && w->tape != tp) || w->dtype != out->dtype) {
            nb_status st = !w ? NB_ERR_NULL : w->status != NB_OK ? w->status : !nb_alive(w) ? NB_ERR_STATE
                           : w->dtype != out->dtype ? NB_ERR_DTYPE : NB_ERR_STATE;
            nb_set_error(NULL, st, file, line, "%s: tensor %d to differentiate with respect to is %s", what, i + 1,
                         !w ? "NULL" : w->status != NB_OK ? "errored" : !nb_alive(w) ? "from before nb_tape_reset"
                         : w->dtype != out->dtype ? "of another dtype than the output" : "on another tape");
            return st;
        }
    }
    return NB_OK;
}

/* A tape tensor of t's shape holding t's gradient from the pass just run,
 * or zeros when none reached it. */
static nb_tensor *copy_of_grad(nb_tape *tp, nb_tensor *t, const char *file, int line) {
    nb_tensor *g = nb_tensor_alloc(tp, t->dtype, t->ndim, t->shape, "nb_grad", file, line);
    if (g->status != NB_OK) return g;
    size_t bytes = t->size * nb_dtype_size(t->dtype);
    if (t->requires_grad && nb_grad_live(t) && t->grad_state == NB_GRAD_SET)
        memcpy(g->data, t->grad, bytes);
    else
        memset(g->data, 0, bytes);
    return g;
}

/* The fast path: one ordinary backward pass, the leaves' gradients set aside. */
static nb_status numeric_grads(nb_tensor *out, const nb_tensor *seed, nb_tensor *const *wrt, int n, nb_tensor **grads,
                               const char *file, int line) {
    nb_tape *tp = out->tape;
    nb_status st = NB_OK;
    if (out->requires_grad) {
        nb_saved_grads leaves;
        if (!nb_save_leaf_grads(tp, out, &leaves)) {
            nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_grad: out of memory setting the gradients aside");
            return NB_ERR_NOMEM;
        }
        /* Inside another pass (nested.c), the gradients are read before
         * the outer pass's are put back. */
        nb_pass_guard guard;
        nb_pass_enter(tp, &guard);
        st = nb_backward_pass(out, seed, file, line);
        for (int i = 0; st == NB_OK && i < n; i++) {
            grads[i] = copy_of_grad(tp, wrt[i], file, line);
            if (grads[i]->status != NB_OK) st = grads[i]->status;
        }
        nb_pass_leave(tp, &guard);
        nb_restore_leaf_grads(&leaves);
        return st;
    }
    for (int i = 0; i < n && st == NB_OK; i++) { /* nothing reaches out: zeros */
        grads[i] = nb_full_(tp, wrt[i]->dtype, wrt[i]->ndim, wrt[i]->shape, 0, file, line);
        st = grads[i]->status;
    }
    return st;
}

/* ---------------------------------------------------------------- create_graph */

/* dL/d t for the tensors reached so far: op results by their entry, the
 * others (leaves) in a list. */
typedef struct {
    nb_tensor **of_entry;   /* [entries - first]: the results of entries first.. */
    size_t first, entries;
    nb_tensor **leaf, **leaf_grad;
    size_t n_leaves, cap_leaves;
} grad_map;

static nb_tensor **slot_for(nb_tape *tp, grad_map *m, nb_tensor *t) {
    if (nb_on_tape(t) && t->tape == tp && t->entry > m->first && t->entry <= m->entries &&
        tp->entries[t->entry - 1].out == t)
        return &m->of_entry[t->entry - 1 - m->first];
    for (size_t i = 0; i < m->n_leaves; i++)
        if (m->leaf[i] == t) return &m->leaf_grad[i];
    if (m->n_leaves == m->cap_leaves) {
        size_t cap = m->cap_leaves ? 2 * m->cap_leaves : 16;
        nb_tensor **leaf = nb_tape_alloc(tp, cap * sizeof *leaf), **grad = nb_tape_alloc(tp, cap * sizeof *grad);
        if (!leaf || !grad) return NULL;
        if (m->n_leaves) {
            memcpy(leaf, m->leaf, m->n_leaves * sizeof *leaf);
            memcpy(grad, m->leaf_grad, m->n_leaves * sizeof *grad);
        }
        m->leaf = leaf;
        m->leaf_grad = grad;
        m->cap_leaves = cap;
    }
    m->leaf[m->n_leaves] = t;
    m->leaf_grad[m->n_leaves] = NULL;
    return &m->leaf_grad[m->n_leaves++];
}

static bool same_shape(const nb_tensor *a, const nb_tensor *b) {
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0;
}

/* What an op's backward_graph gave as dL/d input k must be a gradient of
 * that input: a live tensor of its shape and dtype, on this tape (or the
 * heap).  An errored one passes its error on.  False, with the tape
 * errored, if not. */
static bool fits_input(nb_tape *tp, const nb_entry *e, int k, const nb_tensor *g, const char *file, int line) {
    const nb_tensor *x = nb_entry_input(e, k);
    char sx[128], sg[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    const char *site = e->file ? e->file : "?";
    if (g->status != NB_OK) {
        if (tp->status == NB_OK) /* errored elsewhere (another tape): say so here */
            nb_set_error(tp, g->status, file, line,
                         "nb_grad: op %s (recorded at %s:%d) gave an errored gradient (%s) for its input %d %s",
                         e->op->name, site, e->line, nb_status_string(g->status), k + 1, sx);
        return false;
    }
    nb_status st = NB_OK;
    char what[160];
    if (nb_on_tape(g) && g->tape != tp)
        st = NB_ERR_STATE, snprintf(what, sizeof what, "a gradient on another tape");
    else if (!nb_alive(g))
        st = NB_ERR_STATE, snprintf(what, sizeof what, "a gradient from before nb_tape_reset");
    else if (g->dtype != x->dtype)
        st = NB_ERR_DTYPE, snprintf(what, sizeof what, "a %s gradient", g->dtype == NB_F32 ? "float32" : "float64");
    else if (!same_shape(g, x))
        st = NB_ERR_SHAPE, snprintf(what, sizeof what, "a gradient of shape %s",
                                    nb_format_shape(g->ndim, g->shape, sg, sizeof sg));
    if (st == NB_OK) return true;
    nb_set_error(tp, st, file, line,
                 "nb_grad: op %s (recorded at %s:%d) gave %s for its %s input %d %s; its backward_graph must give "
                 "each input's gradient in that input's shape and dtype, on the call's tape",
                 e->op->name, site, e->line, what, x->dtype == NB_F32 ? "float32" : "float64", k + 1, sx);
    return false;
}

static nb_status graph_grads(nb_tensor *out, nb_tensor *seed, nb_tensor *const *wrt, int n, nb_tensor **grads,
                             const char *file, int line) {
    nb_tape *tp = out->tape;
    bool was = nb_tape_set_grad_enabled(tp, true); /* the gradient ops must record gradients */
    if (!seed) { /* d out/d out = 1, named so in pictures */
        seed = nb_full_(tp, out->dtype, out->ndim, out->shape, 1, file, line);
        nb_tensor_set_name(seed, "seed 1");
    } else if (!same_shape(seed, out)) {
        long shape[NB_MAX_DIMS]; /* of out's size, as nb_backward_seed takes it: in out's shape */
        for (int d = 0; d < out->ndim; d++) shape[d] = (long)out->shape[d];
        seed = nb_reshape_(tp, seed, out->ndim, shape, file, line);
    }
    nb_status st = tp->status == NB_OK ? nb_grad_graph_partial(tp, &out, &seed, 1, 0, wrt, n, grads, file, line)
                                       : tp->status;
    nb_tape_set_grad_enabled(tp, was);
    return st;
}

nb_status nb_grad_graph_partial(nb_tape *tp, nb_tensor *const *outs, nb_tensor *const *seeds, int n_outs,
                                size_t first, nb_tensor *const *wrt, int n, nb_tensor **grads, const char *file,
                                int line) {
    bool was = nb_tape_set_grad_enabled(tp, true); /* the gradient ops must record gradients */
    grad_map m = {.first = first, .entries = first};
    for (int k = 0; k < n_outs; k++)
        if (outs[k]->entry > m.entries && nb_recorded(outs[k])) m.entries = outs[k]->entry;
    m.of_entry = nb_tape_alloc(tp, (m.entries - first) * sizeof *m.of_entry);
    if (!m.of_entry) {
        nb_tape_set_grad_enabled(tp, was);
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_grad: out of memory");
        return NB_ERR_NOMEM;
    }
    memset(m.of_entry, 0, (m.entries - first) * sizeof *m.of_entry);
    for (int k = 0; k < n_outs && tp->status == NB_OK; k++) {
        if (!seeds[k] || !outs[k]->requires_grad) continue;
        nb_tensor **slot = slot_for(tp, &m, outs[k]);
        if (!slot) {
            nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_grad: out of memory");
            break;
        }
        *slot = *slot ? nb_add_(tp, *slot, seeds[k], file, line) : seeds[k];
    }
    for (size_t i = m.entries; i-- > first && tp->status == NB_OK;) {
        nb_tensor *G = m.of_entry[i - first];
        if (!G) continue;
        /* A copy: the ops recorded below may move the entry array. */
        nb_entry e = tp->entries[i];
        if (!e.out->requires_grad) continue;
        /* The ops below read the inputs' values as they are now: an input
         * (or the output, which some backward_graphs reuse) written since
         * the entry was recorded would mix old and new values. */
        if (!nb_entry_unchanged(tp, &e, "nb_grad")) break;
        if (!e.op->backward_graph) {
            nb_set_error(tp, NB_ERR_UNSUPPORTED, file, line,
                         "nb_grad: op %s (recorded at %s:%d) has no differentiable backward (its nb_op_def has "
                         "no backward_graph), so gradients through it cannot be differentiated again",
                         e.op->name, e.file ? e.file : "?", e.line);
            break;
        }
        nb_tensor **grad_in = nb_tape_alloc(tp, (size_t)e.n_in * sizeof *grad_in);
        if (!grad_in) {
            nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_grad: out of memory");
            break;
        }
        memset(grad_in, 0, (size_t)e.n_in * sizeof *grad_in);
        /* (the user's code, for a custom op: it may not reset the tape, which
         * holds m and grad_in; see nb_user_enter) */
        nb_user_code outer = nb_user_enter(tp, (nb_user_code){.what = "backward_graph", .call = &e});
        e.op->backward_graph(&e, G, grad_in);
        nb_user_leave(tp, outer);
        for (int k = 0; k < e.n_in && tp->status == NB_OK; k++) {
            nb_tensor *x = nb_entry_input(&e, k);
            if (!grad_in[k] || !fits_input(tp, &e, k, grad_in[k], file, line) || !x->requires_grad) continue;
            nb_tensor **slot = slot_for(tp, &m, x);
            if (!slot) {
                nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_grad: out of memory");
                break;
            }
            *slot = *slot ? nb_add_(tp, *slot, grad_in[k], file, line) : grad_in[k];
        }
    }
    for (int i = 0; i < n && tp->status == NB_OK; i++) {
        nb_tensor **slot = slot_for(tp, &m, wrt[i]);
        nb_tensor *g = slot ? *slot : NULL;
        grads[i] = g ? g : nb_full_(tp, wrt[i]->dtype, wrt[i]->ndim, wrt[i]->shape, 0, file, line);
    }
    nb_tape_set_grad_enabled(tp, was);
    if (tp->status != NB_OK) nb_set_error(NULL, tp->status, NULL, 0, "%s", tp->error);
    return tp->status;
}

/* A call that fails leaves every one of its n results an errored tensor
 * (none unset, none of a part that succeeded), so that a caller reading
 * them after a failure reads errored tensors. */
static nb_status results_on_failure(nb_status st, nb_tensor **results, int n) {
    for (int i = 0; st != NB_OK && results && i < n; i++) results[i] = nb_nil(st);
    return st;
}

nb_status nb_grad_(nb_tensor *out, nb_tensor *seed, nb_tensor *const *wrt, int n, nb_tensor **grads, bool create_graph,
                   const char *file, int line) {
    nb_status st = check_call("nb_grad", out, seed, wrt, n, grads, file, line);
    for (int i = 0; grads && i < n; i++) grads[i] = nb_nil(st == NB_OK ? NB_ERR_STATE : st);
    if (st != NB_OK) return st;
    st = create_graph ? graph_grads(out, seed, wrt, n, grads, file, line)
                      : numeric_grads(out, seed, wrt, n, grads, file, line);
    return results_on_failure(st, grads, n);
}

/* ---------------------------------------------------------------- built on nb_grad */

/* Σ_i sum(a_i ⊙ b_i), a scalar on the tape. */
static nb_tensor *inner(nb_tape *tp, nb_tensor *const *a, nb_tensor *const *b, int n, const char *file, int line) {
    nb_tensor *s = NULL;
    for (int i = 0; i < n; i++) {
        nb_tensor *term = nb_sum_all_(tp, nb_mul_(tp, a[i], b[i], file, line), false, file, line);
        s = s ? nb_add_(tp, s, term, file, line) : term;
    }
    return s;
}

/* H v = d/dx (g(x) · v), g = d out/dx: two passes, the first recorded.  v
 * is a constant: the second pass must not differentiate through it (with
 * v = x, d/dx (g(x) · x) would add g(x) itself: (9, 36, 81) instead of
 * H x = (6, 24, 54) for sum(x³) at (1, 2, 3)), so a v that requires a
 * gradient enters the product detached, as torch.autograd.functional.hvp's
 * does. */
static nb_status hvp(nb_tensor *out, nb_tensor *const *wrt, int n, nb_tensor *const *v, nb_tensor **hv,
                     bool create_graph, const char *file, int line) {
    nb_status st = check_call("nb_hvp", out, NULL, wrt, n, hv, file, line);
    for (int i = 0; st == NB_OK && i < n; i++) {
        const nb_tensor *u = v ? v[i] : NULL;
        if (u && u->status == NB_OK && (!nb_alive(u) || (nb_on_tape(u) && u->tape != out->tape))) {
            st = NB_ERR_STATE;
            nb_set_error(NULL, st, file, line, "nb_hvp: vector %d is %s", i + 1,
                         !nb_alive(u) ? "from before nb_tape_reset" : "on another tape");
        } else if (!u || u->status != NB_OK || u->size != wrt[i]->size || u->dtype != wrt[i]->dtype) {
            st = !u ? NB_ERR_NULL : u->status != NB_OK ? u->status : u->dtype != wrt[i]->dtype ? NB_ERR_DTYPE
                                                                                                : NB_ERR_SHAPE;
            nb_set_error(NULL, st, file, line, "nb_hvp: vector %d %s", i + 1,
                         !u ? "is NULL" : u->status != NB_OK ? "is an errored tensor"
                                                             : "does not have the size and dtype of the tensor it "
                                                               "multiplies");
        }
    }
    if (st != NB_OK) return st;
    nb_tape *tp = out->tape;
    nb_tensor **g = nb_tape_alloc(tp, (size_t)n * sizeof *g), **fixed = nb_tape_alloc(tp, (size_t)n * sizeof *fixed);
    if (!g || !fixed) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_hvp: out of memory");
        return NB_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) fixed[i] = v[i]->requires_grad ? nb_detach_(tp, v[i], file, line) : v[i];
    if (tp->status != NB_OK) return tp->status;
    if ((st = nb_grad_(out, NULL, wrt, n, g, true, file, line)) != NB_OK) return st;
    /* g · v is recorded even in a no-grad region (as torch's hvp, which
     * enables gradients): without it the second pass would see a constant */
    bool was = nb_tape_set_grad_enabled(tp, true);
    nb_tensor *s = inner(tp, g, fixed, n, file, line);
    nb_tape_set_grad_enabled(tp, was);
    if (tp->status != NB_OK) return tp->status;
    if (!s->requires_grad) { /* g does not depend on wrt: the Hessian is zero */
        for (int i = 0; i < n; i++) hv[i] = nb_full_(tp, wrt[i]->dtype, wrt[i]->ndim, wrt[i]->shape, 0, file, line);
        return tp->status;
    }
    return nb_grad_(s, NULL, wrt, n, hv, create_graph, file, line);
}

nb_status nb_hvp_(nb_tensor *out, nb_tensor *const *wrt, int n, nb_tensor *const *v, nb_tensor **hv,
                  bool create_graph, const char *file, int line) {
    return results_on_failure(hvp(out, wrt, n, v, hv, create_graph, file, line), hv, n);
}

/* J v by the double-vjp trick: with u a dummy seed, g(u) = Jᵀ u is linear in
 * u, so d/du (g(u) · v) = J v.  Two backward passes, no forward mode. */
static nb_status jvp(nb_tensor *out, nb_tensor *const *wrt, int n, nb_tensor *const *tangents, nb_tensor **result,
                     const char *file, int line) {
    /* any output shape: the seed is made here (out stands for it in the checks) */
    nb_status st = check_call("nb_jvp", out, out && out->status == NB_OK ? out : NULL, wrt, n, result, file, line);
    if (st != NB_OK || !out) return st; /* (check_call refuses a NULL out) */
    nb_tape *tp = out->tape;
    for (int i = 0; st == NB_OK && i < n; i++) {
        const nb_tensor *t = tangents ? tangents[i] : NULL;
        if (t && t->status == NB_OK && (!nb_alive(t) || (nb_on_tape(t) && t->tape != tp))) {
            st = NB_ERR_STATE;
            nb_set_error(NULL, st, file, line, "nb_jvp: tangent %d %s", i + 1,
                         !nb_alive(t) ? "dates from before nb_tape_reset, which ended it" : "belongs to another tape");
        } else if (!t || t->status != NB_OK || t->size != wrt[i]->size || t->dtype != wrt[i]->dtype) {
            st = !t ? NB_ERR_NULL : t->status != NB_OK ? t->status : t->dtype != wrt[i]->dtype ? NB_ERR_DTYPE
                                                                                               : NB_ERR_SHAPE;
            nb_set_error(NULL, st, file, line, "nb_jvp: tangent %d does not have the shape and dtype of tensor %d",
                         i + 1, i + 1);
        }
    }
    if (st != NB_OK) return st;
    nb_tensor *u = nb_full_(tp, out->dtype, out->ndim, out->shape, 0, file, line);
    nb_tensor **g = nb_tape_alloc(tp, (size_t)n * sizeof *g);
    if (u->status != NB_OK || !g) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_jvp: out of memory");
        return NB_ERR_NOMEM;
    }
    u->requires_grad = true;
    if ((st = nb_grad_(out, u, wrt, n, g, true, file, line)) != NB_OK) return st;
    bool was = nb_tape_set_grad_enabled(tp, true); /* recorded in a no-grad region too, as in nb_hvp */
    nb_tensor *s = inner(tp, g, tangents, n, file, line);
    nb_tape_set_grad_enabled(tp, was);
    if (tp->status != NB_OK) return tp->status;
    return nb_grad_(s, NULL, &u, 1, result, false, file, line);
}

nb_status nb_jvp_(nb_tensor *out, nb_tensor *const *wrt, int n, nb_tensor *const *tangents, nb_tensor **result,
                  const char *file, int line) {
    return results_on_failure(jvp(out, wrt, n, tangents, result, file, line), result, 1); /* one result: J t */
}

/* Row i of the Jacobian is the gradient of out's element i: one backward
 * pass per element, seeded with the i-th unit vector. */
nb_tensor *nb_jacobian_(nb_tensor *out, nb_tensor *x, const char *file, int line) {
    nb_tensor *row;
    nb_tensor *seed_probe = out && out->status == NB_OK ? out : NULL;
    nb_status st = check_call("nb_jacobian", out, seed_probe, &x, 1, &row, file, line);
    if (st != NB_OK) return nb_nil(st);
    nb_tape *tp = out->tape;
    size_t shape[2] = {out->size, x->size};
    nb_tensor *J = nb_tensor_alloc(tp, out->dtype, 2, shape, "nb_jacobian", file, line);
    nb_tensor *seed = nb_full_(tp, out->dtype, out->ndim, out->shape, 0, file, line);
    if (J->status != NB_OK || seed->status != NB_OK) return nb_nil(NB_ERR_NOMEM);
    size_t w = nb_dtype_size(out->dtype);
    for (size_t i = 0; i < out->size; i++) {
        memset(seed->data, 0, out->size * w);
        if (out->dtype == NB_F32)
            NB_F(seed)[i] = 1;
        else
            NB_D(seed)[i] = 1;
        if ((st = nb_grad_(out, seed, &x, 1, &row, false, file, line)) != NB_OK) return nb_nil(st);
        memcpy((char *)J->data + i * x->size * w, row->data, x->size * w);
    }
    return J;
}

/* The Jacobian of the gradient: d²out/dx_i dx_j, row by row. */
nb_tensor *nb_hessian_(nb_tensor *out, nb_tensor *x, const char *file, int line) {
    nb_tensor *g;
    nb_status st = nb_grad_(out, NULL, &x, 1, &g, true, file, line);
    if (st != NB_OK) return nb_nil(st);
    if (!g->requires_grad) { /* a gradient that does not depend on x: zero Hessian */
        size_t shape[2] = {x->size, x->size};
        return nb_full_(out->tape, x->dtype, 2, shape, 0, file, line);
    }
    return nb_jacobian_(g, x, file, line);
}
