/*
 * Optimizers, with PyTorch's update rules so that results can be compared
 * step for step:
 *   SGD:      g' = g + wd w;            w -= lr g'
 *   momentum: g' = g + wd w; v = mu v + g' (v = g' on the first step); w -= lr v
 *   Adam:     g' = g + wd w; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 *             w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *   AdamW:    w -= lr wd w (decoupled decay), then Adam with g' = g.
 *   RMSprop:  g' = g + wd w; v = a v + (1-a) g'^2; w -= lr g' / (sqrt(v) + eps)
 *             (a is opts.beta2; PyTorch calls it alpha)
 * Velocities and moments are allocated with the optimizer, never per step.
 */
#include "../internal.h"
#include "nabla_train.h"
#include "../graph/replay.h"
#include "toolkit.h"

#include <tgmath.h>
#include <string.h>

static const char *const kind_names[] = {"sgd", "momentum", "adam", "adamw", "rmsprop"};
#define N_KINDS (int)(sizeof kind_names / sizeof *kind_names)

const char *nb_optimizer_name(nb_optimizer_kind kind) {
    return (unsigned)kind < N_KINDS ? kind_names[kind] : "unknown";
}

bool nb_optimizer_parse(const char *name, nb_optimizer_kind *kind) {
    for (int k = 0; name && k < N_KINDS; k++)
        if (!strcmp(name, kind_names[k])) {
            *kind = (nb_optimizer_kind)k;
            return true;
        }
    return false;
}

void nb_optimizer_defaults(nb_optimizer_opts *opts, nb_optimizer_kind kind) {
    memset(opts, 0, sizeof *opts);
    opts->kind = kind;
    opts->lr = kind == NB_OPT_ADAM || kind == NB_OPT_ADAMW ? 1e-3 : 1e-2;
    opts->momentum = 0.9;
    opts->beta1 = 0.9;
    opts->beta2 = kind == NB_OPT_RMSPROP ? 0.99 : 0.999;
    opts->eps = 1e-8;
    opts->weight_decay = kind == NB_OPT_ADAMW ? 1e-2 : 0;
}

void nb_optimizer_free(nb_optimizer *opt) {
    if (!opt) return;
    for (size_t i = 0; i < opt->n; i++) {
        if (opt->state1) nb_tensor_free(opt->state1[i]);
        if (opt->state2) nb_tensor_free(opt->state2[i]);
    }
    nb_free(opt->state1);
    nb_free(opt->state2);
    nb_free(opt->data1);
    nb_free(opt->data2);
    nb_free(opt->started);
    nb_free(opt->tensors);
    nb_free(opt->groups);
    nb_free(opt->group_of);
    nb_free(opt);
}

nb_status nb_optimizer_opts_check(const char *who, const nb_optimizer_opts *o) {
    if ((unsigned)o->kind >= N_KINDS || !(o->lr >= 0) || !(o->weight_decay >= 0) ||
        !(o->momentum >= 0 && o->momentum < 1) || !(o->beta1 >= 0 && o->beta1 < 1) ||
        !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps >= 0)) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "%s: invalid options (kind %d, lr %g, momentum %g, betas %g/%g, "
                     "eps %g, weight decay %g)",
                     who, (int)o->kind, o->lr, o->momentum, o->beta1, o->beta2, o->eps, o->weight_decay);
        return NB_ERR_ARG;
    }
    return NB_OK;
}

/* Zeros like p; NULL when memory ran out. */
static nb_tensor *state_tensor(const nb_tensor *p) {
    nb_tensor *t = nb_zeros(NULL, p->dtype, p->ndim, p->shape);
    if (nb_tensor_status(t) == NB_OK) return t;
    nb_tensor_free(t);
    return NULL;
}

