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

/* C (rows x cols, row-major) = beta C + alpha op(X) · op(Y), with op given by
 * the flags and the inner size k. */
static void gemm_scaled(nb_dtype dt, bool tx, bool ty, size_t rows, size_t cols, size_t k, double alpha,
                        const void *x, size_t ldx, const void *y, size_t ldy, double beta, void *c) {
    if (dt == NB_F32)
        cblas_sgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, ty ? CblasTrans : CblasNoTrans,
                    (int)rows, (int)cols, (int)k, (float)alpha, x, (int)ldx, y, (int)ldy, (float)beta, c,
                    (int)cols);
    else
        cblas_dgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, ty ? CblasTrans : CblasNoTrans,
                    (int)rows, (int)cols, (int)k, alpha, x, (int)ldx, y, (int)ldy, beta, c, (int)cols);
}

/* C = op(X) · op(Y), or C += op(X) · op(Y) when accumulating. */
static void gemm(nb_dtype dt, bool tx, bool ty, size_t rows, size_t cols, size_t k,
                 const void *x, size_t ldx, const void *y, size_t ldy, bool accumulate, void *c) {
    gemm_scaled(dt, tx, ty, rows, cols, k, 1.0, x, ldx, y, ldy, accumulate ? 1.0 : 0.0, c);
}

/* Where the product that gives dL/dx goes, and how: into x's gradient
 * (overwriting it, or adding when one is there), or, when nb_backward_sgd
 * applies x's update here, straight into x's values with alpha = -lr and
 * beta = 1: x -= lr dL/dx, and no gradient is kept.  NULL on failure. */
typedef struct { void *c; double alpha, beta; } gemm_target;

static bool target_for(nb_tape *tp, nb_tensor *x, gemm_target *t) {
    if (nb_sgd_fused(x)) {
        *t = (gemm_target){x->data, -tp->sgd_lr, 1.0};
        x->grad_state = NB_GRAD_NONE; /* applied: nothing for the optimizer */
        return true;
    }
    bool acc = false;
    t->c = nb_grad_target(tp, x, &acc);
    t->alpha = 1.0;
    t->beta = acc ? 1.0 : 0.0;
    return t->c != NULL;
}

/* flag0/flag1: A/B transposed.  A is stored (a0, a1), B (b0, b1). */
static void matmul_forward(const nb_entry *e) {
    const nb_tensor *a = e->in[0], *b = e->in[1];
    bool ta = e->flag0, tb = e->flag1;
    size_t m = e->out->shape[0], n = e->out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    gemm(a->dtype, ta, tb, m, n, k, a->data, a->shape[1], b->data, b->shape[1], false,
         e->out->data);
}

/* With nb_backward_sgd, the operand whose update is applied here goes last,
 * so that the other one's gradient reads its values from before the update;
 * if both could be, only B is (A gets a gradient as usual). */
static void matmul_backward(nb_tape *tp, const nb_entry *e) {
    nb_tensor *a = e->in[0], *b = e->in[1];
    const void *g = e->out->grad;
    bool ta = e->flag0, tb = e->flag1;
    size_t m = e->out->shape[0], n = e->out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    bool a_last = nb_sgd_fused(a) && !nb_sgd_fused(b);
    for (int pass = 0; pass < 2; pass++) {
        bool do_a = a->requires_grad && (pass == 1) == a_last;
        bool do_b = b->requires_grad && (pass == 0) == a_last;
        gemm_target t;
        if (do_a) {
            uint8_t sgd = a->sgd;
            if (nb_sgd_fused(b)) a->sgd = NB_SGD_NO; /* B's update is the one applied here */
            bool ok = target_for(tp, a, &t);
            a->sgd = sgd;
            if (!ok) return;
            if (!ta) /* dA (m, k) = G (m, n) · op(B)ᵀ (n, k) */
                gemm_scaled(a->dtype, false, !tb, m, k, n, t.alpha, g, n, b->data, b->shape[1], t.beta, t.c);
            else /* dA (k, m) = op(B) (k, n) · Gᵀ (n, m) */
                gemm_scaled(a->dtype, tb, true, k, m, n, t.alpha, b->data, b->shape[1], g, n, t.beta, t.c);
        }
        if (do_b) {
            if (!target_for(tp, b, &t)) return;
            if (!tb) /* dB (k, n) = op(A)ᵀ (k, m) · G (m, n) */
                gemm_scaled(a->dtype, !ta, false, k, n, m, t.alpha, a->data, a->shape[1], g, n, t.beta, t.c);
            else /* dB (n, k) = Gᵀ (n, m) · op(A) (m, k) */
                gemm_scaled(a->dtype, true, ta, n, k, m, t.alpha, g, n, a->data, a->shape[1], t.beta, t.c);
        }
    }
}

