/*
 * Recomputation (nb_recompute) against keeping everything, in tape memory
 * and time (issue 23):
 *  - the projectile of bench/projectile.h over N steps, in segments of
 *    `per` steps (sqrt(N) gives O(sqrt N) memory: N/per segment states
 *    kept, one segment's ops recorded at a time in backward);
 *  - a deep MLP's training step (tanh layers, mean square loss), in
 *    segments of `per` layers.
 * Prints, for one mode per process (so that the peak RSS is that mode's):
 * the median thread CPU time of a gradient (reset, record, backward) over R
 * runs on a warm tape, the tape's memory (nb_tape_memory: it never
 * shrinks, so this is its peak), the process's peak RSS, the entries
 * recorded, and the gradients (to 17 digits, to compare the modes).
 *
 *   bench_recompute --what projectile|mlp [--per K] [--inner J] [--steps N]
 *                   [--layers L] [--width W] [--batch B] [--reps R] [--csv]
 * --per 0 (the default) records everything; --inner J makes each MLP
 * segment of checkpoints of J layers (nested checkpoints).  --csv prints one line:
 *   what,per,n,ms,tape bytes,max rss KB,entries,g0,g1
 */
#include "bench_common.h"
#include "nabla.h"
#include "projectile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* ---------------------------------------------------------------- projectile */

static void steps(nb_tape *tp, nb_tensor **s, int n) {
    nb_tensor *x = s[0], *y = s[1], *vx = s[2], *vy = s[3];
    for (int i = 0; i < n; i++) {
        nb_tensor *v = nb_sqrt(tp, nb_add(tp, nb_mul(tp, vx, vx), nb_mul(tp, vy, vy)));
        nb_tensor *kv = nb_scale(tp, v, -PROJ_K);
        nb_tensor *ax = nb_mul(tp, kv, vx), *ay = nb_add_scalar(tp, nb_mul(tp, kv, vy), -PROJ_G);
        x = nb_add(tp, x, nb_scale(tp, vx, PROJ_DT));
        y = nb_add(tp, y, nb_scale(tp, vy, PROJ_DT));
        vx = nb_add(tp, vx, nb_scale(tp, ax, PROJ_DT));
        vy = nb_add(tp, vy, nb_scale(tp, ay, PROJ_DT));
    }
    s[0] = x, s[1] = y, s[2] = vx, s[3] = vy;
}

static nb_status segment(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    for (int k = 0; k < 4; k++) out[k] = in[k];
    steps(tp, out, *(const int *)ctx);
    return NB_OK;
}

static nb_tensor *projectile(nb_tape *tp, nb_tensor *theta, nb_tensor *speed, int n, int per, int *lengths) {
    nb_tensor *s[4] = {nb_scalar(tp, NB_F64, 0), nb_scalar(tp, NB_F64, 0), nb_mul(tp, speed, nb_cos(tp, theta)),
                       nb_mul(tp, speed, nb_sin(tp, theta))};
    if (!per) {
        steps(tp, s, n);
    } else {
        for (int done = 0, k = 0; done < n; done += lengths[k++]) {
            lengths[k] = n - done < per ? n - done : per;
            nb_tensor *in[4] = {s[0], s[1], s[2], s[3]};
            if (nb_recompute(tp, segment, &lengths[k], in, 4, s, 4, NULL) != NB_OK) return s[0];
        }
    }
    return nb_add(tp, s[0], s[1]);
}

/* ---------------------------------------------------------------- MLP */

typedef struct layer_range {
    int first, count;
    int inner;                      /* > 0: the segment is itself made of checkpoints of this many layers */
    struct layer_range *parts;      /* theirs, [count / inner + 1] */
} layer_range;

static nb_tensor *layers(nb_tape *tp, nb_tensor *h, nb_tensor *const *W, nb_tensor *const *b, int count) {
    for (int l = 0; l < count; l++) h = nb_tanh(tp, nb_linear(tp, h, W[l], b[l]));
    return h;
}

/* inputs: h, then each layer's W and b */
static nb_status mlp_segment(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    layer_range *r = ctx;
    if (!r->inner) {
        nb_tensor *W[256], *b[256];
        for (int l = 0; l < r->count; l++) W[l] = in[1 + 2 * l], b[l] = in[2 + 2 * l];
        out[0] = layers(tp, in[0], W, b, r->count);
        return NB_OK;
    }
    nb_tensor *h = in[0], *part[1 + 2 * 256];
    for (int first = 0, s = 0; first < r->count; first += r->inner, s++) {
        r->parts[s] = (layer_range){first, r->count - first < r->inner ? r->count - first : r->inner, 0, NULL};
        part[0] = h;
        memcpy(part + 1, in + 1 + 2 * first, (size_t)(2 * r->parts[s].count) * sizeof *part);
        nb_status st = nb_recompute(tp, mlp_segment, &r->parts[s], part, 1 + 2 * r->parts[s].count, &h, 1, NULL);
        if (st != NB_OK) return st;
    }
    out[0] = h;
    return NB_OK;
}

