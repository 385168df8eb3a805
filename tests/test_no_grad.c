/*
 * No-grad mode and no-grad scopes (nb_tape_no_grad, nb_no_grad_begin/end):
 * the same values bit for bit as with recording, nothing recorded, torch's
 * semantics for the results (requires_grad false, leaves), backward
 * refused, parameters untouched, and memory that stays put over many
 * batches in scopes while the tape's other tensors live on.
 */
#include "support.h"
#include "internal.h" /* is_leaf, for torch's is_leaf */

#include <math.h>
#include <string.h>
#include <sys/resource.h>

typedef struct {
    nb_tensor *w1, *b1, *g, *beta, *w2, *b2;
} model;

static model model_new(nb_rng *rng) {
    model m = {
        .w1 = nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(4, 1, 3, 3), 0, 0.5),
        .b1 = nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(4), 0, 0.1),
        .g = nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(16), 1, 0.1),
        .beta = nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(16), 0, 0.1),
        .w2 = nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(16, 3), 0, 0.3),
        .b2 = nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(3), 0, 0.1),
    };
    nb_tensor *all[] = {m.w1, m.b1, m.g, m.beta, m.w2, m.b2};
    for (int i = 0; i < 6; i++) nb_requires_grad(all[i], true);
    return m;
}

static void model_free(model *m) {
    nb_tensor *all[] = {m->w1, m->b1, m->g, m->beta, m->w2, m->b2};
    for (int i = 0; i < 6; i++) nb_tensor_free(all[i]);
}

/* conv, relu, max pool, reshape, layer norm, GELU, a product, log-softmax:
 * (N, 1, 6, 6) -> (N, 3) log-probabilities. */
static nb_tensor *forward(nb_tape *tp, const model *m, nb_tensor *x) {
    size_t n = nb_tensor_shape(x)[0];
    nb_tensor *h = nb_relu(tp, nb_conv2d(tp, x, m->w1, m->b1, NULL));              /* (N, 4, 4, 4) */
    h = nb_max_pool2d(tp, h, &(nb_pool_opts){.kernel = {2, 2}});                   /* (N, 4, 2, 2) */
    h = nb_reshape(tp, h, 2, ((const long[]){(long)n, 16}));
    h = nb_gelu(tp, nb_layer_norm(tp, h, m->g, m->beta, 1e-5));
    return nb_log_softmax(tp, nb_add(tp, nb_matmul(tp, h, m->w2), m->b2), 1);
}

static nb_tensor *batch(nb_tape *tp, nb_rng *rng) {
    return nb_rand_normal(tp, rng, NB_F32, NB_SHAPE(8, 1, 6, 6), 0, 1);
}

/* The same values bit for bit with and without recording; nothing recorded;
 * the results as torch.no_grad makes them; parameters and their gradients
 * untouched; backward and nb_grad refused with the reason. */
