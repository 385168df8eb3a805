/*
 * Element-wise functions y = f(x) of one tensor, optionally with a scalar
 * parameter s.  Each op is one line of the table below: its forward
 * expression and its derivative dy/dx, written in terms of x, y and s.
 * Backward multiplies the upstream gradient by that derivative:
 *     dL/dx = dL/dy * dy/dx        (element by element)
 */
#include "../internal.h"
#include "expf.h"

#include <tgmath.h>

/* Defines name_forward, name_backward and name_op from FORWARD (using x, s)
 * and CHAIN, dL/dx from g = dL/dy (using g, x, y, s): g times the
 * derivative (UNARY_OP), or for a gate (relu) g where it passes and 0
 * elsewhere, so that an inf or NaN g is not passed as 0 · inf = NaN (the
 * backward graph then is where(dy/dx, G, 0) too).  FORMULA is the
 * derivative for pictures. */
#define UNARY_OP(fn, FORWARD, DERIVATIVE, FORMULA) UNARY_OP_CHAIN(fn, FORWARD, g * (DERIVATIVE), FORMULA, false)
#define UNARY_OP_CHAIN(fn, FORWARD, CHAIN, FORMULA, GATE)                                 \
    NB_VECTOR_CLONES static void fn##_forward_range(void *ctx, size_t begin, size_t end) { \
        const nb_entry *e = ctx;                                                            \
        NB_DISPATCH(e->out->dtype, {                                                        \
            const T *restrict xs = e->in[0]->data;                                          \
            T *restrict ys = e->out->data;                                                  \
            const T s = (T)e->scalar;                                                       \
            (void)s;                                                                        \
            for (size_t i = begin; i < end; i++) {                                          \
                const T x = xs[i];                                                          \
                ys[i] = (FORWARD);                                                          \
            }                                                                               \
        });                                                                                 \
    }                                                                                       \
    static void fn##_forward(nb_entry *e) {                                                \
        if (e->out->size == 1) { /* scalar code: no split, no clone to pick */              \
            NB_DISPATCH(e->out->dtype, {                                                    \
                const T x = *(const T *)e->in[0]->data, s = (T)e->scalar;                   \
                (void)s;                                                                    \
                *(T *)e->out->data = (FORWARD);                                             \
            });                                                                             \
            return;                                                                         \
        }                                                                                   \
        nb_parallel(e->out->size, NB_PARALLEL_GRAIN, fn##_forward_range, (void *)e);      \
    }                                                                                       \
    NB_VECTOR_CLONES static void fn##_backward_range(void *ctx, size_t begin, size_t end) {\
        const unary_grad *u = ctx;                                                          \
        const nb_entry *e = u->e;                                                           \
        bool acc = u->acc;                                                                  \
        NB_DISPATCH(e->out->dtype, {                                                        \
            const T *restrict xs = e->in[0]->data, *restrict ys = e->out->data;             \
            const T *restrict gy = e->out->grad;                                            \
            T *restrict gx = u->gx;                                                         \
            const T s = (T)e->scalar;                                                       \
            (void)s;                                                                        \
            /* two loops, not a select per element: each vectorises */                  \
            if (acc)                                                                        \
                for (size_t i = begin; i < end; i++) {                                      \
                    const T x = xs[i], y = ys[i], g = gy[i];                                \
                    (void)x, (void)y;                                                       \
                    gx[i] += (CHAIN);                                                       \
                }                                                                           \
            else                                                                            \
                for (size_t i = begin; i < end; i++) {                                      \
                    const T x = xs[i], y = ys[i], g = gy[i];                                \
                    (void)x, (void)y;                                                       \
                    gx[i] = (CHAIN);                                                        \
                }                                                                           \
        });                                                                                 \
    }                                                                                       \
    static void fn##_backward(nb_entry *e) {                                              \
        nb_tape *tp = e->out->tape;                                                       \
        unary_grad u = {e, NULL, false};                                                    \
        if (!(u.gx = nb_grad_target(tp, e->in[0], &u.acc))) return;                         \
        if (e->out->size == 1) {                                                            \
            NB_DISPATCH(e->out->dtype, {                                                    \
                const T x = *(const T *)e->in[0]->data, y = *(const T *)e->out->data;       \
                const T g = *(const T *)e->out->grad, s = (T)e->scalar;                     \
                T *gx = u.gx;                                                               \
                (void)x, (void)y, (void)s;                                                  \
                *gx = u.acc ? *gx + (CHAIN) : (CHAIN);                                      \
            });                                                                             \
            return;                                                                         \
        }                                                                                   \
        nb_parallel(e->out->size, NB_PARALLEL_GRAIN, fn##_backward_range, &u);            \
    }                                                                                       \
    static nb_tensor *fn##_dydx(nb_tape *tp, const nb_entry *e);                            \
    static void fn##_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {               \
        unary_graph(e, G, grad_in, fn##_dydx, GATE);                                        \
    }                                                                                       \
    static const nb_op fn##_op = {.name = #fn, .forward = fn##_forward, .backward = fn##_backward,      \
                                   .derivative = {FORMULA}, .elementwise = true,            \
                                   .backward_graph = fn##_graph};

