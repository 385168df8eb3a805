/*
 * The training toolkit: parameters and their files, initialisers,
 * optimizers against steps worked out by hand, clipping and schedules.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- params */

static void test_params_by_name(void **state) {
    (void)state;
    nb_params *ps = nb_params_new();
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_tensor *W = nb_params_create(ps, "W1", NB_F32, NB_SHAPE(3, 2), NB_INIT_GLOROT_UNIFORM, 3, 2, &rng);
    nb_tensor *b = nb_params_add(ps, "b1", nb_zeros(NULL, NB_F32, NB_SHAPE(2)));
    assert_ok(W);
    assert_ok(b);
    assert_int_equal(nb_params_count(ps), 2);
    assert_ptr_equal(nb_params_get(ps, "W1"), W);
    assert_ptr_equal(nb_params_at(ps, 1), b);
    assert_null(nb_params_get(ps, "W2"));
    assert_true(nb_tensor_requires_grad(b));
    assert_string_equal(nb_tensor_name(W), "W1");
    /* A duplicate name is refused (and the tensor freed: the sanitizer run
     * would report a leak otherwise). */
    nb_tensor *dup = nb_params_add(ps, "W1", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    assert_int_equal(nb_tensor_status(dup), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "'W1'", "exists already");
    nb_tape *tp = nb_tape_new();
    assert_int_equal(nb_tensor_status(nb_params_add(ps, "x", nb_zeros(tp, NB_F32, NB_SHAPE(1)))), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "lives on a tape");
    assert_int_equal(nb_tensor_status(nb_params_add(ps, "", nb_zeros(NULL, NB_F32, NB_SHAPE(1)))), NB_ERR_ARG);
    nb_tape_free(tp);
    /* A tensor the set holds, added again under its own name, or with a
     * NULL or empty name, stays the set's: those refusals freed it, and the
     * set then read and freed it again. */
    nb_set(b, 1, 7);
    const char *names[] = {"b1", NULL, "", "b2"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(nb_tensor_status(nb_params_add(ps, names[i], b)), NB_ERR_ARG);
        assert_message_has(nb_last_error(), "is in the set already, as 'b1'");
    }
    assert_ptr_equal(nb_params_get(ps, "b1"), b);
    assert_close(nb_get(b, 1), 7, 0);
    assert_int_equal(nb_params_count(ps), 2);
    nb_params_free(ps);
}

/* Glorot and He scale with the fans: check the variance of a large draw and
 * the bounds of the uniform ones. */
static void test_initialisers(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 2);
    nb_tensor *t = nb_zeros(NULL, NB_F64, NB_SHAPE(400, 600));
    struct { nb_init init; double var, bound; } cases[] = {
        {NB_INIT_GLOROT_UNIFORM, 2.0 / 1000, sqrt(6.0 / 1000)},
        {NB_INIT_GLOROT_NORMAL, 2.0 / 1000, INFINITY},
        {NB_INIT_HE_UNIFORM, 2.0 / 400, sqrt(6.0 / 400)},
        {NB_INIT_HE_NORMAL, 2.0 / 400, INFINITY},
    };
    for (size_t c = 0; c < 4; c++) {
        assert_int_equal(nb_init_tensor(t, cases[c].init, 400, 600, &rng), NB_OK);
        double sum = 0, sumsq = 0, maxabs = 0;
        for (size_t i = 0; i < nb_tensor_size(t); i++) {
            double v = nb_get(t, i);
            sum += v;
            sumsq += v * v;
            maxabs = fmax(maxabs, fabs(v));
        }
        double n = (double)nb_tensor_size(t), mean = sum / n;
        assert_close(mean, 0, 1e-3);
        assert_close(sumsq / n, cases[c].var, 0.02 * cases[c].var);
        assert_true(maxabs <= cases[c].bound);
    }
    assert_int_equal(nb_init_tensor(t, NB_INIT_HE_NORMAL, 0, 5, &rng), NB_ERR_ARG);
    nb_tensor_free(t);
}

