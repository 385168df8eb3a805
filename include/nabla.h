/*
 * nabla: reverse-mode automatic differentiation in C.
 *
 * The model in one paragraph.  Tensors are N-dimensional, contiguous,
 * row-major arrays of float32 or float64.  Every op runs at once and is
 * recorded on a tape (nb_tape): a flat array in execution order, which is
 * therefore already a topological order.  nb_backward() walks that array in
 * reverse, calls each op's backward and adds into the gradients of its inputs.
 *
 * Where a tensor lives.  A tensor created with tape == NULL lives on the heap
 * until nb_tensor_free(): use that for parameters.  A tensor created on a tape
 * (every op result, and creation calls given a tape) lives in the tape's arena
 * and is reclaimed by nb_tape_reset(), which keeps the memory for the next
 * step: once a training loop is warm it makes no malloc at all.
 *
 * Errors (the cairo model).  No call aborts or exits on bad input.  An op that
 * fails returns an "errored" tensor and records a message naming the op, the
 * shapes and the caller's file and line on the tape.  An op given an errored
 * input returns an errored tensor without doing work, so a chain of ops can be
 * checked once at the end with nb_tape_status() or nb_tensor_status().
 * Errored tensors are shared, immutable objects: never write through them.
 *
 * Most calls are macros that pass the caller's __FILE__ and __LINE__ on to the
 * function of the same name with a trailing underscore.
 */
#ifndef NABLA_H
#define NABLA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>

