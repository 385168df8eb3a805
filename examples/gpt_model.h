/*
 * The GPT of examples/gpt.c (and of bench/bench_gpt.c): a decoder-only
 * transformer as GPT-2 draws it, with pre-norm blocks.  For tokens
 * t_1 .. t_T of a window:
 *
 *     x = E[t] + P[0..T)                          token and position embeddings, then dropout
 *     for each of the L blocks:
 *         q, k, v = split_qkv(LN_1(x) W_qkvᵀ + b)  (B, H, T, d/H) each
 *         x = x + dropout(merge_heads(attention(q, k, v)) W_oᵀ + b)
 *         x = x + dropout(GELU(LN_2(x) W_fcᵀ + b) W_projᵀ + b)     the MLP, 4 d wide
 *     logits = LN_f(x) Eᵀ                          the output layer is the embedding (tied)
 *
 * attention(q, k, v) = softmax(q kᵀ / √(d/H) + causal mask) v, with dropout
 * on its weights: one fused op (nb_scaled_dot_product_attention), or with
 * `composed` the same of ops (matmul, where, softmax, dropout, matmul) for
 * the benchmark.  Weights are kept in PyTorch's nn.Linear layout (out, in)
 * and named as in nanoGPT's state_dict, so that a safetensors file of them
 * loads into a PyTorch model of the same names.
 *
 * Sampling with a KV cache: a token's key and value depend only on the
 * tokens before it, so they are kept (per block, (H, T, d/H)) and each new
 * token runs the blocks on its own row only, its query attending to the
 * cached keys: O(T d) a token instead of O(T² d) for recomputing the prefix.
 */
#ifndef NABLA_EXAMPLES_GPT_MODEL_H
#define NABLA_EXAMPLES_GPT_MODEL_H

#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { GPT_MAX_LAYERS = 32 };

typedef struct {
    nb_tensor *ln1_w, *ln1_b, *qkv_w, *qkv_b, *o_w, *o_b, *ln2_w, *ln2_b, *fc_w, *fc_b, *proj_w, *proj_b;
} gpt_block;

typedef struct {
    size_t V, T, d, H, L; /* vocabulary, context, width, heads, blocks */
    double dropout;
    bool composed;        /* attention composed of ops instead of the fused op */
    nb_params *ps;
    nb_tensor *wte, *wpe, *lnf_w, *lnf_b;
    gpt_block block[GPT_MAX_LAYERS];
} gpt;

/* Keys and values of the tokens seen so far, per block (heap tensors). */
typedef struct {
    nb_tensor *k[GPT_MAX_LAYERS], *v[GPT_MAX_LAYERS]; /* (H, T, d/H) */
    size_t len;                                       /* tokens cached */
} gpt_cache;

/* A weight drawn from N(0, std²) by the toolkit's initialiser (torch's
 * normal_), as GPT-2 draws its weights. */
static inline nb_tensor *gpt_param(nb_params *ps, const char *name, int ndim, const size_t *shape, double std,
                                   nb_rng *rng) {
    nb_init_opts o;
    nb_init_defaults(&o, NB_INIT_NORMAL);
    o.std = std;
    return nb_params_create_init(ps, name, NB_F32, ndim, shape, &o, rng);
}

/* A bias (0) or a norm's gain (1): no random numbers drawn. */
static inline nb_tensor *gpt_constant(nb_params *ps, const char *name, int ndim, const size_t *shape, double value) {
    nb_tensor *t = nb_params_create(ps, name, NB_F32, ndim, shape, NB_INIT_ZEROS, 1, 1, NULL);
    float *w = nb_tensor_status(t) == NB_OK ? nb_tensor_data(t) : NULL;
    for (size_t i = 0; w && i < nb_tensor_size(t); i++) w[i] = (float)value;
    return t;
}

/* GPT-2's initialisation: weights N(0, 0.02²), the projections into the
 * residual stream N(0, (0.02/√(2L))²), biases 0, norms' gains 1. */
