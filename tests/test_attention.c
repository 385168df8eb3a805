/*
 * The fused attention op (nb_scaled_dot_product_attention) against the same
 * attention composed of ops (matmul, scale, where/add, softmax, dropout's
 * mask, matmul), which the other tests check against PyTorch and finite
 * differences: values and gradients of q, k, v and an additive mask, for
 * every causal / mask / dropout combination, shapes across the 64-row
 * blocks, float64 and float32; then gradcheck and gradgradcheck of the op
 * itself, the thread count, what a row that sees no key gives, memory that
 * grows with L, not L·S, and evaluation mode.
 */
#include "support.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

enum { NO_MASK, BOOL_MASK, ADD_MASK };

typedef struct {
    int nd;
    size_t batch[2], L, S, E, Ev;
    bool causal;
    int mask_kind;
    int mask_form;   /* 0: (..., L, S); 1: (L, S); 2: (S,); 3: (..., 1, S) */
    double dropout_p, scale;
} config;

static nb_tensor *heap_random(nb_rng *rng, nb_dtype dt, int ndim, const size_t *shape, double lo, double hi) {
    nb_tensor *t = nb_full(NULL, dt, ndim, shape, 0.0);
    for (size_t i = 0; i < nb_tensor_size(t); i++) nb_set(t, i, lo + (hi - lo) * nb_rng_uniform(rng));
    return t;
}

static int shape_of(const config *c, size_t rows, size_t cols, size_t *shape) {
    int n = 0;
    for (int d = 0; d < c->nd; d++) shape[n++] = c->batch[d];
    shape[n++] = rows;
    shape[n++] = cols;
    return n;
}

/* The mask of a config: a boolean one (about 1 in 4 hidden) or an additive
 * one, in the configured broadcast form. */
static nb_tensor *make_mask(nb_rng *rng, const config *c, nb_dtype dt) {
    if (c->mask_kind == NO_MASK) return NULL;
    size_t shape[4];
    int n = 0;
    if (c->mask_form == 0) n = shape_of(c, c->L, c->S, shape);
    if (c->mask_form == 1) shape[0] = c->L, shape[1] = c->S, n = 2;
    if (c->mask_form == 2) shape[0] = c->S, n = 1;
    if (c->mask_form == 3) n = shape_of(c, 1, c->S, shape);
    nb_tensor *m = heap_random(rng, dt, n, shape, -1, 1);
    if (c->mask_kind == BOOL_MASK)
        for (size_t i = 0; i < nb_tensor_size(m); i++) nb_set(m, i, nb_get(m, i) > -0.5);
    return m;
}

/* The attention composed of ops, with the fused op's dropout mask drawn
 * from `rng` (a copy of the generator the fused op got). */
static nb_tensor *composed(nb_tape *tp, nb_tensor *q, nb_tensor *k, nb_tensor *v, const nb_attention_opts *o,
                           nb_rng *rng) {
    size_t E = nb_tensor_shape(q)[nb_tensor_ndim(q) - 1];
    double scale = o->scale != 0 ? o->scale : 1 / sqrt((double)E);
    nb_tensor *s = nb_scale(tp, nb_matmul_t(tp, q, k, false, true), scale);
    nb_tensor *hidden = nb_scalar(tp, nb_tensor_dtype(q), -INFINITY);
    if (o->mask) s = o->mask_is_bool ? nb_where(tp, o->mask, s, hidden) : nb_add(tp, s, o->mask);
    if (o->causal) {
        size_t L = nb_tensor_shape(q)[nb_tensor_ndim(q) - 2], S = nb_tensor_shape(k)[nb_tensor_ndim(k) - 2];
        nb_tensor *seen = nb_zeros(tp, nb_tensor_dtype(q), NB_SHAPE(L, S));
        for (size_t i = 0; i < L; i++)
            for (size_t j = 0; j <= i && j < S; j++) nb_set(seen, i * S + j, 1);
        s = nb_where(tp, seen, s, hidden);
    }
    nb_tensor *p = nb_softmax(tp, s, -1);
    if (o->dropout_p > 0 && nb_tape_training(tp)) p = nb_mul(tp, p, nb_attention_dropout_mask(tp, q, k, o->dropout_p, rng));
    return nb_matmul(tp, p, v);
}

/* Equal within tol relative to the larger magnitude, or both NaN. */
static void expect_same(const char *what, const double *a, const double *b, size_t n, double tol, const config *c) {
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i]) continue; /* the same infinity too */
        bool nan_a = isnan(a[i]), nan_b = isnan(b[i]);
        double scale = fmax(1, fmax(fabs(a[i]), fabs(b[i])));
        if (nan_a == nan_b && (nan_a || fabs(a[i] - b[i]) <= tol * scale)) continue;
        fail_msg("%s[%zu]: fused %.17g, composed %.17g (nd %d, L %zu, S %zu, E %zu, Ev %zu, causal %d, mask %d/%d, "
                 "dropout %g)",
                 what, i, a[i], b[i], c->nd, c->L, c->S, c->E, c->Ev, c->causal, c->mask_kind, c->mask_form,
                 c->dropout_p);
    }
}

