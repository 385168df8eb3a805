/*
 * What recomputation (src/graph/recompute.c, nb_recompute) needs from the
 * backward pass and the no-grad scopes, kept out of internal.h: only the
 * files that run or free a recomputation see it.
 */
#ifndef NABLA_RECOMPUTE_H
#define NABLA_RECOMPUTE_H

#include "../internal.h"

/* Runs the backward of entries [first, last), latest first, in the pass
 * under way (tp->pass): the loop of nb_backward, which calls it for
 * [0, out's entry) once it has seeded the output (src/graph/backward.c).
 * NB_OK, or the tape's error. */
nb_status nb_backward_entries(nb_tape *tp, size_t first, size_t last);

/* The graph walk of nb_grad with create_graph (src/graph/grad.c), from
 * several outputs at once, outs[k] seeded with seeds[k] (NULL: none), over
 * the entries from `first` on alone: grads[i] is then the gradient through
 * those entries only, partial in each wrt[i] even when one of them depends
 * on another through older entries.  NB_OK or the tape's error. */
nb_status nb_grad_graph_partial(nb_tape *tp, nb_tensor *const *outs, nb_tensor *const *seeds, int n_outs,
                                size_t first, nb_tensor *const *wrt, int n, nb_tensor **grads, const char *file,
                                int line);

/* A scratch region of the tape (src/graph/no_grad.c): nb_scratch_begin
 * marks the arena and the headers as a no-grad scope's begin does, without
 * changing any mode; nb_scratch_end gives back everything made since,
 * always (the caller, which has already taken the entries recorded since
 * off the tape, vouches that nothing older points into it), and retires
 * the headers, as a scope's end does when it can.  Scopes opened inside
 * must be closed inside: nb_no_grad_end refuses to end a region.
 * NB_OK or an error on the tape (too deep, out of memory). */
nb_status nb_scratch_begin(nb_tape *tp);
void nb_scratch_end(nb_tape *tp);
/* A no-grad scope that nb_no_grad_end refuses to end: nb_recompute's own,
 * around the function's first run, ended by nb_no_grad_end_guarded (with
 * any scope the function left open above it, as nb_scratch_end does). */
nb_status nb_no_grad_begin_guarded(nb_tape *tp);
void nb_no_grad_end_guarded(nb_tape *tp);

#endif /* NABLA_RECOMPUTE_H */
