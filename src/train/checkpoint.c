/*
 * Checkpoints: the parameters, the optimizer's state and a generator in one
 * file, so that training resumes exactly, bit for bit, where it stopped.
 *
 * The file is a parameter file of either format (nabla's .nbp, version 2,
 * or safetensors), holding besides the parameters:
 *  - the optimizer's buffers, one tensor per parameter and buffer, named
 *    "__nabla__/BUFFER/PARAMETER" with PyTorch's names for the buffers
 *    (momentum_buffer; exp_avg and exp_avg_sq; square_avg), in the
 *    parameter's dtype and shape;
 *  - its scalars as metadata strings (safetensors' __metadata__), numbers
 *    written with 17 significant digits, which read back to the same double:
 *      nabla.checkpoint   "1", the version of this layout
 *      nabla.optimizer    the kind ("adam"), nabla.params the parameter count
 *      nabla.step         the steps taken (Adam's bias corrections, the
 *                         schedule's position)
 *      nabla.groups       the number of parameter groups, and for each group G:
 *      nabla.group.G.lr, .base_lr, .momentum, .beta1, .beta2, .eps,
 *      .weight_decay      its options (the rate of the last step, and the
 *                         rate a schedule scales)
 *      nabla.group/NAME   the group of parameter NAME
 *      nabla.started/NAME "0" or "1", momentum only: whether the velocity
 *                         of NAME has been set by a first step
 *      nabla.schedule     the attached schedule's fields, if any
 *      nabla.rng          a generator's state, when one is saved
 * PyTorch reads such a safetensors file as any other; the state's names
 * start with "__nabla__/", which no parameter may (nb_params_add).
 *
 * Loading checks everything first (the file's rules, the optimizer's kind,
 * every buffer's presence, dtype and shape, every number) and changes
 * nothing unless all of it holds.
 */
#include "toolkit.h"
#include "param_files.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The buffers' names, by kind: state1, then state2. */
static const char *buffer_name(nb_optimizer_kind kind, int which) {
    switch (kind) {
    case NB_OPT_MOMENTUM: return which == 0 ? "momentum_buffer" : NULL;
    case NB_OPT_ADAM:
    case NB_OPT_ADAMW: return which == 0 ? "exp_avg" : "exp_avg_sq";
    case NB_OPT_RMSPROP: return which == 0 ? "square_avg" : NULL;
    default: return NULL;
    }
}

/* The optimizer's buffers as named tensors (*n of them); NULL and the
 * error set when memory runs out. */
static nb_named *state_tensors(const nb_optimizer *opt, const char *who, size_t *n) {
    *n = 0;
    nb_named *x = nb_malloc((2 * opt->n + 1) * sizeof *x);
    if (!x) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
        return NULL;
    }
    for (int which = 0; which < 2; which++)
        for (size_t i = 0; i < opt->n; i++) {
            nb_tensor *t = which == 0 ? opt->state1[i] : opt->state2[i];
            if (!t) continue;
            snprintf(x[*n].name, sizeof x[*n].name, NB_RESERVED_PREFIX "%s/%s", buffer_name(opt->kind, which),
                     nb_tensor_name(nb_params_at(opt->ps, i)));
            x[(*n)++].t = t;
        }
    return x;
}

static void put(nb_meta *m, const char *key, const char *value) {
    nb_meta_put(m, key, strlen(key), value, strlen(value));
}

static void put_number(nb_meta *m, const char *key, double v) {
    char text[32];
    snprintf(text, sizeof text, "%.17g", v);
    put(m, key, text);
}

static void put_schedule(nb_meta *m, const nb_schedule *s) {
    char text[256];
    snprintf(text, sizeof text, "%d %.17g %ld %.17g %ld %.17g %ld %.17g", (int)s->kind, s->base_lr, s->step_size,
             s->gamma, s->total, s->min_lr, s->warmup, s->warmup_start);
    put(m, "nabla.schedule", text);
}

static void put_rng(nb_meta *m, const nb_rng *rng) {
    char text[128];
    snprintf(text, sizeof text, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %d %.17g", rng->s[0],
             rng->s[1], rng->s[2], rng->s[3], rng->has_spare ? 1 : 0, rng->spare);
    put(m, "nabla.rng", text);
}

