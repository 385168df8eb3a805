/*
 * IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed
 * (zlib's gzread reads both).  Layout, all integers big-endian:
 *   0x00 0x00 <type> <ndim>        type 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
 *                                  0x0D f32, 0x0E f64
 *   ndim x u32                     the dimensions
 *   the values, row-major
 */
#include "../internal.h"
#include "nabla_train.h"

#include <string.h>
#include <unistd.h>
#include <zlib.h>

typedef struct { int code; size_t width; const char *name; } idx_type;

static const idx_type types[] = {
    {0x08, 1, "unsigned byte"}, {0x09, 1, "signed byte"}, {0x0B, 2, "short"},
    {0x0C, 4, "int"},           {0x0D, 4, "float"},       {0x0E, 8, "double"},
};

/* Reads exactly n bytes; false on a short read. */
static bool read_exact(gzFile g, void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(g, p, chunk);
        if (got <= 0) return false;
        p += got;
        n -= (size_t)got;
    }
    return true;
}

static double decode(const unsigned char *b, int code) {
    uint64_t v = 0;
    switch (code) {
    case 0x08: return b[0];
    case 0x09: return (signed char)b[0];
    case 0x0B: return (int16_t)(uint16_t)((b[0] << 8) | b[1]);
    case 0x0C: return (int32_t)(((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3]);
    case 0x0D: {
        uint32_t bits = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    default:
        for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
        double d;
        memcpy(&d, &v, 8);
        return d;
    }
}

nb_tensor *nb_idx_read(const char *path, nb_dtype dt, double scale) {
    if (!path) return nb_fail(NULL, NB_ERR_NULL, NULL, 0, "nb_idx_read: the path is NULL");
    if (dt != NB_F32 && dt != NB_F64)
        return nb_fail(NULL, NB_ERR_ARG, NULL, 0, "nb_idx_read: unknown dtype %d for %s", (int)dt, path);
    uint64_t file_size;
    int fd = nb_open_input_fd("nb_idx_read", path, &file_size); /* a regular file, or refused at once */
    if (fd < 0) return nb_nil(nb_last_status());
    unsigned char start[2] = {0};
    bool gz = pread(fd, start, 2, 0) == 2 && start[0] == 0x1f && start[1] == 0x8b;
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        close(fd);
        return nb_fail(NULL, NB_ERR_NOMEM, NULL, 0, "nb_idx_read: out of memory opening %s", path);
    }
    nb_tensor *t = NULL;
    unsigned char *raw = NULL, header[4];
    if (!read_exact(g, header, 4)) {
        t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0, "nb_idx_read: %s is truncated: no 4-byte magic number", path);
        goto done;
    }
    const idx_type *type = NULL;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].code == header[2]) type = &types[i];
    if (header[0] || header[1] || !type || header[3] == 0 || header[3] > NB_MAX_DIMS) {
        t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0,
                    "nb_idx_read: %s has magic number %02x %02x %02x %02x; an IDX file starts "
                    "with 00 00, a type (08, 09, 0B, 0C, 0D, 0E) and 1 to %d dimensions",
                    path, header[0], header[1], header[2], header[3], NB_MAX_DIMS);
        goto done;
    }
    int ndim = header[3];
    size_t shape[NB_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        unsigned char b[4];
        if (!read_exact(g, b, 4)) {
            t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0, "nb_idx_read: %s is truncated in its dimensions (%d of %d read)",
                        path, d, ndim);
            goto done;
        }
        shape[d] = ((size_t)b[0] << 24) | ((size_t)b[1] << 16) | ((size_t)b[2] << 8) | b[3];
    }
    size_t count = 1;
    bool too_big = false;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] && count > SIZE_MAX / type->width / shape[d]) too_big = true;
        count *= shape[d];
    }
    char s[128];
    nb_format_shape(ndim, shape, s, sizeof s);
    if (count == 0 || too_big) {
        t = nb_fail(NULL, NB_ERR_SHAPE, NULL, 0, "nb_idx_read: %s announces a tensor of shape %s, %s", path, s,
                    count == 0 ? "which is empty" : "more elements than memory can address");
        goto done;
    }
    /* No more than the file can hold: its size, or, compressed, 1032 times
     * its size (deflate's largest ratio), so that neither a short file nor
     * a gzip bomb makes the reader decompress or allocate what its header
     * claims.  Within that, read before allocating the tensor, growing the
     * buffer as data arrives. */
    size_t bytes = count * type->width, have = 0, cap = 0, header_bytes = 4 + 4 * (size_t)ndim;
    uint64_t most = gz ? (file_size > UINT64_MAX / 1032 ? UINT64_MAX : file_size * 1032)
                       : (file_size > header_bytes ? file_size - header_bytes : 0);
    if (bytes > most) {
        if (gz)
            t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0,
                        "nb_idx_read: %s is truncated: a %s tensor of %s values needs %zu bytes of data, more "
                        "than a gzip file of %llu bytes can hold (at most %llu)",
                        path, s, type->name, bytes, (unsigned long long)file_size, (unsigned long long)most);
        else
            t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0,
                        "nb_idx_read: %s is truncated: a %s tensor of %s values needs %zu bytes of data, "
                        "only %llu are there",
                        path, s, type->name, bytes, (unsigned long long)most);
        goto done;
    }
    while (have < bytes) {
        if (have == cap) {
            size_t want = cap ? cap * 2 : (size_t)1 << 16;
            if (want > bytes || want < cap) want = bytes;
            unsigned char *grown = nb_realloc(raw, want);
            if (!grown) {
                t = nb_fail(NULL, NB_ERR_NOMEM, NULL, 0, "nb_idx_read: out of memory for %s", path);
                goto done;
            }
            raw = grown;
            cap = want;
        }
        size_t chunk = cap - have > (1u << 30) ? (1u << 30) : cap - have;
        int got = gzread(g, raw + have, (unsigned)chunk);
        if (got <= 0) {
            t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0,
                        "nb_idx_read: %s is truncated: a %s tensor of %s values needs %zu bytes of data, "
                        "only %zu are there",
                        path, s, type->name, bytes, have);
            goto done;
        }
        have += (size_t)got;
    }
    unsigned char extra;
    if (gzread(g, &extra, 1) > 0) {
        t = nb_fail(NULL, NB_ERR_VALUE, NULL, 0,
                    "nb_idx_read: %s has data beyond the %zu values its header announces", path, count);
        goto done;
    }
    t = nb_tensor_alloc(NULL, dt, ndim, shape, "nb_idx_read", NULL, 0);
    for (size_t i = 0; t->status == NB_OK && i < t->size; i++)
        nb_set(t, i, decode(raw + i * type->width, type->code) * scale);
done:
    nb_free(raw);
    gzclose(g);
    return t;
}
