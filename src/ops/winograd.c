/*
 * Winograd's minimal filtering F(m x m, 3 x 3) for the 3x3 convolutions of
 * stride 1 and dilation 1 in float32 (the idea of Lavin and Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016).
 *
 * An output tile Y (m x m) of one filter on one channel is
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
 * with g the 3x3 kernel, d the (m + 2) x (m + 2) input patch under the
 * tile, and A, B, G the constant matrices of the interpolation points 0,
 * ±1 (m = 2) or 0, ±1, ±2 (m = 4), and ∞: the element-wise product takes
 * (m + 2)² multiplications where the definition takes 9 m².  Summed over
 * the input channels, each of the (m + 2)² elements e is a product of
 * matrices:
 *     M[e] (Cout, tiles) = U[e] (Cout, Cin) · V[e] (Cin, tiles)
 * with U = G g Gᵀ for every (filter, channel) and V = Bᵀ d B for every
 * (channel, tile); one CBLAS call per e (nb_gemm), then Y = Aᵀ M A per
 * (filter, tile).  The transforms are done a plane at a time, along the
 * rows and then along the columns, so that their loops run over a row of
 * tiles and vectorise.
 *
 * Both products of src/ops/conv.c that are 3x3 convolutions of stride 1
 * go through it:
 *   the forward, y = conv(x, w) with padding p;
 *   the input gradient, dL/dx = conv(G, w'), w'[c, o] = w[o, c] turned by
 *   180 degrees, with padding 2 - p (a full convolution of G).
 * The weight gradient stays on conv.c's unfolding and CBLAS product: it is
 * a sum over every tile of every example, which Winograd's transforms can
 * make too (the adjoint of the forward's), but on the shapes measured it
 * was not needed to reach the products' time (docs/performance.md).
 * The result is the same convolution, so the backward graph
 * (create_graph) is conv.c's, unchanged.
 *
 * Error.  The transforms add and scale values before the products, so a
 * result is not the definition's sum rounded once.  Against the
 * convolution computed in float64, every output satisfies
 *     |y - y_exact| <= BOUND Σ |w| |x|        (the sum over its window)
 * with BOUND = 5e-6 for F(4x4, 3x3), the tile taken (F(2x2, 3x3): 1e-6;
 * unfolding and CBLAS: 4e-7), measured on random inputs, with large
 * magnitudes too, and checked by tests/test_winograd.c.  F(4x4)'s larger
 * constants (up to 8 in A, 5 in B) cost about 5x F(2x2)'s error for 4x
 * fewer products than the definition's (F(2x2): 2.25x).
 *
 * Special values: the transforms mix the values of a tile, so an inf in x
 * can become inf - inf = NaN in outputs where the definition gives ±inf,
 * and values near FLT_MAX can overflow in a transform where the
 * definition does not.  So Winograd runs only when x (or G) and w are
 * finite and |x|max |w|max (m + 2)² Cin times the transforms' gains stays
 * below FLT_MAX; otherwise the call takes the general path, and the
 * results are its own, special values included.
 *
 * float64 keeps the general path: its users ask for the definition's
 * accuracy (gradient checks), which Winograd's rounding would cost.
 *
 * Threads: the examples are cut into blocks of a size set by the geometry
 * alone (about TILES_PER_BLOCK tiles), and nabla's threads take whole
 * blocks; a block's products are the same CBLAS calls on any thread
 * count, and every output is written by one block: the same bits on any
 * number of threads.  The transforms use only +, - and products by
 * constants, which every function clone computes alike.
 */
#include "winograd.h"

#include <float.h>
#include <string.h>

/* ---------------------------------------------------------------- the switch for tests */

static int forced_mode, forced_tile; /* see nb_winograd_set */

void nb_winograd_set(int mode, int tile) {
    forced_mode = mode;
    forced_tile = tile == 2 || tile == 4 ? tile : 0;
}

