/*
 * torch.nn.init's initialisers, statistically: for each, 200,000 draws must
 * have the mean and variance of the formula (within 5 standard errors,
 * the error estimated from the draws' own fourth moment) and lie within
 * its bounds, reaching them where the distribution does.  A wrong fan, a
 * wrong gain or a missing square root moves the variance far more than
 * the tolerance; a clamped normal in place of a truncated one piles draws
 * on the bounds, which is checked too.  Then the fans and gains against
 * torch's values, and the refusals.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define N 200000

typedef struct {
    double mean, var, lo, hi; /* the draws' */
    double mean_se, var_se;   /* standard errors */
    size_t at_bounds;         /* draws equal to lo or hi of the case */
} stats;

static stats measure(const nb_tensor *t, double lo, double hi) {
    stats s = {0, 0, INFINITY, -INFINITY, 0, 0, 0};
    size_t n = nb_tensor_size(t);
    for (size_t i = 0; i < n; i++) {
        double v = nb_get(t, i);
        s.mean += v;
        s.lo = fmin(s.lo, v);
        s.hi = fmax(s.hi, v);
        s.at_bounds += v == lo || v == hi;
    }
    s.mean /= (double)n;
    double m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = nb_get(t, i) - s.mean;
        s.var += d * d;
        m4 += d * d * d * d;
    }
    s.var /= (double)n;
    m4 /= (double)n;
    s.mean_se = sqrt(s.var / (double)n);
    s.var_se = sqrt((m4 - s.var * s.var) / (double)n);
    return s;
}

static void expect(const char *what, const stats *s, double mean, double var) {
    if (!(fabs(s->mean - mean) <= 5 * s->mean_se + 1e-15))
        fail_msg("%s: mean %.6g, expected %.6g (standard error %.2g)", what, s->mean, mean, s->mean_se);
    if (!(fabs(s->var - var) <= 5 * s->var_se))
        fail_msg("%s: variance %.6g, expected %.6g (standard error %.2g)", what, s->var, var, s->var_se);
}

static nb_tensor *draw(int ndim, const size_t *shape, const nb_init_opts *o, uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_tensor *t = nb_zeros(NULL, NB_F64, ndim, shape);
    if (nb_init_apply(t, o, &rng) != NB_OK) fail_msg("nb_init_apply: %s", nb_last_error());
    return t;
}

static void test_normal(void **state) {
    (void)state;
    nb_init_opts o;
    nb_init_defaults(&o, NB_INIT_NORMAL);
    o.std = 0.02; /* GPT-2's */
    o.mean = 0.1;
    nb_tensor *t = draw(NB_SHAPE(400, 500), &o, 1);
    stats s = measure(t, NAN, NAN);
    expect("normal(0.1, 0.02)", &s, 0.1, 0.02 * 0.02);
    /* a normal's tails: about 0.27% beyond 3 std (torch's draws would too) */
    size_t beyond = 0;
    for (size_t i = 0; i < N; i++) beyond += fabs(nb_get(t, i) - 0.1) > 0.06;
    assert_close((double)beyond / N, 2 * 0.5 * erfc(3 / sqrt(2.0)), 5 * sqrt(0.0027 / N));
    nb_tensor_free(t);
}

/* The standard normal's density and distribution function, for the
 * truncated normal's moments. */
static double pdf(double x) { return exp(-x * x / 2) / sqrt(2 * 3.14159265358979323846); }
static double cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

