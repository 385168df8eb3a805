/*
 * The catalogue of bad inputs, the tape: one table, one row per mistake a
 * user can make with backward, forward-mode and higher-order passes, NaN
 * and Inf (anomaly mode, gradcheck), tensors kept across nb_tape_reset or
 * changed after use, and custom ops (nabla_op.h) whose callbacks misbehave.
 * Each row states the status the call must return and words its message
 * must contain (the call, the tensor and its op, what was expected), so
 * that a vague or wrong message fails as surely as a crash.  The sanitizer
 * run of this file checks that no error path leaks.
 *
 * The other parts: tests/test_catalogue.c (the ops) and
 * tests/test_catalogue_files.c (files and the training toolkit); the row,
 * the runner (NB_CATALOGUE_SHOW=1 prints every message) and the helpers are
 * in tests/catalogue.h.
 */
#include "support.h"
#include "nabla_train.h"
#include "nabla_op.h"
#include "nabla_graph.h"

#include <math.h>

#include "catalogue.h"

/* ------------------------------------------------------------ backward */

static nb_status backward_non_scalar(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(nb_square(tp, grad_leaf(tp, 3)));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_wrong_seed(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_seed(nb_square(tp, grad_leaf(tp, 3)), nb_ones(tp, NB_F64, NB_SHAPE(2)));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_after_reset(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 1);
    nb_tensor *loss = nb_sum(tp, nb_square(tp, x));
    nb_status first = nb_backward(loss);
    nb_tape_reset(tp);
    nb_status st = first == NB_OK ? nb_backward(loss) : NB_OK;
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}

static nb_status backward_without_params(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(nb_sum(tp, nb_square(tp, V(tp, 3))));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_on_leaf(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(grad_leaf(tp, 1));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_errored(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward(nb_sum(tp, nb_add(tp, grad_leaf(tp, 2), grad_leaf(tp, 3))));
    nb_tape_free(tp);
    return st;
}

static nb_status backward_null(void) { return nb_backward(NULL); }

/* ------------------------------------------------------------ NaN and Inf */

/* Anomaly mode names the op that first made a NaN or Inf, with its site. */
static nb_status anomaly_log_negative(void) {
    nb_tape *tp = nb_tape_new();
    nb_tape_set_anomaly_mode(tp, true);
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, -2, 3}));
    nb_status st = nb_tensor_status(nb_sum(tp, nb_log(tp, x)));
    nb_tape_free(tp);
    return st;
}

static nb_status anomaly_nan_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tape_set_anomaly_mode(tp, true);
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, NAN}));
    nb_tensor_set_name(x, "pixels");
    nb_status st = nb_tensor_status(nb_tanh(tp, x));
    nb_tape_free(tp);
    return st;
}

static nb_status anomaly_exp_overflow(void) {
    nb_tape *tp = nb_tape_new();
    nb_tape_set_anomaly_mode(tp, true);
    nb_tensor *x = nb_full(tp, NB_F32, NB_SHAPE(2), 100);
    nb_status st = nb_tensor_status(nb_exp(tp, x));
    nb_tape_free(tp);
    return st;
}

static nb_tensor *log_sum(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    return nb_sum(tp, nb_log(tp, x[0]));
}

