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

/* Loads a safetensors file already in memory into ps (all or nothing; see
 * src/train/safetensors.c); errors name `who` and path. */
nb_status nb_safetensors_load_buffer(nb_params *ps, const char *who, const char *path, const unsigned char *buf,
                                     size_t len);

#endif
