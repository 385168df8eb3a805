/*
 * Matrix product of 2-D tensors through CBLAS: C = op(A) · op(B), where
 * op(X) is X or Xᵀ (no copy is made: CBLAS reads the operand transposed).
 * The fused product plus bias (linear) is in linear.c and shares the
 * backward here.
 *
 * With G = dL/dC of shape (m, n), the chain rule gives
 *     dL/d op(A) = G · op(B)ᵀ          dL/d op(B) = op(A)ᵀ · G
 * and undoing op:
 *     A not transposed:  dL/dA = G · op(B)ᵀ
 *     A transposed:      dL/dA = (G · op(B)ᵀ)ᵀ = op(B) · Gᵀ
 *     B not transposed:  dL/dB = op(A)ᵀ · G
 *     B transposed:      dL/dB = (op(A)ᵀ · G)ᵀ = Gᵀ · op(A)
 * Each is one gemm call; beta = 1 adds into an existing gradient.
 */
#include "../internal.h"

#include <cblas.h>

/* C (rows x cols, row-major, leading dimension ldc) = beta C + alpha op(X) ·
 * op(Y), with op given by the flags and the inner size k: one CBLAS call. */
static void blas(nb_dtype dt, bool tx, bool ty, size_t rows, size_t cols, size_t k, double alpha, const void *x,
                 size_t ldx, const void *y, size_t ldy, double beta, void *c, size_t ldc) {
    if (dt == NB_F32)
        cblas_sgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, ty ? CblasTrans : CblasNoTrans,
                    (int)rows, (int)cols, (int)k, (float)alpha, x, (int)ldx, y, (int)ldy, (float)beta, c,
                    (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, ty ? CblasTrans : CblasNoTrans,
                    (int)rows, (int)cols, (int)k, alpha, x, (int)ldx, y, (int)ldy, beta, c, (int)ldc);
}

/*
 * Splitting a product across threads without changing a bit of it.
 *
 * With nb_set_threads(n > 1), a large product is cut into n blocks of rows of
 * C and each thread makes the single-threaded CBLAS call for its block:
 *     rows i0..i1 of C = rows i0..i1 of op(X) · op(Y)
 * (row i of op(X) starts at X + i ldx, or at X + i when X is transposed).
 * Each element of C is then the same sum of the same products; whether it
 * is also added in the same order as in one call on the whole product
 * depends on OpenBLAS's kernels, which differ by CPU:
 *
 * - OpenBLAS computes a row-major C as the column-major Cᵀ, so the rows of
 *   C are its kernel's N dimension.  The micro-kernels walk N in panels of
 *   4, 8, 12 or 24 rows counted from the start of the call, and some panel
 *   widths add their products in another order than others (Haswell's and
 *   Zen's sgemm sums even and odd k separately in its 4- and 6-wide
 *   panels, then adds the halves).  A block that starts on a multiple of
 *   every panel width sees the same panels as the whole product: blocks are
 *   cut at multiples of ROW_UNIT = 24 rows.
 * - The columns of C are the kernel's M dimension, where the panel layout
 *   depends on where a call starts (Haswell's sgemm treats the first 8 rows
 *   of each M block apart), so columns are never split.
 * - For M·N·K <= 10^6, OpenBLAS's AVX-512 cores (SkylakeX, Cooperlake) take
 *   a separate small-matrix kernel with its own order (and, with beta != 0,
 *   its own rounding of alpha·AB + beta·C).  Every block must stay above
 *   that size whenever it is split at all.
 *
 * tests/test_threads.c checks the result bit for bit against one thread on
 * random shapes, under every OpenBLAS core type the CPU can run.
 */
typedef struct {
    nb_dtype dt;
    bool tx, ty;
    size_t rows, cols, k, ldx, ldy;
    double alpha, beta;
    const char *x, *y;
    char *c;
} gemm_job;

enum { ROW_UNIT = 24, MIN_PARALLEL_FLOPS = 4000000 };
#define SMALL_KERNEL_LIMIT 1e6 /* OpenBLAS's small-matrix path: M·N·K up to this */

static void gemm_block(void *ctx, size_t begin, size_t end) {
    const gemm_job *j = ctx;
    size_t w = nb_dtype_size(j->dt);
    size_t from = begin * ROW_UNIT, to = end * ROW_UNIT < j->rows ? end * ROW_UNIT : j->rows;
    blas(j->dt, j->tx, j->ty, to - from, j->cols, j->k, j->alpha, j->x + (j->tx ? from : from * j->ldx) * w,
         j->ldx, j->y, j->ldy, j->beta, j->c + from * j->cols * w, j->cols);
}

