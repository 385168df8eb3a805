/* Shared by the fuzz targets: the readers take paths, so each input is
 * written to a file in memory-backed storage first. */
#ifndef NABLA_FUZZ_COMMON_H
#define NABLA_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Writes data to a per-process file and returns its path. */
static const char *input_file(const char *suffix, const uint8_t *data, size_t size) {
    static char path[128];
    snprintf(path, sizeof path, "/dev/shm/nabla-fuzz-%d%s", (int)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (!f) abort(); /* the harness itself, not the code under test */
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

#endif
