/*
 * Training steps recorded once and replayed (include/nabla_graph.h) against
 * the same steps recorded anew each time (eager), at small batches, where
 * the cost per op matters: a tiny MLP 16-32-32-4 and an MLP 784-128-10
 * (relu, softmax cross-entropy) and KANN's Fashion-MNIST CNN of bench_cnn.c (two 3x3 convolutions with
 * fused relus, max pooling, dropout, two dense layers), float32, plain SGD
 * (its update fused into backward in both), one thread.
 *
 *   bench_replay [--reps R] [--quick] [--csv]
 *
 * Each rep times a run of steps eagerly, then as many replayed, on two
 * copies of the network that start equal and take the same batches and
 * dropout draws; the parameters must stay bitwise equal (checked at the
 * end, "same" in the output).  Thread CPU time, median over the reps.
 * CSV: model (tiny, mlp, cnn),batch,eager_ms,replay_ms,same.
 *
 * Then the GPT of examples/gpt_model.h (fused attention, GELU MLP, layer
 * norms, dropout 0.1, tied embedding) with AdamW and clipping at 1, on one
 * batch: its token ids are a C array that a replay keeps as recorded
 * (include/nabla_graph.h), so both sides train on the same batch; the
 * targets are the graph's input.  Rows "gpt-LxD" with the batch and context.
 */
#include "../examples/gpt_model.h"
#include "bench_common.h"
#include "nabla.h"
#include "nabla_graph.h"
#include "nabla_nn.h"
#include "nabla_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TINY, MLP, CNN };
enum { F = 32, HIDDEN = 128, FLAT = F * 12 * 12, BATCHES = 4 };

typedef struct {
    nb_tape *tp;
    nb_params *ps;
    nb_optimizer *sgd;
    nb_tensor *w[8], *x, *y;
    nb_rng rng;
    nb_graph *graph;
} net;

