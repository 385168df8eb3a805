/*
 * matmul beyond two matrices, as NumPy's and PyTorch's matmul: operands of
 * shape (..., m, k) and (..., k, n) are stacks of matrices, multiplied pair
 * by pair, their leading (batch) axes broadcast against each other; a 1-D
 * operand is a vector, (k,) read as a (1, k) row on the left or a (k, 1)
 * column on the right, and that axis is dropped from the result.  The
 * transposed flags transpose each matrix of the stack.
 *
 * Each pair is one CBLAS call on the matrices where they lie (strided, no
 * copy).  With a single matrix B shared by the whole stack and A not
 * transposed (x W for a batch of sequences), the stack of A is one tall
 * matrix and the product is one call.
 *
 * Backward, for each pair (C_i = op(A_i) op(B_i), G_i = dL/dC_i), exactly
 * as for two matrices (see matmul.c):
 *     dL/d op(A_i) = G_i op(B_i)ᵀ        dL/d op(B_i) = op(A_i)ᵀ G_i
 * and a matrix that served several pairs (a broadcast batch axis) gets the
 * sum of its pairs' gradients.
 */
#include "../internal.h"

#include <string.h>

typedef struct {
    int nd;                          /* batch axes of the result */
    size_t batch[NB_MAX_DIMS];       /* their sizes */
    size_t a_step[NB_MAX_DIMS];      /* in matrices of A and B; 0 where broadcast */
    size_t b_step[NB_MAX_DIMS];
    size_t items;                    /* pairs: the product of batch */
    size_t a_count, b_count;         /* matrices in A and in B */
    size_t m, n, k;                  /* each pair: op(A) (m, k) · op(B) (k, n) */
    size_t a_rows, a_cols, b_rows, b_cols; /* each matrix as stored */
    bool ta, tb;
    bool tall;                       /* one call: B a single matrix, A not transposed */
} batch_plan;

/* Where pair `item` finds its A and B (matrix indices). */
static void pair_of(const batch_plan *p, size_t item, size_t *ia, size_t *ib) {
    *ia = *ib = 0;
    for (int d = p->nd - 1; d >= 0; d--) {
        size_t i = item % p->batch[d];
        item /= p->batch[d];
        *ia += i * p->a_step[d];
        *ib += i * p->b_step[d];
    }
}

typedef struct {
    const batch_plan *p;
    nb_dtype dt;
    const char *a, *b, *g; /* values of A and B, and the output or its gradient */
    char *c;
    int which;             /* forward (0), dA (1), dB (2) */
    double beta;
} pair_job;

static void run_pairs(void *ctx, size_t begin, size_t end) {
    const pair_job *j = ctx;
    const batch_plan *p = j->p;
    size_t w = nb_dtype_size(j->dt), sa = p->a_rows * p->a_cols * w, sb = p->b_rows * p->b_cols * w;
    for (size_t item = begin; item < end; item++) {
        size_t ia, ib;
        pair_of(p, item, &ia, &ib);
        const char *A = j->a + ia * sa, *B = j->b + ib * sb;
        const char *G = j->g + item * p->m * p->n * w;
        char *C = j->c + item * p->m * p->n * w;
        if (j->which == 0)
            nb_gemm(j->dt, p->ta, p->tb, p->m, p->n, p->k, 1, A, p->a_cols, B, p->b_cols, 0, C);
        else if (j->which == 1) { /* dA_i, into A's matrix ia */
            char *dA = (char *)j->c + ia * sa;
            if (!p->ta) /* (m, k) = G (m, n) · op(B)ᵀ */
                nb_gemm(j->dt, false, !p->tb, p->m, p->k, p->n, 1, G, p->n, B, p->b_cols, j->beta, dA);
            else /* (k, m) = op(B) (k, n) · Gᵀ */
                nb_gemm(j->dt, p->tb, true, p->k, p->m, p->n, 1, B, p->b_cols, G, p->n, j->beta, dA);
        } else { /* dB_i, into B's matrix ib */
            char *dB = (char *)j->c + ib * sb;
            if (!p->tb) /* (k, n) = op(A)ᵀ (k, m) · G (m, n) */
                nb_gemm(j->dt, !p->ta, false, p->k, p->n, p->m, 1, A, p->a_cols, G, p->n, j->beta, dB);
            else /* (n, k) = Gᵀ (n, m) · op(A) (m, k) */
                nb_gemm(j->dt, true, p->ta, p->n, p->k, p->m, 1, G, p->n, A, p->a_cols, j->beta, dB);
        }
    }
}

/* Runs every pair of a job; spread over nabla's threads when there are
 * several pairs (each pair is one call, computed the same on any thread). */