/* The backward graph of every op of the table: dL/dx = G ⊙ dy/dx, with
 * dy/dx built from ops on x and y (so that it can be differentiated again),
 * or NULL when it is 1; for a gate (dy/dx 0 or 1) where(dy/dx, G, 0). */
typedef nb_tensor *(*local_derivative)(nb_tape *tp, const nb_entry *e);
static void unary_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in, local_derivative dydx, bool gate) {
    nb_tape *tp = e->out->tape;
    nb_tensor *d = dydx(tp, e);
    if (gate)
        grad_in[0] = nb_where_(tp, d, G, nb_full_(tp, G->dtype, 0, NULL, 0, e->file, e->line), e->file, e->line);
    else
        grad_in[0] = d ? nb_mul_(tp, G, d, e->file, e->line) : G;
}

/* What the backward ranges share: the entry, the input's gradient buffer,
 * and whether to add into it. */
typedef struct {
    const nb_entry *e;
    void *gx;
    bool acc;
} unary_grad;

/*       name        forward y = f(x)            derivative dy/dx            formula */
UNARY_OP(neg,        -x,                          -1,                         "-1")
UNARY_OP(scale,      x * s,                       s,                          "s")
UNARY_OP(add_scalar, x + s,                       1,                          "1")
UNARY_OP(exp,        NB_EXP(x),                    y,                          "exp(x)")
UNARY_OP(log,        log(x),                      1 / x,                      "1/x")
/* sigmoid(x) = 1/(1+e^-x); for x -> -inf, e^-x = inf and y = 0 exactly, so
 * the simple form is finite everywhere.  dy/dx = y(1-y). */
UNARY_OP(sigmoid,    1 / (1 + NB_EXP(-x)),        y * (1 - y),                "y(1-y)")
UNARY_OP(tanh,       NB_TANH(x),                    1 - y * y,                  "1-y²")
/* relu and leaky relu have a kink at 0; we take the derivative there as 0
 * (resp. s), like PyTorch.  A NaN passes through relu with derivative 1,
 * as in PyTorch (clamp_min keeps it; threshold_backward zeroes only
 * x <= 0): a NaN is not hidden as a 0.  relu is a gate, as PyTorch's
 * threshold_backward, where(x <= 0, 0, g): no gradient where x <= 0, even
 * an inf or NaN one. */
UNARY_OP_CHAIN(relu, x <= 0 ? 0 : x,              x <= 0 ? 0 : g,             "[x>0]", true)
UNARY_OP(leaky_relu, x > 0 ? x : s * x,           x > 0 ? 1 : s,              "[x>0] + s[x≤0]")
UNARY_OP(square,     x * x,                       2 * x,                      "2x")
/* x^0 is 1 everywhere, so its derivative is 0, also at x = 0 (where
 * s x^(s-1) would be 0 · inf). */
UNARY_OP(pow,        pow(x, s),                   s == 0 ? 0 : s * pow(x, s - 1), "p·x^(p-1)")
UNARY_OP(sin,        sin(x),                      cos(x),                     "cos(x)")
UNARY_OP(cos,        cos(x),                      -sin(x),                    "-sin(x)")
/* |x| has a kink at 0; its derivative there is taken as 0 (sign(0), as
 * PyTorch).  sqrt's derivative 1/(2 sqrt x) is +inf at 0, as PyTorch's. */
UNARY_OP(abs,        fabs(x),                     x > 0 ? 1 : x < 0 ? -1 : 0, "sign(x)")
UNARY_OP(sqrt,       sqrt(x),                     (T)0.5 / y,                 "1/(2√x)")
/* erf(x) = 2/√π ∫₀ˣ e^(-t²) dt;  d/dx = 2/√π e^(-x²) */
UNARY_OP(erf,        erf(x),                      (T)1.12837916709551257 * exp(-x * x), "2/√π e^(−x²)")
/* log(1 + x) and e^x - 1, exact near 0 where the plain forms lose every
 * digit (log(1 + 1e-10) is 0 in float32). */
