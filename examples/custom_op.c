/*
 * Your own op, written with nabla_op.h: softplus, y = log(1 + e^x), whose
 * derivative is the sigmoid.  nabla has it built in (nb_softplus), which
 * makes it a good first op to write: here it is again from scratch, for
 * float32 and float64, with its forward and backward side by side, then
 *   - compared with the same function composed of built-in ops, log(1 + e^x),
 *     values and gradients, where that is accurate;
 *   - shown where the composition is not: at x = -20 in float32, 1 + e^-20
 *     rounds to 1 and the composed softplus is 0, ours 2.06e-9;
 *   - gradient-checked against central differences, fan-out included;
 *   - drawn (--dot, --html) like any built-in op.
 */
#include "cli.h"
#include "nabla_op.h"

#include <math.h>

static const char usage[] =
    "usage: custom_op [--dot FILE] [--html FILE]\n"
    "Defines softplus as a new op, checks it against built-in ops and central differences.\n"
    "  --dot FILE  write the graph of the checked expression as Graphviz dot\n"
    "  --html FILE write a page that steps through its backward pass\n";

/* ---------------------------------------------------------------- the op */

/* y = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|): no overflow for
 * large x, no rounding to 0 for very negative x.
 * dy/dx = e^x / (1 + e^x) = 1 / (1 + e^-x) = σ(x). */
static void softplus_forward(nb_op_call *c) {
    size_t n = nb_op_size(c);
    if (nb_tensor_dtype(nb_op_output(c)) == NB_F32) {
        const float *x = nb_op_input_data(c, 0);
        float *y = nb_op_output_data(c);
        for (size_t i = 0; i < n; i++) y[i] = fmaxf(x[i], 0) + log1pf(expf(-fabsf(x[i])));
    } else {
        const double *x = nb_op_input_data(c, 0);
        double *y = nb_op_output_data(c);
        for (size_t i = 0; i < n; i++) y[i] = fmax(x[i], 0) + log1p(exp(-fabs(x[i])));
    }
}

/* dL/dx = dL/dy · σ(x), written into x's gradient: set on the first
 * contribution of this backward pass, added to after (x may feed other ops). */
static void softplus_backward(nb_op_call *c) {
    bool acc;
    void *gx_ = nb_op_grad_input(c, 0, &acc);
    if (!gx_) return; /* out of memory: the tape has the error */
    size_t n = nb_op_size(c);
    if (nb_tensor_dtype(nb_op_output(c)) == NB_F32) {
        const float *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
        float *gx = gx_;
        for (size_t i = 0; i < n; i++) {
            float d = g[i] / (1 + expf(-x[i]));
            gx[i] = acc ? gx[i] + d : d;
        }
    } else {
        const double *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
        double *gx = gx_;
        for (size_t i = 0; i < n; i++) {
            double d = g[i] / (1 + exp(-x[i]));
            gx[i] = acc ? gx[i] + d : d;
        }
    }
}

static const nb_op_def softplus_def = {
    .name = "softplus",
    .forward = softplus_forward,
    .backward = softplus_backward,
    .derivative = {"σ(x)"}, /* shown on the edge in pictures */
    .elementwise = true,    /* y[i] depends on x[i] alone: pictures show the numbers per element */
};

/* The call, with the caller's file and line for errors (as nabla's own). */
#define my_softplus(tp, x) my_softplus_(tp, x, NB_SITE)
static nb_tensor *my_softplus_(nb_tape *tp, nb_tensor *x, const char *file, int line) {
    return nb_op_(tp, &softplus_def, &x, 1, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0,
                  file, line);
}

/* ---------------------------------------------------------------- checks */

/* Through the op twice and around it once: x softplus(x) + softplus(-x). */
static nb_tensor *expression(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    nb_tensor *x = in[0];
    return nb_sum(tp, nb_add(tp, nb_mul(tp, x, my_softplus(tp, x)), my_softplus(tp, nb_neg(tp, x))));
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
    int status = 0;
    const double points[] = {-3, -0.5, 0, 0.5, 3};
    printf("%6s %8s | %12s %12s | %12s %12s\n", "dtype", "x", "ours", "composed", "d ours/dx", "d composed/dx");
    double worst = 0;
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tensor *x = nb_from_array(NULL, (nb_dtype)dt, NB_SHAPE(5), points);
        nb_requires_grad(x, true);
        nb_tape_reset(tp);
        nb_tensor *ours = my_softplus(tp, x);
        nb_tensor *composed = nb_log(tp, nb_add_scalar(tp, nb_exp(tp, x), 1));
        double g_ours[5], g_composed[5];
        nb_status st = nb_backward(nb_sum(tp, ours));
        for (size_t i = 0; i < 5; i++) g_ours[i] = nb_grad_get(x, i);
        nb_zero_grad(x);
        if (st == NB_OK) st = nb_backward(nb_sum(tp, composed));
        for (size_t i = 0; i < 5; i++) g_composed[i] = nb_grad_get(x, i);
        if (st != NB_OK) {
            fprintf(stderr, "custom_op: %s\n", nb_last_error());
            status = 1;
        }
        for (size_t i = 0; i < 5 && !status; i++) {
            printf("%6s %8.2f | %12.8f %12.8f | %12.8f %12.8f\n", dt == NB_F32 ? "f32" : "f64", points[i],
                   nb_get(ours, i), nb_get(composed, i), g_ours[i], g_composed[i]);
            worst = fmax(worst, fabs(nb_get(ours, i) - nb_get(composed, i)) + fabs(g_ours[i] - g_composed[i]));
        }
        nb_tensor_free(x);
    }
    printf("largest difference from the composition: %.2g\n", worst);

    /* Where the composition fails: x = -20 in float32. */
    nb_tape_reset(tp);
    nb_tensor *far = nb_scalar(tp, NB_F32, -20);
    printf("softplus(-20) in float32: ours %.6g, composed %.6g (exact: 2.06115e-09)\n",
           nb_item(my_softplus(tp, far)), nb_item(nb_log(tp, nb_add_scalar(tp, nb_exp(tp, far), 1))));

    /* Gradient check, in float64, through the op used twice. */
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(2, 3), -4, 4);
    nb_tensor_set_name(x, "x");
    nb_requires_grad(x, true);
    nb_gradcheck_result r = nb_gradcheck(expression, &x, 1, NULL, NULL);
    printf("%s\n", r.message);
    if (!r.passed) status = 1;

    /* The pictures, like any op's. */
    if (!status && (dot || html)) {
        nb_tape_reset(tp);
        nb_tape_set_explain(tp, true);
        nb_tensor *y = expression(tp, &x, 1, NULL);
        nb_tensor_set_name(y, "y");
        if (nb_backward(y) != NB_OK) {
            fprintf(stderr, "custom_op: %s\n", nb_last_error());
            status = 1;
        }
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.title = "softplus, defined with nabla_op.h: values and gradients of one backward pass";
        if (!status) status = write_pictures(tp, y, &o, dot, html);
    }
    nb_tensor_free(x);
    nb_tape_free(tp);
    return status;
}
