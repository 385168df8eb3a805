/*
 * Convolutions (PyTorch's conv2d and conv1d: cross-correlations), through
 * CBLAS on unfolded patches.
 *
 * For one example and one group, with x of Cg channels and w of Og filters
 * of Cg x KH x KW taps, unfold x into the matrix
 *     col[(c, kh, kw), (oh, ow)] = x[c, oh sh - ph + kh dh, ow sw - pw + kw dw]
 * (0 where that falls in the padding); then the convolution is one product
 *     y (Og, OH·OW) = w (Og, Cg·KH·KW) · col (Cg·KH·KW, OH·OW)      [+ bias]
 * and with G = dL/dy, the chain rule gives two more:
 *     dL/dw (Og, Cg·KH·KW) = Σ over examples of G · colᵀ
 *     dL/dcol = wᵀ · G, folded back onto x (col2im: each tap adds to the
 *     element it was read from)                                       [1]
 *     dL/dbias[o] = Σ over examples and positions of G[o]
 * A 1x1 convolution with stride 1 and no padding needs no unfolding: col
 * is x itself.
 *
 * The three maps are the partial derivatives of one trilinear form,
 *     T(x, w, G) = Σ G · conv(x, w),
 * so each one's backward is made of the other two, which is how the
 * backward is itself differentiable (for nb_grad with create_graph):
 *     conv(x, w):          dx = input_grad(G, w)     dw = weight_grad(x, G)
 *     input_grad(G, w):    dG = conv(H, w)           dw = weight_grad(H, G)
 *     weight_grad(x, G):   dx = input_grad(G, H)     dG = conv(x, H)
 * (H is the upstream gradient of each).  All three are ops below.
 *
 * With nb_conv_opts.relu the result is relu'd in the same pass, while each
 * example's block is still in cache, and backward masks G (0 where y <= 0)
 * an example at a time before the products: the two passes over memory of a
 * separate relu, forward and backward, are saved (relu' = 0 at 0, as
 * nb_relu).
 *
 * Threads: examples are split over nabla's threads, each unfolding into its
 * own part of the tape's working memory; an example's products are the same
 * CBLAS calls whatever the thread count.  The weight gradient sums over
 * examples in a fixed number of chunks (set by the batch size alone), each
 * chunk's partial sum made in order by one thread, and the partial sums then
 * added in order: the same bits on any number of threads.
 */
#include "conv.h"
#include "winograd.h"

#include <string.h>


static size_t in_group(const conv_geom *g) { return g->C / g->groups; }   /* Cg */
static size_t out_group(const conv_geom *g) { return g->O / g->groups; }  /* Og */
static size_t patch(const conv_geom *g) { return in_group(g) * g->KH * g->KW; } /* rows of col */
static size_t positions(const conv_geom *g) { return g->OH * g->OW; }     /* columns of col */
/* col is x itself when each tap reads x in place: a 1x1 kernel, stride 1,
 * no padding, and (for conv_transpose.c, whose output padding can make x
 * larger than y) x and y of the same size. */
static bool unfolds(const conv_geom *g) {
    return !(g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 && g->OH == g->H &&
             g->OW == g->W);
}

/* The weight gradient's sum over examples is made in this many chunks (or
 * one per example, for smaller batches): see the top of the file. */
enum { WEIGHT_CHUNKS = 8 };

/* The outputs ow (of OW) whose tap at offset `off` (kw dw - pw) reads
 * inside a row of W: [*lo, *hi). */
static void valid_range(long off, long stride, size_t W, size_t OW, size_t *lo, size_t *hi) {
    long first = off >= 0 ? 0 : (-off + stride - 1) / stride;           /* ow stride + off >= 0 */
    long last = (long)W - 1 - off < 0 ? -1 : ((long)W - 1 - off) / stride; /* ow stride + off <= W - 1 */
    *hi = last < 0 ? 0 : (size_t)last + 1 < OW ? (size_t)last + 1 : OW;
    *lo = (size_t)first < *hi ? (size_t)first : *hi;
}

/* One row of col for tap (kh, kw) of channel c: OH runs of OW values.  The
 * runs are short (a row of the output), so they are copied by inline loops
 * the compiler vectorises, not by memcpy calls. */
#define IM2COL_ROW(T)                                                                                   \
    NB_VECTOR_CLONES static void im2col_row_##T(const conv_geom *g, const T *restrict plane, T *restrict row, size_t kh,  \
                               size_t kw) {                                                             \
        long off = (long)kw * g->dw - g->pw;                                                            \
        size_t lo, hi;                                                                                  \
        valid_range(off, g->sw, g->W, g->OW, &lo, &hi);                                                 \
        for (size_t oh = 0; oh < g->OH; oh++) {                                                         \
            T *restrict dst = row + oh * g->OW;                                                         \
            long ih = (long)oh * g->sh + (long)kh * g->dh - g->ph;                                      \
            if (ih < 0 || ih >= (long)g->H) {                                                           \
                for (size_t ow = 0; ow < g->OW; ow++) dst[ow] = 0;                                      \
                continue;                                                                               \
            }                                                                                           \
            const T *restrict src = plane + (size_t)ih * g->W;                                          \
            for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0;                                             \
            if (g->sw == 1) {                                                                           \
                const T *restrict s = src + off;                                                        \
                for (size_t ow = lo; ow < hi; ow++) dst[ow] = s[ow];                                    \
            } else {                                                                                    \
                for (size_t ow = lo; ow < hi; ow++) dst[ow] = src[(long)ow * g->sw + off];              \
            }                                                                                           \
            for (size_t ow = hi; ow < g->OW; ow++) dst[ow] = 0;                                         \
        }                                                                                               \
    }
