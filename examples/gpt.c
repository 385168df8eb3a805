/*
 * A character-level GPT trained on fortunes: Debian's `fortunes` package
 * (English, by default) or, with --corpus zh, `fortunes-zh` (the Tang
 * dynasty's 300 poems, the Song dynasty's 100 lyrics, and the package's
 * classical sayings and verse, in Chinese: a token is a character, a
 * Unicode code point, not a byte; the package's pages of the Debian
 * reference manual, which are mostly tables and commands, are left out).
 *
 * The model (examples/gpt_model.h) is GPT-2's: token and position
 * embeddings, pre-norm blocks of causal self-attention (the fused op,
 * nb_scaled_dot_product_attention) and a GELU MLP, a last layer norm, and
 * the embedding again as the output layer (weight tying), its weights
 * drawn from N(0, 0.02²) as GPT-2's.  Training: windows of the context's
 * length at random places in the training text, cross-entropy of each next
 * character, AdamW (no weight decay on the biases and the norms' gains)
 * with the toolkit's schedule, a linear warm-up then a cosine decay, the
 * gradients' global norm clipped, dropout after the embeddings, on the
 * attention weights and on each block's two outputs.  A checkpoint
 * (--save, --resume) holds all the state training has, so that a resumed
 * run prints the losses of the run that never stopped, bit for bit.
 *
 * A tenth of the fortunes (chosen by the seed) is held out.  The program
 * reports nats per character on the training and held-out text beside a
 * bigram model counted from the same training text (with the add-k that
 * does best on the held-out text: the strongest bigram, not a straw man),
 * then writes samples twice, with and without a KV cache, timing both and
 * checking that they are the same text.
 */
#include "cli.h"
#include "gpt_model.h"
#include "gpt_text.h"

static const char usage[] =
    "usage: gpt [options]\n"
    "Trains a character-level GPT on fortunes and writes new ones.\n"
    "  --corpus NAME     en (default: Debian's fortunes) or zh (fortunes-zh: Tang and Song poems, sayings)\n"
    "  --text FILE       train on FILE instead (UTF-8; fortunes separated by lines of '%')\n"
    "  --layers L        blocks (default 4)\n"
    "  --dim D           width (default 128)\n"
    "  --heads H         attention heads (default 4)\n"
    "  --context T       characters per window (default 128)\n"
    "  --batch B         windows per step (default 16)\n"
    "  --steps N         training steps (default 1200)\n"
    "  --lr RATE         peak learning rate (default 0.002)\n"
    "  --warmup N        steps of linear warm-up (default 100), then a cosine decay to lr/10\n"
    "  --dropout P       dropout probability (default 0.1)\n"
    "  --clip NORM       clip the gradients' global norm (default 1; 0: no clipping)\n"
    "  --eval-chars N    held-out (and training) characters to measure on (default 32768)\n"
    "  --log-every N     print the training loss every N steps (default 100)\n"
    "  --samples N       samples to write (default 2)\n"
    "  --sample-chars N  characters per sample (default 300)\n"
    "  --temperature T   sampling temperature (default 0.8)\n"
    "  --seed S          seed of the split, initialisation, batches, dropout and sampling (default 1)\n"
    "  --threads N       threads (default 1)\n"
    "  --save FILE       save a checkpoint at the end: the parameters, AdamW's moments, the step, the schedule\n"
    "                    and the random state in FILE (PyTorch's format if it ends in .safetensors, else\n"
    "                    nabla's), the model's sizes in FILE.config\n"
    "  --resume FILE     continue from a checkpoint that --save wrote, exactly as if never stopped (give the\n"
    "                    first run's options: the schedule is this run's --lr, --warmup and --steps)\n"
    "  --stop-at N       stop after step N of the --steps schedule (with --save: resume later)\n"
    "  --dot FILE        write the graph of one step on a window of 8 characters as Graphviz dot\n";

/* The fortunes package's files (Debian 12), read in this order. */
static const char *const english_files[] = {
    "art", "ascii-art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education",
    "ethnic", "food", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "love", "magic",
    "medicine", "men-women", "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes",
    "politics", "pratchett", "science", "songs-poems", "sports", "startrek", "tao", "translate-me", "wisdom",
    "work", "zippy"};
static const char *const chinese_files[] = {"tang300", "song100", "chinese"};
#define FORTUNES "/usr/share/games/fortunes/"

