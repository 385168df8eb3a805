/*
 * Layer norm over the last axis (D elements), for each row:
 *   μ = mean x,  σ² = mean (x - μ)²  (biased, as PyTorch),  r = 1/√(σ² + eps)
 *   x̂ = (x - μ) r,  y = γ x̂ + β  (γ, β of shape (D,), optional)
 * Backward, with g = γ ⊙ dL/dy (or dL/dy without γ):
 *   dL/dx = r (g - mean(g) - x̂ mean(g ⊙ x̂))
 *   dL/dγ = sum over rows of dL/dy ⊙ x̂,   dL/dβ = sum over rows of dL/dy
 * The inputs are x, then γ and β when given; the parameters say which.
 *
 * Row kernels: a row's sums (μ, then σ² around it; mean g and mean g x̂) run
 * in 16 partial lanes of double, element k into lane k mod 16, added in a
 * fixed order at the end, so they vectorise and give the same bits in every
 * clone; the element-wise parts are loops of their own.  Rows split over
 * threads.  dL/dγ and dL/dβ add rows up in fixed chunks of CHUNK rows, each
 * chunk's sums kept apart and then added in chunk order: the same bits on
 * any thread count.
 */
#include "../internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    double eps;
    int gamma, beta; /* input index of γ and β, or -1 */
} norm_params;

enum { LANES = 16, CHUNK = 32 };

/* What a forward or backward shares across its row ranges. */
typedef struct {
    nb_dtype dt;
    size_t rows, D;
    double eps;
    const void *x, *gamma, *beta, *dy;
    void *y, *stats;         /* stats: μ and r per row, as T */
    void *gx, *partial;      /* partial: per chunk, Σ dy x̂ then Σ dy (D each) */
    bool acc_x, want_gamma, want_beta;
} norm_job;

/* Σ v (or Σ (v - c)² when centred) over a row, in double lanes. */
#define ROW_SUM(T)                                                                              \
    static inline __attribute__((always_inline)) double row_sum_##T(const T *restrict v, size_t n, \
                                                                     bool centred, double c) {   \
        double lane[LANES] = {0}, s = 0;                                                        \
        size_t k = 0;                                                                           \
        if (centred)                                                                            \
            for (; k + LANES <= n; k += LANES)                                                  \
                for (int l = 0; l < LANES; l++) {                                               \
                    double d = (double)v[k + l] - c;                                            \
                    lane[l] += d * d;                                                           \
                }                                                                               \
        else                                                                                    \
            for (; k + LANES <= n; k += LANES)                                                  \
                for (int l = 0; l < LANES; l++) lane[l] += (double)v[k + l];                    \
        for (int l = 0; l < LANES; l++) s += lane[l];                                           \
        for (; k < n; k++) s += centred ? ((double)v[k] - c) * ((double)v[k] - c) : (double)v[k]; \
        return s;                                                                               \
    }
ROW_SUM(float)
ROW_SUM(double)

#define NORM_FORWARD(T)                                                                         \
    static inline __attribute__((always_inline)) void norm_rows_##T(const norm_job *j, size_t begin, size_t end) { \
        const size_t D = j->D;                                                                  \
        const T *restrict gamma = j->gamma, *restrict beta = j->beta;                           \
        T *restrict stats = j->stats;                                                           \
        for (size_t r = begin; r < end; r++) {                                                  \
            const T *restrict x = (const T *)j->x + r * D;                                      \
            T *restrict y = (T *)j->y + r * D;                                                  \
            double mean = row_sum_##T(x, D, false, 0) / (double)D;                              \
            double var = row_sum_##T(x, D, true, mean) / (double)D;                             \
            const T m = (T)mean, inv = (T)(1 / sqrt(var + j->eps));                             \
            stats[2 * r] = m;                                                                   \
            stats[2 * r + 1] = inv;                                                             \
            if (gamma && beta)                                                                  \
                for (size_t k = 0; k < D; k++) y[k] = gamma[k] * ((x[k] - m) * inv) + beta[k];  \
            else if (gamma)                                                                     \
                for (size_t k = 0; k < D; k++) y[k] = gamma[k] * ((x[k] - m) * inv) + 0;        \
            else if (beta)                                                                      \
                for (size_t k = 0; k < D; k++) y[k] = 1 * ((x[k] - m) * inv) + beta[k];         \
            else                                                                                \
                for (size_t k = 0; k < D; k++) y[k] = 1 * ((x[k] - m) * inv) + 0;               \
        }                                                                                       \
    }
