/*
 * Backward, step by step: the graph before the gradient flows, then after
 * each tape entry's backward, with that entry highlighted and the gradients
 * known so far marked as partial or final; as .dot files, or as one HTML
 * page that steps through them.
 *
 * The film: the scene is built once (src/graph/picture.h), and a backward
 * hook, run after each entry, records every node's and edge's text at that
 * moment.  Every item has the same number of lines in every frame, so the
 * page lays the graph out once, with each line as long as it is in any
 * frame, and its script swaps the texts from frame to frame: nothing moves
 * or shrinks as you step.  The page never draws text under 14 px (readable
 * on a projector of 1024 x 768): a graph that fits at that size is fitted
 * to the window, enlarged if small, and one that does not is followed step
 * by step (src/graph/page.c).
 */
#include "dot_emit.h"
#include "page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { PHASE_FORWARD, PHASE_BACKWARD, PHASE_UPDATE } phase;
static const char *const phase_names[] = {"forward", "backward", "update"};

typedef struct {
    size_t entry;          /* 1 + the index of the entry it shows; 0 for none */
    phase phase;           /* forward: entries up to `entry` computed; update: w ← w − η·g shown */
    char **labels;         /* nodes, then edges (ops do not change) */
} frame;

typedef struct {
    nb_picture pic;
    nb_dot_opts opts;
    frame *frames;
    size_t n, cap;
    size_t *step_of;       /* per entry: its backward step (1, 2, ...), 0 if it does not run */
    size_t steps;
    size_t forward;        /* frames of the forward pass, before the backward ones (the page's) */
    nb_status status;
} film;

static size_t items(const film *fm) { return fm->pic.n_nodes + fm->pic.n_edges; }

static char *label_text(const film *fm, size_t item, nb_moment m) {
    nb_text t = {0};
    if (item < fm->pic.n_nodes)
        nb_picture_node_label(&fm->pic, item, m, &t);
    else
        nb_picture_edge_label(&fm->pic, item - fm->pic.n_nodes, m, &t);
    nb_text_putn(&t, "", 0);
    if (!t.s && !t.failed) { /* an empty label */
        t.s = nb_malloc(1);
        if (t.s) t.s[0] = '\0';
    }
    return t.failed ? (nb_free(t.s), NULL) : t.s;
}

/* Records every item's text at this moment as one more frame: of the
 * forward pass (entries up to `entry` computed), of backward (after entry's
 * backward; entry 0: before it starts), or the update after it. */
static void take(film *fm, size_t entry, phase ph) {
    if (fm->status != NB_OK) return;
    if (fm->n == fm->cap) {
        size_t cap = fm->cap ? 2 * fm->cap : 32;
        frame *grown = nb_realloc(fm->frames, cap * sizeof *grown);
        if (!grown) {
            fm->status = NB_ERR_NOMEM;
            return;
        }
        fm->frames = grown;
        fm->cap = cap;
    }
    frame *fr = &fm->frames[fm->n];
    size_t n = items(fm);
    fr->entry = entry;
    fr->phase = ph;
    fr->labels = nb_malloc((n ? n : 1) * sizeof *fr->labels);
    if (!fr->labels) {
        fm->status = NB_ERR_NOMEM;
        return;
    }
    fm->n++;
    for (size_t i = 0; i < n; i++)
        if (!(fr->labels[i] = label_text(fm, i, ph == PHASE_UPDATE || (entry && ph == PHASE_BACKWARD) ? NB_MOMENT_BACKWARD
                                                                                    : NB_MOMENT_FORWARD))) {
            for (size_t k = 0; k < i; k++) nb_free(fr->labels[k]);
            nb_free(fr->labels);
            fr->labels = NULL;
            fm->n--;
            fm->status = NB_ERR_NOMEM;
            return;
        }
    if (entry && ph == PHASE_BACKWARD) fm->step_of[entry - 1] = ++fm->steps;
}

static void after_entry(nb_tape *tp, size_t entry, void *user) {
    (void)tp;
    take(user, entry + 1, PHASE_BACKWARD);
}

static void film_free(film *fm) {
    for (size_t i = 0; i < fm->n; i++) {
        for (size_t k = 0; k < items(fm); k++) nb_free(fm->frames[i].labels[k]);
        nb_free(fm->frames[i].labels);
    }
    nb_free(fm->frames);
    nb_free(fm->step_of);
    nb_picture_free(&fm->pic);
}

