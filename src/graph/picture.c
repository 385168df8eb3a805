/*
 * The scene of a tape and the text of its labels (see picture.h).
 *
 * One notation everywhere, in the program's own names: an edge from x into
 * an element-wise op that makes y says "∂y/∂x = 2x" (the local derivative,
 * with x and y the tensors' names), and once backward has run, element by
 * element, "upstream × local = contribution"; an edge into any other op
 * says how the whole contribution is made from the upstream gradient, as
 * "∂E/∂W = ∂E/∂Z · Aᵀ" (E the loss's name), and then its values.  The ops'
 * formulas (nb_op_def.derivative) are written with letters (G the upstream
 * gradient, A and B or a and b the inputs, x the input, y the output, p and
 * t a loss's prediction and target), which are replaced by those names.
 * Tensors that take no gradient (data, targets, class labels) get edges
 * with no formula: nothing flows back along them.  How the numbers are
 * printed (summaries, products) is src/graph/numbers.c.
 */
#include "picture.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- text */

static void text_reserve(nb_text *t, size_t more) {
    if (t->failed || t->len + more + 1 <= t->cap) return;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + more + 1) cap *= 2;
    char *grown = nb_realloc(t->s, cap);
    if (!grown) {
        t->failed = true;
        return;
    }
    t->s = grown;
    t->cap = cap;
}

void nb_text_putn(nb_text *t, const char *s, size_t n) {
    text_reserve(t, n);
    if (t->failed) return;
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

void nb_text_put(nb_text *t, const char *s) { nb_text_putn(t, s, strlen(s)); }

void nb_text_printf(nb_text *t, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized): va_start above
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        nb_text_putn(t, small, (size_t)n);
        return;
    }
    text_reserve(t, (size_t)n);
    if (t->failed) return;
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static void put_into_text(void *t, const char *s, size_t n) { nb_text_putn(t, s, n); }

void nb_text_put_user(nb_text *t, const char *s) { nb_escape(NB_ESC_LINE, s, put_into_text, t); }

void nb_text_free(nb_text *t) {
    nb_free(t->s);
    *t = (nb_text){NULL, 0, 0, false};
}

/* Frees a scratch text whose pieces went into out: a piece lost to a failed
 * allocation makes out fail too, so that no label is silently cut short. */
static void text_drop(nb_text *scratch, nb_text *out) {
    if (scratch->failed) out->failed = true;
    nb_text_free(scratch);
}

/* ---------------------------------------------------------------- the scene */

const char *const nb_role_names[4] = {"input", "parameter", "intermediate", "loss"};
const char *const nb_role_colors[4] = {"#cfe2f3", "#ffe599", "#f3f3f3", "#f4cccc"};

nb_role nb_picture_role(const nb_picture *p, const nb_tensor *t) {
    if (t == p->loss) return NB_ROLE_LOSS;
    if (t->is_leaf) return t->requires_grad ? NB_ROLE_PARAM : NB_ROLE_INPUT;
    return NB_ROLE_INTERMEDIATE;
}

const double *nb_picture_checked(const nb_picture *p, const nb_tensor *t) {
    const nb_dot_opts *o = p->o;
    for (size_t k = 0; k < o->n_checked && o->checked && o->checked_errors; k++)
        if (o->checked[k] == t) return &o->checked_errors[k];
    return NULL;
}

const char *nb_picture_error_color(double err) {
    if (err < 1e-4) return "#6aa84f";
    if (err < 1e-3) return "#e69138";
    return "#cc0000";
}

static nb_pic_node *node_of(const nb_picture *p, const nb_tensor *t) {
    nb_pic_node *n;
    HASH_FIND_PTR(p->by_tensor, &t, n);
    return n;
}

static nb_pic_node *add_node(nb_picture *p, nb_tensor *t, int scope) {
    nb_pic_node *n = node_of(p, t);
    if (n) return n;
    if (p->n_nodes == p->cap_nodes) {
        size_t cap = p->cap_nodes ? 2 * p->cap_nodes : 64;
        nb_pic_node **grown = nb_realloc(p->nodes, cap * sizeof *grown);
        if (!grown) return NULL;
        p->nodes = grown;
        p->cap_nodes = cap;
    }
    if (!(n = nb_malloc(sizeof *n))) return NULL;
    memset(n, 0, sizeof *n);
    n->t = t;
    n->id = p->n_nodes;
    n->scope = scope;
    nb_hash_oom = false;
    HASH_ADD_PTR(p->by_tensor, t, n);
    if (nb_hash_oom) {
        nb_free(n);
        return NULL;
    }
    p->nodes[p->n_nodes++] = n;
    if (p->n_nodes > 1 && t->dtype != p->nodes[0]->t->dtype) p->mixed_dtypes = true;
    return n;
}

