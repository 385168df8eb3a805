/* torch_diff's network ops: softmax and norms, losses (on any value x),
 * and the ops that make their own leaves: matrix products, convolutions,
 * pooling and batch norm. */
#include "torch_diff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T(i) g->val[i]

static int random_axis(td_graph *g, int nd) { return td_int(g, -nd, nd - 1); }

static int at_least_1d(td_graph *g, int x) {
    if (x < 0 || nb_tensor_ndim(T(x)) > 0) return x;
    return td_step(g, nb_unsqueeze(g->tp, T(x), 0), "unsqueeze", 1, &x, ",\"axis\":0");
}

int td_norms(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    int op = td_int(g, 0, 3);
    if (op == 2) { /* layer norm; gamma and beta optional, or x itself */
        static const double epss[] = {1e-5, 1e-3, 0.1};
        double eps = epss[td_int(g, 0, 2)];
        bool alias = x < 0 && td_chance(g, 0.3);
        if (alias) {
            int d = td_int(g, 1, 5);
            x = td_leaf(g, 1, (size_t[]){(size_t)d}, TD_NORMAL, true);
        } else x = at_least_1d(g, td_need(g, x, TD_NORMAL));
        if (x < 0) return -1;
        size_t D = nb_tensor_dim(T(x), -1);
        int gm = -1, bt = -1;
        if (alias) {
            gm = td_chance(g, 0.7) ? x : -1;
            bt = td_chance(g, 0.7) ? x : -1;
        } else {
            if (td_chance(g, 0.7)) gm = td_leaf(g, 1, &D, TD_NORMAL, td_chance(g, 0.8));
            if (td_chance(g, 0.7)) bt = td_leaf(g, 1, &D, TD_NORMAL, td_chance(g, 0.8));
        }
        if (g->failed) return -1;
        return td_step(g, nb_layer_norm(tp, T(x), gm < 0 ? NULL : T(gm), bt < 0 ? NULL : T(bt), eps), "layer_norm", 3,
                       (int[]){x, gm, bt}, ",\"eps\":%.17g", eps);
    }
    x = at_least_1d(g, td_need(g, x, op == 3 ? TD_AWAY : TD_NORMAL));
    if (x < 0) return -1;
    int nd = nb_tensor_ndim(T(x)), axis = random_axis(g, nd);
    if (op == 0) return td_step(g, nb_softmax(tp, T(x), axis), "softmax", 1, &x, ",\"axis\":%d", axis);
    if (op == 1) return td_step(g, nb_log_softmax(tp, T(x), axis), "log_softmax", 1, &x, ",\"axis\":%d", axis);
    /* dropout: in training its mask is nabla's own draw (README), so torch
     * takes the mask from nabla's result, which needs x without zeros */
    double p = td_chance(g, 0.2) ? 0 : td_unif(g, 0.1, 0.7);
    bool train = td_chance(g, 0.6);
    for (size_t i = 0; i < nb_tensor_size(T(x)); i++) train = train && nb_get(T(x), i) != 0;
    bool prev = nb_tape_set_training(tp, train);
    nb_tensor *r = nb_dropout(tp, T(x), p, g->rng);
    nb_tape_set_training(tp, prev);
    char mask[1200] = "[]";
    size_t len = 0;
    for (size_t i = 0; train && nb_tensor_status(r) == NB_OK && i < nb_tensor_size(r) && len < sizeof mask - 4; i++)
        len += (size_t)snprintf(mask + len, sizeof mask - len, "%s%d", i ? "," : "[", nb_get(r, i) != 0);
    if (len) snprintf(mask + len, sizeof mask - len, "]");
    return td_step(g, r, "dropout", 1, &x, ",\"p\":%.17g,\"training\":%d,\"mask\":%s", p, train, mask);
}

