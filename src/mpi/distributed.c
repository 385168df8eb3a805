/*
 * Data-parallel training over MPI (include/nabla_mpi.h): every rank holds
 * the whole model, computes the gradient of its share of the global batch,
 * and the gradients are averaged across the ranks before the optimizer
 * steps, identically on every rank.
 *
 * The average, for rank r with b_r examples and gradient g_r of its mean
 * loss, B = Σ b_r examples in all:
 *     g = Σ_r b_r g_r / B  = the gradient of the mean loss over the batch.
 * Each rank sends b_r g_r; the sum runs through MPI_Iallreduce with a
 * user-defined operation declared non-commutative, which MPI applies in
 * rank order, so that every rank gets the same bits, and the same bits
 * from run to run (with the same ranks and buckets); then each divides by B.
 *
 * Overlap: the parameters are grouped into buckets of about bucket_bytes,
 * the last-created parameters first (they are usually the last used in
 * forward, so backward finishes them first).  Before backward, the tape is
 * scanned for each parameter's earliest reader; a parameter's gradient is
 * final once backward has passed that entry, which the tape's progress
 * hook reports, and a bucket is sent as soon as all of its parameters are
 * final and the buckets before it have gone: MPI matches collectives by
 * the order in which they start, so every rank starts them in the same
 * order, whatever its backward does.  Alongside the gradients each rank
 * sends its number of examples
 * and whether its backward failed, so that every rank learns of a failure
 * in the same collective (and then the failed rank's message).
 */
#include "../internal.h"
#include "nabla_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ERROR_BYTES = 512 };

typedef struct {
    size_t first, count; /* parameters [first, first + count) of the bucket order */
    size_t elements;
    nb_dtype dtype;
    void *send, *recv;
    MPI_Request request;
    size_t pending;      /* parameters whose gradient is not final yet this step */
    bool started;
} bucket;

/* A parameter's reader: the earliest tape entry that reads it this step. */
typedef struct {
    size_t entry;        /* index + 1; 0: not read */
    size_t param;        /* position in the bucket order */
} reader;

struct nb_dist {
    MPI_Comm comm;       /* a duplicate: nabla's messages never mix with the program's */
    int rank, size;
    nb_params *ps;
    size_t n;
    nb_tensor **params;  /* bucket order: the set's parameters, last first */
    size_t *bucket_of;
    bucket *buckets;
    size_t n_buckets;
    reader *readers;     /* this step's, sorted by entry, latest first */
    size_t n_readers, next_reader;
    size_t next_bucket;  /* buckets start in index order on every rank (MPI
                            matches collectives by their order) */
    nb_tensor **by_address; /* the parameters sorted by address, to find them on the tape */
    MPI_Op sum;          /* rank-ordered sum of floats or doubles */
    MPI_Op meta;         /* examples summed, failure codes maxed */
    double timeout, waited;
    double scale;        /* this step: the rank's examples */
    bool broken;         /* a wait timed out: requests may still be pending */
};

/* ---------------------------------------------------------------- helpers */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An MPI return code as a status, the error set with MPI's words. */
static nb_status mpi_failed(int code, const char *who, const char *what) {
    if (code == MPI_SUCCESS) return NB_OK;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: MPI failed %s: %.*s", who, what, len, text);
    return NB_ERR_IO;
}

/* MPI_Testall, with errors returned rather than fatal.  Open MPI reports
 * the errors of non-blocking collectives found while testing them on
 * MPI_COMM_WORLD, not on the request's communicator (whose handler,
 * ERRORS_RETURN, nb_dist_new set), and that one's default handler ends
 * the job: it returns errors for the length of the call, and is given back
 * as it was. */
static int test_all(int n, MPI_Request *requests, int *done) {
    MPI_Errhandler was;
    bool swapped = MPI_Comm_get_errhandler(MPI_COMM_WORLD, &was) == MPI_SUCCESS &&
                   MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) == MPI_SUCCESS;
    int code = MPI_Testall(n, requests, done, MPI_STATUSES_IGNORE);
    if (swapped) {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, was);
        MPI_Errhandler_free(&was);
    }
    return code;
}

/* Waits for n requests, at most d->timeout seconds; NB_ERR_STATE (the
 * others not answering) past it. */
