/*
 * Record once, replay many (issue 23): a recorded tape captured as a graph
 * whose inputs take new values, replayed without recording again.
 *
 *   nb_tensor *x = nb_zeros(NULL, NB_F64, 1, NB_SHAPE(3));  // an input: a leaf
 *   nb_tensor *loss = f(tp, x, w);                          // recorded once, as usual
 *   nb_tensor *in[] = {x}, *out[] = {loss};
 *   nb_graph *g = nb_graph_capture(tp, in, 1, out, 1);
 *   for (...) {
 *       nb_graph_set_input(g, 0, batch);   // copied into x; shape and dtype must be x's
 *       nb_graph_forward(g);               // every recorded kernel again, same buffers
 *       nb_graph_backward(g, 0);           // d loss / d leaves, added into their gradients
 *       nb_optimizer_step(opt);            // or nb_graph_backward_step(g, 0, opt)
 *   }
 *   nb_graph_free(g);
 *
 * A replay runs the kernels of the entries the outputs depend on, in the
 * order they were recorded, with the arguments they were recorded with,
 * into the same output buffers: no allocation, no shape logic, no checks
 * per op.  Its values and gradients are bitwise those a new recording with
 * the same input values would give.
 *
 * What a replay does not redo: anything decided by values when the ops
 * were recorded.  C code that branched on a value (`if (nb_item(x) > 0)`),
 * an index chosen from values (index_select's C indices, gather's index
 * tensor, which is read when gather is recorded), tensors made from values
 * read out of the tape (nb_item, nb_grad without create_graph, results of
 * no-grad mode), random tensors (nb_rand_*, nb_attention_dropout_mask): a
 * replay keeps what the recording saw.  This is the user's responsibility,
 * as in ADOL-C; nb_guard below marks a comparison so that a replay that
 * would take the other branch is refused.  Dropout (nb_dropout and the
 * attention's dropout_p) does redraw: each replay takes one draw of the
 * generator it was recorded with per dropout, as a new recording would, so
 * that generator must outlive the graph.  See README.md, "Record once,
 * replay many".
 */
#ifndef NABLA_GRAPH_H
#define NABLA_GRAPH_H

#include "nabla.h"
#include "nabla_train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_graph nb_graph;

/* Captures the entries of tp that outputs[0..n_outputs) depend on.
 * inputs[0..n_inputs) are leaves (tensors made by the user, on the heap or
 * on tp) whose values change between replays (nb_graph_set_input); any other
 * leaf the graph reads is read as it is at each replay (parameters that an
 * optimizer updates, constants).  Refused (NULL, nb_last_error says why): an
 * input that is not a leaf or that no captured op reads, an output that is
 * not an op result on tp's current recording, a tensor of the graph made in
 * no-grad mode or written since an op used it, a tape with an error.  The
 * graph lives as long as tp's current recording: after nb_tape_reset (or a
 * record that errors the tape) replays are refused; free the graph before
 * its tape.  Graphs use tape memory for their gradients (allocated here). */
#define nb_graph_capture(tp, inputs, n_inputs, outputs, n_outputs) \
    nb_graph_capture_(tp, inputs, n_inputs, outputs, n_outputs, NB_SITE)
nb_graph *nb_graph_capture_(nb_tape *tp, nb_tensor *const *inputs, int n_inputs, nb_tensor *const *outputs,
                            int n_outputs, const char *file, int line);
void nb_graph_free(nb_graph *g);

/* Copies value's elements into input i: it must have the input's shape and
 * dtype (else refused, naming the input and both shapes). */
nb_status nb_graph_set_input(nb_graph *g, int i, const nb_tensor *value);
/* The tensors captured: inputs (write them with nb_set or nb_tensor_data as
 * well) and outputs (whose values a forward replay refreshes). */
nb_tensor *nb_graph_input(const nb_graph *g, int i);
nb_tensor *nb_graph_output(const nb_graph *g, int i);
size_t nb_graph_size(const nb_graph *g); /* entries replayed by a forward */

/* Forward: every captured kernel again, from the inputs' and leaves'
 * current values.  Then the guards are checked (see nb_guard). */
nb_status nb_graph_forward(nb_graph *g);
/* Backward from output k (one element, seeded with 1): the gradients of
 * the leaves that require one are added into (as nb_backward does; zero
 * them between steps), op results' gradients are those of this pass.
 * Reads the values of the last forward; refused if a tensor of the graph
 * was written since (nb_set on an intermediate, say), as nb_backward does. */
nb_status nb_graph_backward(nb_graph *g, int k);
/* Backward, then the optimizer's step, bitwise as nb_optimizer_backward_step
 * on a new recording gives (for plain SGD the update is applied inside the
 * backward, where the product ops compute the weight gradients). */
nb_status nb_graph_backward_step(nb_graph *g, int k, nb_optimizer *opt);

/* Records a comparison made in C: returns whether the one element of x is
 * greater than 0 (false for NaN), and records that outcome on the tape.  A
 * graph that captures the guard recomputes x at every forward replay and
 * refuses the replay (NB_ERR_STATE, naming the guard's file and line) when
 * the outcome differs from the recorded one: the C code would have taken
 * the other branch, so the captured ops are not the ones a new recording
 * would make.  Write branches as `if (nb_guard(tp, nb_sub(tp, a, b)))`
 * rather than `if (nb_item(a) > nb_item(b))`.  Errors (an errored or
 * non-scalar x) record nothing, error the tape and return false. */
#define nb_guard(tp, x) nb_guard_(tp, x, NB_SITE)
bool nb_guard_(nb_tape *tp, nb_tensor *x, const char *file, int line);
/* Whether replays check the guards (true when captured). */
void nb_graph_check_guards(nb_graph *g, bool check);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_GRAPH_H */