static void net_init(net *n, int model, size_t batch) {
    nb_rng init;
    nb_rng_seed(&init, 1);
    nb_rng_seed(&n->rng, 2);
    n->tp = nb_tape_new();
    n->ps = nb_params_new();
    nb_params *ps = n->ps;
    if (model == TINY) {
        size_t sizes[4] = {16, 32, 32, 4};
        for (int l = 0; l < 3; l++) {
            char name[32];
            snprintf(name, sizeof name, "fc%d.weight", l + 1);
            n->w[2 * l] = nb_params_create(ps, name, NB_F32, NB_SHAPE(sizes[l + 1], sizes[l]), NB_INIT_HE_UNIFORM,
                                           sizes[l], sizes[l + 1], &init);
            snprintf(name, sizeof name, "fc%d.bias", l + 1);
            n->w[2 * l + 1] = nb_params_create(ps, name, NB_F32, NB_SHAPE(sizes[l + 1]), NB_INIT_ZEROS, sizes[l],
                                               sizes[l + 1], &init);
        }
        n->x = nb_zeros(NULL, NB_F32, NB_SHAPE(batch, 16));
    } else if (model == MLP) {
        n->w[0] = nb_params_create(ps, "fc1.weight", NB_F32, NB_SHAPE(HIDDEN, 784), NB_INIT_HE_UNIFORM, 784, HIDDEN, &init);
        n->w[1] = nb_params_create(ps, "fc1.bias", NB_F32, NB_SHAPE(HIDDEN), NB_INIT_ZEROS, 784, HIDDEN, &init);
        n->w[2] = nb_params_create(ps, "fc2.weight", NB_F32, NB_SHAPE(10, HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 10, &init);
        n->w[3] = nb_params_create(ps, "fc2.bias", NB_F32, NB_SHAPE(10), NB_INIT_ZEROS, HIDDEN, 10, &init);
        n->x = nb_zeros(NULL, NB_F32, NB_SHAPE(batch, 784));
    } else {
        n->w[0] = nb_params_create(ps, "conv1.weight", NB_F32, NB_SHAPE(F, 1, 3, 3), NB_INIT_HE_UNIFORM, 9, F, &init);
        n->w[1] = nb_params_create(ps, "conv1.bias", NB_F32, NB_SHAPE(F), NB_INIT_ZEROS, 9, F, &init);
        n->w[2] = nb_params_create(ps, "conv2.weight", NB_F32, NB_SHAPE(F, F, 3, 3), NB_INIT_HE_UNIFORM, 9 * F, F, &init);
        n->w[3] = nb_params_create(ps, "conv2.bias", NB_F32, NB_SHAPE(F), NB_INIT_ZEROS, 9 * F, F, &init);
        n->w[4] = nb_params_create(ps, "fc1.weight", NB_F32, NB_SHAPE(HIDDEN, FLAT), NB_INIT_HE_UNIFORM, FLAT, HIDDEN, &init);
        n->w[5] = nb_params_create(ps, "fc1.bias", NB_F32, NB_SHAPE(HIDDEN), NB_INIT_ZEROS, FLAT, HIDDEN, &init);
        n->w[6] = nb_params_create(ps, "fc2.weight", NB_F32, NB_SHAPE(10, HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 10, &init);
        n->w[7] = nb_params_create(ps, "fc2.bias", NB_F32, NB_SHAPE(10), NB_INIT_ZEROS, HIDDEN, 10, &init);
        n->x = nb_zeros(NULL, NB_F32, NB_SHAPE(batch, 1, 28, 28));
    }
    n->y = nb_zeros(NULL, NB_F32, NB_SHAPE(batch));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    o.lr = 0.01;
    n->sgd = nb_optimizer_new(ps, &o);
    n->graph = NULL;
}

static void net_free(net *n) {
    nb_graph_free(n->graph);
    nb_optimizer_free(n->sgd);
    nb_params_free(n->ps);
    nb_tensor_free(n->x);
    nb_tensor_free(n->y);
    nb_tape_free(n->tp);
}

static nb_tensor *loss_of(net *n, int model) {
    nb_tape *tp = n->tp;
    if (model == TINY) {
        nb_tensor *h = n->x;
        for (int l = 0; l < 2; l++) h = nb_relu(tp, nb_linear_t(tp, h, n->w[2 * l], n->w[2 * l + 1], false, true));
        return nb_softmax_cross_entropy(tp, nb_linear_t(tp, h, n->w[4], n->w[5], false, true), n->y, 1);
    }
    if (model == MLP) {
        nb_tensor *h = nb_relu(tp, nb_linear_t(tp, n->x, n->w[0], n->w[1], false, true));
        return nb_softmax_cross_entropy(tp, nb_linear_t(tp, h, n->w[2], n->w[3], false, true), n->y, 1);
    }
    const nb_conv_opts relu = {.relu = true};
    nb_tensor *h = nb_conv2d(tp, n->x, n->w[0], n->w[1], &relu);
    h = nb_conv2d(tp, h, n->w[2], n->w[3], &relu);
    h = nb_dropout(tp, nb_max_pool2d(tp, h, &(nb_pool_opts){.kernel = {2, 2}}), 0.2, &n->rng);
    h = nb_reshape(tp, h, NB_DIMS((long)nb_tensor_dim(n->x, 0), -1));
    h = nb_dropout(tp, nb_relu(tp, nb_linear_t(tp, h, n->w[4], n->w[5], false, true)), 0.2, &n->rng);
    return nb_softmax_cross_entropy(tp, nb_linear_t(tp, h, n->w[6], n->w[7], false, true), n->y, 1);
}

static void fail(void) {
    fprintf(stderr, "bench_replay: %s\n", nb_last_error());
    exit(1);
}

/* One step on batch (x, y): recorded anew, or replayed. */
static void eager_step(net *n, int model, const nb_tensor *x, const nb_tensor *y) {
    nb_tape_reset(n->tp);
    nb_params_zero_grad(n->ps);
    memcpy(nb_tensor_data(n->x), nb_tensor_const_data(x), nb_tensor_size(x) * sizeof(float));
    memcpy(nb_tensor_data(n->y), nb_tensor_const_data(y), nb_tensor_size(y) * sizeof(float));
    if (nb_optimizer_backward_step(n->sgd, loss_of(n, model)) != NB_OK) fail();
}

static void replay_step(net *n, int model, const nb_tensor *x, const nb_tensor *y) {
    nb_params_zero_grad(n->ps);
    if (!n->graph) { /* the first step records, as eager_step, and captures; its forward is the recording's */
        memcpy(nb_tensor_data(n->x), nb_tensor_const_data(x), nb_tensor_size(x) * sizeof(float));
        memcpy(nb_tensor_data(n->y), nb_tensor_const_data(y), nb_tensor_size(y) * sizeof(float));
        nb_tensor *loss = loss_of(n, model), *in[2] = {n->x, n->y};
        if (!(n->graph = nb_graph_capture(n->tp, in, 2, &loss, 1)) || nb_graph_backward_step(n->graph, 0, n->sgd))
            fail();
        return;
    }
    if (nb_graph_set_input(n->graph, 0, x) || nb_graph_set_input(n->graph, 1, y) || nb_graph_forward(n->graph) ||
        nb_graph_backward_step(n->graph, 0, n->sgd))
        fail();
}

static bool same_params(const net *a, const net *b) {
    for (size_t i = 0; i < nb_params_count(a->ps); i++) {
        nb_tensor *p = nb_params_at(a->ps, i), *q = nb_params_at(b->ps, i);
        if (memcmp(nb_tensor_const_data(p), nb_tensor_const_data(q), nb_tensor_size(p) * sizeof(float))) return false;
    }
    return true;
}

/* ---------------------------------------------------------------- the GPT */

typedef struct {
    gpt m;
    nb_tape *tp;
    nb_optimizer *opt;
    nb_graph *graph;
    nb_tensor *targets;
    nb_rng rng;
} gpt_net;

static void gpt_net_init(gpt_net *n, size_t L, size_t d, size_t H, size_t T, size_t B) {
    *n = (gpt_net){.m = {.V = 113, .T = T, .d = d, .H = H, .L = L, .dropout = 0.1}};
    nb_rng_seed(&n->rng, 1);
    if (gpt_init(&n->m, &n->rng) != NB_OK) fail();
    n->tp = nb_tape_new();
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAMW);
    o.lr = 1e-3;
    n->opt = nb_optimizer_new(n->m.ps, &o);
    n->targets = nb_zeros(NULL, NB_F32, NB_SHAPE(B, T));
    nb_rng data;
    nb_rng_seed(&data, 5);
    for (size_t i = 0; i < B * T; i++) nb_set(n->targets, i, (double)(nb_rng_next(&data) % 113));
}

static void gpt_net_free(gpt_net *n) {
    nb_graph_free(n->graph);
    nb_optimizer_free(n->opt);
    nb_params_free(n->m.ps);
    nb_tensor_free(n->targets);
    nb_tape_free(n->tp);
}

static void gpt_step(gpt_net *n, const size_t *ids, size_t B, size_t T, bool replay) {
    nb_params_zero_grad(n->m.ps);
    if (!replay || !n->graph) {
        nb_tape_reset(n->tp);
        nb_tensor *loss =
            nb_softmax_cross_entropy(n->tp, gpt_forward(n->tp, &n->m, ids, B, T, &n->rng, NULL), n->targets, 2);
        if (replay && !(n->graph = nb_graph_capture(n->tp, &n->targets, 1, &loss, 1))) fail();
        if (nb_backward(loss) != NB_OK) fail();
    } else if (nb_graph_forward(n->graph) || nb_graph_backward(n->graph, 0)) {
        fail();
    }
    nb_clip_grad_norm(n->m.ps, 1.0);
    if (nb_optimizer_step(n->opt) != NB_OK) fail();
}

static void gpt_rows(int reps, bool quick, bool csv) {
    static const size_t cfg[][5] = {{2, 64, 4, 16, 1}, {2, 64, 4, 64, 16}}; /* L, d, H, T, B */
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        size_t L = cfg[c][0], d = cfg[c][1], H = cfg[c][2], T = cfg[c][3], B = cfg[c][4];
        size_t *ids = malloc(B * T * sizeof *ids);
        nb_rng data;
        nb_rng_seed(&data, 4);
        for (size_t i = 0; i < B * T; i++) ids[i] = nb_rng_next(&data) % 113;
        gpt_net eager, replay;
        gpt_net_init(&eager, L, d, H, T, B);
        gpt_net_init(&replay, L, d, H, T, B);
        double t0 = thread_cpu_seconds();
        gpt_step(&eager, ids, B, T, false);
        gpt_step(&replay, ids, B, T, true);
        double one = thread_cpu_seconds() - t0;
        int steps = quick ? 2 : (int)(0.05 / (one / 2)) + 2;
        double *te = malloc((size_t)reps * sizeof *te), *tr = malloc((size_t)reps * sizeof *tr);
        for (int r = 0; r < reps; r++) {
            double a = thread_cpu_seconds();
            for (int k = 0; k < steps; k++) gpt_step(&eager, ids, B, T, false);
            double b = thread_cpu_seconds();
            for (int k = 0; k < steps; k++) gpt_step(&replay, ids, B, T, true);
            double e = thread_cpu_seconds();
            te[r] = (b - a) * 1e3 / steps;
            tr[r] = (e - b) * 1e3 / steps;
        }
        qsort(te, (size_t)reps, sizeof *te, cmp_double);
        qsort(tr, (size_t)reps, sizeof *tr, cmp_double);
        bool same = true;
        for (size_t i = 0; i < nb_params_count(eager.m.ps); i++) {
            nb_tensor *p = nb_params_at(eager.m.ps, i), *q = nb_params_at(replay.m.ps, i);
            same = same && !memcmp(nb_tensor_const_data(p), nb_tensor_const_data(q), nb_tensor_size(p) * sizeof(float));
        }
        char name[32];
        snprintf(name, sizeof name, "gpt-%zux%zu", L, d);
        if (csv)
            printf("%s,%zu,%.5f,%.5f,%s\n", name, B, te[reps / 2], tr[reps / 2], same ? "same" : "DIFFERENT");
        else
            printf("%-9s B %zu T %zu | %9.4f %9.4f %6.2fx | %s\n", name, B, T, te[reps / 2], tr[reps / 2],
                   te[reps / 2] / tr[reps / 2], same ? "bitwise the same" : "DIFFERENT");
        free(te);
        free(tr);
        free(ids);
        gpt_net_free(&eager);
        gpt_net_free(&replay);
    }
}

