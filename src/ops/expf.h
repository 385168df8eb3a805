/*
 * GELU's float32 kernels (src/ops/unary.c), on the vectorisable exp of
 * include/nabla_kernel.h (which also has nb_tanhf and nb_erff and the
 * type-generic NB_EXP, NB_TANH and NB_ERF the built-in ops use).
 */
#ifndef NABLA_EXPF_H
#define NABLA_EXPF_H

#include "nabla_kernel.h"

/* GELU for float32, both forms, with one exp per element and no libm call
 * (glibc's erff and tanhf kept GELU scalar): values and slopes.
 *
 * Exact form, y = x Φ(x), Φ(x) = erfc(-x/√2)/2: with a = |x|/√2,
 *   erfc(a) = e^(-a²) E(a),  E = erfc·e^(a²) (erfcx, smooth and slowly
 *   falling), a degree-11 polynomial in a - 1 on [0, 2) and a degree-9 one
 *   in a - 3 on [2, 4], picked coefficient by coefficient (weighted least
 *   squares in double (numpy, mpmath), relative error 1e-7 in float);
 *   Φ = erfc(a)/2 for x < 0, 1 - erfc(a)/2 otherwise, so that Φ keeps its
 *   relative accuracy for negative x (1 + erf(x/√2) loses it there);
 *   a >= 4 (x < -5.657, |y| < 4.5e-8): Φ = 0 for x < 0, as PyTorch's
 *   float GELU, whose 1 + erf rounds to 0.
 *   The slope Φ(x) + x φ(x) takes φ(x) = e^(-a²)/√(2π) from the same exp.
 * Tanh form, y = x (1 + tanh u)/2 = x σ(2u), u = √(2/π)(x + 0.044715 x³):
 *   σ(2u) = 1/(1 + e^(-2u)), exact for u near 0 and relatively exact for
 *   u < 0 (where 1 + tanh u cancels); the slope is
 *   σ + x 2σ(1 - σ) u′, u′ = √(2/π)(1 + 3·0.044715 x²).
 * NaN gives NaN; +inf gives +inf; -inf gives NaN (-inf · 0), as PyTorch.
 * Accuracy, against the same functions in double over every 64th float of
 * [-10, 10] (tests/test_stability.c):
 *   exact form:  y within 4.3 ulp and its slope within 3.7 ulp (of its
 *                larger term) on [-1.1, 10]; 10.6 and 9.6 ulp on
 *                [-5.657, -1.1), from x²/2 rounded to a float;
 *   tanh form:   2.4 and 3.8 ulp on [-0.5, 10]; below, -2u rounded to a
 *                float gives a relative error of about |2u| 2^-23 (186 ulp
 *                at x = -9.7, where y = -1e-32; PyTorch's float 1 + tanh u
 *                is 0 there).
 * (The erf and tanh approximations alone, nb_erff and nb_tanhf above, are
 * within 1.7 and 1.4 ulp.) */
static const float nb_erfcx_low[12] = {
    -5.682304618e-05f, 1.858065079e-04f, -3.757745144e-04f, 9.898941498e-04f, -2.766246209e-03f,
    7.001168095e-03f, -1.666503772e-02f, 3.756525367e-02f, -7.922621071e-02f, 1.543721259e-01f,
    -2.732120454e-01f, 4.275835752e-01f};
static const float nb_erfcx_high[12] = {
    0.0f, 0.0f, -1.381574975e-06f, 5.929884082e-06f, -2.089957525e-05f, 8.285520016e-05f,
    -3.241304657e-04f, 1.223289291e-03f, -4.479438532e-03f, 1.588433981e-02f, -5.437225848e-02f,
    1.790011525e-01f};

/* Φ(x), and e^(-x²/2) in *gauss. */
static inline float nb_normal_cdff(float x, float *gauss) {
    float a = (x < 0 ? -x : x) * 0.707106781f;
    float e = nb_expf(-0.5f * (x * x));
    bool low = a < 2.0f;
    float u = (a > 4.0f ? 4.0f : a) - (low ? 1.0f : 3.0f);
    float p = low ? nb_erfcx_low[0] : nb_erfcx_high[0];
    for (int i = 1; i < 12; i++) p = p * u + (low ? nb_erfcx_low[i] : nb_erfcx_high[i]);
    float half = a < 4.0f ? 0.5f * e * p : 0.0f;
    *gauss = e;
    return x < 0 ? half : 1.0f - half;
}
static inline float nb_gelu_f(float x) {
    float e;
    return x * nb_normal_cdff(x, &e);
}
static inline float nb_gelu_slope_f(float x) {
    float e, cdf = nb_normal_cdff(x, &e);
    return cdf + x * e * 0.398942280f;
}
/* e^(-2u) for the tanh form; -2u = -2√(2/π) x (1 + 0.044715 x²) */
static inline float nb_gelu_tanh_e(float x) {
    return nb_expf(-1.59576912f * x * (1.0f + 0.044715f * (x * x)));
}
static inline float nb_gelu_tanh_f(float x) { return x / (1.0f + nb_gelu_tanh_e(x)); }
/* σ + x 2σ(1 - σ) u′, with 1 - σ = e σ (no cancellation as σ -> 1) */
static inline float nb_gelu_tanh_slope_f(float x) {
    float e = nb_gelu_tanh_e(x), s = 1.0f / (1.0f + e);
    return s + x * 2.0f * s * (e * s) * 0.797884561f * (1.0f + 0.134145f * (x * x));
}
/* float64: libm's erf and tanh, in the forms written out */
static inline double nb_gelu_d(double x) { return x * 0.5 * (1 + erf(x * 0.70710678118654752)); }
static inline double nb_gelu_slope_d(double x) {
    return 0.5 * (1 + erf(x * 0.70710678118654752)) + x * exp(-x * x / 2) * 0.39894228040143268;
}
static inline double nb_gelu_tanh_u(double x) { return 0.79788456080286536 * (x + 0.044715 * x * x * x); }
static inline double nb_gelu_tanh_d(double x) { return x * 0.5 * (1 + tanh(nb_gelu_tanh_u(x))); }
static inline double nb_gelu_tanh_slope_d(double x) {
    double t = tanh(nb_gelu_tanh_u(x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.79788456080286536 * (1 + 3 * 0.044715 * x * x);
}
#define NB_GELU(x) _Generic((x), float: nb_gelu_f, default: nb_gelu_d)(x)
#define NB_GELU_SLOPE(x) _Generic((x), float: nb_gelu_slope_f, default: nb_gelu_slope_d)(x)
#define NB_GELU_TANH(x) _Generic((x), float: nb_gelu_tanh_f, default: nb_gelu_tanh_d)(x)
#define NB_GELU_TANH_SLOPE(x) _Generic((x), float: nb_gelu_tanh_slope_f, default: nb_gelu_tanh_slope_d)(x)

#endif
