/*
 * A convolutional network on Fashion-MNIST, composed of ops: by default
 * KANN's example network (github.com/attractivechaos/kann, examples/
 * mnist-cnn.c), so that the two can be compared on the same machine:
 *
 *   conv 3x3, 32 filters, relu -> conv 3x3, 32 filters, relu -> max pool 2x2
 *   -> dropout 0.2 -> dense 128, relu -> dropout 0.2 -> dense 10
 *
 * trained with softmax cross-entropy and Adam (KANN uses 10 sigmoid outputs
 * with binary cross-entropy and RMSprop: --loss bce --optimizer rmsprop).
 * The parameters are named as PyTorch names the same network's state_dict
 * (conv1.weight, ..., fc2.bias), and the weights as PyTorch lays them out
 * ((out, in) for the dense layers), so `--save cnn.safetensors` writes a
 * file a PyTorch model of the same shape loads directly.
 *
 * The data comes from the Debian package dataset-fashion-mnist.
 */
#include "cli.h"
#include "fashion.h"
#include "nabla_train.h"

#include <math.h>
#include <time.h>

static const char usage[] =
    "usage: cnn [options]\n"
    "Trains a convolutional network on Fashion-MNIST and reports test accuracy.\n"
    "  --data DIR         the IDX files (default /usr/share/datasets/fashion-mnist)\n"
    "  --filters N        filters in each convolution (default 32)\n"
    "  --hidden N         units in the dense hidden layer (default 128)\n"
    "  --dropout P        dropout after the pooling and the hidden layer (default 0.2)\n"
    "  --loss NAME        softmax (cross-entropy over the 10 classes, default) or bce\n"
    "                     (10 sigmoid outputs, binary cross-entropy, as KANN)\n"
    "  --batch N          examples per step (default 64)\n"
    "  --lr RATE          learning rate (default 0.001)\n"
    "  --epochs N         passes over the training set (default 5)\n"
    "  --optimizer NAME   sgd, momentum, adam, adamw or rmsprop (default adam)\n"
    "  --seed S           seed for initialisation, shuffling and dropout (default 1)\n"
    "  --threads N        threads for the convolutions, products and large ops (default 1)\n"
    "  --train-limit N    use only the first N training images (default all)\n"
    "  --test-limit N     evaluate on the first N test images (default all)\n"
    "  --save FILE        save the trained parameters (default build/cnn.nbp; a name ending in\n"
    "                     .safetensors writes PyTorch's format), then reload them into a new\n"
    "                     model and check its accuracy\n"
    "  --dot FILE         write the graph of one training step (a batch of 2) as Graphviz dot\n"
    "  --html FILE        write a page that steps through that step's backward pass\n"
    "  --bench            time training steps on random images (no files needed)\n";

typedef struct {
    size_t filters, hidden;
    double dropout;
    bool bce;
    nb_params *ps;
    nb_tensor *c1w, *c1b, *c2w, *c2b, *f1w, *f1b, *f2w, *f2b;
} network;

/* He-uniform weights (the layers feed relus), zero biases. */
static nb_status network_init(network *net, nb_rng *rng) {
    if (!(net->ps = nb_params_new())) return NB_ERR_NOMEM;
    size_t F = net->filters, flat = F * 12 * 12;
    nb_params *ps = net->ps;
    net->c1w = nb_params_create(ps, "conv1.weight", NB_F32, NB_SHAPE(F, 1, 3, 3), NB_INIT_HE_UNIFORM, 9, F, rng);
    net->c1b = nb_params_create(ps, "conv1.bias", NB_F32, NB_SHAPE(F), NB_INIT_ZEROS, 9, F, rng);
    net->c2w = nb_params_create(ps, "conv2.weight", NB_F32, NB_SHAPE(F, F, 3, 3), NB_INIT_HE_UNIFORM, 9 * F, F, rng);
    net->c2b = nb_params_create(ps, "conv2.bias", NB_F32, NB_SHAPE(F), NB_INIT_ZEROS, 9 * F, F, rng);
    net->f1w = nb_params_create(ps, "fc1.weight", NB_F32, NB_SHAPE(net->hidden, flat), NB_INIT_HE_UNIFORM, flat,
                                net->hidden, rng);
    net->f1b = nb_params_create(ps, "fc1.bias", NB_F32, NB_SHAPE(net->hidden), NB_INIT_ZEROS, flat, net->hidden, rng);
    net->f2w = nb_params_create(ps, "fc2.weight", NB_F32, NB_SHAPE(10, net->hidden), NB_INIT_GLOROT_UNIFORM,
                                net->hidden, 10, rng);
    net->f2b = nb_params_create(ps, "fc2.bias", NB_F32, NB_SHAPE(10), NB_INIT_ZEROS, net->hidden, 10, rng);
    for (size_t i = 0; i < nb_params_count(ps); i++)
        if (nb_tensor_status(nb_params_at(ps, i))) return NB_ERR_NOMEM;
    return nb_params_count(ps) == 8 ? NB_OK : NB_ERR_NOMEM;
}

