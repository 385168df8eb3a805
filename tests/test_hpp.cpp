// include/nabla.hpp, the C++ layer: the projectile and a small network
// through the header and through the C API give the same values and
// gradients bit for bit; operators with a double on either side are the C
// calls they stand for; errors throw nb::error with nabla's message (or,
// built without exceptions, flow as errored tensors); comparisons do not
// compile; nb::grad with create_graph; the owners free what they own (the
// sanitizer build checks it).  The Makefile builds it as C++17 (test_hpp),
// C++20 (test_hpp_cxx20) and C++11 without exceptions (test_hpp_noexcept).
#include <nabla.hpp>
#include "../bench/projectile_tape.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" { // (cmocka.h declares only part of its API so)
#include <cmocka.h>
}

static void expect_same(double got, double want, const char *what) {
    if (std::memcmp(&got, &want, sizeof got) != 0)
        fail_msg("%s: %.17g through the header, %.17g in C", what, got, want);
}

// ---------------------------------------------------------------- the projectile

static const double DT = PROJ_DT, K = PROJ_K, G = PROJ_G;

static nb::tensor projectile_hpp(const nb::tensor &theta, const nb::tensor &speed, int n) {
    nb::tensor vx = speed * cos(theta), vy = speed * sin(theta);
    nb::tensor x = nb::scalar(0), y = nb::scalar(0);
    for (int i = 0; i < n; i++) {
        nb::tensor v = sqrt(vx * vx + vy * vy);
        nb::tensor kv = v * -K;
        nb::tensor ax = kv * vx, ay = kv * vy - G;
        x = x + vx * DT;
        y = y + DT * vy;
        vx += ax * DT;
        vy = vy + ay * DT;
    }
    return x + y;
}

static void test_projectile_bitwise(void **) {
    nb::tape tp;
    nb::use_tape on(tp);
    nb::parameter theta = nb::parameter::scalar(0.7), speed = nb::parameter::scalar(20);
    nb::tensor f = projectile_hpp(theta, speed, 1000);
    nb::backward(f);
    double f_hpp = f.item(), g_theta = theta.grad(), g_speed = speed.grad();
    size_t entries = tp.size();

    nb_tape *ctp = nb_tape_new();
    nb_tensor *ct = nb_scalar(NULL, NB_F64, 0.7), *cs = nb_scalar(NULL, NB_F64, 20);
    nb_requires_grad(ct, true);
    nb_requires_grad(cs, true);
    nb_tensor *cf = projectile_tape(ctp, ct, cs, 1000);
    assert_int_equal(nb_backward(cf), NB_OK);
    expect_same(f_hpp, nb_item(cf), "f");
    expect_same(g_theta, nb_grad_get(ct, 0), "df/dtheta");
    expect_same(g_speed, nb_grad_get(cs, 0), "df/dspeed");
    assert_int_equal(entries, nb_tape_size(ctp)); // one C op per operator
    assert_true(std::fabs(g_theta) > 1); // (a real gradient: central differences in tests/test_scalar.c)
    nb_tensor_free(ct);
    nb_tensor_free(cs);
    nb_tape_free(ctp);
}

// ---------------------------------------------------------------- a network, and the operators

// loss = mean((sigmoid(X W + b) - T)²) / 2 + 0.1 sum(W³) + (1 - mean(tanh W)) + sum(2 / (exp W + 1))
//        + sum(W / 3) + mean(maximum(W, -W)) - (sum(clamp(-W, -0.2, 0.3) * 4) - sum(relu(W) - 0.5)),
// one term using W a statement, on both sides: C and C++ leave the order in which the operands of one
// expression are evaluated (so recorded) unspecified, and W's gradient adds its parts in the order recorded.
static nb::tensor network_hpp(const nb::tensor &X, const nb::tensor &W, const nb::tensor &b, const nb::tensor &T) {
    nb::tensor y = sigmoid(matmul(X, W) + b);
    nb::tensor loss = mean(square(y - T)) / 2;
    nb::tensor cube = 0.1 * sum(pow(W, 3));
    loss = loss + cube;
    nb::tensor th = mean(tanh(W));
    loss += 1 - th;
    nb::tensor soft = sum(2 / (exp(W) + 1));
    loss = loss + soft;
    nb::tensor third = sum(W / 3);
    loss = loss + third;
    nb::tensor mx = mean(maximum(W, -W));
    loss = loss + mx;
    nb::tensor cl = sum(clamp(-W, -0.2, 0.3) * 4);
    nb::tensor rl = sum(relu(W) - 0.5);
    loss -= cl - rl;
    return loss;
}

