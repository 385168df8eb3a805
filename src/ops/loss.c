/*
 * Losses.  Each returns a 0-dimensional tensor: the mean over the examples.
 * Sums run in double precision.  N below is the number of terms averaged.
 *
 * mse:  L = (1/N) sum (p - t)^2
 *       dL/dp = 2(p - t)/N        dL/dt = -2(p - t)/N
 *
 * bce (from probabilities p):
 *       L = -(1/N) sum [ t log p + (1 - t) log(1 - p) ]   (each log clamped at -100)
 *       dL/dp = (p - t) / (p (1 - p)) / N   (p(1-p) kept >= 1e-12)
 *       dL/dt = (log(1 - p) - log p) / N
 *
 * bce_logits (from logits z, p = sigmoid(z)):
 *       L = (1/N) sum [ max(z, 0) - z t + log(1 + e^{-|z|}) ]  (the same value, never
 *           overflowing: for z -> +-inf it tends to the linear asymptote)
 *       dL/dz = (sigmoid(z) - t)/N   dL/dt = -z/N
 *
 * softmax_cross_entropy (logits x with classes along an axis; M examples):
 *       L = -(1/M) sum_examples sum_classes t_c log softmax(x)_c
 *       dL/dx_c = (softmax_c * sum_k t_k - t_c)/M   (= (softmax - onehot)/M for one-hot t)
 *       dL/dt_c = -log softmax(x)_c / M = (lse - x_c)/M,  lse = log sum_k e^{x_k}
 *   (computed as lse - x_c: log of the probability would be -inf once it
 *   underflows, at gaps of about 104 between logits in float32, 745 in float64)
 */
#include "../internal.h"
#include "../graph/replay.h"
#include "expf.h"

#include <math.h>
#include <tgmath.h>

#define LOG_CLAMP (-100.0)
#define BCE_EPS 1e-12

/* Checks that pred and target have identical shapes. */
static nb_tensor *same_shape(nb_tape *tp, const char *op, const nb_tensor *p, const nb_tensor *t,
                             const char *file, int line) {
    bool same = p->ndim == t->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = p->shape[d] == t->shape[d];
    if (same) return NULL;
    char sp[128], st[128];
    return nb_fail(tp, NB_ERR_SHAPE, file, line,
                   "%s: prediction %s and target %s must have the same shape", op,
                   nb_format_shape(p->ndim, p->shape, sp, sizeof sp),
                   nb_format_shape(t->ndim, t->shape, st, sizeof st));
}

/* Adds d into gradient slot gx[i] (or sets it on the first write). */
#define PUT(gx, i, d, acc) ((gx)[i] = (acc) ? (gx)[i] + (d) : (d))

/* Defines an elementwise loss from TERM(p, t) and its derivatives DP, DT (per
 * element, before dividing by N), all in terms of p and t. */
#define ELEMENTWISE_LOSS(name, TERM, DP, DT)                                                \
    static void name##_forward(nb_entry *e) {                                               \
        const nb_tensor *P = e->in[0];                                                      \
        double total = 0;                                                                   \
        NB_DISPATCH(P->dtype, {                                                             \
            const T *ps = P->data, *ts = e->in[1]->data;                                    \
            for (size_t i = 0; i < P->size; i++) {                                          \
                const T p = ps[i], t = ts[i];                                               \
                total += (double)(TERM);                                                    \
            }                                                                               \
            *(T *)e->out->data = (T)(total / (double)P->size);                              \
        });                                                                                 \
    }                                                                                       \
    static void name##_backward(nb_entry *e) {                                              \
        nb_tape *tp = e->out->tape;                                                         \
        const nb_tensor *P = e->in[0];                                                      \
        for (int which = 0; which < 2; which++) {                                           \
            if (!e->in[which]->requires_grad) continue;                                     \
            bool acc;                                                                       \
            void *g_ = nb_grad_target(tp, e->in[which], &acc);                              \
            if (!g_) return;                                                                \
            NB_DISPATCH(P->dtype, {                                                         \
                const T *ps = P->data, *ts = e->in[1]->data;                                \
                const T scale = *(const T *)e->out->grad / (T)P->size;                      \
                T *gx = g_;                                                                 \
                for (size_t i = 0; i < P->size; i++) {                                      \
                    const T p = ps[i], t = ts[i];                                           \
                    const T d = scale * (which == 0 ? (DP) : (DT));                         \
                    PUT(gx, i, d, acc);                                                     \
                }                                                                           \
            });                                                                             \
        }                                                                                   \
    }

