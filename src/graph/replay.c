/*
 * Record once, replay many (include/nabla_graph.h).  A graph is a list of
 * the tape's entries that its outputs depend on: forward runs their kernels
 * in order, backward runs their backwards in reverse.  Each entry keeps the
 * arguments it was recorded with (its inputs, output, parameters, saved
 * memory), so a replay is the tight loop
 *     for each entry: e->op->forward(e)
 * writing into the same buffers: no allocation, no shape logic and no
 * checks per op.  What eager mode checks per op was checked when the ops
 * were recorded, and holds again as long as the shapes do (inputs of
 * another shape are refused) and the tape is the same recording (a reset
 * ends the graph).
 *
 * Gradients: every op result of the graph gets its own gradient buffer at
 * capture (a 1-element result its slot, as backward gives it); a backward
 * replay hands each result its buffer back, marked as holding nothing of
 * this pass, so the ops' backwards write into it exactly as in a new
 * recording's first pass (the first contribution sets, the next ones add;
 * a result read once shares its output's buffer), and allocate nothing.
 *
 * Write clocks: a forward replay stamps every entry and marks every result
 * written at one tick of the clock, so that entries recorded after the
 * capture that read the graph's results are refused by nb_backward (their
 * values are those of the recording), and a write after the forward (nb_set
 * on an intermediate) is refused by the backward replay, as by nb_backward.
 */
#include "replay.h"

#include <stdlib.h>
#include <string.h>

/* What a forward step does besides running the op's kernel. */
enum { STEP_USER = 1, STEP_REDRAW = 2, STEP_TARGETS = 4 };

struct nb_graph {
    nb_tape *tp;
    uint32_t generation;   /* the tape's recording it belongs to */
    size_t n_entries;      /* the tape's entries when captured (they must still be there) */
    uint32_t *fwd;         /* entries run forward, in order */
    uint8_t *kind;         /* STEP_* for each */
    size_t n_fwd;
    uint32_t *bwd;         /* entries whose result takes a gradient, in reverse order */
    void **grad_buf;       /* the gradient buffer of each one's result */
    size_t n_bwd;
    uint32_t *guards;      /* nb_guard entries */
    size_t n_guards;
    nb_tensor **leaves;    /* leaves read that take a gradient (for the fused SGD's state) */
    size_t n_leaves;
    nb_tensor **inputs, **outputs;
    int n_inputs, n_outputs;
    bool check_guards;
    bool dropout;          /* recorded in training mode with dropout */
    bool verified;         /* nothing of the graph was written since `clock` */
    bool diverged;         /* the last forward was refused by a guard */
    bool forwarded;        /* a forward replay ran: every entry is as of `stamp` */
    uint32_t stamp;        /* the write clock of the last forward replay */
    nb_scalar_program *scalar; /* scalar code's compact program, or NULL */
    uint32_t clock;
    const char *file;
    int line;
};

/* ---------------------------------------------------------------- nb_guard */

static void guard_forward(nb_entry *e) {
    NB_DISPATCH(e->out->dtype, {
        const T *x = e->in[0]->data;
        *(T *)e->out->data = x[0] > 0 ? 1 : 0;
    });
}
static const nb_op guard_op = {.name = "guard", .forward = guard_forward, .derivative = {"none"}};

bool nb_is_guard(const nb_entry *e) { return e->op == &guard_op; }

bool nb_guard_(nb_tape *tp, nb_tensor *x, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &guard_op, file, line, 1, &x);
    if (failed) return false;
    char s[128];
    if (x->size != 1) {
        nb_fail(tp, NB_ERR_SHAPE, file, line, "guard: x has shape %s; a guard compares one element with 0",
                nb_format_shape(x->ndim, x->shape, s, sizeof s));
        return false;
    }
    nb_entry *e = nb_emit(tp, &guard_op, 1, &x, x->dtype, 0, NULL, file, line, &failed);
    if (!e) return false;
    e->out->requires_grad = false;
    nb_tensor *out = e->out;
    e->scalar = 0;
    nb_run(e); /* (in no-grad mode the entry is gone after this: nothing to replay) */
    bool taken = out->dtype == NB_F32 ? *(float *)out->data != 0 : *(double *)out->data != 0;
    if (nb_recorded(out)) tp->entries[out->entry - 1].scalar = taken;
    return taken;
}

/* ---------------------------------------------------------------- capture */

