/*
 * Parameters in the safetensors format: our writer and reader against each
 * other, against bytes laid out by hand, against Python with only json and
 * numpy (tests/safetensors_interop.py), and against PyTorch's own model
 * and logits when python3-torch is installed.  The bad files are rows of
 * tests/test_catalogue_files.c.
 */
#include "nabla_train.h"
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* Runs the interop script; returns its exit status and its output in out. */
static int run_python(const char *args, char *out, size_t cap) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/safetensors_interop.py %s 2>&1", args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A float32 (2, 3), a float64 (4,), a 0-d float32 and an empty (0, 2). */
static nb_params *sample_model(bool zero) {
    nb_params *ps = nb_params_new();
    nb_tensor *a = nb_params_add(ps, "layer.0.weight", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_tensor *b = nb_params_add(ps, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(4)));
    nb_tensor *s = nb_params_add(ps, "scale \"q\"", nb_zeros(NULL, NB_F32, 0, NULL));
    nb_params_add(ps, "empty", nb_zeros(NULL, NB_F32, NB_SHAPE(0, 2)));
    if (!zero) {
        for (size_t i = 0; i < 6; i++) nb_set(a, i, 0.1 * (double)i - 0.3);
        for (size_t i = 0; i < 4; i++) nb_set(b, i, 1.0 / 3 + (double)i * 1e-12);
        nb_set(s, 0, -7.25);
    }
    return ps;
}

static void test_round_trip(void **state) {
    (void)state;
    nb_params *out = sample_model(false), *in = sample_model(true), *again = sample_model(true);
    /* nb_params_save picks the format from the extension, nb_params_load
     * from the first bytes. */
    assert_int_equal(nb_params_save(out, test_path("m.safetensors")), NB_OK);
    assert_int_equal(nb_params_load(in, test_path("m.safetensors")), NB_OK);
    assert_int_equal(nb_params_save_safetensors(out, test_path("m.st")), NB_OK);
    assert_int_equal(nb_params_load_safetensors(again, test_path("m.st")), NB_OK);
    for (size_t k = 0; k < nb_params_count(out); k++)
        for (size_t i = 0; i < nb_tensor_size(nb_params_at(out, k)); i++) {
            assert_true(nb_get(nb_params_at(in, k), i) == nb_get(nb_params_at(out, k), i));
            assert_true(nb_get(nb_params_at(again, k), i) == nb_get(nb_params_at(out, k), i));
        }
    /* The data starts at a multiple of 8, as the format's writers do. */
    FILE *f = fopen(test_path("m.st"), "rb");
    unsigned char len[8];
    assert_int_equal(fread(len, 1, 8, f), 8);
    fclose(f);
    assert_int_equal((8 + len[0]) % 8, 0);
    nb_params_free(out);
    nb_params_free(in);
    nb_params_free(again);
}

/* A file laid out by hand: half and bfloat16 values converted as IEEE
 * defines them, a 0-d float64, an escaped name. */
static void test_bytes_laid_out_by_hand(void **state) {
    (void)state;
    const char header[] = "{\"w\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]},"
                          " \"v\" : {\"shape\":[2],\"data_offsets\":[10,14],\"dtype\":\"BF16\"},"
                          "\"caf\\u00e9\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[14,22]},"
                          "\"__metadata__\":{\"format\":\"pt\",\"note\":\"\\\"hi\\\"\"}}";
    const unsigned char data[22] = {
        0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0xFF, 0x7B, 0x00, 0x7C, /* F16 1, -2, 2^-24, 65504, inf */
        0x80, 0x3F, 0x49, 0x40,                                     /* BF16 1, 3.140625 */
        0, 0, 0, 0, 0, 0, 0xE0, 0xBF,                               /* F64 -0.5 */
    };
    size_t n = strlen(header);
    FILE *f = fopen(test_path("hand.safetensors"), "wb");
    unsigned char len[8] = {(unsigned char)n, (unsigned char)(n >> 8)};
    fwrite(len, 1, 8, f);
    fwrite(header, 1, n, f);
    fwrite(data, 1, sizeof data, f);
    fclose(f);
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_zeros(NULL, NB_F32, NB_SHAPE(5)));
    nb_tensor *v = nb_params_add(ps, "v", nb_zeros(NULL, NB_F64, NB_SHAPE(2)));
    nb_tensor *c = nb_params_add(ps, "caf\xc3\xa9", nb_zeros(NULL, NB_F64, 0, NULL));
    assert_int_equal(nb_params_load(ps, test_path("hand.safetensors")), NB_OK);
    assert_true(nb_get(w, 0) == 1 && nb_get(w, 1) == -2 && nb_get(w, 2) == ldexp(1, -24) && nb_get(w, 3) == 65504);
    assert_true(isinf(nb_get(w, 4)) && nb_get(w, 4) > 0);
    assert_true(nb_get(v, 0) == 1 && nb_get(v, 1) == 3.140625);
    assert_true(nb_item(c) == -0.5);
    nb_params_free(ps);
}

