/*
 * Parameter groups.  An optimizer with three groups of different rates,
 * weight decays, betas and momenta must update every parameter exactly as
 * three optimizers would, each over a set holding one group's parameters
 * with that group's options: the same bits, for every kind, with a
 * schedule and clipping by the global norm over all of them.  Then the
 * usual split (nb_optimizer_no_decay_group), clipping across sets, the
 * rates and the refusals.  And against torch.optim itself with three
 * param_groups, a SequentialLR warm-up and clip_grad_norm_
 * (tests/groups_torch.py; skipped with a message without torch).
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define STEPS 6

/* W1 (3, 4), b1 (4), g (4) (a norm's weight), b2 (2), W2 (4, 2), in this
 * order: the order in which clipping adds their squares. */
static const char *const names[5] = {"W1", "b1", "g", "b2", "W2"};
static const size_t rows[5] = {3, 4, 4, 2, 4}, cols[5] = {4, 0, 0, 0, 2};
/* group of each: W1 in 0, the 1-D ones in 1, W2 in 2 */
static const int group_of[5] = {0, 1, 1, 1, 2};

static nb_tensor *initial(int i) {
    nb_rng rng;
    nb_rng_seed(&rng, 10 + (uint64_t)i);
    return cols[i] ? nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(rows[i], cols[i]), 0.5, 1)
                   : nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(rows[i]), 0.5, 1);
}

static void group_opts(nb_optimizer_kind kind, int g, nb_optimizer_opts *o) {
    nb_optimizer_defaults(o, kind);
    const double lr[3] = {0.05, 0.02, 0.1}, wd[3] = {0.01, 0, 0.03}, b1[3] = {0.9, 0.8, 0.7}, b2[3] = {0.999, 0.99, 0.95},
                 mu[3] = {0.9, 0.5, 0.7};
    o->lr = lr[g], o->weight_decay = wd[g], o->beta1 = b1[g], o->beta2 = b2[g], o->momentum = mu[g];
}

/* The loss of the model from its five tensors. */
static nb_tensor *loss_of(nb_tape *tp, nb_tensor *const *p, nb_tensor *x) {
    nb_tensor *h = nb_mul(tp, nb_tanh(tp, nb_add(tp, nb_matmul(tp, x, p[0]), p[1])), p[2]);
    nb_tensor *out = nb_add(tp, nb_matmul(tp, h, p[4]), p[3]);
    return nb_sum(tp, nb_square(tp, nb_sub(tp, out, nb_full(tp, NB_F64, NB_SHAPE(1), 0.3))));
}

static void compare_kind(nb_optimizer_kind kind) {
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(5, 3), 0, 1);
    nb_schedule s = {NB_SCHEDULE_EXPONENTIAL, 0, 0, 0.9, 0, 0, 2, 0.5};
    /* one optimizer, three groups */
    nb_params *ps = nb_params_new();
    nb_tensor *p[5], *q[5];
    for (int i = 0; i < 5; i++) p[i] = nb_params_add(ps, names[i], initial(i));
    nb_optimizer_opts o;
    group_opts(kind, 0, &o);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    assert_int_equal(nb_optimizer_set_schedule(opt, &s), NB_OK);
    group_opts(kind, 1, &o);
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"b1", "g", "b2"}, 3, &o), 1);
    group_opts(kind, 2, &o);
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"W2"}, 1, &o), 2);
    assert_int_equal(nb_optimizer_group_count(opt), 3);
    /* three optimizers, one per set */
    nb_params *sets[3];
    nb_optimizer *opts[3];
    for (int g = 0; g < 3; g++) sets[g] = nb_params_new();
    for (int i = 0; i < 5; i++) q[i] = nb_params_add(sets[group_of[i]], names[i], initial(i));
    for (int g = 0; g < 3; g++) {
        group_opts(kind, g, &o);
        opts[g] = nb_optimizer_new(sets[g], &o);
        assert_int_equal(nb_optimizer_set_schedule(opts[g], &s), NB_OK);
    }
    for (int t = 0; t < STEPS; t++) {
        nb_tape *tp = nb_tape_new(), *tq = nb_tape_new();
        nb_params_zero_grad(ps);
        for (int g = 0; g < 3; g++) nb_params_zero_grad(sets[g]);
        if (nb_backward(loss_of(tp, p, x)) != NB_OK) fail_msg("%s", nb_last_error());
        assert_int_equal(nb_backward(loss_of(tq, q, x)), NB_OK);
        double n1 = nb_clip_grad_norm(ps, 2.0), n2 = nb_clip_grad_norm_sets(sets, 3, 2.0);
        assert_true(n1 == n2);
        assert_int_equal(nb_optimizer_step(opt), NB_OK);
        for (int g = 0; g < 3; g++) {
            assert_int_equal(nb_optimizer_step(opts[g]), NB_OK);
            assert_true(nb_optimizer_group_lr(opt, g) == nb_optimizer_lr(opts[g]));
        }
        nb_tape_free(tp);
        nb_tape_free(tq);
    }
    for (int i = 0; i < 5; i++)
        for (size_t j = 0; j < nb_tensor_size(p[i]); j++)
            if (nb_get(p[i], j) != nb_get(q[i], j))
                fail_msg("%s: %s[%zu] is %.17g with groups, %.17g with one optimizer per group",
                         nb_optimizer_name(kind), names[i], j, nb_get(p[i], j), nb_get(q[i], j));
    /* and the groups did something: W2's options are not W1's */
    nb_optimizer_opts got;
    assert_int_equal(nb_optimizer_group_opts(opt, 2, &got), NB_OK);
    assert_true(got.weight_decay == 0.03 && got.beta1 == 0.7 && got.kind == kind);
    for (int g = 0; g < 3; g++) {
        nb_optimizer_free(opts[g]);
        nb_params_free(sets[g]);
    }
    nb_optimizer_free(opt);
    nb_params_free(ps);
    nb_tensor_free(x);
}