/* t, named `name` when `on` (the pictures: every tensor named, none left
 * to show as its place on the tape). */
static nb_tensor *named(nb_tensor *t, bool on, const char *name) {
    if (on) nb_tensor_set_name(t, name);
    return t;
}

/* Class scores Z[4] (B, 10) for images X (B, 1, 28, 28).  Each convolution
 * applies its relu in the same op (nb_conv_opts.relu: the values and
 * gradients of nb_relu after it, without its two passes over memory).
 * With `name`, every tensor gets its name in the course's notation: layer l
 * computes A[l] from the layer before with W[l] and b[l]; P is pooled, D
 * dropped out, F flattened. */
static nb_tensor *network_forward(nb_tape *tp, const network *net, nb_tensor *x, nb_rng *rng, bool name) {
    const nb_conv_opts relu = {.relu = true};
    nb_scope_begin(tp, "convolutions");
    nb_tensor *h = named(nb_conv2d(tp, x, net->c1w, net->c1b, &relu), name, "A[1]"); /* (B, F, 26, 26) */
    h = named(nb_conv2d(tp, h, net->c2w, net->c2b, &relu), name, "A[2]");             /* (B, F, 24, 24) */
    h = named(nb_max_pool2d(tp, h, &(nb_pool_opts){.kernel = {2, 2}}), name, "P[2]"); /* (B, F, 12, 12) */
    h = named(nb_dropout(tp, h, net->dropout, rng), name, "D[2]");
    nb_scope_end(tp);
    nb_scope_begin(tp, "dense");
    h = named(nb_reshape(tp, h, NB_DIMS((long)nb_tensor_dim(x, 0), -1)), name, "F[2]"); /* (B, F 144) */
    h = named(nb_linear_t(tp, h, net->f1w, net->f1b, false, true), name, "Z[3]"); /* x Wᵀ + b, as nn.Linear */
    h = named(nb_relu(tp, h), name, "A[3]");
    h = named(nb_dropout(tp, h, net->dropout, rng), name, "D[3]");
    h = named(nb_linear_t(tp, h, net->f2w, net->f2b, false, true), name, "Z[4]");
    nb_scope_end(tp);
    return h;
}

static nb_tensor *network_loss(nb_tape *tp, const network *net, nb_tensor *scores, nb_tensor *labels, bool name) {
    if (!net->bce) return named(nb_softmax_cross_entropy(tp, scores, labels, 1), name, "E");
    /* 10 sigmoid outputs against one-hot targets, as KANN trains */
    size_t B = nb_tensor_dim(scores, 0);
    nb_tensor *onehot = nb_zeros(tp, NB_F32, NB_SHAPE(B, 10));
    for (size_t i = 0; i < B && nb_tensor_status(onehot) == NB_OK; i++) nb_set(onehot, i * 10 + (size_t)nb_get(labels, i), 1);
    named(onehot, name, "Y (one-hot)");
    nb_tensor *mean = named(nb_bce_logits(tp, scores, onehot), name, "E/10");
    return named(nb_scale(tp, mean, 10), name, "E"); /* a sum over the outputs, a mean over examples */
}

/* The rows' images as a batch (count, 1, 28, 28). */
static nb_tensor *image_batch(nb_tape *tp, nb_tensor *images, const size_t *rows, size_t count) {
    return nb_reshape(tp, nb_gather_rows(tp, images, rows, count), NB_DIMS((long)count, 1, 28, 28));
}

