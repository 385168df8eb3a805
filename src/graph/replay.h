/*
 * What the ops tell a replay (src/graph/replay.c, include/nabla_graph.h):
 * the few that decide something in their constructor, from a value or a
 * random draw, which a replay must redo or check.  Not installed.
 */
#ifndef NABLA_REPLAY_H
#define NABLA_REPLAY_H

#include "../internal.h"
#include "nabla_train.h"
#include "nabla_graph.h"

/* The draws a constructor made from the caller's generator, made again
 * (when `draw`) before the entry's forward replays, as a new recording
 * would make them: true if e is such an entry (nb_dropout, an attention
 * with dropout_p). */
bool nb_dropout_redraw(nb_entry *e, bool draw);
bool nb_attention_redraw(nb_entry *e, bool draw);
/* A softmax cross-entropy with class indices reads them in its kernels:
 * true if e is one.  nb_ce_check_targets then checks the targets' values as
 * the constructor did (false, the tape errored, on a bad one). */
bool nb_ce_has_indices(const nb_entry *e);
bool nb_ce_check_targets(nb_tape *tp, const nb_entry *e);
/* A custom op's forward, again, on a copy of entry i (phase NB_IN_REPLAY:
 * nb_op_save gives back the memory it gave when recorded). */
void nb_user_replay_forward(nb_tape *tp, size_t i);
/* The guard op of nb_guard (src/graph/replay.c). */
bool nb_is_guard(const nb_entry *e);
/* Plain SGD inside backward for a replay (src/graph/backward.c): marks the
 * parameters of params[0..n) that the fused update may apply to, as
 * nb_backward_sgd_ does, and sets the rate; nb_sgd_end clears them. */
void nb_sgd_begin(nb_tape *tp, const nb_tensor *loss, nb_tensor *const *params, size_t n, double lr);
void nb_sgd_end(nb_tape *tp, nb_tensor *const *params, size_t n);
/* Applies the optimizer's schedule and says whether its step can be fused
 * into backward (plain SGD, one rate, no decay): then *lr, *params and *n
 * are set (src/train/optimizer.c). */
bool nb_optimizer_fusable(nb_optimizer *opt, double *lr, nb_tensor *const **params, size_t *n);

/* Scalar code's replay (src/graph/replay_scalar.c): a compact program for
 * a graph of built-in element-wise ops on single float64 elements.
 * nb_scalar_compile gives NULL when the graph is not one (or, *nomem set,
 * when memory ran out); it moves the results' values into its arrays. */
typedef struct nb_scalar_program nb_scalar_program;
nb_scalar_program *nb_scalar_compile(nb_tape *tp, const uint32_t *fwd, size_t n, nb_tensor *const *outputs,
                                     int n_outputs, bool *nomem);
void nb_scalar_free(nb_scalar_program *p);
void nb_scalar_forward(nb_scalar_program *p);
nb_status nb_scalar_backward(nb_scalar_program *p, int k);
bool nb_scalar_intact(const nb_scalar_program *p, nb_tensor *const *outputs);

#endif /* NABLA_REPLAY_H */
