/*
 * A character-level language model of English words, composed of ops: an
 * LSTM (or GRU) cell unrolled over time, trained on the word list Debian
 * ships (/usr/share/dict/words, package wamerican), measured in nats per
 * character on words it never saw, beside a bigram model counted from the
 * same training words, and asked to invent new words.
 *
 * Characters are a to z, the apostrophe, and a newline that ends each word
 * (and so starts the next): 28 symbols.  The LSTM cell, as PyTorch's
 * nn.LSTM, one time step at a time for a batch:
 *     [i, f, g, o] = x_t W_x + h W_h + b                (linear, matmul, add, slice)
 *     c = σ(f) ⊙ c + σ(i) ⊙ tanh(g),   h = σ(o) ⊙ tanh(c)
 * with x_t the embedding of the character at t (index_select of a table),
 * and the scores of the next character h W_out + b_out.  The GRU (--cell
 * gru), as nn.GRU:
 *     r = σ(x W_xr + h W_hr + b_r),   z = σ(x W_xz + h W_hz + b_z)
 *     n = tanh(x W_xn + b_xn + r ⊙ (h W_hn + b_hn)),   h = (1 − z) ⊙ n + z ⊙ h
 * Training windows of T characters start at random places in the training
 * text, with the state at zero; the validation text is read straight
 * through, the state carried from one window to the next.  Before training
 * the program checks the gradient of the unrolled cell against central
 * differences.
 */
#include "cli.h"
#include "nabla_train.h"

#include <ctype.h>
#include <math.h>
#include <time.h>

static const char usage[] =
    "usage: charlm [options]\n"
    "Trains a character-level language model on a word list and invents words.\n"
    "  --words FILE      one word a line (default /usr/share/dict/words, package wamerican)\n"
    "  --cell NAME       lstm (default) or gru\n"
    "  --hidden H        state size (default 128)\n"
    "  --embed E         embedding size (default 32)\n"
    "  --steps T         characters per training window (default 16)\n"
    "  --batch B         windows per step (default 32)\n"
    "  --iters N         training steps (default 3000)\n"
    "  --lr RATE         Adam's learning rate (default 0.003)\n"
    "  --clip NORM       clip the gradients' global norm (default 5; 0: no clipping)\n"
    "  --samples N       invented words to print (default 12)\n"
    "  --temperature T   sampling temperature (default 0.8)\n"
    "  --seed S          seed for initialisation, the split, batches and sampling (default 1)\n"
    "  --threads N       threads for products and large element-wise ops (default 1)\n"
    "  --limit N         use only the first N words of the list (default all)\n"
    "  --save FILE       save the trained parameters (a name ending in .safetensors writes PyTorch's format)\n"
    "  --dot FILE        write the graph of the cell unrolled over 3 characters as Graphviz dot\n"
    "  --html FILE       write a page that steps through its backward pass, through time\n"
    "  --bench           time training steps on random text (no files needed)\n";

enum { VOCAB = 28, END = 0, APOSTROPHE = 27, MAX_WORD = 40 };

static int symbol_of(char c) {
    return c == '\n' ? END : c == '\'' ? APOSTROPHE : c >= 'a' && c <= 'z' ? 1 + (c - 'a') : -1;
}
static char char_of(int s) { return s == END ? '\n' : s == APOSTROPHE ? '\'' : (char)('a' + s - 1); }

/* ------------------------------------------------------------ the model */

typedef struct {
    bool gru;
    size_t E, H;
    nb_params *ps;
    nb_tensor *embed, *W_x, *W_h, *b_x, *b_h, *W_out, *b_out; /* b_h: the GRU's second bias */
} model;