static bool add_edge(nb_picture *p, size_t entry, size_t node, int slot) {
    if (p->n_edges == p->cap_edges) {
        size_t cap = p->cap_edges ? 2 * p->cap_edges : 64;
        nb_pic_edge *grown = nb_realloc(p->edges, cap * sizeof *grown);
        if (!grown) return false;
        p->edges = grown;
        p->cap_edges = cap;
    }
    p->edges[p->n_edges++] = (nb_pic_edge){entry, node, slot, 1};
    return true;
}

void nb_picture_free(nb_picture *p) {
    nb_pic_node *n, *tmp;
    HASH_ITER(hh, p->by_tensor, n, tmp) {
        HASH_DEL(p->by_tensor, n);
        nb_free(n);
    }
    nb_free(p->nodes);
    nb_free(p->edges);
    nb_free(p->first_edge);
    nb_free(p->runs);
    memset(p, 0, sizeof *p);
}

/* A tensor the options name (the loss, a checked one) must be one the
 * picture can show: live, on the tape drawn or on the heap. */
static nb_status check_opts_tensor(const nb_tensor *t, const nb_tape *tp, const char *what, const char *field,
                                   const char *index) {
    nb_status st = !t ? NB_ERR_NULL : t->status != NB_OK ? t->status : NB_ERR_STATE;
    const char *why = !t ? "NULL" : t->status != NB_OK ? "an errored tensor"
                      : !nb_alive(t) ? "a tensor from before nb_tape_reset, or of a freed tape, which ended it"
                      : nb_on_tape(t) && t->tape != tp ? "a tensor of another tape than the one drawn" : NULL;
    if (!why) return NB_OK;
    nb_set_error(NULL, st, NULL, 0, "%s: opts.%s%s is %s", what, field, index, why);
    return st;
}

nb_status nb_picture_check_opts(const nb_dot_opts *o, const nb_tape *tp, const char *what) {
    if (o->loss) {
        nb_status st = check_opts_tensor(o->loss, tp, what, "loss", "");
        if (st != NB_OK) return st;
    }
    for (size_t k = 0; o->checked && k < o->n_checked; k++) {
        char index[32];
        snprintf(index, sizeof index, "[%zu]", k);
        nb_status st = check_opts_tensor(o->checked[k], tp, what, "checked", index);
        if (st != NB_OK) return st;
    }
    const char *r = o->rankdir;
    if (r && strcmp(r, "LR") != 0 && strcmp(r, "TB") != 0 && strcmp(r, "RL") != 0 && strcmp(r, "BT") != 0) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: rankdir is \"%.16s\"; expected \"LR\", \"TB\", \"RL\" or \"BT\"",
                     what, r);
        return NB_ERR_ARG;
    }
    if (!(o->learning_rate >= 0 && o->learning_rate <= 1e300)) { /* NaN fails too */
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: learning_rate is %g; expected a finite number >= 0 (0: no update)",
                     what, o->learning_rate);
        return NB_ERR_ARG;
    }
    if (o->n_checked && (!o->checked || !o->checked_errors)) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: n_checked is %zu but checked or checked_errors is NULL", what,
                     o->n_checked);
        return NB_ERR_NULL;
    }
    return NB_OK;
}

nb_picture_mark nb_picture_mark_tape(const nb_tape *tp) { return (nb_picture_mark){tp->status, tp->refused_resets}; }

nb_status nb_picture_callbacks_status(const nb_tape *tp, nb_picture_mark before, const char *what) {
    if (before.status == NB_OK && tp->status != NB_OK) {
        nb_set_error(NULL, tp->status, NULL, 0, "%s: %s", what, tp->error);
        return tp->status;
    }
    if (tp->refused_resets == before.refused) return NB_OK;
    nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                 "%s: an op's describe called nb_tape_reset or nb_tape_free on the tape being drawn, which is "
                 "refused (the tape is left as it was)", what);
    return NB_ERR_STATE;
}

