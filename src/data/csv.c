/*
 * A CSV reader for numeric tables: a header row of column names, then one
 * example per line.  One column, chosen by name, is the target; the others
 * are features.  Fields may be quoted ("1.5") and surrounded by spaces;
 * blank lines are skipped; line ends may be \n or \r\n.
 *
 * Every problem names the file, the line and the column: a missing value, a
 * value that is not a finite number, a row with the wrong number of fields,
 * an unknown target column.  With drop_bad_rows, rows with missing or
 * non-numeric values are skipped and counted instead.
 */
#include "../internal.h"
#include "nabla_train.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nb_csv_default_opts(nb_csv_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->delimiter = ',';
    opts->dtype = NB_F32;
}

void nb_dataset_free(nb_dataset *d) {
    if (!d) return;
    nb_tensor_free(d->X);
    nb_tensor_free(d->y);
    for (size_t i = 0; d->names && i < d->features; i++) nb_free(d->names[i]);
    nb_free(d->names);
    nb_free(d->target_name);
    memset(d, 0, sizeof *d);
}

/* Splits line in place at the delimiter into at most max fields, trimming
 * spaces and one pair of quotes; returns the number of fields (which may
 * exceed max: only the first max are stored). */
static size_t split_fields(char *line, char delim, char **fields, size_t max) {
    size_t n = 0;
    char *p = line;
    for (;;) {
        char *end = strchr(p, delim);
        if (end) *end = '\0';
        char *f = p;
        while (isspace((unsigned char)*f)) f++;
        char *e = f + strlen(f);
        while (e > f && isspace((unsigned char)e[-1])) *--e = '\0';
        if (e - f >= 2 && *f == '"' && e[-1] == '"') {
            e[-1] = '\0';
            f++;
        }
        if (n < max) fields[n] = f;
        n++;
        if (!end) break;
        p = end + 1;
    }
    return n;
}

/* A line of len bytes as getline read it must hold no NUL byte: C strings
 * would silently end there ("1,2\0,999" read as "1,2").  False, with the
 * error naming the line and column, if it does. */
static bool whole_line(const char *line, ssize_t len, const char *path, size_t line_no, char delim) {
    size_t text = strlen(line);
    if ((ssize_t)text == len) return true;
    size_t column = 1;
    for (size_t i = 0; i < text; i++) column += line[i] == delim;
    nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                 "nb_csv_read: %s:%zu: column %zu holds a NUL byte (byte %zu of the line); is this a text file?",
                 path, line_no, column, text + 1);
    return false;
}

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = nb_malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

typedef struct {
    double *values;
    size_t len, cap;
} growing;

static bool push(growing *g, double v) {
    if (g->len == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 1024;
        double *grown = nb_realloc(g->values, cap * sizeof *grown);
        if (!grown) return false;
        g->values = grown;
        g->cap = cap;
    }
    g->values[g->len++] = v;
    return true;
}

