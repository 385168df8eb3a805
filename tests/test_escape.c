/*
 * Escaping: every string a user can set (tensor, loss and scope names,
 * titles, axis symbols, op names, formulas and describe() text), each of
 * the hostile strings of tests/hostile_strings.h in turn, through every
 * writer (dot, its frames, the SVG Graphviz renders from it, the stepper
 * page with its JSON and SVG, safetensors, .nbp, the history's CSV and its
 * gnuplot script).  tests/escape_check.py then reads what was written with
 * the tools that read it for real: `dot`, an XML parser, Python's HTML,
 * JSON and CSV readers, and Chromium, which opens the page, runs its
 * script and shows the strings; it compares every text with the string as
 * it must be shown, which it computes on its own.
 */
#include "support.h"
#include "hostile_strings.h"
#include "nabla_op.h"
#include "nabla_train.h"
#include "../src/escape.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const hostile[] = {NB_HOSTILE_STRINGS};
enum { N = sizeof hostile / sizeof *hostile };
/* The big graph's loss and title, which the check also opens in Chromium
 * (on their own graphs too): strings that would run script in the page. */
static int find(const char *s) {
    for (int i = 0; i < N; i++)
        if (!strcmp(hostile[i], s)) return i;
    fail_msg("\"%s\" is not in tests/hostile_strings.h", s);
    return 0;
}
#define BIG_LOSS find("<svg onload=alert(1)>")
#define BIG_TITLE find("</title><svg onload=alert(1)>")

/* ---------------------------------------------------------------- the escapers themselves */

static void expect_escape(nb_esc_lang lang, const char *in, const char *out) {
    char buf[256];
    nb_escape_buf(buf, sizeof buf, lang, in);
    if (strcmp(buf, out) != 0) fail_msg("escape %d of \"%s\": \"%s\", expected \"%s\"", (int)lang, in, buf, out);
}

