/*
 * Initialisers, with torch.nn.init's formulas, fan modes and gains:
 *   normal_(mean, std)            N(mean, std²)
 *   trunc_normal_(mean, std, a, b)  N(mean, std²) conditioned on [a, b]
 *   uniform_(a, b)                U(a, b)
 *   xavier_uniform_(gain)         U(-B, B), B = gain sqrt(6 / (fan_in + fan_out))
 *   xavier_normal_(gain)          N(0, gain² 2 / (fan_in + fan_out))
 *   kaiming_uniform_(a, mode, nl) U(-B, B), B = gain sqrt(3 / fan)
 *   kaiming_normal_(a, mode, nl)  N(0, gain² / fan)
 * fan is fan_in or fan_out by the mode, and the fans of a weight are
 * torch's _calculate_fan_in_and_fan_out: for (out, in, k1, k2, ...),
 * fan_in = in k1 k2 ... and fan_out = out k1 k2 ...  The gains are
 * calculate_gain's.  The values come from nabla's seeded generator, so the
 * distribution is torch's, not the draws.
 *
 * The truncated normal is drawn by inverting the normal's distribution
 * function between the bounds' probabilities, on the side of the mean
 * where they are not both close to 1 (so that a tail, a = 2 std, keeps its
 * precision); the inverse is a rational approximation polished by a
 * Halley step against erfc, to about 1e-15.
 */
#include "../internal.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- gains and fans */

double nb_init_gain(nb_nonlinearity nl, double slope) {
    switch (nl) {
    case NB_GAIN_LINEAR:
    case NB_GAIN_CONV:
    case NB_GAIN_SIGMOID: return 1;
    case NB_GAIN_TANH: return 5.0 / 3;
    case NB_GAIN_RELU: return sqrt(2.0);
    case NB_GAIN_LEAKY_RELU:
        if (isfinite(slope)) return sqrt(2 / (1 + slope * slope));
        break;
    case NB_GAIN_SELU: return 3.0 / 4;
    default: break;
    }
    if ((unsigned)nl <= NB_GAIN_SELU)
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_init_gain: leaky_relu's negative slope %g is not a finite number",
                     slope);
    else
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_init_gain: unknown nonlinearity %d (one of NB_GAIN_*)", (int)nl);
    return NAN;
}

nb_status nb_init_fans(int ndim, const size_t *shape, nb_weight_layout layout, size_t *fan_in, size_t *fan_out) {
    if (ndim < 2 || !shape || (layout != NB_LAYOUT_OUT_IN && layout != NB_LAYOUT_IN_OUT)) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     ndim < 2 || !shape ? "nb_init_fans: a tensor of %d dimension%s has no fans (torch: fewer than 2 "
                                          "dimensions); give fan_in and fan_out"
                                        : "nb_init_fans: unknown layout (%d dimensions; NB_LAYOUT_OUT_IN or NB_LAYOUT_IN_OUT)",
                     ndim, ndim == 1 ? "" : "s");
        return NB_ERR_ARG;
    }
    size_t field = 1; /* the receptive field: a kernel's taps */
    for (int d = 2; d < ndim; d++) field *= shape[d];
    size_t in = layout == NB_LAYOUT_OUT_IN ? shape[1] : shape[0], out = layout == NB_LAYOUT_OUT_IN ? shape[0] : shape[1];
    if (fan_in) *fan_in = in * field;
    if (fan_out) *fan_out = out * field;
    return NB_OK;
}

/* ---------------------------------------------------------------- the truncated normal */

/* The standard normal's distribution function and its complement. */
static double phi_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* Its inverse, p in (0, 1): Acklam's rational approximation (relative
 * error 1.2e-9), then a Halley step on Phi(x) - p. */
static double phi_inverse(double p) {
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                3.754408661907416e+00};
    if (!(p > 0)) return -INFINITY;
    if (!(p < 1)) return INFINITY;
    double x, q, r;
    if (p < 0.02425) {
        q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        q = p - 0.5;
        r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    double e = phi_cdf(x) - p, u = e * sqrt(2 * 3.14159265358979323846) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

/* A standard normal conditioned on [lo, hi], from a uniform u in [0, 1).
 * Above the mean, by symmetry from the lower side: Phi near 1 has lost
 * the digits its complement keeps. */
static double truncated(double lo, double hi, double u) {
    bool upper = lo > 0;
    double l = upper ? -hi : lo, h = upper ? -lo : hi;
    double pl = phi_cdf(l), ph = phi_cdf(h);
    double x = phi_inverse(pl + u * (ph - pl));
    x = x < l ? l : x > h ? h : x;
    return upper ? -x : x;
}

/* ---------------------------------------------------------------- torch.nn.init */

void nb_init_defaults(nb_init_opts *o, nb_init kind) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->std = 1;
    o->a = kind == NB_INIT_TRUNC_NORMAL ? -2 : 0;
    o->b = kind == NB_INIT_TRUNC_NORMAL ? 2 : 1;
    o->gain = 1;
    o->nonlinearity = NB_GAIN_LEAKY_RELU;
    o->mode = NB_FAN_IN;
    o->layout = NB_LAYOUT_OUT_IN;
}

