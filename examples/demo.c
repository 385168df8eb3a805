/*
 * nabla's demo: a multi-layer perceptron composed from ops learns to tell
 * two interleaved spirals apart.  It trains with Adam while a progress bar
 * runs, checks its gradients against finite differences, then saves a
 * picture of the decision boundary and the rendered computation graph.
 *
 *   build/examples/demo [--out DIR] [--epochs N] [--hidden H] [--lr RATE] [--seed S]
 */
#include "cli.h"
#include "nabla_train.h"
#include "png.h"

#include <math.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: demo [--out DIR] [--epochs N] [--hidden H] [--lr RATE] [--seed S] [--html FILE]\n"
    "Trains a 2-H-H-1 network on two spirals, gradient-checks it, and writes\n"
    "DIR/boundary.png (the decision boundary), DIR/graph.dot and DIR/graph.svg,\n"
    "DIR/backward.html (the backward pass, step by step) and DIR/history.csv.\n"
    "  --out DIR    where to write the pictures (default build/demo)\n"
    "  --epochs N   passes over the data (default 300)\n"
    "  --hidden H   units per hidden layer (default 32)\n"
    "  --lr RATE    Adam's learning rate (default 0.01)\n"
    "  --seed S     seed for data, initialisation and shuffling (default 1)\n"
    "  --html FILE  where to write the backward stepper (default DIR/backward.html)\n";

enum { POINTS = 400, BATCH = 40 };

/* Two spirals, one per class: r grows with the angle, class 1 is turned by
 * pi; a little noise blurs the arms. */
static void make_spirals(nb_rng *rng, nb_tensor *X, nb_tensor *y) {
    for (size_t i = 0; i < POINTS; i++) {
        int label = (int)(i % 2);
        double t = 0.25 + 3.0 * nb_rng_uniform(rng); /* 0.25 to 3.25 radians of turn, scaled */
        double angle = 1.75 * t * 3.14159265358979 / 1.5 + (label ? 3.14159265358979 : 0);
        double r = t / 3.25;
        nb_set(X, 2 * i, r * cos(angle) + 0.02 * nb_rng_normal(rng));
        nb_set(X, 2 * i + 1, r * sin(angle) + 0.02 * nb_rng_normal(rng));
        nb_set(y, i, label);
    }
}

typedef struct { nb_tensor *W1, *b1, *W2, *b2, *W3, *b3; } model;

/* logits Z[3] (m, 1) for points X (m, 2), a layer a row of examples:
 *   A[l] = tanh(Z[l]),  Z[l] = A[l-1] W[l] + b[l],  A[0] = X */
static nb_tensor *forward(nb_tape *tp, nb_tensor *const *p, nb_tensor *X, bool name) {
    nb_tensor *A = X, *Z = NULL;
    for (int l = 1; l <= 3; l++) {
        char label[16];
        snprintf(label, sizeof label, l < 3 ? "layer %d" : "output layer", l);
        nb_scope_begin(tp, label);
        Z = nb_linear(tp, A, p[2 * l - 2], p[2 * l - 1]);
        if (l < 3) A = nb_tanh(tp, Z);
        nb_scope_end(tp);
        if (name) {
            snprintf(label, sizeof label, "Z[%d]", l);
            nb_tensor_set_name(Z, label);
            snprintf(label, sizeof label, "A[%d]", l);
            if (l < 3) nb_tensor_set_name(A, label);
        }
    }
    return Z;
}

/* For gradcheck: the loss as a function of the parameters (float64 copies
 * inside gradcheck), on a fixed small batch passed through `user`. */
typedef struct { nb_tensor *X, *y; } batch;

static nb_tensor *loss_of_params(nb_tape *tp, nb_tensor *const *params, int n, void *user) {
    (void)n;
    batch *b = user;
    nb_dtype dt = nb_tensor_dtype(params[0]);
    return nb_bce_logits(tp, forward(tp, params, nb_cast(tp, b->X, dt), false), nb_cast(tp, b->y, dt));
}

/* The decision boundary: the model's probability of class 1 over a grid,
 * blue to orange, with the training points drawn on top. */