static nb_tensor *network_c(nb_tape *tp, nb_tensor *X, nb_tensor *W, nb_tensor *b, nb_tensor *T) {
    nb_tensor *y = nb_sigmoid(tp, nb_add(tp, nb_matmul(tp, X, W), b));
    nb_tensor *loss = nb_div(tp, nb_mean(tp, nb_square(tp, nb_sub(tp, y, T))), nb_scalar(tp, NB_F64, 2));
    nb_tensor *cube = nb_scale(tp, nb_sum(tp, nb_pow(tp, W, 3)), 0.1);
    loss = nb_add(tp, loss, cube);
    nb_tensor *th = nb_mean(tp, nb_tanh(tp, W));
    loss = nb_add(tp, loss, nb_add_scalar(tp, nb_neg(tp, th), 1));
    nb_tensor *soft = nb_sum(tp, nb_div(tp, nb_scalar(tp, NB_F64, 2), nb_add_scalar(tp, nb_exp(tp, W), 1)));
    loss = nb_add(tp, loss, soft);
    nb_tensor *third = nb_sum(tp, nb_div(tp, W, nb_scalar(tp, NB_F64, 3)));
    loss = nb_add(tp, loss, third);
    nb_tensor *mx = nb_mean(tp, nb_maximum(tp, W, nb_neg(tp, W)));
    loss = nb_add(tp, loss, mx);
    nb_tensor *cl = nb_sum(tp, nb_scale(tp, nb_clamp(tp, nb_neg(tp, W), -0.2, 0.3), 4));
    nb_tensor *rl = nb_sum(tp, nb_add_scalar(tp, nb_relu(tp, W), -0.5));
    return nb_sub(tp, loss, nb_sub(tp, cl, rl));
}

static void test_network_bitwise(void **) {
    nb_rng rng;
    nb_rng_seed(&rng, 4);
    nb_tensor *X = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(5, 4), 0, 1);
    nb_tensor *T = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(5, 3), 0, 1);
    std::vector<double> w(12), bias(3);
    for (double &v : w) v = nb_rng_normal(&rng) * 0.5;
    for (double &v : bias) v = nb_rng_normal(&rng) * 0.1;

    nb::tape tp;
    nb::use_tape on(tp);
    nb::parameter W(NB_F64, {4, 3}, w), b(NB_F64, {3}, bias);
    nb::tensor loss = network_hpp(nb::tensor(X), W, b, nb::tensor(T));
    nb::backward(loss);

    nb_tape *ctp = nb_tape_new();
    nb_tensor *cW = nb_from_array(NULL, NB_F64, NB_SHAPE(4, 3), w.data());
    nb_tensor *cb = nb_from_array(NULL, NB_F64, NB_SHAPE(3), bias.data());
    nb_requires_grad(cW, true);
    nb_requires_grad(cb, true);
    nb_tensor *closs = network_c(ctp, X, cW, cb, T);
    assert_int_equal(nb_backward(closs), NB_OK);
    expect_same(loss.item(), nb_item(closs), "loss");
    for (size_t i = 0; i < 12; i++) expect_same(W.grad(i), nb_grad_get(cW, i), "dL/dW");
    for (size_t i = 0; i < 3; i++) expect_same(b.grad(i), nb_grad_get(cb, i), "dL/db");
    nb_tensor_free(cW);
    nb_tensor_free(cb);
    nb_tensor_free(X);
    nb_tensor_free(T);
    nb_tape_free(ctp);
}

// Each operator with a double is the C call named beside it, value for value.
static void test_scalar_operators(void **) {
    nb::tape tp;
    nb::use_tape on(tp);
    const double vals[] = {0.3, -1.7, 2.5};
    nb_tensor *cx = nb_from_array(tp.get(), NB_F32, NB_SHAPE(3), vals);
    nb::tensor x(cx, tp.get());
    nb_tape *c = tp.get();
    nb_tensor *three = nb_scalar(c, NB_F32, 3), *seven = nb_scalar(c, NB_F32, 7);
    std::pair<nb::tensor, nb_tensor *> cases[] = {
        {x + 1.5, nb_add_scalar(c, cx, 1.5)},         {1.5 + x, nb_add_scalar(c, cx, 1.5)},
        {x - 0.1, nb_add_scalar(c, cx, -0.1)},        {0.1 - x, nb_add_scalar(c, nb_neg(c, cx), 0.1)},
        {x * 0.3, nb_scale(c, cx, 0.3)},              {0.3 * x, nb_scale(c, cx, 0.3)},
        {x / 3, nb_div(c, cx, three)},                {7 / x, nb_div(c, seven, cx)},
        {-x, nb_neg(c, cx)},                          {x * x - x / x, nb_sub(c, nb_mul(c, cx, cx), nb_div(c, cx, cx))},
    };
    for (auto &k : cases)
        for (size_t i = 0; i < 3; i++) expect_same(k.first.value(i), nb_get(k.second, i), "operator");
    // (and the values are what they say: a float32 x / 3 is the correctly rounded quotient)
    for (size_t i = 0; i < 3; i++) assert_true(cases[6].first.value(i) == (double)((float)vals[i] / 3.0f));
    assert_int_equal(cases[6].first.dtype(), NB_F32);
}

