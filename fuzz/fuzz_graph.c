/* Fuzzes graphs: the input bytes are decoded into a program of public API
 * calls (most of the ops, with small, edge and extreme parameters; custom
 * ops whose callbacks re-enter the library, fuzz_custom_ops.h; tape resets
 * with tensors kept across them; two tapes whose tensors the fuzzer mixes;
 * writes between an op and its backward), then a backward, an nb_grad with
 * create_graph, an nb_hvp or an nb_jvp, and the harness checks the
 * library's promises:
 *   - every call gives NB_OK or an errored tensor/status with a message;
 *   - no tensor from before a reset, or from the other tape, is accepted;
 *   - on float64 programs of smooth ops, NB_OK gradients and Hessian-vector
 *     products agree with central differences of the same program, and
 *     nb_jvp's J t with the gradients' dot product with t, and (on any
 *     float64 program, kinks too) nb_grad's create_graph gradients with its
 *     numeric ones;
 *   - no sanitizer report (make fuzz builds with ASan and UBSan).
 * The harness aborts on a broken promise; the library never may. */
#include "nabla.h"
#include "fuzz_custom_ops.h"

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
    int tape;     /* index of the tape that made it; -1 for a heap leaf */
    bool stale;   /* made on the tape before a reset */
} slot;

typedef struct {
    nb_tape *tapes[2]; /* ops go to tp, one of these: a tensor of the other is refused */
    nb_tape *tp;
    int cur;
    slot pool[MAX_POOL];
    int n;
    nb_tensor *heap[MAX_OPS]; /* heap tensors the ops take (indices, running statistics) */
    int nheap;
    nb_rng rng;   /* dropout's, seeded alike in every run of a program */
    bool smooth;  /* every op smooth everywhere: finite differences apply */
    bool wrote;   /* a value was written after ops were recorded */
    bool mixed;   /* a float64 program cast part of itself to float32 */
    bool refused; /* some op was refused */
} program;

/* Whether an op's inputs break a rule the op must refuse: from before a
 * reset, or from the other tape. */
static bool bad_input(const program *pg, const slot *s) { return s->stale || (s->tape >= 0 && s->tape != pg->cur); }

/* An op's result: an errored result needs a message; one with a stale or
 * foreign input must be errored. */
static void keep(program *pg, nb_tensor *t, bool any_bad) {
    if (!t) broken("an op returned NULL instead of an errored tensor");
    if (nb_tensor_status(t) != NB_OK) {
        const char *msg = nb_last_error();
        if (!msg || !*msg) broken("an errored tensor without a message");
        pg->refused = true;
    } else if (any_bad) {
        broken("a stale tensor or another tape's was accepted");
    } else {
        /* An infinite value on the way (x / 0 whose inverse multiplies the
         * loss by 0 again) makes a gradient inf · 0 = NaN where the loss
         * is smooth, in IEEE arithmetic, as in torch: no finite differences. */
        for (size_t j = 0; j < nb_tensor_size(t) && pg->smooth; j++) pg->smooth = isfinite(nb_get(t, j));
    }
    slot made = {t, pg->cur, false};
    for (int i = 0; i < pg->n; i++) /* an op may return its input (sum_to to the same shape) */
        if (pg->pool[i].t == t) made = pg->pool[i];
    if (pg->n < MAX_POOL) pg->pool[pg->n++] = made;
    else pg->pool[MAX_POOL - 1] = made; /* the leaves stay at the front */
}

static slot *operand(program *pg, reader *r) { return &pg->pool[byte(r) % pg->n]; }

/* A heap tensor of small whole numbers (an index), kept until the end. */
static nb_tensor *heap_index(program *pg, reader *r, nb_tensor *like) {
    nb_tensor *ix = nb_zeros(NULL, nb_tensor_dtype(like), nb_tensor_ndim(like), nb_tensor_shape(like));
    if (nb_tensor_status(ix) == NB_OK)
        for (size_t j = 0; j < nb_tensor_size(ix); j++) nb_set(ix, j, (double)(byte(r) % 5) - (byte(r) == 0xff));
    if (pg->nheap < MAX_OPS) pg->heap[pg->nheap++] = ix;
    else nb_tensor_free(ix), ix = NULL;
    return ix;
}

/* x as a 4-D (1, 1, rows, cols) tensor, or itself if it is 4-D (ndim 3
 * for conv1d). */