UNARY_OP(log1p,      log1p(x),                    1 / (1 + x),                "1/(1+x)")
UNARY_OP(expm1,      expm1(x),                    y + 1,                      "exp(x)")
/* softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so that
 * it neither overflows for large x nor rounds to 0 for very negative x
 * (softplus(-20) = 2.06e-9).  dy/dx = σ(x). */
UNARY_OP(softplus,   fmax(x, (T)0) + log1p(NB_EXP(-fabs(x))), 1 / (1 + NB_EXP(-x)), "σ(x)")
/* GELU, exact form: x Φ(x), Φ the standard normal CDF = (1 + erf(x/√2))/2.
 * dy/dx = Φ(x) + x φ(x), φ(x) = e^(-x²/2)/√(2π).  float32: Φ and φ from
 * one exp (src/ops/expf.h); float64: libm's erf and exp. */
UNARY_OP(gelu,       NB_GELU(x),                  NB_GELU_SLOPE(x),           "Φ(x) + xφ(x)")
/* GELU, tanh form: x (1 + tanh u)/2, u = √(2/π)(x + 0.044715 x³).
 * dy/dx = (1 + tanh u)/2 + x (1 - tanh² u) √(2/π)(1 + 3·0.044715 x²)/2.
 * float32: (1 + tanh u)/2 as σ(2u), one exp (src/ops/expf.h). */
UNARY_OP(gelu_tanh,  NB_GELU_TANH(x),             NB_GELU_TANH_SLOPE(x),      "(1+tanh u)/2 + x(1−tanh²u)u′/2")

/* ---------------------------------------------------------------- dy/dx as ops */

/* A tensor of x's shape holding f(x) element by element, with no gradient:
 * the local derivative of an op that is piecewise linear (relu, abs,
 * clamp), whose own derivative is 0 almost everywhere (PyTorch's
 * convention for the second derivative at a kink, too). */
static nb_tensor *constant_of(nb_tape *tp, const nb_entry *e, double (*f)(double x, const nb_entry *e)) {
    const nb_tensor *x = e->in[0];
    nb_tensor *c = nb_tensor_alloc(tp, x->dtype, x->ndim, x->shape, e->op->name, e->file, e->line);
    if (c->status != NB_OK) return c;
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        T *cs = c->data;
        for (size_t i = 0; i < x->size; i++) cs[i] = (T)f((double)xs[i], e);
    });
    return c;
}

static nb_tensor *scalar_like(nb_tape *tp, const nb_entry *e, double v) {
    return nb_full_(tp, e->out->dtype, 0, NULL, v, e->file, e->line);
}

#define X e->in[0]
#define Y e->out
#define AT e->file, e->line
static double relu_slope(double x, const nb_entry *e) { (void)e; return x <= 0 ? 0 : 1; }
static double leaky_slope(double x, const nb_entry *e) { return x > 0 ? 1 : e->scalar; }
static double abs_slope(double x, const nb_entry *e) { (void)e; return x > 0 ? 1 : x < 0 ? -1 : 0; }
/* clamp's bounds as the forward compares them: rounded to x's dtype */
static double clamp_bound(const nb_entry *e, double v) { return e->out->dtype == NB_F32 ? (double)(float)v : v; }
static double clamp_slope(double x, const nb_entry *e) {
    return x >= clamp_bound(e, e->scalar) && x <= clamp_bound(e, *(const double *)e->saved) ? 1 : 0;
}