#ifdef __cplusplus
#include <initializer_list>
extern "C" {
#endif

#define NB_VERSION "0.1.0"
#define NB_MAX_DIMS 8   /* tensors have 0 to NB_MAX_DIMS dimensions */
#define NB_NAME_MAX 32  /* a tensor's name, including the final NUL */

typedef enum { NB_F32 = 0, NB_F64 = 1 } nb_dtype;

typedef enum {
    NB_OK = 0,
    NB_ERR_NULL,      /* a NULL tensor or tape was passed */
    NB_ERR_SHAPE,     /* shapes do not fit the op */
    NB_ERR_DTYPE,     /* inputs of different dtypes */
    NB_ERR_ARG,       /* an argument out of range (axis, size, ...) */
    NB_ERR_NOMEM,     /* an allocation failed */
    NB_ERR_STATE,     /* a call in the wrong state (stale tensor, ...) */
    NB_ERR_IO,        /* a file could not be read or written */
    NB_ERR_VALUE,     /* a bad value (NaN, a class index out of range, ...) */
    NB_ERR_UNSUPPORTED, /* not built in (Graphviz missing, ...) */
    NB_STATUS_COUNT
} nb_status;

typedef struct nb_tensor nb_tensor;
typedef struct nb_tape nb_tape;

/* Where a call was made from; filled in by the macros below. */
#define NB_SITE __FILE__, __LINE__

/* Builds the (ndim, shape) argument pair from a list of sizes:
 * nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)). */
#ifndef __cplusplus
#define NB_SHAPE(...) \
    (int)(sizeof((size_t[]){__VA_ARGS__}) / sizeof(size_t)), (const size_t[]){__VA_ARGS__}
#else /* C++ has no compound literals: the array of a temporary initializer list,
         alive until the end of the call it is written in */
#define NB_SHAPE(...)                                                   \
    static_cast<int>(std::initializer_list<size_t>{__VA_ARGS__}.size()), \
        std::initializer_list<size_t>{__VA_ARGS__}.begin()
#endif
/* The shape of a 0-dimensional tensor (a scalar). */
#define NB_SCALAR 0, NULL

/* ------------------------------------------------------------------ status */

const char *nb_status_string(nb_status status);
/* The message of the last error raised on this thread ("" if none). */
const char *nb_last_error(void);
/* Its status (NB_OK if none), for calls that return NULL on error. */
nb_status nb_last_status(void);

/* ------------------------------------------------------------------ threads */

/* nabla's threads.  With n > 1, large matrix products become up to n
 * single-threaded CBLAS calls on blocks of rows of the result and large
 * element-wise kernels are split n ways.  Any call sets OpenBLAS to one
 * thread, so that only one pool runs (until then OpenBLAS threads its
 * products itself, as configured by OPENBLAS_NUM_THREADS, and nabla's own
 * work runs on the calling thread).  Results are bitwise the same for every
 * n, on every kernel OpenBLAS picks for the CPU: blocks are cut where the
 * kernels' arithmetic cannot tell (see src/ops/matmul.c).  Other threads
 * may run ops meanwhile (theirs run serially while the pool is resized);
 * from inside a part of nb_parallel_for it is refused (NB_ERR_STATE: the
 * pool would wait for itself). */
nb_status nb_set_threads(int n);
int nb_get_threads(void);

/* ------------------------------------------------------------------ tapes */

nb_tape *nb_tape_new(void);
/* Frees the tape and ends its tensors.  Refused, as nb_tape_reset is, from
 * inside the user's code that the tape runs, and from nb_gradcheck's
 * function on the tape it is given. */
void nb_tape_free(nb_tape *tp);
/* Forgets every recorded entry and every tensor on the tape, keeping the
 * memory for the next step.  Clears the tape's error.
 *
 * Refused while the tape runs the user's code (a custom op's callback,
 * see nabla_op.h, or the backward hook): the call that runs it still uses
 * the tape's memory, so the reset does nothing, the tape gets NB_ERR_STATE
 * naming the callback, and that call (nb_op, nb_backward, nb_grad, a
 * picture) returns the error.  Reset once it has returned.
 *
 * The contract for tensors kept across a reset (or past nb_tape_free):
 * such a tensor is stale, however many resets ago it was made, and every
 * call refuses it.  Ops, nb_backward, nb_grad and the other calls taking
 * tensors return NB_ERR_STATE (ops an errored tensor, the message naming
 * the op, the input and, while the tape still knows it, where the tensor
 * was made); nb_tensor_status() returns NB_ERR_STATE; accessors return
 * NaN, NULL, 0 or "" and writers do nothing.  A stale pointer never equals
 * a tensor made since: no tensor header address is given out twice in a
 * process until its address space is used up (Linux; headers take about
 * 100 bytes a tensor: some 10^12 tensors, or under an address-space limit
 * (ulimit -v) about limit/100 bytes of them), after which the oldest
 * addresses are used again: only a tensor kept for longer than that can
 * go unnoticed. */
void nb_tape_reset(nb_tape *tp);
/* The first error raised on the tape since it was made or reset. */
nb_status nb_tape_status(const nb_tape *tp);
const char *nb_tape_error(const nb_tape *tp);
size_t nb_tape_size(const nb_tape *tp); /* number of recorded entries */
/* Turns recording of gradients on or off (a no-grad region); returns the
 * previous setting.  Ops still run, but their results require no gradient. */
bool nb_tape_set_grad_enabled(nb_tape *tp, bool enabled);
/* No-grad mode, as torch.no_grad (for evaluation and inference): ops run
 * and give the same values, bit for bit, but record nothing for backward,
 * so the tape's entries do not grow.  Their results require no gradient
 * and are leaves (torch: requires_grad False, is_leaf True, no grad_fn);
 * nb_backward and nb_grad from one are refused (NB_ERR_STATE, saying it
 * was computed in no-grad mode).  Parameters are read, never changed: their
 * gradients stay as they were.  nb_tape_no_grad(tp, true) also turns
 * gradients off (nb_tape_set_grad_enabled(tp, false)), false turns both
 * back on; returns whether the mode was on.  Results stay on the tape until
 * nb_tape_reset, as any result.  nb_grad and nb_hvp still record what
 * they need. */
bool nb_tape_no_grad(nb_tape *tp, bool on);
bool nb_tape_no_grad_mode(const nb_tape *tp);
/* A no-grad scope: nb_no_grad_begin turns no-grad mode on, and
 * nb_no_grad_end puts the previous modes back and frees every tensor made
 * on the tape since the begin (their memory is reused by the next ops;
 * they become stale: any later use is refused with NB_ERR_STATE, as after
 * a reset), while the tape's other tensors live on.  So
 *     for each batch { nb_no_grad_begin(tp); y = model(tp, x); read y;
 *                      nb_no_grad_end(tp); }
 * holds one batch's intermediates at a time without resetting the tape
 * (copy a result you keep to the heap with nb_copy(NULL, y) before the
 * end).  The end keeps the scope's tensors (until the reset) instead, as
 * it cannot free them safely, when inside it an entry was recorded
 * (nb_grad, nb_hvp), a backward pass ran, a tape tensor got a gradient or
 * a name, or the tape was reset.  Scopes nest up to 16 deep.  Errors:
 * NB_ERR_NULL, NB_ERR_STATE (an end without a begin, too deep), NB_ERR_NOMEM
 * (the first begin on a tape allocates its marks). */
nb_status nb_no_grad_begin(nb_tape *tp);
nb_status nb_no_grad_end(nb_tape *tp);
/* Training or evaluation: in evaluation (training false) dropout passes
 * its input through.  Returns the previous setting; training by default. */
bool nb_tape_set_training(nb_tape *tp, bool training);
bool nb_tape_training(const nb_tape *tp);
/* Bytes the tape holds for tensors and entries (grows, never shrinks). */
size_t nb_tape_memory(const nb_tape *tp);

/* ------------------------------------------------------------ tensors */

/* Creation.  tape == NULL: a heap tensor the caller frees with
 * nb_tensor_free(); otherwise the tensor lives on the tape until reset.
 * Shapes are given as (ndim, shape), for which NB_SHAPE(...) can stand:
 *   nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3))
 *   nb_from_array(tp, NB_F64, NB_SHAPE(2), (double[]){1.5, -2}) */
#define nb_empty(tp, dt, ...) nb_empty_(tp, dt, __VA_ARGS__, NB_SITE)
#define nb_zeros(tp, dt, ...) nb_full_(tp, dt, __VA_ARGS__, 0.0, NB_SITE)
#define nb_ones(tp, dt, ...) nb_full_(tp, dt, __VA_ARGS__, 1.0, NB_SITE)
#define nb_full(tp, dt, ...) nb_full_(tp, dt, __VA_ARGS__, NB_SITE) /* ndim, shape, v */
/* From a C array of ndim/shape elements in row-major order. */
#define nb_from_f32(tp, ...) nb_from_f32_(tp, __VA_ARGS__, NB_SITE) /* ndim, shape, data */
#define nb_from_f64(tp, ...) nb_from_f64_(tp, __VA_ARGS__, NB_SITE) /* ndim, shape, data */
/* From doubles, stored as dtype dt. */
#define nb_from_array(tp, dt, ...) \
    nb_from_array_(tp, dt, __VA_ARGS__, NB_SITE) /* ndim, shape, data */
#define nb_scalar(tp, dt, v) nb_full_(tp, dt, 0, NULL, v, NB_SITE)
/* A copy of t's values (not its gradient), with the same dtype. */
#define nb_copy(tp, t) nb_copy_(tp, t, NB_SITE)

nb_tensor *nb_empty_(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                     const char *file, int line);
nb_tensor *nb_full_(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape, double value,
                    const char *file, int line);
nb_tensor *nb_from_f32_(nb_tape *tp, int ndim, const size_t *shape, const float *data,
                        const char *file, int line);
nb_tensor *nb_from_f64_(nb_tape *tp, int ndim, const size_t *shape, const double *data,
                        const char *file, int line);
nb_tensor *nb_from_array_(nb_tape *tp, nb_dtype dt, int ndim, const size_t *shape,
                          const double *data, const char *file, int line);
nb_tensor *nb_copy_(nb_tape *tp, const nb_tensor *t, const char *file, int line);

/* Frees a heap tensor and its gradient.  NULL, errored and tape tensors are
 * ignored (the tape owns those). */
void nb_tensor_free(nb_tensor *t);

/* Properties.  All accept errored tensors (which have no dimensions). */
nb_status nb_tensor_status(const nb_tensor *t);
nb_dtype nb_tensor_dtype(const nb_tensor *t);
int nb_tensor_ndim(const nb_tensor *t);
size_t nb_tensor_dim(const nb_tensor *t, int axis); /* negative counts from the end */
size_t nb_tensor_size(const nb_tensor *t);          /* number of elements */
const size_t *nb_tensor_shape(const nb_tensor *t);
/* Writes "(2, 3)" into buf; returns buf. */
char *nb_shape_string(const nb_tensor *t, char *buf, size_t bufsize);

/* Names show in printing and in the graph picture. */
void nb_tensor_set_name(nb_tensor *t, const char *name);
const char *nb_tensor_name(const nb_tensor *t);

/* Raw storage: float* for NB_F32, double* for NB_F64; NULL if errored or
 * gone with a tape reset.  nb_tensor_data counts as a write (the caller may
 * change the values through it): ops recorded before the call can no longer
 * be back-propagated (nb_backward refuses with NB_ERR_STATE, since they
 * saw other values).  Read through nb_tensor_const_data, which does not
 * count; and keep neither pointer past the step it was taken in. */
void *nb_tensor_data(nb_tensor *t);
const void *nb_tensor_const_data(const nb_tensor *t);
/* Element access by flat (row-major) index or by index tuple, as double.
 * An index out of range returns NaN (get) or does nothing (set).  A set
 * counts as a write, as nb_tensor_data does. */
double nb_get(const nb_tensor *t, size_t flat_index);
void nb_set(nb_tensor *t, size_t flat_index, double value);
double nb_get_at(const nb_tensor *t, const size_t *index);
void nb_set_at(nb_tensor *t, const size_t *index, double value);
double nb_item(const nb_tensor *t); /* the value of a 1-element tensor, else NaN */
/* Copies all values into out (t's size doubles). */
void nb_to_f64(const nb_tensor *t, double *out);

/* Gradients.  A leaf tensor (one the user made) requires a gradient when
 * marked so: parameters and inputs to differentiate with respect to.  An op's
 * result requires one when any input does (outside a no-grad region). */
void nb_requires_grad(nb_tensor *t, bool on);
bool nb_tensor_requires_grad(const nb_tensor *t);
/* d loss / d t after nb_backward(), or NULL if none was computed. */
void *nb_grad_data(nb_tensor *t);
double nb_grad_get(nb_tensor *t, size_t flat_index); /* 0 if none computed */
bool nb_has_grad(const nb_tensor *t);
/* Zeroes t's gradient.  Leaf gradients add up over backward calls until
 * zeroed, as in PyTorch. */
void nb_zero_grad(nb_tensor *t);
void nb_zero_grads(nb_tensor *const *params, int n);

/* Human-readable printing: small tensors in full, large ones summarised. */
void nb_print(FILE *out, const nb_tensor *t);
void nb_print_grad(FILE *out, nb_tensor *t);

/* ------------------------------------------------------------ random */

/* A seeded generator (xoshiro256**): the same seed yields the same numbers on
 * every run and platform. */
typedef struct { uint64_t s[4]; bool has_spare; double spare; } nb_rng;
void nb_rng_seed(nb_rng *rng, uint64_t seed);
uint64_t nb_rng_next(nb_rng *rng);
void nb_rng_fill(nb_rng *rng, uint64_t *out, size_t n); /* n calls of nb_rng_next, faster */
double nb_rng_uniform(nb_rng *rng);  /* in [0, 1) */
double nb_rng_normal(nb_rng *rng);   /* mean 0, standard deviation 1 */
/* nb_rand_uniform(tp, rng, dt, ndim, shape, lo, hi) and
 * nb_rand_normal(tp, rng, dt, ndim, shape, mean, std) */
#define nb_rand_uniform(tp, rng, dt, ...) nb_rand_uniform_(tp, rng, dt, __VA_ARGS__, NB_SITE)
#define nb_rand_normal(tp, rng, dt, ...) nb_rand_normal_(tp, rng, dt, __VA_ARGS__, NB_SITE)
nb_tensor *nb_rand_uniform_(nb_tape *tp, nb_rng *rng, nb_dtype dt, int ndim,
                            const size_t *shape, double lo, double hi, const char *file,
                            int line);
nb_tensor *nb_rand_normal_(nb_tape *tp, nb_rng *rng, nb_dtype dt, int ndim,
                           const size_t *shape, double mean, double std, const char *file,
                           int line);

/* ------------------------------------------------------------ backward */

/* Back-propagates from a 1-element loss (seed d loss/d loss = 1). */
#define nb_backward(loss) nb_backward_(loss, NULL, NB_SITE)
/* Back-propagates from any output, with an explicit seed gradient of the
 * output's shape and dtype (a vector-Jacobian product). */
#define nb_backward_seed(out, seed) nb_backward_(out, seed, NB_SITE)
nb_status nb_backward_(nb_tensor *out, const nb_tensor *seed, const char *file, int line);

/* Gradients as tensors (PyTorch's autograd.grad): grads[i] = d out/d wrt[i]
 * (seeded like nb_backward_seed when out has several elements), returned as
 * tensors on out's tape of wrt[i]'s shape, zeros for a wrt[i] that out does
 * not depend on.  No tensor's own gradient (nb_grad_get) changes.  wrt may
 * hold leaves and intermediate results alike.
 * With create_graph, the backward computation is recorded as ordinary ops,
 * so the gradients can be differentiated again, to any order (every
 * built-in op supports it; an op of your own needs a backward_graph, see
 * nabla_op.h).  Without it, the fast backward pass of nb_backward runs.
 * On failure every grads[i] is an errored tensor, as are hv[i] of nb_hvp
 * and result[0] of nb_jvp below. */
#define nb_grad(out, wrt, n, grads, create_graph) nb_grad_(out, NULL, wrt, n, grads, create_graph, NB_SITE)
#define nb_grad_seed(out, seed, wrt, n, grads, create_graph) \
    nb_grad_(out, seed, wrt, n, grads, create_graph, NB_SITE)
nb_status nb_grad_(nb_tensor *out, nb_tensor *seed, nb_tensor *const *wrt, int n, nb_tensor **grads,
                   bool create_graph, const char *file, int line);
/* Hessian-vector product of a 1-element out: hv[i] = sum_j d²out/dwrt_i dwrt_j v_j,
 * the gradient of (d out/d wrt) · v; two backward passes, the first
 * recorded (a small constant times one gradient's cost).  v is a constant,
 * even when it is one of wrt or depends on them (as in PyTorch's
 * autograd.functional.hvp); with create_graph, hv can be differentiated
 * with respect to wrt but not v. */
#define nb_hvp(out, wrt, n, v, hv) nb_hvp_(out, wrt, n, v, hv, false, NB_SITE)
nb_status nb_hvp_(nb_tensor *out, nb_tensor *const *wrt, int n, nb_tensor *const *v, nb_tensor **hv,
                  bool create_graph, const char *file, int line);
/* Forward-mode product J t (the change of out along tangents t of wrt),
 * computed by the double-vjp trick: g(u) = Jᵀu recorded with a dummy seed
 * u, then d(g(u) · t)/du = J t.  Two backward passes; result has out's shape. */
#define nb_jvp(out, wrt, n, tangents, result) nb_jvp_(out, wrt, n, tangents, result, NB_SITE)
nb_status nb_jvp_(nb_tensor *out, nb_tensor *const *wrt, int n, nb_tensor *const *tangents, nb_tensor **result,
                  const char *file, int line);
/* Dense matrices for small problems: the Jacobian (out.size, x.size), one
 * backward pass per element of out, and the Hessian (x.size, x.size) of a
 * 1-element out, one per element of x.  Errored tensor on failure. */
#define nb_jacobian(out, x) nb_jacobian_(out, x, NB_SITE)
#define nb_hessian(out, x) nb_hessian_(out, x, NB_SITE)
nb_tensor *nb_jacobian_(nb_tensor *out, nb_tensor *x, const char *file, int line);
nb_tensor *nb_hessian_(nb_tensor *out, nb_tensor *x, const char *file, int line);

/* Recomputation (checkpointing, torch.utils.checkpoint): memory traded for
 * time.  nb_recompute runs fn(tp, inputs, outputs, ctx), which fills
 * outputs[0..n_outputs) from inputs[0..n_inputs) with ops on tp, keeping
 * none of its intermediates (it runs in a no-grad scope), and records one
 * entry for the call and one per output instead of fn's ops.  Backward runs
 * fn again, recording, in a scratch region of the tape, backpropagates
 * through what it recorded and frees it: the tape holds one call's
 * intermediates at a time.  Values and gradients are bitwise those of
 * calling fn directly (with create_graph: the first derivatives of inputs
 * used only inside fn; the others, and second derivatives, to rounding,
 * as their sums associate otherwise).  The rules:
 *  - inputs are every tensor fn reads whose gradient is wanted, parameters
 *    included: backward refuses (NB_ERR_ARG, naming the tensor and the op
 *    that read it) a tensor that requires a gradient read some other way
 *    (through ctx), whose gradient would be lost;
 *  - fn must compute the same values when run again: the generators it
 *    draws from (dropout) go in opts->rngs, whose states are kept at the
 *    call, set back for the recomputation and then restored (torch's
 *    preserve_rng_state); the tape's training flag is kept too.  Results
 *    that come out different, or fn failing when run again, error the tape
 *    (NB_ERR_STATE), and backward returns the error;
 *  - fn returns NB_OK, or an error status; an op failing inside it errors
 *    the tape as usual.  Either way nb_recompute returns the error and
 *    every outputs[k] is an errored tensor;
 *  - with gradients off (no input requires one, nb_tape_no_grad,
 *    nb_tape_set_grad_enabled false), fn simply runs, recorded as ever;
 *  - nb_grad with create_graph runs fn again on the tape (its ops stay, as
 *    the gradient's graph goes through them) and differentiates it with
 *    create_graph;
 *  - fn may call the library again: nb_recompute (nested checkpoints),
 *    nb_grad, no-grad scopes it also ends.
 * opts NULL: no generators. */
typedef nb_status (*nb_recompute_fn)(nb_tape *tp, nb_tensor *const *inputs, nb_tensor **outputs, void *ctx);
typedef struct {
    nb_rng *const *rngs; /* the generators fn draws from */
    int n_rngs;
} nb_recompute_opts;
#define nb_recompute(tp, fn, ctx, inputs, n_inputs, outputs, n_outputs, opts) \
    nb_recompute_(tp, fn, ctx, inputs, n_inputs, outputs, n_outputs, opts, NB_SITE)
nb_status nb_recompute_(nb_tape *tp, nb_recompute_fn fn, void *ctx, nb_tensor *const *inputs, int n_inputs,
                        nb_tensor **outputs, int n_outputs, const nb_recompute_opts *opts, const char *file,
                        int line);

/* Explain mode: backward keeps, for every edge from an input to an op, what
 * the op added into that input's gradient (upstream gradient times local
 * derivative), so that pictures can show the chain rule's numbers.  Costs
 * memory on the tape; off by default. */
void nb_tape_set_explain(nb_tape *tp, bool on);

/* Anomaly mode: every op's result is checked for NaN and infinity after it
 * runs, and every gradient after each step of backward.  The first op that
 * produces one errors the tape, with a message naming the op, its call site,
 * the first bad element and its inputs' statistics.  Slower; for debugging. */
void nb_tape_set_anomaly_mode(nb_tape *tp, bool on);

/* Named scopes (a layer, a block) group the ops recorded between begin and
 * end; they nest, and pictures can draw them as clusters. */
nb_status nb_scope_begin(nb_tape *tp, const char *name);
void nb_scope_end(nb_tape *tp);

/* The recorded graph, walked back from a result (micrograd's _op and
 * _prev): the name of the op that made t ("" for a leaf, an errored tensor
 * or one from before a reset), how many inputs it took, and the k-th of
 * them (NULL out of range).  For teaching, and for naming the tensors that
 * nb_grad records with create_graph so that pictures can show them. */
const char *nb_tensor_op(const nb_tensor *t);
int nb_tensor_n_inputs(const nb_tensor *t);
nb_tensor *nb_tensor_input(const nb_tensor *t, int k);

/* Called once per tape entry that backward processes, after the entry's
 * backward ran (for step-by-step pictures).  It may call nb_grad (a pass
 * inside the pass, which the hook does not see); ops it records are taken
 * off the tape when it returns, as a custom op's callbacks' (nabla_op.h).
 * It may not reset or free the tape (refused: see nb_tape_reset). */
typedef void (*nb_backward_hook)(nb_tape *tp, size_t entry_index, void *user);
void nb_tape_set_backward_hook(nb_tape *tp, nb_backward_hook hook, void *user);

/* ------------------------------------------------------------ ops */

/* Matrix product of 2-D tensors through CBLAS: op(a) . op(b), where op
 * transposes when the flag is set, without copying. */
#define nb_matmul(tp, a, b) nb_matmul_(tp, a, b, false, false, NB_SITE)
#define nb_matmul_t(tp, a, b, ta, tb) nb_matmul_(tp, a, b, ta, tb, NB_SITE)
nb_tensor *nb_matmul_(nb_tape *tp, nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b,
                      const char *file, int line);

/* A layer's affine map in one op: op(a) . op(b) + bias.  a is x of shape
 * (..., in), any number of leading axes (one gemm: they are rows), and the
 * result is (..., out); b is the (in, out) weight, or with trans_b PyTorch's
 * (out, in) nn.Linear weight, which nb_linear_torch(tp, x, W, bias) reads as
 * F.linear does: x Wᵀ + bias, so a state_dict loads without transposes.
 * bias is a row ((out,), or (1, out) for an x of two axes or more, added to
 * every row) or, for a 2-D x, a column ((m, 1), added to every column, as in
 * the seeds' W . A + b).  trans_a reads a 2-D a transposed (refused for
 * other ranks).  The same result as nb_add(nb_matmul), one pass cheaper (the
 * bias goes in through gemm's beta); without a bias, nb_matmul_t(tp, x, W,
 * false, true) is F.linear(x, W). */
#define nb_linear(tp, a, b, bias) nb_linear_(tp, a, b, bias, false, false, NB_SITE)
#define nb_linear_torch(tp, x, W, bias) nb_linear_(tp, x, W, bias, false, true, NB_SITE)
#define nb_linear_t(tp, a, b, bias, ta, tb) nb_linear_(tp, a, b, bias, ta, tb, NB_SITE)
nb_tensor *nb_linear_(nb_tape *tp, nb_tensor *a, nb_tensor *b, nb_tensor *bias, bool trans_a,
                      bool trans_b, const char *file, int line);

/* Element-wise with NumPy broadcasting: shapes are aligned from the right and
 * each pair of sizes must be equal or contain a 1. */
#define nb_add(tp, a, b) nb_add_(tp, a, b, NB_SITE)
#define nb_sub(tp, a, b) nb_sub_(tp, a, b, NB_SITE)
#define nb_mul(tp, a, b) nb_mul_(tp, a, b, NB_SITE)
#define nb_div(tp, a, b) nb_div_(tp, a, b, NB_SITE)
nb_tensor *nb_add_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line);
nb_tensor *nb_sub_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line);
nb_tensor *nb_mul_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line);
nb_tensor *nb_div_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line);
/* The larger / smaller of a and b, element by element (broadcasting); at a
 * tie each side gets half the gradient, as in PyTorch. */
