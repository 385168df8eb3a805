/*
 * Broadcasting, NumPy's rule, shared by the ops that take several inputs:
 * shapes are aligned from the right, and along each axis the sizes must be
 * equal or 1 (a missing leading axis counts as 1).  An input of size 1
 * along an axis is read again for every position of the result there, so
 * its gradient sums the result's gradient over that axis.
 */
#include "../internal.h"

#include <string.h>

bool nb_broadcast_shape(int n, nb_tensor *const *t, int *nd, size_t *shape) {
    int out = 0;
    for (int k = 0; k < n; k++) out = t[k]->ndim > out ? t[k]->ndim : out;
    for (int d = 0; d < out; d++) {
        size_t size = 1;
        for (int k = 0; k < n; k++) {
            int dk = d - (out - t[k]->ndim);
            size_t s = dk >= 0 ? t[k]->shape[dk] : 1;
            if (s == 1) continue;
            if (size != 1 && size != s) return false;
            size = s;
        }
        shape[d] = size;
    }
    *nd = out;
    return true;
}

void nb_broadcast_strides(const nb_tensor *t, int nd, size_t *strides) {
    size_t stride = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int dt = d - (nd - t->ndim);
        size_t size = dt >= 0 ? t->shape[dt] : 1;
        strides[d] = size == 1 ? 0 : stride;
        stride *= size;
    }
}

char *nb_format_shapes(int n, nb_tensor *const *t, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < n && used < size; k++) {
        char s[128];
        int w = snprintf(buf + used, size - used, "%s%s", k == 0 ? "" : k == n - 1 ? " and " : ", ",
                         nb_format_shape(t[k]->ndim, t[k]->shape, s, sizeof s));
        if (w > 0) used += (size_t)w;
    }
    return buf;
}
