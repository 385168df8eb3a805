/* Winograd's minimal filtering for 3x3, stride-1 convolutions
 * (src/ops/winograd.c), the fast path src/ops/conv.c dispatches to. */
#ifndef NABLA_WINOGRAD_H
#define NABLA_WINOGRAD_H

#include "../internal.h"

/* What conv.c asks for: the convolution's geometry and operands. */
typedef struct {
    size_t N, C, H, W;      /* x (N, C, H, W) */
    size_t O, KH, KW;       /* w (O, C / groups, KH, KW) */
    size_t OH, OW;          /* y (N, O, OH, OW) */
    long sh, sw, ph, pw, dh, dw;
    size_t groups;
    bool one_d;
} nb_winograd_geom;

enum { NB_WINOGRAD_FORWARD, NB_WINOGRAD_INPUT_GRAD, NB_WINOGRAD_WEIGHT_GRAD };

typedef struct {
    int kind;               /* NB_WINOGRAD_FORWARD: out (N, O, OH, OW) = conv(in = x, w) [+ bias], [relu'd];
                             * NB_WINOGRAD_INPUT_GRAD: out (N, C, H, W) = dL/dx from in = G (N, O, OH, OW);
                             * NB_WINOGRAD_WEIGHT_GRAD: out (O, C, 3, 3) = dL/dw from in = x and w = G */
    nb_dtype dt;
    const void *in, *w, *bias; /* bias: forward only, or NULL */
    const void *relu_out;   /* gradients of the fused conv + relu: y, whose values <= 0 zero G; or NULL */
    bool relu;              /* forward: relu the result */
    void *out;
    bool acc;               /* add into out */
} nb_winograd_call;

/* Runs the call by Winograd when the geometry allows it and the dispatch
 * rule (or nb_winograd_set) says so: 1 when done, 0 when declined (the
 * caller runs its general path), -1 when working memory could not be had
 * (the tape is errored, naming e's op). */
int nb_winograd_run(const nb_op_call *e, const nb_winograd_geom *g, const nb_winograd_call *c);

/* For tests and benchmarks only, never the library: mode 0 follows the
 * dispatch rule, 1 takes Winograd wherever the geometry, the dtype and the
 * inputs allow it, -1 never; tile 0 is the default output tile, else 2 or
 * 4 (F(2x2, 3x3) or F(4x4, 3x3)).  Not thread-safe: set it between calls. */
void nb_winograd_set(int mode, int tile);

#endif