/* The rows in the smallest of `blocks` blocks of whole units (the last
 * block also takes the rows that do not fill a unit). */
static size_t smallest_block(size_t rows, size_t blocks) {
    size_t units = (rows + ROW_UNIT - 1) / ROW_UNIT, smallest = rows;
    for (size_t b = 0; b < blocks; b++) {
        size_t from = nb_part_begin(units, b, blocks) * ROW_UNIT, to = nb_part_begin(units, b + 1, blocks) * ROW_UNIT;
        if (to > rows) to = rows;
        if (to - from < smallest) smallest = to - from;
    }
    return smallest;
}

/* How many blocks of rows a product is cut into: one per thread, fewer when
 * a block would be under ROW_UNIT rows or on OpenBLAS's small-matrix path. */
static size_t row_blocks(size_t rows, size_t cols, size_t k) {
    size_t threads = (size_t)nb_get_threads();
    if (threads == 1 || 2.0 * (double)rows * (double)cols * (double)k < MIN_PARALLEL_FLOPS) return 1;
    size_t blocks = threads < rows / ROW_UNIT ? threads : rows / ROW_UNIT;
    while (blocks > 1 && (double)smallest_block(rows, blocks) * (double)cols * (double)k <= SMALL_KERNEL_LIMIT)
        blocks--;
    return blocks;
}

void nb_gemm(nb_dtype dt, bool tx, bool ty, size_t rows, size_t cols, size_t k, double alpha, const void *x,
             size_t ldx, const void *y, size_t ldy, double beta, void *c) {
    size_t blocks = row_blocks(rows, cols, k);
    if (blocks <= 1) {
        blas(dt, tx, ty, rows, cols, k, alpha, x, ldx, y, ldy, beta, c, cols);
        return;
    }
    gemm_job j = {dt, tx, ty, rows, cols, k, ldx, ldy, alpha, beta, x, y, c};
    /* (rows + ROW_UNIT - 1) / ROW_UNIT units, in `blocks` ranges */
    nb_parallel_parts((rows + ROW_UNIT - 1) / ROW_UNIT, (int)blocks, gemm_block, &j);
}

/* C = op(X) · op(Y), or C += op(X) · op(Y) when accumulating. */
static void gemm(nb_dtype dt, bool tx, bool ty, size_t rows, size_t cols, size_t k,
                 const void *x, size_t ldx, const void *y, size_t ldy, bool accumulate, void *c) {
    nb_gemm(dt, tx, ty, rows, cols, k, 1.0, x, ldx, y, ldy, accumulate ? 1.0 : 0.0, c);
}

/* Where the product that gives dL/dx goes, and how: into x's gradient
 * (overwriting it, or adding when one is there), or, when nb_backward_sgd
 * applies x's update here, straight into x's values with alpha = -lr and
 * beta = 1: x -= lr dL/dx, and no gradient is kept.  NULL on failure. */
typedef struct { void *c; double alpha, beta; } gemm_target;

static bool target_for(nb_tape *tp, nb_tensor *x, bool apply, gemm_target *t) {
    if (apply) {
        *t = (gemm_target){x->data, -tp->sgd_lr, 1.0};
        nb_set_grad_state(x, NB_GRAD_APPLIED); /* nothing for the optimizer */
        nb_mark_written(x);
        return true;
    }
    bool acc = false;
    t->c = nb_grad_target(tp, x, &acc);
    t->alpha = 1.0;
    t->beta = acc ? 1.0 : 0.0;
    return t->c != NULL;
}

/* The sizes of an entry's product op(A) (m, k) · op(B) (k, n), and how its
 * operands are stored: B is a (b0, b1) matrix; A a (a0, a1) matrix, or for
 * linear, not transposed, any (..., k) tensor, whose leading axes are the
 * m rows of one matrix (tensors are contiguous).  C is (..., n), m·n. */
typedef struct { size_t m, n, k, lda, ldb; } product_dims;

static product_dims dims_of(const nb_entry *e) {
    const nb_tensor *a = e->in[0], *b = e->in[1], *c = e->out;
    product_dims d;
    d.n = c->ndim ? c->shape[c->ndim - 1] : 1;
    d.m = c->size / d.n;
    d.lda = a->shape[a->ndim - 1];
    d.k = e->flag0 ? a->shape[0] : d.lda;
    d.ldb = b->shape[1];
    return d;
}