/* ---------------------------------------------------------------- files */

static nb_params *small_model(double fill) {
    nb_params *ps = nb_params_new();
    nb_tensor *W = nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_tensor *b = nb_params_add(ps, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(3)));
    for (size_t i = 0; i < 6; i++) nb_set(W, i, fill + (double)i / 8);
    for (size_t i = 0; i < 3; i++) nb_set(b, i, -fill - (double)i / 3);
    return ps;
}

static bool same_values(nb_params *a, nb_params *b) {
    for (size_t i = 0; i < nb_params_count(a); i++) {
        nb_tensor *x = nb_params_at(a, i), *y = nb_params_get(b, nb_tensor_name(x));
        if (!y || nb_tensor_size(x) != nb_tensor_size(y)) return false;
        for (size_t j = 0; j < nb_tensor_size(x); j++)
            if (nb_get(x, j) != nb_get(y, j)) return false;
    }
    return true;
}

static char *temp_path(const char *name) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/nabla-params-XXXXXX");
        assert_non_null(mkdtemp(dir));
    }
    char *p = malloc(128);
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

static void write_all(const char *path, const unsigned char *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static void test_save_and_load_round_trip(void **state) {
    (void)state;
    char *path = temp_path("model.nbp");
    nb_params *saved = small_model(1.5), *loaded = small_model(0);
    assert_int_equal(nb_params_save(saved, path), NB_OK);
    assert_false(same_values(saved, loaded));
    assert_int_equal(nb_params_load(loaded, path), NB_OK);
    assert_true(same_values(saved, loaded));
    /* Matched by name: a model that declares its parameters in the other
     * order reads the same file. */
    nb_params *reordered = nb_params_new();
    nb_params_add(reordered, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(3)));
    nb_params_add(reordered, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    assert_int_equal(nb_params_load(reordered, path), NB_OK);
    assert_true(same_values(saved, reordered));
    /* A new file gets the usual mode (0666 less the umask), not mkstemp's 0600. */
    struct stat info;
    mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(stat(path, &info), 0);
    assert_int_equal(info.st_mode & 0777, 0666 & ~mask);
    /* Saving again replaces the file, leaving no temporary file behind. */
    assert_int_equal(nb_params_save(loaded, path), NB_OK);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls %.*s | wc -l) -eq 1", (int)(strrchr(path, '/') - path), path);
    assert_int_equal(system(cmd), 0);
    nb_params_free(saved);
    nb_params_free(loaded);
    nb_params_free(reordered);
    unlink(path);
    free(path);
}

/* Every truncation and every flipped byte is refused, and the model in
 * memory keeps its values. */
static void test_damaged_files_are_refused(void **state) {
    (void)state;
    char *path = temp_path("good.nbp"), *bad = temp_path("bad.nbp");
    nb_params *ps = small_model(2), *target = small_model(7), *reference = small_model(7);
    assert_int_equal(nb_params_save(ps, path), NB_OK);
    size_t len;
    unsigned char *buf = read_all(path, &len);
    assert_true(len > 60);
    for (size_t cut = 0; cut < len; cut++) {
        write_all(bad, buf, cut);
        assert_int_equal(nb_params_load(target, bad), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), bad);
        assert_true(same_values(reference, target));
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x10;
        write_all(bad, buf, len);
        assert_int_not_equal(nb_params_load(target, bad), NB_OK);
        assert_true(same_values(reference, target));
        buf[i] ^= 0x10;
    }
    write_all(bad, buf, len - 4);
    assert_int_equal(nb_params_load(target, bad), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "corrupt or truncated");
    buf[0] = 'X';
    write_all(bad, buf, len);
    assert_int_equal(nb_params_load(target, bad), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "not a nabla parameter file");
    assert_int_equal(nb_params_load(target, "/nonexistent/model.nbp"), NB_ERR_IO);
    assert_message_has(nb_last_error(), "/nonexistent/model.nbp");
    assert_int_equal(nb_params_save(ps, "/nonexistent/dir/model.nbp"), NB_ERR_IO);
    free(buf);
    nb_params_free(ps);
    nb_params_free(target);
    nb_params_free(reference);
    unlink(path);
    unlink(bad);
    free(path);
    free(bad);
}

