/*
 * The readers' and writers' helpers (part of src/internal.h, which includes
 * this file; kept apart to keep that file short).
 */
#ifndef NABLA_FILES_H
#define NABLA_FILES_H

#include "nabla.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---------------------------------------------------------------- files
 * The rules every reader and writer follows are in src/tensor/files.c.
 * Errors name `who` (the API call) and the file. */

/* A regular file opened for reading (NB_ERR_IO, at once, for a FIFO, a
 * device or a directory), with its size: a descriptor (-1 on error), or a
 * FILE that ends at that size (NULL on error; nb_last_status() says why). */
int nb_open_input_fd(const char *who, const char *path, uint64_t *size);
FILE *nb_open_input(const char *who, const char *path, uint64_t *size);
/* The whole of a regular file, in memory freed with nb_free (no more than
 * its size); NULL with the error set and *st on failure. */
unsigned char *nb_read_whole_file(const char *who, const char *path, size_t *len, nb_status *st);

/* A file being written: write to f (or, for a program that writes it, to
 * fd); nb_output_close puts it in place, atomically, or leaves the old file
 * as it was.  `durable` (parameters) syncs the directory too. */
#define NB_TMP_NAME 256
typedef struct {
    FILE *f;
    int fd;
    /* private to src/tensor/files.c */
    const char *who, *path;
    int dir, err;
    char *name, tmp[NB_TMP_NAME];
    unsigned long long dev, ino;
    bool durable;
} nb_output;
/* NB_OK with o->f open, or the error set (nothing to close). */
nb_status nb_output_open(nb_output *o, const char *who, const char *path, bool durable);
/* st: the writer's own status; anything but NB_OK (or a failed write)
 * discards the file.  Returns the final status. */
nb_status nb_output_close(nb_output *o, nb_status st);
nb_status nb_write_whole_file(const char *who, const char *path, const void *buf, size_t len, bool durable);

#endif /* NABLA_FILES_H */
