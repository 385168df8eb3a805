/*
 * A recurrent network composed of ops, unrolled over time: the adding
 * problem.  Each sequence has T steps of two inputs, a random value in
 * [0, 1) and a marker that is 1 at exactly two steps; the answer is the sum
 * of the two marked values.  Guessing 1 (the mean) scores a mean squared
 * error of 1/6; a network that has learned to add scores near 0, and we
 * count a sequence as right when its answer is within 0.05.
 *
 * The cell is a GRU (or, with --cell elman, a plain tanh RNN), written
 * with ordinary ops, one time step at a time:
 *     x_t      = X[:, t, :]                       (slice, squeeze)
 *     [z, r]   = σ([x_t, h] W_zr + b_zr)          (concat, linear, slice)
 *     ĥ        = tanh([x_t, r ⊙ h] W_h + b_h)
 *     h        = (1 − z) ⊙ h + z ⊙ ĥ
 * and the answer is h_T w + c.  Backward runs through every step: the
 * gradient of W at step t is the sum over the steps it was used in.  The
 * program checks that gradient against central differences on a small copy
 * of the network ("gradient through time"), then trains.
 */
#include "cli.h"
#include "nabla_train.h"

#include <math.h>

static const char usage[] =
    "usage: rnn [--cell gru|elman] [--steps T] [--hidden H] [--iters N] [--batch B] [--lr RATE] [--seed S]\n"
    "           [--dot FILE] [--html FILE]\n"
    "Trains a recurrent network on the adding problem and reports its accuracy on fresh sequences.\n"
    "  --cell NAME   gru (default) or elman\n"
    "  --steps T     sequence length (default 20)\n"
    "  --hidden H    hidden units (default 32)\n"
    "  --iters N     training steps (default 3000)\n"
    "  --batch B     sequences per step (default 64)\n"
    "  --lr RATE     Adam's learning rate (default 0.01)\n"
    "  --seed S      random seed (default 1)\n"
    "  --dot FILE    write the graph of the trained cell unrolled over 3 steps as Graphviz dot\n"
    "  --html FILE   write a page that steps through its backward pass, through time\n";

typedef struct {
    bool gru;
    size_t hidden;
    nb_params *ps;
    nb_tensor *W_zr, *b_zr, *W_h, *b_h, *w_out, *c_out; /* elman: W_h, b_h only */
} cell;

static nb_status cell_init(cell *m, nb_dtype dt, nb_rng *rng) {
    size_t H = m->hidden, in = 2 + H;
    if (!(m->ps = nb_params_new())) return NB_ERR_NOMEM;
    if (m->gru) {
        m->W_zr = nb_params_create(m->ps, "W_zr", dt, NB_SHAPE(in, 2 * H), NB_INIT_GLOROT_UNIFORM, in, 2 * H, rng);
        m->b_zr = nb_params_create(m->ps, "b_zr", dt, NB_SHAPE(2 * H), NB_INIT_ZEROS, in, 2 * H, rng);
    }
    m->W_h = nb_params_create(m->ps, "W_h", dt, NB_SHAPE(in, H), NB_INIT_GLOROT_UNIFORM, in, H, rng);
    m->b_h = nb_params_create(m->ps, "b_h", dt, NB_SHAPE(H), NB_INIT_ZEROS, in, H, rng);
    m->w_out = nb_params_create(m->ps, "w_out", dt, NB_SHAPE(H, 1), NB_INIT_GLOROT_UNIFORM, H, 1, rng);
    m->c_out = nb_params_create(m->ps, "c_out", dt, NB_SHAPE(1), NB_INIT_ZEROS, H, 1, rng);
    /* every parameter made: 6 for the GRU, 4 for Elman's cell */
    return nb_params_count(m->ps) == (m->gru ? 6u : 4u) ? NB_OK : nb_last_status();
}

/* t, named for the pictures when step > 0: `pattern` with the step where
 * it says # and the step before where it says ## ("[x<#>, h<##>]" is
 * [x<3>, h<2>]), in the notation of time steps x<t>, h<t> numbered from 1. */
