/* nabla's differential test against PyTorch, the generator:
 *   build/tests/torch_diff SEED GRAPHS OUT.jsonl
 * writes one JSON line per random graph (tests/torch_diff.h says what a
 * graph is): the leaves' values, the steps, nabla's result y, the loss
 * L = sum(R y + S y²), dL/d leaf, a Hessian-vector product d(dL/dx · v)/dx
 * and a Jacobian-vector product J v of y; then a line per optimizer run
 * (tests/torch_diff_opt.c) and per refusal check.  tests/torch_diff.py
 * rebuilds each in torch and compares.  Half the graphs are float32. */
#include "torch_diff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int td_optimizers(FILE *out, uint64_t seed, int runs);
int td_refusals(FILE *out);

int td_int(td_graph *g, int lo, int hi) { return lo + (int)(nb_rng_next(g->rng) % (uint64_t)(hi - lo + 1)); }
double td_unif(td_graph *g, double lo, double hi) { return lo + (hi - lo) * nb_rng_uniform(g->rng); }
bool td_chance(td_graph *g, double p) { return nb_rng_uniform(g->rng) < p; }

static void append(char *buf, size_t cap, size_t *len, const char *fmt, va_list ap) {
    if (*len >= cap) return;
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    if (n > 0) *len += (size_t)n < cap - *len ? (size_t)n : cap - *len;
}

static void steps_printf(td_graph *g, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append(g->steps, sizeof g->steps, &g->steps_len, fmt, ap);
    va_end(ap);
}

void td_extra(td_graph *g, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append(g->extra, sizeof g->extra, &g->extra_len, fmt, ap);
    va_end(ap);
}

/* JSON numbers, with Python's NaN and Infinity; float32 values need 9
 * digits and float64 17 to be read back exactly. */
static void num(FILE *f, double v, nb_dtype dt) {
    if (isnan(v)) fputs("NaN", f);
    else if (isinf(v)) fputs(v > 0 ? "Infinity" : "-Infinity", f);
    else fprintf(f, dt == NB_F32 ? "%.9g" : "%.17g", v);
}

static void write_values(FILE *f, const nb_tensor *t) {
    size_t n = nb_tensor_size(t);
    double *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return;
    nb_to_f64(t, v);
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', f);
        num(f, v[i], nb_tensor_dtype(t));
    }
    fputc(']', f);
    free(v);
}

static void write_shape(FILE *f, const nb_tensor *t) {
    fputc('[', f);
    for (int d = 0; d < nb_tensor_ndim(t); d++) fprintf(f, d ? ",%zu" : "%zu", nb_tensor_dim(t, d));
    fputc(']', f);
}

/* {"shape": [...], "data": [...]} */
static void write_tensor(FILE *f, const nb_tensor *t) {
    fputs("{\"shape\":", f);
    write_shape(f, t);
    fputs(",\"data\":", f);
    write_values(f, t);
    fputc('}', f);
}

void td_extra_tensor(td_graph *g, const char *key, const nb_tensor *t) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return;
    write_tensor(m, t);
    fclose(m);
    td_extra(g, ",\"%s\":%s", key, buf);
    free(buf);
}

static double draw(td_graph *g, td_kind kind) {
    switch (kind) {
    case TD_NORMAL: return nb_rng_normal(g->rng);
    case TD_AWAY: return (td_chance(g, 0.5) ? -1 : 1) * td_unif(g, 0.2, 2);
    case TD_POSITIVE: return td_unif(g, 0.2, 2);
    case TD_PROB: return td_unif(g, 0.05, 0.95);
    case TD_UNIT: return td_unif(g, 0, 1);
    }
    return 0;
}

int td_leaf_values(td_graph *g, int ndim, const size_t *shape, const double *v, bool grad) {
    if (g->n_val >= TD_MAX_VALS) {
        g->failed = true;
        snprintf(g->error, sizeof g->error, "generator: too many values");
        return -1;
    }
    nb_tensor *t = nb_from_array(g->tp, g->dt, ndim, shape, v);
    if (nb_tensor_status(t) != NB_OK) {
        g->failed = true;
        snprintf(g->error, sizeof g->error, "leaf: %s", nb_last_error());
        return -1;
    }
    if (grad) nb_requires_grad(t, true);
    g->val[g->n_val] = t;
    g->leaf[g->n_val] = true;
    g->grad[g->n_val] = grad;
    return g->n_val++;
}

