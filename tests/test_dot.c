/* Graphviz export: content, determinism, and Graphviz accepting the files. */
#include "support.h"
#include "nabla_op.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dot_support.h"


static void test_dot_content(void **state) {
    (void)state;
    model m = make_model();
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = build(tp, &m);
    char *before = dot_of(tp, NULL);
    assert_message_has(before, "digraph nabla", "W[1]\\n(3, 1)\\nvalue [0.1]\\n[-0.2]\\n[0.3]\\ngrad: not computed",
                       "value [1, 2, 3]\\n[4, 5, 6]", "y \\\"label\\\"", "matmul", "bce_logits", "legend",
                       "parameter", "#ffe599", "#f4cccc",
                       /* the product's gradient in the lesson's names, and the loss's own name */
                       "t1 -> op0 [label=\"∂loss/∂W[1] = Xᵀ · ∂loss/∂t2\"]", "op0 -> t2",
                       /* the loss's op: upstream 1, N the number of elements */
                       "∂loss/∂Z[1] = (σ(Z[1])−y \\\"label\\\")/2\"",
                       /* the legend says what the edge text is */
                       "edges: how the gradient comes back");
    /* One dtype throughout: none is written. */
    assert_null(strstr(before, "f64"));
    assert_null(strstr(before, "float64"));
    /* No gradient flows into the data or the target: grey edges, no formula,
     * and no grad line on their nodes. */
    assert_message_has(before, "t0 -> op0 [color=\"#aaaaaa\", style=dashed, label=\"\"]",
                       "t5 -> op2 [color=\"#aaaaaa\", style=dashed, label=\"\"]");
    char *y_label = node_label(before, "y \\\"label\\\"");
    assert_null(strstr(y_label, "grad"));
    free(y_label);
    assert_int_equal(nb_backward(loss), NB_OK);
    char *after = dot_of(tp, NULL);
    /* Every parameter and intermediate now shows numbers for its gradient:
     * dE/dW = Xᵀ (σ(z) − y)/2 with z = (1.1, 1.7). */
    assert_null(strstr(after, "not computed"));
    double d0 = (1 / (1 + exp(-1.1)) - 0) / 2, d1 = (1 / (1 + exp(-1.7)) - 1) / 2;
    char expect[128];
    snprintf(expect, sizeof expect, "grad [%.4g]\\n[%.4g]\\n[%.4g]", 1 * d0 + 4 * d1, 2 * d0 + 5 * d1, 3 * d0 + 6 * d1);
    char *w_label = node_label(after, "W[1]");
    assert_message_has(w_label, expect);
    free(w_label);
    free(before);
    free(after);
    /* Large tensors are summarised (data of whole numbers as counts). */
    nb_tape_reset(tp);
    nb_tensor *big = nb_zeros(tp, NB_F32, NB_SHAPE(10, 10));
    nb_sigmoid(tp, nb_add_scalar(tp, big, 0.25));
    char *summary = dot_of(tp, NULL);
    assert_message_has(summary, "(10, 10)", "value counts 0×100", "min 0.25, mean 0.25, max 0.25");
    free(summary);
    /* Mixed dtypes are the one case that names them. */
    nb_tape_reset(tp);
    nb_tensor *x32 = nb_ones(tp, NB_F32, NB_SHAPE(2));
    nb_add(tp, nb_cast(tp, x32, NB_F64), nb_ones(tp, NB_F64, NB_SHAPE(2)));
    char *mixed = dot_of(tp, NULL);
    assert_message_has(mixed, "(2,) float32", "(2,) float64");
    free(mixed);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

/* The chain rule on the edges, for a scalar example worked by hand:
 *   y = sigmoid(w * x) + w,  w = 0.5, x = 2:  z = 1, s = sigmoid(1) = 0.7311
 *   edge w -> mul:     ∂z/∂w = x = 2;    upstream ∂y/∂z = s(1-s) = 0.1966;  adds 0.3932
 *   edge z -> sigmoid: ∂s/∂z = s(1 - s), in the output's name; upstream 1: 1 × 0.1966 = 0.1966
 *   edge w -> add:     ∂y/∂w = 1:        1 × 1 = 1
 *   w feeds two ops, so its gradient is 1 + 0.3932 = 1.393 (the terms in
 *   the order backward adds them). */
static void test_chain_rule_on_edges(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tape_set_explain(tp, true);
    nb_tensor *w = nb_scalar(NULL, NB_F64, 0.5), *x = nb_scalar(tp, NB_F64, 2);
    nb_tensor_set_name(w, "w");
    nb_tensor_set_name(x, "x");
    nb_requires_grad(w, true);
    nb_tensor *z = nb_mul(tp, w, x);
    nb_tensor_set_name(z, "z");
    nb_tensor *s = nb_sigmoid(tp, z);
    nb_tensor_set_name(s, "s");
    nb_tensor *y = nb_add(tp, s, w);
    nb_tensor_set_name(y, "y");
    assert_int_equal(nb_backward(y), NB_OK);
    char *dot = dot_of(tp, NULL);
    assert_message_has(dot, "t0 -> op0 [label=\"∂z/∂w = x\\n0.1966 × 2 = 0.3932\"]",
                       "t2 -> op1 [label=\"∂s/∂z = s(1-s)\\n1 × 0.1966 = 0.1966\"]",
                       "t0 -> op2 [label=\"∂y/∂w = 1\\n1 × 1 = 1\"]",
                       /* a scalar has no "()" and no brackets */
                       "label=\"w\\nvalue 0.5\\ngrad 1.393\\n= 1 + 0.3932 (2 uses)\"");
    free(dot);

    /* An input used twice by one op: y = a * a, a = sigmoid(1) = 0.7311.
     * One edge, ∂y/∂a = 2a = 1.462; a has one use, not two. */
    nb_tape_reset(tp);
    nb_tensor *one = nb_scalar(NULL, NB_F64, 1);
    nb_tensor_set_name(one, "u");
    nb_requires_grad(one, true);
    nb_tensor *a = nb_sigmoid(tp, one);
    nb_tensor_set_name(a, "a");
    nb_tensor *sq = nb_mul(tp, a, a);
    nb_tensor_set_name(sq, "q");
    assert_int_equal(nb_backward(sq), NB_OK);
    dot = dot_of(tp, NULL);
    assert_message_has(dot, "t1 -> op1 [label=\"∂q/∂a = 2a\\n1 × 1.462 = 1.462\"]");
    assert_int_equal(count_of(dot, "t1 -> op1"), 1);
    assert_null(strstr(dot, "uses"));
    free(dot);
    nb_tensor_free(one);

    /* A fan-out's sum holds on a calculator: E = a·w + a·w with a = 0.12344
     * gives ∂E/∂w = 0.24688, printed 0.2469; terms at 4 digits would read
     * 0.1234 + 0.1234 = 0.2468, so they get 5. */
    nb_tape_reset(tp);
    nb_tensor *a1 = nb_scalar(tp, NB_F64, 0.12344), *a2 = nb_scalar(tp, NB_F64, 0.12344);
    nb_tensor *w2 = nb_scalar(NULL, NB_F64, 2);
    nb_tensor_set_name(w2, "w");
    nb_requires_grad(w2, true);
    nb_tensor *sum = nb_add(tp, nb_mul(tp, a1, w2), nb_mul(tp, a2, w2));
    nb_tensor_set_name(sum, "E");
    assert_int_equal(nb_backward(sum), NB_OK);
    dot = dot_of(tp, NULL);
    assert_message_has(dot, "label=\"w\\nvalue 2\\ngrad 0.2469\\n= 0.12344 + 0.12344 (2 uses)\"");
    free(dot);
    nb_tensor_free(w2);

    /* Matrices: the contribution in the lesson's names, then its values. */
    nb_tape_reset(tp);
    nb_tensor *W = nb_ones(NULL, NB_F64, NB_SHAPE(2, 2)), *X = nb_ones(tp, NB_F64, NB_SHAPE(2, 3));
    nb_tensor_set_name(W, "W");
    nb_tensor_set_name(X, "X");
    nb_requires_grad(W, true);
    nb_tensor *P = nb_matmul(tp, W, X);
    nb_tensor_set_name(P, "P");
    nb_tensor *E = nb_sum(tp, P);
    nb_tensor_set_name(E, "E");
    nb_backward(E);
    dot = dot_of(tp, NULL);
    /* dE/dW = 1 · Xᵀ = 3 everywhere */
    assert_message_has(dot, "∂E/∂W = ∂E/∂P · Xᵀ\\n= [3, 3]\\n[3, 3]", "∂E/∂P = 1 spread over P");
    free(dot);
    /* Without explain mode, formulas only. */
    nb_tape_set_explain(tp, false);
    nb_zero_grad(W);
    nb_backward(nb_sum(tp, nb_matmul(tp, W, X)));
    dot = dot_of(tp, NULL);
    assert_null(strstr(dot, "\\n= ["));
    free(dot);
    nb_tensor_free(W);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

/* A summarised element-wise edge shows the local derivative's own values
 * (here σ's, s(1−s), which lies in (0, 0.25]) and then the contribution's,
 * upstream × local: E = Σ w·σ(x) over 20 elements, so upstream = w and the
 * contribution w·s(1−s); w has zeros, where the local derivative cannot be
 * read off the contribution, and negative weights, which made the
 * contribution's minimum (once shown as the local derivative's) negative.
 * Then relu's indicator [x > 0]: 0 and 1, never negative. */
static void test_summarised_local_derivative(void **state) {
    (void)state;
    enum { N = 20 };
    double xv[N], wv[N];
    for (int i = 0; i < N; i++) {
        xv[i] = -3 + 0.3 * i;
        wv[i] = i % 5 == 0 ? 0 : (i % 2 ? -1.5 : 0.5 + 0.1 * i);
    }
    nb_tape *tp = nb_tape_new();
    nb_tape_set_explain(tp, true);
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(N), xv);
    nb_tensor *w = nb_from_array(tp, NB_F64, NB_SHAPE(N), wv);
    nb_tensor_set_name(x, "x");
    nb_tensor_set_name(w, "w");
    nb_requires_grad(x, true);
    nb_tensor *s = nb_sigmoid(tp, x);
    nb_tensor_set_name(s, "s");
    nb_tensor *wx = nb_mul(tp, s, w);
    nb_tensor_set_name(wx, "ws");
    nb_tensor *E = nb_sum(tp, wx);
    nb_tensor_set_name(E, "E");
    assert_int_equal(nb_backward(E), NB_OK);
    double lmin = INFINITY, lmax = -INFINITY, lsum = 0, cmin = INFINITY, cmax = -INFINITY, csum = 0;
    int used = 0;
    for (int i = 0; i < N; i++) {
        double si = 1 / (1 + exp(-xv[i])), local = si * (1 - si), c = wv[i] * local;
        cmin = fmin(cmin, c), cmax = fmax(cmax, c), csum += c;
        if (wv[i] == 0) continue;
        lmin = fmin(lmin, local), lmax = fmax(lmax, local), lsum += local, used++;
    }
    char expect[400];
    snprintf(expect, sizeof expect,
             "label=\"∂s/∂x = s(1-s)\\n= min %.4g, mean %.4g, max %.4g (over the %d of %d where the upstream "
             "gradient is not 0)\\n∂E/∂x = upstream × local: min %.4g, mean %.4g, max %.4g\"",
             lmin, lsum / used, lmax, used, N, cmin, csum / N, cmax);
    char *dot = dot_of(tp, NULL);
    assert_message_has(dot, expect);
    free(dot);

    nb_tape_reset(tp);
    w = nb_from_array(tp, NB_F64, NB_SHAPE(N), wv);
    nb_tensor_set_name(w, "w");
    nb_tensor *r = nb_relu(tp, x);
    nb_tensor_set_name(r, "r");
    nb_tensor *wr = nb_mul(tp, r, w);
    nb_tensor_set_name(wr, "wr");
    E = nb_sum(tp, wr);
    nb_tensor_set_name(E, "E");
    nb_zero_grad(x);
    assert_int_equal(nb_backward(E), NB_OK);
    used = 0, lsum = 0, cmin = INFINITY, cmax = -INFINITY, csum = 0;
    for (int i = 0; i < N; i++) {
        double local = xv[i] > 0, c = wv[i] * local;
        cmin = fmin(cmin, c), cmax = fmax(cmax, c), csum += c;
        if (wv[i] != 0) lsum += local, used++;
    }
    snprintf(expect, sizeof expect,
             "\\n= min 0, mean %.4g, max 1 (over the %d of %d where the upstream gradient is not 0)\\n"
             "∂E/∂x = upstream × local: min %.4g, mean %.4g, max %.4g\"",
             lsum / used, used, N, cmin, csum / N, cmax);
    dot = dot_of(tp, NULL);
    assert_message_has(dot, "label=\"∂r/∂x = [x>0]", expect);
    free(dot);
    nb_tape_free(tp);
    nb_tensor_free(x);
}

/* A masked tensor, where(mask, s, -1e9), is summarised over the values
 * the mask lets through, saying how many fills were left out (its mean
 * was once -4.6e8, the fill's); the where edge names the condition. */
static void test_masked_summary(void **state) {
    (void)state;
    enum { T = 4 };
    double sv[T * T], mv[T * T], min = INFINITY, max = -INFINITY, sum = 0;
    int kept = 0;
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            sv[i * T + j] = 0.25 * i - 0.5 * j + 0.125;
            mv[i * T + j] = j <= i;
            if (j > i) continue;
            min = fmin(min, sv[i * T + j]), max = fmax(max, sv[i * T + j]), sum += sv[i * T + j], kept++;
        }
    nb_tape *tp = nb_tape_new();
    nb_tensor *s = nb_from_array(NULL, NB_F32, NB_SHAPE(T, T), sv);
    nb_tensor_set_name(s, "s");
    nb_requires_grad(s, true);
    nb_tensor *mask = nb_from_array(tp, NB_F32, NB_SHAPE(T, T), mv);
    nb_tensor_set_name(mask, "mask");
    nb_tensor *S = nb_where(tp, mask, s, nb_scalar(tp, NB_F32, -1e9));
    nb_tensor_set_name(S, "S");
    nb_tensor *E = nb_sum(tp, nb_softmax(tp, S, 1));
    nb_tensor_set_name(E, "E");
    char expect[200];
    snprintf(expect, sizeof expect, "label=\"S\\n(4, 4)\\nvalue min %.4g, mean %.4g, max %.4g (the %d masked to -1e+09 "
             "left out)", min, sum / kept, max, T * T - kept);
    char *dot = dot_of(tp, NULL);
    assert_message_has(dot, expect, "∂S/∂s = [mask≠0]");
    free(dot);
    nb_tape_free(tp);
    nb_tensor_free(s);
}