static nb_status wait_all(nb_dist *d, int n, MPI_Request *requests, const char *who, const char *what) {
    double start = now();
    for (;;) {
        int done = 0;
        int code = test_all(n, requests, &done);
        if (code != MPI_SUCCESS) { /* the ranks may be out of step now: later steps are refused */
            d->broken = true;
            return mpi_failed(code, who, what);
        }
        if (done) break;
        if (now() - start > d->timeout) {
            d->broken = true;
            nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                         "%s: rank %d of %d had no answer from the other ranks for %g s %s (a rank stopped, or "
                         "took another path through the program?)",
                         who, d->rank, d->size, d->timeout, what);
            return NB_ERR_STATE;
        }
        /* MPI moves a non-blocking collective on only while it is called:
         * poll without pause for the first 10 ms (a sleep between polls
         * cost each round of the all-reduce a timer tick: 0.44 ms a step
         * instead of 0.1), then every 100 µs. */
        if (now() - start > 0.01) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
    }
    d->waited += now() - start;
    return NB_OK;
}

/* The rank-ordered sum: inout = in + inout, element by element (MPI calls
 * it with in the lower rank's partial sum). */
static void rank_ordered_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    if (*type == MPI_FLOAT) {
        const float *a = in;
        float *b = inout;
        for (int i = 0; i < *len; i++) b[i] = a[i] + b[i];
    } else {
        const double *a = in;
        double *b = inout;
        for (int i = 0; i < *len; i++) b[i] = a[i] + b[i];
    }
}

/* The step's meta data, two doubles: examples (summed) and a failure code
 * (the largest wins: see failure_code). */
static void meta_combine(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const double *a = in;
    double *b = inout;
    for (int i = 0; i + 1 < *len; i += 2) {
        b[i] += a[i];
        b[i + 1] = a[i + 1] > b[i + 1] ? a[i + 1] : b[i + 1];
    }
}

/* A failure as a number that the lowest failed rank maximises: decode
 * with failed_rank and failed_status. */
static double failure_code(const nb_dist *d, nb_status st) {
    return st == NB_OK ? 0 : (double)(d->size - d->rank) * 256 + (double)st;
}
static int failed_rank(const nb_dist *d, double code) { return d->size - (int)(code / 256); }
static nb_status failed_status(double code) { return (nb_status)((long)code % 256); }

/* After a failure code came back: every rank gets the failed rank's
 * message, and sets it as its own error. */
static nb_status share_failure(nb_dist *d, double code, const char *who, const char *what) {
    int from = failed_rank(d, code);
    nb_status st = failed_status(code);
    char message[ERROR_BYTES] = "";
    if (d->rank == from) snprintf(message, sizeof message, "%s", nb_last_error());
    MPI_Request request;
    int err = MPI_Ibcast(message, (int)sizeof message, MPI_CHAR, from, d->comm, &request);
    if (err != MPI_SUCCESS) return mpi_failed(err, who, "sharing an error");
    nb_status waited = wait_all(d, 1, &request, who, "sharing an error");
    if (waited != NB_OK) return waited;
    message[sizeof message - 1] = '\0';
    nb_set_error(NULL, st == NB_OK ? NB_ERR_STATE : st, NULL, 0, "%s: rank %d failed %s: %s", who, from, what,
                 message);
    return st == NB_OK ? NB_ERR_STATE : st;
}

static nb_status agree(nb_dist *d, nb_status st, const char *who, const char *what) {
    double mine[2] = {0, failure_code(d, st)}, all[2];
    MPI_Request request;
    int err = MPI_Iallreduce(mine, all, 2, MPI_DOUBLE, d->meta, d->comm, &request);
    if (err != MPI_SUCCESS) return mpi_failed(err, who, what);
    nb_status waited = wait_all(d, 1, &request, who, what);
    if (waited != NB_OK) return waited;
    return all[1] == 0 ? NB_OK : share_failure(d, all[1], who, what);
}

nb_status nb_dist_agree(nb_dist *d, nb_status st, const char *what) {
    if (!d) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dist_agree: the nb_dist is NULL");
        return NB_ERR_NULL;
    }
    return agree(d, st, "nb_dist_agree", what ? what : "");
}

