/* Helpers shared by the test programs (cmocka). */
#ifndef NABLA_TEST_SUPPORT_H
#define NABLA_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "nabla.h"

/* |actual - expected| <= tol, with both values in the failure message. */
#define assert_close(actual, expected, tol) \
    assert_close_(actual, expected, tol, #actual, __FILE__, __LINE__)
void assert_close_(double actual, double expected, double tol, const char *what,
                   const char *file, int line);

/* The tensor's status is NB_OK; else fails with the last error. */
#define assert_ok(t) assert_ok_(t, __FILE__, __LINE__)
void assert_ok_(const nb_tensor *t, const char *file, int line);

/* The message contains every one of the given substrings (NULL-terminated). */
#define assert_message_has(msg, ...) \
    assert_message_has_(msg, __FILE__, __LINE__, __VA_ARGS__, (const char *)NULL)
void assert_message_has_(const char *msg, const char *file, int line, ...);

/* Runs nb_gradcheck with default tolerances; fails with the per-element
 * report when it does not pass. */
#define assert_gradcheck(fn, inputs, n, user) \
    assert_gradcheck_(fn, inputs, n, user, __FILE__, __LINE__)
void assert_gradcheck_(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user,
                       const char *file, int line);

/* A heap float64 tensor of uniform values in [lo, hi) that requires a
 * gradient.  With away_from_zero, values within 0.1 of zero are pushed out
 * (for ops with a kink at zero). */
nb_tensor *random_input(nb_rng *rng, int ndim, const size_t *shape, double lo, double hi,
                        bool away_from_zero);

/* An op under test, applied to inputs in with an argument of its own. */
typedef nb_tensor *(*op_apply_fn)(nb_tape *tp, nb_tensor *const *in, const void *arg);

/* Gradient-checks f through sum(f(in) · R), R fixed random weights (a
 * scalar result is checked as it is): every output element gets its own
 * upstream gradient, so a wrong element cannot hide in a sum. */
#define assert_op_gradcheck(f, arg, in, n) assert_op_gradcheck_(f, arg, in, n, __FILE__, __LINE__)
void assert_op_gradcheck_(op_apply_fn f, const void *arg, nb_tensor *const *in, int n, const char *file, int line);

/* A random shape of 1 to 4 dimensions of sizes 1 to 4, into shape; returns
 * the number of dimensions. */
int random_shape(nb_rng *rng, size_t *shape);

/* A scalar of y that weighs every element with R (cast to y's dtype) and
 * adds a square, so that a gradient check sees each element's own
 * derivative, first and second: sum(R ⊙ y) + 0.1 sum(R ⊙ y²). */
nb_tensor *weighted_loss(nb_tape *tp, nb_tensor *y, nb_tensor *R);

/* t holds the n values v, each within tol · (1 + |v|). */
void expect_values(const nb_tensor *t, const double *v, size_t n, double tol);

/* The same check one order up (nb_gradgradcheck); `what` names the case
 * in the failure message. */
void assert_gradgradcheck(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user, const char *what);

/* A group's scratch directory: test_dir_setup (a cmocka group setup) makes
 * a fresh one under /tmp, test_dir_teardown removes it with its files, and
 * test_path(name) is the path of a file in it (four buffers in turn, so a
 * few can be in use at once). */
extern char test_dir[64];
int test_dir_setup(void **state);
int test_dir_teardown(void **state);
const char *test_path(const char *name);

#endif