/* Logistic regression, Z = W Xᵀ + b, A = σ(Z), C = bce(A, Y) on m = 4
 * examples: the sigmoid's edge ends with seed 003's result ∂C/∂Z = (A−Y)/m,
 * m named; Z's gradient is checked against (A−Y)/4 by hand, so the line
 * states a true thing.  Without a symbol for the examples it is N; when A
 * is used again, the result does not hold and is not shown. */
static void test_sigmoid_bce_result(void **state) {
    (void)state;
    const double xv[8] = {0.5, -1, 1.5, 2, -0.5, 0.25, 1, -2}, yv[4] = {1, 0, 1, 0};
    nb_tensor *W = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 2), ((double[]){0.3, -0.7}));
    nb_tensor *b = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 1), ((double[]){0.1}));
    nb_tensor_set_name(W, "W");
    nb_tensor_set_name(b, "b");
    nb_requires_grad(W, true);
    nb_requires_grad(b, true);
    nb_tape *tp = nb_tape_new();
    for (int again = 0; again < 2; again++) {
        nb_tape_reset(tp);
        nb_tape_set_explain(tp, true);
        nb_tensor *X = nb_from_array(tp, NB_F64, NB_SHAPE(4, 2), xv);
        nb_tensor *Y = nb_from_array(tp, NB_F64, NB_SHAPE(1, 4), yv);
        nb_tensor_set_name(X, "X");
        nb_tensor_set_name(Y, "Y");
        nb_tensor *Z = nb_linear_t(tp, W, X, b, false, true);
        nb_tensor_set_name(Z, "Z");
        nb_tensor *A = nb_sigmoid(tp, Z);
        nb_tensor_set_name(A, "A");
        nb_tensor *C = nb_bce(tp, A, Y);
        if (again) C = nb_add(tp, C, nb_sum(tp, A)); /* A used twice */
        nb_tensor_set_name(C, "C");
        nb_zero_grad(W);
        nb_zero_grad(b);
        assert_int_equal(nb_backward(C), NB_OK);
        const nb_dot_axis_symbol symbols[] = {{"A", 1, "m"}};
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.axis_symbols = symbols;
        o.n_axis_symbols = 1;
        char *dot = dot_of(tp, &o), *plain = dot_of(tp, NULL);
        if (again) {
            assert_null(strstr(dot, "(A−Y)/m"));
        } else {
            char expect[160] = "grad [";
            for (int i = 0; i < 4; i++) {
                double z = 0.3 * xv[2 * i] - 0.7 * xv[2 * i + 1] + 0.1, a = 1 / (1 + exp(-z));
                snprintf(expect + strlen(expect), sizeof expect - strlen(expect), i ? ", %.4g" : "%.4g",
                         (a - yv[i]) / 4);
            }
            strcat(expect, "]");
            char *z_label = node_label(dot, "Z");
            assert_message_has(z_label, expect);
            free(z_label);
            assert_message_has(dot, "\\n∂C/∂Z = (A−Y)/m, m = 4\"]");
            assert_message_has(plain, "\\n∂C/∂Z = (A−Y)/N, N = 4\"]");
        }
        free(dot);
        free(plain);
    }
    nb_tape_free(tp);
    nb_tensor_free(W);
    nb_tensor_free(b);
}