static int by_address(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (nb_tensor *const *)a, y = (uintptr_t) * (nb_tensor *const *)b;
    return (x > y) - (x < y);
}

/* The position (bucket order) of parameter t, or SIZE_MAX. */
static size_t param_index(const nb_dist *d, const nb_tensor *t) {
    nb_tensor *const *hit = bsearch(&t, d->by_address, d->n, sizeof *d->by_address, by_address);
    if (!hit) return SIZE_MAX;
    for (size_t i = 0; i < d->n; i++)
        if (d->params[i] == *hit) return i;
    return SIZE_MAX;
}

/* ---------------------------------------------------------------- set-up */

void nb_dist_default_opts(nb_dist_opts *opts) {
    if (!opts) return;
    opts->comm = MPI_COMM_WORLD;
    opts->bucket_bytes = (size_t)256 << 10; /* see docs/distributed.md */
    opts->timeout = 60;
}

int nb_dist_rank(const nb_dist *d) { return d ? d->rank : -1; }
int nb_dist_size(const nb_dist *d) { return d ? d->size : 0; }
double nb_dist_wait_seconds(const nb_dist *d) { return d ? d->waited : 0; }

void nb_dist_share(const nb_dist *d, size_t count, size_t *begin, size_t *end) {
    size_t size = d ? (size_t)d->size : 1, rank = d ? (size_t)d->rank : 0;
    size_t base = count / size, extra = count % size;
    *begin = rank * base + (rank < extra ? rank : extra);
    *end = *begin + base + (rank < extra ? 1 : 0);
}

void nb_dist_free(nb_dist *d) {
    if (!d) return;
    for (size_t b = 0; b < d->n_buckets; b++) {
        if (d->buckets[b].started && !d->broken) MPI_Wait(&d->buckets[b].request, MPI_STATUS_IGNORE);
        nb_free(d->buckets[b].send);
        nb_free(d->buckets[b].recv);
    }
    if (d->sum != MPI_OP_NULL) MPI_Op_free(&d->sum);
    if (d->meta != MPI_OP_NULL) MPI_Op_free(&d->meta);
    if (d->comm != MPI_COMM_NULL && !d->broken) MPI_Comm_free(&d->comm);
    nb_free(d->buckets);
    nb_free(d->bucket_of);
    nb_free(d->params);
    nb_free(d->by_address);
    nb_free(d->readers);
    nb_free(d);
}

void nb_dist_abort(nb_dist *d, int code) { MPI_Abort(d ? d->comm : MPI_COMM_WORLD, code); }

/* A parameter's name, dtype and shape as a number, to compare across ranks. */
static uint64_t signature(const nb_tensor *t) {
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = t->name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h = (h ^ t->dtype) * 1099511628211ULL;
    for (int k = 0; k < t->ndim; k++) h = (h ^ t->shape[k]) * 1099511628211ULL;
    return h;
}

/* The buckets: consecutive parameters of the bucket order, of one dtype,
 * up to bucket_bytes (a larger parameter alone). */
static bool plan_buckets(nb_dist *d, size_t bucket_bytes) {
    d->buckets = nb_malloc((d->n ? d->n : 1) * sizeof *d->buckets);
    if (!d->buckets) return false;
    for (size_t i = 0; i < d->n; i++) {
        const nb_tensor *p = d->params[i];
        bucket *last = d->n_buckets ? &d->buckets[d->n_buckets - 1] : NULL;
        size_t bytes = nb_dtype_size(p->dtype);
        if (!last || last->dtype != p->dtype || (last->elements + p->size) * bytes > bucket_bytes) {
            last = &d->buckets[d->n_buckets++];
            *last = (bucket){.first = i, .dtype = p->dtype, .request = MPI_REQUEST_NULL};
        }
        last->count++;
        last->elements += p->size;
        d->bucket_of[i] = (size_t)(last - d->buckets);
    }
    for (size_t b = 0; b < d->n_buckets; b++) {
        size_t bytes = (d->buckets[b].elements ? d->buckets[b].elements : 1) * nb_dtype_size(d->buckets[b].dtype);
        if (!(d->buckets[b].send = nb_malloc_aligned(bytes)) || !(d->buckets[b].recv = nb_malloc_aligned(bytes)))
            return false;
    }
    return true;
}

