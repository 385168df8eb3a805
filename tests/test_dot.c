/* Graphviz export: content, determinism, and Graphviz accepting the files. */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { nb_tensor *W, *b; } model;

/* A two-layer network on fixed data, recorded on tp; returns the loss. */
static nb_tensor *build(nb_tape *tp, model *m) {
    nb_tensor *X = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_tensor_set_name(X, "X");
    nb_tensor *y = nb_from_array(tp, NB_F64, NB_SHAPE(2, 1), ((double[]){0, 1}));
    nb_tensor_set_name(y, "y \"label\"");
    nb_tensor *z = nb_add(tp, nb_matmul(tp, X, m->W), m->b);
    nb_tensor_set_name(z, "Z[1]");
    nb_tensor *loss = nb_bce_logits(tp, z, y);
    nb_tensor_set_name(loss, "loss");
    return loss;
}

static model make_model(void) {
    model m = {nb_from_array(NULL, NB_F64, NB_SHAPE(3, 1), ((double[]){0.1, -0.2, 0.3})),
               nb_full(NULL, NB_F64, NB_SHAPE(1), 0.5)};
    nb_tensor_set_name(m.W, "W[1]");
    nb_tensor_set_name(m.b, "b[1]");
    nb_requires_grad(m.W, true);
    nb_requires_grad(m.b, true);
    return m;
}

static char *dot_of(nb_tape *tp, const nb_dot_opts *opts) {
    /* The stream's buffer pointer lives outside this frame: GCC 12 at -O3
     * otherwise warns that the result may dangle into a local. */
    static char *buf;
    static size_t len;
    buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(nb_dot_write(tp, f, opts), NB_OK);
    fclose(f);
    return buf;
}

