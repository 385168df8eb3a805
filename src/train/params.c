/*
 * Named parameters: a hash table (uthash) from name to tensor, plus an array
 * that keeps insertion order, so saving and iterating are deterministic.
 *
 * The parameter file (all integers little-endian):
 *   "NBPARAMS"                      8 bytes, magic
 *   version                         u32 (1; 2 for a checkpoint)
 *   version 2 only: metadata        u32 count, then count times a key (u16
 *                                   length, bytes) and a value (u32 length,
 *                                   bytes): see src/train/checkpoint.c
 *   count                           u32
 *   count times:
 *     name length, name             u16, bytes (no NUL)
 *     dtype, ndim                   u8 (0 = float32, 1 = float64), u8
 *     shape                         ndim x u64
 *     values                        size x 4 or 8 bytes, IEEE-754 little-endian
 *   crc32 of everything above       u32 (zlib's CRC-32)
 * Parameters are matched by name, never by position or op ids, so a model
 * can reorder its layers and still read its old files.  A checkpoint's
 * optimizer state is more entries, named under NB_RESERVED_PREFIX.
 */
#include "../hash.h"
#include "nabla_train.h"
#include "param_files.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAGIC "NBPARAMS"
#define FORMAT_VERSION 1u

typedef struct {
    char name[NB_NAME_MAX];
    nb_tensor *t;
    UT_hash_handle hh;
} param_entry;

struct nb_params {
    param_entry *by_name;   /* uthash head */
    param_entry **order;    /* insertion order */
    size_t count, cap;
};

nb_params *nb_params_new(void) {
    nb_params *ps = nb_malloc(sizeof *ps);
    if (!ps) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_params_new: out of memory");
        return NULL;
    }
    memset(ps, 0, sizeof *ps);
    return ps;
}

void nb_params_free(nb_params *ps) {
    if (!ps) return;
    param_entry *e, *tmp;
    HASH_ITER(hh, ps->by_name, e, tmp) {
        HASH_DEL(ps->by_name, e);
        nb_tensor_free(e->t);
        nb_free(e);
    }
    nb_free(ps->order);
    nb_free(ps);
}

nb_tensor *nb_params_add(nb_params *ps, const char *name, nb_tensor *t) {
    nb_status st = NB_OK;
    /* First of all, since every refusal below frees t: a tensor the set
     * holds already is the set's to free (once), whatever else is wrong
     * with the call (its own name again, a NULL or empty name).  It would
     * also be freed twice, and updated twice per step. */
    for (size_t i = 0; ps && t && i < ps->count; i++)
        if (ps->order[i]->t == t) {
            nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                         "nb_params_add: the tensor for '%s' is in the set already, as '%s' (to tie "
                         "weights, add the tensor once and use it in both places)",
                         name ? name : "(NULL)", ps->order[i]->name);
            return nb_nil(NB_ERR_ARG); /* not freed: the set owns it */
        }
    if (!ps || !name || !t) {
        st = NB_ERR_NULL;
        nb_set_error(NULL, st, NULL, 0, "nb_params_add: %s is NULL",
                     !ps ? "the parameter set" : !name ? "the name" : "the tensor");
    } else if (nb_tensor_status(t) != NB_OK) {
        st = nb_tensor_status(t);
        nb_set_error(NULL, st, NULL, 0, "nb_params_add: parameter '%s' is %s", name,
                     t->status != NB_OK ? "an errored tensor" : "a tape tensor from before nb_tape_reset");
    } else if (t->home != NB_HOME_HEAP) {
        st = NB_ERR_ARG;
        nb_set_error(NULL, st, NULL, 0,
                     "nb_params_add: parameter '%s' lives on a tape; parameters must be heap "
                     "tensors (created with tape NULL)",
                     name);
    } else if (!name[0] || strlen(name) >= NB_NAME_MAX) {
        st = NB_ERR_ARG;
        nb_set_error(NULL, st, NULL, 0, "nb_params_add: name '%s' must have 1 to %d characters",
                     name, NB_NAME_MAX - 1);
    } else if (nb_is_reserved_name(name, strlen(name))) {
        st = NB_ERR_ARG;
        nb_set_error(NULL, st, NULL, 0,
                     "nb_params_add: name '%s' starts with '" NB_RESERVED_PREFIX "', which files keep for an optimizer's "
                     "state", name);
    } else if (nb_params_get(ps, name)) {
        st = NB_ERR_ARG;
        nb_set_error(NULL, st, NULL, 0, "nb_params_add: a parameter named '%s' exists already",
                     name);
    }
    if (st != NB_OK) {
        nb_tensor_free(t);
        return nb_nil(st);
    }
    if (ps->count == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 16;
        param_entry **grown = nb_realloc(ps->order, cap * sizeof *grown);
        if (!grown) goto out_of_memory;
        ps->order = grown;
        ps->cap = cap;
    }
    param_entry *e = nb_malloc(sizeof *e);
    if (!e) goto out_of_memory;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->t = t;
    nb_hash_oom = false;
    HASH_ADD_STR(ps->by_name, name, e);
    if (nb_hash_oom) { /* the table could not grow: e was not added */
        nb_free(e);
        goto out_of_memory;
    }
    ps->order[ps->count++] = e;
    nb_tensor_set_name(t, name);
    nb_requires_grad(t, true);
    return t;
