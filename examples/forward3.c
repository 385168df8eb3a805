/*
 * Seed 004's lesson: the forward pass of a three-layer network with three
 * nodes per layer, X = W . I and O = sigmoid(X) at each layer; then the
 * squared error E against a target, whose gradients the pictures follow
 * back to the weights W_input_hidden and W_hidden_output.
 */
#include "cli.h"

static const char usage[] =
    "usage: forward3 [--dot FILE] [--html FILE]\n"
    "Runs the forward pass of a three-layer network (three nodes a layer) and prints\n"
    "X_hidden, O_hidden, X_output and O_output.\n"
    "  --dot FILE   write the graph, with the gradients of the error E below, as Graphviz dot\n"
    "  --html FILE  write a page that steps through the backward pass of the\n"
    "               squared error E = mean((O_output - T)^2) against T = (0, 1, 0)\n";

/* The network with W_ih and W_ho as parameters, recorded on tp: each layer
 * a cluster, every tensor named as in the seed.  Returns E, or NULL. */
static nb_tensor *network(nb_tape *tp, nb_tensor *W_ih, nb_tensor *W_ho, nb_tensor **out) {
    nb_tensor *I = nb_from_array(tp, NB_F64, NB_SHAPE(3, 1), ((double[]){0.9, 0.1, 0.8}));
    nb_tensor *T = nb_from_array(tp, NB_F64, NB_SHAPE(3, 1), ((double[]){0, 1, 0}));
    nb_scope_begin(tp, "hidden layer");
    nb_tensor *X_hidden = nb_matmul(tp, W_ih, I);
    nb_tensor *O_hidden = nb_sigmoid(tp, X_hidden);
    nb_scope_end(tp);
    nb_scope_begin(tp, "output layer");
    nb_tensor *X_output = nb_matmul(tp, W_ho, O_hidden);
    nb_tensor *O_output = nb_sigmoid(tp, X_output);
    nb_scope_end(tp);
    nb_tensor *E = nb_mse(tp, O_output, T);
    const char *names[] = {"I", "T", "X_hidden", "O_hidden", "X_output", "O_output", "E"};
    nb_tensor *all[] = {I, T, X_hidden, O_hidden, X_output, O_output, E};
    for (int i = 0; i < 7; i++) nb_tensor_set_name(all[i], names[i]);
    for (int i = 0; i < 4; i++) out[i] = all[2 + i];
    return nb_tape_status(tp) == NB_OK ? E : NULL;
}

int main(int argc, char **argv) {
    const char *dot = NULL, *html = NULL;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;

    nb_tape *tp = nb_tape_new();
    nb_tensor *W_ih = nb_from_array(NULL, NB_F64, NB_SHAPE(3, 3),
                                    ((double[]){0.9, 0.3, 0.4, 0.2, 0.8, 0.2, 0.1, 0.5, 0.6}));
    nb_tensor *W_ho = nb_from_array(NULL, NB_F64, NB_SHAPE(3, 3),
                                    ((double[]){0.3, 0.7, 0.5, 0.6, 0.5, 0.2, 0.8, 0.1, 0.9}));
    nb_tensor_set_name(W_ih, "W_input_hidden");
    nb_tensor_set_name(W_ho, "W_hidden_output");
    /* The weights are parameters: the pictures follow E's gradient back to them. */
    nb_requires_grad(W_ih, true);
    nb_requires_grad(W_ho, true);
    nb_tape_set_explain(tp, dot != NULL);
    nb_tensor *layers[4];
    nb_tensor *E = network(tp, W_ih, W_ho, layers);
    int status = 0;
    if (!E || nb_backward(E) != NB_OK) {
        fprintf(stderr, "forward3: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
        status = 1;
    }
    for (int i = 0; i < 4 && !status; i++) {
        printf("%-9s =", nb_tensor_name(layers[i]));
        for (size_t k = 0; k < 3; k++) printf(" %.4f", nb_get(layers[i], k));
        printf("\n");
    }
    if (!status) printf("E = mean((O_output - T)^2) = %.4f against T = (0, 1, 0)\n", nb_item(E));
    if (!status && (dot || html)) {
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.clusters = true;
        o.title = "A three-layer network, three nodes a layer: the forward pass and the gradients of the error E";
        status = write_pictures(tp, E, &o, dot, html);
    }
    nb_tape_free(tp);
    nb_tensor_free(W_ih);
    nb_tensor_free(W_ho);
    return status;
}
