/*
 * nabla's network layers: layer and batch norm, convolutions and pooling,
 * dropout, attention, softmax and the losses.  Part of nabla.h, which
 * includes it (include either; this file alone brings nabla.h in).
 */
#ifndef NABLA_NN_H
#define NABLA_NN_H

#include "nabla.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Layer norm over the last axis: (x - mean) / sqrt(var + eps), times gamma
 * and plus beta ((D,) each, or NULL), with the biased variance as in
 * PyTorch; one op with its closed-form backward. */
#define nb_layer_norm(tp, x, gamma, beta, eps) nb_layer_norm_(tp, x, gamma, beta, eps, NB_SITE)
nb_tensor *nb_layer_norm_(nb_tape *tp, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, double eps,
                          const char *file, int line);

/* Batch norm over every axis but the channels (axis 1) of x, (N, C),
 * (N, C, L) or (N, C, H, W), as PyTorch's F.batch_norm: while the tape is
 * training, each channel is normalised with its batch mean and biased
 * variance, and running_mean and running_var ((C,) heap tensors, or NULL)
 * move towards them: r = (1 - momentum) r + momentum s, with the unbiased
 * variance for running_var.  In evaluation (nb_tape_set_training(tp,
 * false)) the running statistics are used (the batch's when they are
 * NULL).  Then times gamma and plus beta ((C,) each, or NULL).  PyTorch's
 * defaults: momentum 0.1, eps 1e-5. */
#define nb_batch_norm(tp, x, gamma, beta, running_mean, running_var, momentum, eps) \
    nb_batch_norm_(tp, x, gamma, beta, running_mean, running_var, momentum, eps, NB_SITE)
nb_tensor *nb_batch_norm_(nb_tape *tp, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, nb_tensor *running_mean,
                          nb_tensor *running_var, double momentum, double eps, const char *file, int line);

/* ------------------------------------------------------------ convolutions and pooling */

/* The options of a convolution: pairs are (height, width), and conv1d
 * reads the first of each; a zero means the default, so that
 * nb_conv2d(tp, x, w, b, &(nb_conv_opts){.padding = {1, 1}}) or NULL says
 * what PyTorch's keywords do. */
typedef struct {
    int stride[2];   /* default 1 */
    int padding[2];  /* zeros added on both sides; default 0 */
    int dilation[2]; /* spacing of the kernel's taps; default 1 */
    int groups;      /* default 1; C for a depthwise convolution */
    bool relu;       /* relu(conv(x)) in one op: the same values and
                        gradients as nb_relu after it, two passes over
                        memory fewer */
} nb_conv_opts;

/* Cross-correlation, as PyTorch's F.conv2d: x (N, C, H, W), w (O, C/groups,
 * KH, KW), bias (O,) or NULL; the result is (N, O, OH, OW) with
 * OH = (H + 2 padding - dilation (KH - 1) - 1) / stride + 1 (rounded down).
 * The products go through CBLAS on unfolded patches (im2col), or for
 * float32 3x3 stride-1 convolutions of 16 channels and more through
 * Winograd's F(4x4, 3x3) or F(2x2, 3x3) (src/ops/winograd.c: its error
 * bound and dispatch rule), split over nabla's threads by examples, with
 * results that do not depend on the thread count.  conv1d: x (N, C, L),
 * w (O, C/groups, K). */
#define nb_conv2d(tp, x, w, bias, ...) nb_conv2d_(tp, x, w, bias, __VA_ARGS__, NB_SITE) /* opts */
#define nb_conv1d(tp, x, w, bias, ...) nb_conv1d_(tp, x, w, bias, __VA_ARGS__, NB_SITE) /* opts */
nb_tensor *nb_conv2d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias, const nb_conv_opts *opts,
                      const char *file, int line);
nb_tensor *nb_conv1d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias, const nb_conv_opts *opts,
                      const char *file, int line);

/* The options of a transposed convolution: pairs are (height, width), and
 * conv_transpose1d reads the first of each; a zero means the default. */
typedef struct {
    int stride[2];         /* default 1 */
    int padding[2];        /* taken off both sides of the output; default 0 */
    int output_padding[2]; /* added at the bottom and right of the output; default 0;
                              must be smaller than the stride or the dilation */
    int dilation[2];       /* default 1 */
    int groups;            /* default 1 */
} nb_conv_transpose_opts;

/* Transposed convolution, as PyTorch's F.conv_transpose2d: the adjoint of
 * nb_conv2d (its input gradient), x (N, C_in, H, W), w (C_in, C_out/groups,
 * KH, KW) (PyTorch's layout), bias (C_out,) or NULL; the result is
 * (N, C_out, OH, OW) with
 *     OH = (H - 1) stride - 2 padding + dilation (KH - 1) + output_padding + 1.
 * Made of nb_conv2d's products and folding, with the same thread
 * independence.  conv_transpose1d: x (N, C_in, L), w (C_in, C_out/groups, K). */