typedef struct {
    double *out, *grad[4];
    size_t n_out, n[4];
} run_result;

static void free_result(run_result *r) {
    free(r->out);
    for (int i = 0; i < 4; i++) free(r->grad[i]);
}

/* Runs fused or composed attention on the inputs, the loss sum(R ⊙ out),
 * and keeps the output and the inputs' gradients: from nb_backward, or
 * with graph from nb_grad with create_graph (the op's backward_graph). */
static run_result run_(bool fused, bool graph, nb_tensor **in, int n_in, const nb_attention_opts *o,
                       const nb_rng *rng0, nb_tensor *R) {
    nb_tape *tp = nb_tape_new();
    nb_rng rng = *rng0;
    nb_attention_opts opts = *o;
    opts.rng = &rng;
    for (int i = 0; i < n_in; i++) nb_zero_grad(in[i]);
    nb_tensor *out = fused ? nb_scaled_dot_product_attention(tp, in[0], in[1], in[2], &opts)
                           : composed(tp, in[0], in[1], in[2], &opts, &rng);
    assert_ok(out);
    run_result r = {.n_out = nb_tensor_size(out)};
    r.out = malloc((r.n_out + 1) * sizeof(double));
    nb_to_f64(out, r.out);
    nb_tensor *loss = nb_sum(tp, nb_mul(tp, out, R)), *g[4] = {NULL};
    if (graph)
        assert_int_equal(nb_grad(loss, in, n_in, g, true), NB_OK);
    else
        assert_int_equal(nb_backward(loss), NB_OK);
    for (int i = 0; i < n_in; i++) {
        r.n[i] = nb_tensor_size(in[i]);
        r.grad[i] = malloc((r.n[i] + 1) * sizeof(double));
        for (size_t e = 0; e < r.n[i]; e++) r.grad[i][e] = graph ? nb_get(g[i], e) : nb_grad_get(in[i], e);
    }
    nb_tape_free(tp);
    return r;
}

static run_result run(bool fused, nb_tensor **in, int n_in, const nb_attention_opts *o, const nb_rng *rng0,
                      nb_tensor *R) {
    return run_(fused, false, in, n_in, o, rng0, R);
}

/* The fused op, its create_graph backward and the composed ops agree on
 * the inputs: value and the gradients of q, k, v. */
static void expect_all_agree(nb_tensor **in, const nb_attention_opts *o, nb_tensor *R, const config *c, double tol) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    run_result ref = run_(false, false, in, 3, o, &rng, R);
    for (int graph = 0; graph < 2; graph++) {
        run_result a = run_(true, graph, in, 3, o, &rng, R);
        expect_same(graph ? "out (create_graph)" : "out", a.out, ref.out, a.n_out, tol, c);
        const char *names[2][3] = {{"dq", "dk", "dv"}, {"dq (create_graph)", "dk (create_graph)", "dv (create_graph)"}};
        for (int i = 0; i < 3; i++) expect_same(names[graph][i], a.grad[i], ref.grad[i], a.n[i], tol, c);
        free_result(&a);
    }
    free_result(&ref);
}

static const size_t sizes[] = {1, 3, 63, 64, 65, 130};

static config random_config(nb_rng *rng) {
    config c = {.nd = (int)(nb_rng_next(rng) % 3)};
    for (int d = 0; d < c.nd; d++) c.batch[d] = 1 + nb_rng_next(rng) % 3;
    c.L = sizes[nb_rng_next(rng) % 6];
    c.S = sizes[nb_rng_next(rng) % 6];
    c.E = 1 + nb_rng_next(rng) % 9;
    c.Ev = 1 + nb_rng_next(rng) % 9;
    return c;
}

/* Every combination of causal, mask kind and form, and dropout, on random
 * shapes: fused and composed agree in value and in every gradient. */