static void test_python_reads_what_nabla_writes(void **state) {
    (void)state;
    nb_params *ps = sample_model(false);
    assert_int_equal(nb_params_save(ps, test_path("for-python.safetensors")), NB_OK);
    char args[512], out[4096];
    snprintf(args, sizeof args, "read %s", test_path("for-python.safetensors"));
    int rc = run_python(args, out, sizeof out);
    if (rc != 0) fail_msg("tests/safetensors_interop.py failed (needs /usr/bin/python3 and python3-numpy):\n%s", out);
    /* One line per tensor, in the set's order: name dtype (shape) sum first last. */
    char *line = strtok(out, "\n");
    for (size_t k = 0; k < nb_params_count(ps); k++, line = strtok(NULL, "\n")) {
        nb_tensor *t = nb_params_at(ps, k);
        assert_non_null(line);
        double sum = 0;
        for (size_t i = 0; i < nb_tensor_size(t); i++) sum += nb_get(t, i);
        char shape[64] = "", expected[128];
        for (int d = 0; d < nb_tensor_ndim(t); d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%zu", d ? "," : "", nb_tensor_shape(t)[d]);
        snprintf(expected, sizeof expected, "%s %s (%s) ", nb_tensor_name(t),
                 nb_tensor_dtype(t) == NB_F32 ? "F32" : "F64", shape);
        if (strncmp(line, expected, strlen(expected)) != 0) fail_msg("got '%s', expected '%s...'", line, expected);
        if (nb_tensor_size(t)) {
            double got_sum, first, last;
            assert_int_equal(sscanf(line + strlen(expected), "%lf %lf %lf", &got_sum, &first, &last), 3);
            assert_close(got_sum, sum, 1e-12);
            assert_true(first == nb_get(t, 0) && last == nb_get(t, nb_tensor_size(t) - 1));
        }
    }
    nb_params_free(ps);
}

static void test_nabla_reads_what_python_writes(void **state) {
    (void)state;
    char args[512], out[4096];
    snprintf(args, sizeof args, "write %s", test_path("from-python.safetensors"));
    if (run_python(args, out, sizeof out) != 0)
        fail_msg("tests/safetensors_interop.py failed (needs /usr/bin/python3 and python3-numpy):\n%s", out);
    nb_params *ps = nb_params_new();
    nb_tensor *a = nb_params_add(ps, "a", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_tensor *b = nb_params_add(ps, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(4)));
    nb_tensor *h = nb_params_add(ps, "h", nb_zeros(NULL, NB_F32, NB_SHAPE(3)));
    assert_int_equal(nb_params_load_safetensors(ps, test_path("from-python.safetensors")), NB_OK);
    for (size_t i = 0; i < 6; i++) assert_true(nb_get(a, i) == 0.25 * (double)i - 1);
    for (size_t i = 0; i < 4; i++) assert_true(nb_get(b, i) == 1 / ((double)i + 1));
    assert_true(nb_get(h, 0) == 0.5 && nb_get(h, 1) == -2 && nb_get(h, 2) == 65504);
    nb_params_free(ps);
}

/* PyTorch's Linear(5, 7), Tanh, Linear(7, 3) with its state_dict's names:
 * nabla computes the logits PyTorch computed from the same file. */
static void test_pytorch_weights_give_pytorch_logits(void **state) {
    (void)state;
    char args[512], out[4096];
    snprintf(args, sizeof args, "torch %s %s", test_path("torch-model.safetensors"), test_path("torch-io.safetensors"));
    int rc = run_python(args, out, sizeof out);
    if (rc == 3) {
        print_message("skipped: python3-torch is not installed (apt-get install python3-torch to run it)\n");
        skip();
    }
    if (rc != 0) fail_msg("tests/safetensors_interop.py torch failed:\n%s", out);
    nb_params *model = nb_params_new(), *io = nb_params_new();
    nb_tensor *W0 = nb_params_add(model, "0.weight", nb_zeros(NULL, NB_F32, NB_SHAPE(7, 5)));
    nb_tensor *b0 = nb_params_add(model, "0.bias", nb_zeros(NULL, NB_F32, NB_SHAPE(7)));
    nb_tensor *W2 = nb_params_add(model, "2.weight", nb_zeros(NULL, NB_F32, NB_SHAPE(3, 7)));
    nb_tensor *b2 = nb_params_add(model, "2.bias", nb_zeros(NULL, NB_F32, NB_SHAPE(3)));
    nb_tensor *X = nb_params_add(io, "X", nb_zeros(NULL, NB_F32, NB_SHAPE(4, 5)));
    nb_tensor *logits = nb_params_add(io, "logits", nb_zeros(NULL, NB_F32, NB_SHAPE(4, 3)));
    assert_int_equal(nb_params_load(model, test_path("torch-model.safetensors")), NB_OK);
    assert_int_equal(nb_params_load(io, test_path("torch-io.safetensors")), NB_OK);
    nb_tape *tp = nb_tape_new();
    /* nn.Linear computes x Wᵀ + b with W stored (out, in). */
    nb_tensor *h = nb_tanh(tp, nb_linear_t(tp, X, W0, b0, false, true));
    nb_tensor *y = nb_linear_t(tp, h, W2, b2, false, true);
    assert_ok(y);
    for (size_t i = 0; i < 12; i++) assert_close(nb_get(y, i), nb_get(logits, i), 1e-5);
    nb_tape_free(tp);
    nb_params_free(model);
    nb_params_free(io);
}

/* PyTorch's conv + BatchNorm2d + ReLU + Linear after three training
 * batches: its state_dict, running statistics and num_batches_tracked (an
 * int64 0-d tensor) included, loads with every key matched, into float32
 * tensors and num_batches_tracked into a float64 scalar (or a float32 one:
 * 3 is exact in both), and gives PyTorch's eval-mode logits. */
static void test_pytorch_batch_norm_state_dict(void **state) {
    (void)state;
    char args[512], out[4096];
    snprintf(args, sizeof args, "torch_bn %s %s", test_path("bn-model.safetensors"), test_path("bn-io.safetensors"));
    int rc = run_python(args, out, sizeof out);
    if (rc == 3) {
        print_message("skipped: python3-torch is not installed (apt-get install python3-torch to run it)\n");
        skip();
    }
    if (rc != 0) fail_msg("tests/safetensors_interop.py torch_bn failed:\n%s", out);
    for (int as = 0; as < 2; as++) {
        nb_dtype counter = as == 0 ? NB_F64 : NB_F32;
        nb_params *model = nb_params_new(), *io = nb_params_new();
        nb_tensor *w = nb_params_add(model, "0.weight", nb_zeros(NULL, NB_F32, NB_SHAPE(4, 2, 3, 3)));
        nb_tensor *gamma = nb_params_add(model, "1.weight", nb_zeros(NULL, NB_F32, NB_SHAPE(4)));
        nb_tensor *beta = nb_params_add(model, "1.bias", nb_zeros(NULL, NB_F32, NB_SHAPE(4)));
        nb_tensor *mean = nb_params_add(model, "1.running_mean", nb_zeros(NULL, NB_F32, NB_SHAPE(4)));
        nb_tensor *var = nb_params_add(model, "1.running_var", nb_zeros(NULL, NB_F32, NB_SHAPE(4)));
        nb_tensor *tracked = nb_params_add(model, "1.num_batches_tracked", nb_zeros(NULL, counter, NB_SCALAR));
        /* Buffers: in the parameter set (so they load and save), gradients off. */
        nb_requires_grad(mean, false);
        nb_requires_grad(var, false);
        nb_requires_grad(tracked, false);
        nb_tensor *W = nb_params_add(model, "4.weight", nb_zeros(NULL, NB_F32, NB_SHAPE(3, 36)));
        nb_tensor *b = nb_params_add(model, "4.bias", nb_zeros(NULL, NB_F32, NB_SHAPE(3)));
        nb_tensor *X = nb_params_add(io, "X", nb_zeros(NULL, NB_F32, NB_SHAPE(4, 2, 5, 5)));
        nb_tensor *logits = nb_params_add(io, "logits", nb_zeros(NULL, NB_F32, NB_SHAPE(4, 3)));
        if (nb_params_load(model, test_path("bn-model.safetensors")) != NB_OK) fail_msg("%s", nb_last_error());
        assert_int_equal(nb_params_load(io, test_path("bn-io.safetensors")), NB_OK);
        assert_true(nb_item(tracked) == 3);
        nb_tape *tp = nb_tape_new();
        nb_tape_set_training(tp, false); /* model.eval(): the running statistics */
        nb_tensor *h = nb_relu(tp, nb_batch_norm(tp, nb_conv2d(tp, X, w, NULL, NULL), gamma, beta, mean, var, 0.1, 1e-5));
        nb_tensor *y = nb_linear_t(tp, nb_reshape(tp, h, 2, ((const long[]){4, 36})), W, b, false, true);
        assert_ok(y);
        for (size_t i = 0; i < 12; i++) assert_close(nb_get(y, i), nb_get(logits, i), 1e-5);
        nb_tape_free(tp);
        nb_params_free(model);
        nb_params_free(io);
    }
}

/* Loads FILE (written by safetensors_interop.py ints) into W (2, 3) float32
 * and b (3,) float64, first filled with 7; returns the status. */
static nb_status load_ints(const char *file, nb_params **ps, nb_tensor **W, nb_tensor **b) {
    *ps = nb_params_new();
    *W = nb_params_add(*ps, "W", nb_full(NULL, NB_F32, NB_SHAPE(2, 3), 7));
    *b = nb_params_add(*ps, "b", nb_full(NULL, NB_F64, NB_SHAPE(3), 7));
    char path[512];
    snprintf(path, sizeof path, "%s/%s", test_path("ints"), file);
    return nb_params_load(*ps, path);
}

/* Integer and bool tensors written by numpy load exactly where every value
 * fits (float32 up to 2^24 and larger multiples of powers of two, float64
 * up to 2^53 and -2^63); a value that does not, a bool byte of 2, or too
 * few bytes is refused, naming it, and changes nothing. */
static void test_integer_and_bool_dtypes(void **state) {
    (void)state;
    char args[512], out[4096];
    if (mkdir(test_path("ints"), 0700) != 0) fail_msg("mkdir %s", test_path("ints"));
    snprintf(args, sizeof args, "ints %s", test_path("ints"));
    if (run_python(args, out, sizeof out) != 0)
        fail_msg("tests/safetensors_interop.py ints failed (needs /usr/bin/python3 and python3-numpy):\n%s", out);
    nb_params *ps;
    nb_tensor *W, *b;
    struct { const char *file; double W[6], b[3]; } good[] = {
        {"i32-i64.safetensors", {1, -2, 3, 16777216, -16777216, 0}, {9007199254740992.0, -9007199254740992.0, -9223372036854775808.0}},
        {"i16-i8.safetensors", {-32768, 32767, 1024, -1, 0, 1}, {-128, 127, -5}},
        {"u8-bool.safetensors", {0, 255, 7, 128, 1, 254}, {1, 0, 1}},
        {"f32-big.safetensors", {1099511627776.0, -4611686018427387904.0, 3, 0, 0, 16777218}, {0, 0, 0}},
    };
    for (size_t f = 0; f < sizeof good / sizeof good[0]; f++) {
        if (load_ints(good[f].file, &ps, &W, &b) != NB_OK) fail_msg("%s: %s", good[f].file, nb_last_error());
        for (size_t i = 0; i < 6; i++) assert_true(nb_get(W, i) == good[f].W[i]);
        for (size_t i = 0; i < 3; i++) assert_true(nb_get(b, i) == good[f].b[i]);
        nb_params_free(ps);
    }
    struct { const char *file; const char *says[3]; } bad[] = {
        {"i64-inexact.safetensors", {"'b' is I64", "element 1, 9007199254740993", "float64"}},
        {"i64-max.safetensors", {"'b' is I64", "element 2, 9223372036854775807", "2^53"}},
        {"i32-inexact.safetensors", {"'W' is I32", "element 4, 16777217", "make the parameter float64"}},
        {"bool-2.safetensors", {"'b' is BOOL", "element 1 is the byte 2", "0 or 1"}},
        {"i64-short.safetensors", {"'b' is I64 (3,)", "needs 24 bytes", "span 16"}},
        {"i16-as-i32.safetensors", {"'W' is I32 (2, 3)", "needs 24 bytes", "span 12"}},
    };
    for (size_t f = 0; f < sizeof bad / sizeof bad[0]; f++) {
        assert_int_equal(load_ints(bad[f].file, &ps, &W, &b), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), bad[f].file, bad[f].says[0], bad[f].says[1], bad[f].says[2]);
        for (size_t i = 0; i < 6; i++) assert_true(nb_get(W, i) == 7);
        for (size_t i = 0; i < 3; i++) assert_true(nb_get(b, i) == 7);
        nb_params_free(ps);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bytes_laid_out_by_hand),
        cmocka_unit_test(test_python_reads_what_nabla_writes),
        cmocka_unit_test(test_nabla_reads_what_python_writes),
        cmocka_unit_test(test_pytorch_weights_give_pytorch_logits),
        cmocka_unit_test(test_pytorch_batch_norm_state_dict),
        cmocka_unit_test(test_integer_and_bool_dtypes),
    };
    return cmocka_run_group_tests_name("safetensors", tests, test_dir_setup, test_dir_teardown);
}
