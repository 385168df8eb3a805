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
 * or shrinks as you step.  The page shows the graph at its natural size
 * (text of 14 px: readable on a projector of 1024 x 768) and pans and zooms
 * rather than shrinking it to the window.
 */
#include "dot_emit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t entry;          /* 1 + entry index; 0 for the first frame */
    char **labels;         /* nodes, then edges (ops do not change) */
} frame;

typedef struct {
    nb_picture pic;
    nb_dot_opts opts;
    frame *frames;
    size_t n, cap;
    size_t *step_of;       /* per entry: its backward step (1, 2, ...), 0 if it does not run */
    size_t steps;
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

/* Records every item's text at this moment as one more frame. */
static void take(film *fm, size_t entry) {
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
    fr->labels = nb_malloc((n ? n : 1) * sizeof *fr->labels);
    if (!fr->labels) {
        fm->status = NB_ERR_NOMEM;
        return;
    }
    fm->n++;
    for (size_t i = 0; i < n; i++)
        if (!(fr->labels[i] = label_text(fm, i, entry ? NB_MOMENT_BACKWARD : NB_MOMENT_FORWARD))) {
            for (size_t k = 0; k < i; k++) nb_free(fr->labels[k]);
            nb_free(fr->labels);
            fr->labels = NULL;
            fm->n--;
            fm->status = NB_ERR_NOMEM;
            return;
        }
    if (entry) fm->step_of[entry - 1] = ++fm->steps;
}

static void after_entry(nb_tape *tp, size_t entry, void *user) {
    (void)tp;
    take(user, entry + 1);
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

/* Runs the backward pass from loss and films it. */
static nb_status shoot(nb_tensor *loss, const nb_dot_opts *opts, film *fm, const char *what) {
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
    take(fm, 0);
    tp->hook = after_entry;
    tp->hook_user = fm;
    st = fm->status == NB_OK ? nb_backward(loss) : fm->status;
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
    nb_status st = shoot(loss, opts, &fm, "nb_backward_frames");
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
        snprintf(buf, n,
                 "The forward pass: every value is computed and recorded on the tape (%zu entries); no gradient is "
                 "known yet. Backward starts from the loss %s with ∂%s/∂%s = 1 and walks the tape in reverse.",
                 fm->pic.n_entries, loss, loss, loss);
        return true;
    }
    const nb_entry *e = &fm->pic.tp->entries[fr->entry - 1];
    nb_text out = {0}, op = {0};
    nb_picture_name(&fm->pic, e->out, &out);
    nb_text_put_user(&op, e->op->name);
    const char *y = out.s ? out.s : "";
    int w = snprintf(buf, n,
                     "Step %zu of %zu: backward through %s (which made %s). Each input's contribution is the "
                     "upstream gradient ∂%s/∂%s times the local derivative, added into that input's gradient.",
                     index, fm->n - 1, op.s ? op.s : "", y, loss, y);
    bool named = !out.failed && !op.failed;
    nb_text_free(&out);
    nb_text_free(&op);
    if (w > 0 && (size_t)w < n && index + 1 == fm->n)
        snprintf(buf + w, n - (size_t)w, " Every gradient is now final.");
    return named;
}

static const char page_style[] =
    "<style>\n"
    "html, body { margin: 0; height: 100%; }\n"
    "body { font: 16px/1.35 Helvetica, Arial, sans-serif; color: #222; display: flex; flex-direction: column; }\n"
    "header { padding: 0.4em 0.8em; border-bottom: 1px solid #ddd; }\n"
    "h1 { font-size: 1.25em; margin: 0.1em 0 0.3em; }\n"
    "#controls { display: flex; flex-wrap: wrap; gap: 0.4em; align-items: center; }\n"
    "#controls button { font-size: 16px; padding: 0.15em 0.6em; }\n"
    "#slider { flex: 1; min-width: 8em; max-width: 30em; }\n"
    "#caption { margin: 0.3em 0 0; min-height: 2.7em; }\n"
    "main { flex: 1; display: flex; min-height: 0; }\n"
    "#view { flex: 1; overflow: hidden; position: relative; cursor: grab; background: #fff; }\n"
    "#view.dragging { cursor: grabbing; }\n"
    "#canvas { position: absolute; left: 0; top: 0; transform-origin: 0 0; }\n"
    "aside { width: 15em; overflow: auto; border-left: 1px solid #ddd; padding: 0.5em 0.8em; font-size: 15px; }\n"
    "aside h2 { font-size: 1em; margin: 0.5em 0 0.3em; }\n"
    ".swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888; border-radius: 3px;"
    " vertical-align: -0.15em; margin-right: 0.4em; }\n"
    "kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 0.3em; }\n"
    "g.hl > ellipse { fill: " NB_HIGHLIGHT_COLOR "; stroke: #1c4587; stroke-width: 2; }\n"
    "g.hl.node > text { fill: #fff; font-weight: bold; }\n"
    "g.hl.edge > path { stroke: " NB_HIGHLIGHT_COLOR "; stroke-width: 2.5; }\n"
    "g.hl.edge > polygon { fill: " NB_HIGHLIGHT_COLOR "; stroke: " NB_HIGHLIGHT_COLOR "; }\n"
    "g.hl.edge > text { fill: #1c4587; }\n"
    "</style>\n";

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
          "<kbd>+</kbd> <kbd>&minus;</kbd> zoom, <kbd>0</kbd> fit, <kbd>1</kbd> natural size; drag to "
          "move, wheel to zoom.</p>\n</aside>\n",
          f);
}