/* Rounding noise is not shown as data: -0 prints as 0 (values, gradients,
 * summaries), a mean below 5e-5 of the values' scale as 0 (a genuine one
 * of 1e-3 of it stays), and whole-number data of few values (class
 * labels) as counts rather than a mean; with more values, the summary. */
static void test_noise_is_not_data(void **state) {
    (void)state;
    enum { N = 13 };
    double zeros[N], noise[N], small_mean[N], labels[20], many[20];
    for (int i = 0; i < N; i++) {
        zeros[i] = -0.0;
        noise[i] = i - 6 + (i == 3 ? 1e-12 : 0);       /* mean 7.7e-14, scale 6 */
        small_mean[i] = i - 6 + (i == 3 ? 0.078 : 0);  /* mean 0.006, scale 6 */
    }
    size_t count[3] = {0};
    for (int i = 0; i < 20; i++) {
        labels[i] = (i * 7) % 3;
        count[(i * 7) % 3]++;
        many[i] = i % 13;
    }
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(N), zeros);
    nb_tensor *x2 = nb_from_array(NULL, NB_F64, NB_SHAPE(2), zeros);
    nb_tensor_set_name(x, "x");
    nb_tensor_set_name(x2, "x2");
    nb_requires_grad(x, true);
    nb_requires_grad(x2, true);
    nb_tensor *minus0 = nb_from_array(tp, NB_F64, NB_SHAPE(N), zeros);
    nb_tensor *X = nb_from_array(tp, NB_F64, NB_SHAPE(N), noise);
    nb_tensor *Xm = nb_from_array(tp, NB_F64, NB_SHAPE(N), small_mean);
    nb_tensor *y = nb_from_array(tp, NB_F64, NB_SHAPE(20), labels), *k = nb_from_array(tp, NB_F64, NB_SHAPE(20), many);
    nb_tensor_set_name(X, "X");
    nb_tensor_set_name(Xm, "Xm");
    nb_tensor_set_name(y, "y");
    nb_tensor_set_name(k, "k");
    nb_tensor *E = nb_sum(tp, nb_mul(tp, x, minus0));
    E = nb_add(tp, E, nb_sum(tp, nb_mul(tp, x2, nb_slice(tp, minus0, 0, 0, 2, 1))));
    E = nb_add(tp, E, nb_add(tp, nb_add(tp, nb_sum(tp, X), nb_sum(tp, Xm)), nb_add(tp, nb_sum(tp, y), nb_sum(tp, k))));
    nb_tensor_set_name(E, "E");
    assert_int_equal(nb_backward(E), NB_OK); /* x's gradient: -0 · 1 = -0 */
    assert_true(signbit(((const double *)nb_grad_data(x))[0]));
    char counts[80], mean[80];
    snprintf(counts, sizeof counts, "label=\"y\\n(20,)\\nvalue counts 0×%zu, 1×%zu, 2×%zu\"", count[0], count[1],
             count[2]);
    double m = 0;
    for (int i = 0; i < N; i++) m += small_mean[i];
    snprintf(mean, sizeof mean, "label=\"Xm\\n(13,)\\nvalue min -6, mean %.4g, max 6\"", m / N);
    char whole[80];
    double mk = 0;
    for (int i = 0; i < 20; i++) mk += many[i];
    snprintf(whole, sizeof whole, "label=\"k\\n(20,)\\nvalue min 0, mean %.4g, max 12\"", mk / 20);
    char *dot = dot_of(tp, NULL);
    assert_message_has(dot, "label=\"x\\n(13,)\\nvalue min 0, mean 0, max 0\\ngrad min 0, mean 0, max 0\"",
                       "label=\"x2\\n(2,)\\nvalue [0, 0]\\ngrad [0, 0]\"",
                       "label=\"X\\n(13,)\\nvalue min -6, mean 0, max 6\"", mean, counts, whole);
    assert_null(strstr(dot, "-0,"));
    assert_null(strstr(dot, "-0]"));
    free(dot);
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(x2);
}

