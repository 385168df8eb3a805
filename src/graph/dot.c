/*
 * The recorded graph in Graphviz's dot language, for teaching.
 *
 * Tensor nodes are boxes showing name, shape, dtype, value and gradient;
 * op nodes are ellipses.  Colours give each tensor's role: input data,
 * parameter, intermediate, loss.  Each edge from a tensor into an op says how
 * the gradient comes back along it: the local derivative for element-wise
 * ops (dy/dx = σ(x)(1−σ(x))), the whole product for the others (G · Bᵀ), and
 * after a backward in explain mode the numbers of the chain rule, upstream
 * gradient × local derivative = contribution.  A tensor that feeds several
 * ops shows its gradient as the sum of their contributions.
 *
 * Ids come from tape order (t0, t1, ... in order of first use; op ids are
 * entry indices), never from pointers, so the same program writes the same
 * bytes on every run and two dumps can be diffed.
 *
 * The file is written in two passes: the first numbers the tensors and
 * counts the contributions each receives, the second writes.
 */
#include "../hash.h"

#include <errno.h>
#include <math.h>
#include <string.h>

void nb_dot_default_opts(nb_dot_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->max_values = 12;
    opts->show_values = true;
    opts->show_grads = true;
    opts->chain_rule = true;
}

typedef enum { ROLE_INPUT, ROLE_PARAM, ROLE_INTERMEDIATE, ROLE_LOSS } role;

static const char *const role_names[] = {"input", "parameter", "intermediate", "loss"};
static const char *const role_colors[] = {"#cfe2f3", "#ffe599", "#f3f3f3", "#f4cccc"};

/* What the first pass learns about a tensor. */
typedef struct {
    nb_tensor *key;
    size_t id;
    int scope;             /* scope of the entry that made or first used it */
    size_t contributions;  /* explained edges that added into its gradient */
    size_t first_contrib[2]; /* entry and input of the first two, for sums */
    int first_input[2];
    UT_hash_handle hh;
} node_info;

typedef struct {
    FILE *f;
    const nb_dot_opts *o;
    const nb_tape *tp;
    const nb_tensor *loss;
    node_info *by_tensor;  /* uthash */
    node_info **in_order;  /* by id */
    size_t n_nodes, cap_nodes;
} writer;

static role role_of(const nb_tensor *t, const nb_tensor *loss) {
    if (t == loss) return ROLE_LOSS;
    if (t->is_leaf) return t->requires_grad ? ROLE_PARAM : ROLE_INPUT;
    return ROLE_INTERMEDIATE;
}

/* ---------------------------------------------------------------- text */

/* Writes s with the characters that dot treats specially escaped. */
static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

static double value_at(nb_dtype dt, const void *values, size_t i) {
    return dt == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i];
}

/* "(n[1], m)" with course symbols, else "(128, 64)". */
static void put_shape(FILE *f, const nb_tensor *t, const nb_dot_opts *o) {
    fputc('(', f);
    for (int d = 0; d < t->ndim; d++) {
        const char *symbol = NULL;
        for (size_t k = 0; k < o->n_symbols && !symbol; k++)
            if (o->symbols[k].size == t->shape[d]) symbol = o->symbols[k].name;
        if (d) fputs(", ", f);
        if (symbol)
            put_escaped(f, symbol);
        else
            fprintf(f, "%zu", t->shape[d]);
    }
    fputs(t->ndim == 1 ? ",)" : ")", f);
}

/* "[0.9, 0.1]" in full (a matrix one row per line), or "min a  mean b
 * max c" for larger tensors. */
static void put_values(FILE *f, const nb_tensor *t, const void *values, size_t max_values) {
    if (t->size <= max_values) {
        size_t row = t->ndim >= 2 ? t->shape[t->ndim - 1] : t->size;
        for (size_t i = 0; i < t->size; i++) {
            if (i % row == 0) fputs(i ? "]\\n[" : "[", f);
            fprintf(f, i % row ? ", %.4g" : "%.4g", value_at(t->dtype, values, i));
        }
        fputc(']', f);
        return;
    }
    nb_stats s = nb_compute_stats(t->dtype, t->size, values);
    fprintf(f, "min %.4g  mean %.4g  max %.4g", s.min, s.mean, s.max);
    if (s.nonfinite) fprintf(f, "  (%zu not finite)", s.nonfinite);
}

/* ---------------------------------------------------------------- pass 1 */