static void test_groups_update_as_separate_optimizers(void **state) {
    (void)state;
    for (int kind = NB_OPT_SGD; kind <= NB_OPT_RMSPROP; kind++) compare_kind((nb_optimizer_kind)kind);
}

/* ---------------------------------------------------------------- against torch */

static size_t put_list(char *out, size_t cap, const nb_tensor *t) {
    size_t n = 0;
    for (size_t j = 0; j < nb_tensor_size(t); j++) n += (size_t)snprintf(out + n, cap - n, "%s%.17g", j ? "," : "[", nb_get(t, j));
    return n + (size_t)snprintf(out + n, cap - n, "]");
}

static void against_torch(nb_optimizer_kind kind, bool *skipped) {
    const char *pnames[3] = {"W1", "b1", "W2"};
    nb_params *ps = nb_params_new();
    nb_tensor *w[3], *A[3], *c[3];
    nb_rng rng;
    nb_rng_seed(&rng, 40 + (uint64_t)kind);
    w[0] = nb_params_add(ps, pnames[0], nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(3, 4), 0, 1));
    w[1] = nb_params_add(ps, pnames[1], nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(4), 0, 1));
    w[2] = nb_params_add(ps, pnames[2], nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(4, 2), 0, 1));
    for (int i = 0; i < 3; i++) {
        A[i] = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(w[i]), nb_tensor_shape(w[i]), 0.2, 3);
        c[i] = nb_rand_normal(NULL, &rng, NB_F64, nb_tensor_ndim(w[i]), nb_tensor_shape(w[i]), 0, 1);
    }
    const double lr[3] = {0.05, 0.02, 0.1}, wd[3] = {0.01, 0, 0.03}, mu[3] = {0.9, 0.5, 0.7}, b1[3] = {0.9, 0.8, 0.7},
                 b2[3] = {0.999, 0.99, 0.95}, eps[3] = {1e-8, 1e-6, 1e-4};
    char json[16384];
    size_t n = (size_t)snprintf(json, sizeof json,
                                "{\"optimizer\":\"%s\",\"steps\":8,\"clip\":1.5,\"warmup\":3,\"warmup_start\":0.2,"
                                "\"gamma\":0.8,\"groups\":[",
                                nb_optimizer_name(kind));
    nb_optimizer *opt = NULL;
    for (int g = 0; g < 3; g++) {
        n += (size_t)snprintf(json + n, sizeof json - n,
                              "%s{\"lr\":%.17g,\"weight_decay\":%.17g,\"momentum\":%.17g,\"beta1\":%.17g,"
                              "\"beta2\":%.17g,\"eps\":%.17g}",
                              g ? "," : "", lr[g], wd[g], mu[g], b1[g], b2[g], eps[g]);
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, kind);
        o.lr = lr[g], o.weight_decay = wd[g], o.momentum = mu[g], o.beta1 = b1[g], o.beta2 = b2[g], o.eps = eps[g];
        if (g == 0) opt = nb_optimizer_new(ps, &o);
        else assert_int_equal(nb_optimizer_add_group(opt, &pnames[g], 1, &o), g);
    }
    n += (size_t)snprintf(json + n, sizeof json - n, "],\"params\":[");
    for (int i = 0; i < 3; i++) {
        n += (size_t)snprintf(json + n, sizeof json - n, "%s{\"group\":%d,\"w0\":", i ? "," : "", i);
        n += put_list(json + n, sizeof json - n, w[i]);
        n += (size_t)snprintf(json + n, sizeof json - n, ",\"A\":");
        n += put_list(json + n, sizeof json - n, A[i]);
        n += (size_t)snprintf(json + n, sizeof json - n, ",\"c\":");
        n += put_list(json + n, sizeof json - n, c[i]);
        n += (size_t)snprintf(json + n, sizeof json - n, "}");
    }
    n += (size_t)snprintf(json + n, sizeof json - n, "]}");
    assert_true(n < sizeof json - 1);
    nb_schedule s = {NB_SCHEDULE_EXPONENTIAL, .gamma = 0.8, .warmup = 3, .warmup_start = 0.2};
    assert_int_equal(nb_optimizer_set_schedule(opt, &s), NB_OK);
    for (int t = 0; t < 8; t++) {
        nb_tape *tp = nb_tape_new();
        nb_params_zero_grad(ps);
        nb_tensor *loss = NULL;
        for (int i = 0; i < 3; i++) {
            nb_tensor *term = nb_scale(tp, nb_sum(tp, nb_mul(tp, A[i], nb_square(tp, nb_sub(tp, w[i], c[i])))), 0.5);
            loss = loss ? nb_add(tp, loss, term) : term;
        }
        assert_int_equal(nb_backward(loss), NB_OK);
        nb_clip_grad_norm(ps, 1.5);
        assert_int_equal(nb_optimizer_step(opt), NB_OK);
        nb_tape_free(tp);
    }
    char cmd[17000];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/groups_torch.py '%s' 2>&1", json);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[8192];
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int rc = pclose(p);
    rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (rc == 3 || rc == 127) {
        *skipped = true;
    } else {
        if (rc != 0) fail_msg("tests/groups_torch.py failed (%d):\n%s", rc, out);
        char *at = out;
        double worst = 0;
        for (int i = 0; i < 3; i++)
            for (size_t j = 0; j < nb_tensor_size(w[i]); j++) {
                char *end;
                double want = strtod(at, &end), v = nb_get(w[i], j);
                if (end == at) fail_msg("tests/groups_torch.py: too few values:\n%s", out);
                at = end;
                worst = fmax(worst, fabs(v - want) / fmax(1, fabs(want)));
                if (!(fabs(v - want) <= 1e-12 * fmax(1, fabs(want))))
                    fail_msg("%s: %s[%zu] is %.17g, torch %.17g", nb_optimizer_name(kind), pnames[i], j, v, want);
            }
        print_message("%s, 3 groups: largest difference from torch %.2g\n", nb_optimizer_name(kind), worst);
    }
    for (int i = 0; i < 3; i++) {
        nb_tensor_free(A[i]);
        nb_tensor_free(c[i]);
    }
    nb_optimizer_free(opt);
    nb_params_free(ps);
}

