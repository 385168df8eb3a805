/*
 * The numbers of the pictures' labels (see picture.h): a tensor's values in
 * full or summarised, and the chain rule's products.  Every number is
 * true to what it names: -0 is 0; a summary's mean that is rounding noise
 * is 0; a masked tensor is summarised without its fill; whole-number data
 * of few values is counted, not averaged; a local derivative's summary is
 * of its own values; and each printed product holds on a calculator.
 */
#include "picture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How many lines nb_picture_values writes for t. */
size_t nb_picture_value_lines(const nb_picture *p, const nb_tensor *t) {
    if (t->size > p->o->max_values || t->ndim < 2) return 1;
    return t->size / t->shape[t->ndim - 1];
}

/* Is t a masked tensor, where(cond, a, fill) with a constant fill (one
 * value that takes no gradient)?  Then *fill is it. */
static bool masked_fill(const nb_picture *p, const nb_tensor *t, double *fill) {
    for (size_t i = 0; i < p->n_entries; i++) {
        const nb_entry *e = &p->tp->entries[i];
        if (e->out != t) continue;
        if (strcmp(e->op->name, "where") != 0 || e->n_in != 3) return false;
        const nb_tensor *b = nb_entry_input(e, 2);
        if (b->size != 1 || b->requires_grad || nb_entry_input(e, 1)->size != t->size) return false;
        *fill = nb_picture_value(b->dtype, b->data, 0);
        return true;
    }
    return false;
}

/* Data of a few whole numbers (class labels, a mask) has no meaningful
 * mean: "counts 0×111, 1×131", the values in increasing order.  False, with
 * nothing written, when t holds anything else or more than
 * MAX_COUNTED different values. */
#define MAX_COUNTED 12
static bool put_counts(const nb_tensor *t, nb_text *out) {
    double seen[MAX_COUNTED];
    size_t count[MAX_COUNTED], n = 0;
    for (size_t i = 0; i < t->size; i++) {
        double v = nb_picture_value(t->dtype, t->data, i);
        if (!isfinite(v) || v != floor(v)) return false;
        size_t k = 0;
        while (k < n && seen[k] < v) k++;
        if (k < n && seen[k] == v) {
            count[k]++;
            continue;
        }
        if (n == MAX_COUNTED) return false;
        memmove(seen + k + 1, seen + k, (n - k) * sizeof *seen); /* kept in order */
        memmove(count + k + 1, count + k, (n - k) * sizeof *count);
        seen[k] = v;
        count[k] = 1;
        n++;
    }
    nb_text_put(out, "counts ");
    for (size_t k = 0; k < n; k++) nb_text_printf(out, k ? ", %.6g×%zu" : "%.6g×%zu", seen[k], count[k]);
    return true;
}

/* A summary's numbers, -0 as 0.  A mean under 5e-5 of the values' scale,
 * max(|min|, |max|), is below half a unit of the fifth significant digit of
 * the largest value, finer than the 4 digits printed: rounding noise (the
 * mean of standardised data is 1.6e-10 where the values reach 3.7), shown
 * as 0. */
static void put_stats(nb_text *out, double min, double mean, double max) {
    double scale = fmax(fabs(min), fabs(max));
    if (fabs(mean) < 5e-5 * scale) mean = 0;
    nb_text_printf(out, "min %.4g, mean %.4g, max %.4g", min + 0.0, mean + 0.0, max + 0.0);
}

/* "[0.9, 0.1]" in full (a matrix a row a line, `prefix` before the first),
 * or "min a, mean b, max c" for large tensors. */
