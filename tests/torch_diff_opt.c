/* torch_diff's optimizer runs and refusal checks.
 *
 * An optimizer run: a parameter w, the loss
 *   L(w) = sum(A (w - c)² / 2 + 0.1 sin(3 w))
 * (A > 0), ITERS steps of zeroing, backward, optionally clipping the
 * gradient's norm, setting the learning rate from a schedule and
 * nb_optimizer_step; the line holds the options, w before and after, and
 * each step's learning rate, clipping norm and w after it (torch_diff.py
 * takes each step from nabla's w before it).
 *
 * A refusal check: a call the README's differences table (or the header)
 * says nabla refuses, with the status nabla gave; torch_diff.py holds what
 * each should be. */
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITERS 50

static double unif(nb_rng *r, double lo, double hi) { return lo + (hi - lo) * nb_rng_uniform(r); }

static void values(FILE *f, const nb_tensor *t) {
    fputc('[', f);
    for (size_t i = 0; i < nb_tensor_size(t); i++) fprintf(f, i ? ",%.17g" : "%.17g", nb_get(t, i));
    fputc(']', f);
}

static int one_run(FILE *f, uint64_t seed, int run) {
    nb_rng rng;
    nb_rng_seed(&rng, seed * 7919u + (uint64_t)run + 1);
    nb_dtype dt = run % 2 ? NB_F32 : NB_F64;
    nb_optimizer_kind kind = (nb_optimizer_kind)(run / 2 % 5);
    size_t n = (size_t)(1 + nb_rng_next(&rng) % 12);
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_rand_normal(NULL, &rng, dt, 1, &n, 0, 1));
    nb_tensor *A = nb_rand_uniform(NULL, &rng, dt, 1, &n, 0.2, 3);
    nb_tensor *c = nb_rand_normal(NULL, &rng, dt, 1, &n, 0, 1);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    o.lr = kind == NB_OPT_ADAM || kind == NB_OPT_ADAMW ? unif(&rng, 0.001, 0.1) : unif(&rng, 0.001, 0.2);
    if (kind == NB_OPT_MOMENTUM) o.momentum = unif(&rng, 0, 0.95);
    if (kind == NB_OPT_ADAM || kind == NB_OPT_ADAMW) o.beta1 = unif(&rng, 0.5, 0.95);
    if (kind != NB_OPT_SGD && kind != NB_OPT_MOMENTUM) o.beta2 = unif(&rng, 0.8, 0.999);
    if (nb_rng_uniform(&rng) < 0.5) o.eps = unif(&rng, 1e-8, 1e-3);
    if (nb_rng_uniform(&rng) < 0.5) o.weight_decay = unif(&rng, 0, 0.1);
    nb_schedule sch = {.kind = (nb_schedule_kind)(nb_rng_next(&rng) % 3), .base_lr = o.lr,
                       .step_size = (long)(1 + nb_rng_next(&rng) % 15), .gamma = unif(&rng, 0.3, 0.95),
                       .total = ITERS + (long)(nb_rng_next(&rng) % 20), .min_lr = o.lr * unif(&rng, 0, 0.5)};
    double clip = nb_rng_uniform(&rng) < 0.3 ? unif(&rng, 0.1, 3) : 0;
    fprintf(f, "{\"kind\":\"optimizer\",\"run\":%d,\"dtype\":\"%s\",\"optimizer\":\"%s\",\"lr\":%.17g,\"momentum\":%.17g,"
            "\"beta1\":%.17g,\"beta2\":%.17g,\"eps\":%.17g,\"weight_decay\":%.17g,\"schedule\":%d,\"step_size\":%ld,"
            "\"gamma\":%.17g,\"total\":%ld,\"min_lr\":%.17g,\"clip\":%.17g,\"iters\":%d,\"A\":",
            run, dt == NB_F32 ? "float32" : "float64", nb_optimizer_name(kind), o.lr, o.momentum, o.beta1, o.beta2, o.eps,
            o.weight_decay, (int)sch.kind, sch.step_size, sch.gamma, sch.total, sch.min_lr, clip, ITERS);
    values(f, A);
    fputs(",\"c\":", f);
    values(f, c);
    fputs(",\"w0\":", f);
    values(f, w);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    int bad = 0;
    char *ws = NULL; /* each step's w after it */
    size_t ws_len = 0;
    FILE *wf = open_memstream(&ws, &ws_len);
    if (!wf) bad = 1;
    fputs(",\"lrs\":[", f);
    char norms[ITERS * 26 + 4] = "";
    size_t nl = 0;
    for (int it = 0; it < ITERS && opt; it++) {
        nb_tape_reset(tp);
        nb_params_zero_grad(ps);
        nb_tensor *d = nb_sub(tp, w, c);
        nb_tensor *loss = nb_add(tp, nb_scale(tp, nb_sum(tp, nb_mul(tp, A, nb_square(tp, d))), 0.5),
                                 nb_scale(tp, nb_sum(tp, nb_sin(tp, nb_scale(tp, w, 3))), 0.1));
        if (nb_backward(loss) != NB_OK) bad = 1;
        if (clip > 0) nl += (size_t)snprintf(norms + nl, sizeof norms - nl, "%s%.17g", it ? "," : "", nb_clip_grad_norm(ps, clip));
        double lr = nb_schedule_lr(&sch, it);
        nb_optimizer_set_lr(opt, lr);
        fprintf(f, it ? ",%.17g" : "%.17g", lr);
        if (nb_optimizer_step(opt) != NB_OK) bad = 1;
        if (wf) {
            if (it) fputc(',', wf);
            values(wf, w);
        }
    }
    if (wf) fclose(wf);
    fprintf(f, "],\"ws\":[%s", ws ? ws : "");
    free(ws);
    fprintf(f, "],\"norms\":[%s],\"w\":", norms);
    values(f, w);
    fprintf(f, ",\"ok\":%s}\n", bad || !opt ? "false" : "true");
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    nb_tensor_free(A);
    nb_tensor_free(c);
    return 0;
}

