/*
 * The recorded graph in Graphviz's dot language, for teaching.
 *
 * Tensor nodes are boxes showing name, shape, value and gradient; op nodes
 * are ellipses.  Fill colours give each tensor's role (input data,
 * parameter, intermediate, loss); a gradient check's verdict is the colour
 * of a tensor's border; the op being stepped through is blue.  Each edge
 * from a tensor into an op says how the gradient comes back along it, in
 * the tensors' own names (see src/graph/picture.c); edges into tensors that
 * take no gradient (data, targets) are grey and carry no formula.
 *
 * Ids come from tape order (t0, t1, ... in order of first use; op ids are
 * entry indices), never from pointers, so the same program writes the same
 * bytes on every run and two dumps can be diffed.
 */
#include "dot_emit.h"

#include <stdlib.h>
#include <string.h>

void nb_dot_default_opts(nb_dot_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->max_values = 12;
    opts->show_values = true;
    opts->show_grads = true;
    opts->chain_rule = true;
}

/* Writes s inside a dot string, the lines joined by dot's "\n". */
static void put_escaped(FILE *f, const char *s) { nb_escape_file(f, NB_ESC_DOT, s); }

/* Scopes are numbered in the order they were opened, which is a pre-order of
 * their tree, so a stack of open clusters nests them without recursion. */
static void put_clusters(FILE *f, const nb_picture *p) {
    const nb_tape *tp = p->tp;
    int stack[64], depth = 0;
    for (int s = 0; s < tp->n_scopes; s++) {
        while (depth > 0 && stack[depth - 1] != tp->scopes[s].parent) {
            fputs("  }\n", f);
            depth--;
        }
        if (depth == 64) break; /* deeper than any picture can show */
        char name[NB_ESC_LINE_MAX(NB_NAME_MAX)]; /* a name: one line */
        nb_escape_buf(name, sizeof name, NB_ESC_LINE, tp->scopes[s].name);
        fprintf(f, "  subgraph cluster_scope%d {\n    label=\"", s);
        put_escaped(f, name);
        fputs("\"; style=\"rounded,dashed\"; color=\"#999999\";\n   ", f);
        for (size_t i = 0; i < p->n_entries; i++)
            if (tp->entries[i].scope == s) fprintf(f, " op%zu;", i);
        for (size_t k = 0; k < p->n_nodes; k++)
            if (p->nodes[k]->scope == s) fprintf(f, " t%zu;", p->nodes[k]->id);
        fputc('\n', f);
        stack[depth++] = s;
    }
    while (depth-- > 0) fputs("  }\n", f);
}

/* The legend of a still picture (the stepper has it beside the graph). */
static void put_legend(FILE *f, const nb_picture *p) {
    fputs("  subgraph cluster_legend {\n    label=\"legend\"; style=dashed;\n", f);
    for (int r = 0; r <= NB_ROLE_LOSS; r++)
        fprintf(f, "    legend_%s [shape=box, style=\"rounded,filled\", fillcolor=\"%s\", label=\"%s\"];\n",
                nb_role_names[r], nb_role_colors[r], nb_role_names[r]);
    fputs("    legend_op [shape=ellipse, style=filled, fillcolor=\"#d9ead3\", label=\"op\"];\n", f);
    fputs("    legend_edges [shape=note, label=\"edges: how the gradient comes back\\n∂output/∂input = the "
          "local derivative,\\nthen upstream × local = contribution;\\n∂",
          f);
    put_escaped(f, p->loss_name);
    fputs("/∂input = the contribution itself\\ngrey, dashed: no gradient flows\"];\n", f);
    fputs("    legend_input -> legend_parameter -> legend_intermediate -> legend_loss -> legend_op -> legend_edges", f);
    if (p->o->n_checked) {
        fputs(" -> legend_check [style=invis];\n    legend_check [shape=box, style=\"rounded,filled\", "
              "fillcolor=\"#ffffff\", color=\"#6aa84f\", penwidth=3, label=\"gradcheck border: green < 1e-4, "
              "orange < 1e-3, red above (fails)\"];\n",
              f);
    } else {
        fputs(" [style=invis];\n", f);
    }
    fputs("  }\n", f);
}