static nb_tensor *named(nb_tensor *t, size_t step, const char *pattern) {
    if (!step) return t;
    char name[128]; /* a picture's names fit NB_NAME_MAX */
    size_t n = 0;
    for (const char *c = pattern; *c && n + 21 < sizeof name;) {
        if (*c != '#') {
            name[n++] = *c++;
            continue;
        }
        bool before = c[1] == '#';
        int w = snprintf(name + n, sizeof name - n, "%zu", before ? step - 1 : step);
        n += w > 0 ? (size_t)w : 0;
        c += before ? 2 : 1;
    }
    name[n] = '\0';
    nb_tensor_set_name(t, name);
    return t;
}

/* One step of the cell: h from x_t (B, 2) and the previous h (B, H); with
 * `step` (1, 2, ...; 0 for none) every tensor named. */
static nb_tensor *step(nb_tape *tp, const cell *m, nb_tensor *x, nb_tensor *h, size_t t) {
    nb_tensor *xh[2] = {x, h};
    nb_tensor *joined = named(nb_concat(tp, xh, 2, 1), t, "[x<#>, h<##>]");
    if (!m->gru)
        return named(nb_tanh(tp, named(nb_linear(tp, joined, m->W_h, m->b_h), t, "Z<#>")), t, "h<#>");
    long H = (long)m->hidden;
    nb_tensor *zr = named(nb_sigmoid(tp, named(nb_linear(tp, joined, m->W_zr, m->b_zr), t, "Z_zr<#>")), t,
                          "zr<#>");
    nb_tensor *z = named(nb_slice(tp, zr, 1, 0, H, 1), t, "z<#>");
    nb_tensor *r = named(nb_slice(tp, zr, 1, H, 2 * H, 1), t, "r<#>");
    nb_tensor *xrh[2] = {x, named(nb_mul(tp, r, h), t, "r<#>⊙h<##>")};
    nb_tensor *joined2 = named(nb_concat(tp, xrh, 2, 1), t, "[x<#>, r⊙h<##>]");
    nb_tensor *candidate =
        named(nb_tanh(tp, named(nb_linear(tp, joined2, m->W_h, m->b_h), t, "Z_h<#>")), t, "ĥ<#>");
    /* h = h + z (ĥ - h), the same as (1 - z) h + z ĥ with one op fewer */
    nb_tensor *change = named(nb_sub(tp, candidate, h), t, "ĥ<#>−h<##>");
    return named(nb_add(tp, h, named(nb_mul(tp, z, change), t, "z⊙(ĥ−h)<#>")), t, "h<#>");
}

/* The answers (B, 1) for sequences X (B, T, 2), unrolled over T steps;
 * with `name` (for the pictures) every tensor named. */
static nb_tensor *run(nb_tape *tp, const cell *m, nb_tensor *X, bool name) {
    size_t B = nb_tensor_dim(X, 0), T = nb_tensor_dim(X, 1);
    nb_tensor *h = named(nb_zeros(tp, nb_tensor_dtype(X), NB_SHAPE(B, m->hidden)), name, "h<0>");
    for (size_t t = 0; t < T; t++) {
        char scope[32];
        snprintf(scope, sizeof scope, "step %zu", t + 1);
        nb_scope_begin(tp, scope);
        nb_tensor *x = named(nb_slice(tp, X, 1, (long)t, (long)t + 1, 1), name ? t + 1 : 0, "X<#>");
        x = named(nb_squeeze(tp, x, 1), name ? t + 1 : 0, "x<#>");
        h = step(tp, m, x, h, name ? t + 1 : 0);
        nb_scope_end(tp);
    }
    return named(nb_linear(tp, h, m->w_out, m->c_out), name, "ŷ");
}