/* The stepper: sets each frame's texts into the one laid-out SVG, moves the
 * highlight, keeps #frame=N in the address, pans and zooms.  #selftest
 * steps through every frame by key presses and writes what it saw (for the
 * browser test): the highlighted op, whether the drawing kept its size and
 * every shape its place, whether the address followed, the smallest text
 * height at 1:1, and the frame it opened on (#selftest,frame=2 opens on 2). */
static const char page_script[] =
    "<script>\n(function () {\n"
    "  var data = JSON.parse(document.getElementById('frames').textContent);\n"
    "  var svg = document.querySelector('#canvas svg'), view = document.getElementById('view');\n"
    "  var canvas = document.getElementById('canvas');\n"
    "  var groups = {};\n"
    "  svg.querySelectorAll('g.node, g.edge').forEach(function (g) {\n"
    "    var t = g.querySelector('title'); if (t) groups[t.textContent] = g;\n"
    "  });\n"
    "  var slider = document.getElementById('slider'), i = 0, scale = 1, x = 0, y = 0;\n"
    "  slider.max = data.frames.length - 1;\n"
    "  function place() { canvas.style.transform = 'translate(' + x + 'px,' + y + 'px) scale(' + scale + ')'; }\n"
    "  function setText(id, text) {\n"
    "    var g = groups[id]; if (!g) return;\n"
    "    var lines = text.split('\\n'), t = g.querySelectorAll('text');\n"
    "    for (var k = 0; k < t.length; k++) t[k].textContent = k < lines.length ? lines[k] : '';\n"
    "  }\n"
    "  function visible(g) {\n"
    "    var r = g.getBoundingClientRect(), v = view.getBoundingClientRect();\n"
    "    return r.left >= v.left && r.right <= v.right && r.top >= v.top && r.bottom <= v.bottom;\n"
    "  }\n"
    "  function show(k) {\n"
    "    i = Math.max(0, Math.min(data.frames.length - 1, k));\n"
    "    var fr = data.frames[i];\n"
    "    data.nodes.forEach(function (id, n) { setText(id, fr.labels[n]); });\n"
    "    data.edges.forEach(function (id, n) { setText(id, fr.labels[data.nodes.length + n]); });\n"
    "    svg.querySelectorAll('g.hl').forEach(function (g) { g.classList.remove('hl'); });\n"
    "    if (fr.op) {\n"
    "      Object.keys(groups).forEach(function (id) {\n"
    "        var edge = id.endsWith('->' + fr.op) || id.indexOf(fr.op + '->') === 0;\n"
    "        /* no gradient flows on a grey edge: it stays grey */\n"
    "        if ((id === fr.op || edge) && !groups[id].classList.contains('nograd'))\n"
    "          groups[id].classList.add('hl');\n"
    "      });\n"
    "      var g = groups[fr.op];\n"
    "      if (g && !visible(g) && !document.body.hasAttribute('data-selftest')) {\n"
    "        var r = g.getBoundingClientRect(), v = view.getBoundingClientRect();\n"
    "        x += v.left + v.width / 2 - (r.left + r.width / 2); y += v.top + v.height / 2 - (r.top + r.height / 2);\n"
    "        place();\n"
    "      }\n"
    "    }\n"
    "    slider.value = i;\n"
    "    document.getElementById('caption').textContent = fr.caption;\n"
    "    document.getElementById('counter').textContent = 'frame ' + i + ' of ' + (data.frames.length - 1);\n"
    "    document.body.setAttribute('data-frame', i);\n"
    "    if (history.replaceState) history.replaceState(null, '', '#frame=' + i);\n"
    "  }\n"
    "  function zoom(f, cx, cy) {\n"
    "    var v = view.getBoundingClientRect();\n"
    "    if (cx === undefined) { cx = v.width / 2; cy = v.height / 2; }\n"
    "    x = cx - (cx - x) * f; y = cy - (cy - y) * f; scale *= f; place();\n"
    "  }\n"
    "  function fit() {\n"
    "    var v = view.getBoundingClientRect(), w = svg.width.baseVal.value, h = svg.height.baseVal.value;\n"
    "    scale = Math.min(v.width / w, v.height / h, 1); x = (v.width - w * scale) / 2; y = 0; place();\n"
    "  }\n"
    "  function natural() { scale = 1; x = 0; y = 0; place(); }\n"
    "  document.getElementById('prev').onclick = function () { show(i - 1); };\n"
    "  document.getElementById('next').onclick = function () { show(i + 1); };\n"
    "  document.getElementById('zin').onclick = function () { zoom(1.25); };\n"
    "  document.getElementById('zout').onclick = function () { zoom(0.8); };\n"
    "  document.getElementById('fit').onclick = fit;\n"
    "  document.getElementById('one').onclick = natural;\n"
    "  slider.oninput = function () { show(+slider.value); };\n"
    "  document.addEventListener('keydown', function (e) {\n"
    "    if (e.key === 'ArrowRight') show(i + 1); else if (e.key === 'ArrowLeft') show(i - 1);\n"
    "    else if (e.key === 'Home') show(0); else if (e.key === 'End') show(data.frames.length - 1);\n"
    "    else if (e.key === '+' || e.key === '=') zoom(1.25); else if (e.key === '-') zoom(0.8);\n"
    "    else if (e.key === '0') fit(); else if (e.key === '1') natural();\n"
    "  });\n"
    "  view.addEventListener('wheel', function (e) {\n"
    "    e.preventDefault(); var v = view.getBoundingClientRect();\n"
    "    zoom(e.deltaY < 0 ? 1.1 : 1 / 1.1, e.clientX - v.left, e.clientY - v.top);\n"
    "  }, {passive: false});\n"
    "  var drag = null;\n"
    "  view.addEventListener('mousedown', function (e) { drag = [e.clientX - x, e.clientY - y]; view.classList.add('dragging'); });\n"
    "  window.addEventListener('mouseup', function () { drag = null; view.classList.remove('dragging'); });\n"
    "  window.addEventListener('mousemove', function (e) { if (drag) { x = e.clientX - drag[0]; y = e.clientY - drag[1]; place(); } });\n"
    "  if (location.hash.indexOf('selftest') >= 0) document.body.setAttribute('data-selftest', '');\n"
    "  var wanted = /frame=(\\d+)/.exec(location.hash);\n"
    "  place();\n"
    "  show(wanted ? +wanted[1] : 0);\n"
    "  if (document.body.hasAttribute('data-selftest')) {\n"
    "    function shapes() {\n"
    "      var out = [];\n"
    "      svg.querySelectorAll('g.node > ellipse, g.node > path, g.node > polygon').forEach(function (s) {\n"
    "        var b = s.getBBox(); out.push([b.x, b.y, b.width, b.height].map(Math.round).join(','));\n"
    "      });\n"
    "      return out.join(';') + '|' + svg.getAttribute('width') + 'x' + svg.getAttribute('height');\n"
    "    }\n"
    "    var first = shapes(), same = true, seen = [], smallest = 1e9, hashes = [], start = i, greyLit = 0;\n"
    "    show(0);\n"
    "    for (var k = 0; k < data.frames.length; k++) {\n"
    "      hashes.push(location.hash);\n"
    "      var lit = svg.querySelector('g.node.hl > title');\n"
    "      seen.push(document.body.getAttribute('data-frame') + ':' + (lit ? lit.textContent : 'none'));\n"
    "      if (shapes() !== first) same = false;\n"
    "      greyLit += svg.querySelectorAll('g.hl.nograd').length;\n"
    "      svg.querySelectorAll('text').forEach(function (t) {\n"
    "        if (t.textContent.trim()) smallest = Math.min(smallest, t.getBoundingClientRect().height);\n"
    "      });\n"
    "      document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}));\n"
    "    }\n"
    "    var hashOk = hashes.every(function (h, k) { return h === '#frame=' + k; });\n"
    "    var out = document.getElementById('selftest');\n"
    "    out.textContent = 'frames ' + data.frames.length + ' ' + seen.join(' ') + ' same-layout ' + same +\n"
    "      ' hash ' + hashOk + ' text-px ' + Math.round(smallest * 10) / 10 + ' start ' + start +\n"
    "      ' grey-lit ' + greyLit;\n"
    "    out.hidden = false;\n"
    "  }\n"
    "})();\n</script>\n";