/* Expected texts written by hand from src/escape.h's rules. */
static void test_each_language(void **state) {
    (void)state;
    /* one line of display text: controls as their pictures, bad bytes as U+FFFD */
    expect_escape(NB_ESC_LINE, "a\nb\tc", "a␊b␉c");
    expect_escape(NB_ESC_LINE, "\x01\x1f\x7f", "␁␟␡");
    expect_escape(NB_ESC_LINE, "<b>\"&\\", "<b>\"&\\");
    expect_escape(NB_ESC_LINE, "\xff" "a", "\xef\xbf\xbd" "a");
    expect_escape(NB_ESC_LINE, "\xe2\x82 x", "\xef\xbf\xbd x"); /* a cut 3-byte sequence: one U+FFFD */
    expect_escape(NB_ESC_LINE, "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* a surrogate */
    expect_escape(NB_ESC_LINE, "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd");                /* overlong "/" */
    expect_escape(NB_ESC_LINE, "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    expect_escape(NB_ESC_LINE, "\xef\xbf\xbf∂\xf0\x9f\x98\x80", "\xef\xbf\xbd∂\xf0\x9f\x98\x80");
    /* dot: quotes, backslashes (so \N and \l show as written) and entities */
    expect_escape(NB_ESC_DOT, "E\" URL=\"javascript:x\"", "E\\\" URL=\\\"javascript:x\\\"");
    expect_escape(NB_ESC_DOT, "a\\Nb\\l", "a\\\\Nb\\\\l");
    expect_escape(NB_ESC_DOT, "&lt;", "&amp;lt;");
    expect_escape(NB_ESC_DOT, "one\ntwo\r", "one\\ntwo␍");
    expect_escape(NB_ESC_DOT, "{a|<b>}", "{a|<b>}");
    /* HTML text and attributes */
    expect_escape(NB_ESC_HTML, "<svg onload=x>", "&lt;svg onload=x&gt;");
    expect_escape(NB_ESC_HTML, "'\"&", "&#39;&quot;&amp;");
    expect_escape(NB_ESC_HTML, "a\nb\x01", "a\nb␁");
    /* JSON inside <script>: no "<" at all; data kept exactly */
    expect_escape(NB_ESC_JSON, "<!--<script>", "\\u003c!--\\u003cscript\\u003e");
    expect_escape(NB_ESC_JSON, "</script>&", "\\u003c/script\\u003e\\u0026");
    expect_escape(NB_ESC_JSON, "\"\\\n\x01\x7f", "\\\"\\\\\\n\\u0001\\u007f");
    expect_escape(NB_ESC_JSON, "\xe2\x80\xa8\xe2\x80\xa9", "\\u2028\\u2029");
    expect_escape(NB_ESC_JSON, "\xef\xbf\xbe\xff", "\\ufffe\xef\xbf\xbd");
    expect_escape(NB_ESC_JSON, "%s%n", "%s%n");
    /* a fixed buffer keeps whole characters */
    char small[5];
    assert_int_equal(nb_escape_buf(small, sizeof small, NB_ESC_LINE, "∂∂"), 3);
    assert_string_equal(small, "∂");
    assert_int_equal(nb_escape_buf(small, sizeof small, NB_ESC_JSON, "a<"), 1); /* not half of \u003c */
    assert_string_equal(small, "a");
    char line[NB_ESC_LINE_MAX(4)];
    assert_int_equal(nb_escape_buf(line, sizeof line, NB_ESC_LINE, "\x01\xff\x02\x03"), 12);
}

/* ---------------------------------------------------------------- the graphs */

/* A user's op: y = 2x, dy/dx = 2, whose name, formula and description are
 * hostile string i (its parameter). */
static void twice_forward(nb_op_call *c) {
    const double *x = nb_op_input_data(c, 0);
    double *y = nb_op_output_data(c);
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = 2 * x[i];
}

static void twice_backward(nb_op_call *c) {
    const double *g = nb_op_grad_output(c);
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    for (size_t i = 0; i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + 2 * g[i] : 2 * g[i];
}

static void twice_describe(const nb_op_call *c, char *buf, size_t size) {
    int i;
    memcpy(&i, nb_op_params(c), sizeof i);
    snprintf(buf, size, "%s", hostile[i]);
}

static nb_op_def twice[N];

/* What each string is used as.  In graph `first` alone (single), every
 * name is string first; in the big graph, part k uses string i = k for x
 * and its op and scope, i+1 for y, i+2 for sum(y), i+3 for the running sum,
 * and axis symbol i for x's axis. */
typedef struct {
    nb_tensor *x[N];
    nb_dot_axis_symbol symbols[N];
    nb_tensor *loss;
} graph;

static const char *name_of(int i, int role, bool single) { return hostile[single ? i : (i + role) % N]; }

static void build(nb_tape *tp, graph *g, int first, bool single) {
    nb_tensor *acc = NULL;
    for (int k = 0; k < (single ? 1 : N); k++) {
        int i = first + k;
        twice[i] = (nb_op_def){.name = hostile[i], .forward = twice_forward, .backward = twice_backward,
                               .derivative = {hostile[i]}, .elementwise = true, .describe = twice_describe};
        g->x[i] = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, -2}));
        nb_requires_grad(g->x[i], true);
        nb_tensor_set_name(g->x[i], hostile[i]);
        g->symbols[k] = (nb_dot_axis_symbol){nb_tensor_name(g->x[i]), 0, hostile[i]};
        assert_int_equal(nb_scope_begin(tp, hostile[i]), NB_OK);
        nb_tensor *y = nb_op(tp, &twice[i], &g->x[i], 1, NB_F64, NB_SHAPE(2), &i, sizeof i);
        nb_tensor_set_name(y, name_of(i, 1, single));
        nb_tensor *s = nb_sum(tp, y);
        nb_tensor_set_name(s, name_of(i, 2, single));
        acc = acc ? nb_add(tp, acc, s) : s;
        if (k) nb_tensor_set_name(acc, name_of(i, 3, single));
        nb_scope_end(tp);
    }
    g->loss = acc;
    nb_tensor_set_name(acc, hostile[single ? first : BIG_LOSS]);
    assert_ok(acc);
}

static void free_graph(graph *g, int first, bool single) {
    for (int k = 0; k < (single ? 1 : N); k++) nb_tensor_free(g->x[first + k]);
}

/* A writer that failed: said here, and the check goes on (the checker
 * then reports the file as missing), so that one run shows every problem. */
static int writers_failed;