static inline double clamped_log(double v) {
    double l = log(v);
    return l < LOG_CLAMP ? LOG_CLAMP : l;
}

ELEMENTWISE_LOSS(mse, (p - t) * (p - t), 2 * (p - t), -2 * (p - t))
ELEMENTWISE_LOSS(bce, -(t * clamped_log(p) + (1 - t) * clamped_log(1 - p)),
                 (p - t) / fmax(p * (1 - p), (T)BCE_EPS),
                 clamped_log(1 - p) - clamped_log(p))
ELEMENTWISE_LOSS(bce_logits, fmax(p, (T)0) - p * t + log1p(NB_EXP(-fabs(p))),
                 1 / (1 + NB_EXP(-p)) - t, -p)

/* ---------------------------------------------------------------- backward graphs */

/* The same derivatives as the backwards above, as ops of p and t (so that
 * they can be differentiated again), times G / N. */
#define AT e->file, e->line
static void loss_grads(nb_entry *e, nb_tensor *G, nb_tensor **grad_in, nb_tensor *dp, nb_tensor *dt, double N) {
    nb_tape *tp = e->out->tape;
    nb_tensor *scale = nb_scale_(tp, G, 1 / N, AT);
    if (dp && e->in[0]->requires_grad) grad_in[0] = nb_mul_(tp, scale, dp, AT);
    if (dt && e->in[1]->requires_grad) grad_in[1] = nb_mul_(tp, scale, dt, AT);
}

/* mse: d/dp = 2(p − t), d/dt = −2(p − t) */
static void mse_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *d = nb_scale_(tp, nb_sub_(tp, e->in[0], e->in[1], AT), 2, AT);
    loss_grads(e, G, grad_in, d, nb_neg_(tp, d, AT), (double)e->in[0]->size);
}

/* bce: d/dp = (p − t)/max(p(1 − p), 1e-12), d/dt = log(1 − p) − log p (each log ≥ −100) */
static void bce_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *p = e->in[0], *t = e->in[1];
    nb_tensor *one_minus_p = nb_add_scalar_(tp, nb_neg_(tp, p, AT), 1, AT);
    nb_tensor *dp = nb_div_(tp, nb_sub_(tp, p, t, AT), nb_clamp_(tp, nb_mul_(tp, p, one_minus_p, AT), BCE_EPS, INFINITY, AT),
                            AT);
    nb_tensor *dt = nb_sub_(tp, nb_clamp_(tp, nb_log_(tp, one_minus_p, AT), LOG_CLAMP, INFINITY, AT),
                            nb_clamp_(tp, nb_log_(tp, p, AT), LOG_CLAMP, INFINITY, AT), AT);
    loss_grads(e, G, grad_in, dp, dt, (double)p->size);
}

/* bce_logits: d/dz = σ(z) − t, d/dt = −z */
static void bce_logits_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *z = e->in[0];
    loss_grads(e, G, grad_in, nb_sub_(tp, nb_sigmoid_(tp, z, AT), e->in[1], AT), nb_neg_(tp, z, AT), (double)z->size);
}

static const nb_op mse_op = {.name = "mse", .forward = mse_forward, .backward = mse_backward,
    .derivative = {"G · 2(p−t)/N", "G · −2(p−t)/N"}, .elementwise = false, .backward_graph = mse_graph};
static const nb_op bce_op = {.name = "bce", .forward = bce_forward, .backward = bce_backward,
    .derivative = {"G · (p−t)/(p(1−p)N)", "G · (log(1−p) − log p)/N"}, .elementwise = false, .backward_graph = bce_graph};
static const nb_op bce_logits_op = {.name = "bce_logits", .forward = bce_logits_forward, .backward = bce_logits_backward,
    .derivative = {"G · (σ(z)−t)/N", "G · −z/N"}, .elementwise = false, .backward_graph = bce_logits_graph};

static nb_tensor *elementwise_loss(nb_tape *tp, const nb_op *op, nb_tensor *p, nb_tensor *t,
                                   const char *file, int line) {
    nb_tensor *in[2] = {p, t};
    nb_tensor *failed = nb_check(tp, op, file, line, 2, in);
    if (!failed) failed = same_shape(tp, op->name, p, t, file, line);
    if (failed) return failed;
    nb_entry *e = nb_emit(tp, op, 2, in, p->dtype, 0, NULL, file, line, &failed);
    return e ? nb_run(e) : failed;
}

nb_tensor *nb_mse_(nb_tape *tp, nb_tensor *pred, nb_tensor *target, const char *file, int line) {
    return elementwise_loss(tp, &mse_op, pred, target, file, line);
}

