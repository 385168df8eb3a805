/*
 * Recomputation (checkpointing), as torch.utils.checkpoint: memory traded
 * for time.  nb_recompute(tp, fn, ctx, inputs, n, outputs, m, opts) runs
 * fn in a no-grad scope, so that none of its intermediates is kept, copies
 * its results out of the scope and records, instead of fn's ops, these
 * entries:
 *
 *     token = recompute(inputs...)           (0-d, no value: the entry that
 *                                             stands for fn in the graph)
 *     output k = recompute output(token)      k = 0..m-1, fn's results
 *
 * Backward reaches the outputs' entries first (they were recorded last):
 * each has nothing to pass on but a zero into the token, which makes the
 * token's entry run once every output's gradient is complete.  That entry
 * runs fn again, recording, in a scratch region of the tape; seeds what fn
 * returned with the outputs' gradients; runs backward over the entries fn
 * recorded, in the same pass, so that they add into the inputs' gradients
 * in the order a direct call's entries would; then takes those entries off
 * the tape and gives their memory back (nb_scratch_end).  The tape thus
 * holds one call's intermediates at a time, while it differentiates it.
 *
 * The inputs' gradient buffers must outlive the region: those that would
 * come from the arena are taken before it begins (nb_grad_target), left
 * marked as not yet written, so the first contribution still overwrites.
 *
 * With create_graph, the graph walk of nb_grad gives each output's entry
 * its gradient G_k (as a tensor), which it keeps for the token's entry;
 * that one runs fn again on the tape (its ops stay: the gradient's graph
 * goes through them) and walks back over the entries fn recorded alone,
 * its results r_k seeded with G_k (nb_grad_graph_partial): the gradients
 * of the inputs through fn, as ops, as the walk over a direct call's
 * entries would build them.
 *
 * fn must compute the same values again: the generators it draws from are
 * given in opts, kept at the call and put back around the recomputation
 * (torch's preserve_rng_state), and the tape's training flag is kept too.
 * The recomputed results are compared with the recorded ones, bit for bit,
 * and a difference is refused rather than differentiated.
 */
#include "../internal.h"
#include "recompute.h"

#include <string.h>

typedef struct {
    uint8_t dtype;
    int ndim;
    size_t shape[NB_MAX_DIMS];
} result_kind;

/* One call of nb_recompute, in the arena until the reset. */
typedef struct {
    nb_recompute_fn fn;
    void *ctx;
    int n_in, n_out, n_rngs;
    nb_tensor **inputs;    /* [n_in] */
    nb_tensor **outputs;   /* [n_out]: the recorded results */
    result_kind *kinds;    /* [n_out] */
    nb_tensor **upstream;  /* [n_out]: create_graph, dL/d output k from the graph walk, until the token's turn */
    nb_rng **rngs;         /* [n_rngs], the caller's */
    nb_rng *at_call;       /* [n_rngs]: their states when fn first ran */
    nb_rng *now;           /* [n_rngs]: their states while fn runs again */
    bool training;
    const char *file;
    int line;
} recompute_call;

static void do_nothing(nb_op_call *call) { (void)call; }
static void recompute_backward(nb_op_call *call);
static void recompute_graph(nb_op_call *call, nb_tensor *G, nb_tensor **grad_in);
static void output_backward(nb_op_call *call);
static void output_graph(nb_op_call *call, nb_tensor *G, nb_tensor **grad_in);

static const nb_op_def recompute_op = {.name = "recompute", .forward = do_nothing, .backward = recompute_backward,
                                       .backward_graph = recompute_graph, .derivative = {"fn run again"}};
static const nb_op_def output_op = {.name = "recompute output", .forward = do_nothing, .backward = output_backward,
                                    .backward_graph = output_graph, .derivative = {"0 (the token)"}};

static const char *dtype_name(int dt) { return dt == NB_F32 ? "float32" : "float64"; }

/* ---------------------------------------------------------------- running fn */

/* Runs fn and checks what it gave: NB_OK, or the error (on the tape, the
 * message starting with `what`). */
