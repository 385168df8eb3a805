/* torch_diff's element-wise, broadcasting, reduction, shape and indexing
 * ops on any value x (x < 0: on a fresh leaf). */
#include "torch_diff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T(i) g->val[i]
#define SHAPE_OF(i) nb_tensor_ndim(T(i)), nb_tensor_shape(T(i))

/* A leaf of a random shape where some elements sit exactly on the kinks
 * (PyTorch's conventions there are nabla's, README "Ops"). */
static int kinked_leaf(td_graph *g, const double *kinks, int n_kinks) {
    size_t shape[NB_MAX_DIMS], n = 1;
    int nd = td_shape(g, 1, 3, shape);
    for (int d = 0; d < nd; d++) n *= shape[d];
    double *v = malloc(n * sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < n; i++) {
        v[i] = (td_chance(g, 0.5) ? -1 : 1) * td_unif(g, 0.2, 2);
        if (td_chance(g, 0.3)) v[i] = kinks[td_int(g, 0, n_kinks - 1)];
    }
    int k = td_leaf_values(g, nd, shape, v, true);
    free(v);
    return k;
}

int td_unary(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    int op = td_int(g, 0, 21);
    bool fresh = x < 0, kink = fresh && td_chance(g, 0.3);
    switch (op) {
    case 0: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_neg(tp, T(x)), "neg", 1, &x, "%s", "");
    case 1: {
        double s = td_unif(g, -3, 3);
        x = td_need(g, x, TD_NORMAL);
        return x < 0 ? -1 : td_step(g, nb_scale(tp, T(x), s), "scale", 1, &x, ",\"s\":%.17g", s);
    }
    case 2: {
        double s = td_unif(g, -3, 3);
        x = td_need(g, x, TD_NORMAL);
        return x < 0 ? -1 : td_step(g, nb_add_scalar(tp, T(x), s), "add_scalar", 1, &x, ",\"s\":%.17g", s);
    }
    case 3: x = td_bounded(g, td_need(g, x, TD_NORMAL), 3); return x < 0 ? -1 : td_step(g, nb_exp(tp, T(x)), "exp", 1, &x, "%s", "");
    case 4: x = td_need(g, x, TD_POSITIVE); return x < 0 ? -1 : td_step(g, nb_log(tp, T(x)), "log", 1, &x, "%s", "");
    case 5: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_sigmoid(tp, T(x)), "sigmoid", 1, &x, "%s", "");
    case 6: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_tanh(tp, T(x)), "tanh", 1, &x, "%s", "");
    case 7:
        x = kink ? kinked_leaf(g, (double[]){0}, 1) : td_need(g, x, TD_AWAY);
        return x < 0 ? -1 : td_step(g, nb_relu(tp, T(x)), "relu", 1, &x, "%s", "");
    case 8: {
        double s = td_chance(g, 0.5) ? 0.01 : td_unif(g, -0.5, 1.5);
        x = kink ? kinked_leaf(g, (double[]){0}, 1) : td_need(g, x, TD_AWAY);
        return x < 0 ? -1 : td_step(g, nb_leaky_relu(tp, T(x), s), "leaky_relu", 1, &x, ",\"slope\":%.17g", s);
    }
    case 9: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_square(tp, T(x)), "square", 1, &x, "%s", "");
    case 10: {
        static const double ps[] = {2, 3, -1, 0.5, 1.5, -0.5, 2.5, 0, 1};
        double p = ps[td_int(g, 0, 8)];
        bool integer = p == floor(p) && p >= 0;
        x = td_need(g, x, integer ? TD_NORMAL : TD_POSITIVE);
        return x < 0 ? -1 : td_step(g, nb_pow(tp, T(x), p), "pow", 1, &x, ",\"p\":%.17g", p);
    }
    case 11: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_sin(tp, T(x)), "sin", 1, &x, "%s", "");
    case 12: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_cos(tp, T(x)), "cos", 1, &x, "%s", "");
    case 13: {
        double lo = td_unif(g, -1.5, 0), hi = td_chance(g, 0.1) ? lo : td_unif(g, 0, 1.5);
        x = kink ? kinked_leaf(g, (double[]){lo, hi}, 2) : td_need(g, x, TD_NORMAL);
        return x < 0 ? -1 : td_step(g, nb_clamp(tp, T(x), lo, hi), "clamp", 1, &x, ",\"lo\":%.17g,\"hi\":%.17g", lo, hi);
    }
    case 14:
        x = kink ? kinked_leaf(g, (double[]){0}, 1) : td_need(g, x, TD_AWAY);
        return x < 0 ? -1 : td_step(g, nb_abs(tp, T(x)), "abs", 1, &x, "%s", "");
    case 15: x = td_need(g, x, TD_POSITIVE); return x < 0 ? -1 : td_step(g, nb_sqrt(tp, T(x)), "sqrt", 1, &x, "%s", "");
    case 16: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_erf(tp, T(x)), "erf", 1, &x, "%s", "");
    case 17: x = td_need(g, x, TD_POSITIVE); return x < 0 ? -1 : td_step(g, nb_log1p(tp, T(x)), "log1p", 1, &x, "%s", "");
    case 18: x = td_bounded(g, td_need(g, x, TD_NORMAL), 3); return x < 0 ? -1 : td_step(g, nb_expm1(tp, T(x)), "expm1", 1, &x, "%s", "");
    case 19: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_softplus(tp, T(x)), "softplus", 1, &x, "%s", "");
    case 20: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_gelu(tp, T(x)), "gelu", 1, &x, "%s", "");
    default: x = td_need(g, x, TD_NORMAL); return x < 0 ? -1 : td_step(g, nb_gelu_tanh(tp, T(x)), "gelu_tanh", 1, &x, "%s", "");
    }
}

