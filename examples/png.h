/*
 * A minimal PNG writer for 8-bit RGB pictures, on zlib: the signature, then
 * the IHDR, IDAT and IEND chunks, each followed by the CRC-32 of its type and
 * data.  IDAT holds the zlib-compressed scanlines, each prefixed with filter
 * type 0 (none).
 */
#ifndef NABLA_EXAMPLES_PNG_H
#define NABLA_EXAMPLES_PNG_H

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

static inline int png_chunk(FILE *f, const char *type, const unsigned char *data, size_t len) {
    unsigned char head[8], tail[4];
    png_u32(head, (unsigned long)len);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(crc32(0L, Z_NULL, 0), head + 4, 4);
    if (len) crc = crc32(crc, data, (uInt)len);
    png_u32(tail, crc);
    return fwrite(head, 1, 8, f) == 8 && (!len || fwrite(data, 1, len, f) == len) && fwrite(tail, 1, 4, f) == 4;
}

/* Writes rgb (height rows of width pixels, 3 bytes each); 0 on success. */
static inline int png_write(const char *path, const unsigned char *rgb, unsigned width, unsigned height) {
    size_t row = 1 + 3 * (size_t)width, raw_len = row * height;
    unsigned char *raw = malloc(raw_len);
    uLongf packed_len = compressBound((uLong)raw_len);
    unsigned char *packed = malloc(packed_len);
    FILE *f = fopen(path, "wb");
    int ok = raw && packed && f;
    if (ok) {
        for (unsigned y = 0; y < height; y++) {
            raw[y * row] = 0; /* filter: none */
            memcpy(raw + y * row + 1, rgb + (size_t)y * width * 3, 3 * (size_t)width);
        }
        ok = compress2(packed, &packed_len, raw, (uLong)raw_len, 6) == Z_OK;
    }
    if (ok) {
        unsigned char ihdr[13];
        png_u32(ihdr, width);
        png_u32(ihdr + 4, height);
        ihdr[8] = 8;  /* bits per channel */
        ihdr[9] = 2;  /* colour type: RGB */
        ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filters, no interlace */
        ok = fwrite("\x89PNG\r\n\x1a\n", 1, 8, f) == 8 && png_chunk(f, "IHDR", ihdr, 13) &&
             png_chunk(f, "IDAT", packed, packed_len) && png_chunk(f, "IEND", NULL, 0);
    }
    if (f && fclose(f) != 0) ok = 0;
    free(raw);
    free(packed);
    return ok ? 0 : -1;
}

#endif
