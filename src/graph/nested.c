/*
 * Passes inside passes.  A custom op's backward may ask for a gradient of
 * its own on the same tape (nb_grad_seed for a vector-Jacobian product, as
 * a PyTorch Function's backward may call autograd.grad), and so may a
 * backward hook.  That inner pass runs while the outer one is half done:
 * op results hold partial gradients of the outer pass (grad, grad_state,
 * grad_pass), entries hold its explain-mode contributions, and the tape
 * holds its pass number.  The inner pass takes a pass number of its own, so
 * that to it every outer gradient is stale; it replaces (never writes into)
 * what it touches, and the first time it replaces a tensor's gradient or an
 * entry's contributions, the outer ones are logged here and put back when
 * the inner pass ends.  Only what the inner pass touches is logged, so its
 * cost is its own size, not the tape's.
 *
 * Leaves are not logged: nb_grad sets them aside and gives them back as it
 * always does; nb_backward adds into them, as backward() inside a PyTorch
 * Function's backward adds into .grad.  The backward hooks are not called
 * for inner passes (backward.c clears them around the user's callbacks).
 * Plain SGD folded into the outer pass (nb_optimizer_backward_step) stops
 * at the first inner pass: see defuse().
 */
#include "../internal.h"

#include <string.h>

static nb_kept *kept_slot(nb_tape *tp) {
    nb_nested *log = tp->nested;
    if (log->n == log->cap) {
        size_t cap = log->cap ? 2 * log->cap : 32;
        nb_kept *grown = nb_tape_alloc(tp, cap * sizeof *grown);
        if (!grown) {
            nb_set_error(tp, NB_ERR_NOMEM, NULL, 0, "nb_backward: out of memory keeping the outer pass's gradients");
            return NULL;
        }
        if (log->n) memcpy(grown, log->kept, log->n * sizeof *grown);
        log->kept = grown;
        log->cap = cap;
    }
    return &log->kept[log->n++];
}

bool nb_keep_for_outer(nb_tape *tp, nb_tensor *t) {
    nb_kept *k = kept_slot(tp);
    if (k) *k = (nb_kept){.t = t, .was = t->grad, .pass = t->grad_pass, .state = t->grad_state};
    return k != NULL;
}

/* Called by record_contributions before it replaces an entry's
 * contributions of another pass. */
bool nb_keep_contributions_for_outer(nb_tape *tp, size_t entry) {
    nb_kept *k = kept_slot(tp);
    if (k) *k = (nb_kept){.t = NULL, .was = tp->entries[entry].contrib, .entry = entry};
    return k != NULL;
}

/* The fused SGD of nb_backward_sgd_ applies a weight's update where its one
 * reader's backward computes its gradient.  An inner pass must compute
 * ordinary gradients (an update applied there would use the inner seed),
 * and may run a reader before the outer pass does: so the rest of the
 * outer pass computes ordinary gradients too, and nb_optimizer_step applies
 * them.  The updates already applied stand: each used a complete gradient.
 * (Weights whose values they changed are refused by the version check if
 * the inner pass reads them.) */
static void defuse(nb_tape *tp) {
    for (size_t i = 0; i < tp->n_entries; i++)
        for (int k = 0; k < tp->entries[i].n_in; k++) nb_entry_input(&tp->entries[i], k)->sgd = NB_SGD_NO;
    tp->sgd_lr = 0;
}

void nb_pass_enter(nb_tape *tp, nb_pass_guard *g) {
    g->nested = tp->running++ > 0;
    if (!g->nested) return;
    g->pass = tp->pass;
    g->outer = tp->nested;
    g->log = (nb_nested){0};
    tp->nested = &g->log;
    if (tp->sgd_lr > 0) defuse(tp);
}

void nb_pass_leave(nb_tape *tp, nb_pass_guard *g) {
    tp->running--;
    if (!g->nested) return;
    for (size_t i = g->log.n; i-- > 0;) { /* latest first: each was logged once, but be exact */
        const nb_kept *k = &g->log.kept[i];
        if (k->t) {
            k->t->grad = k->was;
            k->t->grad_state = k->state;
            k->t->grad_pass = k->pass;
        } else if (k->entry < tp->n_entries) {
            tp->entries[k->entry].contrib = k->was;
        }
    }
    tp->pass = g->pass;
    tp->nested = g->outer;
}
