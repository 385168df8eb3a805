/*
 * Higher-order derivatives: nb_grad with create_graph, and what is built on
 * it.  Closed forms (the Hessian of xᵀAx is A + Aᵀ; of the mean logistic
 * loss, Xᵀ diag(a(1 − a)) X / m; the third derivative of sin is −cos);
 * nb_gradgradcheck on every op, on random shapes, with broadcasting and
 * fan-out, in float64; Hessian-vector and Jacobian-vector products against
 * the dense matrices; the misuse that must be refused.
 */
#include "support.h"
#include "nabla_op.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- closed forms */

/* f(x) = xᵀ A x: the gradient (A + Aᵀ) x, the Hessian A + Aᵀ. */
static void test_hessian_of_a_quadratic_form(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 61);
    nb_tape *tp = nb_tape_new();
    nb_tensor *A = nb_rand_uniform(tp, &rng, NB_F64, NB_SHAPE(4, 4), -1, 1);
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(4, 1), -1, 1);
    nb_requires_grad(x, true);
    nb_tensor *f = nb_sum(tp, nb_matmul_t(tp, x, nb_matmul(tp, A, x), true, false));
    nb_tensor *H = nb_hessian(f, x);
    assert_ok(H);
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++)
            assert_close(nb_get(H, i * 4 + j), nb_get(A, i * 4 + j) + nb_get(A, j * 4 + i), 1e-12);
    /* nb_grad leaves x's own gradient alone */
    assert_false(nb_has_grad(x));
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Logistic regression, mean loss L(w) = mean bce_logits(X w, y):
 * H = Xᵀ diag(a (1 − a)) X / m, a = σ(X w). */
static void test_hessian_of_the_logistic_loss(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 62);
    nb_tape *tp = nb_tape_new();
    size_t m = 7, n = 3;
    nb_tensor *X = nb_rand_normal(tp, &rng, NB_F64, NB_SHAPE(m, n), 0, 1);
    nb_tensor *y = nb_zeros(tp, NB_F64, NB_SHAPE(m, 1));
    for (size_t i = 0; i < m; i++) nb_set(y, i, (double)(i % 2));
    nb_tensor *w = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(n, 1), 0, 0.5);
    nb_requires_grad(w, true);
    nb_tensor *L = nb_bce_logits(tp, nb_matmul(tp, X, w), y);
    nb_tensor *H = nb_hessian(L, w);
    assert_ok(H);
    for (size_t j = 0; j < n; j++)
        for (size_t k = 0; k < n; k++) {
            double h = 0;
            for (size_t i = 0; i < m; i++) {
                double z = 0;
                for (size_t q = 0; q < n; q++) z += nb_get(X, i * n + q) * nb_get(w, q);
                double a = 1 / (1 + exp(-z));
                h += nb_get(X, i * n + j) * a * (1 - a) * nb_get(X, i * n + k);
            }
            assert_close(nb_get(H, j * n + k), h / (double)m, 1e-12);
        }
    nb_tensor_free(w);
    nb_tape_free(tp);
}

/* d/dx sin = cos, d²/dx² = −sin, d³/dx³ = −cos: three nb_grads, each
 * recorded and differentiated again. */
static void test_third_derivative_of_sin(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){-1, 0.3, 2}));
    nb_requires_grad(x, true);
    nb_tensor *d = nb_sum(tp, nb_sin(tp, x)), *g;
    const double sign[3] = {1, -1, -1};
    for (int order = 1; order <= 3; order++) {
        assert_int_equal(nb_grad(d, &x, 1, &g, true), NB_OK);
        for (size_t i = 0; i < 3; i++) {
            double xi = nb_get(x, i);
            double want = order == 2 ? -sin(xi) : sign[order - 1] * cos(xi);
            assert_close(nb_get(g, i), want, 1e-14);
        }
        d = nb_sum(tp, g);
    }
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Newton's step on y = x² + 3 from 5: x − y'/y'' = 5 − 10/2 = 0, the
 * minimum in one step. */
static void test_newton_on_the_seed_parabola(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 5);
    nb_requires_grad(x, true);
    nb_tensor *y = nb_add_scalar(tp, nb_square(tp, x), 3), *g, *h;
    assert_int_equal(nb_grad(y, &x, 1, &g, true), NB_OK);
    assert_int_equal(nb_grad(g, &x, 1, &h, false), NB_OK);
    assert_close(nb_item(g), 10, 0);
    assert_close(nb_item(h), 2, 0);
    assert_close(nb_item(x) - nb_item(g) / nb_item(h), 0, 0);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- products */

