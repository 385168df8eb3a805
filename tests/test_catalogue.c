/*
 * The catalogue of bad inputs, the ops: one table, one row per mistake a
 * user can make with an op or a new tensor (shapes, axes, dtypes, NULLs,
 * values, indexing, joining, the functions, convolutions, pooling and
 * normalisation).  Each row states the status the call must return and
 * words its message must contain (the op, the shapes, what was expected),
 * so that a vague or wrong message fails as surely as a crash.  The
 * sanitizer run of this file checks that no error path leaks.
 *
 * The other parts of the catalogue: tests/test_catalogue_tape.c (backward,
 * NaN and Inf, stale tensors, custom ops) and tests/test_catalogue_files.c
 * (the loaders, parameter files, the training toolkit, graph export); the
 * row, the runner (NB_CATALOGUE_SHOW=1 prints every message) and the
 * helpers are in tests/catalogue.h.  The examples' bad command lines and
 * files are in tests/examples.sh.
 */
#include "support.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "catalogue.h"

/* ------------------------------------------------------------ the ops */

OP_CASE(add_shapes, nb_add(tp, M(tp, 2, 3), V(tp, 2)))
OP_CASE(sub_shapes, nb_sub(tp, M(tp, 4, 3), M(tp, 2, 3)))
OP_CASE(mul_shapes, nb_mul(tp, M(tp, 2, 3), M(tp, 3, 2)))
OP_CASE(div_shapes, nb_div(tp, V(tp, 5), V(tp, 4)))
OP_CASE(matmul_inner, nb_matmul(tp, M(tp, 3, 4), M(tp, 5, 2)))
OP_CASE(matmul_vector, nb_matmul(tp, M(tp, 2, 3), V(tp, 4)))
OP_CASE(matmul_batch, nb_matmul(tp, nb_ones(tp, NB_F32, NB_SHAPE(2, 3, 4)), nb_ones(tp, NB_F32, NB_SHAPE(5, 4, 2))))
OP_CASE(matmul_scalar, nb_matmul(tp, M(tp, 2, 3), nb_scalar(tp, NB_F32, 2)))
OP_CASE(matmul_t_inner, nb_matmul_t(tp, M(tp, 3, 4), M(tp, 3, 2), false, true))
OP_CASE(linear_bias, nb_linear(tp, M(tp, 2, 3), M(tp, 3, 4), V(tp, 3)))
#define X3(tp, a, b, c) nb_ones(tp, NB_F32, NB_SHAPE(a, b, c))
OP_CASE(linear_scalar_x, nb_linear(tp, nb_scalar(tp, NB_F32, 2), M(tp, 1, 4), V(tp, 4)))
OP_CASE(linear_3d_weight, nb_linear(tp, M(tp, 2, 3), X3(tp, 1, 3, 4), V(tp, 4)))
OP_CASE(linear_nd_inner, nb_linear_torch(tp, X3(tp, 2, 5, 3), M(tp, 4, 2), V(tp, 4)))
OP_CASE(linear_nd_bias, nb_linear(tp, X3(tp, 2, 5, 3), M(tp, 3, 4), V(tp, 5)))
OP_CASE(linear_nd_column, nb_linear(tp, X3(tp, 2, 5, 3), M(tp, 3, 4), M(tp, 5, 1)))
OP_CASE(linear_vector_bias, nb_linear_torch(tp, V(tp, 3), M(tp, 4, 3), M(tp, 1, 4)))
OP_CASE(linear_nd_transposed, nb_linear_t(tp, X3(tp, 2, 3, 4), M(tp, 2, 5), V(tp, 5), true, false))
OP_CASE(linear_null_weight, nb_linear_torch(tp, X3(tp, 2, 5, 3), NULL, V(tp, 4)))
OP_CASE(linear_null_bias, nb_linear_torch(tp, X3(tp, 2, 5, 3), M(tp, 4, 3), NULL))
OP_CASE(linear_mixed, nb_linear_torch(tp, X3(tp, 2, 5, 3), nb_ones(tp, NB_F64, NB_SHAPE(4, 3)), V(tp, 4)))
OP_CASE(heads_vector, nb_split_heads(tp, V(tp, 6), 2))
OP_CASE(heads_divide, nb_split_heads(tp, M(tp, 2, 6), 4))
OP_CASE(heads_zero, nb_split_heads(tp, M(tp, 2, 6), 0))
OP_CASE(heads_huge, nb_split_heads(tp, M(tp, 2, 6), INT_MAX))
OP_CASE(heads_part, nb_split_heads_(tp, M(tp, 2, 6), 2, 3, 3, "test_catalogue.c", __LINE__))
OP_CASE(heads_rank, nb_split_heads(tp, nb_ones(tp, NB_F32, 8, (size_t[8]){1, 1, 1, 1, 1, 1, 2, 4}), 2))
OP_CASE(heads_null, nb_split_heads(tp, NULL, 2))
OP_CASE(merge_matrix, nb_merge_heads(tp, M(tp, 2, 3)))
static nb_status qkv_divide(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *out[3];
    nb_status st = nb_split_qkv(tp, X3(tp, 2, 5, 8), 2, out);
    for (int i = 0; i < 3 && st != NB_OK; i++)
        if (nb_tensor_status(out[i]) != st) st = NB_OK; /* every part errored alike */
    nb_tape_free(tp);
    return st;
}
static nb_status qkv_null_out(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_split_qkv(tp, X3(tp, 2, 5, 12), 2, NULL);
    nb_tape_free(tp);
    return st;
}
OP_CASE(mse_shapes, nb_mse(tp, M(tp, 2, 3), M(tp, 3, 2)))
OP_CASE(bce_shapes, nb_bce(tp, nb_full(tp, NB_F32, NB_SHAPE(4), 0.5), V(tp, 3)))
OP_CASE(bce_logits_shapes, nb_bce_logits(tp, M(tp, 4, 1), V(tp, 3)))
OP_CASE(sce_targets, nb_softmax_cross_entropy(tp, M(tp, 2, 3), V(tp, 3), 1))
OP_CASE(sum_axis_range, nb_sum_axis(tp, M(tp, 2, 3), 2, false))
OP_CASE(mean_axis_range, nb_mean_axis(tp, M(tp, 2, 3), -3, true))
OP_CASE(softmax_axis, nb_softmax(tp, M(tp, 2, 3), 5))
OP_CASE(log_softmax_axis, nb_log_softmax(tp, V(tp, 3), 1))
OP_CASE(transpose_axis, nb_transpose(tp, M(tp, 2, 3), 0, 2))
OP_CASE(reshape_count, nb_reshape(tp, M(tp, 2, 3), NB_DIMS(4, 2)))
OP_CASE(reshape_infer, nb_reshape(tp, M(tp, 2, 3), NB_DIMS(4, -1)))
OP_CASE(reshape_zero, nb_reshape(tp, M(tp, 2, 3), NB_DIMS(0, 6)))
OP_CASE(cast_dtype, nb_cast(tp, V(tp, 2), (nb_dtype)5))
OP_CASE(clamp_bounds, nb_clamp(tp, V(tp, 2), 1, -1))
OP_CASE(mixed_add, nb_add(tp, V(tp, 2), nb_ones(tp, NB_F64, NB_SHAPE(2))))
OP_CASE(mixed_matmul, nb_matmul(tp, M(tp, 2, 2), nb_ones(tp, NB_F64, NB_SHAPE(2, 2))))
OP_CASE(null_unary, nb_sigmoid(tp, NULL))
OP_CASE(null_binary, nb_mul(tp, V(tp, 2), NULL))
OP_CASE(null_loss_target, nb_mse(tp, V(tp, 2), NULL))
OP_CASE(errored_input, nb_relu(tp, nb_exp(tp, nb_add(tp, V(tp, 2), V(tp, 3)))))
OP_CASE(bce_prob_range, nb_bce(tp, nb_from_array(tp, NB_F32, NB_SHAPE(3), ((double[]){0.5, 1.5, 0.2})), V(tp, 3)))
OP_CASE(bce_prob_nan, nb_bce(tp, nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){0.5, NAN})),
                             nb_ones(tp, NB_F64, NB_SHAPE(2))))