nb_optimizer *nb_optimizer_new(nb_params *ps, const nb_optimizer_opts *opts) {
    if (!ps || !opts) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_optimizer_new: %s is NULL",
                     ps ? "opts" : "the parameter set");
        return NULL;
    }
    const nb_optimizer_opts *o = opts;
    if (nb_optimizer_opts_check("nb_optimizer_new", o) != NB_OK) return NULL;
    nb_optimizer *opt = nb_malloc(sizeof *opt);
    if (!opt) goto out_of_memory;
    memset(opt, 0, sizeof *opt);
    opt->kind = o->kind;
    opt->ps = ps;
    size_t n = nb_params_count(ps);
    bool two = o->kind == NB_OPT_ADAM || o->kind == NB_OPT_ADAMW, one = o->kind != NB_OPT_SGD;
    opt->state1 = nb_malloc((n ? n : 1) * sizeof(nb_tensor *));
    opt->state2 = nb_malloc((n ? n : 1) * sizeof(nb_tensor *));
    opt->started = nb_malloc((n ? n : 1) * sizeof(bool));
    opt->tensors = nb_malloc((n ? n : 1) * sizeof(nb_tensor *));
    opt->group_of = nb_malloc((n ? n : 1) * sizeof(size_t));
    opt->data1 = nb_malloc((n ? n : 1) * sizeof(void *));
    opt->data2 = nb_malloc((n ? n : 1) * sizeof(void *));
    opt->groups = nb_malloc(sizeof *opt->groups);
    if (!opt->state1 || !opt->state2 || !opt->started || !opt->tensors || !opt->group_of || !opt->groups ||
        !opt->data1 || !opt->data2)
        goto out_of_memory;
    opt->groups[0] = (nb_opt_group){*o, o->lr};
    opt->n_groups = 1;
    for (size_t i = 0; i < n; i++) {
        opt->tensors[i] = nb_params_at(ps, i);
        opt->group_of[i] = 0;
        opt->state1[i] = opt->state2[i] = NULL;
        opt->started[i] = false;
        opt->n = i + 1;
        nb_tensor *p = nb_params_at(ps, i);
        /* heap tensors of the parameter's dtype and shape, so that a
         * checkpoint saves and loads them as it does the parameters */
        if (one && !(opt->state1[i] = state_tensor(p))) goto out_of_memory;
        if (two && !(opt->state2[i] = state_tensor(p))) goto out_of_memory;
        opt->data1[i] = one ? opt->state1[i]->data : NULL;
        opt->data2[i] = two ? opt->state2[i]->data : NULL;
    }
    return opt;
out_of_memory:
    nb_optimizer_free(opt);
    nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_optimizer_new: out of memory");
    return NULL;
}

nb_status nb_optimizer_set_lr(nb_optimizer *opt, double lr) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_optimizer_set_lr: the optimizer is NULL");
        return NB_ERR_NULL;
    }
    if (!(lr >= 0)) { /* as nb_optimizer_new (and torch.optim) */
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "nb_optimizer_set_lr: the learning rate must be a number >= 0, not %g (it stays %g)", lr,
                     opt->groups[0].o.lr);
        return NB_ERR_ARG;
    }
    for (size_t g = 0; g < opt->n_groups; g++) opt->groups[g].o.lr = opt->groups[g].base_lr = lr;
    return NB_OK;
}

double nb_optimizer_lr(const nb_optimizer *opt) { return opt ? opt->groups[0].o.lr : NAN; }

long nb_optimizer_steps(const nb_optimizer *opt) { return opt ? opt->t : -1; }

nb_status nb_optimizer_set_schedule(nb_optimizer *opt, const nb_schedule *s) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_optimizer_set_schedule: the optimizer is NULL");
        return NB_ERR_NULL;
    }
    if (!s) {
        opt->scheduled = false;
        return NB_OK;
    }
    nb_status st = nb_schedule_check(s);
    if (st != NB_OK) return st;
    opt->schedule = *s;
    opt->scheduled = true;
    return NB_OK;
}

/* The rate of the step about to be taken, the step number being the
 * optimizer's count of steps so far (restored by a checkpoint). */
