/*
 * One self-attention block, composed of ops, learns to reverse a sequence.
 *
 * The input is L random digits followed by L separator tokens; at each
 * separator position the network must answer with the digits in reverse
 * order (position L + i answers digit L - 1 - i).  A causal mask lets each
 * position look only at itself and earlier positions, so the answer has to
 * be fetched from the digits by attention: which digit to fetch depends on
 * where the query stands, and the network learns that from position
 * embeddings.  The block, batched over B sequences of T = 2L tokens:
 *
 *     x  = E_tok[tokens] + E_pos                      (index_select, broadcast add)
 *     Q, K, V = x W_q, x W_k, x W_v                    (B, T, d) each
 *     S  = Q Kᵀ / √d, masked: where(j <= i, S, -1e9)  (batched matmul, where)
 *     h  = x + softmax(S) V W_o                        (softmax over j)
 *     h' = h + relu(h W_1) W_2,   logits = h' W_out    (B, T, digits)
 *
 * trained with cross-entropy on the answer positions.  --task sort asks for
 * the digits in increasing order instead, which attention must find by
 * comparing digits rather than by position.
 */
#include "cli.h"
#include "nabla_train.h"

#include <math.h>

static const char usage[] =
    "usage: attention [--task reverse|sort] [--length L] [--dim D] [--iters N] [--batch B] [--lr RATE]\n"
    "                 [--seed S] [--dot FILE] [--html FILE]\n"
    "Trains one causal self-attention block to reverse (or sort) sequences of digits.\n"
    "  --task NAME   reverse (default) or sort\n"
    "  --length L    digits per sequence (default 6)\n"
    "  --dim D       width of the block (default 32)\n"
    "  --iters N     training steps (default 2000)\n"
    "  --batch B     sequences per step (default 64)\n"
    "  --lr RATE     Adam's learning rate (default 0.003)\n"
    "  --seed S      random seed (default 1)\n"
    "  --dot FILE    write the graph of the block on one short sequence as Graphviz dot\n"
    "  --html FILE   write a page that steps through that graph's backward pass\n";

enum { DIGITS = 10, SEP = 10 };

typedef struct {
    size_t L, T, d;
    nb_params *ps;
    nb_tensor *E_tok, *E_pos, *W_q, *W_k, *W_v, *W_o, *W_1, *W_2, *W_out;
    nb_tensor *mask; /* (T, T): 1 where position j may be seen from position i (j <= i) */
} block;

static nb_status block_init(block *m, nb_rng *rng) {
    size_t d = m->d, T = m->T;
    if (!(m->ps = nb_params_new())) return NB_ERR_NOMEM;
    m->E_tok = nb_params_create(m->ps, "E_tok", NB_F32, NB_SHAPE(DIGITS + 1, d), NB_INIT_GLOROT_NORMAL, 1, d, rng);
    m->E_pos = nb_params_create(m->ps, "E_pos", NB_F32, NB_SHAPE(T, d), NB_INIT_GLOROT_NORMAL, 1, d, rng);
    nb_tensor **square[4] = {&m->W_q, &m->W_k, &m->W_v, &m->W_o};
    const char *names[4] = {"W_q", "W_k", "W_v", "W_o"};
    for (int k = 0; k < 4; k++)
        *square[k] = nb_params_create(m->ps, names[k], NB_F32, NB_SHAPE(d, d), NB_INIT_GLOROT_UNIFORM, d, d, rng);
    m->W_1 = nb_params_create(m->ps, "W_1", NB_F32, NB_SHAPE(d, 4 * d), NB_INIT_HE_NORMAL, d, 4 * d, rng);
    m->W_2 = nb_params_create(m->ps, "W_2", NB_F32, NB_SHAPE(4 * d, d), NB_INIT_GLOROT_UNIFORM, 4 * d, d, rng);
    m->W_out = nb_params_create(m->ps, "W_out", NB_F32, NB_SHAPE(d, DIGITS), NB_INIT_GLOROT_UNIFORM, d, DIGITS, rng);
    if (nb_params_count(m->ps) != 9) return nb_last_status();
    m->mask = nb_zeros(NULL, NB_F32, NB_SHAPE(T, T));
    for (size_t i = 0; i < T; i++)
        for (size_t j = 0; j <= i; j++) nb_set(m->mask, i * T + j, 1);
    return nb_tensor_status(m->mask);
}