static void test_truncated_normal(void **state) {
    (void)state;
    /* torch's default [-2, 2] of N(0, 1); an asymmetric one; an upper tail;
     * a narrow one of ViT's std 0.02 within +-2 std */
    const double cases[4][4] = {{0, 1, -2, 2}, {0.5, 1, -1, 2}, {0, 1, 2, 3}, {0, 0.02, -0.04, 0.04}};
    for (int c = 0; c < 4; c++) {
        nb_init_opts o;
        nb_init_defaults(&o, NB_INIT_TRUNC_NORMAL);
        if (c == 0) assert_true(o.a == -2 && o.b == 2 && o.std == 1 && o.mean == 0);
        o.mean = cases[c][0], o.std = cases[c][1], o.a = cases[c][2], o.b = cases[c][3];
        nb_tensor *t = draw(NB_SHAPE(N), &o, 10 + (uint64_t)c);
        stats s = measure(t, o.a, o.b);
        double al = (o.a - o.mean) / o.std, be = (o.b - o.mean) / o.std, z = cdf(be) - cdf(al);
        double d = (pdf(al) - pdf(be)) / z;
        double mean = o.mean + o.std * d, var = o.std * o.std * (1 + (al * pdf(al) - be * pdf(be)) / z - d * d);
        char what[96];
        snprintf(what, sizeof what, "trunc_normal(%g, %g, [%g, %g])", o.mean, o.std, o.a, o.b);
        expect(what, &s, mean, var);
        assert_true(s.lo >= o.a && s.hi <= o.b);
        /* it reaches near both bounds, and piles nothing on them (a clamp would) */
        assert_true(s.lo < o.a + 0.01 * (o.b - o.a) && s.hi > o.b - 0.01 * (o.b - o.a));
        assert_true(s.at_bounds < 3);
        /* the mass below the middle of [a, b] */
        double mid = (o.a + o.b) / 2, p = (cdf((mid - o.mean) / o.std) - cdf(al)) / z;
        size_t below = 0;
        for (size_t i = 0; i < N; i++) below += nb_get(t, i) < mid;
        assert_close((double)below / N, p, 5 * sqrt(p * (1 - p) / N));
        nb_tensor_free(t);
    }
    /* float32 stays within the bounds too */
    nb_init_opts o;
    nb_init_defaults(&o, NB_INIT_TRUNC_NORMAL);
    o.std = 0.5, o.a = -0.25, o.b = 0.75;
    nb_rng rng;
    nb_rng_seed(&rng, 4);
    nb_tensor *f = nb_zeros(NULL, NB_F32, NB_SHAPE(10000));
    assert_int_equal(nb_init_apply(f, &o, &rng), NB_OK);
    for (size_t i = 0; i < 10000; i++) assert_true(nb_get(f, i) >= -0.25 && nb_get(f, i) <= 0.75);
    nb_tensor_free(f);
}

/* One uniform case: U(-bound, bound), variance bound^2 / 3. */
static void expect_uniform(const char *what, nb_tensor *t, double bound) {
    stats s = measure(t, NAN, NAN);
    expect(what, &s, 0, bound * bound / 3);
    assert_true(s.lo >= -bound && s.hi <= bound);
    assert_true(s.lo < -bound * (1 - 1e-3) && s.hi > bound * (1 - 1e-3));
}

static void test_xavier(void **state) {
    (void)state;
    nb_init_opts o;
    /* a convolution (64, 32, 3, 3): fan_in 288, fan_out 576; tanh's gain */
    nb_init_defaults(&o, NB_INIT_XAVIER_UNIFORM);
    o.gain = nb_init_gain(NB_GAIN_TANH, 0);
    nb_tensor *t = draw(NB_SHAPE(64, 32, 3, 3), &o, 20);
    expect_uniform("xavier_uniform (64, 32, 3, 3), gain 5/3", t, 5.0 / 3 * sqrt(6.0 / (288 + 576)));
    nb_tensor_free(t);
    /* nb_matmul's (in, out) = (200, 1000), gain 1 */
    nb_init_defaults(&o, NB_INIT_XAVIER_NORMAL);
    o.layout = NB_LAYOUT_IN_OUT;
    t = draw(NB_SHAPE(200, 1000), &o, 21);
    stats s = measure(t, NAN, NAN);
    expect("xavier_normal (200, 1000)", &s, 0, 2.0 / 1200);
    nb_tensor_free(t);
    /* the older names agree in distribution: GLOROT_NORMAL with the fans given */
    nb_rng rng;
    nb_rng_seed(&rng, 22);
    t = nb_zeros(NULL, NB_F64, NB_SHAPE(N));
    assert_int_equal(nb_init_tensor(t, NB_INIT_XAVIER_NORMAL, 300, 100, &rng), NB_OK);
    s = measure(t, NAN, NAN);
    expect("xavier_normal, fans 300 and 100", &s, 0, 2.0 / 400);
    nb_tensor_free(t);
}