/* The bucket plan as a number, to compare across ranks. */
static unsigned long long bucket_plan_hash(const nb_dist *d) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t b = 0; b < d->n_buckets; b++) {
        const bucket *k = &d->buckets[b];
        uint64_t fields[4] = {k->first, k->count, k->elements, (uint64_t)k->dtype};
        for (int f = 0; f < 4; f++) h = (h ^ fields[f]) * 1099511628211ULL;
    }
    return h;
}

nb_dist *nb_dist_new(nb_params *ps, const nb_dist_opts *opts) {
    static const char who[] = "nb_dist_new";
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0, "%s: MPI is not initialized (call MPI_Init first)", who);
        return NULL;
    }
    if (!ps) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the parameter set is NULL", who);
        return NULL;
    }
    nb_dist_opts o;
    nb_dist_default_opts(&o);
    if (opts) o = *opts;
    if (!(o.timeout > 0) || o.bucket_bytes == 0) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: timeout %g and bucket_bytes %zu must be positive", who, o.timeout,
                     o.bucket_bytes);
        return NULL;
    }
    nb_dist *d = nb_malloc(sizeof *d);
    if (!d) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
        return NULL;
    }
    *d = (nb_dist){.comm = MPI_COMM_NULL, .ps = ps, .sum = MPI_OP_NULL, .meta = MPI_OP_NULL, .timeout = o.timeout};
    /* Non-blocking, so that a rank that never comes here (or passes
     * another communicator) makes the others give up after the timeout
     * instead of waiting for ever. */
    MPI_Request dup_request = MPI_REQUEST_NULL;
    MPI_Comm_rank(o.comm, &d->rank); /* for messages, until the copy's own */
    MPI_Comm_size(o.comm, &d->size);
    int err = MPI_Comm_idup(o.comm, &d->comm, &dup_request);
    nb_status duplicated = err != MPI_SUCCESS ? mpi_failed(err, who, "duplicating the communicator")
                                              : wait_all(d, 1, &dup_request, who, "duplicating the communicator");
    if (duplicated != NB_OK) {
        d->comm = MPI_COMM_NULL; /* never complete: not a communicator to free */
        nb_dist_free(d);
        return NULL;
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    MPI_Op_create(rank_ordered_sum, 0, &d->sum); /* 0: not commutative, so applied in rank order */
    MPI_Op_create(meta_combine, 1, &d->meta);
    d->n = nb_params_count(ps);
    size_t slots = d->n ? d->n : 1;
    d->params = nb_malloc(slots * sizeof *d->params);
    d->by_address = nb_malloc(slots * sizeof *d->by_address);
    d->bucket_of = nb_malloc(slots * sizeof *d->bucket_of);
    d->readers = nb_malloc(slots * sizeof *d->readers);
    uint64_t *mine = nb_malloc((slots + 1) * sizeof *mine), *first = nb_malloc((slots + 1) * sizeof *first);
    nb_status st = NB_OK;
    if (!d->params || !d->by_address || !d->bucket_of || !d->readers || !mine || !first) {
        st = NB_ERR_NOMEM;
        nb_set_error(NULL, st, NULL, 0, "%s: out of memory", who);
    } else {
        for (size_t i = 0; i < d->n; i++) d->params[i] = d->by_address[i] = nb_params_at(ps, d->n - 1 - i);
        qsort(d->by_address, d->n, sizeof *d->by_address, by_address);
        if (!plan_buckets(d, o.bucket_bytes)) {
            st = NB_ERR_NOMEM;
            nb_set_error(NULL, st, NULL, 0, "%s: out of memory for the gradient buckets", who);
        }
    }
    /* Every rank set up?  Then the same parameters everywhere: rank 0's
     * count, then its signatures, are broadcast, and a rank that differs
     * says which parameter (each step agreed on before the next, so that
     * every rank makes the same calls). */
    st = agree(d, st, who, "setting up");
    unsigned long long count = d->n;
    if (st == NB_OK) {
        err = MPI_Bcast(&count, 1, MPI_UNSIGNED_LONG_LONG, 0, d->comm);
        if (err != MPI_SUCCESS) st = mpi_failed(err, who, "comparing the parameters");
        else if (count != d->n) {
            st = NB_ERR_VALUE;
            nb_set_error(NULL, st, NULL, 0, "%s: this rank has %zu parameters, rank 0 has %llu", who, d->n, count);
        }
        st = agree(d, st, who, "comparing the parameters");
    }
    if (st == NB_OK && mine && first) { /* (both allocated: st would say otherwise) */
        for (size_t i = 0; i < d->n; i++) mine[i] = first[i] = signature(d->params[i]);
        err = MPI_Bcast(first, (int)d->n, MPI_UINT64_T, 0, d->comm);
        if (err != MPI_SUCCESS) st = mpi_failed(err, who, "comparing the parameters");
        for (size_t i = 0; st == NB_OK && i < d->n; i++)
            if (mine[i] != first[i]) {
                char shape[128];
                st = NB_ERR_VALUE;
                nb_set_error(NULL, st, NULL, 0, "%s: parameter '%s' %s %s differs from rank 0's (name, dtype or shape)",
                             who, d->params[i]->name, nb_format_shape(d->params[i]->ndim, d->params[i]->shape, shape,
                                                                       sizeof shape),
                             d->params[i]->dtype == NB_F32 ? "float32" : "float64");
            }
        st = agree(d, st, who, "comparing the parameters");
    }
    nb_free(mine);
    nb_free(first);
    /* The same buckets everywhere: all-reduces of different lengths would
     * not match (MPI_ERR_TRUNCATE). */
    if (st == NB_OK) {
        unsigned long long plan[3] = {d->n_buckets, bucket_plan_hash(d), o.bucket_bytes};
        err = MPI_Bcast(plan, 3, MPI_UNSIGNED_LONG_LONG, 0, d->comm);
        if (err != MPI_SUCCESS) st = mpi_failed(err, who, "comparing the gradient buckets");
        else if (plan[0] != d->n_buckets || plan[1] != bucket_plan_hash(d)) {
            st = NB_ERR_VALUE;
            nb_set_error(NULL, st, NULL, 0,
                         "%s: this rank cuts the gradients into %zu buckets (bucket_bytes %zu), rank 0 into %llu "
                         "(bucket_bytes %llu); every rank must use the same bucket_bytes",
                         who, d->n_buckets, o.bucket_bytes, plan[0], plan[2]);
        }
        st = agree(d, st, who, "comparing the gradient buckets");
    }
    /* Every rank starts from rank 0's values. */
    for (size_t i = 0; st == NB_OK && i < d->n; i++) {
        nb_tensor *p = d->params[i];
        err = MPI_Bcast(p->data, (int)p->size, p->dtype == NB_F32 ? MPI_FLOAT : MPI_DOUBLE, 0, d->comm);
        if (err != MPI_SUCCESS) st = mpi_failed(err, who, "broadcasting the parameters");
        nb_mark_written(p);
    }
    if (st != NB_OK) {
        nb_dist_free(d);
        return NULL;
    }
    return d;
}