static int compare_pointers(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (nb_tensor *const *)a, y = (uintptr_t) * (nb_tensor *const *)b;
    return x < y ? -1 : x > y;
}

static bool is_result_on(const nb_tape *tp, const nb_tensor *x, size_t before) {
    return nb_on_tape(x) && x->tape == tp && x->generation == tp->generation && x->entry >= 1 &&
           x->entry <= before && tp->entries[x->entry - 1].out == x;
}

static void describe(const nb_tensor *t, char *buf, size_t size) {
    char shape[128];
    nb_format_shape(t->ndim, t->shape, shape, sizeof shape);
    if (t->name && t->name[0])
        snprintf(buf, size, "'%s' %s %s", t->name, shape, t->dtype == NB_F32 ? "float32" : "float64");
    else
        snprintf(buf, size, "%s %s", shape, t->dtype == NB_F32 ? "float32" : "float64");
}

void nb_graph_free(nb_graph *g) {
    if (!g) return;
    nb_free(g->fwd);
    nb_free(g->kind);
    nb_free(g->bwd);
    nb_free(g->grad_buf);
    nb_free(g->guards);
    nb_free(g->leaves);
    nb_free(g->inputs);
    nb_free(g->outputs);
    nb_scalar_free(g->scalar);
    nb_free(g);
}

/* The checks of the call itself: NULL when fine, else the status. */
static nb_status check_call(nb_tape *tp, nb_tensor *const *inputs, int n_inputs, nb_tensor *const *outputs,
                            int n_outputs, const char *file, int line) {
    char s[300];
#define REFUSE(st, ...) return nb_set_error(NULL, st, file, line, __VA_ARGS__), st
    if (!tp) REFUSE(NB_ERR_NULL, "nb_graph_capture: the tape is NULL");
    if (tp->status != NB_OK) REFUSE(tp->status, "nb_graph_capture: the tape has an error: %s", tp->error);
    if (tp->running || tp->user_code.what)
        REFUSE(NB_ERR_STATE, "nb_graph_capture: called during a backward pass or from a callback; capture once the "
                             "call under way has returned");
    if (n_inputs < 0 || n_outputs < 1 || (n_inputs && !inputs) || !outputs)
        REFUSE(NB_ERR_ARG, "nb_graph_capture: %d inputs and %d outputs given%s (at least one output)", n_inputs,
               n_outputs, (n_inputs && !inputs) || !outputs ? " in a NULL array" : "");
    for (int i = 0; i < n_outputs; i++) {
        nb_tensor *y = outputs[i];
        if (!y) REFUSE(NB_ERR_NULL, "nb_graph_capture: output %d is NULL", i);
        if (y->status != NB_OK) REFUSE(y->status, "nb_graph_capture: output %d is an errored tensor (%s)", i,
                                       nb_status_string(y->status));
        describe(y, s, sizeof s);
        if (!is_result_on(tp, y, tp->n_entries))
            REFUSE(NB_ERR_STATE,
                   "nb_graph_capture: output %d %s is not the result of an op recorded on this tape since its last "
                   "reset (%s); a graph's outputs are op results", i, s,
                   nb_on_tape(y) && y->tape == tp && !nb_alive(y) ? "it dates from before nb_tape_reset"
                   : y->no_grad ? "it was computed in no-grad mode, which records no op"
                   : y->is_leaf ? "it is a leaf" : "it belongs to another tape");
    }
    for (int i = 0; i < n_inputs; i++) {
        nb_tensor *x = inputs[i];
        if (!x) REFUSE(NB_ERR_NULL, "nb_graph_capture: input %d is NULL", i);
        if (x->status != NB_OK) REFUSE(x->status, "nb_graph_capture: input %d is an errored tensor (%s)", i,
                                       nb_status_string(x->status));
        describe(x, s, sizeof s);
        if (nb_on_tape(x) && (x->tape != tp || !nb_alive(x)))
            REFUSE(NB_ERR_STATE, "nb_graph_capture: input %d %s %s", i, s,
                   x->tape != tp ? "belongs to another tape" : "dates from before nb_tape_reset");
        if (!x->is_leaf || (x->entry && !x->no_grad))
            REFUSE(NB_ERR_ARG,
                   "nb_graph_capture: input %d %s is the result of an op (%s), not a leaf; a replay computes it "
                   "again: name the leaves it is computed from as inputs",
                   i, s, x->entry >= 1 && x->entry <= tp->n_entries ? tp->entries[x->entry - 1].op->name : "?");
        for (int j = 0; j < i; j++)
            if (inputs[j] == x) REFUSE(NB_ERR_ARG, "nb_graph_capture: input %d %s is input %d too", i, s, j);
    }
#undef REFUSE
    return NB_OK;
}

