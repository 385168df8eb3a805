/*
 * nabla's own threads (nb_set_threads): a network big enough for every
 * parallel path (split products, element-wise ranges, bias fills and sums)
 * gives the same loss, gradients and updates, bit for bit, on 1, 2 and 3
 * threads, and so do products of random shapes and a small CNN; the pool can be resized and
 * stopped; bad counts are refused; many tiny jobs on a pool resized between
 * them (and from another thread) run every item once; resizing from inside
 * a part is refused; a child forked while another thread resizes the pool
 * runs its jobs.
 *
 * OpenBLAS picks its kernels by CPU, and whether a product split into
 * blocks keeps its bits depends on them, so the bitwise tests run again
 * under every OpenBLAS core type this CPU can execute (each in a child
 * process with OPENBLAS_CORETYPE set: OpenBLAS reads it at load time).
 */
#include "support.h"
#include "internal.h"
#include "nabla_train.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

enum { BATCH = 256, IN = 300, HIDDEN = 200, OUT = 10 };

typedef struct {
    double loss;
    double *grads[4];   /* W1, b1, W2, b2 after nb_backward */
    double *updated[4]; /* the same parameters after nb_optimizer_backward_step */
    double *adam[4];    /* and after a further Adam step (split for W1) */
} outcome;

static double *copy_of(const nb_tensor *t) {
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    nb_to_f64(t, v);
    return v;
}

static double *grad_of(nb_tensor *t) {
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    for (size_t i = 0; i < nb_tensor_size(t); i++) v[i] = nb_grad_get(t, i);
    return v;
}

/* Two layers, sigmoid then relu-free logits, softmax cross-entropy; the
 * transposed product (dX = G W^T) is split by columns, the others by rows. */
static outcome run(nb_dtype dt, int threads) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    assert_int_equal(nb_get_threads(), threads);
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_params *ps = nb_params_new();
    nb_tensor *p[4] = {
        nb_params_create(ps, "W1", dt, NB_SHAPE(IN, HIDDEN), NB_INIT_GLOROT_UNIFORM, IN, HIDDEN, &rng),
        nb_params_create(ps, "b1", dt, NB_SHAPE(HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 1, &rng),
        nb_params_create(ps, "W2", dt, NB_SHAPE(HIDDEN, OUT), NB_INIT_GLOROT_UNIFORM, HIDDEN, OUT, &rng),
        nb_params_create(ps, "b2", dt, NB_SHAPE(OUT), NB_INIT_ZEROS, HIDDEN, OUT, &rng),
    };
    nb_tensor *X = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(BATCH, IN), 0, 1);
    nb_requires_grad(X, true); /* so that dX = G W1^T runs too */
    nb_tensor *y = nb_zeros(NULL, dt, NB_SHAPE(BATCH));
    for (size_t i = 0; i < BATCH; i++) nb_set(y, i, (double)(i % OUT));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    o.lr = 0.5;
    nb_optimizer *sgd = nb_optimizer_new(ps, &o);
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    nb_optimizer *adam = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    outcome out;
    for (int pass = 0; pass < 3; pass++) {
        nb_tape_reset(tp);
        nb_params_zero_grad(ps);
        nb_tensor *h = nb_sigmoid(tp, nb_linear(tp, X, p[0], p[1]));
        nb_tensor *loss = nb_softmax_cross_entropy(tp, nb_linear(tp, h, p[2], p[3]), y, 1);
        if (pass == 0) {
            assert_int_equal(nb_backward(loss), NB_OK);
            out.loss = nb_item(loss);
            for (int k = 0; k < 4; k++) out.grads[k] = grad_of(p[k]);
        } else if (pass == 1) {
            assert_int_equal(nb_optimizer_backward_step(sgd, loss), NB_OK);
            for (int k = 0; k < 4; k++) out.updated[k] = copy_of(p[k]);
        } else {
            assert_int_equal(nb_backward(loss), NB_OK);
            assert_int_equal(nb_optimizer_step(adam), NB_OK);
            for (int k = 0; k < 4; k++) out.adam[k] = copy_of(p[k]);
        }
    }
    nb_tape_free(tp);
    nb_optimizer_free(sgd);
    nb_optimizer_free(adam);
    nb_params_free(ps);
    nb_tensor_free(X);
    nb_tensor_free(y);
    return out;
}

