/*
 * The vectorised multi-class network of seeds 000 and 001, on Fashion-MNIST.
 *
 * Layout as in the seeds: layer l has weights W[l] of shape (n[l], n[l-1])
 * and biases b[l] of shape (n[l], 1); activations are (n[l], m) with one
 * column per example:
 *     Z[l] = W[l] A[l-1] + b[l],   A[l] = g(Z[l]),   A[0] = X^T
 * and the last layer's Z[L] holds the class scores, trained with softmax
 * cross-entropy (classes along axis 0).
 *
 * The data comes from the Debian package dataset-fashion-mnist.
 *
 * With --distributed, under mpirun, the same network trains over MPI
 * (include/nabla_mpi.h): every process draws the same global batches, takes
 * its share of each, and the gradients are averaged across the processes
 * before the optimizer's step, so that training follows the one-process run:
 *     mpirun -np 2 build/examples/mlp --distributed
 */
#include "cli.h"
#include "fashion.h"
#include "nabla_train.h"

#include <cblas.h>
#include <math.h>
#include <time.h>

#ifdef NB_WITH_MPI
#include "nabla_mpi.h"
#endif

static const char usage[] =
    "usage: mlp [options]\n"
    "Trains a multi-layer perceptron on Fashion-MNIST and reports test accuracy.\n"
    "  --data DIR         the IDX files (default /usr/share/datasets/fashion-mnist)\n"
    "  --hidden LIST      hidden layer sizes, comma-separated (default 256,128)\n"
    "  --activation NAME  relu, sigmoid or tanh (default relu)\n"
    "  --batch N          examples per step (default 64)\n"
    "  --lr RATE          learning rate (default 0.001)\n"
    "  --epochs N         passes over the training set (default 10)\n"
    "  --optimizer NAME   sgd, momentum, adam, adamw or rmsprop (default adam)\n"
    "  --seed S           seed for initialisation and shuffling (default 1)\n"
    "  --threads N        threads for the products and large element-wise ops (default 1)\n"
    "  --train-limit N    use only the first N training images (default all)\n"
    "  --save FILE        save the trained parameters (default build/mlp.nbp), then\n"
    "                     reload them into a new model and check its accuracy\n"
    "  --history FILE     write the loss and accuracy per epoch as CSV\n"
    "  --plot FILE        plot the history to FILE (.png or .svg) with gnuplot\n"
    "  --dot FILE         write the graph of one training step as Graphviz dot\n"
    "  --html FILE        write a page that steps through one training step's backward pass\n"
    "  --bench            time training steps on synthetic data (no files needed) and\n"
    "                     print ms per step and examples per second\n"
    "  --distributed      train over MPI, run under mpirun (mpirun -np 2 build/examples/mlp\n"
    "                     --distributed): each process takes its share of every batch\n";

enum { MAX_LAYERS = 16 };

typedef enum { ACT_RELU, ACT_SIGMOID, ACT_TANH } activation;

typedef struct {
    int layers;                     /* weight layers */
    size_t sizes[MAX_LAYERS + 1];   /* n[0] .. n[L] */
    activation act;
    nb_params *ps;
    nb_tensor *W[MAX_LAYERS], *b[MAX_LAYERS];
} network;

/* Creates W[l] and b[l], named as in the seeds. */
static nb_status network_init(network *net, nb_rng *rng) {
    net->ps = nb_params_new();
    if (!net->ps) return NB_ERR_NOMEM;
    for (int l = 0; l < net->layers; l++) {
        char wname[16], bname[16];
        size_t in = net->sizes[l], out = net->sizes[l + 1];
        snprintf(wname, sizeof wname, "W[%d]", l + 1);
        snprintf(bname, sizeof bname, "b[%d]", l + 1);
        nb_init init = net->act == ACT_RELU && l + 1 < net->layers ? NB_INIT_HE_NORMAL : NB_INIT_GLOROT_UNIFORM;
        net->W[l] = nb_params_create(net->ps, wname, NB_F32, NB_SHAPE(out, in), init, in, out, rng);
        net->b[l] = nb_params_create(net->ps, bname, NB_F32, NB_SHAPE(out, 1), NB_INIT_ZEROS, in, out, rng);
        if (nb_tensor_status(net->W[l]) || nb_tensor_status(net->b[l])) return NB_ERR_NOMEM;
    }
    return NB_OK;
}

