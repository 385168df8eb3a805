/*
 * Dropout.  Training: each element is zeroed with probability p and the
 * others are scaled by 1/(1 - p), so that the expectation is x:
 *     y = x m,  m = 0 or 1/(1 - p),   dL/dx = m dL/dy
 * Evaluation (nb_tape_set_training(tp, false)) or p = 0: y is x itself.
 *
 * The mask comes from a counter-based generator: one draw s of the caller's
 * nb_rng seeds the call (so a seed repeats the mask, and the generator moves
 * on by one draw), and element i (row-major) is dropped when
 *     splitmix64(s + i·0x9e3779b97f4a7c15) >> 11  <  ceil(p 2^53),
 * that is when u < p for the uniform u = that hash 2^-53, the comparison
 * nb_rng_uniform's draws made before, and the hash the fused attention's
 * dropout uses (src/ops/attention.c).  Each element's draw depends on its
 * index alone, so the loops vectorise and split over threads with the same
 * bits on any thread count.  The mask is kept as one bit per element (64
 * to a word) for backward.
 */
#include "../internal.h"
#include "../graph/replay.h"

#include <math.h>
#include <string.h>

typedef struct {
    double p;
    uint64_t seed, limit; /* dropped when hash >> 11 < limit */
    nb_rng *rng;          /* the seed's generator: a replay draws the next seed from it */
} dropout_params;

static inline uint64_t mix64(uint64_t z) { /* SplitMix64's output function */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Eight bytes, each 0 or 1, as the bits of a byte (byte k to bit k): with
 * byte k at bits 8k of v (one load on a little-endian machine), the
 * multiply moves its bit to bit 56 + k, with no carries. */
static inline uint64_t pack8(const uint8_t *b) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v |= (uint64_t)b[k] << (8 * k);
    return (v * 0x0102040810204080u) >> 56;
}

/* The job of a forward or backward over words [begin, end) of the mask. */
typedef struct {
    const dropout_params *p;
    size_t n;
    nb_dtype dt;
    const void *in;   /* x forward, G backward */
    void *out;        /* y forward, dL/dx backward */
    uint64_t *bits;
    bool acc;
} dropout_job;

/* Forward: each word's 64 draws (those past n too: they are pure), packed
 * into the word, then y = x · (dropped ? 0 : keep) for the word's elements. */
#define DROPOUT_FORWARD(T)                                                                             \
    static inline __attribute__((always_inline)) void dropout_words_##T(const dropout_job *j, size_t begin,   \
                                                                         size_t end) {                       \
        const T *restrict x = j->in;                                                                   \
        T *restrict y = j->out;                                                                        \
        const T keep = j->p->p < 1 ? (T)(1 / (1 - j->p->p)) : 0;                                       \
        const uint64_t seed = j->p->seed, limit = j->p->limit;                                         \
        for (size_t w = begin; w < end; w++) {                                                         \
            size_t base = w * 64, count = j->n - base < 64 ? j->n - base : 64;                         \
            uint8_t dropped[64];                                                                       \
            for (int l = 0; l < 64; l++)                                                               \
                dropped[l] = (mix64(seed + (base + (uint64_t)l) * 0x9e3779b97f4a7c15u) >> 11) < limit;  \
            uint64_t word = 0;                                                                         \
            for (int k = 0; k < 8; k++) word |= pack8(dropped + 8 * (size_t)k) << (8 * k);             \
            j->bits[w] = word;                                                                         \
            if (count == 64)                                                                           \
                for (int l = 0; l < 64; l++) y[base + l] = x[base + l] * (dropped[l] ? 0 : keep);      \
            else                                                                                       \
                for (size_t l = 0; l < count; l++) y[base + l] = x[base + l] * (dropped[l] ? 0 : keep); \
        }                                                                                              \
    }
DROPOUT_FORWARD(float)
DROPOUT_FORWARD(double)