OP_CASE(sce_class_range, nb_softmax_cross_entropy(tp, M(tp, 2, 3), nb_from_array(tp, NB_F32, NB_SHAPE(2),
                                                  ((double[]){1, 3})), 1))
OP_CASE(sce_class_nan, nb_softmax_cross_entropy(tp, M(tp, 2, 3), nb_from_array(tp, NB_F32, NB_SHAPE(2),
                                                ((double[]){0, NAN})), 1))
OP_CASE(sce_class_fraction, nb_softmax_cross_entropy(tp, M(tp, 2, 3), nb_from_array(tp, NB_F32, NB_SHAPE(2),
                                                     ((double[]){0.5, 1})), 1))

static nb_status null_tape(void) {
    nb_tensor *a = V(NULL, 2);
    nb_status st = nb_tensor_status(nb_exp(NULL, a));
    nb_tensor_free(a);
    return st;
}

static nb_status foreign_tape(void) {
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_status st = nb_tensor_status(nb_add(tp, V(tp, 2), V(other, 2)));
    nb_tape_free(tp);
    nb_tape_free(other);
    return st;
}

/* ------------------------------------------------------------ creation */

static nb_status created(nb_tensor *t) {
    nb_status st = nb_tensor_status(t);
    nb_tensor_free(t);
    return st;
}
static nb_status empty_tensor(void) { return created(nb_zeros(NULL, NB_F64, NB_SHAPE(3, 0))); }
static nb_status overflowing_dims(void) { return created(nb_zeros(NULL, NB_F32, NB_SHAPE(SIZE_MAX / 2, 4))); }
static nb_status overflowing_bytes(void) {
    return created(nb_zeros(NULL, NB_F64, NB_SHAPE((size_t)1 << 31, (size_t)1 << 31, 8)));
}
static nb_status too_many_dims(void) {
    return created(nb_zeros(NULL, NB_F64, 9, (size_t[9]){1, 1, 1, 1, 1, 1, 1, 1, 1}));
}
static nb_status unknown_dtype(void) { return created(nb_zeros(NULL, (nb_dtype)7, NB_SHAPE(2))); }
static nb_status null_data(void) { return created(nb_from_f32(NULL, NB_SHAPE(2), NULL)); }
static nb_status null_shape(void) { return created(nb_zeros(NULL, NB_F64, 2, NULL)); }
static nb_status uniform_bounds(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    return created(nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(2), 1, 0));
}
static nb_status normal_sd(void) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    return created(nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(2), 0, -1));
}

/* ------------------------------------------------------------ indexing, joining, functions */