nb_status nb_picture_build(nb_picture *p, const nb_tape *tp, const nb_dot_opts *o) {
    memset(p, 0, sizeof *p);
    p->tp = tp;
    p->n_entries = tp->n_entries;
    p->o = o;
    p->loss = o->loss;
    p->computed = SIZE_MAX;
    p->updated = false;
    if (!p->loss && tp->n_entries && tp->entries[tp->n_entries - 1].out->size == 1)
        p->loss = tp->entries[tp->n_entries - 1].out;
    nb_escape_buf(p->loss_name, sizeof p->loss_name, NB_ESC_LINE, p->loss && p->loss->name[0] ? p->loss->name : "L");
    size_t n = tp->n_entries;
    p->first_edge = nb_malloc((n + 1) * sizeof *p->first_edge);
    p->runs = nb_malloc((n ? n : 1) * sizeof *p->runs);
    if (!p->first_edge || !p->runs) goto out_of_memory;
    for (size_t i = 0; i < n; i++) {
        const nb_entry *e = &tp->entries[i];
        p->first_edge[i] = p->n_edges;
        p->runs[i] = false;
        for (int k = 0; k < e->n_in; k++) {
            nb_tensor *x = nb_entry_input(e, k);
            nb_pic_node *node = add_node(p, x, e->scope);
            if (!node) goto out_of_memory;
            bool merged = false; /* the same tensor again: one edge for all its slots */
            for (size_t j = p->first_edge[i]; j < p->n_edges && !merged; j++)
                if (p->edges[j].node == node->id) {
                    p->edges[j].slots++;
                    merged = true;
                }
            if (!merged && !add_edge(p, i, node->id, k)) goto out_of_memory;
        }
        if (!add_node(p, e->out, e->scope)) goto out_of_memory;
    }
    p->first_edge[n] = p->n_edges;
    /* Which entries backward from the loss runs, and how many uses add into
     * each tensor's gradient: the reverse sweep backward itself makes. */
    nb_pic_node *loss = p->loss ? node_of(p, p->loss) : NULL;
    if (loss && p->loss->requires_grad) loss->reached = true;
    /* (a loss made inside a callback has an entry no longer its own) */
    for (size_t i = loss && nb_recorded(p->loss) ? p->loss->entry : 0; i-- > 0;) {
        const nb_entry *e = &tp->entries[i];
        nb_pic_node *out = node_of(p, e->out);
        p->runs[i] = out && out->reached && e->out->requires_grad && e->op->backward;
        if (!p->runs[i]) continue;
        for (size_t j = p->first_edge[i]; j < p->first_edge[i + 1]; j++) {
            nb_pic_node *x = p->nodes[p->edges[j].node];
            if (!x->t->requires_grad) continue;
            x->reached = true;
            x->uses++;
        }
    }
    return NB_OK;
out_of_memory:
    nb_picture_free(p);
    return NB_ERR_NOMEM;
}

bool nb_picture_edge_has_gradient(const nb_picture *p, size_t edge) {
    const nb_pic_edge *ed = &p->edges[edge];
    return p->nodes[ed->node]->t->requires_grad && p->tp->entries[ed->entry].op->backward;
}

/* ---------------------------------------------------------------- pieces of text */

void nb_picture_name(const nb_picture *p, const nb_tensor *t, nb_text *out) {
    if (t->name[0]) {
        nb_text_put_user(out, t->name);
        return;
    }
    const nb_pic_node *n = node_of(p, t);
    nb_text_printf(out, "t%zu", n ? n->id : (size_t)0);
}

/* The symbol for axis d of t: one given for this tensor and axis first,
 * then one for its size. */
static const char *symbol_for(const nb_picture *p, const nb_tensor *t, int d) {
    const nb_dot_opts *o = p->o;
    for (size_t k = 0; k < o->n_axis_symbols && o->axis_symbols; k++) {
        const nb_dot_axis_symbol *s = &o->axis_symbols[k];
        if (s->tensor && s->name && s->axis == d && !strcmp(s->tensor, t->name)) return s->name;
    }
    for (size_t k = 0; k < o->n_symbols && o->symbols; k++)
        if (o->symbols[k].size == t->shape[d] && o->symbols[k].name) return o->symbols[k].name;
    return NULL;
}