static void test_mismatched_models_are_refused(void **state) {
    (void)state;
    char *path = temp_path("m.nbp");
    nb_params *ps = small_model(1);
    assert_int_equal(nb_params_save(ps, path), NB_OK);

    nb_params *other = nb_params_new(); /* W has another shape */
    nb_params_add(other, "W", nb_full(NULL, NB_F32, NB_SHAPE(3, 2), 4));
    nb_params_add(other, "b", nb_full(NULL, NB_F64, NB_SHAPE(3), 4));
    assert_int_equal(nb_params_load(other, path), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'W'", "(2, 3) float32 in the file", "(3, 2) float32 in the model");
    assert_close(nb_get(nb_params_get(other, "b"), 0), 4, 0); /* untouched, b too */
    nb_params_free(other);

    other = nb_params_new(); /* b has another dtype */
    nb_params_add(other, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_params_add(other, "b", nb_zeros(NULL, NB_F32, NB_SHAPE(3)));
    assert_int_equal(nb_params_load(other, path), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'b'", "float64 in the file", "float32 in the model");
    nb_params_free(other);

    other = nb_params_new(); /* other names */
    nb_params_add(other, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_params_add(other, "bias", nb_zeros(NULL, NB_F64, NB_SHAPE(3)));
    assert_int_equal(nb_params_load(other, path), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'b'", "the model does not");
    nb_params_add(other, "extra", nb_zeros(NULL, NB_F64, NB_SHAPE(1)));
    assert_int_equal(nb_params_load(other, path), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "holds 2 parameters, the model has 3");
    nb_params_free(other);
    nb_params_free(ps);
    unlink(path);
    free(path);
}

/* ---------------------------------------------------------------- optimizers */

/* One parameter w (float64) with loss = sum(w * c), so that dL/dw = c exactly. */
static void step_with_gradient(nb_optimizer *opt, nb_params *ps, double c) {
    nb_tape *tp = nb_tape_new();
    nb_params_zero_grad(ps);
    nb_tensor *w = nb_params_at(ps, 0);
    nb_tensor *cc = nb_full(tp, nb_tensor_dtype(w), NB_SHAPE(1), c);
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, w, cc))), NB_OK);
    assert_int_equal(nb_optimizer_step(opt), NB_OK);
    nb_tape_free(tp);
}

static double run_optimizer(nb_optimizer_kind kind, double lr, double wd, nb_dtype dt,
                            const double *grads, int steps) {
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_ones(NULL, dt, NB_SHAPE(1)));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    o.lr = lr;
    o.weight_decay = wd;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    assert_non_null(opt);
    for (int s = 0; s < steps; s++) step_with_gradient(opt, ps, grads[s]);
    double result = nb_item(w);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return result;
}

