/*
 * Small helpers shared by the example programs: reading --flag VALUE
 * options with clear errors, and writing the recorded graph for --dot.
 */
#ifndef NABLA_EXAMPLES_CLI_H
#define NABLA_EXAMPLES_CLI_H

#include "nabla.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int argc, i;
    char **argv;
    const char *program, *usage;
    bool failed;
} cli;

static inline cli cli_start(int argc, char **argv, const char *usage) {
    const char *slash = strrchr(argv[0], '/');
    cli c = {argc, 0, argv, slash ? slash + 1 : argv[0], usage, false};
    return c;
}

/* Advances to the next argument; false when there are none left. */
static inline bool cli_next(cli *c) { return ++c->i < c->argc; }

static inline bool cli_is(const cli *c, const char *flag) { return !strcmp(c->argv[c->i], flag); }

/* Is the current argument --help or -h?  Prints the usage if so. */
static inline bool cli_help(const cli *c) {
    if (!cli_is(c, "--help") && !cli_is(c, "-h")) return false;
    fputs(c->usage, stdout);
    return true;
}

static inline void cli_fail(cli *c, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "%s: ", c->program);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n%s", c->usage);
    c->failed = true;
}

/* The value following the current flag. */
static inline const char *cli_value(cli *c) {
    if (c->i + 1 >= c->argc) {
        cli_fail(c, "%s needs a value%s", c->argv[c->i], "");
        return NULL;
    }
    return c->argv[++c->i];
}

static inline long cli_long(cli *c, long min, long max) {
    const char *flag = c->argv[c->i], *v = cli_value(c);
    if (!v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*end || errno || x < min || x > max) {
        char range[64];
        snprintf(range, sizeof range, "%ld to %ld", min, max);
        fprintf(stderr, "%s: invalid value '%s' for %s (expected a whole number from %s)\n%s",
                c->program, v, flag, range, c->usage);
        c->failed = true;
    }
    return x;
}

static inline double cli_double(cli *c, double min, double max) {
    const char *flag = c->argv[c->i], *v = cli_value(c);
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (*end || errno || !(x >= min && x <= max)) {
        fprintf(stderr, "%s: invalid value '%s' for %s (expected a number from %g to %g)\n%s",
                c->program, v, flag, min, max, c->usage);
        c->failed = true;
    }
    return x;
}

static inline void cli_unknown(cli *c) { cli_fail(c, "unknown option %s%s", c->argv[c->i], ""); }

/* Seconds on a monotonic clock, for timing steps and epochs. */
static inline double cli_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* DIR/FILE into buf of n bytes; false, with the reason printed, when it does
 * not fit (a path cut short would name another file). */
static inline bool cli_join(char *buf, size_t n, const char *program, const char *dir, const char *file) {
    int w = snprintf(buf, n, "%s/%s", dir, file);
    if (w >= 0 && (size_t)w < n) return true;
    fprintf(stderr, "%s: the path %s/%s is too long (%d bytes, at most %zu)\n", program, dir, file, w, n - 1);
    return false;
}

/* The pictures of one backward pass from loss, drawn with the same options
 * so that they agree: the still graph (for --dot; with the chain rule's
 * numbers when the pass ran in explain mode) and the page that steps
 * through the pass (for --html; it leaves the gradients as they were).
 * Either path may be NULL.  Call it after nb_backward(loss) and before the
 * optimizer's step, so that values and gradients are of one moment. */
static inline int write_pictures(nb_tape *tp, nb_tensor *loss, const nb_dot_opts *opts, const char *dot,
                                 const char *html) {
    nb_dot_opts o = *opts;
    o.loss = loss;
    if (dot && nb_dot_save(tp, dot, &o) != NB_OK) {
        fprintf(stderr, "%s\n", nb_last_error());
        return 1;
    }
    if (dot) printf("graph written to %s (render it with: dot -Tsvg %s -o graph.svg)\n", dot, dot);
    if (html && nb_backward_html(loss, html, o.title, &o) != NB_OK) {
        fprintf(stderr, "%s\n", nb_last_error());
        return 1;
    }
    if (html) printf("backward stepper written to %s (open it in a browser)\n", html);
    return 0;
}

#endif