/* ---------------------------------------------------------------- the 1-D transforms */

#define INLINE static inline __attribute__((always_inline))

/* v = Bᵀ d, d of m + 2 values. */
INLINE void input_1d(int m, const float *d, float *v) {
    if (m == 2) {
        v[0] = d[0] - d[2];
        v[1] = d[1] + d[2];
        v[2] = d[2] - d[1];
        v[3] = d[1] - d[3];
    } else {
        v[0] = 4 * d[0] - 5 * d[2] + d[4];
        v[1] = d[3] + d[4] - 4 * (d[1] + d[2]);
        v[2] = 4 * (d[1] - d[2]) + d[4] - d[3];
        v[3] = 2 * (d[3] - d[1]) + d[4] - d[2];
        v[4] = 2 * (d[1] - d[3]) + d[4] - d[2];
        v[5] = 4 * d[1] - 5 * d[3] + d[5];
    }
}

/* y = Aᵀ s, s of m + 2 values, y of m. */
INLINE void output_1d(int m, const float *s, float *y) {
    if (m == 2) {
        y[0] = s[0] + s[1] + s[2];
        y[1] = s[1] - s[2] - s[3];
    } else {
        float p1 = s[1] + s[2], m1 = s[1] - s[2], p2 = s[3] + s[4], m2 = s[3] - s[4];
        y[0] = s[0] + p1 + p2;
        y[1] = m1 + 2 * m2;
        y[2] = p1 + 4 * p2;
        y[3] = m1 + 8 * m2 + s[5];
    }
}

/* u = G g, g of 3 values, u of m + 2 (in double: the weights' transform is
 * made once a call, and rounded once). */
static void weight_1d(int m, const double *g, double *u) {
    if (m == 2) {
        u[0] = g[0];
        u[1] = (g[0] + g[1] + g[2]) / 2;
        u[2] = (g[0] - g[1] + g[2]) / 2;
        u[3] = g[2];
    } else {
        u[0] = g[0] / 4;
        u[1] = -(g[0] + g[1] + g[2]) / 6;
        u[2] = -(g[0] - g[1] + g[2]) / 6;
        u[3] = g[0] / 24 + g[1] / 12 + g[2] / 6;
        u[4] = g[0] / 24 - g[1] / 12 + g[2] / 6;
        u[5] = g[2];
    }
}

/* ---------------------------------------------------------------- the plan */

typedef struct {
    int m, a;                   /* output tiles m x m, input tiles a x a (a = m + 2) */
    size_t Cin, Hin, Win;       /* the planes read: x, or G for dL/dx */
    size_t Cout, Hout, Wout;    /* the planes written */
    long ph, pw;                /* zeros around the planes read */
    size_t TH, TW, tiles;       /* tiles of a plane: TH rows of TW */
    size_t R, L;                /* the padded rows and columns the tiles read: TH m + 2, TW m + 2 */
    size_t N, per_block, blocks;
    size_t V_floats, M_floats, work_floats; /* a part's buffers, for a full block */
} plan;

/* About this many tiles per block of examples: measured (bench_cnn
 * --winograd) against 64 to 1024 on the ResNet block and the CNN lesson's
 * second layer; the buffers of a block stay within the L2 cache. */
enum { TILES_PER_BLOCK = 256 };

static bool mul_to(size_t *r, size_t a, size_t b) { return !__builtin_mul_overflow(a, b, r); }
static bool mul3(size_t *r, size_t a, size_t b, size_t c) { return mul_to(r, a, b) && mul_to(r, *r, c); }
static size_t align_floats(size_t n) { return (n + 15) / 16 * 16; } /* 64 bytes */

