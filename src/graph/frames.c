/*
 * Backward, step by step: a picture of the graph before the gradient flows,
 * then one after each tape entry's backward, with that entry highlighted and
 * the gradients known so far; as .dot files, or as one HTML page that steps
 * through them.
 *
 * The frames are taken by a backward hook (nb_tape_set_backward_hook), which
 * runs after each entry, and written with the ordinary dot writer.
 */
#include "../internal.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char *dot;
    size_t entry;          /* 1 + entry index; 0 for the first frame */
} frame;

typedef struct {
    frame *frames;
    size_t n, cap;
    nb_dot_opts opts;
    nb_status status;
} film;

/* Writes the tape's current state as one more frame. */
static void take(film *fm, nb_tape *tp, size_t highlight) {
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
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        fm->status = NB_ERR_NOMEM;
        return;
    }
    nb_dot_opts o = fm->opts;
    o.highlight = highlight;
    if (highlight == 0) o.show_grads = false; /* before backward: none yet */
    nb_status st = nb_dot_write(tp, f, &o);
    fclose(f);
    if (st != NB_OK) {
        free(buf); /* open_memstream's buffer comes from malloc */
        fm->status = st;
        return;
    }
    fm->frames[fm->n].dot = buf;
    fm->frames[fm->n].entry = highlight;
    fm->n++;
}

static void after_entry(nb_tape *tp, size_t entry, void *user) { take(user, tp, entry + 1); }

static void film_free(film *fm) {
    for (size_t i = 0; i < fm->n; i++) free(fm->frames[i].dot);
    nb_free(fm->frames);
}

/* Runs the backward pass and films it. */
static nb_status shoot(nb_tensor *loss, const nb_dot_opts *opts, film *fm, const char *what) {
    memset(fm, 0, sizeof *fm);
    if (!loss || loss->status != NB_OK || !loss->on_tape) {
        nb_set_error(NULL, NB_ERR_STATE, NULL, 0,
                     "%s: the loss must be a valid tensor recorded on a tape", what);
        return NB_ERR_STATE;
    }
    nb_tape *tp = loss->tape;
    if (opts)
        fm->opts = *opts;
    else
        nb_dot_default_opts(&fm->opts);
    if (!fm->opts.loss) fm->opts.loss = loss;
    /* The filmed pass starts every leaf's gradient from nothing, so that the
     * frames show this pass's gradients alone, and the leaves get back the
     * gradients they had before (no doubling when nb_backward ran already). */
    nb_saved_grads leaves;
    if (!nb_save_leaf_grads(tp, loss, &leaves)) {
        nb_restore_leaf_grads(&leaves);
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory keeping the gradients", what);
        return NB_ERR_NOMEM;
    }
    nb_backward_hook saved_hook = tp->hook;
    void *saved_user = tp->hook_user;
    bool saved_explain = tp->explain;
    tp->explain = true;
    take(fm, tp, 0);
    tp->hook = after_entry;
    tp->hook_user = fm;
    nb_status st = fm->status == NB_OK ? nb_backward(loss) : fm->status;
    tp->hook = saved_hook;
    tp->hook_user = saved_user;
    tp->explain = saved_explain;
    nb_restore_leaf_grads(&leaves);
    if (st == NB_OK) st = fm->status;
    if (st == NB_ERR_NOMEM && fm->status == NB_ERR_NOMEM)
        nb_set_error(NULL, st, NULL, 0, "%s: out of memory writing the frames", what);
    if (st != NB_OK) film_free(fm);
    return st;
}

nb_status nb_backward_frames(nb_tensor *loss, const char *dir, const nb_dot_opts *opts,
                             size_t *n_frames) {
    if (!dir) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_backward_frames: the directory is NULL");
        return NB_ERR_NULL;
    }
    if (!dir[0]) { /* "" + "/frame_000.dot" would be a file in the root directory */
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_backward_frames: the directory name is empty (use \".\" for "
                     "the current directory)");
        return NB_ERR_ARG;
    }
    film fm;
    nb_status st = shoot(loss, opts, &fm, "nb_backward_frames");
    if (st != NB_OK) return st;
    for (size_t i = 0; i < fm.n && st == NB_OK; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/frame_%03zu.dot", dir, i);
        FILE *f = fopen(path, "w");
        if (!f || fputs(fm.frames[i].dot, f) < 0) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "nb_backward_frames: cannot write %s: %s", path,
                         strerror(errno));
        }
        if (f && fclose(f) != 0 && st == NB_OK) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "nb_backward_frames: cannot write %s", path);
        }
    }
    if (n_frames) *n_frames = fm.n;
    film_free(&fm);
    return st;
}

/* ---------------------------------------------------------------- HTML */

static void put_html_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* What a frame shows, in words. */
static void caption(char *buf, size_t n, const nb_tape *tp, const frame *fr, size_t index, size_t count) {
    if (fr->entry == 0) {
        snprintf(buf, n,
                 "The forward pass, recorded on the tape: %zu entries. Backward starts from the "
                 "loss with dL/dL = 1 and walks the tape in reverse.",
                 tp->n_entries);
        return;
    }
    const nb_entry *e = &tp->entries[fr->entry - 1];
    int w = snprintf(buf, n,
                     "Step %zu of %zu: backward through %s (tape entry %zu). Its upstream gradient "
                     "times the local derivative of each input is added into that input's gradient",
                     index, count - 1, e->op->name, fr->entry - 1);
    if (w > 0 && (size_t)w < n && index + 1 == count)
        snprintf(buf + w, n - (size_t)w, ". Every gradient is now known.");
    else if (w > 0 && (size_t)w < n)
        snprintf(buf + w, n - (size_t)w, ".");
}

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>";
static const char page_style[] =
    "</title>\n<style>\n"
    "body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }\n"
    "#controls { display: flex; gap: 0.8em; align-items: center; margin: 0.6em 0; }\n"
    "#slider { flex: 1; max-width: 40em; }\n"
    "#caption { min-height: 2.6em; max-width: 60em; }\n"
    ".frame { display: none; overflow: auto; border: 1px solid #ddd; padding: 0.5em; }\n"
    ".frame svg { max-width: 100%; height: auto; }\n"
    "kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 0.3em; }\n"
    "</style>\n</head>\n<body>\n<h1>";