/* Runs the backward pass from loss and films it; with `forward`, the
 * forward pass first, an entry a frame (its values are on the tape already:
 * each frame shows those computed so far). */
static nb_status shoot(nb_tensor *loss, const nb_dot_opts *opts, film *fm, const char *what, bool forward) {
    memset(fm, 0, sizeof *fm);
    if (!loss || loss->status != NB_OK || !nb_on_tape(loss) || !nb_recorded(loss)) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0, "%s: the loss must be a valid tensor recorded on a tape", what);
        return NB_ERR_STATE;
    }
    nb_tape *tp = loss->tape;
    if (opts)
        fm->opts = *opts;
    else
        nb_dot_default_opts(&fm->opts);
    if (!fm->opts.loss) fm->opts.loss = loss;
    nb_status st = nb_picture_check_opts(&fm->opts, tp, what);
    if (st != NB_OK) return st;
    fm->opts.show_grads = true;
    if (nb_picture_build(&fm->pic, tp, &fm->opts) != NB_OK ||
        !(fm->step_of = nb_malloc((tp->n_entries ? tp->n_entries : 1) * sizeof *fm->step_of))) {
        film_free(fm);
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", what);
        return NB_ERR_NOMEM;
    }
    memset(fm->step_of, 0, (tp->n_entries ? tp->n_entries : 1) * sizeof *fm->step_of);
    /* The filmed pass starts every leaf's gradient from nothing, so that the
     * frames show this pass's gradients alone, and the leaves get back the
     * gradients they had before (no doubling when nb_backward ran already). */
    nb_saved_grads leaves;
    if (!nb_save_leaf_grads(tp, loss, &leaves)) {
        film_free(fm);
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory keeping the gradients", what);
        return NB_ERR_NOMEM;
    }
    nb_backward_hook saved_hook = tp->hook;
    void *saved_user = tp->hook_user;
    bool saved_explain = tp->explain;
    tp->explain = true;
    if (forward) {
        for (size_t k = 0; k <= fm->pic.n_entries; k++) {
            fm->pic.computed = k;
            take(fm, k, PHASE_FORWARD);
        }
        fm->pic.computed = SIZE_MAX;
        fm->forward = fm->n;
    } else {
        take(fm, 0, PHASE_BACKWARD);
    }
    tp->hook = after_entry;
    tp->hook_user = fm;
    st = fm->status == NB_OK ? nb_backward(loss) : fm->status;
    if (st == NB_OK && forward && fm->opts.learning_rate > 0) { /* before the leaves' gradients go back */
        tp->hook = saved_hook;
        fm->pic.updated = true;
        take(fm, 0, PHASE_UPDATE);
    }
    tp->hook = saved_hook;
    tp->hook_user = saved_user;
    tp->explain = saved_explain;
    nb_restore_leaf_grads(&leaves);
    if (st == NB_OK) st = fm->status;
    if (st == NB_ERR_NOMEM && fm->status == NB_ERR_NOMEM)
        nb_set_error(NULL, st, NULL, 0, "%s: out of memory recording the frames", what);
    if (st != NB_OK) film_free(fm);
    return st;
}

/* The ops' labels (the same in every frame), as pointers into one text;
 * NULL, with *st and the message set, when memory runs out or an op's
 * describe fails (see nb_picture_callbacks_status). */
static const char **op_labels(const film *fm, nb_text *all, const char *what, nb_status *st) {
    nb_picture_mark mark = nb_picture_mark_tape(fm->pic.tp);
    size_t n = fm->pic.n_entries;
    size_t *at = nb_malloc((n ? n : 1) * sizeof *at);
    const char **labels = nb_malloc((n ? n : 1) * sizeof *labels);
    for (size_t i = 0; at && labels && i < n; i++) {
        at[i] = all->len;
        nb_picture_op_label(&fm->pic, i, fm->step_of[i], all);
        nb_text_putn(all, "", 1);
    }
    *st = !at || !labels || all->failed ? NB_ERR_NOMEM : NB_OK;
    if (*st != NB_OK)
        nb_set_error(NULL, *st, NULL, 0, "%s: out of memory", what);
    else
        *st = nb_picture_callbacks_status(fm->pic.tp, mark, what);
    if (*st != NB_OK) {
        nb_free(at);
        nb_free(labels);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) labels[i] = all->s + at[i];
    nb_free(at);
    return labels;
}