static int draw_boundary(nb_tape *tp, nb_tensor *const *p, nb_tensor *X, nb_tensor *y, const char *path) {
    enum { SIZE = 400 };
    const double lo = -1.2, hi = 1.2;
    unsigned char *rgb = malloc(3 * SIZE * SIZE);
    if (!rgb) return -1;
    for (int row = 0; row < SIZE; row++) {
        nb_tape_reset(tp);
        bool was = nb_tape_set_grad_enabled(tp, false);
        nb_tensor *grid = nb_empty(tp, NB_F32, NB_SHAPE(SIZE, 2));
        for (int col = 0; col < SIZE; col++) {
            nb_set(grid, 2 * (size_t)col, lo + (hi - lo) * (col + 0.5) / SIZE);
            nb_set(grid, 2 * (size_t)col + 1, hi - (hi - lo) * (row + 0.5) / SIZE);
        }
        nb_tensor *prob = nb_sigmoid(tp, forward(tp, p, grid, false));
        nb_tape_set_grad_enabled(tp, was);
        for (int col = 0; col < SIZE; col++) {
            double q = nb_get(prob, (size_t)col);
            if (isnan(q)) q = 0.5;
            unsigned char *px = rgb + 3 * ((size_t)row * SIZE + (size_t)col);
            /* class 0 light blue (166, 206, 227), class 1 light orange (253, 191, 111) */
            px[0] = (unsigned char)(166 + q * (253 - 166));
            px[1] = (unsigned char)(206 + q * (191 - 206));
            px[2] = (unsigned char)(227 + q * (111 - 227));
        }
    }
    for (size_t i = 0; i < POINTS; i++) {
        int cx = (int)((nb_get(X, 2 * i) - lo) / (hi - lo) * SIZE);
        int cy = (int)((hi - nb_get(X, 2 * i + 1)) / (hi - lo) * SIZE);
        bool one = nb_get(y, i) > 0.5;
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++) {
                int px = cx + dx, py = cy + dy;
                if (px < 0 || py < 0 || px >= SIZE || py >= SIZE || dx * dx + dy * dy > 5) continue;
                unsigned char *o = rgb + 3 * ((size_t)py * SIZE + (size_t)px);
                o[0] = one ? 230 : 31;
                o[1] = one ? 85 : 120;
                o[2] = one ? 13 : 180;
            }
    }
    int rc = png_write(path, rgb, SIZE, SIZE);
    free(rgb);
    return rc;
}