static void test_hvp_jvp_and_jacobian(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 63);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(5), -1, 1);
    nb_tensor *v = nb_rand_uniform(tp, &rng, NB_F64, NB_SHAPE(5), -1, 1);
    nb_requires_grad(x, true);
    /* f = sum(tanh(x) * sin(x)) + (sum x²)²: a full Hessian */
    nb_tensor *s2 = nb_sum(tp, nb_square(tp, x));
    nb_tensor *f = nb_add(tp, nb_sum(tp, nb_mul(tp, nb_tanh(tp, x), nb_sin(tp, x))), nb_square(tp, s2));
    nb_tensor *H = nb_hessian(f, x), *hv;
    assert_ok(H);
    assert_int_equal(nb_hvp(f, &x, 1, &v, &hv), NB_OK);
    for (size_t i = 0; i < 5; i++) {
        double want = 0;
        for (size_t j = 0; j < 5; j++) want += nb_get(H, i * 5 + j) * nb_get(v, j);
        assert_close(nb_get(hv, i), want, 1e-12);
        for (size_t j = 0; j < i; j++) assert_close(nb_get(H, i * 5 + j), nb_get(H, j * 5 + i), 1e-12);
    }
    /* y = W tanh(x) (3 outputs): J by rows, against central differences;
     * J t from nb_jvp (two backward passes) */
    nb_tensor *W = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(3, 5), -1, 1);
    nb_tensor *out = nb_matmul(tp, W, nb_tanh(tp, x)), *jt;
    nb_tensor *J = nb_jacobian(out, x);
    assert_ok(J);
    for (size_t j = 0; j < 5; j++) {
        double saved = nb_get(x, j), up[3], down[3];
        for (int side = 0; side < 2; side++) {
            nb_set(x, j, saved + (side ? -1e-6 : 1e-6));
            nb_tape *probe = nb_tape_new();
            nb_tensor *o = nb_matmul(probe, W, nb_tanh(probe, x));
            for (size_t i = 0; i < 3; i++) (side ? down : up)[i] = nb_get(o, i);
            nb_tape_free(probe);
        }
        nb_set(x, j, saved);
        for (size_t i = 0; i < 3; i++) assert_close(nb_get(J, i * 5 + j), (up[i] - down[i]) / 2e-6, 1e-8);
    }
    nb_tape_reset(tp); /* x was changed: record again */
    v = nb_rand_uniform(tp, &rng, NB_F64, NB_SHAPE(5), -1, 1);
    out = nb_matmul(tp, W, nb_tanh(tp, x));
    J = nb_jacobian(out, x);
    assert_int_equal(nb_jvp(out, &x, 1, &v, &jt), NB_OK);
    assert_int_equal(nb_tensor_ndim(jt), 1);
    for (size_t i = 0; i < 3; i++) {
        double want = 0;
        for (size_t j = 0; j < 5; j++) want += nb_get(J, i * 5 + j) * nb_get(v, j);
        assert_close(nb_get(jt, i), want, 1e-12);
    }
    assert_false(nb_has_grad(x));
    nb_tensor_free(W);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* v is a constant: for f = sum(x³) at x = (1, 2, 3), H = diag(6x), so with
 * v = x itself H v = (6, 24, 54), as torch.autograd.functional.hvp(f, x, x)
 * gives (differentiating through v too gave (9, 36, 81)); a v computed
 * from x, 2x, gives (12, 48, 108).  With create_graph, hv = 6 x ⊙ v can be
 * differentiated again with respect to x: d sum(hv)/dx = 6 v. */
static void test_hvp_holds_v_constant(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_tensor *ones = nb_ones(NULL, NB_F64, NB_SHAPE(3));
    nb_requires_grad(x, true);
    for (int graph = 0; graph < 2; graph++) {
        nb_tape_reset(tp);
        nb_tensor *hv, *twice = nb_scale(tp, x, 2), *d3;
        assert_int_equal(nb_hvp_(nb_sum(tp, nb_pow(tp, x, 3)), &x, 1, &x, &hv, graph, __FILE__, __LINE__), NB_OK);
        expect_values(hv, (double[]){6, 24, 54}, 3, 1e-15);
        assert_int_equal(nb_hvp_(nb_sum(tp, nb_pow(tp, x, 3)), &x, 1, &twice, &hv, graph, __FILE__, __LINE__), NB_OK);
        expect_values(hv, (double[]){12, 48, 108}, 3, 1e-15);
        if (!graph) continue;
        assert_int_equal(nb_hvp_(nb_sum(tp, nb_pow(tp, x, 3)), &x, 1, &ones, &hv, true, __FILE__, __LINE__), NB_OK);
        assert_int_equal(nb_grad(nb_sum(tp, hv), &x, 1, &d3, false), NB_OK);
        expect_values(d3, (double[]){6, 6, 6}, 3, 1e-15);
    }
    assert_false(nb_has_grad(x));
    /* a vector from before nb_tape_reset is refused */
    nb_tensor *stale = nb_scale(tp, x, 1), *hv;
    nb_tape_reset(tp);
    assert_int_equal(nb_hvp(nb_sum(tp, nb_pow(tp, x, 3)), &x, 1, &stale, &hv), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_hvp", "vector 1", "before nb_tape_reset");
    nb_tensor_free(ones);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Smooth L1 with beta 0 is the L1 loss, mean |x - t|: for x = (0.5, -1, 2)
 * and t = 0 the gradient is sign(x)/3 = (1/3, -1/3, 1/3) (PyTorch's
 * F.smooth_l1_loss(x, t, beta=0)), the Hessian 0, and so every product
 * built on them (they were NaN: the quadratic part scaled by 1/0). */
static void test_smooth_l1_with_beta_0_to_second_order(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0.5, -1, 2}));
    nb_tensor *t = nb_zeros(NULL, NB_F64, NB_SHAPE(3)), *v = nb_ones(NULL, NB_F64, NB_SHAPE(3));
    nb_requires_grad(x, true);
    const double third = 1.0 / 3, sign[3] = {third, -third, third}, zeros[9] = {0};
    nb_tensor *g, *gg, *hv, *jv;
    for (int graph = 0; graph < 2; graph++) {
        assert_int_equal(nb_grad(nb_smooth_l1(tp, x, t, 0), &x, 1, &g, graph), NB_OK);
        expect_values(g, sign, 3, 1e-15);
    }
    expect_values(nb_hessian(nb_smooth_l1(tp, x, t, 0), x), zeros, 9, 0);
    assert_int_equal(nb_hvp(nb_smooth_l1(tp, x, t, 0), &x, 1, &v, &hv), NB_OK);
    expect_values(hv, zeros, 3, 0);
    /* jvp of the gradient (the Hessian times v again), double backward */
    assert_int_equal(nb_grad(nb_smooth_l1(tp, x, t, 0), &x, 1, &g, true), NB_OK);
    assert_int_equal(nb_jvp(g, &x, 1, &v, &jv), NB_OK);
    expect_values(jv, zeros, 3, 0);
    assert_int_equal(nb_grad(nb_sum(tp, nb_square(tp, g)), &x, 1, &gg, false), NB_OK);
    expect_values(gg, zeros, 3, 0);
    nb_tensor_free(v);
    nb_tensor_free(t);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* nb_grad of intermediates and unused tensors; its own gradient untouched */