static void free_outcome(outcome *o) {
    for (int k = 0; k < 4; k++) {
        free(o->grads[k]);
        free(o->updated[k]);
        free(o->adam[k]);
    }
}

static const size_t sizes[4] = {IN * HIDDEN, HIDDEN, HIDDEN * OUT, OUT};

/* Elements of the four parameters that differ in any bit. */
static size_t differing(double *const *a, double *const *b) {
    size_t count = 0;
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < sizes[k]; i++) count += memcmp(&a[k][i], &b[k][i], sizeof(double)) != 0;
    return count;
}

static void test_results_do_not_depend_on_threads(void **state) {
    (void)state;
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        outcome one = run(dt, 1);
        for (int threads = 2; threads <= 3; threads++) {
            uint64_t split_before = nb_parallel_jobs();
            outcome many = run(dt, threads);
            /* Split in each of the three passes: the first layer's bias fill,
             * product, sigmoid forward and backward, dW1, dX and bias sum (the
             * second layer's, 10 wide, is too small to split); and Adam's
             * update of W1 (60,000 values). */
            assert_int_equal(nb_parallel_jobs() - split_before, 3 * 7 + 1);
            size_t dg = differing(one.grads, many.grads), du = differing(one.updated, many.updated);
            size_t da = differing(one.adam, many.adam);
            print_message("%s, %d threads (BLAS core %s): loss %.9g vs %.9g; elements differing: gradients %zu, "
                          "SGD updates %zu, Adam updates %zu\n",
                          dt == NB_F32 ? "float32" : "float64", threads, openblas_get_corename(), many.loss,
                          one.loss, dg, du, da);
            assert_true(memcmp(&many.loss, &one.loss, sizeof one.loss) == 0);
            assert_int_equal(dg, 0);
            assert_int_equal(du, 0);
            assert_int_equal(da, 0);
            free_outcome(&many);
        }
        free_outcome(&one);
    }
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* Products of random shapes (both dtypes, every transpose, with and without
 * a bias, an operand used twice so that its gradient accumulates through
 * beta = 1; linear's x with leading axes, (stack, m, k), and its bias's
 * gradient), forward and backward, on 1, 2 and 3 threads: the same bits. */
typedef struct {
    size_t m, n, k;
    bool ta, tb, bias;
    size_t stack; /* 0: A a matrix; else A (stack, m, k) in a linear */
} product_case;

/* Runs the case; returns the output and both gradients as doubles. */
static double *run_product(const product_case *c, nb_dtype dt, int threads, uint64_t seed, size_t *count) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_tensor *A = c->stack ? nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(c->stack, c->m, c->k), -1, 1)
                            : nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(c->ta ? c->k : c->m, c->ta ? c->m : c->k), -1, 1);
    nb_tensor *B = nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(c->tb ? c->n : c->k, c->tb ? c->k : c->n), -1, 1);
    nb_tensor *bias = nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(c->n), -1, 1);
    nb_tensor *R = c->stack ? nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(c->stack, c->m, c->n), -1, 1)
                            : nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(c->m, c->n), -1, 1);
    nb_requires_grad(A, true);
    nb_requires_grad(B, true);
    nb_requires_grad(bias, c->stack > 0);
    nb_tape *tp = nb_tape_new();
    nb_tensor *y = c->bias ? nb_linear_t(tp, A, B, bias, c->ta, c->tb) : nb_matmul_t(tp, A, B, c->ta, c->tb);
    /* A used a second time: its gradient gets a second product added */
    nb_tensor *again = nb_matmul_t(tp, A, B, c->ta, c->tb);
    nb_tensor *loss = nb_sum(tp, nb_mul(tp, nb_add(tp, y, nb_sigmoid(tp, again)), R));
    assert_int_equal(nb_backward(loss), NB_OK);
    size_t sy = nb_tensor_size(y), sa = nb_tensor_size(A), sb = nb_tensor_size(B), sc = c->stack ? c->n : 0;
    double *v = malloc((sy + sa + sb + sc) * sizeof *v);
    nb_to_f64(y, v);
    for (size_t i = 0; i < sa; i++) v[sy + i] = nb_grad_get(A, i);
    for (size_t i = 0; i < sb; i++) v[sy + sa + i] = nb_grad_get(B, i);
    for (size_t i = 0; i < sc; i++) v[sy + sa + sb + i] = nb_grad_get(bias, i);
    *count = sy + sa + sb + sc;
    nb_tape_free(tp);
    nb_tensor_free(A);
    nb_tensor_free(B);
    nb_tensor_free(bias);
    nb_tensor_free(R);
    return v;
}

