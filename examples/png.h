/*
 * A minimal PNG writer for 8-bit RGB pictures, on zlib: the signature, then
 * the IHDR, IDAT and IEND chunks, each followed by the CRC-32 of its type and
 * data.  IDAT holds the zlib-compressed scanlines, each prefixed with filter
 * type 0 (none).
 */
#ifndef NABLA_EXAMPLES_PNG_H
#define NABLA_EXAMPLES_PNG_H

#include "nabla.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static inline void png_u32(unsigned char *b, unsigned long v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Appends a chunk (length, type, data, CRC) at out + *at. */
static inline void png_chunk(unsigned char *out, size_t *at, const char *type, const unsigned char *data, size_t len) {
    unsigned char *p = out + *at;
    png_u32(p, (unsigned long)len);
    memcpy(p + 4, type, 4);
    if (len) memmove(p + 8, data, len); /* data may already be in place */
    png_u32(p + 8 + len, crc32(crc32(0L, Z_NULL, 0), p + 4, (uInt)(4 + len)));
    *at += 12 + len;
}

/* Writes rgb (height rows of width pixels, 3 bytes each) to path, by
 * nabla's file rules (nb_file_write: whole or not at all, a device or a
 * directory refused); 0 on success, else -1 with nb_last_error() saying
 * why. */
static inline int png_write(const char *path, const unsigned char *rgb, unsigned width, unsigned height) {
    size_t row = 1 + 3 * (size_t)width, raw_len = row * height;
    uLongf packed_len = compressBound((uLong)raw_len);
    unsigned char *raw = malloc(raw_len), *file = malloc(8 + 25 + 12 + packed_len + 12);
    int ok = raw && file;
    if (ok) {
        for (unsigned y = 0; y < height; y++) {
            raw[y * row] = 0; /* filter: none */
            memcpy(raw + y * row + 1, rgb + (size_t)y * width * 3, 3 * (size_t)width);
        }
        ok = compress2(file + 8 + 25 + 8, &packed_len, raw, (uLong)raw_len, 6) == Z_OK;
    }
    nb_status st = NB_ERR_NOMEM;
    if (ok) {
        unsigned char ihdr[13];
        png_u32(ihdr, width);
        png_u32(ihdr + 4, height);
        ihdr[8] = 8;  /* bits per channel */
        ihdr[9] = 2;  /* colour type: RGB */
        ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filters, no interlace */
        size_t at = 8;
        memcpy(file, "\x89PNG\r\n\x1a\n", 8);
        png_chunk(file, &at, "IHDR", ihdr, 13);
        png_chunk(file, &at, "IDAT", file + at + 8, packed_len); /* compressed in place */
        png_chunk(file, &at, "IEND", NULL, 0);
        st = nb_file_write(path, file, at);
    } else {
        fprintf(stderr, "png_write: out of memory for %s\n", path);
    }
    free(raw);
    free(file);
    return st == NB_OK ? 0 : -1;
}

#endif