#define nb_maximum(tp, a, b) nb_maximum_(tp, a, b, NB_SITE)
#define nb_minimum(tp, a, b) nb_minimum_(tp, a, b, NB_SITE)
nb_tensor *nb_maximum_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line);
nb_tensor *nb_minimum_(nb_tape *tp, nb_tensor *a, nb_tensor *b, const char *file, int line);

/* Element-wise functions of one tensor. */
#define nb_neg(tp, a) nb_neg_(tp, a, NB_SITE)
#define nb_scale(tp, a, s) nb_scale_(tp, a, s, NB_SITE)         /* a * s */
#define nb_add_scalar(tp, a, s) nb_add_scalar_(tp, a, s, NB_SITE) /* a + s */
#define nb_exp(tp, a) nb_exp_(tp, a, NB_SITE)
#define nb_log(tp, a) nb_log_(tp, a, NB_SITE)
#define nb_sigmoid(tp, a) nb_sigmoid_(tp, a, NB_SITE)
#define nb_tanh(tp, a) nb_tanh_(tp, a, NB_SITE)
#define nb_relu(tp, a) nb_relu_(tp, a, NB_SITE)
#define nb_leaky_relu(tp, a, slope) nb_leaky_relu_(tp, a, slope, NB_SITE)
#define nb_square(tp, a) nb_square_(tp, a, NB_SITE)
#define nb_pow(tp, a, p) nb_pow_(tp, a, p, NB_SITE)             /* a ^ p, scalar p */
#define nb_sin(tp, a) nb_sin_(tp, a, NB_SITE)
/* Values limited to [lo, hi]; the gradient is 1 inside and 0 where clamped
 * (log(nb_clamp(p, 1e-12, 1)) stays finite at p = 0). */