static void check_combinations(nb_dtype dt, double tol) {
    nb_rng rng;
    nb_rng_seed(&rng, dt == NB_F64 ? 41 : 42);
    int cases = 0;
    for (int causal = 0; causal < 2; causal++)
        for (int kind = NO_MASK; kind <= ADD_MASK; kind++)
            for (int form = 0; form < (kind == NO_MASK ? 1 : 4); form++)
                for (int drop = 0; drop < 2; drop++)
                    for (int rep = 0; rep < 2; rep++) {
                        config c = random_config(&rng);
                        c.causal = causal, c.mask_kind = kind, c.mask_form = form;
                        c.dropout_p = drop ? 0.3 : 0;
                        c.scale = rep ? 0.7 : 0;
                        size_t sq[4], sk[4], sv[4], so[4];
                        int nq = shape_of(&c, c.L, c.E, sq);
                        shape_of(&c, c.S, c.E, sk);
                        shape_of(&c, c.S, c.Ev, sv);
                        shape_of(&c, c.L, c.Ev, so);
                        nb_tensor *in[4] = {heap_random(&rng, dt, nq, sq, -2, 2), heap_random(&rng, dt, nq, sk, -2, 2),
                                            heap_random(&rng, dt, nq, sv, -1, 1), make_mask(&rng, &c, dt)};
                        int n_in = in[3] ? 4 : 3;
                        for (int i = 0; i < n_in; i++) nb_requires_grad(in[i], i < 3 || kind == ADD_MASK);
                        nb_tensor *R = heap_random(&rng, dt, nq, so, -1, 1);
                        nb_attention_opts o = {.causal = causal, .mask = in[3], .mask_is_bool = kind == BOOL_MASK,
                                               .scale = c.scale, .dropout_p = c.dropout_p};
                        run_result a = run(true, in, n_in, &o, &rng, R), b = run(false, in, n_in, &o, &rng, R);
                        expect_same("out", a.out, b.out, a.n_out, tol, &c);
                        const char *names[4] = {"dq", "dk", "dv", "dmask"};
                        for (int i = 0; i < (kind == ADD_MASK ? 4 : 3); i++)
                            expect_same(names[i], a.grad[i], b.grad[i], a.n[i], tol, &c);
                        free_result(&a);
                        free_result(&b);
                        for (int i = 0; i < n_in; i++) nb_tensor_free(in[i]);
                        nb_tensor_free(R);
                        nb_rng_next(&rng);
                        cases++;
                    }
    assert_int_equal(cases, 2 * (1 + 4 + 4) * 2 * 2);
}

static void test_fused_matches_composed_float64(void **state) {
    (void)state;
    check_combinations(NB_F64, 1e-12);
}

static void test_fused_matches_composed_float32(void **state) {
    (void)state;
    check_combinations(NB_F32, 2e-5);
}

/* Self-attention: one tensor as q, k and v (and as an additive mask) gets
 * the sum of its three (four) gradients. */
static void test_aliased_inputs(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    config c = {.nd = 1, .batch = {2}, .L = 70, .S = 70, .E = 70, .Ev = 70, .causal = true, .mask_kind = ADD_MASK};
    size_t shape[3] = {2, 70, 70};
    nb_tensor *x = heap_random(&rng, NB_F64, 3, shape, -1, 1), *R = heap_random(&rng, NB_F64, 3, shape, -1, 1);
    nb_requires_grad(x, true);
    nb_tensor *in[4] = {x, x, x, x};
    for (int n_in = 3; n_in <= 4; n_in++) {
        nb_attention_opts o = {.causal = true, .mask = n_in == 4 ? x : NULL};
        run_result a = run(true, in, 1, &o, &rng, R), b = run(false, in, 1, &o, &rng, R);
        (void)in;
        expect_same("out", a.out, b.out, a.n_out, 1e-12, &c);
        expect_same("dx", a.grad[0], b.grad[0], a.n[0], 1e-12, &c);
        free_result(&a);
        free_result(&b);
    }
    nb_tensor_free(x);
    nb_tensor_free(R);
}

/* A mask broadcast along any subset of the four axes (B, H, L, S), and with
 * fewer axes than the weights, boolean or additive (whose gradient is summed
 * over the broadcast axes), causal or not: fused and composed agree. */
