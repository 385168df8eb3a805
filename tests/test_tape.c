/*
 * The tape's behaviour: what backward visits and skips, gradient
 * accumulation, no-grad regions, detach, seeds, resets, very long chains,
 * and that a warm training loop allocates nothing.
 */
#include "support.h"
#include "nabla_train.h"
#include "internal.h" /* the generation count, for its wrap */

#include <math.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

typedef struct { size_t calls; size_t order[64]; } hook_log;

static void count_entries(nb_tape *tp, size_t entry, void *user) {
    (void)tp;
    hook_log *log = user;
    if (log->calls < 64) log->order[log->calls] = entry;
    log->calls++;
}

/* Backward visits exactly the entries between a parameter and the loss, in
 * reverse tape order. */
static void test_backward_skips_what_does_not_matter(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    hook_log log = {0};
    nb_tape_set_backward_hook(tp, count_entries, &log);
    nb_tensor *w = nb_full(NULL, NB_F64, NB_SHAPE(2), 0.5);
    nb_requires_grad(w, true);
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_tensor *data = nb_exp(tp, nb_square(tp, x)); /* entries 0, 1: no parameter */
    nb_tensor *y = nb_mul(tp, data, w);            /* entry 2 */
    nb_tensor *side = nb_tanh(tp, y);              /* entry 3: not on the loss path */
    nb_tensor *loss = nb_sum(tp, y);               /* entry 4 */
    assert_false(nb_tensor_requires_grad(data));
    assert_true(nb_tensor_requires_grad(side));
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_int_equal(log.calls, 2);
    assert_int_equal(log.order[0], 4);
    assert_int_equal(log.order[1], 2);
    assert_false(nb_has_grad(side));
    assert_false(nb_has_grad(data));
    /* d sum(e^{x^2} w)/dw = e^{x^2} */
    assert_close(nb_grad_get(w, 0), exp(1.0), 1e-12);
    assert_close(nb_grad_get(w, 1), exp(4.0), 1e-9);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

static void test_gradients_accumulate_until_zeroed(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *w = nb_from_array(NULL, NB_F32, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(w, true);
    for (int pass = 1; pass <= 3; pass++) {
        nb_tape_reset(tp);
        assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, w))), NB_OK);
        /* d sum(w^2)/dw = 2w, added once per pass */
        for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 2.0 * pass * (i + 1), 0);
    }
    nb_zero_grad(w);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 0, 0);
    nb_zero_grad(w);
    nb_tape_reset(tp);
    assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, w))), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 2.0 * (i + 1), 0);
    /* A second backward over the same tape recomputes intermediates and adds
     * to the leaf again. */
    nb_zero_grad(w);
    nb_tape_reset(tp);
    nb_tensor *h = nb_scale(tp, w, 3);
    nb_tensor *loss = nb_sum(tp, nb_mul(tp, h, h)); /* 9 w^2: gradient 18 w */
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_int_equal(nb_backward(loss), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 36.0 * (i + 1), 1e-4);
    assert_close(nb_grad_get(h, 0), 6, 1e-5); /* d loss/dh = 2h = 6w, not doubled */
    nb_tensor_free(w);
    nb_tape_free(tp);
}

static void test_no_grad_region_and_detach(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *w = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){2, -1}));
    nb_requires_grad(w, true);
    bool was = nb_tape_set_grad_enabled(tp, false);
    assert_true(was);
    nb_tensor *frozen = nb_square(tp, w);
    assert_false(nb_tensor_requires_grad(frozen));
    assert_close(nb_get(frozen, 0), 4, 0); /* the op still ran */
    nb_tape_set_grad_enabled(tp, true);
    assert_int_equal(nb_backward(nb_sum(tp, frozen)), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_backward", "requires a gradient");

    /* y = detach(w^2) * w: dy/dw = w^2 (the detached factor is a constant). */
    nb_tape_reset(tp);
    nb_tensor *d = nb_detach(tp, nb_square(tp, w));
    assert_false(nb_tensor_requires_grad(d));
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, d, w))), NB_OK);
    assert_close(nb_grad_get(w, 0), 4, 0);
    assert_close(nb_grad_get(w, 1), 1, 0);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