/* A shape that broadcasts with x's (aligned from the right, each pair
 * equal or containing a 1; either may be longer): every pattern. */
static int broadcast_partner(td_graph *g, int x, size_t *shape) {
    int nx = nb_tensor_ndim(T(x));
    const size_t *xs = nb_tensor_shape(T(x));
    int ny = td_int(g, 0, nx + 1 > NB_MAX_DIMS ? NB_MAX_DIMS : nx + 1);
    if (ny > 4) ny = 4;
    for (int i = 0; i < ny; i++) {
        size_t *d = &shape[ny - 1 - i];
        if (i >= nx) *d = (size_t)td_int(g, 1, 3);
        else if (xs[nx - 1 - i] == 1) *d = (size_t)td_int(g, 1, 3);
        else *d = td_chance(g, 0.6) ? xs[nx - 1 - i] : 1;
    }
    return ny;
}

/* A partner leaf; with ties when asked and the shapes are the same. */
static int partner(td_graph *g, int x, td_kind kind, bool ties) {
    size_t shape[NB_MAX_DIMS];
    int ny = broadcast_partner(g, x, shape);
    int y = td_leaf(g, ny, shape, kind, true);
    /* ties only with a leaf: torch's own value of a computed x may differ in its last bit */
    if (y < 0 || !ties || !g->leaf[x] || ny != nb_tensor_ndim(T(x)) || nb_tensor_size(T(y)) != nb_tensor_size(T(x))) return y;
    for (size_t i = 0; i < nb_tensor_size(T(x)); i++)
        if (td_chance(g, 0.3)) nb_set(T(y), i, nb_get(T(x), i));
    return y;
}

int td_binary(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    int op = td_int(g, 0, 6);
    static const char *names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
    if (op == 6) { /* where(cond, a, b), cond holding 0, 1 and NaN (true) */
        x = td_need(g, x, TD_NORMAL);
        if (x < 0) return -1;
        size_t cs[NB_MAX_DIMS];
        int nc = broadcast_partner(g, x, cs);
        size_t n = 1;
        for (int d = 0; d < nc; d++) n *= cs[d];
        double *c = malloc(n * sizeof *c);
        if (!c) return -1;
        for (size_t i = 0; i < n; i++) c[i] = td_chance(g, 0.1) ? NAN : td_chance(g, 0.5) ? 1 : 0;
        int cond = td_leaf_values(g, nc, cs, c, false);
        free(c);
        if (cond < 0) return -1;
        size_t bs[NB_MAX_DIMS];
        int nb = 0;
        for (int tries = 0; tries < 20; tries++) { /* b broadcasts with x and with cond */
            nb = tries == 19 ? nb_tensor_ndim(T(x)) : broadcast_partner(g, x, bs);
            if (tries == 19) memcpy(bs, nb_tensor_shape(T(x)), (size_t)nb * sizeof *bs);
            bool ok = true;
            for (int i = 0; i < nb && i < nc; i++) {
                size_t p = bs[nb - 1 - i], q = cs[nc - 1 - i];
                ok = ok && (p == q || p == 1 || q == 1);
            }
            if (ok) break;
        }
        int b = td_leaf(g, nb, bs, TD_NORMAL, true);
        if (b < 0) return -1;
        int a[3] = {cond, x, b};
        if (td_chance(g, 0.5)) a[1] = b, a[2] = x;
        return td_step(g, nb_where(tp, T(a[0]), T(a[1]), T(a[2])), "where", 3, a, "%s", "");
    }
    bool swap = td_chance(g, 0.5), alias = td_chance(g, 0.12);
    x = td_need(g, x, op == 3 && swap ? TD_POSITIVE : TD_NORMAL);
    if (x < 0) return -1;
    int y = alias ? x : partner(g, x, op == 3 ? TD_AWAY : TD_NORMAL, op >= 4);
    if (y < 0) return -1;
    if (op == 3 && alias && td_min(T(x)) < 0.2) return td_step(g, nb_mul(tp, T(x), T(x)), "mul", 2, (int[]){x, x}, "%s", "");
    int a[2] = {swap ? y : x, swap ? x : y};
    nb_tensor *r;
    switch (op) {
    case 0: r = nb_add(tp, T(a[0]), T(a[1])); break;
    case 1: r = nb_sub(tp, T(a[0]), T(a[1])); break;
    case 2: r = nb_mul(tp, T(a[0]), T(a[1])); break;
    case 3: r = nb_div(tp, T(a[0]), T(a[1])); break;
    case 4: r = nb_maximum(tp, T(a[0]), T(a[1])); break;
    default: r = nb_minimum(tp, T(a[0]), T(a[1])); break;
    }
    return td_step(g, r, names[op], 2, a, "%s", "");
}

