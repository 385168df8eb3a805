/*
 * Allocation failure.  For each scenario (a training step, a save and load,
 * each loader, the pictures), count the allocations of a clean run, then run
 * it again once per allocation with that one failing: the scenario must
 * report an error, not crash, and (in the sanitizer run of this test) leak
 * nothing.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64];

/* A small training step: parameters, an optimizer, forward, backward, an
 * update, and a picture of the graph. */
static nb_status training_step(void) {
    nb_status st = NB_ERR_NOMEM;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_params *ps = nb_params_new();
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    nb_tensor *X = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(8, 4), -1, 1);
    nb_tensor *y = nb_from_array(NULL, NB_F32, NB_SHAPE(8), ((double[]){0, 1, 2, 0, 1, 2, 0, 1}));
    if (!ps || !tp || nb_tensor_status(X) || nb_tensor_status(y)) goto done;
    nb_tensor *W1 = nb_params_create(ps, "W1", NB_F32, NB_SHAPE(4, 6), NB_INIT_HE_NORMAL, 4, 6, &rng);
    nb_tensor *b1 = nb_params_create(ps, "b1", NB_F32, NB_SHAPE(6), NB_INIT_ZEROS, 4, 6, &rng);
    nb_tensor *W2 = nb_params_create(ps, "W2", NB_F32, NB_SHAPE(6, 3), NB_INIT_GLOROT_UNIFORM, 6, 3, &rng);
    if (nb_tensor_status(W1) || nb_tensor_status(b1) || nb_tensor_status(W2)) goto done;
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    if (!(opt = nb_optimizer_new(ps, &o))) goto done;
    for (int step = 0; step < 2; step++) {
        nb_tape_reset(tp);
        nb_params_zero_grad(ps);
        nb_tape_set_explain(tp, step == 1);
        nb_scope_begin(tp, "layer 1");
        nb_tensor *h = nb_relu(tp, nb_linear(tp, X, W1, b1));
        nb_scope_end(tp);
        nb_tensor *loss = nb_softmax_cross_entropy(tp, nb_matmul(tp, h, W2), y, 1);
        if ((st = nb_backward(loss)) != NB_OK) goto done;
        if ((st = nb_optimizer_step(opt)) != NB_OK) goto done;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nb_dot_opts dopts;
    nb_dot_default_opts(&dopts);
    dopts.clusters = true;
    st = f ? nb_dot_write(tp, f, &dopts) : NB_ERR_IO;
    if (f) fclose(f);
    free(buf);
done:
    nb_optimizer_free(opt);
    nb_params_free(ps);
    nb_tape_free(tp);
    nb_tensor_free(X);
    nb_tensor_free(y);
    return st;
}

static nb_status save_and_load(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/p.nbp", dir);
    nb_status st = NB_ERR_NOMEM;
    nb_params *a = nb_params_new(), *b = nb_params_new();
    if (!a || !b) goto done;
    if (nb_tensor_status(nb_params_add(a, "W", nb_ones(NULL, NB_F32, NB_SHAPE(3, 4)))) ||
        nb_tensor_status(nb_params_add(a, "b", nb_ones(NULL, NB_F64, NB_SHAPE(4)))) ||
        nb_tensor_status(nb_params_add(b, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(3, 4)))) ||
        nb_tensor_status(nb_params_add(b, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(4)))))
        goto done;
    if ((st = nb_params_save(a, path)) == NB_OK) st = nb_params_load(b, path);
done:
    nb_params_free(a);
    nb_params_free(b);
    return st;
}

/* A checkpoint of a momentum optimizer with two parameter groups (buffers,
 * metadata) and a generator, in both formats, saved and loaded into a
 * second model. */
static nb_status checkpoint(void) {
    nb_status st = NB_ERR_NOMEM;
    nb_params *ps[2] = {nb_params_new(), nb_params_new()};
    nb_optimizer *opt[2] = {NULL, NULL};
    nb_tape *tp = nb_tape_new();
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    if (!ps[0] || !ps[1] || !tp) goto done;
    for (int i = 0; i < 2; i++) {
        if (nb_tensor_status(nb_params_add(ps[i], "W", nb_ones(NULL, NB_F32, NB_SHAPE(3, 4)))) ||
            nb_tensor_status(nb_params_add(ps[i], "b", nb_ones(NULL, NB_F64, NB_SHAPE(4)))))
            goto done;
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, NB_OPT_MOMENTUM);
        if (!(opt[i] = nb_optimizer_new(ps[i], &o)) || nb_optimizer_no_decay_group(opt[i]) != 1) goto done;
    }
    nb_schedule s = {NB_SCHEDULE_STEP, 0, 2, 0.5, 0, 0, 1, 0};
    if ((st = nb_optimizer_set_schedule(opt[0], &s)) != NB_OK) goto done;
    if ((st = nb_backward(nb_sum(tp, nb_params_get(ps[0], "W")))) != NB_OK) goto done;
    if ((st = nb_optimizer_step(opt[0])) != NB_OK) goto done;
    const char *names[2] = {"c.nbp", "c.safetensors"};
    for (int f = 0; f < 2 && st == NB_OK; f++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        if ((st = nb_checkpoint_save(ps[0], opt[0], &rng, path)) == NB_OK)
            st = nb_checkpoint_load(ps[1], opt[1], &rng, path);
    }
