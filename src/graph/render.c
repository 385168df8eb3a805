/*
 * Rendering a .dot file through Graphviz's C library (libgvc): parse with
 * cgraph, lay out with the "dot" engine, render to the requested format.
 */
#include "../internal.h"

#include <errno.h>
#include <gvc.h>
#include <string.h>

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
    GVC_t *gvc = gvContext();
    if (!gvc) {
        fclose(in);
        nb_set_error(NULL, NB_ERR_UNSUPPORTED, NULL, 0,
                     "nb_dot_render: cannot start Graphviz (is the graphviz package installed?)");
        return NB_ERR_UNSUPPORTED;
    }
    nb_status st = NB_OK;
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
    gvFreeContext(gvc);
    return st;
}