/* Class scores Z[L] (10, m) for a batch X of shape (m, 784).  With `name`
 * (for the pictures) every tensor gets the seeds' name, and A[0] = Xᵀ is a
 * tensor of its own, of shape (n[0], m); otherwise the first layer reads X
 * transposed in place. */
static nb_tensor *network_forward(nb_tape *tp, const network *net, nb_tensor *X, bool name) {
    nb_tensor *A = X;
    if (name) {
        nb_tensor_set_name(X, "X");
        A = nb_transpose(tp, X, 0, 1);
        nb_tensor_set_name(A, "A[0]");
    }
    for (int l = 0; l < net->layers; l++) {
        char scope[24];
        snprintf(scope, sizeof scope, "layer %d", l + 1);
        nb_scope_begin(tp, scope);
        /* Z[l] = W[l] A[l-1] + b[l] in one op */
        nb_tensor *Z = nb_linear_t(tp, net->W[l], A, net->b[l], false, l == 0 && !name);
        char label[24];
        if (name) {
            snprintf(label, sizeof label, "Z[%d]", l + 1);
            nb_tensor_set_name(Z, label);
        }
        if (l + 1 == net->layers) {
            nb_scope_end(tp);
            return Z;
        }
        A = net->act == ACT_RELU ? nb_relu(tp, Z) : net->act == ACT_SIGMOID ? nb_sigmoid(tp, Z) : nb_tanh(tp, Z);
        if (name) {
            snprintf(label, sizeof label, "A[%d]", l + 1);
            nb_tensor_set_name(A, label);
        }
        nb_scope_end(tp);
    }
    return A;
}

/* Rows of the image tensor (N, 28, 28) as a batch of shape (m, 784). */
static nb_tensor *image_batch(nb_tape *tp, nb_tensor *images, const size_t *rows, size_t count) {
    nb_tensor *batch = nb_gather_rows(tp, images, rows, count);
    nb_tensor_set_name(batch, "images");
    return nb_reshape(tp, batch, NB_DIMS((long)count, -1));
}

/* Test accuracy in batches, without recording gradients; fills the
 * confusion matrix when asked. */
static double evaluate(nb_tape *tp, const network *net, nb_tensor *X, nb_tensor *y, size_t *confusion) {
    size_t n = nb_tensor_dim(X, 0), right = 0, rows[1000];
    if (confusion) memset(confusion, 0, 100 * sizeof *confusion);
    for (size_t start = 0; start < n; start += 1000) {
        size_t count = n - start < 1000 ? n - start : 1000;
        for (size_t i = 0; i < count; i++) rows[i] = start + i;
        nb_tape_reset(tp);
        bool was = nb_tape_set_grad_enabled(tp, false);
        nb_tensor *scores = network_forward(tp, net, image_batch(tp, X, rows, count), false);
        nb_tensor *labels = nb_gather_rows(tp, y, rows, count);
        nb_tape_set_grad_enabled(tp, was);
        if (nb_tape_status(tp) != NB_OK) return NAN;
        right += (size_t)llround(nb_accuracy(scores, labels, 0) * (double)count);
        if (confusion) {
            size_t part[100];
            nb_confusion_matrix(scores, labels, 0, 10, part);
            for (int k = 0; k < 100; k++) confusion[k] += part[k];
        }
    }
    return (double)right / (double)n;
}

/* The pictures of one training step in the seeds' notation: every axis
 * named (W[l] is (n[l], n[l-1]), b[l] is (n[l], 1), Z[l] and A[l] are
 * (n[l], m)), the layers as clusters; the same options for both pictures. */
