/*
 * The file handling shared by nabla's parameter formats (src/train/params.c,
 * src/train/safetensors.c): a growing byte buffer with little-endian
 * writers, a save that replaces its file atomically, and a whole-file read.
 */
#include "param_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


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

/* What kind of file st describes, for messages. */
static const char *file_kind(const struct stat *st) {
    return S_ISDIR(st->st_mode)    ? "a directory"
           : S_ISFIFO(st->st_mode) ? "a FIFO"
           : S_ISCHR(st->st_mode)  ? "a character device"
           : S_ISBLK(st->st_mode)  ? "a block device"
           : S_ISSOCK(st->st_mode) ? "a socket"
                                   : "not a regular file";
}

/* The file a save replaces: path itself, or the file a symbolic link names
 * (the link stays a link).  A destination that exists and is not a regular
 * file (a FIFO, a device, /dev/null) is refused: renaming over it would
 * replace it with a regular file.  *resolved is NULL for path itself, else a
 * malloc'd path freed by the caller. */
static nb_status save_destination(const char *who, const char *path, char **resolved) {
    *resolved = NULL;
    struct stat st;
    if (lstat(path, &st) != 0) return NB_OK; /* a new file */
    if (S_ISLNK(st.st_mode)) {
        if (!(*resolved = realpath(path, NULL))) {
            nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: %s is a symbolic link to a file that cannot be "
                         "reached: %s", who, path, strerror(errno));
            return NB_ERR_IO;
        }
        if (stat(*resolved, &st) != 0) return NB_OK;
    }
    if (!S_ISREG(st.st_mode)) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: %s is %s, not a regular file; parameters are saved "
                     "to regular files only", who, path, file_kind(&st));
        free(*resolved);
        *resolved = NULL;
        return NB_ERR_IO;
    }
    return NB_OK;
}

/* Writes all of buf to path through a temporary file in the same directory
 * and a rename, so readers see the old file or the new one, never half. */
static nb_status write_atomically(const char *who, const char *path, const unsigned char *buf, size_t len) {
    size_t n = strlen(path) + 16;
    char *tmp = nb_malloc(n);
    if (!tmp) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory", who);
        return NB_ERR_NOMEM;
    }
    snprintf(tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd >= 0) {
        /* mkstemp makes the file private (0600); give it the mode a new file
         * would have (0666 less the umask), or the replaced file's mode. */
        struct stat old;
        mode_t mask = umask(0);
        umask(mask);
        if (fchmod(fd, stat(path, &old) == 0 ? (old.st_mode & 07777) : (0666 & ~mask)) != 0) {
            /* not worth failing the save over */
        }
    }
    nb_status st = NB_OK;
    if (fd < 0) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot create a temporary file for %s: %s", who,
                     path, strerror(errno));
        nb_free(tmp);
        return NB_ERR_IO;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    if (done < len || fsync(fd) != 0) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "%s: cannot write %s: %s", who, tmp, strerror(errno));
    }
    if (close(fd) != 0 && st == NB_OK) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "%s: cannot write %s: %s", who, tmp, strerror(errno));
    }
    if (st == NB_OK && rename(tmp, path) != 0) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "%s: cannot rename %s to %s: %s", who, tmp, path,
                     strerror(errno));
    }
    if (st == NB_OK) {
        /* Make the rename itself durable: fsync the directory that holds it
         * (best effort; some file systems refuse to sync a directory). */
        char *slash = strrchr(tmp, '/');
        if (slash == tmp) slash[1] = '\0';
        else if (slash) *slash = '\0';
        int dir_fd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY);
        if (dir_fd >= 0) {
            if (fsync(dir_fd) != 0) { /* not worth failing a save that is in place */
            }
            close(dir_fd);
        }
    }
    if (st != NB_OK) unlink(tmp);
    nb_free(tmp);
    return st;
}

nb_status nb_save_whole_file(const char *who, const char *path, const unsigned char *buf, size_t len) {
    char *target = NULL;
    nb_status st = save_destination(who, path, &target);
    if (st == NB_OK) st = write_atomically(who, target ? target : path, buf, len);
    free(target);
    return st;
}

uint64_t nb_get_uint_le(const unsigned char *b, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

/* Reads the whole file; NULL with the error set and *st on failure. */
unsigned char *nb_read_whole_file(const char *who, const char *path, size_t *len, nb_status *st) {
    *st = NB_ERR_IO;
    FILE *f = nb_fopen_regular(path, who);
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t used = 0, cap = 0;
    for (;;) {
        if (used == cap) {
            cap = cap ? 2 * cap : 65536;
            unsigned char *grown = nb_realloc(buf, cap);
            if (!grown) {
                nb_free(buf);
                fclose(f);
                *st = NB_ERR_NOMEM;
                nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory reading %s", who, path);
                return NULL;
            }
            buf = grown;
        }
        size_t n = fread(buf + used, 1, cap - used, f);
        used += n;
        if (n == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        nb_free(buf);
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot read %s", who, path);
        return NULL;
    }
    *len = used;
    *st = NB_OK;
    return buf;
}

