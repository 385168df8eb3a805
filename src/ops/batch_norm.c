/*
 * Batch norm over every axis but the channels (axis 1), as PyTorch's
 * F.batch_norm.  With x seen as (N, C, S) (S the product of the axes after
 * the channels) and M = N S values per channel:
 *
 *   training, or no running statistics:
 *     mu = mean of the channel, var = its biased variance, r = 1/sqrt(var + eps)
 *     x̂ = (x - mu) r,   y = γ x̂ + β
 *     with g = γ G (G = dL/dy):
 *     dL/dx = r (g - mean(g) - x̂ mean(g x̂))       (means over the channel)
 *   evaluation with running statistics (constants here):
 *     x̂ = (x - running_mean) r,  r = 1/sqrt(running_var + eps)
 *     dL/dx = γ r G
 *   and in both:
 *     dL/dγ = Σ G x̂,   dL/dβ = Σ G                 (sums over the channel)
 *
 * While training, the running statistics move towards the batch's:
 * running = (1 - momentum) running + momentum batch, with the unbiased
 * variance (M / (M - 1) var) for running_var, as PyTorch does.
 *
 * Each channel's statistics and sums are made by one thread in a fixed
 * order, so results do not depend on the thread count.
 */
#include "../internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    double eps, momentum;
    int gamma, beta, running_mean, running_var; /* input indices, or -1 */
    bool batch_stats;                          /* normalise with the batch's statistics */
    size_t N, C, S;
    double *mean, *rstd;                       /* per channel, as used by forward */
} bn_state;

static const bn_state *state_of(const nb_entry *e) { return e->saved; }

/* Channel c's values: x[(n C + c) S + s] for n < N, s < S. */
#define FOR_CHANNEL(st, c, i, body)                                            \
    for (size_t n_ = 0; n_ < (st)->N; n_++)                                    \
        for (size_t s_ = 0, i = (n_ * (st)->C + (c)) * (st)->S; s_ < (st)->S; s_++, i++) body

typedef struct {
    nb_entry *e;
    nb_tensor *running_mean, *running_var; /* training: updated (or NULL) */
} forward_job;

/* Channels begin..end: statistics, then y. */
static void forward_part(void *ctx, size_t begin, size_t end) {
    const forward_job *j = ctx;
    nb_entry *e = j->e;
    const bn_state *st = state_of(e);
    const nb_tensor *x = nb_entry_input(e, 0);
    double M = (double)(st->N * st->S);
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        T *ys = e->out->data;
        const T *gamma = st->gamma >= 0 ? (const T *)nb_entry_input(e, st->gamma)->data : NULL;
        const T *beta = st->beta >= 0 ? (const T *)nb_entry_input(e, st->beta)->data : NULL;
        for (size_t c = begin; c < end; c++) {
            double mean, var;
            if (st->batch_stats) { /* two passes: the mean, then the squares about it */
                double sum = 0, sq = 0;
                FOR_CHANNEL(st, c, i, { sum += xs[i]; });
                mean = sum / M;
                FOR_CHANNEL(st, c, i, { sq += (xs[i] - mean) * (xs[i] - mean); });
                var = sq / M;
                if (j->running_mean) {
                    T *rm = j->running_mean->data;
                    rm[c] = (T)((1 - st->momentum) * rm[c] + st->momentum * mean);
                }
                if (j->running_var) {
                    T *rv = j->running_var->data;
                    rv[c] = (T)((1 - st->momentum) * rv[c] + st->momentum * var * M / (M - 1));
                }
            } else {
                mean = ((const T *)nb_entry_input(e, st->running_mean)->data)[c];
                var = ((const T *)nb_entry_input(e, st->running_var)->data)[c];
            }
            double r = 1 / sqrt(var + st->eps);
            st->mean[c] = mean;
            st->rstd[c] = r;
            T scale = (T)(r * (gamma ? gamma[c] : 1)), shift = (T)((beta ? beta[c] : 0) - mean * scale);
            FOR_CHANNEL(st, c, i, { ys[i] = xs[i] * scale + shift; });
        }
    });
}