static nb_tensor *as_image(nb_tape *tp, nb_tensor *x, int nd) {
    if (nb_tensor_ndim(x) == nd) return x;
    long rows = nb_tensor_ndim(x) >= 2 ? (long)nb_tensor_dim(x, -2) : 1;
    return nd == 4 ? nb_reshape(tp, x, 4, ((long[]){1, 1, rows, -1})) : nb_reshape(tp, x, 3, ((long[]){1, 1, -1}));
}

/* The element-wise ops beyond the first few; smooth ones keep pg->smooth. */
static nb_tensor *unary(program *pg, reader *r, nb_tensor *x) {
    nb_tape *tp = pg->tp;
    static const double powers[] = {2, 3, 0.5, -1, 0, 1.5};
    switch (byte(r) % 15) {
    case 0: return nb_log(tp, nb_add_scalar(tp, nb_square(tp, x), 1));
    case 1: return nb_sqrt(tp, nb_add_scalar(tp, nb_square(tp, x), 1));
    case 2: return nb_erf(tp, x);
    case 3: return nb_log1p(tp, nb_square(tp, x));
    case 4: return nb_expm1(tp, nb_scale(tp, x, 0.25));
    case 5: return nb_softplus(tp, x);
    case 6: return nb_gelu(tp, x);
    case 7: return nb_gelu_tanh(tp, x);
    case 8: return nb_cos(tp, x);
    case 9: return nb_neg(tp, x);
    case 10: return nb_add_scalar(tp, x, (double)pick_int(r));
    case 11: pg->smooth = false; return nb_leaky_relu(tp, x, 0.1);
    case 12: pg->smooth = false; return nb_pow(tp, x, powers[byte(r) % 6]);
    case 13: pg->smooth = false; return nb_sqrt(tp, x);
    default: pg->smooth = false; return nb_log(tp, x);
    }
}

/* Reductions and views beyond the first few. */
static nb_tensor *reduce_or_view(program *pg, reader *r, nb_tensor *x, nb_tensor *y, bool y_bad, bool *bad) {
    nb_tape *tp = pg->tp;
    switch (byte(r) % 15) {
    case 0: return nb_logsumexp(tp, x, pick_int(r), byte(r) & 1);
    case 1: return nb_var_axis(tp, x, pick_int(r), byte(r) & 1, pick_int(r));
    case 2: pg->smooth = false; return nb_min_axis(tp, x, pick_int(r), byte(r) & 1);
    case 3: return nb_mean_axis(tp, x, pick_int(r), byte(r) & 1);
    case 4: {
        pg->smooth = false;
        int axis = pick_int(r);
        unsigned f = byte(r); /* bit 0 keepdims, bit 1 the arg-min */
        return f & 2 ? nb_argmin(tp, x, axis, f & 1) : nb_argmax(tp, x, axis, f & 1);
    }
    case 5: return nb_sum_to(tp, x, nb_tensor_ndim(y), nb_tensor_shape(y));
    case 6: return nb_squeeze(tp, x, pick_int(r));
    case 7: return nb_unsqueeze(tp, x, pick_int(r));
    case 8: pg->smooth = false; return nb_detach(tp, x); /* its values move, its gradient is 0 */
    case 9: pg->smooth = false, pg->mixed = true; /* float32 inside: the two ways round differently */
        return nb_cast(tp, x, nb_tensor_dtype(x) == NB_F64 ? NB_F32 : NB_F64);
    case 10: *bad |= y_bad; return nb_matmul_t(tp, x, y, byte(r) & 1, byte(r) & 1);
    case 11: { /* heads: split, the parts of a fused qkv (one, or q ⊙ k + v), merge */
        int heads = pick_int(r);
        unsigned f = byte(r);
        if (f % 4 == 0) return nb_merge_heads(tp, x);
        if (f % 4 == 1) return nb_merge_heads(tp, nb_split_heads(tp, x, heads));
        nb_tensor *q[3];
        nb_split_qkv(tp, x, heads, q);
        return f % 4 == 2 ? q[f / 4 % 3] : nb_add(tp, nb_mul(tp, q[0], q[1]), q[2]);
    }
    case 12: { /* any heads, parts and part, extreme ones too */
        int heads = pick_int(r), parts = pick_int(r), part = pick_int(r);
        return nb_split_heads_(tp, x, heads, parts, part, __FILE__, __LINE__);
    }
    case 13: { /* x attends to y (keys and values) or to itself; y may be the mask instead */
        static const double ps[] = {0, 0, 0.3, 1, -1, NAN}, scales[] = {0, 0, 0.5, -2, INFINITY};
        unsigned f = byte(r);
        nb_tensor *kv = f & 1 ? y : x;
        nb_attention_opts o = {.causal = f & 2, .mask = f & 4 ? y : NULL, .mask_is_bool = f & 8,
                               .dropout_p = ps[byte(r) % 6], .scale = scales[byte(r) % 5], .rng = &pg->rng};
        *bad |= ((f & 1) || o.mask) && y_bad;
        pg->smooth &= !(o.mask && o.mask_is_bool); /* the mask is y's sign pattern */
        if (f & 16) /* the dropout mask alone, applied to the values */
            return nb_matmul(tp, nb_attention_dropout_mask(tp, x, kv, o.dropout_p, o.rng), kv);
        return nb_scaled_dot_product_attention(tp, x, kv, kv, &o);
    }
    default: {
        *bad |= y_bad;
        unsigned f = byte(r); /* bit 0: no bias; bit 1: PyTorch's layout, y's row sums the bias */
        nb_tensor *bias = f & 1 ? NULL : f & 2 ? nb_sum_axis(tp, y, -1, false) : x;
        bool ta = byte(r) & 1, tb = byte(r) & 1;
        if (f & 2) return nb_linear_torch(tp, x, y, bias); /* x (..., k) of any rank, y (n, k) */
        return ta || tb ? nb_linear_t(tp, x, y, bias, ta, tb) : nb_linear(tp, x, y, bias);
    }
    }
}

