/*
 * The catalogue of bad inputs: one table, one row per mistake a user can
 * make, across the ops, the tape, the loaders, the parameter files and the
 * training toolkit.  Each row states the status the call must return and
 * words its message must contain (the op or file, the shapes or the line,
 * what was expected), so that a vague or wrong message fails as surely as a
 * crash.  The sanitizer run of this file checks that no error path leaks.
 *
 * The examples' bad command lines and files are in tests/examples.sh.
 */
#include "support.h"
#include "nabla_train.h"
#include "nabla_op.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------ helpers */


static const char *write_bytes(const char *name, const void *bytes, size_t n) {
    const char *path = test_path(name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    fwrite(bytes, 1, n, f);
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *text) {
    return write_bytes(name, text, strlen(text));
}

/* An IDX header: type code, dimensions, then `data` bytes of value 7. */
static const char *write_idx(const char *name, int type, int ndim, const unsigned *dims, size_t data) {
    size_t n = 4 + 4 * (size_t)ndim + data;
    unsigned char *b = calloc(n, 1);
    b[2] = (unsigned char)type;
    b[3] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++)
        for (int k = 0; k < 4; k++) b[4 + 4 * d + k] = (unsigned char)(dims[d] >> (24 - 8 * k));
    memset(b + 4 + 4 * ndim, 7, data);
    const char *path = write_bytes(name, b, n);
    free(b);
    return path;
}

static nb_status csv_status(const char *name, const char *text, const char *target) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = target;
    nb_dataset d;
    nb_status st = nb_csv_read(write_text(name, text), &o, &d);
    if (st == NB_OK) nb_dataset_free(&d);
    return st;
}

static nb_status csv_status_bytes(const char *name, const char *bytes, size_t n, const char *target) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = target;
    nb_dataset d;
    nb_status st = nb_csv_read(write_bytes(name, bytes, n), &o, &d);
    if (st == NB_OK) nb_dataset_free(&d);
    return st;
}

static nb_status idx_status(const char *path) {
    nb_tensor *t = nb_idx_read(path, NB_F32, 1);
    nb_status st = nb_tensor_status(t);
    nb_tensor_free(t);
    return st;
}

/* A model of W (2, 3) float32 and b (3,) float64, for the parameter files. */
static nb_params *model(const char *w_name, size_t w_rows, nb_dtype b_dtype) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, w_name, nb_full(NULL, NB_F32, NB_SHAPE(w_rows, 3), 0.5));
    nb_params_add(ps, "b", nb_full(NULL, b_dtype, NB_SHAPE(3), -1));
    return ps;
}

/* The bytes of a good parameter file for model("W", 2, NB_F64). */
static unsigned char *good_params_file(size_t *len) {
    nb_params *ps = model("W", 2, NB_F64);
    const char *path = test_path("good.nbp");
    nb_params_save(ps, path);
    nb_params_free(ps);
    FILE *f = fopen(path, "rb");
    static unsigned char buf[4096];
    *len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    return buf;
}

/* Loads `path` into model(w_name, w_rows, b_dtype); the model's values must
 * come through unchanged when the load fails. */
static nb_status load_into(const char *path, const char *w_name, size_t w_rows, nb_dtype b_dtype) {
    nb_params *ps = model(w_name, w_rows, b_dtype);
    nb_status st = nb_params_load(ps, path);
    if (st != NB_OK && nb_get(nb_params_at(ps, 0), 0) != 0.5) st = NB_OK; /* would fail the row */
    nb_params_free(ps);
    return st;
}

static nb_tensor *M(nb_tape *tp, size_t rows, size_t cols) { return nb_ones(tp, NB_F32, NB_SHAPE(rows, cols)); }
static nb_tensor *V(nb_tape *tp, size_t n) { return nb_ones(tp, NB_F32, NB_SHAPE(n)); }
static nb_tensor *grad_leaf(nb_tape *tp, size_t n) {
    nb_tensor *t = nb_full(tp, NB_F64, NB_SHAPE(n), 2);
    nb_requires_grad(t, true);
    return t;
}

/* An op case: `expr` is evaluated on a fresh tape `tp`. */
#define OP_CASE(fn, expr)                              \
    static nb_status fn(void) {                        \
        nb_tape *tp = nb_tape_new();                   \
        nb_status st = nb_tensor_status(expr);         \
        nb_tape_free(tp);                              \
        return st;                                     \
    }

/* ------------------------------------------------------------ the ops */

OP_CASE(add_shapes, nb_add(tp, M(tp, 2, 3), V(tp, 2)))
OP_CASE(sub_shapes, nb_sub(tp, M(tp, 4, 3), M(tp, 2, 3)))
OP_CASE(mul_shapes, nb_mul(tp, M(tp, 2, 3), M(tp, 3, 2)))
OP_CASE(div_shapes, nb_div(tp, V(tp, 5), V(tp, 4)))
OP_CASE(matmul_inner, nb_matmul(tp, M(tp, 3, 4), M(tp, 5, 2)))
OP_CASE(matmul_vector, nb_matmul(tp, M(tp, 2, 3), V(tp, 4)))
OP_CASE(matmul_batch, nb_matmul(tp, nb_ones(tp, NB_F32, NB_SHAPE(2, 3, 4)), nb_ones(tp, NB_F32, NB_SHAPE(5, 4, 2))))
OP_CASE(matmul_scalar, nb_matmul(tp, M(tp, 2, 3), nb_scalar(tp, NB_F32, 2)))
OP_CASE(matmul_t_inner, nb_matmul_t(tp, M(tp, 3, 4), M(tp, 3, 2), false, true))
OP_CASE(linear_bias, nb_linear(tp, M(tp, 2, 3), M(tp, 3, 4), V(tp, 3)))
OP_CASE(mse_shapes, nb_mse(tp, M(tp, 2, 3), M(tp, 3, 2)))
OP_CASE(bce_shapes, nb_bce(tp, nb_full(tp, NB_F32, NB_SHAPE(4), 0.5), V(tp, 3)))
OP_CASE(bce_logits_shapes, nb_bce_logits(tp, M(tp, 4, 1), V(tp, 3)))
OP_CASE(sce_targets, nb_softmax_cross_entropy(tp, M(tp, 2, 3), V(tp, 3), 1))
OP_CASE(sum_axis_range, nb_sum_axis(tp, M(tp, 2, 3), 2, false))
OP_CASE(mean_axis_range, nb_mean_axis(tp, M(tp, 2, 3), -3, true))
OP_CASE(softmax_axis, nb_softmax(tp, M(tp, 2, 3), 5))
OP_CASE(log_softmax_axis, nb_log_softmax(tp, V(tp, 3), 1))
OP_CASE(transpose_axis, nb_transpose(tp, M(tp, 2, 3), 0, 2))
OP_CASE(reshape_count, nb_reshape(tp, M(tp, 2, 3), NB_DIMS(4, 2)))
OP_CASE(reshape_infer, nb_reshape(tp, M(tp, 2, 3), NB_DIMS(4, -1)))
OP_CASE(reshape_zero, nb_reshape(tp, M(tp, 2, 3), NB_DIMS(0, 6)))
OP_CASE(cast_dtype, nb_cast(tp, V(tp, 2), (nb_dtype)5))
OP_CASE(clamp_bounds, nb_clamp(tp, V(tp, 2), 1, -1))
OP_CASE(mixed_add, nb_add(tp, V(tp, 2), nb_ones(tp, NB_F64, NB_SHAPE(2))))
OP_CASE(mixed_matmul, nb_matmul(tp, M(tp, 2, 2), nb_ones(tp, NB_F64, NB_SHAPE(2, 2))))
OP_CASE(null_unary, nb_sigmoid(tp, NULL))
OP_CASE(null_binary, nb_mul(tp, V(tp, 2), NULL))
OP_CASE(null_loss_target, nb_mse(tp, V(tp, 2), NULL))
OP_CASE(errored_input, nb_relu(tp, nb_exp(tp, nb_add(tp, V(tp, 2), V(tp, 3)))))
OP_CASE(bce_prob_range, nb_bce(tp, nb_from_array(tp, NB_F32, NB_SHAPE(3), ((double[]){0.5, 1.5, 0.2})), V(tp, 3)))
OP_CASE(bce_prob_nan, nb_bce(tp, nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){0.5, NAN})),
                             nb_ones(tp, NB_F64, NB_SHAPE(2))))
OP_CASE(sce_class_range, nb_softmax_cross_entropy(tp, M(tp, 2, 3), nb_from_array(tp, NB_F32, NB_SHAPE(2),
                                                  ((double[]){1, 3})), 1))
OP_CASE(sce_class_nan, nb_softmax_cross_entropy(tp, M(tp, 2, 3), nb_from_array(tp, NB_F32, NB_SHAPE(2),
                                                ((double[]){0, NAN})), 1))
OP_CASE(sce_class_fraction, nb_softmax_cross_entropy(tp, M(tp, 2, 3), nb_from_array(tp, NB_F32, NB_SHAPE(2),
                                                     ((double[]){0.5, 1})), 1))

static nb_status null_tape(void) {
    nb_tensor *a = V(NULL, 2);
    nb_status st = nb_tensor_status(nb_exp(NULL, a));
    nb_tensor_free(a);
    return st;
}

static nb_status foreign_tape(void) {
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_status st = nb_tensor_status(nb_add(tp, V(tp, 2), V(other, 2)));
    nb_tape_free(tp);
    nb_tape_free(other);
    return st;
}

/* ------------------------------------------------------------ creation */

static nb_status created(nb_tensor *t) {
    nb_status st = nb_tensor_status(t);
    nb_tensor_free(t);
    return st;
}
static nb_status empty_tensor(void) { return created(nb_zeros(NULL, NB_F64, NB_SHAPE(3, 0))); }
static nb_status overflowing_dims(void) { return created(nb_zeros(NULL, NB_F32, NB_SHAPE(SIZE_MAX / 2, 4))); }
static nb_status overflowing_bytes(void) {
    return created(nb_zeros(NULL, NB_F64, NB_SHAPE((size_t)1 << 31, (size_t)1 << 31, 8)));
}
static nb_status too_many_dims(void) {
    return created(nb_zeros(NULL, NB_F64, 9, (size_t[9]){1, 1, 1, 1, 1, 1, 1, 1, 1}));
}
static nb_status unknown_dtype(void) { return created(nb_zeros(NULL, (nb_dtype)7, NB_SHAPE(2))); }
static nb_status null_data(void) { return created(nb_from_f32(NULL, NB_SHAPE(2), NULL)); }
static nb_status null_shape(void) { return created(nb_zeros(NULL, NB_F64, 2, NULL)); }
static nb_status uniform_bounds(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    return created(nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(2), 1, 0));
}
static nb_status normal_sd(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    return created(nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(2), 0, -1));
}

/* ------------------------------------------------------------ backward */