static void test_no_grad_mode(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    model m = model_new(&rng);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = batch(tp, &rng);
    /* A gradient already on a parameter, which no-grad must leave alone. */
    nb_tensor *loss = nb_mean(tp, forward(tp, &m, x));
    assert_int_equal(nb_backward(loss), NB_OK);
    float grad_before = (float)nb_grad_get(m.w2, 5), w_before = (float)nb_get(m.w2, 5);
    nb_tensor *recorded = forward(tp, &m, x);
    size_t entries = nb_tape_size(tp);

    assert_false(nb_tape_no_grad(tp, true));
    assert_true(nb_tape_no_grad_mode(tp));
    nb_tensor *y = forward(tp, &m, x);
    assert_ok(y);
    assert_int_equal(nb_tape_size(tp), entries); /* no entry recorded */
    assert_memory_equal(nb_tensor_data(y), nb_tensor_data(recorded), 8 * 3 * sizeof(float));
    assert_false(nb_tensor_requires_grad(y)); /* torch: y.requires_grad False, y.is_leaf True, grad_fn None */
    assert_true(y->is_leaf);
    assert_string_equal(nb_tensor_op(y), "");
    nb_tensor *l = nb_mean(tp, y);
    assert_int_equal(nb_backward(l), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_backward", "no-grad mode");
    nb_tensor *gw = NULL;
    assert_int_equal(nb_grad(l, &m.w2, 1, &gw, false), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "no-grad mode");
    assert_true(nb_tape_status(tp) == NB_OK);
    assert_true((float)nb_grad_get(m.w2, 5) == grad_before && (float)nb_get(m.w2, 5) == w_before);

    /* Back on: the old graph still works, and recording resumes. */
    assert_true(nb_tape_no_grad(tp, false));
    assert_false(nb_tape_no_grad_mode(tp));
    nb_tensor *again = forward(tp, &m, x);
    assert_true(nb_tensor_requires_grad(again));
    assert_true(nb_tape_size(tp) > entries);
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_true((float)nb_grad_get(m.w2, 5) == 2 * grad_before); /* accumulated once more */

    /* A no-grad result used with gradients on is a constant (as in torch). */
    nb_tape_no_grad(tp, true);
    nb_tensor *c = nb_exp(tp, nb_sum(tp, x));
    nb_tape_no_grad(tp, false);
    nb_tensor *s = nb_mul(tp, c, nb_sum(tp, m.b2));
    nb_zero_grad(m.b2);
    assert_int_equal(nb_backward(s), NB_OK);
    assert_true(nb_grad_get(m.b2, 0) == nb_item(c)); /* d(c sum b)/db = c */
    nb_tape_free(tp);
    model_free(&m);
}

/* Many batches in scopes: the tape's memory stops growing after the first
 * (with recording, or with the mode alone, it grows with every batch), the
 * values are those of a recorded evaluation, a scope's results are stale
 * after its end, and what was made before the scope lives on. */
static void test_scopes_free_each_batch(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 8);
    model m = model_new(&rng);
    nb_tape *tp = nb_tape_new(), *ref = nb_tape_new();
    nb_tensor *kept = nb_rand_normal(tp, &rng, NB_F32, NB_SHAPE(3), 0, 1); /* made before: lives on */
    float kept0 = (float)nb_get(kept, 0);
    nb_rng data, data_ref;
    nb_rng_seed(&data, 9);
    nb_rng_seed(&data_ref, 9);
    size_t after_two = 0;
    nb_tensor *stale = NULL;
    for (int b = 0; b < 200; b++) {
        assert_int_equal(nb_no_grad_begin(tp), NB_OK);
        nb_tensor *y = forward(tp, &m, batch(tp, &data));
        nb_tape_reset(ref);
        nb_tensor *want = forward(ref, &m, batch(ref, &data_ref));
        assert_memory_equal(nb_tensor_data(y), nb_tensor_data(want), 8 * 3 * sizeof(float));
        if (b == 0) stale = y;
        assert_int_equal(nb_tape_size(tp), 0);
        assert_int_equal(nb_no_grad_end(tp), NB_OK);
        assert_false(nb_tape_no_grad_mode(tp));
        if (b == 1) after_two = nb_tape_memory(tp);
    }
    assert_int_equal(nb_tape_memory(tp), after_two);
    assert_true((float)nb_get(kept, 0) == kept0);
    assert_ok(nb_exp(tp, kept));
    /* A result of an ended scope is refused as stale. */
    assert_int_equal(nb_tensor_status(stale), NB_ERR_STATE);
    assert_int_equal(nb_tensor_status(nb_exp(tp, stale)), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "exp", "no-grad scope that has ended");
    /* Many small scopes: 5000 of 20 ops make some 10 MB of headers, more
     * than a window holds, yet the tape's memory stays as after the first
     * scopes (each end moves the scopes' window to fresh addresses). */
    nb_tensor *one = nb_full(tp, NB_F64, NB_SHAPE(1), 0.5);
    size_t after_first = 0;
    for (int b = 0; b < 5000; b++) {
        nb_no_grad_begin(tp);
        nb_tensor *t = one;
        for (int k = 0; k < 20; k++) t = nb_mul(tp, t, one);
        assert_true(nb_item(t) == ldexp(1, -21));
        nb_no_grad_end(tp);
        if (b == 3) after_first = nb_tape_memory(tp);
    }
    assert_int_equal(nb_tape_memory(tp), after_first);
    assert_ok(nb_exp(tp, one));
    /* The mode alone keeps results until the reset: memory grows. */
    nb_tape_reset(tp);
    nb_tape_no_grad(tp, true);
    size_t start = nb_tape_memory(tp);
    for (int b = 0; b < 200; b++) forward(tp, &m, batch(tp, &data));
    assert_true(nb_tape_memory(tp) > start);
    assert_int_equal(nb_tape_size(tp), 0);
    nb_tape_no_grad(tp, false);
    nb_tape_free(tp);
    nb_tape_free(ref);
    model_free(&m);
}

/* A scope keeps its tensors when freeing them would pull memory from under
 * the tape's others: a backward pass ran inside it (gradients on a graph
 * made before). */
