/*
 * Checkpoints: training N steps straight through, and training k steps,
 * saving, then loading in a fresh process (fork) into a model and an
 * optimizer made afresh and training N - k more, must give the same bits:
 * every parameter and every loss, for every optimizer, in both formats, on
 * 1 and 2 threads (and across them).  The steps use dropout (the generator
 * is saved too), a warm-up and cosine schedule and gradient clipping, and a
 * weight large enough to be split across threads.  Then the bad files:
 * truncated, another shape, no optimizer state, another kind, other
 * parameter groups, a missing or mistyped buffer, bad numbers, no
 * generator; each refused with a clear message and nothing in memory
 * changed.  The optimizers have three parameter groups of different
 * options, which the checkpoint keeps.
 */
#include "support.h"
#include "nabla_train.h"
#include "train/param_files.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define STEPS 12
#define HIDDEN 600 /* W1 is 32 x 600 = 19200 values: split across threads */

typedef struct {
    nb_params *ps;
    nb_optimizer *opt;
    nb_tensor *x, *y;
    nb_rng rng;  /* dropout's */
} run;

static void run_new(run *r, nb_optimizer_kind kind, uint64_t init_seed) {
    nb_rng init;
    nb_rng_seed(&init, init_seed);
    r->ps = nb_params_new();
    nb_params_create(r->ps, "W1", NB_F32, NB_SHAPE(32, HIDDEN), NB_INIT_GLOROT_UNIFORM, 32, HIDDEN, &init);
    nb_params_create(r->ps, "b1", NB_F32, NB_SHAPE(HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 1, &init);
    nb_params_create(r->ps, "W2", NB_F32, NB_SHAPE(HIDDEN, 1), NB_INIT_GLOROT_NORMAL, HIDDEN, 1, &init);
    nb_params_create(r->ps, "s", NB_F64, NB_SHAPE(1), NB_INIT_HE_NORMAL, 1, 1, &init);
    nb_rng data;
    nb_rng_seed(&data, 77); /* the same data whatever the initial weights */
    r->x = nb_rand_normal(NULL, &data, NB_F32, NB_SHAPE(24, 32), 0, 1);
    r->y = nb_rand_normal(NULL, &data, NB_F32, NB_SHAPE(24, 1), 0, 1);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    o.lr = kind == NB_OPT_ADAM || kind == NB_OPT_ADAMW ? 0.01 : 0.05;
    if (kind != NB_OPT_ADAMW) o.weight_decay = 0.001;
    r->opt = nb_optimizer_new(r->ps, &o);
    assert_non_null(r->opt);
    /* three groups: W1; b1 and s without decay; W2 with options of its own */
    assert_int_equal(nb_optimizer_no_decay_group(r->opt), 1);
    nb_optimizer_opts o2 = o;
    o2.lr *= 0.5, o2.beta1 = 0.8, o2.beta2 = 0.99, o2.momentum = 0.7, o2.weight_decay = 0.002;
    assert_int_equal(nb_optimizer_add_group(r->opt, (const char *[]){"W2"}, 1, &o2), 2);
    nb_schedule s = {NB_SCHEDULE_COSINE, 0, 0, 0, STEPS - 3, 0.001, 3, 0.1};
    assert_int_equal(nb_optimizer_set_schedule(r->opt, &s), NB_OK);
    nb_rng_seed(&r->rng, 5);
}

static void run_free(run *r) {
    nb_optimizer_free(r->opt);
    nb_params_free(r->ps);
    nb_tensor_free(r->x);
    nb_tensor_free(r->y);
}

/* One step; returns the loss. */
static double step(run *r) {
    nb_tape *tp = nb_tape_new();
    nb_params_zero_grad(r->ps);
    nb_tensor *h = nb_tanh(tp, nb_add(tp, nb_matmul(tp, r->x, nb_params_get(r->ps, "W1")), nb_params_get(r->ps, "b1")));
    h = nb_dropout(tp, h, 0.2, &r->rng);
    nb_tensor *d = nb_sub(tp, nb_matmul(tp, h, nb_params_get(r->ps, "W2")), r->y);
    nb_tensor *s = nb_cast(tp, nb_params_get(r->ps, "s"), NB_F32);
    nb_tensor *loss = nb_add(tp, nb_mean(tp, nb_square(tp, d)), nb_scale(tp, nb_sum(tp, nb_square(tp, s)), 0.01));
    double v = nb_item(loss);
    if (nb_backward(loss) != NB_OK) v = NAN;
    nb_clip_grad_norm(r->ps, 1.0);
    if (nb_optimizer_step(r->opt) != NB_OK) v = NAN;
    nb_tape_free(tp);
    return v;
}

/* Every parameter's bits and the losses, to compare runs. */
typedef struct {
    size_t n;
    double *v;
} bits;

static void record(bits *b, const nb_params *ps, const double *losses, int n_losses) {
    b->n = 0;
    for (size_t i = 0; i < nb_params_count(ps); i++) b->n += nb_tensor_size(nb_params_at(ps, i));
    b->n += (size_t)n_losses;
    b->v = malloc(b->n * sizeof(double));
    size_t k = 0;
    for (size_t i = 0; i < nb_params_count(ps); i++)
        for (size_t j = 0; j < nb_tensor_size(nb_params_at(ps, i)); j++) b->v[k++] = nb_get(nb_params_at(ps, i), j);
    for (int i = 0; i < n_losses; i++) b->v[k++] = losses[i];
}

static void straight(nb_optimizer_kind kind, int threads, bits *out) {
    nb_set_threads(threads);
    run r;
    run_new(&r, kind, 1);
    double losses[STEPS];
    for (int t = 0; t < STEPS; t++) losses[t] = step(&r);
    record(out, r.ps, losses + 5, STEPS - 5);
    run_free(&r);
}

/* The resumed run's second half, in a child process: a model made from
 * other initial weights (so that only the file can make it agree), the
 * checkpoint loaded, N - k steps, the parameters and losses written raw. */
static int resume_in_child(nb_optimizer_kind kind, int threads, const char *ckpt, const char *out, int k) {
    nb_set_threads(threads);
    run r;
    run_new(&r, kind, 999);
    nb_rng_seed(&r.rng, 123456);
    if (nb_checkpoint_load(r.ps, r.opt, &r.rng, ckpt) != NB_OK) {
        fprintf(stderr, "child: %s\n", nb_last_error());
        return 2;
    }
    double losses[STEPS];
    for (int t = k; t < STEPS; t++) losses[t - k] = step(&r);
    bits b;
    record(&b, r.ps, losses + (5 - k), STEPS - 5);
    FILE *f = fopen(out, "wb");
    int rc = f && fwrite(b.v, sizeof(double), b.n, f) == b.n ? 0 : 3;
    if (f) fclose(f);
    free(b.v);
    run_free(&r);
    return rc;
}

static void resumed(nb_optimizer_kind kind, int threads_before, int threads_after, const char *ext, int k,
                    bits *out) {
    char ckpt[96], result[96];
    snprintf(ckpt, sizeof ckpt, "resume-%d%s", (int)kind, ext);
    snprintf(result, sizeof result, "result-%d", (int)kind);
    snprintf(ckpt, sizeof ckpt, "%s", test_path(ckpt));
    snprintf(result, sizeof result, "%s", test_path(result));
    nb_set_threads(threads_before);
    run r;
    run_new(&r, kind, 1);
    for (int t = 0; t < k; t++) step(&r);
    assert_int_equal(nb_checkpoint_save(r.ps, r.opt, &r.rng, ckpt), NB_OK);
    record(out, r.ps, NULL, 0); /* the sizes */
    run_free(&r);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(resume_in_child(kind, threads_after, ckpt, result, k));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    free(out->v);
    out->n += STEPS - 5;
    out->v = malloc(out->n * sizeof(double));
    FILE *f = fopen(result, "rb");
    assert_non_null(f);
    assert_int_equal(fread(out->v, sizeof(double), out->n, f), out->n);
    fclose(f);
}

static void test_resume_is_bitwise(void **state) {
    (void)state;
    const char *exts[2] = {".nbp", ".safetensors"};
    for (int kind = NB_OPT_SGD; kind <= NB_OPT_RMSPROP; kind++) {
        bits want;
        straight((nb_optimizer_kind)kind, 1, &want);
        bits two;
        straight((nb_optimizer_kind)kind, 2, &two);
        assert_memory_equal(want.v, two.v, want.n * sizeof(double));
        free(two.v);
        /* threads before and after the break: 1/1, 2/2, 1/2; the break at
         * k = 2 (within the 3 warm-up steps) and k = 5 (after them); both
         * formats */
        const int threads[3][2] = {{1, 1}, {2, 2}, {1, 2}};
        for (int th = 0; th < 3; th++)
            for (int e = 0; e < 4; e++) {
                int k = e / 2 ? 5 : 2;
                bits got;
                resumed((nb_optimizer_kind)kind, threads[th][0], threads[th][1], exts[e % 2], k, &got);
                assert_int_equal(got.n, want.n);
                for (size_t i = 0; i < want.n; i++)
                    if (memcmp(&got.v[i], &want.v[i], sizeof(double)) != 0)
                        fail_msg("%s, threads %d then %d, %s, k = %d: value %zu is %.17g resumed, %.17g straight",
                                 nb_optimizer_name((nb_optimizer_kind)kind), threads[th][0], threads[th][1], exts[e % 2],
                                 k, i, got.v[i], want.v[i]);
                free(got.v);
            }
        free(want.v);
    }
    nb_set_threads(1);
}

/* Without the checkpoint's state (parameters alone), a resumed Adam
 * differs: the test above could not pass by accident. */
static void test_parameters_alone_do_not_resume(void **state) {
    (void)state;
    nb_set_threads(1);
    bits want;
    straight(NB_OPT_ADAM, 1, &want);
    run r;
    run_new(&r, NB_OPT_ADAM, 1);
    for (int t = 0; t < 5; t++) step(&r);
    const char *path = test_path("alone.nbp");
    assert_int_equal(nb_checkpoint_save(r.ps, r.opt, &r.rng, path), NB_OK);
    nb_rng saved = r.rng;
    run_free(&r);
    run_new(&r, NB_OPT_ADAM, 999);
    assert_int_equal(nb_params_load(r.ps, path), NB_OK); /* a checkpoint's parameters load alone */
    r.rng = saved;
    double losses[STEPS];
    for (int t = 5; t < STEPS; t++) losses[t - 5] = step(&r);
    bits got;
    record(&got, r.ps, losses, STEPS - 5);
    assert_int_equal(got.n, want.n);
    assert_true(memcmp(got.v, want.v, want.n * sizeof(double)) != 0);
    free(got.v);
    free(want.v);
    run_free(&r);
}

/* PyTorch's side reads the safetensors checkpoint as any file: the state
 * is there under its reserved names (Python with json and numpy only). */
static void test_safetensors_checkpoint_reads_in_python(void **state) {
    (void)state;
    run r;
    run_new(&r, NB_OPT_ADAM, 1);
    step(&r);
    const char *path = test_path("python.safetensors");
    assert_int_equal(nb_checkpoint_save(r.ps, r.opt, NULL, path), NB_OK);
    run_free(&r);
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/safetensors_interop.py read %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) fail_msg("safetensors_interop.py read failed:\n%s", out);
    assert_message_has(out, "W1 F32 (32,600)", "__nabla__/exp_avg/W1 F32 (32,600)", "__nabla__/exp_avg_sq/s F64 (1)");
}