static const char *const init_names[] = {"zeros",   "glorot_uniform", "glorot_normal",  "he_uniform",
                                         "he_normal", "normal",       "trunc_normal",   "uniform",
                                         "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"};

nb_status nb_init_apply(nb_tensor *t, const nb_init_opts *o, nb_rng *rng) {
    static const char who[] = "nb_init_apply";
    if (!o || !rng || nb_tensor_status(t) != NB_OK) {
        nb_status st = t && nb_tensor_status(t) == NB_ERR_STATE ? NB_ERR_STATE : NB_ERR_NULL;
        nb_set_error(NULL, st, NULL, 0, "%s: %s", who,
                     !o ? "the options are NULL" : !rng ? "the generator is NULL"
                     : st == NB_ERR_STATE ? "the tensor is from before nb_tape_reset" : "the tensor is NULL or errored");
        return st;
    }
    if ((unsigned)o->kind >= sizeof init_names / sizeof *init_names) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: unknown initialiser %d", who, (int)o->kind);
        return NB_ERR_ARG;
    }
    const char *name = init_names[o->kind];
    if (o->kind <= NB_INIT_HE_NORMAL) return nb_init_tensor(t, o->kind, o->fan_in, o->fan_out, rng);
    /* the fans: given, or from the shape */
    size_t fan_in = o->fan_in, fan_out = o->fan_out;
    bool fans = o->kind >= NB_INIT_XAVIER_UNIFORM;
    if (fans && !fan_in && !fan_out && nb_init_fans(t->ndim, t->shape, o->layout, &fan_in, &fan_out) != NB_OK) {
        char shape[128], reason[256];
        snprintf(reason, sizeof reason, "%s", nb_last_error() + strlen("nb_init_fans: "));
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: %s of a tensor %s: %s", who, name,
                     nb_format_shape(t->ndim, t->shape, shape, sizeof shape), reason);
        return NB_ERR_ARG;
    }
    double lo = 0, hi = 0, std = 0, mean = 0;
    const char *why = NULL;
    char reason[256];
    switch (o->kind) {
    case NB_INIT_NORMAL:
        mean = o->mean, std = o->std;
        if (!(std >= 0) || !isfinite(std) || !isfinite(mean)) why = "mean and std must be finite, std >= 0";
        break;
    case NB_INIT_TRUNC_NORMAL:
        mean = o->mean, std = o->std, lo = o->a, hi = o->b;
        if (!(std > 0) || !isfinite(std) || !isfinite(mean)) why = "mean and std must be finite, std > 0";
        else if (!(lo < hi) || !isfinite(lo) || !isfinite(hi)) why = "the bounds a < b must be finite";
        break;
    case NB_INIT_UNIFORM:
        lo = o->a, hi = o->b;
        if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi)) why = "the bounds a <= b must be finite";
        break;
    case NB_INIT_XAVIER_UNIFORM:
    case NB_INIT_XAVIER_NORMAL:
        if (!fan_in || !fan_out) why = "fan_in and fan_out must be positive";
        else if (!(o->gain >= 0) || !isfinite(o->gain)) why = "the gain must be a finite number >= 0";
        std = o->gain * sqrt(2.0 / (double)(fan_in + fan_out));
        break;
    default: { /* Kaiming */
        size_t fan = o->mode == NB_FAN_OUT ? fan_out : fan_in;
        double gain = nb_init_gain(o->nonlinearity, o->slope);
        if (o->mode != NB_FAN_IN && o->mode != NB_FAN_OUT) why = "mode must be NB_FAN_IN or NB_FAN_OUT";
        else if (!fan) why = o->mode == NB_FAN_OUT ? "fan_out must be positive" : "fan_in must be positive";
        else if (isnan(gain)) {
            snprintf(reason, sizeof reason, "%s", nb_last_error() + strlen("nb_init_gain: "));
            why = reason;
        }
        std = gain / sqrt((double)(fan ? fan : 1));
        break;
    }
    }
    if (why) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "%s: %s: %s (mean %g, std %g, a %g, b %g, gain %g, fan_in %zu, fan_out %zu)", who, name, why,
                     o->mean, o->std, o->a, o->b, o->gain, fan_in, fan_out);
        return NB_ERR_ARG;
    }
    if (o->kind == NB_INIT_XAVIER_UNIFORM || o->kind == NB_INIT_KAIMING_UNIFORM) hi = sqrt(3.0) * std, lo = -hi;
    double alpha = (lo - mean) / (std > 0 ? std : 1), beta = (hi - mean) / (std > 0 ? std : 1);
    for (size_t i = 0; i < t->size; i++) {
        double v;
        switch (o->kind) {
        case NB_INIT_TRUNC_NORMAL:
            v = mean + std * truncated(alpha, beta, nb_rng_uniform(rng));
            v = v < lo ? lo : v > hi ? hi : v;
            break;
        case NB_INIT_UNIFORM:
        case NB_INIT_XAVIER_UNIFORM:
        case NB_INIT_KAIMING_UNIFORM: v = lo + (hi - lo) * nb_rng_uniform(rng); break;
        default: v = mean + std * nb_rng_normal(rng); break; /* the normals */
        }
        nb_set(t, i, v);
    }
    return NB_OK;
}