OP_CASE(slice_axis, nb_slice(tp, M(tp, 2, 3), 2, 0, 1, 1))
OP_CASE(slice_step, nb_slice(tp, M(tp, 2, 3), 1, 0, 3, 0))
OP_CASE(slice_empty, nb_slice(tp, M(tp, 2, 3), 1, 2, 1, 1))
OP_CASE(select_range, nb_index_select(tp, M(tp, 5, 2), 0, ((size_t[]){1, 5, 0}), 3))
OP_CASE(select_none, nb_index_select(tp, M(tp, 5, 2), 0, ((size_t[]){0}), 0))
OP_CASE(gather_value, nb_gather(tp, M(tp, 2, 3), 1, nb_from_array(tp, NB_F32, NB_SHAPE(2, 1), ((double[]){0, 3}))))
OP_CASE(gather_fraction, nb_gather(tp, M(tp, 2, 3), 1, nb_from_array(tp, NB_F32, NB_SHAPE(2, 1), ((double[]){0, 1.5}))))
OP_CASE(gather_shape, nb_gather(tp, M(tp, 2, 3), 1, V(tp, 2)))
static nb_status concat_shapes(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[3] = {M(tp, 2, 3), M(tp, 2, 4), M(tp, 3, 3)};
    nb_status st = nb_tensor_status(nb_concat(tp, list, 3, 1));
    nb_tape_free(tp);
    return st;
}
static nb_status stack_shapes(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[2] = {M(tp, 2, 3), M(tp, 2, 4)};
    nb_status st = nb_tensor_status(nb_stack(tp, list, 2, 0));
    nb_tape_free(tp);
    return st;
}
static nb_status concat_none(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[1] = {NULL};
    nb_status st = nb_tensor_status(nb_concat(tp, list, 0, 0));
    nb_tape_free(tp);
    return st;
}
static nb_status concat_null_member(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *list[5] = {M(tp, 2, 3), M(tp, 2, 3), M(tp, 2, 3), M(tp, 2, 3), NULL};
    nb_status st = nb_tensor_status(nb_concat(tp, list, 5, 0));
    nb_tape_free(tp);
    return st;
}
OP_CASE(where_shapes, nb_where(tp, M(tp, 2, 3), M(tp, 2, 3), V(tp, 2)))
OP_CASE(pad_null, nb_pad(tp, M(tp, 2, 3), NULL))
OP_CASE(broadcast_to_shape, nb_broadcast_to(tp, M(tp, 2, 3), NB_SHAPE(4, 3)))
OP_CASE(broadcast_to_fewer, nb_broadcast_to(tp, M(tp, 2, 3), NB_SHAPE(3)))
OP_CASE(permute_axes, nb_permute(tp, nb_ones(tp, NB_F32, NB_SHAPE(2, 3, 4)), ((int[]){0, 2, 0})))
OP_CASE(squeeze_size, nb_squeeze(tp, M(tp, 2, 3), 1))
OP_CASE(unsqueeze_axis, nb_unsqueeze(tp, M(tp, 2, 3), 4))
OP_CASE(maximum_shapes, nb_maximum(tp, M(tp, 2, 3), V(tp, 2)))
OP_CASE(logsumexp_axis, nb_logsumexp(tp, M(tp, 2, 3), 2, false))
OP_CASE(var_dof, nb_var_axis(tp, M(tp, 2, 1), 1, false, 1))
OP_CASE(argmax_axis, nb_argmax(tp, V(tp, 3), -2, false))
OP_CASE(layer_norm_gamma, nb_layer_norm(tp, M(tp, 2, 3), V(tp, 2), NULL, 1e-5))
OP_CASE(layer_norm_eps, nb_layer_norm(tp, M(tp, 2, 3), NULL, NULL, 0))
OP_CASE(dropout_p, nb_dropout(tp, M(tp, 2, 3), 1.5, NULL))
OP_CASE(dropout_rng, nb_dropout(tp, M(tp, 2, 3), 0.5, NULL))
OP_CASE(huber_delta, nb_huber(tp, V(tp, 3), V(tp, 3), 0))
OP_CASE(huber_shapes, nb_huber(tp, V(tp, 3), V(tp, 4), 1))
OP_CASE(smooth_l1_beta, nb_smooth_l1(tp, V(tp, 3), V(tp, 3), -1))
/* attention */
static nb_tensor *attention(nb_tape *tp, nb_tensor *q, nb_tensor *k, nb_tensor *v, nb_attention_opts o) {
    return nb_scaled_dot_product_attention(tp, q, k, v, &o);
}
OP_CASE(attention_q_rank, attention(tp, V(tp, 4), M(tp, 5, 4), M(tp, 5, 2), (nb_attention_opts){0}))
OP_CASE(attention_leading, attention(tp, nb_ones(tp, NB_F32, NB_SHAPE(2, 3, 4)), nb_ones(tp, NB_F32, NB_SHAPE(3, 5, 4)),
                                     nb_ones(tp, NB_F32, NB_SHAPE(3, 5, 2)), (nb_attention_opts){0}))
OP_CASE(attention_rank, attention(tp, M(tp, 3, 4), nb_ones(tp, NB_F32, NB_SHAPE(2, 5, 4)), M(tp, 5, 2), (nb_attention_opts){0}))
OP_CASE(attention_e, attention(tp, M(tp, 3, 4), M(tp, 5, 2), M(tp, 5, 2), (nb_attention_opts){0}))
OP_CASE(attention_s, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 6, 2), (nb_attention_opts){0}))
OP_CASE(attention_mask, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 5, 2), (nb_attention_opts){.mask = M(tp, 3, 6)}))
OP_CASE(attention_mask_dtype, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 5, 2),
                                        (nb_attention_opts){.mask = nb_ones(tp, NB_F64, NB_SHAPE(3, 5))}))
OP_CASE(attention_scale, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 5, 2), (nb_attention_opts){.scale = INFINITY}))
OP_CASE(attention_p, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 5, 2), (nb_attention_opts){.dropout_p = -0.5}))
OP_CASE(attention_p_nan, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 5, 2), (nb_attention_opts){.dropout_p = NAN}))
OP_CASE(attention_rng, attention(tp, M(tp, 3, 4), M(tp, 5, 4), M(tp, 5, 2), (nb_attention_opts){.dropout_p = 0.1}))
OP_CASE(attention_null_v, attention(tp, M(tp, 3, 4), M(tp, 5, 4), NULL, (nb_attention_opts){0}))
OP_CASE(attention_mask_rng, nb_attention_dropout_mask(tp, M(tp, 3, 4), M(tp, 5, 4), 0.5, NULL))
OP_CASE(attention_mask_e, nb_attention_dropout_mask(tp, M(tp, 3, 4), M(tp, 5, 3), 0.5, NULL))
/* convolutions, pooling, batch norm */
static nb_tensor *T4(nb_tape *tp, size_t a, size_t b, size_t c, size_t d) { return nb_ones(tp, NB_F32, NB_SHAPE(a, b, c, d)); }
OP_CASE(conv_x_rank, nb_conv2d(tp, M(tp, 28, 28), T4(tp, 8, 1, 3, 3), NULL, NULL))
OP_CASE(conv_channels, nb_conv2d(tp, T4(tp, 2, 3, 8, 8), T4(tp, 4, 2, 3, 3), NULL, NULL))
OP_CASE(conv_groups, nb_conv2d(tp, T4(tp, 2, 3, 8, 8), T4(tp, 4, 1, 3, 3), NULL, &(nb_conv_opts){.groups = 2}))
OP_CASE(conv_bias, nb_conv2d(tp, T4(tp, 2, 3, 8, 8), T4(tp, 4, 3, 3, 3), V(tp, 3), NULL))
OP_CASE(conv_kernel_too_big, nb_conv2d(tp, T4(tp, 1, 1, 4, 4), T4(tp, 1, 1, 3, 3), NULL,
                                       &(nb_conv_opts){.dilation = {2, 2}}))