static nb_status backward_non_scalar(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(nb_square(tp, grad_leaf(tp, 3)));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_wrong_seed(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_seed(nb_square(tp, grad_leaf(tp, 3)), nb_ones(tp, NB_F64, NB_SHAPE(2)));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_after_reset(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 1);
    nb_tensor *loss = nb_sum(tp, nb_square(tp, x));
    nb_status first = nb_backward(loss);
    nb_tape_reset(tp);
    nb_status st = first == NB_OK ? nb_backward(loss) : NB_OK;
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}

static nb_status backward_without_params(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(nb_sum(tp, nb_square(tp, V(tp, 3))));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_on_leaf(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(grad_leaf(tp, 1));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_errored(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(nb_sum(tp, nb_add(tp, grad_leaf(tp, 2), grad_leaf(tp, 3))));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_null(void) { return nb_backward(NULL); }

/* ------------------------------------------------------------ NaN and Inf */

/* Anomaly mode names the op that first made a NaN or Inf, with its site. */
static nb_status anomaly_log_negative(void) {
    nb_tape *tp = nb_tape_new();
    nb_tape_set_anomaly_mode(tp, true);
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, -2, 3}));
    nb_status st = nb_tensor_status(nb_sum(tp, nb_log(tp, x)));
    nb_tape_free(tp);
    return st;
}

static nb_status anomaly_nan_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tape_set_anomaly_mode(tp, true);
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, NAN}));
    nb_tensor_set_name(x, "pixels");
    nb_status st = nb_tensor_status(nb_tanh(tp, x));
    nb_tape_free(tp);
    return st;
}

static nb_status anomaly_exp_overflow(void) {
    nb_tape *tp = nb_tape_new();
    nb_tape_set_anomaly_mode(tp, true);
    nb_tensor *x = nb_full(tp, NB_F32, NB_SHAPE(2), 100);
    nb_status st = nb_tensor_status(nb_exp(tp, x));
    nb_tape_free(tp);
    return st;
}

static char gradcheck_message[512];

static nb_tensor *log_sum(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    return nb_sum(tp, nb_log(tp, x[0]));
}