static nb_status run_fn(nb_tape *tp, const recompute_call *ck, nb_tensor *const *inputs, nb_tensor **out,
                        const char *what) {
    int depth = tp->no_grad_depth;
    for (int k = 0; k < ck->n_out; k++) out[k] = NULL;
    /* The user's code: a reset of the tape from inside it is refused, as from a custom op's callback; the
     * scopes it opens free their tensors (nested checkpoints, in the recomputation too: nothing this call
     * holds was made since fn began). */
    nb_user_code outer =
        nb_user_enter(tp, (nb_user_code){.what = "function", .who = "nb_recompute", .scopes_free = true});
    nb_status st = ck->fn(tp, inputs, out, ck->ctx);
    nb_user_leave(tp, outer);
    if (tp->status != NB_OK) return tp->status; /* an op in fn failed: its message stands */
    if (st != NB_OK) {
        nb_set_error(tp, st, ck->file, ck->line, "%s: the function given to nb_recompute returned %s", what,
                     nb_status_string(st));
        return st;
    }
    if (tp->no_grad_depth != depth) {
        nb_set_error(tp, NB_ERR_STATE, ck->file, ck->line,
                     "%s: the function given to nb_recompute left %d no-grad scope%s open (it must end the scopes "
                     "it begins)", what, tp->no_grad_depth - depth, tp->no_grad_depth - depth == 1 ? "" : "s");
        return NB_ERR_STATE;
    }
    for (int k = 0; k < ck->n_out; k++) {
        const nb_tensor *y = out[k];
        const char *wrong = !y ? "NULL" : y->status != NB_OK ? "an errored tensor" : !nb_alive(y) ? "a stale tensor"
                            : nb_on_tape(y) && y->tape != tp ? "a tensor of another tape" : NULL;
        if (wrong) {
            nb_status err = !y ? NB_ERR_NULL : y->status != NB_OK ? y->status : NB_ERR_STATE;
            nb_set_error(tp, err, ck->file, ck->line,
                         "%s: output %d of the function given to nb_recompute is %s (it must set all %d outputs)",
                         what, k + 1, wrong, ck->n_out);
            return err;
        }
    }
    return NB_OK;
}

/* Swaps the caller's generators with the states kept at the call (and back). */
static void swap_rngs(const recompute_call *ck) {
    for (int j = 0; j < ck->n_rngs; j++) {
        ck->now[j] = *ck->rngs[j];
        *ck->rngs[j] = ck->at_call[j];
    }
}
static void restore_rngs(const recompute_call *ck) {
    for (int j = 0; j < ck->n_rngs; j++) *ck->rngs[j] = ck->now[j];
}

/* Runs fn again, recording, as it ran at the call (generators, training
 * flag), and checks that it gave the recorded results bit for bit. */
static bool run_again(nb_tape *tp, const recompute_call *ck, nb_tensor **r, const char *what) {
    bool no_record = tp->no_record, grad_enabled = tp->grad_enabled, training = tp->training;
    tp->no_record = false;
    tp->grad_enabled = true;
    tp->training = ck->training;
    swap_rngs(ck);
    nb_status st = run_fn(tp, ck, ck->inputs, r, what);
    restore_rngs(ck);
    tp->no_record = no_record;
    tp->grad_enabled = grad_enabled;
    tp->training = training;
    for (int k = 0; st == NB_OK && k < ck->n_out; k++) {
        const nb_tensor *y = r[k], *was = ck->outputs[k];
        char a[128], b[128];
        if (y->dtype != was->dtype || y->ndim != was->ndim ||
            memcmp(y->shape, was->shape, (size_t)y->ndim * sizeof *y->shape) != 0) {
            nb_set_error(tp, NB_ERR_STATE, ck->file, ck->line,
                         "%s: the function given to nb_recompute gave output %d as %s %s when run again for "
                         "backward, and %s %s when first run", what, k + 1, dtype_name(y->dtype),
                         nb_format_shape(y->ndim, y->shape, a, sizeof a), dtype_name(was->dtype),
                         nb_format_shape(was->ndim, was->shape, b, sizeof b));
            return false;
        }
        size_t w = nb_dtype_size(y->dtype);
        for (size_t i = 0; i < y->size; i++) {
            if (memcmp((const char *)y->data + i * w, (const char *)was->data + i * w, w) == 0) continue;
            double now = y->dtype == NB_F32 ? NB_F(y)[i] : NB_D(y)[i], then = was->dtype == NB_F32 ? NB_F(was)[i]
                                                                                                   : NB_D(was)[i];
            nb_set_error(tp, NB_ERR_STATE, ck->file, ck->line,
                         "%s: the function given to nb_recompute gave other values when run again for backward "
                         "(output %d %s, element %zu: %.17g, first %.17g); it must compute the same from its "
                         "inputs: give the generators it draws from in nb_recompute_opts.rngs, and change "
                         "nothing it reads through ctx before backward", what, k + 1,
                         nb_format_shape(y->ndim, y->shape, a, sizeof a), i, now, then);
            return false;
        }
    }
    return st == NB_OK;
}

