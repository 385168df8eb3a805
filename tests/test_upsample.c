/*
 * Upsampling: values against numbers PyTorch 1.13 printed (nearest and
 * bilinear, align_corners both ways, by size and by scale factor, up and
 * down, float32 and float64); exact cases (the same size is a copy,
 * nearest by 2 repeats each element, align_corners keeps the corners);
 * gradients against central differences (float64) on random shapes with
 * fan-out, second and third derivatives; the gradient where PyTorch's nearest
 * backward disagrees with its forward (README's table of differences); the
 * same bits on 1 and 2 threads; the picture label.  Bad input is in
 * tests/test_catalogue.c.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { NEAREST2D, NEAREST1D, BILINEAR2D };

static nb_tensor *up(nb_tape *tp, int mode, nb_tensor *x, const nb_upsample_opts *o) {
    return mode == NEAREST2D ? nb_upsample_nearest2d(tp, x, o)
           : mode == NEAREST1D ? nb_upsample_nearest1d(tp, x, o)
                               : nb_upsample_bilinear2d(tp, x, o);
}

/* x = (arange(30) % 7 - 3) / 4 as (1, 2, 3, 5); PyTorch 1.13's
 * F.interpolate of it, channel 1, for each case (float64). */
typedef struct {
    int mode;
    nb_upsample_opts o;
    size_t OH, OW;
    double v[40];
} torch_case;

static const torch_case torch_cases[] = {
    {NEAREST2D, {.size = {4, 7}}, 4, 7,
     {-0.5, -0.5, -0.25, 0, 0, 0.25, 0.5, -0.5, -0.5, -0.25, 0, 0, 0.25, 0.5, 0.75, 0.75, -0.75, -0.5, -0.5, -0.25, 0,
      0.25, 0.25, 0.5, 0.75, 0.75, -0.75, -0.5}},
    {NEAREST2D, {.scale = {1.7, 0.6}}, 5, 3,
     {-0.5, -0.25, 0.25, -0.5, -0.25, 0.25, 0.75, -0.75, -0.25, 0.75, -0.75, -0.25, 0.25, 0.5, -0.75}},
    {BILINEAR2D, {.size = {5, 8}}, 5, 8,
     {-0.5, -0.390625, -0.234375, -0.078125, 0.078125, 0.234375, 0.390625, 0.5, -5.5511151231257827e-17,
      -0.19687500000000002, -0.43437499999999996, -0.27812500000000001, -0.12187499999999998, 0.034375000000000024,
      0.19062500000000004, 0.30000000000000004, 0.75, 0.09375, -0.734375, -0.578125, -0.421875, -0.265625, -0.109375,
      0, 0.45000000000000007, 0.25312499999999999, 0.015624999999999858, 0.17187499999999983, -1.0061396160665481e-16,
      -0.49999999999999994, -0.40937499999999993, -0.29999999999999993, 0.25, 0.359375, 0.515625, 0.671875, 0.28125,
      -0.65625, -0.609375, -0.5}},
    {BILINEAR2D, {.size = {5, 8}, .align_corners = true}, 5, 8,
     {-0.5, -0.35714285714285715, -0.2142857142857143, -0.071428571428571452, 0.071428571428571397,
      0.21428571428571419, 0.3571428571428571, 0.5, 0.125, -0.23214285714285712, -0.4642857142857143,
      -0.3214285714285714, -0.1785714285714286, -0.035714285714285809, 0.1071428571428571, 0.25, 0.75,
      -0.1071428571428571, -0.7142857142857143, -0.5714285714285714, -0.4285714285714286, -0.28571428571428581,
      -0.1428571428571429, 0, 0.5, 0.14285714285714288, -0.089285714285714302, 0.053571428571428548,
      -0.053571428571428492, -0.41071428571428548, -0.3928571428571429, -0.25, 0.25, 0.39285714285714285,
      0.5357142857142857, 0.67857142857142849, 0.32142857142857162, -0.53571428571428514, -0.6428571428571429, -0.5}},
    {BILINEAR2D, {.scale = {1.5, 0.7}}, 4, 3,
     {-0.4464285714285714, -0.089285714285714302, 0.2678571428571429, -0.0089285714285714524, -0.33928571428571425,
      0.017857142857142919, 0.40773809523809523, -0.38095238095238115, -0.31547619047619035, 0.32440476190476192,
      0.45238095238095227, -0.64880952380952372}},
    {BILINEAR2D, {.size = {2, 3}}, 2, 3,
     {-0.24999999999999997, -0.125, 0.29166666666666674, 0.3125, 0.4375, -0.45833333333333326}},
};

