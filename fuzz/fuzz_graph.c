/* Fuzzes graphs: the input bytes are decoded into a program of public API
 * calls (ops with small, edge and extreme parameters, tape resets with
 * tensors kept across them, writes between an op and its backward, then a
 * backward, an nb_grad with create_graph or an nb_hvp), and the harness
 * checks the library's promises:
 *   - every call gives NB_OK or an errored tensor/status with a message;
 *   - no tensor from before a reset is accepted (stale tensors);
 *   - on float64 programs of smooth ops, every NB_OK gradient agrees with
 *     central differences of the same program;
 *   - no sanitizer report (make fuzz builds with ASan and UBSan).
 * The harness aborts on a broken promise; the library never may. */
#include "nabla.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POOL 12
#define MAX_OPS 24
#define MAX_LEAVES 3

typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned byte(reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

/* Small, edge and extreme values for sizes, steps and indices. */
static long pick_long(reader *r) {
    static const long table[] = {0, 1, -1, 2, 3, -2, 4, 5, LONG_MAX, LONG_MIN, (long)(SIZE_MAX / 2),
                                 1L << 62, (1L << 62) + 2, 1L << 31, -(1L << 31), LONG_MAX - 1};
    unsigned b = byte(r);
    return b < 0xc0 ? (long)(b % 8) - 2 : table[b % (sizeof table / sizeof *table)];
}

static int pick_int(reader *r) {
    static const int table[] = {0, 1, -1, 2, 3, INT_MAX, INT_MIN, 1 << 30, -2, 4};
    unsigned b = byte(r);
    return b < 0xc0 ? (int)(b % 5) - 1 : table[b % (sizeof table / sizeof *table)];
}

/* What the fuzzer aborts with names the broken promise. */
static void broken(const char *promise) {
    fprintf(stderr, "fuzz_graph: broken promise: %s (last error: %s)\n", promise, nb_last_error());
    abort();
}

typedef struct {
    nb_tensor *t;
    bool on_tape; /* made by an op (the leaves are heap tensors) */
    bool stale;   /* made on the tape before a reset */
} slot;

typedef struct {
    nb_tape *tp;
    slot pool[MAX_POOL];
    int n;
    bool smooth;  /* every op smooth everywhere: finite differences apply */
    bool wrote;   /* a value was written after ops were recorded */
    bool refused; /* some op was refused */
} program;

/* An op's result: an errored result needs a message; one with a stale
 * input must be errored. */
static void keep(program *pg, nb_tensor *t, bool any_stale) {
    if (!t) broken("an op returned NULL instead of an errored tensor");
    if (nb_tensor_status(t) != NB_OK) {
        const char *msg = nb_last_error();
        if (!msg || !*msg) broken("an errored tensor without a message");
        pg->refused = true;
    } else if (any_stale) {
        broken("a stale tensor was accepted");
    }
    if (pg->n < MAX_POOL) pg->pool[pg->n++] = (slot){t, true, false};
    else pg->pool[MAX_POOL - 1] = (slot){t, true, false}; /* the leaves stay at the front */
}

static slot *operand(program *pg, reader *r) { return &pg->pool[byte(r) % pg->n]; }

/* One op decoded from the bytes, applied to the pool. */
static void step(program *pg, reader *r) {
    unsigned kind = byte(r) % 26;
    slot *a = operand(pg, r), *b = operand(pg, r);
    nb_tape *tp = pg->tp;
    bool st = a->stale;
    nb_tensor *x = a->t, *out = NULL;
    switch (kind) {
    case 0: out = nb_add(tp, x, b->t); st |= b->stale; break;
    case 1: out = nb_mul(tp, x, b->t); st |= b->stale; break;
    case 2: out = nb_sub(tp, x, b->t); st |= b->stale; break;
    case 3: out = nb_matmul(tp, x, b->t); st |= b->stale; break;
    case 4: out = nb_tanh(tp, x); break;
    case 5: out = nb_exp(tp, nb_scale(tp, x, 0.25)); break;
    case 6: out = nb_sin(tp, x); break;
    case 7: out = nb_square(tp, x); break;
    case 8: out = nb_sum_axis(tp, x, pick_int(r), byte(r) & 1); break;
    case 9: out = nb_softmax(tp, x, pick_int(r)); break;
    case 10: out = nb_transpose(tp, x, pick_int(r), pick_int(r)); break;
    case 11: {
        long shape[3] = {pick_long(r), pick_long(r), pick_long(r)};
        out = nb_reshape(tp, x, 1 + (int)(byte(r) % 3), shape);
        break;
    }
    case 12: out = nb_slice(tp, x, pick_int(r), pick_long(r), pick_long(r), pick_long(r)); break;
    case 13: out = nb_mean(tp, x); break;
    case 14: out = nb_sigmoid(tp, x); break;
    /* Ops with kinks or limited domains: no finite differences. */
    case 15: out = nb_relu(tp, x); pg->smooth = false; break;
    case 16: out = nb_maximum(tp, x, b->t); st |= b->stale; pg->smooth = false; break;
    case 17: out = nb_clamp(tp, x, -(double)(byte(r) % 3), (double)(byte(r) % 3)); pg->smooth = false; break;
    case 18: out = nb_abs(tp, x); pg->smooth = false; break;
    case 19: case 20: {
        nb_pool_opts o = {.kernel = {pick_int(r), pick_int(r)}, .stride = {pick_int(r), pick_int(r)},
                          .padding = {pick_int(r), pick_int(r)}, .dilation = {pick_int(r), pick_int(r)},
                          .ceil_mode = byte(r) & 1, .exclude_pad = byte(r) & 1};
        if (kind == 19) o.dilation[0] = o.dilation[1] = 0;
        long rows = nb_tensor_ndim(x) >= 2 ? (long)nb_tensor_dim(x, -2) : 1;
        nb_tensor *x4 = nb_tensor_ndim(x) == 4 ? x : nb_reshape(tp, x, 4, ((long[]){1, 1, rows, -1}));
        out = kind == 19 ? nb_avg_pool2d(tp, x4, &o) : nb_max_pool2d(tp, x4, &o);
        pg->smooth &= kind == 19;
        break;
    }
    case 21: out = nb_log_softmax(tp, x, pick_int(r)); break;
    case 22: out = nb_max_axis(tp, x, pick_int(r), byte(r) & 1); pg->smooth = false; break;
    case 23: { /* a tape reset: every tape tensor in the pool goes stale */
        nb_tape_reset(tp);
        for (int i = 0; i < pg->n; i++)
            if (pg->pool[i].on_tape) pg->pool[i].stale = true;
        return;
    }
    case 24: /* a write between an op and its backward */
        if (!a->stale && nb_tensor_status(x) == NB_OK) {
            nb_set(x, 0, (double)(byte(r) % 7) - 3);
            pg->wrote = true;
        }
        return;
    default: out = nb_concat(tp, ((nb_tensor *[]){x, b->t}), 2, pick_int(r)); st |= b->stale; break;
    }
    keep(pg, out, st);
}

/* Decodes the leaves (heap tensors that require a gradient). */
static int make_leaves(reader *r, nb_dtype dt, nb_tensor **leaf, const double *bump, size_t bump_at,
                       int bump_leaf) {
    int n = 1 + (int)(byte(r) % MAX_LEAVES);
    for (int i = 0; i < n; i++) {
        size_t shape[3];
        int nd = 1 + (int)(byte(r) % 3);
        for (int d = 0; d < nd; d++) shape[d] = 1 + byte(r) % 4;
        leaf[i] = nb_zeros(NULL, dt, nd, shape);
        for (size_t j = 0; j < nb_tensor_size(leaf[i]); j++) {
            double v = ((double)(byte(r) % 17) - 8) / 8;
            if (bump && i == bump_leaf && j == bump_at) v += *bump;
            nb_set(leaf[i], j, v);
        }
        nb_requires_grad(leaf[i], true);
    }
    return n;
}

/* Runs the whole program; returns the loss (NAN if there is none) and
 * leaves the program's state in pg. */
static double run(const uint8_t *data, size_t size, program *pg, nb_tensor **leaf, int *nleaf,
                  nb_tensor **loss, const double *bump, size_t bump_at, int bump_leaf) {
    reader r = {data, size};
    nb_dtype dt = byte(&r) & 1 ? NB_F64 : NB_F32;
    *nleaf = make_leaves(&r, dt, leaf, bump, bump_at, bump_leaf);
    memset(pg->pool, 0, sizeof pg->pool);
    pg->n = *nleaf;
    pg->smooth = dt == NB_F64;
    pg->wrote = pg->refused = false;
    for (int i = 0; i < *nleaf; i++) pg->pool[i].t = leaf[i];
    int ops = (int)(byte(&r) % MAX_OPS);
    for (int i = 0; i < ops; i++) step(pg, &r);
    slot *last = &pg->pool[pg->n - 1];
    *loss = nb_sum(pg->tp, last->t);
    if (last->stale && nb_tensor_status(*loss) == NB_OK) broken("nb_sum accepted a stale tensor");
    return nb_tensor_status(*loss) == NB_OK ? nb_item(*loss) : NAN;
}

static void free_leaves(nb_tensor **leaf, int n) {
    for (int i = 0; i < n; i++) nb_tensor_free(leaf[i]);
}

/* Central differences of the loss with respect to leaf li's element j. */
static double numeric(const uint8_t *data, size_t size, int li, size_t j, double h) {
    double f[2];
    for (int s = 0; s < 2; s++) {
        program pg = {.tp = nb_tape_new()};
        nb_tensor *leaf[MAX_LEAVES], *loss;
        int n;
        double d = s ? -h : h;
        f[s] = run(data, size, &pg, leaf, &n, &loss, &d, j, li);
        free_leaves(leaf, n);
        nb_tape_free(pg.tp);
    }
    return (f[0] - f[1]) / (2 * h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    program pg = {.tp = nb_tape_new()};
    if (!pg.tp) return 0;
    nb_tensor *leaf[MAX_LEAVES], *loss;
    int n;
    double value = run(data, size, &pg, leaf, &n, &loss, NULL, 0, 0);
    unsigned mode = size ? data[size - 1] % 3 : 0;
    nb_status s = NB_OK;
    if (mode == 0) {
        s = nb_backward(loss);
    } else if (mode == 1) { /* gradients with create_graph, then a backward through them */
        nb_tensor *g[MAX_LEAVES];
        s = nb_grad(loss, leaf, n, g, true);
        for (int i = 0; i < n; i++)
            if (!g[i] || (s != NB_OK) != (nb_tensor_status(g[i]) != NB_OK))
                broken("nb_grad's status and its results disagree");
        if (s == NB_OK) {
            nb_tensor *gg = nb_sum(pg.tp, nb_square(pg.tp, g[0]));
            nb_status s2 = nb_backward(gg);
            if (s2 != NB_OK && !*nb_last_error()) broken("a refused backward without a message");
        }
    } else {
        nb_tensor *hv[MAX_LEAVES];
        s = nb_hvp(loss, leaf, n, leaf, hv);
        for (int i = 0; i < n; i++)
            if (!hv[i] || (s != NB_OK) != (nb_tensor_status(hv[i]) != NB_OK))
                broken("nb_hvp's status and its results disagree");
    }
    if (s != NB_OK && !*nb_last_error()) broken("a refused gradient without a message");
    if (mode == 0 && s == NB_OK && nb_tensor_status(loss) != NB_OK) broken("backward of an errored loss gave NB_OK");
    /* Gradients against central differences: float64, smooth ops only,
     * nothing written, a moderate finite loss. */
    if (mode == 0 && s == NB_OK && pg.smooth && !pg.wrote && isfinite(value) && fabs(value) < 1e6) {
        for (int i = 0; i < n; i++) {
            size_t m = nb_tensor_size(leaf[i]);
            for (size_t j = 0; j < m && j < 8; j++) {
                double g = nb_grad_get(leaf[i], j), h = 1e-6, num = numeric(data, size, i, j, h);
                if (!isfinite(num) || fabs(num) > 1e6) continue;
                if (fabs(g - num) > 1e-4 * (1 + fabs(num))) {
                    fprintf(stderr, "leaf %d element %zu: backward %.12g, central differences %.12g\n", i, j,
                            g, num);
                    broken("an NB_OK float64 gradient disagrees with central differences");
                }
            }
        }
    }
    free_leaves(leaf, n);
    nb_tape_free(pg.tp);
    return 0;
}
