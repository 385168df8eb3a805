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
 * A job is published by bumping `generation`; workers spin on it for a short
 * while after each job (the next one of a training step comes within
 * microseconds), then sleep on a condition variable.  The caller runs part 0
 * itself and spins until the workers report their parts done.  One job runs
 * at a time: a call made while the pool is busy (from another thread, or from
 * inside a part) simply runs serially.  With more threads than cores nobody
 * spins (workers sleep at once, the caller yields), and a child made by
 * fork() starts with no workers.
 */
#include "../internal.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_THREADS 64
#define SPINS_BEFORE_SLEEP 200000

static struct {
    pthread_mutex_t lock; /* guards sleeping and waking */
    pthread_cond_t wake;
    pthread_mutex_t busy; /* held while a job runs */
    int threads;          /* including the caller; 1 = serial */
    pthread_t workers[MAX_THREADS - 1];
    _Atomic unsigned generation;
    _Atomic int remaining; /* workers yet to finish the current job */
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

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_part(int part) {
    size_t begin = nb_part_begin(pool.n, (size_t)part, (size_t)pool.parts);
    size_t end = nb_part_begin(pool.n, (size_t)part + 1, (size_t)pool.parts);
    if (begin < end) pool.fn(pool.ctx, begin, end);
}

static void *worker(void *arg) {
    int index = (int)(intptr_t)arg; /* 1 .. threads - 1 */
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
        if (atomic_load(&pool.quit)) {
            atomic_fetch_sub(&pool.remaining, 1);
            return NULL;
        }
        if (index < pool.parts) run_part(index);
        atomic_fetch_sub(&pool.remaining, 1);
    }
}

/* Publishes the job in pool.fn... to every worker and waits for them. */
static void run_job(void) {
    atomic_store(&pool.remaining, pool.threads - 1);
    atomic_fetch_add(&pool.generation, 1);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    if (!atomic_load(&pool.quit)) run_part(0);
    /* The workers' parts are as long as ours; past a short spin, one of them
     * must be off its core (more threads than cores): let it run. */
    for (int spins = 0; atomic_load(&pool.remaining) > 0; spins++)
        if (spins < 4096)
            cpu_relax();
        else
            sched_yield();
}

void nb_parallel_parts(size_t n, int parts, nb_range_fn fn, void *ctx) {
    if (parts > pool.threads) parts = pool.threads;
    if ((size_t)parts > n) parts = (int)n;
    if (parts <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        if (n) fn(ctx, 0, n);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.parts = parts;
    split_jobs++;
    run_job();
    pthread_mutex_unlock(&pool.busy);
}

void nb_parallel_for(size_t n, size_t grain, nb_range_fn fn, void *ctx) {
    if (grain < 1) grain = 1;
    size_t parts = n / grain;
    nb_parallel_parts(n, parts < (size_t)pool.threads ? (int)parts : pool.threads, fn, ctx);
}

int nb_get_threads(void) { return pool.threads; }

uint64_t nb_parallel_jobs(void) { return split_jobs; }

static void stop_workers(void) {
    atomic_store(&pool.quit, true);
    pool.parts = 0;
    run_job();
    for (int i = 0; i < pool.threads - 1; i++) pthread_join(pool.workers[i], NULL);
    pool.threads = 1;
    atomic_store(&pool.quit, false);
}

/* A child made by fork() has only the thread that forked: it starts with
 * no workers (and fresh locks, in case another thread held one). */
static void after_fork_in_child(void) {
    pool.threads = 1;
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.busy, NULL);
    pthread_cond_init(&pool.wake, NULL);
    atomic_store(&pool.sleepers, 0);
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static void install_fork_handler(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

nb_status nb_set_threads(int n) {
    pthread_once(&fork_handler_once, install_fork_handler);
    if (n < 1 || n > MAX_THREADS) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_set_threads: %d threads (allowed: 1 to %d)", n, MAX_THREADS);
        return NB_ERR_ARG;
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
    if (st == NB_OK) openblas_set_num_threads(1);
    pthread_mutex_unlock(&pool.busy);
    return st;
}