nb_status nb_dot_emit(const nb_picture *p, FILE *f, const nb_dot_layout *l) {
    const nb_tape *tp = p->tp;
    const nb_dot_opts *o = p->o;
    size_t hl = l->highlight;
    /* graph: the title's and the clusters' labels, in the nodes' font */
    fprintf(f, "digraph nabla {\n  rankdir=%s;\n  graph [fontname=\"Helvetica\"];\n"
               "  node [fontname=\"Helvetica\", fontsize=%d];\n"
               "  edge [fontname=\"Helvetica\", fontsize=%d];\n",
            l->rankdir ? l->rankdir : "LR", l->node_fontsize ? l->node_fontsize : 11,
            l->edge_fontsize ? l->edge_fontsize : 9);
    if (o->title && !l->no_title) {
        fputs("  labelloc=t; label=\"", f);
        put_escaped(f, o->title);
        fputs("\";\n", f);
    }
    for (size_t k = 0; k < p->n_nodes; k++) {
        const nb_tensor *t = p->nodes[k]->t;
        const double *err = nb_picture_checked(p, t);
        fprintf(f, "  t%zu [shape=box, style=\"rounded,filled\", fillcolor=\"%s\"", k,
                nb_role_colors[nb_picture_role(p, t)]);
        if (err) fprintf(f, ", color=\"%s\", penwidth=3", nb_picture_error_color(*err));
        if (l->classes) fprintf(f, ", class=\"tensor %s\"", nb_role_names[nb_picture_role(p, t)]);
        fputs(", label=\"", f);
        put_escaped(f, l->node_labels[k]);
        fputs("\"];\n", f);
    }
    for (size_t i = 0; i < p->n_entries; i++) {
        bool lit = hl == i + 1;
        fprintf(f, "  op%zu [shape=ellipse, style=filled, fillcolor=\"%s\"%s%s, label=\"", i,
                lit ? NB_HIGHLIGHT_COLOR : "#d9ead3", lit ? ", fontcolor=white, penwidth=2" : "",
                l->classes ? ", class=\"op\"" : "");
        put_escaped(f, l->op_labels[i]);
        fputs("\"];\n", f);
        for (size_t j = p->first_edge[i]; j < p->first_edge[i + 1]; j++) {
            bool grad = nb_picture_edge_has_gradient(p, j);
            fprintf(f, "  t%zu -> op%zu [", p->edges[j].node, i);
            if (!grad)
                fputs("color=\"#aaaaaa\", style=dashed, ", f);
            else if (lit)
                fputs("color=\"" NB_HIGHLIGHT_COLOR "\", penwidth=2.5, fontcolor=\"" NB_HIGHLIGHT_COLOR "\", ", f);
            if (l->classes) fputs(grad ? "class=\"grad\", " : "class=\"nograd\", ", f);
            fputs("label=\"", f);
            put_escaped(f, l->edge_labels[j]);
            fputs("\"];\n", f);
        }
        const nb_tensor *y = tp->entries[i].out;
        size_t out = p->n_nodes;
        for (size_t k = 0; k < p->n_nodes && out == p->n_nodes; k++)
            if (p->nodes[k]->t == y) out = k;
        fprintf(f, "  op%zu -> t%zu%s;\n", i, out, lit ? " [color=\"" NB_HIGHLIGHT_COLOR "\", penwidth=2.5]" : "");
    }
    if (o->clusters) put_clusters(f, p);
    if (l->legend) put_legend(f, p);
    fputs("}\n", f);
    return ferror(f) ? NB_ERR_IO : NB_OK;
}

/* The labels of a still picture, as NUL-separated texts in one buffer. */
typedef struct {
    nb_text all;
    size_t *at;     /* offsets: nodes, then ops, then edges */
    const char **labels;
} still;

static nb_status still_labels(const nb_picture *p, still *s) {
    size_t n = p->n_nodes + p->n_entries + p->n_edges;
    s->at = nb_malloc((n ? n : 1) * sizeof *s->at);
    s->labels = nb_malloc((n ? n : 1) * sizeof *s->labels);
    if (!s->at || !s->labels) return NB_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < p->n_nodes; i++, k++) {
        s->at[k] = s->all.len;
        nb_picture_node_label(p, i, NB_MOMENT_STATIC, &s->all);
        nb_text_putn(&s->all, "", 1);
    }
    for (size_t i = 0; i < p->n_entries; i++, k++) {
        s->at[k] = s->all.len;
        nb_picture_op_label(p, i, 0, &s->all);
        nb_text_putn(&s->all, "", 1);
    }
    for (size_t i = 0; i < p->n_edges; i++, k++) {
        s->at[k] = s->all.len;
        nb_picture_edge_label(p, i, NB_MOMENT_STATIC, &s->all);
        nb_text_putn(&s->all, "", 1);
    }
    if (s->all.failed) return NB_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) s->labels[i] = s->all.s + s->at[i];
    return NB_OK;
}

nb_status nb_dot_write(nb_tape *tp, FILE *f, const nb_dot_opts *opts) {
    if (!tp || !f) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dot_write: %s is NULL", tp ? "the file" : "the tape");
        return NB_ERR_NULL;
    }
    nb_dot_opts o;
    if (opts)
        o = *opts;
    else
        nb_dot_default_opts(&o);
    nb_status st = nb_picture_check_opts(&o, tp, "nb_dot_write");
    if (st != NB_OK) return st;
    nb_picture_mark mark = nb_picture_mark_tape(tp);
    nb_picture p;
    st = nb_picture_build(&p, tp, &o);
    still s = {{0}, NULL, NULL};
    if (st == NB_OK) st = still_labels(&p, &s); /* (runs the ops' describe) */
    if (st != NB_OK)
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_dot_write: out of memory");
    else
        st = nb_picture_callbacks_status(tp, mark, "nb_dot_write");
    if (st == NB_OK) {
        nb_dot_layout l = {s.labels, s.labels + p.n_nodes, s.labels + p.n_nodes + p.n_entries, o.highlight,
                           o.rankdir, true, false, 0, 0, false};
        st = nb_dot_emit(&p, f, &l);
        if (st != NB_OK) nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_dot_write: write error");
    }
    nb_picture_free(&p);
    nb_text_free(&s.all);
    nb_free(s.at);
    nb_free(s.labels);
    return st;
}

nb_status nb_dot_save(nb_tape *tp, const char *path, const nb_dot_opts *opts) {
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dot_save: the path is NULL");
        return NB_ERR_NULL;
    }
    nb_output out; /* atomic, as every writer: src/tensor/files.c */
    nb_status st = nb_output_open(&out, "nb_dot_save", path, false);
    if (st != NB_OK) return st;
    return nb_output_close(&out, nb_dot_write(tp, out.f, opts));
}