static int write_course_pictures(nb_tape *tp, nb_tensor *loss, const network *net, size_t m, const char *dot,
                                 const char *html) {
    enum { NAMES = 4 * MAX_LAYERS + 4 };
    char tensor[NAMES][16], size[MAX_LAYERS + 1][16];
    nb_dot_axis_symbol symbols[2 * NAMES + 2];
    size_t n = 0, k = 0;
    for (int l = 0; l <= net->layers; l++) snprintf(size[l], sizeof size[l], "n[%d]", l);
    /* tensor k's axes are named a0 and a1 */
#define NAME_AXES(a0, a1, ...)                                                             \
    do {                                                                                  \
        snprintf(tensor[k], sizeof tensor[k], __VA_ARGS__);                               \
        symbols[n++] = (nb_dot_axis_symbol){tensor[k], 0, a0};                            \
        symbols[n++] = (nb_dot_axis_symbol){tensor[k], 1, a1};                            \
        k++;                                                                              \
    } while (0)
    NAME_AXES("m", size[0], "X");
    symbols[n++] = (nb_dot_axis_symbol){"images", 0, "m"};
    symbols[n++] = (nb_dot_axis_symbol){"y", 0, "m"};
    NAME_AXES(size[0], "m", "A[0]");
    for (int l = 1; l <= net->layers; l++) {
        NAME_AXES(size[l], size[l - 1], "W[%d]", l);
        NAME_AXES(size[l], "1", "b[%d]", l);
        NAME_AXES(size[l], "m", "Z[%d]", l);
        NAME_AXES(size[l], "m", "A[%d]", l);
    }
#undef NAME_AXES
    char title[200];
    snprintf(title, sizeof title,
             "A multi-layer perceptron on Fashion-MNIST: the first training step on a batch of m = %zu images, "
             "values and gradients before its update",
             m);
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.title = title;
    o.axis_symbols = symbols;
    o.n_axis_symbols = n;
    o.clusters = true;
    return write_pictures(tp, loss, &o, dot, html);
}

/* ---------------------------------------------------------------- --distributed */

/* The few calls the program makes over MPI, in one place: without
 * libnabla_mpi (OpenMPI's development files were not installed when it was
 * built) --distributed is refused with what to install. */
typedef struct {
#ifdef NB_WITH_MPI
    nb_dist *d;
#endif
    int rank, size;
} dist;

static bool dist_begin(dist *dd, int *argc, char ***argv) {
#ifdef NB_WITH_MPI
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &dd->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dd->size);
    dd->d = NULL;
    return true;
#else
    (void)dd, (void)argc, (void)argv;
    fprintf(stderr, "mlp: --distributed needs MPI: this mlp was built without it (apt-get install libopenmpi-dev "
                    "openmpi-bin, then make)\n");
    return false;
#endif
}

/* Every process starts from process 0's parameters. */
static bool dist_attach(dist *dd, nb_params *ps) {
#ifdef NB_WITH_MPI
    if (!(dd->d = nb_dist_new(ps, NULL))) fprintf(stderr, "mlp: %s\n", nb_last_error());
    return dd->d != NULL;
#else
    (void)dd, (void)ps;
    return false;
#endif
}

/* This process's share [*begin, *end) of a global batch of count. */
static void dist_share(const dist *dd, size_t count, size_t *begin, size_t *end) {
#ifdef NB_WITH_MPI
    if (dd->d) {
        nb_dist_share(dd->d, count, begin, end);
        return;
    }
#endif
    (void)dd;
    *begin = 0, *end = count;
}

/* Backward from this process's loss (NULL for an empty share), the
 * gradients averaged over the processes, then the optimizer's step. */
static nb_status dist_step(dist *dd, nb_optimizer *opt, nb_tensor *loss, size_t examples) {
#ifdef NB_WITH_MPI
    nb_status st = nb_dist_backward(dd->d, loss, examples);
    return st == NB_OK ? nb_optimizer_step(opt) : st;
#else
    (void)dd, (void)opt, (void)loss, (void)examples;
    return NB_ERR_STATE;
#endif
}

static double dist_waited(const dist *dd) {
#ifdef NB_WITH_MPI
    return nb_dist_wait_seconds(dd->d);
#else
    (void)dd;
    return 0;
#endif
}

static void dist_end(dist *dd, bool failed) {
#ifdef NB_WITH_MPI
    if (failed && dd->d && dd->size > 1) nb_dist_abort(dd->d, 1); /* the others may be waiting for this one */
    nb_dist_free(dd->d);
    MPI_Finalize();
#else
    (void)dd, (void)failed;
#endif
}

