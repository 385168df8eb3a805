/*
 * Scaled dot-product attention as one op (flash attention's scheme):
 *
 *     out = dropout(softmax(scale q kᵀ + mask)) v
 *
 * for q (..., L, E), k (..., S, E), v (..., S, Ev): every leading index is
 * a head of its own.  The weights are made block by block with an online
 * softmax and never kept: forward saves only each query row's log-sum-exp,
 * backward recomputes the weights from it.  The blocks' kernels, with the
 * derivative they implement, are in attention_kernel.h.
 *
 * Work is spread over nabla's threads by query blocks in forward and by
 * heads in backward; each block or head is computed the same whichever
 * thread runs it, so results do not depend on the thread count.  A mask
 * that takes a gradient is shared by the heads it is broadcast over: then
 * backward runs the heads one after the other, in order.
 *
 * Dropout cannot keep its mask (it is as large as the weights): element n
 * of the L·S weights of head h is dropped when a hash of (seed, h L S + n)
 * falls under p (SplitMix64's output function, a bijection of 64 bits, of
 * seed + n times the golden ratio), and the seed is one draw of the user's
 * generator.  Backward and nb_attention_dropout_mask recompute the same.
 *
 * With create_graph, backward is built of ops (attention_graph), the same
 * formulas on the whole (L, S) matrices, which can be differentiated again.
 */
#include "../internal.h"
#include "../graph/replay.h"
#include "expf.h"

#include <math.h>
#include <string.h>
#include <stdio.h>

/* Query rows and keys per block; size_t, so that products of them are never
 * formed in int first. */
#ifndef BR
#define BR ((size_t)64)
#define BC ((size_t)64)
#endif
enum { LANES = 16 }; /* partial sums in a row's reductions (attention_kernel.h) */

typedef struct {
    int nd;                             /* leading (head) axes */
    size_t batch[NB_MAX_DIMS];          /* their sizes */
    size_t mask_step[NB_MAX_DIMS + 2];  /* the mask's step along (batch..., L, S); 0 where broadcast */
    size_t heads, L, S, E, Ev;
    double scale, dropout_p;
    bool causal, mask_is_bool, dropout;
    uint64_t seed, drop_limit;
    nb_rng *rng;                        /* the seed's generator (dropout): a replay draws from it */
    void *lse;                          /* heads·L log-sum-exps, the op's dtype */
} attention_plan;

typedef struct {
    const attention_plan *plan;
    nb_dtype dt;
    const void *q, *k, *v, *mask, *out, *grad_out;
    void *grad_mask;
    char *work;                          /* scratch: one part's worth per part */
    size_t work_bytes;
    size_t units, parts;
    void *grad[3];                       /* where dq, dk, dv go (NULL: not needed) */
    bool accumulate[3];
} attention_job;

/* ---------------------------------------------------------------- helpers for the kernels */