int td_optimizers(FILE *out, uint64_t seed, int runs);
int td_optimizers(FILE *out, uint64_t seed, int runs) {
    int bad = 0;
    for (int r = 0; r < runs; r++) bad += one_run(out, seed, r);
    return bad;
}

static void refusal(FILE *f, const char *what, nb_status st) {
    fprintf(f, "{\"kind\":\"refusal\",\"what\":\"%s\",\"status\":\"%s\"}\n", what, nb_status_string(st));
}

static nb_status status_of(const nb_tensor *t) { return nb_tensor_status(t); }

int td_refusals(FILE *f);
int td_refusals(FILE *f) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){1, -2, 3, 0.5, 4, -1}));
    nb_tensor *x32 = nb_cast(tp, x, NB_F32);
    nb_requires_grad(x, true);
    refusal(f, "empty_slice", status_of(nb_slice(tp, x, 1, 2, 1, 1)));
    refusal(f, "empty_zeros", status_of(nb_zeros(tp, NB_F64, NB_SHAPE(2, 0))));
    refusal(f, "empty_index_select", status_of(nb_index_select(tp, x, 0, (size_t[]){0}, 0)));
    refusal(f, "empty_reshape", status_of(nb_reshape(tp, x, NB_DIMS(0, 6))));
    refusal(f, "mixed_dtypes", status_of(nb_add(tp, x, x32)));
    refusal(f, "gather_fraction", status_of(nb_gather(tp, x, 1, nb_from_array(tp, NB_F64, NB_SHAPE(2, 1), ((double[]){0.5, 1})))));
    refusal(f, "ce_fraction", status_of(nb_softmax_cross_entropy(tp, x, nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){0, 1.5})), 1)));
    refusal(f, "clamp_reversed", status_of(nb_clamp(tp, x, 1, -1)));
    refusal(f, "clamp_nan", status_of(nb_clamp(tp, x, NAN, 1)));
    refusal(f, "var_correction", status_of(nb_var_axis(tp, x, 1, false, 3)));
    /* a value written between an op and its backward: refused by every pass
     * (on a tape without errors: a tape's first error stops its later ops) */
    nb_tensor *leaf = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0.5, 1, 2}));
    nb_requires_grad(leaf, true);
    nb_tensor *y, *gr = NULL, *hv = NULL, *jv = NULL, *v;
#define WRITTEN() (nb_tape_reset(tp), y = nb_sum(tp, nb_sin(tp, leaf)), v = nb_ones(tp, NB_F64, NB_SHAPE(3)), \
                   nb_set(leaf, 0, nb_get(leaf, 0) + 0.25))
    WRITTEN();
    refusal(f, "write_backward", nb_backward(y));
    WRITTEN();
    refusal(f, "write_grad", nb_grad(y, &leaf, 1, &gr, false));
    WRITTEN();
    refusal(f, "write_grad_create_graph", nb_grad(y, &leaf, 1, &gr, true));
    WRITTEN();
    refusal(f, "write_hvp", nb_hvp(y, &leaf, 1, &v, &hv));
    WRITTEN();
    refusal(f, "write_jvp", nb_jvp(y, &leaf, 1, &v, &jv));
    /* nb_jvp's arguments */
    nb_tape_reset(tp);
    y = nb_sin(tp, leaf);
    nb_tensor *wrong = nb_ones(tp, NB_F64, NB_SHAPE(2)), *w32 = nb_ones(tp, NB_F32, NB_SHAPE(3));
    refusal(f, "jvp_tangent_shape", nb_jvp(y, &leaf, 1, &wrong, &jv));
    refusal(f, "jvp_tangent_dtype", nb_jvp(y, &leaf, 1, &w32, &jv));
    refusal(f, "jvp_no_tangents", nb_jvp(y, &leaf, 1, NULL, &jv));
    refusal(f, "jvp_no_result", nb_jvp(y, &leaf, 1, &v, NULL));
    refusal(f, "jvp_n_zero", nb_jvp(y, &leaf, 0, &v, &jv));
    refusal(f, "hvp_vector_shape", nb_hvp(nb_sum(tp, y), &leaf, 1, &wrong, &hv));
    /* nb_clip_grad_norm: a bound that is not positive, a NaN norm */
    nb_params *ps = nb_params_new();
    nb_tensor *p = nb_params_add(ps, "p", nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 2})));
    nb_tape_reset(tp);
    nb_backward(nb_sum(tp, nb_square(tp, p))); /* gradient 2, 4 */
    double r0 = nb_clip_grad_norm(ps, 0);
    fprintf(f, "{\"kind\":\"clip\",\"what\":\"clip_zero\",\"returned\":%s,\"status\":\"%s\",\"grad\":[%.17g,%.17g]}\n",
            isnan(r0) ? "NaN" : "0", nb_status_string(nb_last_status()), nb_grad_get(p, 0), nb_grad_get(p, 1));
    ((double *)nb_grad_data(p))[0] = NAN;
    double r1 = nb_clip_grad_norm(ps, 1);
    fprintf(f, "{\"kind\":\"clip\",\"what\":\"clip_nan_norm\",\"returned\":%s,\"status\":\"OK\",\"grad\":[%s,%.17g]}\n",
            isnan(r1) ? "NaN" : "0", isnan(nb_grad_get(p, 0)) ? "NaN" : "0", nb_grad_get(p, 1));
    nb_params_free(ps);
    nb_tensor_free(leaf);
    nb_tape_free(tp);
    return 0;
}