/* Writes frame k as dot: its labels, its entry highlighted. */
static nb_status write_frame(const film *fm, const char *const *ops, size_t k, const char *rankdir, bool classes,
                             int fontsize, FILE *f) {
    const frame *fr = &fm->frames[k];
    nb_dot_layout l = {(const char *const *)fr->labels, ops, (const char *const *)fr->labels + fm->pic.n_nodes,
                       fr->entry, rankdir, !classes, classes, fontsize, fontsize, false};
    return nb_dot_emit(&fm->pic, f, &l);
}

nb_status nb_backward_frames(nb_tensor *loss, const char *dir, const nb_dot_opts *opts, size_t *n_frames) {
    if (!dir) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_backward_frames: the directory is NULL");
        return NB_ERR_NULL;
    }
    if (!dir[0]) { /* "" + "/frame_000.dot" would be a file in the root directory */
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "nb_backward_frames: the directory name is empty (use \".\" for the current directory)");
        return NB_ERR_ARG;
    }
    film fm;
    nb_status st = shoot(loss, opts, &fm, "nb_backward_frames", false);
    if (st != NB_OK) return st;
    nb_text all = {0};
    const char **ops = op_labels(&fm, &all, "nb_backward_frames", &st);
    /* Each frame's path in full (nb_output_open refuses one that does not
     * fit), each frame written atomically. */
    size_t room = strlen(dir) + 32;
    char *path = st == NB_OK ? nb_malloc(room) : NULL;
    if (st == NB_OK && !path) {
        st = NB_ERR_NOMEM;
        nb_set_error(NULL, st, NULL, 0, "nb_backward_frames: out of memory");
    }
    for (size_t i = 0; i < fm.n && st == NB_OK; i++) {
        snprintf(path, room, "%s/frame_%03zu.dot", dir, i);
        nb_output out;
        st = nb_output_open(&out, "nb_backward_frames", path, false);
        if (st == NB_OK) st = nb_output_close(&out, write_frame(&fm, ops, i, fm.opts.rankdir, false, 0, out.f));
    }
    nb_free(path);
    if (n_frames) *n_frames = st == NB_OK ? fm.n : 0;
    nb_free(ops);
    nb_text_free(&all);
    film_free(&fm);
    return st;
}

/* ---------------------------------------------------------------- the layout */

/* The width of a line, in characters (UTF-8 continuation bytes not counted). */
static size_t width_of(const char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += ((unsigned char)s[i] & 0xC0) != 0x80;
    return w;
}

/* Line k of text (the k-th, '\n'-separated): its start and length. */
static bool line_of(const char *text, size_t k, const char **start, size_t *len) {
    const char *s = text;
    for (size_t i = 0; i < k; i++) {
        s = strchr(s, '\n');
        if (!s) return false;
        s++;
    }
    *start = s;
    const char *end = strchr(s, '\n');
    *len = end ? (size_t)(end - s) : strlen(s);
    return true;
}

static size_t line_count(const char *text) {
    size_t n = 1;
    for (const char *s = text; *s; s++) n += *s == '\n';
    return n;
}

/* Item i's label for the layout: each line the widest it is in any frame
 * (so that the boxes and the spaces for edge labels fit every frame). */
static char *widest(const film *fm, size_t i) {
    nb_text t = {0};
    size_t lines = line_count(fm->frames[0].labels[i]);
    for (size_t k = 0; k < lines; k++) {
        const char *best = "", *s;
        size_t best_len = 0, best_w = 0, len;
        for (size_t f = 0; f < fm->n; f++)
            if (line_of(fm->frames[f].labels[i], k, &s, &len) && width_of(s, len) > best_w) {
                best = s, best_len = len, best_w = width_of(s, len);
            }
        if (k) nb_text_put(&t, "\n");
        nb_text_putn(&t, best, best_len);
    }
    nb_text_putn(&t, "", 0);
    return t.failed ? (nb_free(t.s), NULL) : t.s;
}

