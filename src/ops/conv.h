/*
 * The convolution machinery of src/ops/conv.c that the transposed
 * convolution (src/ops/conv_transpose.c) is made of: a transposed
 * convolution is the input gradient of a convolution, so it runs conv.c's
 * kernels on a conv_geom of the convolution it is the adjoint of, and its
 * backward graph records conv.c's ops.
 */
#ifndef NB_OPS_CONV_H
#define NB_OPS_CONV_H

#include "../internal.h"

/* One convolution: x (N, C, H, W) ⋆ w (O, C / groups, KH, KW) = y (N, O, OH, OW). */
typedef struct {
    size_t N, C, H, W;     /* x */
    size_t O, KH, KW;      /* w: (O, C / groups, KH, KW) */
    size_t OH, OW;         /* y: (N, O, OH, OW) */
    long sh, sw, ph, pw, dh, dw;
    size_t groups;
    bool one_d;            /* conv1d: H = KH = OH = 1 and the tensors are 3-D */
    bool relu;             /* conv only: relu applied in the same pass (see conv.c) */
} conv_geom;

/* The three kernels (see the top of conv.c):
 *   FORWARD:      out (N, O, OH, OW) = conv(x = a, w = b)
 *   INPUT_GRAD:   out (N, C, H, W)   = input_grad(G = a, w = b), the transposed convolution
 *   WEIGHT_GRAD:  out (O, C/groups, KH, KW) = weight_grad(x = a, G = b), summed over examples */
enum { KERNEL_FORWARD, KERNEL_INPUT_GRAD, KERNEL_WEIGHT_GRAD };

/* Runs a kernel for entry e, whose `saved` starts with its conv_geom (relu
 * false) and whose tape lends the working memory; out is set, or added
 * into with acc.  False (the tape errored) without working memory.  The
 * same bits on any number of threads. */
bool nb_conv_kernel(const nb_entry *e, int kernel, nb_dtype dt, const void *a, const void *b, void *out, bool acc);

/* Records conv.c's differentiable ops for geometry g (relu false), on
 * inputs whose shapes g describes: conv(x, w), input_grad(G, w) and
 * weight_grad(x, G).  For backward graphs. */
nb_tensor *nb_conv_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *w, const char *file, int line);
nb_tensor *nb_conv_input_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *G, nb_tensor *w, const char *file,
                                   int line);
nb_tensor *nb_conv_weight_grad_call(nb_tape *tp, const conv_geom *g, nb_tensor *x, nb_tensor *G, const char *file,
                                    int line);

/* NULL if the products of g fit what CBLAS can index (and the unfolded
 * patches a sane size), else the errored tensor naming op, x and w. */
nb_tensor *nb_conv_check_sizes(nb_tape *tp, const char *op, const conv_geom *g, const char *sx, const char *sw,
                               const char *file, int line);

/* "3×3, stride 2, padding 1, groups 4" for the pictures. */
void nb_conv_describe(const conv_geom *g, char *buf, size_t size);

#endif