static nb_status gradcheck_nan(void) {
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){-1, 2}));
    nb_gradcheck_result r = nb_gradcheck(log_sum, &x, 1, NULL, NULL);
    snprintf(catalogue_message, sizeof catalogue_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

static nb_tensor *stale_sum(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    nb_tensor *y = nb_sum(tp, nb_square(tp, x[0]));
    nb_tape_reset(tp);
    return y;
}
static nb_status gradcheck_stale_result(void) {
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_gradcheck_result r = nb_gradcheck(stale_sum, &x, 1, NULL, NULL);
    snprintf(catalogue_message, sizeof catalogue_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

static nb_tensor *freeing_sum(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)n, (void)user;
    nb_tape_free(tp); /* nb_gradcheck's own tape */
    return nb_sum(tp, nb_square(tp, x[0]));
}
static nb_status gradcheck_frees_tape(void) {
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_gradcheck_result r = nb_gradcheck(freeing_sum, &x, 1, NULL, NULL);
    snprintf(catalogue_message, sizeof catalogue_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

static nb_status gradcheck_null_input(void) {
    nb_tensor *x = NULL;
    nb_gradcheck_result r = nb_gradcheck(log_sum, &x, 1, NULL, NULL);
    snprintf(catalogue_message, sizeof catalogue_message, "%s", r.message);
    return r.status;
}

/* ------------------------------------------------------------ stale and changed tensors */

static nb_status hvp_stale_vector(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 3), *hv;
    nb_tensor *v = nb_scale(tp, x, 2);
    nb_tape_reset(tp);
    nb_status st = nb_hvp(nb_sum(tp, nb_square(tp, x)), &x, 1, &v, &hv);
    nb_tape_free(tp);
    nb_tensor_free(x);
    return st;
}
static nb_status stale_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *kept = nb_exp(tp, V(tp, 3));
    nb_tape_reset(tp);
    nb_status st = nb_tensor_status(nb_add(tp, V(tp, 3), kept));
    nb_tape_free(tp);
    return st;
}
static nb_status changed_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 1);
    nb_tensor_set_name(x, "x");
    nb_tensor *y = nb_sum(tp, nb_mul(tp, x, x));
    nb_set(x, 0, 10);
    nb_status st = nb_backward(y);
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}
static nb_status backward_seed_dtype(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_seed(nb_square(tp, grad_leaf(tp, 3)), V(tp, 3));
    nb_tape_free(tp);
    return st;
}
/* nb_optimizer_backward_step applied W's update and kept no gradient; the
 * next one, with the gradients not zeroed, cannot give the two calls' result. */
static nb_status fused_sgd_unzeroed(void) {
    nb_params *ps = nb_params_new();
    nb_tensor *W = nb_params_add(ps, "W", nb_full(NULL, NB_F64, NB_SHAPE(3, 2), 0.5));
    nb_tensor *X = nb_ones(NULL, NB_F64, NB_SHAPE(4, 3));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    nb_status st = NB_OK;
    for (int step = 0; step < 2 && st == NB_OK; step++) {
        nb_tape_reset(tp);
        st = nb_optimizer_backward_step(opt, nb_sum(tp, nb_matmul(tp, X, W)));
    }
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_tensor_free(X);
    nb_params_free(ps);
    return st;
}
OP_CASE(reshape_overflow, nb_reshape(tp, M(tp, 2, 4), NB_DIMS(4, (1L << 62) + 2)))
OP_CASE(reshape_overflow_infer, nb_reshape(tp, M(tp, 2, 4), NB_DIMS((1L << 62) + 2, -1, 4)))
static nb_status gather_stale(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *kept = M(tp, 3, 2);
    nb_tape_reset(tp);
    nb_status st = nb_tensor_status(nb_gather_rows(tp, kept, ((size_t[]){0}), 1));
    nb_tape_free(tp);
    return st;
}
static nb_tensor *returns_null(nb_tape *tp, nb_tensor *const *x, int n, void *user) {
    (void)tp, (void)x, (void)n, (void)user;
    return NULL;
}
static nb_status gradcheck_null_result(void) {
    nb_tape *other = nb_tape_new();
    nb_add(other, V(other, 2), V(other, 3)); /* an unrelated earlier error */
    nb_tape_free(other);
    nb_tensor *x = grad_leaf(NULL, 2);
    nb_gradcheck_result r = nb_gradcheck(returns_null, &x, 1, NULL, NULL);
    snprintf(catalogue_message, sizeof catalogue_message, "%s", r.message);
    nb_tensor_free(x);
    return r.status;
}

/* ------------------------------------------------------------ custom ops and passes inside passes */

/* y = x (forward copies), dL/dx = G; a view of x; and one whose
 * backward_graph gives back what `bad_graph` says. */
static void copy_forward(nb_op_call *c) {
    memcpy(nb_op_output_data(c), nb_op_input_data(c, 0), nb_op_size(c) * sizeof(double));
}
static void identity_backward(nb_op_call *c) {
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    const double *g = nb_op_grad_output(c);
    for (size_t i = 0; gx && i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + g[i] : g[i];
}
static nb_tensor *(*bad_graph)(nb_tape *tp, nb_tensor *G);
static void bad_backward_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = bad_graph(nb_op_tape(c), G);
}
static const nb_op_def custom_view = {.name = "custom_view", .forward = copy_forward, .backward = identity_backward,
                                      .view = true};