/* Test accuracy in batches of 500, dropout off, no gradients. */
static double evaluate(nb_tape *tp, const network *net, nb_tensor *X, nb_tensor *y, size_t n) {
    size_t right = 0, rows[500];
    bool was_training = nb_tape_set_training(tp, false);
    for (size_t start = 0; start < n; start += 500) {
        size_t count = n - start < 500 ? n - start : 500;
        for (size_t i = 0; i < count; i++) rows[i] = start + i;
        nb_tape_reset(tp);
        bool was = nb_tape_set_grad_enabled(tp, false);
        nb_tensor *scores = network_forward(tp, net, image_batch(tp, X, rows, count), NULL, false);
        nb_tensor *labels = nb_gather_rows(tp, y, rows, count);
        nb_tape_set_grad_enabled(tp, was);
        if (nb_tape_status(tp) != NB_OK) {
            fprintf(stderr, "cnn: %s\n", nb_tape_error(tp));
            return NAN;
        }
        right += (size_t)llround(nb_accuracy(scores, labels, 1) * (double)count);
    }
    nb_tape_set_training(tp, was_training);
    return (double)right / (double)n;
}

/* One training step on a batch already on the freshly reset tape; the
 * loss, or NAN with the error printed. */
static double train_step(nb_tape *tp, network *net, nb_optimizer *opt, nb_tensor *x, nb_tensor *labels, nb_rng *rng,
                         double *accuracy) {
    nb_params_zero_grad(net->ps);
    nb_tensor *scores = network_forward(tp, net, x, rng, false);
    nb_tensor *loss = network_loss(tp, net, scores, labels, false);
    if (nb_optimizer_backward_step(opt, loss) != NB_OK) {
        fprintf(stderr, "\ncnn: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
        return NAN;
    }
    if (accuracy) *accuracy = nb_accuracy(scores, labels, 1);
    return nb_item(loss);
}

static nb_optimizer *make_optimizer(network *net, nb_optimizer_kind kind, double lr) {
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    o.lr = lr;
    nb_optimizer *opt = nb_optimizer_new(net->ps, &o);
    if (!opt) fprintf(stderr, "cnn: %s\n", nb_last_error());
    return opt;
}

/* --bench: training steps on random images, timed after a warm-up. */
static int run_bench(network *net, size_t batch, nb_optimizer_kind kind, double lr, uint64_t seed, int threads) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(batch, 1, 28, 28), 0, 1);
    nb_tensor *y = nb_zeros(NULL, NB_F32, NB_SHAPE(batch));
    for (size_t i = 0; i < batch; i++) nb_set(y, i, (double)(i % 10));
    nb_optimizer *opt = NULL;
    int status = 1;
    if (network_init(net, &rng) != NB_OK || !(opt = make_optimizer(net, kind, lr))) goto done;
    long steps = 0;
    uint64_t allocs = 0;
    double start = 0;
    for (long i = 0;; i++) {
        if (i == 3) {
            start = cli_seconds();
            allocs = nb_alloc_count();
        }
        nb_tape_reset(tp);
        if (isnan(train_step(tp, net, opt, x, y, &rng, NULL))) goto done;
        if (i >= 3) steps++;
        if (i >= 3 && cli_seconds() - start > 3.0) break;
    }
    double ms = 1e3 * (cli_seconds() - start) / (double)steps;
    printf("network: conv %zu, conv %zu, pool, dense %zu, dense 10; %s, batch %zu, %d thread%s\n", net->filters,
           net->filters, net->hidden, nb_optimizer_name(kind), batch, threads, threads > 1 ? "s" : "");
    printf("%.3f ms per step, %.0f examples/s (an epoch of 60000 in %.1f s), %llu allocations after warm-up\n", ms,
           1e3 * (double)batch / ms, 60000 / (1e3 * (double)batch / ms), (unsigned long long)(nb_alloc_count() - allocs));
    status = 0;
done:
    nb_optimizer_free(opt);
    nb_params_free(net->ps);
    net->ps = NULL;
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(y);
    return status;
}

/* --dot and --html: one step on the first two training images, drawn.  The
 * pictures call the parameters by the course's names, W[l] and b[l] of
 * layer l (the dense layers' W[l] are (n[l], n[l-1]), as the course writes
 * them); the files keep PyTorch's names, which the title maps them to. */
