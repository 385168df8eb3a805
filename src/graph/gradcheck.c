/*
 * Gradient checking: the analytic gradient from backward against central
 * differences,
 *     df/dx_j  ~  (f(x + eps e_j) - f(x - eps e_j)) / (2 eps),
 * whose error is O(eps^2) for smooth f.  Everything runs in float64 (float32
 * noise alone fails correct gradients at these tolerances).  An element
 * passes when |analytic - numeric| <= atol + rtol |numeric|, PyTorch's rule
 * and default tolerances.
 *
 * Second order (nb_gradgradcheck): the same check of
 *     F(x) = sum_i g_i(x) · v_i,   g = df/dx (an ordinary backward pass),
 * with fixed random directions v.  Its analytic gradient is the Hessian
 * times v, from the gradient recorded with create_graph and differentiated
 * again; its numeric one, central differences of F.  A backward_graph that
 * builds a wrong first derivative, or one whose ops differentiate wrongly,
 * fails it.
 */
#include "../internal.h"

#include <math.h>
#include <string.h>

void nb_gradcheck_default_opts(nb_gradcheck_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->eps = 1e-6;
    opts->atol = 1e-5;
    opts->rtol = 1e-3;
}

typedef struct {
    nb_gradcheck_fn fn;
    void *user;
    nb_tape *tp;
    nb_tensor **x; /* float64 copies of the inputs */
    int n;
    const char *name; /* "nb_gradcheck" or "nb_gradgradcheck", for messages */
    /* Second order: the value checked is F(x) = sum_i g_i(x) · v_i, g the
     * first-order gradient, with fixed random directions v_i. */
    bool second_order;
    double **v;
} problem;

/* The user's function on a fresh tape, which it may reset but not free
 * (refused: nb_gradcheck goes on using it). */
static nb_tensor *run_fn(problem *pb) {
    nb_tape_reset(pb->tp);
    nb_user_code outer =
        nb_user_enter(pb->tp, (nb_user_code){.what = "function", .who = pb->name, .may_reset = true});
    nb_tensor *y = pb->fn(pb->tp, pb->x, pb->n, pb->user);
    nb_user_leave(pb->tp, outer);
    return y;
}

/* Runs the function on a fresh tape; returns its value or NaN (with the
 * message in *result). */
static double evaluate(problem *pb, nb_tensor **out, nb_gradcheck_result *r) {
    nb_tensor *y = run_fn(pb);
    *out = y;
    if (nb_tape_status(pb->tp) != NB_OK) {
        r->status = nb_tape_status(pb->tp);
        snprintf(r->message, sizeof r->message, "%s: the function failed: %s", pb->name, nb_tape_error(pb->tp));
        return NAN;
    }
    if (!y) {
        r->status = NB_ERR_NULL;
        snprintf(r->message, sizeof r->message, "%s: the function returned NULL instead of a tensor", pb->name);
        return NAN;
    }
    if (y->status == NB_OK && !nb_alive(y)) {
        r->status = NB_ERR_STATE;
        snprintf(r->message, sizeof r->message,
                 "%s: the function returned a tensor from before nb_tape_reset (or of a freed tape), which ended it",
                 pb->name);
        return NAN;
    }
    if (y->status != NB_OK) {
        r->status = y->status;
        snprintf(r->message, sizeof r->message,
                 "%s: the function returned an errored tensor (%s) without an error on its tape", pb->name,
                 nb_status_string(y->status));
        return NAN;
    }
    if (y->size != 1 || y->dtype != NB_F64) {
        char s[128];
        r->status = y->size != 1 ? NB_ERR_SHAPE : NB_ERR_DTYPE;
        snprintf(r->message, sizeof r->message,
                 "%s: the function must return a 1-element float64 tensor, got %s %s "
                 "(%s)", pb->name,
                 nb_format_shape(y->ndim, y->shape, s, sizeof s),
                 y->dtype == NB_F32 ? "float32" : "float64",
                 y->size != 1 ? "reduce it with nb_sum or nb_mean"
                              : "nb_cast data tensors to the inputs' dtype, float64");
        return NAN;
    }
    if (!pb->second_order) return NB_D(y)[0];
    /* F(x) = sum_i g_i · v_i, with g from one ordinary backward pass */
    nb_tensor **g = nb_tape_alloc(pb->tp, (size_t)pb->n * sizeof *g);
    if (!g || nb_grad_(y, NULL, pb->x, pb->n, g, false, NULL, 0) != NB_OK) {
        r->status = g ? nb_last_status() : NB_ERR_NOMEM;
        snprintf(r->message, sizeof r->message, "%s: the first-order gradient failed: %s", pb->name, nb_last_error());
        return NAN;
    }
    double F = 0;
    for (int i = 0; i < pb->n; i++)
        for (size_t j = 0; pb->x[i]->requires_grad && j < pb->x[i]->size; j++) F += NB_D(g[i])[j] * pb->v[i][j];
    return F;
}