int td_losses(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    int op = td_int(g, 0, 5);
    static const char *names[] = {"mse", "bce", "bce_logits", "softmax_cross_entropy", "huber", "smooth_l1"};
    if (op == 3) { /* classes along any axis: indices or probabilities */
        x = at_least_1d(g, td_need(g, x, TD_NORMAL));
        if (x < 0) return -1;
        int nd = nb_tensor_ndim(T(x)), axis = random_axis(g, nd), ad = axis < 0 ? axis + nd : axis, t;
        size_t C = nb_tensor_dim(T(x), axis);
        if (td_chance(g, 0.5)) {
            size_t s[NB_MAX_DIMS], m = 1;
            int k = 0;
            for (int d = 0; d < nd; d++)
                if (d != ad) m *= (s[k++] = nb_tensor_dim(T(x), d));
            double *cls = malloc(m * sizeof *cls);
            if (!cls) return -1;
            for (size_t i = 0; i < m; i++) cls[i] = td_int(g, 0, (int)C - 1);
            t = td_leaf_values(g, k, s, cls, false);
            free(cls);
        } else t = td_leaf(g, nd, nb_tensor_shape(T(x)), TD_UNIT, td_chance(g, 0.5));
        if (t < 0) return -1;
        return td_step(g, nb_softmax_cross_entropy(tp, T(x), T(t), axis), names[op], 2, (int[]){x, t}, ",\"axis\":%d", axis);
    }
    x = td_need(g, x, op == 1 ? TD_PROB : TD_NORMAL);
    if (x < 0) return -1;
    bool tgrad = td_chance(g, 0.6);
    int t = td_leaf(g, nb_tensor_ndim(T(x)), nb_tensor_shape(T(x)), op == 1 || op == 2 ? TD_UNIT : TD_NORMAL, tgrad);
    if (t < 0) return -1;
    double h = op == 4 ? td_unif(g, 0.3, 2) : td_chance(g, 0.25) ? 0 : td_unif(g, 0.3, 2);
    if (op >= 4 && g->leaf[x] && td_chance(g, 0.3)) /* targets on the kink d = 0 (x a leaf, as for ties) */
        for (size_t i = 0; i < nb_tensor_size(T(x)); i++)
            if (td_chance(g, 0.4)) nb_set(T(t), i, nb_get(T(x), i));
    int a[2] = {x, t};
    switch (op) {
    case 0: return td_step(g, nb_mse(tp, T(x), T(t)), names[op], 2, a, "%s", "");
    case 1: return td_step(g, nb_bce(tp, T(x), T(t)), names[op], 2, a, "%s", "");
    case 2: return td_step(g, nb_bce_logits(tp, T(x), T(t)), names[op], 2, a, "%s", "");
    case 4: return td_step(g, nb_huber(tp, T(x), T(t), h), names[op], 2, a, ",\"delta\":%.17g", h);
    default: return td_step(g, nb_smooth_l1(tp, T(x), T(t), h), names[op], 2, a, ",\"beta\":%.17g", h);
    }
}

/* matmul and matmul_t on matrices, stacks with broadcast batch axes and
 * vectors; linear, linear_torch and linear_t with a row or a column bias,
 * x with 0 to 3 leading axes (torch: F.linear for linear_torch, so that
 * its (out, in) weight is PyTorch's own reading). */