int main(int argc, char **argv) {
    const char *out = "build/demo", *html = NULL;
    long epochs = 300, hidden = 32, seed = 1;
    double lr = 0.01;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--out")) out = cli_value(&c);
        else if (cli_is(&c, "--epochs")) epochs = cli_long(&c, 1, 1000000);
        else if (cli_is(&c, "--hidden")) hidden = cli_long(&c, 1, 4096);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 10);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;
    char boundary_path[4096], dot_path[4096], svg_path[4096], history_path[4096], html_path[4096];
    if (!cli_join(boundary_path, sizeof boundary_path, "demo", out, "boundary.png") ||
        !cli_join(dot_path, sizeof dot_path, "demo", out, "graph.dot") ||
        !cli_join(svg_path, sizeof svg_path, "demo", out, "graph.svg") ||
        !cli_join(history_path, sizeof history_path, "demo", out, "history.csv") ||
        !cli_join(html_path, sizeof html_path, "demo", out, "backward.html"))
        return 1;
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "demo: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    const char *page = html ? html : html_path;

    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    nb_tensor *X = nb_zeros(NULL, NB_F32, NB_SHAPE(POINTS, 2)), *y = nb_zeros(NULL, NB_F32, NB_SHAPE(POINTS, 1));
    make_spirals(&rng, X, y);
    nb_tensor_set_name(X, "X");
    nb_tensor_set_name(y, "y");

    size_t H = (size_t)hidden;
    nb_params *ps = nb_params_new();
    nb_params_create(ps, "W[1]", NB_F32, NB_SHAPE(2, H), NB_INIT_GLOROT_UNIFORM, 2, H, &rng);
    nb_params_create(ps, "b[1]", NB_F32, NB_SHAPE(H), NB_INIT_ZEROS, 2, H, &rng);
    nb_params_create(ps, "W[2]", NB_F32, NB_SHAPE(H, H), NB_INIT_GLOROT_UNIFORM, H, H, &rng);
    nb_params_create(ps, "b[2]", NB_F32, NB_SHAPE(H), NB_INIT_ZEROS, H, H, &rng);
    nb_params_create(ps, "W[3]", NB_F32, NB_SHAPE(H, 1), NB_INIT_GLOROT_UNIFORM, H, 1, &rng);
    nb_params_create(ps, "b[3]", NB_F32, NB_SHAPE(1), NB_INIT_ZEROS, H, 1, &rng);
    nb_tensor *p[6];
    for (int i = 0; i < 6; i++) p[i] = nb_params_at(ps, (size_t)i);
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_ADAM);
    oo.lr = lr;
    nb_optimizer *opt = nb_optimizer_new(ps, &oo);
    nb_tape *tp = nb_tape_new();
    nb_batcher batches;
    nb_batcher_init(&batches, POINTS, BATCH, &rng);
    nb_progress *progress = nb_progress_new(stderr, epochs, (long)nb_batcher_batches(&batches), false);
    int status = 1;
    if (!opt || !tp || !progress || nb_params_count(ps) != 6) {
        fprintf(stderr, "demo: %s\n", nb_last_error());
        goto done;
    }

    printf("Training a 2-%zu-%zu-1 network (tanh) on %d points of two spirals with Adam (lr %g)\n", H, H,
           POINTS, lr);
    uint64_t allocations_after_first_epoch = 0;
    for (long epoch = 1; epoch <= epochs; epoch++) {
        if (epoch == 2) allocations_after_first_epoch = nb_alloc_count();
        const size_t *idx;
        size_t count, seen = 0;
        double loss_sum = 0, right = 0;
        long step = 0;
        while (nb_batcher_next(&batches, &idx, &count)) {
            nb_tape_reset(tp);
            nb_params_zero_grad(ps);
            nb_tensor *Xb = nb_gather_rows(tp, X, idx, count), *yb = nb_gather_rows(tp, y, idx, count);
            nb_tensor *logits = forward(tp, p, Xb, false);
            nb_tensor *loss = nb_bce_logits(tp, logits, yb);
            if (nb_backward(loss) != NB_OK || nb_optimizer_step(opt) != NB_OK) {
                fprintf(stderr, "demo: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
                goto done;
            }
            loss_sum += nb_item(loss) * (double)count;
            right += nb_accuracy_binary(logits, yb, 0) * (double)count;
            seen += count;
            nb_progress_step(progress, epoch, step++, loss_sum / (double)seen, right / (double)seen, count);
        }
        if (epoch % 25 == 0 || epoch == epochs)
            nb_progress_epoch(progress, epoch, loss_sum / (double)seen, right / (double)seen, NAN);
    }
    printf("Allocations during epochs 2 to %ld: %llu\n", epochs,
           (unsigned long long)(nb_alloc_count() - allocations_after_first_epoch));

    /* The trained network on the whole set, then its gradients checked
     * against finite differences in float64 on a few points (the pictures
     * colour each parameter's border by its worst error). */
    nb_tape_reset(tp);
    nb_tensor *logits = forward(tp, p, X, false);
    printf("Final loss %.4f, accuracy %.3f on all %d points\n", nb_item(nb_bce_logits(tp, logits, y)),
           nb_accuracy_binary(logits, y, 0), POINTS);
    batch small = {nb_zeros(NULL, NB_F32, NB_SHAPE(6, 2)), nb_zeros(NULL, NB_F32, NB_SHAPE(6, 1))};
    for (size_t i = 0; i < 6; i++) {
        nb_set(small.X, 2 * i, nb_get(X, 2 * i));
        nb_set(small.X, 2 * i + 1, nb_get(X, 2 * i + 1));
        nb_set(small.y, i, nb_get(y, i));
    }
    double errors[6];
    nb_gradcheck_opts gopts;
    nb_gradcheck_default_opts(&gopts);
    gopts.input_errors = errors;
    nb_gradcheck_result r = nb_gradcheck(loss_of_params, p, 6, &small, &gopts);
    printf("%s\n", r.message);
    if (!r.passed) {
        nb_tensor_free(small.X);
        nb_tensor_free(small.y);
        goto done;
    }

    /* The pictures: one step on a batch of three points, small enough to
     * check its numbers by hand, with the same options for the graph and the
     * page that steps through its backward pass. */
    nb_tape_reset(tp);
    nb_params_zero_grad(ps);
    nb_tape_set_explain(tp, true);
    const size_t picture_rows[3] = {0, 1, 2};
    nb_tensor *Xp = nb_gather_rows(tp, small.X, picture_rows, 3), *yp = nb_gather_rows(tp, small.y, picture_rows, 3);
    nb_tensor_set_name(Xp, "X");
    nb_tensor_set_name(yp, "y");
    nb_tensor *loss = nb_bce_logits(tp, forward(tp, p, Xp, true), yp);
    nb_tensor_set_name(loss, "E");
    nb_tensor_free(small.X);
    nb_tensor_free(small.y);
    if (nb_backward(loss) != NB_OK) {
        fprintf(stderr, "demo: %s\n", nb_last_error());
        goto done;
    }
    nb_dot_opts dopts;
    nb_dot_default_opts(&dopts);
    dopts.clusters = true;
    dopts.checked = p;
    dopts.checked_errors = errors;
    dopts.n_checked = 6;
    dopts.title = "The trained network on three points: values and gradients of one step, before its update";
    if (write_pictures(tp, loss, &dopts, dot_path, page) != 0) goto done;
    if (nb_dot_render(dot_path, svg_path, "svg") != NB_OK) {
        fprintf(stderr, "demo: %s\n", nb_last_error());
        goto done;
    }

    if (draw_boundary(tp, p, X, y, boundary_path) != 0) {
        fprintf(stderr, "demo: %s\n", nb_last_error());
        goto done;
    }
    if (nb_progress_save_csv(progress, history_path) != NB_OK) {
        fprintf(stderr, "demo: %s\n", nb_last_error());
        goto done;
    }
    printf("Decision boundary: %s\nGraph: %s and %s\nBackward, step by step: %s\nHistory: %s\n",
           boundary_path, dot_path, svg_path, page, history_path);
    status = 0;
done:
    nb_progress_free(progress);
    nb_batcher_free(&batches);
    nb_optimizer_free(opt);
    nb_tape_free(tp);
    nb_params_free(ps);
    nb_tensor_free(X);
    nb_tensor_free(y);
    return status;
}