static void test_optimizers_against_hand_computed_steps(void **state) {
    (void)state;
    const double g[3] = {0.5, -1.0, 0.5}, constant[3] = {0.5, 0.5, 0.5};
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        double tol = dt == NB_F32 ? 1e-6 : 1e-12;
        /* SGD: w = 1 - 0.1 * 0.5 = 0.95; with weight decay 0.1: g' = 0.5 + 0.1 = 0.6, w = 0.94 */
        assert_close(run_optimizer(NB_OPT_SGD, 0.1, 0, dt, g, 1), 0.95, tol);
        assert_close(run_optimizer(NB_OPT_SGD, 0.1, 0.1, dt, g, 1), 0.94, tol);
        /* Momentum 0.9, lr 0.1, g = 0.5 each step:
         *   v1 = 0.5,                w1 = 1 - 0.05 = 0.95
         *   v2 = 0.9*0.5 + 0.5 = 0.95,  w2 = 0.95 - 0.095 = 0.855
         *   v3 = 0.9*0.95 + 0.5 = 1.355, w3 = 0.855 - 0.1355 = 0.7195 */
        assert_close(run_optimizer(NB_OPT_MOMENTUM, 0.1, 0, dt, constant, 3), 0.7195, tol);
        /* Adam, lr 0.1, betas 0.9/0.999, eps 1e-8, gradients 0.5 then -1:
         *   m1 = 0.05, v1 = 0.00025, m^ = 0.5, v^ = 0.25: w1 = 1 - 0.1*0.5/(0.5 + 1e-8) = 0.900000002
         *   m2 = 0.045 - 0.1 = -0.055, v2 = 0.00024975 + 0.001 = 0.00124975,
         *   m^ = -0.055/0.19, v^ = 0.00124975/0.001999: w2 = 0.9366103542405654 */
        assert_close(run_optimizer(NB_OPT_ADAM, 0.1, 0, dt, g, 1), 0.900000002, tol);
        assert_close(run_optimizer(NB_OPT_ADAM, 0.1, 0, dt, g, 2), 0.9366103542405654, tol);
        /* AdamW with decay 0.01 first shrinks w by lr*wd*w: 1 - 0.001 = 0.999,
         * then the same Adam step: 0.899000002; second step 0.9347113542385653. */
        assert_close(run_optimizer(NB_OPT_ADAMW, 0.1, 0.01, dt, g, 1), 0.899000002, tol);
        assert_close(run_optimizer(NB_OPT_ADAMW, 0.1, 0.01, dt, g, 2), 0.9347113542385653, tol);
        /* RMSprop, lr 0.1, alpha 0.99, eps 1e-8, gradients 0.5, -1, 0.5:
         *   v1 = 0.01 * 0.25 = 0.0025, w1 = 1 - 0.05 / (0.05 + 1e-8) = 1.9999996e-7
         *   v2 = 0.99 * 0.0025 + 0.01 = 0.012475, w2 = w1 + 0.1 / (sqrt(v2) + 1e-8) = 0.8953230819113371
         *   (torch.optim.RMSprop gives the same, and 0.4850215993516231 after the third);
         * with weight decay 0.1: g' = 0.6, v = 0.0036, w = 1 - 0.06 / 0.06000001 = 1.6666664e-7 */
        assert_close(run_optimizer(NB_OPT_RMSPROP, 0.1, 0, dt, g, 1), 1.9999996e-7, tol);
        assert_close(run_optimizer(NB_OPT_RMSPROP, 0.1, 0, dt, g, 2), 0.8953230819113371, tol);
        assert_close(run_optimizer(NB_OPT_RMSPROP, 0.1, 0, dt, g, 3), 0.4850215993516231, tol);
        assert_close(run_optimizer(NB_OPT_RMSPROP, 0.1, 0.1, dt, g, 1), 1.6666664e-7, tol);
    }
    nb_optimizer_kind k;
    assert_true(nb_optimizer_parse("adamw", &k) && k == NB_OPT_ADAMW);
    assert_true(nb_optimizer_parse("rmsprop", &k) && k == NB_OPT_RMSPROP);
    assert_false(nb_optimizer_parse("adagrad", &k));
    assert_string_equal(nb_optimizer_name(NB_OPT_MOMENTUM), "momentum");
    nb_optimizer_opts bad;
    nb_optimizer_defaults(&bad, NB_OPT_ADAM);
    bad.beta1 = 1.5;
    nb_params *ps = nb_params_new();
    assert_null(nb_optimizer_new(ps, &bad));
    assert_message_has(nb_last_error(), "invalid options");
    /* a rate set later follows the same rule: it was silently ignored */
    nb_optimizer_opts good;
    nb_optimizer_defaults(&good, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &good);
    assert_int_equal(nb_optimizer_set_lr(opt, 0.25), NB_OK);
    assert_int_equal(nb_optimizer_set_lr(opt, NAN), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "nb_optimizer_set_lr", "nan", "stays 0.25");
    assert_int_equal(nb_optimizer_set_lr(opt, -1), NB_ERR_ARG);
    assert_close(nb_optimizer_lr(opt), 0.25, 0);
    assert_int_equal(nb_optimizer_set_lr(NULL, 0.1), NB_ERR_NULL);
    nb_optimizer_free(opt);
    nb_params_free(ps);
}

