/*
 * softmax and log-softmax along an axis, viewed as (outer, n, inner).
 *
 *   y_i = e^{x_i - m} / sum_j e^{x_j - m}       (m = max_j x_j, so no e^x overflows)
 *   dL/dx_i = y_i (g_i - sum_j g_j y_j)        (softmax)
 *
 *   y_i = x_i - m - log sum_j e^{x_j - m}
 *   dL/dx_i = g_i - softmax_i * sum_j g_j      (log-softmax)
 */
#include "../internal.h"
#include "expf.h"

#include <tgmath.h>


/* One row (or strided column) of n values: one exp per element, in a loop
 * of its own so that it vectorises.  The maximum and the sum run in LANES
 * partial results (element k into lane k mod LANES), combined at the end in
 * a fixed order: the same bits in every clone and on any thread count, and
 * no chain of dependent adds.  The exps are kept in y (and summed in the
 * same loop) and multiplied by the sum's reciprocal; log-softmax keeps them
 * in y only until it writes x - lse. */
enum { LANES = 16 };
#define SOFTMAX_ROW(T)                                                                                 \
    NB_VECTOR_CLONES static void softmax_row_##T(const T *restrict x, T *restrict y, size_t n, size_t step,\
                                                 bool log_form) {                                      \
        T lane[LANES], m = x[0], sum = 0;                                                              \
        size_t k = 0;                                                                                  \
        for (int l = 0; l < LANES; l++) lane[l] = x[0];                                                \
        for (; k + LANES <= n; k += LANES)                                                             \
            for (int l = 0; l < LANES; l++)                                                            \
                lane[l] = x[(k + l) * step] > lane[l] ? x[(k + l) * step] : lane[l];                   \
        for (; k < n; k++) m = x[k * step] > m ? x[k * step] : m;                                      \
        for (int l = 0; l < LANES; l++) m = lane[l] > m ? lane[l] : m;                                 \
        for (int l = 0; l < LANES; l++) lane[l] = 0;                                                   \
        for (k = 0; k + LANES <= n; k += LANES)                                                        \
            for (int l = 0; l < LANES; l++) {                                                          \
                T e = NB_EXP(x[(k + l) * step] - m);                                                   \
                y[(k + l) * step] = e;                                                                 \
                lane[l] += e;                                                                          \
            }                                                                                          \
        for (int l = 0; l < LANES; l++) sum += lane[l];                                                \
        for (; k < n; k++) sum += y[k * step] = NB_EXP(x[k * step] - m);                               \
        if (log_form) {                                                                                \
            T lse = m + log(sum);                                                                      \
            for (k = 0; k < n; k++) y[k * step] = x[k * step] - lse;                                   \
        } else { /* times the reciprocal, as PyTorch: a division per element is slow */               \
            T inv = 1 / sum;                                                                           \
            for (k = 0; k < n; k++) y[k * step] *= inv;                                                \
        }                                                                                              \
    }
SOFTMAX_ROW(float)
SOFTMAX_ROW(double)

/* Rows [begin, end) of the (outer, inner) rows of n values, forward or
 * backward; rows split over threads (each row is computed alone). */
typedef struct {
    const nb_entry *e;
    size_t n, inner;
    void *gx;
    bool acc;
} softmax_job;

static size_t softmax_grain(size_t n) { return n >= NB_PARALLEL_GRAIN ? 1 : NB_PARALLEL_GRAIN / n; }

static void softmax_rows(void *ctx, size_t begin, size_t end) {
    const softmax_job *j = ctx;
    const nb_entry *e = j->e;
    bool log_form = e->flag0;
    for (size_t r = begin; r < end; r++) {
        size_t at = (r / j->inner) * j->n * j->inner + r % j->inner;
        if (e->out->dtype == NB_F32)
            softmax_row_float((const float *)e->in[0]->data + at, (float *)e->out->data + at, j->n, j->inner, log_form);
        else
            softmax_row_double((const double *)e->in[0]->data + at, (double *)e->out->data + at, j->n, j->inner,
                               log_form);
    }
}

static void softmax_forward(nb_entry *e) {
    size_t outer;
    softmax_job j = {.e = e};
    nb_split_axis(e->in[0], e->axis, &outer, &j.n, &j.inner);
    nb_parallel(outer * j.inner, softmax_grain(j.n), softmax_rows, &j);
}

/* The gradient of one row: the dot product in lanes as the sum above,
 * then the element-wise part in loops without a branch (each vectorises). */