NORM_FORWARD(float)
NORM_FORWARD(double)

NB_VECTOR_CLONES static void norm_forward_range(void *ctx, size_t begin, size_t end) {
    const norm_job *j = ctx;
    if (j->dt == NB_F32) norm_rows_float(j, begin, end);
    else norm_rows_double(j, begin, end);
}

/* Backward over chunks [begin, end): each row's dL/dx, and each chunk's
 * sums of dy x̂ and dy over its rows (in row order) into its partial. */
#define NORM_BACKWARD(T)                                                                        \
    static inline __attribute__((always_inline)) void norm_grad_chunks_##T(const norm_job *j, size_t begin, \
                                                                            size_t end) {       \
        const size_t D = j->D;                                                                  \
        const T *restrict gamma = j->gamma, *restrict stats = j->stats;                         \
        for (size_t ch = begin; ch < end; ch++) {                                               \
            T *restrict pg = j->partial ? (T *)j->partial + 2 * ch * D : NULL;                  \
            T *restrict pb = pg ? pg + D : NULL;                                                \
            size_t last = (ch + 1) * CHUNK < j->rows ? (ch + 1) * CHUNK : j->rows;              \
            for (size_t r = ch * CHUNK; r < last; r++) {                                        \
                const T *restrict x = (const T *)j->x + r * D, *restrict dy = (const T *)j->dy + r * D; \
                const T m = stats[2 * r], inv = stats[2 * r + 1];                               \
                if (pg && r == ch * CHUNK) {                                                    \
                    memset(pg, 0, D * sizeof(T));                                               \
                    memset(pb, 0, D * sizeof(T));                                               \
                }                                                                               \
                if (!j->gx && !pg) continue;                                                    \
                /* one pass for the row's sums and the chunk's: dy x̂ and dy */                \
                double lane_g[LANES] = {0}, lane_gx[LANES] = {0}, sg = 0, sgx = 0;              \
                size_t k = 0;                                                                   \
                for (; k + LANES <= D; k += LANES)                                              \
                    for (int l = 0; l < LANES; l++) {                                           \
                        T d = dy[k + l], xhat = (x[k + l] - m) * inv, g = d * (gamma ? gamma[k + l] : 1); \
                        lane_g[l] += (double)g;                                                 \
                        lane_gx[l] += (double)(g * xhat);                                       \
                        if (pg) {                                                               \
                            pg[k + l] += d * xhat;                                              \
                            pb[k + l] += d;                                                     \
                        }                                                                       \
                    }                                                                           \
                for (int l = 0; l < LANES; l++) sg += lane_g[l], sgx += lane_gx[l];             \
                for (; k < D; k++) {                                                            \
                    T d = dy[k], xhat = (x[k] - m) * inv, g = d * (gamma ? gamma[k] : 1);       \
                    sg += (double)g;                                                            \
                    sgx += (double)(g * xhat);                                                  \
                    if (pg) {                                                                   \
                        pg[k] += d * xhat;                                                      \
                        pb[k] += d;                                                             \
                    }                                                                           \
                }                                                                               \
                if (!j->gx) continue;                                                           \
                const T mean_g = (T)(sg / (double)D), mean_gx = (T)(sgx / (double)D);           \
                T *restrict gx = (T *)j->gx + r * D;                                            \
                if (j->acc_x)                                                                   \
                    for (k = 0; k < D; k++)                                                     \
                        gx[k] += inv * (dy[k] * (gamma ? gamma[k] : 1) - mean_g - (x[k] - m) * inv * mean_gx); \
                else                                                                            \
                    for (k = 0; k < D; k++)                                                     \
                        gx[k] = inv * (dy[k] * (gamma ? gamma[k] : 1) - mean_g - (x[k] - m) * inv * mean_gx); \
            }                                                                                   \
        }                                                                                       \
    }
NORM_BACKWARD(float)
NORM_BACKWARD(double)