/* The losses, between x and a target made from y. */
static nb_tensor *loss_op(program *pg, reader *r, nb_tensor *x, nb_tensor *y, bool y_bad, bool *bad) {
    nb_tape *tp = pg->tp;
    unsigned which = byte(r) % 7;
    *bad |= y_bad && which < 6;
    switch (which) {
    case 0: return nb_mse(tp, x, y);
    case 1: pg->smooth = false; return nb_huber(tp, x, y, (double)pick_int(r));
    case 2: pg->smooth = false; return nb_smooth_l1(tp, x, y, (double)pick_int(r));
    case 3: return nb_bce_logits(tp, x, nb_sigmoid(tp, y));
    case 4: return nb_bce(tp, nb_sigmoid(tp, x), nb_sigmoid(tp, y));
    case 5: return nb_softmax_cross_entropy(tp, x, nb_softmax(tp, y, pick_int(r)), pick_int(r));
    default: pg->smooth = false; /* class indices: whole numbers, or refused */
        return nb_softmax_cross_entropy(tp, x, heap_index(pg, r, y), pick_int(r));
    }
}

/* The op interface's cases: a view with up to 6 inputs and a picked shape,
 * and a cube whose callbacks re-enter the library. */
static nb_tensor *custom_op(program *pg, reader *r, slot *a, bool *bad) {
    nb_tensor *in[6];
    if (byte(r) & 1) {
        int n = 1 + (int)(byte(r) % 6);
        for (int i = 0; i < n; i++) {
            slot *s = i ? operand(pg, r) : a;
            *bad |= bad_input(pg, s);
            in[i] = s->t;
        }
        int nd = 1 + (int)(byte(r) % 3);
        size_t shape[3] = {nb_tensor_size(a->t), 1, 1};
        if (byte(r) & 1)
            for (int d = 0; d < nd; d++) shape[d] = (size_t)pick_long(r);
        return nb_op(pg->tp, &fz_view, in, n, nb_tensor_dtype(a->t), nd, shape, NULL, 0);
    }
    fz_cube_params p = {.forward_ops = byte(r) & 1 ? 300 : (int)(byte(r) % 4), .inner_grad = byte(r) & 1};
    return nb_op(pg->tp, &fz_cube, &a->t, 1, nb_tensor_dtype(a->t), nb_tensor_ndim(a->t), nb_tensor_shape(a->t),
                 &p, sizeof p);
}

/* NB_FUZZ_TRACE=1 prints each op of a replayed program (kind as in
 * step's switch, operands' pool slots and shapes, the result): to read what
 * a failing input does, `NB_FUZZ_TRACE=1 build/fuzz/fuzz_graph FILE`. */
