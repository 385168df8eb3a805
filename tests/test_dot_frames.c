/* Graphviz export, step by step: the backward frames (nb_backward_frames)
 * and what each shows. */
#include "support.h"
#include "dot_support.h"
#include "nabla_op.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The text of frame i in dir (the caller frees it). */
static char *read_frame(const char *dir, size_t i) {
    char path[128];
    snprintf(path, sizeof path, "%s/frame_%03zu.dot", dir, i);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    assert_true(fread(buf, 1, 65535, f) > 0);
    fclose(f);
    return buf;
}

static void remove_frames(const char *dir, size_t n) {
    char path[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/frame_%03zu.dot", dir, i);
        unlink(path);
    }
    rmdir(dir);
}

/* Step-by-step frames: one before backward and one per processed entry,
 * each highlighting its entry, each accepted by Graphviz; every number is
 * from the moment the frame shows. */
static void test_backward_frames(void **state) {
    (void)state;
    char dir[] = "/tmp/nabla-frames-XXXXXX";
    assert_non_null(mkdtemp(dir));
    model m = make_model();
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = build(tp, &m);
    /* A backward pass in explain mode first, as a lesson that trains before
     * it draws: its numbers must not leak into frame 0. */
    nb_tape_set_explain(tp, true);
    assert_int_equal(nb_backward(loss), NB_OK);
    nb_zero_grad(m.W);
    nb_zero_grad(m.b);
    size_t n = 0;
    assert_int_equal(nb_backward_frames(loss, dir, NULL, &n), NB_OK);
    /* entries: matmul, add, bce_logits; all lead to the parameters */
    assert_int_equal(n, 1 + 3);
    assert_false(nb_tape_status(tp));
    char cmd[256];
    const char *expect[4] = {NULL, "op2 [shape=ellipse, style=filled, fillcolor=\"#3c78d8\"",
                             "op1 [shape=ellipse, style=filled, fillcolor=\"#3c78d8\"",
                             "op0 [shape=ellipse, style=filled, fillcolor=\"#3c78d8\""};
    for (size_t i = 0; i < n; i++) {
        snprintf(cmd, sizeof cmd, "dot -Tsvg %s/frame_%03zu.dot -o /dev/null", dir, i);
        assert_int_equal(system(cmd), 0);
        char *buf = read_frame(dir, i);
        if (expect[i])
            assert_message_has(buf, expect[i]);
        else
            assert_null(strstr(buf, "#3c78d8")); /* nothing highlighted yet */
        /* the ops are numbered in backward order */
        assert_message_has(buf, "label=\"bce_logits\\nbackward step 1\"", "label=\"matmul\\nbackward step 3\"");
        char *w = node_label(buf, "W[1]"), *b = node_label(buf, "b[1]"), *z = node_label(buf, "Z[1]");
        char *loss_node = node_label(buf, "loss");
        if (i == 0) {
            /* The forward pass: no gradient anywhere, on nodes or edges. */
            assert_null(strstr(buf, "grad ["));
            for (const char *line = buf; line; line = strchr(line + 1, '\n')) {
                if (!strstr(line, " -> op") || strstr(line, " -> op") > strchr(line + 1, '\n')) continue;
                char *edge = strndup(line, strcspn(line + 1, "\n") + 1);
                assert_null(strstr(edge, " × "));
                assert_null(strstr(edge, "\\n= ["));
                free(edge);
            }
            assert_message_has(z, "grad: not yet");
            assert_message_has(loss_node, "grad: not yet");
        }
        if (i == 1) {
            assert_message_has(loss_node, "grad 1 (∂loss/∂loss = 1)");
            assert_message_has(w, "grad: not yet"); /* not reached yet */
            assert_message_has(z, "grad [");
        }
        if (i == 3) assert_null(strstr(buf, "not yet"));
        /* The same number of lines in every frame, so one layout fits all. */
        static size_t w_lines;
        size_t lines = count_of(w, "\\n");
        if (i == 0) w_lines = lines;
        assert_int_equal(lines, w_lines);
        free(w);
        free(b);
        free(z);
        free(loss_node);
        free(buf);
    }
    remove_frames(dir, n);
    assert_int_equal(nb_backward_frames(NULL, dir, NULL, NULL), NB_ERR_STATE);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

/* A tensor used twice shows its partial gradient after the first use's
 * backward and the sum after the second:
 *   E = sum(u * 3 + exp(u)), u = 0.5 (one element):
 *   the add runs first: both uses wait on it, then exp gives e^0.5 = 1.649
 *   (partial: 1 of 2 uses), then the scale gives 3: 4.649 = 3 + 1.649. */
static void test_frames_mark_partial_and_final(void **state) {
    (void)state;
    char dir[] = "/tmp/nabla-frames-XXXXXX";
    assert_non_null(mkdtemp(dir));
    nb_tape *tp = nb_tape_new();
    nb_tensor *u = nb_from_array(NULL, NB_F64, NB_SHAPE(1), ((double[]){0.5}));
    nb_tensor_set_name(u, "u");
    nb_requires_grad(u, true);
    nb_tensor *three_u = nb_scale(tp, u, 3);
    nb_tensor_set_name(three_u, "v");
    nb_tensor *e = nb_exp(tp, u);
    nb_tensor_set_name(e, "w");
    nb_tensor *s = nb_add(tp, three_u, e);
    nb_tensor_set_name(s, "s");
    nb_tensor *E = nb_sum(tp, s);
    nb_tensor_set_name(E, "E");
    size_t n = 0;
    assert_int_equal(nb_backward_frames(E, dir, NULL, &n), NB_OK);
    assert_int_equal(n, 1 + 4);
    char *f2 = read_frame(dir, 2), *f3 = read_frame(dir, 3), *f4 = read_frame(dir, 4);
    char *u2 = node_label(f2, "u"), *u3 = node_label(f3, "u"), *u4 = node_label(f4, "u");
    assert_message_has(u2, "grad: not yet");
    assert_message_has(u3, "grad [1.649] (partial: 1 of 2 uses)");
    assert_message_has(u4, "grad [4.649] (final)\\n= 1.649 + 3 (2 uses)");
    char *w2 = node_label(f2, "w"); /* one use, complete as soon as it arrives */
    assert_message_has(w2, "grad [1] (final)");
    free(w2);
    assert_null(strstr(u4, "partial"));
    free(u2), free(u3), free(u4), free(f2), free(f3), free(f4);
    remove_frames(dir, n);
    nb_tensor_free(u);
    nb_tape_free(tp);
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
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.title = "the step's title";
    assert_int_equal(nb_backward_html(loss, page, o.title, &o), NB_OK);
    assert_close(nb_grad_get(m.b, 0), db, 1e-12);
    /* The page's heading carries the title; the drawing does not repeat it
     * (in Graphviz's serif font, over the graph). */
    f = fopen(page, "r");
    static char html[1 << 17];
    size_t got = fread(html, 1, sizeof html - 1, f);
    html[got] = '\0';
    fclose(f);
    assert_int_equal(count_of(html, "the step&#39;s title") + count_of(html, "the step's title"), 2);
    assert_message_has(html, "<h1>the step");
    /* A learning rate that is not a finite number >= 0 is refused, naming
     * it, and writes no page; a good one ends the page with the update. */
    const double bad_rates[] = {-0.1, NAN, INFINITY};
    for (int k = 0; k < 3; k++) {
        o.learning_rate = bad_rates[k];
        unlink(page);
        assert_int_equal(nb_backward_html(loss, page, o.title, &o), NB_ERR_ARG);
        assert_message_has(nb_last_error(), "nb_backward_html", "learning_rate", "finite number >= 0");
        assert_int_equal(access(page, F_OK), -1);
    }
    o.learning_rate = 0.25;
    assert_int_equal(nb_backward_html(loss, page, o.title, &o), NB_OK);
    f = fopen(page, "r");
    got = fread(html, 1, sizeof html - 1, f);
    html[got] = '\0';
    fclose(f);
    assert_message_has(html, "\"phase\": \"update\"", "w ← w − η·∂", "η = 0.25");
    assert_close(nb_grad_get(m.b, 0), db, 1e-12); /* the gradients left as they were */
    unlink(page);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}


int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_frames),
        cmocka_unit_test(test_frames_mark_partial_and_final),
        cmocka_unit_test(test_frames_after_backward_do_not_double),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
