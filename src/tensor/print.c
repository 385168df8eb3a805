/*
 * Printing for humans, in NumPy's style: a tensor of up to PRINT_FULL
 * elements is printed in full with nested brackets; a larger one as its
 * shape, dtype and statistics, followed by its first few values.
 */
#include "../internal.h"

#include <math.h>

#define PRINT_FULL 100
#define PRINT_HEAD 6

nb_stats nb_compute_stats(nb_dtype dt, size_t count, const void *values) {
    nb_stats s = {INFINITY, -INFINITY, 0, 0, 0};
    double sum = 0, sumsq = 0;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        double v = dt == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i];
        if (!isfinite(v)) {
            s.nonfinite++;
            continue;
        }
        if (v < s.min) s.min = v;
        if (v > s.max) s.max = v;
        sum += v;
        sumsq += v * v;
        n++;
    }
    if (n) {
        s.mean = sum / (double)n;
        double var = sumsq / (double)n - s.mean * s.mean;
        s.std = var > 0 ? sqrt(var) : 0;
    }
    return s;
}

static double value_at(const nb_tensor *t, const void *values, size_t i) {
    return t->dtype == NB_F32 ? ((const float *)values)[i] : ((const double *)values)[i];
}

/* Prints values row-major with one bracket level per dimension. */
static void print_nested(FILE *out, const nb_tensor *t, const void *values) {
    if (t->ndim == 0) {
        fprintf(out, "%.6g", value_at(t, values, 0));
        return;
    }
    size_t index[NB_MAX_DIMS] = {0};
    for (int d = 0; d < t->ndim; d++) fputc('[', out);
    for (size_t i = 0; i < t->size; i++) {
        fprintf(out, "%.6g", value_at(t, values, i));
        /* Advance the index odometer and count how many dimensions closed. */
        int closed = 0;
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++index[d] < t->shape[d]) break;
            index[d] = 0;
            closed++;
        }
        for (int c = 0; c < closed; c++) fputc(']', out);
        if (i + 1 < t->size) {
            fputs(closed ? ",\n" : ", ", out);
            if (closed)
                for (int d = 0; d < t->ndim; d++) fputc(d < t->ndim - closed ? ' ' : '[', out);
        }
    }
}

static void print_values(FILE *out, const nb_tensor *t, const void *values, const char *what) {
    char shape[128];
    nb_format_shape(t->ndim, t->shape, shape, sizeof shape);
    fprintf(out, "%s%s%s %s %s", t->name[0] ? t->name : "", t->name[0] ? " " : "", what, shape,
            t->dtype == NB_F32 ? "float32" : "float64");
    if (t->size <= PRINT_FULL) {
        fputs(" =\n", out);
        print_nested(out, t, values);
        fputc('\n', out);
        return;
    }
    nb_stats s = nb_compute_stats(t->dtype, t->size, values);
    fprintf(out, ": min %.6g, max %.6g, mean %.6g, std %.6g", s.min, s.max, s.mean, s.std);
    if (s.nonfinite) fprintf(out, ", %zu not finite", s.nonfinite);
    fputs("\n  first values: ", out);
    for (size_t i = 0; i < PRINT_HEAD; i++)
        fprintf(out, "%s%.6g", i ? ", " : "", value_at(t, values, i));
    fputs(", ...\n", out);
}

void nb_print(FILE *out, const nb_tensor *t) {
    if (!out) return;
    if (nb_tensor_status(t) != NB_OK) { /* errored, or gone with a reset */
        fprintf(out, "errored tensor (%s)\n", nb_status_string(nb_tensor_status(t)));
        return;
    }
    print_values(out, t, t->data, "tensor");
}

void nb_print_grad(FILE *out, nb_tensor *t) {
    if (!out) return;
    if (nb_tensor_status(t) != NB_OK) { /* errored, or gone with a reset */
        fprintf(out, "errored tensor (%s)\n", nb_status_string(nb_tensor_status(t)));
        return;
    }
    void *g = nb_grad_data(t);
    if (!g) {
        fprintf(out, "%s gradient: not computed\n", t->name[0] ? t->name : "tensor");
        return;
    }
    print_values(out, t, g, "gradient");
}