static inline uint64_t splitmix_output(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Dropped when u < p for u = hash 2^-53, as nb_dropout compares its draws. */
static inline bool attention_dropped(uint64_t seed, uint64_t n, uint64_t limit) {
    return (splitmix_output(seed + n * 0x9e3779b97f4a7c15u) >> 11) < limit;
}

/* Where element (i, j) of head h's block of the mask is. */
static inline size_t mask_offset(const attention_plan *p, size_t h, size_t i, size_t j) {
    size_t at = 0;
    for (int d = p->nd - 1; d >= 0; d--) {
        at += (h % p->batch[d]) * p->mask_step[d];
        h /= p->batch[d];
    }
    return at + i * p->mask_step[p->nd] + j * p->mask_step[p->nd + 1];
}

/* C (rows, cols) = beta C + alpha op(X) op(Y) (tensors have no empty
 * axis, so no size is 0). */
#define block_product nb_gemm

#define T float
#define SFX _f
#define DT NB_F32
#include "attention_kernel.h"
#undef T
#undef SFX
#undef DT
#define T double
#define SFX _d
#define DT NB_F64
#include "attention_kernel.h"
#undef T
#undef SFX
#undef DT

/* ---------------------------------------------------------------- forward and backward */

/* dst = src, or dst += src. */
static void set_or_add(nb_dtype dt, void *dst, const void *src, size_t n, bool accumulate) {
    if (!accumulate) {
        memcpy(dst, src, n * nb_dtype_size(dt));
    } else if (dt == NB_F32) {
        float *d = dst;
        const float *s = src;
        for (size_t i = 0; i < n; i++) d[i] += s[i];
    } else {
        double *d = dst;
        const double *s = src;
        for (size_t i = 0; i < n; i++) d[i] += s[i];
    }
}

/* Runs parts begin..end of the job: part p takes units
 * [nb_part_begin(units, p, parts), nb_part_begin(units, p + 1, parts)) in
 * its own slice of the scratch (query blocks in forward, heads in
 * backward). */
static void forward_parts(void *ctx, size_t begin, size_t end) {
    const attention_job *j = ctx;
    const attention_plan *p = j->plan;
    size_t blocks = (p->L + BR - 1) / BR, w = nb_dtype_size(j->dt);
    for (size_t part = begin; part < end; part++) {
        void *work = j->work + part * j->work_bytes;
        size_t head = SIZE_MAX, visit = p->S; /* the keys head must visit (keys_to_visit) */
        for (size_t u = nb_part_begin(j->units, part, j->parts); u < nb_part_begin(j->units, part + 1, j->parts); u++) {
            if (u / blocks != head && p->causal) {
                head = u / blocks;
                const void *K = (const char *)j->k + head * p->S * p->E * w, *V = (const char *)j->v + head * p->S * p->Ev * w;
                visit = j->dt == NB_F32 ? keys_to_visit_f(K, V, p->S, p->E, p->Ev) : keys_to_visit_d(K, V, p->S, p->E, p->Ev);
            }
            if (j->dt == NB_F32)
                forward_block_f(j, u / blocks, u % blocks, visit, work);
            else
                forward_block_d(j, u / blocks, u % blocks, visit, work);
        }
    }
}

static void backward_parts(void *ctx, size_t begin, size_t end) {
    const attention_job *j = ctx;
    const attention_plan *p = j->plan;
    size_t w = nb_dtype_size(j->dt), size[3] = {p->L * p->E, p->S * p->E, p->S * p->Ev};
    for (size_t part = begin; part < end; part++) {
        char *work = j->work + part * j->work_bytes;
        /* dQ, dK, dV follow the blocks and the row sums (attention_kernel.h) */
        char *result = work + (2 * BR * BC + p->L) * w;
        for (size_t h = nb_part_begin(j->units, part, j->parts); h < nb_part_begin(j->units, part + 1, j->parts); h++) {
            if (j->dt == NB_F32)
                backward_head_f(j, h, (float *)(void *)work);
            else
                backward_head_d(j, h, (double *)(void *)work);
            char *from = result;
            for (int i = 0; i < 3; i++) {
                if (j->grad[i]) set_or_add(j->dt, (char *)j->grad[i] + h * size[i] * w, from, size[i], j->accumulate[i]);
                from += size[i] * w;
            }
        }
    }
}

static size_t round_up(size_t bytes) { return (bytes + NB_ALIGN - 1) / NB_ALIGN * NB_ALIGN; }

static void attention_forward(nb_entry *e) {
    const attention_plan *p = e->saved;
    nb_tensor *out = e->out;
    size_t w = nb_dtype_size(out->dtype);
    attention_job j = {.plan = p, .dt = out->dtype, .out = out->data};
    j.q = nb_entry_input(e, 0)->data, j.k = nb_entry_input(e, 1)->data, j.v = nb_entry_input(e, 2)->data;
    j.mask = e->n_in > 3 ? nb_entry_input(e, 3)->data : NULL;
    j.units = p->heads * ((p->L + BR - 1) / BR);
    j.parts = (size_t)nb_get_threads() < j.units ? (size_t)nb_get_threads() : j.units;
    j.work_bytes = round_up((BR * BC + 2 * BR) * w);
    if (!(j.work = nb_tape_scratch(out->tape, j.parts * j.work_bytes, e))) return;
    nb_parallel_parts(j.parts, (int)j.parts, forward_parts, &j);
}

static void attention_backward(nb_entry *e) {
    const attention_plan *p = e->saved;
    nb_tape *tp = e->out->tape;
    attention_job j = {.plan = p, .dt = e->out->dtype, .out = e->out->data, .grad_out = e->out->grad};
    nb_tensor *in[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < e->n_in && i < 4; i++) in[i] = nb_entry_input(e, i);
    if (!in[0] || !in[1] || !in[2]) return; /* recorded with q, k and v always */
    j.q = in[0]->data, j.k = in[1]->data, j.v = in[2]->data;
    j.mask = e->n_in > 3 ? in[3]->data : NULL;
    /* One tensor given as several inputs has one gradient: then every part
     * is added into a zeroed buffer, in any order. */
    bool aliased = false;
    for (int a = 0; a < e->n_in; a++)
        for (int b = a + 1; b < e->n_in; b++) aliased |= in[a] == in[b];
    for (int i = 0; i < 3; i++) {
        if (!in[i]->requires_grad) continue;
        if (aliased) {
            j.grad[i] = nb_grad_target_zeroed(tp, in[i]);
            j.accumulate[i] = true;
        } else {
            j.grad[i] = nb_grad_target(tp, in[i], &j.accumulate[i]);
        }
        if (!j.grad[i]) return;
    }
    if (e->n_in > 3 && !p->mask_is_bool && in[3]->requires_grad && !(j.grad_mask = nb_grad_target_zeroed(tp, in[3])))
        return;
    size_t w = nb_dtype_size(j.dt);
    j.units = p->heads;
    j.parts = j.grad_mask ? 1 : (size_t)nb_get_threads() < j.units ? (size_t)nb_get_threads() : j.units;
    j.work_bytes = round_up((2 * BR * BC + p->L + p->L * p->E + p->S * p->E + p->S * p->Ev) * w);
    if (!(j.work = nb_tape_scratch(tp, j.parts * j.work_bytes, e))) return;
    nb_parallel_parts(j.parts, (int)j.parts, backward_parts, &j);
}

/* ---------------------------------------------------------------- as ops */

/* The dropout mask of a plan's heads: (heads, L, S) values 0 or keep. */
static void fill_dropout_mask(nb_dtype dt, void *data, size_t heads, size_t L, size_t S, uint64_t seed,
                              uint64_t limit, double keep) {
    size_t n = heads * L * S;
    if (dt == NB_F32)
        for (size_t i = 0; i < n; i++) ((float *)data)[i] = attention_dropped(seed, i, limit) ? 0 : (float)keep;
    else
        for (size_t i = 0; i < n; i++) ((double *)data)[i] = attention_dropped(seed, i, limit) ? 0 : keep;
}

/* A constant (..., L, S) tensor of the plan's leading axes. */
static nb_tensor *weights_shaped(nb_tape *tp, const attention_plan *p, nb_dtype dt, double value, const char *file,
                                 int line) {
    size_t shape[NB_MAX_DIMS + 2];
    memcpy(shape, p->batch, (size_t)p->nd * sizeof *shape);
    shape[p->nd] = p->L, shape[p->nd + 1] = p->S;
    return nb_full_(tp, dt, p->nd + 2, shape, value, file, line);
}

/* x (..., L, S) with `fill` where a key is hidden, as ops: where(mask, x,
 * fill) for a boolean mask, then where(j <= i, x, fill) when causal. */
static nb_tensor *hide_as_ops(nb_tape *tp, const attention_plan *p, nb_tensor *x, nb_tensor *mask, double fill,
                              const char *file, int line) {
    nb_tensor *hidden = nb_full_(tp, x->dtype, 0, NULL, fill, file, line);
    if (mask && p->mask_is_bool) x = nb_where_(tp, mask, x, hidden, file, line);
    if (p->causal) {
        nb_tensor *seen = nb_full_(tp, x->dtype, 2, (size_t[]){p->L, p->S}, 0, file, line);
        if (nb_tensor_status(seen) != NB_OK) return seen;
        for (size_t i = 0; i < p->L; i++)
            for (size_t jj = 0; jj <= i && jj < p->S; jj++) nb_set(seen, i * p->S + jj, 1);
        x = nb_where_(tp, seen, x, hidden, file, line);
    }
    return x;
}

/* scale q kᵀ, masked, as ops: S + mask for an additive mask, −inf where a
 * key is hidden (hide_as_ops). */
static nb_tensor *scores_as_ops(nb_tape *tp, const attention_plan *p, nb_tensor *q, nb_tensor *k, nb_tensor *mask,
                                const char *file, int line) {
    nb_tensor *s = nb_scale_(tp, nb_matmul_(tp, q, k, false, true, file, line), p->scale, file, line);
    if (mask && !p->mask_is_bool) s = nb_add_(tp, s, mask, file, line);
    return hide_as_ops(tp, p, s, mask, -INFINITY, file, line);
}

/* Backward as ops, the kernels' formulas on whole matrices:
 *     P = softmax(S), Pm = P ⊙ M,  dV = Pmᵀ G,  dP = (G Vᵀ) ⊙ M,
 *     dS = P ⊙ (dP − Σ_j dP ⊙ P),  0 where a key is hidden (as the
 *     where() of the scores passes back nothing there: a row that saw no
 *     key has NaN weights, whose dS would reach every key's dK),
 *     dQ = scale dS K,  dK = scale dSᵀ Q,
 *     d mask = dS summed over the axes it was broadcast along. */
static void attention_graph_ops(nb_entry *e, const attention_plan *p, nb_tensor *q, nb_tensor *k, nb_tensor *v,
                                nb_tensor *mask, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    const char *f = e->file;
    int ln = e->line;
    nb_tensor *P = nb_softmax_(tp, scores_as_ops(tp, p, q, k, mask, f, ln), -1, false, f, ln);
    nb_tensor *M = NULL;
    if (p->dropout) {
        M = weights_shaped(tp, p, q->dtype, 0, f, ln);
        if (nb_tensor_status(M) != NB_OK) return;
        fill_dropout_mask(q->dtype, M->data, p->heads, p->L, p->S, p->seed, p->drop_limit,
                          p->dropout_p < 1 ? 1 / (1 - p->dropout_p) : 0);
    }
    nb_tensor *dP = nb_matmul_(tp, G, v, false, true, f, ln);
    if (M) dP = nb_mul_(tp, dP, M, f, ln);
    nb_tensor *row = nb_sum_axis_(tp, nb_mul_(tp, dP, P, f, ln), -1, true, false, f, ln);
    nb_tensor *dS = hide_as_ops(tp, p, nb_mul_(tp, P, nb_sub_(tp, dP, row, f, ln), f, ln), mask, 0, f, ln);
    if (q->requires_grad) grad_in[0] = nb_scale_(tp, nb_matmul_(tp, dS, k, false, false, f, ln), p->scale, f, ln);
    if (k->requires_grad) grad_in[1] = nb_scale_(tp, nb_matmul_(tp, dS, q, true, false, f, ln), p->scale, f, ln);
    if (v->requires_grad) grad_in[2] = nb_matmul_(tp, M ? nb_mul_(tp, P, M, f, ln) : P, G, true, false, f, ln);
    if (mask && !p->mask_is_bool && mask->requires_grad) grad_in[3] = nb_sum_to_(tp, dS, mask->ndim, mask->shape, f, ln);
}

/* The backward graph, and a message that names this op when its (L, S)
 * matrices do not fit in memory. */
static void attention_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    const attention_plan *p = e->saved;
    nb_tape *tp = e->out->tape;
    const char *f = e->file;
    int ln = e->line;
    nb_tensor *q = nb_entry_input(e, 0), *k = nb_entry_input(e, 1), *v = nb_entry_input(e, 2);
    nb_tensor *mask = e->n_in > 3 ? nb_entry_input(e, 3) : NULL;
    bool was_ok = tp->status == NB_OK;
    attention_graph_ops(e, p, q, k, v, mask, G, grad_in);
    if (was_ok && tp->status == NB_ERR_NOMEM) { /* said by one of the ops: say what needed the memory */
        char sq[128], sk[128];
        nb_set_error(tp, NB_ERR_NOMEM, f, ln,
                     "attention: out of memory for create_graph's backward of q %s and k %s, which is built of ops "
                     "on the (..., %zu, %zu) weights (the fused backward keeps none)",
                     nb_format_shape(q->ndim, q->shape, sq, sizeof sq), nb_format_shape(k->ndim, k->shape, sk, sizeof sk),
                     p->L, p->S);
        snprintf(tp->error, sizeof tp->error, "%s", nb_last_error()); /* the tape's first error: restated */
    }
}