/* ---------------------------------------------------------------- a step */

/* Copies the bucket's gradients, times this rank's examples, into its send
 * buffer (zeros where a parameter has no gradient) and starts its
 * all-reduce. */
static nb_status start_bucket(nb_dist *d, bucket *b, bool zeros) {
    size_t at = 0;
    for (size_t i = b->first; i < b->first + b->count; i++) {
        nb_tensor *p = d->params[i];
        bool live = !zeros && nb_grad_live(p) && p->grad_state == NB_GRAD_SET;
        NB_DISPATCH(p->dtype, {
            T *send = (T *)b->send + at, k = (T)d->scale;
            const T *g = live ? p->grad : NULL;
            for (size_t j = 0; j < p->size; j++) send[j] = g ? g[j] * k : 0;
        });
        at += p->size;
    }
    b->started = true;
    int err = MPI_Iallreduce(b->send, b->recv, (int)b->elements, b->dtype == NB_F32 ? MPI_FLOAT : MPI_DOUBLE, d->sum,
                             d->comm, &b->request);
    return mpi_failed(err, "nb_dist_backward", "starting a gradient all-reduce");
}

typedef struct {
    nb_dist *d;
    nb_status st;
} progress_job;

/* Starts the buckets that are complete, in index order, up to the first
 * that is not. */