static void put_shape(const nb_picture *p, const nb_tensor *t, nb_text *out) {
    nb_text_put(out, "(");
    for (int d = 0; d < t->ndim; d++) {
        const char *s = symbol_for(p, t, d);
        if (d) nb_text_put(out, ", ");
        if (s)
            nb_text_put_user(out, s);
        else
            nb_text_printf(out, "%zu", t->shape[d]);
    }
    nb_text_put(out, t->ndim == 1 ? ",)" : ")");
}

static void put_blank_lines(nb_text *out, size_t n) {
    for (size_t i = 0; i < n; i++) nb_text_put(out, "\n");
}

/* ---------------------------------------------------------------- nodes */

/* Contributions recorded this pass into node's gradient, and their values
 * (the first four, for the sum line), in the order backward adds them. */
static size_t contributions(const nb_picture *p, size_t node, const void **first, size_t max_first) {
    size_t found = 0;
    for (size_t j = p->n_edges; j-- > 0;) {
        if (p->edges[j].node != node) continue;
        const nb_entry *e = &p->tp->entries[p->edges[j].entry];
        const void *c = nb_contribution(p->tp, e, p->edges[j].slot);
        if (!c) continue;
        if (found < max_first) first[found] = c;
        found++;
    }
    return found;
}

void nb_picture_node_label(const nb_picture *p, size_t node, nb_moment m, nb_text *out) {
    const nb_pic_node *n = p->nodes[node];
    nb_tensor *t = n->t;
    const nb_dot_opts *o = p->o;
    nb_picture_name(p, t, out);
    if (t->ndim || p->mixed_dtypes) { /* no "()" for a scalar, no dtype unless they differ */
        nb_text_put(out, "\n");
        if (t->ndim) put_shape(p, t, out);
        if (p->mixed_dtypes) nb_text_put(out, t->dtype == NB_F32 ? " float32" : " float64");
    }
    if (o->show_values) {
        nb_text_put(out, "\n");
        if (nb_recorded(t) && t->entry > p->computed) { /* a forward film, before its op (entry: 1 + index) */
            nb_text_put(out, "value: not yet computed");
            put_blank_lines(out, nb_picture_value_lines(p, t) - 1);
        } else {
            nb_picture_values(p, t, t->data, "value ", out);
        }
    }
    bool grad_lines = o->show_grads && t->requires_grad && (n->reached || m == NB_MOMENT_STATIC);
    if (grad_lines) {
        size_t rows = nb_picture_value_lines(p, t);
        const void *first[4];
        size_t so_far = m == NB_MOMENT_FORWARD ? 0 : contributions(p, node, first, 4);
        nb_text_put(out, "\n");
        if (m == NB_MOMENT_STATIC) {
            if (nb_has_grad(t))
                nb_picture_values(p, t, nb_grad_data(t), "grad ", out);
            else
                nb_text_put(out, "grad: not computed");
        } else {
            bool seeded = t == p->loss && m == NB_MOMENT_BACKWARD && nb_grad_live(t);
            if (m == NB_MOMENT_FORWARD || (!seeded && so_far == 0) || !nb_grad_live(t)) {
                nb_text_put(out, "grad: not yet");
                put_blank_lines(out, rows - 1);
            } else {
                nb_picture_values(p, t, t->grad, "grad ", out);
                if (seeded) nb_text_printf(out, " (∂%s/∂%s = 1)", p->loss_name, p->loss_name);
                else if (so_far < n->uses) nb_text_printf(out, " (partial: %zu of %zu uses)", so_far, n->uses);
                else nb_text_put(out, " (final)"); /* every use has added its part */
            }
        }
        /* Fan-out: the gradient is the sum of what each use added (a film
         * keeps the line, blank until the last use has added its part). */
        bool all_added = so_far == n->uses && (m == NB_MOMENT_BACKWARD || nb_has_grad(t));
        if (n->uses >= 2 && o->chain_rule && (m != NB_MOMENT_STATIC || all_added)) {
            nb_text_put(out, "\n");
            if (all_added && t->size == 1 && n->uses <= 4) {
                double terms[4];
                for (size_t k = 0; k < so_far; k++) terms[k] = nb_picture_value(t->dtype, first[k], 0);
                const void *total = m == NB_MOMENT_STATIC ? nb_grad_data(t) : t->grad;
                nb_picture_sum(out, terms, so_far, total ? nb_picture_value(t->dtype, total, 0) : NAN);
                nb_text_printf(out, " (%zu uses)", n->uses);
            } else if (all_added) {
                nb_text_printf(out, "= the sum of its %zu uses", n->uses);
            }
        }
    }
    /* A film's update frame: the step of gradient descent, after backward */
    if (o->learning_rate > 0 && m != NB_MOMENT_STATIC && nb_picture_role(p, t) == NB_ROLE_PARAM && t->requires_grad)
        nb_picture_update(p, t, p->updated && nb_grad_live(t) ? t->grad : NULL, out);
    const double *err = nb_picture_checked(p, t);
    if (err) nb_text_printf(out, "\ngradcheck: worst rel. error %.2g", *err);
}