/* The adjoint: the row's values added back where they were read from. */
#define COL2IM_ROW(T)                                                                                   \
    NB_VECTOR_CLONES static void col2im_row_##T(const conv_geom *g, const T *restrict row, T *restrict plane, size_t kh,  \
                               size_t kw) {                                                             \
        long off = (long)kw * g->dw - g->pw;                                                            \
        size_t lo, hi;                                                                                  \
        valid_range(off, g->sw, g->W, g->OW, &lo, &hi);                                                 \
        for (size_t oh = 0; oh < g->OH; oh++) {                                                         \
            long ih = (long)oh * g->sh + (long)kh * g->dh - g->ph;                                      \
            if (ih < 0 || ih >= (long)g->H) continue;                                                   \
            const T *restrict src = row + oh * g->OW;                                                   \
            T *restrict dst = plane + (size_t)ih * g->W;                                                \
            if (g->sw == 1) {                                                                           \
                T *restrict d = dst + off;                                                              \
                for (size_t ow = lo; ow < hi; ow++) d[ow] += src[ow];                                   \
            } else {                                                                                    \
                for (size_t ow = lo; ow < hi; ow++) dst[(long)ow * g->sw + off] += src[ow];             \
            }                                                                                           \
        }                                                                                               \
    }
IM2COL_ROW(float)
IM2COL_ROW(double)
COL2IM_ROW(float)
COL2IM_ROW(double)

/* col (patch x positions) from x (Cg planes of H x W), or with back set,
 * its adjoint: each element of col added to the element of x it was read
 * from (col2im). */
static void unfold(const conv_geom *g, nb_dtype dt, bool back, void *x, void *col) {
    size_t P = positions(g), plane = g->H * g->W;
    for (size_t c = 0; c < in_group(g); c++)
        for (size_t kh = 0; kh < g->KH; kh++)
            for (size_t kw = 0; kw < g->KW; kw++) {
                size_t r = (c * g->KH + kh) * g->KW + kw;
                if (dt == NB_F32 && !back)
                    im2col_row_float(g, (const float *)x + c * plane, (float *)col + r * P, kh, kw);
                else if (!back)
                    im2col_row_double(g, (const double *)x + c * plane, (double *)col + r * P, kh, kw);
                else if (dt == NB_F32)
                    col2im_row_float(g, (const float *)col + r * P, (float *)x + c * plane, kh, kw);
                else
                    col2im_row_double(g, (const double *)col + r * P, (double *)x + c * plane, kh, kw);
            }
}
#define im2col(g, dt, x, col) unfold(g, dt, false, (void *)(x), col) /* x is only read */
#define col2im(g, dt, col, x) unfold(g, dt, true, x, (void *)(col)) /* col is only read */

/* ---------------------------------------------------------------- the three kernels */

typedef struct {
    const conv_geom *g;
    nb_dtype dt;
    const char *a, *b, *bias; /* the two inputs of the kernel (see each), the bias or NULL */
    char *out;
    bool acc;                 /* add into out instead of overwriting it */
    char *scratch;            /* parts x part_bytes: each part's unfolded patches */
    size_t part_bytes, parts;
    char *partials;           /* weight gradient: chunks partial sums */
    size_t chunks;
    char *bias_grad;          /* weight kernel: dL/dbias too, or NULL */
    bool bias_acc;
    char *input_grad;         /* weight kernel: dL/dx too, or NULL */
    bool input_acc;
    char *bias_partials;      /* chunks x O partial sums of dL/dbias */
    const char *relu_out;     /* fused relu: y, whose zeros mask G (backward kernels) */
    char *masked;             /* parts x masked_bytes: each part's masked G */
    size_t masked_bytes;
} conv_job;

/* G of example n, group grp: as given, or masked by the fused relu's
 * output into the part's buffer. */
static const char *g_block(const conv_job *j, const char *G_all, size_t n, size_t grp, size_t part) {
    const conv_geom *g = j->g;
    size_t P = positions(g), Og = out_group(g), at = (n * g->O + grp * Og) * P;
    if (!j->relu_out) return G_all + at * nb_dtype_size(j->dt);
    char *out = j->masked + part * j->masked_bytes;
    NB_DISPATCH(j->dt, {
        const T *restrict G = (const T *)(const void *)G_all + at,
                           *restrict y = (const T *)(const void *)j->relu_out + at;
        T *restrict m = (T *)(void *)out;
        /* G where relu passes it, as nb_relu's backward: 0 where y <= 0,
         * also for an inf or NaN G (not 0 · inf), and G where y is NaN */
        for (size_t i = 0; i < Og * P; i++) m[i] = y[i] <= 0 ? (T)0 : G[i];
    });
    return out;
}

/* Which part of the split [0, n) into `parts` starts at `begin` (0 when
 * nb_parallel_parts ran the whole range at once). */
static size_t part_of(size_t begin, size_t n, size_t parts) {
    for (size_t p = 0; p < parts; p++)
        if (nb_part_begin(n, p, parts) == begin) return p;
    return 0;
}

/* A thread's part of the unfolding buffer; NULL where no unfolding is
 * needed (1x1, stride 1, no padding), which has no buffer at all. */
static char *scratch_part(const conv_job *j, size_t part) {
    return j->scratch ? j->scratch + part * j->part_bytes : NULL;
}

