/*
 * The tape: a flat array of entries in the order the ops ran.  Because an op
 * can only use tensors that exist already, that order is topological, and
 * backward is a plain reverse loop over the array (no recursion, no sort).
 *
 * The entry array and the arena keep their memory across nb_tape_reset(), so
 * a training loop reaches a steady state in which recording allocates nothing.
 */
#include "../internal.h"

/* nb_record (src/internal.h) sets every field of an entry one by one: a
 * field added to struct nb_op_call must be set there too. */
_Static_assert(sizeof(void *) != 8 || sizeof(nb_entry) == 96, "an entry is 96 bytes: nb_record sets each field");

#include <limits.h>
#include <string.h>

nb_tape *nb_tape_new(void) {
    nb_tape *tp = nb_malloc(sizeof *tp);
    if (!tp) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_tape_new: out of memory");
        return NULL;
    }
    memset(tp, 0, sizeof *tp);
    nb_arena_init(&tp->arena);
    nb_headers_init(&tp->headers);
    nb_headers_init(&tp->other_headers);
    tp->grad_enabled = true;
    tp->training = true;
    tp->current_scope = -1;
    return tp;
}

/* From inside the user's code that the tape runs (see nb_user_enter), a
 * reset or a free would pull the memory from under the call that runs it:
 * refused, the tape left as it was and errored.  True if refused. */
static bool refused_inside_callback(nb_tape *tp, const char *what) {
    const nb_user_code *u = &tp->user_code;
    bool freeing = !strcmp(what, "nb_tape_free");
    if (!u->what || (u->may_reset && !freeing)) return false;
    tp->refused_resets++; /* (compared for change only: wrapping is fine) */
    /* "rsq: its backward called ...", "nb_backward: the backward hook called ..." */
    nb_set_error(tp, NB_ERR_STATE, u->call ? u->call->file : NULL, u->call ? u->call->line : 0,
                 "%s: %s %s called %s on the tape that runs it, which is refused: the call under way still uses "
                 "the tape's memory (the tape is left as it was: %s once that call has returned)",
                 u->call ? u->call->op->name : u->who, u->call ? "its" : "the", u->what, what,
                 freeing ? "free it" : "reset it");
    return true;
}

void nb_tape_free(nb_tape *tp) {
    if (!tp || refused_inside_callback(tp, "nb_tape_free")) return;
    nb_arena_free(&tp->arena);
    nb_headers_free(&tp->headers); /* retired: its tensors stay recognisable */
    nb_headers_free(&tp->other_headers);
    nb_free(tp->entries);
    nb_free(tp->scopes);
    nb_free(tp->scratch);
    nb_free(tp->no_grad_marks);
    nb_free(tp);
}

void nb_tape_reset(nb_tape *tp) {
    if (!tp || refused_inside_callback(tp, "nb_tape_reset")) return;
    /* Tape tensors cease to exist; heap leaves hold no link into the tape.
     * Their headers stay where they are, recognisably old (by generation,
     * or retired to zeros), and no new header takes their addresses.  When
     * the generation count wraps, every header older is retired, so that
     * no old generation number can come back. */
    nb_arena_reset(&tp->arena);
    tp->generation++;
    nb_headers_reset(&tp->headers, tp->generation == 0);
    nb_headers_reset(&tp->other_headers, tp->generation == 0); /* (no-grad scopes' store, or the tape's) */
    tp->scope_store_kept = false;
    tp->n_entries = 0;
    tp->n_scopes = 0;
    tp->current_scope = -1;
    tp->status = NB_OK;
    tp->error[0] = '\0';
}

nb_status nb_tape_status(const nb_tape *tp) { return tp ? tp->status : NB_ERR_NULL; }
const char *nb_tape_error(const nb_tape *tp) { return tp ? tp->error : "the tape is NULL"; }
size_t nb_tape_size(const nb_tape *tp) { return tp ? tp->n_entries : 0; }

size_t nb_tape_memory(const nb_tape *tp) {
    return tp ? tp->arena.total + nb_headers_memory(&tp->headers) + nb_headers_memory(&tp->other_headers) + tp->cap_entries * sizeof(nb_entry) +
                    tp->scratch_bytes
              : 0;
}

bool nb_tape_set_grad_enabled(nb_tape *tp, bool enabled) {
    if (!tp) return false;
    bool was = tp->grad_enabled;
    tp->grad_enabled = enabled;
    return was;
}

void nb_tape_set_backward_hook(nb_tape *tp, nb_backward_hook hook, void *user) {
    if (!tp) return;
    tp->hook = hook;
    tp->hook_user = user;
}

bool nb_tape_set_training(nb_tape *tp, bool training) {
    if (!tp) return false;
    bool was = tp->training;
    tp->training = training;
    return was;
}

bool nb_tape_training(const nb_tape *tp) { return tp && tp->training; }

void nb_tape_set_explain(nb_tape *tp, bool on) {
    if (tp) tp->explain = on;
}