static nb_status gradcheck_nan(void) {
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){-1, 2}));
    nb_gradcheck_result r = nb_gradcheck(log_sum, &x, 1, NULL, NULL);
    snprintf(gradcheck_message, sizeof gradcheck_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

static nb_tensor *stale_sum(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    nb_tensor *y = nb_sum(tp, nb_square(tp, x[0]));
    nb_tape_reset(tp);
    return y;
}
static nb_status gradcheck_stale_result(void) {
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_gradcheck_result r = nb_gradcheck(stale_sum, &x, 1, NULL, NULL);
    snprintf(gradcheck_message, sizeof gradcheck_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

static nb_tensor *freeing_sum(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    nb_tape_free(tp); /* nb_gradcheck's own tape */
    return nb_sum(tp, nb_square(tp, x[0]));
}
static nb_status gradcheck_frees_tape(void) {
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_gradcheck_result r = nb_gradcheck(freeing_sum, &x, 1, NULL, NULL);
    snprintf(gradcheck_message, sizeof gradcheck_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

static nb_status gradcheck_null_input(void) {
    nb_tensor *x = NULL;
    nb_gradcheck_result r = nb_gradcheck(log_sum, &x, 1, NULL, NULL);
    snprintf(gradcheck_message, sizeof gradcheck_message, "%s", r.message);
    return r.status;
}

/* ------------------------------------------------------------ CSV */

static nb_status csv_missing(void) { return csv_status("missing.csv", "age,chol,target\n50,200,1\n61,,0\n", "target"); }
static nb_status csv_text(void) { return csv_status("text.csv", "age,chol,target\n50,high,1\n", "target"); }
static nb_status csv_nan(void) { return csv_status("nan.csv", "age,chol,target\n50,nan,1\n", "target"); }
static nb_status csv_inf(void) { return csv_status("inf.csv", "age,chol,target\n50,1e999,1\n", "target"); }
static nb_status csv_short_row(void) { return csv_status("short.csv", "a,b,target\n1,2,0\n3,1\n", "target"); }
static nb_status csv_long_row(void) { return csv_status("long.csv", "a,b,target\n1,2,0,9\n", "target"); }
static nb_status csv_no_header(void) { return csv_status("nohead.csv", "1,2,0\n3,4,1\n", "target"); }
static nb_status csv_unknown_target(void) { return csv_status("heart.csv", "age,chol,target\n1,2,0\n", "label"); }
static nb_status csv_empty(void) { return csv_status("empty.csv", "\n\n", "target"); }
static nb_status csv_header_only(void) { return csv_status("header.csv", "a,target\n", "target"); }
static nb_status csv_only_target(void) { return csv_status("lonely.csv", "target\n1\n", "target"); }
static nb_status csv_missing_file(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    return nb_csv_read("/nonexistent/data.csv", &o, &d);
}
static nb_status csv_no_target_option(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o); /* target left NULL */
    nb_dataset d;
    return nb_csv_read(write_text("fine.csv", "a,y\n1,0\n"), &o, &d);
}

/* ------------------------------------------------------------ IDX */

static const unsigned dims_2x3[2] = {2, 3};
static nb_status idx_magic(void) {
    const char *path = write_idx("magic.idx", 0x08, 2, dims_2x3, 6);
    FILE *f = fopen(path, "r+b");
    if (f) fputc(0x12, f), fclose(f);
    return idx_status(path);
}
static nb_status idx_type(void) { return idx_status(write_idx("type.idx", 0x0A, 2, dims_2x3, 6)); }
static nb_status idx_truncated(void) { return idx_status(write_idx("cut.idx", 0x08, 2, dims_2x3, 5)); }
static nb_status idx_extra(void) { return idx_status(write_idx("long.idx", 0x08, 2, dims_2x3, 7)); }
static nb_status idx_dims_cut(void) {
    const char *path = write_idx("dims.idx", 0x08, 2, dims_2x3, 0);
    truncate(path, 9);
    return idx_status(path);
}
static nb_status idx_no_magic(void) { return idx_status(write_bytes("tiny.idx", "\0\0", 2)); }
static nb_status idx_huge(void) {
    const unsigned dims[3] = {60000, 60000, 60000}; /* 2e14 values, 6 bytes given */
    return idx_status(write_idx("huge.idx", 0x0D, 3, dims, 6));
}
static nb_status idx_empty_dim(void) {
    const unsigned dims[2] = {0, 3};
    return idx_status(write_idx("empty.idx", 0x08, 2, dims, 0));
}
static nb_status idx_gz_truncated(void) {
    /* A gzip stream of a 2x3 IDX file, cut in the middle of its data. */
    const char *path = test_path("cut.idx.gz");
    gzFile g = gzopen(path, "wb");
    unsigned char b[12 + 6] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
    gzwrite(g, b, 15);
    gzclose(g);
    return idx_status(path);
}
static nb_status idx_missing_file(void) { return idx_status("/nonexistent/train-images-idx3-ubyte.gz"); }

/* ------------------------------------------------------------ parameter files */

static nb_status params_truncated(void) {
    size_t len;
    unsigned char *b = good_params_file(&len);
    return load_into(write_bytes("cut.nbp", b, len / 2), "W", 2, NB_F64);
}
static nb_status params_flipped(void) {
    size_t len;
    unsigned char *b = good_params_file(&len);
    b[len - 9] ^= 0x04; /* a bit of b's last value */
    return load_into(write_bytes("flip.nbp", b, len), "W", 2, NB_F64);
}
static nb_status params_magic(void) {
    size_t len;
    unsigned char *b = good_params_file(&len);
    b[0] = 'X';
    return load_into(write_bytes("magic.nbp", b, len), "W", 2, NB_F64);
}
static nb_status params_wrong_name(void) { return load_into(test_path("good.nbp"), "weights", 2, NB_F64); }
static nb_status params_wrong_shape(void) { return load_into(test_path("good.nbp"), "W", 4, NB_F64); }
static nb_status params_wrong_dtype(void) { return load_into(test_path("good.nbp"), "W", 2, NB_F32); }
static nb_status params_count(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_params_add(ps, "c", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    nb_status st = nb_params_load(ps, test_path("good.nbp"));
    nb_params_free(ps);
    return st;
}
static nb_status params_not_a_file(void) {
    return load_into(write_text("notes.nbp", "these are my notes, not a model\n"), "W", 2, NB_F64);
}
static nb_status params_missing_file(void) { return load_into("/nonexistent/model.nbp", "W", 2, NB_F64); }
static nb_status params_save_dir(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_params_save(ps, "/nonexistent/dir/model.nbp");
    nb_params_free(ps);
    return st;
}
/* ------------------------------------------------------------ safetensors files */

/* A safetensors file: the 8-byte length, the header text, then `data`
 * bytes (of value 0x3F, so that each float is a finite number). */
static const char *write_safetensors(const char *name, const char *header, size_t data) {
    size_t n = strlen(header), total = 8 + n + data;
    unsigned char *b = calloc(total, 1);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)n >> (8 * k));
    memcpy(b + 8, header, n);
    memset(b + 8 + n, 0x3F, data);
    const char *path = write_bytes(name, b, total);
    free(b);
    return path;
}
/* model("W", 2, NB_F64)'s tensors: W float32 (2, 3) in bytes 0..24, b float64 (3,) in 24..48. */
#define ST_W "\"W\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define ST_B "\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[24,48]}"
#define ST_CASE(fn, file, header, data)                                                   \
    static nb_status fn(void) {                                                           \
        return load_into(write_safetensors(file, header, data), "W", 2, NB_F64);         \
    }
ST_CASE(st_good, "good.safetensors", "{" ST_W "," ST_B "}", 48)
ST_CASE(st_truncated, "cut.safetensors", "{" ST_W "," ST_B "}", 30)
ST_CASE(st_bad_json, "json.safetensors", "{\"W\":{\"dtype\":\"F32\" \"shape\":[2,3]}}", 48)
ST_CASE(st_int_dtype, "i64.safetensors", "{\"W\":{\"dtype\":\"I64\",\"shape\":[2,3],\"data_offsets\":[0,48]}}", 48)
ST_CASE(st_gap, "gap.safetensors",
        "{" ST_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[32,56]}}", 56)
ST_CASE(st_overlap, "overlap.safetensors",
        "{" ST_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[16,40]}}", 48)
ST_CASE(st_byte_count, "count.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_shape, "shape.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_missing, "missing.safetensors", "{" ST_W "}", 24)
ST_CASE(st_extra, "extra.safetensors",
        "{" ST_W "," ST_B ",\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[48,52]}}", 52)
ST_CASE(st_twice, "twice.safetensors", "{" ST_W "," ST_W "," ST_B "}", 48)
ST_CASE(st_long_name, "long.safetensors",
        "{\"encoder.layers.11.attention.query.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        4)
ST_CASE(st_not_utf8, "latin1.safetensors", "{\"caf\xe9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4)
ST_CASE(st_unknown_field, "field.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[2,3],\"offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_tail, "tail.safetensors", "{" ST_W "," ST_B "}", 56)
ST_CASE(st_fraction, "fraction.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[2.5,3],\"data_offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_garbage, "garbage.safetensors", "{" ST_W "," ST_B "} x", 48)
static nb_status st_huge_header(void) {
    unsigned char b[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, '{', '}'};
    return load_into(write_bytes("huge.safetensors", b, sizeof b), "W", 2, NB_F64);
}
static nb_status st_save_bad_name(void) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "caf\xe9", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    nb_status st = nb_params_save_safetensors(ps, test_path("bad-name.safetensors"));
    nb_params_free(ps);
    return st;
}

static nb_status params_duplicate(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_tensor_status(nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2))));
    nb_params_free(ps);
    return st;
}
static nb_status params_tape_tensor(void) {
    nb_params *ps = nb_params_new();
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_tensor_status(nb_params_add(ps, "W", V(tp, 2)));
    nb_tape_free(tp);
    nb_params_free(ps);
    return st;
}

/* ------------------------------------------------------------ training toolkit */

static nb_status optimizer_lr(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    o.lr = -0.1;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_status st = opt ? NB_OK : nb_last_status();
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status optimizer_set_lr_nan(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_status st = nb_optimizer_set_lr(opt, NAN);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status optimizer_changed_params(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_params_add(ps, "late", nb_zeros(NULL, NB_F32, NB_SHAPE(2)));
    nb_status st = nb_optimizer_step(opt);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
/* The step's backward finds the non-scalar loss; the message names the
 * caller's line, for the fused path and the plain one alike. */
static nb_status backward_step_non_scalar(nb_optimizer_kind kind) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_optimizer_backward_step(opt, nb_square(tp, nb_params_get(ps, "b")));
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status sgd_step_non_scalar(void) { return backward_step_non_scalar(NB_OPT_SGD); }
static nb_status adam_step_non_scalar(void) { return backward_step_non_scalar(NB_OPT_ADAM); }
static nb_status standardize_columns(void) {
    nb_tensor *train = nb_ones(NULL, NB_F32, NB_SHAPE(4, 3)), *test = nb_ones(NULL, NB_F32, NB_SHAPE(2, 5));
    nb_status st = nb_standardize(train, &test, 1);
    nb_tensor_free(train);
    nb_tensor_free(test);
    return st;
}
static nb_status split_fraction(void) {
    nb_dataset d = {.X = nb_ones(NULL, NB_F32, NB_SHAPE(10, 2)), .y = nb_ones(NULL, NB_F32, NB_SHAPE(10, 1)),
                    .rows = 10, .features = 2};
    nb_dataset train, test;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status st = nb_dataset_split(&d, 1.5, &rng, &train, &test);
    nb_tensor_free(d.X);
    nb_tensor_free(d.y);
    return st;
}
static nb_status batcher_zero(void) {
    nb_batcher b;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status st = nb_batcher_init(&b, 100, 0, &rng);
    if (st == NB_OK) nb_batcher_free(&b);
    return st;
}
OP_CASE(gather_range, nb_gather_rows(tp, M(tp, 3, 2), ((size_t[]){0, 3}), 2))
static nb_status init_fan(void) {
    nb_tensor *t = nb_zeros(NULL, NB_F32, NB_SHAPE(2, 2));
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status st = nb_init_tensor(t, NB_INIT_GLOROT_UNIFORM, 0, 2, &rng);
    nb_tensor_free(t);
    return st;
}

static nb_status threads_zero(void) { return nb_set_threads(0); }
static nb_status threads_too_many(void) { return nb_set_threads(1000); }

/* ------------------------------------------------------------ graph export */

static nb_status dot_unwritable(void) {
    nb_tape *tp = nb_tape_new();
    nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_dot_save(tp, "/nonexistent/graph.dot", NULL);
    nb_tape_free(tp);
    return st;
}
/* The options' tensors: a loss from before a reset, a checked one of another tape. */
static nb_status dot_stale_loss(void) {
    nb_tape *tp = nb_tape_new();
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.loss = nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_tape_reset(tp);
    nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_dot_save(tp, test_path("stale.dot"), &o);
    nb_tape_free(tp);
    return st;
}
static nb_status html_checked_elsewhere(void) {
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *elsewhere = nb_ones(other, NB_F64, NB_SHAPE(2));
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.checked = &elsewhere;
    o.checked_errors = (double[]){1e-6};
    o.n_checked = 1;
    nb_status st = nb_backward_html(nb_sum(tp, nb_square(tp, grad_leaf(tp, 2))), test_path("c.html"), NULL, &o);
    nb_tape_free(other);
    nb_tape_free(tp);
    return st;
}
static nb_status render(const char *dot_name, const char *dot, const char *out_name, const char *format) {
    char dot_path[160];
    snprintf(dot_path, sizeof dot_path, "%s", write_text(dot_name, dot));
    return nb_dot_render(dot_path, test_path(out_name), format);
}
static nb_status render_not_dot(void) { return render("bad.dot", "this is not { a graph", "bad.svg", "svg"); }
static nb_status render_format(void) { return render("ok.dot", "digraph { a -> b }", "ok.xyz", "no-such-format"); }
/* Graphviz devices that do not render into the one output: vrml writes a
 * PNG per node into the current directory (through any symlink there),
 * x11 and xlib crash with no display, gtk calls exit(1). */
static nb_status render_vrml(void) { return render("ok.dot", "digraph { a -> b }", "ok.wrl", "vrml"); }
static nb_status render_x11(void) { return render("ok.dot", "digraph { a -> b }", "ok.x", "x11"); }
static nb_status render_gtk(void) { return render("ok.dot", "digraph { a -> b }", "ok.gtk", "gtk:cairo"); }
static nb_status render_unwritable(void) {
    return nb_dot_render(test_path("ok.dot"), "/nonexistent/graph.svg", "svg");
}
static nb_status scope_null_name(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_scope_begin(tp, NULL);
    nb_tape_free(tp);
    return st;
}

/* ------------------------------------------------------------ stale and changed tensors */

static nb_status stale_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *kept = nb_exp(tp, V(tp, 3));
    nb_tape_reset(tp);
    nb_status st = nb_tensor_status(nb_add(tp, V(tp, 3), kept));
    nb_tape_free(tp);
    return st;
}
static nb_status changed_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 1);
    nb_tensor_set_name(x, "x");
    nb_tensor *y = nb_sum(tp, nb_mul(tp, x, x));
    nb_set(x, 0, 10);
    nb_status st = nb_backward(y);
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}
static nb_status backward_seed_dtype(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_seed(nb_square(tp, grad_leaf(tp, 3)), V(tp, 3));
    nb_tape_free(tp);
    return st;
}
/* nb_optimizer_backward_step applied W's update and kept no gradient; the
 * next one, with the gradients not zeroed, cannot give the two calls' result. */
static nb_status fused_sgd_unzeroed(void) {
    nb_params *ps = nb_params_new();
    nb_tensor *W = nb_params_add(ps, "W", nb_full(NULL, NB_F64, NB_SHAPE(3, 2), 0.5));
    nb_tensor *X = nb_ones(NULL, NB_F64, NB_SHAPE(4, 3));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    nb_status st = NB_OK;
    for (int step = 0; step < 2 && st == NB_OK; step++) {
        nb_tape_reset(tp);
        st = nb_optimizer_backward_step(opt, nb_sum(tp, nb_matmul(tp, X, W)));
    }
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_tensor_free(X);
    nb_params_free(ps);
    return st;
}
OP_CASE(reshape_overflow, nb_reshape(tp, M(tp, 2, 4), NB_DIMS(4, (1L << 62) + 2)))
OP_CASE(reshape_overflow_infer, nb_reshape(tp, M(tp, 2, 4), NB_DIMS((1L << 62) + 2, -1, 4)))
static nb_status gather_stale(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *kept = M(tp, 3, 2);
    nb_tape_reset(tp);
    nb_status st = nb_tensor_status(nb_gather_rows(tp, kept, ((size_t[]){0}), 1));
    nb_tape_free(tp);
    return st;
}
static nb_tensor *returns_null(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)tp, (void)x, (void)n, (void)user;
    return NULL;
}
static nb_status gradcheck_null_result(void) {
    nb_tape *other = nb_tape_new();
    nb_add(other, V(other, 2), V(other, 3)); /* an unrelated earlier error */
    nb_tape_free(other);
    nb_tensor *x = grad_leaf(NULL, 2);
    nb_gradcheck_result r = nb_gradcheck(returns_null, &x, 1, NULL, NULL);
    snprintf(gradcheck_message, sizeof gradcheck_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

/* ------------------------------------------------------------ custom ops and passes inside passes */

/* y = x (forward copies), dL/dx = G; a view of x; and one whose
 * backward_graph gives back what `bad_graph` says. */
static void copy_forward(nb_op_call *c) {
    memcpy(nb_op_output_data(c), nb_op_input_data(c, 0), nb_op_size(c) * sizeof(double));
}
static void identity_backward(nb_op_call *c) {
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    const double *g = nb_op_grad_output(c);
    for (size_t i = 0; gx && i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + g[i] : g[i];
}
static nb_tensor *(*bad_graph)(nb_tape *tp, nb_tensor *G);
static void bad_backward_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = bad_graph(nb_op_tape(c), G);
}
static const nb_op_def custom_view = {.name = "custom_view", .forward = copy_forward, .backward = identity_backward,
                                      .view = true};
static const nb_op_def custom_graph = {.name = "custom_graph", .forward = copy_forward,
                                       .backward = identity_backward, .backward_graph = bad_backward_graph};
static void resetting_forward(nb_op_call *c) { nb_tape_reset(nb_op_tape(c)); }
static const nb_op_def custom_reset = {.name = "custom_reset", .forward = resetting_forward,
                                       .backward = identity_backward};
static void resetting_backward(nb_op_call *c) { nb_tape_reset(nb_op_tape(c)); }
static void resetting_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    (void)G, (void)grad_in;
    nb_tape_reset(nb_op_tape(c));
}
static void resetting_describe(const nb_op_call *c, char *buf, size_t size) {
    (void)buf, (void)size;
    nb_tape_reset(nb_op_tape(c));
}
static const nb_op_def backward_resets_op = {.name = "backward_resets", .forward = copy_forward,
                                             .backward = resetting_backward, .backward_graph = resetting_graph,
                                             .describe = resetting_describe};
static void freeing_hook(nb_tape *tp, size_t entry, void *user) {
    (void)entry, (void)user;
    nb_tape_free(tp);
}
static void flagless_backward(nb_op_call *c) { nb_op_grad_input(c, 0, NULL); }
static const nb_op_def custom_flagless = {.name = "custom_flagless", .forward = copy_forward,
                                          .backward = flagless_backward};

static nb_status view_shape(int ndim, const size_t *shape, nb_dtype dt) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(tp, NB_F64, NB_SHAPE(8));
    nb_status st = nb_tensor_status(nb_op(tp, &custom_view, &x, 1, dt, ndim, shape, NULL, 0));
    nb_tape_free(tp);
    return st;
}
static nb_status view_overflow(void) { return view_shape(2, (size_t[]){4, ((size_t)1 << 62) + 2}, NB_F64); }
static nb_status view_count(void) { return view_shape(2, (size_t[]){3, 3}, NB_F64); }
static nb_status view_dtype(void) { return view_shape(1, (size_t[]){8}, NB_F32); }

static nb_status forward_resets(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = V(tp, 2);
    nb_status st = nb_tensor_status(nb_op(tp, &custom_reset, &x, 1, NB_F32, NB_SHAPE(2), NULL, 0));
    nb_tape_free(tp);
    return st;
}
/* 0: nb_backward, 1: nb_grad with create_graph, 2: nb_dot_save, 3: a hook that frees the tape */
static nb_status callback_resets(int how) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2), *g;
    nb_tensor *L = nb_sum(tp, nb_op(tp, &backward_resets_op, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0));
    if (how == 3) nb_tape_set_backward_hook(tp, freeing_hook, NULL);
    nb_status st = how == 0 || how == 3 ? nb_backward(L)
                   : how == 1           ? nb_grad(L, &x, 1, &g, true)
                                        : nb_dot_save(tp, test_path("resets.dot"), NULL);
    nb_tape_set_backward_hook(tp, NULL, NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status backward_resets(void) { return callback_resets(0); }
static nb_status backward_graph_resets(void) { return callback_resets(1); }
static nb_status describe_resets(void) { return callback_resets(2); }
static nb_status hook_frees(void) { return callback_resets(3); }
static nb_status grad_input_flagless(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2);
    nb_status st = nb_backward(nb_sum(tp, nb_op(tp, &custom_flagless, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0)));
    nb_tape_free(tp);
    return st;
}

