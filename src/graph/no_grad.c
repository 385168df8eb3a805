/*
 * No-grad mode, as torch.no_grad: ops compute their results but record
 * nothing for backward.
 *
 * An op records its entry as usual (its forward reads its inputs and
 * parameters from the entry), runs, and in this mode is then taken off the
 * tape again (nb_forget_entry): the next op's entry takes the same slot, so
 * the entry array does not grow however many ops run.  The result is a
 * leaf that requires no gradient (torch: requires_grad False, is_leaf True,
 * no grad_fn), marked so that nb_backward and nb_grad through it say why
 * they refuse.
 *
 * Its values still live in the tape's arena until the reset.  A scope,
 * nb_no_grad_begin ... nb_no_grad_end, also gives them back at its end:
 * the arena is rewound to where it stood at the begin, and the headers
 * made since are retired (refused as stale by every call, their addresses
 * never given out again).  Scopes make their headers in a store of their
 * own (swapped in at the outermost begin), whose window the outermost end
 * moves to fresh addresses as a reset does (the old range reads as zeros:
 * no tensor), so the pages are reused and memory stays flat however many
 * scopes run; an inner scope's end zeroes its part instead.  Evaluating batch after batch inside scopes therefore holds
 * one batch's intermediates at a time.  The rewind is safe only when
 * nothing made before the scope points into what it gives back, so it is
 * skipped (the results are then kept until the reset, as with
 * nb_tape_no_grad) when, inside the scope, an entry was recorded (nb_grad,
 * nb_hvp and custom ops' own recordings turn gradients on), a backward
 * pass ran, a tape tensor got a gradient buffer or a name, or the tape
 * was reset.
 */
#include "../internal.h"
#include "recompute.h"

#include <string.h>

#define NB_NO_GRAD_DEPTH 16

struct nb_no_grad_mark {
    bool no_record, grad_enabled; /* the modes to restore */
    uint32_t generation;
    size_t n_entries;
    unsigned pass, kept_allocs;
    nb_chunk *chunk;               /* the arena's current chunk and its fill */
    size_t chunk_used;
    const char *window;            /* the headers' window, its fill, and windows filled */
    size_t window_used;
    int n_full;
    bool scratch;                  /* a recomputation's region (nb_scratch_begin), not a scope */
    bool guarded;                  /* opened by nb_recompute, which alone ends it */
    bool store_kept;               /* the tape's scope_store_kept then */
};

void nb_forget_entry(nb_tape *tp, nb_entry *e) {
    if (tp->n_entries == 0 || e != &tp->entries[tp->n_entries - 1]) return; /* (only the last: never otherwise) */
    for (int i = 0; i < e->n_in; i++) {
        nb_tensor *x = nb_entry_input(e, i);
        if (x->uses > 0 && x->uses < UINT8_MAX) x->uses--;
    }
    nb_tensor *out = e->out;
    out->entry = 0;
    out->is_leaf = true;
    out->requires_grad = false;
    out->no_grad = 1;
    tp->n_entries--;
}

bool nb_tape_no_grad(nb_tape *tp, bool on) {
    if (!tp) return false;
    bool was = tp->no_record;
    tp->no_record = on;
    tp->grad_enabled = !on;
    return was;
}

bool nb_tape_no_grad_mode(const nb_tape *tp) { return tp && tp->no_record && !tp->grad_enabled; }

static void swap_stores(nb_tape *tp) {
    nb_headers t = tp->headers;
    tp->headers = tp->other_headers;
    tp->other_headers = t;
}

/* Room for one more mark: NB_OK, or the error (on the tape) of `what`. */
static nb_status room_for_mark(nb_tape *tp, const char *what) {
    if (tp->no_grad_depth == NB_NO_GRAD_DEPTH) {
        nb_set_error(tp, NB_ERR_STATE, NULL, 0,
                     "%s: %d scopes (no-grad scopes and recomputations, nb_recompute) are already open on this "
                     "tape, the most it nests (each nb_no_grad_begin needs its nb_no_grad_end)", what,
                     NB_NO_GRAD_DEPTH);
        return NB_ERR_STATE;
    }
    if (!tp->no_grad_marks && !(tp->no_grad_marks = nb_malloc(NB_NO_GRAD_DEPTH * sizeof *tp->no_grad_marks))) {
        nb_set_error(tp, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", what);
        return NB_ERR_NOMEM;
    }
    return NB_OK;
}

static void push_mark(nb_tape *tp, bool scratch, bool guarded) {
    if (tp->no_grad_depth == 0) swap_stores(tp);
    const nb_headers *h = &tp->headers;
    tp->no_grad_marks[tp->no_grad_depth++] = (struct nb_no_grad_mark){
        .no_record = tp->no_record, .grad_enabled = tp->grad_enabled, .generation = tp->generation,
        .n_entries = tp->n_entries, .pass = tp->pass, .kept_allocs = tp->kept_allocs,
        .chunk = tp->arena.current, .chunk_used = tp->arena.current ? tp->arena.current->used : 0,
        .window = h->base, .window_used = h->used, .n_full = h->n_full, .scratch = scratch, .guarded = guarded,
        .store_kept = tp->scope_store_kept};
}

/* Gives back the arena and retires the headers made since mark m. */
static void free_since(nb_tape *tp, const struct nb_no_grad_mark *m) {
    nb_arena_rewind(&tp->arena, m->chunk, m->chunk_used);
    if (tp->no_grad_depth == 0 && !tp->scope_store_kept)
        nb_headers_reset(&tp->headers, true); /* the whole store: its pages to fresh addresses */
    else
        nb_headers_retire_since(&tp->headers, m->window, m->window_used, m->n_full);
}

nb_status nb_no_grad_begin(nb_tape *tp) {
    if (!tp) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_no_grad_begin: the tape is NULL");
        return NB_ERR_NULL;
    }
    nb_status st = room_for_mark(tp, "nb_no_grad_begin");
    if (st != NB_OK) return st;
    push_mark(tp, false, false);
    nb_tape_no_grad(tp, true);
    return NB_OK;
}