static void print_shape(const nb_tensor *t) {
    if (!t) {
        fprintf(stderr, "NULL");
        return;
    }
    fprintf(stderr, "(");
    for (int d = 0; d < nb_tensor_ndim(t); d++) fprintf(stderr, "%s%zu", d ? "," : "", nb_tensor_dim(t, d));
    fprintf(stderr, ")%s", nb_tensor_dtype(t) == NB_F64 ? "f64" : "f32");
}

static void trace_step(const program *pg, unsigned kind, const slot *a, const slot *b, const slot *c,
                       const nb_tensor *out) {
    static int tracing = -1;
    if (tracing < 0) tracing = getenv("NB_FUZZ_TRACE") != NULL;
    if (!tracing) return;
    fprintf(stderr, "op kind %u on slots %d %d %d: ", kind, (int)(a - pg->pool), (int)(b - pg->pool),
            (int)(c - pg->pool));
    print_shape(a->t);
    fprintf(stderr, " ");
    print_shape(b->t);
    fprintf(stderr, " -> ");
    print_shape(out);
    if (out && nb_tensor_status(out) != NB_OK) fprintf(stderr, " refused: %s", nb_last_error());
    else if (out && nb_tensor_size(out) > 0) fprintf(stderr, " [0] = %.6g", nb_get(out, 0));
    fprintf(stderr, "\n");
}