/* Walks the entries back from the outputs: which ones they depend on, and
 * the leaves they read.  NB_OK, or the refusal. */
static nb_status walk(nb_graph *g, bool *reached, size_t last, nb_tensor ***read, size_t *n_read, const char *file,
                      int line) {
    nb_tape *tp = g->tp;
    size_t cap = 0;
    for (size_t i = last; i-- > 0;) {
        if (!reached[i]) continue;
        const nb_entry *e = &tp->entries[i];
        if (!strcmp(e->op->name, "recompute") || !strcmp(e->op->name, "recompute output")) {
            /* its function ran outside the tape, and its forward does nothing: nothing to replay */
            nb_set_error(NULL, NB_ERR_UNSUPPORTED, file, line,
                         "nb_graph_capture: the graph holds a checkpoint (nb_recompute, recorded at %s:%d), whose "
                         "function runs outside the tape, so a replay could not run it again; capture a graph "
                         "without checkpoints (replays keep no more memory than the recording)",
                         e->file ? e->file : "?", e->line);
            return NB_ERR_UNSUPPORTED;
        }
        for (int k = 0; k < e->n_in; k++) {
            nb_tensor *x = nb_entry_input(e, k);
            if (is_result_on(tp, x, i)) {
                reached[x->entry - 1] = true;
                continue;
            }
            char s[300];
            describe(x, s, sizeof s);
            bool input = false;
            for (int j = 0; j < g->n_inputs && !input; j++) input = g->inputs[j] == x;
            if (!input && (x->no_grad || !x->is_leaf)) {
                nb_set_error(NULL, NB_ERR_STATE, file, line,
                             "nb_graph_capture: %s, input %d of %s (recorded at %s:%d), %s, so a replay could not "
                             "compute it again; compute it with gradients on, or make it a leaf input",
                             s, k + 1, e->op->name, e->file ? e->file : "?", e->line,
                             x->no_grad ? "was computed in no-grad mode, which records no op"
                                        : "was made by an op that is not on the tape (in a callback)");
                return NB_ERR_STATE;
            }
            if (*n_read == cap) {
                cap = cap ? 2 * cap : 64;
                nb_tensor **grown = nb_realloc(*read, cap * sizeof *grown);
                if (!grown) {
                    nb_set_error(NULL, NB_ERR_NOMEM, file, line, "nb_graph_capture: out of memory");
                    return NB_ERR_NOMEM;
                }
                *read = grown;
            }
            (*read)[(*n_read)++] = x;
        }
    }
    return NB_OK;
}