static void apply_schedule(nb_optimizer *opt) {
    for (size_t g = 0; opt->scheduled && g < opt->n_groups; g++)
        opt->groups[g].o.lr = nb_schedule_lr_from(&opt->schedule, opt->groups[g].base_lr, opt->t);
}

/* One parameter's update over elements begin..end: values w and gradient g,
 * state s1/s2, all of the parameter's dtype.  Large parameters are split
 * across nabla's threads (nb_set_threads); the element-wise kernels are
 * compiled for AVX-512, AVX2 and the baseline. */
typedef struct {
    const nb_optimizer_opts *o;
    void *w, *s1, *s2;
    const void *g;
    nb_dtype dtype;
    bool first;            /* momentum: v starts as the first gradient */
    double bias1, bias2;   /* Adam's bias corrections 1 - b^t */
} update_job;

/* One tight loop per kind, so that each vectorises: no branch inside a
 * loop, no library call per element (sqrt is an instruction here: this
 * file is compiled with -fno-math-errno, see the Makefile; the argument is
 * never negative).  Measured on 784-128-10 (102k parameters, Intel Xeon
 * with AVX-512, warm caches): Adam's update went from a sqrtf call per
 * element to 0.046 ms, momentum's 0.018 ms and SGD's 0.010 ms. */
#define UPDATE(T)                                                                          \
    do {                                                                                   \
        const nb_optimizer_opts *o = u->o;                                                 \
        T *restrict w = u->w, *restrict s1 = u->s1, *restrict s2 = u->s2;                  \
        const T *restrict g = u->g;                                                        \
        const T lr = (T)o->lr, wd = (T)o->weight_decay, mu = (T)o->momentum;               \
        const T b1 = (T)o->beta1, b2 = (T)o->beta2, eps = (T)o->eps;                       \
        /* 1 - b in double, rounded once (as torch, whose constants are                    \
         * Python floats): in float32, 1 - 0.999f is 1.3e-5 off, which                     \
         * biases every second moment by as much */                                        \
        const T one_b1 = (T)(1 - o->beta1), one_b2 = (T)(1 - o->beta2);                    \
        const T decay = (T)(1 - o->lr * o->weight_decay); /* AdamW's shrink */             \
        const T c1 = (T)(1 / u->bias1), c2 = (T)(1 / u->bias2);                            \
        switch (o->kind) {                                                                 \
        case NB_OPT_SGD:                                                                   \
            for (size_t j = begin; j < end; j++) w[j] -= lr * (g[j] + wd * w[j]);          \
            break;                                                                         \
        case NB_OPT_MOMENTUM:                                                              \
            if (u->first)                                                                  \
                for (size_t j = begin; j < end; j++) {                                     \
                    s1[j] = g[j] + wd * w[j];                                              \
                    w[j] -= lr * s1[j];                                                    \
                }                                                                          \
            else                                                                           \
                for (size_t j = begin; j < end; j++) {                                     \
                    s1[j] = mu * s1[j] + (g[j] + wd * w[j]);                               \
                    w[j] -= lr * s1[j];                                                    \
                }                                                                          \
            break;                                                                         \
        case NB_OPT_ADAM:                                                                  \
            for (size_t j = begin; j < end; j++) {                                         \
                T gj = g[j] + wd * w[j];                                                   \
                s1[j] = b1 * s1[j] + one_b1 * gj;                                          \
                s2[j] = b2 * s2[j] + one_b2 * gj * gj;                                     \
                w[j] -= lr * (s1[j] * c1) / (sqrt(s2[j] * c2) + eps);                      \
            }                                                                              \
            break;                                                                         \
        case NB_OPT_ADAMW:                                                                 \
            for (size_t j = begin; j < end; j++) {                                         \
                T gj = g[j], wj = decay * w[j];                                            \
                s1[j] = b1 * s1[j] + one_b1 * gj;                                          \
                s2[j] = b2 * s2[j] + one_b2 * gj * gj;                                     \
                w[j] = wj - lr * (s1[j] * c1) / (sqrt(s2[j] * c2) + eps);                  \
            }                                                                              \
            break;                                                                         \
        case NB_OPT_RMSPROP:                                                               \
            for (size_t j = begin; j < end; j++) {                                         \
                T gj = g[j] + wd * w[j];                                                   \
                s1[j] = b2 * s1[j] + one_b2 * gj * gj;                                     \
                w[j] -= lr * gj / (sqrt(s1[j]) + eps);                                     \
            }                                                                              \
            break;                                                                         \
        }                                                                                  \
    } while (0)