#define nb_clamp(tp, a, lo, hi) nb_clamp_(tp, a, lo, hi, NB_SITE)
#define nb_cos(tp, a) nb_cos_(tp, a, NB_SITE)
nb_tensor *nb_neg_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_scale_(nb_tape *tp, nb_tensor *a, double s, const char *file, int line);
nb_tensor *nb_add_scalar_(nb_tape *tp, nb_tensor *a, double s, const char *file, int line);
nb_tensor *nb_exp_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_log_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_sigmoid_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_tanh_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_relu_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_leaky_relu_(nb_tape *tp, nb_tensor *a, double slope, const char *file, int line);
nb_tensor *nb_square_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_pow_(nb_tape *tp, nb_tensor *a, double p, const char *file, int line);
nb_tensor *nb_sin_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_clamp_(nb_tape *tp, nb_tensor *a, double lo, double hi, const char *file, int line);
nb_tensor *nb_cos_(nb_tape *tp, nb_tensor *a, const char *file, int line);
/* More functions of one tensor.  abs' (0) is 0 and sqrt' (0) is +inf, as in
 * PyTorch; log1p(x) = log(1 + x) and expm1(x) = e^x - 1 are exact near 0;
 * softplus(x) = log(1 + e^x) without overflow or underflow; erf is the
 * error function; gelu is x Φ(x) (the erf form), gelu_tanh its tanh
 * approximation. */