static const nb_op_def custom_graph = {.name = "custom_graph", .forward = copy_forward,
                                       .backward = identity_backward, .backward_graph = bad_backward_graph};
static void resetting_forward(nb_op_call *c) { nb_tape_reset(nb_op_tape(c)); }
static const nb_op_def custom_reset = {.name = "custom_reset", .forward = resetting_forward,
                                       .backward = identity_backward};
static void resetting_backward(nb_op_call *c) { nb_tape_reset(nb_op_tape(c)); }
static void resetting_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    (void)G, (void)grad_in;
    nb_tape_reset(nb_op_tape(c));
}
static void resetting_describe(const nb_op_call *c, char *buf, size_t size) {
    (void)buf, (void)size;
    nb_tape_reset(nb_op_tape(c));
}
static const nb_op_def backward_resets_op = {.name = "backward_resets", .forward = copy_forward,
                                             .backward = resetting_backward, .backward_graph = resetting_graph,
                                             .describe = resetting_describe};
static void freeing_hook(nb_tape *tp, size_t entry, void *user) {
    (void)entry, (void)user;
    nb_tape_free(tp);
}
static void flagless_backward(nb_op_call *c) { nb_op_grad_input(c, 0, NULL); }
static const nb_op_def custom_flagless = {.name = "custom_flagless", .forward = copy_forward,
                                          .backward = flagless_backward};

static nb_status view_shape(int ndim, const size_t *shape, nb_dtype dt) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(tp, NB_F64, NB_SHAPE(8));
    nb_status st = nb_tensor_status(nb_op(tp, &custom_view, &x, 1, dt, ndim, shape, NULL, 0));
    nb_tape_free(tp);
    return st;
}
static nb_status view_overflow(void) { return view_shape(2, (size_t[]){4, ((size_t)1 << 62) + 2}, NB_F64); }
static nb_status view_count(void) { return view_shape(2, (size_t[]){3, 3}, NB_F64); }
static nb_status view_dtype(void) { return view_shape(1, (size_t[]){8}, NB_F32); }

static nb_status forward_resets(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = V(tp, 2);
    nb_status st = nb_tensor_status(nb_op(tp, &custom_reset, &x, 1, NB_F32, NB_SHAPE(2), NULL, 0));
    nb_tape_free(tp);
    return st;
}
/* 0: nb_backward, 1: nb_grad with create_graph, 2: nb_dot_save, 3: a hook that frees the tape */
static nb_status callback_resets(int how) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2), *g;
    nb_tensor *L = nb_sum(tp, nb_op(tp, &backward_resets_op, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0));
    if (how == 3) nb_tape_set_backward_hook(tp, freeing_hook, NULL);
    nb_status st = how == 0 || how == 3 ? nb_backward(L)
                   : how == 1           ? nb_grad(L, &x, 1, &g, true)
                                        : nb_dot_save(tp, test_path("resets.dot"), NULL);
    nb_tape_set_backward_hook(tp, NULL, NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status backward_resets(void) { return callback_resets(0); }
static nb_status backward_graph_resets(void) { return callback_resets(1); }
static nb_status describe_resets(void) { return callback_resets(2); }
static nb_status hook_frees(void) { return callback_resets(3); }
static nb_status grad_input_flagless(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2);
    nb_status st = nb_backward(nb_sum(tp, nb_op(tp, &custom_flagless, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0)));
    nb_tape_free(tp);
    return st;
}

static nb_tensor *sum_of(nb_tape *tp, nb_tensor *G) { return nb_sum(tp, G); }
static nb_tensor *as_float32(nb_tape *tp, nb_tensor *G) { return nb_cast(tp, G, NB_F32); }
static nb_tape *graph_other;
static nb_tensor *on_other_tape(nb_tape *tp, nb_tensor *G) {
    (void)tp;
    return nb_copy(graph_other, G);
}
static nb_status graph_result(nb_tensor *(*bad)(nb_tape *, nb_tensor *)) {
    nb_tape *tp = nb_tape_new();
    graph_other = nb_tape_new();
    bad_graph = bad;
    nb_tensor *x = grad_leaf(NULL, 2), *g;
    nb_tensor *p = nb_pad(tp, x, ((size_t[]){0, 1}));
    nb_status st = nb_grad(nb_sum(tp, nb_op(tp, &custom_graph, &p, 1, NB_F64, NB_SHAPE(3), NULL, 0)), &x, 1, &g, true);
    nb_tensor_free(x);
    nb_tape_free(graph_other);
    nb_tape_free(tp);
    return st;
}
static nb_status graph_scalar(void) { return graph_result(sum_of); }
static nb_status graph_dtype(void) { return graph_result(as_float32); }
static nb_status graph_tape(void) { return graph_result(on_other_tape); }