static void test_dot_content(void **state) {
    (void)state;
    model m = make_model();
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = build(tp, &m);
    char *before = dot_of(tp, NULL);
    assert_message_has(before, "digraph nabla", "W[1]\\n(3, 1) f64", "value [0.1]\\n[-0.2]\\n[0.3]", "value [1, 2, 3]\\n[4, 5, 6]",
                       "grad not computed", "y \\\"label\\\"", "matmul", "bce_logits",
                       "legend", "parameter", "#ffe599", "#f4cccc",
                       "t0 -> op0 [label=\"a: ∂L/∂a = G · op(B)ᵀ\"]", "op0 -> t2");
    /* Data needs no gradient, and says so. */
    assert_message_has(before, "none (no gradient needed)");
    assert_int_equal(nb_backward(loss), NB_OK);
    char *after = dot_of(tp, NULL);
    /* Every parameter and intermediate now shows numbers for its gradient. */
    assert_null(strstr(after, "not computed"));
    char *w_line = strstr(after, "label=\"W[1]");
    assert_non_null(w_line);
    *strchr(w_line, '\n') = '\0';
    assert_message_has(w_line, "grad [");
    free(before);
    free(after);
    /* Large tensors are summarised. */
    nb_tape_reset(tp);
    nb_tensor *big = nb_zeros(tp, NB_F32, NB_SHAPE(10, 10));
    nb_sigmoid(tp, big);
    char *summary = dot_of(tp, NULL);
    assert_message_has(summary, "(10, 10) f32", "min 0  mean 0  max 0", "min 0.5  mean 0.5");
    free(summary);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

/* The chain rule on the edges, for a scalar example worked by hand:
 *   y = sigmoid(w * x) + w,  w = 0.5, x = 2:  z = 1, s = sigmoid(1) = 0.7311
 *   edge w -> mul:     ∂z/∂w = x = 2;    upstream ∂y/∂z = s(1-s) = 0.1966;  adds 0.3932
 *   edge z -> sigmoid: ∂s/∂z = s(1 - s); upstream 1: 1 × 0.1966 = 0.1966
 *   edge w -> add:     ∂y/∂w = 1:        1 × 1 = 1
 *   w feeds two ops, so its gradient is 0.3932 + 1 = 1.393. */
static void test_chain_rule_on_edges(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tape_set_explain(tp, true);
    nb_tensor *w = nb_scalar(NULL, NB_F64, 0.5), *x = nb_scalar(tp, NB_F64, 2);
    nb_tensor_set_name(w, "w");
    nb_requires_grad(w, true);
    nb_tensor *z = nb_mul(tp, w, x);
    nb_tensor *y = nb_add(tp, nb_sigmoid(tp, z), w);
    assert_int_equal(nb_backward(y), NB_OK);
    char *dot = dot_of(tp, NULL);
    assert_message_has(dot, "t0 -> op0 [label=\"a: ∂y/∂a = b\\n0.1966 × 2 = 0.3932",
                       "∂y/∂x = σ(x)(1-σ(x))\\n1 × 0.1966 = 0.1966",
                       "b: ∂y/∂b = 1\\n1 × 1 = 1",
                       "grad [1.393]\\n= 0.3932 + 1 (two uses)");
    free(dot);
    /* Matrices: the contribution is summarised, and a matmul edge names its product. */
    nb_tape_reset(tp);
    nb_tensor *W = nb_ones(NULL, NB_F64, NB_SHAPE(2, 2)), *X = nb_ones(tp, NB_F64, NB_SHAPE(2, 3));
    nb_requires_grad(W, true);
    nb_backward(nb_sum(tp, nb_matmul(tp, W, X)));
    dot = dot_of(tp, NULL);
    /* d sum(W X)/dW = 1 · Xᵀ = 3 everywhere */
    assert_message_has(dot, "a: ∂L/∂a = G · op(B)ᵀ\\nadds [3, 3]\\n[3, 3]", "∂L/∂x = G spread over x");
    free(dot);
    /* Without explain mode, formulas only. */
    nb_tape_set_explain(tp, false);
    nb_zero_grad(W);
    nb_backward(nb_sum(tp, nb_matmul(tp, W, X)));
    dot = dot_of(tp, NULL);
    assert_null(strstr(dot, "adds"));
    free(dot);
    nb_tensor_free(W);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

/* Course notation, scopes as clusters, the gradcheck overlay and a
 * highlighted entry. */
static void test_layers_overlay_and_highlight(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *W1 = nb_ones(NULL, NB_F64, NB_SHAPE(4, 3)), *b1 = nb_zeros(NULL, NB_F64, NB_SHAPE(4, 1));
    nb_tensor_set_name(W1, "W[1]");
    nb_tensor_set_name(b1, "b[1]");
    nb_requires_grad(W1, true);
    nb_requires_grad(b1, true);
    nb_tensor *X = nb_ones(tp, NB_F64, NB_SHAPE(3, 5));
    nb_scope_begin(tp, "layer 1");
    nb_tensor *Z = nb_add(tp, nb_matmul(tp, W1, X), b1);
    nb_tensor_set_name(Z, "Z[1]");
    nb_scope_begin(tp, "activation");
    nb_tensor *A = nb_sigmoid(tp, Z);
    nb_scope_end(tp);
    nb_scope_end(tp);
    nb_tensor *loss = nb_mean(tp, A);
    nb_backward(loss);
    const nb_dot_symbol symbols[] = {{3, "n[0]"}, {4, "n[1]"}, {5, "m"}};
    nb_tensor *checked[2] = {W1, b1};
    const double errors[2] = {3e-9, 0.02};
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.clusters = true;
    o.symbols = symbols;
    o.n_symbols = 3;
    o.checked = checked;
    o.checked_errors = errors;
    o.n_checked = 2;
    o.highlight = 2; /* entry 1: the add */
    char *dot = dot_of(tp, &o);
    assert_message_has(dot, "W[1]\\n(n[1], n[0]) f64", "Z[1]\\n(n[1], m) f64",
                       "subgraph cluster_scope0 {\n    label=\"layer 1\"",
                       "subgraph cluster_scope1 {\n    label=\"activation\"",
                       "fillcolor=\"#b6d7a8\", label=\"W[1]", "gradcheck: worst rel. error 3e-09",
                       "fillcolor=\"#ea9999\", label=\"b[1]", "gradcheck: worst rel. error 0.02",
                       "op1 [shape=ellipse, style=filled, fillcolor=\"#e06666\", penwidth=3");
    /* The activation cluster nests inside the layer's. */
    char *outer = strstr(dot, "cluster_scope0"), *inner = strstr(dot, "cluster_scope1");
    assert_true(outer && inner && inner > outer);
    assert_null(strstr(inner, "  }\n  subgraph cluster_scope") );
    free(dot);
    FILE *f = fopen("/tmp/nabla-layers.dot", "w");
    nb_dot_write(tp, f, &o);
    fclose(f);
    assert_int_equal(system("dot -Tsvg /tmp/nabla-layers.dot -o /dev/null"), 0);
    unlink("/tmp/nabla-layers.dot");
    nb_tensor_free(W1);
    nb_tensor_free(b1);
    nb_tape_free(tp);
}

/* Step-by-step frames: one before backward and one per processed entry,
 * each highlighting its entry, each accepted by Graphviz. */
static void test_backward_frames(void **state) {
    (void)state;
    char dir[] = "/tmp/nabla-frames-XXXXXX";
    assert_non_null(mkdtemp(dir));
    model m = make_model();
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = build(tp, &m);
    size_t n = 0;
    assert_int_equal(nb_backward_frames(loss, dir, NULL, &n), NB_OK);
    /* entries: matmul, add, bce_logits; all lead to the parameters */
    assert_int_equal(n, 1 + 3);
    assert_false(nb_tape_status(tp));
    /* the parameters keep the gradients they had: none */
    assert_false(nb_has_grad(m.b));
    char path[128], cmd[256];
    const char *expect[4] = {NULL, "op2 [shape=ellipse, style=filled, fillcolor=\"#e06666\"",
                             "op1 [shape=ellipse, style=filled, fillcolor=\"#e06666\"",
                             "op0 [shape=ellipse, style=filled, fillcolor=\"#e06666\""};
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/frame_%03zu.dot", dir, i);
        snprintf(cmd, sizeof cmd, "dot -Tsvg %s -o /dev/null", path);
        assert_int_equal(system(cmd), 0);
        FILE *f = fopen(path, "r");
        char buf[16384] = {0};
        assert_true(fread(buf, 1, sizeof buf - 1, f) > 0);
        fclose(f);
        if (expect[i])
            assert_message_has(buf, expect[i]);
        else
            assert_null(strstr(buf, "#e06666")); /* nothing highlighted yet */
        if (i == 1) assert_message_has(buf, "W[1]", "grad not computed"); /* not reached yet */
        if (i == 3) assert_null(strstr(buf, "not computed"));
        unlink(path);
    }
    rmdir(dir);
    assert_int_equal(nb_backward_frames(NULL, dir, NULL, NULL), NB_ERR_STATE);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

/* Filming a pass after nb_backward adds nothing twice: the parameters keep
 * the gradients nb_backward gave them, and the last frame shows this one
 * pass's gradient, dL/db = mean(sigmoid(z) - y), not twice it. */
static void test_frames_after_backward_do_not_double(void **state) {
    (void)state;
    char dir[] = "/tmp/nabla-frames-XXXXXX";
    assert_non_null(mkdtemp(dir));
    model m = make_model();
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = build(tp, &m);
    assert_int_equal(nb_backward(loss), NB_OK);
    /* z = X W + b = (0.6 + 0.5, 1.2 + 0.5) = (1.1, 1.7); y = (0, 1) */
    double db = ((1 / (1 + exp(-1.1)) - 0) + (1 / (1 + exp(-1.7)) - 1)) / 2;
    assert_close(nb_grad_get(m.b, 0), db, 1e-12);
    size_t n = 0;
    assert_int_equal(nb_backward_frames(loss, dir, NULL, &n), NB_OK);
    assert_close(nb_grad_get(m.b, 0), db, 1e-12);
    char path[128], expect[64];
    snprintf(path, sizeof path, "%s/frame_%03zu.dot", dir, n - 1);
    FILE *f = fopen(path, "r");
    char buf[16384] = {0};
    assert_true(fread(buf, 1, sizeof buf - 1, f) > 0);
    fclose(f);
    snprintf(expect, sizeof expect, "grad [%.4g]", db);
    assert_message_has(buf, expect);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/frame_%03zu.dot", dir, i);
        unlink(path);
    }
    rmdir(dir);
    /* and the page */
    char page[] = "/tmp/nabla-page-XXXXXX";
    int fd = mkstemp(page);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(nb_backward_html(loss, page, "t", NULL), NB_OK);
    assert_close(nb_grad_get(m.b, 0), db, 1e-12);
    unlink(page);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

/* Long names are cut at a character boundary: the .dot stays valid UTF-8
 * (a scope name was cut in the middle of a character at 31 bytes). */
static bool valid_utf8(const unsigned char *s) {
    while (*s) {
        int extra = *s < 0x80 ? 0 : (*s & 0xE0) == 0xC0 ? 1 : (*s & 0xF0) == 0xE0 ? 2 : (*s & 0xF8) == 0xF0 ? 3 : -1;
        if (extra < 0) return false;
        s++;
        for (int k = 0; k < extra; k++, s++)
            if ((*s & 0xC0) != 0x80) return false;
    }
    return true;
}

static void test_long_names_are_cut_between_characters(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* "∂" is 3 bytes: 11 of them are 33 bytes, over the 31 a name holds */
    const char *long_name = "∂∂∂∂∂∂∂∂∂∂∂";
    nb_scope_begin(tp, long_name);
    nb_tensor *x = nb_ones(tp, NB_F64, NB_SHAPE(2));
    nb_tensor_set_name(x, long_name);
    nb_tensor *y = nb_sum(tp, nb_exp(tp, x));
    nb_scope_end(tp);
    nb_tensor_set_name(y, long_name);
    assert_int_equal(strlen(nb_tensor_name(x)), 30); /* 10 whole characters */
    nb_dot_opts opts;
    nb_dot_default_opts(&opts);
    opts.clusters = true;
    char *dot = dot_of(tp, &opts);
    assert_true(valid_utf8((const unsigned char *)dot));
    assert_message_has(dot, "∂∂∂∂∂∂∂∂∂∂\"");
    free(dot);
    nb_tape_free(tp);
}

/* Ids come from tape order, not addresses: two runs write the same bytes. */
static void test_dot_is_deterministic(void **state) {
    (void)state;
    char *out[2];
    for (int run = 0; run < 2; run++) {
        model m = make_model();
        nb_tape *tp = nb_tape_new();
        if (run) { /* shift every address the second time */
            nb_zeros(tp, NB_F64, NB_SHAPE(1000));
        }
        nb_tape_reset(tp);
        void *spacer = malloc(777);
        nb_tensor *loss = build(tp, &m);
        assert_int_equal(nb_backward(loss), NB_OK);
        out[run] = dot_of(tp, NULL);
        free(spacer);
        nb_tape_free(tp);
        nb_tensor_free(m.W);
        nb_tensor_free(m.b);
    }
    assert_string_equal(out[0], out[1]);
    free(out[0]);
    free(out[1]);
}

/* `dot` accepts what we write, and nb_dot_render produces SVG and PNG. */
static void test_graphviz_accepts_the_file(void **state) {
    (void)state;
    char dir[] = "/tmp/nabla-dot-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char dot_path[64], svg_path[64], png_path[64], cmd[256];
    snprintf(dot_path, sizeof dot_path, "%s/g.dot", dir);
    snprintf(svg_path, sizeof svg_path, "%s/g.svg", dir);
    snprintf(png_path, sizeof png_path, "%s/g.png", dir);
    model m = make_model();
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = build(tp, &m);
    assert_int_equal(nb_backward(loss), NB_OK);
    nb_dot_opts opts;
    nb_dot_default_opts(&opts);
    opts.title = "two \"layers\"";
    assert_int_equal(nb_dot_save(tp, dot_path, &opts), NB_OK);
    snprintf(cmd, sizeof cmd, "dot -Tsvg %s -o /dev/null 2>&1", dot_path);
    assert_int_equal(system(cmd), 0);

    assert_int_equal(nb_dot_render(dot_path, svg_path, "svg"), NB_OK);
    assert_int_equal(nb_dot_render(dot_path, png_path, "png"), NB_OK);
    char head[512] = {0};
    FILE *f = fopen(svg_path, "r");
    assert_non_null(f);
    assert_true(fread(head, 1, sizeof head - 1, f) > 0);
    fclose(f);
    assert_message_has(head, "<svg");
    unsigned char magic[4] = {0};
    f = fopen(png_path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(magic, 1, 4, f), 4);
    fclose(f);
    assert_memory_equal(magic, "\x89PNG", 4);

    /* Errors name the file. */
    assert_int_equal(nb_dot_render("/nonexistent/g.dot", svg_path, "svg"), NB_ERR_IO);
    assert_message_has(nb_last_error(), "/nonexistent/g.dot");
    assert_int_equal(nb_dot_save(tp, "/nonexistent/dir/g.dot", NULL), NB_ERR_IO);
    assert_message_has(nb_last_error(), "/nonexistent/dir/g.dot");
    snprintf(cmd, sizeof cmd, "%s/bad.dot", dir);
    f = fopen(cmd, "w");
    fputs("this is not { a graph", f);
    fclose(f);
    assert_int_not_equal(nb_dot_render(cmd, svg_path, "svg"), NB_OK);

    unlink(dot_path);
    unlink(svg_path);
    unlink(png_path);
    unlink(cmd);
    rmdir(dir);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_content),
        cmocka_unit_test(test_chain_rule_on_edges),
        cmocka_unit_test(test_layers_overlay_and_highlight),
        cmocka_unit_test(test_backward_frames),
        cmocka_unit_test(test_frames_after_backward_do_not_double),
        cmocka_unit_test(test_long_names_are_cut_between_characters),
        cmocka_unit_test(test_dot_is_deterministic),
        cmocka_unit_test(test_graphviz_accepts_the_file),
    };
    return cmocka_run_group_tests_name("dot", tests, NULL, NULL);
}