nb_status nb_backward_html(nb_tensor *loss, const char *path, const char *title, const nb_dot_opts *opts) {
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_backward_html: the path is NULL");
        return NB_ERR_NULL;
    }
    if (!title) title = "Backpropagation, step by step";
    film fm;
    nb_status st = shoot(loss, opts, &fm, "nb_backward_html");
    if (st != NB_OK) return st;
    nb_text all = {0};
    const char **ops = op_labels(&fm, &all, "nb_backward_html", &st);
    char *svg = NULL;
    /* Left to right unless asked, or unless that is much wider than tall:
     * then top to bottom, which suits a screen better. */
    const char *rankdir = fm.opts.rankdir ? fm.opts.rankdir : "LR";
    if (st == NB_OK) st = layout_svg(&fm, ops, rankdir, &svg);
    if (st == NB_OK && !fm.opts.rankdir) {
        double w, h;
        svg_size(svg, &w, &h);
        if (w > 1.6 * h && w > 1000) {
            nb_free(svg);
            svg = NULL;
            st = layout_svg(&fm, ops, "TB", &svg); /* wide: top to bottom reads better on a screen */
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
        fputs(page_style, f);
        fputs("</head>\n<body>\n<header>\n<h1>", f);
        put_html_escaped(f, title);
        fputs("</h1>\n<div id=\"controls\"><button id=\"prev\">&#9664; previous</button><input type=\"range\" "
              "id=\"slider\" min=\"0\" value=\"0\"><button id=\"next\">next &#9654;</button><span id=\"counter\">"
              "</span><button id=\"zout\" title=\"zoom out (-)\">&minus;</button><button id=\"zin\" title=\"zoom in "
              "(+)\">+</button><button id=\"fit\" title=\"fit the window (0)\">fit</button><button id=\"one\" "
              "title=\"natural size (1)\">1:1</button></div>\n<p id=\"caption\"></p>\n</header>\n<main>\n"
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
            fputs(", \"labels\": [", f);
            for (size_t i = 0; i < items(&fm); i++) {
                if (i) fputs(", ", f);
                put_json_string(f, fm.frames[k].labels[i]);
            }
            fputs("]}", f);
        }
        fputs("\n]}\n</script>\n", f);
        fputs(page_script, f);
        fputs("</body>\n</html>\n", f);
        st = nb_output_close(&out, st); /* no half page left behind, nothing else removed */
    }
    nb_free(svg);
    nb_free(ops);
    nb_text_free(&all);
    film_free(&fm);
    return st;
}