/* B sequences of the adding problem: X (B, T, 2) and their sums y (B, 1). */
static void make_batch(nb_rng *rng, nb_tensor *X, nb_tensor *y) {
    size_t B = nb_tensor_dim(X, 0), T = nb_tensor_dim(X, 1);
    for (size_t b = 0; b < B; b++) {
        size_t first = nb_rng_next(rng) % T, second = nb_rng_next(rng) % (T - 1);
        if (second >= first) second++;
        double sum = 0;
        for (size_t t = 0; t < T; t++) {
            double v = nb_rng_uniform(rng);
            bool marked = t == first || t == second;
            nb_set(X, (b * T + t) * 2, v);
            nb_set(X, (b * T + t) * 2 + 1, marked);
            if (marked) sum += v;
        }
        nb_set(y, b, sum);
    }
}

/* Gradient through time: a 4-step network with 3 hidden units, every
 * parameter checked against central differences in float64. */
typedef struct {
    cell *m;
    nb_tensor *X, *y;
} check_data;

static nb_tensor *check_loss(nb_tape *tp, nb_tensor *const *params, int n, void *user) {
    const check_data *d = user;
    cell m = *d->m;
    nb_tensor **slots[6] = {&m.W_zr, &m.b_zr, &m.W_h, &m.b_h, &m.w_out, &m.c_out};
    for (int k = 0, i = m.gru ? 0 : 2; k < n; k++, i++) *slots[i] = params[k];
    return nb_mse(tp, run(tp, &m, d->X, false), d->y);
}

static int gradient_through_time(bool gru, uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    cell m = {.gru = gru, .hidden = 3};
    check_data d = {&m, nb_zeros(NULL, NB_F64, NB_SHAPE(2, 4, 2)), nb_zeros(NULL, NB_F64, NB_SHAPE(2, 1))};
    int status = 1;
    if (cell_init(&m, NB_F64, &rng) == NB_OK) {
        make_batch(&rng, d.X, d.y);
        /* non-zero biases, so that their gradients are not special */
        for (size_t i = 0; i < nb_params_count(m.ps); i++) {
            nb_tensor *p = nb_params_at(m.ps, i);
            for (size_t j = 0; j < nb_tensor_size(p); j++) nb_set(p, j, nb_get(p, j) + 0.3 * nb_rng_normal(&rng));
        }
        nb_tensor *params[6];
        int n = (int)nb_params_count(m.ps);
        for (int k = 0; k < n; k++) params[k] = nb_params_at(m.ps, (size_t)k);
        nb_gradcheck_result r = nb_gradcheck(check_loss, params, n, &d, NULL);
        printf("gradient through time (%s, 4 steps, 3 units, %zu parameters): %s\n", gru ? "GRU" : "Elman",
               r.checked, r.message);
        status = r.passed ? 0 : 1;
    } else {
        fprintf(stderr, "rnn: %s\n", nb_last_error());
    }
    nb_params_free(m.ps);
    nb_tensor_free(d.X);
    nb_tensor_free(d.y);
    return status;
}