/* --bench: the training step on random images, timed after a warm-up. */
static int run_bench(network *net, size_t batch, nb_optimizer_kind kind, double lr, uint64_t seed,
                     int threads, dist *dd) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_tape *tp = nb_tape_new();
    nb_tensor *X = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(batch, 784), 0, 1);
    nb_tensor *y = nb_zeros(NULL, NB_F32, NB_SHAPE(batch));
    for (size_t i = 0; i < batch; i++) nb_set(y, i, (double)(i % 10));
    nb_optimizer *opt = NULL;
    int status = 1;
    if (network_init(net, &rng) != NB_OK || nb_tensor_status(X) || nb_tensor_status(y)) {
        fprintf(stderr, "mlp: cannot make the network: %s\n", nb_last_error());
        goto done;
    }
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, kind);
    oo.lr = lr;
    if (!(opt = nb_optimizer_new(net->ps, &oo)) || (dd->size && !dist_attach(dd, net->ps))) {
        fprintf(stderr, "mlp: %s\n", nb_last_error());
        goto done;
    }
    /* Distributed: each process works on its share of the global batch
     * (here the same columns of X for everyone, as the cost is the same). */
    size_t begin, end;
    dist_share(dd, batch, &begin, &end);
    long steps = 0;
    uint64_t allocs = 0;
    double start = 0, waited = 0;
    for (long i = 0;; i++) {
        if (i == 5) { /* warm: the tape is sized, the caches are hot */
            start = cli_seconds();
            allocs = nb_alloc_count();
            waited = dist_waited(dd);
        }
        nb_tape_reset(tp);
        nb_params_zero_grad(net->ps);
        nb_tensor *Xs = dd->size ? nb_slice(tp, X, 0, (long)begin, (long)end, 1) : X;
        nb_tensor *ys = dd->size ? nb_slice(tp, y, 0, (long)begin, (long)end, 1) : y;
        nb_tensor *loss = end > begin ? nb_softmax_cross_entropy(tp, network_forward(tp, net, Xs, false), ys, 0) : NULL;
        nb_status st = dd->size ? dist_step(dd, opt, loss, end - begin) : nb_optimizer_backward_step(opt, loss);
        if (st != NB_OK) {
            fprintf(stderr, "mlp: %s\n", nb_last_error());
            goto done;
        }
        if (i >= 5) steps++;
        /* distributed: a fixed number of steps, the same on every process */
        if (i >= 5 && (dd->size ? steps >= 300 : cli_seconds() - start > 2.0)) break;
    }
    double ms = 1e3 * (cli_seconds() - start) / (double)steps;
    double wait_ms = 1e3 * (dist_waited(dd) - waited) / (double)steps;
    if (dd->rank == 0) {
        printf("network:");
        for (int l = 0; l <= net->layers; l++) printf("%s%zu", l ? "-" : " ", net->sizes[l]);
        printf(", %s, batch %zu, %d thread%s", nb_optimizer_name(kind), batch, threads, threads > 1 ? "s" : "");
        if (dd->size) printf(", %d processes", dd->size);
        printf("\n%.3f ms per step, %.0f examples/s over %ld steps, %llu allocations after warm-up", ms,
               1e3 * (double)batch / ms, steps, (unsigned long long)(nb_alloc_count() - allocs));
        if (dd->size) printf(", %.3f ms per step waiting for the all-reduce", wait_ms);
        printf("\n");
    }
    status = 0;
done:
    nb_optimizer_free(opt);
    nb_params_free(net->ps);
    net->ps = NULL;
    nb_tape_free(tp);
    nb_tensor_free(X);
    nb_tensor_free(y);
    return status;
}

static bool parse_hidden(const char *s, network *net) {
    net->layers = 0;
    net->sizes[0] = 784;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 65536 || net->layers + 1 >= MAX_LAYERS) return false;
        net->sizes[++net->layers] = (size_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return false;
    }
    net->sizes[++net->layers] = 10;
    return true;
}