out_of_memory:
    nb_tensor_free(t);
    return nb_fail(NULL, NB_ERR_NOMEM, NULL, 0, "nb_params_add: out of memory adding '%s'", name);
}

nb_tensor *nb_params_get(const nb_params *ps, const char *name) {
    if (!ps || !name) return NULL;
    param_entry *e;
    HASH_FIND_STR(ps->by_name, name, e);
    return e ? e->t : NULL;
}

size_t nb_params_count(const nb_params *ps) { return ps ? ps->count : 0; }

nb_tensor *nb_params_at(const nb_params *ps, size_t i) {
    return ps && i < ps->count ? ps->order[i]->t : NULL;
}

void nb_params_zero_grad(nb_params *ps) {
    for (size_t i = 0; ps && i < ps->count; i++) nb_zero_grad(ps->order[i]->t);
}

/* Does path end with suffix? */
static bool ends_with(const char *path, const char *suffix) {
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && !strcmp(path + n - k, suffix);
}

nb_status nb_params_save(const nb_params *ps, const char *path) {
    if (!ps || !path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_params_save: %s is NULL",
                     ps ? "the path" : "the parameter set");
        return NB_ERR_NULL;
    }
    if (ends_with(path, ".safetensors")) return nb_params_save_safetensors(ps, path);
    return nb_nbp_save("nb_params_save", ps, NULL, path);
}

static void put_entry(nb_bytes *w, const char *name, const nb_tensor *t) {
    size_t name_len = strlen(name);
    nb_bytes_put_uint(w, name_len, 2);
    nb_bytes_put(w, name, name_len);
    nb_bytes_put_uint(w, (uint64_t)t->dtype, 1);
    nb_bytes_put_uint(w, (uint64_t)t->ndim, 1);
    for (int d = 0; d < t->ndim; d++) nb_bytes_put_uint(w, t->shape[d], 8);
    nb_bytes_put_values(w, t);
}