/* ---------------------------------------------------------------- ops */

void nb_picture_op_label(const nb_picture *p, size_t entry, size_t backward_step, nb_text *out) {
    const nb_entry *e = &p->tp->entries[entry];
    const char *name = e->op->name;
    nb_text_put_user(out, name);
    /* The op's parameters, where it has any worth showing. */
    if (!strcmp(name, "scale") || !strcmp(name, "add_scalar") || !strcmp(name, "pow") || !strcmp(name, "leaky_relu"))
        nb_text_printf(out, " %.4g", e->scalar);
    else if (strstr(name, "_axis") || strstr(name, "softmax"))
        nb_text_printf(out, "\naxis %d", e->axis);
    if (e->op->describe) {
        char text[128] = "";
        if (e->user)
            nb_user_describe(p->tp, entry, text, sizeof text); /* on a copy: it may record ops */
        else
            e->op->describe(e, text, sizeof text);
        text[sizeof text - 1] = '\0'; /* even if describe forgot it */
        if (text[0]) {
            nb_text_put(out, "\n");
            nb_text_put_user(out, text);
        }
    }
    if (backward_step) nb_text_printf(out, "\nbackward step %zu", backward_step);
}

/* ---------------------------------------------------------------- edges */

/* The letters of the ops' formulas and what they stand for. */
typedef struct {
    const char *by_letter[128];
    char upstream[2 * NB_ESC_LINE_MAX(NB_NAME_MAX) + 8]; /* ∂loss/∂y */
    char count[24];     /* N, M or n of a loss or mean: the number it stands for */
    char scalar[24];    /* s of scale and leaky_relu, p of pow */
} names;