nb_status nb_csv_read(const char *path, const nb_csv_opts *opts_in, nb_dataset *out) {
    nb_csv_opts opts;
    if (opts_in)
        opts = *opts_in;
    else
        nb_csv_default_opts(&opts);
    if (!opts.delimiter) opts.delimiter = ',';
    if (!path || !out || !opts.target) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_csv_read: %s is NULL",
                     !path ? "the path" : !out ? "the output" : "the target column name");
        return NB_ERR_NULL;
    }
    memset(out, 0, sizeof *out);
    if (opts.dtype != NB_F32 && opts.dtype != NB_F64) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_csv_read: unknown dtype %d for %s (NB_F32 or NB_F64)",
                     (int)opts.dtype, path);
        return NB_ERR_ARG;
    }
    FILE *f = nb_open_input("nb_csv_read", path, NULL); /* a regular file, read no further than its size */
    if (!f) return nb_last_status();
    nb_status st = NB_OK;
    char *line = NULL, **fields = NULL, **header = NULL;
    size_t line_cap = 0, columns = 0, target = 0, line_no = 0, rows = 0, dropped = 0;
    growing X = {0}, y = {0};
    ssize_t len;

    /* The header: the first non-blank line (after a UTF-8 byte-order mark,
     * which some editors write first). */
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        line_no++;
        if (!whole_line(line, len, path, line_no, opts.delimiter)) {
            st = NB_ERR_VALUE;
            goto done;
        }
        if (line_no == 1 && !strncmp(line, "\xEF\xBB\xBF", 3)) memmove(line, line + 3, strlen(line + 3) + 1);
        line[strcspn(line, "\r\n")] = '\0';
        if (line[strspn(line, " \t")]) break;
    }
    if (len < 0) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "nb_csv_read: %s is empty (expected a header row)", path);
        goto done;
    }
    columns = 1;
    for (const char *c = line; *c; c++) columns += *c == opts.delimiter;
    fields = nb_malloc(columns * sizeof *fields);
    header = nb_malloc(columns * sizeof *header);
    if (header) memset(header, 0, columns * sizeof *header); /* cleanup frees its entries */
    if (!fields || !header) goto out_of_memory;
    split_fields(line, opts.delimiter, fields, columns);
    bool found = false;
    for (size_t c = 0; c < columns; c++) {
        if (!(header[c] = copy_string(fields[c]))) goto out_of_memory;
        if (strcmp(header[c], opts.target) != 0) continue;
        if (found) { /* the label would leak into the features */
            st = NB_ERR_VALUE;
            nb_set_error(NULL, st, NULL, 0,
                         "nb_csv_read: %s:%zu: the target column '%s' appears twice (columns %zu and %zu)", path,
                         line_no, opts.target, target + 1, c + 1);
            goto done;
        }
        target = c;
        found = true;
    }
    if (!found) {
        char list[256] = "";
        for (size_t c = 0, used = 0; c < columns && used < sizeof list - 8; c++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", c ? ", " : "", header[c]);
            if (w > 0) used += (size_t)w;
        }
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0,
                     "nb_csv_read: %s:%zu: no column named '%s' in the header (columns: %s); is "
                     "the first line a header row?",
                     path, line_no, opts.target, list);
        goto done;
    }
    if (columns < 2) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "nb_csv_read: %s:%zu: only the target column; no features", path, line_no);
        goto done;
    }

    /* The rows. */
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        line_no++;
        if (!whole_line(line, len, path, line_no, opts.delimiter)) {
            st = NB_ERR_VALUE;
            goto done;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[strspn(line, " \t")]) continue;
        size_t n = split_fields(line, opts.delimiter, fields, columns);
        if (n != columns) {
            st = NB_ERR_VALUE;
            nb_set_error(NULL, st, NULL, 0, "nb_csv_read: %s:%zu: %zu fields, expected %zu as in the header",
                         path, line_no, n, columns);
            goto done;
        }
        size_t mark_x = X.len, mark_y = y.len;
        bool bad = false;
        for (size_t c = 0; c < columns && !bad; c++) {
            char *end = NULL;
            errno = 0;
            double v = fields[c][0] ? strtod(fields[c], &end) : NAN;
            if (!fields[c][0] || *end || !isfinite(v)) {
                if (opts.drop_bad_rows) {
                    bad = true;
                    break;
                }
                st = NB_ERR_VALUE;
                if (!fields[c][0])
                    nb_set_error(NULL, st, NULL, 0, "nb_csv_read: %s:%zu: column '%s' (%zu) is empty",
                                 path, line_no, header[c], c + 1);
                else
                    nb_set_error(NULL, st, NULL, 0,
                                 "nb_csv_read: %s:%zu: column '%s' (%zu) holds '%s', not a finite number",
                                 path, line_no, header[c], c + 1, fields[c]);
                goto done;
            }
            if (!(c == target ? push(&y, v) : push(&X, v))) goto out_of_memory;
        }
        if (bad) {
            X.len = mark_x;
            y.len = mark_y;
            dropped++;
            continue;
        }
        rows++;
    }
    if (ferror(f)) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "nb_csv_read: error reading %s", path);
        goto done;
    }
    if (rows == 0) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "nb_csv_read: %s has no data rows%s", path,
                     dropped ? " left after dropping bad rows" : "");
        goto done;
    }

    out->rows = rows;
    out->features = columns - 1;
    out->dropped = dropped;
    out->X = nb_from_array(NULL, opts.dtype, NB_SHAPE(rows, columns - 1), X.values);
    out->y = nb_from_array(NULL, opts.dtype, NB_SHAPE(rows, 1), y.values);
    out->names = nb_malloc((columns - 1) * sizeof *out->names);
    if (!out->names || nb_tensor_status(out->X) || nb_tensor_status(out->y)) {
        if (out->names) memset(out->names, 0, (columns - 1) * sizeof *out->names);
        goto out_of_memory;
    }
    /* Hand the header strings over: features in order, then the target. */
    for (size_t c = 0, k = 0; c < columns; c++) {
        if (c == target)
            out->target_name = header[c];
        else
            out->names[k++] = header[c];
        header[c] = NULL;
    }
    goto done;

out_of_memory:
    st = NB_ERR_NOMEM;
    nb_set_error(NULL, st, NULL, 0, "nb_csv_read: out of memory reading %s", path);
done:
    if (st != NB_OK) nb_dataset_free(out);
    for (size_t c = 0; header && c < columns; c++) nb_free(header[c]);
    nb_free(header);
    nb_free(fields);
    nb_free(line);
    nb_free(X.values);
    nb_free(y.values);
    fclose(f);
    return st;
}