static nb_tensor *sum_of(nb_tape *tp, nb_tensor *G) { return nb_sum(tp, G); }
static nb_tensor *as_float32(nb_tape *tp, nb_tensor *G) { return nb_cast(tp, G, NB_F32); }
static nb_tape *graph_other;
static nb_tensor *on_other_tape(nb_tape *tp, nb_tensor *G) {
    (void)tp;
    return nb_copy(graph_other, G);
}
static nb_status graph_result(nb_tensor *(*bad)(nb_tape *, nb_tensor *)) {
    nb_tape *tp = nb_tape_new();
    graph_other = nb_tape_new();
    bad_graph = bad;
    nb_tensor *x = grad_leaf(NULL, 2), *g;
    nb_tensor *p = nb_pad(tp, x, ((size_t[]){0, 1}));
    nb_status st = nb_grad(nb_sum(tp, nb_op(tp, &custom_graph, &p, 1, NB_F64, NB_SHAPE(3), NULL, 0)), &x, 1, &g, true);
    nb_tensor_free(x);
    nb_tape_free(graph_other);
    nb_tape_free(tp);
    return st;
}
static nb_status graph_scalar(void) { return graph_result(sum_of); }
static nb_status graph_dtype(void) { return graph_result(as_float32); }
static nb_status graph_tape(void) { return graph_result(on_other_tape); }

static nb_status stale_seed(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *seed = nb_ones(tp, NB_F64, NB_SHAPE(2));
    nb_tape_reset(tp);
    nb_status st = nb_backward_seed(nb_square(tp, grad_leaf(tp, 2)), seed);
    nb_tape_free(tp);
    return st;
}
/* A seed made on another live tape: refused, as every op and nb_grad_seed
 * refuse another tape's tensor (nb_backward_seed read its values). */
static nb_status foreign_seed(bool grad) {
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *seed = nb_ones(other, NB_F64, NB_SHAPE(2)), *x = grad_leaf(tp, 2), *g = NULL;
    nb_tensor *y = nb_square(tp, x);
    nb_status st = grad ? nb_grad_seed(y, seed, &x, 1, &g, false) : nb_backward_seed(y, seed);
    nb_tape_free(other);
    nb_tape_free(tp);
    return st;
}
static nb_status foreign_seed_backward(void) { return foreign_seed(false); }
static nb_status foreign_seed_grad(void) { return foreign_seed(true); }
static nb_status stale_tangent(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *t = nb_ones(tp, NB_F64, NB_SHAPE(2));
    nb_tape_reset(tp);
    nb_tensor *x = grad_leaf(tp, 2), *jt;
    nb_status st = nb_jvp(nb_square(tp, x), &x, 1, &t, &jt);
    nb_tape_free(tp);
    return st;
}
static nb_status jvp_null_wrt(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2), *none = NULL, *jt;
    nb_status st = nb_jvp(nb_square(tp, x), &none, 1, &x, &jt);
    nb_tape_free(tp);
    return st;
}
static nb_status gradcheck_stale_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2);
    nb_tape_reset(tp);
    nb_gradcheck_result r = nb_gradcheck(log_sum, &x, 1, NULL, NULL);
    snprintf(gradcheck_message, sizeof gradcheck_message, "%s", r.message);
    nb_tape_free(tp);
    return r.status;
}

/* ------------------------------------------------------------ files that are not files */

/* Never /dev/full: a link of our own to /dev/null, which is only stat()ed. */
static nb_status render_to_device(void) {
    const char *link = test_path("null.svg");
    unlink(link);
    if (symlink("/dev/null", link) != 0) return NB_OK; /* would fail the row */
    return nb_dot_render(write_text("device.dot", "digraph { a -> b }"), link, "svg");
}
static const char *fifo(const char *name) {
    const char *path = test_path(name);
    unlink(path);
    mkfifo(path, 0600);
    return path;
}
static nb_status dot_save_fifo(void) {
    nb_tape *tp = nb_tape_new();
    nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_dot_save(tp, fifo("graph.fifo"), NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status html_into_directory(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_backward_html(loss, test_dir, NULL, NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status history_dangling_link(void) {
    const char *link = test_path("history.csv");
    unlink(link);
    if (symlink("no/such/file.csv", link) != 0) return NB_OK;
    nb_progress *p = nb_progress_new(stderr, 1, 1, false);
    nb_status st = nb_progress_save_csv(p, link);
    nb_progress_free(p);
    return st;
}
/* Frames under a directory of 4090 bytes: it fits, DIR/frame_000.dot does not. */
static nb_status frames_path_too_long(void) {
    char dir[4200];
    size_t n = (size_t)snprintf(dir, sizeof dir, "%s", test_dir);
    while (n < 4090) {
        size_t part = 4090 - n - 1 > 200 ? 200 : 4090 - n - 1;
        dir[n++] = '/';
        memset(dir + n, 'd', part);
        dir[n += part] = '\0';
        mkdir(dir, 0755);
    }
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_frames(nb_sum(tp, nb_square(tp, grad_leaf(tp, 2))), dir, NULL, NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status file_write_empty_path(void) { return nb_file_write("", "x", 1); }
static nb_status params_load_fifo(void) { return load_into(fifo("model.nbp"), "W", 2, NB_F64); }
static nb_status safetensors_load_zero(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_params_load_safetensors(ps, "/dev/zero");
    nb_params_free(ps);
    return st;
}
static nb_status csv_dev_zero(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    return nb_csv_read("/dev/zero", &o, &d);
}
static nb_status idx_fifo(void) { return idx_status(fifo("images.idx")); }
static nb_status render_from_fifo(void) { return nb_dot_render(fifo("in.dot"), test_path("out.svg"), "svg"); }
static nb_status file_open_directory(void) {
    FILE *f = nb_file_open_read(test_dir, NULL);
    if (f) fclose(f);
    return f ? NB_OK : nb_last_status();
}
/* 1 MB of zeros packs into about 1 KB; the header announces 10 MB. */
static nb_status idx_gzip_bomb(void) {
    const char *path = test_path("bomb.idx.gz");
    gzFile g = gzopen(path, "wb9");
    if (!g) return NB_OK;
    gzwrite(g, "\0\0\x08\x01\x00\x98\x96\x80", 8);
    unsigned char *zeros = calloc(1, 1 << 20);
    if (zeros) gzwrite(g, zeros, 1 << 20);
    free(zeros);
    gzclose(g);
    return idx_status(path);
}
static nb_status params_save_fifo(void) {
    const char *path = test_path("model.fifo");
    if (mkfifo(path, 0600) != 0) return NB_OK; /* would fail the row */
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_params_save(ps, path);
    nb_params_free(ps);
    struct stat after;
    if (lstat(path, &after) != 0 || !S_ISFIFO(after.st_mode)) st = NB_OK; /* replaced: fail the row */
    unlink(path);
    return st;
}
static nb_status params_load_dir(void) { return load_into(test_dir, "W", 2, NB_F64); }
static nb_status idx_dir(void) { return idx_status(test_dir); }
static nb_status csv_dir(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    return nb_csv_read(test_dir, &o, &d);
}
static nb_status csv_dtype(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    o.dtype = (nb_dtype)9;
    nb_dataset d;
    return nb_csv_read(write_text("dtype.csv", "a,y\n1,0\n"), &o, &d);
}
static nb_status csv_target_twice(void) { return csv_status("twice.csv", "a,y,y\n1,0,0\n", "y"); }
static nb_status csv_nul_byte(void) {
    static const char bytes[] = "a,b,y\n1,2\0,999\n";
    return csv_status_bytes("nul.csv", bytes, sizeof bytes - 1, "y");
}
static nb_status frames_empty_dir(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_frames(nb_sum(tp, nb_square(tp, grad_leaf(tp, 2))), "", NULL, NULL);
    nb_tape_free(tp);
    return st;
}

/* ------------------------------------------------------------ the toolkit's trust in its caller */

static nb_status params_same_tensor_twice(void) {
    nb_params *ps = nb_params_new();
    nb_tensor *W = nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 2)));
    nb_status st = nb_tensor_status(nb_params_add(ps, "W_tied", W));
    nb_params_free(ps); /* frees W once */
    return st;
}
static nb_status split_lying_struct(void) {
    nb_dataset d = {.X = nb_ones(NULL, NB_F32, NB_SHAPE(10, 2)), .y = nb_ones(NULL, NB_F64, NB_SHAPE(10, 1)),
                    .rows = 10, .features = 2};
    nb_dataset train, test;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status dtypes = nb_dataset_split(&d, 0.5, &rng, &train, &test);
    d.features = 5; /* claims more columns than X has */
    nb_tensor_free(d.y);
    d.y = nb_ones(NULL, NB_F32, NB_SHAPE(10, 1));
    nb_status columns = nb_dataset_split(&d, 0.5, &rng, &train, &test);
    nb_tensor_free(d.X);
    nb_tensor_free(d.y);
    return dtypes == NB_ERR_SHAPE ? columns : NB_OK;
}
static nb_status confusion_classes(void) {
    size_t counts[4] = {0}; /* room for 2 classes; 9 asked */
    nb_tensor *scores = nb_ones(NULL, NB_F32, NB_SHAPE(3, 2)), *labels = nb_zeros(NULL, NB_F32, NB_SHAPE(3));
    nb_status st = nb_confusion_matrix(scores, labels, 1, 9, counts);
    nb_tensor_free(scores);
    nb_tensor_free(labels);
    return st;
}

/* ------------------------------------------------------------ indexing, joining, functions */

OP_CASE(slice_axis, nb_slice(tp, M(tp, 2, 3), 2, 0, 1, 1))
OP_CASE(slice_step, nb_slice(tp, M(tp, 2, 3), 1, 0, 3, 0))
OP_CASE(slice_empty, nb_slice(tp, M(tp, 2, 3), 1, 2, 1, 1))
OP_CASE(select_range, nb_index_select(tp, M(tp, 5, 2), 0, ((size_t[]){1, 5, 0}), 3))
OP_CASE(select_none, nb_index_select(tp, M(tp, 5, 2), 0, ((size_t[]){0}), 0))
OP_CASE(gather_value, nb_gather(tp, M(tp, 2, 3), 1, nb_from_array(tp, NB_F32, NB_SHAPE(2, 1), ((double[]){0, 3}))))
OP_CASE(gather_fraction, nb_gather(tp, M(tp, 2, 3), 1, nb_from_array(tp, NB_F32, NB_SHAPE(2, 1), ((double[]){0, 1.5}))))
OP_CASE(gather_shape, nb_gather(tp, M(tp, 2, 3), 1, V(tp, 2)))
static nb_status concat_shapes(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[3] = {M(tp, 2, 3), M(tp, 2, 4), M(tp, 3, 3)};
    nb_status st = nb_tensor_status(nb_concat(tp, list, 3, 1));
    nb_tape_free(tp);
    return st;
}
static nb_status stack_shapes(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[2] = {M(tp, 2, 3), M(tp, 2, 4)};
    nb_status st = nb_tensor_status(nb_stack(tp, list, 2, 0));
    nb_tape_free(tp);
    return st;
}
static nb_status concat_none(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[1] = {NULL};
    nb_status st = nb_tensor_status(nb_concat(tp, list, 0, 0));
    nb_tape_free(tp);
    return st;
}
static nb_status concat_null_member(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[5] = {M(tp, 2, 3), M(tp, 2, 3), M(tp, 2, 3), M(tp, 2, 3), NULL};
    nb_status st = nb_tensor_status(nb_concat(tp, list, 5, 0));
    nb_tape_free(tp);
    return st;
}
OP_CASE(where_shapes, nb_where(tp, M(tp, 2, 3), M(tp, 2, 3), V(tp, 2)))
OP_CASE(pad_null, nb_pad(tp, M(tp, 2, 3), NULL))
OP_CASE(broadcast_to_shape, nb_broadcast_to(tp, M(tp, 2, 3), NB_SHAPE(4, 3)))
OP_CASE(broadcast_to_fewer, nb_broadcast_to(tp, M(tp, 2, 3), NB_SHAPE(3)))
OP_CASE(permute_axes, nb_permute(tp, nb_ones(tp, NB_F32, NB_SHAPE(2, 3, 4)), ((int[]){0, 2, 0})))
OP_CASE(squeeze_size, nb_squeeze(tp, M(tp, 2, 3), 1))
OP_CASE(unsqueeze_axis, nb_unsqueeze(tp, M(tp, 2, 3), 4))
OP_CASE(maximum_shapes, nb_maximum(tp, M(tp, 2, 3), V(tp, 2)))
OP_CASE(logsumexp_axis, nb_logsumexp(tp, M(tp, 2, 3), 2, false))
OP_CASE(var_dof, nb_var_axis(tp, M(tp, 2, 1), 1, false, 1))
OP_CASE(argmax_axis, nb_argmax(tp, V(tp, 3), -2, false))
OP_CASE(layer_norm_gamma, nb_layer_norm(tp, M(tp, 2, 3), V(tp, 2), NULL, 1e-5))
OP_CASE(layer_norm_eps, nb_layer_norm(tp, M(tp, 2, 3), NULL, NULL, 0))
OP_CASE(dropout_p, nb_dropout(tp, M(tp, 2, 3), 1.5, NULL))
OP_CASE(dropout_rng, nb_dropout(tp, M(tp, 2, 3), 0.5, NULL))
OP_CASE(huber_delta, nb_huber(tp, V(tp, 3), V(tp, 3), 0))
OP_CASE(huber_shapes, nb_huber(tp, V(tp, 3), V(tp, 4), 1))
OP_CASE(smooth_l1_beta, nb_smooth_l1(tp, V(tp, 3), V(tp, 3), -1))
/* a bound of 0 would zero the gradients; they must come through unchanged */
static nb_status clip_zero(void) {
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_ones(NULL, NB_F64, NB_SHAPE(2)));
    nb_tape *tp = nb_tape_new();
    nb_backward(nb_sum(tp, nb_scale(tp, w, 3)));
    bool refused = isnan(nb_clip_grad_norm(ps, 0));
    nb_status st = refused && nb_grad_get(w, 1) == 3 ? nb_last_status() : NB_OK;
    nb_tape_free(tp);
    nb_params_free(ps);
    return st;
}
static nb_status hvp_stale_vector(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 3), *hv;
    nb_tensor *v = nb_scale(tp, x, 2);
    nb_tape_reset(tp);
    nb_status st = nb_hvp(nb_sum(tp, nb_square(tp, x)), &x, 1, &v, &hv);
    nb_tape_free(tp);
    nb_tensor_free(x);
    return st;
}
/* convolutions, pooling, batch norm */
static nb_tensor *T4(nb_tape *tp, size_t a, size_t b, size_t c, size_t d) { return nb_ones(tp, NB_F32, NB_SHAPE(a, b, c, d)); }
OP_CASE(conv_x_rank, nb_conv2d(tp, M(tp, 28, 28), T4(tp, 8, 1, 3, 3), NULL, NULL))
OP_CASE(conv_channels, nb_conv2d(tp, T4(tp, 2, 3, 8, 8), T4(tp, 4, 2, 3, 3), NULL, NULL))
OP_CASE(conv_groups, nb_conv2d(tp, T4(tp, 2, 3, 8, 8), T4(tp, 4, 1, 3, 3), NULL, &(nb_conv_opts){.groups = 2}))
OP_CASE(conv_bias, nb_conv2d(tp, T4(tp, 2, 3, 8, 8), T4(tp, 4, 3, 3, 3), V(tp, 3), NULL))
OP_CASE(conv_kernel_too_big, nb_conv2d(tp, T4(tp, 1, 1, 4, 4), T4(tp, 1, 1, 3, 3), NULL,
                                       &(nb_conv_opts){.dilation = {2, 2}}))
OP_CASE(conv_negative, nb_conv2d(tp, T4(tp, 1, 1, 4, 4), T4(tp, 1, 1, 3, 3), NULL, &(nb_conv_opts){.stride = {-1, 1}}))
OP_CASE(conv_dtypes, nb_conv2d(tp, T4(tp, 1, 1, 4, 4), nb_ones(tp, NB_F64, NB_SHAPE(1, 1, 3, 3)), NULL, NULL))
OP_CASE(conv1d_rank, nb_conv1d(tp, T4(tp, 1, 1, 4, 4), nb_ones(tp, NB_F32, NB_SHAPE(1, 1, 3)), NULL, NULL))
OP_CASE(pool_opts, nb_max_pool2d(tp, T4(tp, 1, 1, 4, 4), NULL))
OP_CASE(pool_kernel, nb_max_pool2d(tp, T4(tp, 1, 1, 4, 4), &(nb_pool_opts){.kernel = {0, 2}}))
OP_CASE(pool_padding, nb_avg_pool2d(tp, T4(tp, 1, 1, 4, 4), &(nb_pool_opts){.kernel = {2, 2}, .padding = {2, 2}}))
OP_CASE(pool_rank, nb_avg_pool2d(tp, M(tp, 4, 4), &(nb_pool_opts){.kernel = {2, 2}}))
OP_CASE(pool_window, nb_max_pool2d(tp, T4(tp, 1, 1, 2, 2), &(nb_pool_opts){.kernel = {3, 3}}))
OP_CASE(avg_pool_dilation, nb_avg_pool2d(tp, T4(tp, 1, 1, 4, 4), &(nb_pool_opts){.kernel = {2, 2}, .dilation = {2, 2}}))
OP_CASE(bn_gamma, nb_batch_norm(tp, T4(tp, 2, 3, 4, 4), V(tp, 4), NULL, NULL, NULL, 0.1, 1e-5))
OP_CASE(bn_rank, nb_batch_norm(tp, V(tp, 3), NULL, NULL, NULL, NULL, 0.1, 1e-5))
OP_CASE(bn_one_value, nb_batch_norm(tp, M(tp, 1, 3), NULL, NULL, NULL, NULL, 0.1, 1e-5))
OP_CASE(bn_momentum, nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, NULL, NULL, 1.5, 1e-5))
static nb_status bn_running_on_tape(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_tensor_status(nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, V(tp, 3), V(tp, 3), 0.1, 1e-5));
    nb_tape_free(tp);
    return st;
}
static nb_status bn_running_shape(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *rm = nb_zeros(NULL, NB_F32, NB_SHAPE(4)), *rv = nb_ones(NULL, NB_F32, NB_SHAPE(4));
    nb_status st = nb_tensor_status(nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, rm, rv, 0.1, 1e-5));
    nb_tape_free(tp);
    nb_tensor_free(rm);
    nb_tensor_free(rv);
    return st;
}
static nb_status bn_one_running(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *rm = nb_zeros(NULL, NB_F32, NB_SHAPE(3));
    nb_status st = nb_tensor_status(nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, rm, NULL, 0.1, 1e-5));
    nb_tape_free(tp);
    nb_tensor_free(rm);
    return st;
}