static void test_grad_semantics(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_tensor *unused = nb_ones(NULL, NB_F64, NB_SHAPE(3));
    nb_requires_grad(x, true);
    nb_requires_grad(unused, true);
    nb_tensor *h = nb_square(tp, x), *y = nb_sum(tp, nb_scale(tp, h, 3));
    /* a gradient left from an earlier backward stays as it was */
    assert_int_equal(nb_backward(y), NB_OK);
    double before = nb_grad_get(x, 1);
    nb_tensor *wrt[3] = {x, h, unused}, *g[3];
    for (int graph = 0; graph < 2; graph++) {
        assert_int_equal(nb_grad(y, wrt, 3, g, graph), NB_OK);
        assert_close(nb_get(g[0], 0), 6, 0); /* 3 · 2x */
        assert_close(nb_get(g[0], 1), 12, 0);
        assert_close(nb_get(g[1], 1), 3, 0);  /* dy/dh */
        for (size_t i = 0; i < 3; i++) assert_close(nb_get(g[2], i), 0, 0);
        assert_close(nb_grad_get(x, 1), before, 0);
        assert_false(nb_has_grad(unused));
    }
    nb_tensor_free(x);
    nb_tensor_free(unused);
    nb_tape_free(tp);
}

/* An op of one's own without backward_graph: first derivatives work, a
 * second is refused with its name. */
static void half_square_forward(nb_op_call *c) {
    const double *x = nb_op_input_data(c, 0);
    double *y = nb_op_output_data(c);
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = x[i] * x[i] / 2;
}
static void half_square_backward(nb_op_call *c) {
    const double *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    for (size_t i = 0; i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + g[i] * x[i] : g[i] * x[i];
}
static const nb_op_def half_square = {.name = "half_square", .forward = half_square_forward,
                                      .backward = half_square_backward, .derivative = {"x"}, .elementwise = true};
/* ... and with one: G x, as ops */
static void half_square_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_mul(nb_op_tape(c), G, nb_op_input(c, 0));
}
static const nb_op_def half_square_2 = {.name = "half_square", .forward = half_square_forward,
                                        .backward = half_square_backward, .derivative = {"x"}, .elementwise = true,
                                        .backward_graph = half_square_graph};

static void test_custom_ops_and_second_derivatives(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){3, -1}));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_sum(tp, nb_op(tp, &half_square, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0)), *g;
    assert_int_equal(nb_grad(y, &x, 1, &g, false), NB_OK);
    assert_close(nb_get(g, 0), 3, 0);
    assert_int_equal(nb_grad(y, &x, 1, &g, true), NB_ERR_UNSUPPORTED);
    assert_message_has(nb_last_error(), "half_square", "backward_graph", "test_higher_order.c:");
    nb_tape_reset(tp);
    y = nb_sum(tp, nb_op(tp, &half_square_2, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0));
    nb_tensor *H = nb_hessian(y, x);
    assert_ok(H);
    assert_close(nb_get(H, 0), 1, 0);
    assert_close(nb_get(H, 1), 0, 0);
    /* misuse: no seed for a vector, NULL lists */
    nb_tensor *v = nb_square(tp, x);
    assert_int_equal(nb_grad(v, &x, 1, &g, true), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "nb_grad", "(2,)", "seed");
    assert_int_equal(nb_grad(y, NULL, 1, &g, true), NB_ERR_NULL);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- every op, second order */

/* f(x) = sum(tanh(op(x)) ⊙ R): a non-linear head, so that the upstream
 * gradient reaching op depends on x too. */