NB_VECTOR_CLONES static void norm_backward_range(void *ctx, size_t begin, size_t end) {
    const norm_job *j = ctx;
    if (j->dt == NB_F32) norm_grad_chunks_float(j, begin, end);
    else norm_grad_chunks_double(j, begin, end);
}

/* Rows per thread's part: about NB_PARALLEL_GRAIN elements. */
static size_t grain_rows(size_t D) { return D >= NB_PARALLEL_GRAIN ? 1 : NB_PARALLEL_GRAIN / D; }

static void layer_norm_forward(nb_op_call *c) {
    const norm_params *p = nb_op_params(c);
    nb_tensor *x = nb_op_input(c, 0);
    size_t D = nb_tensor_dim(x, -1), rows = nb_tensor_size(x) / D;
    norm_job j = {.dt = nb_tensor_dtype(x), .rows = rows, .D = D, .eps = p->eps, .x = nb_op_input_data(c, 0),
                  .gamma = p->gamma >= 0 ? nb_op_input_data(c, p->gamma) : NULL,
                  .beta = p->beta >= 0 ? nb_op_input_data(c, p->beta) : NULL, .y = nb_op_output_data(c)};
    if (!(j.stats = nb_op_save(c, 2 * rows * nb_dtype_size(j.dt)))) return;
    nb_parallel(rows, grain_rows(D), norm_forward_range, &j);
}

static void layer_norm_backward(nb_op_call *c) {
    const norm_params *p = nb_op_params(c);
    nb_tensor *x = nb_op_input(c, 0);
    size_t D = nb_tensor_dim(x, -1), rows = nb_tensor_size(x) / D, chunks = (rows + CHUNK - 1) / CHUNK;
    bool acc_x = false, acc_g = false, acc_b = false;
    void *gx = nb_op_grad_input(c, 0, &acc_x);
    void *gg_ = p->gamma >= 0 ? nb_op_grad_input(c, p->gamma, &acc_g) : NULL;
    void *gb_ = p->beta >= 0 ? nb_op_grad_input(c, p->beta, &acc_b) : NULL;
    nb_tape *tp = nb_op_tape(c);
    if (nb_tape_status(tp) != NB_OK) return;
    norm_job j = {.dt = nb_tensor_dtype(x), .rows = rows, .D = D, .x = nb_op_input_data(c, 0),
                  .gamma = p->gamma >= 0 ? nb_op_input_data(c, p->gamma) : NULL, .dy = nb_op_grad_output(c),
                  .stats = nb_op_saved(c), .gx = gx, .acc_x = acc_x};
    size_t w = nb_dtype_size(j.dt);
    if ((gg_ || gb_) && !(j.partial = nb_tape_scratch(tp, 2 * chunks * D * w, c))) return;
    /* x may be gamma or beta too (layer_norm(x, x, x) on a row), or gamma
     * may be beta: such inputs share one gradient buffer, which
     * nb_op_grad_input hands out zeroed and to be added to by each of
     * them.  dL/dx goes in first (the pass below reads no gradient
     * buffer), then the chunks' sums. */
    nb_parallel(chunks, grain_rows(D) / CHUNK ? grain_rows(D) / CHUNK : 1, norm_backward_range, &j);
    if (!j.partial) return;
    NB_FOR_DTYPE(j.dt, {
        const T *part = j.partial;
        T *gg = gg_, *gb = gb_;
        for (size_t k = 0; k < D; k++) {
            T sg = part[k], sb = part[D + k];
            for (size_t ch = 1; ch < chunks; ch++) sg += part[2 * ch * D + k], sb += part[2 * ch * D + D + k];
            if (gg) gg[k] = acc_g ? gg[k] + sg : sg;
            if (gb) gb[k] = acc_b ? gb[k] + sb : sb;
        }
    });
}

#define SITE_OF(c) nb_op_file(c), nb_op_line(c)

/* The closed form again, built from ops of x (μ, r and x̂ recomputed as
 * ops, so that every path through them is differentiated):
 *   dL/dx = r (g - mean g - x̂ mean(g x̂)),  g = γ G
 *   dL/dγ = sum over rows of G x̂,  dL/dβ = sum over rows of G */
