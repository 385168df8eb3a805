/*
 * linear: Y = op(X) · op(W) + bias, one op (PyTorch's addmm, and
 * torch.nn.functional.linear).  X is a (m, k) matrix, or any (..., k)
 * tensor: its leading axes are the m rows of one matrix (tensors are
 * contiguous), so the product is one gemm and Y is (..., n).  W is (k, n),
 * or (n, k) read transposed (PyTorch's layout, nb_linear_torch).  The bias
 * is a row (n,) or (1, n), added to every row, or, for a 2-D X only, a
 * column (m, 1), added to every column (the seeds' layout, W · A + b).
 * A transposed X must be a matrix: op(X) = Xᵀ of a (k, m) X.
 *
 * Forward fills Y with the bias and lets gemm add the product (beta = 1),
 * which saves the pass over Y that a separate add makes.  With G = dL/dY
 * read as the (m, n) matrix it is:
 *     dL/dX    = G · op(W)ᵀ   (Xᵀ: op(W) · Gᵀ), read in X's shape
 *     dL/dW    = op(X)ᵀ · G   (Wᵀ: Gᵀ · op(X))
 *     dL/dbias = G summed over the broadcast axis (rows or columns)
 * the first two exactly as matmul's (nb_product_backward, matmul.c), which
 * also splits them over threads without changing a bit.
 * flag0/flag1: X/W transposed; axis: 0 for a row bias, 1 for a column bias.
 */
#include "../internal.h"

static size_t cols_of(const nb_entry *e) { return e->out->shape[e->out->ndim - 1]; }
static size_t rows_of(const nb_entry *e) { return e->out->size / cols_of(e); }

/* Rows begin..end of the output filled with the bias. */
NB_VECTOR_CLONES static void fill_with_bias(void *ctx, size_t begin, size_t end) {
    const nb_entry *e = ctx;
    size_t n = cols_of(e);
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
    size_t m = rows_of(e), n = cols_of(e), lda = a->shape[a->ndim - 1];
    nb_parallel(m, NB_PARALLEL_GRAIN / n + 1, fill_with_bias, (void *)e);
    size_t k = e->flag0 ? a->shape[0] : lda;
    nb_gemm(a->dtype, e->flag0, e->flag1, m, n, k, 1.0, a->data, lda, b->data, b->shape[1], 1.0, e->out->data);
}

/* The bias gradient's entries begin..end: sums of G over the rows (a row
 * bias) or over the columns (a column bias), added to the buffer or
 * replacing it.  Each entry is summed in one order, on one thread. */
typedef struct {
    const nb_entry *e;
    void *gb;
    bool acc;
} bias_grad;

NB_VECTOR_CLONES static void sum_for_bias(void *ctx, size_t begin, size_t end) {
    const bias_grad *job = ctx;
    const nb_entry *e = job->e;
    size_t m = rows_of(e), n = cols_of(e);
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
    nb_product_backward(e); /* in[0] and in[1], exactly as for matmul */
    if (tp->status != NB_OK) return;
    nb_tensor *bias = e->in[2];
    if (!bias->requires_grad) return;
    bool apply = nb_sgd_fused(bias);
    bias_grad job = {e, NULL, false};
    if (!(job.gb = nb_grad_target(tp, bias, &job.acc))) return;
    nb_parallel(bias->size, NB_PARALLEL_GRAIN / (e->axis == 1 ? cols_of(e) : rows_of(e)) + 1, sum_for_bias, &job);
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

/* t read as the (rows, cols) matrix it is (a view; t itself if it is one). */
static nb_tensor *as_matrix(nb_entry *e, nb_tensor *t, size_t rows, size_t cols) {
    if (t->ndim == 2) return t;
    return nb_reshape_(e->out->tape, t, 2, (const long[]){(long)rows, (long)cols}, e->file, e->line);
}

/* The backward as ops, to be differentiated again: with X and G read as
 * matrices, the products of matmul's graph and G summed over the rows (a row
 * bias) or the columns (a column bias), each read back in its input's shape. */
static void linear_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *a = e->in[0], *b = e->in[1], *bias = e->in[2];
    bool ta = e->flag0, tb = e->flag1;
    size_t m = rows_of(e), n = cols_of(e), k = ta ? a->shape[0] : a->shape[a->ndim - 1];
    nb_tensor *x = ta ? a : as_matrix(e, a, m, k), *g = as_matrix(e, G, m, n);
    if (a->requires_grad) {
        nb_tensor *ga = ta ? nb_matmul_(tp, b, g, tb, true, e->file, e->line)
                           : nb_matmul_(tp, g, b, false, !tb, e->file, e->line);
        if (a->ndim != 2) {
            long dims[NB_MAX_DIMS];
            for (int d = 0; d < a->ndim; d++) dims[d] = (long)a->shape[d];
            ga = nb_reshape_(tp, ga, a->ndim, dims, e->file, e->line);
        }
        grad_in[0] = ga;
    }
    if (b->requires_grad)
        grad_in[1] = tb ? nb_matmul_(tp, g, x, true, ta, e->file, e->line)
                        : nb_matmul_(tp, x, g, !ta, false, e->file, e->line);
    if (bias->requires_grad)
        grad_in[2] = nb_sum_axis_(tp, g, e->axis == 1 ? 1 : 0, e->axis == 1 || bias->ndim == 2, false, e->file,
                                  e->line);
}