int td_matmul(td_graph *g) {
    nb_tape *tp = g->tp;
    size_t m = (size_t)td_int(g, 1, 4), k = (size_t)td_int(g, 1, 4), n = (size_t)td_int(g, 1, 4);
    bool ta = td_chance(g, 0.5), tb = td_chance(g, 0.5);
    int op = td_int(g, 0, 3);
    if (op >= 2) { /* linear */
        bool torch = op == 2 && td_chance(g, 0.5);
        if (op == 2) ta = false, tb = torch;
        int lead = ta ? 1 : td_int(g, 0, 3); /* x (lead axes..., k) */
        size_t sx[4];
        for (int d = 0; d < lead; d++) sx[d] = d == lead - 1 ? m : (size_t)td_int(g, 1, 3);
        sx[lead] = k;
        if (lead == 0) m = 1;
        int a = ta ? td_leaf(g, 2, (size_t[]){k, m}, TD_NORMAL, true) : td_leaf(g, lead + 1, sx, TD_NORMAL, true);
        int b = td_leaf(g, 2, tb ? (size_t[]){n, k} : (size_t[]){k, n}, TD_NORMAL, true);
        /* (n,); (1, n) for a result of 2 axes or more; (m, 1) for a 2-D x */
        int form = lead == 0 ? 0 : lead == 1 ? td_int(g, 0, 2) : td_int(g, 0, 1);
        int c = td_leaf(g, form == 0 ? 1 : 2, form == 0 ? (size_t[]){n} : form == 1 ? (size_t[]){1, n} : (size_t[]){m, 1},
                        TD_NORMAL, true);
        if (g->failed) return -1;
        int args[3] = {a, b, c};
        if (torch) return td_step(g, nb_linear_torch(tp, T(a), T(b), T(c)), "linear_torch", 3, args, "%s", "");
        if (op == 2) return td_step(g, nb_linear(tp, T(a), T(b), T(c)), "linear", 3, args, "%s", "");
        return td_step(g, nb_linear_t(tp, T(a), T(b), T(c), ta, tb), "linear_t", 3, args, ",\"ta\":%d,\"tb\":%d", ta, tb);
    }
    /* operands: vectors (k,), matrices, or stacks (batch..., rows, cols) */
    int na = td_int(g, 1, 4), nbd = td_int(g, 1, 4);
    size_t sa[4], sb[4];
    size_t batch[2] = {(size_t)td_int(g, 1, 3), (size_t)td_int(g, 1, 3)};
    if (na == 1) ta = false;
    if (nbd == 1) tb = false;
    for (int d = 0; d < na - 2; d++) sa[d] = td_chance(g, 0.4) ? 1 : batch[d + 4 - na];
    for (int d = 0; d < nbd - 2; d++) sb[d] = td_chance(g, 0.4) ? 1 : batch[d + 4 - nbd];
    if (na == 1) sa[0] = k;
    else sa[na - 2] = ta ? k : m, sa[na - 1] = ta ? m : k;
    if (nbd == 1) sb[0] = k;
    else sb[nbd - 2] = tb ? n : k, sb[nbd - 1] = tb ? k : n;
    if (op == 0 && (ta || tb)) op = 1;
    int a = td_leaf(g, na, sa, TD_NORMAL, true), b = td_leaf(g, nbd, sb, TD_NORMAL, td_chance(g, 0.9));
    if (g->failed) return -1;
    int args[2] = {a, b};
    if (op == 0) return td_step(g, nb_matmul(tp, T(a), T(b)), "matmul", 2, args, "%s", "");
    return td_step(g, nb_matmul_t(tp, T(a), T(b), ta, tb), "matmul_t", 2, args, ",\"ta\":%d,\"tb\":%d", ta, tb);
}

/* The output size of a convolution or pooling along one axis (0: none). */
static long out_size(long in, long k, long s, long p, long d, bool ceil_mode) {
    long span = d * (k - 1) + 1, room = in + 2 * p - span;
    if (room < 0) return 0;
    long o = (ceil_mode ? (room + s - 1) / s : room / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--; /* the last window starts inside */
    return o;
}

int td_conv(td_graph *g) {
    nb_tape *tp = g->tp;
    bool two = td_chance(g, 0.6);
    for (;;) {
        int groups = td_int(g, 1, 3), cpg = td_int(g, 1, 2), opg = td_int(g, 1, 2);
        if (td_chance(g, 0.2)) cpg = 1; /* depthwise when opg = 1 */
        nb_conv_opts o = {.groups = groups, .relu = td_chance(g, 0.15)};
        long in[2], k[2], os[2];
        bool ok = true;
        for (int a = 0; a < (two ? 2 : 1); a++) {
            in[a] = td_int(g, 1, 7);
            k[a] = td_int(g, 1, 3);
            o.stride[a] = td_int(g, 1, 3);
            o.padding[a] = td_int(g, 0, 2);
            o.dilation[a] = td_int(g, 1, 2);
            os[a] = out_size(in[a], k[a], o.stride[a], o.padding[a], o.dilation[a], false);
            ok = ok && os[a] > 0;
        }
        if (!ok) continue;
        size_t N = (size_t)td_int(g, 1, 2), C = (size_t)(groups * cpg), O = (size_t)(groups * opg);
        int x = two ? td_leaf(g, 4, (size_t[]){N, C, (size_t)in[0], (size_t)in[1]}, TD_NORMAL, true)
                    : td_leaf(g, 3, (size_t[]){N, C, (size_t)in[0]}, TD_NORMAL, true);
        int w = two ? td_leaf(g, 4, (size_t[]){O, (size_t)cpg, (size_t)k[0], (size_t)k[1]}, TD_NORMAL, true)
                    : td_leaf(g, 3, (size_t[]){O, (size_t)cpg, (size_t)k[0]}, TD_NORMAL, td_chance(g, 0.9));
        int b = td_chance(g, 0.6) ? td_leaf(g, 1, &O, TD_NORMAL, true) : -1;
        if (g->failed) return -1;
        nb_tensor *r = two ? nb_conv2d(tp, T(x), T(w), b < 0 ? NULL : T(b), &o)
                           : nb_conv1d(tp, T(x), T(w), b < 0 ? NULL : T(b), &o);
        return td_step(g, r, two ? "conv2d" : "conv1d", 3, (int[]){x, w, b},
                       ",\"stride\":[%d,%d],\"padding\":[%d,%d],\"dilation\":[%d,%d],\"groups\":%d,\"relu\":%d", o.stride[0],
                       o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1], o.groups, o.relu);
    }
}