/* y (N, O, P) = conv(x = a, w = b) + bias, for examples begin..end. */
static void forward_part(void *ctx, size_t begin, size_t end) {
    const conv_job *j = ctx;
    const conv_geom *g = j->g;
    size_t bytes = nb_dtype_size(j->dt), P = positions(g), K = patch(g), Cg = in_group(g), Og = out_group(g);
    char *col = scratch_part(j, part_of(begin, g->N, j->parts));
    for (size_t n = begin; n < end; n++)
        for (size_t grp = 0; grp < g->groups; grp++) {
            const char *x = j->a + (n * g->C + grp * Cg) * g->H * g->W * bytes;
            char *y = j->out + (n * g->O + grp * Og) * P * bytes;
            if (unfolds(g)) im2col(g, j->dt, x, col);
            double beta = j->acc ? 1 : 0;
            if (j->bias) { /* y starts as the bias; gemm adds the product */
                NB_DISPATCH(j->dt, {
                    const T *b = (const T *)(const void *)j->bias + grp * Og;
                    T *ys = (T *)(void *)y;
                    for (size_t o = 0; o < Og; o++)
                        for (size_t p = 0; p < P; p++) ys[o * P + p] = b[o];
                });
                beta = 1;
            }
            nb_gemm(j->dt, false, false, Og, P, K, 1.0, j->b + grp * Og * K * bytes, K, unfolds(g) ? col : x, P, beta,
                    y);
            if (g->relu)
                NB_DISPATCH(j->dt, {
                    T *ys = (T *)(void *)y;
                    for (size_t i = 0; i < Og * P; i++) ys[i] = ys[i] <= 0 ? 0 : ys[i]; /* NaN kept, as nb_relu */
                });
        }
}

/* dL/dx of example n, group grp, (+)= from its block G and the weights w
 * (Og, K): the one product wᵀ · G, folded back by col2im (col is the
 * part's scratch). */
static void input_grad_block(const conv_geom *g, nb_dtype dt, const char *G, const char *w, char *col, char *gx_all,
                             size_t n, size_t grp, bool acc) {
    size_t bytes = nb_dtype_size(dt), P = positions(g), K = patch(g), Cg = in_group(g), Og = out_group(g);
    char *gx = gx_all + (n * g->C + grp * Cg) * g->H * g->W * bytes;
    w += grp * Og * K * bytes;
    if (!unfolds(g)) { /* dL/dx = wᵀ · G directly */
        nb_gemm(dt, true, false, Cg, P, Og, 1.0, w, K, G, P, acc ? 1 : 0, gx);
        return;
    }
    nb_gemm(dt, true, false, K, P, Og, 1.0, w, K, G, P, 0, col); /* dL/dcol = wᵀ · G */
    if (!acc) memset(gx, 0, Cg * g->H * g->W * bytes);
    col2im(g, dt, col, gx);
}

/* dL/dx (N, C, H, W) from G = a (N, O, P) and w = b, for examples begin..end. */
static void input_grad_part(void *ctx, size_t begin, size_t end) {
    const conv_job *j = ctx;
    const conv_geom *g = j->g;
    size_t part = part_of(begin, g->N, j->parts);
    char *col = scratch_part(j, part);
    for (size_t n = begin; n < end; n++)
        for (size_t grp = 0; grp < g->groups; grp++)
            input_grad_block(g, j->dt, g_block(j, j->a, n, grp, part), j->b, col, j->out, n, grp, j->acc);
}

/* The sums of G's rows (rows x P), into sums[0..rows) (set when first,
 * else added): each row in LANES interleaved partial sums, added together
 * at the end, a fixed order that the compiler can vectorise, where one
 * running sum would wait on each add (1.8 ms against 0.2 for a
 * (64, 32, 26, 26) gradient).  Not NB_VECTOR_CLONES: see the GCC bug
 * described there. */
enum { LANES = 16 };

static void add_row_sums(nb_dtype dt, const char *G, size_t rows, size_t P, char *sums, bool first) {
    size_t whole = P / LANES * LANES;
    NB_DISPATCH(dt, {
        const T *g = (const T *)(const void *)G;
        T *out = (T *)(void *)sums;
        for (size_t r = 0; r < rows; r++) {
            const T *row = g + r * P;
            T lane[LANES] = {0}, s = 0;
            for (size_t p = 0; p < whole; p += LANES)
                for (size_t k = 0; k < LANES; k++) lane[k] += row[p + k];
            for (size_t p = whole; p < P; p++) lane[p - whole] += row[p];
            for (size_t k = 0; k < LANES; k++) s += lane[k];
            out[r] = first ? s : out[r] + s;
        }
    });
}

/* dL/dw (O, K) from x = a and G = b (N, O, P), and dL/dbias (O) and dL/dx
 * (from the weights in `bias`'s place) if asked:
 * chunks begin..end of the examples, each summed in order into its own
 * partial.  The partials hold the transpose, dL/dwᵀ (K, Og) per group,
 * = col (K, P) · Gᵀ (P, Og): the same sums, in the product's faster shape
 * for a tall col (measured with OpenBLAS's AVX-512 kernels on 3x3x32
 * patches: 96 against 72 GFLOP/s).  The bias's sums are taken from each
 * example's block of G while it is in cache, and so is dL/dx (its own
 * example's alone, so the same bits as input_grad_part): G is read, and
 * masked for the fused relu, once for the three instead of three times. */