int td_leaf(td_graph *g, int ndim, const size_t *shape, td_kind kind, bool grad) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    double *v = malloc(n * sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < n; i++) v[i] = draw(g, kind);
    int k = td_leaf_values(g, ndim, shape, v, grad);
    free(v);
    return k;
}

int td_shape(td_graph *g, int lo, int hi, size_t *shape) {
    int nd = td_int(g, lo, hi);
    for (int d = 0; d < nd; d++) shape[d] = td_chance(g, 0.25) ? 1 : (size_t)td_int(g, 1, 4);
    return nd;
}

int td_step(td_graph *g, nb_tensor *t, const char *op, int n_args, const int *args, const char *fmt, ...) {
    if (g->failed) return -1;
    if (!t || nb_tensor_status(t) != NB_OK) {
        g->failed = true;
        snprintf(g->error, sizeof g->error, "%s refused: %s", op, nb_last_error());
        return -1;
    }
    if (g->n_val >= TD_MAX_VALS) {
        g->failed = true;
        snprintf(g->error, sizeof g->error, "generator: too many values");
        return -1;
    }
    steps_printf(g, "%s{\"op\":\"%s\",\"a\":[", g->n_steps ? "," : "", op);
    for (int i = 0; i < n_args; i++) steps_printf(g, i ? ",%d" : "%d", args[i]);
    steps_printf(g, "]");
    va_list ap;
    va_start(ap, fmt);
    append(g->steps, sizeof g->steps, &g->steps_len, fmt, ap);
    va_end(ap);
    steps_printf(g, "}");
    g->n_steps++;
    g->val[g->n_val] = t;
    g->leaf[g->n_val] = false;
    g->grad[g->n_val] = false;
    return g->n_val++;
}

double td_min(const nb_tensor *t) {
    double m = INFINITY;
    for (size_t i = 0; i < nb_tensor_size(t); i++) m = fmin(m, nb_get(t, i));
    return m;
}

double td_maxabs(const nb_tensor *t) {
    double m = 0;
    for (size_t i = 0; i < nb_tensor_size(t); i++) {
        double v = nb_get(t, i);
        m = isnan(v) ? INFINITY : fmax(m, fabs(v));
    }
    return m;
}

int td_bounded(td_graph *g, int x, double b) {
    if (x < 0 || td_maxabs(g->val[x]) <= b) return x;
    int t = td_step(g, nb_tanh(g->tp, g->val[x]), "tanh", 1, &x, "%s", "");
    if (t < 0) return -1;
    return td_step(g, nb_scale(g->tp, g->val[t], b), "scale", 1, &t, ",\"s\":%.17g", b);
}

int td_need(td_graph *g, int x, td_kind kind) {
    if (x < 0) {
        size_t shape[NB_MAX_DIMS];
        int nd = td_shape(g, 0, 4, shape);
        return td_leaf(g, nd, shape, kind, true);
    }
    if (kind == TD_NORMAL) return td_bounded(g, x, 6);
    double lo = kind == TD_POSITIVE ? 0.2 : kind == TD_PROB ? 0.05 : 0;
    if (kind == TD_AWAY) return td_bounded(g, x, 6); /* computed values: no control over kinks */
    if (td_min(g->val[x]) >= lo && (kind == TD_POSITIVE || td_maxabs(g->val[x]) <= 1 - lo)) return td_bounded(g, x, 6);
    if (kind == TD_POSITIVE) {
        x = td_bounded(g, x, 6);
        if (x < 0) return -1;
        int s = td_step(g, nb_softplus(g->tp, g->val[x]), "softplus", 1, &x, "%s", "");
        if (s < 0) return -1;
        return td_step(g, nb_add_scalar(g->tp, g->val[s], 0.2), "add_scalar", 1, &s, ",\"s\":0.2");
    }
    x = td_bounded(g, x, 2.5); /* a probability: sigmoid of a bounded value */
    if (x < 0) return -1;
    return td_step(g, nb_sigmoid(g->tp, g->val[x]), "sigmoid", 1, &x, "%s", "");
}

