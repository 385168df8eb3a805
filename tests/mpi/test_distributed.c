/*
 * Data-parallel training (include/nabla_mpi.h), run by tests/mpi.sh under
 * mpirun with 2 and 3 ranks.  Every rank runs every check; rank 0 prints
 * "ok: ..." or "FAIL: ..." for each, and the exit status is 0 only if all
 * passed on all ranks.
 *
 *   - training over the ranks equals training in one process with the same
 *     global batches: 1e-12 in float64, 1e-5 in float32, with SGD, Adam and
 *     clipping, uneven shares, an uneven last batch and empty shares;
 *   - every rank ends with the same bits, and a second run with the first's;
 *   - an epoch's shares cover every example once;
 *   - a rank that cannot read a file, or whose backward fails in anomaly
 *     mode, makes every rank return an error naming it, and training goes
 *     on after;
 *   - ranks with different bucket_bytes fail in nb_dist_new, naming it;
 *   - with --paths, the ranks' collectives do not match: each returns an
 *     error (MPI's, or the timeout's) instead of MPI ending the job;
 *   - with --skip-setup, rank 1 never calls nb_dist_new: rank 0's gives up
 *     after the timeout;
 *   - with --stall, rank 1 stops answering: the others give up after the
 *     timeout with a message; with --kill, rank 1 dies (SIGKILL) and the
 *     job ends (tests/mpi.sh checks what is said, and the time).
 */
#include "nabla_mpi.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size, failures;

/* Rank 0 reports; every rank counts its failures. */
static void check(bool ok, const char *what) {
    int all = 0, mine = ok ? 0 : 1;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (!ok) fprintf(stderr, "rank %d: FAIL: %s (%s)\n", rank, what, nb_last_error());
    if (rank == 0) printf("%s: %s (%d ranks)\n", all ? "FAIL" : "ok", what, size);
    failures += all ? 1 : 0;
}

enum { N = 40, FEATURES = 5, HIDDEN = 8, CLASSES = 3 };

typedef struct {
    nb_params *ps;
    nb_tensor *W1, *b1, *W2, *b2;
} model;

static model model_new(nb_dtype dt, uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    model m = {nb_params_new(), NULL, NULL, NULL, NULL};
    m.W1 = nb_params_create(m.ps, "W1", dt, NB_SHAPE(FEATURES, HIDDEN), NB_INIT_GLOROT_UNIFORM, FEATURES, HIDDEN, &rng);
    m.b1 = nb_params_create(m.ps, "b1", dt, NB_SHAPE(HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 1, &rng);
    m.W2 = nb_params_create(m.ps, "W2", dt, NB_SHAPE(HIDDEN, CLASSES), NB_INIT_GLOROT_UNIFORM, HIDDEN, CLASSES, &rng);
    m.b2 = nb_params_create(m.ps, "b2", dt, NB_SHAPE(CLASSES), NB_INIT_ZEROS, HIDDEN, CLASSES, &rng);
    return m;
}

/* The mean cross-entropy over rows[0..count) of the data. */
static nb_tensor *loss_of(nb_tape *tp, const model *m, nb_tensor *X, nb_tensor *y, const size_t *rows, size_t count) {
    nb_dtype dt = nb_tensor_dtype(m->W1);
    nb_tensor *x = nb_cast(tp, nb_gather_rows(tp, X, rows, count), dt);
    nb_tensor *t = nb_cast(tp, nb_gather_rows(tp, y, rows, count), dt);
    nb_tensor *h = nb_tanh(tp, nb_linear(tp, x, m->W1, m->b1));
    return nb_softmax_cross_entropy(tp, nb_linear(tp, h, m->W2, m->b2), t, 1);
}

typedef struct {
    nb_dtype dt;
    nb_optimizer_kind kind;
    size_t batch;
    int steps;
    double clip;
    size_t bucket_bytes; /* small, so that the model spans several buckets */
} run_opts;

/* Trains a model from seed 7 on the data: over the ranks (d != NULL) or
 * in this process alone; the parameters after, as doubles (W1 b1 W2 b2). */
static double *train(const run_opts *o, nb_tensor *X, nb_tensor *y, bool distributed, nb_status *st) {
    model m = model_new(o->dt, 7 + (distributed ? (uint64_t)rank : 0)); /* ranks differ: rank 0's must win */
    nb_dist *d = NULL;
    if (distributed) {
        nb_dist_opts dopts;
        nb_dist_default_opts(&dopts);
        dopts.bucket_bytes = o->bucket_bytes;
        d = nb_dist_new(m.ps, &dopts);
    }
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, o->kind);
    oo.lr = o->kind == NB_OPT_ADAM ? 0.01 : 0.2;
    nb_optimizer *opt = nb_optimizer_new(m.ps, &oo);
    nb_rng rng;
    nb_rng_seed(&rng, 11); /* the same global batches everywhere */
    nb_batcher batches;
    nb_batcher_init(&batches, N, o->batch, &rng);
    nb_tape *tp = nb_tape_new();
    *st = distributed && !d ? NB_ERR_STATE : NB_OK;
    for (int s = 0; s < o->steps && *st == NB_OK; s++) {
        const size_t *idx;
        size_t count;
        if (!nb_batcher_next(&batches, &idx, &count)) nb_batcher_next(&batches, &idx, &count); /* next epoch */
        size_t begin = 0, end = count;
        if (d) nb_dist_share(d, count, &begin, &end);
        nb_tape_reset(tp);
        nb_params_zero_grad(m.ps);
        nb_tensor *loss = end > begin ? loss_of(tp, &m, X, y, idx + begin, end - begin) : NULL;
        *st = d ? nb_dist_backward(d, loss, end - begin) : nb_backward(loss);
        if (*st == NB_OK && o->clip > 0) nb_clip_grad_norm(m.ps, o->clip);
        if (*st == NB_OK) *st = nb_optimizer_step(opt);
    }
    double *out = malloc((FEATURES * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES) * sizeof *out), *at = out;
    nb_tensor *p[4] = {m.W1, m.b1, m.W2, m.b2};
    for (int k = 0; k < 4; k++) {
        nb_to_f64(p[k], at);
        at += nb_tensor_size(p[k]);
    }
    nb_tape_free(tp);
    nb_batcher_free(&batches);
    nb_optimizer_free(opt);
    nb_dist_free(d);
    nb_params_free(m.ps);
    return out;
}