static nb_tensor *neg_dydx(nb_tape *tp, const nb_entry *e) { return scalar_like(tp, e, -1); }
static nb_tensor *scale_dydx(nb_tape *tp, const nb_entry *e) { return scalar_like(tp, e, e->scalar); }
static nb_tensor *add_scalar_dydx(nb_tape *tp, const nb_entry *e) { (void)tp, (void)e; return NULL; }
static nb_tensor *exp_dydx(nb_tape *tp, const nb_entry *e) { (void)tp; return Y; }
static nb_tensor *log_dydx(nb_tape *tp, const nb_entry *e) { return nb_pow_(tp, X, -1, AT); }
/* σ' = y(1 - y) = y - y² */
static nb_tensor *sigmoid_dydx(nb_tape *tp, const nb_entry *e) { return nb_sub_(tp, Y, nb_square_(tp, Y, AT), AT); }
/* tanh' = 1 - y² */
static nb_tensor *tanh_dydx(nb_tape *tp, const nb_entry *e) {
    return nb_add_scalar_(tp, nb_neg_(tp, nb_square_(tp, Y, AT), AT), 1, AT);
}
static nb_tensor *relu_dydx(nb_tape *tp, const nb_entry *e) { return constant_of(tp, e, relu_slope); }
static nb_tensor *leaky_relu_dydx(nb_tape *tp, const nb_entry *e) { return constant_of(tp, e, leaky_slope); }
static nb_tensor *square_dydx(nb_tape *tp, const nb_entry *e) { return nb_scale_(tp, X, 2, AT); }
/* p x^(p-1); 0 for p = 0 */
static nb_tensor *pow_dydx(nb_tape *tp, const nb_entry *e) {
    if (e->scalar == 0) return scalar_like(tp, e, 0);
    return nb_scale_(tp, nb_pow_(tp, X, e->scalar - 1, AT), e->scalar, AT);
}
static nb_tensor *sin_dydx(nb_tape *tp, const nb_entry *e) { return nb_cos_(tp, X, AT); }
static nb_tensor *cos_dydx(nb_tape *tp, const nb_entry *e) { return nb_neg_(tp, nb_sin_(tp, X, AT), AT); }
static nb_tensor *abs_dydx(nb_tape *tp, const nb_entry *e) { return constant_of(tp, e, abs_slope); }
/* 1/(2 √x) = 0.5 y⁻¹ */
static nb_tensor *sqrt_dydx(nb_tape *tp, const nb_entry *e) { return nb_scale_(tp, nb_pow_(tp, Y, -1, AT), 0.5, AT); }
static nb_tensor *log1p_dydx(nb_tape *tp, const nb_entry *e) {
    return nb_pow_(tp, nb_add_scalar_(tp, X, 1, AT), -1, AT);
}
static nb_tensor *expm1_dydx(nb_tape *tp, const nb_entry *e) { return nb_add_scalar_(tp, Y, 1, AT); }
static nb_tensor *softplus_dydx(nb_tape *tp, const nb_entry *e) { return nb_sigmoid_(tp, X, AT); }
/* Φ(x) + x φ(x) = (1 + erf(x/√2))/2 + x e^(-x²/2)/√(2π) */
static nb_tensor *gelu_dydx(nb_tape *tp, const nb_entry *e) {
    nb_tensor *cdf = nb_scale_(tp, nb_add_scalar_(tp, nb_erf_(tp, nb_scale_(tp, X, 0.70710678118654752, AT), AT), 1, AT),
                               0.5, AT);
    nb_tensor *pdf = nb_scale_(tp, nb_exp_(tp, nb_scale_(tp, nb_square_(tp, X, AT), -0.5, AT), AT), 0.39894228040143268, AT);
    return nb_add_(tp, cdf, nb_mul_(tp, X, pdf, AT), AT);
}
/* (1 + t)/2 + x (1 - t²) c (1 + 3a x²)/2, t = tanh(c (x + a x³)) */
static nb_tensor *gelu_tanh_dydx(nb_tape *tp, const nb_entry *e) {
    const double c = 0.79788456080286536, a = 0.044715;
    nb_tensor *x2 = nb_square_(tp, X, AT);
    nb_tensor *t = nb_tanh_(tp, nb_scale_(tp, nb_add_(tp, X, nb_scale_(tp, nb_mul_(tp, x2, X, AT), a, AT), AT), c, AT), AT);
    nb_tensor *first = nb_scale_(tp, nb_add_scalar_(tp, t, 1, AT), 0.5, AT);
    nb_tensor *sech2 = nb_add_scalar_(tp, nb_neg_(tp, nb_square_(tp, t, AT), AT), 1, AT);
    nb_tensor *inner = nb_add_scalar_(tp, nb_scale_(tp, x2, 3 * a, AT), 1, AT);
    return nb_add_(tp, first, nb_scale_(tp, nb_mul_(tp, nb_mul_(tp, X, sech2, AT), inner, AT), 0.5 * c, AT), AT);
}
/* erf' = 2/√π e^(-x²) */
static nb_tensor *erf_dydx(nb_tape *tp, const nb_entry *e) {
    return nb_scale_(tp, nb_exp_(tp, nb_neg_(tp, nb_square_(tp, X, AT), AT), AT), 1.12837916709551257, AT);
}
#undef X
#undef Y
#undef AT