static nb_status build(nb_graph *g, const bool *reached, size_t last, nb_tensor **read, size_t n_read,
                       const char *file, int line) {
    nb_tape *tp = g->tp;
    size_t n = 0, nb = 0;
    for (size_t i = 0; i < last; i++) {
        if (!reached[i]) continue;
        n++;
        nb += tp->entries[i].out->requires_grad;
    }
    g->fwd = nb_malloc(n * sizeof *g->fwd);
    g->kind = nb_malloc(n);
    g->bwd = nb_malloc((nb ? nb : 1) * sizeof *g->bwd);
    g->grad_buf = nb_malloc((nb ? nb : 1) * sizeof *g->grad_buf);
    if (!g->fwd || !g->kind || !g->bwd || !g->grad_buf) goto nomem;
    size_t n_guards = 0;
    for (size_t i = 0; i < last; i++) {
        if (!reached[i]) continue;
        nb_entry *e = &tp->entries[i];
        uint8_t kind = e->user ? STEP_USER : 0;
        if (nb_dropout_redraw(e, false) || nb_attention_redraw(e, false)) {
            kind |= STEP_REDRAW;
            g->dropout = true;
        }
        if (nb_ce_has_indices(e)) kind |= STEP_TARGETS;
        n_guards += nb_is_guard(e);
        g->kind[g->n_fwd] = kind;
        g->fwd[g->n_fwd++] = (uint32_t)i;
    }
    if (n_guards && !(g->guards = nb_malloc(n_guards * sizeof *g->guards))) goto nomem;
    for (size_t k = 0; g->guards && k < g->n_fwd; k++)
        if (nb_is_guard(&tp->entries[g->fwd[k]])) g->guards[g->n_guards++] = g->fwd[k];
    for (size_t i = last; i-- > 0;) {
        nb_tensor *t = tp->entries[i].out;
        if (!reached[i] || !t->requires_grad) continue;
        void *buf;
        if (t->size == 1 && t->home == NB_HOME_TAPE && t->data == (const char *)t + nb_header_bytes(t->ndim)) {
            buf = (char *)t->data + sizeof(double); /* its slot (see nb_grad_alloc) */
            t->grad_slot = 1;
        } else {
            tp->kept_allocs++;
            if (!(buf = nb_tape_alloc(tp, t->size * nb_dtype_size(t->dtype)))) goto nomem;
        }
        g->grad_buf[g->n_bwd] = buf;
        g->bwd[g->n_bwd++] = (uint32_t)i;
    }
    /* the leaves read, once each; those that take a gradient kept */
    if (n_read) qsort(read, n_read, sizeof *read, compare_pointers);
    size_t n_leaves = 0;
    for (size_t i = 0; i < n_read; i++)
        if ((i == 0 || read[i] != read[i - 1]) && read[i]->requires_grad) read[n_leaves++] = read[i];
    if (n_leaves && !(g->leaves = nb_malloc(n_leaves * sizeof *g->leaves))) goto nomem;
    if (n_leaves) memcpy(g->leaves, read, n_leaves * sizeof *read);
    g->n_leaves = n_leaves;
    return NB_OK;
nomem:
    nb_set_error(NULL, NB_ERR_NOMEM, file, line, "nb_graph_capture: out of memory for a graph of %zu entries", n);
    return NB_ERR_NOMEM;
}

nb_graph *nb_graph_capture_(nb_tape *tp, nb_tensor *const *inputs, int n_inputs, nb_tensor *const *outputs,
                            int n_outputs, const char *file, int line) {
    if (check_call(tp, inputs, n_inputs, outputs, n_outputs, file, line) != NB_OK) return NULL;
    nb_graph *g = nb_malloc(sizeof *g);
    bool *reached = NULL;
    nb_tensor **read = NULL;
    size_t n_read = 0, last = 0;
    if (!g) goto nomem;
    *g = (nb_graph){.tp = tp, .generation = tp->generation, .n_entries = tp->n_entries, .n_inputs = n_inputs,
                    .n_outputs = n_outputs, .check_guards = true, .file = file, .line = line};
    g->inputs = nb_malloc((n_inputs ? (size_t)n_inputs : 1) * sizeof *g->inputs);
    g->outputs = nb_malloc((size_t)n_outputs * sizeof *g->outputs);
    if (!g->inputs || !g->outputs) goto nomem;
    if (n_inputs) memcpy(g->inputs, inputs, (size_t)n_inputs * sizeof *inputs);
    memcpy(g->outputs, outputs, (size_t)n_outputs * sizeof *outputs);
    for (int i = 0; i < n_outputs; i++)
        if (outputs[i]->entry > last) last = outputs[i]->entry;
    if (!(reached = nb_malloc(last))) goto nomem;
    memset(reached, 0, last);
    for (int i = 0; i < n_outputs; i++) reached[outputs[i]->entry - 1] = true;
    /* the guards recorded with it: the branches it took (and what they compare) */
    for (size_t i = 0; i < last; i++) reached[i] |= nb_is_guard(&tp->entries[i]);
    if (walk(g, reached, last, &read, &n_read, file, line) != NB_OK ||
        build(g, reached, last, read, n_read, file, line) != NB_OK)
        goto fail;
    /* Inputs the graph does not read. */
    for (int i = 0; i < n_inputs; i++) {
        bool used = false;
        for (size_t k = 0; k < g->n_fwd && !used; k++) {
            const nb_entry *e = &tp->entries[g->fwd[k]];
            for (int j = 0; j < e->n_in && !used; j++) used = nb_entry_input(e, j) == inputs[i];
        }
        if (!used) {
            char s[300];
            describe(inputs[i], s, sizeof s);
            nb_set_error(NULL, NB_ERR_ARG, file, line,
                         "nb_graph_capture: input %d %s is read by no op the outputs depend on, so its values "
                         "cannot change a replay (an op that reads values when it is recorded, as gather's index, "
                         "keeps them: they are no input)", i, s);
            goto fail;
        }
    }
    bool plain = !g->n_guards;
    for (size_t k = 0; plain && k < g->n_fwd; k++) plain = !g->kind[k];
    bool nomem = false;
    if (plain && !(g->scalar = nb_scalar_compile(tp, g->fwd, g->n_fwd, outputs, n_outputs, &nomem)) && nomem)
        goto nomem;
    tp->kept_allocs++; /* the graph keeps tape memory: a no-grad scope's end must not take it back */
    nb_free(reached);
    nb_free(read);
    return g;
nomem:
    nb_set_error(NULL, NB_ERR_NOMEM, file, line, "nb_graph_capture: out of memory");
fail:
    nb_free(reached);
    nb_free(read);
    nb_graph_free(g);
    return NULL;
}