static const nb_op matmul_op = {"matmul", matmul_forward, matmul_backward, {"G · op(B)ᵀ", "op(A)ᵀ · G"}, false};

nb_tensor *nb_matmul_(nb_tape *tp, nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b,
                      const char *file, int line) {
    nb_tensor *in[2] = {a, b};
    nb_tensor *failed = nb_check(tp, &matmul_op, file, line, 2, in);
    if (failed) return failed;
    char sa[128], sb[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    nb_format_shape(b->ndim, b->shape, sb, sizeof sb);
    if (a->ndim != 2 || b->ndim != 2)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "matmul: operands must be 2-D matrices, got %s and %s (use nb_reshape "
                       "to make a vector a (n, 1) or (1, n) matrix)",
                       sa, sb);
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
static void linear_forward(const nb_entry *e) {
    const nb_tensor *a = e->in[0], *b = e->in[1], *bias = e->in[2];
    size_t m = e->out->shape[0], n = e->out->shape[1];
    bool column = e->axis == 1;
    NB_DISPATCH(a->dtype, {
        T *y = e->out->data;
        const T *c = bias->data;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) y[i * n + j] = column ? c[i] : c[j];
    });
    bool ta = e->flag0, tb = e->flag1;
    size_t k = ta ? a->shape[0] : a->shape[1];
    gemm(a->dtype, ta, tb, m, n, k, a->data, a->shape[1], b->data, b->shape[1], true, e->out->data);
}

static void linear_backward(nb_tape *tp, const nb_entry *e) {
    matmul_backward(tp, e); /* in[0] and in[1], exactly as for matmul */
    if (tp->status != NB_OK) return;
    nb_tensor *bias = e->in[2];
    if (!bias->requires_grad) return;
    bool acc, column = e->axis == 1, apply = nb_sgd_fused(bias);
    void *gb_ = nb_grad_target(tp, bias, &acc);
    if (!gb_) return;
    size_t m = e->out->shape[0], n = e->out->shape[1];
    NB_DISPATCH(bias->dtype, {
        const T *g = e->out->grad;
        T *gb = gb_;
        if (!acc)
            for (size_t j = 0; j < bias->size; j++) gb[j] = 0;
        if (column)
            for (size_t i = 0; i < m; i++) {
                T sum = 0;
                for (size_t j = 0; j < n; j++) sum += g[i * n + j];
                gb[i] += sum;
            }
        else
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < n; j++) gb[j] += g[i * n + j];
        if (apply) { /* nb_backward_sgd: b -= lr dL/db here, and no gradient kept */
            T *values = bias->data, lr = (T)tp->sgd_lr;
            for (size_t j = 0; j < bias->size; j++) values[j] -= lr * gb[j];
        }
    });
    if (apply) bias->grad_state = NB_GRAD_NONE;
}

static const nb_op linear_op = {"linear", linear_forward, linear_backward,
                                {"G · op(B)ᵀ", "op(A)ᵀ · G", "G summed over the broadcast axis"}, false};

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