static void test_products_of_random_shapes_do_not_depend_on_threads(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 11);
    uint64_t splits_before = nb_parallel_jobs();
    for (int trial = 0; trial < 32; trial++) {
        product_case c = {24 + nb_rng_next(&rng) % 500, 1 + nb_rng_next(&rng) % 300, 30 + nb_rng_next(&rng) % 400,
                          nb_rng_next(&rng) & 1, nb_rng_next(&rng) & 1, nb_rng_next(&rng) & 1, 0};
        if (trial >= 24) /* linear of a (stack, m, k) x: rows m·stack, odd counts too */
            c.ta = false, c.bias = true, c.stack = 1 + nb_rng_next(&rng) % 3, c.m = 7 + nb_rng_next(&rng) % 200;
        for (int dt = NB_F32; dt <= NB_F64; dt++) {
            size_t n1, n;
            double *one = run_product(&c, (nb_dtype)dt, 1, (uint64_t)trial, &n1);
            for (int threads = 2; threads <= 3; threads++) {
                double *many = run_product(&c, (nb_dtype)dt, threads, (uint64_t)trial, &n);
                assert_int_equal(n, n1);
                size_t differ = 0;
                for (size_t i = 0; i < n; i++) differ += memcmp(&one[i], &many[i], sizeof(double)) != 0;
                if (differ)
                    print_error("%s (%zu, %zu, %zu) stack %zu%s%s%s on %d threads, BLAS core %s: %zu of %zu values differ\n",
                                dt == NB_F32 ? "float32" : "float64", c.m, c.n, c.k, c.stack, c.ta ? " A transposed" : "",
                                c.tb ? " B transposed" : "", c.bias ? " with bias" : "", threads,
                                openblas_get_corename(), differ, n);
                assert_int_equal(differ, 0);
                free(many);
            }
            free(one);
        }
    }
    /* the shapes were large enough for products to be split */
    assert_true(nb_parallel_jobs() - splits_before > 24);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* A small CNN (a padded 3x3 convolution, relu, max pooling, a 1x1
 * convolution, batch norm, average pooling, then a transposed convolution
 * and a bilinear upsampling, as a decoder's), forward and backward: the
 * output and every gradient the same bits on 1, 2 and 3 threads, for a
 * batch smaller and one larger than the weight gradient's chunk count. */
static double *run_cnn(nb_dtype dt, int threads, size_t batch, size_t *count) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_tensor *in[8] = {
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(batch, 3, 14, 14), -1, 1),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(24, 3, 3, 3), -0.5, 0.5),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(24), -0.1, 0.1),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(8, 24, 1, 1), -0.5, 0.5),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(8), 0.5, 1.5),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(8), -0.5, 0.5),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(8, 4, 3, 3), -0.5, 0.5),
        nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(4), -0.1, 0.1),
    };
    for (int k = 0; k < 8; k++) nb_requires_grad(in[k], true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *h = nb_relu(tp, nb_conv2d(tp, in[0], in[1], in[2], &(nb_conv_opts){.padding = {1, 1}}));
    h = nb_max_pool2d(tp, h, &(nb_pool_opts){.kernel = {2, 2}});
    h = nb_batch_norm(tp, nb_conv2d(tp, h, in[3], NULL, NULL), in[4], in[5], NULL, NULL, 0.1, 1e-5);
    h = nb_avg_pool2d(tp, nb_tanh(tp, h), &(nb_pool_opts){.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}});
    h = nb_conv_transpose2d(tp, h, in[6], in[7], &(nb_conv_transpose_opts){.stride = {2, 2}, .output_padding = {1, 0}});
    h = nb_upsample_bilinear2d(tp, h, &(nb_upsample_opts){.scale = {1.5, 1.5}});
    assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, h))), NB_OK);
    *count = nb_tensor_size(h);
    for (int k = 0; k < 8; k++) *count += nb_tensor_size(in[k]);
    double *v = malloc(*count * sizeof *v), *at = v + nb_tensor_size(h);
    nb_to_f64(h, v);
    for (int k = 0; k < 8; k++) {
        for (size_t i = 0; i < nb_tensor_size(in[k]); i++) at[i] = nb_grad_get(in[k], i);
        at += nb_tensor_size(in[k]);
        nb_tensor_free(in[k]);
    }
    nb_tape_free(tp);
    return v;
}