static void test_mask_broadcast_on_every_axis(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 53);
    const size_t full[4] = {2, 3, 70, 66};
    for (int kind = BOOL_MASK; kind <= ADD_MASK; kind++)
        for (int pattern = 0; pattern < 16; pattern++)
            for (int drop_axes = 0; drop_axes < 3; drop_axes++) {
                size_t shape[4];
                for (int d = 0; d < 4; d++) shape[d] = pattern >> d & 1 ? 1 : full[d];
                int nd = 4 - drop_axes; /* leading size-1 axes may go */
                bool droppable = true;
                for (int d = 0; d < drop_axes; d++) droppable &= shape[d] == 1;
                if (!droppable) continue;
                config c = {.nd = 2, .batch = {2, 3}, .L = 70, .S = 66, .E = 3, .Ev = 2, .causal = pattern % 3 == 0,
                            .mask_kind = kind};
                nb_tensor *in[4] = {heap_random(&rng, NB_F64, NB_SHAPE(2, 3, 70, 3), -1, 1),
                                    heap_random(&rng, NB_F64, NB_SHAPE(2, 3, 66, 3), -1, 1),
                                    heap_random(&rng, NB_F64, NB_SHAPE(2, 3, 66, 2), -1, 1),
                                    heap_random(&rng, NB_F64, nd, shape + drop_axes, -1, 1)};
                if (kind == BOOL_MASK)
                    for (size_t i = 0; i < nb_tensor_size(in[3]); i++) nb_set(in[3], i, nb_get(in[3], i) > -0.6);
                for (int i = 0; i < 4; i++) nb_requires_grad(in[i], i < 3 || kind == ADD_MASK);
                nb_tensor *R = heap_random(&rng, NB_F64, NB_SHAPE(2, 3, 70, 2), -1, 1);
                nb_attention_opts o = {.causal = c.causal, .mask = in[3], .mask_is_bool = kind == BOOL_MASK};
                run_result a = run(true, in, 4, &o, &rng, R), b = run(false, in, 4, &o, &rng, R);
                expect_same("out", a.out, b.out, a.n_out, 1e-12, &c);
                const char *names[4] = {"dq", "dk", "dv", "dmask"};
                for (int i = 0; i < (kind == ADD_MASK ? 4 : 3); i++) expect_same(names[i], a.grad[i], b.grad[i], a.n[i], 1e-12, &c);
                free_result(&a);
                free_result(&b);
                for (int i = 0; i < 4; i++) nb_tensor_free(in[i]);
                nb_tensor_free(R);
            }
}

/* ---------------------------------------------------------------- the op's own derivatives */

typedef struct {
    nb_attention_opts o;
    uint64_t seed;
    int n_in;
} check_arg;

static nb_tensor *ap_attention(nb_tape *tp, nb_tensor *const *in, const void *arg_) {
    const check_arg *arg = arg_;
    nb_rng rng;
    nb_rng_seed(&rng, arg->seed); /* the same dropout mask at every evaluation */
    nb_attention_opts o = arg->o;
    o.rng = &rng;
    if (arg->n_in > 3) o.mask = in[3];
    return nb_scaled_dot_product_attention(tp, in[0], in[1], in[2], &o);
}

/* sum(R ⊙ y) + 0.1 sum(R ⊙ y²) of the attention, for gradgradcheck */
static nb_tensor *attention_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    nb_tensor *y = ap_attention(tp, in, user);
    nb_rng rng;
    nb_rng_seed(&rng, 99);
    nb_tensor *R = nb_rand_uniform(tp, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
    return weighted_loss(tp, y, R);
}

static void test_gradcheck_and_gradgradcheck(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 8);
    for (int causal = 0; causal < 2; causal++)
        for (int kind = NO_MASK; kind <= ADD_MASK; kind++)
            for (int drop = 0; drop < 2; drop++) {
                size_t L = 3 + nb_rng_next(&rng) % 3, S = 2 + nb_rng_next(&rng) % 4, E = 2, Ev = 3;
                nb_tensor *in[4] = {random_input(&rng, NB_SHAPE(2, L, E), -1, 1, false),
                                    random_input(&rng, NB_SHAPE(2, S, E), -1, 1, false),
                                    random_input(&rng, NB_SHAPE(2, S, Ev), -1, 1, false), NULL};
                if (kind == BOOL_MASK) { /* hides (0, 1) and (L-1, 0): no row is left without a key */
                    in[3] = nb_ones(NULL, NB_F64, NB_SHAPE(L, S));
                    nb_set(in[3], 1, 0);
                    nb_set(in[3], (L - 1) * S, 0);
                }
                if (kind == ADD_MASK) in[3] = random_input(&rng, NB_SHAPE(2, 1, S), -1, 1, false);
                int n = kind == ADD_MASK ? 4 : 3; /* a boolean mask takes no gradient */
                check_arg arg = {.o = {.causal = causal, .mask = kind == BOOL_MASK ? in[3] : NULL,
                                       .mask_is_bool = kind == BOOL_MASK, .dropout_p = drop ? 0.4 : 0},
                                 .seed = 1234, .n_in = n};
                assert_op_gradcheck(ap_attention, &arg, in, n);
                char what[96]; /* gcc 12 at -O1 (the sanitizer build) sees up to 66 bytes */
                snprintf(what, sizeof what, "attention causal %d mask %d dropout %d", causal, kind, drop);
                assert_gradgradcheck(attention_loss, in, n, &arg, what);
                for (int i = 0; i < 4; i++) nb_tensor_free(in[i]);
            }
}

/* ---------------------------------------------------------------- threads, edges, memory */