/* In float32, 1 - beta was computed in float32: 1 - 0.999f is 1.3e-5 off
 * 0.001, and for beta2 = 0.99817577 (RMSprop's alpha) 1.6e-5 off, so every
 * second moment was biased by as much and a step 8e-6 too long (2.7e-5 on
 * a step of 3.2; torch-diff's optimizer run 289, seed 2).  Against the step
 * computed in double from the float32 gradient: one RMSprop step is
 * lr g / sqrt((1 - a) g²) = lr / sqrt(1 - a) for g > 0; one Adam step from
 * w = 1 (bias-corrected) is lr g / (|g| + eps) whatever 1 - beta is, so Adam
 * is checked after two steps: m = (1-b1)(b1 g1 + g2), v = (1-b2)(b2 g1² + g2²). */
static void test_float32_moments_use_one_minus_beta_in_double(void **state) {
    (void)state;
    const double a = 0.9981757723056979, b1 = 0.9, b2 = 0.999, lr = 0.1, g1 = 0.5, g2 = -1;
    for (int kind = 0; kind < 2; kind++) {
        nb_params *ps = nb_params_new();
        nb_tensor *w = nb_params_add(ps, "w", nb_ones(NULL, NB_F32, NB_SHAPE(1)));
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, kind ? NB_OPT_ADAM : NB_OPT_RMSPROP);
        o.lr = lr;
        o.eps = 0;
        o.beta2 = kind ? b2 : a;
        nb_optimizer *opt = nb_optimizer_new(ps, &o);
        assert_non_null(opt);
        step_with_gradient(opt, ps, g1);
        double want = 1 - lr / sqrt(1 - a);
        if (kind) {
            step_with_gradient(opt, ps, g2);
            double m = (1 - b1) * (b1 * g1 + g2) / (1 - b1 * b1), v = (1 - b2) * (b2 * g1 * g1 + g2 * g2) / (1 - b2 * b2);
            want = (1 - lr) - lr * m / sqrt(v);
        }
        assert_close(nb_item(w), want, 4e-7 * fabs(want) + 1e-7);
        nb_optimizer_free(opt);
        nb_params_free(ps);
    }
}