/* Transposed convolutions, 2-D or 1-D: stride, padding (up to past the
 * kernel), output padding below max(stride, dilation), dilation, groups. */
int td_conv_transpose(td_graph *g) {
    nb_tape *tp = g->tp;
    bool two = td_chance(g, 0.6);
    for (;;) {
        int groups = td_int(g, 1, 3), cpg = td_int(g, 1, 2), opg = td_int(g, 1, 2);
        nb_conv_transpose_opts o = {.groups = groups};
        long in[2], k[2];
        bool ok = true;
        for (int a = 0; a < (two ? 2 : 1); a++) {
            in[a] = td_int(g, 1, 5);
            k[a] = td_int(g, 1, 3);
            o.stride[a] = td_int(g, 1, 3);
            o.dilation[a] = td_int(g, 1, 2);
            o.padding[a] = td_int(g, 0, 3);
            int most = (o.stride[a] > o.dilation[a] ? o.stride[a] : o.dilation[a]) - 1;
            o.output_padding[a] = td_chance(g, 0.4) ? td_int(g, 0, most) : 0;
            long out = (in[a] - 1) * o.stride[a] - 2 * o.padding[a] + o.dilation[a] * (k[a] - 1) +
                       o.output_padding[a] + 1;
            ok = ok && out > 0;
        }
        if (!ok) continue;
        size_t N = (size_t)td_int(g, 1, 2), C = (size_t)(groups * cpg), O = (size_t)(groups * opg);
        int x = two ? td_leaf(g, 4, (size_t[]){N, C, (size_t)in[0], (size_t)in[1]}, TD_NORMAL, true)
                    : td_leaf(g, 3, (size_t[]){N, C, (size_t)in[0]}, TD_NORMAL, true);
        int w = two ? td_leaf(g, 4, (size_t[]){C, (size_t)opg, (size_t)k[0], (size_t)k[1]}, TD_NORMAL, true)
                    : td_leaf(g, 3, (size_t[]){C, (size_t)opg, (size_t)k[0]}, TD_NORMAL, td_chance(g, 0.9));
        int b = td_chance(g, 0.6) ? td_leaf(g, 1, &O, TD_NORMAL, true) : -1;
        if (g->failed) return -1;
        nb_tensor *r = two ? nb_conv_transpose2d(tp, T(x), T(w), b < 0 ? NULL : T(b), &o)
                           : nb_conv_transpose1d(tp, T(x), T(w), b < 0 ? NULL : T(b), &o);
        return td_step(g, r, two ? "conv_transpose2d" : "conv_transpose1d", 3, (int[]){x, w, b},
                       ",\"stride\":[%d,%d],\"padding\":[%d,%d],\"output_padding\":[%d,%d],\"dilation\":[%d,%d],"
                       "\"groups\":%d",
                       o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.output_padding[0],
                       o.output_padding[1], o.dilation[0], o.dilation[1], o.groups);
    }
}

/* Upsampling: nearest (1-D or 2-D) or bilinear (align_corners either way),
 * by an output size (smaller or larger) or a scale factor. */