/* ---------------------------------------------------------------- replay */

nb_tensor *nb_graph_input(const nb_graph *g, int i) {
    return g && i >= 0 && i < g->n_inputs ? g->inputs[i] : NULL;
}
nb_tensor *nb_graph_output(const nb_graph *g, int i) {
    return g && i >= 0 && i < g->n_outputs ? g->outputs[i] : NULL;
}
size_t nb_graph_size(const nb_graph *g) { return g ? g->n_fwd : 0; }
void nb_graph_check_guards(nb_graph *g, bool check) {
    if (g) g->check_guards = check;
}

/* Can the graph be replayed now?  NB_OK, or the refusal (the tape as it was). */
static nb_status replayable(const nb_graph *g, const char *who) {
    if (!g) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the graph is NULL", who);
        return NB_ERR_NULL;
    }
    nb_tape *tp = g->tp;
    const char *why = NULL;
    nb_status st = NB_ERR_STATE;
    if (tp->generation != g->generation || tp->n_entries < g->n_entries)
        why = "the tape was reset since the graph was captured, which ended its tensors: record and capture again";
    else if (tp->status != NB_OK)
        why = tp->error, st = tp->status;
    else if (tp->running || tp->user_code.what)
        why = "called during a backward pass or from a callback";
    else if (tp->explain || tp->anomaly || tp->hook || tp->progress)
        why = "a replay runs the kernels alone, without explain mode, anomaly mode, a backward hook or a progress "
              "callback: turn them off, or record again";
    else if (g->dropout && !tp->training)
        why = "the graph was recorded in training mode, with dropout: a replay in evaluation mode would still drop; "
              "record the evaluation graph on its own";
    if (!why) return NB_OK;
    nb_set_error(NULL, st, g->file, g->line, "%s: the graph captured here cannot be replayed: %s", who, why);
    return st;
}

nb_status nb_graph_set_input(nb_graph *g, int i, const nb_tensor *value) {
    nb_status st = replayable(g, "nb_graph_set_input");
    if (st != NB_OK) return st;
    char want[300], have[300];
    if (i < 0 || i >= g->n_inputs) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_graph_set_input: input %d of a graph of %d inputs", i, g->n_inputs);
        return NB_ERR_ARG;
    }
    if (!value || value->status != NB_OK || !nb_alive(value)) {
        st = !value ? NB_ERR_NULL : value->status != NB_OK ? value->status : NB_ERR_STATE;
        nb_set_error(NULL, st, NULL, 0, "nb_graph_set_input: the value for input %d is %s", i,
                     !value ? "NULL" : value->status != NB_OK ? "an errored tensor" : "from before nb_tape_reset");
        return st;
    }
    nb_tensor *x = g->inputs[i];
    bool same = x->dtype == value->dtype && x->ndim == value->ndim;
    for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == value->shape[d];
    if (!same) {
        describe(x, want, sizeof want);
        describe(value, have, sizeof have);
        st = x->dtype != value->dtype ? NB_ERR_DTYPE : NB_ERR_SHAPE;
        nb_set_error(NULL, st, g->file, g->line,
                     "nb_graph_set_input: input %d is %s, the value given is %s; a graph replays the shapes and "
                     "dtypes it was recorded with: record and capture again for these",
                     i, want, have);
        return st;
    }
    if (value->data != x->data) memmove(x->data, value->data, x->size * nb_dtype_size(x->dtype));
    nb_mark_written(x);
    return NB_OK;
}

