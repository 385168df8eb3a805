/*
 * One training step of the GPT of examples/gpt.c (examples/gpt_model.h):
 * forward, backward, the gradients' norm clipped at 1, AdamW; with the
 * fused attention op or with attention composed of ops (matmul, where,
 * softmax, dropout, matmul).  bench/torch_gpt.py is the same step in
 * PyTorch, and bench/run.py alternates the three.
 *
 *   bench_gpt --config NAME --side fused|composed [--threads N] [--reps R] [--dropout P]
 *       one CSV line: config,side,threads,wall_ms,cpu_ms,allocs_per_step
 *       (medians of R timed runs of about 0.5 s each, after 2 warm-up steps)
 *   bench_gpt --config NAME --write DIR
 *       writes DIR/NAME.safetensors (the weights, seed 1) and DIR/NAME_batch.safetensors
 *       (ids and targets, B x T), then prints the first loss and gradient norm
 *       without dropout, fused and composed: first,NAME,loss,norm,loss_composed,norm_composed
 *   bench_gpt --attention L --side fused|composed [--threads N] [--reps R]
 *       causal attention alone on q, k, v of (4, 4, L, 64), forward and backward:
 *       attention,L,side,threads,wall_ms,cpu_ms,peak_extra_MB (the resident memory's
 *       peak during the first pass above what was resident before it)
 *
 * Configurations: small (2 blocks, d 64, 4 heads, context 64, batch 16),
 * lesson (4 blocks, d 128, 4 heads, context 128, batch 16: the lesson's
 * defaults) and gpt2 (one GPT-2-small block: d 768, 12 heads, context 256,
 * batch 2); a vocabulary of 113 characters (the English fortunes').
 */
#include "../examples/gpt_model.h"
#include "bench_common.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    size_t L, d, H, T, B;
} config;

static const config configs[] = {
    {"small", 2, 64, 4, 64, 16}, {"lesson", 4, 128, 4, 128, 16}, {"gpt2", 1, 768, 12, 256, 2}};
enum { VOCAB = 113 };

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    gpt m;
    nb_tape *tp;
    nb_optimizer *opt;
    size_t *ids;
    nb_tensor *targets;
    nb_rng rng;
} bench;

static int bench_init(bench *b, const config *c, bool composed, double dropout) {
    *b = (bench){.m = {.V = VOCAB, .T = c->T, .d = c->d, .H = c->H, .L = c->L, .dropout = dropout, .composed = composed}};
    nb_rng_seed(&b->rng, 1);
    if (gpt_init(&b->m, &b->rng) != NB_OK) return 1;
    b->tp = nb_tape_new();
    nb_optimizer_opts oo;
    nb_optimizer_defaults(&oo, NB_OPT_ADAMW);
    oo.beta2 = 0.99;
    oo.lr = 1e-3;
    b->opt = nb_optimizer_new(b->m.ps, &oo);
    b->ids = malloc(c->B * c->T * sizeof *b->ids);
    b->targets = nb_zeros(NULL, NB_F32, NB_SHAPE(c->B, c->T));
    if (!b->tp || !b->opt || !b->ids || nb_tensor_status(b->targets)) return 1;
    for (size_t i = 0; i < c->B * c->T; i++) {
        b->ids[i] = nb_rng_next(&b->rng) % VOCAB;
        nb_set(b->targets, i, (double)(nb_rng_next(&b->rng) % VOCAB));
    }
    return 0;
}

static void bench_free(bench *b) {
    nb_optimizer_free(b->opt);
    nb_params_free(b->m.ps);
    nb_tape_free(b->tp);
    nb_tensor_free(b->targets);
    free(b->ids);
}