static int random_axis(td_graph *g, int nd) { return td_int(g, -nd, nd - 1); }

int td_reduce(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    x = td_need(g, x, TD_NORMAL);
    if (x < 0) return -1;
    int nd = nb_tensor_ndim(T(x));
    int op = nd == 0 ? td_int(g, 0, 1) : td_int(g, 0, 9);
    if (op == 0) return td_step(g, nb_sum(tp, T(x)), "sum", 1, &x, "%s", "");
    if (op == 1) return td_step(g, nb_mean(tp, T(x)), "mean", 1, &x, "%s", "");
    int axis = random_axis(g, nd);
    bool kd = td_chance(g, 0.5);
    size_t n = nb_tensor_dim(T(x), axis);
    switch (op) {
    case 2: return td_step(g, nb_sum_axis(tp, T(x), axis, kd), "sum_axis", 1, &x, ",\"axis\":%d,\"keepdims\":%d", axis, kd);
    case 3: return td_step(g, nb_mean_axis(tp, T(x), axis, kd), "mean_axis", 1, &x, ",\"axis\":%d,\"keepdims\":%d", axis, kd);
    case 4: return td_step(g, nb_logsumexp(tp, T(x), axis, kd), "logsumexp", 1, &x, ",\"axis\":%d,\"keepdims\":%d", axis, kd);
    case 5: {
        int c = td_int(g, -1, 2);
        if ((size_t)(c < 0 ? 0 : c) >= n) c = 0; /* a correction >= n is refused (README) */
        return td_step(g, nb_var_axis(tp, T(x), axis, kd, c), "var_axis", 1, &x,
                       ",\"axis\":%d,\"keepdims\":%d,\"correction\":%d", axis, kd, c);
    }
    case 6: return td_step(g, nb_max_axis(tp, T(x), axis, kd), "max_axis", 1, &x, ",\"axis\":%d,\"keepdims\":%d", axis, kd);
    case 7: return td_step(g, nb_min_axis(tp, T(x), axis, kd), "min_axis", 1, &x, ",\"axis\":%d,\"keepdims\":%d", axis, kd);
    default: /* no gradient: the graph ends here */
        g->no_grad = true;
        return td_step(g, op == 8 ? nb_argmax(tp, T(x), axis, kd) : nb_argmin(tp, T(x), axis, kd),
                       op == 8 ? "argmax" : "argmin", 1, &x, ",\"axis\":%d,\"keepdims\":%d", axis, kd);
    }
}

