#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void assert_close_(double actual, double expected, double tol, const char *what,
                   const char *file, int line) {
    if (fabs(actual - expected) <= tol) return;
    print_error("%s = %.10g, expected %.10g (tolerance %g)\n", what, actual, expected, tol);
    _fail(file, line);
}

void assert_ok_(const nb_tensor *t, const char *file, int line) {
    if (nb_tensor_status(t) == NB_OK) return;
    print_error("tensor is errored (%s): %s\n", nb_status_string(nb_tensor_status(t)),
                nb_last_error());
    _fail(file, line);
}

void assert_message_has_(const char *msg, const char *file, int line, ...) {
    va_list ap;
    va_start(ap, line);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
        if (!msg || !strstr(msg, s)) {
            /* The missing text first: cmocka cuts long messages short. */
            print_error("missing \"%s\" in:\n", s);
            fprintf(stderr, "%s\n", msg ? msg : "(null)");
            va_end(ap);
            _fail(file, line);
            return;
        }
    }
    va_end(ap);
}

void assert_gradcheck_(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user,
                       const char *file, int line) {
    nb_gradcheck_opts opts;
    nb_gradcheck_default_opts(&opts);
    nb_gradcheck_result r = nb_gradcheck(fn, inputs, n, user, &opts);
    if (r.status == NB_OK && r.passed) return;
    print_error("%s\n", r.message);
    opts.report = stderr;
    nb_gradcheck(fn, inputs, n, user, &opts);
    _fail(file, line);
}

nb_tensor *random_input(nb_rng *rng, int ndim, const size_t *shape, double lo, double hi,
                        bool away_from_zero) {
    nb_tensor *t = nb_rand_uniform(NULL, rng, NB_F64, ndim, shape, lo, hi);
    for (size_t i = 0; away_from_zero && i < nb_tensor_size(t); i++) {
        double v = nb_get(t, i);
        if (fabs(v) < 0.1) nb_set(t, i, v < 0 ? v - 0.2 : v + 0.2);
    }
    nb_requires_grad(t, true);
    return t;
}

void assert_gradgradcheck(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user, const char *what) {
    nb_gradcheck_opts o;
    nb_gradcheck_default_opts(&o);
    nb_gradcheck_result r = nb_gradgradcheck(fn, inputs, n, user, &o);
    if (r.status == NB_OK && r.passed) return;
    print_error("%s: %s\n", what, r.message);
    o.report = stderr;
    nb_gradgradcheck(fn, inputs, n, user, &o);
    fail();
}

char test_dir[64];

int test_dir_setup(void **state) {
    (void)state;
    snprintf(test_dir, sizeof test_dir, "/tmp/nabla-test-XXXXXX");
    return mkdtemp(test_dir) ? 0 : -1;
}

int test_dir_teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
    return system(cmd) == 0 ? 0 : -1;
}

const char *test_path(const char *name) {
    static char path[4][256];
    static int turn;
    char *p = path[turn++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", test_dir, name);
    return p;
}

typedef struct {
    op_apply_fn f;
    const void *arg;
} op_case;

static nb_tensor *weighted_by_random(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    const op_case *c = user;
    nb_tensor *y = c->f(tp, in, c->arg);
    if (nb_tensor_ndim(y) == 0) return y;
    nb_rng rng;
    nb_rng_seed(&rng, 77);
    nb_tensor *R = nb_rand_uniform(tp, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
    return nb_sum(tp, nb_mul(tp, y, R));
}

void assert_op_gradcheck_(op_apply_fn f, const void *arg, nb_tensor *const *in, int n, const char *file, int line) {
    op_case c = {f, arg};
    assert_gradcheck_(weighted_by_random, in, n, &c, file, line);
}

int random_shape(nb_rng *rng, size_t *shape) {
    int nd = 1 + (int)(nb_rng_next(rng) % 4);
    for (int d = 0; d < nd; d++) shape[d] = 1 + nb_rng_next(rng) % 4;
    return nd;
}

void expect_values(const nb_tensor *t, const double *v, size_t n, double tol) {
    assert_ok(t);
    assert_int_equal(nb_tensor_size(t), n);
    for (size_t i = 0; i < n; i++) assert_close(nb_get(t, i), v[i], tol * (1 + fabs(v[i])));
}

nb_tensor *weighted_loss(nb_tape *tp, nb_tensor *y, nb_tensor *R) {
    nb_tensor *r = nb_cast(tp, R, nb_tensor_dtype(y));
    return nb_add(tp, nb_sum(tp, nb_mul(tp, r, y)), nb_scale(tp, nb_sum(tp, nb_mul(tp, r, nb_square(tp, y))), 0.1));
}