static nb_status start_ready(nb_dist *d) {
    nb_status st = NB_OK;
    while (st == NB_OK && d->next_bucket < d->n_buckets && d->buckets[d->next_bucket].pending == 0)
        st = start_bucket(d, &d->buckets[d->next_bucket++], false);
    return st;
}

/* The tape's progress hook: backward has finished entry `index` (and has
 * passed every later one): the parameters whose earliest reader is at or
 * after it are final, and their buckets go when complete. */
static void on_progress(nb_tape *tp, size_t index, void *user) {
    (void)tp;
    progress_job *job = user;
    nb_dist *d = job->d;
    while (d->next_reader < d->n_readers && d->readers[d->next_reader].entry >= index + 1)
        d->buckets[d->bucket_of[d->readers[d->next_reader++].param]].pending--;
    if (job->st == NB_OK) job->st = start_ready(d);
    /* give MPI a chance to move the buckets already sent */
    for (size_t k = 0; k < d->next_bucket && job->st == NB_OK; k++) {
        int done, code = test_all(1, &d->buckets[k].request, &done);
        if (code != MPI_SUCCESS) {
            d->broken = true;
            job->st = mpi_failed(code, "nb_dist_backward", "sending the gradients");
        }
    }
}

static int latest_first(const void *a, const void *b) {
    size_t x = ((const reader *)a)->entry, y = ((const reader *)b)->entry;
    return (x < y) - (x > y);
}

/* Each parameter's earliest reader on the tape up to `last` (an entry
 * index + 1), latest first; the buckets' pending counts. */
static void find_readers(nb_dist *d, const nb_tape *tp, size_t last) {
    for (size_t i = 0; i < d->n; i++) d->readers[i] = (reader){0, i};
    for (size_t e = 0; e < last; e++) {
        const nb_entry *en = &tp->entries[e];
        for (int k = 0; k < en->n_in; k++) {
            const nb_tensor *x = nb_entry_input(en, k);
            if (!x->is_leaf || x->home != NB_HOME_HEAP) continue;
            size_t i = param_index(d, x);
            if (i != SIZE_MAX && d->readers[i].entry == 0) d->readers[i].entry = e + 1;
        }
    }
    qsort(d->readers, d->n, sizeof *d->readers, latest_first);
    d->n_readers = 0;
    for (size_t b = 0; b < d->n_buckets; b++) d->buckets[b].pending = 0;
    for (size_t i = 0; i < d->n && d->readers[i].entry; i++) {
        d->n_readers++;
        d->buckets[d->bucket_of[d->readers[i].param]].pending++;
    }
    d->next_reader = 0;
}