static void list(char *buf, size_t cap, const long *v, int n) {
    size_t len = 0;
    len += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && len < cap; i++) len += (size_t)snprintf(buf + len, cap - len, i ? ",%ld" : "%ld", v[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

int td_shapes(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    x = td_need(g, x, TD_NORMAL);
    if (x < 0) return -1;
    int nd = nb_tensor_ndim(T(x)), op = td_int(g, 0, 9);
    const size_t *xs = nb_tensor_shape(T(x));
    size_t n = nb_tensor_size(T(x));
    long v[2 * NB_MAX_DIMS];
    size_t s[2 * NB_MAX_DIMS];
    char buf[256];
    if (nd == 0 && (op == 1 || op == 3 || op == 4)) op = 2;
    switch (op) {
    case 0: { /* reshape: n factored into up to 4 sizes, one maybe -1 */
        int k = 0;
        size_t rest = n;
        while (rest > 1 && k < 3) {
            size_t f = 1;
            for (size_t c = 2; c <= rest; c++)
                if (rest % c == 0) { f = c; if (td_chance(g, 0.5)) break; }
            v[k++] = (long)f;
            rest /= f;
        }
        v[k++] = (long)rest;
        if (td_chance(g, 0.3)) v[td_int(g, 0, k - 1)] = -1;
        list(buf, sizeof buf, v, k);
        return td_step(g, nb_reshape(tp, T(x), k, v), "reshape", 1, &x, ",\"shape\":%s", buf);
    }
    case 1: { /* squeeze an axis of size 1, or unsqueeze */
        for (int d = 0; d < nd; d++)
            if (xs[d] == 1) {
                int axis = td_chance(g, 0.5) ? d : d - nd;
                return td_step(g, nb_squeeze(tp, T(x), axis), "squeeze", 1, &x, ",\"axis\":%d", axis);
            }
    } /* fall through */
    case 2: {
        if (nd >= 4) return x;
        int axis = td_int(g, -nd - 1, nd);
        return td_step(g, nb_unsqueeze(tp, T(x), axis), "unsqueeze", 1, &x, ",\"axis\":%d", axis);
    }
    case 3: {
        int a0 = random_axis(g, nd), a1 = random_axis(g, nd);
        return td_step(g, nb_transpose(tp, T(x), a0, a1), "transpose", 1, &x, ",\"a0\":%d,\"a1\":%d", a0, a1);
    }
    case 4: {
        int axes[NB_MAX_DIMS];
        for (int d = 0; d < nd; d++) axes[d] = d;
        for (int d = nd - 1; d > 0; d--) {
            int j = td_int(g, 0, d), t = axes[d];
            axes[d] = axes[j], axes[j] = t;
        }
        for (int d = 0; d < nd; d++) v[d] = axes[d];
        list(buf, sizeof buf, v, nd);
        return td_step(g, nb_permute(tp, T(x), axes), "permute", 1, &x, ",\"axes\":%s", buf);
    }
    case 5: { /* broadcast_to: sizes 1 grow, leading axes are added */
        int extra = nd < 4 ? td_int(g, 0, 4 - nd > 2 ? 2 : 4 - nd) : 0;
        for (int d = 0; d < extra; d++) s[d] = (size_t)td_int(g, 1, 3);
        for (int d = 0; d < nd; d++) s[extra + d] = xs[d] == 1 ? (size_t)td_int(g, 1, 3) : xs[d];
        for (int d = 0; d < nd + extra; d++) v[d] = (long)s[d];
        list(buf, sizeof buf, v, nd + extra);
        return td_step(g, nb_broadcast_to(tp, T(x), nd + extra, s), "broadcast_to", 1, &x, ",\"shape\":%s", buf);
    }
    case 6: { /* sum_to: some axes to 1, some leading ones dropped */
        int drop = nd ? td_int(g, 0, nd) : 0;
        for (int d = drop; d < nd; d++) s[d - drop] = td_chance(g, 0.4) ? 1 : xs[d];
        for (int d = 0; d < nd - drop; d++) v[d] = (long)s[d];
        list(buf, sizeof buf, v, nd - drop);
        return td_step(g, nb_sum_to(tp, T(x), nd - drop, s), "sum_to", 1, &x, ",\"shape\":%s", buf);
    }
    case 7: {
        for (int d = 0; d < 2 * nd; d++) v[d] = (long)(s[d] = (size_t)td_int(g, 0, 2));
        list(buf, sizeof buf, v, 2 * nd);
        return td_step(g, nb_pad(tp, T(x), s), "pad", 1, &x, ",\"pads\":%s", buf);
    }
    case 8: { /* x * detach(x): the gradient of the detached side is cut */
        int d = td_step(g, nb_detach(tp, T(x)), "detach", 1, &x, "%s", "");
        return d < 0 ? -1 : td_step(g, nb_mul(tp, T(x), T(d)), "mul", 2, (int[]){x, d}, "%s", "");
    }
    default: { /* to the other dtype and back */
        nb_dtype other = g->dt == NB_F32 ? NB_F64 : NB_F32;
        int c = td_step(g, nb_cast(tp, T(x), other), "cast", 1, &x, ",\"dtype\":\"%s\"", other == NB_F32 ? "float32" : "float64");
        if (c < 0) return -1;
        c = td_step(g, nb_sin(tp, T(c)), "sin", 1, &c, "%s", "");
        return c < 0 ? -1 : td_step(g, nb_cast(tp, T(c), g->dt), "cast", 1, &c, ",\"dtype\":\"%s\"", g->dt == NB_F32 ? "float32" : "float64");
    }
    }
}

int td_indexing(td_graph *g, int x) {
    nb_tape *tp = g->tp;
    x = td_need(g, x, TD_NORMAL);
    if (x < 0) return -1;
    int nd = nb_tensor_ndim(T(x)), op = td_int(g, 0, 4);
    if (nd == 0) {
        int u = td_step(g, nb_unsqueeze(tp, T(x), 0), "unsqueeze", 1, &x, ",\"axis\":0");
        if (u < 0) return -1;
        x = u, nd = 1;
    }
    int axis = random_axis(g, nd);
    size_t n = nb_tensor_dim(T(x), axis);
    long ln = (long)n;
    switch (op) {
    case 0: { /* Python's x[start:stop:step] along the axis, never empty */
        for (;;) {
            long step = td_int(g, 1, 3), start = td_int(g, (int)-ln, (int)ln - 1);
            long stop = td_chance(g, 0.3) ? NB_END : td_int(g, (int)-ln, (int)ln);
            long a = start < 0 ? start + ln : start, b = stop == NB_END ? ln : stop < 0 ? stop + ln : stop;
            if (b <= a) continue;
            char sb[32];
            snprintf(sb, sizeof sb, stop == NB_END ? "null" : "%ld", stop);
            return td_step(g, nb_slice(tp, T(x), axis, start, stop, step), "slice", 1, &x,
                           ",\"axis\":%d,\"start\":%ld,\"stop\":%s,\"step\":%ld", axis, start, sb, step);
        }
    }
    case 1: {
        size_t idx[6], k = (size_t)td_int(g, 1, 6);
        long v[6];
        char buf[128];
        for (size_t i = 0; i < k; i++) v[i] = (long)(idx[i] = (size_t)td_int(g, 0, (int)n - 1));
        list(buf, sizeof buf, v, (int)k);
        return td_step(g, nb_index_select(tp, T(x), axis, idx, k), "index_select", 1, &x, ",\"axis\":%d,\"indices\":%s", axis, buf);
    }
    case 2: { /* gather: index sizes at most x's off the axis, as torch asks */
        size_t s[NB_MAX_DIMS], m = 1;
        int ad = axis < 0 ? axis + nd : axis;
        for (int d = 0; d < nd; d++) s[d] = d == ad ? (size_t)td_int(g, 1, 4) : (size_t)td_int(g, 1, (int)nb_tensor_dim(T(x), d));
        for (int d = 0; d < nd; d++) m *= s[d];
        double *iv = malloc(m * sizeof *iv);
        if (!iv) return -1;
        for (size_t i = 0; i < m; i++) iv[i] = td_int(g, 0, (int)n - 1);
        int ix = td_leaf_values(g, nd, s, iv, false);
        free(iv);
        return ix < 0 ? -1 : td_step(g, nb_gather(tp, T(x), axis, T(ix)), "gather", 2, (int[]){x, ix}, ",\"axis\":%d", axis);
    }
    default: { /* concat (sizes along the axis differ) or stack, x maybe twice */
        bool stack = op == 4;
        int k = td_int(g, 1, 4), a[4];
        nb_tensor *ts[4];
        int sa = stack ? td_int(g, -nd - 1, nd) : axis;
        for (int i = 0; i < k; i++) {
            if (i == 0 || td_chance(g, 0.2)) a[i] = x;
            else {
                size_t s[NB_MAX_DIMS];
                memcpy(s, nb_tensor_shape(T(x)), (size_t)nd * sizeof *s);
                if (!stack) s[axis < 0 ? axis + nd : axis] = (size_t)td_int(g, 1, 3);
                a[i] = td_leaf(g, nd, s, TD_NORMAL, td_chance(g, 0.8));
                if (a[i] < 0) return -1;
            }
        }
        int j = td_int(g, 0, k - 1), t = a[0];
        a[0] = a[j], a[j] = t;
        for (int i = 0; i < k; i++) ts[i] = T(a[i]);
        return td_step(g, stack ? nb_stack(tp, ts, k, sa) : nb_concat(tp, ts, k, sa), stack ? "stack" : "concat", k, a,
                       ",\"axis\":%d", sa);
    }
    }
}