static const char page_controls[] =
    "</h1>\n<div id=\"controls\"><button id=\"prev\">&#9664; previous</button>"
    "<input type=\"range\" id=\"slider\" min=\"0\" value=\"0\"><button id=\"next\">next &#9654;"
    "</button><span id=\"counter\"></span></div>\n"
    "<p>Step with the buttons, the slider, or the <kbd>&larr;</kbd> <kbd>&rarr;</kbd> keys. "
    "The highlighted op is the one whose backward just ran; its edges show upstream gradient "
    "&times; local derivative = contribution.</p>\n<p id=\"caption\"></p>\n";
/* The stepper.  #frame=N in the address opens frame N.  With #selftest it steps through every frame
 * by key presses and writes, for each, which op is highlighted in the SVG
 * that is showing (for the browser test). */
static const char page_script[] =
    "<pre id=\"selftest\" hidden></pre>\n<script>\n(function () {\n"
    "  var frames = document.querySelectorAll('.frame'), i = 0;\n"
    "  var slider = document.getElementById('slider'), caption = document.getElementById('caption');\n"
    "  var counter = document.getElementById('counter');\n"
    "  slider.max = frames.length - 1;\n"
    "  function show(k) {\n"
    "    i = Math.max(0, Math.min(frames.length - 1, k));\n"
    "    for (var j = 0; j < frames.length; j++) frames[j].style.display = j === i ? 'block' : 'none';\n"
    "    slider.value = i;\n"
    "    caption.textContent = frames[i].getAttribute('data-caption');\n"
    "    counter.textContent = 'frame ' + i + ' of ' + (frames.length - 1);\n"
    "    document.body.setAttribute('data-frame', i);\n"
    "  }\n"
    "  function highlighted() {\n"
    "    var shape = frames[i].querySelector('ellipse[fill=\"#e06666\"]');\n"
    "    if (!shape || frames[i].style.display !== 'block') return 'none';\n"
    "    return shape.parentNode.querySelector('title').textContent;\n"
    "  }\n"
    "  document.getElementById('prev').onclick = function () { show(i - 1); };\n"
    "  document.getElementById('next').onclick = function () { show(i + 1); };\n"
    "  slider.oninput = function () { show(+slider.value); };\n"
    "  document.addEventListener('keydown', function (e) {\n"
    "    if (e.key === 'ArrowRight') show(i + 1);\n"
    "    else if (e.key === 'ArrowLeft') show(i - 1);\n"
    "    else if (e.key === 'Home') show(0);\n"
    "    else if (e.key === 'End') show(frames.length - 1);\n"
    "  });\n"
    "  var wanted = /frame=(\\d+)/.exec(location.hash);\n"
    "  show(wanted ? +wanted[1] : 0);\n"
    "  if (location.hash === '#selftest') {\n"
    "    var seen = [];\n"
    "    for (var k = 0; k < frames.length; k++) {\n"
    "      seen.push(document.body.getAttribute('data-frame') + ':' + highlighted());\n"
    "      document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}));\n"
    "    }\n"
    "    var out = document.getElementById('selftest');\n"
    "    out.textContent = 'frames ' + frames.length + ' ' + seen.join(' ');\n"
    "    out.hidden = false;\n"
    "  }\n"
    "})();\n</script>\n</body>\n</html>\n";

nb_status nb_backward_html(nb_tensor *loss, const char *path, const char *title,
                           const nb_dot_opts *opts) {
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_backward_html: the path is NULL");
        return NB_ERR_NULL;
    }
    if (!title) title = "Backpropagation, step by step";
    film fm;
    nb_status st = shoot(loss, opts, &fm, "nb_backward_html");
    if (st != NB_OK) return st;
    FILE *f = fopen(path, "w");
    if (!f) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_backward_html: cannot write %s: %s", path,
                     strerror(errno));
        film_free(&fm);
        return NB_ERR_IO;
    }
    fputs(page_head, f);
    put_html_escaped(f, title);
    fputs(page_style, f);
    put_html_escaped(f, title);
    fputs(page_controls, f);
    for (size_t i = 0; i < fm.n && st == NB_OK; i++) {
        char *svg = NULL, text[512];
        size_t len;
        st = nb_render_svg_data(fm.frames[i].dot, &svg, &len);
        if (st != NB_OK) break;
        caption(text, sizeof text, loss->tape, &fm.frames[i], i, fm.n);
        fputs("<div class=\"frame\" data-caption=\"", f);
        put_html_escaped(f, text);
        fputs("\">\n", f);
        /* Drop the XML declaration and doctype: the <svg> element goes inline. */
        const char *start = strstr(svg, "<svg");
        fputs(start ? start : svg, f);
        fputs("</div>\n", f);
        nb_free(svg);
    }
    fputs(page_script, f);
    if (fclose(f) != 0 && st == NB_OK) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "nb_backward_html: cannot write %s: %s", path, strerror(errno));
    }
    film_free(&fm);
    return st;
}