/* ---------------------------------------------------------------- bad files */

/* A fresh Adam run on the model; a file from it, after one step. */
static const char *good_checkpoint(const char *name, nb_optimizer_kind kind, bool with_rng) {
    run r;
    run_new(&r, kind, 1);
    step(&r);
    static char paths[4][128]; /* test_path's buffers are reused */
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, 128, "%s", test_path(name));
    assert_int_equal(nb_checkpoint_save(r.ps, r.opt, with_rng ? &r.rng : NULL, path), NB_OK);
    run_free(&r);
    return path;
}

/* Loads path into a fresh run of `kind`; the status, with the run checked
 * unchanged (its first weight, rate and step count) when it fails. */
static nb_status load_fresh(const char *path, nb_optimizer_kind kind, bool with_rng) {
    run r;
    run_new(&r, kind, 3);
    double w0 = nb_get(nb_params_at(r.ps, 0), 0), lr = nb_optimizer_lr(r.opt);
    nb_rng before = r.rng;
    nb_status st = nb_checkpoint_load(r.ps, r.opt, with_rng ? &r.rng : NULL, path);
    if (st != NB_OK) {
        assert_true(nb_get(nb_params_at(r.ps, 0), 0) == w0);
        assert_true(nb_optimizer_lr(r.opt) == lr);
        assert_memory_equal(&before, &r.rng, sizeof before);
    }
    run_free(&r);
    return st;
}

