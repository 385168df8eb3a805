/*
 * Parameter groups, as torch.optim's param_groups: each parameter belongs
 * to one group, whose options (rate, weight decay, betas, momentum, eps)
 * its updates use.  Group 0 is made with the optimizer and holds every
 * parameter until a new group takes some; the usual split (no weight
 * decay on biases and normalisation weights) is nb_optimizer_no_decay_group.
 * A schedule scales each group's own rate, and a checkpoint keeps each
 * group's options and members.
 */
#include "toolkit.h"

#include <math.h>
#include <string.h>

/* Is g a group of opt?  Sets the error if not. */
static bool valid_group(const char *who, const nb_optimizer *opt, int g) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the optimizer is NULL", who);
        return false;
    }
    if (g < 0 || (size_t)g >= opt->n_groups) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: group %d does not exist (the optimizer has groups 0 to %zu)", who,
                     g, opt->n_groups - 1);
        return false;
    }
    return true;
}

/* The new group's index, its members flagged in `take` (n of them), or -1
 * with the error set (nothing changed). */
static int add_group(const char *who, nb_optimizer *opt, const bool *take, const nb_optimizer_opts *opts) {
    if (!opts) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: opts is NULL", who);
        return -1;
    }
    if (opts->kind != opt->kind) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "%s: the group's kind is '%s' but the optimizer is '%s' (a group changes the options, not the "
                     "kind)",
                     who, nb_optimizer_name(opts->kind), nb_optimizer_name(opt->kind));
        return -1;
    }
    if (nb_optimizer_opts_check(who, opts) != NB_OK) return -1;
    if (nb_params_count(opt->ps) != opt->n) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                     "%s: the parameter set changed from %zu to %zu parameters since the optimizer was made", who,
                     opt->n, nb_params_count(opt->ps));
        return -1;
    }
    nb_opt_group *grown = nb_realloc(opt->groups, (opt->n_groups + 1) * sizeof *grown);
    if (!grown) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
        return -1;
    }
    opt->groups = grown;
    int g = (int)opt->n_groups++;
    opt->groups[g] = (nb_opt_group){*opts, opts->lr};
    for (size_t i = 0; i < opt->n; i++)
        if (take[i]) opt->group_of[i] = (size_t)g;
    return g;
}

/* A flag per parameter, or NULL with the error set. */
static bool *flags(const char *who, const nb_optimizer *opt) {
    bool *take = nb_malloc((opt->n ? opt->n : 1) * sizeof *take);
    if (!take) nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
    else memset(take, 0, (opt->n ? opt->n : 1) * sizeof *take);
    return take;
}

int nb_optimizer_add_group(nb_optimizer *opt, const char *const *names, size_t n, const nb_optimizer_opts *opts) {
    static const char who[] = "nb_optimizer_add_group";
    if (!opt || (!names && n)) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: %s is NULL", who, opt ? "names" : "the optimizer");
        return -1;
    }
    bool *take = flags(who, opt);
    if (!take) return -1;
    int g = -1;
    for (size_t k = 0; k <= n; k++) {
        if (k == n) {
            g = add_group(who, opt, take, opts);
            break;
        }
        const nb_tensor *p = names[k] ? nb_params_get(opt->ps, names[k]) : NULL;
        size_t i = 0;
        while (p && i < opt->n && nb_params_at(opt->ps, i) != p) i++;
        if (!p || i == opt->n) {
            nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: name %zu, '%s', is not a parameter of the optimizer's set", who,
                         k, names[k] ? names[k] : "(NULL)");
            break;
        }
        if (take[i]) {
            nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: '%s' is named twice", who, names[k]);
            break;
        }
        take[i] = true;
    }
    nb_free(take);
    return g;
}

int nb_optimizer_add_group_if(nb_optimizer *opt, bool (*member)(const nb_tensor *p, void *user), void *user,
                              const nb_optimizer_opts *opts) {
    static const char who[] = "nb_optimizer_add_group_if";
    if (!opt || !member) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: %s is NULL", who, opt ? "the predicate" : "the optimizer");
        return -1;
    }
    bool *take = flags(who, opt);
    if (!take) return -1;
    for (size_t i = 0; i < opt->n && i < nb_params_count(opt->ps); i++) take[i] = member(nb_params_at(opt->ps, i), user);
    int g = add_group(who, opt, take, opts);
    nb_free(take);
    return g;
}

/* Biases and normalisation weights: the parameters of fewer than 2
 * dimensions. */
static bool fewer_than_2_dims(const nb_tensor *p, void *user) {
    (void)user;
    return nb_tensor_ndim(p) < 2;
}

int nb_optimizer_no_decay_group(nb_optimizer *opt) {
    if (!opt) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_optimizer_no_decay_group: the optimizer is NULL");
        return -1;
    }
    nb_optimizer_opts o = opt->groups[0].o;
    o.lr = opt->groups[0].base_lr;
    o.weight_decay = 0;
    int g = nb_optimizer_add_group_if(opt, fewer_than_2_dims, NULL, &o);
    if (g < 0) return -1;
    opt->groups[g].o.lr = opt->groups[0].o.lr; /* the current rate too, if a schedule changed it */
    return g;
}

size_t nb_optimizer_group_count(const nb_optimizer *opt) { return opt ? opt->n_groups : 0; }

int nb_optimizer_group_of(const nb_optimizer *opt, const char *name) {
    const nb_tensor *p = opt ? nb_params_get(opt->ps, name) : NULL;
    for (size_t i = 0; p && i < opt->n; i++)
        if (nb_params_at(opt->ps, i) == p) return (int)opt->group_of[i];
    return -1;
}

nb_status nb_optimizer_group_opts(const nb_optimizer *opt, int g, nb_optimizer_opts *out) {
    if (!valid_group("nb_optimizer_group_opts", opt, g)) return nb_last_status();
    if (!out) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_optimizer_group_opts: out is NULL");
        return NB_ERR_NULL;
    }
    *out = opt->groups[g].o;
    return NB_OK;
}

nb_status nb_optimizer_set_group_lr(nb_optimizer *opt, int g, double lr) {
    if (!valid_group("nb_optimizer_set_group_lr", opt, g)) return nb_last_status();
    if (!(lr >= 0)) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "nb_optimizer_set_group_lr: group %d's learning rate must be a number >= 0, not %g (it stays %g)",
                     g, lr, opt->groups[g].o.lr);
        return NB_ERR_ARG;
    }
    opt->groups[g].o.lr = opt->groups[g].base_lr = lr;
    return NB_OK;
}

double nb_optimizer_group_lr(const nb_optimizer *opt, int g) {
    return valid_group("nb_optimizer_group_lr", opt, g) ? opt->groups[g].o.lr : NAN;
}
