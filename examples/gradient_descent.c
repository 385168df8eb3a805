/*
 * Seed 003's first lesson: walking down the cost y = x^2 + 3 by gradient
 * descent.  The derivative dy/dx = 2x comes from nb_backward, and each step
 * is x <- x - learning_rate * dy/dx.  From x = 5 with rate 0.1:
 * y = 28, x becomes 5 - 0.1 * 10 = 4 and y = 19, and so on.
 */
#include "cli.h"

static const char usage[] =
    "usage: gradient_descent [--x0 X] [--lr RATE] [--steps N] [--dot FILE] [--html FILE]\n"
    "Minimises y = x^2 + 3 by gradient descent and prints x, y and dy/dx at each step.\n"
    "  --x0 X      starting point (default 5)\n"
    "  --lr RATE   learning rate (default 0.1)\n"
    "  --steps N   number of steps (default 10; 0 draws the starting point, before any step)\n"
    "  --dot FILE  write the graph of the last step as Graphviz dot\n"
    "  --html FILE write a page that steps through the last step's backward pass\n";

int main(int argc, char **argv) {
    double x0 = 5, lr = 0.1;
    long steps = 10;
    const char *dot = NULL, *html = NULL;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--x0")) x0 = cli_double(&c, -1e6, 1e6);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 10);
        else if (cli_is(&c, "--steps")) steps = cli_long(&c, 0, 1000000); /* 0: the article's first picture, x = 5 */
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;

    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, x0);
    nb_tensor_set_name(x, "x");
    nb_requires_grad(x, true);
    printf("y = x^2 + 3, learning rate %g\n%5s %14s %14s %14s\n", lr, "step", "x", "y", "dy/dx");
    int status = 0;
    for (long step = 0; step <= steps; step++) {
        nb_tape_reset(tp);
        nb_zero_grad(x);
        nb_tape_set_explain(tp, step == steps); /* the pictures show the last step */
        nb_tensor *u = nb_square(tp, x);
        nb_tensor_set_name(u, "u"); /* u = x², so that y = u + 3 */
        nb_tensor *y = nb_add_scalar(tp, u, 3.0);
        nb_tensor_set_name(y, "y");
        if (nb_backward(y) != NB_OK) {
            fprintf(stderr, "gradient_descent: %s\n", nb_last_error());
            status = 1;
            break;
        }
        double grad = nb_grad_get(x, 0);
        printf("%5ld %14.6f %14.6f %14.6f\n", step, nb_item(x), nb_item(y), grad);
        if (step == steps) { /* the pictures: this step's values and gradients, before any update */
            char title[160];
            snprintf(title, sizeof title,
                     "Gradient descent on y = x² + 3 (u = x²): step %ld at x = %.4g, before its update", step,
                     nb_item(x));
            nb_dot_opts o;
            nb_dot_default_opts(&o);
            o.title = title;
            o.learning_rate = lr; /* the page ends with this step's update, x ← x − lr·dy/dx */
            status = write_pictures(tp, y, &o, dot, html);
            break;
        }
        nb_set(x, 0, nb_item(x) - lr * grad);
    }
    nb_tape_free(tp);
    nb_tensor_free(x);
    return status;
}