typedef nb_tensor *(*apply_fn)(nb_tape *tp, nb_tensor *const *in);
static nb_tensor *head(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    nb_tensor *y = ((apply_fn)user)(tp, in);
    if (nb_tensor_ndim(y) == 0) return nb_sum(tp, nb_tanh(tp, y));
    nb_rng rng;
    nb_rng_seed(&rng, 71);
    nb_tensor *R = nb_rand_uniform(tp, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
    return nb_sum(tp, nb_mul(tp, nb_tanh(tp, y), R));
}

/* The same with one input used for both of a two-input op (fan-out). */
static nb_tensor *head_same(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    nb_tensor *twice[2] = {in[0], in[0]};
    (void)n;
    return head(tp, twice, 2, user);
}

#define OP(name, expr) static nb_tensor *name(nb_tape *tp, nb_tensor *const *in) { return (expr); }
#define X0 in[0]
#define X1 in[1]
OP(o_neg, nb_neg(tp, X0))
OP(o_scale, nb_scale(tp, X0, -1.5))
OP(o_add_scalar, nb_add_scalar(tp, X0, 0.5))
OP(o_exp, nb_exp(tp, X0))
OP(o_log, nb_log(tp, X0))
OP(o_sigmoid, nb_sigmoid(tp, X0))
OP(o_tanh, nb_tanh(tp, X0))
OP(o_relu, nb_relu(tp, X0))
OP(o_leaky, nb_leaky_relu(tp, X0, 0.1))
OP(o_square, nb_square(tp, X0))
OP(o_pow, nb_pow(tp, X0, 2.5))
OP(o_pow0, nb_pow(tp, X0, 0))
OP(o_pow_neg, nb_pow(tp, X0, -1.5))
OP(o_sin, nb_sin(tp, X0))
OP(o_cos, nb_cos(tp, X0))
OP(o_clamp, nb_clamp(tp, X0, -0.5, 0.5))
OP(o_abs, nb_abs(tp, X0))
OP(o_sqrt, nb_sqrt(tp, X0))
OP(o_erf, nb_erf(tp, X0))
OP(o_log1p, nb_log1p(tp, X0))
OP(o_expm1, nb_expm1(tp, X0))
OP(o_softplus, nb_softplus(tp, X0))
OP(o_gelu, nb_gelu(tp, X0))
OP(o_gelu_tanh, nb_gelu_tanh(tp, X0))
OP(o_sum, nb_sum(tp, nb_square(tp, X0)))
OP(o_mean, nb_mean(tp, nb_sin(tp, X0)))
OP(o_sum_axis, nb_sum_axis(tp, nb_mul(tp, X0, X0), -1, false))
OP(o_mean_axis, nb_mean_axis(tp, nb_exp(tp, X0), 0, true))
OP(o_logsumexp, nb_logsumexp(tp, X0, -1, false))
OP(o_var, nb_var_axis(tp, X0, 0, true, 1))
OP(o_max, nb_max_axis(tp, X0, -1, false))
OP(o_min, nb_min_axis(tp, X0, 0, true))
OP(o_softmax, nb_softmax(tp, X0, -1))
OP(o_log_softmax, nb_log_softmax(tp, X0, 0))
OP(o_layer_norm, nb_layer_norm(tp, X0, NULL, NULL, 1e-5))
OP(o_reshape, nb_reshape(tp, nb_sin(tp, X0), NB_DIMS(-1)))
OP(o_unsqueeze, nb_squeeze(tp, nb_unsqueeze(tp, nb_sin(tp, X0), 1), 1))
OP(o_transpose, nb_mul(tp, nb_transpose(tp, X0, 0, 1), nb_transpose(tp, X0, 0, 1)))
OP(o_broadcast_to, nb_broadcast_to(tp, nb_square(tp, X0), NB_SHAPE(2, 3, 4)))
OP(o_sum_to, nb_sum_to(tp, nb_square(tp, X0), NB_SHAPE(1, 4)))
OP(o_pad, nb_pad(tp, nb_square(tp, X0), ((size_t[]){1, 0, 2, 1})))
OP(o_slice, nb_slice(tp, nb_square(tp, X0), 1, 0, NB_END, 2))
OP(o_slice_view, nb_slice(tp, nb_square(tp, X0), 0, 1, 3, 1))
OP(o_index_select, nb_index_select(tp, nb_square(tp, X0), 1, ((size_t[]){3, 0, 3, 1}), 4))
OP(o_concat, nb_concat(tp, ((nb_tensor *[]){X0, nb_square(tp, X0), X0, nb_sin(tp, X0)}), 4, 1))
OP(o_stack, nb_stack(tp, ((nb_tensor *[]){X0, nb_square(tp, X0)}), 2, 0))
OP(o_add, nb_add(tp, X0, X1))
OP(o_sub, nb_sub(tp, X0, X1))
OP(o_mul, nb_mul(tp, X0, X1))
OP(o_div, nb_div(tp, X0, X1))
OP(o_maximum, nb_maximum(tp, X0, X1))
OP(o_minimum, nb_minimum(tp, X0, X1))
OP(o_matmul, nb_matmul(tp, X0, X1))
OP(o_matmul_tt, nb_matmul_t(tp, X0, X1, true, true))
OP(o_linear, nb_linear(tp, X0, X1, nb_sin(tp, nb_slice(tp, nb_sum_axis(tp, X1, 0, false), 0, 0, NB_END, 1))))
OP(o_linear_col, nb_linear_t(tp, X1, X0, nb_reshape(tp, nb_cos(tp, nb_sum_axis(tp, X1, 0, false)), NB_DIMS(-1, 1)),
                             true, true))
OP(o_mse, nb_mse(tp, X0, X1))
OP(o_huber, nb_huber(tp, X0, X1, 0.5))
OP(o_smooth_l1, nb_smooth_l1(tp, X0, X1, 0.5))
OP(o_bce_logits, nb_bce_logits(tp, X0, nb_sigmoid(tp, X1)))
OP(o_bce, nb_bce(tp, nb_sigmoid(tp, X0), nb_sigmoid(tp, X1)))
OP(o_sce_probs, nb_softmax_cross_entropy(tp, X0, nb_softmax(tp, X1, -1), -1))
OP(o_where, nb_where(tp, nb_from_array(tp, NB_F64, NB_SHAPE(4), ((double[]){1, 0, 0, 1})), X0, X1))
#undef X0
#undef X1

typedef struct {
    const char *name;
    apply_fn f;
    double lo, hi;
    bool kink;
} unary_case;

static void test_every_unary_op_to_second_order(void **state) {
    (void)state;
    const unary_case cases[] = {
        {"neg", o_neg, -2, 2, false},          {"scale", o_scale, -2, 2, false},
        {"add_scalar", o_add_scalar, -2, 2, false}, {"exp", o_exp, -2, 1, false},
        {"log", o_log, 0.3, 3, false},         {"sigmoid", o_sigmoid, -3, 3, false},
        {"tanh", o_tanh, -2, 2, false},        {"relu", o_relu, -2, 2, true},
        {"leaky_relu", o_leaky, -2, 2, true},  {"square", o_square, -1.5, 1.5, false},
        {"pow 2.5", o_pow, 0.3, 2, false},     {"pow 0", o_pow0, -2, 2, false},
        {"pow -1.5", o_pow_neg, 0.5, 2, false}, {"sin", o_sin, -3, 3, false},
        {"cos", o_cos, -3, 3, false},          {"clamp", o_clamp, -1, 1, true},
        {"abs", o_abs, -2, 2, true},           {"sqrt", o_sqrt, 0.3, 3, false},
        {"erf", o_erf, -2, 2, false},          {"log1p", o_log1p, -0.5, 2, false},
        {"expm1", o_expm1, -2, 1, false},      {"softplus", o_softplus, -3, 3, false},
        {"gelu", o_gelu, -3, 3, false},        {"gelu_tanh", o_gelu_tanh, -3, 3, false},
    };
    nb_rng rng;
    nb_rng_seed(&rng, 64);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int trial = 0; trial < 2; trial++) {
            size_t shape[3];
            int nd = (int)(nb_rng_next(&rng) % 4);
            for (int d = 0; d < nd; d++) shape[d] = 1 + nb_rng_next(&rng) % 3;
            nb_tensor *x = random_input(&rng, nd, shape, cases[c].lo, cases[c].hi, cases[c].kink);
            /* clamp's kinks at ±0.5 */
            for (size_t i = 0; cases[c].f == o_clamp && i < nb_tensor_size(x); i++)
                if (fabs(fabs(nb_get(x, i)) - 0.5) < 0.05) nb_set(x, i, nb_get(x, i) * 0.7);
            assert_gradgradcheck(head, &x, 1, (void *)cases[c].f, cases[c].name);
            nb_tensor_free(x);
        }
}

