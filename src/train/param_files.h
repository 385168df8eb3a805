/*
 * Shared by the parameter file formats (src/train/params.c for nabla's own,
 * src/train/safetensors.c for PyTorch's): not installed.
 */
#ifndef NABLA_PARAM_FILES_H
#define NABLA_PARAM_FILES_H

#include "../internal.h"
#include "nabla_train.h"

/* A byte buffer that grows as it is written; `failed` is set (and further
 * writes ignored) when memory runs out. */
typedef struct {
    unsigned char *buf;
    size_t len, cap;
    bool failed;
} nb_bytes;

void nb_bytes_put(nb_bytes *w, const void *p, size_t n);
/* v as `bytes` little-endian bytes, whatever the host's byte order. */
void nb_bytes_put_uint(nb_bytes *w, uint64_t v, int bytes);
/* t's values, IEEE-754 little-endian, in t's dtype. */
void nb_bytes_put_values(nb_bytes *w, const nb_tensor *t);
/* The little-endian integer of `bytes` bytes at b. */
uint64_t nb_get_uint_le(const unsigned char *b, int bytes);

/* ---------------------------------------------------------------- checkpoints
 * A checkpoint (src/train/checkpoint.c) is a parameter file, in either
 * format, with more tensors under reserved names (an optimizer's moments)
 * and metadata (string keys and values: the step count, the options, the
 * generator).  The formats write and read them through these. */

/* Tensors named with this prefix are an optimizer's state, never
 * parameters (nb_params_add refuses the prefix). */
#define NB_RESERVED_PREFIX "__nabla__/"
/* Names in a file: a parameter's fit NB_NAME_MAX, reserved ones this. */
#define NB_FILE_NAME_MAX 96

bool nb_is_reserved_name(const char *name, size_t len);

typedef struct {
    char *key, *value;
} nb_meta_entry;

/* Metadata: key-value strings in order; `failed` when memory ran out. */
typedef struct {
    nb_meta_entry *e;
    size_t n, cap;
    bool failed;
} nb_meta;

/* Copies key and the value's `len` bytes (it may hold no NUL). */
void nb_meta_put(nb_meta *m, const char *key, size_t key_len, const char *value, size_t len);
const char *nb_meta_get(const nb_meta *m, const char *key); /* NULL if absent */
/* A key that a file's metadata holds twice (readers refuse those: which
 * one counts differs between readers, Python's json taking the last), or
 * NULL; sorts the entries by key. */
const char *nb_meta_duplicate(nb_meta *m);
void nb_meta_free(nb_meta *m);

/* A named tensor that is not a parameter (one of an optimizer's buffers). */
typedef struct {
    char name[NB_FILE_NAME_MAX];
    nb_tensor *t;
} nb_named;

/* What a file holds besides the parameters, for saving and loading. */
typedef struct {
    nb_named *extra;        /* loading: sorted by name (nb_named_sort) */
    size_t n_extra;
    const nb_meta *meta;    /* saving: written with the tensors */
    /* Loading: tensors under the reserved prefix are passed over (loading a
     * checkpoint's parameters alone) instead of matched with `extra`. */
    bool skip_reserved;
    /* Loading: called with the file's metadata before any tensor is
     * matched, and after every check passed and every tensor was written.
     * check returns NB_OK or the status with the error set. */
    nb_status (*check)(void *user, const nb_meta *meta);
    void (*commit)(void *user, const nb_meta *meta);
    void *user;
} nb_file_extras;

void nb_named_sort(nb_named *x, size_t n);
/* Where the file's tensor `name` goes: a parameter, or one of the extras;
 * NULL if neither (then *skip says whether to pass over it quietly). */
nb_tensor *nb_file_target(nb_params *ps, const nb_file_extras *x, const char *name, bool *skip);

/* The two formats with extras (NULL: a plain parameter file). */
nb_status nb_nbp_save(const char *who, const nb_params *ps, const nb_file_extras *x, const char *path);
nb_status nb_safetensors_save(const char *who, const nb_params *ps, const nb_file_extras *x, const char *path);
/* Loads a file already in memory into ps (all or nothing; see
 * src/train/params.c and src/train/safetensors.c); errors name `who` and
 * path. */
nb_status nb_nbp_load_buffer(nb_params *ps, const nb_file_extras *x, const char *who, const char *path,
                             const unsigned char *buf, size_t len);
nb_status nb_safetensors_load_buffer(nb_params *ps, const nb_file_extras *x, const char *who, const char *path,
                                     const unsigned char *buf, size_t len);
/* Either format, told apart by the first bytes. */
nb_status nb_load_any(nb_params *ps, const nb_file_extras *x, const char *who, const char *path);

#endif