static void attention_describe(const nb_op_call *e, char *buf, size_t size) {
    const attention_plan *p = e->saved;
    char drop[32] = "";
    if (p->dropout) snprintf(drop, sizeof drop, ", dropout %g", p->dropout_p);
    snprintf(buf, size, "scale %.4g%s%s%s", p->scale, p->causal ? ", causal" : "",
             e->n_in > 3 ? (p->mask_is_bool ? ", boolean mask" : ", additive mask") : "", drop);
}

static const nb_op attention_op = {
    .name = "attention", .forward = attention_forward, .backward = attention_backward,
    .derivative = {"s·dS·K, dS = P⊙(G Vᵀ − Σ G⊙O)", "s·dSᵀ·Q", "Pᵀ·G", "dS"},
    .backward_graph = attention_graph, .describe = attention_describe};

/* ---------------------------------------------------------------- checks */

static bool multiply(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Fills the plan's shapes from q, k (and v), or returns the error. */
static nb_tensor *plan_shapes(nb_tape *tp, const char *op, attention_plan *p, nb_tensor *q, nb_tensor *k,
                              nb_tensor *v, const char *file, int line) {
    char sq[128], sk[128], sv[128] = "";
    nb_format_shape(q->ndim, q->shape, sq, sizeof sq);
    nb_format_shape(k->ndim, k->shape, sk, sizeof sk);
    if (v) nb_format_shape(v->ndim, v->shape, sv, sizeof sv);
    if (q->ndim < 2)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: q %s needs at least 2 axes, (..., L, E)", op, sq);
    bool same = k->ndim == q->ndim && (!v || v->ndim == q->ndim);
    for (int d = 0; same && d < q->ndim - 2; d++)
        same = k->shape[d] == q->shape[d] && (!v || v->shape[d] == q->shape[d]);
    if (!same)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: q %s, k %s%s%s must have the same leading axes: (..., L, E), (..., S, E)%s", op, sq, sk,
                       v ? ", v " : "", sv, v ? ", (..., S, Ev)" : "");
    p->nd = q->ndim - 2;
    p->heads = 1;
    for (int d = 0; d < p->nd; d++) {
        p->batch[d] = q->shape[d];
        p->heads *= q->shape[d]; /* no overflow: q holds heads·L·E elements, or one axis is 0 */
    }
    p->L = q->shape[q->ndim - 1 - 1], p->E = q->shape[q->ndim - 1];
    p->S = k->shape[k->ndim - 2];
    p->Ev = v ? v->shape[v->ndim - 1] : 0;
    if (k->shape[k->ndim - 1] != p->E)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: q %s and k %s differ in their last axis (E: %zu and %zu)",
                       op, sq, sk, p->E, k->shape[k->ndim - 1]);
    if (v && v->shape[v->ndim - 2] != p->S)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: k %s and v %s differ in the number of keys (axis -2: %zu and %zu)", op, sk, sv, p->S,
                       v->shape[v->ndim - 2]);
    size_t hl, lsz, wsz;
    if (p->L > INT32_MAX || p->S > INT32_MAX || p->E > INT32_MAX || p->Ev > INT32_MAX ||
        !multiply(p->heads, p->L, &hl) || !multiply(hl, p->S, &wsz) || !multiply(hl, sizeof(double), &lsz))
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: q %s, k %s: sizes beyond what can be indexed", op, sq, sk);
    return NULL;
}