nb_status nb_nbp_save(const char *who, const nb_params *ps, const nb_file_extras *x, const char *path) {
    nb_bytes w = {0};
    size_t n_extra = x ? x->n_extra : 0;
    nb_bytes_put(&w, MAGIC, 8);
    nb_bytes_put_uint(&w, x ? 2 : FORMAT_VERSION, 4);
    if (x) {
        size_t n_meta = x->meta ? x->meta->n : 0;
        nb_bytes_put_uint(&w, n_meta, 4);
        for (size_t i = 0; i < n_meta; i++) {
            const nb_meta_entry *e = &x->meta->e[i];
            nb_bytes_put_uint(&w, strlen(e->key), 2);
            nb_bytes_put(&w, e->key, strlen(e->key));
            nb_bytes_put_uint(&w, strlen(e->value), 4);
            nb_bytes_put(&w, e->value, strlen(e->value));
        }
    }
    nb_bytes_put_uint(&w, ps->count + n_extra, 4);
    for (size_t i = 0; i < ps->count; i++) put_entry(&w, ps->order[i]->name, ps->order[i]->t);
    for (size_t i = 0; x && i < n_extra; i++) put_entry(&w, x->extra[i].name, x->extra[i].t);
    if (!w.failed) nb_bytes_put_uint(&w, crc32(crc32(0L, Z_NULL, 0), w.buf, (uInt)w.len), 4);
    nb_status st;
    if (w.failed) {
        st = NB_ERR_NOMEM;
        nb_set_error(NULL, st, NULL, 0, "%s: out of memory writing %s", who, path);
    } else {
        st = nb_write_whole_file(who, path, w.buf, w.len, true);
    }
    nb_free(w.buf);
    return st;
}

/* ---------------------------------------------------------------- reading */

typedef struct {
    const unsigned char *p, *end;
    const char *who, *path;
} reader;

/* Takes n bytes; false (with the error set) if the file ends first. */
static bool take(reader *r, size_t n, const unsigned char **out, const char *what) {
    if ((size_t)(r->end - r->p) < n) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s is truncated: %s needs %zu bytes, %zu left", r->who,
                     r->path, what, n, (size_t)(r->end - r->p));
        return false;
    }
    *out = r->p;
    r->p += n;
    return true;
}

static bool take_uint(reader *r, int bytes, uint64_t *v, const char *what) {
    const unsigned char *b;
    if (!take(r, (size_t)bytes, &b, what)) return false;
    *v = nb_get_uint_le(b, bytes);
    return true;
}

/* Where each tensor's values start in the file, once all are checked. */
typedef struct { nb_tensor *t; const unsigned char *values; } staged;

/* Version 2's metadata block, into meta. */
static nb_status read_metadata(reader *r, nb_meta *meta) {
    uint64_t n, key_len, value_len;
    const unsigned char *key, *value;
    if (!take_uint(r, 4, &n, "the metadata count")) return NB_ERR_VALUE;
    for (uint64_t i = 0; i < n; i++) {
        if (!take_uint(r, 2, &key_len, "a metadata key's length") || !take(r, key_len, &key, "a metadata key") ||
            !take_uint(r, 4, &value_len, "a metadata value's length") ||
            !take(r, value_len, &value, "a metadata value"))
            return NB_ERR_VALUE;
        if (memchr(key, 0, key_len) || memchr(value, 0, value_len)) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: metadata entry %llu holds a NUL byte", r->who, r->path,
                         (unsigned long long)i);
            return NB_ERR_VALUE;
        }
        nb_meta_put(meta, (const char *)key, key_len, (const char *)value, value_len);
    }
    if (meta->failed) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory reading %s", r->who, r->path);
        return NB_ERR_NOMEM;
    }
    const char *twice = nb_meta_duplicate(meta);
    if (twice) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the metadata holds the key '%.80s' twice", r->who, r->path,
                     twice);
        return NB_ERR_VALUE;
    }
    return NB_OK;
}

/* Every check, with the tensors' places in stage (cap entries); *n_staged
 * of them are to be written. */
