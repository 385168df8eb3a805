/* Shared by tests/test_dot.c and tests/test_dot_frames.c: a small
 * recorded network and readers of the dot text. */
#ifndef NABLA_TESTS_DOT_SUPPORT_H
#define NABLA_TESTS_DOT_SUPPORT_H

#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef struct { nb_tensor *W, *b; } model;

/* A two-layer network on fixed data, recorded on tp; returns the loss. */
static inline nb_tensor *build(nb_tape *tp, model *m) {
    nb_tensor *X = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_tensor_set_name(X, "X");
    nb_tensor *y = nb_from_array(tp, NB_F64, NB_SHAPE(2, 1), ((double[]){0, 1}));
    nb_tensor_set_name(y, "y \"label\"");
    nb_tensor *z = nb_add(tp, nb_matmul(tp, X, m->W), m->b);
    nb_tensor_set_name(z, "Z[1]");
    nb_tensor *loss = nb_bce_logits(tp, z, y);
    nb_tensor_set_name(loss, "loss");
    return loss;
}

static inline model make_model(void) {
    model m = {nb_from_array(NULL, NB_F64, NB_SHAPE(3, 1), ((double[]){0.1, -0.2, 0.3})),
               nb_full(NULL, NB_F64, NB_SHAPE(1), 0.5)};
    nb_tensor_set_name(m.W, "W[1]");
    nb_tensor_set_name(m.b, "b[1]");
    nb_requires_grad(m.W, true);
    nb_requires_grad(m.b, true);
    return m;
}

static inline char *dot_of(nb_tape *tp, const nb_dot_opts *opts) {
    /* The stream's buffer pointer lives outside this frame: GCC 12 at -O3
     * otherwise warns that the result may dangle into a local. */
    static char *buf;
    static size_t len;
    buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(nb_dot_write(tp, f, opts), NB_OK);
    fclose(f);
    return buf;
}

/* The label of node `name` in a dot text: from its label=" to the end of
 * the line (cut in a copy the caller frees). */
static inline char *node_label(const char *dot, const char *name) {
    char key[80];
    snprintf(key, sizeof key, "label=\"%s\\n", name);
    const char *at = strstr(dot, key);
    if (!at) {
        snprintf(key, sizeof key, "label=\"%s\"", name);
        at = strstr(dot, key);
    }
    assert_non_null(at);
    return strndup(at, strcspn(at, "\n"));
}

static inline size_t count_of(const char *s, const char *what) {
    size_t n = 0;
    for (const char *at = strstr(s, what); at; at = strstr(at + 1, what)) n++;
    return n;
}

#endif