/* Subnormal numbers (below 1.2e-38 in float32) are flushed to zero during
 * the update.  Adam's first moment decays by beta1 = 0.9 a step wherever the
 * gradient is 0 (an MNIST pixel that is rarely lit): within a few hundred
 * steps it is subnormal, and every multiply on a subnormal takes a
 * microcode assist of about a hundred cycles on x86.  Measured on 784-128-10
 * at batch 64 (Intel Xeon, AVX-512): the Adam step took 0.48 ms with them
 * and 0.31 ms without, against 0.29 ms for momentum.  The flags (SSE's FTZ
 * and DAZ) are set for the loop only and put back; the results differ from
 * PyTorch's only in values below 1.2e-38. */
#if defined(__SSE2__)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS_BEGIN                                                                                  \
    unsigned saved_csr = _mm_getcsr();                                                                     \
    _mm_setcsr(saved_csr | 0x8040u) /* FTZ (bit 15), DAZ (bit 6) */
#define FLUSH_SUBNORMALS_END _mm_setcsr(saved_csr)
#else
#define FLUSH_SUBNORMALS_BEGIN (void)0
#define FLUSH_SUBNORMALS_END (void)0
#endif

NB_VECTOR_CLONES static void update_range(void *ctx, size_t begin, size_t end) {
    const update_job *u = ctx;
    FLUSH_SUBNORMALS_BEGIN;
    if (u->dtype == NB_F32)
        UPDATE(float);
    else
        UPDATE(double);
    FLUSH_SUBNORMALS_END;
}

nb_status nb_optimizer_step(nb_optimizer *opt) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_optimizer_step: the optimizer is NULL");
        return NB_ERR_NULL;
    }
    if (nb_params_count(opt->ps) != opt->n) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                     "nb_optimizer_step: the parameter set changed from %zu to %zu parameters "
                     "since the optimizer was made",
                     opt->n, nb_params_count(opt->ps));
        return NB_ERR_STATE;
    }
    apply_schedule(opt);
    opt->t++;
    for (size_t i = 0; i < opt->n; i++) {
        nb_tensor *p = nb_params_at(opt->ps, i);
        if (!nb_has_grad(p)) continue; /* no gradient reached it */
        const nb_optimizer_opts *o = &opt->groups[opt->group_of[i]].o;
        /* Adam's bias corrections 1 - b^t, with the group's betas. */
        double bias1 = 1 - pow(o->beta1, (double)opt->t), bias2 = 1 - pow(o->beta2, (double)opt->t);
        /* nb_grad_data makes a lazily zeroed gradient real: once, here. */
        update_job u = {o, nb_tensor_data(p), opt->data1[i], opt->data2[i], nb_grad_data(p),
                        nb_tensor_dtype(p), !opt->started[i], bias1, bias2};
        opt->started[i] = true;
        nb_parallel(nb_tensor_size(p), NB_PARALLEL_GRAIN, update_range, &u);
    }
    return NB_OK;
}

/* Plain SGD without weight decay can be applied inside backward, where the
 * weight gradients are computed (see nb_backward_sgd_ in backward.c): that
 * saves writing each such gradient and reading it back, and the update's own
 * pass over the weights.  Every other case is backward, then the step. */