/* flag0/flag1: A/B transposed. */
static void matmul_forward(nb_entry *e) {
    const nb_tensor *a = e->in[0], *b = e->in[1];
    product_dims d = dims_of(e);
    gemm(a->dtype, e->flag0, e->flag1, d.m, d.n, d.k, a->data, d.lda, b->data, d.ldb, false, e->out->data);
}

/* dL/dA (m, k), or (k, m) when A is transposed, into t. */
static void grad_a(const nb_entry *e, const gemm_target *t) {
    const nb_tensor *a = e->in[0], *b = e->in[1];
    bool ta = e->flag0, tb = e->flag1;
    product_dims d = dims_of(e);
    if (!ta) /* dA (m, k) = G (m, n) · op(B)ᵀ (n, k) */
        nb_gemm(a->dtype, false, !tb, d.m, d.k, d.n, t->alpha, e->out->grad, d.n, b->data, d.ldb, t->beta, t->c);
    else /* dA (k, m) = op(B) (k, n) · Gᵀ (n, m) */
        nb_gemm(a->dtype, tb, true, d.k, d.m, d.n, t->alpha, b->data, d.ldb, e->out->grad, d.n, t->beta, t->c);
}

/* dL/dB (k, n), or (n, k) when B is transposed, into t. */
static void grad_b(const nb_entry *e, const gemm_target *t) {
    const nb_tensor *a = e->in[0];
    bool ta = e->flag0, tb = e->flag1;
    product_dims d = dims_of(e);
    if (!tb) /* dB (k, n) = op(A)ᵀ (k, m) · G (m, n) */
        nb_gemm(a->dtype, !ta, false, d.k, d.n, d.m, t->alpha, a->data, d.lda, e->out->grad, d.n, t->beta, t->c);
    else /* dB (n, k) = Gᵀ (n, m) · op(A) (m, k) */
        nb_gemm(a->dtype, true, ta, d.n, d.k, d.m, t->alpha, e->out->grad, d.n, a->data, d.lda, t->beta, t->c);
}

/* With nb_backward_sgd at most one operand has its update applied here (B
 * if both could), and it goes last, so that the other operand's gradient
 * reads its values from before the update. */
void nb_product_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *a = e->in[0], *b = e->in[1];
    bool apply_b = nb_sgd_fused(b), apply_a = nb_sgd_fused(a) && !apply_b;
    gemm_target t;
    if (a->requires_grad && !apply_a) {
        if (!target_for(tp, a, false, &t)) return;
        grad_a(e, &t);
    }
    if (b->requires_grad) {
        if (!target_for(tp, b, apply_b, &t)) return;
        grad_b(e, &t);
    }
    if (apply_a) {
        target_for(tp, a, true, &t);
        grad_a(e, &t);
    }
}

static const nb_op matmul_op = {.name = "matmul", .forward = matmul_forward, .backward = nb_product_backward,
    .derivative = {"G · op(B)ᵀ", "op(A)ᵀ · G"}, .elementwise = false, .backward_graph = nb_matmul_graph};

nb_tensor *nb_matmul_(nb_tape *tp, nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b,
                      const char *file, int line) {
    nb_tensor *in[2] = {a, b};
    nb_tensor *failed = nb_check(tp, &matmul_op, file, line, 2, in);
    if (failed) return failed;
    char sa[128], sb[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    nb_format_shape(b->ndim, b->shape, sb, sizeof sb);
    if (a->ndim != 2 || b->ndim != 2) /* vectors and stacks of matrices: batched.c */
        return nb_matmul_batched(tp, a, b, trans_a, trans_b, file, line);
    size_t m = trans_a ? a->shape[1] : a->shape[0], ka = trans_a ? a->shape[0] : a->shape[1];
    size_t kb = trans_b ? b->shape[1] : b->shape[0], n = trans_b ? b->shape[0] : b->shape[1];
    if (ka != kb)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "matmul: inner sizes differ: %s%s has %zu columns, %s%s has %zu rows", sa,
                       trans_a ? "ᵀ" : "", ka, sb, trans_b ? "ᵀ" : "", kb);
    if (m > INT32_MAX || n > INT32_MAX || ka > INT32_MAX)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "matmul: %s · %s exceeds the sizes CBLAS can index", sa, sb);
    size_t shape[2] = {m, n};
    nb_entry *e = nb_emit(tp, &matmul_op, 2, in, a->dtype, 2, shape, file, line, &failed);
    if (!e) return failed;
    e->flag0 = trans_a;
    e->flag1 = trans_b;
    return nb_run(e);
}