static void test_convolutions_do_not_depend_on_threads(void **state) {
    (void)state;
    uint64_t splits_before = nb_parallel_jobs();
    const size_t batches[2] = {5, 19};
    for (int dt = NB_F32; dt <= NB_F64; dt++)
        for (int b = 0; b < 2; b++) {
            size_t n1, n;
            double *one = run_cnn((nb_dtype)dt, 1, batches[b], &n1);
            for (int threads = 2; threads <= 3; threads++) {
                double *many = run_cnn((nb_dtype)dt, threads, batches[b], &n);
                assert_int_equal(n, n1);
                size_t differ = 0;
                for (size_t i = 0; i < n; i++) differ += memcmp(&one[i], &many[i], sizeof(double)) != 0;
                if (differ)
                    print_error("CNN, %s, batch %zu, %d threads, BLAS core %s: %zu of %zu values differ\n",
                                dt == NB_F32 ? "float32" : "float64", batches[b], threads, openblas_get_corename(),
                                differ, n);
                assert_int_equal(differ, 0);
                free(many);
            }
            free(one);
        }
    assert_true(nb_parallel_jobs() - splits_before > 8); /* the convolutions were split */
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* The OpenBLAS core types this CPU can execute, each with what it needs. */
static bool cpu_can_run(const char *core) {
    __builtin_cpu_init();
    if (!strcmp(core, "Cooperlake")) return __builtin_cpu_supports("avx512bf16");
    if (!strcmp(core, "SkylakeX"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (!strcmp(core, "Haswell") || !strcmp(core, "Zen"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(core, "Sandybridge")) return __builtin_cpu_supports("avx");
    if (!strcmp(core, "Nehalem")) return __builtin_cpu_supports("sse4.2");
    return !strcmp(core, "Prescott"); /* SSE3: every x86-64 CPU OpenBLAS still runs on */
}

/* Runs this program's bitwise tests again in a child under each core type
 * (OpenBLAS chooses its kernels when it loads, so it takes a new process). */
static void test_on_every_blas_core_type(void **state) {
    (void)state;
    static const char *const cores[] = {"SkylakeX", "Cooperlake", "Haswell", "Zen", "Sandybridge", "Nehalem",
                                        "Prescott"};
    if (getenv("NB_TEST_ONE_BLAS_CORE")) { /* the ThreadSanitizer run: the plain runs cover the cores */
        print_message("NB_TEST_ONE_BLAS_CORE is set: other BLAS cores not tried\n");
        return;
    }
    int ran = 0;
    for (size_t i = 0; i < sizeof cores / sizeof *cores; i++) {
        if (!cpu_can_run(cores[i])) {
            print_message("BLAS core %s: this CPU cannot run it, skipped\n", cores[i]);
            continue;
        }
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
            setenv("OPENBLAS_CORETYPE", cores[i], 1);
            setenv("NB_TEST_BITWISE_ONLY", "1", 1);
            execl("/proc/self/exe", "test_threads", (char *)NULL);
            _exit(127);
        }
        int status;
        assert_int_equal(waitpid(child, &status, 0), child);
        bool passed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        print_message("BLAS core %s: %s\n", cores[i], passed ? "bitwise equal on 1, 2 and 3 threads" : "FAILED");
        assert_true(passed);
        ran++;
    }
    assert_true(ran >= 1);
}

/* Three threads, each training on its own tape at the same time (while the
 * main thread does too): each gets what it gets alone.  Run under
 * ThreadSanitizer by `make check-static`, which reports any data race
 * between them (every tape tensor once wrote a shared global byte). */
typedef struct {
    uint64_t seed;
    double loss, grad;
} tape_job;

static void *train_on_own_tape(void *arg) {
    tape_job *j = arg;
    nb_rng rng;
    nb_rng_seed(&rng, j->seed);
    nb_tensor *W = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(16, 8), 0, 0.3);
    nb_tensor *X = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(32, 16), 0, 1);
    nb_requires_grad(W, true);
    nb_tape *tp = nb_tape_new();
    for (int step = 0; step < 50; step++) {
        nb_tape_reset(tp);
        nb_zero_grad(W);
        nb_tensor *h = nb_tanh(tp, nb_matmul(tp, X, W));
        nb_tensor_set_name(h, "h");
        nb_tensor *loss = nb_mean(tp, nb_square(tp, h));
        if (nb_backward(loss) != NB_OK) break;
        j->loss = nb_item(loss);
        j->grad = nb_grad_get(W, 0);
        double *w = nb_tensor_data(W); /* a plain SGD step */
        for (size_t i = 0; i < nb_tensor_size(W); i++) w[i] -= 0.1 * nb_grad_get(W, i);
    }
    nb_tape_free(tp);
    nb_tensor_free(W);
    nb_tensor_free(X);
    return NULL;
}

static void test_tapes_on_separate_threads(void **state) {
    (void)state;
    tape_job alone[4], together[4];
    for (int k = 0; k < 4; k++) {
        alone[k] = (tape_job){(uint64_t)k + 1, NAN, NAN};
        train_on_own_tape(&alone[k]);
        together[k] = (tape_job){(uint64_t)k + 1, NAN, NAN};
    }
    pthread_t threads[3];
    for (int k = 0; k < 3; k++) assert_int_equal(pthread_create(&threads[k], NULL, train_on_own_tape, &together[k]), 0);
    train_on_own_tape(&together[3]);
    for (int k = 0; k < 3; k++) assert_int_equal(pthread_join(threads[k], NULL), 0);
    for (int k = 0; k < 4; k++) {
        assert_true(isfinite(alone[k].loss));
        assert_true(together[k].loss == alone[k].loss);
        assert_true(together[k].grad == alone[k].grad);
    }
}

/* A child made by fork() runs its ops on its own thread, without waiting
 * for workers it does not have. */
static void test_fork_child_runs_serially(void **state) {
    (void)state;
    assert_int_equal(nb_set_threads(2), NB_OK);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* Without the fork handler this would wait for ever for a worker the
         * child does not have; the alarm turns that into a failure. */
        alarm(20);
        nb_tape *tp = nb_tape_new();
        nb_tensor *a = nb_ones(tp, NB_F32, NB_SHAPE(256, 300)), *b = nb_ones(tp, NB_F32, NB_SHAPE(300, 200));
        nb_tensor *y = nb_sum(tp, nb_sigmoid(tp, nb_matmul(tp, a, b)));
        int ok = nb_get_threads() == 1 && fabs(nb_item(y) - 256 * 200 / (1 + exp(-300.0))) < 1;
        nb_tape_free(tp);
        _exit(ok ? 0 : 3);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

static void test_bad_thread_counts(void **state) {
    (void)state;
    assert_int_equal(nb_set_threads(0), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "nb_set_threads", "0 threads", "1 to 64");
    assert_int_equal(nb_set_threads(65), NB_ERR_ARG);
    assert_int_equal(nb_get_threads(), 1);
    /* Resizing a running pool, then back to one thread, stops cleanly. */
    assert_int_equal(nb_set_threads(4), NB_OK);
    assert_int_equal(nb_set_threads(2), NB_OK);
    assert_int_equal(nb_get_threads(), 2);
    assert_int_equal(nb_set_threads(1), NB_OK);
    assert_int_equal(nb_get_threads(), 1);
}

/* The pool under stress: many tiny jobs (more parts than threads), the
 * thread count changed between them (1 -> 8 -> 2 -> 3 ...), nested calls
 * from inside a part (serial), and another thread calling in while the pool
 * is resized.  Every item of every job is run exactly once: a part taken
 * twice, or by a late worker from the next job, shows as a count of 0 or 2. */
enum { STRESS_ITEMS = 97 };
typedef struct {
    _Atomic int count[STRESS_ITEMS];
    bool nested;
} stress_job;

static void count_items(void *ctx, size_t begin, size_t end) {
    stress_job *j = ctx;
    for (size_t i = begin; i < end; i++) atomic_fetch_add(&j->count[i], 1);
}

static void count_items_nested(void *ctx, size_t begin, size_t end) {
    stress_job *j = ctx;
    /* a nested call inside a part: runs serially on this thread */
    stress_job inner = {.nested = false};
    nb_parallel_for(STRESS_ITEMS, 1, count_items, &inner);
    for (size_t i = 0; i < STRESS_ITEMS; i++)
        if (atomic_load(&inner.count[i]) != 1) atomic_fetch_add(&j->count[0], 1000);
    count_items(ctx, begin, end);
}

static int stress_jobs(int jobs, bool nested) {
    int bad = 0;
    for (int k = 0; k < jobs; k++) {
        stress_job j = {.nested = nested};
        size_t n = 1 + (size_t)k % STRESS_ITEMS;
        if (k % 3 == 0)
            nb_parallel_parts(n, 1 + k % 9, nested ? count_items_nested : count_items, &j);
        else
            nb_parallel_for(n, 1, nested ? count_items_nested : count_items, &j);
        for (size_t i = 0; i < STRESS_ITEMS; i++) bad += atomic_load(&j.count[i]) != (i < n);
    }
    return bad;
}

static void *stress_from_another_thread(void *arg) {
    *(int *)arg = stress_jobs(3000, false);
    return NULL;
}

static void test_pool_under_stress(void **state) {
    (void)state;
    static const int counts[] = {1, 8, 2, 3, 1, 2, 8, 5, 2};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        assert_int_equal(nb_set_threads(counts[c]), NB_OK);
        assert_int_equal(stress_jobs(2000, false), 0);
        assert_int_equal(stress_jobs(50, true), 0);
    }
    /* another thread's calls while this one resizes the pool: they run
     * serially or on the pool, never half on an old one */
    int other_bad = -1;
    pthread_t other;
    assert_int_equal(pthread_create(&other, NULL, stress_from_another_thread, &other_bad), 0);
    for (int r = 0; r < 20; r++) {
        assert_int_equal(nb_set_threads(1 + r % 4), NB_OK);
        assert_int_equal(stress_jobs(100, false), 0);
    }
    assert_int_equal(pthread_join(other, NULL), 0);
    assert_int_equal(other_bad, 0);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* nb_set_threads from inside a part (a custom op's kernel, say) is refused:
 * it would wait for the job, which waits for the part. */
typedef struct {
    _Atomic int refused, other;
} resize_job;
static void resize_from_part(void *ctx, size_t begin, size_t end) {
    (void)begin, (void)end;
    resize_job *j = ctx;
    nb_status st = nb_set_threads(3);
    if (st == NB_ERR_STATE && strstr(nb_last_error(), "nb_set_threads") && strstr(nb_last_error(), "inside a part"))
        atomic_fetch_add(&j->refused, 1);
    else
        atomic_fetch_add(&j->other, 1);
}

static void test_resizing_from_inside_a_part_is_refused(void **state) {
    (void)state;
    assert_int_equal(nb_set_threads(2), NB_OK);
    alarm(20); /* a hang (the pool waiting for itself) becomes a failure */
    resize_job j = {0};
    nb_parallel_parts(2, 2, resize_from_part, &j);
    alarm(0);
    assert_int_equal(atomic_load(&j.refused), 2);
    assert_int_equal(atomic_load(&j.other), 0);
    assert_int_equal(nb_get_threads(), 2);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* fork() while another thread resizes the pool: the child, resizing its own
 * and running a job, fills every item and does not hang (the parent was
 * often stopping its workers, which left the child's jobs running nothing,
 * or inside OpenBLAS's lock, which the child then waited on). */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define NB_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define NB_SANITIZED 1
#endif
#endif
#ifndef NB_SANITIZED
static _Atomic bool stop_resizing;
static void *keep_resizing(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_resizing)) {
        nb_set_threads(3);
        nb_set_threads(1);
    }
    return NULL;
}
#endif

static void test_fork_while_another_thread_resizes(void **state) {
    (void)state;
#ifdef NB_SANITIZED
    /* TSan does not support threads started in a child of a threaded process, and ASan's pthread_create
     * takes a lock of its own that the child may find held */
    skip();
#else
    atomic_store(&stop_resizing, false);
    pthread_t resizer;
    assert_int_equal(pthread_create(&resizer, NULL, keep_resizing, NULL), 0);
    int bad = 0;
    for (int k = 0; k < 200; k++) {
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
            alarm(10);
            if (nb_set_threads(2) != NB_OK) _exit(4);
            stress_job j = {.nested = false};
            nb_parallel_for(STRESS_ITEMS, 1, count_items, &j);
            for (size_t i = 0; i < STRESS_ITEMS; i++)
                if (atomic_load(&j.count[i]) != 1) _exit(3);
            _exit(0);
        }
        int status;
        assert_int_equal(waitpid(child, &status, 0), child);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&stop_resizing, true);
    assert_int_equal(pthread_join(resizer, NULL), 0);
    assert_int_equal(bad, 0);
    assert_int_equal(nb_set_threads(1), NB_OK);
#endif
}

int main(void) {
    const struct CMUnitTest bitwise[] = {
        cmocka_unit_test(test_results_do_not_depend_on_threads),
        cmocka_unit_test(test_products_of_random_shapes_do_not_depend_on_threads),
        cmocka_unit_test(test_convolutions_do_not_depend_on_threads),
    };
    if (getenv("NB_TEST_BITWISE_ONLY")) {
        /* a child of test_on_every_blas_core_type: OpenBLAS must have taken
         * the core asked for, or the run proves nothing */
        const char *asked = getenv("OPENBLAS_CORETYPE");
        if (!asked || strcasecmp(asked, openblas_get_corename()) != 0) {
            fprintf(stderr, "asked OpenBLAS for core %s, got %s\n", asked ? asked : "(none)", openblas_get_corename());
            return 1;
        }
        return cmocka_run_group_tests_name(openblas_get_corename(), bitwise, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_do_not_depend_on_threads),
        cmocka_unit_test(test_products_of_random_shapes_do_not_depend_on_threads),
        cmocka_unit_test(test_convolutions_do_not_depend_on_threads),
        cmocka_unit_test(test_on_every_blas_core_type),
        cmocka_unit_test(test_tapes_on_separate_threads),
        cmocka_unit_test(test_fork_child_runs_serially),
        cmocka_unit_test(test_bad_thread_counts),
        cmocka_unit_test(test_pool_under_stress),
        cmocka_unit_test(test_resizing_from_inside_a_part_is_refused),
        cmocka_unit_test(test_fork_while_another_thread_resizes),
    };
    return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