/* Course notation (symbols by size and per tensor axis), scopes as
 * clusters, the gradcheck overlay as a border and a highlighted entry. */
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
    /* 1 is both b[1]'s second size and a size of nothing else; the size
     * table alone would call it m.  The per-axis symbol wins. */
    const nb_dot_symbol symbols[] = {{3, "n[0]"}, {4, "n[1]"}, {5, "m"}, {1, "m"}};
    const nb_dot_axis_symbol axes[] = {{"b[1]", 1, "1"}};
    nb_tensor *checked[2] = {W1, b1};
    const double errors[2] = {3e-9, 0.02};
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.clusters = true;
    o.symbols = symbols;
    o.n_symbols = 4;
    o.axis_symbols = axes;
    o.n_axis_symbols = 1;
    o.checked = checked;
    o.checked_errors = errors;
    o.n_checked = 2;
    o.highlight = 2; /* entry 1: the add */
    char *dot = dot_of(tp, &o);
    assert_message_has(dot, "W[1]\\n(n[1], n[0])", "Z[1]\\n(n[1], m)", "b[1]\\n(n[1], 1)",
                       "subgraph cluster_scope0 {\n    label=\"layer 1\"",
                       "subgraph cluster_scope1 {\n    label=\"activation\"",
                       /* gradcheck as the border; the fill stays the role's */
                       "fillcolor=\"#ffe599\", color=\"#6aa84f\", penwidth=3, label=\"W[1]",
                       "gradcheck: worst rel. error 3e-09",
                       "fillcolor=\"#ffe599\", color=\"#cc0000\", penwidth=3, label=\"b[1]",
                       "gradcheck: worst rel. error 0.02", "gradcheck border",
                       /* the highlight is blue: not the loss's or gradcheck's colour */
                       "op1 [shape=ellipse, style=filled, fillcolor=\"#3c78d8\"");
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
    /* A layout direction that Graphviz does not know is refused, by name. */
    o.rankdir = "sideways";
    f = fopen("/dev/null", "w");
    assert_int_equal(nb_dot_write(tp, f, &o), NB_ERR_ARG);
    fclose(f);
    assert_message_has(nb_last_error(), "nb_dot_write", "rankdir", "sideways", "\"TB\"");
    o.rankdir = "TB";
    dot = dot_of(tp, &o);
    assert_message_has(dot, "rankdir=TB;");
    free(dot);
    nb_tensor_free(W1);
    nb_tensor_free(b1);
    nb_tape_free(tp);
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

