/*
 * nabla_kernel.h: what the built-in element-wise kernels use, for the
 * kernels of your own ops (nabla_op.h): the same vectorising clones, the
 * same split over nabla's threads, and float32 exp, tanh and erf that the
 * compiler can vectorise (glibc's expf, tanhf and erff are a call per
 * element, which keeps a loop scalar).
 *
 * A SiLU, y = x σ(x), dy/dx = σ(x)(1 + x(1 - σ(x))), written with it
 * (examples/silu_op.h has it whole, both dtypes and the backward):
 *
 *   NB_KERNEL static void silu_rows(void *ctx, size_t begin, size_t end) {
 *       nb_op_call *c = ctx;
 *       const float *x = nb_op_input_data(c, 0);
 *       float *y = nb_op_output_data(c);
 *       for (size_t i = begin; i < end; i++) y[i] = x[i] / (1 + NB_EXP(-x[i]));
 *   }
 *   static void silu_forward(nb_op_call *c) { nb_kernel_for(nb_op_size(c), silu_rows, c); }
 *
 * NB_KERNEL compiles the function three times (AVX-512, AVX2, baseline
 * x86-64; GCC picks one when the program loads) with floating-point
 * contraction off, so that every version gives the same bits: without it
 * GCC (in its default GNU mode) would fuse a * b + c into one FMA in the
 * AVX versions and not in the baseline, and results would depend on the
 * machine.  Under clang, other CPUs and the sanitizers it is empty (one
 * version for the flags given).  Call nb_op_* accessors outside the loop:
 * the compiler vectorises a loop over restrict-free plain arrays when it
 * can see that they do not overlap the output, so read the pointers first.
 *
 * NB_EXP, NB_TANH and NB_ERF pick the float32 function for a float and
 * libm's for a double (C11 _Generic); C++ has no _Generic: call nb_expf,
 * nb_tanhf and nb_erff for floats there.
 *
 * nb_kernel_for(n, fn, ctx) runs fn(ctx, begin, end) over [0, n): in one
 * call on the calling thread below 2 · NB_KERNEL_GRAIN elements (no thread
 * hand-off for small tensors), else split over nb_set_threads threads, as
 * the built-in element-wise ops are.  Each element must be computed as it
 * would be serially (no sums across the parts), so the results do not
 * depend on the thread count.
 */
#ifndef NABLA_KERNEL_H
#define NABLA_KERNEL_H

#include "nabla_op.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__) && !defined(NB_NO_CLONES)
#define NB_KERNEL __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define NB_KERNEL
#endif

/* Element-wise kernels split over threads only above this many elements
 * per thread (below, handing work to a thread costs more than it saves). */
#define NB_KERNEL_GRAIN 16384

static inline void nb_kernel_for(size_t n, void (*fn)(void *ctx, size_t begin, size_t end), void *ctx) {
    if (n < 2 * (size_t)NB_KERNEL_GRAIN)
        fn(ctx, 0, n);
    else
        nb_parallel_for(n, NB_KERNEL_GRAIN, fn, ctx);
}

/*
 * nb_expf(x): e^x for float32 that the compiler can vectorise.
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
#ifndef __cplusplus
#define NB_EXP(x) _Generic((x), float: nb_expf, default: exp)(x)
#endif

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
#ifndef __cplusplus
#define NB_TANH(x) _Generic((x), float: nb_tanhf, default: tanh)(x)
#endif

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
#ifndef __cplusplus
#define NB_ERF(x) _Generic((x), float: nb_erff, default: erf)(x)
#endif

#endif /* NABLA_KERNEL_H */