/* A group's option keys, in the order of group_fields. */
static const char *const option_names[7] = {"lr", "base_lr", "momentum", "beta1", "beta2", "eps", "weight_decay"};

static void group_fields(nb_opt_group *g, double **v) {
    double *fields[7] = {&g->o.lr, &g->base_lr, &g->o.momentum, &g->o.beta1, &g->o.beta2, &g->o.eps, &g->o.weight_decay};
    memcpy(v, fields, sizeof fields);
}

static bool ends_with(const char *path, const char *suffix) {
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && !strcmp(path + n - k, suffix);
}

/* The calls' common checks. */
static nb_status check_args(const char *who, const nb_params *ps, const nb_optimizer *opt, const char *path) {
    if (!ps || !path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: %s is NULL", who, ps ? "the path" : "the parameter set");
        return NB_ERR_NULL;
    }
    if (opt && opt->ps != ps) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: the optimizer was made for another parameter set", who);
        return NB_ERR_ARG;
    }
    if (opt && opt->n != nb_params_count(ps)) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                     "%s: the parameter set changed from %zu to %zu parameters since the optimizer was made", who,
                     opt->n, nb_params_count(ps));
        return NB_ERR_STATE;
    }
    return NB_OK;
}

nb_status nb_checkpoint_save(const nb_params *ps, const nb_optimizer *opt, const nb_rng *rng, const char *path) {
    static const char who[] = "nb_checkpoint_save";
    nb_status st = check_args(who, ps, opt, path);
    if (st != NB_OK) return st;
    nb_meta meta = {0};
    size_t n_extra = 0;
    nb_named *extra = NULL;
    if (opt) {
        if (!(extra = state_tensors(opt, who, &n_extra))) return NB_ERR_NOMEM;
        put(&meta, "nabla.checkpoint", "1");
        put(&meta, "nabla.optimizer", nb_optimizer_name(opt->kind));
        put_number(&meta, "nabla.params", (double)opt->n);
        put_number(&meta, "nabla.step", (double)opt->t);
        put_number(&meta, "nabla.groups", (double)opt->n_groups);
        for (size_t g = 0; g < opt->n_groups; g++) {
            double *v[7];
            group_fields(&opt->groups[g], v);
            for (int f = 0; f < 7; f++) {
                char key[64];
                snprintf(key, sizeof key, "nabla.group.%zu.%s", g, option_names[f]);
                put_number(&meta, key, *v[f]);
            }
        }
        for (size_t i = 0; i < opt->n; i++) {
            char key[NB_NAME_MAX + 16];
            snprintf(key, sizeof key, "nabla.group/%s", nb_tensor_name(nb_params_at(ps, i)));
            put_number(&meta, key, (double)opt->group_of[i]);
            snprintf(key, sizeof key, "nabla.started/%s", nb_tensor_name(nb_params_at(ps, i)));
            if (opt->kind == NB_OPT_MOMENTUM) put(&meta, key, opt->started[i] ? "1" : "0");
        }
        if (opt->scheduled) put_schedule(&meta, &opt->schedule);
    }
    if (rng) put_rng(&meta, rng);
    if (meta.failed) {
        st = NB_ERR_NOMEM;
        nb_set_error(NULL, st, NULL, 0, "%s: out of memory writing %s", who, path);
    } else {
        nb_file_extras x = {.extra = extra, .n_extra = n_extra, .meta = &meta};
        st = ends_with(path, ".safetensors") ? nb_safetensors_save(who, ps, &x, path) : nb_nbp_save(who, ps, &x, path);
    }
    nb_meta_free(&meta);
    nb_free(extra);
    return st;
}

/* ---------------------------------------------------------------- loading */

/* What the metadata says, checked, until every tensor is checked too. */
typedef struct {
    const char *who, *path;
    nb_params *ps;
    nb_optimizer *opt;
    nb_rng *rng;
    nb_opt_group *groups;      /* as many as the optimizer's */
    long t;
    bool scheduled;
    nb_schedule schedule;
    nb_rng rng_state;
} loading;

static nb_status bad(const loading *c, const char *key, const char *value, const char *expected) {
    nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: metadata '%s' is %s%.40s%s; expected %s", c->who, c->path, key,
                 value ? "'" : "", value ? value : "missing", value ? "'" : "", expected);
    return NB_ERR_VALUE;
}