static nb_status parse(nb_params *ps, const nb_file_extras *x, reader *r, nb_meta *meta, staged *stage,
                       size_t *n_staged) {
    char shape_file[128], shape_model[128];
    const unsigned char *magic;
    uint64_t version, count;
    size_t expected = ps->count + (x && !x->skip_reserved ? x->n_extra : 0);
    if (!take(r, 8, &magic, "the magic number")) return NB_ERR_VALUE;
    if (memcmp(magic, MAGIC, 8) != 0) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s is not a nabla parameter file (bad magic number)", r->who,
                     r->path);
        return NB_ERR_VALUE;
    }
    /* The checksum covers everything before its own 4 bytes. */
    if (r->end - r->p < 12) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s is truncated (no header)", r->who, r->path);
        return NB_ERR_VALUE;
    }
    uint32_t stored = (uint32_t)nb_get_uint_le(r->end - 4, 4);
    uint32_t actual = (uint32_t)crc32(crc32(0L, Z_NULL, 0), magic, (uInt)(r->end - 4 - magic));
    r->end -= 4;
    if (!take_uint(r, 4, &version, "the version")) return NB_ERR_VALUE;
    if (version != FORMAT_VERSION && version != 2) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s has format version %llu; this nabla reads versions 1 and 2",
                     r->who, r->path, (unsigned long long)version);
        return NB_ERR_VALUE;
    }
    if (stored != actual) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s is corrupt or truncated (checksum %08x, expected %08x)",
                     r->who, r->path, (unsigned)actual, (unsigned)stored);
        return NB_ERR_VALUE;
    }
    nb_status st;
    if (version == 2 && (st = read_metadata(r, meta)) != NB_OK) return st;
    if (x && x->check && (st = x->check(x->user, meta)) != NB_OK) return st;
    if (!take_uint(r, 4, &count, "the count")) return NB_ERR_VALUE;
    /* (a version 2 file may hold state that skip_reserved passes over) */
    if (count != expected && !(x && x->skip_reserved && version == 2)) {
        if (x && !x->skip_reserved)
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s holds %llu tensors; the model's %zu parameters and the optimizer's state make %zu",
                         r->who, r->path, (unsigned long long)count, ps->count, expected);
        else
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s holds %llu parameters, the model has %zu", r->who,
                         r->path, (unsigned long long)count, ps->count);
        return NB_ERR_VALUE;
    }
    size_t found = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t name_len, dtype, ndim;
        const unsigned char *name_bytes, *values;
        if (!take_uint(r, 2, &name_len, "a name length")) return NB_ERR_VALUE;
        bool reserved = r->end - r->p >= (ptrdiff_t)name_len && nb_is_reserved_name((const char *)r->p, name_len);
        if (name_len == 0 || name_len >= (reserved ? NB_FILE_NAME_MAX : NB_NAME_MAX)) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: parameter %zu has a name of %llu bytes", r->who,
                         r->path, i, (unsigned long long)name_len);
            return NB_ERR_VALUE;
        }
        if (!take(r, name_len, &name_bytes, "a name")) return NB_ERR_VALUE;
        char name[NB_FILE_NAME_MAX];
        memcpy(name, name_bytes, name_len);
        name[name_len] = '\0';
        if (!take_uint(r, 1, &dtype, "a dtype") || !take_uint(r, 1, &ndim, "a rank")) return NB_ERR_VALUE;
        bool skip;
        nb_tensor *t = nb_file_target(ps, x, name, &skip);
        if (!t && !skip) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s has a %s '%s' that the %s does not", r->who, r->path,
                         reserved ? "tensor" : "parameter", name, reserved ? "optimizer" : "model");
            return NB_ERR_VALUE;
        }
        for (size_t k = 0; t && k < found; k++)
            if (stage[k].t == t) {
                nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s holds '%s' twice", r->who, r->path, name);
                return NB_ERR_VALUE;
            }
        if (dtype > NB_F64 || ndim > NB_MAX_DIMS) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: '%s' has dtype %llu and %llu dimensions", r->who,
                         r->path, name, (unsigned long long)dtype, (unsigned long long)ndim);
            return NB_ERR_VALUE;
        }
        size_t shape[NB_MAX_DIMS];
        bool same = t && (int)ndim == t->ndim;
        uint64_t size = 1;
        for (size_t d = 0; d < ndim; d++) {
            uint64_t sz;
            if (!take_uint(r, 8, &sz, "a shape")) return NB_ERR_VALUE;
            shape[d] = (size_t)sz;
            same = same && shape[d] == t->shape[d];
            size = sz && size > UINT64_MAX / 8 / sz ? UINT64_MAX / 8 : size * sz;
        }
        if (!t) { /* a checkpoint's state, passed over */
            if (!take(r, (size_t)(size * nb_dtype_size((nb_dtype)dtype)), &values, "values")) return NB_ERR_VALUE;
            continue;
        }
        if (!same || (nb_dtype)dtype != t->dtype) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: '%s' is %s %s in the file but %s %s in the %s", r->who,
                         r->path, name, nb_format_shape((int)ndim, shape, shape_file, sizeof shape_file),
                         dtype == NB_F32 ? "float32" : "float64",
                         nb_format_shape(t->ndim, t->shape, shape_model, sizeof shape_model),
                         t->dtype == NB_F32 ? "float32" : "float64", reserved ? "optimizer" : "model");
            return NB_ERR_VALUE;
        }
        if (!take(r, t->size * nb_dtype_size(t->dtype), &values, "values")) return NB_ERR_VALUE;
        stage[found].t = t;
        stage[found++].values = values;
    }
    if (r->p != r->end) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s has %zu unexpected bytes at the end", r->who, r->path,
                     (size_t)(r->end - r->p));
        return NB_ERR_VALUE;
    }
    if (found < expected) { /* only when reserved tensors were passed over: a parameter is missing */
        for (size_t k = 0; k < ps->count; k++) {
            bool here = false;
            for (size_t i = 0; i < found && !here; i++) here = stage[i].t == ps->order[k]->t;
            if (!here) {
                nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s has no '%s', a parameter of the model", r->who,
                             r->path, ps->order[k]->name);
                return NB_ERR_VALUE;
            }
        }
    }
    *n_staged = found;
    return NB_OK;
}