static void bn_forward(nb_entry *e) {
    const bn_state *st = state_of(e);
    /* The running statistics to update while training (heap tensors, not
     * inputs: see nb_batch_norm_), or NULL. */
    nb_tensor *const *running = (nb_tensor *const *)(st + 1);
    forward_job j = {e, running[0], running[1]};
    nb_parallel(st->C, 1 + NB_PARALLEL_GRAIN / (st->N * st->S + 1), forward_part, &j);
    if (j.running_mean) nb_mark_written(j.running_mean);
    if (j.running_var) nb_mark_written(j.running_var);
}

typedef struct {
    nb_entry *e;
    void *gx, *ggamma, *gbeta;
    bool acc_x, acc_gamma, acc_beta;
} backward_job;

static void backward_part(void *ctx, size_t begin, size_t end) {
    const backward_job *j = ctx;
    nb_entry *e = j->e;
    const bn_state *st = state_of(e);
    const nb_tensor *x = nb_entry_input(e, 0);
    double M = (double)(st->N * st->S);
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data, *G = e->out->grad;
        const T *gamma = st->gamma >= 0 ? (const T *)nb_entry_input(e, st->gamma)->data : NULL;
        T *gx = j->gx, *gg = j->ggamma, *gb = j->gbeta;
        for (size_t c = begin; c < end; c++) {
            double mean = st->mean[c], r = st->rstd[c], sum_g = 0, sum_gx = 0;
            FOR_CHANNEL(st, c, i, {
                sum_g += G[i];
                sum_gx += G[i] * (xs[i] - mean) * r;
            });
            if (gg) gg[c] = j->acc_gamma ? gg[c] + (T)sum_gx : (T)sum_gx;
            if (gb) gb[c] = j->acc_beta ? gb[c] + (T)sum_g : (T)sum_g;
            if (!gx) continue;
            double ga = gamma ? gamma[c] : 1;
            if (st->batch_stats) { /* r γ (G - mean G - x̂ mean(G x̂)) */
                double mg = sum_g / M, mgx = sum_gx / M;
                FOR_CHANNEL(st, c, i, {
                    double xhat = (xs[i] - mean) * r;
                    T d = (T)(r * ga * (G[i] - mg - xhat * mgx));
                    gx[i] = j->acc_x ? gx[i] + d : d;
                });
            } else { /* γ r G */
                T scale = (T)(ga * r);
                FOR_CHANNEL(st, c, i, { gx[i] = j->acc_x ? gx[i] + G[i] * scale : G[i] * scale; });
            }
        }
    });
}

static void bn_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    const bn_state *st = state_of(e);
    backward_job j = {e, NULL, NULL, NULL, false, false, false};
    if (nb_entry_input(e, 0)->requires_grad && !(j.gx = nb_grad_target(tp, nb_entry_input(e, 0), &j.acc_x))) return;
    if (st->gamma >= 0 && nb_entry_input(e, st->gamma)->requires_grad &&
        !(j.ggamma = nb_grad_target(tp, nb_entry_input(e, st->gamma), &j.acc_gamma)))
        return;
    if (st->beta >= 0 && nb_entry_input(e, st->beta)->requires_grad &&
        !(j.gbeta = nb_grad_target(tp, nb_entry_input(e, st->beta), &j.acc_beta)))
        return;
    nb_parallel(st->C, 1 + NB_PARALLEL_GRAIN / (st->N * st->S + 1), backward_part, &j);
}