done:
    nb_tape_free(tp);
    for (int i = 0; i < 2; i++) {
        nb_optimizer_free(opt[i]);
        nb_params_free(ps[i]);
    }
    return st;
}

static nb_status read_csv(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/t.csv", dir);
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "target";
    nb_dataset d;
    nb_status st = nb_csv_read(path, &o, &d);
    nb_dataset_free(&d);
    return st;
}

static nb_status read_idx(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/t.idx.gz", dir);
    nb_tensor *t = nb_idx_read(path, NB_F32, 1);
    nb_status st = nb_tensor_status(t);
    nb_tensor_free(t);
    return st;
}

static nb_status pictures(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/b.html", dir);
    nb_tape *tp = nb_tape_new();
    nb_tensor *w = nb_scalar(NULL, NB_F64, 0.5);
    nb_status st = NB_ERR_NOMEM;
    if (!tp || nb_tensor_status(w)) goto done;
    nb_requires_grad(w, true);
    nb_tensor *loss = nb_add(tp, nb_sigmoid(tp, nb_mul(tp, w, w)), w);
    st = nb_backward_html(loss, path, "test", NULL);
    if (st == NB_OK) st = nb_backward_frames(loss, dir, NULL, NULL);
done:
    nb_tape_free(tp);
    nb_tensor_free(w);
    return st;
}

static nb_status checked_gradient(void) {
    nb_tensor *x = nb_ones(NULL, NB_F64, NB_SHAPE(3));
    if (nb_tensor_status(x)) return NB_ERR_NOMEM;
    nb_requires_grad(x, true);
    nb_gradcheck_result r = nb_gradcheck(NULL, &x, 1, NULL, NULL);
    (void)r;
    nb_tensor_free(x);
    return NB_OK;
}

/* A whole gradient check: its own tape, copies and buffers, and the checked
 * function's ops. */
static nb_tensor *tanh_product(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    return nb_sum(tp, nb_tanh(tp, nb_mul(tp, x[0], x[1])));
}

static nb_status gradient_check(void) {
    nb_tensor *x[2] = {nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0.5, -1, 2})),
                       nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 0.25, -0.5}))};
    nb_status st = NB_ERR_NOMEM;
    if (!nb_tensor_status(x[0]) && !nb_tensor_status(x[1])) {
        nb_requires_grad(x[0], true);
        nb_requires_grad(x[1], true);
        nb_gradcheck_result r = nb_gradcheck(tanh_product, x, 2, NULL, NULL);
        st = r.status != NB_OK ? r.status : r.passed ? NB_OK : NB_ERR_VALUE;
    }
    nb_tensor_free(x[0]);
    nb_tensor_free(x[1]);
    return st;
}

/* A transformer block's attention, twice on one tape (the second warm):
 * an N-d nb_linear_torch to a fused qkv, nb_split_qkv, causal attention
 * with a broadcast boolean mask and dropout, nb_merge_heads, nb_linear,
 * then gradients with create_graph (the composed backward) and a backward
 * through them, and nb_attention_dropout_mask. */
static nb_status attention_block(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 2);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(2, 5, 8), -1, 1);
    nb_tensor *w = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(24, 8), -1, 1);
    nb_tensor *b = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(24), -1, 1);
    nb_tensor *mask = nb_ones(NULL, NB_F64, NB_SHAPE(2, 1, 1, 5));
    nb_tensor *params[3] = {x, w, b};
    nb_status st = NB_ERR_NOMEM;
    if (!tp || nb_tensor_status(x) || nb_tensor_status(w) || nb_tensor_status(b) || nb_tensor_status(mask)) goto done;
    nb_set(mask, 7, 0);
    for (int i = 0; i < 3; i++) nb_requires_grad(params[i], true);
    for (int step = 0; step < 2 && (step == 0 || st == NB_OK); step++) {
        nb_tape_reset(tp);
        nb_tensor *qkv[3], *g[3];
        nb_split_qkv(tp, nb_linear_torch(tp, x, w, b), 2, qkv);
        nb_attention_opts o = {.causal = true, .mask = mask, .mask_is_bool = true, .dropout_p = 0.25, .rng = &rng};
        nb_tensor *y = nb_merge_heads(tp, nb_scaled_dot_product_attention(tp, qkv[0], qkv[1], qkv[2], &o));
        nb_tensor *loss = nb_sum(tp, nb_square(tp, nb_linear(tp, y, nb_transpose(tp, w, 0, 1), b)));
        st = nb_grad(loss, params, 3, g, true);
        if (st == NB_OK) st = nb_backward(nb_sum(tp, nb_square(tp, g[0])));
        if (st == NB_OK) st = nb_tensor_status(nb_attention_dropout_mask(tp, qkv[0], qkv[1], 0.5, &rng));
    }