static void weight_grad_part(void *ctx, size_t begin, size_t end) {
    const conv_job *j = ctx;
    const conv_geom *g = j->g;
    size_t bytes = nb_dtype_size(j->dt), P = positions(g), K = patch(g), Cg = in_group(g), Og = out_group(g);
    size_t part = part_of(begin, j->chunks, j->parts);
    char *col = scratch_part(j, part);
    for (size_t c = begin; c < end; c++) {
        char *partial = j->out ? j->partials + c * g->O * K * bytes : NULL;
        char *bias_partial = j->bias_grad ? j->bias_partials + c * g->O * bytes : NULL;
        bool first = true;
        for (size_t n = nb_part_begin(g->N, c, j->chunks); n < nb_part_begin(g->N, c + 1, j->chunks); n++) {
            for (size_t grp = 0; grp < g->groups; grp++) {
                const char *x = j->a + (n * g->C + grp * Cg) * g->H * g->W * bytes;
                const char *G = g_block(j, j->b, n, grp, part);
                if (partial) {
                    if (unfolds(g)) im2col(g, j->dt, x, col);
                    nb_gemm(j->dt, false, true, K, Og, P, 1.0, unfolds(g) ? col : x, P, G, P, first ? 0 : 1,
                            partial + grp * K * Og * bytes);
                }
                if (bias_partial) add_row_sums(j->dt, G, Og, P, bias_partial + grp * Og * bytes, first);
                if (j->input_grad) input_grad_block(g, j->dt, G, j->bias, col, j->input_grad, n, grp, j->input_acc);
            }
            first = false;
        }
    }
}

/* dL/dbias (+)= the chunks' partial sums, added in chunk order. */
static void add_bias_partials(const conv_job *j) {
    NB_DISPATCH(j->dt, {
        const T *parts = (const T *)(const void *)j->bias_partials;
        T *out = (T *)(void *)j->bias_grad;
        for (size_t o = 0; o < j->g->O; o++) {
            T s = parts[o];
            for (size_t c = 1; c < j->chunks; c++) s += parts[c * j->g->O + o];
            out[o] = j->bias_acc ? out[o] + s : s;
        }
    });
}

/* out (O, K) (+)= the chunks' partials (K, Og per group), transposed back
 * and added in chunk order; rows begin..end of out. */
static void add_partials(void *ctx, size_t begin, size_t end) {
    const conv_job *j = ctx;
    size_t K = patch(j->g), Og = out_group(j->g), total = j->g->O * K;
    NB_DISPATCH(j->dt, {
        const T *parts = (const T *)(const void *)j->partials;
        T *out = (T *)(void *)j->out;
        for (size_t o = begin; o < end; o++) {
            size_t grp = o / Og, within = o % Og;
            for (size_t k = 0; k < K; k++) {
                size_t at = grp * K * Og + k * Og + within; /* element (k, within) of the group's partial */
                T s = parts[at];
                for (size_t c = 1; c < j->chunks; c++) s += parts[c * total + at];
                out[o * K + k] = j->acc ? out[o * K + k] + s : s;
            }
        }
    });
}

/* Threads for a job of `items` examples (or chunks) and `flops` in all. */
static size_t parts_for(size_t items, double flops) {
    size_t threads = (size_t)nb_get_threads();
    if (flops < 2e5) return 1;
    return items < threads ? (items ? items : 1) : threads;
}

/* The other gradients the weight kernel can take in the same pass. */
typedef struct {
    void *bias_grad;  /* dL/dbias, or NULL */
    bool bias_acc;
    void *input_grad; /* dL/dx, or NULL */
    bool input_acc;
    const void *w;    /* the weights, for dL/dx */
} more_grads;

/* The forward (x = a, w = b), the input gradient (G = a, w = b) or the
 * weight gradient (x = a, G = b) by Winograd (src/ops/winograd.c) where it
 * applies and is faster: 1 done, 0 not taken, -1 out of memory. */
static int winograd(const nb_entry *e, int kernel, nb_dtype dt, const void *a, const void *b, const void *bias,
                    void *out, bool acc) {
    const conv_geom *g = e->saved;
    nb_winograd_geom wg = {g->N, g->C, g->H, g->W, g->O, g->KH, g->KW, g->OH, g->OW,
                           g->sh, g->sw, g->ph, g->pw, g->dh, g->dw, g->groups, g->one_d};
    bool fwd = kernel == KERNEL_FORWARD;
    int kind = fwd ? NB_WINOGRAD_FORWARD : kernel == KERNEL_INPUT_GRAD ? NB_WINOGRAD_INPUT_GRAD : NB_WINOGRAD_WEIGHT_GRAD;
    nb_winograd_call c = {kind, dt, a, b, fwd ? bias : NULL, g->relu && !fwd ? e->out->data : NULL, g->relu && fwd,
                          out, acc};
    return nb_winograd_run(e, &wg, &c);
}

/* Runs one of the three kernels; false (tape errored) if working memory
 * could not be had.  The weight kernel also takes the gradients `more`
 * asks for, and out may then be NULL (no weight gradient). */