/* One graph: a first step (an op with leaves of its own, or any op on a
 * fresh leaf) and up to two more on its result. */
static void build(td_graph *g) {
    int x = -1, steps = td_int(g, 1, 3);
    static int (*const chain[])(td_graph *, int) = {td_unary,    td_binary, td_reduce, td_shapes,
                                                   td_indexing, td_norms,  td_losses};
    static int (*const source[])(td_graph *) = {td_matmul,    td_conv,  td_pool,           td_batch_norm,
                                                td_attention, td_heads, td_conv_transpose, td_upsample};
    for (int s = 0; s < steps && !g->failed && !g->no_grad; s++) {
        if (s == 0 && td_chance(g, 0.35)) x = source[td_int(g, 0, 7)](g);
        else x = chain[td_int(g, 0, 6)](g, x);
        if (x < 0) return;
    }
    g->y = x;
    if (!g->failed && td_chance(g, 0.1)) { /* a leaf the loss never reaches */
        size_t shape[NB_MAX_DIMS];
        int nd = td_shape(g, 0, 2, shape);
        td_leaf(g, nd, shape, TD_NORMAL, true);
    }
}

static nb_tensor *random_like(td_graph *g, const nb_tensor *t) {
    return nb_rand_normal(g->tp, g->rng, g->dt, nb_tensor_ndim(t), nb_tensor_shape(t), 0, 1);
}

/* The derivatives of the graph's result y: writes "loss", "grads", "v",
 * "hvp", "t" and "jvp".  mode 0: nb_grad with create_graph, then nb_grad
 * of sum(g · v); mode 1: nb_backward for the gradient, nb_hvp; mode 2: as
 * 1 with the products asked for in a no-grad region. */