#define SOFTMAX_GRAD_ROW(T)                                                                              \
    NB_VECTOR_CLONES static void softmax_grad_row_##T(const T *restrict y, const T *restrict g,        \
                                                      T *restrict gx, size_t n, size_t step,           \
                                                      bool log_form, bool acc) {                       \
        T lane[LANES] = {0}, dot = 0;                                                                  \
        size_t j = 0;                                                                                  \
        for (; j + LANES <= n; j += LANES)                                                             \
            for (int l = 0; l < LANES; l++)                                                            \
                lane[l] += log_form ? g[(j + l) * step] : g[(j + l) * step] * y[(j + l) * step];       \
        for (int l = 0; l < LANES; l++) dot += lane[l];                                                \
        for (; j < n; j++) dot += log_form ? g[j * step] : g[j * step] * y[j * step];                  \
        if (log_form && acc)                                                                             \
            for (size_t k = 0; k < n; k++) gx[k * step] += g[k * step] - NB_EXP(y[k * step]) * dot;      \
        else if (log_form)                                                                               \
            for (size_t k = 0; k < n; k++) gx[k * step] = g[k * step] - NB_EXP(y[k * step]) * dot;       \
        else if (acc)                                                                                    \
            for (size_t k = 0; k < n; k++) gx[k * step] += y[k * step] * (g[k * step] - dot);            \
        else                                                                                             \
            for (size_t k = 0; k < n; k++) gx[k * step] = y[k * step] * (g[k * step] - dot);             \
    }
SOFTMAX_GRAD_ROW(float)
SOFTMAX_GRAD_ROW(double)

static void softmax_grad_rows(void *ctx, size_t begin, size_t end) {
    const softmax_job *j = ctx;
    const nb_entry *e = j->e;
    bool log_form = e->flag0;
    for (size_t r = begin; r < end; r++) {
        size_t at = (r / j->inner) * j->n * j->inner + r % j->inner;
        if (e->out->dtype == NB_F32)
            softmax_grad_row_float((const float *)e->out->data + at, (const float *)e->out->grad + at,
                                   (float *)j->gx + at, j->n, j->inner, log_form, j->acc);
        else
            softmax_grad_row_double((const double *)e->out->data + at, (const double *)e->out->grad + at,
                                    (double *)j->gx + at, j->n, j->inner, log_form, j->acc);
    }
}

static void softmax_backward(nb_entry *e) {
    softmax_job j = {.e = e};
    if (!(j.gx = nb_grad_target(e->out->tape, e->in[0], &j.acc))) return;
    size_t outer;
    nb_split_axis(e->in[0], e->axis, &outer, &j.n, &j.inner);
    nb_parallel(outer * j.inner, softmax_grain(j.n), softmax_grad_rows, &j);
}

/* As ops: softmax:      dx = y ⊙ (G − sum(G ⊙ y, axis))
 *         log-softmax:  dx = G − exp(y) ⊙ sum(G, axis)  (exp(y) is the softmax) */
static void softmax_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *y = e->out;
    if (e->flag0) {
        nb_tensor *total = nb_sum_axis_(tp, G, e->axis, true, false, e->file, e->line);
        grad_in[0] = nb_sub_(tp, G, nb_mul_(tp, nb_exp_(tp, y, e->file, e->line), total, e->file, e->line), e->file,
                             e->line);
    } else {
        nb_tensor *dot = nb_sum_axis_(tp, nb_mul_(tp, G, y, e->file, e->line), e->axis, true, false, e->file, e->line);
        grad_in[0] = nb_mul_(tp, y, nb_sub_(tp, G, dot, e->file, e->line), e->file, e->line);
    }
}

static const nb_op softmax_op = {.name = "softmax", .forward = softmax_forward, .backward = softmax_backward,
    .derivative = {"y ⊙ (G − Σ G⊙y)"}, .elementwise = false, .backward_graph = softmax_graph};
static const nb_op log_softmax_op = {.name = "log_softmax", .forward = softmax_forward, .backward = softmax_backward,
    .derivative = {"G − softmax(x) Σ G"}, .elementwise = false, .backward_graph = softmax_graph};

nb_tensor *nb_softmax_(nb_tape *tp, nb_tensor *a, int axis, bool log, const char *file,
                       int line) {
    const nb_op *op = log ? &log_softmax_op : &softmax_op;
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &a);
    if (failed) return failed;
    int ax;
    failed = nb_check_axis(tp, op->name, a, axis, &ax, file, line);
    if (failed) return failed;
    nb_entry *e = nb_emit(tp, op, 1, &a, a->dtype, a->ndim, a->shape, file, line, &failed);
    if (!e) return failed;
    e->axis = ax;
    e->flag0 = log;
    return nb_run(e);
}