static void all_pairs(pair_job *j) {
    if (j->which != 0 && (j->which == 1 ? j->p->a_count : j->p->b_count) < j->p->items) {
        /* a matrix shared by several pairs: they add into it, one after the
         * other, in pair order (so that the sum does not depend on threads) */
        run_pairs(j, 0, j->p->items);
        return;
    }
    nb_parallel_for(j->p->items, 1, run_pairs, j);
}

static void batched_forward(nb_entry *e) {
    const batch_plan *p = e->saved;
    const nb_tensor *a = e->in[0], *b = e->in[1];
    if (p->tall) { /* (items m, k) · op(B) */
        nb_gemm(a->dtype, false, p->tb, p->items * p->m, p->n, p->k, 1, a->data, p->a_cols, b->data, p->b_cols, 0,
                e->out->data);
        return;
    }
    pair_job j = {p, a->dtype, a->data, b->data, e->out->data, e->out->data, 0, 0};
    all_pairs(&j);
}

static void batched_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    const batch_plan *p = e->saved;
    nb_tensor *a = e->in[0], *b = e->in[1];
    for (int which = 1; which <= 2; which++) {
        nb_tensor *x = e->in[which - 1];
        if (!x->requires_grad) continue;
        bool shared = (which == 1 ? p->a_count : p->b_count) < p->items, acc = false;
        void *gx = shared && !p->tall ? nb_grad_target_zeroed(tp, x) : nb_grad_target(tp, x, &acc);
        if (!gx) return;
        double beta = (shared && !p->tall) || acc ? 1 : 0;
        if (p->tall) { /* A is one (items m, k) matrix, B one matrix */
            size_t rows = p->items * p->m;
            if (which == 1) /* dA (rows, k) = G · op(B)ᵀ */
                nb_gemm(a->dtype, false, !p->tb, rows, p->k, p->n, 1, e->out->grad, p->n, b->data, p->b_cols, beta, gx);
            else if (!p->tb) /* dB (k, n) = Aᵀ · G */
                nb_gemm(a->dtype, true, false, p->k, p->n, rows, 1, a->data, p->a_cols, e->out->grad, p->n, beta, gx);
            else /* dB (n, k) = Gᵀ · A */
                nb_gemm(a->dtype, true, false, p->n, p->k, rows, 1, e->out->grad, p->n, a->data, p->a_cols, beta, gx);
            continue;
        }
        pair_job j = {p, a->dtype, a->data, b->data, e->out->grad, gx, which, beta};
        all_pairs(&j);
    }
}

/* The backward graph of every matmul (two matrices, stacks, vectors), as
 * products that can be differentiated again.  Vectors are first read as the
 * (1, k) row or (k, 1) column they stand for, and G as the stack of (m, n)
 * matrices it is; then, per matrix,
 *     A:  G op(B)ᵀ, or op(B) Gᵀ when A is transposed
 *     B:  op(A)ᵀ G, or Gᵀ op(A) when B is transposed
 * summed over the batch axes an operand was broadcast along (sum_to), and
 * read back in the operand's own shape. */
static nb_tensor *as_shape(nb_tape *tp, nb_tensor *t, int ndim, const size_t *shape, const char *file, int line) {
    long dims[NB_MAX_DIMS + 2];
    for (int d = 0; d < ndim; d++) dims[d] = (long)shape[d];
    return nb_reshape_(tp, t, ndim, dims, file, line);
}

void nb_matmul_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *a = e->in[0], *b = e->in[1];
    bool ta = e->flag0, tb = e->flag1;
    size_t shape[NB_MAX_DIMS + 2];
    /* the operands as matrices */
    nb_tensor *am = a, *bm = b, *gm = G;
    if (a->ndim == 1) {
        shape[0] = 1, shape[1] = a->shape[0];
        am = as_shape(tp, a, 2, shape, e->file, e->line);
    }
    if (b->ndim == 1) {
        shape[0] = b->shape[0], shape[1] = 1;
        bm = as_shape(tp, b, 2, shape, e->file, e->line);
    }
    if (a->ndim == 1 || b->ndim == 1) { /* G with the vectors' axes back, as size 1 */
        int nd = 0, batch = G->ndim - (a->ndim > 1) - (b->ndim > 1);
        for (int d = 0; d < batch; d++) shape[nd++] = G->shape[d];
        shape[nd++] = a->ndim > 1 ? G->shape[batch] : 1;
        shape[nd++] = b->ndim > 1 ? G->shape[G->ndim - 1] : 1;
        gm = as_shape(tp, G, nd, shape, e->file, e->line);
    }
    if (a->requires_grad) {
        nb_tensor *g = ta ? nb_matmul_(tp, bm, gm, tb, true, e->file, e->line)
                          : nb_matmul_(tp, gm, bm, false, !tb, e->file, e->line);
        g = nb_sum_to_(tp, g, am->ndim, am->shape, e->file, e->line);
        grad_in[0] = am == a ? g : as_shape(tp, g, a->ndim, a->shape, e->file, e->line);
    }
    if (b->requires_grad) {
        nb_tensor *g = tb ? nb_matmul_(tp, gm, am, true, ta, e->file, e->line)
                          : nb_matmul_(tp, am, gm, !ta, false, e->file, e->line);
        g = nb_sum_to_(tp, g, bm->ndim, bm->shape, e->file, e->line);
        grad_in[1] = bm == b ? g : as_shape(tp, g, b->ndim, b->shape, e->file, e->line);
    }
}