static void test_groups_against_torch(void **state) {
    (void)state;
    bool skipped = false;
    for (int kind = NB_OPT_SGD; kind <= NB_OPT_RMSPROP && !skipped; kind++) against_torch((nb_optimizer_kind)kind, &skipped);
    if (skipped) {
        print_message("skipped: python3-torch is not installed (apt-get install python3-torch to run it)\n");
        skip();
    }
}

/* A transformer block's parameters: the usual split leaves the matrices
 * decaying and takes biases, norm weights and a scalar out. */
static void test_no_decay_group(void **state) {
    (void)state;
    nb_params *ps = nb_params_new();
    const char *decayed[] = {"attn.qkv.weight", "mlp.fc.weight", "conv.weight", "wte"};
    const char *not_decayed[] = {"attn.qkv.bias", "ln_1.weight", "ln_1.bias", "bn.weight", "temperature"};
    nb_params_add(ps, decayed[0], nb_zeros(NULL, NB_F32, NB_SHAPE(8, 24)));
    nb_params_add(ps, not_decayed[0], nb_zeros(NULL, NB_F32, NB_SHAPE(24)));
    nb_params_add(ps, not_decayed[1], nb_ones(NULL, NB_F32, NB_SHAPE(8)));
    nb_params_add(ps, not_decayed[2], nb_zeros(NULL, NB_F32, NB_SHAPE(8)));
    nb_params_add(ps, decayed[1], nb_zeros(NULL, NB_F32, NB_SHAPE(8, 32)));
    nb_params_add(ps, decayed[2], nb_zeros(NULL, NB_F32, NB_SHAPE(4, 3, 3, 3)));
    nb_params_add(ps, not_decayed[3], nb_ones(NULL, NB_F32, NB_SHAPE(4)));
    nb_params_add(ps, decayed[3], nb_zeros(NULL, NB_F32, NB_SHAPE(50, 8)));
    nb_params_add(ps, not_decayed[4], nb_ones(NULL, NB_F32, 0, NULL));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAMW);
    o.weight_decay = 0.1;
    o.lr = 6e-4;
    o.beta2 = 0.95;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    assert_int_equal(nb_optimizer_no_decay_group(opt), 1);
    for (int i = 0; i < 4; i++) assert_int_equal(nb_optimizer_group_of(opt, decayed[i]), 0);
    for (int i = 0; i < 5; i++) assert_int_equal(nb_optimizer_group_of(opt, not_decayed[i]), 1);
    assert_int_equal(nb_optimizer_group_of(opt, "nothing"), -1);
    nb_optimizer_opts g0, g1;
    assert_int_equal(nb_optimizer_group_opts(opt, 0, &g0), NB_OK);
    assert_int_equal(nb_optimizer_group_opts(opt, 1, &g1), NB_OK);
    assert_true(g0.weight_decay == 0.1 && g1.weight_decay == 0);
    /* nothing else differs */
    assert_true(g0.kind == g1.kind && g0.lr == g1.lr && g0.beta1 == g1.beta1 && g0.beta2 == g1.beta2 &&
                g0.momentum == g1.momentum && g0.eps == g1.eps);
    /* AdamW's decoupled decay: a step with zero gradients shrinks only the
     * decaying group (ln_1.weight stays 1; a matrix of ones would shrink) */
    nb_tensor *ln = nb_params_get(ps, "ln_1.weight");
    nb_tensor *fc = nb_params_get(ps, decayed[1]);
    nb_set(fc, 0, 1);
    nb_tape *tp = nb_tape_new();
    nb_tensor *sum = nb_add(tp, nb_sum(tp, nb_scale(tp, ln, 0)), nb_sum(tp, nb_scale(tp, fc, 0)));
    assert_int_equal(nb_backward(sum), NB_OK);
    assert_int_equal(nb_optimizer_step(opt), NB_OK);
    assert_true(nb_get(ln, 0) == 1);
    assert_close(nb_get(fc, 0), (double)(float)(1 - 6e-4 * 0.1), 1e-7);
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_params_free(ps);
}

