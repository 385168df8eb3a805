/*
 * Data-parallel training over MPI (libnabla_mpi, built when OpenMPI's
 * development files are installed: apt-get install libopenmpi-dev
 * openmpi-bin).  The same model on every process ("rank"), each process
 * running forward and backward on its share of the global batch, the
 * gradients averaged across the ranks while backward still runs, and the
 * same optimizer step everywhere:
 *
 *   MPI_Init(&argc, &argv);
 *   nb_dist *d = nb_dist_new(ps, NULL);      // every rank: rank 0's parameters
 *   ...
 *   size_t begin, end;                        // this rank's share of the global batch
 *   nb_dist_share(d, count, &begin, &end);
 *   nb_tensor *loss = ...the mean loss over examples begin..end...;
 *   nb_dist_backward(d, loss, end - begin);   // every rank: the global batch's gradient
 *   nb_optimizer_step(opt);
 *   ...
 *   nb_dist_free(d);
 *   MPI_Finalize();
 *
 * What you get:
 *   - The gradient of the mean loss over the global batch on every rank,
 *     bit for bit the same everywhere: each rank's gradient is weighted by
 *     its number of examples (a share may be empty: pass loss NULL and 0),
 *     the sums run in rank order (a user-defined, non-commutative MPI_Op),
 *     and repeated runs with the same ranks and bucket size give the same
 *     bits.  Against one process with the whole batch, the parameters agree
 *     to rounding (tests/mpi: 1e-12 in float64 after several steps).
 *   - Overlap: the gradients travel in buckets (bucket_bytes each, the last
 *     parameters first); a bucket's MPI_Iallreduce starts as soon as
 *     backward has finished with all of its parameters.
 *   - Every optimizer: call nb_optimizer_step after nb_dist_backward.  The
 *     fused SGD path (nb_optimizer_backward_step) is not used: the update
 *     needs the averaged gradient.  Gradient clipping: nb_clip_grad_norm
 *     after nb_dist_backward clips by the global norm (the gradients are
 *     the same on every rank).
 *   - Failures reach every rank: a rank whose backward fails (a NaN in
 *     anomaly mode, say) still takes part in the all-reduce and tells the
 *     others, which return an error naming it; nb_dist_load fails on every
 *     rank when one cannot read the file; a rank that stops answering (a
 *     killed process) makes the others return NB_ERR_STATE after `timeout`
 *     seconds instead of waiting for ever.  MPI's error handler on the
 *     library's communicator is set to return, so MPI's own errors become
 *     nb_status values too (Open MPI reports errors found while testing
 *     non-blocking collectives on MPI_COMM_WORLD: its handler is set to
 *     return for the length of each test, then given back as it was).
 *     After such an error the ranks may be out of step, and later steps
 *     are refused.  The library never aborts: call nb_dist_abort to end
 *     every rank.
 */
#ifndef NABLA_MPI_H
#define NABLA_MPI_H

#include <mpi.h>

#include "nabla_train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_dist nb_dist;

typedef struct {
    MPI_Comm comm;       /* default MPI_COMM_WORLD */
    size_t bucket_bytes; /* gradient bytes per all-reduce; default 256 KiB */
    double timeout;      /* seconds to wait for the other ranks; default 60 */
} nb_dist_opts;

void nb_dist_default_opts(nb_dist_opts *opts);

/* Collective: every rank calls it with parameter sets of the same names,
 * shapes and dtypes and the same bucket_bytes (checked: a mismatch is an
 * error on every rank, naming the parameter or the buckets); rank 0's
 * values are then broadcast to the others.  NULL on error (nb_last_error
 * says why). */
nb_dist *nb_dist_new(nb_params *ps, const nb_dist_opts *opts);
/* Waits for any all-reduce still under way, then frees. */
void nb_dist_free(nb_dist *d);

int nb_dist_rank(const nb_dist *d);
int nb_dist_size(const nb_dist *d);

/* This rank's share of a global batch of `count` examples: positions
 * [*begin, *end), contiguous, the shares in rank order and as equal as
 * can be (the first count % size ranks have one more).  Every rank draws
 * the same global batches (an nb_batcher seeded alike), so that each epoch
 * covers every example once. */
void nb_dist_share(const nb_dist *d, size_t count, size_t *begin, size_t *end);

/* Collective: backward from this rank's loss (a mean over its `examples`
 * examples; NULL and 0 for an empty share), then the gradients averaged
 * across the ranks, weighted by examples: every parameter of the set gets
 * the gradient of the mean loss over the whole global batch.  The
 * gradients should be zero before (nb_params_zero_grad).  On error every
 * rank returns one, and the message names the rank that failed. */
nb_status nb_dist_backward(nb_dist *d, nb_tensor *loss, size_t examples);

/* Collective: rank 0 saves (atomically, as nb_params_save), and every rank
 * returns the outcome. */
nb_status nb_dist_save(nb_dist *d, const char *path);
/* Collective: every rank loads the file; if any rank fails, all do, and
 * the parameters stay as they were on every rank. */
nb_status nb_dist_load(nb_dist *d, const char *path);
/* Collective: whether every rank's status is NB_OK; if not, every rank
 * returns the first failed rank's status, with a message naming the rank
 * and what (e.g. "reading the data").  For your own steps that can fail. */
nb_status nb_dist_agree(nb_dist *d, nb_status st, const char *what);

/* Seconds spent waiting for all-reduces to finish after backward, summed
 * since nb_dist_new (what the overlap did not hide). */
double nb_dist_wait_seconds(const nb_dist *d);

/* Ends every rank (MPI_Abort with this code): after an error, when the
 * program cannot go on. */
void nb_dist_abort(nb_dist *d, int code);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_MPI_H */