/* A number, the whole string; false if missing or not one. */
static bool number(const nb_meta *m, const char *key, double *v) {
    const char *s = nb_meta_get(m, key);
    char *end;
    if (!s || !*s) return false;
    errno = 0;
    *v = strtod(s, &end);
    return *end == '\0' && errno != ERANGE;
}

/* The schedule's 8 fields as put_schedule writes them, separated by one
 * space: integers in range (strtol, never an overflowing scanf) and
 * numbers; false if anything else. */
static bool schedule_fields(const char *s, long *kind, nb_schedule *sc) {
    long *integers[4] = {kind, &sc->step_size, &sc->total, &sc->warmup};
    double *numbers[4] = {&sc->base_lr, &sc->gamma, &sc->min_lr, &sc->warmup_start};
    for (int f = 0; f < 8; f++) {
        char *end;
        if (f > 0 && *s++ != ' ') return false;
        if (!*s || *s == ' ') return false;
        errno = 0;
        if (f % 2 == 0) *integers[f / 2] = strtol(s, &end, 10);
        else *numbers[f / 2] = strtod(s, &end);
        if (end == s || errno == ERANGE) return false;
        s = end;
    }
    return *s == '\0';
}

/* A generator's four state words as put_rng writes them: 16 hex digits
 * each, then a space; false if not, or if all four are zero (xoshiro's one
 * state that never leaves zero, which no seed gives). */
static bool generator_words(const char *s, uint64_t w[4]) {
    for (int k = 0; k < 4; k++, s += 17) {
        w[k] = 0;
        for (int i = 0; i < 16; i++) {
            char ch = s[i];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
            if (d < 0) return false;
            w[k] = w[k] << 4 | (uint64_t)d;
        }
        if (s[16] != ' ') return false;
    }
    return (w[0] | w[1] | w[2] | w[3]) != 0;
}

static nb_status check_metadata(void *user, const nb_meta *m) {
    loading *c = user;
    nb_optimizer *opt = c->opt;
    if (opt) {
        const char *version = nb_meta_get(m, "nabla.checkpoint"), *kind = nb_meta_get(m, "nabla.optimizer");
        if (!version) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s holds no optimizer state (it has no metadata 'nabla.checkpoint': a parameter file "
                         "from nb_params_save? nb_params_load reads those)",
                         c->who, c->path);
            return NB_ERR_VALUE;
        }
        if (strcmp(version, "1") != 0) return bad(c, "nabla.checkpoint", version, "1 (this nabla's checkpoints)");
        nb_optimizer_kind k;
        if (!kind || !nb_optimizer_parse(kind, &k)) return bad(c, "nabla.optimizer", kind, "an optimizer's name");
        if (k != opt->kind) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s holds the state of a '%s' optimizer; this optimizer is '%s'", c->who, c->path, kind,
                         nb_optimizer_name(opt->kind));
            return NB_ERR_VALUE;
        }
        double params, step, groups;
        if (!number(m, "nabla.params", &params) || params != (double)opt->n) {
            char expected[64];
            snprintf(expected, sizeof expected, "%zu, the model's parameter count", opt->n);
            return bad(c, "nabla.params", nb_meta_get(m, "nabla.params"), expected);
        }
        if (!number(m, "nabla.step", &step) || !(step >= 0 && step < 9e15 && step == floor(step)))
            return bad(c, "nabla.step", nb_meta_get(m, "nabla.step"), "a whole number of steps >= 0");
        c->t = (long)step;
        if (!number(m, "nabla.groups", &groups) || groups != (double)opt->n_groups) {
            char expected[96];
            snprintf(expected, sizeof expected, "%zu, this optimizer's parameter groups (make the same groups first)",
                     opt->n_groups);
            return bad(c, "nabla.groups", nb_meta_get(m, "nabla.groups"), expected);
        }
        for (size_t g = 0; g < opt->n_groups; g++) {
            double *v[7];
            c->groups[g] = opt->groups[g];
            group_fields(&c->groups[g], v);
            for (int f = 0; f < 7; f++) {
                char key[64];
                snprintf(key, sizeof key, "nabla.group.%zu.%s", g, option_names[f]);
                if (!number(m, key, v[f])) return bad(c, key, nb_meta_get(m, key), "a number");
            }
            nb_optimizer_opts base = c->groups[g].o;
            base.lr = c->groups[g].base_lr;
            if (nb_optimizer_opts_check(c->who, &c->groups[g].o) != NB_OK ||
                nb_optimizer_opts_check(c->who, &base) != NB_OK)
                return NB_ERR_VALUE;
        }
        for (size_t i = 0; i < opt->n; i++) {
            char key[NB_NAME_MAX + 16], here[96];
            const char *name = nb_tensor_name(nb_params_at(c->ps, i));
            double g;
            snprintf(key, sizeof key, "nabla.group/%s", name);
            snprintf(here, sizeof here, "%zu, the group '%s' is in here", opt->group_of[i], name);
            if (!number(m, key, &g) || g != (double)opt->group_of[i]) return bad(c, key, nb_meta_get(m, key), here);
            snprintf(key, sizeof key, "nabla.started/%s", name);
            const char *v = nb_meta_get(m, key);
            if (k == NB_OPT_MOMENTUM && (!v || (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)))
                return bad(c, key, v, "\"0\" or \"1\"");
        }
        const char *s = nb_meta_get(m, "nabla.schedule");
        c->scheduled = s != NULL;
        if (s) {
            nb_schedule *sc = &c->schedule;
            long kind_code = -1;
            if (!schedule_fields(s, &kind_code, sc)) return bad(c, "nabla.schedule", s, "a schedule's 8 fields");
            if (kind_code < 0 || kind_code > INT_MAX) return bad(c, "nabla.schedule", s, "a valid schedule");
            sc->kind = (nb_schedule_kind)kind_code;
            if (nb_schedule_check(sc) != NB_OK) return bad(c, "nabla.schedule", s, "a valid schedule");
        }
    }
    if (c->rng) {
        const char *s = nb_meta_get(m, "nabla.rng");
        nb_rng *r = &c->rng_state;
        int spare = 0, used = 0;
        const size_t words = (size_t)4 * 17; /* four words of 16 hex digits, each with a space */
        if (!s || !generator_words(s, r->s) || sscanf(s + words, "%d %lg%n", &spare, &r->spare, &used) != 2 ||
            s[words + (size_t)used] != '\0' || (spare != 0 && spare != 1) || !isfinite(r->spare))
            return bad(c, "nabla.rng", s, "a generator's state (saved with one: nb_checkpoint_save's rng)");
        r->has_spare = spare == 1;
    }
    return NB_OK;
}