/* ------------------------------------------------------------ the table */

#define SITE "test_catalogue.c:"

typedef struct {
    const char *what;     /* the mistake */
    nb_status (*run)(void);
    nb_status expect;
    const char *says[5];  /* the message contains each of these */
} bad_input;

static const bad_input catalogue[] = {
    /* shapes, for every op family */
    {"add of (2, 3) and (2,)", add_shapes, NB_ERR_SHAPE, {"add", "(2, 3)", "(2,)", "broadcast", SITE}},
    {"sub of (4, 3) and (2, 3)", sub_shapes, NB_ERR_SHAPE, {"sub", "(4, 3)", "(2, 3)", SITE}},
    {"mul of (2, 3) and (3, 2)", mul_shapes, NB_ERR_SHAPE, {"mul", "(2, 3)", "(3, 2)", SITE}},
    {"div of (5,) and (4,)", div_shapes, NB_ERR_SHAPE, {"div", "(5,)", "(4,)", SITE}},
    {"matmul (3, 4) . (5, 2)", matmul_inner, NB_ERR_SHAPE, {"matmul", "(3, 4)", "(5, 2)", "4 columns", SITE}},
    {"matmul (2, 3) . a (4,) vector", matmul_vector, NB_ERR_SHAPE, {"matmul", "(2, 3)", "(4,)", "inner sizes", SITE}},
    {"matmul of stacks of 2 and 5 matrices", matmul_batch, NB_ERR_SHAPE,
     {"matmul", "batch axes", "(2, 3, 4)", "(5, 4, 2)", SITE}},
    {"matmul by a scalar", matmul_scalar, NB_ERR_SHAPE, {"matmul", "scalar", "nb_mul", SITE}},
    {"matmul (3, 4) . (3, 2)^T", matmul_t_inner, NB_ERR_SHAPE, {"matmul", "(3, 4)", "(3, 2)", SITE}},
    {"linear with a (3,) bias for 4 outputs", linear_bias, NB_ERR_SHAPE, {"linear", "(3,)", "4", SITE}},
    {"mse of (2, 3) and (3, 2)", mse_shapes, NB_ERR_SHAPE, {"mse", "(2, 3)", "(3, 2)", "same shape", SITE}},
    {"bce of (4,) and (3,)", bce_shapes, NB_ERR_SHAPE, {"bce", "(4,)", "(3,)", SITE}},
    {"bce_logits of (4, 1) and (3,)", bce_logits_shapes, NB_ERR_SHAPE, {"bce_logits", "(4, 1)", "(3,)", SITE}},
    {"softmax_cross_entropy with 3 targets for 2 rows", sce_targets, NB_ERR_SHAPE,
     {"softmax_cross_entropy", "(2, 3)", "(3,)", SITE}},
    /* axes and reshapes */
    {"sum_axis 2 of a matrix", sum_axis_range, NB_ERR_ARG, {"sum_axis", "axis 2 is out of range", "(2, 3)", SITE}},
    {"mean_axis -3 of a matrix", mean_axis_range, NB_ERR_ARG, {"mean_axis", "axis -3", "(2, 3)", SITE}},
    {"softmax over axis 5", softmax_axis, NB_ERR_ARG, {"softmax", "axis 5", "(2, 3)", SITE}},
    {"log_softmax over axis 1 of a vector", log_softmax_axis, NB_ERR_ARG, {"log_softmax", "axis 1", "(3,)", SITE}},
    {"transpose of axes 0 and 2 of a matrix", transpose_axis, NB_ERR_ARG, {"transpose", "2", "(2, 3)", SITE}},
    {"reshape of 6 elements to (4, 2)", reshape_count, NB_ERR_SHAPE, {"reshape", "6 elements", "(4, 2)", SITE}},
    {"reshape of 6 elements to (4, -1)", reshape_infer, NB_ERR_SHAPE, {"reshape", "cannot infer", SITE}},
    {"reshape to a size 0", reshape_zero, NB_ERR_ARG, {"reshape", "size 0", SITE}},
    {"cast to an unknown dtype", cast_dtype, NB_ERR_ARG, {"cast", "unknown dtype 5", SITE}},
    {"clamp with lo > hi", clamp_bounds, NB_ERR_ARG, {"clamp", "[1, -1]", "not ordered", SITE}},
    /* dtypes, NULLs, errored and foreign inputs */
    {"add of float32 and float64", mixed_add, NB_ERR_DTYPE, {"add", "float32", "float64", "nb_cast", SITE}},
    {"matmul of float32 and float64", mixed_matmul, NB_ERR_DTYPE, {"matmul", "float32", "float64", SITE}},
    {"sigmoid of NULL", null_unary, NB_ERR_NULL, {"sigmoid", "input 1 is NULL", SITE}},
    {"mul with a NULL second input", null_binary, NB_ERR_NULL, {"mul", "input 2 is NULL", SITE}},
    {"mse with a NULL target", null_loss_target, NB_ERR_NULL, {"mse", "input 2 is NULL", SITE}},
    {"an op on a NULL tape", null_tape, NB_ERR_NULL, {"exp", "tape is NULL", SITE}},
    {"ops after an error keep the first message", errored_input, NB_ERR_SHAPE, {"add", "(2,)", "(3,)", SITE}},
    {"add of tensors from two tapes", foreign_tape, NB_ERR_STATE, {"add", "another tape", SITE}},
    /* creation */
    {"an empty (3, 0) tensor", empty_tensor, NB_ERR_SHAPE, {"(3, 0)", "empty", SITE}},
    {"dimensions whose count overflows size_t", overflowing_dims, NB_ERR_SHAPE,
     {"more elements than memory can address", SITE}},
    {"dimensions whose bytes overflow size_t", overflowing_bytes, NB_ERR_SHAPE,
     {"more elements than memory can address", SITE}},
    {"9 dimensions", too_many_dims, NB_ERR_ARG, {"9 dimensions", "8", SITE}},
    {"an unknown dtype", unknown_dtype, NB_ERR_ARG, {"dtype", "7", SITE}},
    {"from_f32 of NULL data", null_data, NB_ERR_NULL, {"NULL", SITE}},
    {"a NULL shape", null_shape, NB_ERR_NULL, {"shape", "NULL", SITE}},
    {"uniform on [1, 0)", uniform_bounds, NB_ERR_ARG, {"rand_uniform", "1", "0", SITE}},
    {"normal with standard deviation -1", normal_sd, NB_ERR_ARG, {"rand_normal", "-1", SITE}},
    /* values */
    {"bce of a probability 1.5", bce_prob_range, NB_ERR_VALUE, {"bce", "element 1", "1.5", "bce_logits", SITE}},
    {"bce of a NaN probability", bce_prob_nan, NB_ERR_VALUE, {"bce", "element 1", "nan", SITE}},
    {"class 3 of 3", sce_class_range, NB_ERR_VALUE, {"softmax_cross_entropy", "element 1", "[0, 3)", SITE}},
    {"a NaN class", sce_class_nan, NB_ERR_VALUE, {"softmax_cross_entropy", "element 1", "nan", SITE}},
    {"a fractional class", sce_class_fraction, NB_ERR_VALUE, {"softmax_cross_entropy", "element 0", "0.5", SITE}},
    {"anomaly: log of -2", anomaly_log_negative, NB_ERR_VALUE, {"anomaly", "log", "element 1", "min -2", SITE}},
    {"anomaly: a NaN in a named input", anomaly_nan_input, NB_ERR_VALUE,
     {"anomaly", "tanh", "'pixels'", "outside the tape", SITE}},
    {"anomaly: exp(100) in float32", anomaly_exp_overflow, NB_ERR_VALUE, {"anomaly", "exp", "inf", "max 100", SITE}},
    {"gradcheck of a function that is NaN", gradcheck_nan, NB_ERR_VALUE, {"nb_gradcheck", "NaN"}},
    {"gradcheck of a NULL input", gradcheck_null_input, NB_ERR_NULL, {"nb_gradcheck", "input 0 is NULL"}},
    {"gradcheck of a function that returns a tensor it reset", gradcheck_stale_result, NB_ERR_STATE,
     {"nb_gradcheck", "the function returned", "before nb_tape_reset"}},
    {"gradcheck of a function that frees its tape", gradcheck_frees_tape, NB_ERR_STATE,
     {"nb_gradcheck: the function called nb_tape_free", "refused", "free it once"}},
    /* backward */
    {"backward from a (3,) output without a seed", backward_non_scalar, NB_ERR_SHAPE,
     {"nb_backward", "(3,)", "nb_backward_seed", SITE}},
    {"backward with a (2,) seed for a (3,) output", backward_wrong_seed, NB_ERR_SHAPE,
     {"nb_backward", "seed (2,)", "output (3,)", SITE}},
    {"backward again after nb_tape_reset", backward_after_reset, NB_ERR_STATE, {"nb_backward", "nb_tape_reset", SITE}},
    {"backward of a loss without parameters", backward_without_params, NB_ERR_STATE,
     {"nb_backward", "nb_requires_grad", SITE}},
    {"backward from a leaf", backward_on_leaf, NB_ERR_STATE, {"nb_backward", "leaf", SITE}},
    {"backward from an errored loss", backward_errored, NB_ERR_SHAPE, {"nb_backward", "errored", SITE}},
    {"backward of NULL", backward_null, NB_ERR_NULL, {"nb_backward", "NULL", SITE}},
    /* CSV */
    {"CSV: a missing value", csv_missing, NB_ERR_VALUE, {"missing.csv:3", "'chol'", "(2)", "empty"}},
    {"CSV: text in a numeric column", csv_text, NB_ERR_VALUE, {"text.csv:2", "'chol'", "'high'", "not a finite number"}},
    {"CSV: nan", csv_nan, NB_ERR_VALUE, {"nan.csv:2", "'chol'", "not a finite number"}},
    {"CSV: a value that overflows", csv_inf, NB_ERR_VALUE, {"inf.csv:2", "'1e999'", "not a finite number"}},
    {"CSV: a short row", csv_short_row, NB_ERR_VALUE, {"short.csv:3", "2 fields", "expected 3"}},
    {"CSV: a long row", csv_long_row, NB_ERR_VALUE, {"long.csv:2", "4 fields", "expected 3"}},
    {"CSV: no header row", csv_no_header, NB_ERR_VALUE, {"nohead.csv:1", "'target'", "header row"}},
    {"CSV: an unknown target column", csv_unknown_target, NB_ERR_VALUE,
     {"heart.csv:1", "no column named 'label'", "age, chol, target"}},
    {"CSV: an empty file", csv_empty, NB_ERR_VALUE, {"empty.csv", "empty", "header"}},
    {"CSV: a header and no rows", csv_header_only, NB_ERR_VALUE, {"header.csv", "no data rows"}},
    {"CSV: only the target column", csv_only_target, NB_ERR_VALUE, {"lonely.csv:1", "no features"}},
    {"CSV: a file that does not exist", csv_missing_file, NB_ERR_IO, {"/nonexistent/data.csv", "No such file"}},
    {"CSV: no target column given", csv_no_target_option, NB_ERR_NULL, {"nb_csv_read", "target"}},
    /* IDX */
    {"IDX: a wrong magic number", idx_magic, NB_ERR_VALUE, {"magic.idx", "magic number 12 00 08 02", "00 00"}},
    {"IDX: an unknown type code", idx_type, NB_ERR_VALUE, {"type.idx", "00 00 0a 02", "08, 09"}},
    {"IDX: truncated data", idx_truncated, NB_ERR_VALUE, {"cut.idx", "truncated", "(2, 3)", "6 bytes", "only 5 are there"}},
    {"IDX: data beyond the header's shape", idx_extra, NB_ERR_VALUE, {"long.idx", "beyond the 6 values"}},
    {"IDX: truncated dimensions", idx_dims_cut, NB_ERR_VALUE, {"dims.idx", "truncated in its dimensions", "1 of 2"}},
    {"IDX: no magic number", idx_no_magic, NB_ERR_VALUE, {"tiny.idx", "no 4-byte magic number"}},
    {"IDX: a header claiming 2e14 floats", idx_huge, NB_ERR_VALUE,
     {"huge.idx", "truncated", "(60000, 60000, 60000)", "only 6 are there"}},
    {"IDX: a zero dimension", idx_empty_dim, NB_ERR_SHAPE, {"empty.idx", "(0, 3)", "empty"}},
    {"IDX: a truncated .gz", idx_gz_truncated, NB_ERR_VALUE, {"cut.idx.gz", "truncated", "only 3 are there"}},
    {"IDX: a file that does not exist", idx_missing_file, NB_ERR_IO,
     {"cannot open /nonexistent/train-images-idx3-ubyte.gz"}},
    /* parameter files (the model in memory must keep its values) */
    {"params: a truncated file", params_truncated, NB_ERR_VALUE, {"cut.nbp", "truncated"}},
    {"params: a flipped bit", params_flipped, NB_ERR_VALUE, {"flip.nbp", "checksum"}},
    {"params: not a parameter file", params_magic, NB_ERR_VALUE, {"magic.nbp", "not a nabla parameter file"}},
    {"params: a text file", params_not_a_file, NB_ERR_VALUE, {"notes.nbp", "not a nabla parameter file"}},
    {"params: another name", params_wrong_name, NB_ERR_VALUE, {"good.nbp", "'W'", "the model does not"}},
    {"params: another shape", params_wrong_shape, NB_ERR_VALUE,
     {"good.nbp", "'W'", "(2, 3) float32 in the file", "(4, 3) float32 in the model"}},
    {"params: another dtype", params_wrong_dtype, NB_ERR_VALUE, {"'b'", "float64 in the file", "float32 in the model"}},
    {"params: another count", params_count, NB_ERR_VALUE, {"holds 2 parameters, the model has 3"}},
    {"params: a file that does not exist", params_missing_file, NB_ERR_IO, {"cannot open /nonexistent/model.nbp"}},
    {"params: saving into a missing directory", params_save_dir, NB_ERR_IO, {"nb_params_save", "/nonexistent/dir"}},
    /* safetensors files (the model in memory must keep its values) */
    {"safetensors: a good file loads", st_good, NB_OK, {NULL}},
    {"safetensors: a truncated file", st_truncated, NB_ERR_VALUE,
     {"cut.safetensors", "'b'", "[24, 48] outside the 30 bytes", "truncated"}},
    {"safetensors: a header claiming 4 GB", st_huge_header, NB_ERR_VALUE, {"huge.safetensors", "claims 4294967295 bytes"}},
    {"safetensors: malformed JSON", st_bad_json, NB_ERR_VALUE, {"json.safetensors", "malformed at byte 20", "expected"}},
    {"safetensors: an integer dtype", st_int_dtype, NB_ERR_VALUE, {"i64.safetensors", "'W'", "dtype I64", "F16, BF16, F32"}},
    {"safetensors: a gap in the data", st_gap, NB_ERR_VALUE, {"gap.safetensors", "'b'", "starts at byte 32", "nothing fills"}},
    {"safetensors: overlapping tensors", st_overlap, NB_ERR_VALUE, {"overlap.safetensors", "'b'", "overlaps"}},
    {"safetensors: offsets that disagree with the shape", st_byte_count, NB_ERR_VALUE,
     {"count.safetensors", "'W'", "F32 (2, 2)", "needs 16 bytes", "span 24"}},
    {"safetensors: another shape", st_shape, NB_ERR_VALUE,
     {"shape.safetensors", "'W'", "(3, 2) in the file but (2, 3) in the model"}},
    {"safetensors: a parameter missing", st_missing, NB_ERR_VALUE, {"missing.safetensors", "has no 'b'"}},
    {"safetensors: a tensor the model lacks", st_extra, NB_ERR_VALUE, {"extra.safetensors", "'c'", "the model does not"}},
    {"safetensors: a name twice", st_twice, NB_ERR_VALUE, {"twice.safetensors", "'W' twice"}},
    {"safetensors: a name too long for nabla", st_long_name, NB_ERR_VALUE,
     {"long.safetensors", "name of 40 bytes", "1 to 31"}},
    {"safetensors: a header that is not UTF-8", st_not_utf8, NB_ERR_VALUE, {"latin1.safetensors", "not UTF-8", "byte 5"}},
    {"safetensors: an unknown field", st_unknown_field, NB_ERR_VALUE, {"field.safetensors", "'W'", "unknown field 'offsets'"}},
    {"safetensors: data after the last tensor", st_tail, NB_ERR_VALUE, {"tail.safetensors", "8 bytes of data after"}},
    {"safetensors: a fractional size", st_fraction, NB_ERR_VALUE, {"fraction.safetensors", "no fraction or exponent"}},
    {"safetensors: text after the header", st_garbage, NB_ERR_VALUE, {"garbage.safetensors", "nothing but spaces"}},
    {"safetensors: saving a name that is not UTF-8", st_save_bad_name, NB_ERR_ARG,
     {"nb_params_save_safetensors", "not valid UTF-8"}},
    {"params: a duplicate name", params_duplicate, NB_ERR_ARG, {"'W'", "exists already"}},
    {"params: a tensor that lives on a tape", params_tape_tensor, NB_ERR_ARG, {"'W'", "lives on a tape"}},
    /* training toolkit */
    {"optimizer: a negative learning rate", optimizer_lr, NB_ERR_ARG, {"nb_optimizer_new", "-0.1"}},
    {"optimizer: a NaN learning rate set later", optimizer_set_lr_nan, NB_ERR_ARG, {"nb_optimizer_set_lr", "nan"}},
    {"optimizer: parameters added after it was made", optimizer_changed_params, NB_ERR_STATE,
     {"nb_optimizer_step", "from 2 to 3 parameters"}},
    {"SGD backward step from a (3,) loss", sgd_step_non_scalar, NB_ERR_SHAPE, {"nb_backward", "(3,)", SITE}},
    {"Adam backward step from a (3,) loss", adam_step_non_scalar, NB_ERR_SHAPE, {"nb_backward", "(3,)", SITE}},
    {"standardize: tables of 3 and 5 columns", standardize_columns, NB_ERR_SHAPE, {"nb_standardize", "table 1", "(2, 5)", "3 features"}},
    {"split: a test fraction of 1.5", split_fraction, NB_ERR_ARG, {"nb_dataset_split", "1.5", "10 rows"}},
    {"batcher: a batch size 0", batcher_zero, NB_ERR_ARG, {"nb_batcher_init", "batch size (0)"}},
    {"gather: row 3 of 3", gather_range, NB_ERR_ARG, {"nb_gather_rows", "row 3 is out of range (3 rows)", SITE}},
    {"init: fan_in 0", init_fan, NB_ERR_ARG, {"nb_init_tensor", "fan_in 0"}},
    {"threads: 0", threads_zero, NB_ERR_ARG, {"nb_set_threads", "0 threads", "1 to 64"}},
    {"threads: 1000", threads_too_many, NB_ERR_ARG, {"nb_set_threads", "1000 threads"}},
    /* graph export */
    {"dot: an unwritable path", dot_unwritable, NB_ERR_IO, {"/nonexistent/graph.dot"}},
    {"dot: opts.loss kept across nb_tape_reset", dot_stale_loss, NB_ERR_STATE,
     {"nb_dot_write", "opts.loss", "before nb_tape_reset"}},
    {"stepper page: opts.checked holding another tape's tensor", html_checked_elsewhere, NB_ERR_STATE,
     {"nb_backward_html", "opts.checked[0]", "another tape"}},
    {"render: a file that is not dot", render_not_dot, NB_ERR_VALUE,
     {"nb_dot_render", "bad.dot", "not a valid dot", "syntax error in line 1"}},
    {"render: an unknown format", render_format, NB_ERR_UNSUPPORTED, {"nb_dot_render", "'no-such-format'", "svg"}},
    {"render: a device that writes files of its own (vrml)", render_vrml, NB_ERR_UNSUPPORTED,
     {"nb_dot_render", "'vrml'", "svg"}},
    {"render: a device that opens a window (x11)", render_x11, NB_ERR_UNSUPPORTED, {"nb_dot_render", "'x11'"}},
    {"render: a device that opens a window (gtk)", render_gtk, NB_ERR_UNSUPPORTED, {"nb_dot_render", "'gtk:cairo'"}},
    {"render: an unwritable path", render_unwritable, NB_ERR_IO, {"nb_dot_render", "/nonexistent/graph.svg"}},
    {"scope: a NULL name", scope_null_name, NB_ERR_NULL, {"nb_scope_begin", "name is NULL"}},
    /* indexing, joining, functions */
    {"slice along axis 2 of a matrix", slice_axis, NB_ERR_ARG, {"slice", "axis 2", "(2, 3)", SITE}},
    {"slice with step 0", slice_step, NB_ERR_ARG, {"slice", "step 0", "(2, 3)", SITE}},
    {"slice [2:1] of an axis", slice_empty, NB_ERR_SHAPE, {"slice", "[2:1:1]", "selects nothing", SITE}},
    {"index_select of row 5 of 5", select_range, NB_ERR_ARG,
     {"index_select", "index 5 (position 1)", "(5, 2)", "size 5", SITE}},
    {"index_select of no rows", select_none, NB_ERR_SHAPE, {"index_select", "no indices", SITE}},
    {"gather of column 3 of 3", gather_value, NB_ERR_VALUE, {"gather", "element 1 is 3", "[0, 3)", SITE}},
    {"gather at 1.5", gather_fraction, NB_ERR_VALUE, {"gather", "1.5", "whole number", SITE}},
    {"gather with a (2,) index for a matrix", gather_shape, NB_ERR_SHAPE, {"gather", "(2,)", "(2, 3)", SITE}},
    {"concat of (2, 3), (2, 4) and (3, 3) along 1", concat_shapes, NB_ERR_SHAPE,
     {"concat", "tensor 3 is (3, 3)", "tensor 1 is (2, 3)", SITE}},
    {"stack of (2, 3) and (2, 4)", stack_shapes, NB_ERR_SHAPE, {"stack", "(2, 4)", "equal shapes", SITE}},
    {"concat of nothing", concat_none, NB_ERR_ARG, {"concat", "no tensors", SITE}},
    {"concat with a NULL fifth tensor", concat_null_member, NB_ERR_NULL, {"concat", "input 5 is NULL", SITE}},
    {"where of (2, 3), (2, 3) and (2,)", where_shapes, NB_ERR_SHAPE, {"where", "(2, 3), (2, 3) and (2,)", SITE}},
    {"pad with NULL pads", pad_null, NB_ERR_NULL, {"pad", "NULL", SITE}},
    {"broadcast_to (4, 3) from (2, 3)", broadcast_to_shape, NB_ERR_SHAPE, {"broadcast_to", "(2, 3)", "(4, 3)", SITE}},
    {"broadcast_to fewer dimensions", broadcast_to_fewer, NB_ERR_SHAPE, {"broadcast_to", "1 dimensions", SITE}},
    {"permute with axis 0 twice", permute_axes, NB_ERR_ARG, {"permute", "(0, 2, 0)", "not a permutation", SITE}},
    {"squeeze of an axis of size 3", squeeze_size, NB_ERR_SHAPE, {"squeeze", "size 3", "not 1", SITE}},
    {"unsqueeze at axis 4 of a matrix", unsqueeze_axis, NB_ERR_ARG, {"unsqueeze", "axis 4", "-3 to 2", SITE}},
    {"maximum of (2, 3) and (2,)", maximum_shapes, NB_ERR_SHAPE, {"maximum", "(2, 3)", "(2,)", SITE}},
    {"logsumexp along axis 2 of a matrix", logsumexp_axis, NB_ERR_ARG, {"logsumexp", "axis 2", "(2, 3)", SITE}},
    {"unbiased variance of one element", var_dof, NB_ERR_ARG, {"var", "correction 1", "degrees of freedom", SITE}},
    {"argmax along axis -2 of a vector", argmax_axis, NB_ERR_ARG, {"argmax", "axis -2", "(3,)", SITE}},
    {"conv2d of a matrix", conv_x_rank, NB_ERR_SHAPE, {"conv2d", "x is (28, 28)", "(N, C, H, W)", SITE}},
    {"conv2d with a weight for 2 input channels on 3", conv_channels, NB_ERR_SHAPE,
     {"conv2d", "(4, 2, 3, 3)", "2 input channels per filter", "needs 3", SITE}},
    {"conv2d with groups 2 on 3 channels", conv_groups, NB_ERR_SHAPE, {"conv2d", "groups 2", "3 input channels", SITE}},
    {"conv2d with a bias for 3 of 4 filters", conv_bias, NB_ERR_SHAPE, {"conv2d", "bias is (3,)", "(4,)", SITE}},
    {"conv2d with a dilated kernel wider than x", conv_kernel_too_big, NB_ERR_SHAPE,
     {"conv2d", "spanning 5", "dilation 2", "(1, 1, 4, 4)", SITE}},
    {"conv2d with stride -1", conv_negative, NB_ERR_ARG, {"conv2d", "stride -1", "not be negative", SITE}},
    {"conv2d of float32 x and float64 weight", conv_dtypes, NB_ERR_DTYPE, {"conv2d", "float64", SITE}},
    {"conv1d of a 4-D x", conv1d_rank, NB_ERR_SHAPE, {"conv1d", "(N, C, L)", SITE}},
    {"max_pool2d without options", pool_opts, NB_ERR_NULL, {"max_pool2d", "options are NULL", SITE}},
    {"max_pool2d with kernel 0", pool_kernel, NB_ERR_ARG, {"max_pool2d", "kernel 0", SITE}},
    {"avg_pool2d padding 2 for kernel 2", pool_padding, NB_ERR_ARG, {"avg_pool2d", "padding 2", "half the kernel", SITE}},
    {"avg_pool2d of a matrix", pool_rank, NB_ERR_SHAPE, {"avg_pool2d", "(4, 4)", "(N, C, H, W)", SITE}},
    {"max_pool2d with a window larger than x", pool_window, NB_ERR_SHAPE, {"max_pool2d", "3×3", "(1, 1, 2, 2)", SITE}},
    {"avg_pool2d with dilation", avg_pool_dilation, NB_ERR_ARG, {"avg_pool2d", "no dilation", SITE}},
    {"batch_norm with gamma for 4 of 3 channels", bn_gamma, NB_ERR_SHAPE, {"batch_norm", "gamma (4,)", "(3,)", SITE}},
    {"batch_norm of a vector", bn_rank, NB_ERR_SHAPE, {"batch_norm", "x is (3,)", "channels on axis 1", SITE}},
    {"batch_norm training on one value per channel", bn_one_value, NB_ERR_SHAPE,
     {"batch_norm", "1 value per channel", SITE}},
    {"batch_norm with momentum 1.5", bn_momentum, NB_ERR_ARG, {"batch_norm", "momentum 1.5", SITE}},
    {"batch_norm with running statistics on the tape", bn_running_on_tape, NB_ERR_ARG,
     {"batch_norm", "running_mean lives on a tape", SITE}},
    {"batch_norm with (4,) running statistics for 3 channels", bn_running_shape, NB_ERR_SHAPE,
     {"batch_norm", "running_mean is (4,)", "(3,)", SITE}},
    {"batch_norm with running_mean but no running_var", bn_one_running, NB_ERR_ARG,
     {"batch_norm", "go together", SITE}},
    {"layer_norm with a (2,) gamma for 3 features", layer_norm_gamma, NB_ERR_SHAPE,
     {"layer_norm", "gamma (2,)", "(3,)", SITE}},
    {"layer_norm with eps 0", layer_norm_eps, NB_ERR_ARG, {"layer_norm", "eps 0", SITE}},
    {"dropout with p 1.5", dropout_p, NB_ERR_ARG, {"dropout", "1.5", "[0, 1]", SITE}},
    {"dropout without a generator", dropout_rng, NB_ERR_NULL, {"dropout", "generator", SITE}},
    {"huber with delta 0", huber_delta, NB_ERR_ARG, {"huber", "delta = 0", "> 0", SITE}},
    {"huber of (3,) and (4,)", huber_shapes, NB_ERR_SHAPE, {"huber", "(3,)", "(4,)", SITE}},
    {"smooth_l1 with beta -1", smooth_l1_beta, NB_ERR_ARG, {"smooth_l1", "beta = -1", SITE}},
    {"clip_grad_norm with max_norm 0", clip_zero, NB_ERR_ARG,
     {"nb_clip_grad_norm", "max_norm 0", "must be positive", "left as they were"}},
    {"hvp with a vector kept across nb_tape_reset", hvp_stale_vector, NB_ERR_STATE,
     {"nb_hvp", "vector 1", "before nb_tape_reset", SITE}},
    /* stale and changed tensors */
    {"a tensor kept across nb_tape_reset", stale_input, NB_ERR_STATE,
     {"add: input 2 (3,)", "made by exp at tests/" SITE, "before nb_tape_reset", "nb_copy(NULL", SITE}},
    {"a leaf changed after an op used it", changed_input, NB_ERR_STATE,
     {"nb_backward", "'x'", "of mul", "changed after the op used it", SITE}},
    {"backward with a float32 seed for a float64 output", backward_seed_dtype, NB_ERR_DTYPE,
     {"nb_backward", "float32", "float64", SITE}},
    {"fused SGD twice without zeroing the gradients", fused_sgd_unzeroed, NB_ERR_STATE,
     {"'W'", "applied", "nb_params_zero_grad", SITE}},
    {"reshape to (4, 2^62 + 2), whose count wraps to 8", reshape_overflow, NB_ERR_SHAPE,
     {"reshape", "(4, 4611686018427387906)", "more elements than memory can address", SITE}},
    {"reshape to (2^62 + 2, -1, 4)", reshape_overflow_infer, NB_ERR_SHAPE,
     {"reshape", "more elements than memory can address", SITE}},
    {"gather from a tensor kept across nb_tape_reset", gather_stale, NB_ERR_STATE,
     {"nb_gather_rows", "before nb_tape_reset", SITE}},
    {"gradcheck of a function that returns NULL", gradcheck_null_result, NB_ERR_NULL,
     {"nb_gradcheck", "returned NULL"}},
    /* custom ops (nabla_op.h) and passes inside passes */
    {"custom view of (4, 2^62 + 2), whose count wraps to 8", view_overflow, NB_ERR_SHAPE,
     {"custom_view", "(4, 4611686018427387906)", "more elements than memory can address", SITE}},
    {"custom view of 9 elements for 8", view_count, NB_ERR_SHAPE, {"custom_view", "(3, 3)", "has 9", "(8,)", SITE}},
    {"custom view of another dtype", view_dtype, NB_ERR_DTYPE, {"custom_view", "float64", "float32", SITE}},
    {"custom forward that resets its tape", forward_resets, NB_ERR_STATE, {"custom_reset", "forward", "reset", SITE}},
    {"custom backward that resets its tape", backward_resets, NB_ERR_STATE,
     {"backward_resets: its backward", "nb_tape_reset", "refused", "left as it was", SITE}},
    {"backward_graph that resets its tape", backward_graph_resets, NB_ERR_STATE,
     {"backward_resets: its backward_graph", "nb_tape_reset", "refused", SITE}},
    {"describe that resets its tape under nb_dot_save", describe_resets, NB_ERR_STATE,
     {"nb_dot_write", "backward_resets: its describe", "nb_tape_reset", "refused", SITE}},
    {"backward hook that frees its tape", hook_frees, NB_ERR_STATE,
     {"nb_backward", "backward hook", "nb_tape_free", "refused", "free it once"}},
    {"nb_op_grad_input with no accumulate flag", grad_input_flagless, NB_ERR_NULL,
     {"custom_flagless", "nb_op_grad_input", "NULL", SITE}},
    {"backward_graph giving a () gradient for a (3,) input", graph_scalar, NB_ERR_SHAPE,
     {"custom_graph", "input 1 (3,)", "()", "backward_graph", SITE}},
    {"backward_graph giving a float32 gradient", graph_dtype, NB_ERR_DTYPE, {"custom_graph", "float32", SITE}},
    {"backward_graph giving a gradient on another tape", graph_tape, NB_ERR_STATE,
     {"custom_graph", "another tape", SITE}},
    {"backward from a seed kept across nb_tape_reset", stale_seed, NB_ERR_STATE,
     {"nb_backward", "seed", "before nb_tape_reset", SITE}},
    {"backward with a seed on another tape", foreign_seed_backward, NB_ERR_STATE,
     {"nb_backward", "seed (2,)", "another tape", "output (2,)", SITE}},
    {"nb_grad_seed with a seed on another tape", foreign_seed_grad, NB_ERR_STATE,
     {"nb_grad", "seed (2,)", "another tape", SITE}},
    {"jvp with a tangent kept across nb_tape_reset", stale_tangent, NB_ERR_STATE,
     {"nb_jvp", "tangent 1", "before nb_tape_reset", SITE}},
    {"jvp of a (2,) output with respect to NULL", jvp_null_wrt, NB_ERR_NULL, {"nb_jvp", "tensor 1", "NULL", SITE}},
    {"gradcheck of an input kept across nb_tape_reset", gradcheck_stale_input, NB_ERR_STATE,
     {"nb_gradcheck", "input 0", "before nb_tape_reset"}},
    /* files that are not files */
    {"render: to a link to /dev/null", render_to_device, NB_ERR_IO,
     {"nb_dot_render", "null.svg", "a symbolic link to a character device", "regular files only"}},
    {"dot: saving over a FIFO", dot_save_fifo, NB_ERR_IO, {"nb_dot_save", "graph.fifo", "a FIFO", "regular"}},
    {"stepper page: a directory", html_into_directory, NB_ERR_IO, {"nb_backward_html", "is a directory"}},
    {"history: a dangling link", history_dangling_link, NB_ERR_IO,
     {"nb_progress_save_csv", "history.csv", "symbolic link", "cannot be reached"}},
    {"frames: paths longer than PATH_MAX", frames_path_too_long, NB_ERR_IO,
     {"nb_backward_frames", "frame_000.dot", "longer than the 4095 bytes"}},
    {"file write: an empty path", file_write_empty_path, NB_ERR_ARG, {"nb_file_write", "empty"}},
    {"params: loading a FIFO", params_load_fifo, NB_ERR_IO, {"nb_params_load", "model.nbp", "a FIFO", "regular"}},
    {"safetensors: loading /dev/zero", safetensors_load_zero, NB_ERR_IO,
     {"nb_params_load_safetensors", "/dev/zero", "a character device"}},
    {"CSV: /dev/zero", csv_dev_zero, NB_ERR_IO, {"nb_csv_read", "/dev/zero", "a character device"}},
    {"IDX: a FIFO", idx_fifo, NB_ERR_IO, {"nb_idx_read", "images.idx", "a FIFO"}},
    {"render: from a FIFO", render_from_fifo, NB_ERR_IO, {"nb_dot_render", "in.dot", "a FIFO"}},
    {"file open: a directory", file_open_directory, NB_ERR_IO, {"nb_file_open_read", "is a directory"}},
    {"IDX: a gzip bomb", idx_gzip_bomb, NB_ERR_VALUE,
     {"nb_idx_read", "10000000 bytes", "more than a gzip file", "at most"}},
    {"params: saving over a FIFO", params_save_fifo, NB_ERR_IO, {"nb_params_save", "model.fifo", "a FIFO", "regular"}},
    {"params: loading a directory", params_load_dir, NB_ERR_IO, {"nb_params_load", "is a directory"}},
    {"IDX: a directory", idx_dir, NB_ERR_IO, {"nb_idx_read", "is a directory"}},
    {"CSV: a directory", csv_dir, NB_ERR_IO, {"nb_csv_read", "is a directory"}},
    {"CSV: an unknown dtype", csv_dtype, NB_ERR_ARG, {"nb_csv_read", "unknown dtype 9", "dtype.csv"}},
    {"CSV: the target column twice", csv_target_twice, NB_ERR_VALUE, {"twice.csv:1", "'y'", "twice", "columns 2 and 3"}},
    {"CSV: a NUL byte in a row", csv_nul_byte, NB_ERR_VALUE, {"nul.csv:2", "column 2", "NUL byte"}},
    {"frames into the directory \"\"", frames_empty_dir, NB_ERR_ARG, {"nb_backward_frames", "empty"}},
    /* the toolkit's trust in its caller */
    {"params: one tensor added twice", params_same_tensor_twice, NB_ERR_ARG, {"'W_tied'", "already", "as 'W'"}},
    {"split: a dataset whose struct does not describe its tensors", split_lying_struct, NB_ERR_SHAPE,
     {"nb_dataset_split", "5 features", "(10, 2)", "one dtype"}},
    {"confusion matrix for 9 classes of 2-column scores", confusion_classes, NB_ERR_SHAPE,
     {"nb_confusion_matrix", "9 classes", "(3, 2)"}},
};