static void writer_failed(const char *what) {
    printf("escape: %s: %s\n", what, nb_last_error());
    writers_failed++;
}

/* Writes the graph's .dot, its SVG, its frames and its page as
 * <stem>.dot, <stem>.svg, <stem>.frames/ and <stem>.html. */
static void write_pictures(const char *stem, int first, bool single) {
    nb_tape *tp = nb_tape_new();
    graph g;
    build(tp, &g, first, single);
    assert_int_equal(nb_backward(g.loss), NB_OK);
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.loss = g.loss;
    o.title = hostile[single ? first : BIG_TITLE];
    o.clusters = true;
    o.axis_symbols = g.symbols;
    o.n_axis_symbols = single ? 1 : N;
    char dot[256], svg[256], frames[256], html[256];
    snprintf(dot, sizeof dot, "%s/%s.dot", test_dir, stem);
    snprintf(svg, sizeof svg, "%s/%s.svg", test_dir, stem);
    snprintf(frames, sizeof frames, "%s/%s.frames", test_dir, stem);
    snprintf(html, sizeof html, "%s/%s.html", test_dir, stem);
    if (nb_dot_save(tp, dot, &o) != NB_OK) writer_failed(dot);
    if (nb_dot_render(dot, svg, "svg") != NB_OK) writer_failed(svg);
    if (single) { /* the big graph's frames would take dot too long to read */
        assert_int_equal(mkdir(frames, 0700), 0);
        if (nb_backward_frames(g.loss, frames, &o, NULL) != NB_OK) writer_failed(frames);
    }
    if (nb_backward_html(g.loss, html, o.title, &o) != NB_OK) writer_failed(html);
    nb_tape_free(tp);
    free_graph(&g, first, single);
}

/* Every string that fits a name (NB_NAME_MAX - 1 bytes) as a parameter's
 * name, in both parameter formats: the names come back exactly
 * (safetensors refuses what is not UTF-8, by name). */
static void write_params(void) {
    nb_params *ps = nb_params_new(), *back = nb_params_new(), *st = nb_params_new();
    size_t utf8 = 0;
    for (int i = 0; i < N; i++) {
        if (strlen(hostile[i]) >= NB_NAME_MAX) continue;
        nb_tensor *t = nb_params_create(ps, hostile[i], NB_F32, NB_SHAPE(1), NB_INIT_ZEROS, 1, 1, NULL);
        assert_ok(t);
        nb_set(t, 0, i);
        assert_ok(nb_params_create(back, hostile[i], NB_F32, NB_SHAPE(1), NB_INIT_ZEROS, 1, 1, NULL));
        nb_params *one = nb_params_new();
        assert_ok(nb_params_create(one, hostile[i], NB_F32, NB_SHAPE(1), NB_INIT_ZEROS, 1, 1, NULL));
        nb_status s = nb_params_save_safetensors(one, test_path("one.safetensors"));
        if (s != NB_OK) {
            assert_int_equal(s, NB_ERR_ARG);
            assert_message_has(nb_last_error(), "not valid UTF-8");
        } else {
            assert_ok(nb_params_create(st, hostile[i], NB_F32, NB_SHAPE(1), NB_INIT_ZEROS, 1, 1, NULL));
            utf8++;
        }
        nb_params_free(one);
    }
    assert_int_equal(nb_params_save(ps, test_path("names.nbp")), NB_OK);
    assert_int_equal(nb_params_load(back, test_path("names.nbp")), NB_OK);
    for (int i = 0; i < N; i++)
        if (strlen(hostile[i]) < NB_NAME_MAX) assert_int_equal(nb_get(nb_params_get(back, hostile[i]), 0), i);
    assert_true(utf8 > 0 && utf8 < N);
    assert_int_equal(nb_params_save_safetensors(st, test_path("names.safetensors")), NB_OK);
    assert_int_equal(nb_params_load(st, test_path("names.safetensors")), NB_OK);
    nb_params_free(st);
    nb_params_free(back);
    nb_params_free(ps);
}

/* The strings as tests/escape_check.py reads them: each followed by a NUL. */
static void write_strings(void) {
    FILE *f = fopen(test_path("strings.bin"), "wb");
    assert_non_null(f);
    for (int i = 0; i < N; i++) fwrite(hostile[i], 1, strlen(hostile[i]) + 1, f);
    assert_int_equal(fclose(f), 0);
}