/* The analytic derivatives: of f (one backward pass), or of F (the gradient
 * of sum_i g_i · v_i, g recorded with create_graph: a Hessian-vector
 * product). */
static nb_status analytic_derivatives(problem *pb, double **analytic, nb_gradcheck_result *r) {
    nb_tensor *y;
    if (isnan(evaluate(pb, &y, r)) && !pb->second_order) {
        if (r->status == NB_OK) {
            r->status = NB_ERR_VALUE;
            snprintf(r->message, sizeof r->message, "%s: the function's value is NaN", pb->name);
        }
        return r->status;
    }
    if (r->status != NB_OK) return r->status;
    y = run_fn(pb); /* evaluate() checked it */
    nb_tensor **d = nb_tape_alloc(pb->tp, (size_t)pb->n * sizeof *d);
    nb_status st = d ? NB_OK : NB_ERR_NOMEM;
    if (st == NB_OK && pb->second_order) {
        nb_tensor **g = nb_tape_alloc(pb->tp, (size_t)pb->n * sizeof *g), *F = NULL;
        st = g ? nb_grad_(y, NULL, pb->x, pb->n, g, true, NULL, 0) : NB_ERR_NOMEM;
        for (int i = 0; st == NB_OK && i < pb->n; i++) {
            if (!pb->x[i]->requires_grad) continue;
            nb_tensor *vi = nb_from_f64(pb->tp, pb->x[i]->ndim, pb->x[i]->shape, pb->v[i]);
            nb_tensor *term = nb_sum(pb->tp, nb_mul(pb->tp, g[i], vi));
            F = F ? nb_add(pb->tp, F, term) : term;
        }
        if (st == NB_OK && nb_tape_status(pb->tp) != NB_OK) st = nb_tape_status(pb->tp);
        if (st == NB_OK && F && F->requires_grad) st = nb_grad_(F, NULL, pb->x, pb->n, d, false, NULL, 0);
        for (int i = 0; st == NB_OK && (!F || !F->requires_grad) && i < pb->n; i++) /* g constant: H = 0 */
            d[i] = nb_zeros(pb->tp, NB_F64, pb->x[i]->ndim, pb->x[i]->shape);
    } else if (st == NB_OK) {
        st = nb_grad_(y, NULL, pb->x, pb->n, d, false, NULL, 0);
    }
    if (st != NB_OK) {
        r->status = st;
        snprintf(r->message, sizeof r->message, "%s: %s failed: %s", pb->name,
                 pb->second_order ? "differentiating the gradient" : "backward", nb_last_error());
        return st;
    }
    for (int i = 0; i < pb->n; i++)
        for (size_t j = 0; j < pb->x[i]->size; j++) analytic[i][j] = NB_D(d[i])[j];
    return NB_OK;
}

/* Writes "(i, j, k)" for a flat index of t. */
static void index_string(const nb_tensor *t, size_t flat, char *buf, size_t n) {
    size_t idx[NB_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = flat % t->shape[d];
        flat /= t->shape[d];
    }
    nb_format_shape(t->ndim, idx, buf, n);
}