#define nb_conv_transpose2d(tp, x, w, bias, ...) nb_conv_transpose2d_(tp, x, w, bias, __VA_ARGS__, NB_SITE) /* opts */
#define nb_conv_transpose1d(tp, x, w, bias, ...) nb_conv_transpose1d_(tp, x, w, bias, __VA_ARGS__, NB_SITE) /* opts */
nb_tensor *nb_conv_transpose2d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                                const nb_conv_transpose_opts *opts, const char *file, int line);
nb_tensor *nb_conv_transpose1d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                                const nb_conv_transpose_opts *opts, const char *file, int line);

/* The options of an upsampling: pairs are (height, width), and the 1-D
 * ops read the first of each.  Give either the output's size or a scale
 * factor (PyTorch's size and scale_factor), one of them for every axis and
 * zeros in the other. */
typedef struct {
    size_t size[2];     /* the output's size */
    double scale[2];    /* or a scale factor: output size floor(in · scale) */
    bool align_corners; /* bilinear only: the corners' centres line up (PyTorch's align_corners) */
} nb_upsample_opts;

/* Upsampling (or downsampling) of x (N, C, H, W), as PyTorch's
 * F.interpolate with mode "nearest" or "bilinear" (recompute_scale_factor
 * unset): the same indices and weights, from the same arithmetic (nearest's
 * in float, as PyTorch's CPU kernels; a scale factor given is used as
 * 1/scale for the source positions, not in/out).  nearest1d: x (N, C, L).
 * Backward adds each output's gradient back into the elements it was made
 * from. */
#define nb_upsample_nearest2d(tp, x, ...) nb_upsample_nearest2d_(tp, x, __VA_ARGS__, NB_SITE) /* opts */
#define nb_upsample_nearest1d(tp, x, ...) nb_upsample_nearest1d_(tp, x, __VA_ARGS__, NB_SITE) /* opts */
#define nb_upsample_bilinear2d(tp, x, ...) nb_upsample_bilinear2d_(tp, x, __VA_ARGS__, NB_SITE) /* opts */
nb_tensor *nb_upsample_nearest2d_(nb_tape *tp, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                                  int line);
nb_tensor *nb_upsample_nearest1d_(nb_tape *tp, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                                  int line);
nb_tensor *nb_upsample_bilinear2d_(nb_tape *tp, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                                   int line);

/* The options of a pooling: pairs are (height, width); kernel is required,
 * the rest default as in PyTorch when zero. */
typedef struct {
    int kernel[2];
    int stride[2];    /* default: the kernel */
    int padding[2];   /* at most half the kernel; max pooling pads with -inf */
    int dilation[2];  /* max pooling only; default 1 */
    bool ceil_mode;   /* round the output size up (a last, partial window) */
    bool exclude_pad; /* average pooling: divide by the window's elements
                         inside x only (PyTorch's count_include_pad=False) */
} nb_pool_opts;

/* Pooling over windows of x (N, C, H, W), as PyTorch's F.max_pool2d and
 * F.avg_pool2d.  Max pooling sends each window's gradient to its first
 * largest element (a NaN counts as largest), as PyTorch does. */
#define nb_max_pool2d(tp, x, ...) nb_max_pool2d_(tp, x, __VA_ARGS__, NB_SITE) /* opts */
#define nb_avg_pool2d(tp, x, ...) nb_avg_pool2d_(tp, x, __VA_ARGS__, NB_SITE) /* opts */
nb_tensor *nb_max_pool2d_(nb_tape *tp, nb_tensor *x, const nb_pool_opts *opts, const char *file, int line);
nb_tensor *nb_avg_pool2d_(nb_tape *tp, nb_tensor *x, const nb_pool_opts *opts, const char *file, int line);

/* Dropout: while the tape is training, each element is zeroed with
 * probability p and the others scaled by 1/(1 - p); in evaluation
 * (nb_tape_set_training(tp, false)), or with p = 0, x itself is returned.
 * The mask: one draw s of rng (so a seed repeats the mask; rng moves on by
 * that one draw) seeds a counter-based hash, and element i (row-major) is
 * dropped when (splitmix64(s + i 0x9e3779b97f4a7c15) >> 11) 2^-53 < p
 * (the hash of nb_scaled_dot_product_attention's dropout). */
#define nb_dropout(tp, x, p, rng) nb_dropout_(tp, x, p, rng, NB_SITE)
nb_tensor *nb_dropout_(nb_tape *tp, nb_tensor *x, double p, nb_rng *rng, const char *file, int line);