#define nb_abs(tp, a) nb_abs_(tp, a, NB_SITE)
#define nb_sqrt(tp, a) nb_sqrt_(tp, a, NB_SITE)
#define nb_erf(tp, a) nb_erf_(tp, a, NB_SITE)
#define nb_log1p(tp, a) nb_log1p_(tp, a, NB_SITE)
#define nb_expm1(tp, a) nb_expm1_(tp, a, NB_SITE)
#define nb_softplus(tp, a) nb_softplus_(tp, a, NB_SITE)
#define nb_gelu(tp, a) nb_gelu_(tp, a, NB_SITE)
#define nb_gelu_tanh(tp, a) nb_gelu_tanh_(tp, a, NB_SITE)
nb_tensor *nb_abs_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_sqrt_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_erf_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_log1p_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_expm1_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_softplus_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_gelu_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_gelu_tanh_(nb_tape *tp, nb_tensor *a, const char *file, int line);

/* Reductions.  axis may be negative (counted from the end); keepdims keeps the
 * reduced axis with size 1. */
#define nb_sum(tp, a) nb_sum_all_(tp, a, false, NB_SITE)
#define nb_mean(tp, a) nb_sum_all_(tp, a, true, NB_SITE)
#define nb_sum_axis(tp, a, axis, keepdims) nb_sum_axis_(tp, a, axis, keepdims, false, NB_SITE)
#define nb_mean_axis(tp, a, axis, keepdims) nb_sum_axis_(tp, a, axis, keepdims, true, NB_SITE)
nb_tensor *nb_sum_all_(nb_tape *tp, nb_tensor *a, bool mean, const char *file, int line);
nb_tensor *nb_sum_axis_(nb_tape *tp, nb_tensor *a, int axis, bool keepdims, bool mean,
                        const char *file, int line);