done:
    nb_tape_free(tp);
    for (int i = 0; i < 3; i++) nb_tensor_free(params[i]);
    nb_tensor_free(mask);
    return st;
}

/* Runs a scenario failing each allocation in turn. */
static void fail_every_allocation(nb_status (*scenario)(void), const char *name) {
    uint64_t before = nb_alloc_count();
    assert_int_equal(scenario(), NB_OK);
    uint64_t count = nb_alloc_count() - before;
    assert_true(count > 0);
    for (uint64_t n = 1; n <= count; n++) {
        nb_test_fail_allocation(n);
        nb_status st = scenario();
        bool failed = nb_test_allocation_failed();
        nb_test_fail_allocation(0);
        if (failed && st == NB_OK) {
            print_error("%s: allocation %llu of %llu failed but the scenario reported success\n", name,
                        (unsigned long long)n, (unsigned long long)count);
            fail();
        }
    }
    /* And it still works afterwards. */
    assert_int_equal(scenario(), NB_OK);
}

/* Checkpoints (nb_recompute), nested, through backward and create_graph:
 * the recomputation's region and the graph walk's arrays failing. */
static nb_status checkpointed_layer(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_tanh(tp, nb_matmul(tp, in[0], in[1]));
    return nb_tensor_status(out[0]);
}
static nb_status checkpointed_block(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    nb_tensor *h;
    nb_status st = nb_recompute(tp, checkpointed_layer, NULL, in, 2, &h, 1, NULL);
    if (st != NB_OK) return st;
    nb_tensor *inner[2] = {h, in[2]};
    return nb_recompute(tp, checkpointed_layer, NULL, inner, 2, out, 1, NULL);
}
static nb_status recomputation(void) {
    nb_status st = NB_ERR_NOMEM;
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tape *tp = nb_tape_new();
    nb_tensor *in[3] = {nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(64, 48), -1, 1),
                        nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(48, 40), -1, 1),
                        nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(40, 30), -1, 1)};
    if (!tp || nb_tensor_status(in[0]) || nb_tensor_status(in[1]) || nb_tensor_status(in[2])) goto done;
    nb_requires_grad(in[1], true);
    nb_requires_grad(in[2], true);
    for (int pass = 0; pass < 2; pass++) {
        nb_tape_reset(tp);
        nb_zero_grad(in[1]);
        nb_zero_grad(in[2]);
        nb_tensor *y;
        if ((st = nb_recompute(tp, checkpointed_block, NULL, in, 3, &y, 1, NULL)) != NB_OK) goto done;
        nb_tensor *loss = nb_sum(tp, nb_square(tp, y));
        if (pass == 0) {
            st = nb_backward(loss);
        } else {
            nb_tensor *g[2];
            if ((st = nb_grad(loss, in + 1, 2, g, true)) != NB_OK) goto done;
            st = nb_backward(nb_add(tp, nb_sum(tp, g[0]), nb_sum(tp, g[1])));
        }
        if (st != NB_OK) goto done;
        if (!nb_has_grad(in[1]) || !isfinite(nb_grad_get(in[1], 0))) {
            st = NB_ERR_STATE;
            goto done;
        }
    }
done:
    nb_tape_free(tp);
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    return st;
}
static void test_recomputation(void **state) { (void)state; fail_every_allocation(recomputation, "recomputation"); }

static void test_training_step(void **state) { (void)state; fail_every_allocation(training_step, "training step"); }
static void test_save_and_load(void **state) { (void)state; fail_every_allocation(save_and_load, "save and load"); }
static void test_checkpoint(void **state) { (void)state; fail_every_allocation(checkpoint, "checkpoint"); }
static void test_csv(void **state) { (void)state; fail_every_allocation(read_csv, "csv"); }
static void test_idx(void **state) { (void)state; fail_every_allocation(read_idx, "idx"); }
static void test_pictures(void **state) { (void)state; fail_every_allocation(pictures, "pictures"); }
static void test_gradcheck(void **state) { (void)state; fail_every_allocation(gradient_check, "gradcheck"); }
static void test_attention_block(void **state) { (void)state; fail_every_allocation(attention_block, "attention block"); }

static void test_gradcheck_misuse(void **state) {
    (void)state;
    assert_int_equal(checked_gradient(), NB_OK);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/nabla-alloc-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/t.csv", dir);
    FILE *f = fopen(path, "w");
    fputs("a,b,target\n1,2,0\n3,4,1\n5,6,0\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/t.idx.gz", dir);
    gzFile g = gzopen(path, "wb");
    const unsigned char idx[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
    gzwrite(g, idx, sizeof idx);
    gzclose(g);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_training_step), cmocka_unit_test(test_save_and_load),
        cmocka_unit_test(test_csv),           cmocka_unit_test(test_idx),
        cmocka_unit_test(test_pictures),      cmocka_unit_test(test_gradcheck_misuse),
        cmocka_unit_test(test_gradcheck),     cmocka_unit_test(test_checkpoint),
        cmocka_unit_test(test_attention_block),
        cmocka_unit_test(test_recomputation),
    };
    return cmocka_run_group_tests_name("allocation failure", tests, setup, teardown);
}