static void test_every_other_op_to_second_order(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 65);
    /* one input of shape (3, 4) */
    const struct { const char *name; apply_fn f; } one[] = {
        {"sum", o_sum},           {"mean", o_mean},         {"sum_axis", o_sum_axis},
        {"mean_axis", o_mean_axis}, {"logsumexp", o_logsumexp}, {"var", o_var},
        {"max_axis", o_max},      {"min_axis", o_min},      {"softmax", o_softmax},
        {"log_softmax", o_log_softmax}, {"layer_norm", o_layer_norm}, {"reshape", o_reshape},
        {"unsqueeze/squeeze", o_unsqueeze}, {"transpose", o_transpose}, {"broadcast_to", o_broadcast_to},
        {"sum_to", o_sum_to},     {"pad", o_pad},           {"slice", o_slice},
        {"slice (view)", o_slice_view}, {"index_select", o_index_select}, {"concat", o_concat},
        {"stack", o_stack},
    };
    for (size_t c = 0; c < sizeof one / sizeof *one; c++) {
        nb_tensor *x = random_input(&rng, NB_SHAPE(3, 4), -1.5, 1.5, false);
        assert_gradgradcheck(head, &x, 1, (void *)one[c].f, one[c].name);
        nb_tensor_free(x);
    }
    /* two inputs, broadcasting: (3, 4) with (4,), (3, 1), (3, 4) and the same tensor twice */
    const struct { const char *name; apply_fn f; } two[] = {
        {"add", o_add}, {"sub", o_sub}, {"mul", o_mul}, {"div", o_div}, {"maximum", o_maximum}, {"minimum", o_minimum},
        {"mse", o_mse}, {"huber", o_huber}, {"smooth_l1", o_smooth_l1}, {"bce_logits", o_bce_logits}, {"bce", o_bce},
        {"softmax_cross_entropy", o_sce_probs}, {"where", o_where},
    };
    const size_t b_shapes[3][2] = {{4, 0}, {3, 1}, {3, 4}};
    const int b_nd[3] = {1, 2, 2};
    for (size_t c = 0; c < sizeof two / sizeof *two; c++)
        for (int s = 0; s < 4; s++) {
            bool loss = c >= 6 && c <= 11;
            if (loss && s < 2) continue; /* losses take equal shapes */
            nb_tensor *a = random_input(&rng, NB_SHAPE(3, 4), -1.5, 1.5, false);
            nb_tensor *b = s == 3 ? a : random_input(&rng, b_nd[s], b_shapes[s], 0.5, 1.5, false);
            if (c >= 4 && c <= 5 && s < 3) /* maximum/minimum: keep away from ties */
                for (size_t i = 0; i < nb_tensor_size(b); i++) nb_set(b, i, nb_get(b, i) + 3 * (double)(i % 2) - 1.5);
            if ((c == 7 || c == 8) && s < 3) /* the robust losses' kinks at |a - b| = 0.5 */
                for (size_t i = 0; i < 12; i++)
                    if (fabs(fabs(nb_get(a, i) - nb_get(b, i)) - 0.5) < 0.05) nb_set(a, i, nb_get(a, i) + 0.2);
            nb_tensor *in[2] = {a, b};
            if (!(c >= 4 && c <= 5 && s == 3)) { /* maximum(a, a) is a tie everywhere */
                char what[64];
                snprintf(what, sizeof what, "%s, case %d", two[c].name, s);
                assert_gradgradcheck(s == 3 ? head_same : head, in, s == 3 ? 1 : 2, (void *)two[c].f, what);
            }
            if (b != a) nb_tensor_free(b);
            nb_tensor_free(a);
        }
    /* products: matrices, transposes, linear's biases, stacks, vectors */
    nb_tensor *A = random_input(&rng, NB_SHAPE(3, 4), -1, 1, false), *B = random_input(&rng, NB_SHAPE(4, 2), -1, 1, false);
    nb_tensor *AB[2] = {A, B};
    assert_gradgradcheck(head, AB, 2, (void *)o_matmul, "matmul");
    assert_gradgradcheck(head, AB, 2, (void *)o_linear, "linear, row bias");
    nb_tensor *Bt = random_input(&rng, NB_SHAPE(2, 3), -1, 1, false), *ABt[2] = {A, Bt};
    assert_gradgradcheck(head, ABt, 2, (void *)o_matmul_tt, "matmul, both transposed");
    nb_tensor *C = random_input(&rng, NB_SHAPE(4, 3), -1, 1, false), *AC[2] = {C, A};
    assert_gradgradcheck(head, AC, 2, (void *)o_linear_col, "linear, column bias");
    nb_tensor *S = random_input(&rng, NB_SHAPE(2, 3, 4), -1, 1, false), *v = random_input(&rng, NB_SHAPE(4), -1, 1, false);
    nb_tensor *SB[2] = {S, B}, *Sv[2] = {S, v}, *vB[2] = {v, B};
    assert_gradgradcheck(head, SB, 2, (void *)o_matmul, "matmul of a stack by a matrix");
    assert_gradgradcheck(head, Sv, 2, (void *)o_matmul, "matmul of a stack by a vector");
    assert_gradgradcheck(head, vB, 2, (void *)o_matmul, "matmul of a vector by a matrix");
    nb_tensor *all[6] = {A, B, Bt, C, S, v};
    for (int k = 0; k < 6; k++) nb_tensor_free(all[k]);
}