/* Sizes of the call; false when one overflows or exceeds what CBLAS indexes. */
static bool make_plan(plan *p, int m, const nb_winograd_geom *g, int kind) {
    bool fwd = kind == NB_WINOGRAD_FORWARD;
    *p = (plan){.m = m, .a = m + 2, .N = g->N};
    p->Cin = fwd ? g->C : g->O;
    p->Hin = fwd ? g->H : g->OH;
    p->Win = fwd ? g->W : g->OW;
    p->Cout = fwd ? g->O : g->C;
    p->Hout = fwd ? g->OH : g->H;
    p->Wout = fwd ? g->OW : g->W;
    p->ph = fwd ? g->ph : 2 - g->ph;
    p->pw = fwd ? g->pw : 2 - g->pw;
    p->TH = (p->Hout + (size_t)m - 1) / (size_t)m;
    p->TW = (p->Wout + (size_t)m - 1) / (size_t)m;
    size_t a2 = (size_t)p->a * (size_t)p->a, Tb, v, mm, in_work, out_work;
    if (!mul_to(&p->tiles, p->TH, p->TW) || !mul_to(&p->R, p->TH, (size_t)m) || !mul_to(&p->L, p->TW, (size_t)m))
        return false;
    p->R += 2;
    p->L += 2;
    p->per_block = (TILES_PER_BLOCK + p->tiles - 1) / p->tiles;
    if (p->per_block > p->N) p->per_block = p->N ? p->N : 1;
    p->blocks = (p->N + p->per_block - 1) / p->per_block;
    if (!mul_to(&Tb, p->per_block, p->tiles) || Tb > INT32_MAX || p->Cin > INT32_MAX || p->Cout > INT32_MAX)
        return false;
    if (!mul3(&v, a2, p->Cin, Tb) || !mul3(&mm, a2, p->Cout, Tb)) return false;
    /* the row pass's a x R x TW values and a line of L; the output's a x TH m x TW and a line of TW m */
    if (!mul3(&in_work, (size_t)p->a, p->R, p->TW) || !mul3(&out_work, (size_t)p->a, p->R, p->TW)) return false;
    in_work += p->L;
    out_work += p->L;
    p->V_floats = align_floats(v);
    p->M_floats = align_floats(mm);
    p->work_floats = align_floats(in_work > out_work ? in_work : out_work);
    return p->V_floats >= v && p->M_floats >= mm; /* no wrap in the rounding */
}

/* ---------------------------------------------------------------- the transforms of a plane */

/* V[e vstride + ty TW + tx] for the a² elements e = (row i, column j) of
 * every tile's Bᵀ d B, from the plane x (Hin x Win, ph and pw zeros
 * around it), masked where mask (the fused relu's y) is <= 0. */
INLINE void input_plane(int m, const plan *p, const float *restrict x, const float *restrict mask,
                        float *restrict V, size_t vstride, float *restrict work) {
    const int a = m + 2;
    size_t R = p->R, TW = p->TW, L = p->L;
    float *restrict rows = work, *restrict line = work + (size_t)a * R * TW;
    for (size_t r = 0; r < R; r++) { /* along the rows: rows[(j R + r) TW + tx] = (d Bᵀ)[r, j] */
        long ih = (long)r - p->ph;
        if (ih < 0 || ih >= (long)p->Hin) {
            for (int j = 0; j < a; j++)
                for (size_t tx = 0; tx < TW; tx++) rows[((size_t)j * R + r) * TW + tx] = 0;
            continue;
        }
        const float *src = x + (size_t)ih * p->Win, *msrc = mask ? mask + (size_t)ih * p->Win : NULL;
        size_t lead = (size_t)p->pw, width = p->Win < L - lead ? p->Win : L - lead;
        for (size_t i = 0; i < lead; i++) line[i] = 0;
        if (msrc)
            for (size_t i = 0; i < width; i++) line[lead + i] = msrc[i] <= 0 ? 0 : src[i];
        else
            for (size_t i = 0; i < width; i++) line[lead + i] = src[i];
        for (size_t i = lead + width; i < L; i++) line[i] = 0;
        for (size_t tx = 0; tx < TW; tx++) {
            float d[6], v[6];
            for (int j = 0; j < a; j++) d[j] = line[tx * (size_t)m + (size_t)j];
            input_1d(m, d, v);
            for (int j = 0; j < a; j++) rows[((size_t)j * R + r) * TW + tx] = v[j];
        }
    }
    for (size_t ty = 0; ty < p->TH; ty++) /* along the columns */
        for (int j = 0; j < a; j++) {
            const float *restrict col = rows + ((size_t)j * R + ty * (size_t)m) * TW;
            float *restrict out = V + (size_t)j * vstride + ty * TW;
            for (size_t tx = 0; tx < TW; tx++) {
                float d[6], v[6];
                for (int i = 0; i < a; i++) d[i] = col[(size_t)i * TW + tx];
                input_1d(m, d, v);
                for (int i = 0; i < a; i++) out[(size_t)i * (size_t)a * vstride + tx] = v[i];
            }
        }
}