static bool run_kernel_with(const nb_entry *e, int kernel, nb_dtype dt, const void *a, const void *b,
                            const void *bias, void *out, bool acc, const more_grads *more) {
    const conv_geom *g = e->saved;
    more_grads rest;
    if (kernel != KERNEL_WEIGHT_GRAD) {
        int done = winograd(e, kernel, dt, a, b, bias, out, acc);
        if (done) return done > 0;
    } else { /* dL/dx and dL/dw by Winograd where it applies, then the rest in one pass */
        rest = more ? *more : (more_grads){NULL, false, NULL, false, NULL};
        int done = rest.input_grad ? winograd(e, KERNEL_INPUT_GRAD, dt, b, rest.w, NULL, rest.input_grad,
                                              rest.input_acc)
                                   : 0;
        if (done < 0) return false;
        if (done) rest.input_grad = NULL;
        done = out ? winograd(e, KERNEL_WEIGHT_GRAD, dt, a, b, NULL, out, acc) : 0;
        if (done < 0) return false;
        if (done) out = NULL;
        if (!out && !rest.input_grad && !rest.bias_grad) return true;
        more = &rest;
    }
    size_t bytes = nb_dtype_size(dt), K = patch(g), P = positions(g);
    double flops = 2.0 * (double)g->N * (double)g->O * (double)K * (double)P;
    void *bias_grad = more ? more->bias_grad : NULL;
    conv_job j = {g,    dt,        a,    b,    more && more->input_grad ? more->w : bias,
                  out,  acc,       NULL, 0,    1,
                  NULL, 1,         bias_grad, more && more->bias_acc, more ? more->input_grad : NULL,
                  more && more->input_acc, NULL, NULL, NULL, 0};
    if (g->relu && kernel != KERNEL_FORWARD) { /* backward of the fused op: G masked by y */
        j.relu_out = e->out->data;
        j.masked_bytes = (out_group(g) * P * bytes + NB_ALIGN - 1) / NB_ALIGN * NB_ALIGN;
    }
    bool uses_col = out || kernel != KERNEL_WEIGHT_GRAD || j.input_grad;
    size_t col_bytes = unfolds(g) && uses_col ? (K * P * bytes + NB_ALIGN - 1) / NB_ALIGN * NB_ALIGN : 0;
    if (kernel == KERNEL_WEIGHT_GRAD) {
        if (g->N == 0) { /* no examples: zero gradients */
            if (out && !acc) memset(out, 0, g->O * K * bytes);
            if (bias_grad && !j.bias_acc) memset(bias_grad, 0, g->O * bytes);
            return true; /* and dL/dx has no element */
        }
        j.chunks = g->N < WEIGHT_CHUNKS ? g->N : WEIGHT_CHUNKS;
        j.parts = parts_for(j.chunks, out || j.input_grad ? flops : 0);
    } else {
        j.parts = parts_for(g->N, flops);
    }
    size_t partial_bytes = kernel == KERNEL_WEIGHT_GRAD && out ? j.chunks * g->O * K * bytes : 0;
    size_t bias_bytes = bias_grad ? (j.chunks * g->O * bytes + NB_ALIGN - 1) / NB_ALIGN * NB_ALIGN : 0;
    j.part_bytes = col_bytes;
    if (col_bytes || partial_bytes || j.masked_bytes || bias_bytes) {
        char *mem =
            nb_tape_scratch(e->out->tape, j.parts * (col_bytes + j.masked_bytes) + bias_bytes + partial_bytes, e);
        if (!mem) return false;
        j.scratch = mem;
        j.masked = mem + j.parts * col_bytes;
        j.bias_partials = j.masked + j.parts * j.masked_bytes;
        j.partials = j.bias_partials + bias_bytes;
    }
    switch (kernel) {
    case KERNEL_FORWARD: nb_parallel_parts(g->N, (int)j.parts, forward_part, &j); break;
    case KERNEL_INPUT_GRAD: nb_parallel_parts(g->N, (int)j.parts, input_grad_part, &j); break;
    default:
        nb_parallel_parts(j.chunks, (int)j.parts, weight_grad_part, &j);
        if (out) nb_parallel(g->O, 1 + NB_PARALLEL_GRAIN / K, add_partials, &j);
        if (bias_grad) add_bias_partials(&j);
    }
    return true;
}

static bool run_kernel(const nb_entry *e, int kernel, nb_dtype dt, const void *a, const void *b, const void *bias,
                       void *out, bool acc) {
    return run_kernel_with(e, kernel, dt, a, b, bias, out, acc, NULL);
}

/* ---------------------------------------------------------------- the ops */

/* Each entry keeps its conv_geom in `saved`; e->flag0 marks a bias input. */
static const conv_geom *geom(const nb_entry *e) { return e->saved; }

static nb_tensor *conv_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                            const char *file, int line);
static nb_tensor *input_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *G, nb_tensor *w, const char *file,
                                  int line);
static nb_tensor *weight_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *G, const char *file,
                                   int line);

void nb_conv_describe(const conv_geom *g, char *buf, size_t size) {
    int n = g->one_d ? snprintf(buf, size, "kernel %zu", g->KW) : snprintf(buf, size, "%zu×%zu", g->KH, g->KW);
    if (n < 0 || (size_t)n >= size) return;
    if (g->sh != 1 || g->sw != 1)
        n += g->one_d || g->sh == g->sw ? snprintf(buf + n, size - (size_t)n, ", stride %ld", g->sw)
                                         : snprintf(buf + n, size - (size_t)n, ", stride %ld,%ld", g->sh, g->sw);
    if ((size_t)n < size && (g->ph || g->pw))
        n += g->one_d || g->ph == g->pw ? snprintf(buf + n, size - (size_t)n, ", padding %ld", g->pw)
                                         : snprintf(buf + n, size - (size_t)n, ", padding %ld,%ld", g->ph, g->pw);
    if ((size_t)n < size && (g->dh != 1 || g->dw != 1))
        n += g->one_d || g->dh == g->dw ? snprintf(buf + n, size - (size_t)n, ", dilation %ld", g->dw)
                                         : snprintf(buf + n, size - (size_t)n, ", dilation %ld,%ld", g->dh, g->dw);
    if ((size_t)n < size && g->groups > 1) n += snprintf(buf + n, size - (size_t)n, ", groups %zu", g->groups);
    if ((size_t)n < size && g->relu) snprintf(buf + n, size - (size_t)n, ", then relu");
}

static void conv_describe(const nb_op_call *e, char *buf, size_t size) { nb_conv_describe(geom(e), buf, size); }

static void conv_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0], *w = e->in[1];
    if (!run_kernel(e, KERNEL_FORWARD, x->dtype, x->data, w->data,
                    e->flag0 ? e->in[2]->data : NULL, e->out->data, false))
        memset(e->out->data, 0, e->out->size * nb_dtype_size(x->dtype));
}