// Comparisons are deleted: `x < y` does not compile (nor any of the six, with a double on either side).
template <class A, class B, class = decltype(std::declval<A>() < std::declval<B>())>
std::true_type has_less(int);
template <class, class>
std::false_type has_less(...);
template <class A, class B, class = decltype(std::declval<A>() == std::declval<B>())>
std::true_type has_equal(int);
template <class, class>
std::false_type has_equal(...);
static_assert(!decltype(has_less<nb::tensor, nb::tensor>(0))::value, "tensor < tensor must not compile");
static_assert(!decltype(has_less<nb::tensor, double>(0))::value, "tensor < double must not compile");
static_assert(!decltype(has_less<double, nb::tensor>(0))::value, "double < tensor must not compile");
static_assert(!decltype(has_equal<nb::tensor, nb::tensor>(0))::value, "tensor == tensor must not compile");
static_assert(decltype(has_less<double, double>(0))::value, "the trait itself works");
static_assert(!std::is_convertible<nb::tensor, double>::value && !std::is_convertible<nb::tensor, bool>::value,
              "no silent conversion to a number");

// ---------------------------------------------------------------- higher order, RAII

static void test_grad_create_graph(void **) {
    nb::tape tp;
    nb::use_tape on(tp);
    nb::parameter x(NB_F64, {3}, std::vector<double>{1, -2, 0.5});
    nb::tensor y = sum(pow(x, 3));
    std::vector<nb::tensor> g = nb::grad(y, {x}, true); // 3x²
    std::vector<nb::tensor> h = nb::grad(sum(g[0]), {x}); // 6x
    for (size_t i = 0; i < 3; i++) {
        assert_true(std::fabs(g[0].value(i) - 3 * x.value(i) * x.value(i)) < 1e-12);
        assert_true(std::fabs(h[0].value(i) - 6 * x.value(i)) < 1e-12);
    }
    assert_true(x.grad(0) == 0); // nb_grad leaves the parameter's own gradient alone
}

static void test_owners(void **) {
    nb_tape *seen;
    {
        nb::tape tp;
        seen = tp.get();
        nb::use_tape on(tp);
        assert_ptr_equal(nb::current_tape(), seen);
        nb::parameter p = nb::parameter::scalar(2);
        nb::parameter q = std::move(p); // p gives up its tensor; only q frees it
        assert_null(p.get());
        nb::tensor z = q * 3 + 1;
        assert_ptr_equal(z.tape(), seen);
        nb::backward(z);
        assert_true(q.grad() == 3);
        nb::use_tape off(nullptr);
        assert_null(nb::current_tape());
    }
    assert_null(nb::current_tape()); // each scope put back what it found
}

// An op records on its operands' tape, whichever operand has one: linear's bias too.
static void test_linear_on_the_bias_tape(void **) {
    nb::tape tp;
    nb::tensor bias;
    {
        nb::use_tape on(tp);
        bias = nb::full({2}, 0.25);
    }
    assert_null(nb::current_tape());
    nb::parameter x(NB_F64, {1, 3}, {1, 2, 3}), W(NB_F64, {3, 2}, {1, 0, 0, 1, 1, 1});
    nb::tensor y = linear(x, W, bias); // x and W on the heap: the tape is the bias's
    assert_int_equal(y.status(), NB_OK);
    assert_ptr_equal(y.tape(), tp.get());
    assert_true(y.value(0) == 1 + 3 + 0.25 && y.value(1) == 2 + 3 + 0.25); // x W + bias by hand
    nb::backward(sum(y));
    assert_true(W.grad(0) == 1 && W.grad(5) == 3);
}