bool nb_optimizer_fusable(nb_optimizer *opt, double *lr, nb_tensor *const **params, size_t *n) {
    if (nb_params_count(opt->ps) != opt->n) return false; /* the step reports the change */
    apply_schedule(opt); /* the fused update reads the rate first */
    /* one rate for all: every group at the same rate, none decaying */
    bool fusable = opt->kind == NB_OPT_SGD;
    for (size_t g = 0; g < opt->n_groups; g++)
        fusable = fusable && opt->groups[g].o.weight_decay == 0 && opt->groups[g].o.lr == opt->groups[0].o.lr;
    *lr = opt->groups[0].o.lr;
    *params = opt->tensors;
    *n = opt->n;
    return fusable;
}

nb_status nb_optimizer_backward_step_(nb_optimizer *opt, nb_tensor *loss, const char *file, int line) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, file, line, "nb_optimizer_backward_step: the optimizer is NULL");
        return NB_ERR_NULL;
    }
    if (nb_params_count(opt->ps) != opt->n) return nb_optimizer_step(opt); /* reports the change */
    double lr;
    nb_tensor *const *params;
    size_t n;
    nb_status st = nb_optimizer_fusable(opt, &lr, &params, &n) ? nb_backward_sgd_(loss, params, n, lr, file, line)
                                                               : nb_backward_(loss, NULL, file, line);
    return st != NB_OK ? st : nb_optimizer_step(opt);
}

/* The sum of squares in double (as PyTorch sums in the gradients' dtype,
 * float32 sums can differ in the last bits), read straight from the
 * buffers: a call per element took 7% of an LSTM's training step. */
static double sum_of_squares(const nb_tensor *p) {
    double s = 0;
    NB_DISPATCH(p->dtype, {
        const T *g = p->grad;
        for (size_t j = 0; j < p->size; j++) s += (double)g[j] * (double)g[j];
    });
    return s;
}

/* PyTorch's clip_grad_norm_: every gradient times min(1, max_norm / (norm
 * + 1e-6)), so that the clipped norm never exceeds max_norm (at norm =
 * max_norm the factor is norm / (norm + 1e-6), just under 1).  A max_norm
 * that is not positive is refused (torch would zero the gradients at 0 and
 * flip them below), the gradients left as they are. */
double nb_clip_grad_norm(nb_params *ps, double max_norm) { return nb_clip_grad_norm_sets(&ps, 1, max_norm); }

double nb_clip_grad_norm_sets(nb_params *const *sets, int n_sets, double max_norm) {
    if (!(max_norm > 0)) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "nb_clip_grad_norm: max_norm %g must be positive (it bounds the gradients' global L2 norm); "
                     "the gradients are left as they were", max_norm);
        return NAN;
    }
    if (!sets && n_sets) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_clip_grad_norm_sets: sets is NULL");
        return NAN;
    }
    double sumsq = 0;
    for (int s = 0; s < n_sets; s++) /* in a fixed order: the same sum on any thread count */
        for (size_t i = 0; i < nb_params_count(sets[s]); i++) {
            nb_tensor *p = nb_params_at(sets[s], i);
            if (nb_has_grad(p) && nb_grad_data(p)) sumsq += sum_of_squares(p);
        }
    double norm = sqrt(sumsq), scale = max_norm / (norm + 1e-6);
    if (!(scale < 1)) return norm; /* within the bound: a factor of 1 changes nothing (a NaN norm: NaN) */
    for (int s = 0; s < n_sets; s++)
        for (size_t i = 0; i < nb_params_count(sets[s]); i++) {
            nb_tensor *p = nb_params_at(sets[s], i);
            void *g = nb_has_grad(p) ? nb_grad_data(p) : NULL;
            if (!g) continue;
            NB_DISPATCH(p->dtype, {
                T *gs = g, k = (T)scale;
                for (size_t j = 0; j < p->size; j++) gs[j] *= k;
            });
        }
    return norm;
}