/* The plane y (Hout x Wout) (+)= Aᵀ M A of its tiles, M[e mstride + t],
 * plus the bias, relu'd if asked. */
INLINE void output_plane(int m, const plan *p, const float *restrict M, size_t mstride, float *restrict y, float bias,
                         bool relu, bool acc, float *restrict work) {
    const int a = m + 2;
    size_t TW = p->TW, RH = p->TH * (size_t)m;
    float *restrict cols = work, *restrict line = work + (size_t)a * p->R * TW;
    for (size_t ty = 0; ty < p->TH; ty++) /* along the columns: cols[(j RH + ty m + i) TW + tx] = (Aᵀ M)[i, j] */
        for (int j = 0; j < a; j++) {
            const float *restrict in = M + (size_t)j * mstride + ty * TW;
            float *restrict out = cols + ((size_t)j * RH + ty * (size_t)m) * TW;
            for (size_t tx = 0; tx < TW; tx++) {
                float s[6], v[4];
                for (int i = 0; i < a; i++) s[i] = in[(size_t)i * (size_t)a * mstride + tx];
                output_1d(m, s, v);
                for (int i = 0; i < m; i++) out[(size_t)i * TW + tx] = v[i];
            }
        }
    for (size_t r = 0; r < p->Hout; r++) { /* along the rows, then the valid part of the row into y */
        for (size_t tx = 0; tx < TW; tx++) {
            float s[6], v[4];
            for (int j = 0; j < a; j++) s[j] = cols[((size_t)j * RH + r) * TW + tx];
            output_1d(m, s, v);
            for (int j = 0; j < m; j++) line[tx * (size_t)m + (size_t)j] = v[j];
        }
        float *restrict dst = y + r * p->Wout;
        for (size_t i = 0; i < p->Wout; i++) {
            float v = line[i] + bias;
            v = acc ? dst[i] + v : v;
            dst[i] = relu && v <= 0 ? 0 : v; /* NaN kept, as nb_relu */
        }
    }
}

NB_VECTOR_CLONES static void input_plane_2(const plan *p, const float *x, const float *mask, float *V, size_t vstride,
                                           float *work) {
    input_plane(2, p, x, mask, V, vstride, work);
}
NB_VECTOR_CLONES static void input_plane_4(const plan *p, const float *x, const float *mask, float *V, size_t vstride,
                                           float *work) {
    input_plane(4, p, x, mask, V, vstride, work);
}
NB_VECTOR_CLONES static void output_plane_2(const plan *p, const float *M, size_t mstride, float *y, float bias,
                                            bool relu, bool acc, float *work) {
    output_plane(2, p, M, mstride, y, bias, relu, acc, work);
}
NB_VECTOR_CLONES static void output_plane_4(const plan *p, const float *M, size_t mstride, float *y, float bias,
                                            bool relu, bool acc, float *work) {
    output_plane(4, p, M, mstride, y, bias, relu, acc, work);
}