static nb_status stale_seed(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *seed = nb_ones(tp, NB_F64, NB_SHAPE(2));
    nb_tape_reset(tp);
    nb_status st = nb_backward_seed(nb_square(tp, grad_leaf(tp, 2)), seed);
    nb_tape_free(tp);
    return st;
}
/* A seed made on another live tape: refused, as every op and nb_grad_seed
 * refuse another tape's tensor (nb_backward_seed read its values). */
static nb_status foreign_seed(bool grad) {
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *seed = nb_ones(other, NB_F64, NB_SHAPE(2)), *x = grad_leaf(tp, 2), *g = NULL;
    nb_tensor *y = nb_square(tp, x);
    nb_status st = grad ? nb_grad_seed(y, seed, &x, 1, &g, false) : nb_backward_seed(y, seed);
    nb_tape_free(other);
    nb_tape_free(tp);
    return st;
}
static nb_status foreign_seed_backward(void) { return foreign_seed(false); }
static nb_status foreign_seed_grad(void) { return foreign_seed(true); }
static nb_status stale_tangent(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *t = nb_ones(tp, NB_F64, NB_SHAPE(2));
    nb_tape_reset(tp);
    nb_tensor *x = grad_leaf(tp, 2), *jt;
    nb_status st = nb_jvp(nb_square(tp, x), &x, 1, &t, &jt);
    nb_tape_free(tp);
    return st;
}
static nb_status jvp_null_wrt(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2), *none = NULL, *jt;
    nb_status st = nb_jvp(nb_square(tp, x), &none, 1, &x, &jt);
    nb_tape_free(tp);
    return st;
}
static nb_status gradcheck_stale_input(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(tp, 2);
    nb_tape_reset(tp);
    nb_gradcheck_result r = nb_gradcheck(log_sum, &x, 1, NULL, NULL);
    snprintf(catalogue_message, sizeof catalogue_message, "%s", r.message);
    nb_tape_free(tp);
    return r.status;
}

/* ------------------------------------------------------------ replays (nabla_graph.h) */

static nb_status capture_non_leaf(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *h = nb_exp(tp, grad_leaf(tp, 3)), *y = nb_sum(tp, h);
    nb_status st = nb_graph_capture(tp, &h, 1, &y, 1) ? NB_OK : NB_ERR_ARG;
    nb_tape_free(tp);
    return st;
}
static nb_status replay_after_reset(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 3), *y = nb_sum(tp, nb_exp(tp, x));
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    nb_tape_reset(tp);
    nb_status st = nb_graph_forward(g);
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}
static nb_status replay_other_shape(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = V(NULL, 3), *y = nb_sum(tp, nb_exp(tp, x)), *wrong = V(NULL, 4);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    nb_status st = nb_graph_set_input(g, 0, wrong);
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tensor_free(wrong);
    nb_tape_free(tp);
    return st;
}
static nb_status replay_other_branch(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 1);
    nb_tensor *y = nb_guard(tp, x) ? nb_exp(tp, x) : nb_neg(tp, x);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    nb_set(x, 0, -1);
    nb_status st = nb_graph_forward(g);
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}
static nb_status replay_backward_after_write(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = grad_leaf(NULL, 2), *h = nb_mul(tp, x, x), *y = nb_sum(tp, h);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    nb_status st = nb_graph_forward(g);
    nb_set(h, 0, 3);
    if (st == NB_OK) st = nb_graph_backward(g, 0);
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
    return st;
}

/* ------------------------------------------------------------ the table */

#define SITE "test_catalogue_tape.c:"