static node_info *info_for(writer *w, nb_tensor *t, int scope) {
    node_info *n;
    HASH_FIND_PTR(w->by_tensor, &t, n);
    if (n) return n;
    if (w->n_nodes == w->cap_nodes) {
        size_t cap = w->cap_nodes ? 2 * w->cap_nodes : 64;
        node_info **grown = nb_realloc(w->in_order, cap * sizeof *grown);
        if (!grown) return NULL;
        w->in_order = grown;
        w->cap_nodes = cap;
    }
    if (!(n = nb_malloc(sizeof *n))) return NULL;
    memset(n, 0, sizeof *n);
    n->key = t;
    n->id = w->n_nodes;
    n->scope = scope;
    nb_hash_oom = false;
    HASH_ADD_PTR(w->by_tensor, key, n);
    if (nb_hash_oom) { /* the table could not grow: n was not added */
        nb_free(n);
        return NULL;
    }
    w->in_order[w->n_nodes++] = n;
    return n;
}

/* What entry e added into input k's gradient in the latest backward, when
 * the picture shows gradients (a picture of the forward pass shows none). */
static const void *shown_contribution(const writer *w, const nb_entry *e, int k) {
    return w->o->show_grads ? nb_contribution(w->tp, e, k) : NULL;
}

static nb_status first_pass(writer *w) {
    for (size_t i = 0; i < w->tp->n_entries; i++) {
        const nb_entry *e = &w->tp->entries[i];
        for (int k = 0; k < e->n_in; k++) {
            node_info *n = info_for(w, nb_entry_input(e, k), e->scope);
            if (!n) return NB_ERR_NOMEM;
            if (shown_contribution(w, e, k)) {
                if (n->contributions < 2) {
                    n->first_contrib[n->contributions] = i;
                    n->first_input[n->contributions] = k;
                }
                n->contributions++;
            }
        }
        if (!info_for(w, e->out, e->scope)) return NB_ERR_NOMEM;
    }
    return NB_OK;
}

/* ---------------------------------------------------------------- nodes */

static const double *checked_error(const writer *w, const nb_tensor *t) {
    for (size_t k = 0; k < w->o->n_checked && w->o->checked && w->o->checked_errors; k++)
        if (w->o->checked[k] == t) return &w->o->checked_errors[k];
    return NULL;
}

/* Green under 1e-6, orange under 1e-3 (PyTorch's rtol), red above. */
static const char *error_color(double err) {
    if (err < 1e-6) return "#b6d7a8";
    if (err < 1e-3) return "#f9cb9c";
    return "#ea9999";
}

static void put_tensor_node(writer *w, const node_info *n) {
    FILE *f = w->f;
    const nb_dot_opts *o = w->o;
    nb_tensor *t = n->key;
    const double *err = checked_error(w, t);
    fprintf(f, "  t%zu [shape=box, style=\"rounded,filled\", fillcolor=\"%s\", label=\"", n->id,
            err ? error_color(*err) : role_colors[role_of(t, w->loss)]);
    if (t->name[0])
        put_escaped(f, t->name);
    else
        fprintf(f, "t%zu", n->id);
    fputs("\\n", f);
    put_shape(f, t, o);
    fprintf(f, " %s", t->dtype == NB_F32 ? "f32" : "f64");
    if (o->show_values) {
        fputs("\\nvalue ", f);
        put_values(f, t, t->data, o->max_values);
    }
    if (o->show_grads) {
        fputs("\\ngrad ", f);
        if (nb_has_grad(t))
            put_values(f, t, nb_grad_data(t), o->max_values);
        else
            fputs(t->requires_grad ? "not computed" : "none (no gradient needed)", f);
        /* Fan-out: the gradient is the sum of what each use contributed. */
        if (o->chain_rule && n->contributions >= 2) {
            if (t->size == 1 && n->contributions == 2) {
                fputs("\\n= ", f);
                for (int c = 0; c < 2; c++) {
                    const nb_entry *e = &w->tp->entries[n->first_contrib[c]];
                    fprintf(f, c ? " + %.4g" : "%.4g", value_at(t->dtype, shown_contribution(w, e, n->first_input[c]), 0));
                }
                fputs(" (two uses)", f);
            } else {
                fprintf(f, "\\n= sum of %zu contributions", n->contributions);
            }
        }
    }
    if (err) fprintf(f, "\\ngradcheck: worst rel. error %.2g", *err);
    fputs("\"];\n", f);
}