/* Shapes.  reshape shares storage (one size may be given as -1 to infer it);
 * transpose swaps two axes into new storage; detach shares storage and cuts
 * the gradient; cast converts the dtype (differentiably). */
#define nb_reshape(tp, a, ...) nb_reshape_(tp, a, __VA_ARGS__, NB_SITE) /* ndim, shape */
/* The (ndim, shape) pair for nb_reshape, where one size may be -1. */
#define NB_DIMS(...) \
    (int)(sizeof((long[]){__VA_ARGS__}) / sizeof(long)), (const long[]){__VA_ARGS__}
#define nb_transpose(tp, a, axis0, axis1) nb_transpose_(tp, a, axis0, axis1, NB_SITE)
#define nb_detach(tp, a) nb_detach_(tp, a, NB_SITE)
#define nb_cast(tp, a, dt) nb_cast_(tp, a, dt, NB_SITE)
nb_tensor *nb_reshape_(nb_tape *tp, nb_tensor *a, int ndim, const long *shape,
                       const char *file, int line);
nb_tensor *nb_transpose_(nb_tape *tp, nb_tensor *a, int axis0, int axis1, const char *file,
                         int line);
nb_tensor *nb_detach_(nb_tape *tp, nb_tensor *a, const char *file, int line);
nb_tensor *nb_cast_(nb_tape *tp, nb_tensor *a, nb_dtype dt, const char *file, int line);

/* More shapes.
 *   squeeze / unsqueeze: remove a size-1 axis / insert one (views).
 *   permute: y's axis d is x's axis axes[d] (all ndim axes, each once);
 *            transpose is the permute that swaps two.
 *   broadcast_to: x repeated along axes where it has size 1 (or none), as
 *            NumPy would broadcast it to `shape`; the gradient sums back.
 *   pad: zeros around x: pads[2d] before and pads[2d + 1] after axis d. */
#define nb_squeeze(tp, a, axis) nb_squeeze_(tp, a, axis, NB_SITE)
#define nb_unsqueeze(tp, a, axis) nb_unsqueeze_(tp, a, axis, NB_SITE)
#define nb_permute(tp, a, axes) nb_permute_(tp, a, axes, NB_SITE)
#define nb_broadcast_to(tp, a, ...) nb_broadcast_to_(tp, a, __VA_ARGS__, NB_SITE) /* ndim, shape */
#define nb_pad(tp, a, pads) nb_pad_(tp, a, pads, NB_SITE)
/* The reverse of broadcast_to: x summed over the axes where `shape`
 * (aligned from the right) has size 1 or none; x itself if already so. */
#define nb_sum_to(tp, a, ...) nb_sum_to_(tp, a, __VA_ARGS__, NB_SITE) /* ndim, shape */
nb_tensor *nb_sum_to_(nb_tape *tp, nb_tensor *a, int ndim, const size_t *shape, const char *file, int line);
nb_tensor *nb_squeeze_(nb_tape *tp, nb_tensor *a, int axis, const char *file, int line);
nb_tensor *nb_unsqueeze_(nb_tape *tp, nb_tensor *a, int axis, const char *file, int line);
nb_tensor *nb_permute_(nb_tape *tp, nb_tensor *a, const int *axes, const char *file, int line);
nb_tensor *nb_broadcast_to_(nb_tape *tp, nb_tensor *a, int ndim, const size_t *shape, const char *file,
                            int line);
nb_tensor *nb_pad_(nb_tape *tp, nb_tensor *a, const size_t *pads, const char *file, int line);
/* Attention heads, one copy each way (src/ops/heads.c):
 *   split_heads: x (..., T, H·hd) -> (..., H, T, hd), as x.view(..., T, H, hd).transpose(-3, -2);
 *   split_qkv:   a fused projection (..., T, 3·H·hd) -> out[0..2] = q, k, v, each (..., H, T, hd)
 *                (qkv.split(H·hd, -1), then each split into heads); returns the first error;
 *   merge_heads: x (..., H, T, hd) -> (..., T, H·hd), the inverse. */
#define nb_split_heads(tp, x, H) nb_split_heads_(tp, x, H, 1, 0, NB_SITE)
#define nb_split_qkv(tp, qkv, H, out) nb_split_qkv_(tp, qkv, H, out, NB_SITE)
#define nb_merge_heads(tp, x) nb_merge_heads_(tp, x, NB_SITE)
/* part `part` of `parts` equal chunks of x's last axis, split into heads */
nb_tensor *nb_split_heads_(nb_tape *tp, nb_tensor *x, int heads, int parts, int part, const char *file, int line);
nb_status nb_split_qkv_(nb_tape *tp, nb_tensor *qkv, int heads, nb_tensor **out, const char *file, int line);
nb_tensor *nb_merge_heads_(nb_tape *tp, nb_tensor *x, const char *file, int line);