/* U[e (Cout Cin) + co Cin + ci] = (G g Gᵀ)[e] of the kernel g that takes
 * input plane ci to output plane co: w[co, ci] for the forward, w[ci, co]
 * turned by 180 degrees for dL/dx. */
static void transform_weights(const plan *p, bool turned, const float *w, float *U) {
    size_t a = (size_t)p->a, plane = p->Cout * p->Cin;
    for (size_t co = 0; co < p->Cout; co++)
        for (size_t ci = 0; ci < p->Cin; ci++) {
            const float *k = turned ? w + (ci * p->Cout + co) * 9 : w + (co * p->Cin + ci) * 9;
            double g[3][3], rows[3][6], u[6][6], col[3], out[6];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = turned ? k[(2 - i) * 3 + (2 - j)] : k[i * 3 + j];
            for (int i = 0; i < 3; i++) weight_1d(p->m, g[i], rows[i]); /* g Gᵀ */
            for (size_t j = 0; j < a; j++) {                             /* G (g Gᵀ) */
                for (int i = 0; i < 3; i++) col[i] = rows[i][j];
                weight_1d(p->m, col, out);
                for (size_t i = 0; i < a; i++) u[i][j] = out[i];
            }
            for (size_t i = 0; i < a; i++)
                for (size_t j = 0; j < a; j++) U[(i * a + j) * plane + co * p->Cin + ci] = (float)u[i][j];
        }
}

/* ---------------------------------------------------------------- the blocks */

typedef struct {
    const plan *p;
    const float *in, *mask, *U, *bias;
    float *out;
    bool relu, acc;
    float *parts_mem; /* parts x (V, M, work) */
    size_t parts;
} job;

static size_t part_of(size_t begin, size_t n, size_t parts) {
    for (size_t k = 0; k < parts; k++)
        if (nb_part_begin(n, k, parts) == begin) return k;
    return 0;
}

static void blocks_part(void *ctx, size_t begin, size_t end) {
    const job *j = ctx;
    const plan *p = j->p;
    size_t a2 = (size_t)p->a * (size_t)p->a, part = part_of(begin, p->blocks, j->parts);
    float *V = j->parts_mem + part * (p->V_floats + p->M_floats + p->work_floats), *M = V + p->V_floats,
          *work = M + p->M_floats;
    size_t in_plane = p->Hin * p->Win, out_plane = p->Hout * p->Wout;
    for (size_t b = begin; b < end; b++) {
        size_t n0 = b * p->per_block, n1 = n0 + p->per_block < p->N ? n0 + p->per_block : p->N;
        size_t T = (n1 - n0) * p->tiles; /* this block's tiles: the products' columns */
        for (size_t n = n0; n < n1; n++)
            for (size_t c = 0; c < p->Cin; c++) {
                size_t at = (n * p->Cin + c) * in_plane;
                const float *mask = j->mask ? j->mask + at : NULL;
                float *dst = V + c * T + (n - n0) * p->tiles;
                if (p->m == 2) input_plane_2(p, j->in + at, mask, dst, p->Cin * T, work);
                else input_plane_4(p, j->in + at, mask, dst, p->Cin * T, work);
            }
        for (size_t e = 0; e < a2; e++)
            nb_gemm(NB_F32, false, false, p->Cout, T, p->Cin, 1.0, j->U + e * p->Cout * p->Cin, p->Cin,
                    V + e * p->Cin * T, T, 0, M + e * p->Cout * T);
        for (size_t n = n0; n < n1; n++)
            for (size_t o = 0; o < p->Cout; o++) {
                const float *src = M + o * T + (n - n0) * p->tiles;
                float *y = j->out + (n * p->Cout + o) * out_plane, bias = j->bias ? j->bias[o] : 0;
                if (p->m == 2) output_plane_2(p, src, p->Cout * T, y, bias, j->relu, j->acc, work);
                else output_plane_4(p, src, p->Cout * T, y, bias, j->relu, j->acc, work);
            }
    }
}