/* One op decoded from the bytes, applied to the pool. */
static void step(program *pg, reader *r) {
    unsigned kind = byte(r) % 48;
    slot *a = operand(pg, r), *b = operand(pg, r), *c = operand(pg, r);
    nb_tape *tp = pg->tp;
    bool bad = bad_input(pg, a), bad2 = bad || bad_input(pg, b), bad3 = bad2 || bad_input(pg, c);
    nb_tensor *x = a->t, *out = NULL;
    switch (kind) {
    case 0: out = nb_add(tp, x, b->t); bad = bad2; break;
    case 1: out = nb_mul(tp, x, b->t); bad = bad2; break;
    case 2: out = nb_sub(tp, x, b->t); bad = bad2; break;
    case 3: out = nb_matmul(tp, x, b->t); bad = bad2; break;
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
    case 16: out = nb_maximum(tp, x, b->t); bad = bad2; pg->smooth = false; break;
    case 17: out = nb_clamp(tp, x, -(double)(byte(r) % 3), (double)(byte(r) % 3)); pg->smooth = false; break;
    case 18: out = nb_abs(tp, x); pg->smooth = false; break;
    case 19: case 20: {
        nb_pool_opts o = {.kernel = {pick_int(r), pick_int(r)}, .stride = {pick_int(r), pick_int(r)},
                          .padding = {pick_int(r), pick_int(r)}, .dilation = {pick_int(r), pick_int(r)},
                          .ceil_mode = byte(r) & 1};
        unsigned last = byte(r);
        o.exclude_pad = last & 1;
        if (last >= 0xd0) { /* an upsampling instead, its sizes or scales from the same numbers */
            nb_upsample_opts u = {.align_corners = o.dilation[0] & 1};
            for (int k = 0; k < 2; k++)
                if (o.ceil_mode) u.scale[k] = o.stride[k] * 0.75;
                else u.size[k] = (size_t)(long)o.kernel[k];
            out = kind == 20                        ? nb_upsample_bilinear2d(tp, as_image(tp, x, 4), &u)
                  : o.padding[0] & 1 ? nb_upsample_nearest1d(tp, as_image(tp, x, 3), &u)
                                                    : nb_upsample_nearest2d(tp, as_image(tp, x, 4), &u);
            break;
        }
        if (kind == 19) o.dilation[0] = o.dilation[1] = 0;
        nb_tensor *x4 = as_image(tp, x, 4);
        out = kind == 19 ? nb_avg_pool2d(tp, x4, &o) : nb_max_pool2d(tp, x4, &o);
        pg->smooth &= kind == 19;
        break;
    }
    case 21: out = nb_log_softmax(tp, x, pick_int(r)); break;
    case 22: out = nb_max_axis(tp, x, pick_int(r), byte(r) & 1); pg->smooth = false; break;
    case 23: { /* a tape reset: every tensor of the current tape in the pool goes stale */
        nb_tape_reset(tp);
        for (int i = 0; i < pg->n; i++)
            if (pg->pool[i].tape == pg->cur) pg->pool[i].stale = true;
        return;
    }
    case 24: /* a write between an op and its backward */
        if (!a->stale && nb_tensor_status(x) == NB_OK) {
            nb_set(x, 0, (double)(byte(r) % 7) - 3);
            pg->wrote = true;
        }
        return;
    case 25: out = nb_concat(tp, ((nb_tensor *[]){x, b->t}), 2, pick_int(r)); bad = bad2; break;
    case 26: out = nb_div(tp, x, b->t); bad = bad2; break;
    case 27: out = nb_minimum(tp, x, b->t); bad = bad2; pg->smooth = false; break;
    case 28: out = nb_where(tp, c->t, x, b->t); bad = bad3; pg->smooth = false; break;
    case 29: {
        static const double eps[] = {1e-5, 1e-5, 1e-5, 0, -1, NAN};
        bool with_gamma = byte(r) & 1, with_beta = byte(r) & 1;
        out = nb_layer_norm(tp, x, with_gamma ? b->t : NULL, with_beta ? c->t : NULL, eps[byte(r) % 6]);
        bad |= (with_gamma && bad_input(pg, b)) || (with_beta && bad_input(pg, c));
        break;
    }
    case 30: {
        nb_tensor *run_mean = NULL, *run_var = NULL;
        if (byte(r) & 1 && pg->nheap + 2 <= MAX_OPS) {
            size_t ch = nb_tensor_ndim(x) >= 2 ? nb_tensor_dim(x, 1) : 1;
            pg->heap[pg->nheap++] = run_mean = nb_zeros(NULL, nb_tensor_dtype(x), NB_SHAPE(ch));
            pg->heap[pg->nheap++] = run_var = nb_ones(NULL, nb_tensor_dtype(x), NB_SHAPE(ch));
        }
        nb_tensor *xin = byte(r) & 1 ? as_image(tp, x, 4) : x;
        bool with_gamma = byte(r) & 1, with_beta = byte(r) & 1;
        out = nb_batch_norm(tp, xin, with_gamma ? b->t : NULL, with_beta ? c->t : NULL, run_mean, run_var, 0.1,
                            1e-5);
        bad |= (with_gamma && bad_input(pg, b)) || (with_beta && bad_input(pg, c));
        break;
    }
    case 31: case 32: {
        nb_conv_opts o = {.stride = {pick_int(r), pick_int(r)}, .padding = {pick_int(r), pick_int(r)},
                          .dilation = {pick_int(r), pick_int(r)}, .groups = pick_int(r)};
        unsigned mode = byte(r);
        o.relu = mode == 7;
        nb_tensor *bias = byte(r) & 1 ? c->t : NULL;
        if (mode >= 0xc0) { /* a transposed convolution, its output padding from the same numbers */
            nb_conv_transpose_opts t = {.stride = {o.stride[0], o.stride[1]}, .padding = {o.padding[0], o.padding[1]},
                                        .dilation = {o.dilation[0], o.dilation[1]}, .groups = o.groups,
                                        .output_padding = {(int)(mode & 1), (int)(mode >> 1 & 1)}};
            out = kind == 31 ? nb_conv_transpose2d(tp, as_image(tp, x, 4), as_image(tp, b->t, 4), bias, &t)
                             : nb_conv_transpose1d(tp, as_image(tp, x, 3), as_image(tp, b->t, 3), bias, &t);
            bad = bias ? bad3 : bad2;
            break;
        }
        out = kind == 31 ? nb_conv2d(tp, as_image(tp, x, 4), as_image(tp, b->t, 4), bias, &o)
                         : nb_conv1d(tp, as_image(tp, x, 3), as_image(tp, b->t, 3), bias, &o);
        pg->smooth &= !o.relu;
        bad = bias ? bad3 : bad2;
        break;
    }
    case 33: {
        size_t idx[4];
        size_t n = byte(r) % 5;
        for (size_t i = 0; i < n; i++) idx[i] = byte(r) == 0xff ? SIZE_MAX : byte(r) % 4;
        out = nb_index_select(tp, x, pick_int(r), n ? idx : NULL, n);
        break;
    }
    case 34: out = nb_gather(tp, x, pick_int(r), heap_index(pg, r, b->t)); pg->smooth = false; break;
    case 35: {
        size_t pads[2 * NB_MAX_DIMS]; /* nb_pad reads 2 ndim of them */
        for (int i = 0; i < 2 * NB_MAX_DIMS; i++) pads[i] = (size_t)pick_long(r);
        out = nb_pad(tp, x, pads);
        break;
    }
    case 36: {
        int axes[NB_MAX_DIMS]; /* nb_permute reads ndim of them */
        for (int i = 0; i < NB_MAX_DIMS; i++) axes[i] = pick_int(r);
        out = nb_permute(tp, x, axes);
        break;
    }
    case 37: {
        size_t shape[4];
        int nd = 1 + (int)(byte(r) % 4);
        for (int d = 0; d < nd; d++) shape[d] = byte(r) < 0xf0 ? 1 + byte(r) % 4 : (size_t)pick_long(r);
        out = nb_broadcast_to(tp, x, nd, shape);
        break;
    }
    case 38: {
        int n = 1 + (int)(byte(r) % 3);
        out = nb_stack(tp, ((nb_tensor *[]){x, b->t, c->t}), n, pick_int(r));
        bad = n == 1 ? bad : n == 2 ? bad2 : bad3;
        break;
    }
    case 39: case 40: out = loss_op(pg, r, x, b->t, bad_input(pg, b), &bad); break;
    case 41: case 42: out = unary(pg, r, x); break;
    case 43: out = reduce_or_view(pg, r, x, b->t, bad_input(pg, b), &bad); break;
    case 44: {
        static const double ps[] = {0.5, 0, 0.25, 1, -1, NAN};
        out = nb_dropout(tp, x, ps[byte(r) % 6], &pg->rng);
        break;
    }
    case 45: case 46: out = custom_op(pg, r, a, &bad); break;
    default: /* the next ops go to the other tape */
        pg->cur ^= 1;
        pg->tp = pg->tapes[pg->cur];
        return;
    }
    keep(pg, out, bad);
    trace_step(pg, kind, a, b, c, out);
}

