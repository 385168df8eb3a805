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