static void test_every_bad_input_names_what_went_wrong(void **state) {
    (void)state;
    int failures = 0, n = (int)(sizeof catalogue / sizeof *catalogue);
    bool show = getenv("NB_CATALOGUE_SHOW") != NULL; /* every message, for reading them */
    for (int i = 0; i < n; i++) {
        const bad_input *c = &catalogue[i];
        gradcheck_message[0] = '\0';
        nb_status st = c->run();
        const char *msg = gradcheck_message[0] ? gradcheck_message : nb_last_error();
        bool ok = st == c->expect;
        for (int k = 0; ok && k < 5 && c->says[k]; k++) ok = strstr(msg, c->says[k]) != NULL;
        if (show) print_message("%-60s %s\n", c->what, st == NB_OK ? "(no error)" : msg);
        if (!ok) {
            failures++;
            print_error("%s: status %s (expected %s), message: %s\n", c->what, nb_status_string(st),
                        nb_status_string(c->expect), msg);
            for (int k = 0; k < 5 && c->says[k]; k++)
                if (!strstr(msg, c->says[k])) print_error("    missing: \"%s\"\n", c->says[k]);
        }
    }
    print_message("%d bad inputs, %d with the expected error and message\n", n, n - failures);
    assert_int_equal(failures, 0);
    assert_true(n >= 50);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_bad_input_names_what_went_wrong),
    };
    return cmocka_run_group_tests_name("catalogue", tests, test_dir_setup, test_dir_teardown);
}