static void derivatives(td_graph *g, FILE *f, nb_tensor *y, int mode) {
    nb_tape *tp = g->tp;
    nb_tensor *wrt[TD_MAX_VALS], *gr[TD_MAX_VALS], *v[TD_MAX_VALS], *hv[TD_MAX_VALS], *tan[TD_MAX_VALS];
    int n = 0;
    for (int i = 0; i < g->n_val; i++)
        if (g->grad[i]) wrt[n++] = g->val[i];
    nb_tensor *R = random_like(g, y), *S = random_like(g, y);
    fputs(",\"R\":", f);
    write_values(f, R);
    fputs(",\"S\":", f);
    write_values(f, S);
    nb_tensor *loss = nb_sum(tp, nb_add(tp, nb_mul(tp, R, y), nb_mul(tp, S, nb_square(tp, y))));
    fputs(",\"loss\":", f);
    num(f, nb_item(loss), g->dt);
    fprintf(f, ",\"mode\":%d", mode);
    if (n == 0 || g->no_grad) return;
    for (int i = 0; i < n; i++) {
        v[i] = random_like(g, wrt[i]);
        tan[i] = random_like(g, wrt[i]);
    }
    nb_status st;
    if (mode == 0) {
        st = nb_grad(loss, wrt, n, gr, true);
        nb_tensor *dot = NULL;
        for (int i = 0; i < n && st == NB_OK; i++) {
            nb_tensor *term = nb_sum(tp, nb_mul(tp, gr[i], v[i]));
            dot = dot ? nb_add(tp, dot, term) : term;
        }
        if (st == NB_OK) st = nb_grad(dot, wrt, n, hv, false);
    } else {
        for (int i = 0; i < n; i++) nb_zero_grad(wrt[i]);
        st = nb_backward(loss);
        for (int i = 0; i < n; i++) {
            gr[i] = nb_zeros(tp, g->dt, nb_tensor_ndim(wrt[i]), nb_tensor_shape(wrt[i]));
            for (size_t k = 0; k < nb_tensor_size(wrt[i]); k++) nb_set(gr[i], k, nb_grad_get(wrt[i], k));
        }
        bool prev = mode == 2 ? nb_tape_set_grad_enabled(tp, false) : true;
        if (st == NB_OK) st = nb_hvp(loss, wrt, n, v, hv);
        if (mode == 2) nb_tape_set_grad_enabled(tp, prev);
    }
    if (st != NB_OK) {
        fprintf(f, ",\"deriv_error\":\"%s\"", nb_status_string(st));
        return;
    }
    fputs(",\"grads\":[", f);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', f);
        write_values(f, gr[i]);
    }
    fputs("],\"v\":[", f);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', f);
        write_values(f, v[i]);
    }
    fputs("],\"hvp\":[", f);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', f);
        write_values(f, hv[i]);
    }
    fputc(']', f);
    nb_tensor *jv = NULL;
    bool prev = mode == 2 ? nb_tape_set_grad_enabled(tp, false) : true;
    st = nb_jvp(y, wrt, n, tan, &jv);
    if (mode == 2) nb_tape_set_grad_enabled(tp, prev);
    if (st != NB_OK) {
        fprintf(f, ",\"jvp_error\":\"%s: %s\"", nb_status_string(st), nb_last_error());
        return;
    }
    fputs(",\"t\":[", f);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', f);
        write_values(f, tan[i]);
    }
    fputs("],\"jvp\":", f);
    write_values(f, jv);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void one_graph(FILE *f, int index, uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed * 1000003u + (uint64_t)index);
    td_graph *g = calloc(1, sizeof *g);
    if (!g) return;
    g->tp = nb_tape_new();
    g->rng = &rng;
    g->dt = index % 2 ? NB_F32 : NB_F64;
    build(g);
    fprintf(f, "{\"kind\":\"graph\",\"g\":%d,\"seed\":%llu,\"dtype\":\"%s\",\"steps\":[%s]", index,
            (unsigned long long)seed, g->dt == NB_F32 ? "float32" : "float64", g->steps);
    if (g->failed) {
        fputs(",\"error\":", f);
        json_string(f, g->error);
    } else {
        fputs(",\"leaves\":[", f);
        int k = 0;
        for (int i = 0; i < g->n_val; i++) {
            if (!g->leaf[i]) continue;
            fprintf(f, "%s{\"id\":%d,\"grad\":%s,\"value\":", k++ ? "," : "", i, g->grad[i] ? "true" : "false");
            write_tensor(f, g->val[i]);
            fputc('}', f);
        }
        bool y_leaf = false; /* an op that returned its input itself */
        for (int i = 0; i < g->n_val; i++) y_leaf = y_leaf || (g->leaf[i] && g->val[i] == g->val[g->y]);
        fprintf(f, "],\"y_id\":%d,\"y_is_leaf\":%s,\"y\":", g->y, y_leaf ? "true" : "false");
        nb_tensor *y = g->val[g->y];
        write_tensor(f, y);
        fprintf(f, "%s", g->extra);
        for (int h = 0; h < g->n_heap; h++) {
            fprintf(f, ",\"heap%d\":", h);
            write_tensor(f, g->heap[h]);
        }
        derivatives(g, f, y, index / 2 % 3);
    }
    fputs("}\n", f);
    for (int h = 0; h < g->n_heap; h++) nb_tensor_free(g->heap[h]);
    nb_tape_free(g->tp);
    free(g);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SEED GRAPHS OUT.jsonl\n", argv[0]);
        return 2;
    }
    uint64_t seed = strtoull(argv[1], NULL, 10);
    int graphs = atoi(argv[2]);
    FILE *f = fopen(argv[3], "w");
    if (!f) {
        perror(argv[3]);
        return 2;
    }
    for (int i = 0; i < graphs; i++) one_graph(f, i, seed);
    int bad = td_optimizers(f, seed, graphs / 20 + 10);
    bad += td_refusals(f);
    if (fclose(f) != 0) {
        perror(argv[3]);
        return 2;
    }
    return bad ? 1 : 0;
}
