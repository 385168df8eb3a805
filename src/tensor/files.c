/*
 * Opening the files the loaders read.  fopen() happily opens a directory on
 * Linux, and reading it then fails with EISDIR, which the loaders used to
 * report as an empty or truncated file: check first, and say what it is.
 */
#include "../internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

bool nb_check_input_file(const char *path, const char *who) {
    struct stat st;
    if (stat(path, &st) != 0) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot open %s: %s", who, path, strerror(errno));
        return false;
    }
    if (S_ISDIR(st.st_mode)) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: %s is a directory, not a file", who, path);
        return false;
    }
    return true;
}

FILE *nb_fopen_regular(const char *path, const char *who) {
    if (!nb_check_input_file(path, who)) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot open %s: %s", who, path, strerror(errno));
    return f;
}
