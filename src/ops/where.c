/*
 * where(c, a, b):  y = c != 0 ? a : b, the three broadcast together.
 *   dL/da = G where c != 0, else 0;  dL/db = G where c == 0, else 0
 *   (summed over the axes a or b was broadcast along); c takes none.
 * Masked fill is where with a 0-d value: where(mask, nb_scalar(tp, dt, v), x).
 *
 * The kernels walk the output in rows: dimensions along which all three
 * operands step evenly are merged first (as binary.c does for two), so the
 * common cases become a few long rows whose operands each step by 1 or 0
 * (same shapes: one row; a causal (T, T) mask over (heads, T, T) scores
 * and a scalar fill: rows of T·T with the mask's stride 1 and the fill's 0).
 * Each row is one loop specialised on those steps, which vectorises; rows
 * split over threads by element ranges, and nothing is summed, so results
 * are the same on any thread count.  Backward takes the same road into an
 * input of the output's shape; an input that was broadcast gets its sum
 * in one fixed order, element by element (rare: a fill value that needs a
 * gradient).
 */
#include "../internal.h"

#include <string.h>

/* The output's dimensions merged, with the three operands' element strides
 * along each (0 where broadcast). */
typedef struct {
    int nd;
    size_t shape[NB_MAX_DIMS];
    size_t step[3][NB_MAX_DIMS];
} where_plan;

static void make_plan(const nb_entry *e, where_plan *p) {
    size_t st[3][NB_MAX_DIMS] = {{0}};
    int n = e->out->ndim;
    for (int k = 0; k < 3; k++) nb_broadcast_strides(e->in[k], n, st[k]);
    p->nd = 1;
    p->shape[0] = 1;
    for (int k = 0; k < 3; k++) p->step[k][0] = 0;
    int m = -1;
    for (int d = 0; d < n; d++) {
        bool merge = m >= 0;
        for (int k = 0; merge && k < 3; k++) merge = p->step[k][m] == st[k][d] * e->out->shape[d];
        if (merge) {
            p->shape[m] *= e->out->shape[d];
        } else {
            m++;
            p->shape[m] = e->out->shape[d];
        }
        for (int k = 0; k < 3; k++) p->step[k][m] = st[k][d];
    }
    if (m >= 0) p->nd = m + 1;
}

/* The offsets in the three operands of the first element of row r (rows run
 * along the last merged dimension). */
static void row_offsets(const where_plan *p, size_t r, size_t off[3]) {
    off[0] = off[1] = off[2] = 0;
    for (int d = p->nd - 2; d >= 0; d--) {
        size_t i = r % p->shape[d];
        r /= p->shape[d];
        for (int k = 0; k < 3; k++) off[k] += i * p->step[k][d];
    }
}

/* One piece of a row: y[k] = c[k sc] != 0 ? a[k sa] : b[k sb] for k in
 * [0, n), the steps 0 or 1 and known to the compiler in each branch.  Both
 * values are read before the choice, which makes it a blend. */
#define SELECT_LOOP(T, SC, SA, SB)                                                         \
    for (size_t k = 0; k < n; k++) {                                                       \
        const T av = a[k * (SA)], bv = b[k * (SB)];                                        \
        y[k] = c[k * (SC)] != 0 ? av : bv;                                                 \
    }
#define SELECT_ROW(T)                                                                        \
    static inline void select_row_##T(const T *restrict c, const T *restrict a, const T *restrict b, \
                                      T *restrict y, size_t n, unsigned steps) {             \
        switch (steps) {                                                                     \
        case 7: SELECT_LOOP(T, 1, 1, 1) break;                                               \
        case 6: SELECT_LOOP(T, 1, 1, 0) break;                                               \
        case 5: SELECT_LOOP(T, 1, 0, 1) break;                                               \
        case 4: SELECT_LOOP(T, 1, 0, 0) break;                                               \
        case 3: SELECT_LOOP(T, 0, 1, 1) break;                                               \
        case 2: SELECT_LOOP(T, 0, 1, 0) break;                                               \
        case 1: SELECT_LOOP(T, 0, 0, 1) break;                                               \
        default: SELECT_LOOP(T, 0, 0, 0) break;                                              \
        }                                                                                    \
    }