nb_tensor *nb_bce_(nb_tape *tp, nb_tensor *prob, nb_tensor *target, const char *file, int line) {
    nb_tensor *in[2] = {prob, target};
    nb_tensor *failed = nb_check(tp, &bce_op, file, line, 2, in);
    if (failed) return failed;
    /* Probabilities outside [0, 1] have no meaning here: say which one. */
    for (size_t i = 0; i < prob->size; i++) {
        double p = nb_get(prob, i);
        if (!(p >= 0 && p <= 1))
            return nb_fail(tp, NB_ERR_VALUE, file, line,
                           "bce: prediction element %zu is %g, not a probability in [0, 1] "
                           "(use nb_bce_logits for logits)",
                           i, p);
    }
    return elementwise_loss(tp, &bce_op, prob, target, file, line);
}

nb_tensor *nb_bce_logits_(nb_tape *tp, nb_tensor *logits, nb_tensor *target, const char *file,
                          int line) {
    return elementwise_loss(tp, &bce_logits_op, logits, target, file, line);
}

/* ---------------------------------------------------------------- softmax CE */

/* e->axis: class axis; e->flag0: target holds class indices; e->saved: the
 * softmax probabilities (logits' shape), then each example's lse, kept for
 * backward. */
static void softmax_ce_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0], *t = e->in[1];
    size_t outer, n, inner;
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    bool indices = e->flag0;
    double total = 0;
    /* cppcheck-suppress invalidFunctionArg ; log(sum) sees sum >= 1: the class
     * axis is never empty and the maximum's own term is exp(0) = 1 */
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data, *ts = t->data;
        T *probs = e->saved;
        for (size_t o = 0; o < outer; o++)
            for (size_t i = 0; i < inner; i++) {
                size_t base = o * n * inner + i;
                T m = xs[base];
                for (size_t k = 1; k < n; k++) m = fmax(m, xs[base + k * inner]);
                T sum = 0;
                for (size_t k = 0; k < n; k++) sum += NB_EXP(xs[base + k * inner] - m);
                T lse = m + log(sum);
                probs[x->size + o * inner + i] = lse;
                for (size_t k = 0; k < n; k++)
                    probs[base + k * inner] = NB_EXP(xs[base + k * inner] - lse);
                if (indices) {
                    size_t c = (size_t)ts[o * inner + i];
                    total -= (double)(xs[base + c * inner] - lse);
                } else {
                    for (size_t k = 0; k < n; k++)
                        total -= (double)ts[base + k * inner] * (double)(xs[base + k * inner] - lse);
                }
            }
        *(T *)e->out->data = (T)(total / (double)(outer * inner));
    });
}

static void softmax_ce_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0], *t = e->in[1];
    size_t outer, n, inner;
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    bool indices = e->flag0, acc;
    NB_DISPATCH(x->dtype, {
        const T *ts = t->data, *probs = e->saved;
        const T scale = *(const T *)e->out->grad / (T)(outer * inner);
        if (x->requires_grad) {
            T *gx = nb_grad_target(tp, x, &acc);
            if (!gx) return;
            for (size_t o = 0; o < outer; o++)
                for (size_t i = 0; i < inner; i++) {
                    size_t base = o * n * inner + i;
                    T tsum = 1;
                    if (!indices) {
                        tsum = 0;
                        for (size_t k = 0; k < n; k++) tsum += ts[base + k * inner];
                    }
                    for (size_t k = 0; k < n; k++) {
                        size_t j = base + k * inner;
                        T target = indices ? (T)((size_t)ts[o * inner + i] == k) : ts[j];
                        PUT(gx, j, scale * (probs[j] * tsum - target), acc);
                    }
                }
        }
        if (!indices && t->requires_grad) {
            T *gt = nb_grad_target(tp, t, &acc);
            if (!gt) return;
            const T *xs = x->data, *lse = probs + x->size;
            for (size_t o = 0; o < outer; o++)
                for (size_t k = 0; k < n; k++)
                    for (size_t i = 0; i < inner; i++) {
                        size_t j = (o * n + k) * inner + i;
                        PUT(gt, j, scale * (lse[o * inner + i] - xs[j]), acc);
                    }
        }
    });
}

/* As ops: dx = (softmax(x) Σt − t)/M, dt = −log softmax(x)/M, times G.
 * Class indices become a one-hot tensor (a constant: no gradient). */
