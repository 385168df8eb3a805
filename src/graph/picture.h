/*
 * What the pictures show, apart from how they are written: the scene (the
 * tensors of a tape as nodes, in order of first use; each op's inputs as
 * edges, one per distinct input tensor) and the text of every node, op and
 * edge at a given moment.  src/graph/dot.c writes a scene as Graphviz's
 * language; src/graph/frames.c films one through a backward pass.
 *
 * A label is a sequence of lines (plain UTF-8, escaped by the writer); the
 * strings a user set go in as display text of one line (nb_text_put_user).
 * For a filmed backward every item keeps the same number of lines in every
 * frame (a gradient not yet known is "grad: not yet" and blank lines), so
 * that one layout serves all frames.
 */
#ifndef NABLA_PICTURE_H
#define NABLA_PICTURE_H

#include "../escape.h"
#include "../hash.h"

/* A growing string; `failed` once memory ran out (then writes are ignored). */
typedef struct {
    char *s;
    size_t len, cap;
    bool failed;
} nb_text;

void nb_text_put(nb_text *t, const char *s);
void nb_text_putn(nb_text *t, const char *s, size_t n);
void nb_text_printf(nb_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a string the user set (a name, a symbol, an op's name, formula
 * or description) as one line of display text (src/escape.h, NB_ESC_LINE). */
void nb_text_put_user(nb_text *t, const char *s);
void nb_text_free(nb_text *t);

typedef struct {
    nb_tensor *t;
    size_t id;
    int scope;          /* scope of the entry that made or first used it */
    size_t uses;        /* edges whose backward (from the loss) adds into its gradient */
    bool reached;       /* backward from the loss sends it a gradient */
    UT_hash_handle hh;
} nb_pic_node;

typedef struct {
    size_t entry;       /* the op */
    size_t node;        /* the input tensor's node */
    int slot;           /* its first input slot; later slots of the same tensor are merged in */
    int slots;          /* how many of the op's inputs are this tensor */
} nb_pic_edge;

typedef struct {
    const nb_tape *tp;
    size_t n_entries;       /* the tape's, when the scene was built (callbacks record ops, then drop them) */
    const nb_dot_opts *o;
    const nb_tensor *loss;
    /* "E" when the loss is named E, else "L"; as display text (a name of
     * NB_NAME_MAX bytes may take 3 times as many: see src/escape.h) */
    char loss_name[NB_ESC_LINE_MAX(NB_NAME_MAX)];
    nb_pic_node *by_tensor; /* uthash */
    nb_pic_node **nodes;    /* by id */
    size_t n_nodes, cap_nodes;
    nb_pic_edge *edges;     /* in entry order */
    size_t n_edges, cap_edges;
    size_t *first_edge;     /* per entry: its first edge; first_edge[n_entries] = n_edges */
    bool *runs;             /* per entry: backward from the loss runs it */
    bool mixed_dtypes;
    /* A film of the forward pass: the entries computed so far (the results
     * of later ones show "value: not yet computed"); SIZE_MAX: all. */
    size_t computed;
    bool updated;           /* a film's last frame: the update w ← w − η·g is shown */
} nb_picture;

/* Checks the options a user gave for a picture of tp (`what` names the
 * call in the message), the tensors they name included. */
nb_status nb_picture_check_opts(const nb_dot_opts *o, const nb_tape *tp, const char *what);
/* A picture runs the user's code: custom ops' describe, and for a film a
 * backward pass.  An error it raises on a tape that had none, or a reset
 * or free of the tape that it tried (refused: see nb_user_enter), fails
 * the picture: mark the tape before, and ask after (NB_OK, or the error,
 * with the message set). */
typedef struct {
    nb_status status;
    unsigned refused;
} nb_picture_mark;
nb_picture_mark nb_picture_mark_tape(const nb_tape *tp);
nb_status nb_picture_callbacks_status(const nb_tape *tp, nb_picture_mark before, const char *what);
/* Builds the scene of the tape; NB_ERR_NOMEM on failure (then freed). */
nb_status nb_picture_build(nb_picture *p, const nb_tape *tp, const nb_dot_opts *o);
void nb_picture_free(nb_picture *p);

/* The moment a label describes. */
typedef enum {
    NB_MOMENT_STATIC,   /* a still picture: gradients as they are */
    NB_MOMENT_FORWARD,  /* a film's first frame: backward has not started */
    NB_MOMENT_BACKWARD, /* a film's frame during backward: partial and final marked */
} nb_moment;

/* Appends t's name, or "t<id>" for an unnamed tensor. */
void nb_picture_name(const nb_picture *p, const nb_tensor *t, nb_text *out);
/* Appends item's lines, separated by '\n', to out. */
void nb_picture_node_label(const nb_picture *p, size_t node, nb_moment m, nb_text *out);
void nb_picture_op_label(const nb_picture *p, size_t entry, size_t backward_step, nb_text *out);
void nb_picture_edge_label(const nb_picture *p, size_t edge, nb_moment m, nb_text *out);

/* ---- numbers (src/graph/numbers.c) */
/* Element i as a double, -0 as 0: a label never shows "-0" (+ 0.0 makes -0
 * into 0 and leaves every other number as it is). */
static inline double nb_picture_value(nb_dtype dt, const void *values, size_t i) {
    return (dt == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i]) + 0.0;
}
/* How many lines nb_picture_values writes for t. */
size_t nb_picture_value_lines(const nb_picture *p, const nb_tensor *t);
/* t's values (its data, its gradient, a contribution: of t's shape) after
 * `prefix`: in full, a matrix a row a line, or summarised on one line. */
