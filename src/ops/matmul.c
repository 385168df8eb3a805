/*
 * Matrix product of 2-D tensors through CBLAS, and the fused product plus
 * bias (linear) at the end of the file: C = op(A) · op(B), where op(X)
 * is X or Xᵀ (no copy is made: CBLAS reads the operand transposed).
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

/* flag0/flag1: A/B transposed.  A is stored (a0, a1), B (b0, b1). */
static void matmul_forward(nb_entry *e) {
    const nb_tensor *a = e->in[0], *b = e->in[1];
    bool ta = e->flag0, tb = e->flag1;
    size_t m = e->out->shape[0], n = e->out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    gemm(a->dtype, ta, tb, m, n, k, a->data, a->shape[1], b->data, b->shape[1], false,
         e->out->data);
}

/* dL/dA (m, k), or (k, m) when A is transposed, into t. */
static void grad_a(const nb_entry *e, const gemm_target *t) {
    const nb_tensor *a = e->in[0], *b = e->in[1];
    bool ta = e->flag0, tb = e->flag1;
    size_t m = e->out->shape[0], n = e->out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    if (!ta) /* dA (m, k) = G (m, n) · op(B)ᵀ (n, k) */
        nb_gemm(a->dtype, false, !tb, m, k, n, t->alpha, e->out->grad, n, b->data, b->shape[1], t->beta, t->c);
    else /* dA (k, m) = op(B) (k, n) · Gᵀ (n, m) */
        nb_gemm(a->dtype, tb, true, k, m, n, t->alpha, b->data, b->shape[1], e->out->grad, n, t->beta, t->c);
}

/* dL/dB (k, n), or (n, k) when B is transposed, into t. */
static void grad_b(const nb_entry *e, const gemm_target *t) {
    const nb_tensor *a = e->in[0];
    bool ta = e->flag0, tb = e->flag1;
    size_t m = e->out->shape[0], n = e->out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    if (!tb) /* dB (k, n) = op(A)ᵀ (k, m) · G (m, n) */
        nb_gemm(a->dtype, !ta, false, k, n, m, t->alpha, a->data, a->shape[1], e->out->grad, n, t->beta, t->c);
    else /* dB (n, k) = Gᵀ (n, m) · op(A) (m, k) */
        nb_gemm(a->dtype, true, ta, n, k, m, t->alpha, e->out->grad, n, a->data, a->shape[1], t->beta, t->c);
}

/* With nb_backward_sgd at most one operand has its update applied here (B
 * if both could), and it goes last, so that the other operand's gradient
 * reads its values from before the update. */