/* Clipping over several sets: their global norm, by hand. */
static void test_clipping_over_sets(void **state) {
    (void)state;
    nb_params *a = nb_params_new(), *b = nb_params_new();
    nb_tensor *u = nb_params_add(a, "u", nb_ones(NULL, NB_F64, NB_SHAPE(2)));
    nb_tensor *v = nb_params_add(b, "v", nb_ones(NULL, NB_F32, NB_SHAPE(1)));
    nb_tape *tp = nb_tape_new();
    /* gradients (3, 4) for u, 12 for v: global norm 13 */
    nb_tensor *c = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){3, 4}));
    assert_int_equal(nb_backward(nb_add(tp, nb_sum(tp, nb_mul(tp, u, c)), nb_cast(tp, nb_scale(tp, nb_sum(tp, v), 12), NB_F64))),
                     NB_OK);
    nb_params *both[3] = {a, NULL, b};
    assert_close(nb_clip_grad_norm_sets(both, 3, 26), 13, 1e-12); /* within: unchanged */
    assert_close(nb_grad_get(u, 1), 4, 0);
    assert_close(nb_clip_grad_norm_sets(both, 3, 1.3), 13, 1e-12);
    assert_close(nb_grad_get(u, 0), 3 * 1.3 / (13 + 1e-6), 1e-15);
    assert_close(nb_grad_get(u, 1), 4 * 1.3 / (13 + 1e-6), 1e-15);
    assert_close(nb_grad_get(v, 0), 12 * 1.3 / (13 + 1e-6), 1e-6);
    assert_close(nb_clip_grad_norm(a, 100), 0.5, 1e-6); /* u's own norm, (3, 4) x 0.1 */
    assert_true(isnan(nb_clip_grad_norm_sets(both, 3, -1)));
    assert_message_has(nb_last_error(), "max_norm", "must be positive");
    assert_true(isnan(nb_clip_grad_norm_sets(NULL, 2, 1)));
    assert_int_equal(nb_last_status(), NB_ERR_NULL);
    nb_tape_free(tp);
    nb_params_free(a);
    nb_params_free(b);
}