void nb_picture_values(const nb_picture *p, const nb_tensor *t, const void *values, const char *prefix,
                       nb_text *out);
/* "= min a, mean b, max c" of an element-wise op's local derivative ∂y/∂x,
 * from the upstream gradient g (y's shape) and x's contribution c. */
void nb_picture_local_summary(const nb_tensor *x, const nb_tensor *y, const void *g, const void *c, nb_text *out);
/* A parameter's update lines for a film (opts.learning_rate > 0):
 * "update: not yet" and blank lines, or, with its gradient g, the step of
 * gradient descent: "x ← 5 − 0.1 × 10 = 4" for one number (printed so that
 * a calculator agrees), else the new values as nb_picture_values prints. */
void nb_picture_update(const nb_picture *p, const nb_tensor *t, const void *g, nb_text *out);
/* "\na × b = c": upstream × local = contribution. */
void nb_picture_product(nb_text *out, double a, double b, double c);
/* "= a + b - c": the n terms (n <= 4) of a gradient whose value, printed
 * beside, is total. */
void nb_picture_sum(nb_text *out, const double *terms, size_t n, double total);

/* Does the edge carry a gradient (its tensor needs one and the op sends it)? */
bool nb_picture_edge_has_gradient(const nb_picture *p, size_t edge);

/* The role colours and names shared by the writers. */
typedef enum { NB_ROLE_INPUT, NB_ROLE_PARAM, NB_ROLE_INTERMEDIATE, NB_ROLE_LOSS } nb_role;
nb_role nb_picture_role(const nb_picture *p, const nb_tensor *t);
extern const char *const nb_role_names[4];
extern const char *const nb_role_colors[4];
/* Gradcheck overlay: the worst relative error of t, or NULL if unchecked. */
const double *nb_picture_checked(const nb_picture *p, const nb_tensor *t);
/* Its border colour: green under 1e-4 (the finite differences agree), orange
 * under 1e-3 (near the tolerance, PyTorch's rtol), red above (fails). */
const char *nb_picture_error_color(double err);
#define NB_HIGHLIGHT_COLOR "#3c78d8" /* the op being stepped: blue, apart from the loss and gradcheck colours */

#endif
