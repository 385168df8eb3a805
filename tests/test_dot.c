/* Graphviz export: content, determinism, and Graphviz accepting the files. */
#include "support.h"

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
    char *buf = NULL;
    size_t len = 0;
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
                       "legend", "parameter", "#ffe599", "#f4cccc", "t0 -> op0 [label=\"a\"]",
                       "op0 -> t2");
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
        cmocka_unit_test(test_dot_is_deterministic),
        cmocka_unit_test(test_graphviz_accepts_the_file),
    };
    return cmocka_run_group_tests_name("dot", tests, NULL, NULL);
}