static void copy_cut(const char *from, const char *to, long cut) {
    FILE *f = fopen(from, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    f = fopen(to, "wb");
    fwrite(b, 1, (size_t)(n - cut), f);
    fclose(f);
    free(b);
}

/* A safetensors file of the model's parameters (from a fresh run) with the
 * given state tensors and metadata, laid out by the library's own writer. */
static const char *crafted(const char *name, nb_named *extra, size_t n_extra, const nb_meta *meta) {
    run r;
    run_new(&r, NB_OPT_ADAM, 1);
    nb_file_extras x = {.extra = extra, .n_extra = n_extra, .meta = meta};
    static char path[128];
    snprintf(path, sizeof path, "%s", test_path(name));
    assert_int_equal(nb_safetensors_save("test", r.ps, &x, path), NB_OK);
    run_free(&r);
    return path;
}

static void put(nb_meta *m, const char *k, const char *v) { nb_meta_put(m, k, strlen(k), v, strlen(v)); }

/* The metadata of run_new's Adam: 3 groups, W1 in 0, b1 and s in 1, W2 in 2. */
static void adam_meta(nb_meta *m, const char *step_value) {
    put(m, "nabla.checkpoint", "1");
    put(m, "nabla.optimizer", "adam");
    put(m, "nabla.params", "4");
    put(m, "nabla.step", step_value);
    put(m, "nabla.groups", "3");
    const char *keys[] = {"lr", "base_lr", "momentum", "beta1", "beta2", "eps", "weight_decay"};
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < 7; i++) {
            char key[64];
            snprintf(key, sizeof key, "nabla.group.%d.%s", g, keys[i]);
            put(m, key, i == 3 ? "0.9" : i == 4 ? "0.999" : "0.001");
        }
    put(m, "nabla.group/W1", "0");
    put(m, "nabla.group/b1", "1");
    put(m, "nabla.group/W2", "2");
    put(m, "nabla.group/s", "1");
}