/* The ops with more than one kind of input: layer norm with its affine
 * parameters, gather with an index, dropout with a generator seeded the
 * same on every evaluation (so that the mask is the same). */
static nb_tensor *with_parameters(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tensor *index = nb_from_array(tp, NB_F64, NB_SHAPE(3, 2), ((double[]){0, 3, 1, 1, 2, 0}));
    nb_tensor *y = nb_layer_norm(tp, in[0], in[1], in[2], 1e-5);
    nb_tensor *z = nb_dropout(tp, nb_gather(tp, y, 1, index), 0.3, &rng);
    return nb_sum(tp, nb_mul(tp, nb_tanh(tp, z), nb_sin(tp, z)));
}

static void test_ops_with_parameters_to_second_order(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 67);
    nb_tensor *in[3] = {random_input(&rng, NB_SHAPE(3, 4), -1.5, 1.5, false),
                        random_input(&rng, NB_SHAPE(4), 0.5, 1.5, false), random_input(&rng, NB_SHAPE(4), -1, 1, false)};
    assert_gradgradcheck(with_parameters, in, 3, NULL, "layer_norm, gather, dropout");
    for (int k = 0; k < 3; k++) nb_tensor_free(in[k]);
}

/* A network's second derivatives in one piece: a two-layer MLP with
 * fan-out (W1 used twice), softmax cross-entropy with class indices. */
static nb_tensor *mlp(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    nb_tensor *X = nb_from_array(tp, NB_F64, NB_SHAPE(3, 2), ((double[]){0.5, -1, 1, 0.25, -0.5, 2}));
    nb_tensor *y = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){0, 2, 1}));
    nb_tensor *h = nb_gelu(tp, nb_linear(tp, X, in[0], in[1]));
    nb_tensor *h2 = nb_tanh(tp, nb_matmul_t(tp, h, in[0], false, true)); /* W1 again */
    return nb_softmax_cross_entropy(tp, nb_matmul(tp, nb_concat(tp, ((nb_tensor *[]){h, h2}), 2, 1), in[2]), y, 1);
}

static void test_network_to_second_order(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 66);
    nb_tensor *in[3] = {random_input(&rng, NB_SHAPE(2, 2), -1, 1, false), random_input(&rng, NB_SHAPE(2), -1, 1, false),
                        random_input(&rng, NB_SHAPE(4, 3), -1, 1, false)};
    assert_gradgradcheck(mlp, in, 3, NULL, "mlp");
    for (int k = 0; k < 3; k++) nb_tensor_free(in[k]);
}

/* ---------------------------------------------------------------- what backward_graph gives back */

/* y = 2x, with a backward_graph that gives back, by `lie`, the right
 * gradient or a wrong one. */