static nb_status model_init(model *m, nb_dtype dt, nb_rng *rng) {
    size_t E = m->E, H = m->H, G = (m->gru ? 3 : 4) * H;
    if (!(m->ps = nb_params_new())) return NB_ERR_NOMEM;
    nb_params *ps = m->ps;
    m->embed = nb_params_create(ps, "embed", dt, NB_SHAPE(VOCAB, E), NB_INIT_GLOROT_NORMAL, VOCAB, E, rng);
    m->W_x = nb_params_create(ps, "W_x", dt, NB_SHAPE(E, G), NB_INIT_GLOROT_UNIFORM, E, G, rng);
    m->W_h = nb_params_create(ps, "W_h", dt, NB_SHAPE(H, G), NB_INIT_GLOROT_UNIFORM, H, G, rng);
    m->b_x = nb_params_create(ps, "b_x", dt, NB_SHAPE(G), NB_INIT_ZEROS, E, G, rng);
    if (m->gru) m->b_h = nb_params_create(ps, "b_h", dt, NB_SHAPE(G), NB_INIT_ZEROS, H, G, rng);
    m->W_out = nb_params_create(ps, "W_out", dt, NB_SHAPE(H, VOCAB), NB_INIT_GLOROT_UNIFORM, H, VOCAB, rng);
    m->b_out = nb_params_create(ps, "b_out", dt, NB_SHAPE(VOCAB), NB_INIT_ZEROS, H, VOCAB, rng);
    if (nb_params_count(ps) != (m->gru ? 7u : 6u)) return nb_last_status();
    /* an LSTM starts by remembering: forget-gate bias 1 */
    for (size_t j = 0; !m->gru && j < H; j++) nb_set(m->b_x, H + j, 1);
    return NB_OK;
}

/* The state of the cell: h, and c for the LSTM. */
typedef struct { nb_tensor *h, *c; } state;

static nb_tensor *gate(nb_tape *tp, nb_tensor *all, size_t k, size_t H) {
    return nb_slice(tp, all, 1, (long)(k * H), (long)((k + 1) * H), 1);
}

/* t, named for the pictures when step > 0: `pattern` with the step where
 * it says # and the step before where it says ## ("[x<#>, h<##>]" is
 * [x<3>, h<2>]), in the notation of time steps x<t>, h<t> numbered from 1. */
static nb_tensor *named(nb_tensor *t, size_t step, const char *pattern) {
    if (!step) return t;
    char name[128]; /* a picture's names fit NB_NAME_MAX */
    size_t n = 0;
    for (const char *c = pattern; *c && n + 21 < sizeof name;) {
        if (*c != '#') {
            name[n++] = *c++;
            continue;
        }
        bool before = c[1] == '#';
        int w = snprintf(name + n, sizeof name - n, "%zu", before ? step - 1 : step);
        n += w > 0 ? (size_t)w : 0;
        c += before ? 2 : 1;
    }
    name[n] = '\0';
    nb_tensor_set_name(t, name);
    return t;
}

/* One step: the new state from xw = x_t W_x + b_x (B, G) and the old
 * state; with `t` (1, 2, ...; 0 for none) every tensor named. */
static state cell_step(nb_tape *tp, const model *m, nb_tensor *xw, state s, size_t t) {
    size_t H = m->H;
    if (!m->gru) {
        nb_tensor *hw = named(nb_matmul(tp, s.h, m->W_h), t, "HW<#>");
        nb_tensor *z = named(nb_add(tp, xw, hw), t, "Z<#>");
        nb_tensor *i = named(nb_sigmoid(tp, named(gate(tp, z, 0, H), t, "Z_i<#>")), t, "i<#>");
        nb_tensor *f = named(nb_sigmoid(tp, named(gate(tp, z, 1, H), t, "Z_f<#>")), t, "f<#>");
        nb_tensor *g = named(nb_tanh(tp, named(gate(tp, z, 2, H), t, "Z_g<#>")), t, "g<#>");
        nb_tensor *o = named(nb_sigmoid(tp, named(gate(tp, z, 3, H), t, "Z_o<#>")), t, "o<#>");
        nb_tensor *kept = named(nb_mul(tp, f, s.c), t, "f<#>⊙c<##>");
        nb_tensor *added = named(nb_mul(tp, i, g), t, "i<#>⊙g<#>");
        nb_tensor *c = named(nb_add(tp, kept, added), t, "c<#>");
        nb_tensor *h = nb_mul(tp, o, named(nb_tanh(tp, c), t, "tanh(c<#>)"));
        return (state){named(h, t, "h<#>"), c};
    }
    nb_tensor *hw = named(nb_linear(tp, s.h, m->W_h, m->b_h), t, "HW<#>");
    nb_tensor *xw_rz = named(nb_slice(tp, xw, 1, 0, (long)(2 * H), 1), t, "XW_rz<#>");
    nb_tensor *hw_rz = named(nb_slice(tp, hw, 1, 0, (long)(2 * H), 1), t, "HW_rz<#>");
    nb_tensor *rz = named(nb_sigmoid(tp, named(nb_add(tp, xw_rz, hw_rz), t, "Z_rz<#>")), t, "rz<#>");
    nb_tensor *r = named(gate(tp, rz, 0, H), t, "r<#>"), *zg = named(gate(tp, rz, 1, H), t, "z<#>");
    nb_tensor *hw_n = named(gate(tp, hw, 2, H), t, "HW_n<#>");
    nb_tensor *reset = named(nb_mul(tp, r, hw_n), t, "r<#>⊙HW_n<#>");
    nb_tensor *zn = named(nb_add(tp, named(gate(tp, xw, 2, H), t, "XW_n<#>"), reset), t, "Z_n<#>");
    nb_tensor *n = named(nb_tanh(tp, zn), t, "n<#>");
    /* h = (1 - z) n + z h = n + z (h - n) */
    nb_tensor *change = named(nb_sub(tp, s.h, n), t, "h<##>−n<#>");
    return (state){named(nb_add(tp, n, named(nb_mul(tp, zg, change), t, "z⊙(h−n)<#>")), t, "h<#>"), NULL};
}