static void layer_norm_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    const norm_params *p = nb_op_params(c);
    nb_tensor *x = nb_op_input(c, 0);
    int last = nb_tensor_ndim(x) - 1;
    nb_tensor *centred = nb_sub_(tp, x, nb_sum_axis_(tp, x, last, true, true, SITE_OF(c)), SITE_OF(c));
    nb_tensor *var = nb_sum_axis_(tp, nb_square_(tp, centred, SITE_OF(c)), last, true, true, SITE_OF(c));
    nb_tensor *r = nb_pow_(tp, nb_add_scalar_(tp, var, p->eps, SITE_OF(c)), -0.5, SITE_OF(c));
    nb_tensor *xhat = nb_mul_(tp, centred, r, SITE_OF(c));
    nb_tensor *g = p->gamma >= 0 ? nb_mul_(tp, G, nb_op_input(c, p->gamma), SITE_OF(c)) : G;
    if (nb_op_needs_grad(c, 0)) {
        nb_tensor *mean_g = nb_sum_axis_(tp, g, last, true, true, SITE_OF(c));
        nb_tensor *mean_gx = nb_sum_axis_(tp, nb_mul_(tp, g, xhat, SITE_OF(c)), last, true, true, SITE_OF(c));
        nb_tensor *inner = nb_sub_(tp, nb_sub_(tp, g, mean_g, SITE_OF(c)), nb_mul_(tp, xhat, mean_gx, SITE_OF(c)),
                                   SITE_OF(c));
        grad_in[0] = nb_mul_(tp, r, inner, SITE_OF(c));
    }
    size_t D = nb_tensor_dim(x, -1);
    if (p->gamma >= 0 && nb_op_needs_grad(c, p->gamma))
        grad_in[p->gamma] = nb_sum_to_(tp, nb_mul_(tp, G, xhat, SITE_OF(c)), 1, &D, SITE_OF(c));
    if (p->beta >= 0 && nb_op_needs_grad(c, p->beta)) grad_in[p->beta] = nb_sum_to_(tp, G, 1, &D, SITE_OF(c));
}

static const nb_op_def layer_norm_op = {.name = "layer_norm", .forward = layer_norm_forward,
                                        .backward = layer_norm_backward,
                                        .derivative = {"r (g − mean g − x̂ mean(g x̂)), g = γ G", "Σ G x̂",
                                                       "Σ G"}, .backward_graph = layer_norm_graph};
/* The same with β and no γ: only the pictures' formulas differ. */
static const nb_op_def layer_norm_beta_op = {.name = "layer_norm", .forward = layer_norm_forward,
                                             .backward = layer_norm_backward,
                                             .derivative = {"r (G − mean G − x̂ mean(G x̂))", "Σ G"}, .backward_graph = layer_norm_graph};

nb_tensor *nb_layer_norm_(nb_tape *tp, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, double eps,
                          const char *file, int line) {
    nb_tensor *in[3] = {x, gamma, beta};
    int n = 1;
    norm_params p = {eps, -1, -1};
    if (gamma) p.gamma = n, in[n++] = gamma;
    if (beta) p.beta = n, in[n++] = beta;
    nb_tensor *failed = nb_op_check(tp, &layer_norm_op, in, n, file, line);
    if (failed) return failed;
    char sx[128], sp[128];
    if (nb_tensor_ndim(x) < 1)
        return nb_op_error(tp, NB_ERR_SHAPE, file, line, "layer_norm: x is a scalar; it normalises the last axis");
    size_t D = nb_tensor_dim(x, -1);
    for (int k = 1; k < n; k++)
        if (nb_tensor_ndim(in[k]) != 1 || nb_tensor_dim(in[k], 0) != D)
            return nb_op_error(tp, NB_ERR_SHAPE, file, line, "layer_norm: %s %s does not fit x %s (expected (%zu,))",
                               k == p.gamma ? "gamma" : "beta", nb_shape_string(in[k], sp, sizeof sp),
                               nb_shape_string(x, sx, sizeof sx), D);
    if (!(eps > 0))
        return nb_op_error(tp, NB_ERR_ARG, file, line, "layer_norm: eps %g must be positive", eps);
    return nb_op_(tp, gamma || !beta ? &layer_norm_op : &layer_norm_beta_op, in, n, nb_tensor_dtype(x),
                  nb_tensor_ndim(x), nb_tensor_shape(x), &p, sizeof p, file, line);
}