static void test_clipping_and_schedules(void **state) {
    (void)state;
    nb_params *ps = nb_params_new();
    nb_tensor *a = nb_params_add(ps, "a", nb_ones(NULL, NB_F64, NB_SHAPE(1)));
    nb_tensor *b = nb_params_add(ps, "b", nb_ones(NULL, NB_F32, NB_SHAPE(1)));
    nb_tape *tp = nb_tape_new();
    /* loss = 3a + 4b: gradients (3, 4), global norm 5. */
    nb_tensor *loss = nb_add(tp, nb_scale(tp, a, 3), nb_cast(tp, nb_scale(tp, b, 4), NB_F64));
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_close(nb_clip_grad_norm(ps, 10), 5, 1e-12); /* under the limit: unchanged */
    assert_close(nb_grad_get(a, 0), 3, 0);
    /* at max_norm = the norm, PyTorch's factor max_norm / (norm + 1e-6):
     * clip_grad_norm_ with max_norm 5 leaves 2.99999940000012 of 3 */
    assert_close(nb_clip_grad_norm(ps, 5), 5, 1e-12);
    assert_close(nb_grad_get(a, 0), 3 * 5 / (5 + 1e-6), 1e-15);
    assert_close(nb_grad_get(b, 0), 4 * 5 / (5 + 1e-6), 1e-7);
    assert_close(nb_clip_grad_norm(ps, 1), 5, 1e-6);
    assert_close(nb_grad_get(a, 0), 0.6, 1e-6);
    assert_close(nb_grad_get(b, 0), 0.8, 1e-6);
    /* a bound that is not positive is refused, the gradients left alone
     * (torch would zero them at 0 and flip them below) */
    const double refused[3] = {0, -1, NAN};
    for (int k = 0; k < 3; k++) {
        double before = nb_grad_get(a, 0);
        assert_true(isnan(nb_clip_grad_norm(ps, refused[k])));
        assert_int_equal(nb_last_status(), NB_ERR_ARG);
        assert_message_has(nb_last_error(), "nb_clip_grad_norm", "max_norm", "must be positive");
        assert_close(nb_grad_get(a, 0), before, 0);
    }
    nb_tape_free(tp);
    nb_params_free(ps);

    nb_schedule step = {NB_SCHEDULE_STEP, 0.1, 10, 0.5, 0, 0, 0, 0};
    assert_close(nb_schedule_lr(&step, 0), 0.1, 0);
    assert_close(nb_schedule_lr(&step, 9), 0.1, 0);
    assert_close(nb_schedule_lr(&step, 10), 0.05, 1e-15);
    assert_close(nb_schedule_lr(&step, 25), 0.025, 1e-15);
    /* cosine from 1 to 0.1 over 100 steps: halfway (1 + 0.1)/2 = 0.55 */
    nb_schedule cosine = {NB_SCHEDULE_COSINE, 1, 0, 0, 100, 0.1, 0, 0};
    assert_close(nb_schedule_lr(&cosine, 0), 1, 1e-15);
    assert_close(nb_schedule_lr(&cosine, 50), 0.55, 1e-15);
    assert_close(nb_schedule_lr(&cosine, 100), 0.1, 1e-15);
    assert_close(nb_schedule_lr(&cosine, 400), 0.1, 1e-15);
    /* a quarter of the way: 0.1 + 0.9 (1 + cos(pi/4))/2 */
    assert_close(nb_schedule_lr(&cosine, 25), 0.1 + 0.9 * (1 + sqrt(0.5)) / 2, 1e-12);
}

/* An optimizer in a real loop: Adam fits a noisy linear function. */
static void test_adam_fits_a_line(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 9);
    nb_tensor *X = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(64, 1), -1, 1);
    nb_tensor *y = nb_zeros(NULL, NB_F32, NB_SHAPE(64, 1));
    for (size_t i = 0; i < 64; i++) nb_set(y, i, 3 * nb_get(X, i) - 2 + 0.01 * nb_rng_normal(&rng));
    nb_params *ps = nb_params_new();
    nb_tensor *W = nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(1, 1)));
    nb_tensor *b = nb_params_add(ps, "b", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    o.lr = 0.05;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    for (int step = 0; step < 500; step++) {
        nb_tape_reset(tp);
        nb_params_zero_grad(ps);
        assert_int_equal(nb_backward(nb_mse(tp, nb_add(tp, nb_matmul(tp, X, W), b), y)), NB_OK);
        nb_optimizer_step(opt);
    }
    assert_close(nb_item(W), 3, 0.02);
    assert_close(nb_item(b), -2, 0.02);
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    nb_tensor_free(X);
    nb_tensor_free(y);
}

/* A model where every kind of parameter use appears: a weight as B of a
 * linear (W1) with a row bias (b1), a weight as A of a transposed linear (W2)
 * with a column bias (c2), a weight read twice (S), a product of two
 * parameters (P . Q), and a parameter in an element-wise op (s). */
typedef struct { nb_params *ps; nb_tensor *X, *target; } fusion_model;

static fusion_model make_fusion_model(void) {
    fusion_model m = {nb_params_new(), NULL, NULL};
    nb_rng rng;
    nb_rng_seed(&rng, 11);
    const struct { const char *name; size_t r, c; } shapes[] = {
        {"W1", 3, 4}, {"b1", 4, 0}, {"W2", 2, 4}, {"c2", 2, 1}, {"S", 2, 2}, {"P", 2, 3}, {"Q", 3, 2}, {"s", 1, 0},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        nb_tensor *t = shapes[i].c ? nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(shapes[i].r, shapes[i].c), 0, 0.5)
                                   : nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(shapes[i].r), 0, 0.5);
        nb_params_add(m.ps, shapes[i].name, t);
    }
    m.X = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(5, 3), 0, 1);
    m.target = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(2, 5), 0, 1);
    return m;
}

