/*
 * Rendering a .dot file through Graphviz's C library (libgvc): parse with
 * cgraph, lay out with the "dot" engine, render to the requested format.
 *
 * One Graphviz context serves the whole process.  Starting one loads every
 * plugin, and Graphviz 2.42 keeps a font-name cache across contexts that
 * points into freed memory once a first context is freed and a second one
 * lays out text (AddressSanitizer reports it), so the context is made once
 * and kept.
 */
#include "../internal.h"

#include <gvc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static GVC_t *shared_context;
static pthread_once_t context_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t render_lock = PTHREAD_MUTEX_INITIALIZER; /* Graphviz is not thread-safe */

static void make_context(void) { shared_context = gvContext(); }

/* Graphviz reports errors through cgraph's error function, which prints to
 * stderr by default; while we render, it writes them here instead so that
 * our message can quote them ("syntax error in line 1 near 'this'"). */
static char graphviz_said[256];

static int capture_graphviz_error(char *text) {
    size_t used = strlen(graphviz_said);
    if (used + 1 < sizeof graphviz_said) snprintf(graphviz_said + used, sizeof graphviz_said - used, "%s", text);
    return 0;
}

/* The Graphviz message without "Error: " and the final newline. */
static const char *graphviz_message(void) {
    char *m = graphviz_said;
    if (!strncmp(m, "Error: ", 7)) m += 7;
    m[strcspn(m, "\n")] = '\0';
    return m[0] ? m : "no details";
}

/* The formats nb_dot_render offers: each renders the whole drawing into
 * the one output, in memory.  Graphviz's other devices do not: x11, xlib
 * and gtk open windows (with no display they crash, or call exit), vrml
 * writes a PNG per node into the current directory, others write elsewhere
 * or need a screen. */
static const char *const single_file_formats[] = {"svg", "png", "pdf", "ps", "eps", "jpg", "jpeg", "gif",
                                                  "bmp", "dot", "gv", "xdot", "plain", "plain-ext", "json",
                                                  "canon"};

/* Whether the format ("png", or "png:cairo") is one of those, and Graphviz
 * has a device for it. */
static bool known_format(GVC_t *gvc, const char *format) {
    size_t len = strcspn(format, ":");
    bool offered = false;
    for (size_t i = 0; i < sizeof single_file_formats / sizeof *single_file_formats; i++)
        offered |= strlen(single_file_formats[i]) == len && !strncmp(single_file_formats[i], format, len);
    if (!offered) return false;
    int n = 0;
    char **devices = gvPluginList(gvc, "device", &n, NULL);
    bool found = false;
    for (int i = 0; i < n; i++) {
        found |= strlen(devices[i]) == len && !strncmp(devices[i], format, len);
        free(devices[i]);
    }
    free(devices);
    return found;
}

nb_status nb_dot_render(const char *dot_path, const char *out_path, const char *format) {
    if (!dot_path || !out_path || !format) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dot_render: a path or the format is NULL");
        return NB_ERR_NULL;
    }
    FILE *in = nb_open_input("nb_dot_render", dot_path, NULL); /* a regular file, read no further than its size */
    if (!in) return nb_last_status();
    pthread_once(&context_once, make_context);
    GVC_t *gvc = shared_context;
    if (!gvc) {
        fclose(in);
        nb_set_error(NULL, NB_ERR_UNSUPPORTED, NULL, 0,
                     "nb_dot_render: cannot start Graphviz (is the graphviz package installed?)");
        return NB_ERR_UNSUPPORTED;
    }
    nb_status st = NB_OK;
    pthread_mutex_lock(&render_lock);
    if (!known_format(gvc, format)) {
        fclose(in);
        pthread_mutex_unlock(&render_lock);
        nb_set_error(NULL, NB_ERR_UNSUPPORTED, NULL, 0,
                     "nb_dot_render: '%s' is not an output format it offers (svg, png, pdf, ps, eps, jpg, "
                     "gif, bmp, dot, xdot, plain, json, as Graphviz's build has them)",
                     format);
        return NB_ERR_UNSUPPORTED;
    }
    graphviz_said[0] = '\0';
    agusererrf previous = agseterrf(capture_graphviz_error);
    Agraph_t *g = agread(in, NULL);
    fclose(in);
    if (!g) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "nb_dot_render: %s is not a valid dot file: %s", dot_path,
                     graphviz_message());
    } else if (gvLayout(gvc, g, "dot") != 0) {
        st = NB_ERR_UNSUPPORTED;
        nb_set_error(NULL, st, NULL, 0,
                     "nb_dot_render: Graphviz could not lay out %s (is the dot layout plugin "
                     "installed? try `dot -c` as root)",
                     dot_path);
    } else {
        /* Rendered to memory and written here: Graphviz's own writer calls
         * exit(1) on a write error (a full disk), and gvRenderFilename
         * reports a file it cannot create only on stderr. */
        char *data = NULL;
        unsigned int n = 0;
        if (gvRenderData(gvc, g, format, &data, &n) != 0 || !data) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "nb_dot_render: Graphviz cannot render %s as %s: %s", dot_path, format,
                         graphviz_message());
        } else {
            st = nb_write_whole_file("nb_dot_render", out_path, data, n, false);
        }
        if (data) gvFreeRenderData(data);
        gvFreeLayout(gvc, g);
    }
    if (g) agclose(g);
    agseterrf(previous);
    pthread_mutex_unlock(&render_lock);
    return st;
}

nb_status nb_render_svg_data(const char *dot, char **svg, size_t *len) {
    *svg = NULL;
    *len = 0;
    pthread_once(&context_once, make_context);
    if (!shared_context) {
        nb_set_error(NULL, NB_ERR_UNSUPPORTED, NULL, 0,
                     "nb_render_svg_data: cannot start Graphviz (is the graphviz package installed?)");
        return NB_ERR_UNSUPPORTED;
    }
    nb_status st = NB_OK;
    pthread_mutex_lock(&render_lock);
    Agraph_t *g = agmemread(dot);
    char *data = NULL;
    unsigned int n = 0;
    if (!g) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "nb_render_svg_data: Graphviz could not parse a frame");
    } else if (gvLayout(shared_context, g, "dot") != 0) {
        st = NB_ERR_UNSUPPORTED;
        nb_set_error(NULL, st, NULL, 0, "nb_render_svg_data: Graphviz could not lay out a frame");
    } else {
        if (gvRenderData(shared_context, g, "svg", &data, &n) != 0 || !data) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "nb_render_svg_data: Graphviz could not render SVG");
        } else if (!(*svg = nb_malloc((size_t)n + 1))) {
            st = NB_ERR_NOMEM;
            nb_set_error(NULL, st, NULL, 0, "nb_render_svg_data: out of memory");
        } else {
            memcpy(*svg, data, n);
            (*svg)[n] = '\0';
            *len = n;
        }
        if (data) gvFreeRenderData(data);
        gvFreeLayout(shared_context, g);
    }
    if (g) agclose(g);
    pthread_mutex_unlock(&render_lock);
    return st;
}