void nb_picture_values(const nb_picture *p, const nb_tensor *t, const void *values, const char *prefix, nb_text *out) {
    nb_text_put(out, prefix);
    double fill;
    if (t->size > p->o->max_values && values == t->data && masked_fill(p, t, &fill)) {
        /* A mask's fill (-1e9 where attention may not look) is no value of
         * the data: summarise the others, and say how many were left out. */
        double min = INFINITY, max = -INFINITY, sum = 0;
        size_t n = 0, masked = 0, nonfinite = 0;
        for (size_t i = 0; i < t->size; i++) {
            double v = nb_picture_value(t->dtype, values, i);
            if (v == fill) masked++;
            else if (!isfinite(v)) nonfinite++;
            else min = fmin(min, v), max = fmax(max, v), sum += v, n++;
        }
        if (n) put_stats(out, min, sum / (double)n, max);
        nb_text_printf(out, n ? " (the %zu masked to %.4g left out)" : "all %zu masked to %.4g", masked, fill);
        if (nonfinite) nb_text_printf(out, " (%zu not finite)", nonfinite);
        return;
    }
    if (t->size > p->o->max_values && values == t->data && !t->requires_grad && put_counts(t, out)) return;
    if (t->size > p->o->max_values) {
        nb_stats s = nb_compute_stats(t->dtype, t->size, values);
        put_stats(out, s.min, s.mean, s.max);
        if (s.nonfinite) nb_text_printf(out, " (%zu not finite)", s.nonfinite);
        return;
    }
    if (t->ndim == 0) { /* a scalar: its number alone, as the lessons write it */
        nb_text_printf(out, "%.4g", nb_picture_value(t->dtype, values, 0));
        return;
    }
    size_t row = t->ndim >= 2 ? t->shape[t->ndim - 1] : t->size;
    for (size_t i = 0; i < t->size; i++) {
        if (i % row == 0) nb_text_put(out, i ? "]\n[" : "[");
        nb_text_printf(out, i % row ? ", %.4g" : "%.4g", nb_picture_value(t->dtype, values, i));
    }
    nb_text_put(out, "]");
}

/* The summary of an element-wise op's local derivative ∂y/∂x, from what
 * backward recorded: contribution c = upstream g × local, so local = c/g
 * wherever g is a finite non-zero (elsewhere the contribution says nothing
 * of it, and those elements are left out, saying how many). */
void nb_picture_local_summary(const nb_tensor *x, const nb_tensor *y, const void *g, const void *c, nb_text *out) {
    double min = INFINITY, max = -INFINITY, sum = 0;
    size_t n = 0;
    for (size_t i = 0; i < x->size; i++) {
        double gi = nb_picture_value(y->dtype, g, i);
        double local = nb_picture_value(x->dtype, c, i) / gi + 0.0; /* 0/-g: 0, not -0 */
        if (gi == 0 || !isfinite(gi) || !isfinite(local)) continue;
        if (local < min) min = local;
        if (local > max) max = local;
        sum += local;
        n++;
    }
    if (!n) {
        nb_text_put(out, "= (not known: the upstream gradient is 0 or not finite everywhere)");
        return;
    }
    nb_text_put(out, "= ");
    put_stats(out, min, sum / (double)n, max);
    if (n < x->size) nb_text_printf(out, " (over the %zu of %zu where the upstream gradient is not 0)", n, x->size);
}

/* "upstream × local = contribution", printed so that a calculator agrees:
 * the contribution at 4 significant digits, as every gradient is printed,
 * and the factors with the fewest digits, 4 or more, at which their exact
 * product rounds to it (0.4842 × 0.1988 is 0.09626, not the 0.09625 of the
 * unrounded factors: 0.4842022 × 0.1987868 = 0.09625).  Should no number of
 * digits do (a product on a rounding tie), the product printed is that of
 * the printed factors. */
void nb_picture_product(nb_text *out, double a, double b, double c) {
    char fa[32], fb[32], fc[32], fp[32];
    a += 0.0, b += 0.0, c += 0.0; /* -0 as 0 (relu's 0/-1.5) */
    snprintf(fc, sizeof fc, "%.4g", c);
    for (int d = 4; d <= 17; d++) {
        snprintf(fa, sizeof fa, "%.*g", d, a);
        snprintf(fb, sizeof fb, "%.*g", d, b);
        snprintf(fp, sizeof fp, "%.4g", strtod(fa, NULL) * strtod(fb, NULL) + 0.0);
        if (!strcmp(fp, fc)) break;
    }
    nb_text_printf(out, "\n%s × %s = %s", fa, fb, fp);
}


