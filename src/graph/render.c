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

#include <errno.h>
#include <gvc.h>
#include <pthread.h>
#include <string.h>

static GVC_t *shared_context;
static pthread_once_t context_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t render_lock = PTHREAD_MUTEX_INITIALIZER; /* Graphviz is not thread-safe */

static void make_context(void) { shared_context = gvContext(); }

nb_status nb_dot_render(const char *dot_path, const char *out_path, const char *format) {
    if (!dot_path || !out_path || !format) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dot_render: a path or the format is NULL");
        return NB_ERR_NULL;
    }
    FILE *in = fopen(dot_path, "r");
    if (!in) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_dot_render: cannot open %s: %s", dot_path,
                     strerror(errno));
        return NB_ERR_IO;
    }
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
    Agraph_t *g = agread(in, NULL);
    fclose(in);
    if (!g) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "nb_dot_render: %s is not a valid dot file", dot_path);
    } else if (gvLayout(gvc, g, "dot") != 0) {
        st = NB_ERR_UNSUPPORTED;
        nb_set_error(NULL, st, NULL, 0,
                     "nb_dot_render: Graphviz could not lay out %s (is the dot layout plugin "
                     "installed? try `dot -c` as root)",
                     dot_path);
    } else {
        if (gvRenderFilename(gvc, g, format, out_path) != 0) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0,
                         "nb_dot_render: cannot render %s as %s to %s (unknown format, or the "
                         "file cannot be written)",
                         dot_path, format, out_path);
        }
        gvFreeLayout(gvc, g);
    }
    if (g) agclose(g);
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