nb_status nb_dist_backward(nb_dist *d, nb_tensor *loss, size_t examples) {
    static const char who[] = "nb_dist_backward";
    if (!d) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the nb_dist is NULL", who);
        return NB_ERR_NULL;
    }
    if (d->broken) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                     "%s: an earlier collective failed or timed out; the ranks are out of step (end them with "
                     "nb_dist_abort)", who);
        return NB_ERR_STATE;
    }
    nb_status st = NB_OK;
    if (!loss && examples) {
        st = NB_ERR_NULL;
        nb_set_error(NULL, st, NULL, 0, "%s: the loss is NULL but this rank has %zu examples", who, examples);
    } else if (loss && loss->status != NB_OK) {
        st = loss->status; /* its forward failed: the error that says why is the last one set */
    } else if (loss && examples == 0) {
        st = NB_ERR_ARG;
        nb_set_error(NULL, st, NULL, 0, "%s: a loss with 0 examples (pass NULL for an empty share)", who);
    }
    d->scale = (double)examples;
    /* This rank's backward, sending buckets as they complete. */
    nb_tape *tp = st == NB_OK && loss && loss->status == NB_OK && nb_recorded(loss) ? loss->tape : NULL;
    for (size_t b = 0; b < d->n_buckets; b++) d->buckets[b].started = false, d->buckets[b].pending = 1;
    d->next_bucket = 0;
    if (st == NB_OK && loss) {
        if (tp) find_readers(d, tp, loss->entry);
        else d->n_readers = 0, d->next_reader = 0;
        progress_job job = {d, tp ? start_ready(d) : NB_OK}; /* buckets no entry reads go first */
        if (tp) {
            tp->progress = on_progress;
            tp->progress_user = &job;
        }
        st = nb_backward(loss);
        if (tp) tp->progress = NULL, tp->progress_user = NULL;
        if (st == NB_OK) st = job.st;
    }
    /* The rest, in order: every bucket not sent yet (a failed rank sends
     * zeros, so that the others are not left waiting), then the examples
     * and the failure. */
    nb_status sending = NB_OK;
    while (sending == NB_OK && d->next_bucket < d->n_buckets)
        sending = start_bucket(d, &d->buckets[d->next_bucket++], st != NB_OK || !loss);
    if (st == NB_OK) st = sending;
    double meta_mine[2] = {(double)examples, failure_code(d, st)}, meta_all[2] = {0, 0};
    MPI_Request meta_request = MPI_REQUEST_NULL;
    int err = MPI_Iallreduce(meta_mine, meta_all, 2, MPI_DOUBLE, d->meta, d->comm, &meta_request);
    if (err != MPI_SUCCESS) return mpi_failed(err, who, "sending the step's examples");
    nb_status waited = wait_all(d, 1, &meta_request, who, "waiting for the examples and statuses");
    for (size_t b = 0; waited == NB_OK && b < d->n_buckets; b++)
        if (d->buckets[b].started) waited = wait_all(d, 1, &d->buckets[b].request, who, "waiting for the gradients");
    if (waited != NB_OK) return waited;
    for (size_t b = 0; b < d->n_buckets; b++) d->buckets[b].started = false;
    if (meta_all[1] != 0) return share_failure(d, meta_all[1], who, "in its backward");
    if (meta_all[0] == 0) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: the global batch is empty (0 examples on every rank)", who);
        return NB_ERR_VALUE;
    }
    /* g = Σ b_r g_r / B into every parameter's gradient. */
    double total = meta_all[0];
    for (size_t b = 0; b < d->n_buckets; b++) {
        const bucket *bk = &d->buckets[b];
        size_t at = 0;
        for (size_t i = bk->first; i < bk->first + bk->count; i++) {
            nb_tensor *p = d->params[i];
            if (!p->grad && !(p->grad = nb_malloc_aligned(p->size * nb_dtype_size(p->dtype)))) {
                nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory for the gradient of '%s'", who, p->name);
                return NB_ERR_NOMEM;
            }
            NB_DISPATCH(p->dtype, {
                const T *sum = (const T *)bk->recv + at;
                T *g = p->grad, inv = (T)total;
                for (size_t j = 0; j < p->size; j++) g[j] = sum[j] / inv;
            });
            nb_set_grad_state(p, NB_GRAD_SET);
            at += p->size;
        }
    }
    return NB_OK;
}

/* ---------------------------------------------------------------- files */

nb_status nb_dist_save(nb_dist *d, const char *path) {
    if (!d) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dist_save: the nb_dist is NULL");
        return NB_ERR_NULL;
    }
    nb_status st = d->rank == 0 ? nb_params_save(d->ps, path) : NB_OK;
    return agree(d, st, "nb_dist_save", "saving the parameters");
}

nb_status nb_dist_load(nb_dist *d, const char *path) {
    static const char who[] = "nb_dist_load";
    if (!d) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the nb_dist is NULL", who);
        return NB_ERR_NULL;
    }
    /* Into a copy first: a rank that reads the file must not change its
     * parameters if another rank could not. */
    nb_params *copy = nb_params_new();
    nb_status st = copy ? NB_OK : NB_ERR_NOMEM;
    for (size_t i = 0; st == NB_OK && i < d->n; i++) {
        nb_tensor *p = nb_params_at(d->ps, i);
        nb_tensor *c = nb_params_add(copy, p->name, nb_tensor_alloc(NULL, p->dtype, p->ndim, p->shape, who, NULL, 0));
        st = nb_tensor_status(c);
    }
    if (st == NB_OK) st = nb_params_load(copy, path);
    st = agree(d, st, who, "loading the parameters");
    for (size_t i = 0; st == NB_OK && i < d->n; i++) {
        nb_tensor *p = nb_params_at(d->ps, i), *c = nb_params_at(copy, i);
        memcpy(p->data, c->data, p->size * nb_dtype_size(p->dtype));
        nb_mark_written(p);
    }
    nb_params_free(copy);
    return st;
}