void nb_picture_update(const nb_picture *p, const nb_tensor *t, const void *g, nb_text *out) {
    double lr = p->o->learning_rate;
    size_t rows = nb_picture_value_lines(p, t);
    if (!g) {
        nb_text_put(out, "\nupdate: not yet");
        for (size_t k = 1; k < rows; k++) nb_text_put(out, "\n");
        return;
    }
    if (t->size == 1) { /* v − η × g = r, the factors with the fewest digits (>= 4) a calculator agrees with */
        double v = nb_picture_value(t->dtype, t->data, 0), d = nb_picture_value(t->dtype, g, 0);
        char fv[32], fl[32], fd[32], fr[32], want[32];
        snprintf(want, sizeof want, "%.4g", v - lr * d + 0.0);
        for (int k = 4; k <= 17; k++) {
            snprintf(fv, sizeof fv, "%.*g", k, v);
            snprintf(fl, sizeof fl, "%.*g", k, lr);
            snprintf(fd, sizeof fd, "%.*g", k, d);
            snprintf(fr, sizeof fr, "%.4g", strtod(fv, NULL) - strtod(fl, NULL) * strtod(fd, NULL) + 0.0);
            if (!strcmp(fr, want)) break;
        }
        nb_text_put(out, "\nupdate ");
        nb_text_put_user(out, t->name[0] ? t->name : "w");
        nb_text_printf(out, " ← %s − %s × %s%s%s = %s", fv, fl, d < 0 ? "(" : "", fd, d < 0 ? ")" : "", fr);
        return;
    }
    size_t bytes = t->size * (t->dtype == NB_F32 ? sizeof(float) : sizeof(double));
    void *next = nb_malloc(bytes ? bytes : 1);
    if (!next) {
        out->failed = true;
        return;
    }
    for (size_t i = 0; i < t->size; i++) {
        double v = nb_picture_value(t->dtype, t->data, i) - lr * nb_picture_value(t->dtype, g, i);
        if (t->dtype == NB_F32) ((float *)next)[i] = (float)v;
        else ((double *)next)[i] = v;
    }
    char prefix[48];
    snprintf(prefix, sizeof prefix, "after w − %.4g·grad ", lr);
    nb_text_put(out, "\n");
    nb_picture_values(p, t, next, prefix, out);
    nb_free(next);
}

/* A fan-out's gradient as the sum of what each use added, "= 1 + 0.3932",
 * printed so that a calculator agrees with the gradient beside it (4
 * digits): the terms with the fewest digits, 4 or more, whose exact sum
 * rounds to it (0.1234 + 0.1234 would not make 0.2469; 0.12344 + 0.12344
 * does).  When none do (a gradient that also holds earlier passes'), at 4. */
void nb_picture_sum(nb_text *out, const double *terms, size_t n, double total) {
    char want[32], got[32], term[4][32];
    snprintf(want, sizeof want, "%.4g", total + 0.0);
    int digits = 4;
    for (int d = 4; d <= 17 && n <= 4; d++) {
        double sum = 0;
        for (size_t k = 0; k < n; k++) {
            snprintf(term[k], sizeof term[k], "%.*g", d, fabs(terms[k]));
            sum += terms[k] < 0 ? -strtod(term[k], NULL) : strtod(term[k], NULL);
        }
        snprintf(got, sizeof got, "%.4g", sum + 0.0);
        if (!strcmp(got, want)) {
            digits = d;
            break;
        }
    }
    for (size_t k = 0; k < n && k < 4; k++) {
        double v = terms[k] + 0.0;
        if (k == 0)
            nb_text_printf(out, "= %.*g", digits, v);
        else /* "a - 1.4", not "a + -1.4" */
            nb_text_printf(out, v < 0 ? " - %.*g" : " + %.*g", digits, fabs(v));
    }
}