static void test_backward_with_seed(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    /* y = x^2 elementwise; with seed v, dL/dx = v * 2x (a vector-Jacobian product). */
    nb_tensor *y = nb_square(tp, x);
    nb_tensor *v = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, 10, 100}));
    assert_int_equal(nb_backward_seed(y, v), NB_OK);
    assert_close(nb_grad_get(x, 0), 2, 0);
    assert_close(nb_grad_get(x, 1), 40, 0);
    assert_close(nb_grad_get(x, 2), 600, 0);
    /* Without a seed a non-scalar output is an error naming its shape. */
    assert_int_equal(nb_backward(y), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "(3,)", "seed", "test_tape.c:");
    nb_tensor *bad = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 1}));
    assert_int_equal(nb_backward_seed(y, bad), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "seed (2,)", "output (3,)");
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A value written between an op and its backward is refused by every pass,
 * not only nb_backward: nb_grad with create_graph (and so nb_hvp and
 * nb_jvp) ran with the new value (the gradient of sum(sin x) came out as
 * cos(0.75) where the op had seen 0.5). */
static void test_writes_refused_by_recorded_passes(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){0.5, 1}));
    nb_requires_grad(x, true);
    for (int call = 0; call < 4; call++) {
        nb_tape_reset(tp);
        nb_tensor *y = nb_sum(tp, nb_sin(tp, x)), *v = nb_ones(tp, NB_F64, NB_SHAPE(2)), *r = NULL;
        nb_set(x, 0, nb_get(x, 0) + 0.25);
        nb_status st = call == 0 ? nb_grad(y, &x, 1, &r, false) : call == 1 ? nb_grad(y, &x, 1, &r, true)
                     : call == 2 ? nb_hvp(y, &x, 1, &v, &r) : nb_jvp(y, &x, 1, &v, &r);
        assert_int_equal(st, NB_ERR_STATE);
        assert_message_has(nb_last_error(), "changed after the op used it", "sin");
        assert_int_equal(nb_tensor_status(r), NB_ERR_STATE);
    }
    nb_tensor_free(x);
    nb_tape_free(tp);
}