static const bad_input catalogue[] = {
    /* NaN and Inf */
    {"anomaly: log of -2", anomaly_log_negative, NB_ERR_VALUE, {"anomaly", "log", "element 1", "min -2", SITE}},
    {"anomaly: a NaN in a named input", anomaly_nan_input, NB_ERR_VALUE,
     {"anomaly", "tanh", "'pixels'", "outside the tape", SITE}},
    {"anomaly: exp(100) in float32", anomaly_exp_overflow, NB_ERR_VALUE, {"anomaly", "exp", "inf", "max 100", SITE}},
    {"gradcheck of a function that is NaN", gradcheck_nan, NB_ERR_VALUE, {"nb_gradcheck", "NaN"}},
    {"gradcheck of a NULL input", gradcheck_null_input, NB_ERR_NULL, {"nb_gradcheck", "input 0 is NULL"}},
    {"gradcheck of a function that returns a tensor it reset", gradcheck_stale_result, NB_ERR_STATE,
     {"nb_gradcheck", "the function returned", "before nb_tape_reset"}},
    {"gradcheck of a function that frees its tape", gradcheck_frees_tape, NB_ERR_STATE,
     {"nb_gradcheck: the function called nb_tape_free", "refused", "free it once"}},
    /* backward */
    {"backward from a (3,) output without a seed", backward_non_scalar, NB_ERR_SHAPE,
     {"nb_backward", "(3,)", "nb_backward_seed", SITE}},
    {"backward with a (2,) seed for a (3,) output", backward_wrong_seed, NB_ERR_SHAPE,
     {"nb_backward", "seed (2,)", "output (3,)", SITE}},
    {"backward again after nb_tape_reset", backward_after_reset, NB_ERR_STATE, {"nb_backward", "nb_tape_reset", SITE}},
    {"backward of a loss without parameters", backward_without_params, NB_ERR_STATE,
     {"nb_backward", "nb_requires_grad", SITE}},
    {"backward from a leaf", backward_on_leaf, NB_ERR_STATE, {"nb_backward", "leaf", SITE}},
    {"backward from an errored loss", backward_errored, NB_ERR_SHAPE, {"nb_backward", "errored", SITE}},
    {"backward of NULL", backward_null, NB_ERR_NULL, {"nb_backward", "NULL", SITE}},
    /* stale and changed tensors */
    {"hvp with a vector kept across nb_tape_reset", hvp_stale_vector, NB_ERR_STATE,
     {"nb_hvp", "vector 1", "before nb_tape_reset", SITE}},
    {"a tensor kept across nb_tape_reset", stale_input, NB_ERR_STATE,
     {"add: input 2 (3,)", "made by exp at tests/" SITE, "before nb_tape_reset", "nb_copy(NULL", SITE}},
    {"a leaf changed after an op used it", changed_input, NB_ERR_STATE,
     {"nb_backward", "'x'", "of mul", "changed after the op used it", SITE}},
    {"backward with a float32 seed for a float64 output", backward_seed_dtype, NB_ERR_DTYPE,
     {"nb_backward", "float32", "float64", SITE}},
    {"fused SGD twice without zeroing the gradients", fused_sgd_unzeroed, NB_ERR_STATE,
     {"'W'", "applied", "nb_params_zero_grad", SITE}},
    {"reshape to (4, 2^62 + 2), whose count wraps to 8", reshape_overflow, NB_ERR_SHAPE,
     {"reshape", "(4, 4611686018427387906)", "more elements than memory can address", SITE}},
    {"reshape to (2^62 + 2, -1, 4)", reshape_overflow_infer, NB_ERR_SHAPE,
     {"reshape", "more elements than memory can address", SITE}},
    {"gather from a tensor kept across nb_tape_reset", gather_stale, NB_ERR_STATE,
     {"nb_gather_rows", "before nb_tape_reset", SITE}},
    {"gradcheck of a function that returns NULL", gradcheck_null_result, NB_ERR_NULL,
     {"nb_gradcheck", "returned NULL"}},
    /* custom ops (nabla_op.h) and passes inside passes */
    {"custom view of (4, 2^62 + 2), whose count wraps to 8", view_overflow, NB_ERR_SHAPE,
     {"custom_view", "(4, 4611686018427387906)", "more elements than memory can address", SITE}},
    {"custom view of 9 elements for 8", view_count, NB_ERR_SHAPE, {"custom_view", "(3, 3)", "has 9", "(8,)", SITE}},
    {"custom view of another dtype", view_dtype, NB_ERR_DTYPE, {"custom_view", "float64", "float32", SITE}},
    {"custom forward that resets its tape", forward_resets, NB_ERR_STATE, {"custom_reset", "forward", "reset", SITE}},
    {"custom backward that resets its tape", backward_resets, NB_ERR_STATE,
     {"backward_resets: its backward", "nb_tape_reset", "refused", "left as it was", SITE}},
    {"backward_graph that resets its tape", backward_graph_resets, NB_ERR_STATE,
     {"backward_resets: its backward_graph", "nb_tape_reset", "refused", SITE}},
    {"describe that resets its tape under nb_dot_save", describe_resets, NB_ERR_STATE,
     {"nb_dot_write", "backward_resets: its describe", "nb_tape_reset", "refused", SITE}},
    {"backward hook that frees its tape", hook_frees, NB_ERR_STATE,
     {"nb_backward", "backward hook", "nb_tape_free", "refused", "free it once"}},
    {"nb_op_grad_input with no accumulate flag", grad_input_flagless, NB_ERR_NULL,
     {"custom_flagless", "nb_op_grad_input", "NULL", SITE}},
    {"backward_graph giving a () gradient for a (3,) input", graph_scalar, NB_ERR_SHAPE,
     {"custom_graph", "input 1 (3,)", "()", "backward_graph", SITE}},
    {"backward_graph giving a float32 gradient", graph_dtype, NB_ERR_DTYPE, {"custom_graph", "float32", SITE}},
    {"backward_graph giving a gradient on another tape", graph_tape, NB_ERR_STATE,
     {"custom_graph", "another tape", SITE}},
    {"backward from a seed kept across nb_tape_reset", stale_seed, NB_ERR_STATE,
     {"nb_backward", "seed", "before nb_tape_reset", SITE}},
    {"backward with a seed on another tape", foreign_seed_backward, NB_ERR_STATE,
     {"nb_backward", "seed (2,)", "another tape", "output (2,)", SITE}},
    {"nb_grad_seed with a seed on another tape", foreign_seed_grad, NB_ERR_STATE,
     {"nb_grad", "seed (2,)", "another tape", SITE}},
    {"jvp with a tangent kept across nb_tape_reset", stale_tangent, NB_ERR_STATE,
     {"nb_jvp", "tangent 1", "before nb_tape_reset", SITE}},
    {"jvp of a (2,) output with respect to NULL", jvp_null_wrt, NB_ERR_NULL, {"nb_jvp", "tensor 1", "NULL", SITE}},
    {"gradcheck of an input kept across nb_tape_reset", gradcheck_stale_input, NB_ERR_STATE,
     {"nb_gradcheck", "input 0", "before nb_tape_reset"}},
    /* replays */
    {"capture with an input that is an op result", capture_non_leaf, NB_ERR_ARG,
     {"nb_graph_capture", "input 0 (3,) float64", "not a leaf", "exp", SITE}},
    {"replay after nb_tape_reset", replay_after_reset, NB_ERR_STATE, {"nb_graph_forward", "reset", SITE}},
    {"replay with an input of another shape", replay_other_shape, NB_ERR_SHAPE,
     {"nb_graph_set_input", "input 0 is (3,) float32", "(4,) float32", SITE}},
    {"replay whose guard goes the other way", replay_other_branch, NB_ERR_STATE,
     {"nb_graph_forward", "guard", "compared -1 with 0", "other branch", SITE}},
    {"replayed backward after a write to an intermediate", replay_backward_after_write, NB_ERR_STATE,
     {"nb_graph_backward", "result (2,) float64", "of mul", "written", SITE}},
};

static void test_every_bad_input_names_what_went_wrong(void **state) {
    (void)state;
    int n = run_catalogue(catalogue, (int)(sizeof catalogue / sizeof *catalogue));
    assert_true(n >= 40);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_bad_input_names_what_went_wrong),
    };
    return cmocka_run_group_tests_name("catalogue_tape", tests, test_dir_setup, test_dir_teardown);
}