/* Where a rerun of a program moves its leaves, for finite differences:
 * element `at` of leaf `leaf` by `h`, then every leaf by a factor of
 * (1 + scale) (a step along v = the leaves, for nb_hvp's check). */
typedef struct {
    int leaf;
    size_t at;
    double h, scale;
} perturbation;

/* Decodes the leaves (heap tensors that require a gradient). */
static int make_leaves(reader *r, nb_dtype dt, nb_tensor **leaf, const perturbation *move) {
    int n = 1 + (int)(byte(r) % MAX_LEAVES);
    for (int i = 0; i < n; i++) {
        size_t shape[3];
        int nd = 1 + (int)(byte(r) % 3);
        for (int d = 0; d < nd; d++) shape[d] = 1 + byte(r) % 4;
        leaf[i] = nb_zeros(NULL, dt, nd, shape);
        for (size_t j = 0; j < nb_tensor_size(leaf[i]); j++) {
            double v = ((double)(byte(r) % 17) - 8) / 8;
            if (move && i == move->leaf && j == move->at) v += move->h;
            if (move) v *= 1 + move->scale;
            nb_set(leaf[i], j, v);
        }
        nb_requires_grad(leaf[i], true);
    }
    return n;
}

static void program_open(program *pg) {
    memset(pg, 0, sizeof *pg);
    pg->tapes[0] = nb_tape_new();
    pg->tapes[1] = nb_tape_new();
    pg->tp = pg->tapes[0];
    nb_rng_seed(&pg->rng, 7);
}

static void program_close(program *pg, nb_tensor **leaf, int n) {
    for (int i = 0; i < n; i++) nb_tensor_free(leaf[i]);
    for (int i = 0; i < pg->nheap; i++) nb_tensor_free(pg->heap[i]);
    nb_tape_free(pg->tapes[0]);
    nb_tape_free(pg->tapes[1]);
}

/* Runs the whole program; returns the loss (NAN if there is none) and
 * leaves the program's state in pg. */