/* The tensors the options name (the loss, the checked ones) are checked as
 * every call checks its tensors: one from before nb_tape_reset, one of a
 * freed tape (its header retired, reading as zeros) and one of another tape
 * are refused by every writer, which writes nothing.  (Before, a retired
 * or freed loss was a NULL dereference in nb_dot_save and nb_backward_html,
 * and the others were drawn with NB_OK.)  A loss made inside a callback,
 * whose entry is no longer its own, is drawn without reading past the
 * tape. */
static nb_tensor *made_in_forward;
static void sum_forward(nb_op_call *c) {
    nb_tensor *t = nb_op_input(c, 0);
    for (int k = 0; k < 300; k++) t = nb_scale(nb_op_tape(c), t, 1); /* entries past the graph's */
    made_in_forward = nb_sum(nb_op_tape(c), t);
    memcpy(nb_op_output_data(c), nb_op_input_data(c, 0), nb_op_size(c) * sizeof(double));
}
static void identity_backward(nb_op_call *c) {
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    const double *g = nb_op_grad_output(c);
    for (size_t i = 0; gx && i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + g[i] : g[i];
}
static const nb_op_def sums_in_forward = {.name = "sums_in_forward", .forward = sum_forward,
                                          .backward = identity_backward};

static void test_tensors_in_the_options_are_checked(void **state) {
    (void)state;
    char dir[] = "/tmp/nabla-opts-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    model m = make_model();
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new(), *gone = nb_tape_new();
    nb_tensor *old = nb_scale(tp, m.W, 3);
    nb_tape_reset(tp);
    nb_tensor *freed = nb_scale(gone, m.W, 3), *elsewhere = nb_scale(other, m.W, 3);
    nb_tape_free(gone);
    nb_tensor *loss = build(tp, &m);
    assert_int_equal(nb_backward(loss), NB_OK);
    nb_tensor *bad[3] = {old, freed, elsewhere};
    const char *why[3] = {"before nb_tape_reset", "before nb_tape_reset, or of a freed tape", "another tape"};
    double errors[2] = {1e-6, 1e-6};
    for (int kind = 0; kind < 3; kind++)
        for (int field = 0; field < 2; field++)
            for (int writer = 0; writer < 4; writer++) {
                nb_dot_opts o;
                nb_dot_default_opts(&o);
                nb_tensor *checked[2] = {m.W, bad[kind]};
                if (field == 0) {
                    o.loss = bad[kind];
                } else {
                    o.checked = checked;
                    o.checked_errors = errors;
                    o.n_checked = 2;
                }
                nb_status st;
                const char *who;
                if (writer == 0) {
                    char *buf = NULL;
                    size_t len = 0;
                    FILE *f = open_memstream(&buf, &len);
                    st = nb_dot_write(tp, f, &o), who = "nb_dot_write";
                    fclose(f);
                    assert_int_equal(len, 0);
                    free(buf);
                } else if (writer == 1) {
                    snprintf(path, sizeof path, "%s/g.dot", dir);
                    st = nb_dot_save(tp, path, &o), who = "nb_dot_write";
                } else if (writer == 2) {
                    snprintf(path, sizeof path, "%s/g.html", dir);
                    st = nb_backward_html(loss, path, "t", &o), who = "nb_backward_html";
                } else {
                    snprintf(path, sizeof path, "%s/frame_000.dot", dir);
                    st = nb_backward_frames(loss, dir, &o, NULL), who = "nb_backward_frames";
                }
                assert_int_equal(st, NB_ERR_STATE);
                assert_message_has(nb_last_error(), who, field ? "opts.checked[1]" : "opts.loss", why[kind]);
                if (writer) assert_int_not_equal(access(path, F_OK), 0); /* nothing written */
            }
    /* a loss recorded by a custom op's forward: alive, on this tape, with an
     * entry number past the tape's (its entry was dropped) */
    nb_tape_reset(tp);
    nb_tensor *y = nb_op(tp, &sums_in_forward, &m.W, 1, NB_F64, NB_SHAPE(3, 1), NULL, 0);
    nb_tensor *L = nb_sum(tp, y);
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.loss = made_in_forward;
    char *dot = dot_of(tp, &o);
    assert_message_has(dot, "op1", "legend");
    free(dot);
    snprintf(path, sizeof path, "%s/p.html", dir);
    assert_int_equal(nb_backward_html(L, path, "t", &o), NB_OK);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
    nb_tape_free(other);
    nb_tape_free(tp);
    nb_tensor_free(m.W);
    nb_tensor_free(m.b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_content),
        cmocka_unit_test(test_chain_rule_on_edges),
        cmocka_unit_test(test_summarised_local_derivative),
        cmocka_unit_test(test_masked_summary),
        cmocka_unit_test(test_sigmoid_bce_result),
        cmocka_unit_test(test_noise_is_not_data),
        cmocka_unit_test(test_layers_overlay_and_highlight),
        cmocka_unit_test(test_long_names_are_cut_between_characters),
        cmocka_unit_test(test_dot_is_deterministic),
        cmocka_unit_test(test_graphviz_accepts_the_file),
        cmocka_unit_test(test_tensors_in_the_options_are_checked),
    };
    return cmocka_run_group_tests_name("dot", tests, NULL, NULL);
}