static int draw_step(network *net, nb_tensor *X, nb_tensor *y, nb_rng *rng, const char *dot, const char *html) {
    nb_tensor *params[8] = {net->c1w, net->c1b, net->c2w, net->c2b, net->f1w, net->f1b, net->f2w, net->f2b};
    static const char *const course[8] = {"W[1]", "b[1]", "W[2]", "b[2]", "W[3]", "b[3]", "W[4]", "b[4]"};
    char saved[8][NB_NAME_MAX];
    for (int k = 0; k < 8; k++) {
        snprintf(saved[k], sizeof saved[k], "%s", nb_tensor_name(params[k]));
        nb_tensor_set_name(params[k], course[k]);
    }
    nb_tape *tp = nb_tape_new();
    size_t rows[2] = {0, 1};
    nb_tape_set_explain(tp, true);
    nb_tensor *images = named(nb_gather_rows(tp, X, rows, 2), true, "images");
    nb_tensor *x = named(nb_reshape(tp, images, NB_DIMS(2, 1, 28, 28)), true, "X");
    nb_tensor *labels = named(nb_gather_rows(tp, y, rows, 2), true, "labels");
    nb_tensor *loss = network_loss(tp, net, network_forward(tp, net, x, rng, true), labels, true);
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.title = "A convolutional network, one training step on 2 images, before its update: A[1] = relu(W[1] ⋆ X + "
              "b[1]), A[2] = relu(W[2] ⋆ A[1] + b[2]), P[2] its 2×2 maxima, D[2] = dropout(P[2]) flattened to F[2]; "
              "Z[3] = F[2] W[3]ᵀ + b[3], A[3] = relu(Z[3]), D[3] = dropout(A[3]); scores Z[4] = D[3] W[4]ᵀ + b[4]. "
              "(The files call W[1], b[1] conv1.weight, conv1.bias; W[3] fc1.weight, and so on.)";
    o.clusters = true;
    int failed = 1;
    if (nb_backward(loss) != NB_OK)
        fprintf(stderr, "cnn: %s\n", nb_last_error());
    else
        failed = write_pictures(tp, loss, &o, dot, html);
    nb_params_zero_grad(net->ps);
    nb_tape_free(tp);
    for (int k = 0; k < 8; k++) nb_tensor_set_name(params[k], saved[k]);
    return failed;
}

