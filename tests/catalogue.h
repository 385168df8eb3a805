/*
 * The catalogue of bad inputs, shared by its programs: the row, the runner
 * and the helpers every part needs.  The parts are tests/test_catalogue.c
 * (the ops: shapes, axes, dtypes, creation, values, indexing, joining,
 * functions), tests/test_catalogue_tape.c (backward, NaN and Inf, stale and
 * changed tensors, custom ops and passes inside passes) and
 * tests/test_catalogue_files.c (CSV, IDX, parameter and safetensors files,
 * the training toolkit, graph export, files that are not files, the
 * toolkit's trust in its caller).
 */
#ifndef NABLA_TEST_CATALOGUE_H
#define NABLA_TEST_CATALOGUE_H

#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One row, one mistake: the call must return `expect`, and the message it
 * leaves must contain each of `says`.  A part defines its SITE, the caller's
 * file ("test_catalogue_files.c:"), which the messages of the calls it makes
 * name. */
typedef struct {
    const char *what;     /* the mistake */
    nb_status (*run)(void);
    nb_status expect;
    const char *says[5];  /* the message contains each of these */
} bad_input;

/* A row whose call reports in a result of its own rather than in
 * nb_last_error (nb_gradcheck's message) copies it here. */
static char catalogue_message[512];

/* Ones of float32: M a (rows, cols) matrix, V an (n,) vector; grad_leaf an
 * (n,) float64 of twos that requires a gradient.  Macros, so that the site a
 * tensor records is the part's file and line, as the messages name it. */
#define M(tp, rows, cols) nb_ones(tp, NB_F32, NB_SHAPE(rows, cols))
#define V(tp, n) nb_ones(tp, NB_F32, NB_SHAPE(n))
#define grad_leaf(tp, n) catalogue_requires_grad(nb_full(tp, NB_F64, NB_SHAPE(n), 2))
static inline nb_tensor *catalogue_requires_grad(nb_tensor *t) {
    nb_requires_grad(t, true);
    return t;
}

/* An op case: `expr` is evaluated on a fresh tape `tp`. */
#define OP_CASE(fn, expr)                              \
    static nb_status fn(void) {                        \
        nb_tape *tp = nb_tape_new();                   \
        nb_status st = nb_tensor_status(expr);         \
        nb_tape_free(tp);                              \
        return st;                                     \
    }

/* Runs the n rows, each checked for its status and its message's words,
 * and fails naming every row that does not hold (with the words missing).
 * NB_CATALOGUE_SHOW=1 prints every message, for reading them.  Returns n. */
static int run_catalogue(const bad_input *rows, int n) {
    int failures = 0;
    bool show = getenv("NB_CATALOGUE_SHOW") != NULL;
    for (int i = 0; i < n; i++) {
        const bad_input *c = &rows[i];
        catalogue_message[0] = '\0';
        nb_status st = c->run();
        const char *msg = catalogue_message[0] ? catalogue_message : nb_last_error();
        bool ok = st == c->expect;
        for (int k = 0; ok && k < 5 && c->says[k]; k++) ok = strstr(msg, c->says[k]) != NULL;
        if (show) print_message("%-60s %s\n", c->what, st == NB_OK ? "(no error)" : msg);
        if (!ok) {
            failures++;
            print_error("%s: status %s (expected %s), message: %s\n", c->what, nb_status_string(st),
                        nb_status_string(c->expect), msg);
            for (int k = 0; k < 5 && c->says[k]; k++)
                if (!strstr(msg, c->says[k])) print_error("    missing: \"%s\"\n", c->says[k]);
        }
    }
    print_message("%d bad inputs, %d with the expected error and message\n", n, n - failures);
    assert_int_equal(failures, 0);
    return n;
}

#endif