/* One thread or two: the same bits, forward and backward. */
static void test_threads_give_the_same_bits(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 13);
    size_t L = 150, S = 133, E = 16, Ev = 24;
    nb_tensor *in[3] = {heap_random(&rng, NB_F32, NB_SHAPE(3, L, E), -2, 2),
                        heap_random(&rng, NB_F32, NB_SHAPE(3, S, E), -2, 2),
                        heap_random(&rng, NB_F32, NB_SHAPE(3, S, Ev), -1, 1)};
    for (int i = 0; i < 3; i++) nb_requires_grad(in[i], true);
    nb_tensor *R = heap_random(&rng, NB_F32, NB_SHAPE(3, L, Ev), -1, 1);
    nb_attention_opts o = {.causal = true, .dropout_p = 0.2};
    run_result r[2];
    for (int t = 0; t < 2; t++) {
        assert_int_equal(nb_set_threads(t + 1), NB_OK);
        r[t] = run(true, in, 3, &o, &rng, R);
    }
    assert_int_equal(nb_set_threads(1), NB_OK);
    assert_memory_equal(r[0].out, r[1].out, r[0].n_out * sizeof(double));
    for (int i = 0; i < 3; i++) assert_memory_equal(r[0].grad[i], r[1].grad[i], r[0].n[i] * sizeof(double));
    for (int t = 0; t < 2; t++) free_result(&r[t]);
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    nb_tensor_free(R);
}

/* A query that sees no key gets NaN, as the composed softmax of −inf
 * everywhere gives (PyTorch too); the other rows are untouched.  (Its
 * gradients are compared with the composed ones in the random cases.) */
static void test_rows_without_keys(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tensor *q = heap_random(&rng, NB_F64, NB_SHAPE(3, 2), -1, 1), *k = heap_random(&rng, NB_F64, NB_SHAPE(4, 2), -1, 1);
    nb_tensor *v = heap_random(&rng, NB_F64, NB_SHAPE(4, 2), -1, 1);
    nb_tensor *mask = nb_ones(NULL, NB_F64, NB_SHAPE(3, 4));
    for (size_t j = 0; j < 4; j++) nb_set(mask, 4 + j, 0); /* row 1 sees nothing */
    nb_attention_opts o = {.mask = mask, .mask_is_bool = true};
    nb_tensor *y = nb_scaled_dot_product_attention(tp, q, k, v, &o), *ref = composed(tp, q, k, v, &o, &rng);
    assert_ok(y);
    for (size_t i = 0; i < 6; i++) {
        assert_true(isnan(nb_get(y, i)) == (i / 2 == 1));
        if (i / 2 != 1) assert_close(nb_get(y, i), nb_get(ref, i), 1e-14);
    }
    nb_tensor *all[] = {q, k, v, mask};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) nb_tensor_free(all[i]);
    nb_tape_free(tp);
}

/* Rows that see no key, under create_graph too: their NaN weights stay in
 * their own row of the output (and spread to every dv, as the composed
 * (P ⊙ M)ᵀ G does), but the dS of a hidden key is 0, so dq and dk stay
 * finite.  The create_graph backward made dS = P ⊙ (dP − D) without
 * zeroing the hidden keys, and the NaN row reached every key's dk.  By a
 * boolean mask (row 1 of both heads, and all of rows 64..69 to cross a
 * block) and by causality with the mask (row 3 sees only later keys). */
static void test_rows_without_keys_under_create_graph(void **state) {
    (void)state;
    for (int dt = NB_F32; dt <= NB_F64; dt++)
        for (int causal = 0; causal < 2; causal++) {
            nb_rng rng;
            nb_rng_seed(&rng, 31);
            config c = {.nd = 1, .batch = {2}, .L = 70, .S = 70, .E = 3, .Ev = 2, .causal = causal,
                        .mask_kind = BOOL_MASK};
            nb_tensor *in[3] = {heap_random(&rng, dt, NB_SHAPE(2, 70, 3), -1, 1),
                                heap_random(&rng, dt, NB_SHAPE(2, 70, 3), -1, 1),
                                heap_random(&rng, dt, NB_SHAPE(2, 70, 2), -1, 1)};
            for (int i = 0; i < 3; i++) nb_requires_grad(in[i], true);
            nb_tensor *R = heap_random(&rng, dt, NB_SHAPE(2, 70, 2), -1, 1);
            nb_tensor *mask = nb_ones(NULL, dt, NB_SHAPE(70, 70));
            for (size_t j = 0; j < 70; j++) nb_set(mask, 70 + j, 0);
            for (size_t i = 64; i < 70; i++)
                for (size_t j = 0; j < 70; j++) nb_set(mask, i * 70 + j, 0);
            for (size_t j = 0; j <= 3; j++) nb_set(mask, 3 * 70 + j, 0);
            nb_attention_opts o = {.causal = causal, .mask = mask, .mask_is_bool = true};
            expect_all_agree(in, &o, R, &c, dt == NB_F64 ? 1e-12 : 2e-5);
            nb_tape *tp = nb_tape_new();
            nb_tensor *g[3];
            assert_int_equal(nb_grad(nb_sum(tp, nb_mul(tp, nb_scaled_dot_product_attention(tp, in[0], in[1], in[2], &o), R)),
                                     in, 3, g, true), NB_OK);
            for (int i = 0; i < 2; i++)
                for (size_t e = 0; e < nb_tensor_size(g[i]); e++) assert_true(isfinite(nb_get(g[i], e)));
            assert_true(isnan(nb_get(g[2], 0)));
            nb_tape_free(tp);
            for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
            nb_tensor_free(R);
            nb_tensor_free(mask);
        }
}