static nb_tensor *fusion_loss(nb_tape *tp, fusion_model *m) {
    nb_params *ps = m->ps;
    nb_tensor *h = nb_tanh(tp, nb_linear(tp, m->X, nb_params_get(ps, "W1"), nb_params_get(ps, "b1")));
    nb_tensor *z = nb_linear_t(tp, nb_params_get(ps, "W2"), h, nb_params_get(ps, "c2"), false, true); /* (2, 5) */
    nb_tensor *S = nb_params_get(ps, "S");
    nb_tensor *v = nb_matmul(tp, S, nb_sigmoid(tp, nb_matmul(tp, S, z)));
    nb_tensor *w = nb_matmul(tp, nb_matmul(tp, nb_params_get(ps, "P"), nb_params_get(ps, "Q")), v);
    nb_tensor *out = nb_mul(tp, w, nb_params_get(ps, "s"));
    return nb_mse(tp, out, m->target);
}

static void test_sgd_inside_backward_matches_the_two_calls(void **state) {
    (void)state;
    for (int kind = 0; kind < 2; kind++) { /* plain SGD (fused), then momentum (not) */
        fusion_model two = make_fusion_model(), one = make_fusion_model();
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, kind ? NB_OPT_MOMENTUM : NB_OPT_SGD);
        o.lr = 0.1;
        nb_optimizer *opt_two = nb_optimizer_new(two.ps, &o), *opt_one = nb_optimizer_new(one.ps, &o);
        nb_tape *tp = nb_tape_new();
        for (int step = 0; step < 4; step++) {
            nb_tape_reset(tp);
            nb_params_zero_grad(two.ps);
            assert_int_equal(nb_backward(fusion_loss(tp, &two)), NB_OK);
            assert_int_equal(nb_optimizer_step(opt_two), NB_OK);
            nb_tape_reset(tp);
            nb_params_zero_grad(one.ps);
            assert_int_equal(nb_optimizer_backward_step(opt_one, fusion_loss(tp, &one)), NB_OK);
        }
        for (size_t i = 0; i < nb_params_count(one.ps); i++) {
            nb_tensor *a = nb_params_at(two.ps, i), *b = nb_params_at(one.ps, i);
            for (size_t j = 0; j < nb_tensor_size(a); j++)
                assert_close(nb_get(b, j), nb_get(a, j), 1e-12 * (1 + fabs(nb_get(a, j))));
        }
        /* Under plain SGD the updates of W1, b1, W2, c2 and Q were applied in
         * backward (no gradient kept); S (two readers), P (its product's
         * other operand is the one applied) and s (element-wise) kept theirs. */
        const char *applied[] = {"W1", "b1", "W2", "c2", "Q"}, *kept[] = {"S", "P", "s"};
        for (int i = 0; i < 5; i++) assert_int_equal(nb_has_grad(nb_params_get(one.ps, applied[i])), kind == 1);
        for (int i = 0; i < 3; i++) assert_true(nb_has_grad(nb_params_get(one.ps, kept[i])));
        nb_tape_free(tp);
        nb_optimizer_free(opt_two);
        nb_optimizer_free(opt_one);
        fusion_model *all[2] = {&two, &one};
        for (int k = 0; k < 2; k++) {
            nb_params_free(all[k]->ps);
            nb_tensor_free(all[k]->X);
            nb_tensor_free(all[k]->target);
        }
    }
}

/* Gradients left from an earlier pass (not zeroed): the fused call gives
 * exactly what nb_backward + nb_optimizer_step give, or, where it cannot
 * (a parameter whose update it applied without keeping the gradient),
 * refuses before changing anything.  Unzeroed plain SGD gave w = -0.3
 * after three steps where the two calls gave -0.6. */
