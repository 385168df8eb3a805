/* Tensors: creation, access, names, the seeded generator and printing. */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void test_creation_and_access(void **state) {
    (void)state;
    nb_tensor *z = nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3, 4, 5));
    assert_ok(z);
    assert_int_equal(nb_tensor_ndim(z), 4);
    assert_int_equal(nb_tensor_size(z), 120);
    assert_int_equal(nb_tensor_dim(z, -1), 5);
    assert_int_equal(nb_tensor_dim(z, 1), 3);
    assert_int_equal(nb_tensor_dim(z, 4), 0); /* out of range */
    assert_close(nb_get(z, 119), 0, 0);
    /* index (1, 2, 3, 4) is flat 1*60 + 2*20 + 3*5 + 4 = 119 */
    nb_set_at(z, (size_t[]){1, 2, 3, 4}, 7.5);
    assert_close(nb_get(z, 119), 7.5, 0);
    assert_close(nb_get_at(z, (size_t[]){1, 2, 3, 4}), 7.5, 0);
    assert_true(isnan(nb_get_at(z, (size_t[]){2, 0, 0, 0})));
    assert_true(isnan(nb_get(z, 120)));
    char buf[64];
    assert_string_equal(nb_shape_string(z, buf, sizeof buf), "(2, 3, 4, 5)");
    nb_tensor_free(z);

    nb_tensor *o = nb_ones(NULL, NB_F64, NB_SHAPE(3));
    nb_tensor *f = nb_full(NULL, NB_F64, NB_SHAPE(2, 2), -1.25);
    nb_tensor *s = nb_scalar(NULL, NB_F32, 3.5);
    assert_close(nb_get(o, 2), 1, 0);
    assert_close(nb_get(f, 3), -1.25, 0);
    assert_int_equal(nb_tensor_ndim(s), 0);
    assert_close(nb_item(s), 3.5, 0);
    assert_true(isnan(nb_item(o))); /* not a 1-element tensor */
    assert_string_equal(nb_shape_string(o, buf, sizeof buf), "(3,)");
    assert_string_equal(nb_shape_string(s, buf, sizeof buf), "()");

    const float fdata[4] = {1.5f, -2, 3, 4};
    const double ddata[4] = {0.1, 0.2, 0.3, 0.4};
    nb_tensor *a = nb_from_f32(NULL, NB_SHAPE(2, 2), fdata);
    nb_tensor *b = nb_from_f64(NULL, NB_SHAPE(4), ddata);
    nb_tensor *c = nb_from_array(NULL, NB_F32, NB_SHAPE(4), ddata);
    assert_int_equal(nb_tensor_dtype(a), NB_F32);
    assert_int_equal(nb_tensor_dtype(b), NB_F64);
    assert_close(nb_get(a, 1), -2, 0);
    assert_close(nb_get(b, 3), 0.4, 0);
    assert_close(nb_get(c, 0), (float)0.1, 0);
    nb_tensor *copy = nb_copy(NULL, b);
    nb_set(b, 0, 9);
    assert_close(nb_get(copy, 0), 0.1, 0); /* a real copy */
    double out[4];
    nb_to_f64(copy, out);
    assert_memory_equal(out, ddata, sizeof out);

    nb_tensor_set_name(a, "W[1]");
    assert_string_equal(nb_tensor_name(a), "W[1]");
    nb_tensor_set_name(a, "a name much longer than the thirty-one characters kept");
    assert_int_equal(strlen(nb_tensor_name(a)), NB_NAME_MAX - 1);
    /* 30 ASCII bytes then "σ" (2 bytes): cutting at 31 would split it. */
    nb_tensor_set_name(a, "dC/dA for the hidden layer, 1 σ");
    assert_string_equal(nb_tensor_name(a), "dC/dA for the hidden layer, 1 ");
    nb_tape *tp = nb_tape_new();
    nb_tensor *on_tape = nb_ones(tp, NB_F32, NB_SHAPE(2));
    assert_string_equal(nb_tensor_name(on_tape), "");
    nb_tensor_set_name(on_tape, "dC/dA for the hidden layer, 1 σ");
    assert_string_equal(nb_tensor_name(on_tape), "dC/dA for the hidden layer, 1 ");
    nb_tensor_set_name(on_tape, "Z");
    assert_string_equal(nb_tensor_name(on_tape), "Z");
    nb_tensor *twin = nb_copy(tp, on_tape);
    assert_string_equal(nb_tensor_name(twin), "Z");
    nb_tape_free(tp);

    nb_tensor *all[] = {o, f, s, a, b, c, copy};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) nb_tensor_free(all[i]);
    nb_tensor_free(NULL);
}

/* Tape tensors vanish with reset; their memory is reused. */
static void test_tape_tensors(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *t = nb_ones(tp, NB_F32, NB_SHAPE(1000));
    void *first = nb_tensor_data(t);
    nb_tensor_free(t); /* ignored: the tape owns it */
    nb_tape_reset(tp);
    t = nb_ones(tp, NB_F32, NB_SHAPE(1000));
    assert_ptr_equal(nb_tensor_data(t), first);
    assert_int_equal((uintptr_t)nb_tensor_data(t) % 64, 0); /* aligned for vector loads */
    nb_tape_free(tp);
}