/* The backward as ops: per-channel sums are sum_to (1, C, 1, ...). */
static void bn_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    const bn_state *st = state_of(e);
    nb_tensor *x = nb_entry_input(e, 0);
    const char *f = e->file;
    int l = e->line, nd = x->ndim;
    size_t per_channel[NB_MAX_DIMS];
    long as_channels[NB_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        per_channel[d] = d == 1 ? st->C : 1;
        as_channels[d] = (long)per_channel[d];
    }
    double M = (double)(st->N * st->S);
    nb_tensor *mean, *r;
    if (st->batch_stats) {
        mean = nb_scale_(tp, nb_sum_to_(tp, x, nd, per_channel, f, l), 1 / M, f, l);
        nb_tensor *centred = nb_sub_(tp, x, mean, f, l);
        nb_tensor *var = nb_scale_(tp, nb_sum_to_(tp, nb_square_(tp, centred, f, l), nd, per_channel, f, l), 1 / M, f, l);
        r = nb_pow_(tp, nb_add_scalar_(tp, var, st->eps, f, l), -0.5, f, l);
    } else {
        mean = nb_reshape_(tp, nb_entry_input(e, st->running_mean), nd, as_channels, f, l);
        r = nb_pow_(tp, nb_add_scalar_(tp, nb_reshape_(tp, nb_entry_input(e, st->running_var), nd, as_channels, f, l), st->eps, f, l),
                    -0.5, f, l);
    }
    nb_tensor *xhat = nb_mul_(tp, nb_sub_(tp, x, mean, f, l), r, f, l);
    nb_tensor *g = st->gamma >= 0 ? nb_mul_(tp, G, nb_reshape_(tp, nb_entry_input(e, st->gamma), nd, as_channels, f, l), f, l) : G;
    if (x->requires_grad) {
        if (st->batch_stats) {
            nb_tensor *mg = nb_scale_(tp, nb_sum_to_(tp, g, nd, per_channel, f, l), 1 / M, f, l);
            nb_tensor *mgx = nb_scale_(tp, nb_sum_to_(tp, nb_mul_(tp, g, xhat, f, l), nd, per_channel, f, l), 1 / M, f, l);
            grad_in[0] = nb_mul_(tp, r, nb_sub_(tp, nb_sub_(tp, g, mg, f, l), nb_mul_(tp, xhat, mgx, f, l), f, l), f, l);
        } else {
            grad_in[0] = nb_mul_(tp, g, r, f, l);
        }
    }
    long flat[1] = {(long)st->C};
    if (st->gamma >= 0 && nb_entry_input(e, st->gamma)->requires_grad)
        grad_in[st->gamma] = nb_reshape_(tp, nb_sum_to_(tp, nb_mul_(tp, G, xhat, f, l), nd, per_channel, f, l), 1, flat, f, l);
    if (st->beta >= 0 && nb_entry_input(e, st->beta)->requires_grad)
        grad_in[st->beta] = nb_reshape_(tp, nb_sum_to_(tp, G, nd, per_channel, f, l), 1, flat, f, l);
}

static void bn_describe(const nb_op_call *e, char *buf, size_t size) {
    const bn_state *st = state_of(e);
    snprintf(buf, size, "%s, eps %g", st->batch_stats ? "batch statistics" : "running statistics", st->eps);
}

static const nb_op batch_norm_op = {.name = "batch_norm", .forward = bn_forward, .backward = bn_backward,
                                    .derivative = {"r (g − mean g − x̂ mean(g x̂)), g = γ G, per channel",
                                                   "Σ G x̂ per channel", "Σ G per channel"},
                                    .backward_graph = bn_graph, .describe = bn_describe};

/* A running statistic must be a (C,) heap tensor of x's dtype with no
 * gradient; NULL when it is, else the errored tensor to return. */