static void conv_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0], *w = e->in[1];
    more_grads more = {NULL, false, NULL, false, w->data};
    void *gw = NULL;
    bool acc_w = false;
    if (x->requires_grad && !(more.input_grad = nb_grad_target(tp, x, &more.input_acc))) return;
    if (w->requires_grad && !(gw = nb_grad_target(tp, w, &acc_w))) return;
    if (e->flag0 && e->in[2]->requires_grad && !(more.bias_grad = nb_grad_target(tp, e->in[2], &more.bias_acc)))
        return;
    if (!gw && !more.bias_grad) { /* dL/dx alone */
        if (more.input_grad)
            run_kernel(e, KERNEL_INPUT_GRAD, x->dtype, e->out->grad, w->data, NULL, more.input_grad, more.input_acc);
        return;
    }
    /* dL/dw, dL/dbias and dL/dx in one pass over the examples (see weight_grad_part) */
    run_kernel_with(e, KERNEL_WEIGHT_GRAD, x->dtype, x->data, e->out->grad, NULL, gw, acc_w, &more);
}

/* The three maps of the top of the file, and the bias's: G summed over
 * every axis but the channels. */
static void conv_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    conv_geom plain = *geom(e);
    const conv_geom *g = &plain;
    if (plain.relu) { /* where(y <= 0, 0, G), as the backward: the mask is a constant (relu'' = 0) */
        nb_tensor *mask = nb_tensor_alloc(tp, G->dtype, G->ndim, G->shape, e->op->name, e->file, e->line);
        if (mask->status != NB_OK) return;
        NB_DISPATCH(G->dtype, {
            const T *y = e->out->data;
            T *m = mask->data;
            for (size_t i = 0; i < mask->size; i++) m[i] = y[i] <= 0 ? 0 : 1; /* a NaN y passes G */
        });
        G = nb_where_(tp, mask, G, nb_full_(tp, G->dtype, 0, NULL, 0, e->file, e->line), e->file, e->line);
        plain.relu = false; /* the backward's own ops are plain convolutions */
    }
    if (e->in[0]->requires_grad) grad_in[0] = input_grad_call(tp, g, G, e->in[1], e->file, e->line);
    if (e->in[1]->requires_grad) grad_in[1] = weight_grad_call(tp, g, e->in[0], G, e->file, e->line);
    if (e->flag0 && e->in[2]->requires_grad) {
        size_t keep[4] = {1, g->O, 1, 1};
        long flat[1] = {(long)g->O};
        grad_in[2] = nb_reshape_(tp, nb_sum_to_(tp, G, G->ndim, keep, e->file, e->line), 1, flat, e->file, e->line);
    }
}

/* The two backward ops, input_grad(G, w) and weight_grad(x, G), as tables:
 * the kernel each one's forward runs on its inputs, and for each input the
 * kernel and the operands that give its gradient from the upstream H:
 *   input_grad(G, w):   dG = conv(H, w),             dw = weight_grad(H, G)
 *   weight_grad(x, G):  dx = input_grad(G, H),       dG = conv(x, H)        */
enum { UPSTREAM, INPUT0, INPUT1 };
typedef struct { int kernel, a, b; } kernel_call;
typedef struct { int forward; kernel_call grad[2]; } adjoint_def;
static const adjoint_def input_grad_def = {KERNEL_INPUT_GRAD,
                                           {{KERNEL_FORWARD, UPSTREAM, INPUT1}, {KERNEL_WEIGHT_GRAD, UPSTREAM, INPUT0}}};
static const adjoint_def weight_grad_def = {KERNEL_WEIGHT_GRAD,
                                            {{KERNEL_INPUT_GRAD, INPUT1, UPSTREAM}, {KERNEL_FORWARD, INPUT0, UPSTREAM}}};
static const adjoint_def *adjoint_of(const nb_entry *e);

static void adjoint_forward(nb_entry *e) {
    if (!run_kernel(e, adjoint_of(e)->forward, e->out->dtype, e->in[0]->data, e->in[1]->data, NULL, e->out->data,
                    false))
        memset(e->out->data, 0, e->out->size * nb_dtype_size(e->out->dtype));
}

static void adjoint_backward(nb_entry *e) {
    const adjoint_def *d = adjoint_of(e);
    const void *operand[3] = {e->out->grad, e->in[0]->data, e->in[1]->data};
    for (int i = 0; i < 2; i++) {
        if (!e->in[i]->requires_grad) continue;
        bool acc;
        void *g = nb_grad_target(e->out->tape, e->in[i], &acc);
        const kernel_call *k = &d->grad[i];
        if (!g || !run_kernel(e, k->kernel, e->out->dtype, operand[k->a], operand[k->b], NULL, g, acc)) return;
    }
}

static void input_grad_graph(nb_entry *e, nb_tensor *H, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    if (e->in[0]->requires_grad) grad_in[0] = conv_call(tp, geom(e), H, e->in[1], NULL, e->file, e->line);
    if (e->in[1]->requires_grad) grad_in[1] = weight_grad_call(tp, geom(e), H, e->in[0], e->file, e->line);
}

static void weight_grad_graph(nb_entry *e, nb_tensor *H, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    if (e->in[0]->requires_grad) grad_in[0] = input_grad_call(tp, geom(e), e->in[1], H, e->file, e->line);
    if (e->in[1]->requires_grad) grad_in[1] = conv_call(tp, geom(e), e->in[0], H, NULL, e->file, e->line);
}