static void test_backward_after_reset_is_an_error(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 3);
    nb_requires_grad(x, true);
    nb_tensor *loss = nb_square(tp, x);
    nb_tape_reset(tp);
    assert_int_equal(nb_backward(loss), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_tape_reset");
    assert_int_equal(nb_backward(x), NB_ERR_STATE); /* a leaf */
    assert_int_equal(nb_backward(NULL), NB_ERR_NULL);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A tensor kept across nb_tape_reset is refused by every op, naming the
 * reset and where the tensor was made, instead of reading whatever now
 * occupies its memory (1 + exp(ones) kept across a reset gave 2). */
static void test_tensors_kept_across_reset_are_refused(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *kept = nb_exp(tp, nb_ones(tp, NB_F64, NB_SHAPE(3))); int made_at = __LINE__;
    nb_tensor_set_name(kept, "e");
    nb_tape_reset(tp);
    /* the next step fills the arena the kept tensor's values lived in */
    nb_tensor *fresh = nb_full(tp, NB_F64, NB_SHAPE(3), 0.0);
    nb_tensor *y = nb_add(tp, fresh, kept);
    assert_int_equal(nb_tensor_status(y), NB_ERR_STATE);
    assert_int_equal(nb_tape_status(tp), NB_ERR_STATE);
    char where[64];
    snprintf(where, sizeof where, "test_tape.c:%d", made_at);
    assert_message_has(nb_tape_error(tp), "add: input 2 'e' (3,)", where, "before nb_tape_reset", "nb_copy(NULL");
    /* reading it through the API gives nothing either */
    assert_true(isnan(nb_get(kept, 0)));
    assert_null(nb_tensor_const_data(kept));
    nb_tape_reset(tp);
    assert_int_equal(nb_tensor_status(nb_copy(tp, kept)), NB_ERR_STATE);
    nb_tape_reset(tp);
    /* the right way: copy to the heap before the reset */
    nb_tensor *e = nb_exp(tp, nb_ones(tp, NB_F64, NB_SHAPE(3)));
    nb_tensor *heap = nb_copy(NULL, e);
    nb_tape_reset(tp);
    y = nb_add_scalar(tp, heap, 1);
    assert_ok(y);
    assert_close(nb_get(y, 0), 1 + exp(1.0), 1e-12);
    nb_tensor_free(heap);
    nb_tape_free(tp);
}

/* One step of a small graph, the same every time (as a training loop's):
 * under the old header arenas, which took turns, step k + 2 put its tensors
 * at step k's addresses.  `made` gets every tensor the step makes. */
static nb_tensor *same_step(nb_tape *tp, double value, nb_tensor **made, size_t *n_made) {
    nb_tensor *a = nb_full(tp, NB_F64, NB_SHAPE(1), value);
    nb_tensor *b = nb_scale(tp, a, 1.0);
    nb_tensor *c = nb_exp(tp, nb_full(tp, NB_F64, NB_SHAPE(64), 0.0)); /* values in the main arena */
    nb_tensor_set_name(c, "c");
    nb_tensor *t[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) made[(*n_made)++] = t[i];
    return b;
}

/* The number of mappings of this process (each line of /proc/self/maps). */
static size_t mappings(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    size_t n = 0;
    int c;
    if (!f) return 0;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* However many resets have passed, a tensor kept from before one is refused
 * and is never the same pointer as a tensor made since: the header arenas
 * used to take turns, so two resets later the stale pointer was a live
 * tensor of the new step, and y·0.5 gave 8 (the new tensor's 16 halved)
 * instead of refusing.  Checked after 1, 2, 3, ... resets, across steps
 * that outgrow the header window (a big graph once), across the moves of
 * the window to fresh addresses, and for a tape that was freed; the
 * process's mappings and the tape's memory stay flat meanwhile. */
static void test_stale_tensors_are_refused_however_many_resets(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *made[8];
    size_t n_made = 0;
    nb_tensor *kept = same_step(tp, 4.0, made, &n_made); /* b = 4 */
    nb_tensor *kept_big = made[2];
    assert_close(nb_get(kept, 0), 4.0, 0);
    const size_t checks[] = {1, 2, 3, 4, 7, 8, 9, 16, 100, 257, 1000, 3000, 6000};
    size_t next = 0, maps_warm = 0, memory_warm = 0;
    for (size_t reset = 1; reset <= 6000; reset++) {
        nb_tape_reset(tp);
        if (reset == 50) /* a step far larger than the others: the window grows */
            for (int k = 0; k < 20000; k++) nb_full(tp, NB_F64, NB_SHAPE(1), k);
        n_made = 0;
        same_step(tp, 16.0, made, &n_made);
        if (reset == 500) {
            maps_warm = mappings();
            memory_warm = nb_tape_memory(tp);
        }
        if (next < sizeof checks / sizeof *checks && reset == checks[next]) {
            next++;
            for (size_t i = 0; i < n_made; i++) {
                assert_ptr_not_equal(made[i], kept);
                assert_ptr_not_equal(made[i], kept_big);
            }
            nb_tensor *y = nb_scale(tp, kept, 0.5);
            assert_int_equal(nb_tensor_status(y), NB_ERR_STATE);
            assert_message_has(nb_tape_error(tp), "scale: input 1", "reset", "nb_copy(NULL");
            assert_int_equal(nb_tensor_status(nb_add(tp, made[2], kept_big)), NB_ERR_STATE);
            assert_int_equal(nb_tensor_status(kept), NB_ERR_STATE);
            assert_true(isnan(nb_get(kept, 0)));
            assert_null(nb_tensor_const_data(kept_big));
            assert_string_equal(nb_tensor_name(kept_big), "");
            assert_int_not_equal(nb_backward(kept), NB_OK);
            nb_tensor *g;
            assert_int_equal(nb_grad(nb_sum(tp, made[2]), &kept_big, 1, &g, false), NB_ERR_STATE);
        }
    }
    assert_int_equal(next, sizeof checks / sizeof *checks);
    /* 5500 more resets moved the header window about 20 times: no new mapping
     * stays behind for each move, and no memory is added */
    assert_true(mappings() <= maps_warm + 2);
    assert_int_equal(nb_tape_memory(tp), memory_warm);

    /* A tape freed, another made: the first one's tensors are refused too. */
    nb_tape_free(tp);
    tp = nb_tape_new();
    n_made = 0;
    same_step(tp, 16.0, made, &n_made);
    assert_int_equal(nb_tensor_status(nb_mul(tp, made[1], kept)), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "mul: input 2", "reset (or freed)");
    nb_tape_free(tp);
}

/* The generation count is 32 bits: when it wraps, every header older is
 * retired, so that a tensor kept from generation g is not taken for live
 * when the count comes back to g.  (The count is set near the wrap through
 * the internals, rather than by four billion resets.) */
static void test_generation_count_wrapping_around(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    tp->generation = 3;
    nb_tensor *kept = nb_full(tp, NB_F64, NB_SHAPE(1), 4.0);
    tp->generation = UINT32_MAX - 1;
    nb_tape_reset(tp); /* UINT32_MAX */
    nb_tape_reset(tp); /* 0: wraps */
    for (int i = 0; i < 3; i++) nb_tape_reset(tp);
    assert_int_equal(tp->generation, 3);
    nb_tensor *fresh = nb_full(tp, NB_F64, NB_SHAPE(1), 16.0);
    assert_ptr_not_equal(fresh, kept);
    assert_int_equal(nb_tensor_status(kept), NB_ERR_STATE);
    assert_int_equal(nb_tensor_status(nb_scale(tp, kept, 0.5)), NB_ERR_STATE);
    nb_tape_free(tp);
}

/* Under an address-space limit (ulimit -v), retired header addresses count
 * against it, and the process runs out of them long before 10^12 tensors:
 * the oldest block of addresses is then used again, so that a tensor kept
 * from a few steps before is still refused (the header window used to be
 * reused in place, and a tensor four steps old was a live one).  Run in a
 * new process (this program again, NB_TEST_ADDRESS_LIMIT set): the limit
 * belongs to the whole process, and must be there before the first tape. */
static int stale_tensors_under_a_limit(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *kept[12] = {0}; /* the first tensor of each of the last 12 steps */
    for (int step = 0; step < 1000; step++) { /* 20,000 tensors a step: 3 GB of headers in all */
        nb_tape_reset(tp);
        nb_tensor *first = nb_full(tp, NB_F64, NB_SHAPE(1), 16.0);
        for (int k = 1; k < 20000; k++) nb_full(tp, NB_F64, NB_SHAPE(1), k);
        if (nb_tensor_status(first) != NB_OK) return 4;
        for (int age = 0; age < 12; age++) {
            nb_tensor *old = kept[age];
            if (old && (old == first || nb_tensor_status(old) != NB_ERR_STATE ||
                        nb_tensor_status(nb_scale(tp, old, 0.5)) != NB_ERR_STATE))
                return 5;
        }
        kept[step % 12] = first;
    }
    nb_tape_free(tp);
    return 0;
}

static const char *self_path;

static void test_stale_tensors_under_an_address_space_limit(void **state) {
    (void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    skip(); /* the sanitizers' shadow memory cannot be mapped under an address-space limit */
#endif
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit r = {(rlim_t)1536 << 20, (rlim_t)1536 << 20};
        if (setrlimit(RLIMIT_AS, &r) != 0) _exit(3);
        setenv("NB_TEST_ADDRESS_LIMIT", "1", 1);
        setenv("OPENBLAS_NUM_THREADS", "1", 1); /* its buffers, under the limit */
        execl(self_path, self_path, (char *)NULL);
        _exit(2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static nb_tensor *sum_of(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    (void)user;
    return nb_sum(tp, in[0]);
}

/* A tensor whose tape is gone is refused by every call that takes a tensor,
 * without reading through its header (which, retired, reads as zeros: a
 * NULL name, tape and data), and a heap tensor next to it is unharmed. */
static void test_tensor_of_a_freed_tape_everywhere(void **state) {
    (void)state;
    nb_tape *gone = nb_tape_new();
    nb_tensor *t = nb_exp(gone, nb_full(gone, NB_F64, NB_SHAPE(2, 3), 0.0));
    nb_tensor_set_name(t, "t");
    nb_tape_free(gone);
    nb_tape *tp = nb_tape_new();
    nb_tensor *heap = nb_full(NULL, NB_F64, NB_SHAPE(2, 3), 1.0);
    size_t at[2] = {0, 0}, counts[9];
    double out[6] = {7};
    assert_int_equal(nb_tensor_status(t), NB_ERR_STATE);
    assert_int_equal(nb_tensor_size(t), 0);
    assert_int_equal(nb_tensor_ndim(t), 0);
    assert_null(nb_tensor_shape(t));
    assert_int_equal(nb_tensor_dim(t, 0), 0);
    assert_string_equal(nb_tensor_name(t), "");
    assert_string_equal(nb_tensor_op(t), "");
    assert_int_equal(nb_tensor_n_inputs(t), 0);
    assert_null(nb_tensor_input(t, 0));
    assert_false(nb_tensor_requires_grad(t));
    assert_null(nb_tensor_data(t));
    assert_null(nb_tensor_const_data(t));
    assert_null(nb_grad_data(t));
    assert_false(nb_has_grad(t));
    assert_true(isnan(nb_get(t, 0)));
    assert_true(isnan(nb_get_at(t, at)));
    assert_true(isnan(nb_item(t)));
    assert_true(isnan(nb_grad_get(t, 0)));
    nb_set(t, 0, 1);
    nb_set_at(t, at, 1);
    nb_tensor_set_name(t, "renamed");
    nb_requires_grad(t, true);
    nb_zero_grad(t);
    nb_zero_grads(&t, 1);
    nb_tensor_free(t);
    nb_to_f64(t, out);
    char shape[32];
    assert_string_equal(nb_shape_string(t, shape, sizeof shape), "(errored)");
    FILE *devnull = fopen("/dev/null", "w");
    nb_print(devnull, t);
    nb_print_grad(devnull, t);
    fclose(devnull);
    assert_int_not_equal(nb_backward(t), NB_OK);
    assert_int_not_equal(nb_backward_seed(nb_sum(tp, heap), t), NB_OK);
    nb_tensor *g;
    assert_int_not_equal(nb_grad(t, &heap, 1, &g, false), NB_OK);
    assert_int_not_equal(nb_grad(nb_sum(tp, heap), &t, 1, &g, true), NB_OK);
    assert_int_equal(nb_tensor_status(nb_copy(tp, t)), NB_ERR_STATE);
    assert_int_equal(nb_tensor_status(nb_copy(NULL, t)), NB_ERR_STATE);
    nb_tensor *both[2] = {heap, t};
    assert_int_equal(nb_tensor_status(nb_concat(tp, both, 2, 0)), NB_ERR_STATE);
    nb_gradcheck_opts o;
    nb_gradcheck_default_opts(&o);
    assert_false(nb_gradcheck(sum_of, &t, 1, NULL, &o).passed);
    assert_false(nb_gradgradcheck(sum_of, &t, 1, NULL, &o).passed);
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    assert_int_not_equal(nb_init_tensor(t, NB_INIT_GLOROT_UNIFORM, 3, 2, &rng), NB_OK);
    assert_int_not_equal(nb_standardize(t, NULL, 0), NB_OK);
    assert_int_not_equal(nb_standardize(heap, &t, 1), NB_OK);
    assert_true(isnan(nb_accuracy(t, heap, 1)) || nb_accuracy(t, heap, 1) < 0);
    assert_true(isnan(nb_accuracy_binary(heap, t, 0.5)) || nb_accuracy_binary(heap, t, 0.5) < 0);
    assert_int_not_equal(nb_confusion_matrix(t, heap, 1, 3, counts), NB_OK);
    assert_int_equal(nb_tensor_status(nb_gather_rows(tp, t, at, 1)), NB_ERR_STATE);
    nb_params *ps = nb_params_new();
    assert_int_equal(nb_tensor_status(nb_params_add(ps, "t", t)), NB_ERR_STATE);
    nb_params_free(ps);
    assert_int_not_equal(nb_backward_html(t, test_path("gone.html"), "gone", NULL), NB_OK);
    /* the heap tensor is as it was */
    assert_close(nb_get(heap, 5), 1.0, 0);
    nb_tensor_free(heap);
    nb_tape_free(tp);
}

/* An Elman step whose hidden state is carried across resets: refused at the
 * first step that reads the stale state (it gave right losses and wrong
 * gradients), accepted when the state is copied to the heap. */
static void test_hidden_state_carried_across_reset(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_tensor *W = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(4, 4), -0.5, 0.5);
    nb_requires_grad(W, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *h = nb_ones(tp, NB_F64, NB_SHAPE(4, 1));
    for (int step = 0; step < 3; step++) {
        h = nb_tanh(tp, nb_matmul(tp, W, h));
        nb_status st = nb_backward(nb_sum(tp, h));
        if (step == 0) {
            assert_int_equal(st, NB_OK);
        } else {
            assert_int_not_equal(st, NB_OK);
            assert_message_has(nb_tape_error(tp), "matmul: input 2", "before nb_tape_reset");
            break;
        }
        nb_tape_reset(tp);
    }
    nb_tape_free(tp);
    nb_tensor_free(W);
}

/* A leaf changed after an op saved it: backward refuses instead of using
 * the new value (x = 2, y = x², then x set to 10 gave dy/dx = 20, not 4).
 * The same through nb_tensor_data and through a view; reading is fine, and
 * so is changing a tensor between steps. */
static void test_inputs_changed_after_use_are_refused(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 2);
    nb_tensor_set_name(x, "x");
    nb_requires_grad(x, true);
    nb_tensor *y = nb_mul(tp, x, x);
    nb_set(x, 0, 10);
    assert_int_equal(nb_backward(y), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "input 'x' ()", "of mul", "changed after the op used it");
    assert_false(nb_has_grad(x));
    /* through the raw pointer */
    nb_tape_reset(tp);
    y = nb_mul(tp, x, x);
    double *raw = nb_tensor_data(x);
    raw[0] = 2;
    assert_int_equal(nb_backward(y), NB_ERR_STATE);
    /* reading through the const pointer changes nothing */
    nb_tape_reset(tp);
    y = nb_mul(tp, x, x);
    assert_close(*(const double *)nb_tensor_const_data(x), 2, 0);
    assert_int_equal(nb_backward(y), NB_OK);
    assert_close(nb_grad_get(x, 0), 4, 1e-12);
    /* an op's result changed: sigmoid's backward reads its own output */
    nb_zero_grad(x);
    nb_tape_reset(tp);
    nb_tensor *s = nb_sigmoid(tp, x);
    nb_set(s, 0, 0.5);
    assert_int_equal(nb_backward(s), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "the result () of sigmoid");
    /* a view shares its storage, and so its version, with its base */
    nb_tensor *v = nb_ones(NULL, NB_F64, NB_SHAPE(2, 2));
    nb_requires_grad(v, true);
    nb_tape_reset(tp);
    y = nb_sum(tp, nb_square(tp, nb_reshape(tp, v, NB_DIMS(4))));
    nb_set(v, 3, 5);
    assert_int_equal(nb_backward(y), NB_ERR_STATE);
    /* changed before the ops: fine */
    nb_tape_reset(tp);
    nb_set(v, 3, 1);
    y = nb_sum(tp, nb_square(tp, nb_reshape(tp, v, NB_DIMS(4))));
    assert_int_equal(nb_backward(y), NB_OK);
    assert_close(nb_grad_get(v, 3), 2, 1e-12);
    nb_tensor_free(v);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A chain of a million ops, forward and backward, with no recursion.
 * y = ((x * c) + 1) * c + 1 ...: dy/dx = c^(ops/2). */
/* The graph walked back from a result, as micrograd's _op and _prev:
 * y = tanh(a * b + c); the gradient's own ops, recorded by nb_grad, too. */
static void test_walking_the_graph(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *a = nb_scalar(NULL, NB_F64, 2), *b = nb_scalar(NULL, NB_F64, 3), *c = nb_scalar(NULL, NB_F64, -5);
    nb_requires_grad(a, true);
    nb_tensor *ab = nb_mul(tp, a, b), *z = nb_add(tp, ab, c), *y = nb_tanh(tp, z);
    assert_string_equal(nb_tensor_op(y), "tanh");
    assert_int_equal(nb_tensor_n_inputs(y), 1);
    assert_ptr_equal(nb_tensor_input(y, 0), z);
    assert_string_equal(nb_tensor_op(z), "add");
    assert_ptr_equal(nb_tensor_input(z, 0), ab);
    assert_ptr_equal(nb_tensor_input(z, 1), c);
    assert_null(nb_tensor_input(z, 2));
    assert_null(nb_tensor_input(z, -1));
    assert_ptr_equal(nb_tensor_input(ab, 1), b);
    /* leaves, NULL */
    assert_string_equal(nb_tensor_op(a), "");
    assert_int_equal(nb_tensor_n_inputs(a), 0);
    assert_null(nb_tensor_input(a, 0));
    assert_string_equal(nb_tensor_op(NULL), "");
    /* dy/da = (1 - y²) b, recorded as ops: its last op is a product */
    nb_tensor *g;
    assert_int_equal(nb_grad(y, &a, 1, &g, true), NB_OK);
    assert_true(nb_tensor_n_inputs(g) >= 1);
    assert_true(strlen(nb_tensor_op(g)) > 0);
    /* after a reset, the tensors of the last step made nothing any more */
    nb_tape_reset(tp);
    assert_string_equal(nb_tensor_op(y), "");
    assert_null(nb_tensor_input(y, 0));
    nb_tensor_free(a), nb_tensor_free(b), nb_tensor_free(c);
    nb_tape_free(tp);
}

static void test_million_op_chain(void **state) {
    (void)state;
    enum { OPS = 1000000 };
    const double c = 1.000001;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 0.5);
    nb_requires_grad(x, true);
    nb_tensor *y = x;
    for (int i = 0; i < OPS / 2; i++) y = nb_add_scalar(tp, nb_scale(tp, y, c), 1e-6);
    assert_ok(y);
    assert_int_equal(nb_tape_size(tp), OPS);
    assert_int_equal(nb_backward(y), NB_OK);
    assert_close(nb_grad_get(x, 0), pow(c, OPS / 2), 1e-9);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A DAG of a million tiny ops with wide fan-out: every op reads the two
 * previous results. */
static void test_million_op_dag(void **state) {
    (void)state;
    enum { OPS = 1000000 };
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 0.3);
    nb_requires_grad(x, true);
    /* a_{k+1} = 0.5 a_k + 0.5 a_{k-1} (average); each a_k is linear in x with
     * coefficient 1 (a_0 = a_1 = x), so d a_n/dx = 1. */
    nb_tensor *prev = x, *cur = nb_scale(tp, x, 1.0);
    for (int i = 0; i < OPS / 3; i++) {
        nb_tensor *next = nb_add(tp, nb_scale(tp, cur, 0.5), nb_scale(tp, prev, 0.5));
        prev = cur;
        cur = next;
    }
    assert_int_equal(nb_backward(cur), NB_OK);
    assert_close(nb_grad_get(x, 0), 1.0, 1e-9);
    assert_close(nb_item(cur), 0.3, 1e-12);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A training loop: after the first steps have sized the tape, further steps
 * make no allocation at all, and the tape's memory stays flat. */
static void test_warm_training_loop_does_not_allocate(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_tensor *X = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(32, 8), 0, 1);
    nb_tensor *labels = nb_zeros(NULL, NB_F32, NB_SHAPE(32));
    for (size_t i = 0; i < 32; i++) nb_set(labels, i, (double)(i % 3));
    nb_tensor *W1 = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(8, 16), 0, 0.3);
    nb_tensor *b1 = nb_zeros(NULL, NB_F32, NB_SHAPE(16));
    nb_tensor *W2 = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(16, 3), 0, 0.3);
    nb_tensor *params[3] = {W1, b1, W2};
    for (int i = 0; i < 3; i++) nb_requires_grad(params[i], true);
    nb_tape *tp = nb_tape_new();
    uint64_t allocs_after_warmup = 0;
    size_t memory_after_warmup = 0;
    double first_loss = 0, last_loss = 0;
    for (int step = 0; step < 200; step++) {
        if (step == 3) {
            allocs_after_warmup = nb_alloc_count();
            memory_after_warmup = nb_tape_memory(tp);
        }
        nb_tape_reset(tp);
        nb_zero_grads(params, 3);
        nb_tensor *h = nb_relu(tp, nb_add(tp, nb_matmul(tp, X, W1), b1));
        nb_tensor *loss = nb_softmax_cross_entropy(tp, nb_matmul(tp, h, W2), labels, 1);
        assert_int_equal(nb_backward(loss), NB_OK);
        for (int i = 0; i < 3; i++) {
            float *w = nb_tensor_data(params[i]), *g = nb_grad_data(params[i]);
            for (size_t j = 0; j < nb_tensor_size(params[i]); j++) w[j] -= 0.1f * g[j];
        }
        if (step == 0) first_loss = nb_item(loss);
        last_loss = nb_item(loss);
    }
    assert_int_equal(nb_alloc_count() - allocs_after_warmup, 0);
    assert_int_equal(nb_tape_memory(tp), memory_after_warmup);
    assert_true(last_loss < 0.5 * first_loss); /* and it learned something */
    for (int i = 0; i < 3; i++) nb_tensor_free(params[i]);
    nb_tensor_free(X);
    nb_tensor_free(labels);
    nb_tape_free(tp);
}

int main(int argc, char **argv) {
    (void)argc;
    self_path = argv[0];
    if (getenv("NB_TEST_ADDRESS_LIMIT")) return stale_tensors_under_a_limit();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_skips_what_does_not_matter),
        cmocka_unit_test(test_gradients_accumulate_until_zeroed),
        cmocka_unit_test(test_no_grad_region_and_detach),
        cmocka_unit_test(test_backward_with_seed),
        cmocka_unit_test(test_backward_after_reset_is_an_error),
        cmocka_unit_test(test_writes_refused_by_recorded_passes),
        cmocka_unit_test(test_tensors_kept_across_reset_are_refused),
        cmocka_unit_test(test_stale_tensors_are_refused_however_many_resets),
        cmocka_unit_test(test_tensor_of_a_freed_tape_everywhere),
        cmocka_unit_test(test_generation_count_wrapping_around),
        cmocka_unit_test(test_stale_tensors_under_an_address_space_limit),
        cmocka_unit_test(test_hidden_state_carried_across_reset),
        cmocka_unit_test(test_inputs_changed_after_use_are_refused),
        cmocka_unit_test(test_walking_the_graph),
        cmocka_unit_test(test_million_op_chain),
        cmocka_unit_test(test_million_op_dag),
        cmocka_unit_test(test_warm_training_loop_does_not_allocate),
    };
    return cmocka_run_group_tests_name("tape", tests, NULL, NULL);
}
