/*
 * nabla's threads: one threading model for the whole step.
 *
 * With nb_set_threads(n), n > 1, nabla splits its own work across n threads
 * (the caller and n - 1 workers): each large matrix product becomes n
 * single-threaded CBLAS calls on disjoint blocks of the result, and large
 * element-wise kernels n ranges.  OpenBLAS is set to one thread, so no other
 * pool spins beside this one (two pools spinning on two cores is how PyTorch
 * gets several times slower here).  Every element of a result is computed by
 * one thread in the same order as with one thread.
 *
 * A job is a fixed split of [0, n) into parts (the split never depends on
 * which thread runs a part, so neither do the results).  It is published
 * by writing it, then a claim word (the job's number, its part count, the
 * next part to take), then bumping `generation`.  Every thread, the caller
 * included, takes parts with a compare-and-swap on the claim word until
 * none is left; the caller returns when all parts are done.  So a worker
 * that is asleep or off its core (the machine is shared) holds nothing up:
 * the caller, or the other workers, take its parts, and a worker that wakes
 * late finds the job's number changed and takes nothing.  Element-wise
 * kernels are split into up to 4 parts per thread for the same reason.
 * Workers spin on `generation` for a short while after each job (the next
 * one of a training step comes within microseconds), then sleep on a
 * condition variable.  One job runs at a time: a call made while the pool
 * is busy (from another thread, or from inside a part) simply runs
 * serially.  With more threads than cores nobody spins (workers sleep at
 * once, the caller yields), and a child made by fork() starts with no
 * workers.
 */
#include "../internal.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_THREADS 64 /* parts of a job: at most 4 per thread, under 2^16 */
#define SPINS_BEFORE_SLEEP 200000

static struct {
    pthread_mutex_t lock; /* guards sleeping and waking */
    pthread_cond_t wake;
    pthread_mutex_t busy; /* held while a job runs */
    _Atomic int threads;  /* including the caller; 1 = serial (read by any thread calling in) */
    pthread_t workers[MAX_THREADS - 1];
    _Atomic unsigned generation;
    /* job number << 32 | parts << 16 | next part to take */
    _Atomic uint64_t claim;
    _Atomic int done; /* parts of the current job finished */
    _Atomic int sleepers;
    _Atomic bool quit;
    unsigned first_generation; /* the generation when the workers started */
    int spins;                 /* how long workers spin before sleeping */
    /* the job, written before `generation` is bumped */
    nb_range_fn fn;
    void *ctx;
    size_t n;
    int parts;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .busy = PTHREAD_MUTEX_INITIALIZER, .threads = 1};

static uint64_t split_jobs; /* jobs that ran on more than one thread (under `busy`) */

/* Set while this thread runs a job, as its caller or in one of its parts:
 * resizing the pool from there would wait for the job, which waits for it. */
static _Thread_local int in_job;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t claim_word(unsigned job, int parts) { return (uint64_t)job << 32 | (uint64_t)parts << 16; }

/* Takes and runs parts of job `job` until none is left (or another job has
 * replaced it: then it took none of that one's). */
static void take_parts(unsigned job) {
    uint64_t c = atomic_load(&pool.claim);
    for (;;) {
        unsigned parts = (unsigned)(c >> 16) & 0xffff, next = (unsigned)c & 0xffff;
        if ((unsigned)(c >> 32) != job || next >= parts) return;
        if (!atomic_compare_exchange_weak(&pool.claim, &c, c + 1)) continue; /* c reloaded */
        /* Part `next` is ours: the job cannot change until it is done. */
        size_t begin = nb_part_begin(pool.n, next, parts), end = nb_part_begin(pool.n, next + 1, parts);
        in_job++;
        if (begin < end) pool.fn(pool.ctx, begin, end);
        in_job--;
        atomic_fetch_add(&pool.done, 1);
        c = atomic_load(&pool.claim);
    }
}

