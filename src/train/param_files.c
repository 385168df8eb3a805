/*
 * The file handling shared by nabla's parameter formats (src/train/params.c,
 * src/train/safetensors.c): a growing byte buffer with little-endian
 * writers.  Their files are written and read by src/tensor/files.c.
 */
#include "param_files.h"

#include <string.h>

void nb_bytes_put(nb_bytes *w, const void *p, size_t n) {
    if (w->failed) return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n) cap *= 2;
        unsigned char *grown = nb_realloc(w->buf, cap);
        if (!grown) {
            w->failed = true;
            return;
        }
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

/* Little-endian integers, whatever the host's byte order. */
void nb_bytes_put_uint(nb_bytes *w, uint64_t v, int bytes) {
    unsigned char b[8];
    for (int i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    nb_bytes_put(w, b, (size_t)bytes);
}

void nb_bytes_put_values(nb_bytes *w, const nb_tensor *t) {
    for (size_t i = 0; i < t->size; i++) {
        if (t->dtype == NB_F32) {
            uint32_t bits;
            memcpy(&bits, &NB_F(t)[i], 4);
            nb_bytes_put_uint(w, bits, 4);
        } else {
            uint64_t bits;
            memcpy(&bits, &NB_D(t)[i], 8);
            nb_bytes_put_uint(w, bits, 8);
        }
    }
}

uint64_t nb_get_uint_le(const unsigned char *b, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}