/* Indexing and joining.
 *   slice: elements start, start + step, ... before stop along an axis, as
 *          Python's x[start:stop:step] (negative start and stop count from
 *          the end; NB_END for the end; step >= 1).  A view when it takes
 *          a contiguous block (step 1 along the first axis with more than
 *          one element).
 *   index_select: the slices indices[0..n) along an axis, in that order,
 *          repeats allowed (an embedding is index_select(table, 0, ids)); the
 *          gradient adds up over repeated indices.
 *   gather: y[..., i, ...] = x[..., index[..., i, ...], ...] along an axis,
 *          PyTorch's gather: index has x's number of dimensions, holds whole
 *          numbers (in x's dtype) and y has index's shape.
 *   concat: tensors joined along an existing axis (the others equal);
 *   stack:  along a new axis.  Any number of tensors.
 *   where:  cond != 0 ? a : b, element by element, the three broadcast
 *          together; no gradient flows to cond. */
#define NB_END LONG_MAX
#define nb_slice(tp, a, axis, start, stop, step) nb_slice_(tp, a, axis, start, stop, step, NB_SITE)
#define nb_index_select(tp, a, axis, indices, n) nb_index_select_(tp, a, axis, indices, n, NB_SITE)
#define nb_gather(tp, a, axis, index) nb_gather_(tp, a, axis, index, NB_SITE)
#define nb_concat(tp, tensors, n, axis) nb_concat_(tp, tensors, n, axis, false, NB_SITE)
#define nb_stack(tp, tensors, n, axis) nb_concat_(tp, tensors, n, axis, true, NB_SITE)
#define nb_where(tp, cond, a, b) nb_where_(tp, cond, a, b, NB_SITE)
nb_tensor *nb_slice_(nb_tape *tp, nb_tensor *a, int axis, long start, long stop, long step, const char *file,
                     int line);
nb_tensor *nb_index_select_(nb_tape *tp, nb_tensor *a, int axis, const size_t *indices, size_t n,
                            const char *file, int line);
nb_tensor *nb_gather_(nb_tape *tp, nb_tensor *a, int axis, nb_tensor *index, const char *file, int line);
nb_tensor *nb_concat_(nb_tape *tp, nb_tensor *const *tensors, int n, int axis, bool stack, const char *file,
                      int line);
nb_tensor *nb_where_(nb_tape *tp, nb_tensor *cond, nb_tensor *a, nb_tensor *b, const char *file, int line);

/* More reductions along an axis (negative counts from the end; keepdims
 * keeps it with size 1).
 *   logsumexp: log sum e^x, stably (the maximum is taken out first).
 *   var_axis:  sum (x - mean)² / (n - correction); correction 1 is the
 *              unbiased estimate (PyTorch's default), 0 the population's.
 *   max_axis / min_axis: the largest / smallest element; its gradient goes
 *              to that element alone (the first of equal ones, the one
 *              argmax names; a NaN wins, as in PyTorch).
 *   argmax / argmin: its position, as a number of x's dtype; no gradient. */
#define nb_logsumexp(tp, a, axis, keepdims) nb_logsumexp_(tp, a, axis, keepdims, NB_SITE)
#define nb_var_axis(tp, a, axis, keepdims, correction) nb_var_axis_(tp, a, axis, keepdims, correction, NB_SITE)
#define nb_max_axis(tp, a, axis, keepdims) nb_max_axis_(tp, a, axis, keepdims, false, NB_SITE)
#define nb_min_axis(tp, a, axis, keepdims) nb_min_axis_(tp, a, axis, keepdims, false, NB_SITE)
#define nb_argmax(tp, a, axis, keepdims) nb_max_axis_(tp, a, axis, keepdims, true, NB_SITE)
#define nb_argmin(tp, a, axis, keepdims) nb_min_axis_(tp, a, axis, keepdims, true, NB_SITE)
nb_tensor *nb_logsumexp_(nb_tape *tp, nb_tensor *a, int axis, bool keepdims, const char *file, int line);
nb_tensor *nb_var_axis_(nb_tape *tp, nb_tensor *a, int axis, bool keepdims, int correction, const char *file,
                        int line);
nb_tensor *nb_max_axis_(nb_tape *tp, nb_tensor *a, int axis, bool keepdims, bool arg, const char *file, int line);
nb_tensor *nb_min_axis_(nb_tape *tp, nb_tensor *a, int axis, bool keepdims, bool arg, const char *file, int line);

/* The layers (norms, convolutions, pooling, dropout, attention, softmax,
 * losses) are in nabla_nn.h. */
#include "nabla_nn.h"

/* ------------------------------------------------------------ gradcheck */

/* Builds a scalar from inputs[0..n) on tape tp.  It must use only ops (no
 * reading of values to branch on) and may read `user` for fixed data; data
 * tensors should be nb_cast() to the inputs' dtype, which is float64.  It
 * may reset tp, but not free it (refused: nb_gradcheck goes on using it),
 * and must return a tensor made since its last reset. */
typedef nb_tensor *(*nb_gradcheck_fn)(nb_tape *tp, nb_tensor *const *inputs, int n,
                                      void *user);

typedef struct {
    double eps;       /* central-difference step; default 1e-6 */
    double atol;      /* default 1e-5 */
    double rtol;      /* default 1e-3; pass when |a - n| <= atol + rtol * |n| */
    FILE *report;     /* per-element report of failures (NULL: none) */
    bool report_all;  /* report every element, not only failures */
    /* If set, receives each input's worst relative error,
     * max |analytic − numeric| / max(|numeric|, atol), or NaN for inputs not
     * checked: the figures for nb_dot_opts' gradcheck overlay. */
    double *input_errors;
} nb_gradcheck_opts;

typedef struct {
    nb_status status;    /* NB_OK unless the function itself failed */
    bool passed;
    size_t checked;      /* elements compared */
    size_t failed;       /* elements out of tolerance */
    /* The worst element (largest error relative to its tolerance). */
    int worst_input;
    size_t worst_element;
    double worst_numeric, worst_analytic, worst_abs_err, worst_rel_err;
    char message[512];   /* a one-line summary, or the error */
} nb_gradcheck_result;

void nb_gradcheck_default_opts(nb_gradcheck_opts *opts);
/* Compares the analytic gradient of fn with respect to every input that
 * requires a gradient against central differences, in float64, element by
 * element.  The inputs are copied to float64; they are not changed. */
nb_gradcheck_result nb_gradcheck(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n,
                                 void *user, const nb_gradcheck_opts *opts);
/* The same check one order up: with g = d fn/d inputs and fixed random
 * directions v, the gradient of F = sum_i g_i · v_i (a Hessian-vector
 * product, through nb_grad with create_graph) against central differences
 * of F computed from first-order gradients; element by element, in
 * float64, with the same options, report and result. */