static void test_against_pytorch(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof torch_cases / sizeof *torch_cases; c++) {
        const torch_case *k = &torch_cases[c];
        for (int dt = NB_F32; dt <= NB_F64; dt++) {
            nb_tape *tp = nb_tape_new();
            nb_tensor *x = nb_zeros(tp, dt, NB_SHAPE(1, 2, 3, 5));
            for (size_t i = 0; i < 30; i++) nb_set(x, i, ((double)(i % 7) - 3) / 4);
            nb_tensor *y = up(tp, k->mode, x, &k->o);
            assert_ok(y);
            assert_int_equal(nb_tensor_dim(y, 2), k->OH);
            assert_int_equal(nb_tensor_dim(y, 3), k->OW);
            size_t plane = k->OH * k->OW;
            for (size_t i = 0; i < plane; i++)
                assert_close(nb_get(y, plane + i), k->v[i], dt == NB_F32 ? 1e-6 : 1e-15);
            nb_tape_free(tp);
        }
    }
    /* F.interpolate(x1, scale_factor=1.6) and (x1, size=4), mode nearest,
     * x1 = (arange(7) % 5 - 2) / 2 as (1, 1, 7) */
    const double by_scale[11] = {-1, -1, -0.5, -0.5, 0, 0.5, 0.5, 1, -1, -1, -0.5}, by_size[4] = {-1, -0.5, 0.5, -1};
    nb_tape *tp = nb_tape_new();
    nb_tensor *x1 = nb_zeros(tp, NB_F64, NB_SHAPE(1, 1, 7));
    for (size_t i = 0; i < 7; i++) nb_set(x1, i, ((double)(i % 5) - 2) / 2);
    nb_tensor *a = nb_upsample_nearest1d(tp, x1, &(nb_upsample_opts){.scale = {1.6}});
    nb_tensor *b = nb_upsample_nearest1d(tp, x1, &(nb_upsample_opts){.size = {4}});
    assert_ok(a), assert_ok(b);
    assert_int_equal(nb_tensor_size(a), 11);
    assert_int_equal(nb_tensor_size(b), 4);
    for (size_t i = 0; i < 11; i++) assert_true(nb_get(a, i) == by_scale[i]);
    for (size_t i = 0; i < 4; i++) assert_true(nb_get(b, i) == by_size[i]);
    nb_tape_free(tp);
}

/* The same size is a copy, in every mode; nearest by 2 repeats each
 * element in a 2x2 block; align_corners keeps the four corners. */
static void test_exact_cases(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 31);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_normal(tp, &rng, NB_F64, NB_SHAPE(2, 3, 4, 5), 0, 1);
    for (int mode = NEAREST2D; mode <= BILINEAR2D; mode += 2) {
        nb_tensor *same = up(tp, mode, x, &(nb_upsample_opts){.size = {4, 5}});
        for (size_t i = 0; i < nb_tensor_size(x); i++) assert_true(nb_get(same, i) == nb_get(x, i));
    }
    nb_tensor *twice = nb_upsample_nearest2d(tp, x, &(nb_upsample_opts){.scale = {2, 2}});
    assert_ok(twice);
    for (size_t p = 0; p < 6; p++)
        for (size_t i = 0; i < 8; i++)
            for (size_t j = 0; j < 10; j++)
                assert_true(nb_get(twice, (p * 8 + i) * 10 + j) == nb_get(x, (p * 4 + i / 2) * 5 + j / 2));
    nb_tensor *big = nb_upsample_bilinear2d(tp, x, &(nb_upsample_opts){.size = {9, 7}, .align_corners = true});
    assert_ok(big);
    for (size_t p = 0; p < 6; p++) {
        assert_close(nb_get(big, p * 63), nb_get(x, p * 20), 1e-15);
        assert_close(nb_get(big, p * 63 + 6), nb_get(x, p * 20 + 4), 1e-15);
        assert_close(nb_get(big, p * 63 + 56), nb_get(x, p * 20 + 15), 1e-15);
        assert_close(nb_get(big, p * 63 + 62), nb_get(x, p * 20 + 19), 1e-15);
    }
    nb_tape_free(tp);
}