static const size_t n_values = FEATURES * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES;

static double max_difference(const double *a, const double *b) {
    double worst = 0;
    for (size_t i = 0; i < n_values; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    return worst;
}

/* Do all ranks hold the same bits? */
static bool same_everywhere(const double *v) {
    double *first = malloc(n_values * sizeof *first);
    memcpy(first, v, n_values * sizeof *first);
    MPI_Bcast(first, (int)n_values, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    bool same = memcmp(first, v, n_values * sizeof *first) == 0;
    free(first);
    return same;
}

static void check_against_one_process(nb_tensor *X, nb_tensor *y) {
    const run_opts runs[] = {
        {NB_F64, NB_OPT_SGD, 12, 9, 0, 256},    /* batches of 12, 12, 12, then 4: uneven shares */
        {NB_F64, NB_OPT_ADAM, 7, 12, 0.5, 128}, /* Adam and clipping by the global norm */
        {NB_F64, NB_OPT_SGD, 2, 6, 0, 1 << 20}, /* batches of 2: a rank with nothing (3 ranks) */
        {NB_F32, NB_OPT_ADAM, 10, 8, 0, 64},    /* float32 */
    };
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        const run_opts *o = &runs[r];
        nb_status st_one, st_many, st_again;
        double *one = train(o, X, y, false, &st_one), *many = train(o, X, y, true, &st_many);
        double *again = train(o, X, y, true, &st_again);
        double diff = max_difference(one, many), bound = o->dt == NB_F64 ? 1e-12 : 1e-5;
        char what[200];
        snprintf(what, sizeof what, "%s, %s, batch %zu, %d steps: the ranks' parameters within %g of one process's (%.2g)",
                 o->dt == NB_F64 ? "float64" : "float32", nb_optimizer_name(o->kind), o->batch, o->steps, bound, diff);
        check(st_one == NB_OK && st_many == NB_OK && diff <= bound, what);
        snprintf(what, sizeof what, "%s, %s, batch %zu: the same bits on every rank, and in a second run",
                 o->dt == NB_F64 ? "float64" : "float32", nb_optimizer_name(o->kind), o->batch);
        check(st_again == NB_OK && same_everywhere(many) && memcmp(many, again, n_values * sizeof *many) == 0, what);
        free(one);
        free(many);
        free(again);
    }
}

static void check_shares_cover_the_epoch(void) {
    model m = model_new(NB_F64, 7);
    nb_dist *d = nb_dist_new(m.ps, NULL);
    int seen[N] = {0}, all[N];
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_batcher batches;
    nb_batcher_init(&batches, N, 7, &rng);
    const size_t *idx;
    size_t count;
    while (nb_batcher_next(&batches, &idx, &count)) {
        size_t begin, end;
        nb_dist_share(d, count, &begin, &end);
        for (size_t i = begin; i < end; i++) seen[idx[i]]++;
    }
    MPI_Allreduce(seen, all, N, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    bool once = true;
    for (int i = 0; i < N; i++) once = once && all[i] == 1;
    check(once, "an epoch of batches of 7 over 40 examples: every example in one rank's share, once");
    nb_batcher_free(&batches);
    nb_dist_free(d);
    nb_params_free(m.ps);
}

static void check_failures_reach_every_rank(nb_tensor *X, nb_tensor *y) {
    model m = model_new(NB_F64, 7);
    nb_dist *d = nb_dist_new(m.ps, NULL);
    char good[64], bad[64];
    snprintf(good, sizeof good, "/tmp/nabla-mpi-%d.nbp", (int)getppid());
    nb_status st = nb_dist_save(d, good);
    check(st == NB_OK, "rank 0 saves, every rank hears it went well");
    /* rank 1 reads a file that is not there; the others a good one */
    snprintf(bad, sizeof bad, "/tmp/nabla-mpi-missing-%d.nbp", (int)getppid());
    double before = nb_get(m.W1, 0);
    nb_set(m.W1, 0, before + 1);
    st = nb_dist_load(d, rank == 1 ? bad : good);
    check(st == NB_ERR_IO && strstr(nb_last_error(), "rank 1 failed loading") && nb_get(m.W1, 0) == before + 1,
          "rank 1 cannot read its file: every rank fails naming it, and keeps its parameters");
    st = nb_dist_load(d, good);
    check(st == NB_OK && nb_get(m.W1, 0) == before, "then every rank loads a good file");
    /* rank 1's backward meets a NaN in anomaly mode */
    nb_tape *tp = nb_tape_new();
    size_t rows[4] = {0, 1, 2, 3};
    nb_tape_set_anomaly_mode(tp, rank == 1);
    nb_tensor *loss = loss_of(tp, &m, X, y, rows, 4);
    if (rank == 1) loss = nb_mul(tp, loss, nb_log(tp, nb_scalar(tp, NB_F64, -1)));
    st = nb_dist_backward(d, loss, 4);
    check(st != NB_OK && strstr(nb_last_error(), "rank 1 failed") && strstr(nb_last_error(), "anomaly: log"),
          "rank 1's forward meets log(-1) in anomaly mode: every rank's backward fails naming it");
    nb_tape_set_anomaly_mode(tp, false);
    nb_tape_reset(tp);
    nb_params_zero_grad(m.ps);
    st = nb_dist_backward(d, loss_of(tp, &m, X, y, rows, 4), 4);
    check(st == NB_OK, "then the next step works on every rank");
    if (rank == 0) unlink(good);
    nb_tape_free(tp);
    nb_dist_free(d);
    nb_params_free(m.ps);
}

/* Ranks that cut the gradients into different buckets would start
 * all-reduces of different lengths (MPI_ERR_TRUNCATE, and MPI's default
 * handler ends the job): nb_dist_new compares the plans and every rank
 * returns an error naming the difference.  Errors of MPI itself are
 * returned, never fatal: a collective on a communicator the ranks do not
 * agree on comes back as an error too. */
static void check_mismatched_buckets(void) {
    model m = model_new(NB_F64, 7);
    nb_dist_opts o;
    nb_dist_default_opts(&o);
    o.bucket_bytes = rank == 1 ? 64 : (size_t)256 << 10;
    nb_dist *d = nb_dist_new(m.ps, &o);
    check(!d && strstr(nb_last_error(), "bucket") && strstr(nb_last_error(), "rank 0"),
          "ranks with different bucket_bytes: nb_dist_new fails on every rank, naming the buckets");
    nb_dist_free(d);
    o.bucket_bytes = 64;
    d = nb_dist_new(m.ps, &o);
    check(d != NULL, "then the same bucket_bytes everywhere works");
    nb_dist_free(d);
    nb_params_free(m.ps);
}

/* --stall: rank 1 stops answering; rank 0 must give up after the timeout,
 * say so, and end the job.  --kill: rank 1 dies in the middle of training. */
static int stall(nb_tensor *X, nb_tensor *y, bool kill_it) {
    model m = model_new(NB_F64, 7);
    nb_dist_opts o;
    nb_dist_default_opts(&o);
    o.timeout = 2;
    nb_dist *d = nb_dist_new(m.ps, &o);
    if (rank == 1 && kill_it) raise(SIGKILL);
    if (rank == 1) {
        sleep(60); /* "a rank that stops": killed by the abort below long before */
        return 0;
    }
    nb_tape *tp = nb_tape_new();
    size_t rows[4] = {0, 1, 2, 3};
    nb_status st = nb_dist_backward(d, loss_of(tp, &m, X, y, rows, 4), 4);
    printf("rank %d: %s\n", rank, st == NB_OK ? "no error" : nb_last_error());
    fflush(stdout);
    nb_dist_abort(d, 3);
    return 1;
}

/* --paths: the ranks take different paths (rank 0 saves while rank 1 runs
 * backward), so their collectives do not match: each rank must get an
 * error back, from MPI (truncated message) or from the timeout, and print
 * it; MPI's default handler must not end the job. */
static int different_paths(nb_tensor *X, nb_tensor *y) {
    model m = model_new(NB_F64, 7);
    nb_dist_opts o;
    nb_dist_default_opts(&o);
    o.timeout = 2;
    nb_dist *d = nb_dist_new(m.ps, &o);
    nb_tape *tp = nb_tape_new();
    size_t rows[4] = {0, 1, 2, 3};
    char path[64];
    snprintf(path, sizeof path, "/tmp/nabla-mpi-paths-%d.nbp", (int)getppid());
    nb_status st = rank == 0 ? nb_dist_save(d, path) : nb_dist_backward(d, loss_of(tp, &m, X, y, rows, 4), 4);
    printf("rank %d returned: %s\n", rank, st == NB_OK ? "no error" : nb_last_error());
    fflush(stdout);
    if (rank == 0) unlink(path);
    MPI_Barrier(MPI_COMM_WORLD); /* both have said what they got */
    nb_dist_abort(d, 3);         /* the ranks are out of step: end the job */
    return 1;
}

/* --skip-setup: rank 1 never calls nb_dist_new, whose first collective
 * used to block rank 0 for ever (the timeout did not apply to it): rank 0
 * must return an error after its 2 s timeout. */
static int skipped_setup(void) {
    model m = model_new(NB_F64, 7);
    nb_dist_opts o;
    nb_dist_default_opts(&o);
    o.timeout = 2;
    if (rank != 0) {
        sleep(30); /* busy elsewhere: ended by rank 0's abort long before */
        return 0;
    }
    nb_dist *d = nb_dist_new(m.ps, &o);
    printf("rank 0 returned: %s\n", d ? "a nb_dist" : nb_last_error());
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 3); /* its duplicate is pending: end the job */
    return 1;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* the data: the same on every rank */
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_tensor *X = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(N, FEATURES), 0, 1);
    nb_tensor *y = nb_zeros(NULL, NB_F64, NB_SHAPE(N));
    for (size_t i = 0; i < N; i++) nb_set(y, i, (double)(nb_rng_next(&rng) % CLASSES));
    if (argc > 1 && (!strcmp(argv[1], "--stall") || !strcmp(argv[1], "--kill")))
        return stall(X, y, !strcmp(argv[1], "--kill"));
    if (argc > 1 && !strcmp(argv[1], "--paths")) return different_paths(X, y);
    if (argc > 1 && !strcmp(argv[1], "--skip-setup")) return skipped_setup();
    check_against_one_process(X, y);
    check_shares_cover_the_epoch();
    check_failures_reach_every_rank(X, y);
    check_mismatched_buckets();
    nb_tensor_free(X);
    nb_tensor_free(y);
    if (rank == 0) printf("mpi, %d ranks: %d failed\n", size, failures);
    MPI_Finalize();
    return failures ? 1 : 0;
}