typedef struct {
    long layers, dim, heads, context, batch, steps, warmup, eval_chars, log_every, samples, sample_chars, seed,
        threads, stop_at;
    double lr, dropout, clip, temperature;
    const char *corpus, *text, *save, *resume, *dot;
} options;

/* ------------------------------------------------------------ the text */

static int read_corpus(const options *o, corpus *c) {
    if (o->text) return corpus_read(c, o->text, NULL);
    bool zh = !strcmp(o->corpus, "zh");
    c->min_chinese = zh ? 0.8 : 0;
    const char *const *files = zh ? chinese_files : english_files;
    size_t n = zh ? sizeof chinese_files / sizeof *chinese_files : sizeof english_files / sizeof *english_files;
    for (size_t i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof path, FORTUNES "%s", files[i]);
        if (corpus_read(c, path, zh ? "apt-get install fortunes-zh, or give --text FILE)"
                                    : "apt-get install fortunes, or give --text FILE)"))
            return 1;
    }
    return 0;
}

/* Window starts for measuring: consecutive windows from the start of the
 * text, at most max of them. */
static size_t *window_starts(size_t len, size_t T, size_t max, bool spread, size_t *count) {
    size_t fit = len > T ? (len - 1) / T : 0;
    *count = fit < max ? fit : max;
    size_t *s = malloc((*count ? *count : 1) * sizeof *s);
    /* spread: evenly over the whole text (the training text is large) */
    size_t stride = spread && *count ? (len - 1 - T) / *count : T;
    for (size_t i = 0; s && i < *count; i++) s[i] = i * (stride > T ? stride : T);
    return s;
}

/* ------------------------------------------------------------ measuring */

/* Nats per character of the model on the windows (no dropout, no gradient). */
static double model_nats(nb_tape *tp, const gpt *m, const size_t *text, const size_t *starts, size_t windows,
                         size_t B, nb_rng *rng) {
    size_t T = m->T, *ids = malloc(B * T * sizeof *ids);
    nb_tensor *targets = nb_zeros(NULL, NB_F32, NB_SHAPE(B, T));
    double nats = 0;
    bool training = nb_tape_set_training(tp, false), was = nb_tape_set_grad_enabled(tp, false);
    for (size_t w = 0; ids && w < windows && !isnan(nats); w += B) {
        size_t nb = windows - w < B ? windows - w : B;
        float *y = nb_tensor_data(targets);
        for (size_t b = 0; y && b < nb; b++)
            for (size_t t = 0; t < T; t++) ids[b * T + t] = text[starts[w + b] + t], y[b * T + t] = (float)text[starts[w + b] + t + 1];
        nb_tape_reset(tp);
        nb_tensor *logits = gpt_forward(tp, m, ids, nb, T, rng, NULL);
        nb_tensor *loss = nb_softmax_cross_entropy(tp, logits, nb_slice(tp, targets, 0, 0, (long)nb, 1), 2);
        if (nb_tape_status(tp) != NB_OK) {
            fprintf(stderr, "gpt: %s\n", nb_tape_error(tp));
            nats = NAN;
        } else nats += nb_item(loss) * (double)nb;
    }
    nb_tape_set_training(tp, training);
    nb_tape_set_grad_enabled(tp, was);
    nb_tensor_free(targets);
    free(ids);
    return ids ? nats / (double)windows : NAN;
}

/* ------------------------------------------------------------ sampling */

/* A character drawn from softmax(logits[0, row, :] / temperature). */
static size_t draw(nb_tape *tp, nb_tensor *logits, size_t row, double temperature, nb_rng *rng) {
    nb_tensor *p = nb_softmax(tp, nb_scale(tp, nb_slice(tp, logits, 1, (long)row, (long)row + 1, 1), 1 / temperature), -1);
    const float *w = nb_tensor_const_data(p);
    size_t V = nb_tensor_size(p), pick = V - 1;
    double u = nb_rng_uniform(rng), sum = 0;
    for (size_t k = 0; w && k < V; k++)
        if ((sum += w[k]) > u) {
            pick = k;
            break;
        }
    return pick;
}

/* Continues seq[0..len) to n tokens.  The model sees at most T tokens:
 * when the text outgrows the window, the window restarts at the last T/2
 * tokens (with the cache: the cache is refilled from them).  Both ways see
 * the same windows, so that they write the same text. */