enum { HONEST, SCALAR, WRONG_SIZE, TRANSPOSED, OTHER_DTYPE, OTHER_TAPE, STALE, ERRORED, FOREIGN_ERROR };
static int lie;
static nb_tape *elsewhere;
static nb_tensor *kept_from_before;
static void doubling_forward(nb_op_call *c) {
    const double *x = nb_op_input_data(c, 0);
    double *y = nb_op_output_data(c);
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = 2 * x[i];
}
static void doubling_backward(nb_op_call *c) {
    const double *g = nb_op_grad_output(c);
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    for (size_t i = 0; gx && i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + 2 * g[i] : 2 * g[i];
}
static void doubling_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    switch (lie) {
    case HONEST: grad_in[0] = nb_scale(tp, G, 2); break;
    case SCALAR: grad_in[0] = nb_sum(tp, G); break;
    case WRONG_SIZE: grad_in[0] = nb_ones(tp, NB_F64, NB_SHAPE(1)); break;
    case TRANSPOSED: grad_in[0] = nb_ones(tp, NB_F64, NB_SHAPE(1, 3)); break;
    case OTHER_DTYPE: grad_in[0] = nb_cast(tp, G, NB_F32); break;
    case OTHER_TAPE: grad_in[0] = nb_ones(elsewhere, NB_F64, NB_SHAPE(3)); break;
    case STALE: grad_in[0] = kept_from_before; break;
    case ERRORED: grad_in[0] = nb_add(tp, G, nb_ones(tp, NB_F64, NB_SHAPE(2))); break;
    default: grad_in[0] = nb_add(elsewhere, nb_ones(elsewhere, NB_F64, NB_SHAPE(3)), nb_ones(elsewhere, NB_F64,
                                                                                           NB_SHAPE(2)));
    }
}
static const nb_op_def doubling = {.name = "doubling", .forward = doubling_forward, .backward = doubling_backward,
                                   .backward_graph = doubling_graph, .derivative = {"2"}};

static void test_backward_graph_results_are_checked(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    elsewhere = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, -3}));
    nb_requires_grad(x, true);
    const nb_status expect[] = {NB_OK, NB_ERR_SHAPE, NB_ERR_SHAPE, NB_ERR_SHAPE, NB_ERR_DTYPE,
                                NB_ERR_STATE, NB_ERR_STATE, NB_ERR_SHAPE, NB_ERR_SHAPE};
    const char *says[] = {"", "()", "(1,)", "(1, 3)", "float32", "another tape", "before nb_tape_reset",
                          "broadcast", "errored"};
    for (lie = HONEST; lie <= FOREIGN_ERROR; lie++) {
        nb_tape_reset(tp);
        nb_tape_reset(elsewhere);
        kept_from_before = nb_ones(tp, NB_F64, NB_SHAPE(3));
        nb_tape_reset(tp);
        /* L = sum(doubling(pad(x))): pad's backward reads a gradient of its output's (3,) */
        nb_tensor *p = nb_pad(tp, x, ((size_t[]){0, 1}));
        nb_tensor *L = nb_sum(tp, nb_op(tp, &doubling, &p, 1, NB_F64, NB_SHAPE(3), NULL, 0)), *g = NULL;
        nb_status st = nb_grad(L, &x, 1, &g, true);
        assert_int_equal(st, expect[lie]);
        if (st == NB_OK) {
            assert_close(nb_get(g, 0), 2, 0);
            assert_close(nb_get(g, 1), 2, 0);
            continue;
        }
        assert_message_has(nb_last_error(), lie == ERRORED ? "add" : "doubling", says[lie]);
        if (lie < ERRORED) assert_message_has(nb_last_error(), "input 1", "(3,)", "test_higher_order.c:");
        assert_int_equal(nb_tape_status(tp), expect[lie]);
    }
    nb_tensor_free(x);
    nb_tape_free(elsewhere);
    nb_tape_free(tp);
}

/* A seed for create_graph of the output's size but another shape: taken
 * in the output's shape, as nb_backward_seed does. */
static void test_seed_of_another_shape(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3, 1), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    nb_tensor *seed = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, 10, 100})), *g[2];
    for (int graph = 0; graph < 2; graph++) {
        assert_int_equal(nb_grad_seed(nb_square(tp, x), seed, &x, 1, &g[graph], graph), NB_OK);
        assert_int_equal(nb_tensor_ndim(g[graph]), 2);
        for (size_t i = 0; i < 3; i++) assert_close(nb_get(g[graph], i), 2 * (i + 1) * pow(10, (double)i), 0);
    }
    assert_int_equal(nb_tensor_dim(g[1], 0), 3);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Tensors that are not op inputs but are read all the same: a seed, the
 * tangents, gradcheck's inputs.  One kept across nb_tape_reset is refused. */