/* The graph laid out once, as SVG (through Graphviz), from the widest labels. */
static nb_status layout_svg(const film *fm, const char *const *ops, const char *rankdir, char **svg) {
    size_t n = items(fm);
    char **labels = nb_malloc((n ? n : 1) * sizeof *labels);
    if (!labels) return NB_ERR_NOMEM;
    nb_status st = NB_OK;
    for (size_t i = 0; i < n; i++)
        if (!(labels[i] = widest(fm, i))) {
            for (size_t k = 0; k < i; k++) nb_free(labels[k]);
            nb_free(labels);
            return NB_ERR_NOMEM;
        }
    char *dot = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&dot, &len);
    if (!f) st = NB_ERR_NOMEM;
    if (st == NB_OK) {
        nb_dot_layout l = {(const char *const *)labels, ops, (const char *const *)labels + fm->pic.n_nodes, 0,
                           rankdir, false, true, 14, 14, true};
        st = nb_dot_emit(&fm->pic, f, &l);
        fclose(f);
    }
    if (st == NB_OK) st = nb_render_svg_data(dot, svg, &len);
    free(dot); /* open_memstream's buffer comes from malloc */
    for (size_t i = 0; i < n; i++) nb_free(labels[i]);
    nb_free(labels);
    return st;
}

/* The size Graphviz gave the drawing, from <svg width="Wpt" height="Hpt">. */
static void svg_size(const char *svg, double *w, double *h) {
    const char *s = strstr(svg, "<svg");
    const char *ws = s ? strstr(s, "width=\"") : NULL, *hs = s ? strstr(s, "height=\"") : NULL;
    *w = ws ? atof(ws + 7) : 0;
    *h = hs ? atof(hs + 8) : 0;
}

/* The scale at which a drawing of w x h px fills the view of a 1024 x 768
 * window under the browser's bars and the page's controls, about 1000 x
 * 520 px (headless Chromium's window of that size shows 1024 x 625). */
static double fit_scale(double w, double h) {
    double sw = w > 0 ? 1000 / w : 0, sh = h > 0 ? 520 / h : 0;
    return sw < sh ? sw : sh;
}

/* ---------------------------------------------------------------- the page */

static void put_html_escaped(FILE *f, const char *s) { nb_escape_file(f, NB_ESC_HTML, s); }

/* A JSON string inside the page's <script> element (no "<" in it, so
 * that no text can end the element or open a comment there). */
static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    nb_escape_file(f, NB_ESC_JSON, s);
    fputc('"', f);
}

/* What a frame shows, in words; false if out of memory. */
static bool caption(char *buf, size_t n, const film *fm, size_t index) {
    const frame *fr = &fm->frames[index];
    const char *loss = fm->pic.loss_name;
    if (fr->entry == 0) {
        if (fr->phase == PHASE_UPDATE)
            snprintf(buf, n,
                     "The update: each parameter takes a step against its gradient, w ← w − η·∂%s/∂w with η = %g "
                     "(gradient descent). The next iteration's forward pass starts from the new values.",
                     loss, fm->opts.learning_rate);
        else if (fr->phase == PHASE_FORWARD)
            snprintf(buf, n,
                     "The forward pass starts from the data and the parameters: no op has run yet. Each step "
                     "computes one op's result from its inputs and records it on the tape (%zu entries).",
                     fm->pic.n_entries);
        else
            snprintf(buf, n,
                     "The forward pass: every value is computed and recorded on the tape (%zu entries); no gradient "
                     "is known yet. Backward starts from the loss %s with ∂%s/∂%s = 1 and walks the tape in reverse.",
                     fm->pic.n_entries, loss, loss, loss);
        return true;
    }
    const nb_entry *e = &fm->pic.tp->entries[fr->entry - 1];
    nb_text out = {0}, op = {0};
    nb_picture_name(&fm->pic, e->out, &out);
    nb_text_put_user(&op, e->op->name);
    const char *y = out.s ? out.s : "";
    int w;
    if (fr->phase == PHASE_FORWARD) {
        w = snprintf(buf, n, "Forward step %zu of %zu: %s computes %s from its inputs, recorded on the tape.",
                     fr->entry, fm->pic.n_entries, op.s ? op.s : "", y);
        if (w > 0 && (size_t)w < n && fr->entry == fm->pic.n_entries)
            snprintf(buf + w, n - (size_t)w,
                     " Backward starts from the loss %s with ∂%s/∂%s = 1 and walks the tape in reverse.",
                     loss, loss, loss);
    } else {
        size_t step = fm->step_of[fr->entry - 1];
        w = snprintf(buf, n,
                     "Backward step %zu of %zu: through %s (which made %s). Each input's contribution, the "
                     "upstream ∂%s/∂%s times the local derivative, adds into its gradient.",
                     step, fm->steps, op.s ? op.s : "", y, loss, y);
        if (w > 0 && (size_t)w < n && step == fm->steps)
            snprintf(buf + w, n - (size_t)w, " Every gradient is now final.");
    }
    bool named = !out.failed && !op.failed;
    nb_text_free(&out);
    nb_text_free(&op);
    return named;
}