static bool generate(nb_tape *tp, const gpt *m, size_t *seq, size_t len, size_t n, bool use_cache, double temperature,
                     nb_rng *rng, gpt_cache *cache) {
    size_t start = 0;
    bool fresh = true, training = nb_tape_set_training(tp, false), was = nb_tape_set_grad_enabled(tp, false);
    for (; len < n; len++) {
        nb_tape_reset(tp);
        if (len - start > m->T) start = len - m->T / 2, fresh = true;
        nb_tensor *logits;
        if (!use_cache) logits = gpt_forward(tp, m, seq + start, 1, len - start, rng, NULL);
        else if (fresh) {
            cache->len = 0;
            logits = gpt_forward(tp, m, seq + start, 1, len - start, rng, cache);
        } else logits = gpt_forward(tp, m, seq + len - 1, 1, 1, rng, cache);
        fresh = false;
        seq[len] = draw(tp, logits, nb_tensor_dim(logits, 1) - 1, temperature, rng);
        if (nb_tape_status(tp) != NB_OK) {
            fprintf(stderr, "gpt: %s\n", nb_tape_error(tp));
            break;
        }
    }
    nb_tape_set_training(tp, training);
    nb_tape_set_grad_enabled(tp, was);
    return len == n;
}

/* ------------------------------------------------------------ checkpoints */

/* A checkpoint is nb_checkpoint_save's file: the parameters, AdamW's two
 * moments of each, the steps taken, the schedule and the generator of the
 * batches and dropout, so that a resumed run goes on bit for bit as the
 * uninterrupted one.  (The samples' generator is seeded afresh each run:
 * training does not draw from it.)  Beside it, FILE.config holds what the
 * parameters' shapes do not tell: the heads and the vocabulary's
 * fingerprint, with the sizes, to refuse another model's checkpoint with
 * its reason. */
static nb_params *config_new(const gpt *m, uint32_t vocab_hash) {
    nb_params *ps = nb_params_new();
    nb_tensor *c = ps ? nb_params_add(ps, "config", nb_zeros(NULL, NB_F64, NB_SHAPE(6))) : NULL;
    double values[6] = {(double)m->V, (double)m->T, (double)m->d, (double)m->H, (double)m->L, (double)vocab_hash};
    for (int i = 0; c && nb_tensor_status(c) == NB_OK && i < 6; i++) nb_set(c, (size_t)i, values[i]);
    if (!c || nb_tensor_status(c) != NB_OK) {
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        nb_params_free(ps);
        return NULL;
    }
    return ps;
}

static bool config_path(const char *path, char *out, size_t size) {
    int w = snprintf(out, size, "%s.config", path);
    if (w >= 0 && (size_t)w < size) return true;
    fprintf(stderr, "gpt: the path %s is too long\n", path);
    return false;
}

static int save_checkpoint(const gpt *m, const nb_optimizer *opt, const nb_rng *rng, uint32_t hash, const char *path) {
    char cpath[4096];
    nb_params *config = config_new(m, hash);
    if (!config || !config_path(path, cpath, sizeof cpath)) return nb_params_free(config), 1;
    nb_status st = nb_checkpoint_save(m->ps, opt, rng, path);
    if (st == NB_OK) st = nb_params_save(config, cpath);
    nb_params_free(config);
    if (st != NB_OK) {
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        return 1;
    }
    printf("checkpoint at step %ld in %s (parameters, AdamW's moments, step, schedule and random state), the "
           "model's sizes in %s\n",
           nb_optimizer_steps(opt), path, cpath);
    return 0;
}

static int load_checkpoint(gpt *m, nb_optimizer *opt, nb_rng *rng, uint32_t hash, const char *path) {
    char cpath[4096];
    nb_params *want = config_new(m, hash), *saved = config_new(m, hash);
    int status = 1;
    if (!want || !saved || !config_path(path, cpath, sizeof cpath)) goto done;
    if (nb_params_load(saved, cpath) != NB_OK) {
        fprintf(stderr, "gpt: %s (--resume needs the FILE.config that --save wrote beside FILE)\n", nb_last_error());
        goto done;
    }
    const double *c = nb_tensor_const_data(nb_params_get(saved, "config"));
    if (memcmp(c, nb_tensor_const_data(nb_params_get(want, "config")), 6 * sizeof *c)) {
        fprintf(stderr,
                "gpt: %s was trained with a vocabulary of %.0f characters (fingerprint %.0f), --context %.0f "
                "--dim %.0f --heads %.0f --layers %.0f; this run has %zu characters (fingerprint %u), --context %zu "
                "--dim %zu --heads %zu --layers %zu\n",
                path, c[0], c[5], c[1], c[2], c[3], c[4], m->V, hash, m->T, m->d, m->H, m->L);
        goto done;
    }
    if (nb_checkpoint_load(m->ps, opt, rng, path) != NB_OK) {
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        goto done;
    }
    printf("resumed from %s at step %ld (parameters, AdamW's moments, step, schedule and random state)\n", path,
           nb_optimizer_steps(opt));
    status = 0;
done:
    nb_params_free(want);
    nb_params_free(saved);
    return status;
}