OP_CASE(conv_negative, nb_conv2d(tp, T4(tp, 1, 1, 4, 4), T4(tp, 1, 1, 3, 3), NULL, &(nb_conv_opts){.stride = {-1, 1}}))
OP_CASE(conv_dtypes, nb_conv2d(tp, T4(tp, 1, 1, 4, 4), nb_ones(tp, NB_F64, NB_SHAPE(1, 1, 3, 3)), NULL, NULL))
OP_CASE(conv1d_rank, nb_conv1d(tp, T4(tp, 1, 1, 4, 4), nb_ones(tp, NB_F32, NB_SHAPE(1, 1, 3)), NULL, NULL))
#define CT(x, w, b, ...) nb_conv_transpose2d(tp, x, w, b, &(nb_conv_transpose_opts){__VA_ARGS__})
OP_CASE(ct_x_rank, CT(M(tp, 28, 28), T4(tp, 1, 8, 3, 3), NULL, .groups = 0))
OP_CASE(ct_w_rank, CT(T4(tp, 1, 2, 4, 4), X3(tp, 2, 3, 3), NULL, .groups = 0))
OP_CASE(ct_channels, CT(T4(tp, 1, 2, 4, 4), T4(tp, 3, 4, 3, 3), NULL, .groups = 0))
OP_CASE(ct_groups, CT(T4(tp, 1, 3, 4, 4), T4(tp, 3, 2, 3, 3), NULL, .groups = 2))
OP_CASE(ct_groups_negative, CT(T4(tp, 1, 2, 4, 4), T4(tp, 2, 2, 3, 3), NULL, .groups = -1))
OP_CASE(ct_bias, CT(T4(tp, 1, 2, 4, 4), T4(tp, 2, 3, 3, 3), V(tp, 3), .groups = 2))
OP_CASE(ct_negative, CT(T4(tp, 1, 2, 4, 4), T4(tp, 2, 3, 3, 3), NULL, .stride = {1, 0}, .padding = {0, -2}))
OP_CASE(ct_output_padding, CT(T4(tp, 1, 2, 4, 4), T4(tp, 2, 3, 3, 3), NULL, .stride = {2, 2}, .output_padding = {1, 2}))
OP_CASE(ct_too_small, CT(T4(tp, 1, 2, 2, 3), T4(tp, 2, 3, 2, 2), NULL, .padding = {3, 3}))
OP_CASE(ct_huge_stride, CT(T4(tp, 1, 2, 3, 3), T4(tp, 2, 3, 2, 2), NULL, .stride = {INT_MAX, INT_MAX},
                           .dilation = {INT_MAX, INT_MAX}))
OP_CASE(ct_dtypes, CT(T4(tp, 1, 2, 4, 4), nb_ones(tp, NB_F64, NB_SHAPE(2, 3, 3, 3)), NULL, .groups = 0))
OP_CASE(ct_null_weight, CT(T4(tp, 1, 2, 4, 4), NULL, NULL, .groups = 0))
OP_CASE(ct1d_rank, nb_conv_transpose1d(tp, T4(tp, 1, 2, 4, 4), X3(tp, 2, 3, 3), NULL, NULL))
OP_CASE(ct1d_output_padding, nb_conv_transpose1d(tp, X3(tp, 1, 2, 4), X3(tp, 2, 3, 3), NULL,
                                                 &(nb_conv_transpose_opts){.stride = {3}, .dilation = {2},
                                                                           .output_padding = {3}}))
#define UP(f, x, ...) f(tp, x, &(nb_upsample_opts){__VA_ARGS__})
OP_CASE(up_rank, UP(nb_upsample_nearest2d, M(tp, 4, 4), .size = {8, 8}))
OP_CASE(up_null_opts, nb_upsample_bilinear2d(tp, T4(tp, 1, 1, 4, 4), NULL))
OP_CASE(up_both, UP(nb_upsample_bilinear2d, T4(tp, 1, 1, 4, 4), .size = {8, 8}, .scale = {2, 2}))
OP_CASE(up_neither, UP(nb_upsample_nearest2d, T4(tp, 1, 1, 4, 4), .align_corners = false))
OP_CASE(up_mixed, UP(nb_upsample_nearest2d, T4(tp, 1, 1, 4, 4), .size = {8, 0}, .scale = {0, 2}))
OP_CASE(up_scale_nan, UP(nb_upsample_nearest2d, T4(tp, 1, 1, 4, 4), .scale = {2, NAN}))
OP_CASE(up_scale_negative, UP(nb_upsample_bilinear2d, T4(tp, 1, 1, 4, 4), .scale = {-2, 2}))
OP_CASE(up_zero_out, UP(nb_upsample_nearest2d, T4(tp, 1, 1, 3, 3), .scale = {0.2, 0.2}))
OP_CASE(up_huge_scale, UP(nb_upsample_bilinear2d, T4(tp, 1, 1, 3, 3), .scale = {1e30, 2}))
OP_CASE(up_huge_size, UP(nb_upsample_nearest2d, T4(tp, 1, 1, 3, 3), .size = {SIZE_MAX / 2, SIZE_MAX / 2}))
OP_CASE(up_align_nearest, UP(nb_upsample_nearest2d, T4(tp, 1, 1, 4, 4), .size = {8, 8}, .align_corners = true))
OP_CASE(up1d_rank, UP(nb_upsample_nearest1d, T4(tp, 1, 1, 4, 4), .size = {8}))
OP_CASE(up_null_x, UP(nb_upsample_nearest1d, NULL, .size = {8}))
OP_CASE(pool_opts, nb_max_pool2d(tp, T4(tp, 1, 1, 4, 4), NULL))
OP_CASE(pool_kernel, nb_max_pool2d(tp, T4(tp, 1, 1, 4, 4), &(nb_pool_opts){.kernel = {0, 2}}))
OP_CASE(pool_padding, nb_avg_pool2d(tp, T4(tp, 1, 1, 4, 4), &(nb_pool_opts){.kernel = {2, 2}, .padding = {2, 2}}))
OP_CASE(pool_rank, nb_avg_pool2d(tp, M(tp, 4, 4), &(nb_pool_opts){.kernel = {2, 2}}))
OP_CASE(pool_window, nb_max_pool2d(tp, T4(tp, 1, 1, 2, 2), &(nb_pool_opts){.kernel = {3, 3}}))
OP_CASE(avg_pool_dilation, nb_avg_pool2d(tp, T4(tp, 1, 1, 4, 4), &(nb_pool_opts){.kernel = {2, 2}, .dilation = {2, 2}}))
OP_CASE(bn_gamma, nb_batch_norm(tp, T4(tp, 2, 3, 4, 4), V(tp, 4), NULL, NULL, NULL, 0.1, 1e-5))
OP_CASE(bn_rank, nb_batch_norm(tp, V(tp, 3), NULL, NULL, NULL, NULL, 0.1, 1e-5))
OP_CASE(bn_one_value, nb_batch_norm(tp, M(tp, 1, 3), NULL, NULL, NULL, NULL, 0.1, 1e-5))
OP_CASE(bn_momentum, nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, NULL, NULL, 1.5, 1e-5))
static nb_status bn_running_on_tape(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_tensor_status(nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, V(tp, 3), V(tp, 3), 0.1, 1e-5));
    nb_tape_free(tp);
    return st;
}
static nb_status bn_running_shape(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *rm = nb_zeros(NULL, NB_F32, NB_SHAPE(4)), *rv = nb_ones(NULL, NB_F32, NB_SHAPE(4));
    nb_status st = nb_tensor_status(nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, rm, rv, 0.1, 1e-5));
    nb_tape_free(tp);
    nb_tensor_free(rm);
    nb_tensor_free(rv);
    return st;
}
static nb_status bn_one_running(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *rm = nb_zeros(NULL, NB_F32, NB_SHAPE(3));
    nb_status st = nb_tensor_status(nb_batch_norm(tp, M(tp, 4, 3), NULL, NULL, rm, NULL, 0.1, 1e-5));
    nb_tape_free(tp);
    nb_tensor_free(rm);
    return st;
}