nb_status nb_graph_forward(nb_graph *g) {
    nb_status st = replayable(g, "nb_graph_forward");
    if (st != NB_OK) return st;
    nb_tape *tp = g->tp;
    /* One tick for all the writes (see nb_mark_written), then every entry
     * stamped as recorded now. */
    if (atomic_exchange_explicit(&nb_write_clock_seen, false, memory_order_relaxed))
        atomic_fetch_add_explicit(&nb_write_clock, 1, memory_order_relaxed);
    uint32_t now = nb_clock_for_recording();
    nb_entry *entries = tp->entries;
    const uint32_t *fwd = g->fwd;
    const uint8_t *kind = g->kind;
    g->forwarded = true;
    g->stamp = now;
    if (g->scalar && nb_scalar_intact(g->scalar, g->outputs)) {
        /* Entries recorded since the capture may read the graph's results:
         * they must see them written (nb_backward then refuses them).  With
         * none, the entries are left as they are: the graph's own checks
         * go by `stamp`, and an nb_backward through them sees the inputs
         * written since they were recorded. */
        if (tp->n_entries > g->n_entries)
            for (size_t k = 0; k < g->n_fwd; k++) {
                entries[fwd[k]].stamp = now;
                entries[fwd[k]].out->version = now;
            }
        nb_scalar_forward(g->scalar);
        g->verified = true;
        g->diverged = false;
        g->clock = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
        return NB_OK;
    }
    for (size_t k = 0, n = g->n_fwd; k < n; k++) {
        nb_entry *e = &entries[fwd[k]];
        e->stamp = now;
        e->out->version = now;
        if (!kind[k]) {
            e->op->forward(e);
            continue;
        }
        if (kind[k] & STEP_REDRAW && !nb_dropout_redraw(e, true)) nb_attention_redraw(e, true);
        if (kind[k] & STEP_TARGETS && !nb_ce_check_targets(tp, e)) return tp->status;
        if (kind[k] & STEP_USER) {
            nb_user_replay_forward(tp, fwd[k]); /* (may record ops, which can move the entries) */
            entries = tp->entries;
            if (tp->status != NB_OK) return tp->status;
        } else {
            e->op->forward(e);
        }
    }
    if (tp->status != NB_OK) return tp->status;
    g->verified = true;
    g->diverged = false;
    g->clock = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
    for (size_t k = 0; g->check_guards && k < g->n_guards; k++) {
        const nb_entry *e = &tp->entries[g->guards[k]];
        double now_taken = e->out->dtype == NB_F32 ? *(float *)e->out->data : *(double *)e->out->data;
        if (now_taken == e->scalar) continue;
        double x = e->in[0]->dtype == NB_F32 ? *(float *)e->in[0]->data : *(double *)e->in[0]->data;
        g->diverged = true; /* no backward of this forward */
        nb_set_error(NULL, NB_ERR_STATE, e->file, e->line,
                     "nb_graph_forward: the guard here (nb_guard) compared %.17g with 0 and found it %s, where the "
                     "recording found it %s: the C code would take the other branch, so this replay is refused "
                     "(its results are not those of a new recording); record and capture again for this branch",
                     x, now_taken != 0 ? "greater" : "not greater", now_taken != 0 ? "not greater" : "greater");
        return NB_ERR_STATE;
    }
    return NB_OK;
}

/* Was a tensor of the graph written since the last forward replay?  NB_OK,
 * or the refusal. */
static nb_status unchanged(nb_graph *g) {
    nb_tape *tp = g->tp;
    uint32_t now = atomic_load_explicit(&nb_write_clock, memory_order_relaxed);
    if (g->verified && now == g->clock) return NB_OK; /* nothing written at all */
    for (size_t k = 0; k < g->n_fwd; k++) {
        const nb_entry *e = &tp->entries[g->fwd[k]];
        for (int i = -1; i < e->n_in; i++) {
            const nb_tensor *x = i < 0 ? e->out : nb_entry_input(e, i);
            if (!nb_written_since(x, g->forwarded ? g->stamp : e->stamp)) continue;
            char s[300];
            describe(x, s, sizeof s);
            nb_set_error(NULL, NB_ERR_STATE, e->file, e->line,
                         "nb_graph_backward: %s %s of %s was written after the op ran (by nb_set, through "
                         "nb_tensor_data or by an optimizer step), so its gradient would be wrong; replay the "
                         "forward (nb_graph_forward) after changing a tensor",
                         i < 0 ? "the result" : "an input", s, e->op->name);
            return NB_ERR_STATE;
        }
    }
    g->verified = true;
    g->clock = now;
    return NB_OK;
}