static inline nb_status gpt_init(gpt *m, nb_rng *rng) {
    size_t d = m->d, V = m->V, T = m->T;
    if (m->L < 1 || m->L > GPT_MAX_LAYERS || m->H < 1 || d % m->H) {
        fprintf(stderr, "gpt: %zu blocks of width %zu with %zu heads: the blocks must number 1 to %d and the heads "
                        "divide the width\n", m->L, d, m->H, GPT_MAX_LAYERS);
        return NB_ERR_ARG;
    }
    if (!(m->ps = nb_params_new())) return NB_ERR_NOMEM;
    nb_params *ps = m->ps;
    double resid = 0.02 / sqrt(2.0 * (double)m->L);
    m->wte = gpt_param(ps, "wte.weight", NB_SHAPE(V, d), 0.02, rng);
    m->wpe = gpt_param(ps, "wpe.weight", NB_SHAPE(T, d), 0.02, rng);
    for (size_t l = 0; l < m->L; l++) {
        gpt_block *b = &m->block[l];
        char name[64];
#define GPT_NAME(s) (snprintf(name, sizeof name, "h.%zu.%s", l, s), name)
        b->ln1_w = gpt_constant(ps, GPT_NAME("ln_1.weight"), NB_SHAPE(d), 1);
        b->ln1_b = gpt_constant(ps, GPT_NAME("ln_1.bias"), NB_SHAPE(d), 0);
        b->qkv_w = gpt_param(ps, GPT_NAME("attn.c_attn.weight"), NB_SHAPE(3 * d, d), 0.02, rng);
        b->qkv_b = gpt_constant(ps, GPT_NAME("attn.c_attn.bias"), NB_SHAPE(3 * d), 0);
        b->o_w = gpt_param(ps, GPT_NAME("attn.c_proj.weight"), NB_SHAPE(d, d), resid, rng);
        b->o_b = gpt_constant(ps, GPT_NAME("attn.c_proj.bias"), NB_SHAPE(d), 0);
        b->ln2_w = gpt_constant(ps, GPT_NAME("ln_2.weight"), NB_SHAPE(d), 1);
        b->ln2_b = gpt_constant(ps, GPT_NAME("ln_2.bias"), NB_SHAPE(d), 0);
        b->fc_w = gpt_param(ps, GPT_NAME("mlp.c_fc.weight"), NB_SHAPE(4 * d, d), 0.02, rng);
        b->fc_b = gpt_constant(ps, GPT_NAME("mlp.c_fc.bias"), NB_SHAPE(4 * d), 0);
        b->proj_w = gpt_param(ps, GPT_NAME("mlp.c_proj.weight"), NB_SHAPE(d, 4 * d), resid, rng);
        b->proj_b = gpt_constant(ps, GPT_NAME("mlp.c_proj.bias"), NB_SHAPE(d), 0);
#undef GPT_NAME
    }
    m->lnf_w = gpt_constant(ps, "ln_f.weight", NB_SHAPE(d), 1);
    m->lnf_b = gpt_constant(ps, "ln_f.bias", NB_SHAPE(d), 0);
    if (nb_params_count(ps) != 4 + 12 * m->L) {
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        return nb_last_status() ? nb_last_status() : NB_ERR_NOMEM;
    }
    return NB_OK;
}

static inline size_t gpt_count(const gpt *m) {
    size_t n = 0;
    for (size_t i = 0; i < nb_params_count(m->ps); i++) n += nb_tensor_size(nb_params_at(m->ps, i));
    return n;
}

/* softmax(q kᵀ / √E + mask) v of ops, with dropout on the weights. */
static inline nb_tensor *attention_composed(nb_tape *tp, nb_tensor *q, nb_tensor *k, nb_tensor *v, bool causal, double p,
                                     nb_rng *rng) {
    size_t L = nb_tensor_dim(q, -2), S = nb_tensor_dim(k, -2);
    nb_tensor *s = nb_scale(tp, nb_matmul_t(tp, q, k, false, true), 1 / sqrt((double)nb_tensor_dim(q, -1)));
    if (causal) {
        nb_tensor *mask = nb_empty(tp, NB_F32, NB_SHAPE(L, S));
        float *w = nb_tensor_status(mask) == NB_OK ? nb_tensor_data(mask) : NULL;
        for (size_t i = 0; w && i < L; i++)
            for (size_t j = 0; j < S; j++) w[i * S + j] = j <= i;
        s = nb_where(tp, mask, s, nb_scalar(tp, NB_F32, -INFINITY));
    }
    return nb_matmul(tp, nb_dropout(tp, nb_softmax(tp, s, -1), p, rng), v);
}

/* Copies the new keys or values x (1, H, n, hd) into the cache c (H, T, hd) at position at. */
static inline void cache_store(nb_tensor *c, nb_tensor *x, size_t at) {
    size_t H = nb_tensor_dim(x, 1), n = nb_tensor_dim(x, 2), hd = nb_tensor_dim(x, 3), T = nb_tensor_dim(c, 1);
    const float *src = nb_tensor_const_data(x);
    float *dst = nb_tensor_data(c);
    for (size_t h = 0; src && dst && h < H; h++)
        memcpy(dst + (h * T + at) * hd, src + h * n * hd, n * hd * sizeof *dst);
}