static void report_header(FILE *f) {
    fprintf(f, "%-5s %-14s %14s %14s %14s %14s %10s %10s %s\n", "input", "element", "f(x+eps)",
            "f(x-eps)", "numeric", "analytic", "abs err", "rel err", "");
}

static nb_gradcheck_result check(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user,
                                 const nb_gradcheck_opts *opts, bool second_order) {
    const char *name = second_order ? "nb_gradgradcheck" : "nb_gradcheck";
    nb_gradcheck_result r;
    memset(&r, 0, sizeof r);
    r.worst_input = -1;
    nb_gradcheck_opts o;
    if (opts)
        o = *opts;
    else
        nb_gradcheck_default_opts(&o);
    if (!fn || !inputs || n <= 0) {
        r.status = NB_ERR_ARG;
        snprintf(r.message, sizeof r.message, "%s: needs a function and at least one input (got %d)", name, n);
        return r;
    }
    if (!(o.eps > 0) || !(o.atol >= 0) || !(o.rtol >= 0)) {
        r.status = NB_ERR_ARG;
        snprintf(r.message, sizeof r.message, "%s: eps %g must be > 0, atol %g and rtol %g >= 0", name, o.eps,
                 o.atol, o.rtol);
        return r;
    }
    bool any_marked = false;
    for (int i = 0; i < n; i++) {
        if (nb_tensor_status(inputs[i]) != NB_OK) {
            r.status = nb_tensor_status(inputs[i]);
            snprintf(r.message, sizeof r.message, "%s: input %d is %s", name, i,
                     !inputs[i] ? "NULL" : inputs[i]->status != NB_OK ? "an errored tensor"
                                       : "a tensor that dates from before nb_tape_reset, which ended it");
            return r;
        }
        any_marked |= inputs[i]->requires_grad;
    }

    problem pb = {fn, user, nb_tape_new(), NULL, n, name, second_order, NULL};
    double **analytic = NULL;
    pb.x = nb_malloc((size_t)n * sizeof *pb.x);
    analytic = nb_malloc((size_t)n * sizeof *analytic);
    pb.v = second_order ? nb_malloc((size_t)n * sizeof *pb.v) : NULL;
    for (int i = 0; pb.x && analytic && i < n; i++) pb.x[i] = NULL, analytic[i] = NULL;
    for (int i = 0; pb.v && i < n; i++) pb.v[i] = NULL;
    if (!pb.tp || !pb.x || !analytic || (second_order && !pb.v)) goto out_of_memory;
    nb_rng directions;
    nb_rng_seed(&directions, 2024); /* the same v on every run */
    for (int i = 0; i < n; i++) {
        const nb_tensor *src = inputs[i];
        pb.x[i] = nb_tensor_alloc(NULL, NB_F64, src->ndim, src->shape, name, NULL, 0);
        if (pb.x[i]->status != NB_OK) {
            pb.x[i] = NULL;
            goto out_of_memory;
        }
        nb_to_f64(src, NB_D(pb.x[i]));
        nb_tensor_set_name(pb.x[i], src->name);
        /* With no input marked, check them all. */
        pb.x[i]->requires_grad = any_marked ? src->requires_grad : true;
        analytic[i] = nb_malloc(src->size * sizeof(double));
        if (!analytic[i]) goto out_of_memory;
        if (second_order) {
            if (!(pb.v[i] = nb_malloc(src->size * sizeof(double)))) goto out_of_memory;
            for (size_t j = 0; j < src->size; j++) pb.v[i][j] = 2 * nb_rng_uniform(&directions) - 1;
        }
    }

    /* The analytic derivatives: the gradient (or, second order, the
     * gradient of g · v), from backward passes. */
    if (analytic_derivatives(&pb, analytic, &r) != NB_OK) goto done;

    /* The numeric gradient, one element at a time. */
    for (int i = 0; o.input_errors && i < n; i++) o.input_errors[i] = pb.x[i]->requires_grad ? 0 : NAN;
    if (o.report) report_header(o.report);
    double worst_ratio = -1;
    for (int i = 0; i < n; i++) {
        if (!pb.x[i]->requires_grad) continue;
        double *v = NB_D(pb.x[i]);
        for (size_t j = 0; j < pb.x[i]->size; j++) {
            double saved = v[j];
            v[j] = saved + o.eps;
            nb_tensor *y;
            double f_plus = evaluate(&pb, &y, &r);
            v[j] = saved - o.eps;
            double f_minus = evaluate(&pb, &y, &r);
            v[j] = saved;
            if (r.status != NB_OK) goto done;
            double numeric = (f_plus - f_minus) / (2 * o.eps), a = analytic[i][j];
            double abs_err = fabs(a - numeric);
            double tol = o.atol + o.rtol * fabs(numeric);
            double rel_err = abs_err / fmax(fabs(numeric), 1e-300);
            /* NaN anywhere is a failure: compare so that NaN fails. */
            bool ok = abs_err <= tol;
            double ratio = tol > 0 ? abs_err / tol : (abs_err > 0 ? INFINITY : 0);
            if (isnan(ratio)) ratio = INFINITY;
            r.checked++;
            if (!ok) r.failed++;
            if (o.input_errors) {
                double e = abs_err / fmax(fabs(numeric), o.atol > 0 ? o.atol : 1e-300);
                if (!(e <= o.input_errors[i])) o.input_errors[i] = isnan(e) ? INFINITY : e;
            }
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                r.worst_input = i;
                r.worst_element = j;
                r.worst_numeric = numeric;
                r.worst_analytic = a;
                r.worst_abs_err = abs_err;
                r.worst_rel_err = rel_err;
            }
            if (o.report && (!ok || o.report_all)) {
                char idx[96];
                index_string(pb.x[i], j, idx, sizeof idx);
                fprintf(o.report, "%-5d %-14s %14.8g %14.8g %14.8g %14.8g %10.3g %10.3g %s\n", i,
                        idx, f_plus, f_minus, numeric, a, abs_err, rel_err, ok ? "ok" : "FAIL");
            }
        }
    }
    r.passed = r.failed == 0 && r.checked > 0;
    if (r.checked == 0)
        snprintf(r.message, sizeof r.message, "%s: no element to check", name + 3);
    else {
        char idx[96];
        index_string(pb.x[r.worst_input], r.worst_element, idx, sizeof idx);
        snprintf(r.message, sizeof r.message,
                 "%s %s: %zu of %zu elements out of tolerance (atol %g, rtol %g); worst: "
                 "input %d%s%s%s element %s, numeric %.10g, analytic %.10g, abs err %.3g",
                 name + 3, r.passed ? "passed" : "FAILED", r.failed, r.checked, o.atol, o.rtol,
                 r.worst_input, pb.x[r.worst_input]->name[0] ? " (" : "",
                 pb.x[r.worst_input]->name, pb.x[r.worst_input]->name[0] ? ")" : "", idx,
                 r.worst_numeric, r.worst_analytic, r.worst_abs_err);
    }
    goto done;

out_of_memory:
    r.status = NB_ERR_NOMEM;
    snprintf(r.message, sizeof r.message, "%s: out of memory", name);
done:
    if (o.report && r.status != NB_OK) fprintf(o.report, "%s\n", r.message);
    for (int i = 0; pb.x && analytic && i < n; i++) {
        nb_tensor_free(pb.x[i]);
        nb_free(analytic[i]);
    }
    for (int i = 0; pb.v && i < n; i++) nb_free(pb.v[i]);
    nb_free(pb.x);
    nb_free(analytic);
    nb_free(pb.v);
    nb_tape_free(pb.tp);
    return r;
}

nb_gradcheck_result nb_gradcheck(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user,
                                 const nb_gradcheck_opts *opts) {
    return check(fn, inputs, n, user, opts, false);
}

nb_gradcheck_result nb_gradgradcheck(nb_gradcheck_fn fn, nb_tensor *const *inputs, int n, void *user,
                                     const nb_gradcheck_opts *opts) {
    return check(fn, inputs, n, user, opts, true);
}