static void put_legend_panel(FILE *f, const film *fm) {
    fputs("<aside>\n<h2>Colours</h2>\n", f);
    for (int r = 0; r <= NB_ROLE_LOSS; r++)
        fprintf(f, "<div><span class=\"swatch\" style=\"background:%s\"></span>%s%s</div>\n", nb_role_colors[r],
                nb_role_names[r],
                r == NB_ROLE_INPUT ? " (data: no gradient)" : r == NB_ROLE_PARAM ? " (learned)" : "");
    fputs("<div><span class=\"swatch\" style=\"background:#d9ead3;border-radius:50%\"></span>op</div>\n"
          "<div><span class=\"swatch\" style=\"background:" NB_HIGHLIGHT_COLOR
          ";border-radius:50%\"></span>the op whose backward just ran</div>\n",
          f);
    if (fm->opts.n_checked)
        fputs("<div><span class=\"swatch\" style=\"border:3px solid #6aa84f\"></span>gradcheck border: green "
              "&lt; 1e-4, orange &lt; 1e-3 (near the tolerance), red above (fails)</div>\n",
              f);
    fputs("<h2>Edges</h2>\n<p>How the gradient comes back along an edge from an input into an op:</p>\n"
          "<p><b>∂output/∂input = &hellip;</b> the local derivative, then element by element "
          "<b>upstream &times; local = contribution</b>.</p>\n<p><b>∂",
          f);
    put_html_escaped(f, fm->pic.loss_name);
    fputs("/∂input = &hellip;</b> the contribution made from the upstream gradient at once "
          "(products, losses, reductions), then its values.</p>\n"
          "<p>Grey dashed edges carry no gradient (data, targets).</p>\n"
          "<h2>Gradients</h2>\n<p><b>not yet</b>: no contribution has arrived; <b>partial (k of n "
          "uses)</b>: some have; otherwise final. A tensor used n times sums n contributions.</p>\n"
          "<h2>Keys</h2>\n<p><kbd>&larr;</kbd> <kbd>&rarr;</kbd> step, <kbd>Home</kbd> <kbd>End</kbd>, "
          "<kbd>+</kbd> <kbd>&minus;</kbd> zoom, <kbd>0</kbd> fit, <kbd>1</kbd> natural size, <kbd>L</kbd> this "
          "panel; drag to move, wheel to zoom. Text is never drawn under 14 px: a graph too large for that "
          "is followed step by step.</p>\n</aside>\n",
          f);
}