int main(int argc, char **argv) {
    const char *data = FASHION_DIR, *save = "build/mlp.nbp";
    const char *history = NULL, *plot = NULL, *dot = NULL, *html = NULL;
    long batch = 64, epochs = 10, seed = 1, threads = 1, limit = 0;
    bool bench = false, distributed = false;
    double lr = 1e-3;
    nb_optimizer_kind kind = NB_OPT_ADAM;
    network net = {0};
    parse_hidden("256,128", &net);
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--data")) data = cli_value(&c);
        else if (cli_is(&c, "--hidden")) {
            const char *v = cli_value(&c);
            if (v && !parse_hidden(v, &net)) cli_fail(&c, "invalid layer sizes '%s' for --hidden (e.g. 256,128)%s", v, "");
        } else if (cli_is(&c, "--activation")) {
            const char *v = cli_value(&c);
            if (!v) break;
            if (!strcmp(v, "relu")) net.act = ACT_RELU;
            else if (!strcmp(v, "sigmoid")) net.act = ACT_SIGMOID;
            else if (!strcmp(v, "tanh")) net.act = ACT_TANH;
            else cli_fail(&c, "unknown activation '%s' (relu, sigmoid or tanh)%s", v, "");
        } else if (cli_is(&c, "--optimizer")) {
            const char *v = cli_value(&c);
            if (v && !nb_optimizer_parse(v, &kind)) cli_fail(&c, "unknown optimizer '%s' (sgd, momentum, adam, adamw or rmsprop)%s", v, "");
        } else if (cli_is(&c, "--batch")) batch = cli_long(&c, 1, 60000);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 100);
        else if (cli_is(&c, "--epochs")) epochs = cli_long(&c, 1, 100000);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--threads")) threads = cli_long(&c, 1, 256);
        else if (cli_is(&c, "--train-limit")) limit = cli_long(&c, 1, 60000);
        else if (cli_is(&c, "--save")) save = cli_value(&c);
        else if (cli_is(&c, "--history")) history = cli_value(&c);
        else if (cli_is(&c, "--plot")) plot = cli_value(&c);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else if (cli_is(&c, "--bench")) bench = true;
        else if (cli_is(&c, "--distributed")) distributed = true;
        else cli_unknown(&c);
    }
    if (c.failed) return 2;
    if (plot && !history) { /* the plot is drawn from the history file */
        fprintf(stderr, "mlp: --plot needs --history FILE\n");
        return 2;
    }
    if (distributed && (dot || html)) {
        fprintf(stderr, "mlp: --dot and --html draw one process's step: leave out --distributed\n");
        return 2;
    }
    dist dd = {.rank = 0, .size = 0}; /* size 0: one process, no MPI */
    if (distributed && !dist_begin(&dd, &argc, &argv)) return 1;
    if (nb_set_threads((int)threads) != NB_OK) {
        fprintf(stderr, "mlp: %s\n", nb_last_error());
        return 1;
    }
    if (bench) {
        int st = run_bench(&net, (size_t)batch, kind, lr, (uint64_t)seed, (int)threads, &dd);
        if (distributed) dist_end(&dd, st != 0);
        return st;
    }

    fashion f = {NULL, NULL, NULL, NULL};
    int status = 1;
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    nb_progress *progress = NULL;
    network copy = net;
    copy.ps = NULL;
    nb_batcher batches = {0};
    if (fashion_load("mlp", data, &f)) goto done;
    nb_tensor *X = f.X, *y = f.y, *Xt = f.Xt, *yt = f.yt;
    size_t n_train = limit ? (size_t)limit : nb_tensor_dim(X, 0);
    if (n_train > nb_tensor_dim(X, 0)) {
        fprintf(stderr, "mlp: --train-limit %zu is more than the %zu training images\n", n_train, nb_tensor_dim(X, 0));
        goto done;
    }

    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    if (network_init(&net, &rng) != NB_OK) {
        fprintf(stderr, "mlp: cannot make the network: %s\n", nb_last_error());
        goto done;
    }
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, kind);
    oo.lr = lr;
    opt = nb_optimizer_new(net.ps, &oo);
    if (!opt || nb_batcher_init(&batches, n_train, (size_t)batch, &rng) != NB_OK) {
        fprintf(stderr, "mlp: %s\n", nb_last_error());
        goto done;
    }
    /* Distributed: every process starts from process 0's parameters and
     * draws the same batches (the same seed). */
    if (distributed && !dist_attach(&dd, net.ps)) goto done;
    if (dd.rank == 0) printf("network:");
    for (int l = 0; l <= net.layers && dd.rank == 0; l++) printf("%s%zu", l ? "-" : " ", net.sizes[l]);
    if (dd.rank == 0)
        printf(" (%s), %s lr %g, batch %ld, %ld epochs, %zu training images, %ld thread%s%s\n",
               net.act == ACT_RELU ? "relu" : net.act == ACT_SIGMOID ? "sigmoid" : "tanh", nb_optimizer_name(kind), lr,
               batch, epochs, n_train, threads, threads > 1 ? "s" : "", distributed ? " per process" : "");
    if (distributed && dd.rank == 0)
        printf("over MPI: %d processes, each with its share of every batch of %ld\n", dd.size, batch);

    /* progress from process 0 only */
    if (dd.rank == 0) progress = nb_progress_new(stderr, epochs, (long)nb_batcher_batches(&batches), false);
    for (long epoch = 1; epoch <= epochs; epoch++) {
        const size_t *idx;
        size_t count, seen = 0;
        double loss_sum = 0, right = 0;
        long step = 0;
        while (nb_batcher_next(&batches, &idx, &count)) {
            nb_tape_reset(tp);
            nb_params_zero_grad(net.ps);
            size_t begin, end;
            dist_share(&dd, count, &begin, &end);
            if (distributed && end == begin) { /* nothing of this batch here: the others' gradient */
                if (dist_step(&dd, opt, NULL, 0) != NB_OK) {
                    fprintf(stderr, "\nmlp: %s\n", nb_last_error());
                    goto done;
                }
                step++;
                continue;
            }
            idx += begin, count = end - begin;
            nb_tensor *Xb = image_batch(tp, X, idx, count), *yb = nb_gather_rows(tp, y, idx, count);
            bool picture = (dot || html) && epoch == 1 && step == 0;
            nb_tape_set_explain(tp, picture);
            nb_tensor *scores = network_forward(tp, &net, Xb, picture);
            nb_tensor *loss = nb_softmax_cross_entropy(tp, scores, yb, 0);
            if (picture) {
                nb_tensor_set_name(yb, "y"); /* the classes */
                nb_tensor_set_name(loss, "E");
            }
            /* The picture's step: backward, the pictures (values and
             * gradients of this moment, before the update), then the update.
             * The others backward and update in one call (with plain SGD the
             * update happens inside backward). */
            nb_status st;
            if (picture) {
                st = nb_backward(loss);
                if (st == NB_OK && write_course_pictures(tp, loss, &net, count, dot, html)) goto done;
                if (st == NB_OK) st = nb_optimizer_step(opt);
            } else if (distributed) {
                st = dist_step(&dd, opt, loss, count);
            } else {
                st = nb_optimizer_backward_step(opt, loss);
            }
            if (st != NB_OK) {
                fprintf(stderr, "\nmlp: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
                goto done;
            }
            loss_sum += nb_item(loss) * (double)count;
            right += nb_accuracy(scores, yb, 0) * (double)count;
            seen += count;
            nb_progress_step(progress, epoch, step++, loss_sum / (double)seen, right / (double)seen, count);
        }
        /* every process holds the same parameters: process 0 evaluates */
        if (dd.rank == 0)
            nb_progress_epoch(progress, epoch, loss_sum / (double)seen, right / (double)seen,
                              evaluate(tp, &net, Xt, yt, NULL));
    }
    if (dd.rank != 0) { /* the rest is process 0's */
        status = 0;
        goto done;
    }
    size_t confusion[100];
    double accuracy = evaluate(tp, &net, Xt, yt, confusion);
    printf("test accuracy: %.4f\n", accuracy);
    nb_confusion_print(stdout, confusion, 10, fashion_classes);
    /* An output that cannot be written fails the run (after the model is saved). */
    bool outputs_written = true;
    if (history && nb_progress_save_csv(progress, history) != NB_OK) {
        fprintf(stderr, "mlp: %s\n", nb_last_error());
        outputs_written = false;
    }
    if (plot && outputs_written) {
        if (nb_progress_plot(history, plot) == NB_OK) {
            printf("history plotted to %s\n", plot);
        } else {
            fprintf(stderr, "mlp: %s\n", nb_last_error());
            outputs_written = false;
        }
    }

    /* Save, reload into a fresh network, and check that it scores the same. */
    if (nb_params_save(net.ps, save) != NB_OK) {
        fprintf(stderr, "mlp: %s\n", nb_last_error());
        goto done;
    }
    nb_rng other;
    nb_rng_seed(&other, (uint64_t)seed + 1);
    if (network_init(&copy, &other) != NB_OK || nb_params_load(copy.ps, save) != NB_OK) {
        fprintf(stderr, "mlp: %s\n", nb_last_error());
        goto done;
    }
    double reloaded = evaluate(tp, &copy, Xt, yt, NULL);
    printf("saved to %s; reloaded model: test accuracy %.4f (%s)\n", save, reloaded,
           reloaded == accuracy ? "the same" : "DIFFERENT");
    status = reloaded == accuracy && outputs_written ? 0 : 1;
done:
    if (distributed) dist_end(&dd, status != 0);
    nb_progress_free(progress);
    nb_batcher_free(&batches);
    nb_optimizer_free(opt);
    nb_params_free(net.ps);
    nb_params_free(copy.ps);
    nb_tape_free(tp);
    fashion_free(&f);
    return status;
}