/* Rates: a schedule scales each group's own; set_lr sets all. */
static void test_group_rates(void **state) {
    (void)state;
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_zeros(NULL, NB_F64, NB_SHAPE(2, 2)));
    nb_params_add(ps, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(2)));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    o.lr = 0.4;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    assert_int_equal(nb_optimizer_no_decay_group(opt), 1);
    assert_int_equal(nb_optimizer_set_group_lr(opt, 1, 0.1), NB_OK);
    nb_schedule s = {NB_SCHEDULE_STEP, 0, 1, 0.5, 0, 0, 0, 0};
    assert_int_equal(nb_optimizer_set_schedule(opt, &s), NB_OK);
    nb_tape *tp = nb_tape_new();
    assert_int_equal(nb_backward(nb_sum(tp, w)), NB_OK);
    for (int t = 0; t < 3; t++) assert_int_equal(nb_optimizer_step(opt), NB_OK);
    /* the third step (t = 2): 0.4 / 4 and 0.1 / 4 */
    assert_true(nb_optimizer_group_lr(opt, 0) == 0.1 && nb_optimizer_group_lr(opt, 1) == 0.025);
    assert_true(nb_optimizer_lr(opt) == 0.1);
    assert_close(nb_get(w, 0), -(0.4 + 0.2 + 0.1), 1e-15);
    assert_int_equal(nb_optimizer_set_lr(opt, 1), NB_OK);
    assert_true(nb_optimizer_group_lr(opt, 0) == 1 && nb_optimizer_group_lr(opt, 1) == 1);
    nb_tape_free(tp);

    /* refusals, each leaving the groups as they were */
    nb_optimizer_opts bad = o;
    bad.kind = NB_OPT_ADAM;
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"w"}, 1, &bad), -1);
    assert_message_has(nb_last_error(), "nb_optimizer_add_group", "'adam'", "'sgd'");
    bad = o;
    bad.weight_decay = -1;
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"w"}, 1, &bad), -1);
    assert_message_has(nb_last_error(), "invalid options");
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"w", "x"}, 2, &o), -1);
    assert_message_has(nb_last_error(), "name 1, 'x'", "not a parameter");
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"w", "w"}, 2, &o), -1);
    assert_message_has(nb_last_error(), "'w' is named twice");
    assert_int_equal(nb_optimizer_add_group(opt, NULL, 1, &o), -1);
    assert_int_equal(nb_optimizer_add_group(opt, (const char *[]){"w"}, 1, NULL), -1);
    assert_int_equal(nb_optimizer_add_group_if(opt, NULL, NULL, &o), -1);
    assert_int_equal(nb_optimizer_group_of(opt, "w"), 0);
    assert_int_equal(nb_optimizer_group_count(opt), 2);
    assert_int_equal(nb_optimizer_set_group_lr(opt, 2, 0.1), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "group 2 does not exist", "groups 0 to 1");
    assert_int_equal(nb_optimizer_set_group_lr(opt, 1, NAN), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "group 1's learning rate", "stays 1");
    assert_true(isnan(nb_optimizer_group_lr(opt, -1)));
    nb_optimizer_opts out;
    assert_int_equal(nb_optimizer_group_opts(opt, 5, &out), NB_ERR_ARG);
    assert_int_equal(nb_optimizer_no_decay_group(NULL), -1);
    /* an empty group is allowed (torch allows groups added later) */
    assert_int_equal(nb_optimizer_add_group(opt, NULL, 0, &o), 2);
    nb_optimizer_free(opt);
    nb_params_free(ps);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_groups_update_as_separate_optimizers),
        cmocka_unit_test(test_groups_against_torch),
        cmocka_unit_test(test_no_decay_group),
        cmocka_unit_test(test_clipping_over_sets),
        cmocka_unit_test(test_group_rates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
