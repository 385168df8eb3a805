/*
 * Seed 004's lesson: the forward pass of a three-layer network with three
 * nodes per layer, X = W . I and O = sigmoid(X) at each layer.
 */
#include "cli.h"

static const char usage[] =
    "usage: forward3 [--dot FILE] [--html FILE]\n"
    "Runs the forward pass of seed 004's three-layer network and prints\n"
    "X_hidden, O_hidden, X_output and O_output.\n"
    "  --dot FILE   write the graph as Graphviz dot\n"
    "  --html FILE  write a page that steps through the backward pass of the\n"
    "               squared error E = mean((O_output - T)^2) against T = (0, 1, 0)\n";

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
    nb_tensor *I = nb_from_array(tp, NB_F64, NB_SHAPE(3, 1), ((double[]){0.9, 0.1, 0.8}));
    nb_tensor *W_ih = nb_from_array(tp, NB_F64, NB_SHAPE(3, 3),
                                    ((double[]){0.9, 0.3, 0.4, 0.2, 0.8, 0.2, 0.1, 0.5, 0.6}));
    nb_tensor *W_ho = nb_from_array(tp, NB_F64, NB_SHAPE(3, 3),
                                    ((double[]){0.3, 0.7, 0.5, 0.6, 0.5, 0.2, 0.8, 0.1, 0.9}));
    nb_tensor *X_hidden = nb_matmul(tp, W_ih, I);
    nb_tensor *O_hidden = nb_sigmoid(tp, X_hidden);
    nb_tensor *X_output = nb_matmul(tp, W_ho, O_hidden);
    nb_tensor *O_output = nb_sigmoid(tp, X_output);
    const char *names[] = {"I", "W_input_hidden", "W_hidden_output", "X_hidden", "O_hidden", "X_output", "O_output"};
    nb_tensor *all[] = {I, W_ih, W_ho, X_hidden, O_hidden, X_output, O_output};
    for (int i = 0; i < 7; i++) nb_tensor_set_name(all[i], names[i]);
    if (nb_tape_status(tp) != NB_OK) {
        fprintf(stderr, "forward3: %s\n", nb_tape_error(tp));
        return 1;
    }
    for (int i = 3; i < 7; i++) {
        printf("%-9s =", names[i]);
        for (size_t k = 0; k < 3; k++) printf(" %.4f", nb_get(all[i], k));
        printf("\n");
    }
    int status = dot ? write_graph(tp, dot, O_output, "seed 004: a three-layer forward pass") : 0;
    if (html && !status) {
        /* The weights become parameters, and the error against a target is
         * the loss whose gradient the page follows back to them. */
        nb_tensor *params[2] = {nb_copy(NULL, W_ih), nb_copy(NULL, W_ho)};
        nb_tape_reset(tp);
        nb_tensor_set_name(params[0], "W_input_hidden");
        nb_tensor_set_name(params[1], "W_hidden_output");
        nb_requires_grad(params[0], true);
        nb_requires_grad(params[1], true);
        I = nb_from_array(tp, NB_F64, NB_SHAPE(3, 1), ((double[]){0.9, 0.1, 0.8}));
        nb_tensor *T = nb_from_array(tp, NB_F64, NB_SHAPE(3, 1), ((double[]){0, 1, 0}));
        nb_tensor_set_name(I, "I");
        nb_tensor_set_name(T, "T");
        nb_tensor *Oh = nb_sigmoid(tp, nb_matmul(tp, params[0], I));
        nb_tensor *Oo = nb_sigmoid(tp, nb_matmul(tp, params[1], Oh));
        nb_tensor_set_name(Oh, "O_hidden");
        nb_tensor_set_name(Oo, "O_output");
        nb_tensor *E = nb_mse(tp, Oo, T);
        nb_tensor_set_name(E, "E");
        status = write_html(E, html, "Seed 004's network: backpropagating the error");
        nb_tensor_free(params[0]);
        nb_tensor_free(params[1]);
    }
    nb_tape_free(tp);
    return status;
}