int td_upsample(td_graph *g) {
    nb_tape *tp = g->tp;
    int mode = td_int(g, 0, 2); /* nearest2d, nearest1d, bilinear2d */
    bool one = mode == 1;
    nb_upsample_opts o = {.align_corners = mode == 2 && td_chance(g, 0.5)};
    size_t in[2];
    bool by_scale = td_chance(g, 0.5);
    static const double scales[] = {0.5, 0.7, 1, 1.3, 1.5, 2, 2.5, 3, 0.34};
    for (int a = 0; a < (one ? 1 : 2); a++) {
        in[a] = (size_t)td_int(g, 1, 5);
        for (;;) {
            if (by_scale) o.scale[a] = scales[td_int(g, 0, 8)];
            else o.size[a] = (size_t)td_int(g, 1, 9);
            double out = floor((double)in[a] * o.scale[a]);
            /* PyTorch's nearest backward copies (out = in) or halves (out =
             * 2 in) indices there, against its forward: README's table */
            bool torch_bug = mode != 2 && (out == (double)in[a] || out == 2.0 * (double)in[a]);
            if (!by_scale || (out >= 1 && !torch_bug)) break;
        }
    }
    size_t N = (size_t)td_int(g, 1, 2), C = (size_t)td_int(g, 1, 3);
    int x = one ? td_leaf(g, 3, (size_t[]){N, C, in[0]}, TD_NORMAL, true)
                : td_leaf(g, 4, (size_t[]){N, C, in[0], in[1]}, TD_NORMAL, true);
    if (x < 0) return -1;
    nb_tensor *r = mode == 0 ? nb_upsample_nearest2d(tp, T(x), &o)
                   : one     ? nb_upsample_nearest1d(tp, T(x), &o)
                             : nb_upsample_bilinear2d(tp, T(x), &o);
    return td_step(g, r, mode == 0 ? "upsample_nearest2d" : one ? "upsample_nearest1d" : "upsample_bilinear2d", 1, &x,
                   ",\"out_size\":[%zu,%zu],\"factor\":[%.17g,%.17g],\"align_corners\":%d", o.size[0], o.size[1],
                   o.scale[0], o.scale[1], o.align_corners);
}

/* A window wholly in the padding (README: nabla gives -inf and no
 * gradient, torch reads outside the row): such max poolings are left out. */
static bool window_in_padding(long in, long k, long s, long p, long d, long o) {
    for (long i = 0; i < o; i++) {
        bool inside = false;
        for (long j = 0; j < k; j++) {
            long at = i * s - p + j * d;
            inside = inside || (at >= 0 && at < in);
        }
        if (!inside) return true;
    }
    return false;
}

int td_pool(td_graph *g) {
    nb_tape *tp = g->tp;
    bool max = td_chance(g, 0.5);
    for (;;) {
        nb_pool_opts o = {.ceil_mode = td_chance(g, 0.4), .exclude_pad = !max && td_chance(g, 0.5)};
        long in[2], os[2];
        bool ok = true;
        for (int a = 0; a < 2; a++) {
            in[a] = td_int(g, 1, 7);
            o.kernel[a] = td_int(g, 1, 4);
            o.stride[a] = td_chance(g, 0.3) ? 0 : td_int(g, 1, 3);
            o.padding[a] = td_int(g, 0, o.kernel[a] / 2);
            o.dilation[a] = max ? td_int(g, 1, 2) : 1;
            long s = o.stride[a] ? o.stride[a] : o.kernel[a];
            os[a] = out_size(in[a], o.kernel[a], s, o.padding[a], o.dilation[a], o.ceil_mode);
            ok = ok && os[a] > 0 && !(max && window_in_padding(in[a], o.kernel[a], s, o.padding[a], o.dilation[a], os[a]));
        }
        if (!ok) continue;
        size_t N = (size_t)td_int(g, 1, 2), C = (size_t)td_int(g, 1, 2);
        int x = td_leaf(g, 4, (size_t[]){N, C, (size_t)in[0], (size_t)in[1]}, TD_NORMAL, true);
        if (x < 0) return -1;
        if (max && td_chance(g, 0.3)) /* ties: the gradient goes to the first maximum */
            for (size_t i = 0; i < nb_tensor_size(T(x)); i++)
                if (td_chance(g, 0.5)) nb_set(T(x), i, 0.5);
        nb_tensor *r = max ? nb_max_pool2d(tp, T(x), &o) : nb_avg_pool2d(tp, T(x), &o);
        return td_step(g, r, max ? "max_pool2d" : "avg_pool2d", 1, &x,
                       ",\"kernel\":[%d,%d],\"stride\":[%d,%d],\"padding\":[%d,%d],\"dilation\":[%d,%d],\"ceil_mode\":%d,"
                       "\"exclude_pad\":%d",
                       o.kernel[0], o.kernel[1], o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0],
                       o.dilation[1], o.ceil_mode, o.exclude_pad);
    }
}