static void put_op_node(writer *w, size_t index, const nb_entry *e) {
    FILE *f = w->f;
    bool hl = w->o->highlight == index + 1;
    fprintf(f, "  op%zu [shape=ellipse, style=filled, fillcolor=\"%s\"%s, label=\"%s", index,
            hl ? "#e06666" : "#d9ead3", hl ? ", penwidth=3, fontcolor=white" : "", e->op->name);
    /* The op's parameters, where it has any worth showing. */
    const char *name = e->op->name;
    if (!strcmp(name, "scale") || !strcmp(name, "add_scalar") || !strcmp(name, "pow") ||
        !strcmp(name, "leaky_relu"))
        fprintf(f, " %.4g", e->scalar);
    else if (strstr(name, "_axis") || strstr(name, "softmax"))
        fprintf(f, "\\naxis %d", e->axis);
    else if (!strcmp(name, "matmul") && (e->flag0 || e->flag1))
        fprintf(f, "%s%s", e->flag0 ? " Aᵀ" : "", e->flag1 ? " Bᵀ" : "");
    else if (!strcmp(name, "transpose"))
        fprintf(f, " %d,%d", e->axis, (int)e->scalar);
    if (e->op->describe) {
        char text[128] = "";
        e->op->describe(e, text, sizeof text);
        if (text[0]) {
            fputs("\\n", f);
            put_escaped(f, text);
        }
    }
    fputs("\"];\n", f);
}

/* ---------------------------------------------------------------- edges */

/* The label of the edge from input k into entry e: how the gradient comes
 * back, and with an explained backward, the numbers. */
static void put_edge_label(writer *w, const nb_entry *e, int k) {
    FILE *f = w->f;
    const nb_tensor *x = nb_entry_input(e, k), *y = e->out;
    const char *formula = nb_op_formula(e->op, k);
    char var[16] = "x"; /* x for one input, a b c for up to three, x1 x2 ... beyond */
    if (e->n_in > NB_MAX_INPUTS)
        snprintf(var, sizeof var, "x%d", k + 1);
    else if (e->n_in > 1)
        snprintf(var, sizeof var, "%c", 'a' + k);
    if (e->n_in > 1) fprintf(f, "%s: ", var);
    if (e->op->elementwise)
        fprintf(f, "∂y/∂%s = ", var);
    else
        fprintf(f, "∂L/∂%s = ", var);
    put_escaped(f, formula);
    if (e->op->elementwise && x->size != y->size) fputs("\\n(summed over broadcast axes)", f);
    const void *c = shown_contribution(w, e, k);
    if (!c) return;
    const void *g = y->grad;
    if (e->op->elementwise && x->size == y->size && x->size <= w->o->max_values && g) {
        /* upstream × local = contribution, element by element */
        fputs("\\n", f);
        for (size_t i = 0; i < x->size; i++) {
            double gi = value_at(y->dtype, g, i), ci = value_at(x->dtype, c, i);
            if (i) fputs("\\n", f);
            if (gi != 0)
                fprintf(f, "%.4g × %.4g = %.4g", gi, ci / gi, ci);
            else
                fprintf(f, "0 × · = %.4g", ci);
        }
    } else {
        fputs("\\nadds ", f);
        put_values(f, x, c, w->o->max_values);
    }
}

static void put_edges(writer *w, size_t index, const nb_entry *e) {
    bool hl = w->o->highlight == index + 1;
    for (int k = 0; k < e->n_in; k++) {
        node_info *n;
        nb_tensor *x = nb_entry_input(e, k);
        HASH_FIND_PTR(w->by_tensor, &x, n);
        if (!n) return; /* cannot happen: the first pass numbered every tensor */
        fprintf(w->f, "  t%zu -> op%zu [", n->id, index);
        if (hl) fputs("color=\"#cc0000\", penwidth=2.5, fontcolor=\"#cc0000\", ", w->f);
        fputs("label=\"", w->f);
        if (w->o->chain_rule)
            put_edge_label(w, e, k);
        else if (e->n_in > NB_MAX_INPUTS)
            fprintf(w->f, "x%d", k + 1);
        else if (e->n_in > 1)
            fputc('a' + k, w->f);
        fputs("\"];\n", w->f);
    }
    node_info *out;
    nb_tensor *y = e->out;
    HASH_FIND_PTR(w->by_tensor, &y, out);
    if (!out) return;
    fprintf(w->f, "  op%zu -> t%zu%s;\n", index, out->id, hl ? " [color=\"#cc0000\", penwidth=2.5]" : "");
}

/* ---------------------------------------------------------------- clusters */

/* Scopes are numbered in the order they were opened, which is a pre-order of
 * their tree, so a stack of open clusters nests them without recursion. */