static const nb_op batched_matmul_op = {.name = "matmul", .forward = batched_forward, .backward = batched_backward,
                                        .derivative = {"G · op(B)ᵀ per matrix", "op(A)ᵀ · G per matrix"}, .backward_graph = nb_matmul_graph};

nb_tensor *nb_matmul_batched(nb_tape *tp, nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b,
                             const char *file, int line) {
    char sa[128], sb[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    nb_format_shape(b->ndim, b->shape, sb, sizeof sb);
    if (a->ndim == 0 || b->ndim == 0)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "matmul: %s · %s: a scalar is not a matrix (use nb_mul)", sa, sb);
    if ((a->ndim == 1 && trans_a) || (b->ndim == 1 && trans_b))
        return nb_fail(tp, NB_ERR_ARG, file, line, "matmul: %s · %s: a vector operand cannot be transposed", sa, sb);
    batch_plan p = {.ta = trans_a, .tb = trans_b};
    /* each operand as a stack of matrices */
    p.a_rows = a->ndim == 1 ? 1 : a->shape[a->ndim - 2];
    p.a_cols = a->shape[a->ndim - 1];
    p.b_rows = b->ndim == 1 ? b->shape[0] : b->shape[b->ndim - 2];
    p.b_cols = b->ndim == 1 ? 1 : b->shape[b->ndim - 1];
    p.m = trans_a ? p.a_cols : p.a_rows;
    size_t ka = trans_a ? p.a_rows : p.a_cols, kb = trans_b ? p.b_cols : p.b_rows;
    p.n = trans_b ? p.b_rows : p.b_cols;
    if (ka != kb)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "matmul: inner sizes differ: the matrices of %s%s have %zu columns, those of %s%s %zu rows",
                       sa, trans_a ? "ᵀ" : "", ka, sb, trans_b ? "ᵀ" : "", kb);
    p.k = ka;
    if (p.m > INT32_MAX || p.n > INT32_MAX || p.k > INT32_MAX)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "matmul: %s · %s exceeds the sizes CBLAS can index", sa, sb);
    /* the batch axes, broadcast: aligned from the right, as NumPy */
    int na = a->ndim > 2 ? a->ndim - 2 : 0, nbd = b->ndim > 2 ? b->ndim - 2 : 0;
    p.nd = na > nbd ? na : nbd;
    p.items = p.a_count = p.b_count = 1;
    size_t run_a = 1, run_b = 1;
    for (int d = p.nd - 1; d >= 0; d--) {
        int da = d - (p.nd - na), db = d - (p.nd - nbd);
        size_t sa_d = da >= 0 ? a->shape[da] : 1, sb_d = db >= 0 ? b->shape[db] : 1;
        if (sa_d != sb_d && sa_d != 1 && sb_d != 1)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "matmul: the batch axes of %s and %s do not broadcast (axis %d: %zu and %zu)", sa, sb, d,
                           sa_d, sb_d);
        p.batch[d] = sa_d > sb_d ? sa_d : sb_d;
        p.a_step[d] = sa_d == 1 ? 0 : run_a;
        p.b_step[d] = sb_d == 1 ? 0 : run_b;
        run_a *= sa_d;
        run_b *= sb_d;
        p.items *= p.batch[d];
    }
    p.a_count = run_a;
    p.b_count = run_b;
    p.tall = !trans_a && p.b_count == 1 && p.a_count == p.items;
    /* the result: the batch axes, then m unless A is a vector, n unless B is */
    size_t shape[NB_MAX_DIMS + 2];
    int nd = 0;
    for (int d = 0; d < p.nd; d++) shape[nd++] = p.batch[d];
    if (a->ndim > 1) shape[nd++] = p.m;
    if (b->ndim > 1) shape[nd++] = p.n;
    batch_plan *kept = nb_tape_alloc(tp, sizeof *kept);
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "matmul: out of memory");
    *kept = p;
    nb_tensor *in[2] = {a, b}, *failed;
    nb_entry *e = nb_emit(tp, &batched_matmul_op, 2, in, a->dtype, nd, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    e->flag0 = trans_a;
    e->flag1 = trans_b;
    return nb_run(e);
}