static double run(const uint8_t *data, size_t size, program *pg, nb_tensor **leaf, int *nleaf, nb_tensor **loss,
                  const perturbation *move) {
    reader r = {data, size};
    if (size && data[size - 1] & 4) { /* the last byte's bit 2: evaluation (dropout, batch norm) */
        nb_tape_set_training(pg->tapes[0], false);
        nb_tape_set_training(pg->tapes[1], false);
    }
    nb_dtype dt = byte(&r) & 1 ? NB_F64 : NB_F32;
    *nleaf = make_leaves(&r, dt, leaf, move);
    pg->n = *nleaf;
    pg->smooth = dt == NB_F64;
    for (int i = 0; i < *nleaf; i++) pg->pool[i] = (slot){leaf[i], -1, false};
    int ops = (int)(byte(&r) % MAX_OPS);
    for (int i = 0; i < ops; i++) step(pg, &r);
    slot *last = &pg->pool[pg->n - 1];
    *loss = nb_sum(pg->tp, last->t);
    if (bad_input(pg, last) && nb_tensor_status(*loss) == NB_OK)
        broken("nb_sum accepted a stale tensor or another tape's");
    return nb_tensor_status(*loss) == NB_OK ? nb_item(*loss) : NAN;
}

static bool close_enough(double g, double num, double tol) { return fabs(g - num) <= tol * (1 + fabs(num)); }

/* The loss, or with grad_leaf >= 0 the gradient's element (grad_leaf,
 * grad_at) after nb_backward, of the program rerun with its leaves moved. */
static double rerun(const uint8_t *data, size_t size, const perturbation *move, int grad_leaf, size_t grad_at) {
    program pg;
    program_open(&pg);
    nb_tensor *leaf[MAX_LEAVES], *loss;
    int n;
    double f = run(data, size, &pg, leaf, &n, &loss, move);
    if (grad_leaf >= 0) f = nb_backward(loss) == NB_OK ? nb_grad_get(leaf[grad_leaf], grad_at) : NAN;
    program_close(&pg, leaf, n);
    return f;
}

/* Central differences of the loss with respect to leaf li's element j. */
static double numeric(const uint8_t *data, size_t size, int li, size_t j, double h) {
    perturbation up = {li, j, h, 0}, down = {li, j, -h, 0};
    return (rerun(data, size, &up, -1, 0) - rerun(data, size, &down, -1, 0)) / (2 * h);
}

/* Central differences of gradient element (li, j) along v = the leaves:
 * d/dε grad(x + εx) at 0 = (H x)[li, j]. */
static double numeric_hv(const uint8_t *data, size_t size, int li, size_t j, double h) {
    perturbation up = {-1, 0, 0, h}, down = {-1, 0, 0, -h};
    return (rerun(data, size, &up, li, j) - rerun(data, size, &down, li, j)) / (2 * h);
}

/* Compares an NB_OK derivative with central differences at step h, judged
 * only where h/10 confirms the estimate (a strongly curved function, exp
 * of exp, puts the h² error above the tolerance). */
static void check_numeric(double got, const uint8_t *data, size_t size, int li, size_t j, bool hv, double h,
                          double tol, const char *what) {
    double (*estimate)(const uint8_t *, size_t, int, size_t, double) = hv ? numeric_hv : numeric;
    double num = estimate(data, size, li, j, h);
    if (!isfinite(num) || fabs(num) > 1e6 || close_enough(got, num, tol)) return;
    double finer = estimate(data, size, li, j, h / 10);
    if (close_enough(got, finer, tol) || !close_enough(num, finer, tol)) return;
    fprintf(stderr, "leaf %d element %zu: %s %.12g, central differences %.12g (h %g), %.12g (h %g)\n", li, j, what,
            got, num, h, finer, h / 10);
    broken("an NB_OK float64 derivative disagrees with central differences");
}

/* The gradients nb_grad recorded with create_graph (the ops' backward_graph)
 * against the numeric pass's (their backward), in float64: two ways to the
 * same numbers, kinks included (each op takes the same side in both), so
 * they agree to rounding.  Found layer_norm adding into a buffer it took
 * for shared (1.8e-6 off with NB_OK). */
