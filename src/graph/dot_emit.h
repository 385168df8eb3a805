/*
 * Writing a scene (src/graph/picture.h) as dot, with labels given: a still
 * picture's (src/graph/dot.c), a frame's, or the stepper's layout, whose
 * labels are the longest each line is in any frame (src/graph/frames.c).
 */
#ifndef NABLA_DOT_EMIT_H
#define NABLA_DOT_EMIT_H

#include "picture.h"

#include <stdio.h>

typedef struct {
    const char *const *node_labels; /* per node, lines separated by '\n' */
    const char *const *op_labels;   /* per entry */
    const char *const *edge_labels; /* per edge */
    size_t highlight;               /* 1 + the entry to draw in blue; 0 for none */
    const char *rankdir;            /* "LR" or "TB"; NULL: "LR" */
    bool legend;                    /* a legend cluster (still pictures) */
    bool classes;                   /* SVG classes for the stepper's script */
    int node_fontsize, edge_fontsize; /* points; 0 for 11 and 9 */
    bool no_title;                  /* the stepper: the page's heading says it */
} nb_dot_layout;

nb_status nb_dot_emit(const nb_picture *p, FILE *f, const nb_dot_layout *l);

#endif