static void test_kaiming(void **state) {
    (void)state;
    nb_init_opts o;
    /* torch's defaults: fan_in, leaky_relu with a = 0 (relu's gain):
     * (128, 64, 3, 3) has fan_in 576, B = sqrt(2) sqrt(3 / 576) */
    nb_init_defaults(&o, NB_INIT_KAIMING_UNIFORM);
    nb_tensor *t = draw(NB_SHAPE(128, 64, 3, 3), &o, 30);
    expect_uniform("kaiming_uniform (128, 64, 3, 3)", t, sqrt(2.0) * sqrt(3.0 / 576));
    nb_tensor_free(t);
    /* nn.Linear(400, 100)'s own init, a = sqrt(5): B = 1 / sqrt(400) */
    o.slope = sqrt(5.0);
    t = draw(NB_SHAPE(100, 400), &o, 31);
    expect_uniform("kaiming_uniform a=sqrt(5), Linear(400, 100)", t, 0.05);
    nb_tensor_free(t);
    /* fan_out, relu, a normal: (64, 32, 5, 5) has fan_out 1600 */
    nb_init_defaults(&o, NB_INIT_KAIMING_NORMAL);
    o.mode = NB_FAN_OUT;
    o.nonlinearity = NB_GAIN_RELU;
    t = draw(NB_SHAPE(64, 32, 5, 5), &o, 32);
    stats s = measure(t, NAN, NAN);
    expect("kaiming_normal fan_out (64, 32, 5, 5)", &s, 0, 2.0 / 1600);
    nb_tensor_free(t);
    /* explicit fans, tanh: std (5/3) / sqrt(300); the shape's would be 5 */
    nb_init_defaults(&o, NB_INIT_KAIMING_NORMAL);
    o.nonlinearity = NB_GAIN_TANH;
    o.fan_in = 300;
    t = draw(NB_SHAPE(5, N / 5), &o, 33);
    s = measure(t, NAN, NAN);
    expect("kaiming_normal tanh, fan_in 300", &s, 0, 25.0 / 9 / 300);
    nb_tensor_free(t);
    /* nabla's (in, out) layout: (250, 800) has fan_in 250 */
    nb_init_defaults(&o, NB_INIT_KAIMING_UNIFORM);
    o.layout = NB_LAYOUT_IN_OUT;
    t = draw(NB_SHAPE(250, 800), &o, 34);
    expect_uniform("kaiming_uniform (in, out) (250, 800)", t, sqrt(6.0 / 250));
    nb_tensor_free(t);
    /* a parameter made with it */
    nb_params *ps = nb_params_new();
    nb_rng rng;
    nb_rng_seed(&rng, 35);
    nb_init_defaults(&o, NB_INIT_UNIFORM);
    o.a = -3, o.b = -1;
    nb_tensor *u = nb_params_create_init(ps, "u", NB_F64, NB_SHAPE(N), &o, &rng);
    assert_ok(u);
    s = measure(u, NAN, NAN);
    expect("uniform(-3, -1)", &s, -2, 4.0 / 12);
    assert_true(s.lo >= -3 && s.hi < -1);
    nb_params_free(ps);
}

/* Fans and gains: torch 1.13's _calculate_fan_in_and_fan_out and
 * calculate_gain give these. */
static void test_fans_and_gains(void **state) {
    (void)state;
    size_t fi, fo;
    assert_int_equal(nb_init_fans(NB_SHAPE(10, 20), NB_LAYOUT_OUT_IN, &fi, &fo), NB_OK);
    assert_true(fi == 20 && fo == 10);
    assert_int_equal(nb_init_fans(NB_SHAPE(10, 20), NB_LAYOUT_IN_OUT, &fi, &fo), NB_OK);
    assert_true(fi == 10 && fo == 20);
    assert_int_equal(nb_init_fans(NB_SHAPE(8, 4, 3, 3), NB_LAYOUT_OUT_IN, &fi, &fo), NB_OK);
    assert_true(fi == 36 && fo == 72);
    assert_int_equal(nb_init_fans(NB_SHAPE(64, 32, 5, 5), NB_LAYOUT_OUT_IN, &fi, NULL), NB_OK);
    assert_true(fi == 800);
    assert_int_equal(nb_init_fans(NB_SHAPE(10), NB_LAYOUT_OUT_IN, &fi, &fo), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "nb_init_fans", "1 dimension", "fewer than 2");
    assert_true(nb_init_gain(NB_GAIN_LINEAR, 0) == 1 && nb_init_gain(NB_GAIN_CONV, 0) == 1);
    assert_true(nb_init_gain(NB_GAIN_SIGMOID, 0) == 1);
    assert_close(nb_init_gain(NB_GAIN_TANH, 0), 1.6666666666666667, 1e-16);
    assert_close(nb_init_gain(NB_GAIN_RELU, 0), 1.4142135623730951, 1e-16);
    assert_close(nb_init_gain(NB_GAIN_LEAKY_RELU, 0.01), 1.4141428569978354, 1e-16);
    assert_true(nb_init_gain(NB_GAIN_SELU, 0) == 0.75);
    assert_true(isnan(nb_init_gain((nb_nonlinearity)42, 0)));
    assert_message_has(nb_last_error(), "unknown nonlinearity 42");
    assert_true(isnan(nb_init_gain(NB_GAIN_LEAKY_RELU, INFINITY)));
}