/* ------------------------------------------------------------ the table */

#define SITE "test_catalogue.c:"

static const bad_input catalogue[] = {
    /* shapes, for every op family */
    {"add of (2, 3) and (2,)", add_shapes, NB_ERR_SHAPE, {"add", "(2, 3)", "(2,)", "broadcast", SITE}},
    {"sub of (4, 3) and (2, 3)", sub_shapes, NB_ERR_SHAPE, {"sub", "(4, 3)", "(2, 3)", SITE}},
    {"mul of (2, 3) and (3, 2)", mul_shapes, NB_ERR_SHAPE, {"mul", "(2, 3)", "(3, 2)", SITE}},
    {"div of (5,) and (4,)", div_shapes, NB_ERR_SHAPE, {"div", "(5,)", "(4,)", SITE}},
    {"matmul (3, 4) . (5, 2)", matmul_inner, NB_ERR_SHAPE, {"matmul", "(3, 4)", "(5, 2)", "4 columns", SITE}},
    {"matmul (2, 3) . a (4,) vector", matmul_vector, NB_ERR_SHAPE, {"matmul", "(2, 3)", "(4,)", "inner sizes", SITE}},
    {"matmul of stacks of 2 and 5 matrices", matmul_batch, NB_ERR_SHAPE,
     {"matmul", "batch axes", "(2, 3, 4)", "(5, 4, 2)", SITE}},
    {"matmul by a scalar", matmul_scalar, NB_ERR_SHAPE, {"matmul", "scalar", "nb_mul", SITE}},
    {"matmul (3, 4) . (3, 2)^T", matmul_t_inner, NB_ERR_SHAPE, {"matmul", "(3, 4)", "(3, 2)", SITE}},
    {"linear with a (3,) bias for 4 outputs", linear_bias, NB_ERR_SHAPE, {"linear", "(3,)", "4", SITE}},
    {"linear of a scalar", linear_scalar_x, NB_ERR_SHAPE, {"linear", "at least one axis", "()", SITE}},
    {"linear with a 3-D weight", linear_3d_weight, NB_ERR_SHAPE, {"linear", "2-D matrix", "(1, 3, 4)", SITE}},
    {"linear_torch of (2, 5, 3) with a (4, 2) weight", linear_nd_inner, NB_ERR_SHAPE,
     {"linear", "(2, 5, 3)", "3 features", "(4, 2)ᵀ has 2", SITE}},
    {"linear of (2, 5, 3) with a (5,) bias for 4 outputs", linear_nd_bias, NB_ERR_SHAPE,
     {"linear", "bias (5,)", "(4,) or (1, 4)", "(2, 5, 4) result", SITE}},
    {"linear of (2, 5, 3) with a (5, 1) column bias", linear_nd_column, NB_ERR_SHAPE,
     {"linear", "bias (5, 1)", "column bias is for a 2-D x", SITE}},
    {"linear of a vector with a (1, 4) bias", linear_vector_bias, NB_ERR_SHAPE,
     {"linear", "bias (1, 4)", "(4,) row", "(4,) result", SITE}},
    {"linear_t transposing a 3-D x", linear_nd_transposed, NB_ERR_ARG,
     {"linear", "only a 2-D x", "(2, 3, 4)", "nb_matmul_t", SITE}},
    {"linear_torch with a NULL weight", linear_null_weight, NB_ERR_NULL, {"linear", "input 2 is NULL", SITE}},
    {"linear_torch with a NULL bias", linear_null_bias, NB_ERR_NULL, {"linear", "input 3 is NULL", SITE}},
    {"linear_torch of float32 x and a float64 weight", linear_mixed, NB_ERR_DTYPE,
     {"linear", "float32", "float64", SITE}},
    {"split_heads of a vector", heads_vector, NB_ERR_SHAPE, {"split_heads", "(6,)", "(..., T, H·hd)", SITE}},
    {"split_heads of 6 features into 4 heads", heads_divide, NB_ERR_SHAPE,
     {"split_heads", "(2, 6)", "(6)", "not a multiple of 4 heads", SITE}},
    {"split_heads into 0 heads", heads_zero, NB_ERR_ARG, {"split_heads", "0 heads", "at least 1", SITE}},
    {"split_heads into INT_MAX heads", heads_huge, NB_ERR_SHAPE, {"split_heads", "2147483647 heads", SITE}},
    {"split_heads, part 3 of 3", heads_part, NB_ERR_ARG, {"split_heads", "part 3 of 3", "[0, 3)", SITE}},
    {"split_heads of an 8-D x", heads_rank, NB_ERR_SHAPE, {"split_heads", "2 to 7 axes", SITE}},
    {"split_heads of NULL", heads_null, NB_ERR_NULL, {"split_heads", "input 1 is NULL", SITE}},
    {"merge_heads of a matrix", merge_matrix, NB_ERR_SHAPE, {"merge_heads", "(2, 3)", "(..., H, T, hd)", SITE}},
    {"split_qkv of 8 features into 3 × 2 heads", qkv_divide, NB_ERR_SHAPE,
     {"split_qkv", "(2, 5, 8)", "not a multiple of 3 × 2 heads", SITE}},
    {"split_qkv with a NULL out", qkv_null_out, NB_ERR_NULL, {"split_qkv", "out", "NULL", SITE}},
    {"mse of (2, 3) and (3, 2)", mse_shapes, NB_ERR_SHAPE, {"mse", "(2, 3)", "(3, 2)", "same shape", SITE}},
    {"bce of (4,) and (3,)", bce_shapes, NB_ERR_SHAPE, {"bce", "(4,)", "(3,)", SITE}},
    {"bce_logits of (4, 1) and (3,)", bce_logits_shapes, NB_ERR_SHAPE, {"bce_logits", "(4, 1)", "(3,)", SITE}},
    {"softmax_cross_entropy with 3 targets for 2 rows", sce_targets, NB_ERR_SHAPE,
     {"softmax_cross_entropy", "(2, 3)", "(3,)", SITE}},
    /* axes and reshapes */
    {"sum_axis 2 of a matrix", sum_axis_range, NB_ERR_ARG, {"sum_axis", "axis 2 is out of range", "(2, 3)", SITE}},
    {"mean_axis -3 of a matrix", mean_axis_range, NB_ERR_ARG, {"mean_axis", "axis -3", "(2, 3)", SITE}},
    {"softmax over axis 5", softmax_axis, NB_ERR_ARG, {"softmax", "axis 5", "(2, 3)", SITE}},
    {"log_softmax over axis 1 of a vector", log_softmax_axis, NB_ERR_ARG, {"log_softmax", "axis 1", "(3,)", SITE}},
    {"transpose of axes 0 and 2 of a matrix", transpose_axis, NB_ERR_ARG, {"transpose", "2", "(2, 3)", SITE}},
    {"reshape of 6 elements to (4, 2)", reshape_count, NB_ERR_SHAPE, {"reshape", "6 elements", "(4, 2)", SITE}},
    {"reshape of 6 elements to (4, -1)", reshape_infer, NB_ERR_SHAPE, {"reshape", "cannot infer", SITE}},
    {"reshape to a size 0", reshape_zero, NB_ERR_ARG, {"reshape", "size 0", SITE}},
    {"cast to an unknown dtype", cast_dtype, NB_ERR_ARG, {"cast", "unknown dtype 5", SITE}},
    {"clamp with lo > hi", clamp_bounds, NB_ERR_ARG, {"clamp", "[1, -1]", "not ordered", SITE}},
    /* dtypes, NULLs, errored and foreign inputs */
    {"add of float32 and float64", mixed_add, NB_ERR_DTYPE, {"add", "float32", "float64", "nb_cast", SITE}},
    {"matmul of float32 and float64", mixed_matmul, NB_ERR_DTYPE, {"matmul", "float32", "float64", SITE}},
    {"sigmoid of NULL", null_unary, NB_ERR_NULL, {"sigmoid", "input 1 is NULL", SITE}},
    {"mul with a NULL second input", null_binary, NB_ERR_NULL, {"mul", "input 2 is NULL", SITE}},
    {"mse with a NULL target", null_loss_target, NB_ERR_NULL, {"mse", "input 2 is NULL", SITE}},
    {"an op on a NULL tape", null_tape, NB_ERR_NULL, {"exp", "tape is NULL", SITE}},
    {"ops after an error keep the first message", errored_input, NB_ERR_SHAPE, {"add", "(2,)", "(3,)", SITE}},
    {"add of tensors from two tapes", foreign_tape, NB_ERR_STATE, {"add", "another tape", SITE}},
    /* creation */
    {"an empty (3, 0) tensor", empty_tensor, NB_ERR_SHAPE, {"(3, 0)", "empty", SITE}},
    {"dimensions whose count overflows size_t", overflowing_dims, NB_ERR_SHAPE,
     {"more elements than memory can address", SITE}},
    {"dimensions whose bytes overflow size_t", overflowing_bytes, NB_ERR_SHAPE,
     {"more elements than memory can address", SITE}},
    {"9 dimensions", too_many_dims, NB_ERR_ARG, {"9 dimensions", "8", SITE}},
    {"an unknown dtype", unknown_dtype, NB_ERR_ARG, {"dtype", "7", SITE}},
    {"from_f32 of NULL data", null_data, NB_ERR_NULL, {"NULL", SITE}},
    {"a NULL shape", null_shape, NB_ERR_NULL, {"shape", "NULL", SITE}},
    {"uniform on [1, 0)", uniform_bounds, NB_ERR_ARG, {"rand_uniform", "1", "0", SITE}},
    {"normal with standard deviation -1", normal_sd, NB_ERR_ARG, {"rand_normal", "-1", SITE}},
    /* values */
    {"bce of a probability 1.5", bce_prob_range, NB_ERR_VALUE, {"bce", "element 1", "1.5", "bce_logits", SITE}},
    {"bce of a NaN probability", bce_prob_nan, NB_ERR_VALUE, {"bce", "element 1", "nan", SITE}},
    {"class 3 of 3", sce_class_range, NB_ERR_VALUE, {"softmax_cross_entropy", "element 1", "[0, 3)", SITE}},
    {"a NaN class", sce_class_nan, NB_ERR_VALUE, {"softmax_cross_entropy", "element 1", "nan", SITE}},
    {"a fractional class", sce_class_fraction, NB_ERR_VALUE, {"softmax_cross_entropy", "element 0", "0.5", SITE}},
    /* indexing, joining, functions */
    {"slice along axis 2 of a matrix", slice_axis, NB_ERR_ARG, {"slice", "axis 2", "(2, 3)", SITE}},
    {"slice with step 0", slice_step, NB_ERR_ARG, {"slice", "step 0", "(2, 3)", SITE}},
    {"slice [2:1] of an axis", slice_empty, NB_ERR_SHAPE, {"slice", "[2:1:1]", "selects nothing", SITE}},
    {"index_select of row 5 of 5", select_range, NB_ERR_ARG,
     {"index_select", "index 5 (position 1)", "(5, 2)", "size 5", SITE}},
    {"index_select of no rows", select_none, NB_ERR_SHAPE, {"index_select", "no indices", SITE}},
    {"gather of column 3 of 3", gather_value, NB_ERR_VALUE, {"gather", "element 1 is 3", "[0, 3)", SITE}},
    {"gather at 1.5", gather_fraction, NB_ERR_VALUE, {"gather", "1.5", "whole number", SITE}},
    {"gather with a (2,) index for a matrix", gather_shape, NB_ERR_SHAPE, {"gather", "(2,)", "(2, 3)", SITE}},
    {"concat of (2, 3), (2, 4) and (3, 3) along 1", concat_shapes, NB_ERR_SHAPE,
     {"concat", "tensor 3 is (3, 3)", "tensor 1 is (2, 3)", SITE}},
    {"stack of (2, 3) and (2, 4)", stack_shapes, NB_ERR_SHAPE, {"stack", "(2, 4)", "equal shapes", SITE}},
    {"concat of nothing", concat_none, NB_ERR_ARG, {"concat", "no tensors", SITE}},
    {"concat with a NULL fifth tensor", concat_null_member, NB_ERR_NULL, {"concat", "input 5 is NULL", SITE}},
    {"where of (2, 3), (2, 3) and (2,)", where_shapes, NB_ERR_SHAPE, {"where", "(2, 3), (2, 3) and (2,)", SITE}},
    {"pad with NULL pads", pad_null, NB_ERR_NULL, {"pad", "NULL", SITE}},
    {"broadcast_to (4, 3) from (2, 3)", broadcast_to_shape, NB_ERR_SHAPE, {"broadcast_to", "(2, 3)", "(4, 3)", SITE}},
    {"broadcast_to fewer dimensions", broadcast_to_fewer, NB_ERR_SHAPE, {"broadcast_to", "1 dimensions", SITE}},
    {"permute with axis 0 twice", permute_axes, NB_ERR_ARG, {"permute", "(0, 2, 0)", "not a permutation", SITE}},
    {"squeeze of an axis of size 3", squeeze_size, NB_ERR_SHAPE, {"squeeze", "size 3", "not 1", SITE}},
    {"unsqueeze at axis 4 of a matrix", unsqueeze_axis, NB_ERR_ARG, {"unsqueeze", "axis 4", "-3 to 2", SITE}},
    {"maximum of (2, 3) and (2,)", maximum_shapes, NB_ERR_SHAPE, {"maximum", "(2, 3)", "(2,)", SITE}},
    {"logsumexp along axis 2 of a matrix", logsumexp_axis, NB_ERR_ARG, {"logsumexp", "axis 2", "(2, 3)", SITE}},
    {"unbiased variance of one element", var_dof, NB_ERR_ARG, {"var", "correction 1", "degrees of freedom", SITE}},
    {"argmax along axis -2 of a vector", argmax_axis, NB_ERR_ARG, {"argmax", "axis -2", "(3,)", SITE}},
    {"conv2d of a matrix", conv_x_rank, NB_ERR_SHAPE, {"conv2d", "x is (28, 28)", "(N, C, H, W)", SITE}},
    {"conv2d with a weight for 2 input channels on 3", conv_channels, NB_ERR_SHAPE,
     {"conv2d", "(4, 2, 3, 3)", "2 input channels per filter", "needs 3", SITE}},
    {"conv2d with groups 2 on 3 channels", conv_groups, NB_ERR_SHAPE, {"conv2d", "groups 2", "3 input channels", SITE}},
    {"conv2d with a bias for 3 of 4 filters", conv_bias, NB_ERR_SHAPE, {"conv2d", "bias is (3,)", "(4,)", SITE}},
    {"conv2d with a dilated kernel wider than x", conv_kernel_too_big, NB_ERR_SHAPE,
     {"conv2d", "spanning 5", "dilation 2", "(1, 1, 4, 4)", SITE}},
    {"conv2d with stride -1", conv_negative, NB_ERR_ARG, {"conv2d", "stride -1", "not be negative", SITE}},
    {"conv2d of float32 x and float64 weight", conv_dtypes, NB_ERR_DTYPE, {"conv2d", "float64", SITE}},
    {"conv1d of a 4-D x", conv1d_rank, NB_ERR_SHAPE, {"conv1d", "(N, C, L)", SITE}},
    {"conv_transpose2d of a matrix", ct_x_rank, NB_ERR_SHAPE, {"conv_transpose2d", "x is (28, 28)", "(N, C_in, H, W)", SITE}},
    {"conv_transpose2d with a 3-D weight", ct_w_rank, NB_ERR_SHAPE,
     {"conv_transpose2d", "weight is (2, 3, 3)", "(C_in, C_out / groups, KH, KW)", SITE}},
    {"conv_transpose2d with a weight for 3 input channels on 2", ct_channels, NB_ERR_SHAPE,
     {"conv_transpose2d", "(3, 4, 3, 3)", "3 input channels", "has 2", SITE}},
    {"conv_transpose2d with groups 2 on 3 channels", ct_groups, NB_ERR_SHAPE,
     {"conv_transpose2d", "groups 2", "3 input channels", SITE}},
    {"conv_transpose2d with groups -1", ct_groups_negative, NB_ERR_ARG, {"conv_transpose2d", "groups -1", SITE}},
    {"conv_transpose2d with a bias for 3 of 6 output channels", ct_bias, NB_ERR_SHAPE,
     {"conv_transpose2d", "bias is (3,)", "(6,)", "groups 2", SITE}},
    {"conv_transpose2d with padding -2", ct_negative, NB_ERR_ARG,
     {"conv_transpose2d", "padding -2", "not be negative", SITE}},
    {"conv_transpose2d with output padding 2 for stride 2", ct_output_padding, NB_ERR_ARG,
     {"conv_transpose2d", "output padding 2", "smaller than the stride 2 or the dilation 1", SITE}},
    {"conv_transpose2d whose padding leaves no output", ct_too_small, NB_ERR_SHAPE,
     {"conv_transpose2d", "output size of -3", "at least 1", SITE}},
    {"conv_transpose2d with stride and dilation INT_MAX", ct_huge_stride, NB_ERR_SHAPE,
     {"conv_transpose2d", "(1, 2, 3, 3)", "more than memory can hold", SITE}},
    {"conv_transpose2d of float32 x and float64 weight", ct_dtypes, NB_ERR_DTYPE, {"conv_transpose2d", "float64", SITE}},
    {"conv_transpose2d with a NULL weight", ct_null_weight, NB_ERR_NULL, {"conv_transpose2d", SITE}},
    {"conv_transpose1d of a 4-D x", ct1d_rank, NB_ERR_SHAPE, {"conv_transpose1d", "(N, C_in, L)", SITE}},
    {"conv_transpose1d with output padding 3 for stride 3", ct1d_output_padding, NB_ERR_ARG,
     {"conv_transpose1d", "output padding 3", "stride 3", "dilation 2", SITE}},
    {"upsample_nearest2d of a matrix", up_rank, NB_ERR_SHAPE, {"upsample_nearest2d", "x is (4, 4)", "(N, C, H, W)", SITE}},
    {"upsample_bilinear2d without options", up_null_opts, NB_ERR_ARG,
     {"upsample_bilinear2d", "output size or a scale factor", SITE}},
    {"upsample_bilinear2d with a size and a scale", up_both, NB_ERR_ARG,
     {"upsample_bilinear2d", "either an output size or a scale factor", "size 8, 8, scale 2, 2", SITE}},
    {"upsample_nearest2d with neither a size nor a scale", up_neither, NB_ERR_ARG,
     {"upsample_nearest2d", "either an output size or a scale factor", SITE}},
    {"upsample_nearest2d with a size for one axis, a scale for the other", up_mixed, NB_ERR_ARG,
     {"upsample_nearest2d", "both axes", "size 8, 0, scale 0, 2", SITE}},
    {"upsample_nearest2d with scale NaN", up_scale_nan, NB_ERR_ARG,
     {"upsample_nearest2d", "scale factor nan", "positive and finite", SITE}},
    {"upsample_bilinear2d with scale -2", up_scale_negative, NB_ERR_ARG,
     {"upsample_bilinear2d", "scale factor -2", SITE}},
    {"upsample_nearest2d by 0.2 of 3 rows", up_zero_out, NB_ERR_SHAPE,
     {"upsample_nearest2d", "(1, 1, 3, 3)", "output size of 0", "scale 0.2", SITE}},
    {"upsample_bilinear2d by 1e30", up_huge_scale, NB_ERR_SHAPE, {"upsample_bilinear2d", "(1, 1, 3, 3)", "3e+30 x 6", "overflows", SITE}},
    {"upsample_nearest2d to SIZE_MAX / 2 a side", up_huge_size, NB_ERR_SHAPE,
     {"upsample_nearest2d", "(1, 1, 3, 3)", "9.22e+18 x 9.22e+18", "overflows", SITE}},
    {"upsample_nearest2d with align_corners", up_align_nearest, NB_ERR_ARG,
     {"upsample_nearest2d", "align_corners", "bilinear", SITE}},
    {"upsample_nearest1d of a 4-D x", up1d_rank, NB_ERR_SHAPE, {"upsample_nearest1d", "(N, C, L)", SITE}},
    {"upsample_nearest1d of NULL", up_null_x, NB_ERR_NULL, {"upsample_nearest1d", SITE}},
    {"max_pool2d without options", pool_opts, NB_ERR_NULL, {"max_pool2d", "options are NULL", SITE}},
    {"max_pool2d with kernel 0", pool_kernel, NB_ERR_ARG, {"max_pool2d", "kernel 0", SITE}},
    {"avg_pool2d padding 2 for kernel 2", pool_padding, NB_ERR_ARG, {"avg_pool2d", "padding 2", "half the kernel", SITE}},
    {"avg_pool2d of a matrix", pool_rank, NB_ERR_SHAPE, {"avg_pool2d", "(4, 4)", "(N, C, H, W)", SITE}},
    {"max_pool2d with a window larger than x", pool_window, NB_ERR_SHAPE, {"max_pool2d", "3×3", "(1, 1, 2, 2)", SITE}},
    {"avg_pool2d with dilation", avg_pool_dilation, NB_ERR_ARG, {"avg_pool2d", "no dilation", SITE}},
    {"batch_norm with gamma for 4 of 3 channels", bn_gamma, NB_ERR_SHAPE, {"batch_norm", "gamma (4,)", "(3,)", SITE}},
    {"batch_norm of a vector", bn_rank, NB_ERR_SHAPE, {"batch_norm", "x is (3,)", "channels on axis 1", SITE}},
    {"batch_norm training on one value per channel", bn_one_value, NB_ERR_SHAPE,
     {"batch_norm", "1 value per channel", SITE}},
    {"batch_norm with momentum 1.5", bn_momentum, NB_ERR_ARG, {"batch_norm", "momentum 1.5", SITE}},
    {"batch_norm with running statistics on the tape", bn_running_on_tape, NB_ERR_ARG,
     {"batch_norm", "running_mean lives on a tape", SITE}},
    {"batch_norm with (4,) running statistics for 3 channels", bn_running_shape, NB_ERR_SHAPE,
     {"batch_norm", "running_mean is (4,)", "(3,)", SITE}},
    {"batch_norm with running_mean but no running_var", bn_one_running, NB_ERR_ARG,
     {"batch_norm", "go together", SITE}},
    {"layer_norm with a (2,) gamma for 3 features", layer_norm_gamma, NB_ERR_SHAPE,
     {"layer_norm", "gamma (2,)", "(3,)", SITE}},
    {"layer_norm with eps 0", layer_norm_eps, NB_ERR_ARG, {"layer_norm", "eps 0", SITE}},
    {"dropout with p 1.5", dropout_p, NB_ERR_ARG, {"dropout", "1.5", "[0, 1]", SITE}},
    {"dropout without a generator", dropout_rng, NB_ERR_NULL, {"dropout", "generator", SITE}},
    {"huber with delta 0", huber_delta, NB_ERR_ARG, {"huber", "delta = 0", "> 0", SITE}},
    {"huber of (3,) and (4,)", huber_shapes, NB_ERR_SHAPE, {"huber", "(3,)", "(4,)", SITE}},
    {"smooth_l1 with beta -1", smooth_l1_beta, NB_ERR_ARG, {"smooth_l1", "beta = -1", SITE}},
    {"attention of a 1-D q", attention_q_rank, NB_ERR_SHAPE, {"attention", "q (4,)", "at least 2 axes", SITE}},
    {"attention with heads (2,) against (3,)", attention_leading, NB_ERR_SHAPE,
     {"attention", "q (2, 3, 4)", "k (3, 5, 4)", "same leading axes", SITE}},
    {"attention of a 2-D q and a 3-D k", attention_rank, NB_ERR_SHAPE, {"attention", "(3, 4)", "(2, 5, 4)", SITE}},
    {"attention with E 4 against 2", attention_e, NB_ERR_SHAPE, {"attention", "last axis", "4 and 2", SITE}},
    {"attention with 5 keys and 6 values", attention_s, NB_ERR_SHAPE, {"attention", "k (5, 4)", "v (6, 2)", "5 and 6", SITE}},
    {"attention with a (3, 6) mask for (3, 5) weights", attention_mask, NB_ERR_SHAPE,
     {"attention", "mask (3, 6)", "(3, 5)", SITE}},
    {"attention with a float64 mask for float32 q", attention_mask_dtype, NB_ERR_DTYPE, {"attention", SITE}},
    {"attention with scale inf", attention_scale, NB_ERR_ARG, {"attention", "scale inf", "not finite", SITE}},
    {"attention with dropout_p -0.5", attention_p, NB_ERR_ARG, {"attention", "dropout_p = -0.5", "[0, 1]", SITE}},
    {"attention with dropout_p NaN", attention_p_nan, NB_ERR_ARG, {"attention", "nan", "[0, 1]", SITE}},
    {"attention with dropout but no generator", attention_rng, NB_ERR_NULL, {"attention", "rng is NULL", SITE}},
    {"attention with v NULL", attention_null_v, NB_ERR_NULL, {"attention", SITE}},
    {"attention_dropout_mask without a generator", attention_mask_rng, NB_ERR_NULL,
     {"attention_dropout_mask", "rng is NULL", SITE}},
    {"attention_dropout_mask with E 4 against 3", attention_mask_e, NB_ERR_SHAPE,
     {"attention_dropout_mask", "4 and 3", SITE}},
};

static void test_every_bad_input_names_what_went_wrong(void **state) {
    (void)state;
    int n = run_catalogue(catalogue, (int)(sizeof catalogue / sizeof *catalogue));
    assert_true(n >= 90);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_bad_input_names_what_went_wrong),
    };
    return cmocka_run_group_tests_name("catalogue", tests, test_dir_setup, test_dir_teardown);
}