/* Adam's eight buffers, zeros like the model's parameters; `drop` leaves
 * one out, `wrong` gives one float64 for float32. */
static size_t adam_buffers(nb_named *x, int drop, int wrong) {
    static const char *names[4] = {"W1", "b1", "W2", "s"};
    static const size_t sizes[4][2] = {{32, HIDDEN}, {HIDDEN, 0}, {HIDDEN, 1}, {1, 0}};
    size_t n = 0;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 4; i++) {
            if (b * 4 + i == drop) continue;
            nb_dtype dt = i == 3 || b * 4 + i == wrong ? NB_F64 : NB_F32;
            x[n].t = sizes[i][1] ? nb_zeros(NULL, dt, NB_SHAPE(sizes[i][0], sizes[i][1]))
                                 : nb_zeros(NULL, dt, NB_SHAPE(sizes[i][0]));
            snprintf(x[n++].name, sizeof x->name, "__nabla__/%s/%s", b ? "exp_avg_sq" : "exp_avg", names[i]);
        }
    return n;
}

static void test_bad_checkpoints_are_refused(void **state) {
    (void)state;
    nb_set_threads(1);
    const char *nbp = good_checkpoint("good.nbp", NB_OPT_ADAM, true);
    const char *sft = good_checkpoint("good.safetensors", NB_OPT_ADAM, true);
    assert_int_equal(load_fresh(nbp, NB_OPT_ADAM, true), NB_OK);
    assert_int_equal(load_fresh(sft, NB_OPT_ADAM, true), NB_OK);

    /* truncated */
    copy_cut(nbp, test_path("cut.nbp"), 100);
    assert_int_equal(load_fresh(test_path("cut.nbp"), NB_OPT_ADAM, true), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "nb_checkpoint_load", "cut.nbp", "checksum");
    copy_cut(sft, test_path("cut.safetensors"), 100);
    assert_int_equal(load_fresh(test_path("cut.safetensors"), NB_OPT_ADAM, true), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "nb_checkpoint_load", "cut.safetensors", "outside the");

    /* another kind of optimizer */
    for (int e = 0; e < 2; e++) {
        assert_int_equal(load_fresh(e ? sft : nbp, NB_OPT_RMSPROP, true), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), "state of a 'adam' optimizer", "this optimizer is 'rmsprop'");
    }
    /* a parameter file: no optimizer state */
    run r;
    run_new(&r, NB_OPT_ADAM, 1);
    assert_int_equal(nb_params_save(r.ps, test_path("plain.safetensors")), NB_OK);
    assert_int_equal(nb_params_save(r.ps, test_path("plain.nbp")), NB_OK);
    /* another shape: the same names, W1 of 16 rows */
    nb_params *small = nb_params_new();
    nb_params_add(small, "W1", nb_zeros(NULL, NB_F32, NB_SHAPE(16, HIDDEN)));
    nb_params_add(small, "b1", nb_zeros(NULL, NB_F32, NB_SHAPE(HIDDEN)));
    nb_params_add(small, "W2", nb_zeros(NULL, NB_F32, NB_SHAPE(HIDDEN, 1)));
    nb_params_add(small, "s", nb_zeros(NULL, NB_F64, NB_SHAPE(1)));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    nb_optimizer *small_opt = nb_optimizer_new(small, &o);
    nb_optimizer_no_decay_group(small_opt);
    nb_optimizer_add_group(small_opt, (const char *[]){"W2"}, 1, &o);
    for (int e = 0; e < 2; e++) {
        assert_int_equal(load_fresh(test_path(e ? "plain.safetensors" : "plain.nbp"), NB_OPT_ADAM, false), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), "holds no optimizer state", "nb_params_save");
        assert_int_equal(nb_checkpoint_load(small, small_opt, NULL, e ? sft : nbp), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), "'W1'", "(32, 600)", "(16, 600)");
    }
    /* other parameter groups: one group fewer, or W2 in another group */
    nb_params *same = nb_params_new();
    nb_params_add(same, "W1", nb_zeros(NULL, NB_F32, NB_SHAPE(32, HIDDEN)));
    nb_params_add(same, "b1", nb_zeros(NULL, NB_F32, NB_SHAPE(HIDDEN)));
    nb_params_add(same, "W2", nb_zeros(NULL, NB_F32, NB_SHAPE(HIDDEN, 1)));
    nb_params_add(same, "s", nb_zeros(NULL, NB_F64, NB_SHAPE(1)));
    nb_optimizer *two_groups = nb_optimizer_new(same, &o);
    nb_optimizer_no_decay_group(two_groups);
    assert_int_equal(nb_checkpoint_load(same, two_groups, NULL, nbp), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'nabla.groups' is '3'", "expected 2", "make the same groups first");
    nb_optimizer_add_group(two_groups, (const char *[]){"W1"}, 1, &o);
    assert_int_equal(nb_checkpoint_load(same, two_groups, NULL, sft), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'nabla.group/W1' is '0'", "expected 2, the group 'W1' is in here");
    nb_optimizer_free(two_groups);
    nb_params_free(same);
    /* a generator asked for, none saved */
    const char *no_rng = good_checkpoint("norng.nbp", NB_OPT_ADAM, false);
    assert_int_equal(load_fresh(no_rng, NB_OPT_ADAM, true), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'nabla.rng' is missing", "generator");
    assert_int_equal(load_fresh(no_rng, NB_OPT_ADAM, false), NB_OK);
    /* the optimizer of another set, or of a set that grew */
    assert_int_equal(nb_checkpoint_load(small, r.opt, NULL, nbp), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "another parameter set");
    assert_int_equal(nb_checkpoint_save(small, r.opt, NULL, test_path("x.nbp")), NB_ERR_ARG);
    assert_int_equal(nb_checkpoint_load(NULL, r.opt, NULL, nbp), NB_ERR_NULL);
    nb_optimizer_free(small_opt);
    nb_params_free(small);
    run_free(&r);

    /* crafted files: a buffer missing, one of another dtype, bad numbers */
    nb_named x[8];
    nb_meta m = {0};
    adam_meta(&m, "1");
    size_t n = adam_buffers(x, 5, -1);
    const char *missing = crafted("missing.safetensors", x, n, &m);
    for (size_t i = 0; i < n; i++) nb_tensor_free(x[i].t);
    assert_int_equal(load_fresh(missing, NB_OPT_ADAM, false), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "missing.safetensors", "has no '__nabla__/exp_avg_sq/b1'", "optimizer's state");
    n = adam_buffers(x, -1, 2);
    const char *typed = crafted("typed.safetensors", x, n, &m);
    for (size_t i = 0; i < n; i++) nb_tensor_free(x[i].t);
    assert_int_equal(load_fresh(typed, NB_OPT_ADAM, false), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'__nabla__/exp_avg/W2'", "F64 (600, 1) in the file", "F32 (600, 1) in the optimizer");
    nb_meta_free(&m);
    const char *bad_steps[3] = {"1.5", "ten", "-1"};
    for (int b = 0; b < 3; b++) {
        adam_meta(&m, bad_steps[b]);
        n = adam_buffers(x, -1, -1);
        const char *path = crafted("steps.safetensors", x, n, &m);
        for (size_t i = 0; i < n; i++) nb_tensor_free(x[i].t);
        assert_int_equal(load_fresh(path, NB_OPT_ADAM, false), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), "metadata 'nabla.step'", bad_steps[b], "a whole number");
        nb_meta_free(&m);
    }
    /* a state tensor the optimizer does not have */
    adam_meta(&m, "1");
    n = adam_buffers(x, -1, -1);
    snprintf(x[0].name, sizeof x[0].name, "__nabla__/exp_avg/W9");
    const char *stray = crafted("stray.safetensors", x, n, &m);
    for (size_t i = 0; i < n; i++) nb_tensor_free(x[i].t);
    assert_int_equal(load_fresh(stray, NB_OPT_ADAM, false), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "'__nabla__/exp_avg/W9'", "the optimizer does not");
    nb_meta_free(&m);
    /* a parameter may not take the reserved names */
    nb_params *ps = nb_params_new();
    assert_int_equal(nb_tensor_status(nb_params_add(ps, "__nabla__/w", nb_zeros(NULL, NB_F32, NB_SHAPE(1)))),
                     NB_ERR_ARG);
    assert_message_has(nb_last_error(), "'__nabla__/w'", "optimizer's state");
    nb_params_free(ps);
}

/* Numbers a saver never writes, which the parsers used to take: a
 * generator of four zero words (xoshiro's stuck state: every draw 0), hex
 * words written as "-1", a schedule kind past int (scanf's %d wrapped it
 * to kind 0) and a step count past long (saturated).  Refused, nothing
 * changed (load_fresh checks). */
static void test_hostile_generator_and_schedule(void **state) {
    (void)state;
    const char *rngs[] = {"0000000000000000 0000000000000000 0000000000000000 0000000000000000 0 0",
                          "-1 -1 -1 -1 0 0", "0000000000000001 1 2 3 0 0"};
    const char *schedules[] = {"4294967296 0.001 1 0.5 0 0 0 0", "0 0.001 99999999999999999999999 0.5 0 0 0 0",
                               "0 0.001 1 0.5 0 0 0 0 ", "0 0.001  1 0.5 0 0 0 0"};
    nb_named x[8];
    for (int k = 0; k < 3 + 4 + 1; k++) {
        nb_meta m = {0};
        adam_meta(&m, "1");
        if (k < 3) put(&m, "nabla.rng", rngs[k]);
        else put(&m, "nabla.rng", "0123456789abcdef 0000000000000000 0000000000000000 0000000000000000 1 0.5");
        if (k >= 3 && k < 7) put(&m, "nabla.schedule", schedules[k - 3]);
        if (k == 7) put(&m, "nabla.schedule", "0 0.001 1 0.5 0 0 0 0"); /* a good one: loads */
        size_t n = adam_buffers(x, -1, -1);
        const char *path = crafted("hostile.safetensors", x, n, &m);
        for (size_t i = 0; i < n; i++) nb_tensor_free(x[i].t);
        nb_meta_free(&m);
        nb_status st = load_fresh(path, NB_OPT_ADAM, true);
        if (k == 7) {
            assert_int_equal(st, NB_OK);
            continue;
        }
        assert_int_equal(st, NB_ERR_VALUE);
        assert_message_has(nb_last_error(), "nb_checkpoint_load", k < 3 ? "'nabla.rng'" : "'nabla.schedule'");
    }
}

/* A metadata key twice ("nabla.step" 1, then 7): nabla took the first,
 * Python's json the last, so the two read one file differently.  Refused
 * by both formats' readers, nothing changed. */
static void test_metadata_key_twice_is_refused(void **state) {
    (void)state;
    nb_named x[8];
    for (int format = 0; format < 2; format++) {
        nb_meta m = {0};
        adam_meta(&m, "1");
        put(&m, "nabla.step", "7");
        size_t n = adam_buffers(x, -1, -1);
        run r;
        run_new(&r, NB_OPT_ADAM, 1);
        nb_file_extras extras = {.extra = x, .n_extra = n, .meta = &m};
        char path[128];
        snprintf(path, sizeof path, "%s", test_path(format ? "twice.safetensors" : "twice.nbp"));
        assert_int_equal(format ? nb_safetensors_save("test", r.ps, &extras, path) : nb_nbp_save("test", r.ps, &extras, path),
                         NB_OK);
        run_free(&r);
        for (size_t i = 0; i < n; i++) nb_tensor_free(x[i].t);
        nb_meta_free(&m);
        assert_int_equal(load_fresh(path, NB_OPT_ADAM, false), NB_ERR_VALUE);
        assert_message_has(nb_last_error(), "nb_checkpoint_load", "'nabla.step' twice");
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_bitwise),
        cmocka_unit_test(test_parameters_alone_do_not_resume),
        cmocka_unit_test(test_safetensors_checkpoint_reads_in_python),
        cmocka_unit_test(test_bad_checkpoints_are_refused),
        cmocka_unit_test(test_hostile_generator_and_schedule),
        cmocka_unit_test(test_metadata_key_twice_is_refused),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