nb_status nb_scope_begin(nb_tape *tp, const char *name) {
    if (!tp || !name) {
        nb_set_error(tp, NB_ERR_NULL, NULL, 0, "nb_scope_begin: %s is NULL", tp ? "the name" : "the tape");
        return NB_ERR_NULL;
    }
    if (tp->n_scopes == tp->cap_scopes) {
        int cap = tp->cap_scopes ? 2 * tp->cap_scopes : 16;
        nb_scope *grown = nb_realloc(tp->scopes, (size_t)cap * sizeof *grown);
        if (!grown) {
            nb_set_error(tp, NB_ERR_NOMEM, NULL, 0, "nb_scope_begin: out of memory for scope '%s'", name);
            return NB_ERR_NOMEM;
        }
        tp->scopes = grown;
        tp->cap_scopes = cap;
    }
    nb_scope *sc = &tp->scopes[tp->n_scopes];
    size_t len = nb_utf8_prefix(name, sizeof sc->name - 1);
    memcpy(sc->name, name, len);
    sc->name[len] = '\0';
    sc->parent = tp->current_scope;
    tp->current_scope = tp->n_scopes++;
    return NB_OK;
}

void nb_scope_end(nb_tape *tp) {
    if (tp && tp->current_scope >= 0) tp->current_scope = tp->scopes[tp->current_scope].parent;
}

void *nb_tape_scratch(nb_tape *tp, size_t bytes, const nb_entry *e) {
    if (bytes <= tp->scratch_bytes) return tp->scratch;
    size_t grown = tp->scratch_bytes * 2 > bytes ? tp->scratch_bytes * 2 : bytes;
    void *p = nb_malloc_aligned(grown);
    if (!p) {
        nb_set_error(tp, NB_ERR_NOMEM, e->file, e->line, "%s: out of memory for %zu bytes of working memory",
                     e->op->name, bytes);
        return NULL;
    }
    nb_free(tp->scratch);
    tp->scratch = p;
    tp->scratch_bytes = grown;
    return p;
}

void *nb_tape_alloc(nb_tape *tp, size_t bytes) {
    return nb_arena_alloc(&tp->arena, bytes, nb_align_for(bytes));
}

nb_tensor *nb_result_view(nb_tape *tp, nb_tensor *src, int ndim, const size_t *shape,
                          const char *op, const char *file, int line) {
    nb_tensor *t = nb_header_alloc(tp, nb_header_bytes(ndim));
    if (!t) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", op);
    *t = (nb_tensor){.dtype = src->dtype, .ndim = (uint8_t)ndim, .status = NB_OK, .home = NB_HOME_TAPE, .tape = tp,
                     .generation = tp->generation, .size = src->size, .data = src->data, .name = nb_unnamed,
                     .base = src->base ? src->base : src};
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    return t;
}

bool nb_record_many(nb_tape *tp, nb_entry *e, nb_tensor *const *in) {
    nb_tensor **many = nb_tape_alloc(tp, (size_t)e->n_in * sizeof *many);
    if (!many) {
        nb_set_error(tp, NB_ERR_NOMEM, e->file, e->line, "%s: out of memory for %d inputs", e->op->name, e->n_in);
        tp->n_entries--;
        return false;
    }
    memcpy(many, in, (size_t)e->n_in * sizeof *many);
    e->many = many;
    return true;
}

bool nb_tape_grow(nb_tape *tp, const nb_op *op, const char *file, int line) {
    size_t cap = tp->cap_entries ? 2 * tp->cap_entries : 256;
    if (cap > UINT32_MAX) cap = UINT32_MAX; /* a tensor keeps its entry's number in 32 bits */
    if (cap <= tp->cap_entries) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "%s: the tape is full (%zu entries, the most it can hold)",
                     op->name, tp->cap_entries);
        return false;
    }
    nb_entry *grown = nb_realloc(tp->entries, cap * sizeof *grown);
    if (!grown) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "%s: cannot grow the tape to %zu entries", op->name, cap);
        return false;
    }
    tp->entries = grown;
    tp->cap_entries = cap;
    return true;
}

nb_tensor *nb_check_slow(nb_tape *tp, const nb_op *op, const char *file, int line, int n,
                         nb_tensor *const *in) {
    nb_tensor *failed = nb_check_inputs(tp, op->name, file, line, n, in);
    if (!failed) failed = nb_check_same_dtype(tp, op->name, file, line, n, in);
    return failed;
}


/* ---------------------------------------------------------------- walking */

/* The entry that made t, or NULL (a leaf, errored, or stale). */
static const nb_entry *maker(const nb_tensor *t) {
    if (!t || t->status != NB_OK || !nb_recorded(t)) return NULL;
    return &t->tape->entries[t->entry - 1];
}

const char *nb_tensor_op(const nb_tensor *t) {
    const nb_entry *e = maker(t);
    return e ? e->op->name : "";
}

int nb_tensor_n_inputs(const nb_tensor *t) {
    const nb_entry *e = maker(t);
    return e ? e->n_in : 0;
}

nb_tensor *nb_tensor_input(const nb_tensor *t, int k) {
    const nb_entry *e = maker(t);
    return e && k >= 0 && k < e->n_in ? nb_entry_input(e, k) : NULL;
}