SELECT_ROW(float)
SELECT_ROW(double)

/* A row's gradient into the inputs of the output's shape that need one:
 *   ga[k] (+)= c[k sc] != 0 ? g[k] : 0,   gb[k] (+)= c[k sc] != 0 ? 0 : g[k]
 * (ga or gb NULL when not wanted), in one pass over c and g. */
#define PICK_BOTH(T, SC, OPA, OPB)                                                         \
    for (size_t k = 0; k < n; k++) {                                                       \
        const T gk = g[k];                                                                 \
        const bool on = c[k * (SC)] != 0;                                                  \
        ga[k] OPA(on ? gk : 0);                                                            \
        gb[k] OPB(on ? 0 : gk);                                                            \
    }
#define PICK_ONE(T, SC, OP)                                                                \
    for (size_t k = 0; k < n; k++) {                                                       \
        const T gk = g[k];                                                                 \
        gx[k] OP((c[k * (SC)] != 0) == take ? gk : 0);                                     \
    }
#define PICK_STEP(T, SC)                                                                     \
    do {                                                                                     \
        if (ga && gb) {                                                                      \
            if (acc_a && acc_b) PICK_BOTH(T, SC, +=, +=)                                     \
            else if (acc_a) PICK_BOTH(T, SC, +=, =)                                          \
            else if (acc_b) PICK_BOTH(T, SC, =, +=)                                          \
            else PICK_BOTH(T, SC, =, =)                                                      \
        } else {                                                                             \
            T *restrict gx = ga ? ga : gb;                                                   \
            const bool take = ga != NULL, acc = ga ? acc_a : acc_b;                          \
            if (acc) PICK_ONE(T, SC, +=)                                                     \
            else PICK_ONE(T, SC, =)                                                          \
        }                                                                                    \
    } while (0)
#define PICK_ROW(T)                                                                          \
    static inline void pick_row_##T(const T *restrict c, const T *restrict g, T *restrict ga, T *restrict gb, \
                                    size_t n, bool cond_steps, bool acc_a, bool acc_b) {     \
        if (cond_steps) PICK_STEP(T, 1);                                                     \
        else PICK_STEP(T, 0);                                                                \
    }
PICK_ROW(float)
PICK_ROW(double)

/* A job over the output's elements [begin, end): the forward, or (backward)
 * the gradients of a and b that have the output's shape (NULL: not here). */
typedef struct {
    const nb_entry *e;
    where_plan plan;
    bool backward;
    void *grad[2];
    bool acc[2];
} where_job;

NB_VECTOR_CLONES static void where_range(void *ctx, size_t begin, size_t end) {
    const where_job *j = ctx;
    const where_plan *p = &j->plan;
    const nb_entry *e = j->e;
    size_t len = p->shape[p->nd - 1], r = begin / len, k0 = begin % len, off[3];
    const unsigned steps = (p->step[0][p->nd - 1] ? 4u : 0u) | (p->step[1][p->nd - 1] ? 2u : 0u) |
                           (p->step[2][p->nd - 1] ? 1u : 0u);
    for (size_t at = begin; at < end; r++, k0 = 0) {
        row_offsets(p, r, off);
        size_t n = len - k0 < end - at ? len - k0 : end - at;
        for (int k = 0; k < 3; k++) off[k] += k0 * p->step[k][p->nd - 1];
        if (e->out->dtype == NB_F32) {
            const float *c = (const float *)e->in[0]->data + off[0];
            if (!j->backward)
                select_row_float(c, (const float *)e->in[1]->data + off[1], (const float *)e->in[2]->data + off[2],
                                 (float *)e->out->data + at, n, steps);
            else
                pick_row_float(c, (const float *)e->out->grad + at, j->grad[0] ? (float *)j->grad[0] + at : NULL,
                               j->grad[1] ? (float *)j->grad[1] + at : NULL, n, steps & 4u, j->acc[0], j->acc[1]);
        } else {
            const double *c = (const double *)e->in[0]->data + off[0];
            if (!j->backward)
                select_row_double(c, (const double *)e->in[1]->data + off[1],
                                  (const double *)e->in[2]->data + off[2], (double *)e->out->data + at, n, steps);
            else
                pick_row_double(c, (const double *)e->out->grad + at, j->grad[0] ? (double *)j->grad[0] + at : NULL,
                                j->grad[1] ? (double *)j->grad[1] + at : NULL, n, steps & 4u, j->acc[0], j->acc[1]);
        }
        at += n;
    }
}