static void test_scopes_that_cannot_free(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 10);
    model m = model_new(&rng);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = batch(tp, &rng);
    nb_tensor *out = forward(tp, &m, x);
    nb_tensor *loss = nb_mean(tp, out);
    assert_int_equal(nb_no_grad_begin(tp), NB_OK);
    nb_tensor *y = forward(tp, &m, x);
    assert_int_equal(nb_backward(loss), NB_OK); /* gradients of the graph made before */
    assert_int_equal(nb_no_grad_end(tp), NB_OK);
    assert_ok(y); /* kept: the pass allocated tape gradients inside the scope */
    assert_ok(nb_exp(tp, out));
    /* Nesting: the inner end frees its part only; modes come back in order. */
    assert_int_equal(nb_no_grad_begin(tp), NB_OK);
    nb_tensor *outer = nb_exp(tp, x);
    assert_int_equal(nb_no_grad_begin(tp), NB_OK);
    nb_tensor *inner = nb_exp(tp, outer);
    assert_int_equal(nb_no_grad_end(tp), NB_OK);
    assert_true(nb_tape_no_grad_mode(tp));
    assert_int_equal(nb_tensor_status(inner), NB_ERR_STATE);
    assert_ok(outer);
    assert_ok(nb_exp(tp, outer));
    assert_int_equal(nb_no_grad_end(tp), NB_OK);
    assert_false(nb_tape_no_grad_mode(tp));
    assert_int_equal(nb_tensor_status(outer), NB_ERR_STATE);
    /* An end without a begin, and NULL tapes. */
    assert_int_equal(nb_no_grad_end(tp), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_no_grad_end", "no nb_no_grad_begin");
    assert_int_equal(nb_no_grad_begin(NULL), NB_ERR_NULL);
    assert_int_equal(nb_no_grad_end(NULL), NB_ERR_NULL);
    assert_false(nb_tape_no_grad(NULL, true));
    nb_tape_free(tp);
    model_free(&m);
}

/* Under an address-space limit (ulimit -v) the end of a scope cannot move
 * the scopes' header store to fresh addresses; its tensors must still be
 * refused as stale afterwards, never read as live from memory the next
 * scope reuses (they were: status OK, and the values of later tensors). */
static void test_scope_end_under_an_address_space_limit(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *w = nb_full(NULL, NB_F32, NB_SHAPE(3), 2.0);
    nb_tensor *kept = nb_add(tp, w, w); /* 4 */
    for (int k = 0; k < 5; k++) { /* warm: the store and the arena exist */
        assert_int_equal(nb_no_grad_begin(tp), NB_OK);
        assert_ok(nb_add(tp, kept, kept));
        assert_int_equal(nb_no_grad_end(tp), NB_OK);
    }
    struct rlimit was, low;
    assert_int_equal(getrlimit(RLIMIT_AS, &was), 0);
    low = was;
    low.rlim_cur = (rlim_t)1 << 20; /* below what is mapped already: no mapping can grow */
    assert_int_equal(setrlimit(RLIMIT_AS, &low), 0);
    nb_no_grad_begin(tp);
    nb_tensor *s = nb_add(tp, kept, kept); /* 8 */
    nb_no_grad_end(tp);
    nb_status after_end = nb_tensor_status(s);
    nb_no_grad_begin(tp);
    nb_tensor *later = nb_mul(tp, kept, kept); /* 16, in the memory s had */
    double read = nb_get(s, 0), later_value = nb_get(later, 0);
    nb_no_grad_end(tp);
    assert_int_equal(setrlimit(RLIMIT_AS, &was), 0);
    assert_int_equal(after_end, NB_ERR_STATE);
    assert_true(isnan(read));
    assert_true(later_value == 16);
    assert_true(nb_get(kept, 0) == 4);
    assert_ok(nb_add(tp, kept, kept));
    nb_tape_free(tp);
    nb_tensor_free(w);
}

/* A warm training loop that evaluates in scopes every step (a recorded
 * step, backward, then three scopes, then the reset) calls no malloc. */
static void test_warm_loop_with_scopes_calls_no_malloc(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 12);
    model m = model_new(&rng);
    nb_tape *tp = nb_tape_new();
    uint64_t before = 0;
    for (int step = 0; step < 20; step++) {
        if (step == 8) before = nb_alloc_count();
        assert_int_equal(nb_backward(nb_mean(tp, forward(tp, &m, batch(tp, &rng)))), NB_OK);
        for (int e = 0; e < 3; e++) {
            assert_int_equal(nb_no_grad_begin(tp), NB_OK);
            assert_ok(forward(tp, &m, batch(tp, &rng)));
            assert_int_equal(nb_no_grad_end(tp), NB_OK);
        }
        nb_tape_reset(tp);
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    nb_tape_free(tp);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_grad_mode),
        cmocka_unit_test(test_scopes_free_each_batch),
        cmocka_unit_test(test_scopes_that_cannot_free),
        cmocka_unit_test(test_scope_end_under_an_address_space_limit),
        cmocka_unit_test(test_warm_loop_with_scopes_calls_no_malloc),
    };
    return cmocka_run_group_tests_name("no_grad", tests, NULL, NULL);
}