/* Backward: dL/dx (+)= G · (bit ? 0 : keep), the bits unpacked in place. */
#define DROPOUT_BACKWARD(T)                                                                            \
    static inline __attribute__((always_inline)) void dropout_grad_words_##T(const dropout_job *j,           \
                                                                              size_t begin, size_t end) {    \
        const T *restrict g = j->in;                                                                   \
        T *restrict gx = j->out;                                                                       \
        const T keep = j->p->p < 1 ? (T)(1 / (1 - j->p->p)) : 0;                                       \
        for (size_t w = begin; w < end; w++) {                                                         \
            size_t base = w * 64, count = j->n - base < 64 ? j->n - base : 64;                         \
            const uint64_t word = j->bits[w];                                                          \
            if (count == 64) {                                                                         \
                /* in halves of 32 bits, shifted as wide as the lanes of T */                          \
                for (int h = 0; h < 2; h++) {                                                          \
                    const uint32_t half = (uint32_t)(word >> (32 * h));                                \
                    const T *restrict gh = g + base + 32 * (size_t)h;                                  \
                    T *restrict out = gx + base + 32 * (size_t)h;                                      \
                    if (j->acc)                                                                        \
                        for (uint32_t l = 0; l < 32; l++) out[l] += gh[l] * ((half >> l) & 1u ? 0 : keep); \
                    else                                                                               \
                        for (uint32_t l = 0; l < 32; l++) out[l] = gh[l] * ((half >> l) & 1u ? 0 : keep);  \
                }                                                                                      \
            } else {                                                                                   \
                for (size_t l = 0; l < count; l++) {                                                   \
                    T d = g[base + l] * ((word >> l) & 1 ? 0 : keep);                                  \
                    gx[base + l] = j->acc ? gx[base + l] + d : d;                                      \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
    }
DROPOUT_BACKWARD(float)
DROPOUT_BACKWARD(double)

/* The hash's 64-bit multiplies are one instruction with AVX-512DQ (in every
 * AVX-512 CPU but the first Xeon Phis); with AVX-512F alone they take
 * three.  An integer hash gives the same bits in every clone. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__) && !defined(NB_NO_CLONES)
#define DROPOUT_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DROPOUT_CLONES
#endif

DROPOUT_CLONES static void dropout_forward_range(void *ctx, size_t begin, size_t end) {
    const dropout_job *j = ctx;
    if (j->dt == NB_F32) dropout_words_float(j, begin, end);
    else dropout_words_double(j, begin, end);
}

NB_VECTOR_CLONES static void dropout_backward_range(void *ctx, size_t begin, size_t end) {
    const dropout_job *j = ctx;
    if (j->dt == NB_F32) dropout_grad_words_float(j, begin, end);
    else dropout_grad_words_double(j, begin, end);
}

static size_t words_of(size_t n) { return (n + 63) / 64; }

static void dropout_forward(nb_op_call *c) {
    size_t n = nb_op_size(c);
    dropout_job j = {.p = nb_op_params(c), .n = n, .dt = nb_tensor_dtype(nb_op_output(c)),
                     .in = nb_op_input_data(c, 0), .out = nb_op_output_data(c)};
    if (!(j.bits = nb_op_save(c, words_of(n) * sizeof *j.bits))) return;
    nb_parallel(words_of(n), NB_PARALLEL_GRAIN / 64, dropout_forward_range, &j);
}

static void dropout_backward(nb_op_call *c) {
    bool acc;
    void *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    size_t n = nb_op_size(c);
    dropout_job j = {.p = nb_op_params(c), .n = n, .dt = nb_tensor_dtype(nb_op_output(c)),
                     .in = nb_op_grad_output(c), .out = gx, .bits = nb_op_saved(c), .acc = acc};
    nb_parallel(words_of(n), NB_PARALLEL_GRAIN / 64, dropout_backward_range, &j);
}

/* G times the same mask, a constant. */
static void dropout_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    const dropout_params *p = nb_op_params(c);
    nb_tensor *x = nb_op_input(c, 0);
    nb_tensor *m = nb_full_(tp, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x), 0, nb_op_file(c),
                            nb_op_line(c));
    if (nb_tensor_status(m) != NB_OK) return;
    const uint64_t *bits = nb_op_saved(c);
    double keep = p->p < 1 ? 1 / (1 - p->p) : 0;
    NB_FOR_DTYPE(nb_tensor_dtype(x), {
        T *ms = m->data;
        for (size_t i = 0; i < nb_tensor_size(x); i++) ms[i] = (bits[i / 64] >> (i % 64)) & 1 ? 0 : (T)keep;
    });
    grad_in[0] = nb_mul_(tp, G, m, nb_op_file(c), nb_op_line(c));
}

static const nb_op_def dropout_op = {.name = "dropout", .forward = dropout_forward, .backward = dropout_backward,
                                     .derivative = {"mask/(1−p)"}, .elementwise = true, .backward_graph = dropout_graph};

nb_tensor *nb_dropout_(nb_tape *tp, nb_tensor *x, double p, nb_rng *rng, const char *file, int line) {
    nb_tensor *failed = nb_op_check(tp, &dropout_op, &x, 1, file, line);
    if (failed) return failed;
    if (!(p >= 0 && p <= 1)) return nb_op_error(tp, NB_ERR_ARG, file, line, "dropout: p = %g is not in [0, 1]", p);
    if (p == 0 || !nb_tape_training(tp)) return x; /* evaluation needs no generator, as in PyTorch */
    if (!rng) return nb_op_error(tp, NB_ERR_NULL, file, line, "dropout: the random generator is NULL");
    dropout_params params = {p, nb_rng_next(rng), (uint64_t)ceil(p * 0x1.0p53), rng};
    return nb_op_(tp, &dropout_op, &x, 1, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x), &params,
                  sizeof params, file, line);
}

/* A replay draws the seed a new recording would draw (one per call). */
bool nb_dropout_redraw(nb_entry *e, bool draw) {
    if (e->op != &dropout_op) return false;
    dropout_params *p = e->saved;
    if (draw) p->seed = nb_rng_next(p->rng);
    return true;
}