/* The loss, and with norm the gradients' norm (then they are not clipped); NAN on error. */
static double step(bench *b, const config *c, bool update, double *norm) {
    nb_tape_reset(b->tp);
    nb_params_zero_grad(b->m.ps);
    nb_tensor *loss =
        nb_softmax_cross_entropy(b->tp, gpt_forward(b->tp, &b->m, b->ids, c->B, c->T, &b->rng, NULL), b->targets, 2);
    nb_status st = nb_backward(loss);
    /* the check (norm wanted) keeps the gradients whole: a bound too large to clip */
    double n = st == NB_OK ? nb_clip_grad_norm(b->m.ps, norm ? 1e30 : 1.0) : NAN;
    if (norm) *norm = n;
    if (st == NB_OK && update) st = nb_optimizer_step(b->opt);
    if (st != NB_OK) {
        fprintf(stderr, "bench_gpt: %s\n", nb_tape_status(b->tp) ? nb_tape_error(b->tp) : nb_last_error());
        return NAN;
    }
    return nb_item(loss);
}

static int time_steps(const config *c, bool composed, double dropout, int threads, int reps) {
    bench b;
    if (bench_init(&b, c, composed, dropout)) return 1;
    for (int i = 0; i < 2; i++)
        if (isnan(step(&b, c, true, NULL))) return 1;
    double t0 = now();
    if (isnan(step(&b, c, true, NULL))) return 1;
    long per_run = (long)(0.5 / (now() - t0)) + 1;
    double *wall = malloc((size_t)reps * sizeof *wall), *cpu = malloc((size_t)reps * sizeof *cpu);
    if (!wall || !cpu) return 1;
    uint64_t allocs = nb_alloc_count();
    for (int r = 0; r < reps; r++) {
        double w = now(), u = cpu_now();
        for (long i = 0; i < per_run; i++)
            if (isnan(step(&b, c, true, NULL))) return 1;
        wall[r] = 1e3 * (now() - w) / (double)per_run;
        cpu[r] = 1e3 * (cpu_now() - u) / (double)per_run;
    }
    allocs = nb_alloc_count() - allocs;
    qsort(wall, (size_t)reps, sizeof *wall, cmp_double);
    qsort(cpu, (size_t)reps, sizeof *cpu, cmp_double);
    printf("%s,%s,%d,%.3f,%.3f,%.1f\n", c->name, composed ? "composed" : "fused", threads, wall[reps / 2], cpu[reps / 2],
           (double)allocs / (double)(reps * per_run));
    free(wall);
    free(cpu);
    bench_free(&b);
    return 0;
}

static int write_case(const config *c, const char *dir) {
    bench b[2];
    char path[4096];
    double loss[2], norm[2];
    for (int k = 0; k < 2; k++) {
        if (bench_init(&b[k], c, k == 1, 0)) return 1;
        loss[k] = step(&b[k], c, false, &norm[k]);
    }
    nb_params *batch = nb_params_new(), *grads = nb_params_new();
    for (size_t i = 0; i < nb_params_count(b[0].m.ps); i++) { /* the fused side's gradients, for torch_gpt.py */
        nb_tensor *p = nb_params_at(b[0].m.ps, i);
        nb_params_add(grads, nb_tensor_name(p), nb_from_f32(NULL, nb_tensor_ndim(p), nb_tensor_shape(p), nb_grad_data(p)));
    }
    nb_tensor *ids = nb_params_add(batch, "ids", nb_zeros(NULL, NB_F64, NB_SHAPE(c->B, c->T)));
    nb_params_add(batch, "targets", nb_copy(NULL, b[0].targets));
    for (size_t i = 0; i < c->B * c->T; i++) nb_set(ids, i, (double)b[0].ids[i]);
    int status = 0;
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, c->name);
    if (nb_params_save_safetensors(b[0].m.ps, path) != NB_OK) status = 1;
    snprintf(path, sizeof path, "%s/%s_batch.safetensors", dir, c->name);
    if (!status && nb_params_save_safetensors(batch, path) != NB_OK) status = 1;
    snprintf(path, sizeof path, "%s/%s_grads.safetensors", dir, c->name);
    if (!status && nb_params_save_safetensors(grads, path) != NB_OK) status = 1;
    if (status) fprintf(stderr, "bench_gpt: %s\n", nb_last_error());
    else printf("first,%s,%.9g,%.9g,%.9g,%.9g\n", c->name, loss[0], norm[0], loss[1], norm[1]);
    nb_params_free(batch);
    nb_params_free(grads);
    bench_free(&b[0]);
    bench_free(&b[1]);
    return status || isnan(loss[0]) || isnan(loss[1]);
}

