/*
 * The recorded graph in Graphviz's dot language, for teaching.
 *
 * Tensor nodes are boxes showing name, shape, dtype, value and gradient;
 * op nodes are ellipses.  Colours give each tensor's role: input data,
 * parameter, intermediate, loss.  Ids come from tape order (t0, t1, ... in
 * order of first use; op ids are entry indices), never from pointers, so the
 * same program writes the same bytes on every run and two dumps can be diffed.
 */
#include "../internal.h"

#include <errno.h>
#include <string.h>
#include <uthash.h>

void nb_dot_default_opts(nb_dot_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->max_values = 12;
    opts->show_values = true;
    opts->show_grads = true;
}

typedef struct {
    const nb_tensor *key;
    size_t id;
    UT_hash_handle hh;
} node_id;

typedef enum { ROLE_INPUT, ROLE_PARAM, ROLE_INTERMEDIATE, ROLE_LOSS } role;

static const char *const role_names[] = {"input", "parameter", "intermediate", "loss"};
static const char *const role_colors[] = {"#cfe2f3", "#ffe599", "#f3f3f3", "#f4cccc"};

static role role_of(const nb_tensor *t, const nb_tensor *loss) {
    if (t == loss) return ROLE_LOSS;
    if (t->is_leaf) return t->requires_grad ? ROLE_PARAM : ROLE_INPUT;
    return ROLE_INTERMEDIATE;
}

/* Writes s with the characters that dot treats specially escaped. */
static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

/* "[0.9, 0.1]" in full (a matrix one row per line), or "min a  mean b
 * max c" for larger tensors. */
static void put_values(FILE *f, const nb_tensor *t, const void *values, size_t max_values) {
    if (t->size <= max_values) {
        size_t row = t->ndim >= 2 ? t->shape[t->ndim - 1] : t->size;
        for (size_t i = 0; i < t->size; i++) {
            double v = t->dtype == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i];
            if (i % row == 0) fputs(i ? "]\\n[" : "[", f);
            fprintf(f, i % row ? ", %.4g" : "%.4g", v);
        }
        fputc(']', f);
        return;
    }
    nb_stats s = nb_compute_stats(t->dtype, t->size, values);
    fprintf(f, "min %.4g  mean %.4g  max %.4g", s.min, s.mean, s.max);
    if (s.nonfinite) fprintf(f, "  (%zu not finite)", s.nonfinite);
}

static void put_tensor_node(FILE *f, size_t id, nb_tensor *t, role r, const nb_dot_opts *o) {
    char shape[128];
    nb_format_shape(t->ndim, t->shape, shape, sizeof shape);
    fprintf(f, "  t%zu [shape=box, style=\"rounded,filled\", fillcolor=\"%s\", label=\"", id,
            role_colors[r]);
    if (t->name[0])
        put_escaped(f, t->name);
    else
        fprintf(f, "t%zu", id);
    fprintf(f, "\\n%s %s", shape, t->dtype == NB_F32 ? "f32" : "f64");
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
    }
    fputs("\"];\n", f);
}

static void put_op_node(FILE *f, size_t index, const nb_entry *e) {
    fprintf(f, "  op%zu [shape=ellipse, style=filled, fillcolor=\"#d9ead3\", label=\"%s", index,
            e->op->name);
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
    fputs("\"];\n", f);
}

static void put_legend(FILE *f) {
    fputs("  subgraph cluster_legend {\n    label=\"legend\"; fontsize=10; style=dashed;\n", f);
    for (int r = 0; r <= ROLE_LOSS; r++)
        fprintf(f, "    legend_%s [shape=box, style=\"rounded,filled\", fillcolor=\"%s\", "
                   "label=\"%s\", fontsize=10];\n",
                role_names[r], role_colors[r], role_names[r]);
    fputs("    legend_op [shape=ellipse, style=filled, fillcolor=\"#d9ead3\", label=\"op\", "
          "fontsize=10];\n",
          f);
    fputs("    legend_input -> legend_parameter -> legend_intermediate -> legend_loss -> "
          "legend_op [style=invis];\n  }\n",
          f);
}

/* Looks t up, giving it the next id (and writing its node) when new. */
static nb_status node_for(FILE *f, node_id **ids, size_t *next, nb_tensor *t,
                          const nb_tensor *loss, const nb_dot_opts *o, size_t *id) {
    node_id *n;
    HASH_FIND_PTR(*ids, &t, n);
    if (n) {
        *id = n->id;
        return NB_OK;
    }
    n = nb_malloc(sizeof *n);
    if (!n) return NB_ERR_NOMEM;
    n->key = t;
    n->id = (*next)++;
    HASH_ADD_PTR(*ids, key, n);
    put_tensor_node(f, n->id, t, role_of(t, loss), o);
    *id = n->id;
    return NB_OK;
}

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
    const nb_tensor *loss = o.loss;
    if (!loss && tp->n_entries && tp->entries[tp->n_entries - 1].out->size == 1)
        loss = tp->entries[tp->n_entries - 1].out;

    fputs("digraph nabla {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n"
          "  edge [fontname=\"Helvetica\", fontsize=9];\n",
          f);
    if (o.title) {
        fputs("  labelloc=t; label=\"", f);
        put_escaped(f, o.title);
        fputs("\";\n", f);
    }
    node_id *ids = NULL;
    size_t next = 0;
    nb_status st = NB_OK;
    for (size_t i = 0; i < tp->n_entries && st == NB_OK; i++) {
        const nb_entry *e = &tp->entries[i];
        size_t in_ids[NB_MAX_INPUTS], out_id;
        for (int k = 0; k < e->n_in && st == NB_OK; k++)
            st = node_for(f, &ids, &next, e->in[k], loss, &o, &in_ids[k]);
        if (st != NB_OK) break;
        put_op_node(f, i, e);
        for (int k = 0; k < e->n_in; k++) {
            fprintf(f, "  t%zu -> op%zu", in_ids[k], i);
            if (e->n_in > 1) fprintf(f, " [label=\"%c\"]", 'a' + k);
            fputs(";\n", f);
        }
        st = node_for(f, &ids, &next, e->out, loss, &o, &out_id);
        if (st == NB_OK) fprintf(f, "  op%zu -> t%zu;\n", i, out_id);
    }
    if (st == NB_OK) put_legend(f);
    fputs("}\n", f);

    node_id *n, *tmp;
    HASH_ITER(hh, ids, n, tmp) {
        HASH_DEL(ids, n);
        nb_free(n);
    }
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