int main(int argc, char **argv) {
    const char *data = FASHION_DIR, *save = "build/cnn.nbp", *dot = NULL, *html = NULL;
    long batch = 64, epochs = 5, seed = 1, threads = 1, limit = 0, test_limit = 0;
    bool bench = false;
    double lr = 1e-3;
    nb_optimizer_kind kind = NB_OPT_ADAM;
    network net = {32, 128, 0.2, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--data")) data = cli_value(&c);
        else if (cli_is(&c, "--filters")) net.filters = (size_t)cli_long(&c, 1, 1024);
        else if (cli_is(&c, "--hidden")) net.hidden = (size_t)cli_long(&c, 1, 65536);
        else if (cli_is(&c, "--dropout")) net.dropout = cli_double(&c, 0, 0.95);
        else if (cli_is(&c, "--loss")) {
            const char *v = cli_value(&c);
            if (v && !strcmp(v, "bce")) net.bce = true;
            else if (v && strcmp(v, "softmax")) cli_fail(&c, "unknown loss '%s' (softmax or bce)%s", v, "");
        } else if (cli_is(&c, "--optimizer")) {
            const char *v = cli_value(&c);
            if (v && !nb_optimizer_parse(v, &kind))
                cli_fail(&c, "unknown optimizer '%s' (sgd, momentum, adam, adamw or rmsprop)%s", v, "");
        } else if (cli_is(&c, "--batch")) batch = cli_long(&c, 1, 60000);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 100);
        else if (cli_is(&c, "--epochs")) epochs = cli_long(&c, 1, 100000);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--threads")) threads = cli_long(&c, 1, 256);
        else if (cli_is(&c, "--train-limit")) limit = cli_long(&c, 1, 60000);
        else if (cli_is(&c, "--test-limit")) test_limit = cli_long(&c, 1, 10000);
        else if (cli_is(&c, "--save")) save = cli_value(&c);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else if (cli_is(&c, "--bench")) bench = true;
        else cli_unknown(&c);
    }
    if (c.failed) return 2;
    if (nb_set_threads((int)threads) != NB_OK) {
        fprintf(stderr, "cnn: %s\n", nb_last_error());
        return 1;
    }
    if (bench) return run_bench(&net, (size_t)batch, kind, lr, (uint64_t)seed, (int)threads);

    fashion f = {NULL, NULL, NULL, NULL};
    int status = 1;
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    nb_progress *progress = NULL;
    network copy = net;
    copy.ps = NULL;
    nb_batcher batches = {0};
    if (fashion_load("cnn", data, &f)) goto done;
    nb_tensor *X = f.X, *y = f.y, *Xt = f.Xt, *yt = f.yt;
    size_t n_train = limit ? (size_t)limit : nb_tensor_dim(X, 0), n_test = nb_tensor_dim(Xt, 0);
    if (n_train > nb_tensor_dim(X, 0)) {
        fprintf(stderr, "cnn: --train-limit %zu is more than the %zu training images\n", n_train, nb_tensor_dim(X, 0));
        goto done;
    }
    if (test_limit && (size_t)test_limit < n_test) n_test = (size_t)test_limit;

    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    if (network_init(&net, &rng) != NB_OK) {
        fprintf(stderr, "cnn: cannot make the network: %s\n", nb_last_error());
        goto done;
    }
    if ((dot || html) && draw_step(&net, X, y, &rng, dot, html)) goto done;
    if (!(opt = make_optimizer(&net, kind, lr))) goto done;
    if (nb_batcher_init(&batches, n_train, (size_t)batch, &rng) != NB_OK) {
        fprintf(stderr, "cnn: %s\n", nb_last_error());
        goto done;
    }
    printf("network: conv 3x3 x%zu, relu, conv 3x3 x%zu, relu, max pool 2x2, dropout %g, dense %zu, relu, "
           "dropout %g, dense 10 (%s)\n",
           net.filters, net.filters, net.dropout, net.hidden, net.dropout, net.bce ? "sigmoids, bce" : "softmax");
    printf("%s lr %g, batch %ld, %ld epochs, %zu training images, %ld thread%s\n", nb_optimizer_name(kind), lr, batch,
           epochs, n_train, threads, threads > 1 ? "s" : "");

    progress = nb_progress_new(stderr, epochs, (long)nb_batcher_batches(&batches), false);
    double started = cli_seconds();
    for (long epoch = 1; epoch <= epochs; epoch++) {
        const size_t *idx;
        size_t count, seen = 0;
        double loss_sum = 0, right = 0, epoch_start = cli_seconds();
        long step = 0;
        while (nb_batcher_next(&batches, &idx, &count)) {
            nb_tape_reset(tp);
            nb_tensor *xb = image_batch(tp, X, idx, count), *yb = nb_gather_rows(tp, y, idx, count);
            double accuracy = 0, loss = train_step(tp, &net, opt, xb, yb, &rng, &accuracy);
            if (isnan(loss)) goto done;
            loss_sum += loss * (double)count;
            right += accuracy * (double)count;
            seen += count;
            nb_progress_step(progress, epoch, step++, loss_sum / (double)seen, right / (double)seen, count);
        }
        double train_seconds = cli_seconds() - epoch_start;
        double test = evaluate(tp, &net, Xt, yt, n_test);
        nb_progress_epoch(progress, epoch, loss_sum / (double)seen, right / (double)seen, test);
        printf("epoch %ld: %.1f s of training, test accuracy %.4f\n", epoch, train_seconds, test);
    }
    double accuracy = evaluate(tp, &net, Xt, yt, n_test);
    printf("test accuracy: %.4f after %ld epochs in %.1f s\n", accuracy, epochs, cli_seconds() - started);

    /* Save, reload into a fresh network, and check that it scores the same. */
    if (nb_params_save(net.ps, save) != NB_OK) {
        fprintf(stderr, "cnn: %s\n", nb_last_error());
        goto done;
    }
    nb_rng other;
    nb_rng_seed(&other, (uint64_t)seed + 1);
    if (network_init(&copy, &other) != NB_OK || nb_params_load(copy.ps, save) != NB_OK) {
        fprintf(stderr, "cnn: %s\n", nb_last_error());
        goto done;
    }
    double reloaded = evaluate(tp, &copy, Xt, yt, n_test);
    printf("saved to %s; reloaded model: test accuracy %.4f (%s)\n", save, reloaded,
           reloaded == accuracy ? "the same" : "DIFFERENT");
    status = reloaded == accuracy ? 0 : 1;
done:
    nb_progress_free(progress);
    nb_batcher_free(&batches);
    nb_optimizer_free(opt);
    nb_params_free(net.ps);
    nb_params_free(copy.ps);
    nb_tape_free(tp);
    fashion_free(&f);
    return status;
}