/* Scaled dot-product attention in one op, PyTorch's
 * F.scaled_dot_product_attention: for q (..., L, E), k (..., S, E) and
 * v (..., S, Ev) with the same leading axes,
 *     out = dropout(softmax(scale q kᵀ + mask)) v          (..., L, Ev)
 * computed in blocks with an online softmax (flash attention): the (L, S)
 * matrix of weights is never kept, only each row's log-sum-exp, and
 * backward recomputes the weights block by block.  Extra memory is O(L + S)
 * per head.  With create_graph, backward is built of ordinary ops (the
 * composed attention's), so second derivatives work; that backward makes
 * the (..., L, S) weights, as the composed attention does.
 *   causal:  query i sees the keys j <= i (top-left aligned, as PyTorch's
 *            is_causal: for a query of 1 row against a KV cache, leave it
 *            false);
 *   mask:    broadcast to (..., L, S): with mask_is_bool, a nonzero entry
 *            lets query i see key j; otherwise it is added to the scores
 *            (and takes a gradient: d loss/d scores);
 *   scale:   0 for 1/sqrt(E);
 *   dropout_p, rng: while the tape is training, each weight is zeroed with
 *            probability dropout_p and the others scaled by 1/(1 - p); one
 *            draw of rng seeds the whole mask (so a seed repeats it), and
 *            nb_attention_dropout_mask gives that mask as a tensor.
 * A query that sees no key gets NaN, as softmax of nothing does in PyTorch.
 * opts NULL: no mask, not causal, default scale, no dropout. */
typedef struct nb_attention_opts {
    bool causal;
    nb_tensor *mask;
    bool mask_is_bool;
    double scale;
    double dropout_p;
    nb_rng *rng;
} nb_attention_opts;
#define nb_scaled_dot_product_attention(tp, q, k, v, opts) \
    nb_scaled_dot_product_attention_(tp, q, k, v, opts, NB_SITE)
nb_tensor *nb_scaled_dot_product_attention_(nb_tape *tp, nb_tensor *q, nb_tensor *k, nb_tensor *v,
                                            const nb_attention_opts *opts, const char *file, int line);
/* The dropout mask (..., L, S) of 0 and 1/(1 - p) that the attention of q
 * and k with this dropout_p draws from rng in the state rng is in now (it
 * makes the same single draw; at p = 0 it gives ones and, as the attention,
 * draws nothing, and rng may be NULL): to compose the same attention of
 * ops, copy the generator before the call. */
#define nb_attention_dropout_mask(tp, q, k, p, rng) nb_attention_dropout_mask_(tp, q, k, p, rng, NB_SITE)
nb_tensor *nb_attention_dropout_mask_(nb_tape *tp, nb_tensor *q, nb_tensor *k, double p, nb_rng *rng,
                                      const char *file, int line);

/* Softmax and log-softmax along an axis, computed stably (the maximum is
 * subtracted first). */
#define nb_softmax(tp, a, axis) nb_softmax_(tp, a, axis, false, NB_SITE)
#define nb_log_softmax(tp, a, axis) nb_softmax_(tp, a, axis, true, NB_SITE)
nb_tensor *nb_softmax_(nb_tape *tp, nb_tensor *a, int axis, bool log, const char *file,
                       int line);

/* Losses; each returns a 0-dimensional tensor, the mean over examples.
 *   mse:      mean((pred - target)^2), shapes equal.
 *   bce:      binary cross-entropy from probabilities p in [0, 1];
 *             each log is clamped at -100, as PyTorch does.
 *   bce_logits: the same from logits z, computed as
 *             max(z,0) - z*t + log(1 + exp(-|z|)), finite for any z.
 *   softmax_cross_entropy: from logits with classes along `axis`.  target is
 *             either the logits' shape (one-hot or probabilities) or the
 *             logits' shape without `axis`, holding class indices. */
#define nb_mse(tp, pred, target) nb_mse_(tp, pred, target, NB_SITE)
#define nb_bce(tp, prob, target) nb_bce_(tp, prob, target, NB_SITE)
#define nb_bce_logits(tp, logits, target) nb_bce_logits_(tp, logits, target, NB_SITE)
#define nb_softmax_cross_entropy(tp, logits, target, axis) \
    nb_softmax_cross_entropy_(tp, logits, target, axis, NB_SITE)
nb_tensor *nb_mse_(nb_tape *tp, nb_tensor *pred, nb_tensor *target, const char *file, int line);
/* Robust regression losses, means over elements of h(pred - target):
 *   huber (delta > 0):    d²/2 for |d| <= delta, else delta (|d| - delta/2)
 *   smooth_l1 (beta >= 0): d²/(2 beta) for |d| < beta, else |d| - beta/2 */
#define nb_huber(tp, pred, target, delta) nb_huber_(tp, pred, target, delta, NB_SITE)
#define nb_smooth_l1(tp, pred, target, beta) nb_smooth_l1_(tp, pred, target, beta, NB_SITE)
nb_tensor *nb_huber_(nb_tape *tp, nb_tensor *pred, nb_tensor *target, double delta, const char *file, int line);
nb_tensor *nb_smooth_l1_(nb_tape *tp, nb_tensor *pred, nb_tensor *target, double beta, const char *file, int line);
nb_tensor *nb_bce_(nb_tape *tp, nb_tensor *prob, nb_tensor *target, const char *file, int line);
nb_tensor *nb_bce_logits_(nb_tape *tp, nb_tensor *logits, nb_tensor *target, const char *file,
                          int line);
nb_tensor *nb_softmax_cross_entropy_(nb_tape *tp, nb_tensor *logits, nb_tensor *target,
                                     int axis, const char *file, int line);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_NN_H */