static void where_forward(nb_entry *e) {
    where_job j = {.e = e};
    make_plan(e, &j.plan);
    nb_parallel(e->out->size, NB_PARALLEL_GRAIN, where_range, &j);
}

static void where_backward(nb_entry *e) {
    where_job j = {.e = e, .backward = true};
    for (int which = 1; which <= 2; which++) {
        nb_tensor *x = e->in[which];
        if (!x->requires_grad || x->size != e->out->size) continue;
        /* not broadcast: one gradient element per output element */
        if (!(j.grad[which - 1] = nb_grad_target(e->out->tape, x, &j.acc[which - 1]))) return;
    }
    if (j.grad[0] || j.grad[1]) {
        make_plan(e, &j.plan);
        nb_parallel(e->out->size, NB_PARALLEL_GRAIN, where_range, &j);
    }
    for (int which = 1; which <= 2; which++) {
        nb_tensor *x = e->in[which];
        if (!x->requires_grad || x->size == e->out->size) continue;
        void *gx_ = nb_grad_target_zeroed(e->out->tape, x);
        if (!gx_) return;
        size_t strides[3][NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0}, off[3] = {0};
        for (int k = 0; k < 3; k++) nb_broadcast_strides(e->in[k], e->out->ndim, strides[k]);
        bool take = which == 1; /* a takes where c != 0, b where c == 0 */
        NB_DISPATCH(e->out->dtype, {
            const T *c = e->in[0]->data, *g = e->out->grad;
            T *gx = gx_;
            for (size_t i = 0; i < e->out->size;
                 i++, nb_odometer_next(e->out->ndim, e->out->shape, idx, 3, off, strides))
                if ((c[off[0]] != 0) == take) gx[off[which]] += g[i];
        });
    }
}

/* G where the condition picks a (else 0), and where it picks b, summed
 * back to each one's shape. */
static void where_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    nb_tensor *zero = nb_full_(tp, G->dtype, 0, NULL, 0, e->file, e->line);
    for (int which = 1; which <= 2; which++) {
        nb_tensor *x = e->in[which];
        if (!x->requires_grad) continue;
        nb_tensor *g = which == 1 ? nb_where_(tp, e->in[0], G, zero, e->file, e->line)
                                  : nb_where_(tp, e->in[0], zero, G, e->file, e->line);
        grad_in[which] = nb_sum_to_(tp, g, x->ndim, x->shape, e->file, e->line);
    }
}

static const nb_op where_op = {.name = "where", .forward = where_forward, .backward = where_backward,
                               .derivative = {"none (the condition)", "[c≠0]", "[c=0]"}, .elementwise = true,
                               .backward_graph = where_graph};

nb_tensor *nb_where_(nb_tape *tp, nb_tensor *cond, nb_tensor *a, nb_tensor *b, const char *file, int line) {
    nb_tensor *in[3] = {cond, a, b};
    nb_tensor *failed = nb_check(tp, &where_op, file, line, 3, in);
    if (failed) return failed;
    int nd;
    size_t shape[NB_MAX_DIMS];
    if (!nb_broadcast_shape(3, in, &nd, shape)) {
        char s[400];
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "where: the condition, a and b (%s) do not broadcast (aligned from the right, each size "
                       "must be equal or 1)",
                       nb_format_shapes(3, in, s, sizeof s));
    }
    nb_entry *e = nb_emit(tp, &where_op, 3, in, a->dtype, nd, shape, file, line, &failed);
    if (!e) return failed;
    /* No gradient flows to the condition, so it alone does not make the
     * result need one (PyTorch's condition is boolean, without gradient). */
    if (!a->requires_grad && !b->requires_grad) e->out->requires_grad = false;
    return nb_run(e);
}