/* ------------------------------------------------------------ the picture */

/* The graph of the loss on the first 8 characters of the text (one
 * window, no update), each block a cluster; 1 if it could not be written. */
static int draw_graph(const gpt *m, const size_t *text, nb_rng rng, const char *path) {
    size_t n = m->T < 8 ? m->T : 8;
    nb_tape *tp = nb_tape_new();
    nb_tensor *y = nb_empty(tp, NB_F32, NB_SHAPE(1, n));
    for (size_t t = 0; t < n; t++) nb_set(y, t, (double)text[t + 1]);
    nb_tensor *loss = nb_softmax_cross_entropy(tp, gpt_forward(tp, m, text, 1, n, &rng, NULL), y, 2);
    nb_tensor_set_name(loss, "loss");
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.clusters = true;
    int status = nb_backward(loss) == NB_OK ? write_pictures(tp, loss, &o, path, NULL) : 1; /* it printed why */
    if (nb_tape_status(tp) != NB_OK) fprintf(stderr, "gpt: %s\n", nb_tape_error(tp));
    nb_params_zero_grad(m->ps);
    nb_tape_free(tp);
    return status;
}

/* ------------------------------------------------------------ training */

/* AdamW (betas 0.9, 0.99, weight decay 0.01 on the matrices and
 * embeddings, none on the biases and the norms' gains: the no-decay group),
 * its rate rising linearly over the warm-up's steps from lr/(warmup+1) to
 * lr·warmup/(warmup+1), then lr decaying along a cosine to lr/10 at the
 * last step: the toolkit's schedule, which the optimizer follows by itself
 * (the step count is in the checkpoint; the schedule, saved there too, is
 * set again from this run's options after a resume). */
static nb_status set_schedule(nb_optimizer *opt, const options *o) {
    nb_schedule s = {.kind = NB_SCHEDULE_COSINE, .base_lr = o->lr, .total = o->steps - o->warmup,
                     .min_lr = o->lr / 10, .warmup = o->warmup, .warmup_start = 1.0 / (double)(o->warmup + 1)};
    nb_status st = nb_optimizer_set_lr(opt, o->lr);
    return st == NB_OK ? nb_optimizer_set_schedule(opt, &s) : st;
}

static nb_optimizer *make_optimizer(const gpt *m, const options *o) {
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_ADAMW); /* weight decay 0.01 */
    oo.beta2 = 0.99;
    oo.lr = o->lr;
    nb_optimizer *opt = nb_optimizer_new(m->ps, &oo);
    if (!opt || nb_optimizer_no_decay_group(opt) < 0 || set_schedule(opt, o) != NB_OK) {
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        nb_optimizer_free(opt);
        return NULL;
    }
    return opt;
}

typedef struct {
    size_t *ids;
    nb_tensor *targets; /* (B, T) */
} batch;