nb_tensor *nb_params_create_init(nb_params *ps, const char *name, nb_dtype dt, int ndim, const size_t *shape,
                                 const nb_init_opts *o, nb_rng *rng) {
    nb_tensor *t = nb_tensor_alloc(NULL, dt, ndim, shape, "nb_params_create_init", NULL, 0);
    if (t->status != NB_OK) return t;
    nb_status st = nb_init_apply(t, o, rng);
    if (st != NB_OK) {
        nb_tensor_free(t);
        return nb_nil(st);
    }
    return nb_params_add(ps, name, t);
}

nb_status nb_init_tensor(nb_tensor *t, nb_init init, size_t fan_in, size_t fan_out, nb_rng *rng) {
    if (nb_tensor_status(t) != NB_OK || (!rng && init != NB_INIT_ZEROS)) {
        nb_status st = nb_tensor_status(t) == NB_ERR_STATE ? NB_ERR_STATE : NB_ERR_NULL;
        nb_set_error(NULL, st, NULL, 0, "nb_init_tensor: %s",
                     !rng && nb_tensor_status(t) == NB_OK ? "the generator is NULL"
                     : st == NB_ERR_STATE ? "the tensor is from before nb_tape_reset"
                                          : "the tensor is NULL or errored");
        return st;
    }
    if (init > NB_INIT_HE_NORMAL) { /* torch.nn.init's, with their defaults and these fans */
        nb_init_opts o;
        nb_init_defaults(&o, init);
        o.fan_in = fan_in, o.fan_out = fan_out;
        return nb_init_apply(t, &o, rng);
    }
    if (init != NB_INIT_ZEROS && (fan_in == 0 || (fan_out == 0 && init <= NB_INIT_GLOROT_NORMAL))) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_init_tensor: fan_in %zu and fan_out %zu must be positive",
                     fan_in, fan_out);
        return NB_ERR_ARG;
    }
    double glorot = 2.0 / (double)(fan_in + fan_out), he = 2.0 / (double)fan_in;
    for (size_t i = 0; i < t->size; i++) {
        double v = 0;
        switch (init) {
        case NB_INIT_ZEROS: v = 0; break;
        /* A uniform U(-a, a) has variance a^2/3, so a = sqrt(3 var). */
        case NB_INIT_GLOROT_UNIFORM: v = sqrt(3 * glorot) * (2 * nb_rng_uniform(rng) - 1); break;
        case NB_INIT_GLOROT_NORMAL: v = sqrt(glorot) * nb_rng_normal(rng); break;
        case NB_INIT_HE_UNIFORM: v = sqrt(3 * he) * (2 * nb_rng_uniform(rng) - 1); break;
        case NB_INIT_HE_NORMAL: v = sqrt(he) * nb_rng_normal(rng); break;
        default:
            nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_init_tensor: unknown initialiser %d", (int)init);
            return NB_ERR_ARG;
        }
        nb_set(t, i, v);
    }
    return NB_OK;
}

nb_tensor *nb_params_create(nb_params *ps, const char *name, nb_dtype dt, int ndim,
                            const size_t *shape, nb_init init, size_t fan_in, size_t fan_out,
                            nb_rng *rng) {
    nb_tensor *t = nb_tensor_alloc(NULL, dt, ndim, shape, "nb_params_create", NULL, 0);
    if (t->status != NB_OK) return t;
    nb_status st = nb_init_tensor(t, init, fan_in, fan_out, rng);
    if (st != NB_OK) {
        nb_tensor_free(t);
        return nb_nil(st);
    }
    return nb_params_add(ps, name, t);
}

