/*
 * A seeded generator, so that the same seed gives the same tensors on every
 * run and platform: xoshiro256** (Blackman and Vigna) seeded through
 * splitmix64.  Uniform doubles take the top 53 bits; normals use the
 * Box-Muller transform, which makes two values per pair of uniforms.
 */
#include "../internal.h"

#include <math.h>

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* splitmix64: spreads a single seed into well-mixed state words. */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void nb_rng_seed(nb_rng *rng, uint64_t seed) {
    if (!rng) return;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
    rng->has_spare = false;
    rng->spare = 0.0;
}

uint64_t nb_rng_next(nb_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The same steps with the state in registers (dropout draws one value per
 * element: a call per value cost 5 ns of the 5.5 per element). */
void nb_rng_fill(nb_rng *rng, uint64_t *out, size_t n) {
    uint64_t s0 = rng->s[0], s1 = rng->s[1], s2 = rng->s[2], s3 = rng->s[3];
    for (size_t i = 0; i < n; i++) {
        out[i] = rotl(s1 * 5, 7) * 9;
        uint64_t t = s1 << 17;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = rotl(s3, 45);
    }
    rng->s[0] = s0, rng->s[1] = s1, rng->s[2] = s2, rng->s[3] = s3;
}

double nb_rng_uniform(nb_rng *rng) { return (double)(nb_rng_next(rng) >> 11) * 0x1.0p-53; }

double nb_rng_normal(nb_rng *rng) {
    if (rng->has_spare) {
        rng->has_spare = false;
        return rng->spare;
    }
    /* u1 in (0, 1] so that log(u1) is finite. */
    double u1 = 1.0 - nb_rng_uniform(rng), u2 = nb_rng_uniform(rng);
    double r = sqrt(-2.0 * log(u1)), theta = 6.283185307179586477 * u2; /* 2 pi u2 */
    rng->spare = r * sin(theta);
    rng->has_spare = true;
    return r * cos(theta);
}

nb_tensor *nb_rand_uniform_(nb_tape *tp, nb_rng *rng, nb_dtype dt, int ndim,
                            const size_t *shape, double lo, double hi, const char *file,
                            int line) {
    if (!rng) return nb_fail(tp, NB_ERR_NULL, file, line, "nb_rand_uniform: rng is NULL");
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "nb_rand_uniform: bounds [%g, %g) are not finite with lo <= hi", lo, hi);
    nb_tensor *t = nb_tensor_alloc(tp, dt, ndim, shape, "nb_rand_uniform", file, line);
    for (size_t i = 0; i < nb_tensor_size(t); i++)
        nb_set(t, i, lo + (hi - lo) * nb_rng_uniform(rng));
    return t;
}

nb_tensor *nb_rand_normal_(nb_tape *tp, nb_rng *rng, nb_dtype dt, int ndim,
                           const size_t *shape, double mean, double std, const char *file,
                           int line) {
    if (!rng) return nb_fail(tp, NB_ERR_NULL, file, line, "nb_rand_normal: rng is NULL");
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "nb_rand_normal: mean %g and std %g must be finite, std >= 0", mean, std);
    nb_tensor *t = nb_tensor_alloc(tp, dt, ndim, shape, "nb_rand_normal", file, line);
    for (size_t i = 0; i < nb_tensor_size(t); i++) nb_set(t, i, mean + std * nb_rng_normal(rng));
    return t;
}
