/* The generator of nabla's differential test against PyTorch (make
 * torch-diff; tests/torch_diff.sh runs it, tests/torch_diff.py compares).
 *
 * A graph is a short program of ops on leaf tensors.  Values are numbered:
 * the leaves first (in the order they were made), then each step's result.
 * Each step is written as a JSON object {"op": name, "a": [value numbers],
 * params...} that tests/torch_diff.py turns into the same torch call.  The
 * loss is L = sum(R * y + S * y * y) of the last value y (R, S fixed data),
 * whose Hessian involves every op's second derivative. */
#ifndef TORCH_DIFF_H
#define TORCH_DIFF_H

#include "nabla.h"

#include <stdarg.h>
#include <stdio.h>

#define TD_MAX_VALS 48
#define TD_STEPS_BYTES 16384

/* What a fresh leaf holds. */
typedef enum {
    TD_NORMAL,   /* N(0, 1) */
    TD_AWAY,     /* |x| in [0.2, 2], random sign: away from the kinks at 0 */
    TD_POSITIVE, /* [0.2, 2] */
    TD_PROB,     /* [0.05, 0.95] */
    TD_UNIT,     /* [0, 1] (targets) */
} td_kind;

typedef struct {
    nb_tape *tp;
    nb_rng *rng;
    nb_dtype dt;
    nb_tensor *val[TD_MAX_VALS];
    bool leaf[TD_MAX_VALS];
    bool grad[TD_MAX_VALS];    /* a leaf that requires a gradient */
    int n_val;
    int y;                     /* the result's value number */
    char steps[TD_STEPS_BYTES]; /* the JSON of the steps, comma-separated */
    size_t steps_len;
    int n_steps;
    bool failed;               /* an op was refused: error holds why */
    char error[512];
    bool no_grad;              /* the result takes no gradient (argmax) */
    bool train_bn;             /* batch norm in training mode was used */
    nb_tensor *heap[8];        /* heap tensors to free (running statistics) */
    int n_heap;
    char extra[4096];          /* extra JSON (running statistics before) */
    size_t extra_len;
} td_graph;

/* Random numbers. */
int td_int(td_graph *g, int lo, int hi); /* uniform in [lo, hi] */
double td_unif(td_graph *g, double lo, double hi);
bool td_chance(td_graph *g, double p);

/* A fresh leaf of the given shape and kind (requires a gradient when grad). */
int td_leaf(td_graph *g, int ndim, const size_t *shape, td_kind kind, bool grad);
/* A leaf from given values. */
int td_leaf_values(td_graph *g, int ndim, const size_t *shape, const double *v, bool grad);
/* A random shape of ndim in [lo, hi] and sizes 1..4 (size 1 often). */
int td_shape(td_graph *g, int lo, int hi, size_t *shape);
/* Records a step's result t with its JSON (fmt after the "op" and "a"
 * fields); returns its value number or -1 if t is errored (g->failed). */
int td_step(td_graph *g, nb_tensor *t, const char *op, int n_args, const int *args, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* JSON of an extra record (appended to the graph's line). */
void td_extra(td_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void td_extra_tensor(td_graph *g, const char *key, const nb_tensor *t);

/* Value x adapted so that an op can take it: a fresh leaf of a random
 * shape and the kind when x < 0; otherwise positive (softplus + 0.05) or
 * bounded by b (b tanh) if it is not already. */
int td_need(td_graph *g, int x, td_kind kind);
int td_bounded(td_graph *g, int x, double b);
double td_min(const nb_tensor *t);
double td_maxabs(const nb_tensor *t);

/* One op chosen at random applied to x (x < 0: to fresh leaves), by
 * family; each returns the result's value number or -1. */
int td_unary(td_graph *g, int x);
int td_binary(td_graph *g, int x);
int td_reduce(td_graph *g, int x);
int td_shapes(td_graph *g, int x);
int td_indexing(td_graph *g, int x);
int td_norms(td_graph *g, int x);
int td_losses(td_graph *g, int x);
/* Ops that make their own leaves (matrix products, convolutions, pooling,
 * batch norm). */
int td_matmul(td_graph *g);
int td_conv(td_graph *g);
int td_pool(td_graph *g);
int td_batch_norm(td_graph *g);
int td_attention(td_graph *g);
int td_heads(td_graph *g);
int td_conv_transpose(td_graph *g);
int td_upsample(td_graph *g);

#endif