static nb_tensor *square_sum(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    return nb_sum(tp, nb_square(tp, in[0]));
}
static void test_stale_tensors_everywhere(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_requires_grad(x, true);
    nb_tensor *old = nb_full(tp, NB_F64, NB_SHAPE(2), 100), *g;
    nb_tape_reset(tp);
    nb_tensor *fresh = nb_full(tp, NB_F64, NB_SHAPE(2), 100); /* the reused memory holds 100s again */
    (void)fresh;
    nb_tensor *y = nb_mul(tp, x, nb_ones(tp, NB_F64, NB_SHAPE(2)));
    assert_int_equal(nb_backward_seed(y, old), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_backward", "seed", "before nb_tape_reset", "test_higher_order.c:");
    assert_false(nb_has_grad(x));
    assert_int_equal(nb_grad_seed(y, old, &x, 1, &g, false), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_grad", "seed");
    assert_int_equal(nb_jvp(y, &x, 1, &old, &g), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_jvp", "tangent 1", "before nb_tape_reset");
    nb_tensor *none = NULL; /* and the tensors of a non-scalar output's jvp are checked at all */
    assert_int_equal(nb_jvp(y, &none, 1, &x, &g), NB_ERR_NULL);
    assert_message_has(nb_last_error(), "nb_jvp", "tensor 1", "NULL");
    assert_int_equal(nb_grad(nb_sum(tp, y), &old, 1, &g, false), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_grad", "before nb_tape_reset");
    nb_gradcheck_opts o;
    nb_gradcheck_default_opts(&o);
    nb_gradcheck_result r = nb_gradcheck(square_sum, &old, 1, NULL, &o);
    assert_int_equal(r.status, NB_ERR_STATE);
    assert_message_has(r.message, "nb_gradcheck", "input 0", "before nb_tape_reset");
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A call that fails leaves every one of its results an errored tensor, as
 * nb_grad always did: nb_hvp and nb_jvp left hv[i] and result[0] as they
 * were, so a caller reading them after a failure read whatever they held. */
static void test_failed_calls_leave_errored_results(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_tensor *y = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){3, 4, 5}));
    nb_tensor *mark = nb_zeros(NULL, NB_F64, NB_SHAPE(1)); /* what the results held before */
    nb_requires_grad(x, true);
    nb_requires_grad(y, true);
    nb_tensor *wrt[2] = {x, y}, *res[2];
    for (int round = 0; round < 6; round++) {
        nb_tape_reset(tp);
        nb_tensor *f = nb_add(tp, nb_sum(tp, nb_square(tp, x)), nb_sum(tp, nb_exp(tp, y)));
        nb_tensor *stale = nb_ones(other, NB_F64, NB_SHAPE(3)), *short_v = nb_ones(tp, NB_F64, NB_SHAPE(2));
        nb_tape_reset(other);
        nb_tensor *v[2] = {x, y};
        nb_status st;
        res[0] = res[1] = mark;
        switch (round) {
        case 0: /* an error on the tape */
            nb_slice(tp, x, 0, 5, 6, 1);
            st = nb_hvp(f, wrt, 2, v, res);
            break;
        case 1: /* the second vector does not fit y */
            v[1] = short_v;
            st = nb_hvp(f, wrt, 2, v, res);
            break;
        case 2: /* the second vector is NULL */
            v[1] = NULL;
            st = nb_hvp(f, wrt, 2, v, res);
            break;
        case 3: /* a non-scalar output */
            st = nb_hvp(nb_square(tp, y), wrt, 2, v, res);
            break;
        case 4: /* a tangent from before nb_tape_reset */
            v[1] = stale;
            st = nb_jvp(f, wrt, 2, v, res);
            break;
        default: /* an error on the tape, for jvp */
            nb_slice(tp, x, 0, 5, 6, 1);
            st = nb_jvp(f, wrt, 2, v, res);
            break;
        }
        assert_int_not_equal(st, NB_OK);
        int results = round >= 4 ? 1 : 2; /* jvp: one result, J t */
        for (int i = 0; i < results; i++) {
            assert_true(res[i] != mark);
            assert_int_equal(nb_tensor_status(res[i]), st);
        }
    }
    /* and the dense ones return errored tensors */
    nb_tape_reset(tp);
    nb_tensor *f = nb_sum(tp, nb_square(tp, x));
    nb_slice(tp, x, 0, 5, 6, 1);
    assert_int_not_equal(nb_tensor_status(nb_jacobian(nb_square(tp, x), x)), NB_OK);
    assert_int_not_equal(nb_tensor_status(nb_hessian(f, x)), NB_OK);
    nb_tensor_free(mark);
    nb_tensor_free(x);
    nb_tensor_free(y);
    nb_tape_free(other);
    nb_tape_free(tp);
}

/* nb_grad with create_graph refuses, as nb_backward does, an input written
 * after the op used it: its gradient ops read x as it is now, so for
 * L = sum(e^x x) at x = (1, 2) with x[0] set to 3 afterwards, it gave
 * dL/dx0 = e^1 (1 + 3) = 10.87 (neither 2e at the old x nor 4e^3 at the
 * new one) with NB_OK. */
static void test_create_graph_refuses_inputs_written_after_use(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){1, 2}));
    nb_requires_grad(x, true);
    nb_tensor *L = nb_sum(tp, nb_mul(tp, nb_exp(tp, x), x));
    nb_tensor *g[1];
    assert_int_equal(nb_grad(L, &x, 1, g, true), NB_OK); /* before any write: 2e, 3e^2 */
    assert_close(nb_get(g[0], 0), 2 * exp(1.0), 1e-12);
    assert_close(nb_get(g[0], 1), 3 * exp(2.0), 1e-12);
    nb_set(x, 0, 3);
    assert_int_equal(nb_grad(L, &x, 1, g, true), NB_ERR_STATE);
    assert_int_equal(nb_tensor_status(g[0]), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_grad", "an input (2,) of mul", "changed after the op used it");
    nb_tensor_free(x);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hessian_of_a_quadratic_form),
        cmocka_unit_test(test_hessian_of_the_logistic_loss),
        cmocka_unit_test(test_third_derivative_of_sin),
        cmocka_unit_test(test_newton_on_the_seed_parabola),
        cmocka_unit_test(test_hvp_jvp_and_jacobian),
        cmocka_unit_test(test_hvp_holds_v_constant),
        cmocka_unit_test(test_smooth_l1_with_beta_0_to_second_order),
        cmocka_unit_test(test_grad_semantics),
        cmocka_unit_test(test_custom_ops_and_second_derivatives),
        cmocka_unit_test(test_every_unary_op_to_second_order),
        cmocka_unit_test(test_every_other_op_to_second_order),
        cmocka_unit_test(test_ops_with_parameters_to_second_order),
        cmocka_unit_test(test_network_to_second_order),
        cmocka_unit_test(test_backward_graph_results_are_checked),
        cmocka_unit_test(test_seed_of_another_shape),
        cmocka_unit_test(test_stale_tensors_everywhere),
        cmocka_unit_test(test_failed_calls_leave_errored_results),
        cmocka_unit_test(test_create_graph_refuses_inputs_written_after_use),
    };
    return cmocka_run_group_tests_name("higher order", tests, NULL, NULL);
}
