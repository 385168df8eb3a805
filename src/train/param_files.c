/*
 * The file handling shared by nabla's parameter formats (src/train/params.c,
 * src/train/safetensors.c): a growing byte buffer with little-endian
 * writers.  Their files are written and read by src/tensor/files.c.
 */
#include "param_files.h"

#include <stdio.h>
#include <stdlib.h>
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

/* ---------------------------------------------------------------- checkpoints */

bool nb_is_reserved_name(const char *name, size_t len) {
    size_t k = sizeof NB_RESERVED_PREFIX - 1;
    return len >= k && !memcmp(name, NB_RESERVED_PREFIX, k);
}

void nb_meta_put(nb_meta *m, const char *key, size_t key_len, const char *value, size_t len) {
    if (m->failed) return;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 16;
        nb_meta_entry *grown = nb_realloc(m->e, cap * sizeof *grown);
        if (!grown) {
            m->failed = true;
            return;
        }
        m->e = grown;
        m->cap = cap;
    }
    char *k = nb_malloc(key_len + 1), *v = nb_malloc(len + 1);
    if (!k || !v) {
        nb_free(k);
        nb_free(v);
        m->failed = true;
        return;
    }
    memcpy(k, key, key_len);
    k[key_len] = '\0';
    memcpy(v, value, len);
    v[len] = '\0';
    m->e[m->n++] = (nb_meta_entry){k, v};
}

const char *nb_meta_get(const nb_meta *m, const char *key) {
    for (size_t i = 0; m && i < m->n; i++)
        if (!strcmp(m->e[i].key, key)) return m->e[i].value;
    return NULL;
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const nb_meta_entry *)a)->key, ((const nb_meta_entry *)b)->key);
}

const char *nb_meta_duplicate(nb_meta *m) {
    if (m->n < 2) return NULL;
    qsort(m->e, m->n, sizeof *m->e, by_key); /* (a read file's order matters to no one) */
    for (size_t i = 1; i < m->n; i++)
        if (!strcmp(m->e[i - 1].key, m->e[i].key)) return m->e[i].key;
    return NULL;
}

void nb_meta_free(nb_meta *m) {
    for (size_t i = 0; i < m->n; i++) {
        nb_free(m->e[i].key);
        nb_free(m->e[i].value);
    }
    nb_free(m->e);
    memset(m, 0, sizeof *m);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const nb_named *)a)->name, ((const nb_named *)b)->name);
}

void nb_named_sort(nb_named *x, size_t n) {
    if (n) qsort(x, n, sizeof *x, by_name);
}

nb_tensor *nb_file_target(nb_params *ps, const nb_file_extras *x, const char *name, bool *skip) {
    *skip = false;
    if (!nb_is_reserved_name(name, strlen(name))) return nb_params_get(ps, name);
    if (!x || x->skip_reserved) {
        *skip = x != NULL;
        return NULL;
    }
    nb_named key = {.t = NULL};
    snprintf(key.name, sizeof key.name, "%s", name);
    const nb_named *found = x->n_extra ? bsearch(&key, x->extra, x->n_extra, sizeof key, by_name) : NULL;
    return found ? found->t : NULL;
}

nb_status nb_load_any(nb_params *ps, const nb_file_extras *x, const char *who, const char *path) {
    size_t len = 0;
    nb_status st;
    unsigned char *buf = nb_read_whole_file(who, path, &len, &st);
    if (!buf) return st;
    /* Not nabla's magic, but a length and a '{': PyTorch users' format. */
    bool safetensors = len >= 9 && memcmp(buf, "NBPARAMS", 8) != 0 && buf[8] == '{';
    st = safetensors ? nb_safetensors_load_buffer(ps, x, who, path, buf, len)
                     : nb_nbp_load_buffer(ps, x, who, path, buf, len);
    nb_free(buf);
    return st;
}