static nb_tensor *check_running(nb_tape *tp, const char *what, const nb_tensor *t, const nb_tensor *x, size_t C,
                                const char *file, int line) {
    char st[128], sx[128];
    if (t->status != NB_OK) return nb_nil(t->status);
    nb_format_shape(t->ndim, t->shape, st, sizeof st);
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    if (nb_on_tape(t))
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "batch_norm: %s lives on a tape; running statistics are heap tensors (tape NULL) that "
                       "persist across steps", what);
    if (t->ndim != 1 || t->shape[0] != C || t->dtype != x->dtype)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "batch_norm: %s is %s %s; x %s %s needs (%zu,) %s", what, st,
                       t->dtype == NB_F32 ? "float32" : "float64", sx, x->dtype == NB_F32 ? "float32" : "float64", C,
                       x->dtype == NB_F32 ? "float32" : "float64");
    if (t->requires_grad)
        return nb_fail(tp, NB_ERR_ARG, file, line, "batch_norm: %s requires a gradient; running statistics are not "
                       "trained", what);
    return NULL;
}

nb_tensor *nb_batch_norm_(nb_tape *tp, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, nb_tensor *running_mean,
                          nb_tensor *running_var, double momentum, double eps, const char *file, int line) {
    nb_tensor *in[5] = {x, gamma, beta, running_mean, running_var};
    bool training = tp && tp->training;
    bool batch_stats = training || !running_mean || !running_var;
    /* In evaluation the running statistics are inputs (read, and checked for
     * changes before backward); while training they are written, not read. */
    bn_state p = {eps, momentum, -1, -1, -1, -1, batch_stats, 0, 0, 1, NULL, NULL};
    int n = 1;
    if (gamma) p.gamma = n, in[n++] = gamma;
    if (beta) p.beta = n, in[n++] = beta;
    if (!batch_stats) {
        p.running_mean = n, in[n++] = running_mean;
        p.running_var = n, in[n++] = running_var;
    }
    nb_tensor *failed = nb_check(tp, &batch_norm_op, file, line, n, in);
    if (failed) return failed;
    char sx[128], sp[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    if (x->ndim < 2)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "batch_norm: x is %s; expected (N, C, ...) with channels on axis 1",
                       sx);
    p.N = x->shape[0];
    p.C = x->shape[1];
    for (int d = 2; d < x->ndim; d++) p.S *= x->shape[d];
    for (int k = 1; k < 3; k++) {
        nb_tensor *t = k == 1 ? gamma : beta;
        if (t && (t->ndim != 1 || t->shape[0] != p.C))
            return nb_fail(tp, NB_ERR_SHAPE, file, line, "batch_norm: %s %s does not fit x %s (expected (%zu,))",
                           k == 1 ? "gamma" : "beta", nb_format_shape(t->ndim, t->shape, sp, sizeof sp), sx, p.C);
    }
    if ((running_mean == NULL) != (running_var == NULL))
        return nb_fail(tp, NB_ERR_ARG, file, line, "batch_norm: running_mean and running_var go together (one is NULL)");
    if (running_mean && ((failed = check_running(tp, "running_mean", running_mean, x, p.C, file, line)) ||
                         (failed = check_running(tp, "running_var", running_var, x, p.C, file, line))))
        return failed;
    if (!(eps > 0)) return nb_fail(tp, NB_ERR_ARG, file, line, "batch_norm: eps %g must be positive", eps);
    if (!(momentum >= 0 && momentum <= 1))
        return nb_fail(tp, NB_ERR_ARG, file, line, "batch_norm: momentum %g must be in [0, 1]", momentum);
    if (batch_stats && p.N * p.S < 2 && training)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "batch_norm: x %s has 1 value per channel; training needs more than 1 to have a variance", sx);
    /* The state, the two running statistics to update (training), then the
     * per-channel mean and 1/std. */
    bn_state *kept = nb_tape_alloc(tp, sizeof p + 2 * sizeof(nb_tensor *) + 2 * p.C * sizeof(double));
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "batch_norm: out of memory");
    *kept = p;
    nb_tensor **running = (nb_tensor **)(kept + 1);
    running[0] = training ? running_mean : NULL;
    running[1] = training ? running_var : NULL;
    kept->mean = (double *)(running + 2);
    kept->rstd = kept->mean + p.C;
    nb_entry *e = nb_emit(tp, &batch_norm_op, n, in, x->dtype, x->ndim, x->shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    return nb_run(e);
}
