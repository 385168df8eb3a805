// nabla used from C++ (tests/headers.sh builds this as C++11, C++17 and
// C++20): NB_SHAPE, ops, backward, nb_grad with create_graph, and an op
// written with nabla_op.h.  Exits 1 with a message on a wrong value.
#include <nabla.h>
#include <nabla_op.h>

#include <cmath>
#include <cstdio>

// y = x², dy/dx = 2x, as a custom op
static void square_forward(nb_op_call *c) {
    const double *x = static_cast<const double *>(nb_op_input_data(c, 0));
    double *y = static_cast<double *>(nb_op_output_data(c));
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = x[i] * x[i];
}
static void square_backward(nb_op_call *c) {
    const double *x = static_cast<const double *>(nb_op_input_data(c, 0));
    const double *g = static_cast<const double *>(nb_op_grad_output(c));
    bool acc;
    double *gx = static_cast<double *>(nb_op_grad_input(c, 0, &acc));
    if (!gx) return;
    for (size_t i = 0; i < nb_op_size(c); i++) gx[i] = (acc ? gx[i] : 0) + 2 * x[i] * g[i];
}

static int expect(const char *what, double got, double want) {
    if (std::fabs(got - want) <= 1e-12 * (1 + std::fabs(want))) return 0;
    std::fprintf(stderr, "cxx_model: %s is %.17g, expected %.17g\n", what, got, want);
    return 1;
}

int main() {
    nb_op_def square = {};
    square.name = "square";
    square.forward = square_forward;
    square.backward = square_backward;
    square.derivative[0] = "2x";
    square.elementwise = true;

    int bad = 0;
    nb_tape *tp = nb_tape_new();
    const double values[] = {1, 2, 3};
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), values);
    nb_requires_grad(x, true);
    // y = sum(x²) + sum(square(x)) = 2 (1 + 4 + 9); dy/dx = 4x; d²y/dx² = 4
    nb_tensor *xs[1] = {x};
    nb_tensor *custom = nb_op(tp, &square, xs, 1, NB_F64, nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0);
    nb_tensor *y = nb_add(tp, nb_sum(tp, nb_square(tp, x)), nb_sum(tp, custom));
    if (nb_backward(y) != NB_OK) {
        std::fprintf(stderr, "cxx_model: %s\n", nb_last_error());
        return 1;
    }
    bad |= expect("y", nb_item(y), 28);
    for (size_t i = 0; i < 3; i++) bad |= expect("dy/dx", nb_grad_get(x, i), 4.0 * (double)(i + 1));

    nb_tape_reset(tp);
    nb_tensor *z = nb_sum(tp, nb_mul(tp, nb_square(tp, x), x)); // sum x³: dz/dx = 3x², d²z/dx² = 6x
    nb_tensor *g, *h;
    if (nb_grad(z, &x, 1, &g, true) != NB_OK || nb_grad(nb_sum(tp, g), &x, 1, &h, false) != NB_OK) {
        std::fprintf(stderr, "cxx_model: %s\n", nb_last_error());
        return 1;
    }
    for (size_t i = 0; i < 3; i++) {
        double v = (double)(i + 1);
        bad |= expect("dz/dx", nb_get(g, i), 3 * v * v);
        bad |= expect("d2z/dx2", nb_get(h, i), 6 * v);
    }
    nb_tensor *m = nb_zeros(tp, NB_F32, NB_SHAPE(2, 3));
    bad |= expect("size of NB_SHAPE(2, 3)", (double)nb_tensor_size(m), 6);
    nb_tape_free(tp);
    nb_tensor_free(x);
    return bad;
}