nb_status nb_backward_html(nb_tensor *loss, const char *path, const char *title, const nb_dot_opts *opts) {
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_backward_html: the path is NULL");
        return NB_ERR_NULL;
    }
    if (!title) title = "Backpropagation, step by step";
    film fm;
    nb_status st = shoot(loss, opts, &fm, "nb_backward_html", true);
    if (st != NB_OK) return st;
    nb_text all = {0};
    const char **ops = op_labels(&fm, &all, "nb_backward_html", &st);
    char *svg = NULL;
    /* Unless asked: the direction in which the whole graph fits a 1024 x 768
     * window's view (fit_scale) at the larger
     * scale, if either fits with its text at 14 px or more; else left to
     * right, or top to bottom when that is much wider than tall (the
     * camera then follows the steps down the page). */
    const char *rankdir = fm.opts.rankdir ? fm.opts.rankdir : "LR";
    if (st == NB_OK) st = layout_svg(&fm, ops, rankdir, &svg);
    if (st == NB_OK && !fm.opts.rankdir) {
        char *down = NULL;
        double w, h, wd, hd;
        svg_size(svg, &w, &h);
        st = layout_svg(&fm, ops, "TB", &down);
        if (st == NB_OK) {
            svg_size(down, &wd, &hd);
            double across = fit_scale(w, h), along = fit_scale(wd, hd);
            bool take_down = across >= 1 || along >= 1 ? along > across : w > 1.6 * h && w > 1000;
            nb_free(take_down ? svg : down);
            if (take_down) svg = down;
        }
    }
    nb_output out; /* atomic, as every writer: src/tensor/files.c */
    if (st == NB_OK) st = nb_output_open(&out, "nb_backward_html", path, false);
    FILE *f = st == NB_OK ? out.f : NULL;
    if (f) {
        fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              "<meta name=\"viewport\" content=\"width=device-width\">\n<title>",
              f);
        put_html_escaped(f, title);
        fputs("</title>\n", f);
        fputs(nb_page_style, f);
        fputs("</head>\n<body>\n<header>\n<h1>", f);
        put_html_escaped(f, title);
        fputs("</h1>\n<div id=\"controls\"><button id=\"prev\">&#9664; previous</button><input type=\"range\" "
              "id=\"slider\" min=\"0\" value=\"0\"><button id=\"next\">next &#9654;</button><span id=\"counter\">"
              "</span><button id=\"zout\" title=\"zoom out (-)\">&minus;</button><button id=\"zin\" title=\"zoom in "
              "(+)\">+</button><button id=\"fit\" title=\"fit the window (0)\">fit</button><button id=\"one\" "
              "title=\"natural size (1)\">1:1</button><button id=\"legend\" title=\"colours, edges and keys (L)\">legend"
              "</button></div>\n<p id=\"caption\"></p>\n</header>\n<main>\n"
              "<div id=\"view\"><div id=\"canvas\">\n",
              f);
        /* The SVG inline, without its XML declaration, in pixels: 14-point
         * Graphviz text is 14 px at 1:1. */
        const char *start = strstr(svg, "<svg");
        const char *s = start ? start : svg;
        const char *ws = strstr(s, "width=\""), *hs = strstr(s, "height=\""), *close = strchr(s, '>');
        if (ws && hs && close && ws < close && hs < close) {
            double w, h;
            svg_size(svg, &w, &h);
            fwrite(s, 1, (size_t)(ws - s), f);
            fprintf(f, "width=\"%.0fpx\" height=\"%.0fpx\"", w, h);
            const char *after = strchr(hs + 8, '"');
            fputs(after ? after + 1 : close, f);
        } else {
            fputs(s, f);
        }
        fputs("</div></div>\n", f);
        put_legend_panel(f, &fm);
        fputs("</main>\n<pre id=\"selftest\" hidden></pre>\n<script type=\"application/json\" id=\"frames\">\n{\"nodes\": [",
              f);
        for (size_t k = 0; k < fm.pic.n_nodes; k++) fprintf(f, "%s\"t%zu\"", k ? ", " : "", k);
        fputs("],\n\"edges\": [", f);
        for (size_t j = 0; j < fm.pic.n_edges; j++)
            fprintf(f, "%s\"t%zu->op%zu\"", j ? ", " : "", fm.pic.edges[j].node, fm.pic.edges[j].entry);
        fputs("],\n\"frames\": [\n", f);
        for (size_t k = 0; k < fm.n; k++) {
            char text[768];
            if (!caption(text, sizeof text, &fm, k) && st == NB_OK) {
                st = NB_ERR_NOMEM;
                nb_set_error(NULL, st, NULL, 0, "nb_backward_html: out of memory");
            }
            fputs(k ? ",\n{\"caption\": " : "{\"caption\": ", f);
            put_json_string(f, text);
            if (fm.frames[k].entry)
                fprintf(f, ", \"op\": \"op%zu\"", fm.frames[k].entry - 1);
            else
                fputs(", \"op\": null", f);
            fprintf(f, ", \"phase\": \"%s\"", phase_names[fm.frames[k].phase]);
            if (fm.frames[k].phase == PHASE_UPDATE) { /* the camera's targets: the parameters */
                fputs(", \"show\": [", f);
                for (size_t i = 0, shown = 0; i < fm.pic.n_nodes; i++)
                    if (nb_picture_role(&fm.pic, fm.pic.nodes[i]->t) == NB_ROLE_PARAM)
                        fprintf(f, "%s\"t%zu\"", shown++ ? ", " : "", i);
                fputc(']', f);
            }
            fputs(", \"labels\": [", f);
            for (size_t i = 0; i < items(&fm); i++) {
                if (i) fputs(", ", f);
                put_json_string(f, fm.frames[k].labels[i]);
            }
            fputs("]}", f);
        }
        fputs("\n]}\n</script>\n", f);
        fputs(nb_page_script, f);
        fputs("</body>\n</html>\n", f);
        st = nb_output_close(&out, st); /* no half page left behind, nothing else removed */
    }
    nb_free(svg);
    nb_free(ops);
    nb_text_free(&all);
    film_free(&fm);
    return st;
}