static nb_tensor *mlp_loss(nb_tape *tp, nb_tensor **W, nb_tensor **b, nb_tensor *x, int L, int per, int inner,
                           layer_range *ranges, layer_range *parts, nb_tensor **in) {
    nb_tensor *h = x;
    if (!per) {
        h = layers(tp, h, W, b, L);
    } else {
        for (int first = 0, s = 0; first < L; first += per, s++) {
            ranges[s] = (layer_range){first, L - first < per ? L - first : per, inner, parts + (size_t)s * 257};
            in[0] = h;
            for (int l = 0; l < ranges[s].count; l++) in[1 + 2 * l] = W[first + l], in[2 + 2 * l] = b[first + l];
            if (nb_recompute(tp, mlp_segment, &ranges[s], in, 1 + 2 * ranges[s].count, &h, 1, NULL) != NB_OK)
                return h;
        }
    }
    return nb_mean(tp, nb_square(tp, h));
}

/* ---------------------------------------------------------------- main */

static long max_rss_kb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

int main(int argc, char **argv) {
    const char *what = "projectile";
    int per = 0, inner = 0, n = 100000, L = 32, width = 512, batch = 256, reps = 5;
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--what") && i + 1 < argc) what = argv[++i];
        else if (!strcmp(argv[i], "--per") && i + 1 < argc) per = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--inner") && i + 1 < argc) inner = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--width") && i + 1 < argc) width = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else {
            fprintf(stderr, "usage: bench_recompute --what projectile|mlp [--per K] [--inner J] [--steps N] "
                            "[--layers L] [--width W] [--batch B] [--reps R] [--csv]\n");
            return 2;
        }
    }
    bool mlp = !strcmp(what, "mlp");
    if ((!mlp && strcmp(what, "projectile")) || per < 0 || inner < 0 || n < 1 || L < 1 || L > 256 || width < 1 ||
        batch < 1 ||
        reps < 1 || reps > 1000) {
        fprintf(stderr, "bench_recompute: bad arguments\n");
        return 2;
    }
    nb_tape *tp = nb_tape_new();
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_tensor *theta = nb_scalar(NULL, NB_F64, PROJ_THETA), *speed = nb_scalar(NULL, NB_F64, PROJ_SPEED);
    nb_tensor *W[256], *b[256], *x = NULL, *in[1 + 2 * 256];
    layer_range ranges[256];
    layer_range *parts = malloc(256 * 257 * sizeof *parts);
    int *lengths = malloc(((size_t)n / (per ? (size_t)per : 1) + 2) * sizeof *lengths);
    if (mlp) {
        for (int l = 0; l < L; l++) {
            W[l] = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE((size_t)width, (size_t)width), 0, 1 / sqrt(width));
            b[l] = nb_zeros(NULL, NB_F32, NB_SHAPE((size_t)width));
            nb_requires_grad(W[l], true);
            nb_requires_grad(b[l], true);
        }
        x = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE((size_t)batch, (size_t)width), 0, 1);
    } else {
        nb_requires_grad(theta, true);
        nb_requires_grad(speed, true);
    }
    double *ms = malloc((size_t)reps * sizeof *ms), g[2] = {0, 0};
    size_t entries = 0;
    for (int r = -1; r < reps; r++) { /* one warm-up run */
        nb_tape_reset(tp);
        double t0 = thread_cpu_seconds();
        nb_tensor *out = mlp ? mlp_loss(tp, W, b, x, L, per, inner, ranges, parts, in)
                             : projectile(tp, theta, speed, n, per, lengths);
        entries = nb_tape_size(tp);
        if (nb_backward(out) != NB_OK) {
            fprintf(stderr, "bench_recompute: %s\n", nb_last_error());
            return 1;
        }
        double t1 = thread_cpu_seconds();
        if (r >= 0) ms[r] = (t1 - t0) * 1e3;
        g[0] = mlp ? nb_grad_get(W[0], 0) : nb_grad_get(theta, 0);
        g[1] = mlp ? nb_grad_get(b[L - 1], 0) : nb_grad_get(speed, 0);
        if (mlp)
            for (int l = 0; l < L; l++) nb_zero_grad(W[l]), nb_zero_grad(b[l]);
        else
            nb_zero_grad(theta), nb_zero_grad(speed);
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    double med = ms[reps / 2];
    size_t tape = nb_tape_memory(tp);
    long rss = max_rss_kb();
    int size = mlp ? L : n;
    if (csv)
        printf("%s,%d,%d,%.6f,%zu,%ld,%zu,%.17g,%.17g\n", what, per, size, med, tape, rss, entries, g[0], g[1]);
    else
        printf("%s, %d %s, %s: %.3f ms per gradient, tape %.1f MB, peak RSS %.1f MB, %zu entries; "
               "gradients %.17g, %.17g\n", what, size, mlp ? "layers" : "steps",
               per ? "in segments" : "everything kept", med, (double)tape / 1e6, (double)rss / 1e3, entries, g[0],
               g[1]);
    free(ms);
    free(lengths);
    free(parts);
    if (mlp) {
        for (int l = 0; l < L; l++) nb_tensor_free(W[l]), nb_tensor_free(b[l]);
        nb_tensor_free(x);
    }
    nb_tensor_free(theta);
    nb_tensor_free(speed);
    nb_tape_free(tp);
    return 0;
}
