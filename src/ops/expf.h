/*
 * e^x for float32 that the compiler can vectorise.
 *
 * glibc's expf is a function call per element, which keeps loops over
 * sigmoid and softmax scalar (it is vectorised only under -ffast-math, which
 * would also break NaN checks).  This one is plain arithmetic:
 *
 *   x = k ln2 + r,   k = round(x / ln2),   |r| <= ln2 / 2
 *   e^x = 2^k e^r,   e^r = 1 + r + r^2 P(r)
 *
 * P is a degree-5 polynomial fitted to (e^r - 1 - r) / r^2 on that interval
 * (the classic single-precision coefficients); ln2 is split in a part
 * exact in float and a correction (Cody and Waite), so that k ln2 is
 * subtracted without rounding error.  2^k is built from its exponent bits,
 * as two factors 2^(k/2) so that results near the top of the range (up to
 * 3.4e38) and gradual underflow (down to 1.4e-45) come out right.
 *
 * Accuracy: within 2 ulp of the exact value over the whole float range
 * (tests/test_stability.c sweeps it against double-precision exp); NaN gives NaN,
 * +inf and x > 88.73 give +inf, -inf and x < -103.98 give 0.
 */
#ifndef NABLA_EXPF_H
#define NABLA_EXPF_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static inline float nb_pow2i(int32_t k) { /* 2^k for -126 <= k <= 127 */
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float nb_expf(float x) {
    /* Beyond these bounds the result is 0 or inf anyway; clamping keeps k
     * and r in range.  NaN fails both comparisons and is dealt with last. */
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    xc = xc == xc ? xc : 0.0f;
    /* round to nearest: adding 1.5 * 2^23 pushes the fraction bits out */
    const float shifter = 12582912.0f;
    float kf = (xc * 1.44269504088896341f + shifter) - shifter;
    float r = (xc - kf * 0.693359375f) - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float er = 1.0f + r + r * r * p;
    int32_t k = (int32_t)kf, half = k / 2;
    float y = er * nb_pow2i(half) * nb_pow2i(k - half);
    return x != x ? x : y;
}

/* exp() of a float or a double: the vectorisable one for float, libm's for
 * double (which needs its full precision). */
#define NB_EXP(x) _Generic((x), float: nb_expf, default: exp)(x)

/* tanh for float32, vectorisable (glibc's tanhf, a call per element, took
 * 15% of an LSTM's training step):
 *   |x| < 0.625:  x + x^3 Q(x^2), Q the classic single-precision minimax
 *                 polynomial for (tanh x - x) / x^3 on that interval
 *   otherwise:    sign(x) (1 - 2 / (e^(2|x|) + 1)), with nb_expf; past
 *                 |x| = 44 e^(2|x|) is inf and the result exactly +-1
 * Within 2 ulp of the exact value (tests/test_stability.c sweeps it
 * against double-precision tanh); NaN gives NaN. */
static inline float nb_tanhf(float x) {
    float a = x < 0 ? -x : x, z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                    1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float e = nb_expf(2.0f * (a < 44.0f ? a : 44.0f));
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0 ? -big : big;
    small = x == 0 ? x : small; /* keeps the sign of -0 */
    return a < 0.625f ? small : (x != x ? x : big);
}
#define NB_TANH(x) _Generic((x), float: nb_tanhf, default: tanh)(x)

/* erf for float32, vectorisable (glibc's erff, a call per element, kept the
 * exact GELU scalar):
 *   |x| < 0.75:      x (c + z R(z)), z = x², c = 2/√π split in a float and
 *                    a correction; R a degree-4 fit of (erf(x)/x - c)/z
 *   0.75 <= |x| < 4: 1 - e^(-x²) E(|x|), E a degree-9 polynomial in |x| - 0.75
 *                    (up to 2) or |x| - 2 fitted to erfc(x) e^(x²) (a smooth,
 *                    slowly falling function), with nb_expf
 *   |x| >= 4:        ±1 (erfc(3.92) is below half an ulp of 1)
 * The fits are weighted least squares in double (numpy), relative error
 * 1e-8.  Within 2 ulp of the exact value (tests/test_stability.c sweeps it
 * against double-precision erf); odd; NaN gives NaN. */
static const float nb_erf_near0[5] = {
    -7.092318612e-04f, 5.158207252e-03f, -2.685387638e-02f, 1.128371105e-01f, -3.761263806e-01f};
static const float nb_erfcx_mid[10] = {
    -1.160063055e-04f, 1.010201852e-03f, -4.350655832e-03f, 1.292925744e-02f, -3.118116220e-02f,
    6.655004650e-02f, -1.297874877e-01f, 2.309528342e-01f, -3.679724401e-01f, 5.069376473e-01f};
static const float nb_erfcx_far[10] = {
    -1.371524459e-06f, 1.822898752e-05f, -1.173703529e-04f, 5.093236755e-04f, -1.763302977e-03f,
    5.404650840e-03f, -1.544913726e-02f, 4.180076952e-02f, -1.067963128e-01f, 2.553956735e-01f};

static inline float nb_horner(const float *c, int n, float t) {
    float p = c[0];
    for (int i = 1; i < n; i++) p = p * t + c[i];
    return p;
}

static inline float nb_erff(float x) {
    float a = x < 0 ? -x : x, z = x * x;
    float small = x * 1.128379226e+00f + x * (-5.863538344e-08f + z * nb_horner(nb_erf_near0, 5, z));
    float ac = a < 0.75f ? 0.75f : a > 4.0f ? 4.0f : a;
    float e = ac < 2.0f ? nb_horner(nb_erfcx_mid, 10, ac - 0.75f) : nb_horner(nb_erfcx_far, 10, ac - 2.0f);
    float big = 1.0f - nb_expf(-ac * ac) * e;
    big = a >= 4.0f ? 1.0f : big;
    big = x < 0 ? -big : big;
    small = x == 0 ? x : small; /* keeps the sign of -0 */
    return a < 0.75f ? small : (x != x ? x : big);
}
#define NB_ERF(x) _Generic((x), float: nb_erff, default: erf)(x)

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