static void *worker(void *arg) {
    (void)arg;
    unsigned seen = pool.first_generation; /* no job can start before the workers do */
    for (;;) {
        unsigned g;
        for (int spins = 0; (g = atomic_load(&pool.generation)) == seen && spins < pool.spins; spins++)
            cpu_relax();
        if (g == seen) {
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while ((g = atomic_load(&pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = g;
        if (atomic_load(&pool.quit)) return NULL;
        take_parts(g);
    }
}

/* Publishes the job in pool.fn... (pool.parts parts), takes parts with the
 * workers and waits until every part is done. */
static void run_job(void) {
    unsigned job = atomic_load(&pool.generation) + 1;
    atomic_store(&pool.done, 0);
    atomic_store(&pool.claim, claim_word(job, pool.parts));
    atomic_store(&pool.generation, job);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    if (atomic_load(&pool.quit)) return;
    take_parts(job);
    /* The last parts are running on workers: past a short spin, one of
     * them must be off its core: let it run. */
    for (int spins = 0; atomic_load(&pool.done) < pool.parts; spins++)
        if (spins < 4096)
            cpu_relax();
        else
            sched_yield();
}

/* Runs the job in `parts` parts (1 < parts <= MAX_PARTS); serially when the
 * pool is busy. */
static void run_parts(size_t n, int parts, nb_range_fn fn, void *ctx) {
    if (pthread_mutex_trylock(&pool.busy) != 0) {
        fn(ctx, 0, n);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.parts = parts;
    split_jobs++;
    in_job++;
    run_job();
    in_job--;
    pthread_mutex_unlock(&pool.busy);
}

void nb_parallel_parts(size_t n, int parts, nb_range_fn fn, void *ctx) {
    int threads = atomic_load_explicit(&pool.threads, memory_order_relaxed);
    if (parts > threads) parts = threads;
    if ((size_t)parts > n) parts = (int)n;
    if (parts <= 1) {
        if (n) fn(ctx, 0, n);
        return;
    }
    run_parts(n, parts, fn, ctx);
}

/* Up to PARTS_PER_THREAD parts per thread, of at least `grain` items: a
 * thread that is held up leaves fewer items waiting. */
#define PARTS_PER_THREAD 4
void nb_parallel_for(size_t n, size_t grain, nb_range_fn fn, void *ctx) {
    if (grain < 1) grain = 1;
    int threads = atomic_load_explicit(&pool.threads, memory_order_relaxed);
    if (threads <= 1 || n / grain < 2) {
        if (n) fn(ctx, 0, n);
        return;
    }
    size_t parts = n / grain, most = (size_t)threads * PARTS_PER_THREAD;
    run_parts(n, (int)(parts < most ? parts : most), fn, ctx);
}

int nb_get_threads(void) { return pool.threads; }

uint64_t nb_parallel_jobs(void) { return split_jobs; }

static void stop_workers(void) {
    atomic_store(&pool.quit, true);
    pool.parts = 0;
    run_job(); /* wakes them; they see quit */
    for (int i = 0; i < pool.threads - 1; i++) pthread_join(pool.workers[i], NULL);
    pool.threads = 1;
    atomic_store(&pool.quit, false);
}

/* A child made by fork() has only the thread that forked: it starts with
 * no workers (and fresh locks, in case another thread held one). */
static void after_fork_in_child(void) {
    pool.threads = 1;
    atomic_store(&pool.quit, false); /* were they being stopped, the child's next job would run nothing */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.busy, NULL);
    pthread_cond_init(&pool.wake, NULL);
    atomic_store(&pool.sleepers, 0);
}

/* At load time: a fork() racing another thread's first nb_set_threads must
 * find the handler in place. */
__attribute__((constructor)) static void install_fork_handler(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

nb_status nb_set_threads(int n) {
    if (n < 1 || n > MAX_THREADS) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_set_threads: %d threads (allowed: 1 to %d)", n, MAX_THREADS);
        return NB_ERR_ARG;
    }
    if (in_job) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                     "nb_set_threads: called from inside a part of nb_parallel_for (the pool cannot be resized "
                     "while it runs the job that asks; call it between jobs)");
        return NB_ERR_STATE;
    }
    pthread_mutex_lock(&pool.busy);
    if (pool.threads > 1) stop_workers();
    nb_status st = NB_OK;
    pool.first_generation = atomic_load(&pool.generation);
    /* Spinning workers would take the cores from the caller if there are
     * more threads than cores: then they sleep at once. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    pool.spins = cores > 0 && n > cores ? 0 : SPINS_BEFORE_SLEEP;
    for (int i = 0; i < n - 1; i++) {
        if (pthread_create(&pool.workers[i], NULL, worker, (void *)(intptr_t)(i + 1)) != 0) {
            nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_set_threads: cannot start thread %d of %d", i + 2, n);
            st = NB_ERR_NOMEM;
            break;
        }
        pool.threads = i + 2;
    }
    if (st != NB_OK && pool.threads > 1) stop_workers();
    /* One pool only: the products run as single-threaded calls on blocks
     * (and with n = 1, on the caller's thread alone, as asked). */
    /* (Only when it is not already: the call takes OpenBLAS's lock, which a
     * child forked while another thread holds it would wait on for ever.) */
    if (st == NB_OK && openblas_get_num_threads() != 1) openblas_set_num_threads(1);
    pthread_mutex_unlock(&pool.busy);
    return st;
}