static state zero_state(nb_tape *tp, const model *m, nb_dtype dt, size_t B) {
    state s = {nb_zeros(tp, dt, NB_SHAPE(B, m->H)), NULL};
    if (!m->gru) s.c = nb_zeros(tp, dt, NB_SHAPE(B, m->H));
    return s;
}

/* Scores (T B, VOCAB) of the characters that follow symbols[t B + b]
 * (time-major: the B windows' characters at step t, then at t + 1), the
 * state running from *s, which receives the last one; with `name` (for
 * the pictures) every tensor named. */
static nb_tensor *unroll(nb_tape *tp, const model *m, const size_t *symbols, size_t T, size_t B, state *s,
                         bool name) {
    /* every step's input projection in one product */
    nb_tensor *x = named(nb_index_select(tp, m->embed, 0, symbols, T * B), name, "x (embeddings)");
    nb_tensor *xw = named(nb_linear(tp, x, m->W_x, m->b_x), name, "XW");
    nb_tensor *hs[256];
    for (size_t t = 0; t < T; t++) {
        size_t step = name ? t + 1 : 0;
        char scope[32];
        snprintf(scope, sizeof scope, "step %zu", step);
        if (name) nb_scope_begin(tp, scope); /* a cluster per step in the pictures */
        nb_tensor *xw_t = named(nb_slice(tp, xw, 0, (long)(t * B), (long)((t + 1) * B), 1), step, "XW<#>");
        *s = cell_step(tp, m, xw_t, *s, step);
        hs[t] = s->h;
        if (name) nb_scope_end(tp);
    }
    nb_tensor *all = named(nb_concat(tp, hs, (int)T, 0), name, "h<1..T>");
    return named(nb_linear(tp, all, m->W_out, m->b_out), name, "scores");
}

/* ------------------------------------------------------------ the text */

typedef struct {
    char **words;
    size_t n, skipped;
} word_list;