/* One block's attention.  Without a cache: causal over the window.  With
 * one that is empty: the same, and the keys and values are kept; with one
 * that holds tokens: the single new token's query against every cached key
 * and its own. */
static inline nb_tensor *gpt_attention(nb_tape *tp, const gpt *m, size_t l, nb_tensor *h, nb_rng *rng, gpt_cache *cache) {
    const gpt_block *b = &m->block[l];
    nb_tensor *qkv[3];
    nb_split_qkv(tp, nb_linear_torch(tp, h, b->qkv_w, b->qkv_b), (int)m->H, qkv);
    nb_tensor *q = qkv[0], *k = qkv[1], *v = qkv[2];
    bool causal = true;
    if (cache && nb_tape_status(tp) == NB_OK) {
        size_t at = cache->len, H = m->H, hd = m->d / m->H;
        cache_store(cache->k[l], k, at);
        cache_store(cache->v[l], v, at);
        if (at > 0) { /* one new token: attend to the cache's first at + 1 positions */
            q = nb_reshape(tp, q, NB_DIMS((long)H, 1, (long)hd));
            k = nb_slice(tp, cache->k[l], 1, 0, (long)at + 1, 1);
            v = nb_slice(tp, cache->v[l], 1, 0, (long)at + 1, 1);
            causal = false;
        }
    }
    nb_tensor *a;
    double p = nb_tape_training(tp) ? m->dropout : 0;
    nb_attention_opts opts = {.causal = causal, .dropout_p = p, .rng = rng};
    if (m->composed) a = attention_composed(tp, q, k, v, causal, p, rng);
    else a = nb_scaled_dot_product_attention(tp, q, k, v, &opts);
    if (nb_tensor_ndim(a) == 3) a = nb_unsqueeze(tp, a, 0);
    return nb_linear_torch(tp, nb_merge_heads(tp, a), b->o_w, b->o_b);
}

/* Logits (B, T, V) of the token after each of ids[b T + t].  With a cache
 * (B = 1), positions start at cache->len, which then grows by T: from an
 * empty cache any T (a prompt), then one token at a time. */
static inline nb_tensor *gpt_forward(nb_tape *tp, const gpt *m, const size_t *ids, size_t B, size_t T, nb_rng *rng,
                              gpt_cache *cache) {
    size_t first = cache ? cache->len : 0;
    long d = (long)m->d;
    nb_tensor *x = nb_reshape(tp, nb_index_select(tp, m->wte, 0, ids, B * T), NB_DIMS((long)B, (long)T, d));
    x = nb_dropout(tp, nb_add(tp, x, nb_slice(tp, m->wpe, 0, (long)first, (long)(first + T), 1)), m->dropout, rng);
    for (size_t l = 0; l < m->L; l++) {
        const gpt_block *b = &m->block[l];
        char scope[32];
        snprintf(scope, sizeof scope, "block %zu", l + 1);
        nb_scope_begin(tp, scope); /* a cluster in the picture (--dot) */
        nb_tensor *h = nb_layer_norm(tp, x, b->ln1_w, b->ln1_b, 1e-5);
        x = nb_add(tp, x, nb_dropout(tp, gpt_attention(tp, m, l, h, rng, cache), m->dropout, rng));
        h = nb_layer_norm(tp, x, b->ln2_w, b->ln2_b, 1e-5);
        h = nb_linear_torch(tp, nb_gelu(tp, nb_linear_torch(tp, h, b->fc_w, b->fc_b)), b->proj_w, b->proj_b);
        x = nb_add(tp, x, nb_dropout(tp, h, m->dropout, rng));
        nb_scope_end(tp);
    }
    if (cache) cache->len += T;
    return nb_matmul_t(tp, nb_layer_norm(tp, x, m->lnf_w, m->lnf_b, 1e-5), m->wte, false, true);
}

static inline bool gpt_cache_new(gpt_cache *c, const gpt *m) {
    *c = (gpt_cache){.len = 0};
    bool ok = true;
    for (size_t l = 0; l < m->L; l++) {
        c->k[l] = nb_zeros(NULL, NB_F32, NB_SHAPE(m->H, m->T, m->d / m->H));
        c->v[l] = nb_zeros(NULL, NB_F32, NB_SHAPE(m->H, m->T, m->d / m->H));
        ok = ok && nb_tensor_status(c->k[l]) == NB_OK && nb_tensor_status(c->v[l]) == NB_OK;
    }
    return ok;
}

static inline void gpt_cache_free(gpt_cache *c, const gpt *m) {
    for (size_t l = 0; l < m->L; l++) {
        nb_tensor_free(c->k[l]);
        nb_tensor_free(c->v[l]);
    }
}

#endif