static void commit(void *user, const nb_meta *m) {
    loading *c = user;
    nb_optimizer *opt = c->opt;
    if (opt) {
        memcpy(opt->groups, c->groups, opt->n_groups * sizeof *opt->groups);
        opt->t = c->t;
        opt->scheduled = c->scheduled;
        if (c->scheduled) opt->schedule = c->schedule;
        for (size_t i = 0; i < opt->n; i++) {
            char key[NB_NAME_MAX + 16];
            snprintf(key, sizeof key, "nabla.started/%s", nb_tensor_name(nb_params_at(c->ps, i)));
            const char *v = nb_meta_get(m, key);
            opt->started[i] = opt->kind == NB_OPT_MOMENTUM ? v && v[0] == '1' : c->t > 0;
        }
    }
    if (c->rng) *c->rng = c->rng_state;
}

nb_status nb_checkpoint_load(nb_params *ps, nb_optimizer *opt, nb_rng *rng, const char *path) {
    static const char who[] = "nb_checkpoint_load";
    nb_status st = check_args(who, ps, opt, path);
    if (st != NB_OK) return st;
    size_t n_extra = 0;
    nb_named *extra = NULL;
    if (opt) {
        if (!(extra = state_tensors(opt, who, &n_extra))) return NB_ERR_NOMEM;
        nb_named_sort(extra, n_extra);
    }
    loading c = {.who = who, .path = path, .ps = ps, .opt = opt, .rng = rng};
    if (opt && !(c.groups = nb_malloc(opt->n_groups * sizeof *c.groups))) {
        nb_free(extra);
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
        return NB_ERR_NOMEM;
    }
    nb_file_extras x = {.extra = extra, .n_extra = n_extra, .skip_reserved = !opt, .check = check_metadata,
                        .commit = commit, .user = &c};
    st = nb_load_any(ps, &x, who, path);
    nb_free(c.groups);
    nb_free(extra);
    return st;
}
