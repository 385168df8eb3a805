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
 * The three products of src/ops/conv.c go through it:
 *   the forward, y = conv(x, w) with padding p;
 *   the input gradient, dL/dx = conv(G, w'), w'[c, o] = w[o, c] turned by
 *   180 degrees, with padding 2 - p (a full convolution of G);
 *   the weight gradient, the forward's adjoint in w: with Ĝ = A G Aᵀ for
 *   each m x m tile of G, dU[e] = Σ over the tiles of every example of
 *   Ĝ[e] V[e]ᵀ (one product (O, tiles) · (tiles, C) per e and block), and
 *   dL/dw = Gᵀ dU G.
 * (dL/dbias stays in conv.c's pass over G.)  The result is the same
 * convolution, so the backward graph (create_graph) is conv.c's,
 * unchanged, and runs through here too.
 *
 * The tile and the dispatch rule (tile_for below) were measured with
 * `bench_cnn --winograd` (docs/performance.md): F(4x4) on planes of 16
 * tiles of 4 x 4 or more (9 with 64 channels), F(2x2) on 8 x 8 to 11 x 11
 * planes with 32 channels, the general path below 16 channels and
 * elsewhere.
 *
 * Error.  The transforms add and scale values before the products, so a
 * result is not the definition's sum rounded once.  Against the
 * convolution computed in float64, measured on random inputs (uniform,
 * also scaled by up to 1e15, and of mixed scales; 3000 random geometries)
 * by tests/test_winograd.c, which checks these bounds:
 *   per output, |y - y_exact| <= B Σ |w| |x| over its window, with
 *   B = 1e-5 for F(4x4) (6.8e-6 seen), 1e-6 for F(2x2) (4.7e-7 seen), and
 *   6e-7 for the general path (3.3e-7 seen), where the window's values
 *   are of the size of its tile's (dense x, padding 0 or 1);
 *   in general, |y - y_exact| <= B' Σ_c Σ_taps |w| max |x| over the
 *   tile's (m + 2)² input patch, B' = 6e-6 for F(4x4) (3.8e-6 seen) and
 *   5e-7 for F(2x2) (2.2e-7 seen): a tile mixes its patch's values, so an
 *   output whose own window is mostly zeros (the corners of dL/dx's full
 *   convolution, or G masked by a relu) has the error of its neighbours'
 *   magnitudes (there, per window, F(4x4) reached 8e-3);
 *   dL/dw: |dw - dw_exact| <= B'' Σ_n Σ_tiles (Σ_tile |G|) max |x| over
 *   the tile's patch, B'' = 3e-6 for F(4x4) (1.6e-6 seen), 1e-6 for
 *   F(2x2) (4.3e-7 seen).
 * F(4x4)'s larger constants (up to 8 in A, 5 in B) cost about 10x F(2x2)'s
 * error, for 4x fewer multiplications than the definition's (F(2x2):
 * 2.25x).
 *
 * Special values: the transforms mix the values of a tile, so an inf in x
 * can become inf - inf = NaN in outputs where the definition gives ±inf,
 * and values near FLT_MAX can overflow in a transform where the
 * definition does not.  So Winograd runs only when its two operands (x
 * or G, and w or G) are finite and the product of their largest
 * magnitudes, the sum's length and the transforms' gains (4 x 36100 Cin
 * for F(4x4)'s forward) stays below FLT_MAX; otherwise the call takes the
 * general path, and the results are its own, special values included.
 *
 * float64 keeps the general path: its users ask for the definition's
 * accuracy (gradient checks), which Winograd's rounding would cost.
 *
 * The checks cost one read of x (or G) and w; both results stay finite
 * in float32 when they pass.
 *
 * Threads: the examples are cut into blocks of a size set by the geometry
 * alone (BLOCK_BYTES), and nabla's threads take whole blocks; a block's
 * products are the same CBLAS calls on any thread count (nb_gemm's own
 * split of rows gives the same bits), and every output is written by one
 * block: the same bits on any number of threads.  The transforms use only +, - and products by
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
INLINE void weight_1d(int m, const double *g, double *u) {
    if (m == 2) {
        u[0] = g[0];
        u[1] = (g[0] + g[1] + g[2]) * 0.5;
        u[2] = (g[0] - g[1] + g[2]) * 0.5;
        u[3] = g[2];
    } else {
        double even = g[0] + g[2], even4 = g[0] * (1.0 / 24) + g[2] * (1.0 / 6), odd4 = g[1] * (1.0 / 12);
        u[0] = g[0] * 0.25;
        u[1] = -(even + g[1]) * (1.0 / 6);
        u[2] = -(even - g[1]) * (1.0 / 6);
        u[3] = even4 + odd4;
        u[4] = even4 - odd4;
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
    size_t at_floats;           /* the tiles' offsets (see input_plane), shared */
} plan;

/* A block of examples holds as many as fit their transformed inputs and
 * products (V and M) in this many bytes, about Zen 4's L2 cache (1 MB),
 * or one: measured (bench_cnn --winograd) against 0.5 to 4 MB. */
enum { BLOCK_BYTES = 1280 * 1024 };

static bool mul_to(size_t *r, size_t a, size_t b) { return !__builtin_mul_overflow(a, b, r); }
static bool mul3(size_t *r, size_t a, size_t b, size_t c) { return mul_to(r, a, b) && mul_to(r, *r, c); }
static size_t align_floats(size_t n) { return (n + 15) / 16 * 16; } /* 64 bytes */

/* Sizes of the call, with blocks of at least min_tiles tiles (or the
 * batch); false when one overflows or exceeds what CBLAS indexes. */
static bool make_plan(plan *p, int m, const nb_winograd_geom *g, int kind, size_t min_tiles) {
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
    size_t example_bytes; /* V and M of one example */
    if (!mul3(&example_bytes, a2 * sizeof(float), p->Cin + p->Cout, p->tiles)) return false;
    p->per_block = BLOCK_BYTES / example_bytes;
    if (p->per_block < (min_tiles + p->tiles - 1) / p->tiles) p->per_block = (min_tiles + p->tiles - 1) / p->tiles;
    if (p->per_block < 1) p->per_block = 1;
    if (p->per_block > p->N) p->per_block = p->N ? p->N : 1;
    p->blocks = (p->N + p->per_block - 1) / p->per_block;
    if (!mul_to(&Tb, p->per_block, p->tiles) || Tb > INT32_MAX || p->Cin > INT32_MAX || p->Cout > INT32_MAX)
        return false;
    if (!mul3(&v, a2, p->Cin, Tb) || !mul3(&mm, a2, p->Cout, Tb)) return false;
    /* the input's padded plane (R x L) and a lines of L for each row of tiles; the output's a lines a
     * row of tiles and m more; then the tiles' offsets in the lines (as many size_t) */
    size_t lines, rows;
    if (!mul_to(&in_work, p->R, p->L) || !mul3(&lines, p->TH, (size_t)p->a, p->L) ||
        !mul_to(&rows, (size_t)m, p->L) || in_work > SIZE_MAX / 8 || lines > SIZE_MAX / 8 || rows > SIZE_MAX / 8 ||
        p->tiles > SIZE_MAX / 8 / sizeof(size_t))
        return false;
    in_work = align_floats(in_work) + align_floats(lines);
    out_work = align_floats(lines) + align_floats(rows);
    p->at_floats = align_floats(p->tiles * sizeof(size_t) / sizeof(float));
    p->V_floats = align_floats(v);
    p->M_floats = align_floats(mm);
    p->work_floats = align_floats(in_work > out_work ? in_work : out_work);
    return p->V_floats >= v && p->M_floats >= mm && p->work_floats < SIZE_MAX / 4; /* no wrap in the rounding */
}

/* ---------------------------------------------------------------- the transforms of a plane */

/* The plane transforms go in two passes.  The input's: down the columns
 * for every row of tiles (loops over a padded row's L values, contiguous),
 * then across, over CHUNK tiles of the plane at once, gathered into small
 * local arrays so that the arithmetic is a loop of constant length over
 * independent lanes, written to V contiguously.  The output's the other
 * way round.  Separate restrict pointers per stream let the compiler
 * vectorise each loop.  at[t] (in the work buffer) is where tile t starts
 * in the lines of its row of tiles: ty a L + tx m. */
enum { CHUNK = 16 };

/* o_k[q] = (Bᵀ (r_0 .. r_{a-1}))_k [q] for q < n: the transform down a column, for n columns. */
INLINE void input_down(int m, const float *restrict r0, const float *restrict r1, const float *restrict r2,
                       const float *restrict r3, const float *restrict r4, const float *restrict r5,
                       float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3,
                       float *restrict o4, float *restrict o5, size_t n) {
    for (size_t q = 0; q < n; q++) {
        float d[6] = {r0[q], r1[q], r2[q], r3[q], m == 4 ? r4[q] : 0, m == 4 ? r5[q] : 0}, v[6];
        input_1d(m, d, v);
        o0[q] = v[0];
        o1[q] = v[1];
        o2[q] = v[2];
        o3[q] = v[3];
        if (m == 4) {
            o4[q] = v[4];
            o5[q] = v[5];
        }
    }
}

/* CHUNK lanes of Bᵀ d: o_j[t] from d[.][t]. */
INLINE void input_lanes(int m, const float (*restrict d)[CHUNK], float *restrict o0, float *restrict o1,
                        float *restrict o2, float *restrict o3, float *restrict o4, float *restrict o5) {
    for (size_t t = 0; t < CHUNK; t++) {
        float dt[6] = {d[0][t], d[1][t], d[2][t], d[3][t], d[4][t], d[5][t]}, vt[6];
        input_1d(m, dt, vt);
        o0[t] = vt[0];
        o1[t] = vt[1];
        o2[t] = vt[2];
        o3[t] = vt[3];
        if (m == 4) {
            o4[t] = vt[4];
            o5[t] = vt[5];
        }
    }
}

/* Row k of tiles t0 .. t0 + count (Bᵀ d of each, from the lines) across:
 * into V's a rows (out[j] + t for element (k, j)); straight there for a
 * whole chunk.  (Copies are loops the compiler keeps as loops: a memcpy of
 * a few values is slower.) */
INLINE void input_across(int m, const float *restrict lines, const size_t *restrict at, size_t t0, size_t count,
                         float (*restrict d)[CHUNK], float *restrict v, float *const *out) {
    const int a = m + 2; /* v: 6 CHUNK values, the lanes of a partial chunk */
    for (size_t t = 0; t < count; t++)
        for (int j = 0; j < a; j++) d[j][t] = lines[at[t0 + t] + (size_t)j];
    float *o[6];
    for (int j = 0; j < 6; j++) o[j] = count == CHUNK && j < a ? out[j] + t0 : v + (size_t)j * CHUNK;
    input_lanes(m, (const float(*)[CHUNK])d, o[0], o[1], o[2], o[3], o[4], o[5]);
    if (count < CHUNK)
        for (int j = 0; j < a; j++)
            for (size_t t = 0; t < count; t++) out[j][t0 + t] = v[(size_t)j * CHUNK + t];
}

/* V[e vstride + t] for the a² elements e = (row i, column j) of every
 * tile's Bᵀ d B, from the plane x (Hin x Win, ph and pw zeros around it),
 * masked where mask (the fused relu's y) is <= 0. */
INLINE void input_plane(int m, const plan *p, const float *restrict x, const float *restrict mask,
                        float *restrict V, size_t vstride, float *restrict work, const size_t *restrict at) {
    const int a = m + 2;
    size_t R = p->R, L = p->L;
    float *restrict padded = work, *restrict lines = work + align_floats(R * L);
    for (size_t r = 0; r < R; r++) { /* the plane with its zeros, R x L */
        float *restrict dst = padded + r * L;
        long ih = (long)r - p->ph;
        if (ih < 0 || ih >= (long)p->Hin) {
            for (size_t i = 0; i < L; i++) dst[i] = 0;
            continue;
        }
        const float *restrict src = x + (size_t)ih * p->Win;
        size_t lead = (size_t)p->pw, width = p->Win < L - lead ? p->Win : L - lead;
        for (size_t i = 0; i < lead; i++) dst[i] = 0;
        if (mask) {
            const float *restrict msrc = mask + (size_t)ih * p->Win;
            for (size_t i = 0; i < width; i++) dst[lead + i] = msrc[i] <= 0 ? 0 : src[i];
        } else {
            for (size_t i = 0; i < width; i++) dst[lead + i] = src[i];
        }
        for (size_t i = lead + width; i < L; i++) dst[i] = 0;
    }
    for (size_t ty = 0; ty < p->TH; ty++) { /* down: lines[(ty a + k) L + q] */
        const float *top = padded + ty * (size_t)m * L;
        float *ln = lines + ty * (size_t)a * L;
        input_down(m, top, top + L, top + 2 * L, top + 3 * L, top + (m == 4 ? 4 : 0) * L, top + (m == 4 ? 5 : 0) * L,
                   ln, ln + L, ln + 2 * L, ln + 3 * L, ln + (m == 4 ? 4 : 0) * L, ln + (m == 4 ? 5 : 0) * L, L);
    }
    float d[6][CHUNK] = {{0}}, spare[6 * CHUNK] = {0}; /* lanes past the last tile keep old values, never stored */
    for (int k = 0; k < a; k++) { /* across, row k of every tile's Bᵀ d: elements (k, j) */
        float *out[6];
        for (int j = 0; j < a; j++) out[j] = V + (size_t)(k * a + j) * vstride;
        for (size_t t0 = 0; t0 < p->tiles; t0 += CHUNK)
            input_across(m, lines + (size_t)k * L, at, t0, p->tiles - t0 < CHUNK ? p->tiles - t0 : CHUNK, d, spare, out);
    }
}

/* CHUNK lanes of Aᵀ s: v[i][t] from s_j[t]. */
INLINE void output_lanes(int m, const float *restrict s0, const float *restrict s1, const float *restrict s2,
                         const float *restrict s3, const float *restrict s4, const float *restrict s5,
                         float (*restrict v)[CHUNK]) {
    for (size_t t = 0; t < CHUNK; t++) {
        float st[6] = {s0[t], s1[t], s2[t], s3[t], m == 4 ? s4[t] : 0, m == 4 ? s5[t] : 0}, vt[4];
        output_1d(m, st, vt);
        for (int j = 0; j < m; j++) v[j][t] = vt[j];
    }
}

/* Row i of M's tiles t0 .. t0 + count (in[j] + t for element (i, j))
 * across, Aᵀ: into the lines of their rows of tiles (m values a tile);
 * read straight from M for a whole chunk. */
INLINE void output_across(int m, const float *const *in, const size_t *restrict at, size_t t0, size_t count,
                          float (*restrict s)[CHUNK], float *restrict lines) {
    const int a = m + 2;
    float v[4][CHUNK];
    const float *src[6];
    for (int j = 0; j < 6; j++) {
        src[j] = j < a ? in[j] + t0 : in[0] + t0;
        if (count < CHUNK && j < a) {
            for (size_t t = 0; t < count; t++) s[j][t] = src[j][t];
            src[j] = s[j];
        }
    }
    if (count < CHUNK)
        for (int j = a; j < 6; j++) src[j] = s[0];
    output_lanes(m, src[0], src[1], src[2], src[3], src[4], src[5], v);
    for (size_t t = 0; t < count; t++)
        for (int j = 0; j < m; j++) lines[at[t0 + t] + (size_t)j] = v[j][t];
}

/* o_i[q] = (Aᵀ (l_0 .. l_{a-1}))_i [q] for q < n: the transform down a column. */
INLINE void output_down(int m, const float *restrict l0, const float *restrict l1, const float *restrict l2,
                        const float *restrict l3, const float *restrict l4, const float *restrict l5,
                        float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3, size_t n) {
    for (size_t q = 0; q < n; q++) {
        float s[6] = {l0[q], l1[q], l2[q], l3[q], m == 4 ? l4[q] : 0, m == 4 ? l5[q] : 0}, v[4];
        output_1d(m, s, v);
        o0[q] = v[0];
        o1[q] = v[1];
        if (m == 4) {
            o2[q] = v[2];
            o3[q] = v[3];
        }
    }
}

/* The plane y (Hout x Wout) (+)= Aᵀ M A of its tiles, M[e mstride + t],
 * plus the bias, relu'd if asked. */
INLINE void output_plane(int m, const plan *p, const float *restrict M, size_t mstride, float *restrict y, float bias,
                         bool relu, bool acc, float *restrict work, const size_t *restrict at) {
    const int a = m + 2;
    size_t L = p->L;
    float *restrict lines = work, *restrict rows = work + align_floats(p->TH * (size_t)a * L);
    float s[6][CHUNK] = {{0}};
    for (int i = 0; i < a; i++) { /* across, row i of every tile's M A: lines[(ty a + i) L + tx m + j] */
        const float *in[6];
        for (int j = 0; j < a; j++) in[j] = M + (size_t)(i * a + j) * mstride;
        for (size_t t0 = 0; t0 < p->tiles; t0 += CHUNK)
            output_across(m, in, at, t0, p->tiles - t0 < CHUNK ? p->tiles - t0 : CHUNK, s, lines + (size_t)i * L);
    }
    for (size_t ty = 0; ty < p->TH; ty++) { /* down, then the valid rows into y */
        const float *ln = lines + ty * (size_t)a * L;
        float *ro[4];
        for (int i = 0; i < 4; i++) ro[i] = rows + (size_t)(i < m ? i : 0) * L;
        output_down(m, ln, ln + L, ln + 2 * L, ln + 3 * L, ln + (m == 4 ? 4 : 0) * L, ln + (m == 4 ? 5 : 0) * L, ro[0],
                    ro[1], ro[2], ro[3], p->Wout);
        for (int i = 0; i < m && ty * (size_t)m + (size_t)i < p->Hout; i++) {
            const float *restrict src = ro[i];
            float *restrict dst = y + (ty * (size_t)m + (size_t)i) * p->Wout;
            for (size_t q = 0; q < p->Wout; q++) {
                float v = src[q] + bias;
                v = acc ? dst[q] + v : v;
                dst[q] = relu && v <= 0 ? 0 : v; /* NaN kept, as nb_relu */
            }
        }
    }
}

NB_VECTOR_CLONES static void input_plane_2(const plan *p, const float *x, const float *mask, float *V, size_t vstride,
                                           float *work, const size_t *at) {
    input_plane(2, p, x, mask, V, vstride, work, at);
}
NB_VECTOR_CLONES static void input_plane_4(const plan *p, const float *x, const float *mask, float *V, size_t vstride,
                                           float *work, const size_t *at) {
    input_plane(4, p, x, mask, V, vstride, work, at);
}
NB_VECTOR_CLONES static void output_plane_2(const plan *p, const float *M, size_t mstride, float *y, float bias,
                                            bool relu, bool acc, float *work, const size_t *at) {
    output_plane(2, p, M, mstride, y, bias, relu, acc, work, at);
}
NB_VECTOR_CLONES static void output_plane_4(const plan *p, const float *M, size_t mstride, float *y, float bias,
                                            bool relu, bool acc, float *work, const size_t *at) {
    output_plane(4, p, M, mstride, y, bias, relu, acc, work, at);
}

/* U[e (Cout Cin) + co Cin + ci] = (G g Gᵀ)[e] of the kernel g that takes
 * input plane ci to output plane co: w[co, ci] for the forward, w[ci, co]
 * turned by 180 degrees for dL/dx. */
INLINE void transform_weights_m(int m, const plan *p, bool turned, const float *restrict w, float *restrict U) {
    const int a = m + 2;
    size_t plane = p->Cout * p->Cin;
    for (size_t co = 0; co < p->Cout; co++)
        for (size_t ci = 0; ci < p->Cin; ci++) {
            const float *k = turned ? w + (ci * p->Cout + co) * 9 : w + (co * p->Cin + ci) * 9;
            double g[3][3], rows[3][6], col[3], u[6];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = turned ? k[(2 - i) * 3 + (2 - j)] : k[i * 3 + j];
            for (int i = 0; i < 3; i++) weight_1d(m, g[i], rows[i]); /* g Gᵀ */
            float *dst = U + co * p->Cin + ci;
            for (int j = 0; j < a; j++) { /* G (g Gᵀ), a column at a time */
                for (int i = 0; i < 3; i++) col[i] = rows[i][j];
                weight_1d(m, col, u);
                for (int i = 0; i < a; i++) dst[(size_t)(i * a + j) * plane] = (float)u[i];
            }
        }
}

static void transform_weights(const plan *p, bool turned, const float *w, float *U) {
    if (p->m == 2) transform_weights_m(2, p, turned, w, U);
    else transform_weights_m(4, p, turned, w, U);
}

/* ---------------------------------------------------------------- the blocks */

typedef struct {
    const plan *p;
    const float *in, *mask, *U, *bias;
    const size_t *at; /* the tiles' offsets in the lines of the transforms */
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
                if (p->m == 2) input_plane_2(p, j->in + at, mask, dst, p->Cin * T, work, j->at);
                else input_plane_4(p, j->in + at, mask, dst, p->Cin * T, work, j->at);
            }
        for (size_t e = 0; e < a2; e++)
            nb_gemm(NB_F32, false, false, p->Cout, T, p->Cin, 1.0, j->U + e * p->Cout * p->Cin, p->Cin,
                    V + e * p->Cin * T, T, 0, M + e * p->Cout * T);
        for (size_t n = n0; n < n1; n++)
            for (size_t o = 0; o < p->Cout; o++) {
                const float *src = M + o * T + (n - n0) * p->tiles;
                float *y = j->out + (n * p->Cout + o) * out_plane, bias = j->bias ? j->bias[o] : 0;
                if (p->m == 2) output_plane_2(p, src, p->Cout * T, y, bias, j->relu, j->acc, work, j->at);
                else output_plane_4(p, src, p->Cout * T, y, bias, j->relu, j->acc, work, j->at);
            }
    }
}

/* ---------------------------------------------------------------- the weight gradient */

/* The forward's adjoint in w: with Ĝ = A G Aᵀ for each m x m tile of G
 * (zeros past the plane), dU[e] = Σ over every tile of every example of
 * Ĝ[e] V[e]ᵀ, one product (O, tiles) · (tiles, C) per e and block, and
 * dL/dw = Gᵀ dU G for each (filter, channel). */

/* ĝ = A s: s of m values, ĝ of m + 2. */
INLINE void grad_1d(int m, const float *s, float *v) {
    if (m == 2) {
        v[0] = s[0];
        v[1] = s[0] + s[1];
        v[2] = s[0] - s[1];
        v[3] = -s[1];
    } else {
        float even = s[0] + s[2], odd = s[1] + s[3], even4 = s[0] + 4 * s[2], odd4 = 2 * s[1] + 8 * s[3];
        v[0] = s[0];
        v[1] = even + odd;
        v[2] = even - odd;
        v[3] = even4 + odd4;
        v[4] = even4 - odd4;
        v[5] = s[3];
    }
}

/* g = Gᵀ u: u of m + 2 values, g of 3 (double, as the weights' transform). */
INLINE void weight_adjoint_1d(int m, const double *u, double *g) {
    if (m == 2) {
        g[0] = u[0] + (u[1] + u[2]) * 0.5;
        g[1] = (u[1] - u[2]) * 0.5;
        g[2] = (u[1] + u[2]) * 0.5 + u[3];
    } else {
        g[0] = u[0] * 0.25 - (u[1] + u[2]) * (1.0 / 6) + (u[3] + u[4]) * (1.0 / 24);
        g[1] = (u[2] - u[1]) * (1.0 / 6) + (u[3] - u[4]) * (1.0 / 12);
        g[2] = (u[3] + u[4] - u[1] - u[2]) * (1.0 / 6) + u[5];
    }
}

/* o_k[q] = (A (r_0 .. r_{m-1}))_k [q] for q < n: down a column of G. */
INLINE void grad_down(int m, const float *restrict r0, const float *restrict r1, const float *restrict r2,
                      const float *restrict r3, float *restrict o0, float *restrict o1, float *restrict o2,
                      float *restrict o3, float *restrict o4, float *restrict o5, size_t n) {
    for (size_t q = 0; q < n; q++) {
        float s[4] = {r0[q], r1[q], m == 4 ? r2[q] : 0, m == 4 ? r3[q] : 0}, v[6];
        grad_1d(m, s, v);
        o0[q] = v[0];
        o1[q] = v[1];
        o2[q] = v[2];
        o3[q] = v[3];
        if (m == 4) {
            o4[q] = v[4];
            o5[q] = v[5];
        }
    }
}

/* Row k of tiles t0 .. t0 + count of A G (from the lines) across, A: into
 * Ĝ's a rows (out[j] + t for element (k, j)). */
INLINE void grad_across(int m, const float *restrict lines, const size_t *restrict at, size_t t0, size_t count,
                        float (*restrict s)[CHUNK], float *restrict v, float *const *out) {
    const int a = m + 2; /* v: 6 CHUNK values, the lanes of a partial chunk */
    for (size_t t = 0; t < count; t++)
        for (int j = 0; j < m; j++) s[j][t] = lines[at[t0 + t] + (size_t)j];
    float *o[6];
    for (int j = 0; j < 6; j++) o[j] = count == CHUNK && j < a ? out[j] + t0 : v + (size_t)j * CHUNK;
    for (size_t t = 0; t < CHUNK; t++) {
        float st[4] = {s[0][t], s[1][t], s[2][t], s[3][t]}, vt[6];
        grad_1d(m, st, vt);
        for (int j = 0; j < a; j++) o[j][t] = vt[j];
    }
    if (count < CHUNK)
        for (int j = 0; j < a; j++)
            for (size_t t = 0; t < count; t++) out[j][t0 + t] = v[(size_t)j * CHUNK + t];
}

/* Ĝ[e stride + t] for every tile of the plane G (Hout x Wout), masked
 * where mask (the fused relu's y) is <= 0. */
INLINE void grad_plane(int m, const plan *p, const float *restrict G, const float *restrict mask, float *restrict Gh,
                       size_t stride, float *restrict work, const size_t *restrict at) {
    const int a = m + 2;
    size_t L = p->L, rows = p->TH * (size_t)m;
    float *restrict padded = work, *restrict lines = work + align_floats(p->R * L);
    for (size_t r = 0; r < rows; r++) { /* the plane with zeros past its end, TH m x L */
        float *restrict dst = padded + r * L;
        size_t width = r < p->Hout ? p->Wout : 0;
        const float *restrict src = G + r * p->Wout;
        if (mask) {
            const float *restrict msrc = mask + r * p->Wout;
            for (size_t i = 0; i < width; i++) dst[i] = msrc[i] <= 0 ? 0 : src[i];
        } else {
            for (size_t i = 0; i < width; i++) dst[i] = src[i];
        }
        for (size_t i = width; i < L; i++) dst[i] = 0;
    }
    for (size_t ty = 0; ty < p->TH; ty++) {
        const float *top = padded + ty * (size_t)m * L;
        float *ln = lines + ty * (size_t)a * L;
        grad_down(m, top, top + L, top + (m == 4 ? 2 : 0) * L, top + (m == 4 ? 3 : 0) * L, ln, ln + L, ln + 2 * L,
                  ln + 3 * L, ln + (m == 4 ? 4 : 0) * L, ln + (m == 4 ? 5 : 0) * L, p->TW * (size_t)m);
    }
    float s[4][CHUNK] = {{0}}, spare[6 * CHUNK] = {0};
    for (int k = 0; k < a; k++) {
        float *out[6];
        for (int j = 0; j < a; j++) out[j] = Gh + (size_t)(k * a + j) * stride;
        for (size_t t0 = 0; t0 < p->tiles; t0 += CHUNK)
            grad_across(m, lines + (size_t)k * L, at, t0, p->tiles - t0 < CHUNK ? p->tiles - t0 : CHUNK, s, spare, out);
    }
}

NB_VECTOR_CLONES static void grad_plane_2(const plan *p, const float *G, const float *mask, float *Gh, size_t stride,
                                          float *work, const size_t *at) {
    grad_plane(2, p, G, mask, Gh, stride, work, at);
}
NB_VECTOR_CLONES static void grad_plane_4(const plan *p, const float *G, const float *mask, float *Gh, size_t stride,
                                          float *work, const size_t *at) {
    grad_plane(4, p, G, mask, Gh, stride, work, at);
}

/* The weight gradient's sum over examples is made in this many chunks of
 * blocks (fewer for fewer blocks), each chunk's partial dU summed in
 * order by one thread, the partials then added in order: the same bits on
 * any thread count, as conv.c's.  Its blocks hold GRAD_TILES tiles or more
 * (the products' inner size: at 32, the 128-channel 16 x 16 convolution's
 * weight gradient took 33 ms, at 512 12 ms, the general path 16 ms):
 * measured against 128 and 2048. */
enum { GRAD_CHUNKS = 8 };
enum { GRAD_TILES = 512 };

typedef struct {
    const plan *p;
    const float *x, *G, *mask;
    const size_t *at;
    float *partials; /* chunks x a² O C */
    size_t chunks, partial_floats;
    float *parts_mem;
    size_t parts;
} grad_job;

static void grad_chunks_part(void *ctx, size_t begin, size_t end) {
    const grad_job *j = ctx;
    const plan *p = j->p;
    size_t a2 = (size_t)p->a * (size_t)p->a, part = part_of(begin, j->chunks, j->parts);
    float *V = j->parts_mem + part * (p->V_floats + p->M_floats + p->work_floats), *Gh = V + p->V_floats,
          *work = Gh + p->M_floats;
    size_t in_plane = p->Hin * p->Win, out_plane = p->Hout * p->Wout;
    for (size_t c = begin; c < end; c++) {
        float *dU = j->partials + c * j->partial_floats;
        bool first = true;
        for (size_t b = nb_part_begin(p->blocks, c, j->chunks); b < nb_part_begin(p->blocks, c + 1, j->chunks); b++) {
            size_t n0 = b * p->per_block, n1 = n0 + p->per_block < p->N ? n0 + p->per_block : p->N;
            size_t T = (n1 - n0) * p->tiles;
            for (size_t n = n0; n < n1; n++) {
                for (size_t ch = 0; ch < p->Cin; ch++) {
                    float *dst = V + ch * T + (n - n0) * p->tiles;
                    const float *x = j->x + (n * p->Cin + ch) * in_plane;
                    if (p->m == 2) input_plane_2(p, x, NULL, dst, p->Cin * T, work, j->at);
                    else input_plane_4(p, x, NULL, dst, p->Cin * T, work, j->at);
                }
                for (size_t o = 0; o < p->Cout; o++) {
                    size_t at = (n * p->Cout + o) * out_plane;
                    const float *mask = j->mask ? j->mask + at : NULL;
                    float *dst = Gh + o * T + (n - n0) * p->tiles;
                    if (p->m == 2) grad_plane_2(p, j->G + at, mask, dst, p->Cout * T, work, j->at);
                    else grad_plane_4(p, j->G + at, mask, dst, p->Cout * T, work, j->at);
                }
            }
            for (size_t e = 0; e < a2; e++) /* dU[e] (O, C) (+)= Ĝ[e] (O, T) · V[e]ᵀ (T, C) */
                nb_gemm(NB_F32, false, true, p->Cout, p->Cin, T, 1.0, Gh + e * p->Cout * T, T, V + e * p->Cin * T, T,
                        first ? 0 : 1, dU + e * p->Cout * p->Cin);
            first = false;
        }
    }
}

typedef struct {
    const plan *p;
    float *partials;
    size_t chunks, partial_floats;
    float *out;
    bool acc;
} grad_finish;

/* dL/dw[o, c] (+)= Gᵀ dU G, dU the partials added in chunk order, for
 * filters begin..end. */
static void grad_finish_part(void *ctx, size_t begin, size_t end) {
    const grad_finish *f = ctx;
    const plan *p = f->p;
    size_t a = (size_t)p->a, plane = p->Cout * p->Cin;
    for (size_t o = begin; o < end; o++)
        for (size_t c = 0; c < p->Cin; c++) {
            double u[6][6] = {{0}}, rows[6][3] = {{0}}, col[6] = {0}, g[3];
            for (size_t e = 0; e < a * a; e++) {
                size_t at = e * plane + o * p->Cin + c;
                float sum = f->partials[at];
                for (size_t k = 1; k < f->chunks; k++) sum += f->partials[k * f->partial_floats + at];
                u[e / a][e % a] = sum;
            }
            for (size_t i = 0; i < a; i++) weight_adjoint_1d(p->m, u[i], rows[i]); /* dU G */
            float *dst = f->out + (o * p->Cin + c) * 9;
            for (int l = 0; l < 3; l++) { /* Gᵀ (dU G), a column at a time */
                for (size_t i = 0; i < a; i++) col[i] = rows[i][l];
                weight_adjoint_1d(p->m, col, g);
                for (int k = 0; k < 3; k++) dst[k * 3 + l] = f->acc ? dst[k * 3 + l] + (float)g[k] : (float)g[k];
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

/* Are the n_a values of a and n_b of b finite, with |a|max |b|max gain
 * below FLT_MAX? */
static bool finite_bounded(const float *a, size_t n_a, const float *b, size_t n_b, double gain) {
    uint32_t ba = largest_magnitude(a, n_a), bb = largest_magnitude(b, n_b);
    if (ba >= 0x7f800000u || bb >= 0x7f800000u) return false;
    float ma, mb;
    memcpy(&ma, &ba, sizeof ma);
    memcpy(&mb, &bb, sizeof mb);
    return gain * (double)ma * (double)mb < (double)FLT_MAX;
}

/* The dispatch rule, from bench_cnn --winograd (docs/performance.md): the
 * output tile for a call, or 0 for the general path.  F(4x4) where both
 * channel counts are 16 or more and an output plane holds 16 tiles of 4 x 4
 * or more (outputs of 13 x 13 and up), or 9 with 64 channels and more;
 * F(2x2) on the planes of 8 x 8 to 11 x 11 with 32 channels and more
 * (there F(4x4)'s few tiles a plane leave its transforms' lanes idle).
 * Below 16 channels the transforms cost more than the products save (the
 * CNN lesson's first layer, C = 1: 4x slower), and 32 channels on 12 x 12
 * planes break even.  The weight gradient follows the forward's geometry,
 * dL/dx its own (its output is x). */
static int tile_for(size_t Cin, size_t Cout, size_t Hout, size_t Wout) {
    size_t channels = Cin < Cout ? Cin : Cout, tiles4 = ((Hout + 3) / 4) * ((Wout + 3) / 4);
    if (channels >= 16 && (tiles4 >= 16 || (tiles4 >= 9 && channels >= 64))) return 4;
    if (channels >= 32 && Hout >= 8 && Wout >= 8 && tiles4 < 9) return 2;
    return 0;
}

/* The weight gradient (c->in = x, c->w = G): blocks in chunks, then the
 * partials' sum and the weights' adjoint transform. */
static int run_weight_grad(const nb_op_call *e, const plan *p, const nb_winograd_call *c) {
    size_t a2 = (size_t)p->a * (size_t)p->a, partial, per_part, threads = (size_t)nb_get_threads(), floats, bytes;
    size_t chunks = p->blocks < GRAD_CHUNKS ? p->blocks : GRAD_CHUNKS;
    double flops = 2.0 * (double)p->N * (double)p->Cout * (double)p->Cin * (double)(p->tiles * a2);
    size_t parts = flops < 2e5 ? 1 : chunks < threads ? chunks : threads;
    if (!mul3(&partial, a2, p->Cout, p->Cin) || partial > SIZE_MAX / 64) return 0;
    partial = align_floats(partial);
    per_part = p->V_floats + p->M_floats + p->work_floats;
    if (!mul_to(&floats, per_part, parts) || floats > SIZE_MAX / 8 || !mul_to(&bytes, partial, chunks) ||
        bytes > SIZE_MAX / 8)
        return 0;
    floats += bytes + p->at_floats;
    if (!mul_to(&bytes, floats, sizeof(float))) return 0;
    float *mem = nb_tape_scratch(e->out->tape, bytes, e);
    if (!mem) return -1;
    size_t *at = (size_t *)(void *)mem;
    for (size_t t = 0; t < p->tiles; t++) at[t] = t / p->TW * (size_t)p->a * p->L + t % p->TW * (size_t)p->m;
    float *partials = mem + p->at_floats;
    grad_job j = {p, c->in, c->w, c->relu_out, at, partials, chunks, partial, partials + chunks * partial, parts};
    nb_parallel_parts(chunks, (int)parts, grad_chunks_part, &j);
    grad_finish f = {p, partials, chunks, partial, c->out, c->acc};
    nb_parallel(p->Cout, 1 + NB_PARALLEL_GRAIN / (p->Cin * a2), grad_finish_part, &f);
    return 1;
}

int nb_winograd_run(const nb_op_call *e, const nb_winograd_geom *g, const nb_winograd_call *c) {
    if (forced_mode < 0 || c->dt != NB_F32 || g->one_d || g->groups != 1 || g->KH != 3 || g->KW != 3 || g->sh != 1 ||
        g->sw != 1 || g->dh != 1 || g->dw != 1 || g->ph < 0 || g->ph > 2 || g->pw < 0 || g->pw > 2 || g->N == 0)
        return 0;
    bool in_grad = c->kind == NB_WINOGRAD_INPUT_GRAD;
    int m = forced_mode == 0 ? tile_for(in_grad ? g->O : g->C, in_grad ? g->C : g->O, in_grad ? g->H : g->OH,
                                        in_grad ? g->W : g->OW)
                             : 4;
    if (forced_tile) m = forced_mode || m ? forced_tile : 0;
    plan p;
    /* the weight gradient's tiles are the forward's */
    bool w_grad = c->kind == NB_WINOGRAD_WEIGHT_GRAD;
    if (!m || !make_plan(&p, m, g, in_grad ? NB_WINOGRAD_INPUT_GRAD : NB_WINOGRAD_FORWARD, w_grad ? GRAD_TILES : 0))
        return 0;
    size_t n_in = p.N * p.Cin * p.Hin * p.Win; /* x's or G's size */
    if (c->kind == NB_WINOGRAD_WEIGHT_GRAD) {
        /* |V| <= b² |x|max, |Ĝ| <= a² |G|max (column sums of |Aᵀ|: 15, 2), dU <= N tiles |V||Ĝ|, dw <= gw² |dU| */
        double gain = (m == 2 ? 4.0 * 4 * 4 : 100.0 * 225 * 2.8) * (double)p.N * (double)p.tiles;
        if (!finite_bounded(c->in, n_in, c->w, p.N * p.Cout * p.Hout * p.Wout, 4 * gain)) return 0;
        return run_weight_grad(e, &p, c);
    }
    /* |V| <= b² |x|max, |U| <= gw² |w|max, |Y| <= a'² Cin |U||V| (row sums of |Bᵀ|, |G|, |Aᵀ|) */
    double gain = m == 2 ? 2.0 * 2 * 1.5 * 1.5 * 3 * 3 : 10.0 * 10 * 1 * 1 * 19 * 19;
    if (!finite_bounded(c->in, n_in, c->w, p.Cin * p.Cout * 9, 4 * gain * (double)p.Cin)) return 0;
    size_t a2 = (size_t)p.a * (size_t)p.a, U_floats, per_part, floats, bytes;
    size_t threads = (size_t)nb_get_threads();
    double flops = 2.0 * (double)p.N * (double)p.Cout * (double)p.Cin * (double)(p.tiles * a2);
    size_t parts = flops < 2e5 ? 1 : p.blocks < threads ? p.blocks : threads;
    if (!mul3(&U_floats, a2, p.Cout, p.Cin) || U_floats > SIZE_MAX / 8) return 0;
    U_floats = align_floats(U_floats) + p.at_floats; /* U, then the tiles' offsets */
    per_part = p.V_floats + p.M_floats + p.work_floats;
    if (per_part < p.V_floats || !mul_to(&floats, per_part, parts) || floats + U_floats < floats ||
        !mul_to(&bytes, floats + U_floats, sizeof(float)))
        return 0;
    float *mem = nb_tape_scratch(e->out->tape, bytes, e);
    if (!mem) return -1;
    transform_weights(&p, in_grad, c->w, mem);
    size_t *at = (size_t *)(void *)(mem + U_floats - p.at_floats);
    for (size_t t = 0; t < p.tiles; t++) at[t] = t / p.TW * (size_t)p.a * p.L + t % p.TW * (size_t)p.m;
    job j = {&p, c->in, c->relu_out, mem, c->bias, at, c->out, c->relu, c->acc, mem + U_floats, parts};
    nb_parallel_parts(p.blocks, (int)parts, blocks_part, &j);
    return 1;
}