nb_status nb_nbp_load_buffer(nb_params *ps, const nb_file_extras *x, const char *who, const char *path,
                             const unsigned char *buf, size_t len) {
    size_t cap = ps->count + (x ? x->n_extra : 0), n = 0;
    staged *stage = nb_malloc((cap ? cap : 1) * sizeof *stage);
    if (!stage) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
        return NB_ERR_NOMEM;
    }
    reader r = {buf, buf + len, who, path};
    nb_meta meta = {0};
    nb_status st = parse(ps, x, &r, &meta, stage, &n);
    /* Only now, with every check passed, change the model. */
    for (size_t i = 0; st == NB_OK && i < n; i++) {
        nb_tensor *t = stage[i].t;
        size_t width = nb_dtype_size(t->dtype);
        nb_mark_written(t);
        for (size_t k = 0; k < t->size; k++) {
            uint64_t bits = nb_get_uint_le(stage[i].values + k * width, (int)width);
            if (t->dtype == NB_F32) {
                uint32_t b32 = (uint32_t)bits;
                memcpy(&NB_F(t)[k], &b32, 4);
            } else {
                memcpy(&NB_D(t)[k], &bits, 8);
            }
        }
    }
    if (st == NB_OK && x && x->commit) x->commit(x->user, &meta);
    nb_meta_free(&meta);
    nb_free(stage);
    return st;
}

nb_status nb_params_load(nb_params *ps, const char *path) {
    if (!ps || !path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_params_load: %s is NULL",
                     ps ? "the path" : "the parameter set");
        return NB_ERR_NULL;
    }
    /* A checkpoint's parameters load alone: its optimizer state is passed over. */
    nb_file_extras params_only = {.skip_reserved = true};
    return nb_load_any(ps, &params_only, "nb_params_load", path);
}