static bool is_input(const recompute_call *ck, const nb_tensor *t) {
    for (int i = 0; i < ck->n_in; i++)
        if (ck->inputs[i] == t) return true;
    return false;
}

/* A result of one of the entries recorded since `mark`. */
static bool recorded_since(const nb_tape *tp, const nb_tensor *t, size_t mark) {
    return nb_on_tape(t) && t->tape == tp && nb_alive(t) && t->entry > mark && t->entry <= tp->n_entries &&
           tp->entries[t->entry - 1].out == t;
}

/* The entries fn recorded since `mark` read, of the tensors that need a
 * gradient, only its inputs and one another's results: the gradient of
 * any other would be lost (it is no input of the token's entry, so nb_grad
 * would neither set it aside nor return it). */
static bool reads_only_inputs(nb_tape *tp, const recompute_call *ck, size_t mark, const char *what) {
    for (size_t i = mark; i < tp->n_entries; i++) {
        const nb_entry *e = &tp->entries[i];
        for (int k = 0; k < e->n_in; k++) {
            const nb_tensor *x = nb_entry_input(e, k);
            if (!x->requires_grad || recorded_since(tp, x, mark) || is_input(ck, x)) continue;
            char shape[128], name[NB_NAME_MAX + 3] = "";
            if (x->name[0]) snprintf(name, sizeof name, "'%s' ", x->name);
            nb_set_error(tp, NB_ERR_ARG, ck->file, ck->line,
                         "%s: the function given to nb_recompute reads a tensor %s%s that requires a gradient "
                         "and is not one of its %d inputs (input %d of its op %s at %s:%d); give nb_recompute "
                         "every tensor whose gradient goes through the function, parameters included", what, name,
                         nb_format_shape(x->ndim, x->shape, shape, sizeof shape), ck->n_in, k + 1, e->op->name,
                         e->file ? e->file : "?", e->line);
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------- backward */

/* dL/d output k, from this pass, or NULL. */
static const void *upstream_of(const nb_tensor *y) {
    return y->requires_grad && nb_grad_live(y) && y->grad_state == NB_GRAD_SET ? y->grad : NULL;
}

/* Each output's entry passes a zero to the token: its entry then runs, after all of them. */
static void output_backward(nb_op_call *call) {
    nb_tensor *token = nb_entry_input(call, 0);
    bool accumulate;
    void *g = token->requires_grad ? nb_grad_target(call->out->tape, token, &accumulate) : NULL;
    if (g && !accumulate) memset(g, 0, nb_dtype_size(token->dtype));
}

/* The inputs' gradient buffers, taken before the region (tape tensors'
 * come from the arena): left as not yet written, so that the first
 * contribution overwrites. */
static bool take_input_buffers(nb_tape *tp, const recompute_call *ck) {
    for (int i = 0; i < ck->n_in; i++) {
        nb_tensor *x = ck->inputs[i];
        /* fused SGD (nb_optimizer_backward_step) counted the token's entry as x's one reader: fn may read it
         * more than once, so x's update is the optimizer's */
        nb_tensor *root = x->base ? x->base : x;
        if (root->sgd == NB_SGD_ONE_READER) root->sgd = NB_SGD_MANY_READERS;
        if (x->sgd == NB_SGD_ONE_READER) x->sgd = NB_SGD_MANY_READERS;
        if (!x->requires_grad || !nb_on_tape(x)) continue;
        uint8_t was = !x->is_leaf && x->grad_pass != tp->pass ? NB_GRAD_NONE : x->grad_state;
        bool accumulate;
        if (!nb_grad_target(tp, x, &accumulate)) return false;
        if (!accumulate) x->grad_state = was;
    }
    return true;
}

/* Seeds fn's results r with the outputs' gradients. */
static bool seed_results(nb_tape *tp, const recompute_call *ck, nb_tensor *const *r, size_t mark) {
    for (int k = 0; k < ck->n_out; k++) {
        const void *up = upstream_of(ck->outputs[k]);
        nb_tensor *y = r[k];
        if (!up || !y->requires_grad) continue;
        if (!recorded_since(tp, y, mark) && !is_input(ck, y)) {
            nb_set_error(tp, NB_ERR_ARG, ck->file, ck->line,
                         "nb_backward: output %d of the function given to nb_recompute requires a gradient but is "
                         "none of its results nor one of its inputs; give nb_recompute every tensor whose gradient "
                         "goes through the function", k + 1);
            return false;
        }
        bool accumulate;
        void *g = nb_grad_target(tp, y, &accumulate);
        if (!g) return false;
        NB_DISPATCH(y->dtype, {
            T *d = g;
            const T *s = up;
            for (size_t i = 0; i < y->size; i++) d[i] = accumulate ? d[i] + s[i] : s[i];
        });
    }
    return true;
}

static void recompute_backward(nb_op_call *call) {
    recompute_call *ck = call->saved;
    nb_tape *tp = call->out->tape;
    bool any = false;
    for (int k = 0; k < ck->n_out; k++) any |= upstream_of(ck->outputs[k]) != NULL;
    if (!any || !take_input_buffers(tp, ck)) return;
    nb_tensor **r = nb_tape_alloc(tp, (size_t)ck->n_out * sizeof *r);
    if (!r) {
        nb_set_error(tp, NB_ERR_NOMEM, ck->file, ck->line, "nb_backward: out of memory recomputing");
        return;
    }
    if (nb_scratch_begin(tp) != NB_OK) return;
    size_t mark = tp->n_entries;
    /* What the region makes is no concern of an outer pass's log (nested.c):
     * it is gone when the region ends. */
    struct nb_nested *nested = tp->nested;
    tp->nested = NULL;
    if (run_again(tp, ck, r, "nb_backward") && reads_only_inputs(tp, ck, mark, "nb_backward") &&
        seed_results(tp, ck, r, mark))
        nb_backward_entries(tp, mark, tp->n_entries);
    tp->nested = nested;
    for (size_t i = mark; i < tp->n_entries; i++) /* the uses the recomputation counted, of the inputs */
        for (int k = 0; k < tp->entries[i].n_in; k++) {
            nb_tensor *x = nb_entry_input(&tp->entries[i], k);
            if (is_input(ck, x) && x->uses > 0 && x->uses < UINT8_MAX) x->uses--;
        }
    tp->n_entries = mark;
    nb_scratch_end(tp);
}

/* ---------------------------------------------------------------- create_graph */

static void output_graph(nb_op_call *call, nb_tensor *G, nb_tensor **grad_in) {
    recompute_call *ck = call->saved;
    nb_tensor *token = nb_entry_input(call, 0);
    ck->upstream[call->axis] = G;
    grad_in[0] = nb_full_(call->out->tape, token->dtype, 0, NULL, 0, ck->file, ck->line);
}

static void recompute_graph(nb_op_call *call, nb_tensor *G, nb_tensor **grad_in) {
    (void)G; /* the token's: zero */
    recompute_call *ck = call->saved;
    nb_tape *tp = call->out->tape;
    nb_tensor **r = nb_tape_alloc(tp, (size_t)ck->n_out * sizeof *r);
    nb_tensor **g = nb_tape_alloc(tp, (size_t)ck->n_in * sizeof *g);
    size_t mark = tp->n_entries;
    if (!r || !g)
        nb_set_error(tp, NB_ERR_NOMEM, ck->file, ck->line, "nb_grad: out of memory recomputing");
    else if (run_again(tp, ck, r, "nb_grad") && reads_only_inputs(tp, ck, mark, "nb_grad"))
        /* the walk over fn's entries alone: the inputs' gradients through fn, as its direct entries give them */
        nb_grad_graph_partial(tp, r, ck->upstream, ck->n_out, mark, ck->inputs, ck->n_in, g, ck->file, ck->line);
    for (int k = 0; k < ck->n_out; k++) ck->upstream[k] = NULL; /* taken (each walk gives them anew) */
    for (int i = 0; g && tp->status == NB_OK && i < ck->n_in; i++)
        grad_in[i] = ck->inputs[i]->requires_grad ? g[i] : NULL;
}

/* ---------------------------------------------------------------- the call */

/* A call that fails leaves every output an errored tensor. */
static nb_status fail_all(nb_status st, nb_tensor **outputs, int n) {
    for (int k = 0; st != NB_OK && k < n; k++) outputs[k] = nb_nil(st);
    return st;
}

static void *zeroed(nb_tape *tp, size_t bytes) {
    void *p = nb_tape_alloc(tp, bytes ? bytes : 1);
    if (p) memset(p, 0, bytes);
    return p;
}

static recompute_call *new_call(nb_tape *tp, nb_recompute_fn fn, void *ctx, nb_tensor *const *inputs, int n_in,
                                int n_out, const nb_recompute_opts *opts, const char *file, int line) {
    recompute_call *ck = zeroed(tp, sizeof *ck);
    if (!ck) return NULL;
    int n_rngs = opts ? opts->n_rngs : 0;
    *ck = (recompute_call){.fn = fn, .ctx = ctx, .n_in = n_in, .n_out = n_out, .n_rngs = n_rngs,
                           .training = tp->training, .file = file, .line = line};
    ck->inputs = zeroed(tp, (size_t)n_in * sizeof *ck->inputs);
    ck->outputs = zeroed(tp, (size_t)n_out * sizeof *ck->outputs);
    ck->upstream = zeroed(tp, (size_t)n_out * sizeof *ck->upstream);
    ck->kinds = zeroed(tp, (size_t)n_out * sizeof *ck->kinds);
    ck->rngs = zeroed(tp, (size_t)n_rngs * sizeof *ck->rngs);
    ck->at_call = zeroed(tp, (size_t)n_rngs * sizeof *ck->at_call);
    ck->now = zeroed(tp, (size_t)n_rngs * sizeof *ck->now);
    if (!ck->inputs || !ck->outputs || !ck->upstream || !ck->kinds || !ck->rngs || !ck->at_call || !ck->now)
        return NULL;
    if (n_in) memcpy(ck->inputs, inputs, (size_t)n_in * sizeof *inputs);
    for (int j = 0; j < n_rngs; j++) {
        ck->rngs[j] = opts->rngs[j];
        ck->at_call[j] = *opts->rngs[j];
    }
    return ck;
}

/* fn in a no-grad scope; its results copied out (to the tape's working
 * memory) before the scope's end frees them, and into the recorded outputs
 * after. */
static nb_status run_unrecorded(nb_tape *tp, recompute_call *ck, nb_tensor **outputs) {
    nb_status st = nb_no_grad_begin_guarded(tp);
    if (st != NB_OK) return st;
    nb_tensor **y = ck->outputs; /* fn's own results, until the scope's end */
    st = run_fn(tp, ck, ck->inputs, y, "nb_recompute");
    size_t bytes = 0;
    for (int k = 0; st == NB_OK && k < ck->n_out; k++) {
        ck->kinds[k] = (result_kind){.dtype = y[k]->dtype, .ndim = y[k]->ndim};
        memcpy(ck->kinds[k].shape, y[k]->shape, (size_t)y[k]->ndim * sizeof *y[k]->shape);
        bytes += y[k]->size * nb_dtype_size(y[k]->dtype);
    }
    nb_op_call site = {.op = &recompute_op, .file = ck->file, .line = ck->line};
    char *staged = st == NB_OK ? nb_tape_scratch(tp, bytes, &site) : NULL;
    if (st == NB_OK && !staged) st = NB_ERR_NOMEM;
    size_t at = 0;
    for (int k = 0; st == NB_OK && k < ck->n_out; k++) {
        size_t n = y[k]->size * nb_dtype_size(y[k]->dtype);
        memcpy(staged + at, y[k]->data, n);
        at += n;
    }
    nb_no_grad_end_guarded(tp); /* (and the scopes fn left open, which run_fn refused) */
    if (st != NB_OK) return st;

    /* The token's entry, then one per output. */
    nb_tensor *token = nb_result(tp, ck->inputs[0]->dtype, 0, NULL, "recompute", ck->file, ck->line);
    if (token->status != NB_OK) return token->status;
    memset(token->data, 0, nb_dtype_size(token->dtype));
    nb_entry *e = nb_record(tp, &recompute_op, token, ck->n_in, ck->inputs, ck->file, ck->line);
    if (!e) return tp->status;
    e->user = true;
    e->saved = ck;
    for (int k = 0; k < ck->n_out; k++) {
        const result_kind *kind = &ck->kinds[k];
        nb_tensor *out = nb_result(tp, kind->dtype, kind->ndim, kind->shape, "recompute", ck->file, ck->line);
        if (out->status != NB_OK) return out->status;
        size_t n = out->size * nb_dtype_size(out->dtype);
        memcpy(out->data, staged, n);
        staged += n;
        if (!(e = nb_record(tp, &output_op, out, 1, &token, ck->file, ck->line))) return tp->status;
        e->user = true;
        e->saved = ck;
        e->axis = k;
        ck->outputs[k] = outputs[k] = out;
    }
    return NB_OK;
}

nb_status nb_recompute_(nb_tape *tp, nb_recompute_fn fn, void *ctx, nb_tensor *const *inputs, int n_inputs,
                        nb_tensor **outputs, int n_outputs, const nb_recompute_opts *opts, const char *file,
                        int line) {
    if (!outputs || n_outputs < 1) {
        nb_set_error(tp, outputs ? NB_ERR_ARG : NB_ERR_NULL, file, line, "nb_recompute: %s",
                     outputs ? "n_outputs must be at least 1" : "the array of outputs is NULL");
        return outputs ? NB_ERR_ARG : NB_ERR_NULL;
    }
    for (int k = 0; k < n_outputs; k++) outputs[k] = NULL;
    if (!tp || !fn || n_inputs < 0 || (n_inputs > 0 && !inputs) ||
        (opts && (opts->n_rngs < 0 || (opts->n_rngs > 0 && !opts->rngs)))) {
        nb_status st = !tp || !fn ? NB_ERR_NULL : NB_ERR_ARG;
        nb_set_error(tp, st, file, line, "nb_recompute: %s", !tp ? "the tape is NULL" : !fn ? "the function is NULL"
                     : n_inputs < 0 ? "a negative number of inputs" : n_inputs > 0 && !inputs
                     ? "the array of inputs is NULL" : "opts gives a negative number of generators, or a NULL array");
        return fail_all(st, outputs, n_outputs);
    }
    for (int j = 0; opts && j < opts->n_rngs; j++)
        if (!opts->rngs[j]) {
            nb_set_error(tp, NB_ERR_NULL, file, line, "nb_recompute: generator %d of opts is NULL", j + 1);
            return fail_all(NB_ERR_NULL, outputs, n_outputs);
        }
    nb_tensor *failed = nb_check_inputs(tp, "nb_recompute", file, line, n_inputs, inputs);
    if (failed) return fail_all(failed->status, outputs, n_outputs);
    if (tp->status != NB_OK) return fail_all(tp->status, outputs, n_outputs);
    bool needs = tp->grad_enabled && !nb_recording_nothing(tp);
    bool any = false;
    for (int i = 0; i < n_inputs; i++) any |= inputs[i]->requires_grad;
    recompute_call direct = {.fn = fn, .ctx = ctx, .n_in = n_inputs, .n_out = n_outputs, .file = file, .line = line};
    if (!needs || !any) /* nothing to differentiate: fn simply runs */
        return fail_all(run_fn(tp, &direct, inputs, outputs, "nb_recompute"), outputs, n_outputs);
    recompute_call *ck = new_call(tp, fn, ctx, inputs, n_inputs, n_outputs, opts, file, line);
    if (!ck) {
        nb_set_error(tp, NB_ERR_NOMEM, file, line, "nb_recompute: out of memory");
        return fail_all(NB_ERR_NOMEM, outputs, n_outputs);
    }
    nb_status st = run_unrecorded(tp, ck, outputs);
    return st == NB_OK ? NB_OK : fail_all(st, outputs, n_outputs);
}