/* One step on B random windows; the loss before the update, or NAN. */
static double train_step(nb_tape *tp, const gpt *m, nb_optimizer *opt, const options *o, batch *bt,
                         const size_t *text, size_t len, nb_rng *rng) {
    size_t B = (size_t)o->batch, T = m->T;
    float *y = nb_tensor_data(bt->targets);
    for (size_t b = 0; y && b < B; b++) {
        size_t at = nb_rng_next(rng) % (len - T);
        for (size_t t = 0; t < T; t++) bt->ids[b * T + t] = text[at + t], y[b * T + t] = (float)text[at + t + 1];
    }
    nb_tape_reset(tp);
    nb_params_zero_grad(m->ps);
    nb_tensor *loss = nb_softmax_cross_entropy(tp, gpt_forward(tp, m, bt->ids, B, T, rng, NULL), bt->targets, 2);
    nb_status st = nb_backward(loss);
    if (st == NB_OK && o->clip > 0) nb_clip_grad_norm(m->ps, o->clip);
    if (st == NB_OK) st = nb_optimizer_step(opt);
    if (st != NB_OK) {
        fprintf(stderr, "gpt: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
        return NAN;
    }
    return nb_item(loss);
}

static bool parse(int argc, char **argv, options *o, int *exit_code) {
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return *exit_code = 0, false;
        else if (cli_is(&c, "--corpus")) {
            o->corpus = cli_value(&c);
            if (o->corpus && strcmp(o->corpus, "en") && strcmp(o->corpus, "zh"))
                cli_fail(&c, "unknown corpus '%s' (en or zh)%s", o->corpus, "");
        } else if (cli_is(&c, "--text")) o->text = cli_value(&c);
        else if (cli_is(&c, "--layers")) o->layers = cli_long(&c, 1, GPT_MAX_LAYERS);
        else if (cli_is(&c, "--dim")) o->dim = cli_long(&c, 1, 8192);
        else if (cli_is(&c, "--heads")) o->heads = cli_long(&c, 1, 256);
        else if (cli_is(&c, "--context")) o->context = cli_long(&c, 2, 8192);
        else if (cli_is(&c, "--batch")) o->batch = cli_long(&c, 1, 4096);
        else if (cli_is(&c, "--steps")) o->steps = cli_long(&c, 1, 100000000);
        else if (cli_is(&c, "--lr")) o->lr = cli_double(&c, 0, 10);
        else if (cli_is(&c, "--warmup")) o->warmup = cli_long(&c, 0, 100000000);
        else if (cli_is(&c, "--dropout")) o->dropout = cli_double(&c, 0, 0.9);
        else if (cli_is(&c, "--clip")) o->clip = cli_double(&c, 0, 1e9);
        else if (cli_is(&c, "--eval-chars")) o->eval_chars = cli_long(&c, 1, 1L << 40);
        else if (cli_is(&c, "--log-every")) o->log_every = cli_long(&c, 1, 100000000);
        else if (cli_is(&c, "--samples")) o->samples = cli_long(&c, 0, 1000);
        else if (cli_is(&c, "--sample-chars")) o->sample_chars = cli_long(&c, 1, 1000000);
        else if (cli_is(&c, "--temperature")) o->temperature = cli_double(&c, 0.01, 100);
        else if (cli_is(&c, "--seed")) o->seed = cli_long(&c, 0, 1L << 62);
        else if (cli_is(&c, "--threads")) o->threads = cli_long(&c, 1, 256);
        else if (cli_is(&c, "--save")) o->save = cli_value(&c);
        else if (cli_is(&c, "--resume")) o->resume = cli_value(&c);
        else if (cli_is(&c, "--stop-at")) o->stop_at = cli_long(&c, 0, 100000000);
        else if (cli_is(&c, "--dot")) o->dot = cli_value(&c);
        else cli_unknown(&c);
    }
    if (!c.failed && o->warmup >= o->steps) cli_fail(&c, "--warmup must be shorter than --steps%s%s", "", "");
    if (!c.failed && o->dim % o->heads) cli_fail(&c, "--heads must divide --dim (each head is dim/heads wide)%s%s", "", "");
    *exit_code = 2;
    return !c.failed;
}