#define CONV_OPS(prefix, label)                                                                                  \
    static const nb_op prefix##_op = {.name = label, .forward = conv_forward, .backward = conv_backward,          \
                                      .derivative = {"conv_transpose(G, W)", "Σ over examples of G ⋆ x",         \
                                                     "G summed over examples and positions"},                   \
                                      .backward_graph = conv_graph, .describe = conv_describe};                 \
    static const nb_op prefix##_input_grad_op = {.name = label "_input_grad", .forward = adjoint_forward,        \
                                                 .backward = adjoint_backward,                                  \
                                                 .derivative = {"conv(G, W)", "Σ over examples of G ⋆ H"},      \
                                                 .backward_graph = input_grad_graph, .describe = conv_describe}; \
    static const nb_op prefix##_weight_grad_op = {.name = label "_weight_grad", .forward = adjoint_forward,      \
                                                  .backward = adjoint_backward,                                 \
                                                  .derivative = {"conv_transpose(H, G)", "conv(x, G)"},          \
                                                  .backward_graph = weight_grad_graph, .describe = conv_describe};
CONV_OPS(conv2d, "conv2d")
CONV_OPS(conv1d, "conv1d")

static const adjoint_def *adjoint_of(const nb_entry *e) {
    return e->op == &conv2d_input_grad_op || e->op == &conv1d_input_grad_op ? &input_grad_def : &weight_grad_def;
}
/* With the relu fused (nb_conv_opts.relu): Ĝ = where(y <= 0, 0, G) reaches the products. */
static const nb_op conv2d_relu_op = {.name = "conv2d + relu", .forward = conv_forward, .backward = conv_backward,
                                     .derivative = {"conv_transpose(Ĝ, W), Ĝ = G ⊙ [y > 0]",
                                                    "Σ over examples of Ĝ ⋆ x", "Ĝ summed over examples and positions"},
                                     .backward_graph = conv_graph, .describe = conv_describe};
static const nb_op conv1d_relu_op = {.name = "conv1d + relu", .forward = conv_forward, .backward = conv_backward,
                                     .derivative = {"conv_transpose(Ĝ, W), Ĝ = G ⊙ [y > 0]",
                                                    "Σ over examples of Ĝ ⋆ x", "Ĝ summed over examples and positions"},
                                     .backward_graph = conv_graph, .describe = conv_describe};

/* The shapes of x, w and y under g. */
static int x_shape(const conv_geom *g, size_t *s) {
    if (g->one_d) return s[0] = g->N, s[1] = g->C, s[2] = g->W, 3;
    return s[0] = g->N, s[1] = g->C, s[2] = g->H, s[3] = g->W, 4;
}
static int w_shape(const conv_geom *g, size_t *s) {
    if (g->one_d) return s[0] = g->O, s[1] = in_group(g), s[2] = g->KW, 3;
    return s[0] = g->O, s[1] = in_group(g), s[2] = g->KH, s[3] = g->KW, 4;
}
static int y_shape(const conv_geom *g, size_t *s) {
    if (g->one_d) return s[0] = g->N, s[1] = g->O, s[2] = g->OW, 3;
    return s[0] = g->N, s[1] = g->O, s[2] = g->OH, s[3] = g->OW, 4;
}

/* Records one of the three ops on inputs known to be valid (the checks are
 * nb_conv2d_'s), with a copy of g in the arena. */
static nb_tensor *record(nb_tape *tp, const nb_op *op, const conv_geom *g, nb_tensor **in, int n_in, int ndim,
                         const size_t *shape, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, op, file, line, n_in, in);
    if (failed) return failed;
    conv_geom *kept = nb_tape_alloc(tp, sizeof *kept);
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", op->name);
    *kept = *g;
    nb_entry *e = nb_emit(tp, op, n_in, in, in[0]->dtype, ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    e->flag0 = n_in == 3;
    nb_status before = tp->status;
    nb_tensor *out = nb_run(e);
    /* No working memory for the forward: no result.  (nb_run can change
     * tp->status, which cppcheck does not see.) */
    // cppcheck-suppress incorrectLogicOperator
    return before == NB_OK && tp->status != NB_OK ? nb_nil(tp->status) : out;
}

static nb_tensor *conv_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                            const char *file, int line) {
    nb_tensor *in[3] = {x, w, bias};
    size_t shape[4];
    int nd = y_shape(g, shape);
    const nb_op *op = g->relu ? (g->one_d ? &conv1d_relu_op : &conv2d_relu_op) : (g->one_d ? &conv1d_op : &conv2d_op);
    return record(tp, op, g, in, bias ? 3 : 2, nd, shape, file, line);
}

static nb_tensor *input_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *G, nb_tensor *w, const char *file,
                                  int line) {
    nb_tensor *in[2] = {G, w};
    size_t shape[4];
    int nd = x_shape(g, shape);
    return record(tp, g->one_d ? &conv1d_input_grad_op : &conv2d_input_grad_op, g, in, 2, nd, shape, file, line);
}

static nb_tensor *weight_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *G, const char *file,
                                   int line) {
    nb_tensor *in[2] = {x, G};
    size_t shape[4];
    int nd = w_shape(g, shape);
    return record(tp, g->one_d ? &conv1d_weight_grad_op : &conv2d_weight_grad_op, g, in, 2, nd, shape, file, line);
}

/* ---------------------------------------------------------------- the calls */

/* Checks the call and works out its geometry; NULL when it may go ahead,
 * else the errored tensor to return. */