/* PyTorch 1.13's nearest forward by a scale factor with out = in reads
 * floor(o / scale) (L = 3, scale 1.3: elements 0, 0, 1), and nabla does
 * the same; PyTorch's backward then sends G to elements 0, 1, 2 (it copies
 * indices when out = in), which is not that forward's derivative.  nabla's
 * is: G0 + G1, G2, 0. */
static void test_nearest_gradient_is_its_forwards(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 1, 3), ((double[]){5, 6, 7}));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_upsample_nearest1d(tp, x, &(nb_upsample_opts){.scale = {1.3}});
    assert_ok(y);
    assert_int_equal(nb_tensor_size(y), 3);
    assert_true(nb_get(y, 0) == 5 && nb_get(y, 1) == 5 && nb_get(y, 2) == 6);
    nb_tensor *G = nb_from_array(tp, NB_F64, NB_SHAPE(1, 1, 3), ((double[]){1, 10, 100}));
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, y, G))), NB_OK);
    assert_true(nb_grad_get(x, 0) == 11 && nb_grad_get(x, 1) == 100 && nb_grad_get(x, 2) == 0);
    nb_tape_free(tp);
    nb_tensor_free(x);
}

typedef struct {
    int mode;
    nb_upsample_opts o;
    nb_tensor *R;
    bool fan_out; /* x also upsampled as sin x */
} up_user;

static nb_tensor *up_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    const up_user *u = user;
    nb_tensor *y = up(tp, u->mode, in[0], &u->o);
    if (u->fan_out) y = nb_add(tp, y, nb_tanh(tp, up(tp, u->mode, nb_sin(tp, in[0]), &u->o)));
    return weighted_loss(tp, y, u->R);
}

static void test_random_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 32);
    static const double scales[] = {0.5, 0.6, 1.3, 1.5, 1.7, 2, 2.5, 3};
    for (int trial = 0; trial < 36; trial++) {
        up_user u = {.mode = trial % 3, .fan_out = trial % 2 == 1};
        bool one = u.mode == NEAREST1D, by_scale = trial % 4 >= 2;
        u.o.align_corners = u.mode == BILINEAR2D && nb_rng_uniform(&rng) < 0.5;
        size_t shape[4] = {1 + (size_t)(nb_rng_uniform(&rng) * 2), 1 + (size_t)(nb_rng_uniform(&rng) * 3), 0, 0};
        for (int a = 0; a < (one ? 1 : 2); a++) {
            shape[2 + a] = 1 + (size_t)(nb_rng_uniform(&rng) * 5);
            do {
                if (by_scale) u.o.scale[a] = scales[(int)(nb_rng_uniform(&rng) * 8)];
                else u.o.size[a] = 1 + (size_t)(nb_rng_uniform(&rng) * 8);
            } while (by_scale && floor((double)shape[2 + a] * u.o.scale[a]) < 1);
        }
        nb_tensor *x = random_input(&rng, one ? 3 : 4, shape, -1, 1, false);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = up(tp, u.mode, x, &u.o);
        assert_ok(y);
        u.R = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
        nb_tape_free(tp);
        assert_gradcheck(up_loss, &x, 1, &u);
        if (trial % 3 == 0 || trial % 5 == 0) {
            char what[64];
            snprintf(what, sizeof what, "upsample trial %d (mode %d)", trial, u.mode);
            assert_gradgradcheck(up_loss, &x, 1, &u, what);
        }
        nb_tensor_free(x);
        nb_tensor_free(u.R);
    }
}

/* Third order: F = Σ R' · dL/dx with the gradient built as ops
 * (create_graph), checked by gradgradcheck: that differentiates the
 * adjoint op (the backward's) twice more, through the upsampling again. */
typedef struct {
    up_user inner;
    nb_tensor *Rx;
} third_user;