static const nb_op linear_op = {.name = "linear", .forward = linear_forward, .backward = linear_backward,
    .derivative = {"G · op(W)ᵀ", "op(X)ᵀ · G", "G summed over the broadcast axis"}, .elementwise = false,
    .backward_graph = linear_graph};

nb_tensor *nb_linear_(nb_tape *tp, nb_tensor *a, nb_tensor *b, nb_tensor *bias, bool trans_a,
                      bool trans_b, const char *file, int line) {
    nb_tensor *in[3] = {a, b, bias};
    nb_tensor *failed = nb_check(tp, &linear_op, file, line, 3, in);
    if (failed) return failed;
    char sa[128], sb[128], sc[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    nb_format_shape(b->ndim, b->shape, sb, sizeof sb);
    nb_format_shape(bias->ndim, bias->shape, sc, sizeof sc);
    if (a->ndim == 0 || b->ndim != 2)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "linear: x must have at least one axis (..., in) and the weight must be a 2-D matrix, got "
                       "%s and %s",
                       sa, sb);
    if (trans_a && a->ndim != 2)
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "linear: only a 2-D x can be read transposed, got %s with %d axes (for stacks of matrices "
                       "use nb_matmul_t)",
                       sa, a->ndim);
    size_t ka = trans_a ? a->shape[0] : a->shape[a->ndim - 1], m = a->size / ka;
    size_t kb = trans_b ? b->shape[1] : b->shape[0], n = trans_b ? b->shape[0] : b->shape[1];
    if (ka != kb)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "linear: inner sizes differ: %s%s has %zu %s, %s%s has %zu rows", sa, trans_a ? "ᵀ" : "", ka,
                       a->ndim == 2 ? "columns" : "features along its last axis", sb, trans_b ? "ᵀ" : "", kb);
    if (m > INT32_MAX || n > INT32_MAX || ka > INT32_MAX)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "linear: %s · %s%s exceeds the sizes CBLAS can index (%zu rows, %zu inputs, %zu outputs)", sa,
                       sb, trans_b ? "ᵀ" : "", m, ka, n);
    /* A row bias (n,), or (1, n) when the result has at least two axes (as
     * broadcasting would keep its shape); a column bias (m, 1) for a 2-D x. */
    bool row = (bias->ndim == 1 && bias->shape[0] == n) ||
               (a->ndim >= 2 && bias->ndim == 2 && bias->shape[0] == 1 && bias->shape[1] == n);
    bool column = a->ndim == 2 && bias->ndim == 2 && bias->shape[0] == m && bias->shape[1] == 1;
    /* the result: x's leading axes and n, or (m, n) */
    size_t shape[NB_MAX_DIMS];
    int nd = a->ndim;
    for (int d = 0; d < nd - 1; d++) shape[d] = a->shape[d];
    if (trans_a) shape[0] = m;
    shape[nd - 1] = n;
    if (!row && !column) {
        char sy[128];
        nb_format_shape(nd, shape, sy, sizeof sy);
        if (a->ndim == 2)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "linear: bias %s fits neither a row (%zu,) or (1, %zu) nor a column (%zu, 1) of the "
                           "%s product",
                           sc, n, n, m, sy);
        if (a->ndim == 1)
            return nb_fail(tp, NB_ERR_SHAPE, file, line, "linear: bias %s is not the (%zu,) row of the %s result",
                           sc, n, sy);
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "linear: bias %s fits no row (%zu,) or (1, %zu) of the %s result (a column bias is for a "
                       "2-D x)",
                       sc, n, n, sy);
    }
    nb_entry *e = nb_emit(tp, &linear_op, 3, in, a->dtype, nd, shape, file, line, &failed);
    if (!e) return failed;
    e->flag0 = trans_a;
    e->flag1 = trans_b;
    e->axis = row ? 0 : 1;
    return nb_run(e);
}