static void softmax_ce_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0], *t = e->in[1];
    size_t outer, n, inner;
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    double M = (double)(outer * inner);
    nb_tensor *target = t, *tsum = NULL;
    if (e->flag0) { /* indices: one-hot, and Σt = 1 */
        target = nb_full_(tp, x->dtype, x->ndim, x->shape, 0, AT);
        if (target->status != NB_OK) return;
        NB_DISPATCH(x->dtype, {
            T *oh = target->data;
            const T *idx = t->data;
            for (size_t o = 0; o < outer; o++)
                for (size_t i = 0; i < inner; i++) oh[(o * n + (size_t)idx[o * inner + i]) * inner + i] = 1;
        });
    } else {
        tsum = nb_sum_axis_(tp, t, e->axis, true, false, AT);
    }
    nb_tensor *soft = nb_softmax_(tp, x, e->axis, false, AT);
    nb_tensor *dx = nb_sub_(tp, tsum ? nb_mul_(tp, soft, tsum, AT) : soft, target, AT);
    nb_tensor *dt = e->flag0 ? NULL : nb_neg_(tp, nb_softmax_(tp, x, e->axis, true, AT), AT);
    loss_grads(e, G, grad_in, dx, dt, M);
}
#undef AT

static const nb_op softmax_ce_op = {.name = "softmax_cross_entropy", .forward = softmax_ce_forward, .backward = softmax_ce_backward,
    .derivative = {"G · (softmax(x)·Σt − t)/M", "G · −log softmax(x)/M"}, .elementwise = false, .backward_graph = softmax_ce_graph};

nb_tensor *nb_softmax_cross_entropy_(nb_tape *tp, nb_tensor *logits, nb_tensor *target,
                                     int axis, const char *file, int line) {
    const char *name = softmax_ce_op.name;
    nb_tensor *in[2] = {logits, target};
    nb_tensor *failed = nb_check(tp, &softmax_ce_op, file, line, 2, in);
    if (failed) return failed;
    char sx[128], st[128];
    nb_format_shape(logits->ndim, logits->shape, sx, sizeof sx);
    nb_format_shape(target->ndim, target->shape, st, sizeof st);
    int ax;
    failed = nb_check_axis(tp, name, logits, axis, &ax, file, line);
    if (failed) return failed;
    /* The target is either the logits' shape, or that shape without the axis. */
    bool full = target->ndim == logits->ndim, indices = target->ndim == logits->ndim - 1;
    for (int d = 0, k = 0; d < logits->ndim; d++) {
        if (full && target->shape[d] != logits->shape[d]) full = false;
        if (d == ax) continue;
        if (indices && target->shape[k++] != logits->shape[d]) indices = false;
    }
    if (!full && !indices)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: target %s fits neither the logits %s (one-hot or probabilities) "
                       "nor the logits without class axis %d (class indices)",
                       name, st, sx, ax);
    size_t classes = logits->shape[ax];
    if (indices) {
        for (size_t i = 0; i < target->size; i++) {
            double c = nb_get(target, i);
            if (!(c >= 0 && c < (double)classes && c == floor(c)))
                return nb_fail(tp, NB_ERR_VALUE, file, line,
                               "%s: target element %zu is %g, not a class index in [0, %zu)",
                               name, i, c, classes);
        }
    }
    void *probs = nb_tape_alloc(tp, (logits->size + logits->size / classes) * nb_dtype_size(logits->dtype));
    if (!probs) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", name);
    nb_entry *e = nb_emit(tp, &softmax_ce_op, 2, in, logits->dtype, 0, NULL, file, line, &failed);
    if (!e) return failed;
    /* class indices take no gradient (PyTorch's are integral) */
    if (indices && !logits->requires_grad) e->out->requires_grad = false;
    e->axis = ax;
    e->flag0 = indices;
    e->saved = probs;
    return nb_run(e);
}

/* A replay with new targets: class indices are checked as the constructor
 * checks them, since the kernels index with them. */
bool nb_ce_has_indices(const nb_entry *e) { return e->op == &softmax_ce_op && e->flag0; }

bool nb_ce_check_targets(nb_tape *tp, const nb_entry *e) {
    const nb_tensor *target = e->in[1];
    size_t classes = e->in[0]->shape[e->axis];
    for (size_t i = 0; i < target->size; i++) {
        double c = nb_get(target, i);
        if (!(c >= 0 && c < (double)classes && c == floor(c))) {
            nb_set_error(tp, NB_ERR_VALUE, e->file, e->line,
                         "nb_graph_forward: %s: target element %zu is %g, not a class index in [0, %zu)",
                         softmax_ce_op.name, i, c, classes);
            return false;
        }
    }
    return true;
}