static void put_clusters(writer *w) {
    const nb_tape *tp = w->tp;
    int stack[64], depth = 0;
    for (int s = 0; s < tp->n_scopes; s++) {
        while (depth > 0 && stack[depth - 1] != tp->scopes[s].parent) {
            fputs("  }\n", w->f);
            depth--;
        }
        if (depth == 64) break; /* deeper than any picture can show */
        fprintf(w->f, "  subgraph cluster_scope%d {\n    label=\"", s);
        put_escaped(w->f, tp->scopes[s].name);
        fputs("\"; style=\"rounded,dashed\"; color=\"#999999\"; fontsize=12;\n   ", w->f);
        for (size_t i = 0; i < tp->n_entries; i++)
            if (tp->entries[i].scope == s) fprintf(w->f, " op%zu;", i);
        for (size_t k = 0; k < w->n_nodes; k++)
            if (w->in_order[k]->scope == s) fprintf(w->f, " t%zu;", w->in_order[k]->id);
        fputc('\n', w->f);
        stack[depth++] = s;
    }
    while (depth-- > 0) fputs("  }\n", w->f);
}

static void put_legend(writer *w) {
    FILE *f = w->f;
    fputs("  subgraph cluster_legend {\n    label=\"legend\"; fontsize=10; style=dashed;\n", f);
    for (int r = 0; r <= ROLE_LOSS; r++)
        fprintf(f, "    legend_%s [shape=box, style=\"rounded,filled\", fillcolor=\"%s\", "
                   "label=\"%s\", fontsize=10];\n",
                role_names[r], role_colors[r], role_names[r]);
    fputs("    legend_op [shape=ellipse, style=filled, fillcolor=\"#d9ead3\", label=\"op\", "
          "fontsize=10];\n",
          f);
    fputs("    legend_input -> legend_parameter -> legend_intermediate -> legend_loss -> legend_op",
          f);
    if (w->o->n_checked) {
        fputs(" -> legend_check [style=invis];\n    legend_check [shape=box, style=filled, "
              "fillcolor=\"#b6d7a8\", fontsize=10, label=\"gradcheck: green < 1e-6, orange < 1e-3, "
              "red above\"];\n",
              f);
    } else {
        fputs(" [style=invis];\n", f);
    }
    fputs("  }\n", f);
}

/* ---------------------------------------------------------------- writing */

nb_status nb_dot_write(nb_tape *tp, FILE *f, const nb_dot_opts *opts) {
    if (!tp || !f) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dot_write: %s is NULL",
                     tp ? "the file" : "the tape");
        return NB_ERR_NULL;
    }
    nb_dot_opts o;
    if (opts)
        o = *opts;
    else
        nb_dot_default_opts(&o);
    writer w = {f, &o, tp, o.loss, NULL, NULL, 0, 0};
    if (!w.loss && tp->n_entries && tp->entries[tp->n_entries - 1].out->size == 1)
        w.loss = tp->entries[tp->n_entries - 1].out;

    nb_status st = first_pass(&w);
    if (st == NB_OK) {
        fputs("digraph nabla {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n"
              "  edge [fontname=\"Helvetica\", fontsize=9];\n",
              f);
        if (o.title) {
            fputs("  labelloc=t; label=\"", f);
            put_escaped(f, o.title);
            fputs("\";\n", f);
        }
        for (size_t k = 0; k < w.n_nodes; k++) put_tensor_node(&w, w.in_order[k]);
        for (size_t i = 0; i < tp->n_entries; i++) {
            put_op_node(&w, i, &tp->entries[i]);
            put_edges(&w, i, &tp->entries[i]);
        }
        if (o.clusters) put_clusters(&w);
        put_legend(&w);
        fputs("}\n", f);
    }

    node_info *n, *tmp;
    HASH_ITER(hh, w.by_tensor, n, tmp) {
        HASH_DEL(w.by_tensor, n);
        nb_free(n);
    }
    nb_free(w.in_order);
    if (st != NB_OK) {
        nb_set_error(NULL, st, NULL, 0, "nb_dot_write: out of memory");
        return st;
    }
    if (ferror(f)) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_dot_write: write error");
        return NB_ERR_IO;
    }
    return NB_OK;
}

nb_status nb_dot_save(nb_tape *tp, const char *path, const nb_dot_opts *opts) {
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dot_save: the path is NULL");
        return NB_ERR_NULL;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_dot_save: cannot open %s for writing: %s",
                     path, strerror(errno));
        return NB_ERR_IO;
    }
    nb_status st = nb_dot_write(tp, f, opts);
    if (fclose(f) != 0 && st == NB_OK) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_dot_save: cannot write %s: %s", path,
                     strerror(errno));
        st = NB_ERR_IO;
    }
    return st;
}