static void matmul_backward(nb_entry *e) {
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

static const nb_op matmul_op = {.name = "matmul", .forward = matmul_forward, .backward = matmul_backward,
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

/* ---------------------------------------------------------------- linear */

/*
 * linear: Y = op(A) · op(B) + bias, one op (PyTorch's addmm).  The bias is a
 * row (n,) or (1, n), added to every row, or a column (m, 1), added to every
 * column (the seeds' layout, W · A + b).  Forward fills Y with the bias and
 * lets gemm add the product (beta = 1), which saves the pass over Y that a
 * separate add makes.  Backward: the two products of matmul, and
 *     dL/dbias = G summed over the broadcast axis (rows or columns).
 * flag0/flag1: A/B transposed; axis: 0 for a row bias, 1 for a column bias.
 */
/* Rows begin..end of the output filled with the bias. */
NB_VECTOR_CLONES static void fill_with_bias(void *ctx, size_t begin, size_t end) {
    const nb_entry *e = ctx;
    size_t n = e->out->shape[1];
    bool column = e->axis == 1;
    NB_DISPATCH(e->out->dtype, {
        T *y = e->out->data;
        const T *c = e->in[2]->data;
        for (size_t i = begin; i < end; i++)
            for (size_t j = 0; j < n; j++) y[i * n + j] = column ? c[i] : c[j];
    });
}

static void linear_forward(nb_entry *e) {
    const nb_tensor *a = e->in[0], *b = e->in[1];
    size_t m = e->out->shape[0], n = e->out->shape[1];
    nb_parallel(m, NB_PARALLEL_GRAIN / n + 1, fill_with_bias, (void *)e);
    bool ta = e->flag0, tb = e->flag1;
    size_t k = ta ? a->shape[0] : a->shape[1];
    gemm(a->dtype, ta, tb, m, n, k, a->data, a->shape[1], b->data, b->shape[1], true, e->out->data);
}

/* The bias gradient's entries begin..end: sums of G over the rows (a row
 * bias) or over the columns (a column bias), added to the buffer or
 * replacing it. */
typedef struct {
    const nb_entry *e;
    void *gb;
    bool acc;
} bias_grad;

NB_VECTOR_CLONES static void sum_for_bias(void *ctx, size_t begin, size_t end) {
    const bias_grad *job = ctx;
    const nb_entry *e = job->e;
    size_t m = e->out->shape[0], n = e->out->shape[1];
    NB_DISPATCH(e->out->dtype, {
        const T *g = e->out->grad;
        T *gb = job->gb;
        if (!job->acc)
            for (size_t j = begin; j < end; j++) gb[j] = 0;
        if (e->axis == 1) /* column bias: entry i sums row i */
            for (size_t i = begin; i < end; i++) {
                T sum = 0;
                for (size_t j = 0; j < n; j++) sum += g[i * n + j];
                gb[i] += sum;
            }
        else /* row bias: entry j sums column j, a row at a time */
            for (size_t i = 0; i < m; i++)
                for (size_t j = begin; j < end; j++) gb[j] += g[i * n + j];
    });
}

static void linear_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    matmul_backward(e); /* in[0] and in[1], exactly as for matmul */
    if (tp->status != NB_OK) return;
    nb_tensor *bias = e->in[2];
    if (!bias->requires_grad) return;
    bool apply = nb_sgd_fused(bias);
    bias_grad job = {e, NULL, false};
    if (!(job.gb = nb_grad_target(tp, bias, &job.acc))) return;
    size_t m = e->out->shape[0], n = e->out->shape[1];
    nb_parallel(bias->size, NB_PARALLEL_GRAIN / (e->axis == 1 ? n : m) + 1, sum_for_bias, &job);
    if (!apply) return;
    /* nb_backward_sgd: b -= lr dL/db here, and no gradient kept */
    NB_DISPATCH(bias->dtype, {
        T *values = bias->data, lr = (T)tp->sgd_lr;
        const T *gb = job.gb;
        for (size_t j = 0; j < bias->size; j++) values[j] -= lr * gb[j];
    });
    nb_set_grad_state(bias, NB_GRAD_APPLIED);
    nb_mark_written(bias);
}

/* The product's graph as matmul's, and the bias's: G summed over the rows
 * (a row bias) or the columns (a column bias), in the bias's shape. */
static void linear_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_matmul_graph(e, G, grad_in);
    nb_tensor *bias = e->in[2];
    if (!bias->requires_grad) return;
    nb_tape *tp = e->out->tape;
    nb_tensor *g = nb_sum_axis_(tp, G, e->axis == 1 ? 1 : 0, e->axis == 1 || bias->ndim == 2, false, e->file, e->line);
    grad_in[2] = g;
}

static const nb_op linear_op = {.name = "linear", .forward = linear_forward, .backward = linear_backward,
    .derivative = {"G · op(B)ᵀ", "op(A)ᵀ · G", "G summed over the broadcast axis"}, .elementwise = false, .backward_graph = linear_graph};

nb_tensor *nb_linear_(nb_tape *tp, nb_tensor *a, nb_tensor *b, nb_tensor *bias, bool trans_a,
                      bool trans_b, const char *file, int line) {
    nb_tensor *in[3] = {a, b, bias};
    nb_tensor *failed = nb_check(tp, &linear_op, file, line, 3, in);
    if (failed) return failed;
    char sa[128], sb[128], sc[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    nb_format_shape(b->ndim, b->shape, sb, sizeof sb);
    nb_format_shape(bias->ndim, bias->shape, sc, sizeof sc);
    if (a->ndim != 2 || b->ndim != 2)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "linear: operands must be 2-D matrices, got %s and %s",
                       sa, sb);
    size_t m = trans_a ? a->shape[1] : a->shape[0], ka = trans_a ? a->shape[0] : a->shape[1];
    size_t kb = trans_b ? b->shape[1] : b->shape[0], n = trans_b ? b->shape[0] : b->shape[1];
    if (ka != kb)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "linear: inner sizes differ: %s%s has %zu columns, %s%s has %zu rows", sa,
                       trans_a ? "ᵀ" : "", ka, sb, trans_b ? "ᵀ" : "", kb);
    if (m > INT32_MAX || n > INT32_MAX || ka > INT32_MAX)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "linear: %s · %s exceeds the sizes CBLAS can index", sa, sb);
    /* A row bias (n,) or (1, n); a column bias (m, 1). */
    bool row = (bias->ndim == 1 && bias->shape[0] == n) || (bias->ndim == 2 && bias->shape[0] == 1 && bias->shape[1] == n);
    bool column = bias->ndim == 2 && bias->shape[0] == m && bias->shape[1] == 1;
    if (!row && !column)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "linear: bias %s fits neither a row (%zu,) or (1, %zu) nor a column (%zu, 1) of the "
                       "(%zu, %zu) product",
                       sc, n, n, m, m, n);
    size_t shape[2] = {m, n};
    nb_entry *e = nb_emit(tp, &linear_op, 3, in, a->dtype, 2, shape, file, line, &failed);
    if (!e) return failed;
    e->flag0 = trans_a;
    e->flag1 = trans_b;
    e->axis = row ? 0 : 1;
    return nb_run(e);
}