/* Resident and peak resident memory in kB (VmRSS, VmHWM); clear_refs 5
 * resets the peak to the current size. */
static double vm_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = NAN;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) kb = atof(line + n + 1);
    if (f) fclose(f);
    return kb;
}

static void reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static int attention_pass(nb_tape *tp, nb_tensor *const *in, bool composed) {
    nb_tape_reset(tp);
    nb_zero_grads(in, 3);
    nb_tensor *out;
    if (composed) out = attention_composed(tp, in[0], in[1], in[2], true, 0, NULL);
    else out = nb_scaled_dot_product_attention(tp, in[0], in[1], in[2], &(nb_attention_opts){.causal = true});
    if (nb_backward(nb_sum(tp, out)) != NB_OK) {
        fprintf(stderr, "bench_gpt: %s\n", nb_last_error());
        return 1;
    }
    return 0;
}

static int time_attention(size_t L, bool composed, int threads, int reps) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_tensor *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(4, 4, L, 64), 0, 1);
        nb_requires_grad(in[i], true);
    }
    nb_tape *tp = nb_tape_new();
    reset_peak();
    double before = vm_kb("VmRSS:");
    if (attention_pass(tp, in, composed)) return 1;
    double peak = (vm_kb("VmHWM:") - before) / 1024;
    double t0 = now();
    if (attention_pass(tp, in, composed)) return 1;
    long per_run = (long)(0.3 / (now() - t0)) + 1;
    double wall[64] = {0}, cpu[64] = {0};
    reps = reps > 64 ? 64 : reps;
    for (int r = 0; r < reps; r++) {
        double w = now(), u = cpu_now();
        for (long i = 0; i < per_run; i++)
            if (attention_pass(tp, in, composed)) return 1;
        wall[r] = 1e3 * (now() - w) / (double)per_run;
        cpu[r] = 1e3 * (cpu_now() - u) / (double)per_run;
    }
    qsort(wall, (size_t)reps, sizeof *wall, cmp_double);
    qsort(cpu, (size_t)reps, sizeof *cpu, cmp_double);
    printf("attention,%zu,%s,%d,%.3f,%.3f,%.1f\n", L, composed ? "composed" : "fused", threads, wall[reps / 2],
           cpu[reps / 2], peak);
    nb_tape_free(tp);
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    return 0;
}

int main(int argc, char **argv) {
    const char *name = "lesson", *dir = NULL, *side = "fused";
    int threads = 1, reps = 5;
    long attention = 0;
    double dropout = 0.1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_gpt: %s needs a value (see the comment at the top of bench/bench_gpt.c)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--config")) name = v;
        else if (!strcmp(a, "--write")) dir = v;
        else if (!strcmp(a, "--side")) side = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--reps")) reps = atoi(v);
        else if (!strcmp(a, "--dropout")) dropout = atof(v);
        else if (!strcmp(a, "--attention")) attention = atol(v);
        else {
            fprintf(stderr, "bench_gpt: unknown option %s\n", a);
            return 2;
        }
    }
    bool composed = !strcmp(side, "composed");
    if ((!composed && strcmp(side, "fused")) || reps < 1 || threads < 1) {
        fprintf(stderr, "bench_gpt: --side fused or composed, --reps and --threads at least 1\n");
        return 2;
    }
    if (nb_set_threads(threads) != NB_OK) {
        fprintf(stderr, "bench_gpt: %s\n", nb_last_error());
        return 1;
    }
    if (attention > 0) return time_attention((size_t)attention, composed, threads, reps);
    const config *c = NULL;
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++)
        if (!strcmp(configs[i].name, name)) c = &configs[i];
    if (!c) {
        fprintf(stderr, "bench_gpt: unknown configuration %s (small, lesson or gpt2)\n", name);
        return 2;
    }
    return dir ? write_case(c, dir) : time_steps(c, composed, dropout, threads, reps);
}