static void words_free(word_list *w) {
    for (size_t i = 0; i < w->n; i++) free(w->words[i]);
    free(w->words);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lower-cased words of a to z and apostrophes, each once; others skipped. */
static int read_words(const char *path, size_t limit, word_list *w) {
    FILE *f = nb_file_open_read(path, NULL); /* a regular file (not a FIFO, not /dev/zero), read to its size */
    if (!f) {
        fprintf(stderr, "charlm: %s%s\n", nb_last_error(),
                strstr(nb_last_error(), "No such file") ? " (install it with: apt-get install wamerican, or give --words FILE)"
                                                        : "");
        return 1;
    }
    size_t cap = 0;
    char line[256];
    *w = (word_list){NULL, 0, 0};
    long number = 0;
    while (fgets(line, sizeof line, f) && (!limit || w->n < limit)) {
        number++;
        size_t len = strcspn(line, "\r\n");
        if (line[len] == '\0' && !feof(f)) { /* longer than the buffer */
            fprintf(stderr, "charlm: %s:%ld: a line of more than %zu bytes; is this a word list?\n", path, number,
                    sizeof line - 2);
            fclose(f);
            return 1;
        }
        line[len] = '\0';
        bool ok = len > 0 && len < MAX_WORD;
        for (size_t k = 0; ok && k < len; k++) {
            line[k] = (char)tolower((unsigned char)line[k]);
            ok = symbol_of(line[k]) > 0;
        }
        if (!ok) {
            w->skipped++;
            continue;
        }
        char **grown = w->n == cap ? realloc(w->words, (cap = cap ? 2 * cap : 4096) * sizeof *w->words) : w->words;
        char *copy = grown ? strdup(line) : NULL;
        if (grown) w->words = grown;
        if (!copy) {
            fprintf(stderr, "charlm: out of memory reading %s\n", path);
            fclose(f);
            return 1;
        }
        w->words[w->n++] = copy;
    }
    fclose(f);
    if (w->n) qsort(w->words, w->n, sizeof *w->words, cmp_str);
    size_t kept = 0; /* "A" and "a" are one word once lower-cased */
    for (size_t i = 0; i < w->n; i++) {
        if (kept && !strcmp(w->words[kept - 1], w->words[i])) {
            free(w->words[i]);
            continue;
        }
        w->words[kept++] = w->words[i];
    }
    w->n = kept;
    if (w->n < 100) {
        fprintf(stderr, "charlm: %s has %zu usable words (a to z and apostrophes); at least 100 are needed\n", path,
                w->n);
        return 1;
    }
    return 0;
}

/* Words [begin, end) of `order` as one text of symbols: "\n" before each. */
static size_t *text_of(const word_list *w, const size_t *order, size_t begin, size_t end, size_t *len) {
    size_t n = 1;
    for (size_t i = begin; i < end; i++) n += strlen(w->words[order[i]]) + 1;
    size_t *text = malloc(n * sizeof *text), at = 0;
    if (!text) return NULL;
    for (size_t i = begin; i < end; i++) {
        text[at++] = END;
        for (const char *c = w->words[order[i]]; *c; c++) text[at++] = (size_t)symbol_of(*c);
    }
    text[at++] = END;
    *len = at;
    return text;
}

/* ------------------------------------------------------------ the bigram model */

/* P(b | a) from counts in the training text, with add-k smoothing; the
 * validation text's nats per character (each character after the first). */
static double bigram_nats(const size_t *train, size_t n_train, const size_t *valid, size_t n_valid, double k) {
    double counts[VOCAB][VOCAB] = {{0}}, rows[VOCAB] = {0};
    for (size_t i = 1; i < n_train; i++) counts[train[i - 1]][train[i]]++, rows[train[i - 1]]++;
    double nats = 0;
    for (size_t i = 1; i < n_valid; i++)
        nats -= log((counts[valid[i - 1]][valid[i]] + k) / (rows[valid[i - 1]] + k * VOCAB));
    return nats / (double)(n_valid - 1);
}

/* ------------------------------------------------------------ evaluation and sampling */

/* Nats per character of the model on a text, read in B parallel streams
 * of windows of T characters, the state carried across windows. */
static double model_nats(nb_tape *tp, const model *m, const size_t *text, size_t len, size_t T, size_t B) {
    size_t span = (len - 1) / B; /* each stream's characters */
    size_t *inputs = malloc(T * B * sizeof *inputs);
    if (!inputs) return NAN;
    nb_tensor *targets = nb_zeros(NULL, NB_F32, NB_SHAPE(T * B));
    nb_tensor *h = nb_zeros(NULL, NB_F32, NB_SHAPE(B, m->H)), *c = nb_zeros(NULL, NB_F32, NB_SHAPE(B, m->H));
    double nats = 0;
    size_t counted = 0;
    bool was = false;
    for (size_t start = 0; start < span; start += T) {
        size_t steps = span - start < T ? span - start : T;
        nb_tape_reset(tp);
        was = nb_tape_set_grad_enabled(tp, false);
        for (size_t t = 0; t < steps; t++)
            for (size_t b = 0; b < B; b++) {
                inputs[t * B + b] = text[b * span + start + t];
                nb_set(targets, t * B + b, (double)text[b * span + start + t + 1]);
            }
        state s = {h, m->gru ? NULL : c};
        nb_tensor *target_view = nb_slice(tp, targets, 0, 0, (long)(steps * B), 1);
        nb_tensor *loss = nb_softmax_cross_entropy(tp, unroll(tp, m, inputs, steps, B, &s, false), target_view, 1);
        nb_tape_set_grad_enabled(tp, was);
        if (nb_tape_status(tp) != NB_OK) {
            fprintf(stderr, "charlm: %s\n", nb_tape_error(tp));
            nats = NAN;
            break;
        }
        nats += nb_item(loss) * (double)(steps * B);
        counted += steps * B;
        for (size_t i = 0; i < B * m->H; i++) {
            nb_set(h, i, nb_get(s.h, i));
            if (!m->gru) nb_set(c, i, nb_get(s.c, i));
        }
    }
    free(inputs);
    nb_tensor_free(targets);
    nb_tensor_free(h);
    nb_tensor_free(c);
    return counted ? nats / (double)counted : NAN;
}

/* A new word: characters drawn one at a time from softmax(scores / temperature). */
static void invent(nb_tape *tp, const model *m, nb_rng *rng, double temperature, char *word) {
    state s = {NULL, NULL};
    size_t symbol = END, len = 0;
    nb_tensor *h = nb_zeros(NULL, NB_F32, NB_SHAPE(1, m->H)), *c = nb_zeros(NULL, NB_F32, NB_SHAPE(1, m->H));
    while (len < MAX_WORD - 1) {
        nb_tape_reset(tp);
        bool was = nb_tape_set_grad_enabled(tp, false);
        s = (state){h, m->gru ? NULL : c};
        nb_tensor *p = nb_softmax(tp, nb_scale(tp, unroll(tp, m, &symbol, 1, 1, &s, false), 1 / temperature), 1);
        nb_tape_set_grad_enabled(tp, was);
        if (nb_tape_status(tp) != NB_OK) break;
        double u = nb_rng_uniform(rng), sum = 0;
        symbol = VOCAB - 1;
        for (size_t k = 0; k < VOCAB; k++)
            if ((sum += nb_get(p, k)) > u) {
                symbol = k;
                break;
            }
        if (symbol == END) break;
        word[len++] = char_of((int)symbol);
        for (size_t i = 0; i < m->H; i++) {
            nb_set(h, i, nb_get(s.h, i));
            if (!m->gru) nb_set(c, i, nb_get(s.c, i));
        }
    }
    word[len] = '\0';
    nb_tensor_free(h);
    nb_tensor_free(c);
}

/* ------------------------------------------------------------ gradient through time */

typedef struct {
    model *m;
    const size_t *symbols;
    nb_tensor *targets;
    size_t T, B;
} check_data;

static nb_tensor *check_loss(nb_tape *tp, nb_tensor *const *params, int n, void *user) {
    const check_data *d = user;
    model m = *d->m;
    nb_tensor **slots[7] = {&m.embed, &m.W_x, &m.W_h, &m.b_x, &m.b_h, &m.W_out, &m.b_out};
    for (int k = 0, i = 0; k < n; i++)
        if (*slots[i]) *slots[i] = params[k++];
    state s = zero_state(tp, &m, NB_F64, d->B);
    return nb_softmax_cross_entropy(tp, unroll(tp, &m, d->symbols, d->T, d->B, &s, false), nb_cast(tp, d->targets, NB_F64), 1);
}

/* A 3-step cell with 3 units on 2 windows: every parameter's gradient
 * through time against central differences, in float64. */
static int gradient_through_time(bool gru, uint64_t seed) {
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    model m = {.gru = gru, .E = 3, .H = 3};
    size_t symbols[6], T = 3, B = 2;
    nb_tensor *targets = nb_zeros(NULL, NB_F64, NB_SHAPE(T * B));
    for (size_t i = 0; i < T * B; i++) {
        symbols[i] = nb_rng_next(&rng) % VOCAB;
        nb_set(targets, i, (double)(nb_rng_next(&rng) % VOCAB));
    }
    int status = 1;
    if (model_init(&m, NB_F64, &rng) == NB_OK) {
        nb_tensor *params[7];
        int n = (int)nb_params_count(m.ps);
        for (int k = 0; k < n; k++) { /* non-zero biases, so that their gradients are not special */
            params[k] = nb_params_at(m.ps, (size_t)k);
            for (size_t j = 0; j < nb_tensor_size(params[k]); j++)
                nb_set(params[k], j, nb_get(params[k], j) + 0.3 * nb_rng_normal(&rng));
        }
        check_data d = {&m, symbols, targets, T, B};
        nb_gradcheck_result r = nb_gradcheck(check_loss, params, n, &d, NULL);
        printf("gradient through time (%s, %zu steps, %zu units, %zu values): %s\n", gru ? "GRU" : "LSTM", T, m.H,
               r.checked, r.message);
        status = r.passed ? 0 : 1;
    }
    nb_params_free(m.ps);
    nb_tensor_free(targets);
    return status;
}

/* ------------------------------------------------------------ training */

typedef struct {
    size_t T, B;
    size_t *inputs;       /* T B symbols, time-major */
    nb_tensor *targets;   /* T B next symbols */
} batch;

/* B windows of T characters at random places in the text. */
static void sample_batch(nb_rng *rng, const size_t *text, size_t len, batch *bt) {
    for (size_t b = 0; b < bt->B; b++) {
        size_t at = nb_rng_next(rng) % (len - bt->T);
        for (size_t t = 0; t < bt->T; t++) {
            bt->inputs[t * bt->B + b] = text[at + t];
            nb_set(bt->targets, t * bt->B + b, (double)text[at + t + 1]);
        }
    }
}

/* One training step; the loss, or NAN with the error printed. */
static double train_step(nb_tape *tp, model *m, nb_optimizer *opt, const batch *bt, double clip) {
    nb_tape_reset(tp);
    nb_params_zero_grad(m->ps);
    state s = zero_state(tp, m, NB_F32, bt->B);
    nb_tensor *loss = nb_softmax_cross_entropy(tp, unroll(tp, m, bt->inputs, bt->T, bt->B, &s, false), bt->targets, 1);
    nb_status st = nb_backward(loss);
    if (st == NB_OK && clip > 0) nb_clip_grad_norm(m->ps, clip);
    if (st == NB_OK) st = nb_optimizer_step(opt);
    if (st != NB_OK) {
        fprintf(stderr, "charlm: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
        return NAN;
    }
    return nb_item(loss);
}

int main(int argc, char **argv) {
    const char *words_path = "/usr/share/dict/words", *save = NULL, *dot = NULL, *html = NULL;
    long hidden = 128, embed = 32, T = 16, B = 32, iters = 3000, samples = 12, seed = 1, threads = 1, limit = 0;
    double lr = 3e-3, clip = 5, temperature = 0.8;
    bool gru = false, bench = false;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--words")) words_path = cli_value(&c);
        else if (cli_is(&c, "--cell")) {
            const char *v = cli_value(&c);
            if (v && !strcmp(v, "gru")) gru = true;
            else if (v && strcmp(v, "lstm")) cli_fail(&c, "unknown cell '%s' (lstm or gru)%s", v, "");
        } else if (cli_is(&c, "--hidden")) hidden = cli_long(&c, 1, 4096);
        else if (cli_is(&c, "--embed")) embed = cli_long(&c, 1, 4096);
        else if (cli_is(&c, "--steps")) T = cli_long(&c, 1, 256);
        else if (cli_is(&c, "--batch")) B = cli_long(&c, 1, 4096);
        else if (cli_is(&c, "--iters")) iters = cli_long(&c, 0, 100000000);
        else if (cli_is(&c, "--lr")) lr = cli_double(&c, 0, 10);
        else if (cli_is(&c, "--clip")) clip = cli_double(&c, 0, 1e9);
        else if (cli_is(&c, "--samples")) samples = cli_long(&c, 0, 10000);
        else if (cli_is(&c, "--temperature")) temperature = cli_double(&c, 0.01, 100);
        else if (cli_is(&c, "--seed")) seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--threads")) threads = cli_long(&c, 1, 256);
        else if (cli_is(&c, "--limit")) limit = cli_long(&c, 100, 100000000);
        else if (cli_is(&c, "--save")) save = cli_value(&c);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else if (cli_is(&c, "--bench")) bench = true;
        else cli_unknown(&c);
    }
    if (c.failed) return 2;
    if (nb_set_threads((int)threads) != NB_OK) {
        fprintf(stderr, "charlm: %s\n", nb_last_error());
        return 1;
    }
    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed);
    model m = {.gru = gru, .E = (size_t)embed, .H = (size_t)hidden};
    batch bt = {(size_t)T, (size_t)B, malloc((size_t)(T * B) * sizeof(size_t)), nb_zeros(NULL, NB_F32, NB_SHAPE((size_t)(T * B)))};
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    word_list w = {NULL, 0, 0};
    if (!bt.inputs || !tp || nb_tensor_status(bt.targets)) {
        fprintf(stderr, "charlm: out of memory\n");
        return 1;
    }
    size_t *order = NULL, *train = NULL, *valid = NULL, n_train = 0, n_valid = 0;
    int status = 1;

    if (bench) { /* random text: the cost of a step does not depend on it */
        size_t len = 100000;
        if (!(train = malloc(len * sizeof *train))) goto done;
        for (size_t i = 0; i < len; i++) train[i] = nb_rng_next(&rng) % VOCAB;
        if (model_init(&m, NB_F32, &rng) != NB_OK) goto done;
        nb_optimizer_opts oo;
        nb_optimizer_defaults(&oo, NB_OPT_ADAM);
        oo.lr = lr;
        if (!(opt = nb_optimizer_new(m.ps, &oo))) goto done;
        long steps = 0;
        uint64_t allocs = 0;
        double start = 0;
        for (long i = 0;; i++) {
            if (i == 5) {
                start = cli_seconds();
                allocs = nb_alloc_count();
            }
            sample_batch(&rng, train, len, &bt);
            if (isnan(train_step(tp, &m, opt, &bt, clip))) goto done;
            if (i >= 5 && ++steps && cli_seconds() - start > 2.0) break;
        }
        double ms = 1e3 * (cli_seconds() - start) / (double)steps;
        printf("%s, hidden %ld, batch %ld, %ld steps, %ld thread%s: %.3f ms per training step, %llu allocations after "
               "warm-up\n",
               gru ? "GRU" : "LSTM", hidden, B, T, threads, threads > 1 ? "s" : "", ms,
               (unsigned long long)(nb_alloc_count() - allocs));
        status = 0;
        goto done;
    }

    if (gradient_through_time(gru, (uint64_t)seed)) goto done;
    if (read_words(words_path, (size_t)limit, &w)) goto done;
    /* a seeded split: 90% of the words to learn from, 10% to measure on */
    if (!(order = malloc(w.n * sizeof *order))) goto done;
    for (size_t i = 0; i < w.n; i++) order[i] = i;
    for (size_t i = w.n - 1; i > 0; i--) {
        size_t j = nb_rng_next(&rng) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t split = w.n - w.n / 10;
    train = text_of(&w, order, 0, split, &n_train);
    valid = text_of(&w, order, split, w.n, &n_valid);
    if (!train || !valid) {
        fprintf(stderr, "charlm: out of memory\n");
        goto done;
    }
    printf("%zu words from %s (%zu skipped: not a to z and apostrophes), %zu to train on (%zu characters), %zu "
           "to validate on (%zu characters)\n",
           w.n, words_path, w.skipped, split, n_train, w.n - split, n_valid);
    if (n_train <= (size_t)T + 1 || n_valid <= (size_t)B + 1) {
        fprintf(stderr, "charlm: the text is too short for windows of %ld characters\n", T);
        goto done;
    }
    double bigram = bigram_nats(train, n_train, valid, n_valid, 0.1);
    printf("bigram model (counted from the training words, add-0.1 smoothing): %.4f nats per character\n", bigram);

    if (model_init(&m, NB_F32, &rng) != NB_OK) {
        fprintf(stderr, "charlm: %s\n", nb_last_error());
        goto done;
    }
    if (dot || html) {
        /* The pictures: the cell unrolled over the 3 characters of "\nhi",
         * predicting "hi\n", before training; one cluster per step, top to
         * bottom.  Three steps show the gradient through time whole: the
         * middle step receives it through h<2> and c<2> from the step after
         * and passes it to the step before; each weight sums 3 uses. */
        nb_tape *small = nb_tape_new();
        state s = zero_state(small, &m, NB_F32, 1);
        nb_tensor_set_name(s.h, "h<0>");
        if (s.c) nb_tensor_set_name(s.c, "c<0>");
        size_t hi[3] = {END, 8, 9}; /* "\nhi" */
        nb_tensor *target = nb_from_array(small, NB_F32, NB_SHAPE(3), ((double[]){8, 9, END}));
        nb_tensor_set_name(target, "next characters");
        nb_tensor *loss = nb_softmax_cross_entropy(small, unroll(small, &m, hi, 3, 1, &s, true), target, 1);
        nb_tensor_set_name(loss, "loss");
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.clusters = true;
        o.show_values = false;
        o.rankdir = "TB";
        char title[320];
        snprintf(title, sizeof title,
                 "An %s cell (%zu units) reads \"\\nhi\" one character a step and predicts the next, \"hi\\n\": "
                 "the gradient through time before training; x holds the 3 characters' embeddings, XW<t> = "
                 "x<t> W_x + b_x, h<t>%s the state after step t",
                 gru ? "GRU" : "LSTM", m.H, gru ? " is" : " and c<t> are");
        o.title = title;
        bool drawn = nb_backward(loss) == NB_OK;
        if (!drawn) fprintf(stderr, "charlm: %s\n", nb_last_error());
        else drawn = write_pictures(small, loss, &o, dot, html) == 0; /* it printed why not */
        nb_params_zero_grad(m.ps);
        nb_tape_free(small);
        if (!drawn) goto done;
    }
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_ADAM);
    oo.lr = lr;
    if (!(opt = nb_optimizer_new(m.ps, &oo))) {
        fprintf(stderr, "charlm: %s\n", nb_last_error());
        goto done;
    }
    printf("%s, embedding %zu, hidden %zu, windows of %ld characters, batch %ld, Adam lr %g, %ld steps\n",
           gru ? "GRU" : "LSTM", m.E, m.H, T, B, lr, iters);
    double started = cli_seconds(), recent = 0;
    long every = iters / 6 > 0 ? iters / 6 : 1, since = 0;
    for (long i = 1; i <= iters; i++) {
        sample_batch(&rng, train, n_train, &bt);
        double loss = train_step(tp, &m, opt, &bt, clip);
        if (isnan(loss)) goto done;
        recent += loss;
        since++;
        if (i % every == 0 || i == iters) {
            printf("step %5ld: training loss %.4f nats per character (mean of the last %ld steps), %.1f s\n", i,
                   recent / (double)since, since, cli_seconds() - started);
            recent = 0;
            since = 0;
        }
    }
    double nats = model_nats(tp, &m, valid, n_valid, 64, 16);
    printf("validation: %s %.4f nats per character, bigram %.4f (%.1f%% %s)\n", gru ? "GRU" : "LSTM", nats, bigram,
           100 * fabs(bigram - nats) / bigram, nats <= bigram ? "lower" : "higher: train longer");
    if (samples) {
        printf("invented words (temperature %g):", temperature);
        size_t novel = 0;
        for (long k = 0; k < samples; k++) {
            char word[MAX_WORD], *key = word;
            invent(tp, &m, &rng, temperature, word);
            bool known = word[0] && bsearch(&key, w.words, w.n, sizeof *w.words, cmp_str);
            novel += word[0] && !known;
            printf(" %s%s", word[0] ? word : "(empty)", known ? "*" : "");
        }
        printf("\n(%zu of %ld not in the word list; * marks the ones that are)\n", novel, samples);
    }
    if (save) {
        if (nb_params_save(m.ps, save) != NB_OK) {
            fprintf(stderr, "charlm: %s\n", nb_last_error());
            goto done;
        }
        printf("saved to %s\n", save);
    }
    status = isnan(nats) ? 1 : 0;
done:
    nb_optimizer_free(opt);
    nb_params_free(m.ps);
    nb_tape_free(tp);
    nb_tensor_free(bt.targets);
    free(bt.inputs);
    free(order);
    free(train);
    free(valid);
    words_free(&w);
    return status;
}