static void same_as_numeric(nb_tensor *loss, nb_tensor **leaf, int n, nb_tensor **recorded) {
    nb_tensor *numeric[MAX_LEAVES];
    if (nb_grad(loss, leaf, n, numeric, false) != NB_OK) broken("nb_grad refused what it took with create_graph");
    double big = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < nb_tensor_size(numeric[i]); j++) big = fmax(big, fabs(nb_get(numeric[i], j)));
    if (!isfinite(big)) return;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < nb_tensor_size(numeric[i]); j++) {
            double a = nb_get(recorded[i], j), b = nb_get(numeric[i], j);
            if (fabs(a - b) <= 1e-9 * (1 + big) || (isnan(a) && isnan(b))) continue;
            fprintf(stderr, "leaf %d element %zu: create_graph %.17g, numeric %.17g\n", i, j, a, b);
            broken("nb_grad with create_graph disagrees with its numeric pass");
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    program pg;
    program_open(&pg);
    if (!pg.tapes[0] || !pg.tapes[1]) {
        program_close(&pg, NULL, 0);
        return 0;
    }
    nb_tensor *leaf[MAX_LEAVES], *loss;
    int n;
    double value = run(data, size, &pg, leaf, &n, &loss, NULL);
    unsigned mode = size ? data[size - 1] % 4 : 0;
    /* Derivatives against central differences: float64, smooth ops only,
     * nothing written, a moderate finite loss. */
    bool checkable = pg.smooth && !pg.wrote && isfinite(value) && fabs(value) < 1e6;
    nb_status s = NB_OK;
    if (mode == 0) {
        s = nb_backward(loss);
        if (s == NB_OK && nb_tensor_status(loss) != NB_OK) broken("backward of an errored loss gave NB_OK");
        for (int i = 0; i < n && s == NB_OK && checkable; i++)
            for (size_t j = 0; j < nb_tensor_size(leaf[i]) && j < 8; j++)
                check_numeric(nb_grad_get(leaf[i], j), data, size, i, j, false, 1e-6, 1e-4, "backward");
    } else if (mode == 1) { /* gradients with create_graph, then a backward through them */
        nb_tensor *g[MAX_LEAVES];
        s = nb_grad(loss, leaf, n, g, true);
        for (int i = 0; i < n; i++)
            if (!g[i] || (s != NB_OK) != (nb_tensor_status(g[i]) != NB_OK))
                broken("nb_grad's status and its results disagree");
        if (s == NB_OK && !pg.wrote && !pg.mixed && nb_tensor_dtype(leaf[0]) == NB_F64)
            same_as_numeric(loss, leaf, n, g);
        if (s == NB_OK) {
            nb_tensor *gg = nb_sum(pg.tp, nb_square(pg.tp, g[0]));
            nb_status s2 = nb_backward(gg);
            if (s2 != NB_OK && !*nb_last_error()) broken("a refused backward without a message");
        }
    } else if (mode == 2) { /* Hessian-vector products, v = the leaves */
        nb_tensor *hv[MAX_LEAVES];
        s = nb_hvp(loss, leaf, n, leaf, hv);
        for (int i = 0; i < n; i++)
            if (!hv[i] || (s != NB_OK) != (nb_tensor_status(hv[i]) != NB_OK))
                broken("nb_hvp's status and its results disagree");
        for (int i = 0; i < n && s == NB_OK && checkable; i++)
            for (size_t j = 0; j < nb_tensor_size(leaf[i]) && j < 4; j++)
                check_numeric(nb_get(hv[i], j), data, size, i, j, true, 1e-5, 1e-3, "nb_hvp");
    } else { /* J t with t = the leaves, against the gradients' dot product with t */
        nb_tensor *g[MAX_LEAVES], *jt = NULL;
        s = nb_grad(loss, leaf, n, g, false);
        nb_status sj = nb_jvp(loss, leaf, n, leaf, &jt);
        if (!jt || (sj != NB_OK) != (nb_tensor_status(jt) != NB_OK)) broken("nb_jvp's status and its result disagree");
        if (sj != NB_OK && !*nb_last_error()) broken("a refused nb_jvp without a message");
        if (s == NB_OK && sj == NB_OK && !pg.wrote && !pg.mixed && nb_tensor_dtype(leaf[0]) == NB_F64) {
            double dot = 0, scale = 0;
            for (int i = 0; i < n; i++)
                for (size_t j = 0; j < nb_tensor_size(leaf[i]); j++) {
                    double term = nb_get(g[i], j) * nb_get(leaf[i], j);
                    dot += term;
                    scale += fabs(term);
                }
            double got = nb_get(jt, 0);
            if (isfinite(dot) && isfinite(scale) && fabs(got - dot) > 1e-9 * (1 + scale)) {
                fprintf(stderr, "nb_jvp %.15g, gradients · t %.15g\n", got, dot);
                broken("nb_jvp disagrees with nb_grad");
            }
        }
    }
    if (s != NB_OK && !*nb_last_error()) broken("a refused gradient without a message");
    program_close(&pg, leaf, n);
    return 0;
}