/* Names a tensor of the picture (the block drawn on one sequence): every
 * tensor has a short name, so that the formulas on its edges read
 * "∂loss/∂V = Aᵀ · ∂loss/∂AV" and never paste a tape id or a definition. */
static nb_tensor *named(nb_tensor *t, bool name, const char *what) {
    if (name) nb_tensor_set_name(t, what);
    return t;
}

/* Logits (B, T, digits) for token ids (B T of them, row by row). */
static nb_tensor *forward(nb_tape *tp, const block *m, const size_t *tokens, size_t B, bool name) {
    long T = (long)m->T, d = (long)m->d;
    nb_scope_begin(tp, "embedding");
    nb_tensor *x = named(nb_index_select(tp, m->E_tok, 0, tokens, B * m->T), name, "E_tok[tokens]");
    x = named(nb_reshape(tp, x, NB_DIMS((long)B, T, d)), name, "X_tok");
    x = named(nb_add(tp, x, m->E_pos), name, "x");
    nb_scope_end(tp);
    nb_scope_begin(tp, "attention");
    nb_tensor *Q = named(nb_matmul(tp, x, m->W_q), name, "Q"), *K = named(nb_matmul(tp, x, m->W_k), name, "K"),
              *V = named(nb_matmul(tp, x, m->W_v), name, "V");
    nb_tensor *S = named(nb_matmul_t(tp, Q, K, false, true), name, "QKᵀ");
    S = named(nb_scale(tp, S, 1 / sqrt((double)d)), name, "S_unmasked");
    /* causal: no look at later positions */
    S = named(nb_where(tp, named(m->mask, name, "mask"), S, named(nb_scalar(tp, NB_F32, -1e9), name, "fill")), name,
              "S");
    nb_tensor *A = named(nb_softmax(tp, S, 2), name, "A");
    nb_tensor *h = named(nb_matmul(tp, A, V), name, "AV");
    h = named(nb_add(tp, x, named(nb_matmul(tp, h, m->W_o), name, "AVW_o")), name, "h");
    nb_scope_end(tp);
    nb_scope_begin(tp, "feed-forward");
    nb_tensor *R = named(nb_relu(tp, named(nb_matmul(tp, h, m->W_1), name, "hW_1")), name, "R");
    h = named(nb_add(tp, h, named(nb_matmul(tp, R, m->W_2), name, "RW_2")), name, "h′");
    nb_tensor *logits = named(nb_matmul(tp, h, m->W_out), name, "logits");
    nb_scope_end(tp);
    return logits;
}

/* B sequences: tokens (B, 2L) and the answers (B, L). */
static void make_batch(nb_rng *rng, size_t L, bool sort, size_t B, size_t *tokens, nb_tensor *answers) {
    for (size_t b = 0; b < B; b++) {
        size_t *seq = tokens + b * 2 * L, digits[64];
        for (size_t i = 0; i < L; i++) seq[i] = digits[i] = nb_rng_next(rng) % DIGITS;
        for (size_t i = 0; i < L; i++) seq[L + i] = SEP;
        if (sort) /* insertion sort: L is small */
            for (size_t i = 1; i < L; i++)
                for (size_t j = i; j > 0 && digits[j - 1] > digits[j]; j--) {
                    size_t t = digits[j];
                    digits[j] = digits[j - 1];
                    digits[j - 1] = t;
                }
        for (size_t i = 0; i < L; i++) nb_set(answers, b * L + i, (double)(sort ? digits[i] : digits[L - 1 - i]));
    }
}

/* The loss on the answer positions: logits[:, L:, :] against the answers. */
static nb_tensor *loss_of(nb_tape *tp, const block *m, nb_tensor *logits, nb_tensor *answers, bool name) {
    nb_tensor *answer_logits = named(nb_slice(tp, logits, 1, (long)m->L, NB_END, 1), name, "logits[L:]");
    return nb_softmax_cross_entropy(tp, answer_logits, answers, 2);
}