/* xoshiro256** seeded through splitmix64: values from an independent Python
 * implementation of the published algorithms. */
static void test_rng_is_reproducible(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 42);
    assert_true(nb_rng_next(&rng) == 0x15780b2e0c2ec716ULL);
    assert_true(nb_rng_next(&rng) == 0x6104d9866d113a7eULL);
    assert_true(nb_rng_next(&rng) == 0xae17533239e499a1ULL);
    nb_rng_seed(&rng, 7);
    assert_close(nb_rng_uniform(&rng), 0.7005764821796896, 0);
    assert_close(nb_rng_uniform(&rng), 0.2787512294737843, 0);
    assert_close(nb_rng_uniform(&rng), 0.8396274618764198, 0);

    /* Same seed, same tensor; another seed, another tensor. */
    nb_rng r1, r2, r3;
    nb_rng_seed(&r1, 99);
    nb_rng_seed(&r2, 99);
    nb_rng_seed(&r3, 100);
    nb_tensor *a = nb_rand_normal(NULL, &r1, NB_F32, NB_SHAPE(50), 0, 1);
    nb_tensor *b = nb_rand_normal(NULL, &r2, NB_F32, NB_SHAPE(50), 0, 1);
    nb_tensor *c = nb_rand_normal(NULL, &r3, NB_F32, NB_SHAPE(50), 0, 1);
    assert_memory_equal(nb_tensor_data(a), nb_tensor_data(b), 50 * sizeof(float));
    assert_memory_not_equal(nb_tensor_data(a), nb_tensor_data(c), 50 * sizeof(float));
    nb_tensor_free(a);
    nb_tensor_free(b);
    nb_tensor_free(c);
}

static void test_rng_distributions(void **state) {
    (void)state;
    enum { N = 200000 };
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tensor *u = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(N), -2, 6);
    nb_tensor *g = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(N), 1.5, 2);
    double su = 0, sg = 0, sg2 = 0, lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < N; i++) {
        double x = nb_get(u, i), y = nb_get(g, i);
        su += x;
        lo = fmin(lo, x);
        hi = fmax(hi, x);
        sg += y;
        sg2 += y * y;
    }
    /* Uniform on [-2, 6): mean 2, standard error 8/sqrt(12 N) = 0.005. */
    assert_close(su / N, 2, 0.03);
    assert_true(lo >= -2 && hi < 6);
    /* Normal(1.5, 2): standard errors 0.0045 for the mean, ~0.003 for the std. */
    double mean = sg / N;
    assert_close(mean, 1.5, 0.03);
    assert_close(sqrt(sg2 / N - mean * mean), 2, 0.03);
    nb_tensor_free(u);
    nb_tensor_free(g);
}

static char *print_to_string(const nb_tensor *t, char *buf, size_t n) {
    memset(buf, 0, n);
    FILE *f = fmemopen(buf, n - 1, "w");
    nb_print(f, t);
    fclose(f);
    return buf;
}

static void test_printing(void **state) {
    (void)state;
    char buf[1024];
    nb_tensor *m = nb_from_array(NULL, NB_F32, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5.5, -6}));
    nb_tensor_set_name(m, "W");
    assert_string_equal(print_to_string(m, buf, sizeof buf),
                        "W tensor (2, 3) float32 =\n[[1, 2, 3],\n [4, 5.5, -6]]\n");
    nb_tensor *c = nb_from_array(NULL, NB_F64, NB_SHAPE(2, 2, 2), ((double[]){1, 2, 3, 4, 5, 6, 7, 8}));
    assert_string_equal(print_to_string(c, buf, sizeof buf),
                        "tensor (2, 2, 2) float64 =\n[[[1, 2],\n  [3, 4]],\n [[5, 6],\n  [7, 8]]]\n");
    nb_tensor *s = nb_scalar(NULL, NB_F64, 0.25);
    assert_string_equal(print_to_string(s, buf, sizeof buf), "tensor () float64 =\n0.25\n");
    /* Large tensors: shape and statistics. 0, 1, ..., 999: mean 499.5. */
    nb_tensor *big = nb_zeros(NULL, NB_F64, NB_SHAPE(10, 100));
    for (size_t i = 0; i < 1000; i++) nb_set(big, i, (double)i);
    print_to_string(big, buf, sizeof buf);
    assert_message_has(buf, "(10, 100) float64", "min 0", "max 999", "mean 499.5",
                       "first values: 0, 1, 2");
    /* Gradients print the same way, or say they were not computed. */
    memset(buf, 0, sizeof buf);
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    nb_print_grad(f, m);
    fclose(f);
    assert_string_equal(buf, "W gradient: not computed\n");
    nb_tensor_free(m);
    nb_tensor_free(c);
    nb_tensor_free(s);
    nb_tensor_free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creation_and_access),
        cmocka_unit_test(test_tape_tensors),
        cmocka_unit_test(test_rng_is_reproducible),
        cmocka_unit_test(test_rng_distributions),
        cmocka_unit_test(test_printing),
    };
    return cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
}