int main(int argc, char **argv) {
    int reps = 7;
    bool quick = false, csv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else {
            fprintf(stderr, "usage: bench_replay [--reps R] [--quick] [--csv]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 99) reps = 7;
    nb_set_threads(1);
    static const size_t batches[][4] = {{1, 8, 32, 128}, {1, 8, 32, 128}, {1, 8, 32, 0}};
    if (!csv) printf("Training steps recorded once and replayed against recorded anew (eager), float32, SGD, 1 thread, "
                     "thread CPU time, median of %d alternating runs\n%-5s %5s | %9s %9s %7s | %s\n", reps, "model",
                     "batch", "eager ms", "replay ms", "gain", "parameters");
    for (int model = TINY; model <= CNN; model++)
        for (int bi = 0; bi < 4 && batches[model][bi]; bi++) {
            size_t batch = batches[model][bi];
            net eager, replay;
            net_init(&eager, model, batch);
            net_init(&replay, model, batch);
            nb_rng data;
            nb_rng_seed(&data, 3);
            nb_tensor *x[BATCHES], *y[BATCHES];
            for (int k = 0; k < BATCHES; k++) {
                x[k] = nb_rand_uniform(NULL, &data, NB_F32, nb_tensor_ndim(eager.x), nb_tensor_shape(eager.x), 0, 1);
                y[k] = nb_zeros(NULL, NB_F32, NB_SHAPE(batch));
                for (size_t i = 0; i < batch; i++) nb_set(y[k], i, (double)(nb_rng_next(&data) % (model == TINY ? 4 : 10)));
            }
            /* steps per run: about 20 ms of eager steps */
            double t0 = thread_cpu_seconds();
            eager_step(&eager, model, x[0], y[0]);
            replay_step(&replay, model, x[0], y[0]);
            double one = thread_cpu_seconds() - t0;
            int steps = quick ? 4 : (int)(0.02 / (one / 2)) + 2;
            double *te = malloc((size_t)reps * sizeof *te), *tr = malloc((size_t)reps * sizeof *tr);
            int s = 1;
            for (int r = 0; r < reps; r++) {
                double a = thread_cpu_seconds();
                for (int k = 0; k < steps; k++) eager_step(&eager, model, x[(s + k) % BATCHES], y[(s + k) % BATCHES]);
                double b = thread_cpu_seconds();
                for (int k = 0; k < steps; k++) replay_step(&replay, model, x[(s + k) % BATCHES], y[(s + k) % BATCHES]);
                double c = thread_cpu_seconds();
                s += steps;
                te[r] = (b - a) * 1e3 / steps;
                tr[r] = (c - b) * 1e3 / steps;
            }
            qsort(te, (size_t)reps, sizeof *te, cmp_double);
            qsort(tr, (size_t)reps, sizeof *tr, cmp_double);
            bool same = same_params(&eager, &replay);
            const char *name = model == TINY ? "tiny" : model == MLP ? "mlp" : "cnn";
            if (csv)
                printf("%s,%zu,%.5f,%.5f,%s\n", name, batch, te[reps / 2], tr[reps / 2], same ? "same" : "DIFFERENT");
            else
                printf("%-5s %5zu | %9.4f %9.4f %6.2fx | %s\n", name, batch, te[reps / 2], tr[reps / 2],
                       te[reps / 2] / tr[reps / 2], same ? "bitwise the same" : "DIFFERENT");
            free(te);
            free(tr);
            for (int k = 0; k < BATCHES; k++) nb_tensor_free(x[k]), nb_tensor_free(y[k]);
            net_free(&eager);
            net_free(&replay);
        }
    gpt_rows(reps, quick, csv);
    return 0;
}