static nb_tensor *gradient_dot(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const third_user *u = user;
    nb_tensor *loss = up_loss(tp, in, n, (void *)&u->inner), *g;
    assert_int_equal(nb_grad(loss, in, 1, &g, true), NB_OK);
    return nb_sum(tp, nb_mul(tp, nb_square(tp, g), u->Rx));
}

static void test_third_derivatives(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 34);
    const nb_upsample_opts opts[3] = {{.scale = {1.5, 2.5}}, {.size = {5}}, {.size = {4, 3}, .align_corners = true}};
    for (int mode = NEAREST2D; mode <= BILINEAR2D; mode++) {
        bool one = mode == NEAREST1D;
        nb_tensor *x = random_input(&rng, one ? 3 : 4, one ? (size_t[]){2, 2, 3} : (size_t[]){1, 2, 3, 2}, -1, 1, false);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = up(tp, mode, x, &opts[mode]);
        assert_ok(y);
        third_user u = {{mode, opts[mode], nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1),
                         true},
                        nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(x), nb_tensor_shape(x), -1, 1)};
        nb_tape_free(tp);
        char what[64];
        snprintf(what, sizeof what, "upsample mode %d, third order", mode);
        assert_gradgradcheck(gradient_dot, &x, 1, &u, what);
        nb_tensor_free(x), nb_tensor_free(u.inner.R), nb_tensor_free(u.Rx);
    }
}

/* A result and gradient big enough to split over threads, as values. */
static void run_big(int threads, int mode, nb_dtype dt, double *out, size_t n_out) {
    nb_set_threads(threads);
    memset(out, 0, n_out * sizeof *out);
    nb_rng rng;
    nb_rng_seed(&rng, 33);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(4, 8, 19, 23), 0, 1);
    nb_requires_grad(x, true);
    nb_tensor *y = up(tp, mode, x, &(nb_upsample_opts){.scale = {2.5, 1.7}});
    assert_ok(y);
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, y, nb_sin(tp, y)))), NB_OK);
    size_t at = 0;
    for (size_t i = 0; i < nb_tensor_size(y) && at < n_out; i++) out[at++] = nb_get(y, i);
    for (size_t i = 0; i < nb_tensor_size(x) && at < n_out; i++) out[at++] = nb_grad_get(x, i);
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_set_threads(1);
}

static void test_same_bits_on_any_thread_count(void **state) {
    (void)state;
    enum { VALUES = 4 * 8 * 47 * 39 + 4 * 8 * 19 * 23 };
    double *one = malloc(VALUES * sizeof *one), *two = malloc(VALUES * sizeof *two);
    for (int mode = NEAREST2D; mode <= BILINEAR2D; mode += 2)
        for (int dt = NB_F32; dt <= NB_F64; dt++) {
            run_big(1, mode, dt, one, VALUES);
            run_big(2, mode, dt, two, VALUES);
            assert_memory_equal(one, two, VALUES * sizeof *one);
        }
    free(one), free(two);
}

static void test_picture_label(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(NULL, NB_F32, NB_SHAPE(1, 2, 3, 3));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_upsample_bilinear2d(tp, x, &(nb_upsample_opts){.size = {6, 8}, .align_corners = true});
    y = nb_upsample_nearest2d(tp, y, &(nb_upsample_opts){.scale = {2, 1.5}});
    assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
    char path[] = "/tmp/nabla-upsample-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(nb_dot_save(tp, path, NULL), NB_OK);
    FILE *f = fopen(path, "r");
    char text[16384];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = '\0';
    fclose(f);
    unlink(path);
    assert_non_null(strstr(text, "upsample_bilinear2d\\nto 6×8, align_corners"));
    assert_non_null(strstr(text, "upsample_nearest2d\\nscale 2,1.5"));
    nb_tape_free(tp);
    nb_tensor_free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_pytorch),
        cmocka_unit_test(test_exact_cases),
        cmocka_unit_test(test_nearest_gradient_is_its_forwards),
        cmocka_unit_test(test_random_gradients),
        cmocka_unit_test(test_third_derivatives),
        cmocka_unit_test(test_same_bits_on_any_thread_count),
        cmocka_unit_test(test_picture_label),
    };
    return cmocka_run_group_tests_name("upsample", tests, NULL, NULL);
}