int main(int argc, char **argv) {
    long L = 6, d = 32, iters = 2000, batch = 64, seed = 1;
    double lr = 0.003;
    bool sort = false;
    const char *dot = NULL, *html = NULL;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--task")) {
            const char *v = cli_value(&c);
            if (v && strcmp(v, "reverse") && strcmp(v, "sort")) cli_fail(&c, "unknown task '%s' (reverse or sort)%s", v, "");
            sort = v && !strcmp(v, "sort");
        } else if (cli_is(&c, "--length")) L = cli_long(&c, 2, 32);
        else if (cli_is(&c, "--dim")) d = cli_long(&c, 4, 1024);
        else if (cli_is(&c, "--iters")) iters = cli_long(&c, 1, 10000000);
        else if (cli_is(&c, "--batch")) batch = cli_long(&c, 1, 100000);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 10);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;

    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    block m = {.L = (size_t)L, .T = 2 * (size_t)L, .d = (size_t)d};
    size_t test_n = 1000, *tokens = malloc((size_t)batch * m.T * sizeof *tokens);
    size_t *test_tokens = malloc(test_n * m.T * sizeof *test_tokens);
    nb_tensor *answers = nb_zeros(NULL, NB_F32, NB_SHAPE(batch, L)), *test_answers = nb_zeros(NULL, NB_F32, NB_SHAPE(test_n, L));
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    int status = 1;
    if (!tokens || !test_tokens || block_init(&m, &rng) != NB_OK || nb_tensor_status(test_answers) != NB_OK) goto fail;
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_ADAM);
    oo.lr = lr;
    if (!(opt = nb_optimizer_new(m.ps, &oo))) goto fail;
    printf("task: %s %ld digits; one causal self-attention block of width %ld; batch %ld, Adam lr %g\n",
           sort ? "sort" : "reverse", L, d, batch, lr);
    printf("guessing: loss %.4f (log 10), accuracy 0.1\n", log(10.0));
    for (long it = 1; it <= iters; it++) {
        make_batch(&rng, m.L, sort, (size_t)batch, tokens, answers);
        nb_tape_reset(tp);
        nb_params_zero_grad(m.ps);
        nb_tensor *loss = loss_of(tp, &m, forward(tp, &m, tokens, (size_t)batch, false), answers, false);
        if (nb_backward(loss) != NB_OK || nb_optimizer_step(opt) != NB_OK) goto fail;
        if (it % (iters / 10 > 0 ? iters / 10 : 1) == 0 || it == 1)
            printf("step %6ld  loss %.4f\n", it, nb_item(loss));
    }
    /* fresh sequences */
    make_batch(&rng, m.L, sort, test_n, test_tokens, test_answers);
    nb_tape_reset(tp);
    bool was = nb_tape_set_grad_enabled(tp, false);
    nb_tensor *logits = nb_slice(tp, forward(tp, &m, test_tokens, test_n, false), 1, L, NB_END, 1);
    nb_tensor *guess = nb_argmax(tp, logits, 2, false);
    nb_tape_set_grad_enabled(tp, was);
    if (nb_tape_status(tp) != NB_OK) goto fail;
    size_t right = 0, whole = 0;
    for (size_t s = 0; s < test_n; s++) {
        size_t ok = 0;
        for (size_t i = 0; i < m.L; i++) ok += nb_get(guess, s * m.L + i) == nb_get(test_answers, s * m.L + i);
        right += ok;
        whole += ok == m.L;
    }
    printf("test: accuracy %.3f per digit, %.3f of sequences entirely right (%zu new sequences)\n",
           (double)right / (double)(test_n * m.L), (double)whole / (double)test_n, test_n);
    status = 0;
    if (dot || html) { /* the block on one sequence, with its attention weights */
        nb_tape_reset(tp);
        nb_tensor_set_name(test_answers, "answers");
        nb_tensor *one = named(nb_slice(tp, test_answers, 0, 0, 1, 1), true, "y");
        nb_tensor *loss = loss_of(tp, &m, forward(tp, &m, test_tokens, 1, true), one, true);
        nb_tensor_set_name(loss, "loss");
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.clusters = true;
        o.title = "One causal self-attention block on one sequence: S = QKᵀ/√d, masked (fill -1e9 where j > i), "
                  "A = softmax(S), h = x + AV W_o, h′ = h + relu(h W_1) W_2";
        if (nb_backward(loss) != NB_OK) goto fail;
        if (write_pictures(tp, loss, &o, dot, html) != 0) { /* it printed why */
            status = 1;
            goto done;
        }
    }
    goto done;
fail:
    fprintf(stderr, "attention: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
    status = 1;
done:
    nb_optimizer_free(opt);
    nb_params_free(m.ps);
    nb_tensor_free(m.mask);
    nb_tape_free(tp);
    nb_tensor_free(answers);
    nb_tensor_free(test_answers);
    free(tokens);
    free(test_tokens);
    return status;
}