nb_gradcheck_result nb_gradgradcheck(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n,
                                     void *user, const nb_gradcheck_opts *opts);

/* ------------------------------------------------------------ graphviz */

/* Course notation: sizes written as symbols, such as {784, "n[0]"} or
 * {64, "m"}, so that shapes read (n[1], m) as in the seeds. */
typedef struct {
    size_t size;
    const char *name;
} nb_dot_symbol;

/* A symbol for one axis of one tensor, which wins over the symbols by size:
 * {"W[2]", 0, "n[2]"} names W[2]'s first axis n[2] where a size symbol
 * {1, "n[2]"} would also rename b[1]'s (n[1], 1). */
typedef struct {
    const char *tensor; /* the tensor's name */
    int axis;
    const char *name;
} nb_dot_axis_symbol;

typedef struct {
    /* coloured as the loss; default: last entry's output.  This and the
     * tensors of `checked` must be live, on the tape drawn or the heap
     * (else NB_ERR_STATE: one from before nb_tape_reset, or another tape's). */
    const nb_tensor *loss;
    size_t max_values;         /* print values in full up to this size; default 12 */
    bool show_values;          /* default true */
    bool show_grads;           /* default true */
    const char *title;         /* graph label; default none */
    /* Edges carry how the gradient reaches each input, written with the
     * tensors' own names: the local derivative of an element-wise op
     * (∂A/∂Z = A(1-A)) or the whole product of the others
     * (∂E/∂W = ∂E/∂Z · Xᵀ), and after a backward in explain mode the
     * numbers: upstream × local = contribution.  Edges into tensors that
     * need no gradient (data, targets, class labels) are grey and carry
     * nothing.  Default true. */
    bool chain_rule;
    bool clusters;             /* draw named scopes as clusters; default false */
    const nb_dot_symbol *symbols; /* course notation for shapes; default none */
    size_t n_symbols;
    const nb_dot_axis_symbol *axis_symbols; /* per tensor and axis; default none */
    size_t n_axis_symbols;
    /* Gradient-check overlay: these tensors are bordered by their worst
     * relative error (green below 1e-4, orange below 1e-3, red above), with
     * the figure in the label. */
    nb_tensor *const *checked;
    const double *checked_errors;
    size_t n_checked;
    size_t highlight;          /* 1 + index of an entry to highlight; 0 for none */
    /* "LR" (left to right, the default for a .dot file) or "TB" (top to
     * bottom); NULL for the default, which for nb_backward_html is "TB" when
     * the graph is much wider than tall. */
    const char *rankdir;
    /* > 0: the learning rate η of plain gradient descent, and
     * nb_backward_html's page ends with the update: each parameter's
     * w ← w − η·∂L/∂w with its numbers ("x ← 5 − 0.1 × 10 = 4").  Default 0:
     * no update frame (other optimizers' steps are not w − η·g). */
    double learning_rate;
} nb_dot_opts;

void nb_dot_default_opts(nb_dot_opts *opts);
/* Writes the recorded graph in Graphviz's dot language.  Node ids follow tape
 * order, so the same program writes the same bytes on every run. */
nb_status nb_dot_write(nb_tape *tp, FILE *out, const nb_dot_opts *opts);
nb_status nb_dot_save(nb_tape *tp, const char *path, const nb_dot_opts *opts);
/* Renders a .dot file to `format` ("svg", "png", "pdf") through Graphviz's
 * C library (libgvc). */
nb_status nb_dot_render(const char *dot_path, const char *out_path, const char *format);

/* Backward, step by step.  Both run a backward pass from loss in explain
 * mode and keep a picture of every step: frame 0 shows the forward graph
 * before any gradient flows, and frame k the graph after the k-th entry's
 * backward, with that entry highlighted and the gradients known so far.
 * The pictures show this pass's gradients alone; afterwards every leaf has
 * the gradient it had before the call (so calling them after nb_backward
 * adds nothing twice). */
/* Writes the frames as DIR/frame_000.dot, DIR/frame_001.dot, ...; *n_frames
 * (if not NULL) receives their number. */
nb_status nb_backward_frames(nb_tensor *loss, const char *dir, const nb_dot_opts *opts,
                             size_t *n_frames);
/* Writes one self-contained HTML page (no network needed) for a projector,
 * whose frames play the forward pass first, an op a frame (each result
 * "not yet computed" until its op's frame), then the backward frames:
 * one SVG laid out once from the frame with the most text, so that nothing
 * moves between frames, whose labels change as you step (buttons, slider,
 * arrow keys; #frame=N in the address); pan and zoom (wheel, drag, + and -,
 * fit, 1:1), never with text under 14 px: a graph too large to fit at that
 * size is followed step by step; the legend in a panel that opens on asking. */
nb_status nb_backward_html(nb_tensor *loss, const char *path, const char *title,
                           const nb_dot_opts *opts);

/* ------------------------------------------------------------ files */

/* The rules nabla's own writers and readers follow, for a program's own
 * files.  nb_file_write writes n bytes to path atomically (a temporary file
 * in the same directory, then a rename): a new file gets the mode the umask
 * gives; an existing regular file, or the regular file a symbolic link
 * names, is replaced and keeps its mode (the link stays a link); anything
 * else (a directory, a FIFO, a device such as /dev/null) is refused and left
 * alone, as is a path of PATH_MAX bytes or more.  A failed write returns
 * NB_ERR_IO naming the file and leaves the old one as it was. */
nb_status nb_file_write(const char *path, const void *data, size_t n);
/* Opens a regular file for reading; NULL (nb_last_error() names the file)
 * for a missing file, a directory, a FIFO or a device, at once, without
 * blocking.  The stream ends at the size the file had, given in *size
 * (which may be NULL).  Close it with fclose. */
FILE *nb_file_open_read(const char *path, size_t *size);

/* ------------------------------------------------------------ memory */

/* Allocations nabla made since the process started (for checking that a warm
 * training loop allocates nothing). */
uint64_t nb_alloc_count(void);

/* For tests of error paths: makes the nth allocation from now fail (0 turns
 * this off), and tells whether it happened. */
void nb_test_fail_allocation(uint64_t nth);
bool nb_test_allocation_failed(void);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_H */