static nb_tensor *plan(nb_tape *tp, const nb_op *op, bool one_d, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                       const nb_conv_opts *opts, conv_geom *g, const char *file, int line) {
    nb_tensor *in[3] = {x, w, bias};
    nb_tensor *failed = nb_check(tp, op, file, line, bias ? 3 : 2, in);
    if (failed) return failed;
    const char *name = op->name;
    int nd = one_d ? 3 : 4;
    char sx[128], sw[128], sb[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    nb_format_shape(w->ndim, w->shape, sw, sizeof sw);
    if (x->ndim != nd)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: x is %s; expected %d dimensions %s", name, sx, nd,
                       one_d ? "(N, C, L)" : "(N, C, H, W)");
    if (w->ndim != nd)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: the weight is %s; expected %d dimensions %s", name, sw, nd,
                       one_d ? "(O, C / groups, K)" : "(O, C / groups, KH, KW)");
    nb_conv_opts o = opts ? *opts : (nb_conv_opts){{0, 0}, {0, 0}, {0, 0}, 0, false};
    for (int k = 0; k < (one_d ? 1 : 2); k++)
        if (o.stride[k] < 0 || o.padding[k] < 0 || o.dilation[k] < 0)
            return nb_fail(tp, NB_ERR_ARG, file, line,
                           "%s: stride %d, padding %d and dilation %d must not be negative (0 means the default)",
                           name, o.stride[k], o.padding[k], o.dilation[k]);
    if (o.groups < 0) return nb_fail(tp, NB_ERR_ARG, file, line, "%s: groups %d must be positive", name, o.groups);
    *g = (conv_geom){.N = x->shape[0], .C = x->shape[1], .O = w->shape[0], .groups = o.groups ? (size_t)o.groups : 1,
                     .one_d = one_d, .relu = o.relu};
    /* conv1d's length is the width, read from the first of each pair */
    int hi = 0, wi = one_d ? 0 : 1;
    g->H = one_d ? 1 : x->shape[2];
    g->W = x->shape[nd - 1];
    g->KH = one_d ? 1 : w->shape[2];
    g->KW = w->shape[nd - 1];
    g->sh = one_d ? 1 : o.stride[hi] ? o.stride[hi] : 1;
    g->sw = o.stride[wi] ? o.stride[wi] : 1;
    g->ph = one_d ? 0 : o.padding[hi];
    g->pw = o.padding[wi];
    g->dh = one_d ? 1 : o.dilation[hi] ? o.dilation[hi] : 1;
    g->dw = o.dilation[wi] ? o.dilation[wi] : 1;
    if (g->C % g->groups || g->O % g->groups)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: groups %zu must divide both the %zu input channels of x %s and the %zu filters of the "
                       "weight %s",
                       name, g->groups, g->C, sx, g->O, sw);
    if (w->shape[1] != g->C / g->groups)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: the weight %s has %zu input channels per filter; x %s with groups %zu needs %zu", name, sw,
                       w->shape[1], sx, g->groups, g->C / g->groups);
    if (bias) {
        nb_format_shape(bias->ndim, bias->shape, sb, sizeof sb);
        if (bias->ndim != 1 || bias->shape[0] != g->O)
            return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: the bias is %s; expected (%zu,), one per filter of %s",
                           name, sb, g->O, sw);
    }
    /* The output's size along each axis: (in + 2 pad - span) / stride + 1,
     * where span = dilation (k - 1) + 1 must fit in the padded input. */
    size_t *outs[2] = {&g->OH, &g->OW};
    const size_t ins[2] = {g->H, g->W}, ks[2] = {g->KH, g->KW};
    const long pads[2] = {g->ph, g->pw}, strides[2] = {g->sh, g->sw}, dils[2] = {g->dh, g->dw};
    for (int k = 0; k < 2; k++) {
        double span = (double)dils[k] * (double)(ks[k] - 1) + 1, padded = (double)ins[k] + 2.0 * (double)pads[k];
        if (ks[k] == 0 || span > padded)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: the kernel %s (spanning %.0f with dilation %ld) does not fit in x %s padded by %ld "
                           "(%.0f)",
                           name, sw, span, dils[k], sx, pads[k], padded);
        *outs[k] = (size_t)((padded - span) / (double)strides[k]) + 1;
    }
    return nb_conv_check_sizes(tp, name, g, sx, sw, file, line);
}

nb_tensor *nb_conv_check_sizes(nb_tape *tp, const char *op, const conv_geom *g, const char *sx, const char *sw,
                               const char *file, int line) {
    size_t K = patch(g), P = positions(g);
    if (K > INT32_MAX || P > INT32_MAX || out_group(g) > INT32_MAX ||
        (double)K * (double)P > 1e12)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: x %s with the weight %s exceeds the sizes CBLAS can index",
                       op, sx, sw);
    return NULL;
}

nb_tensor *nb_conv2d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias, const nb_conv_opts *opts,
                      const char *file, int line) {
    conv_geom g = {0};
    nb_tensor *failed = plan(tp, &conv2d_op, false, x, w, bias, opts, &g, file, line);
    return failed ? failed : conv_call(tp, &g, x, w, bias, file, line);
}

nb_tensor *nb_conv1d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias, const nb_conv_opts *opts,
                      const char *file, int line) {
    conv_geom g = {0};
    nb_tensor *failed = plan(tp, &conv1d_op, true, x, w, bias, opts, &g, file, line);
    return failed ? failed : conv_call(tp, &g, x, w, bias, file, line);
}

/* ---------------------------------------------------------------- for conv_transpose.c */

bool nb_conv_kernel(const nb_entry *e, int kernel, nb_dtype dt, const void *a, const void *b, void *out, bool acc) {
    return run_kernel(e, kernel, dt, a, b, NULL, out, acc);
}

nb_tensor *nb_conv_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *w, const char *file, int line) {
    return conv_call(tp, g, x, w, NULL, file, line);
}

nb_tensor *nb_conv_input_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *G, nb_tensor *w, const char *file,
                                   int line) {
    return input_grad_call(tp, g, G, w, file, line);
}

nb_tensor *nb_conv_weight_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *G, const char *file,
                                    int line) {
    return weight_grad_call(tp, g, x, G, file, line);
}