/* ---------------------------------------------------------------- dispatch */

/* The largest |v| of n values as its bits (magnitudes order as unsigned
 * integers); 0x7f800000 or more when one is inf or NaN. */
NB_VECTOR_CLONES static uint32_t largest_magnitude(const float *v, size_t n) {
    uint32_t most = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, v + i, sizeof bits);
        bits &= 0x7fffffffu;
        most = bits > most ? bits : most;
    }
    return most;
}

static bool finite_bounded(const plan *p, const float *in, const float *w, double gain) {
    size_t n_in = p->N * p->Cin * p->Hin * p->Win, n_w = p->Cin * p->Cout * 9; /* the tensors' sizes: no overflow */
    uint32_t bx = largest_magnitude(in, n_in), bw = largest_magnitude(w, n_w);
    if (bx >= 0x7f800000u || bw >= 0x7f800000u) return false;
    float mx, mw;
    memcpy(&mx, &bx, sizeof mx);
    memcpy(&mw, &bw, sizeof mw);
    return gain * (double)p->Cin * (double)mx * (double)mw < (double)FLT_MAX;
}

/* The dispatch rule, from bench_cnn --winograd (docs/performance.md):
 * Winograd where both channel counts are at least 16 and the output planes
 * have at least 8 x 8 values; below that the transforms cost more than the
 * products save. */
static bool faster(const plan *p) {
    return p->Cin >= 16 && p->Cout >= 16 && p->Hout * p->Wout >= 64;
}

int nb_winograd_run(const nb_op_call *e, const nb_winograd_geom *g, const nb_winograd_call *c) {
    if (forced_mode < 0 || c->dt != NB_F32 || g->one_d || g->groups != 1 || g->KH != 3 || g->KW != 3 || g->sh != 1 ||
        g->sw != 1 || g->dh != 1 || g->dw != 1 || g->ph < 0 || g->ph > 2 || g->pw < 0 || g->pw > 2 || g->N == 0)
        return 0;
    int m = forced_tile ? forced_tile : 4;
    plan p;
    if (!make_plan(&p, m, g, c->kind) || (forced_mode == 0 && !faster(&p))) return 0;
    /* the transforms' gains: |V| <= b² |x|max, |U| <= gw² |w|max, |Y| <= a'² Cin |U||V| (row sums of |Bᵀ|, |G|, |Aᵀ|) */
    double gain = m == 2 ? 2.0 * 2 * 1.5 * 1.5 * 3 * 3 : 10.0 * 10 * 1 * 1 * 19 * 19;
    if (!finite_bounded(&p, c->in, c->w, 4 * gain)) return 0;
    size_t a2 = (size_t)p.a * (size_t)p.a, U_floats, per_part, floats, bytes;
    size_t threads = (size_t)nb_get_threads();
    double flops = 2.0 * (double)p.N * (double)p.Cout * (double)p.Cin * (double)(p.tiles * a2);
    size_t parts = flops < 2e5 ? 1 : p.blocks < threads ? p.blocks : threads;
    if (!mul3(&U_floats, a2, p.Cout, p.Cin)) return 0;
    U_floats = align_floats(U_floats);
    per_part = p.V_floats + p.M_floats + p.work_floats;
    if (per_part < p.V_floats || !mul_to(&floats, per_part, parts) || floats + U_floats < floats ||
        !mul_to(&bytes, floats + U_floats, sizeof(float)))
        return 0;
    float *mem = nb_tape_scratch(e->out->tape, bytes, e);
    if (!mem) return -1;
    transform_weights(&p, c->kind == NB_WINOGRAD_INPUT_GRAD, c->w, mem);
    job j = {&p, c->in, c->relu_out, mem, c->bias, c->out, c->relu, c->acc, mem + U_floats, parts};
    nb_parallel_parts(p.blocks, (int)parts, blocks_part, &j);
    return 1;
}