static void test_sgd_inside_backward_with_gradients_left_over(void **state) {
    (void)state;
    fusion_model two = make_fusion_model(), one = make_fusion_model();
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    o.lr = 0.1;
    nb_optimizer *opt_two = nb_optimizer_new(two.ps, &o), *opt_one = nb_optimizer_new(one.ps, &o);
    nb_tape *tp = nb_tape_new();
    double kept_values[256], kept_grads[256]; /* every parameter's elements, in order */
    size_t elements = 0;
    for (size_t i = 0; i < nb_params_count(one.ps); i++) elements += nb_tensor_size(nb_params_at(one.ps, i));
    assert_true(elements <= 256);
    for (int step = 0; step < 5; step++) {
        /* zeroed only before step 3 */
        if (step == 3) {
            nb_params_zero_grad(two.ps);
            nb_params_zero_grad(one.ps);
        }
        nb_tape_reset(tp);
        if (step == 0) {
            /* a plain backward first: every parameter has a gradient left */
            assert_int_equal(nb_backward(fusion_loss(tp, &two)), NB_OK);
            nb_tape_reset(tp);
            assert_int_equal(nb_backward(fusion_loss(tp, &one)), NB_OK);
            continue;
        }
        assert_int_equal(nb_backward(fusion_loss(tp, &two)), NB_OK);
        assert_int_equal(nb_optimizer_step(opt_two), NB_OK);
        nb_tape_reset(tp);
        nb_status st = nb_optimizer_backward_step(opt_one, fusion_loss(tp, &one));
        if (step == 4) {
            /* step 3 applied W1's update (among others) inside backward, and
             * nothing zeroed its gradient since */
            assert_int_equal(st, NB_ERR_STATE);
            assert_message_has(nb_last_error(), "had its SGD update applied", "nb_params_zero_grad");
            assert_int_equal(nb_tape_status(tp), NB_OK);
            /* refused before changing anything: values and the gradients
             * kept (S, P and s) are those of step 3 */
            for (size_t i = 0, at = 0; i < nb_params_count(one.ps); i++) {
                nb_tensor *p = nb_params_at(one.ps, i);
                for (size_t j = 0; j < nb_tensor_size(p); j++, at++) {
                    assert_true(nb_get(p, j) == kept_values[at]);
                    assert_true(nb_grad_get(p, j) == kept_grads[at]);
                }
            }
            break;
        }
        assert_int_equal(st, NB_OK);
        for (size_t i = 0, at = 0; i < nb_params_count(one.ps); i++) {
            nb_tensor *a = nb_params_at(two.ps, i), *b = nb_params_at(one.ps, i);
            for (size_t j = 0; j < nb_tensor_size(a); j++, at++) {
                assert_close(nb_get(b, j), nb_get(a, j), 1e-12 * (1 + fabs(nb_get(a, j))));
                kept_values[at] = nb_get(b, j);
                kept_grads[at] = nb_grad_get(b, j);
            }
        }
    }
    nb_tape_free(tp);
    nb_optimizer_free(opt_two);
    nb_optimizer_free(opt_one);
    fusion_model *all[2] = {&two, &one};
    for (int k = 0; k < 2; k++) {
        nb_params_free(all[k]->ps);
        nb_tensor_free(all[k]->X);
        nb_tensor_free(all[k]->target);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_by_name),
        cmocka_unit_test(test_initialisers),
        cmocka_unit_test(test_save_and_load_round_trip),
        cmocka_unit_test(test_damaged_files_are_refused),
        cmocka_unit_test(test_mismatched_models_are_refused),
        cmocka_unit_test(test_optimizers_against_hand_computed_steps),
        cmocka_unit_test(test_float32_moments_use_one_minus_beta_in_double),
        cmocka_unit_test(test_clipping_and_schedules),
        cmocka_unit_test(test_adam_fits_a_line),
        cmocka_unit_test(test_sgd_inside_backward_matches_the_two_calls),
        cmocka_unit_test(test_sgd_inside_backward_with_gradients_left_over),
    };
    return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