/* Causal attention skips the blocks of keys every query of a block is
 * before, but only where that gives what the composed ops give: a hidden
 * key's weight is 0, and 0 · inf = NaN in P V (an inf in a hidden value),
 * dS K (in a hidden key) and Pᵀ G, dSᵀ Q (in the block's upstream gradient
 * or query).  Each such value, placed after every query of the first block
 * (or in it), against the composed ops, which PyTorch's composed attention
 * matches (a NaN there); and the same values hidden by a boolean mask, and
 * by causality with dropout. */
static void test_causal_hidden_non_finite_values(void **state) {
    (void)state;
    enum { IN_V, IN_K, IN_Q, IN_G };
    const double bad[] = {INFINITY, NAN, -INFINITY};
    for (int dt = NB_F32; dt <= NB_F64; dt++)
        for (int where = IN_V; where <= IN_G; where++)
            for (int b = 0; b < 3; b++)
                for (int hide = 0; hide < 3; hide++) { /* causality; a boolean mask; causality and dropout */
                    nb_rng rng;
                    nb_rng_seed(&rng, 37);
                    config c = {.nd = 1, .batch = {2}, .L = 130, .S = 150, .E = 3, .Ev = 2, .causal = hide != 1,
                                .mask_kind = hide == 1 ? BOOL_MASK : NO_MASK, .dropout_p = hide == 2 ? 0.3 : 0};
                    nb_tensor *mask = NULL;
                    if (hide == 1) { /* keys 100 and 140 hidden from every query, 1 in 4 others at random */
                        mask = make_mask(&rng, &(config){.L = 130, .S = 150, .mask_kind = BOOL_MASK, .mask_form = 1}, dt);
                        for (size_t i = 0; i < 130; i++) nb_set(mask, i * 150 + 100, 0), nb_set(mask, i * 150 + 140, 0);
                    }
                    nb_tensor *in[3] = {heap_random(&rng, dt, NB_SHAPE(2, 130, 3), -1, 1),
                                        heap_random(&rng, dt, NB_SHAPE(2, 150, 3), -1, 1),
                                        heap_random(&rng, dt, NB_SHAPE(2, 150, 2), -1, 1)};
                    for (int i = 0; i < 3; i++) nb_requires_grad(in[i], true);
                    nb_tensor *R = heap_random(&rng, dt, NB_SHAPE(2, 130, 2), -1, 1);
                    /* head 1: key 100 (hidden from queries 0..63), key 140
                     * (from all), query 5 or its upstream gradient */
                    if (where == IN_V) nb_set(in[2], (150 + 100) * 2 + 1, bad[b]);
                    if (where == IN_K) nb_set(in[1], (150 + 140) * 3 + 2, bad[b]);
                    if (where == IN_Q) nb_set(in[0], (130 + 5) * 3, bad[b]);
                    if (where == IN_G) nb_set(R, (130 + 5) * 2 + 1, bad[b]);
                    nb_attention_opts o = {.causal = c.causal, .mask = mask, .mask_is_bool = true, .dropout_p = c.dropout_p};
                    expect_all_agree(in, &o, R, &c, dt == NB_F64 ? 1e-12 : 2e-5);
                    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
                    nb_tensor_free(R);
                    nb_tensor_free(mask);
                }
}

/* An inf or NaN in the upstream gradient G: each dP_ij of its row is ±inf
 * or NaN, and the composed Σ_j dP_ij P_ij of the softmax's backward is NaN
 * or inf − inf, so the composed dS is NaN at every key of the row (0 at
 * the hidden ones).  The fused backward took that sum as G·O, a single
 * ±inf, and gave ±inf in dk where the composed ops (and PyTorch's) give
 * NaN.  Without and with causality and a boolean mask, in one row or two. */