int td_batch_norm(td_graph *g) {
    nb_tape *tp = g->tp;
    int nd = td_int(g, 2, 4);
    size_t s[4] = {(size_t)td_int(g, 1, 3), (size_t)td_int(g, 1, 3), (size_t)td_int(g, 1, 3), (size_t)td_int(g, 1, 3)};
    size_t per = s[0];
    for (int d = 2; d < nd; d++) per *= s[d];
    bool train = td_chance(g, 0.6), running = td_chance(g, 0.7);
    if (!train && !running) running = true; /* torch needs running statistics in evaluation */
    if (train && per < 2) s[0] = 2;         /* torch needs two values a channel to train */
    size_t C = s[1];
    int x = td_leaf(g, nd, s, TD_NORMAL, true);
    int gm = td_chance(g, 0.7) ? td_leaf(g, 1, &C, TD_NORMAL, true) : -1;
    int bt = td_chance(g, 0.7) ? td_leaf(g, 1, &C, TD_NORMAL, true) : -1;
    if (g->failed) return -1;
    nb_tensor *rm = NULL, *rv = NULL;
    if (running) {
        rm = nb_rand_normal(NULL, g->rng, g->dt, 1, &C, 0, 1);
        rv = nb_rand_uniform(NULL, g->rng, g->dt, 1, &C, 0.5, 2);
        g->heap[g->n_heap++] = rm;
        g->heap[g->n_heap++] = rv;
        td_extra_tensor(g, "running_mean0", rm);
        td_extra_tensor(g, "running_var0", rv);
    }
    double momentum = td_chance(g, 0.5) ? 0.1 : td_unif(g, 0, 1), eps = td_chance(g, 0.5) ? 1e-5 : 1e-2;
    bool prev = nb_tape_set_training(tp, train);
    nb_tensor *r = nb_batch_norm(tp, T(x), gm < 0 ? NULL : T(gm), bt < 0 ? NULL : T(bt), rm, rv, momentum, eps);
    nb_tape_set_training(tp, prev);
    return td_step(g, r, "batch_norm", 3, (int[]){x, gm, bt},
                   ",\"training\":%d,\"running\":%d,\"momentum\":%.17g,\"eps\":%.17g", train, running, momentum, eps);
}

/* The fused attention on fresh q, k, v: causal or not, a boolean or an
 * additive mask in a broadcast form, a scale, dropout.  Every query sees
 * key 0 (a boolean mask keeps its first column), so no row is NaN.  The
 * dropout mask is nabla's own (README), given to torch as drawn: the
 * generator is copied before the op and nb_attention_dropout_mask asked. */