static nb_tensor *unary(nb_tape *tp, const nb_op *op, nb_tensor *a, double s, const char *file,
                        int line) {
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &a);
    if (failed) return failed;
    nb_entry *e = nb_emit_like(tp, op, 1, &a, a, file, line, &failed);
    if (!e) return failed;
    e->scalar = s;
    return nb_run(e);
}

#define UNARY_API(name)                                                                     \
    nb_tensor *nb_##name##_(nb_tape *tp, nb_tensor *a, const char *file, int line) {         \
        return unary(tp, &name##_op, a, 0.0, file, line);                                   \
    }
#define UNARY_API_S(name)                                                                   \
    nb_tensor *nb_##name##_(nb_tape *tp, nb_tensor *a, double s, const char *file,          \
                            int line) {                                                     \
        return unary(tp, &name##_op, a, s, file, line);                                     \
    }

UNARY_API(neg)
UNARY_API(exp)
UNARY_API(log)
UNARY_API(sigmoid)
UNARY_API(tanh)
UNARY_API(relu)
UNARY_API(square)
UNARY_API(sin)
UNARY_API(cos)
UNARY_API(abs)
UNARY_API(erf)
UNARY_API(sqrt)
UNARY_API(log1p)
UNARY_API(expm1)
UNARY_API(softplus)
UNARY_API(gelu)
UNARY_API(gelu_tanh)
UNARY_API_S(scale)
UNARY_API_S(add_scalar)
UNARY_API_S(leaky_relu)
UNARY_API_S(pow)

/* clamp: y = min(max(x, lo), hi);  dy/dx = 1 for lo <= x <= hi, else 0:
 * at a bound the gradient passes, as PyTorch's clamp_backward (x >= lo and
 * x <= hi), and a NaN gets 0.  lo is the entry's scalar, hi is kept in its
 * saved slot. */
static void clamp_forward(nb_entry *e) {
    size_t n = e->out->size;
    const double hi = *(const double *)e->saved;
    NB_DISPATCH(e->out->dtype, {
        const T *xs = e->in[0]->data;
        T *ys = e->out->data;
        const T lo_t = (T)e->scalar, hi_t = (T)hi;
        for (size_t i = 0; i < n; i++) ys[i] = xs[i] < lo_t ? lo_t : xs[i] > hi_t ? hi_t : xs[i];
    });
}

static void clamp_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    bool acc;
    void *gx_ = nb_grad_target(tp, e->in[0], &acc);
    if (!gx_) return;
    size_t n = e->out->size;
    const double hi = *(const double *)e->saved;
    NB_DISPATCH(e->out->dtype, {
        const T *xs = e->in[0]->data, *gy = e->out->grad;
        T *gx = gx_;
        const T lo_t = (T)e->scalar, hi_t = (T)hi;
        for (size_t i = 0; i < n; i++) {
            T d = xs[i] >= lo_t && xs[i] <= hi_t ? gy[i] : 0;
            gx[i] = acc ? gx[i] + d : d;
        }
    });
}

/* dL/dx = where(lo <= x <= hi, G, 0), not G ⊙ [lo≤x≤hi]: outside the
 * bounds (and at a NaN x) no gradient passes, as in clamp_backward, even
 * where G is inf or NaN (0 · inf would be NaN). */
static nb_tensor *clamp_dydx(nb_tape *tp, const nb_entry *e) { return constant_of(tp, e, clamp_slope); }
static void clamp_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) { unary_graph(e, G, grad_in, clamp_dydx, true); }

static const nb_op clamp_op = {.name = "clamp", .forward = clamp_forward, .backward = clamp_backward,
    .derivative = {"[lo≤x≤hi]"}, .elementwise = true, .backward_graph = clamp_graph};

nb_tensor *nb_clamp_(nb_tape *tp, nb_tensor *a, double lo, double hi, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &clamp_op, file, line, 1, &a);
    if (failed) return failed;
    if (!(lo <= hi))
        return nb_fail(tp, NB_ERR_ARG, file, line, "clamp: the bounds [%g, %g] are not ordered", lo, hi);
    double *bound = nb_tape_alloc(tp, sizeof *bound);
    if (!bound) return nb_fail(tp, NB_ERR_NOMEM, file, line, "clamp: out of memory");
    *bound = hi;
    nb_entry *e = nb_emit(tp, &clamp_op, 1, &a, a->dtype, a->ndim, a->shape, file, line, &failed);
    if (!e) return failed;
    e->scalar = lo;
    e->saved = bound;
    return nb_run(e);
}