static void test_infinite_upstream_gradient(void **state) {
    (void)state;
    const double bad[] = {INFINITY, -INFINITY, NAN};
    for (int dt = NB_F32; dt <= NB_F64; dt++)
        for (int form = 0; form < 3; form++)
            for (int b = 0; b < 3; b++) {
                nb_rng rng;
                nb_rng_seed(&rng, 43 + (uint64_t)form);
                config c = {.L = 70, .S = 67, .E = 3, .Ev = 2, .causal = form == 1, .mask_kind = form == 2 ? BOOL_MASK : NO_MASK};
                nb_tensor *in[3] = {heap_random(&rng, dt, NB_SHAPE(70, 3), -1, 1), heap_random(&rng, dt, NB_SHAPE(67, 3), -1, 1),
                                    heap_random(&rng, dt, NB_SHAPE(67, 2), -1, 1)};
                for (int i = 0; i < 3; i++) nb_requires_grad(in[i], true);
                nb_tensor *R = heap_random(&rng, dt, NB_SHAPE(70, 2), -1, 1), *mask = NULL;
                nb_set(R, 5 * 2 + 1, bad[b]);
                if (b == 0) nb_set(R, 66 * 2, bad[b]);
                if (form == 2) mask = make_mask(&rng, &(config){.L = 70, .S = 67, .mask_kind = BOOL_MASK, .mask_form = 1}, dt);
                nb_attention_opts o = {.causal = form == 1, .mask = mask, .mask_is_bool = form == 2};
                expect_all_agree(in, &o, R, &c, dt == NB_F64 ? 1e-12 : 2e-5);
                for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
                nb_tensor_free(R);
                nb_tensor_free(mask);
            }
}

/* Out of memory, the nth allocation failing for each n in turn: an error
 * every time; where the ops of create_graph's backward ran out, the message
 * says it was attention's and of which q and k (it named a matmul or
 * nb_full), and nb_attention_dropout_mask names itself. */
static void test_out_of_memory_names_attention(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 47);
    /* (L, S) matrices beyond the tape's first chunk of memory, so that they
     * are allocations of their own */
    nb_tensor *in[3] = {heap_random(&rng, NB_F64, NB_SHAPE(2, 300, 1), -1, 1), heap_random(&rng, NB_F64, NB_SHAPE(2, 290, 1), -1, 1),
                        heap_random(&rng, NB_F64, NB_SHAPE(2, 290, 2), -1, 1)};
    for (int i = 0; i < 3; i++) nb_requires_grad(in[i], true);
    nb_attention_opts o = {.causal = true, .dropout_p = 0.5, .rng = &rng};
    for (int graph = 0; graph < 2; graph++) {
        int named = 0, failures = 0;
        for (uint64_t n = 1;; n++) {
            nb_tape *tp = nb_tape_new();
            nb_tensor *y = nb_scaled_dot_product_attention(tp, in[0], in[1], in[2], &o), *g[3];
            nb_tensor *loss = nb_sum(tp, y);
            nb_test_fail_allocation(n);
            nb_status st = graph ? nb_grad(loss, in, 3, g, true) : nb_tensor_status(nb_attention_dropout_mask(tp, in[0], in[1], 0.5, &rng));
            bool failed = nb_test_allocation_failed();
            nb_test_fail_allocation(0);
            nb_tape_free(tp);
            if (!failed) {
                assert_int_equal(st, NB_OK);
                break;
            }
            failures++;
            assert_int_equal(st, NB_ERR_NOMEM);
            const char *msg = nb_last_error();
            if (graph && strstr(msg, "attention: out of memory for create_graph's backward")) {
                assert_message_has(msg, "q (2, 300, 1)", "k (2, 290, 1)", "(..., 300, 290) weights");
                named++;
            }
            if (!graph) assert_message_has(msg, "attention_dropout_mask", "(2, 300, 290) mask", "q (2, 300, 1)", "k (2, 290, 1)");
        }
        assert_true(failures > 0);
        assert_true(!graph || named > 0);
    }
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
}

/* The weights are never kept: forward and backward at L = S = 2048 take far
 * less than the 16 MiB of one head's (L, S) float32 matrix, and the
 * composed attention takes more than that. */
static void test_memory_grows_with_l_not_l_times_s(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 17);
    size_t L = 2048, E = 8;
    nb_tensor *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = heap_random(&rng, NB_F32, NB_SHAPE(L, E), -1, 1);
        nb_requires_grad(in[i], true);
    }
    size_t used[2];
    for (int fused = 0; fused < 2; fused++) {
        nb_tape *tp = nb_tape_new();
        size_t before = nb_tape_memory(tp);
        nb_attention_opts o = {.causal = true};
        nb_tensor *y = fused ? nb_scaled_dot_product_attention(tp, in[0], in[1], in[2], &o)
                             : composed(tp, in[0], in[1], in[2], &o, &rng);
        assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
        used[fused] = nb_tape_memory(tp) - before;
        nb_tape_free(tp);
    }
    size_t weights = L * L * sizeof(float);
    assert_true(used[1] < weights / 8);
    assert_true(used[0] > weights);
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
}