static nb_tensor *plan_dropout(nb_tape *tp, const char *op, attention_plan *p, double dropout_p, nb_rng *rng,
                               const char *file, int line) {
    if (!(dropout_p >= 0 && dropout_p <= 1))
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: dropout_p = %g is not in [0, 1]", op, dropout_p);
    if (!rng) return nb_fail(tp, NB_ERR_NULL, file, line, "%s: dropout_p = %g needs a random generator (rng is NULL)",
                             op, dropout_p);
    p->dropout = true;
    p->dropout_p = dropout_p;
    p->seed = nb_rng_next(rng);
    p->rng = rng;
    p->drop_limit = (uint64_t)ceil(dropout_p * 0x1.0p53);
    return NULL;
}

nb_tensor *nb_scaled_dot_product_attention_(nb_tape *tp, nb_tensor *q, nb_tensor *k, nb_tensor *v,
                                            const nb_attention_opts *opts, const char *file, int line) {
    static const nb_attention_opts defaults = {0};
    const nb_attention_opts *o = opts ? opts : &defaults;
    nb_tensor *in[4] = {q, k, v, o->mask};
    int n = o->mask ? 4 : 3;
    nb_tensor *failed = nb_check(tp, &attention_op, file, line, n, in);
    if (failed) return failed;
    attention_plan p = {.causal = o->causal, .mask_is_bool = o->mask && o->mask_is_bool};
    if ((failed = plan_shapes(tp, "attention", &p, q, k, v, file, line))) return failed;
    if (o->mask) { /* broadcast to (..., L, S), aligned from the right */
        nb_tensor *m = o->mask;
        size_t target[NB_MAX_DIMS + 2], run = 1;
        int nt = p.nd + 2;
        memcpy(target, p.batch, (size_t)p.nd * sizeof *target);
        target[p.nd] = p.L, target[p.nd + 1] = p.S;
        bool fits = m->ndim <= nt;
        for (int d = nt - 1; fits && d >= 0; d--) {
            int dm = d - (nt - m->ndim);
            size_t size = dm >= 0 ? m->shape[dm] : 1;
            fits = size == target[d] || size == 1;
            p.mask_step[d] = size == 1 ? 0 : run;
            run *= size;
        }
        if (!fits) {
            char sm[128], st[128];
            nb_format_shape(m->ndim, m->shape, sm, sizeof sm);
            nb_format_shape(nt, target, st, sizeof st);
            return nb_fail(tp, NB_ERR_SHAPE, file, line, "attention: the mask %s does not broadcast to the weights %s",
                           sm, st);
        }
    }
    if (!isfinite(o->scale))
        return nb_fail(tp, NB_ERR_ARG, file, line, "attention: scale %g is not finite (0 gives 1/sqrt(E))", o->scale);
    p.scale = o->scale != 0 ? o->scale : 1 / sqrt((double)p.E);
    /* dropout: its p is checked in evaluation too (as nb_dropout's); the
     * generator is needed, and drawn from, only while training */
    if (o->dropout_p != 0 && (nb_tape_training(tp) || !(o->dropout_p >= 0 && o->dropout_p <= 1)) &&
        (failed = plan_dropout(tp, "attention", &p, o->dropout_p, o->rng, file, line)))
        return failed;
    attention_plan *kept = nb_tape_alloc(tp, sizeof *kept);
    size_t lse_bytes = p.heads * p.L * nb_dtype_size(q->dtype);
    size_t back = 2 * BR * BC, part;
    if (!kept || !(kept->lse = nb_tape_alloc(tp, lse_bytes)))
        return nb_fail(tp, NB_ERR_NOMEM, file, line, "attention: out of memory");
    /* backward's scratch per head: 2·BR·BC + L + L·E + S·E + S·Ev values */
    size_t le, se, sev;
    if (!multiply(p.L, p.E, &le) || !multiply(p.S, p.E, &se) || !multiply(p.S, p.Ev, &sev) ||
        __builtin_add_overflow(back, p.L, &back) || __builtin_add_overflow(back, le, &back) ||
        __builtin_add_overflow(back, se, &back) || __builtin_add_overflow(back, sev, &back) ||
        !multiply(back, sizeof(double) * 64, &part)) /* 64 parts at most */
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "attention: a head's working memory is beyond what can be indexed");
    void *lse = kept->lse;
    *kept = p;
    kept->lse = lse;
    size_t shape[NB_MAX_DIMS + 2];
    memcpy(shape, p.batch, (size_t)p.nd * sizeof *shape);
    shape[p.nd] = p.L, shape[p.nd + 1] = p.Ev;
    nb_entry *e = nb_emit(tp, &attention_op, n, in, q->dtype, p.nd + 2, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    return nb_run(e);
}

