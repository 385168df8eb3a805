/*
 * Seed 003's logistic regression: one sigmoid neuron, a = sigmoid(W X + b),
 * trained with the binary cross-entropy
 *     C = -(1/m) sum [ y log a + (1 - y) log(1 - a) ]
 * by full-batch gradient descent.  The article trains it on a 303-row
 * heart-disease table with 13 features and a `target` column; give such a
 * file with --csv, or let the program generate a table of the same shape.
 * Features are standardised with the training set's statistics and a seeded
 * fifth of the rows is held out to measure accuracy.
 */
#include "cli.h"
#include "heart.h"
#include "nabla_train.h"

#include <math.h>

static const char usage[] =
    "usage: logreg [--csv FILE --target COLUMN] [--epochs N] [--lr RATE] [--seed S] [--dot FILE]\n"
    "              [--html FILE]\n"
    "Trains a single sigmoid neuron (logistic regression) and prints the test accuracy.\n"
    "  --csv FILE       a table with a header row and numeric columns (default: generated)\n"
    "  --target COLUMN  the column to predict, 0 or 1 (default: target)\n"
    "  --epochs N       gradient descent steps over the whole training set (default 1000)\n"
    "  --lr RATE        learning rate (default 0.5)\n"
    "  --seed S         seed for the split and the generated data (default 1)\n"
    "  --dot FILE       write the graph of the last step as Graphviz dot\n"
    "  --html FILE      write a page that steps through the last step's backward pass\n";

int main(int argc, char **argv) {
    const char *csv = NULL, *target = "target", *dot = NULL, *html = NULL;
    long epochs = 1000, seed = 1;
    double lr = 0.5;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--csv")) csv = cli_value(&c);
        else if (cli_is(&c, "--target")) target = cli_value(&c);
        else if (cli_is(&c, "--epochs")) epochs = cli_long(&c, 1, 10000000);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 100);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;

    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    nb_dataset all = {0}, train = {0}, test = {0};
    if (csv) {
        nb_csv_opts o;
        nb_csv_default_opts(&o);
        o.target = target;
        if (nb_csv_read(csv, &o, &all) != NB_OK) {
            fprintf(stderr, "logreg: %s\n", nb_last_error());
            return 1;
        }
        for (size_t i = 0; i < all.rows; i++)
            if (nb_get(all.y, i) != 0 && nb_get(all.y, i) != 1) {
                fprintf(stderr, "logreg: %s: row %zu: target '%s' is %g; logistic regression needs 0 or 1\n",
                        csv, i + 1, target, nb_get(all.y, i));
                nb_dataset_free(&all);
                return 1;
            }
        printf("read %zu rows of %zu features from %s\n", all.rows, all.features, csv);
    } else {
        generate_heart_like(&rng, &all);
        printf("generated %zu rows of %zu features\n", all.rows, all.features);
    }
    int status = 1;
    nb_tape *tp = nb_tape_new();
    nb_params *ps = nb_params_new();
    if (nb_dataset_split(&all, 0.2, &rng, &train, &test) != NB_OK ||
        nb_standardize(train.X, &test.X, 1) != NB_OK) {
        fprintf(stderr, "logreg: %s\n", nb_last_error());
        goto done;
    }

    /* The seeds' layout: W is (1, n) and examples are columns, so
     * Z = W X^T + b is (1, m): one logit per example. */
    size_t n = train.features;
    nb_tensor *W = nb_params_create(ps, "W", NB_F32, NB_SHAPE(1, n), NB_INIT_ZEROS, n, 1, &rng);
    nb_tensor *b = nb_params_create(ps, "b", NB_F32, NB_SHAPE(1, 1), NB_INIT_ZEROS, n, 1, &rng);
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_SGD);
    oo.lr = lr;
    nb_optimizer *opt = nb_optimizer_new(ps, &oo);
    nb_tensor *loss = NULL;
    nb_tensor_set_name(train.X, "X");
    nb_tensor_set_name(train.y, "y");
    for (long epoch = 0; epoch < epochs; epoch++) {
        nb_tape_reset(tp);
        nb_params_zero_grad(ps);
        nb_tape_set_explain(tp, epoch == epochs - 1 && dot); /* the picture shows the last step */
        nb_tensor *Y = nb_reshape(tp, train.y, NB_DIMS(1, -1));
        nb_tensor *Z = nb_linear_t(tp, W, train.X, b, false, true); /* Z = W Xᵀ + b */
        nb_tensor *A = nb_sigmoid(tp, Z);
        loss = nb_bce(tp, A, Y);
        nb_tensor_set_name(Y, "Y");
        nb_tensor_set_name(Z, "Z");
        nb_tensor_set_name(A, "A");
        nb_tensor_set_name(loss, "C");
        if (nb_backward(loss) != NB_OK) {
            fprintf(stderr, "logreg: %s\n", nb_last_error());
            nb_optimizer_free(opt);
            goto done;
        }
        if (epoch == epochs - 1 && (dot || html)) { /* the pictures: this step, before its update */
            /* The course's sizes: m examples (the columns of Z), n features. */
            const nb_dot_axis_symbol symbols[] = {{"X", 0, "m"}, {"X", 1, "n"}, {"W", 1, "n"},
                                                  {"Z", 1, "m"}, {"A", 1, "m"}, {"y", 0, "m"}, {"Y", 1, "m"}};
            char title[240];
            snprintf(title, sizeof title,
                     "Logistic regression, A = σ(W Xᵀ + b), m = %zu examples of n = %zu features: training step %ld "
                     "of %ld, values and gradients before its update",
                     train.rows, n, epoch + 1, epochs);
            nb_dot_opts o;
            nb_dot_default_opts(&o);
            o.title = title;
            o.axis_symbols = symbols;
            o.n_axis_symbols = sizeof symbols / sizeof symbols[0];
            o.learning_rate = lr; /* plain SGD: the page ends with the update W ← W − lr·∂C/∂W */
            status = write_pictures(tp, loss, &o, dot, html);
            if (status) {
                nb_optimizer_free(opt);
                goto done;
            }
        }
        if (nb_optimizer_step(opt) != NB_OK) {
            fprintf(stderr, "logreg: %s\n", nb_last_error());
            nb_optimizer_free(opt);
            goto done;
        }
        if (epoch % (epochs / 10 > 0 ? epochs / 10 : 1) == 0 || epoch == epochs - 1)
            printf("epoch %5ld  cost %.4f  train accuracy %.4f\n", epoch, nb_item(loss),
                   nb_accuracy_binary(A, Y, 0.5));
    }
    nb_optimizer_free(opt);
    status = 0; /* every error above left through done with status 1 */

    nb_tape_reset(tp);
    nb_tensor *A = nb_sigmoid(tp, nb_add(tp, nb_matmul_t(tp, W, test.X, false, true), b));
    nb_tensor *Y = nb_reshape(tp, test.y, NB_DIMS(1, -1));
    printf("accuracy: %.4f (%zu test rows)\n", nb_accuracy_binary(A, Y, 0.5), test.rows);
done:
    nb_params_free(ps);
    nb_tape_free(tp);
    nb_dataset_free(&all);
    nb_dataset_free(&train);
    nb_dataset_free(&test);
    return status;
}