/* Dropout: about p of the weights dropped, the same ones for the same seed,
 * none in evaluation (where no generator is needed or drawn from). */
static void test_dropout_rate_seed_and_evaluation(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_rng rng, again;
    nb_rng_seed(&rng, 21);
    nb_tensor *q = heap_random(&rng, NB_F64, NB_SHAPE(2, 100, 4), -1, 1);
    nb_tensor *k = heap_random(&rng, NB_F64, NB_SHAPE(2, 90, 4), -1, 1);
    again = rng;
    nb_tensor *m = nb_attention_dropout_mask(tp, q, k, 0.25, &rng);
    assert_ok(m);
    size_t dropped = 0;
    for (size_t i = 0; i < nb_tensor_size(m); i++) {
        double x = nb_get(m, i);
        assert_true(x == 0 || x == 1 / 0.75);
        dropped += x == 0;
    }
    double rate = (double)dropped / (double)nb_tensor_size(m); /* 18,000 draws: sd 0.0032 */
    assert_true(fabs(rate - 0.25) < 0.015);
    nb_tensor *m2 = nb_attention_dropout_mask(tp, q, k, 0.25, &again);
    for (size_t i = 0; i < nb_tensor_size(m); i++) assert_true(nb_get(m, i) == nb_get(m2, i));
    /* evaluation: the attention without dropout, and rng untouched */
    nb_tensor *v = heap_random(&rng, NB_F64, NB_SHAPE(2, 90, 3), -1, 1);
    nb_tape_set_training(tp, false);
    nb_rng before = rng;
    nb_attention_opts drop = {.dropout_p = 0.5, .rng = &rng}, none = {0};
    nb_tensor *a = nb_scaled_dot_product_attention(tp, q, k, v, &drop), *b = nb_scaled_dot_product_attention(tp, q, k, v, &none);
    for (size_t i = 0; i < nb_tensor_size(a); i++) assert_true(nb_get(a, i) == nb_get(b, i));
    assert_memory_equal(&before, &rng, sizeof rng);
    drop.rng = NULL;
    assert_ok(nb_scaled_dot_product_attention(tp, q, k, v, &drop));
    nb_tensor_free(q);
    nb_tensor_free(k);
    nb_tensor_free(v);
    nb_tape_free(tp);
}

/* At p = 0 the attention draws nothing from its generator (and needs
 * none), so nb_attention_dropout_mask, which makes the attention's draw,
 * gives ones without drawing, and takes a NULL generator (it drew one value
 * and refused NULL, so a generator shared with the composed attention
 * drifted). */
static void test_dropout_mask_of_p_zero_draws_nothing(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_rng rng, before;
    nb_rng_seed(&rng, 59);
    nb_tensor *q = heap_random(&rng, NB_F32, NB_SHAPE(2, 3, 4), -1, 1), *k = heap_random(&rng, NB_F32, NB_SHAPE(2, 5, 4), -1, 1);
    nb_tensor *v = heap_random(&rng, NB_F32, NB_SHAPE(2, 5, 2), -1, 1);
    before = rng;
    nb_attention_opts o = {.dropout_p = 0, .rng = &rng};
    assert_ok(nb_scaled_dot_product_attention(tp, q, k, v, &o));
    assert_memory_equal(&before, &rng, sizeof rng);
    nb_tensor *m = nb_attention_dropout_mask(tp, q, k, 0, &rng);
    assert_memory_equal(&before, &rng, sizeof rng);
    for (size_t i = 0; i < nb_tensor_size(m); i++) assert_true(nb_get(m, i) == 1);
    assert_int_equal(nb_tensor_size(m), 2 * 3 * 5);
    assert_ok(nb_attention_dropout_mask(tp, q, k, 0, NULL));
    nb_tensor_free(q);
    nb_tensor_free(k);
    nb_tensor_free(v);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_matches_composed_float64),
        cmocka_unit_test(test_fused_matches_composed_float32),
        cmocka_unit_test(test_aliased_inputs),
        cmocka_unit_test(test_mask_broadcast_on_every_axis),
        cmocka_unit_test(test_gradcheck_and_gradgradcheck),
        cmocka_unit_test(test_threads_give_the_same_bits),
        cmocka_unit_test(test_rows_without_keys),
        cmocka_unit_test(test_rows_without_keys_under_create_graph),
        cmocka_unit_test(test_causal_hidden_non_finite_values),
        cmocka_unit_test(test_infinite_upstream_gradient),
        cmocka_unit_test(test_out_of_memory_names_attention),
        cmocka_unit_test(test_memory_grows_with_l_not_l_times_s),
        cmocka_unit_test(test_dropout_rate_seed_and_evaluation),
        cmocka_unit_test(test_dropout_mask_of_p_zero_draws_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