nb_tensor *nb_attention_dropout_mask_(nb_tape *tp, nb_tensor *q, nb_tensor *k, double p, nb_rng *rng,
                                      const char *file, int line) {
    nb_tensor *in[2] = {q, k};
    nb_tensor *failed = nb_check_inputs(tp, "attention_dropout_mask", file, line, 2, in);
    if (failed) return failed;
    attention_plan plan = {0};
    if ((failed = plan_shapes(tp, "attention_dropout_mask", &plan, q, k, NULL, file, line))) return failed;
    /* p = 0: ones, and no draw (nor generator), as the attention makes none */
    if (p != 0 && (failed = plan_dropout(tp, "attention_dropout_mask", &plan, p, rng, file, line))) return failed;
    nb_tensor *m = weights_shaped(tp, &plan, q->dtype, 0, file, line);
    if (nb_tensor_status(m) == NB_ERR_NOMEM) { /* said by nb_full: say it of this op */
        char sq[128], sk[128], sm[128];
        size_t shape[NB_MAX_DIMS + 2];
        memcpy(shape, plan.batch, (size_t)plan.nd * sizeof *shape);
        shape[plan.nd] = plan.L, shape[plan.nd + 1] = plan.S;
        return nb_fail(tp, NB_ERR_NOMEM, file, line, "attention_dropout_mask: out of memory for the %s mask of q %s and k %s",
                       nb_format_shape(plan.nd + 2, shape, sm, sizeof sm), nb_format_shape(q->ndim, q->shape, sq, sizeof sq),
                       nb_format_shape(k->ndim, k->shape, sk, sizeof sk));
    }
    if (nb_tensor_status(m) != NB_OK) return m;
    fill_dropout_mask(q->dtype, m->data, plan.heads, plan.L, plan.S, plan.seed, plan.drop_limit, p < 1 ? 1 / (1 - p) : 0);
    return m;
}

/* A replay draws the seed a new recording would (attention with dropout). */
bool nb_attention_redraw(nb_entry *e, bool draw) {
    if (e->op != &attention_op) return false;
    attention_plan *p = e->saved;
    if (!p->dropout) return false;
    if (draw) p->seed = nb_rng_next(p->rng);
    return true;
}