static nb_status backward(nb_graph *g, int k, const char *who) {
    nb_status st = replayable(g, who);
    if (st != NB_OK) return st;
    nb_tape *tp = g->tp;
    nb_tensor *y = k >= 0 && k < g->n_outputs ? g->outputs[k] : NULL;
    char s[300];
    if (!y || y->size != 1 || !y->requires_grad) {
        if (y) describe(y, s, sizeof s);
        nb_set_error(NULL, y ? NB_ERR_STATE : NB_ERR_ARG, g->file, g->line, "%s: output %d %s%s", who, k,
                     !y ? "does not exist" : s, !y ? "" : y->size != 1 ? " is not a single element (a loss)"
                     : " depends on no tensor that requires a gradient");
        return y ? NB_ERR_STATE : NB_ERR_ARG;
    }
    if (g->diverged) {
        nb_set_error(NULL, NB_ERR_STATE, g->file, g->line,
                     "%s: the last forward replay was refused by a guard (the other branch): nothing to go back "
                     "through", who);
        return NB_ERR_STATE;
    }
    if ((st = unchanged(g)) != NB_OK) return st;
    if (atomic_load_explicit(&nb_applied_count, memory_order_relaxed) > 0)
        for (size_t i = 0; i < g->n_leaves; i++)
            if (g->leaves[i]->grad_state == NB_GRAD_APPLIED) {
                nb_fail_applied(NULL, g->leaves[i], g->file, g->line);
                return NB_ERR_STATE;
            }
    nb_pass_guard guard;
    nb_pass_enter(tp, &guard);
    unsigned pass = ++tp->pass;
    if (g->scalar && nb_scalar_intact(g->scalar, g->outputs)) {
        st = nb_scalar_backward(g->scalar, k);
        nb_pass_leave(tp, &guard);
        return st;
    }
    nb_entry *entries = tp->entries;
    const uint32_t *bwd = g->bwd;
    size_t n = g->n_bwd;
    for (size_t i = 0; i < n; i++) { /* every result's buffer, holding nothing of this pass */
        nb_tensor *t = entries[bwd[i]].out;
        t->grad = g->grad_buf[i];
        t->grad_state = NB_GRAD_NONE;
        t->grad_pass = pass;
    }
    y->grad_state = NB_GRAD_SET;
    if (y->dtype == NB_F32)
        *(float *)y->grad = 1.0f;
    else
        *(double *)y->grad = 1.0;
    for (size_t i = 0; i < n; i++) {
        nb_entry *e = &entries[bwd[i]];
        if (bwd[i] >= y->entry || e->out->grad_state != NB_GRAD_SET) continue; /* no gradient reached it */
        if (!e->op->backward) {
            nb_set_error(tp, NB_ERR_UNSUPPORTED, e->file, e->line, "%s: op %s has no backward", who, e->op->name);
            break;
        }
        if (e->user) {
            nb_user_backward(tp, bwd[i]);
            entries = tp->entries;
            if (tp->status != NB_OK) break;
        } else {
            e->op->backward(e);
        }
    }
    nb_pass_leave(tp, &guard);
    return tp->status;
}

nb_status nb_graph_backward(nb_graph *g, int k) { return backward(g, k, "nb_graph_backward"); }

nb_status nb_graph_backward_step(nb_graph *g, int k, nb_optimizer *opt) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_graph_backward_step: the optimizer is NULL");
        return NB_ERR_NULL;
    }
    nb_status st = replayable(g, "nb_graph_backward_step");
    if (st != NB_OK) return st;
    double lr;
    nb_tensor *const *params;
    size_t n;
    bool fused = nb_optimizer_fusable(opt, &lr, &params, &n) && lr > 0 && k >= 0 && k < g->n_outputs &&
                 g->outputs[k]->requires_grad;
    if (fused) nb_sgd_begin(g->tp, g->outputs[k], params, n, lr);
    st = backward(g, k, "nb_graph_backward_step");
    if (fused) nb_sgd_end(g->tp, params, n);
    return st != NB_OK ? st : nb_optimizer_step(opt);
}