int td_attention(td_graph *g) {
    nb_tape *tp = g->tp;
    int nd = td_int(g, 0, 2);
    size_t lead[2] = {(size_t)td_int(g, 1, 2), (size_t)td_int(g, 1, 2)}, sq[4], sk[4], sv[4];
    size_t L = (size_t)td_int(g, 1, 5), S = (size_t)td_int(g, 1, 5), E = (size_t)td_int(g, 1, 4), Ev = (size_t)td_int(g, 1, 4);
    for (int d = 0; d < nd; d++) sq[d] = sk[d] = sv[d] = lead[d];
    sq[nd] = L, sq[nd + 1] = E, sk[nd] = S, sk[nd + 1] = E, sv[nd] = S, sv[nd + 1] = Ev;
    int q = td_leaf(g, nd + 2, sq, TD_NORMAL, true), k = td_leaf(g, nd + 2, sk, TD_NORMAL, td_chance(g, 0.8));
    int v = td_leaf(g, nd + 2, sv, TD_NORMAL, td_chance(g, 0.8)), m = -1;
    nb_attention_opts o = {.causal = td_chance(g, 0.4), .scale = td_chance(g, 0.5) ? 0 : td_unif(g, 0.2, 1.5)};
    int kind = td_int(g, 0, 2); /* none, boolean, additive */
    if (kind) {
        size_t ms[4];
        int form = td_int(g, 0, 2), mn = 0; /* (..., L, S), (L, S), (S,) */
        if (form == 0)
            for (int d = 0; d < nd; d++) ms[mn++] = lead[d];
        if (form <= 1) ms[mn++] = L;
        ms[mn++] = S;
        if (kind == 1) {
            size_t n = 1;
            for (int d = 0; d < mn; d++) n *= ms[d];
            double cond[64];
            for (size_t i = 0; i < n; i++) cond[i] = i % S == 0 || td_chance(g, 0.7);
            m = td_leaf_values(g, mn, ms, cond, false);
        } else {
            m = td_leaf(g, mn, ms, TD_NORMAL, td_chance(g, 0.7));
        }
        if (m >= 0) o.mask = T(m), o.mask_is_bool = kind == 1;
    }
    if (g->failed) return -1;
    bool drop = td_chance(g, 0.35);
    char dmask[1200] = "null";
    nb_rng copy = *g->rng;
    if (drop) {
        o.dropout_p = td_unif(g, 0.1, 0.6);
        o.rng = g->rng;
        copy = *g->rng;
        nb_tensor *dm = nb_attention_dropout_mask(tp, T(q), T(k), o.dropout_p, &copy);
        size_t len = 0;
        for (size_t i = 0; nb_tensor_status(dm) == NB_OK && i < nb_tensor_size(dm) && len < sizeof dmask - 4; i++)
            len += (size_t)snprintf(dmask + len, sizeof dmask - len, "%s%d", i ? "," : "[", nb_get(dm, i) != 0);
        if (len) snprintf(dmask + len, sizeof dmask - len, "]");
    }
    double scale = o.scale != 0 ? o.scale : 1 / sqrt((double)E);
    nb_tensor *r = nb_scaled_dot_product_attention(tp, T(q), T(k), T(v), &o);
    return td_step(g, r, "attention", m >= 0 ? 4 : 3, (int[]){q, k, v, m},
                   ",\"causal\":%d,\"bool\":%d,\"scale\":%.17g,\"p\":%.17g,\"dmask\":%s", o.causal, o.mask_is_bool,
                   scale, o.dropout_p, dmask);
}

/* split_heads, split_qkv (one part, or all three used: q ⊙ k + v) and
 * merge_heads, x with 0 to 3 leading axes (torch: unflatten and transpose,
 * qkv.split, flatten). */
int td_heads(td_graph *g) {
    nb_tape *tp = g->tp;
    int lead = td_int(g, 0, 3), H = td_int(g, 1, 3), hd = td_int(g, 1, 3), Tn = td_int(g, 1, 3), op = td_int(g, 0, 2);
    size_t s[NB_MAX_DIMS];
    for (int d = 0; d < lead; d++) s[d] = (size_t)td_int(g, 1, 3);
    if (op == 2) { /* x (lead..., H, T, hd) */
        s[lead] = (size_t)H, s[lead + 1] = (size_t)Tn, s[lead + 2] = (size_t)hd;
        int x = td_leaf(g, lead + 3, s, TD_NORMAL, true);
        if (g->failed) return -1;
        return td_step(g, nb_merge_heads(tp, T(x)), "merge_heads", 1, &x, "%s", "");
    }
    s[lead] = (size_t)Tn, s[lead + 1] = (size_t)((op ? 3 : 1) * H * hd);
    int x = td_leaf(g, lead + 2, s, TD_NORMAL, true);
    if (g->failed) return -1;
    if (op == 0) return td_step(g, nb_split_heads(tp, T(x), H), "split_heads", 1, &x, ",\"H\":%d", H);
    nb_tensor *q[3];
    nb_split_qkv(tp, T(x), H, q);
    int id[3];
    for (int i = 0; i < 3; i++) id[i] = td_step(g, q[i], "split_qkv", 1, &x, ",\"H\":%d,\"part\":%d", H, i);
    if (g->failed) return -1;
    if (td_chance(g, 0.4)) return id[td_int(g, 0, 2)];
    int qk = td_step(g, nb_mul(tp, T(id[0]), T(id[1])), "mul", 2, (int[]){id[0], id[1]}, "%s", "");
    if (qk < 0) return -1;
    return td_step(g, nb_add(tp, T(qk), T(id[2])), "add", 2, (int[]){qk, id[2]}, "%s", "");
}