nb_status nb_no_grad_end(nb_tape *tp) {
    if (!tp) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_no_grad_end: the tape is NULL");
        return NB_ERR_NULL;
    }
    if (tp->no_grad_depth == 0 || tp->no_grad_marks[tp->no_grad_depth - 1].guarded) {
        nb_set_error(tp, NB_ERR_STATE, NULL, 0, "nb_no_grad_end: no nb_no_grad_begin is open on this tape%s",
                     tp->no_grad_depth ? " inside the function that nb_recompute runs (it must end the scopes "
                                         "it begins, and only those)" : "");
        return NB_ERR_STATE;
    }
    const struct nb_no_grad_mark *m = &tp->no_grad_marks[--tp->no_grad_depth];
    tp->no_record = m->no_record;
    tp->grad_enabled = m->grad_enabled;
    /* Inside a callback (a custom op's forward), or a backward pass, the
     * call under way may hold memory the scope gave it (nb_op_save, a
     * gradient): keep everything.  Not inside nb_recompute's function,
     * whose call (a backward pass's too) holds nothing made since the
     * function began (src/graph/recompute.c). */
    bool free_to = !tp->user_code.what ? tp->running == 0 : tp->user_code.scopes_free;
    bool safe = free_to && m->generation == tp->generation && m->n_entries == tp->n_entries && m->pass == tp->pass &&
                m->kept_allocs == tp->kept_allocs;
    if (safe) {
        free_since(tp, m);
    } else {
        tp->kept_allocs++; /* the enclosing scopes keep theirs too */
        tp->scope_store_kept = true;
    }
    if (tp->no_grad_depth == 0) swap_stores(tp);
    return NB_OK;
}

/* Ends the scopes opened above the innermost guarded mark (a function
 * that left them open is refused; they must not outlive it). */
static void end_scopes_above_guard(nb_tape *tp) {
    while (tp->no_grad_depth > 0 && !tp->no_grad_marks[tp->no_grad_depth - 1].guarded) nb_no_grad_end(tp);
}

/* A recomputation's region (src/graph/recompute.c) frees what was made in
 * it, whatever was recorded or run there: the recomputation takes its
 * entries off the tape, and every gradient it gave a tensor made before
 * was allocated before the region began.  A scope inside that kept its
 * tensors kept them inside the region, which frees them all: the store is
 * then as kept as it was at the begin. */
nb_status nb_scratch_begin(nb_tape *tp) {
    nb_status st = room_for_mark(tp, "nb_backward (recomputing the function of nb_recompute)");
    if (st == NB_OK) push_mark(tp, true, true);
    return st;
}

nb_status nb_no_grad_begin_guarded(nb_tape *tp) {
    nb_status st = nb_no_grad_begin(tp);
    if (st == NB_OK) tp->no_grad_marks[tp->no_grad_depth - 1].guarded = true;
    return st;
}

void nb_no_grad_end_guarded(nb_tape *tp) {
    end_scopes_above_guard(tp);
    if (tp->no_grad_depth == 0 || !tp->no_grad_marks[tp->no_grad_depth - 1].guarded) return; /* (never) */
    tp->no_grad_marks[tp->no_grad_depth - 1].guarded = false;
    nb_no_grad_end(tp);
}

void nb_scratch_end(nb_tape *tp) {
    end_scopes_above_guard(tp);
    if (tp->no_grad_depth == 0 || !tp->no_grad_marks[tp->no_grad_depth - 1].scratch) return; /* (never) */
    const struct nb_no_grad_mark *m = &tp->no_grad_marks[--tp->no_grad_depth];
    tp->scope_store_kept = m->store_kept;
    free_since(tp, m);
    if (tp->no_grad_depth == 0) swap_stores(tp);
}