static void test_bad_options_are_refused(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_tensor *t = nb_full(NULL, NB_F32, NB_SHAPE(3, 4), 7), *bias = nb_full(NULL, NB_F32, NB_SHAPE(4), 7);
    struct {
        nb_init kind;
        double std, a, b, gain;
        int mode;
        const char *says;
    } bad[] = {
        {NB_INIT_NORMAL, -1, 0, 0, 1, 0, "normal: mean and std must be finite, std >= 0"},
        {NB_INIT_TRUNC_NORMAL, 0, -2, 2, 1, 0, "trunc_normal: mean and std must be finite, std > 0"},
        {NB_INIT_TRUNC_NORMAL, 1, 2, -2, 1, 0, "the bounds a < b"},
        {NB_INIT_TRUNC_NORMAL, 1, -INFINITY, 2, 1, 0, "must be finite"},
        {NB_INIT_UNIFORM, 1, 1, 0, 1, 0, "uniform: the bounds a <= b"},
        {NB_INIT_XAVIER_UNIFORM, 1, 0, 0, -1, 0, "xavier_uniform: the gain"},
        {NB_INIT_KAIMING_NORMAL, 1, 0, 0, 1, 7, "mode must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        nb_init_opts o;
        nb_init_defaults(&o, bad[i].kind);
        o.std = bad[i].std, o.a = bad[i].a, o.b = bad[i].b, o.gain = bad[i].gain, o.mode = (nb_fan_mode)bad[i].mode;
        assert_int_equal(nb_init_apply(t, &o, &rng), NB_ERR_ARG);
        assert_message_has(nb_last_error(), "nb_init_apply", bad[i].says);
        assert_true(nb_get(t, 0) == 7); /* untouched */
    }
    /* fans of a bias: torch refuses them too; give them */
    nb_init_opts o;
    nb_init_defaults(&o, NB_INIT_KAIMING_UNIFORM);
    assert_int_equal(nb_init_apply(bias, &o, &rng), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "kaiming_uniform", "(4,)", "1 dimension", "give fan_in and fan_out");
    o.fan_in = 3;
    assert_int_equal(nb_init_apply(bias, &o, &rng), NB_OK);
    nb_init_defaults(&o, NB_INIT_XAVIER_NORMAL);
    o.fan_in = 3; /* and no fan_out */
    assert_int_equal(nb_init_apply(bias, &o, &rng), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "fan_in and fan_out must be positive");
    nb_init_defaults(&o, NB_INIT_KAIMING_NORMAL);
    o.nonlinearity = (nb_nonlinearity)99;
    assert_int_equal(nb_init_apply(t, &o, &rng), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "kaiming_normal", "unknown nonlinearity 99");
    o.kind = (nb_init)40;
    assert_int_equal(nb_init_apply(t, &o, &rng), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "unknown initialiser 40");
    assert_int_equal(nb_init_apply(t, NULL, &rng), NB_ERR_NULL);
    nb_init_defaults(&o, NB_INIT_NORMAL);
    assert_int_equal(nb_init_apply(t, &o, NULL), NB_ERR_NULL);
    nb_params *ps = nb_params_new();
    o.std = NAN;
    assert_int_equal(nb_tensor_status(nb_params_create_init(ps, "w", NB_F32, NB_SHAPE(2), &o, &rng)), NB_ERR_ARG);
    assert_int_equal(nb_params_count(ps), 0);
    nb_params_free(ps);
    nb_tensor_free(t);
    nb_tensor_free(bias);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal),        cmocka_unit_test(test_truncated_normal),
        cmocka_unit_test(test_xavier),        cmocka_unit_test(test_kaiming),
        cmocka_unit_test(test_fans_and_gains), cmocka_unit_test(test_bad_options_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