// nb_recompute's function in C++: an nb:: op failing inside it throws; nb::no_throw turns that into the
// status it returns, so the tape leaves the function (reset, gradients on) and backward works after.
static nb_status broadcasting_block(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    nb::use_tape on(tp);
    nb::tensor x(in[0], tp);
    std::size_t n = *static_cast<std::size_t *>(ctx);
    out[0] = (exp(x) * nb::full({n}, 2.0)).get(); // n = 7 against x's 3: a shape error
    return NB_OK;
}
static void test_recompute_function_that_throws(void **) {
    nb::tape tp;
    nb::parameter x(NB_F64, {3}, 0.5);
    nb_tensor *in[1] = {x.get()}, *out[1];
    std::size_t n = 7;
    nb_status st = nb_recompute(tp.get(), nb::no_throw<broadcasting_block>, &n, in, 1, out, 1, nullptr);
    assert_int_equal(st, NB_ERR_SHAPE);
    assert_true(std::string(tp.error_message()).find("mul: shapes (3,) and (7,)") != std::string::npos);
    tp.reset(); // refused (the tape still inside the function) had the exception gone through nb_recompute
    assert_int_equal(tp.status(), NB_OK);
    assert_false(nb_tape_no_grad_mode(tp.get()));
    n = 3;
    assert_int_equal(nb_recompute(tp.get(), nb::no_throw<broadcasting_block>, &n, in, 1, out, 1, nullptr), NB_OK);
    nb::tensor y(out[0], tp.get());
    assert_true(y.requires_grad());
    assert_int_equal(nb::backward(sum(y)), NB_OK);
    assert_true(x.grad(0) == 2 * std::exp(0.5)); // d/dx of sum(2 e^x), the product's exact bits
}

// ---------------------------------------------------------------- errors

static void test_errors(void **) {
    nb::tape tp;
    nb::use_tape on(tp);
    nb::parameter a(NB_F64, {2, 3}, 1.0), b(NB_F64, {4}, 1.0);
#if NABLA_HPP_EXCEPTIONS
    try {
        (void)matmul(a, b);
        fail_msg("matmul of (2, 3) and (4,) did not throw");
    } catch (const nb::error &e) {
        assert_int_equal(e.status(), NB_ERR_SHAPE);
        std::string m = e.what();
        assert_true(m.find("matmul") != std::string::npos);
        assert_true(m.find("test_hpp.cpp") != std::string::npos); // the caller's line, not the header's
    }
    assert_int_equal(tp.status(), NB_ERR_SHAPE); // the tape keeps it, as in C
    tp.reset();
    try {
        (void)(a + b);
        fail_msg("a + b did not throw");
    } catch (const nb::error &e) {
        assert_int_equal(e.status(), NB_ERR_SHAPE);
        assert_true(std::string(e.what()).find("add: shapes (2, 3) and (4,) do not broadcast") != std::string::npos);
    }
    tp.reset();
    try {
        nb::backward(a * 2);
        fail_msg("backward of a (2, 3) output did not throw");
    } catch (const nb::error &e) {
        assert_int_equal(e.status(), NB_ERR_SHAPE);
    }
    {
        nb::use_tape none(nullptr);
        try {
            (void)nb::scalar(1);
            fail_msg("nb::scalar without a tape did not throw");
        } catch (const nb::error &e) {
            assert_int_equal(e.status(), NB_ERR_NULL);
            assert_true(std::string(e.what()).find("no current tape") != std::string::npos);
        }
    }
#else
    nb::tensor c = matmul(a, b);
    assert_int_equal(c.status(), NB_ERR_SHAPE);
    nb::tensor d = exp(c) + 1; // an errored tensor passes its error on
    assert_int_equal(d.status(), NB_ERR_SHAPE);
    assert_int_equal(tp.status(), NB_ERR_SHAPE);
    assert_true(std::string(tp.error_message()).find("test_hpp.cpp") != std::string::npos);
    assert_int_equal(nb::backward(d), NB_ERR_SHAPE);
    tp.reset();
    assert_int_equal(nb::backward(a * 2), NB_ERR_SHAPE);
    nb::use_tape none(nullptr);
    assert_int_equal(nb::scalar(1).status(), NB_ERR_NULL);
#endif
}

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projectile_bitwise), cmocka_unit_test(test_network_bitwise),
        cmocka_unit_test(test_scalar_operators),   cmocka_unit_test(test_grad_create_graph),
        cmocka_unit_test(test_owners),             cmocka_unit_test(test_errors),
        cmocka_unit_test(test_linear_on_the_bias_tape),
        cmocka_unit_test(test_recompute_function_that_throws),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