int main(int argc, char **argv) {
    options o = {4, 128, 4, 128, 16, 1200, 100, 32768, 100, 2, 300, 1, 1, 0, 2e-3, 0.1, 1.0, 0.8, "en", NULL, NULL, NULL, NULL};
    int status = 1;
    if (!parse(argc, argv, &o, &status)) return status;
    status = 1;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines as they come, into a pipe or a file too */
    if (nb_set_threads((int)o.threads) != NB_OK) {
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        return 1;
    }
    corpus text = {0};
    vocabulary voc = {0};
    bigram big = {0};
    gpt m = {.T = (size_t)o.context, .d = (size_t)o.dim, .H = (size_t)o.heads, .L = (size_t)o.layers, .dropout = o.dropout};
    gpt_cache cache = {0};
    batch bt = {NULL, NULL};
    nb_tape *tp = nb_tape_new();
    nb_optimizer *opt = NULL;
    size_t *train = NULL, *valid = NULL, *valid_starts = NULL, *train_starts = NULL, *seq[2] = {NULL, NULL};
    size_t n_train = 0, n_valid = 0, held = 0, n_valid_w = 0, n_train_w = 0, T = m.T;
    nb_rng split_rng, init_rng, rng, sample_rng;
    nb_rng_seed(&split_rng, (uint64_t)o.seed);
    nb_rng_seed(&init_rng, (uint64_t)o.seed + 1);
    nb_rng_seed(&rng, (uint64_t)o.seed + 2);
    nb_rng_seed(&sample_rng, (uint64_t)o.seed + 3);

    if (!tp || read_corpus(&o, &text)) goto done;
    if (!vocabulary_of(&text, &voc) || !split_text(&text, &voc, &split_rng, &train, &n_train, &valid, &n_valid, &held)) {
        fprintf(stderr, "gpt: out of memory\n");
        goto done;
    }
    printf("%zu fortunes from %s, %zu characters, a vocabulary of %zu; %zu fortunes held out (%zu characters), "
           "%zu characters to train on\n",
           text.entries, o.text ? o.text : strcmp(o.corpus, "zh") ? "Debian's fortunes" : "fortunes-zh (tang300, song100, chinese)",
           text.n, voc.size, held, n_valid, n_train);
    if (text.dropped)
        printf("(%zu entries left out: less than %.0f%% of their characters Chinese)\n", text.dropped,
               100 * text.min_chinese);
    if (n_train <= 2 * T + 1 || n_valid <= T + 1) {
        fprintf(stderr, "gpt: the text is too short for windows of %zu characters (training %zu, held out %zu)\n", T,
                n_train, n_valid);
        goto done;
    }
    size_t max_w = (size_t)o.eval_chars / T ? (size_t)o.eval_chars / T : 1;
    valid_starts = window_starts(n_valid, T, max_w, false, &n_valid_w);
    train_starts = window_starts(n_train, T, n_valid_w, true, &n_train_w);
    if (!valid_starts || !train_starts || !bigram_count(&big, train, n_train, voc.size)) {
        fprintf(stderr, "gpt: out of memory\n");
        goto done;
    }
    static const double ks[] = {1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001};
    double k_best = 1, bigram_best = INFINITY, add_one = bigram_nats(&big, 1, valid, valid_starts, n_valid_w, T);
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
        double nats = bigram_nats(&big, ks[i], valid, valid_starts, n_valid_w, T);
        if (nats < bigram_best) bigram_best = nats, k_best = ks[i];
    }
    printf("bigram model counted from the training text, on %zu held-out characters: %.4f nats per character "
           "(add-%g smoothing, the best of add-1 to add-0.001), add-one %.4f\n",
           n_valid_w * T, bigram_best, k_best, add_one);

    m.V = voc.size;
    if (gpt_init(&m, &init_rng) != NB_OK || !(opt = make_optimizer(&m, &o))) goto done;
    uint32_t hash = vocabulary_hash(&voc);
    if (o.resume && load_checkpoint(&m, opt, &rng, hash, o.resume)) goto done;
    if (o.resume && set_schedule(opt, &o) != NB_OK) { /* this run's --lr, --warmup and --steps */
        fprintf(stderr, "gpt: %s\n", nb_last_error());
        goto done;
    }
    long step = nb_optimizer_steps(opt), stop = o.stop_at && o.stop_at < o.steps ? o.stop_at : o.steps;
    if (o.dot && draw_graph(&m, train, rng, o.dot)) goto done;
    bt.ids = malloc((size_t)o.batch * T * sizeof *bt.ids);
    bt.targets = nb_zeros(NULL, NB_F32, NB_SHAPE((size_t)o.batch, T));
    if (!bt.ids || nb_tensor_status(bt.targets)) {
        fprintf(stderr, "gpt: out of memory\n");
        goto done;
    }
    printf("GPT: %zu blocks, width %zu, %zu heads, context %zu, %zu parameters; batch %ld, AdamW (betas 0.9, 0.99, "
           "weight decay 0.01 but none on biases and norms), lr %g after %ld warm-up steps, cosine to %g at step %ld, clip %g, dropout %g, %ld "
           "thread%s\n",
           m.L, m.d, m.H, m.T, gpt_count(&m), o.batch, o.lr, o.warmup, o.lr / 10, o.steps, o.clip, o.dropout,
           o.threads, o.threads > 1 ? "s" : "");
    if (step == 0) {
        double start = model_nats(tp, &m, valid, valid_starts, n_valid_w, (size_t)o.batch, &rng);
        if (isnan(start)) goto done;
        printf("before training: held-out %.4f nats per character (log V = %.4f)\n", start, log((double)m.V));
    }
    double started = cli_seconds(), recent = 0;
    long since = 0, first = step;
    while (step < stop) {
        step++;
        double loss = train_step(tp, &m, opt, &o, &bt, train, n_train, &rng);
        if (isnan(loss)) goto done;
        recent += loss, since++;
        if (step % o.log_every == 0 || step == stop) {
            double s = cli_seconds() - started;
            /* 8 decimals: float32 losses above 1/4 that differ print differently,
             * so that comparing the lines (tests/examples.sh) compares the values */
            printf("step %5ld  training loss %.8f  lr %.2e  %.1f s, %.0f ms per step\n", step, recent / (double)since,
                   nb_optimizer_lr(opt), s, 1e3 * s / (double)(step - first));
            fflush(stdout);
            recent = 0, since = 0;
        }
    }
    if (o.save && save_checkpoint(&m, opt, &rng, hash, o.save)) goto done;
    double train_nats = model_nats(tp, &m, train, train_starts, n_train_w, (size_t)o.batch, &rng);
    double valid_nats = model_nats(tp, &m, valid, valid_starts, n_valid_w, (size_t)o.batch, &rng);
    if (isnan(train_nats) || isnan(valid_nats)) goto done;
    printf("after %ld steps: training %.4f, held-out %.4f nats per character; bigram %.4f (held-out %.1f%% %s)\n", step,
           train_nats, valid_nats, bigram_best, 100 * fabs(bigram_best - valid_nats) / bigram_best,
           valid_nats < bigram_best ? "lower" : "higher: train longer");

    size_t n = (size_t)o.sample_chars + 2, same = 0;
    double seconds[2] = {0, 0};
    if (!(seq[0] = malloc(n * sizeof(size_t))) || !(seq[1] = malloc(n * sizeof(size_t))) || !gpt_cache_new(&cache, &m)) {
        fprintf(stderr, "gpt: out of memory\n");
        goto done;
    }
    /* a sample starts where a fortune would: after a "%\n" */
    size_t prompt[2] = {token_of(&voc, '%'), token_of(&voc, '\n')}, plen = prompt[0] < voc.size && prompt[1] < voc.size ? 2 : 1;
    if (plen == 1) prompt[0] = train[0];
    for (long s = 0; s < o.samples; s++) {
        nb_rng r0 = sample_rng;
        for (int way = 0; way < 2; way++) { /* with the cache, then without, drawing the same numbers */
            nb_rng r = r0;
            memcpy(seq[way], prompt, plen * sizeof *prompt);
            double t0 = cli_seconds();
            if (!generate(tp, &m, seq[way], plen, n - 2 + plen, way == 0, o.temperature, &r, &cache)) goto done;
            seconds[way] += cli_seconds() - t0;
            sample_rng = r;
        }
        bool equal = !memcmp(seq[0], seq[1], (n - 2 + plen) * sizeof(size_t));
        same += equal;
        printf("\nsample %ld (temperature %g):\n", s + 1, o.temperature);
        print_tokens(stdout, &voc, seq[0], plen, n - 2 + plen);
        printf("\n");
        if (!equal) {
            size_t at = plen;
            while (seq[0][at] == seq[1][at]) at++;
            printf("without the cache the text differs from character %zu on: ", at - plen + 1);
            print_tokens(stdout, &voc, seq[1], at, n - 2 + plen);
            printf("\n");
        }
    }
    if (o.samples) {
        double chars = (double)(o.samples * o.sample_chars);
        printf("\nsampling: %.0f characters per second with the KV cache, %.0f recomputing the prefix (%.1fx); "
               "the same text both ways: %s (%zu of %ld samples)\n",
               chars / seconds[0], chars / seconds[1], seconds[1] / seconds[0], same == (size_t)o.samples ? "yes" : "NO",
               same, o.samples);
    }
    status = same == (size_t)o.samples ? 0 : 1; /* the cache must not change the text */
done:
    gpt_cache_free(&cache, &m);
    nb_optimizer_free(opt);
    nb_params_free(m.ps);
    nb_tape_free(tp);
    nb_tensor_free(bt.targets);
    free(bt.ids);
    free(train);
    free(valid);
    free(valid_starts);
    free(train_starts);
    free(seq[0]);
    free(seq[1]);
    free(voc.chars);
    bigram_free(&big);
    corpus_free(&text);
    return status;
}