static bool ascii_letter(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Writes formula f with each standalone letter that has a name replaced by
 * it ("2x" becomes "2·X", "G · op(B)ᵀ" keeps "op"); f is display text. */
static void put_formula_text(const char *f, const names *nm, nb_text *out) {
    /* "1 · x" reads better as "x" (the upstream gradient of the loss's op). */
    if (!strncmp(f, "G · ", strlen("G · ")) && nm->by_letter['G'] && !strcmp(nm->by_letter['G'], "1"))
        f += strlen("G · ");
    for (size_t i = 0; f[i]; i++) {
        unsigned char c = (unsigned char)f[i];
        bool alone = c < 128 && ascii_letter(c) && (i == 0 || !ascii_letter((unsigned char)f[i - 1])) &&
                     !ascii_letter((unsigned char)f[i + 1]) && !(f[i + 1] >= '0' && f[i + 1] <= '9');
        const char *r = alone ? nm->by_letter[c] : NULL;
        if (!r) {
            nb_text_putn(out, f + i, 1);
            continue;
        }
        /* "2·X" for 2x, and "(1−A)·242" for (1−p)N: a product stays one */
        bool after_digit = i > 0 && f[i - 1] >= '0' && f[i - 1] <= '9';
        bool number = r[0] >= '0' && r[0] <= '9';
        if (after_digit || (number && i > 0 && (f[i - 1] == ')' || ascii_letter((unsigned char)f[i - 1]))))
            nb_text_put(out, "·");
        nb_text_put(out, r);
    }
}

/* The same for an op's formula as its definition gives it (the user's
 * text: made display text of one line first). */
static void put_formula(const char *formula, const names *nm, nb_text *out) {
    nb_text f = {0};
    nb_text_put_user(&f, formula);
    put_formula_text(f.s ? f.s : "", nm, out);
    text_drop(&f, out);
}

/* The names of an entry's inputs and output, for its formulas. */
static void fill_names(const nb_picture *p, const nb_entry *e, nb_text *in0, nb_text *in1, nb_text *outname,
                       names *nm) {
    memset(nm, 0, sizeof *nm);
    nb_picture_name(p, nb_entry_input(e, 0), in0);
    if (e->n_in > 1) nb_picture_name(p, nb_entry_input(e, 1), in1);
    nb_picture_name(p, e->out, outname);
    snprintf(nm->upstream, sizeof nm->upstream, "∂%s/∂%s", p->loss_name, outname->s ? outname->s : "y");
    const char *a = in0->s ? in0->s : "", *b = in1->s ? in1->s : a;
    if (e->op->elementwise) {
        nm->by_letter['x'] = a;
        nm->by_letter['a'] = a;
        nm->by_letter['b'] = b;
        nm->by_letter['y'] = outname->s;
        /* An op's own constant, as the number it is: ∂y/∂x = 0.5, not s. */
        snprintf(nm->scalar, sizeof nm->scalar, "%.4g", e->scalar);
        if (!strcmp(e->op->name, "scale") || !strcmp(e->op->name, "leaky_relu")) nm->by_letter['s'] = nm->scalar;
        if (!strcmp(e->op->name, "pow")) nm->by_letter['p'] = nm->scalar;
        if (!strcmp(e->op->name, "where")) nm->by_letter['c'] = a; /* [c≠0]: the condition */
    } else {
        /* The loss itself: its upstream gradient is ∂E/∂E = 1. */
        if (e->out == p->loss) snprintf(nm->upstream, sizeof nm->upstream, "1");
        nm->by_letter['G'] = nm->upstream;
        nm->by_letter['A'] = a;
        nm->by_letter['B'] = b;
        nm->by_letter['x'] = a;
        nm->by_letter['p'] = a;
        nm->by_letter['z'] = a;
        nm->by_letter['t'] = b;
        nm->by_letter['W'] = b;
        nm->by_letter['y'] = outname->s;
        /* The counts losses and means divide by, as numbers: N the elements,
         * M the examples of a class axis, n the length of a mean's axis. */
        const nb_tensor *x = nb_entry_input(e, 0);
        const char *op = e->op->name;
        size_t axis_len = e->axis >= 0 && e->axis < x->ndim ? x->shape[e->axis] : 0;
        if (!strcmp(op, "mean") || !strcmp(op, "mse") || !strcmp(op, "bce") || !strcmp(op, "bce_logits") ||
            !strcmp(op, "huber") || !strcmp(op, "smooth_l1")) {
            snprintf(nm->count, sizeof nm->count, "%zu", x->size);
            nm->by_letter['N'] = nm->count;
        } else if (!strcmp(op, "softmax_cross_entropy") && axis_len) {
            snprintf(nm->count, sizeof nm->count, "%zu", x->size / axis_len);
            nm->by_letter['M'] = nm->count;
        } else if (!strcmp(op, "mean_axis") && axis_len) {
            snprintf(nm->count, sizeof nm->count, "%zu", axis_len);
            nm->by_letter['n'] = nm->count;
        }
    }
}

/* A product's formula from its transposes: C = op(A) · op(B) gives
 * dA = G · op(B)ᵀ (or its transpose when A is read transposed) and
 * dB = op(A)ᵀ · G (likewise). */
static void put_product_formula(const nb_entry *e, int slot, const names *nm, nb_text *out) {
    bool ta = e->flag0, tb = e->flag1;
    const char *A = nm->by_letter['A'], *B = nm->by_letter['B'], *G = nm->upstream;
    if (slot == 0 && !ta) /* dA = G · op(B)ᵀ */
        nb_text_printf(out, "%s · %s%s", G, B, tb ? "" : "ᵀ");
    else if (slot == 0) /* dA = (G · op(B)ᵀ)ᵀ = op(B) · Gᵀ */
        nb_text_printf(out, "%s%s · (%s)ᵀ", B, tb ? "ᵀ" : "", G);
    else if (!tb) /* dB = op(A)ᵀ · G */
        nb_text_printf(out, "%s%s · %s", A, ta ? "" : "ᵀ", G);
    else /* dB = (op(A)ᵀ · G)ᵀ = Gᵀ · op(A) */
        nb_text_printf(out, "(%s)ᵀ · %s%s", G, A, ta ? "ᵀ" : "");
}

static bool is_product(const nb_entry *e) {
    return !strcmp(e->op->name, "matmul") || !strcmp(e->op->name, "linear");
}

/* The formula line of an edge. */
static void put_edge_formula(const nb_picture *p, const nb_pic_edge *ed, nb_text *out) {
    const nb_entry *e = &p->tp->entries[ed->entry];
    nb_text in0 = {0}, in1 = {0}, outname = {0}, x = {0};
    names nm;
    fill_names(p, e, &in0, &in1, &outname, &nm);
    nb_picture_name(p, nb_entry_input(e, ed->slot), &x);
    if (e->op->elementwise)
        nb_text_printf(out, "∂%s/∂%s = ", outname.s ? outname.s : "", x.s ? x.s : "");
    else
        nb_text_printf(out, "∂%s/∂%s = ", p->loss_name, x.s ? x.s : "");
    /* Every slot this tensor fills, the terms added (a * a: a + a = 2a). */
    nb_text term[2] = {{0}, {0}};
    int written = 0;
    for (int k = ed->slot; k < e->n_in && written < ed->slots; k++) {
        if (nb_entry_input(e, k) != nb_entry_input(e, ed->slot)) continue;
        nb_text *tt = &term[written < 2 ? written : 1];
        if (written >= 2) nb_text_put(tt, " + ");
        if (is_product(e) && k < 2)
            put_product_formula(e, k, &nm, tt);
        else if (k == 0 && !strcmp(e->op->name, "softmax_cross_entropy") && e->flag0) /* class indices */
            put_formula("G · (softmax(x) − onehot(t))/M", &nm, tt);
        else
            put_formula(nb_op_formula(e->op, k), &nm, tt);
        written++;
    }
    const char *t0 = term[0].s ? term[0].s : "", *t1 = term[1].s ? term[1].s : "";
    if (written == 1) {
        nb_text_put(out, t0);
    } else if (written == 2 && !strcmp(t0, t1)) { /* a + a = 2a */
        bool simple = true;
        for (const char *c = t0; *c && simple; c++) simple = *c != ' ' && *c != '+' && *c != '-';
        if (!strcmp(t0, "1"))
            nb_text_put(out, "2");
        else
            nb_text_printf(out, simple ? "2%s" : "2(%s)", t0);
    } else {
        nb_text_printf(out, "%s + %s", t0, t1);
    }
    for (int k = 0; k < 2; k++) text_drop(&term[k], out);
    text_drop(&in0, out);
    text_drop(&in1, out);
    text_drop(&outname, out);
    text_drop(&x, out);
}

/* Is e a sigmoid whose output A goes into one op alone, the bce that makes
 * the loss C from A and targets Y?  Then the edge into it can say the
 * pair's known result ∂C/∂Z = (A−Y)/N: A(1−A) cancels.  Its bce entry, or
 * NULL. */
static const nb_entry *sigmoid_into_bce(const nb_picture *p, const nb_entry *e) {
    if (strcmp(e->op->name, "sigmoid") != 0) return NULL;
    const nb_entry *bce = NULL;
    for (size_t i = 0; i < p->n_entries; i++) {
        const nb_entry *u = &p->tp->entries[i];
        for (int k = 0; k < u->n_in; k++) {
            if (nb_entry_input(u, k) != e->out) continue;
            if (bce || k != 0 || strcmp(u->op->name, "bce") != 0 || u->n_in != 2 || u->out != p->loss) return NULL;
            bce = u;
        }
    }
    return bce;
}

/* The line "∂C/∂Z = (A−Y)/m, m = 242" for such a pair, with the count's
 * symbol when the options give A's examples one (the course's m), else N. */
static void put_sigmoid_bce(const nb_picture *p, const nb_entry *e, const nb_entry *bce, nb_text *out) {
    const nb_tensor *A = e->out;
    const char *count = NULL;
    for (int d = 0; d < A->ndim && !count; d++)
        if (A->shape[d] == A->size) count = symbol_for(p, A, d);
    nb_text_printf(out, "\n∂%s/∂", p->loss_name);
    nb_picture_name(p, nb_entry_input(e, 0), out);
    nb_text_put(out, " = (");
    nb_picture_name(p, A, out);
    nb_text_put(out, "−");
    nb_picture_name(p, nb_entry_input(bce, 1), out);
    nb_text_put(out, ")/");
    nb_text_put_user(out, count ? count : "N");
    nb_text_put(out, ", ");
    nb_text_put_user(out, count ? count : "N");
    nb_text_printf(out, " = %zu", A->size);
}

/* How many number lines the edge has once its op's backward ran: an
 * element-wise op's edge shows every element's product, or, summarised,
 * the local derivative's summary and the contribution's. */
static size_t number_lines(const nb_picture *p, const nb_pic_edge *ed) {
    const nb_entry *e = &p->tp->entries[ed->entry];
    const nb_tensor *x = nb_entry_input(e, ed->slot), *y = e->out;
    if (e->op->elementwise && x->size == y->size) return x->size <= p->o->max_values ? x->size : 2;
    return nb_picture_value_lines(p, x) + (e->op->elementwise && x->size != y->size ? 1 : 0);
}

static void edge_lines(const nb_picture *p, size_t edge, nb_moment m, nb_text *out);

void nb_picture_edge_label(const nb_picture *p, size_t edge, nb_moment m, nb_text *out) {
    if (!p->o->chain_rule || !nb_picture_edge_has_gradient(p, edge)) return; /* nothing flows back */
    edge_lines(p, edge, m, out);
    /* last, after the numbers it sums up (a film's frames keep it in place) */
    const nb_entry *e = &p->tp->entries[p->edges[edge].entry];
    const nb_entry *bce = sigmoid_into_bce(p, e);
    if (bce) put_sigmoid_bce(p, e, bce, out);
}

/* The formula, then the numbers once backward ran. */
static void edge_lines(const nb_picture *p, size_t edge, nb_moment m, nb_text *out) {
    const nb_pic_edge *ed = &p->edges[edge];
    const nb_entry *e = &p->tp->entries[ed->entry];
    const nb_tensor *x = nb_entry_input(e, ed->slot), *y = e->out;
    put_edge_formula(p, ed, out);
    if (!p->o->show_grads || m == NB_MOMENT_FORWARD || !p->runs[ed->entry]) {
        if (m != NB_MOMENT_STATIC && p->runs[ed->entry]) put_blank_lines(out, number_lines(p, ed));
        return;
    }
    const void *c = nb_contribution(p->tp, e, ed->slot);
    if (!c) { /* its backward has not run yet (or ran without explain mode) */
        if (m != NB_MOMENT_STATIC) put_blank_lines(out, number_lines(p, ed));
        return;
    }
    const void *g = nb_grad_live(y) ? y->grad : NULL;
    if (e->op->elementwise && x->size == y->size && x->size <= p->o->max_values && g) {
        /* upstream × local = contribution, element by element */
        for (size_t i = 0; i < x->size; i++) {
            double gi = nb_picture_value(y->dtype, g, i), ci = nb_picture_value(x->dtype, c, i);
            if (gi != 0)
                nb_picture_product(out, gi, ci / gi, ci);
            else
                nb_text_printf(out, "\n0 × · = %.4g", ci);
        }
        return;
    }
    nb_text_put(out, "\n");
    if (!e->op->elementwise) { /* the formula is the contribution's: its values */
        nb_picture_values(p, x, c, "= ", out);
        return;
    }
    if (x->size == y->size) { /* summarised: the local derivative's own values, then the contribution's */
        if (g)
            nb_picture_local_summary(x, y, g, c, out);
        else
            nb_text_put(out, "= (not known: no upstream gradient)");
        nb_text_put(out, "\n");
    }
    nb_text t = {0};
    nb_text_printf(&t, "∂%s/∂", p->loss_name);
    nb_picture_name(p, x, &t);
    nb_text_put(&t, x->size == y->size && g ? " = upstream × local: " : " = ");
    nb_picture_values(p, x, c, t.s ? t.s : "", out);
    text_drop(&t, out);
    if (x->size != y->size) nb_text_put(out, "\n(summed over the broadcast axes)");
}