/* Two epochs of training history, saved as CSV to path. */
static nb_status history(const char *path) {
    FILE *quiet = fopen("/dev/null", "w");
    assert_non_null(quiet);
    nb_progress *p = nb_progress_new(quiet, 2, 1, false);
    nb_progress_epoch(p, 1, 0.5, 0.25, 0.125);
    nb_progress_epoch(p, 2, -0.5, 0.5, 0.25);
    nb_status st = nb_progress_save_csv(p, path);
    nb_progress_free(p);
    fclose(quiet);
    return st;
}

static void test_every_writer_shows_every_string(void **state) {
    (void)state;
    write_strings();
    for (int i = 0; i < N; i++) {
        char stem[32];
        snprintf(stem, sizeof stem, "one%02d", i);
        write_pictures(stem, i, true);
    }
    write_pictures("big", 0, false);
    write_params();
    assert_int_equal(history(test_path("history.csv")), NB_OK);

    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/escape_check.py %s %d %d %d 2>&1", test_dir, N, BIG_LOSS,
             BIG_TITLE);
    FILE *py = popen(cmd, "r");
    assert_non_null(py);
    for (size_t got; (got = fread(out, 1, sizeof out, py)) > 0;) fwrite(out, 1, got, stdout);
    int rc = pclose(py);
    if (rc != 0) fail_msg("tests/escape_check.py found the problems above (exit %d)", rc);
    assert_int_equal(writers_failed, 0);
}

/* ---------------------------------------------------------------- gnuplot */

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* gnuplot runs an output named "|command" and reads data named
 * "<command" from a command: names given to nb_progress_plot are files. */
static void test_gnuplot_runs_no_name_as_a_command(void **state) {
    (void)state;
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("gnuplot: skipped (apt-get install gnuplot-nox)\n");
        return;
    }
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(test_dir), 0);
    assert_int_equal(history("<touch ran-data"), NB_OK);
    assert_int_equal(history("-"), NB_OK);
    nb_status data = nb_progress_plot("<touch ran-data", "from-data.svg");
    nb_status image = nb_progress_plot("-", "|touch ran-image");
    bool ran_data = exists("ran-data"), ran_image = exists("ran-image");
    bool drew = exists("from-data.svg") && exists("|touch ran-image");
    unlink("ran-data");
    unlink("ran-image");
    unlink("from-data.svg");
    unlink("|touch ran-image");
    unlink("<touch ran-data");
    unlink("-");
    assert_int_equal(chdir(cwd), 0);
    assert_false(ran_data);
    assert_false(ran_image);
    assert_int_equal(data, NB_OK);
    assert_int_equal(image, NB_OK);
    assert_true(drew);
}

/* ---------------------------------------------------------------- describe() */

/* A describe() that fills its buffer without a final NUL is cut, not read
 * past (AddressSanitizer catches the overread). */
static void no_nul_describe(const nb_op_call *c, char *buf, size_t size) {
    (void)c;
    memset(buf, 'D', size);
}

static void test_describe_without_nul(void **state) {
    (void)state;
    nb_op_def def = {.name = "op", .forward = twice_forward, .backward = twice_backward, .derivative = {"2"},
                     .elementwise = true, .describe = no_nul_describe};
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(NULL, NB_F64, NB_SHAPE(2));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_sum(tp, nb_op(tp, &def, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0));
    assert_ok(y);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(nb_dot_write(tp, f, NULL), NB_OK);
    fclose(f);
    char many[129]; /* the 127 bytes before the NUL forced into the last; not 128 */
    memset(many, 'D', 128);
    many[128] = '\0';
    assert_null(strstr(buf, many));
    many[127] = '\0';
    assert_message_has(buf, many);
    free(buf);
    nb_tape_free(tp);
    nb_tensor_free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_language),
        cmocka_unit_test(test_every_writer_shows_every_string),
        cmocka_unit_test(test_gnuplot_runs_no_name_as_a_command),
        cmocka_unit_test(test_describe_without_nul),
    };
    return cmocka_run_group_tests_name("escape", tests, test_dir_setup, test_dir_teardown);
}