int main(int argc, char **argv) {
    long T = 20, H = 32, iters = 3000, batch = 64, seed = 1;
    double lr = 0.01;
    bool gru = true;
    const char *dot = NULL, *html = NULL;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--cell")) {
            const char *v = cli_value(&c);
            if (v && strcmp(v, "gru") && strcmp(v, "elman")) cli_fail(&c, "unknown cell '%s' (gru or elman)%s", v, "");
            gru = !v || !strcmp(v, "gru");
        } else if (cli_is(&c, "--steps")) T = cli_long(&c, 2, 1000);
        else if (cli_is(&c, "--hidden")) H = cli_long(&c, 1, 4096);
        else if (cli_is(&c, "--iters")) iters = cli_long(&c, 1, 10000000);
        else if (cli_is(&c, "--batch")) batch = cli_long(&c, 1, 100000);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 10);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;
    if (gradient_through_time(gru, (uint64_t)seed)) return 1;

    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    cell m = {.gru = gru, .hidden = (size_t)H};
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    nb_tensor *X = nb_zeros(NULL, NB_F32, NB_SHAPE(batch, T, 2)), *y = nb_zeros(NULL, NB_F32, NB_SHAPE(batch, 1));
    nb_tensor *Xt = nb_zeros(NULL, NB_F32, NB_SHAPE(1000, T, 2)), *yt = nb_zeros(NULL, NB_F32, NB_SHAPE(1000, 1));
    int status = 1;
    if (cell_init(&m, NB_F32, &rng) != NB_OK || nb_tensor_status(Xt) != NB_OK) goto fail;
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_ADAM);
    oo.lr = lr;
    if (!(opt = nb_optimizer_new(m.ps, &oo))) goto fail;
    printf("adding problem: %ld steps per sequence, %s cell with %ld units, batch %ld, Adam lr %g\n", T,
           gru ? "GRU" : "Elman", H, batch, lr);
    printf("guessing 1 every time: mean squared error 0.1667\n");
    for (long it = 1; it <= iters; it++) {
        make_batch(&rng, X, y);
        nb_tape_reset(tp);
        nb_params_zero_grad(m.ps);
        nb_tensor *loss = nb_mse(tp, run(tp, &m, X, false), y);
        if (nb_backward(loss) != NB_OK) goto fail;
        nb_clip_grad_norm(m.ps, 1.0);
        if (nb_optimizer_step(opt) != NB_OK) goto fail;
        if (it % (iters / 10 > 0 ? iters / 10 : 1) == 0 || it == 1)
            printf("step %6ld  mean squared error %.4f\n", it, nb_item(loss));
    }
    /* fresh sequences, never seen in training */
    make_batch(&rng, Xt, yt);
    nb_tape_reset(tp);
    bool was = nb_tape_set_grad_enabled(tp, false);
    nb_tensor *answer = run(tp, &m, Xt, false);
    nb_tape_set_grad_enabled(tp, was);
    if (nb_tape_status(tp) != NB_OK) goto fail;
    size_t right = 0;
    double sq = 0;
    for (size_t i = 0; i < 1000; i++) {
        double e = nb_get(answer, i) - nb_get(yt, i);
        sq += e * e;
        right += fabs(e) < 0.05;
    }
    printf("test: mean squared error %.4f, accuracy %.3f (answers within 0.05 of the sum, 1000 new sequences)\n",
           sq / 1000, (double)right / 1000);
    status = 0;
    if (dot || html) {
        /* The pictures: the trained cell on 2 new sequences of 3 steps, one
         * cluster per step, laid out top to bottom so that time runs down
         * the page.  Three steps are the fewest that show backpropagation
         * through time whole: the middle step gets its gradient through
         * h<2> from the step after it and passes it on to the step before,
         * and each weight, used once a step, sums 3 contributions (its
         * "3 uses").  More steps only repeat the middle one. */
        nb_tape_reset(tp);
        nb_tensor *small = nb_zeros(tp, NB_F32, NB_SHAPE(2, 3, 2)), *sums = nb_zeros(tp, NB_F32, NB_SHAPE(2, 1));
        if (nb_tape_status(tp) != NB_OK) goto fail;
        make_batch(&rng, small, sums);
        nb_tensor_set_name(small, "X");
        nb_tensor_set_name(sums, "y");
        nb_tensor *loss = nb_mse(tp, run(tp, &m, small, true), sums);
        nb_tensor_set_name(loss, "E");
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.clusters = true;
        o.show_values = false;
        o.rankdir = "TB";
        char title[256];
        snprintf(title, sizeof title,
                 "A %s cell unrolled over 3 time steps (2 sequences of the adding problem, %zu units), the gradient "
                 "through time before an update; h<t> is the state after step t, x<t> the input at step t",
                 gru ? "GRU" : "Elman", m.hidden);
        o.title = title;
        if (nb_backward(loss) != NB_OK) goto fail;
        if (write_pictures(tp, loss, &o, dot, html) != 0) { /* it printed why */
            status = 1;
            goto done;
        }
    }
    goto done;
fail:
    fprintf(stderr, "rnn: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
    status = 1;
done:
    nb_optimizer_free(opt);
    nb_params_free(m.ps);
    nb_tape_free(tp);
    nb_tensor_free(X);
    nb_tensor_free(y);
    nb_tensor_free(Xt);
    nb_tensor_free(yt);
    return status;
}
