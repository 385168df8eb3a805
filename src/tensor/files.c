/*
 * Files: the one place where nabla opens, writes, replaces and removes them.
 * Every reader and every writer of the library goes through here (the
 * parameter files, CSV, IDX, dot, the rendered pictures, the stepper page
 * and its frames, the training history and its plot), and so do the
 * examples, through nb_file_write and nb_file_open_read.
 *
 * Readers
 *  - read regular files only.  A FIFO, a device (/dev/zero), a socket or a
 *    directory is refused with NB_ERR_IO, at once: the path is stat()ed
 *    first, so a device is never even opened, then opened with O_NONBLOCK
 *    (opening a FIFO would wait for a writer) and O_NOCTTY, and the opened
 *    descriptor is fstat()ed again (the path may have changed in between);
 *    then O_NONBLOCK is cleared.
 *  - never read past the size fstat() gave: the FILE nb_open_input returns
 *    ends there, and nb_read_whole_file allocates that size and no more.
 *
 * Writers: every one writes atomically.  Readers see the old file or the
 * new one, never half of one, and a write that fails leaves the old file as
 * it was.
 *  1. The path must fit: shorter than PATH_MAX (4096) bytes, or refused.
 *  2. The destination: a missing file is created; a regular file is
 *    replaced; a symbolic link is followed to the regular file it names,
 *    which is replaced, and the link stays a link.  Anything else (a
 *    directory, a FIFO, a device such as /dev/null, a socket, a link to one
 *    of them, a dangling link) is refused without being opened.
 *  3. The bytes go to a new file NAME.tmp.XXXXXX, created with O_EXCL in the
 *    destination's directory, with mode 0666 through the umask (open()
 *    applies it: the umask is never read or set, as it belongs to the whole
 *    process) or, when a file is replaced, that file's permission bits (and
 *    owner and group, where the process may set them).
 *  4. It is flushed, synced (the only way to learn of a failed write-back)
 *    and closed.  Any failure (ENOSPC, EIO, EFBIG, a short write) returns
 *    NB_ERR_IO naming the call and the file, and the temporary file is
 *    removed: the only file a writer ever removes is the one it created,
 *    checked by device and inode, through the directory it made it in.
 *  5. It is renamed over the destination, after checking that the
 *    destination is still missing or a regular file.  Parameter files sync
 *    the directory too, so that the rename survives a crash.
 * A replaced file gets a new inode: hard links to the old one keep the old
 * contents.  Writing needs write permission on the directory.
 * No process-wide state is touched: no umask(), no signal disposition, no
 * locale, no working directory.
 */
#define _GNU_SOURCE /* fopencookie */
#include "../internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* What kind of file st describes, for messages. */
static const char *file_kind(const struct stat *st) {
    return S_ISDIR(st->st_mode)    ? "a directory"
           : S_ISFIFO(st->st_mode) ? "a FIFO"
           : S_ISCHR(st->st_mode)  ? "a character device"
           : S_ISBLK(st->st_mode)  ? "a block device"
           : S_ISSOCK(st->st_mode) ? "a socket"
           : S_ISLNK(st->st_mode)  ? "a symbolic link"
                                   : "not a regular file";
}

/* A path for a message: whole when short, else its start and its end (a
 * message holds 512 bytes, a path up to 4095). */
static const char *brief(const char *path, char *buf, size_t n) {
    size_t len = strlen(path);
    if (len < 160) return path;
    snprintf(buf, n, "%.80s...%s", path, path + len - 60);
    return buf;
}

/* NB_OK, or the error set for a path the system cannot take: empty
 * (NB_ERR_ARG), or PATH_MAX bytes or more (NB_ERR_IO, as the system's own
 * ENAMETOOLONG). */
static nb_status path_fits(const char *who, const char *path) {
    size_t len = strlen(path);
    if (len == 0) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "%s: the path is empty", who);
        return NB_ERR_ARG;
    }
    if (len < PATH_MAX) return NB_OK;
    char b[160];
    nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: the path %s is %zu bytes long, longer than the %d bytes a path may have",
                 who, brief(path, b, sizeof b), len, PATH_MAX - 1);
    return NB_ERR_IO;
}

/* ---------------------------------------------------------------- readers */

int nb_open_input_fd(const char *who, const char *path, uint64_t *size) {
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the path is NULL", who);
        return -1;
    }
    if (path_fits(who, path) != NB_OK) return -1;
    struct stat st;
    if (stat(path, &st) != 0) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot open %s: %s", who, path, strerror(errno));
        return -1;
    }
    int fd = -1;
    if (S_ISREG(st.st_mode)) { /* anything else is never opened */
        fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0) {
            nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot open %s: %s", who, path, strerror(errno));
            if (fd >= 0) close(fd);
            return -1;
        }
    }
    /* The descriptor's own kind: the path may have changed since stat(). */
    if (!S_ISREG(st.st_mode) || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        if (fd >= 0) close(fd);
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: %s is %s, not a regular file; nabla reads regular files only",
                     who, path, file_kind(&st));
        return -1;
    }
    if (size) *size = (uint64_t)st.st_size;
    return fd;
}

/* A FILE that ends where the file ended when it was opened. */
typedef struct {
    int fd;
    uint64_t left;
} bounded;

static ssize_t bounded_read(void *cookie, char *buf, size_t n) {
    bounded *b = cookie;
    if (n > b->left) n = (size_t)b->left;
    if (n == 0) return 0;
    ssize_t got;
    while ((got = read(b->fd, buf, n)) < 0 && errno == EINTR) {
    }
    if (got > 0) b->left -= (uint64_t)got;
    return got;
}

static int bounded_close(void *cookie) {
    bounded *b = cookie;
    int r = close(b->fd);
    nb_free(b);
    return r;
}

FILE *nb_open_input(const char *who, const char *path, uint64_t *size) {
    uint64_t n;
    int fd = nb_open_input_fd(who, path, &n);
    if (fd < 0) return NULL;
    bounded *b = nb_malloc(sizeof *b);
    FILE *f = NULL;
    if (b) {
        *b = (bounded){fd, n};
        f = fopencookie(b, "r", (cookie_io_functions_t){bounded_read, NULL, NULL, bounded_close});
    }
    if (!f) {
        nb_free(b);
        close(fd);
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory opening %s", who, path);
        return NULL;
    }
    if (size) *size = n;
    return f;
}

unsigned char *nb_read_whole_file(const char *who, const char *path, size_t *len, nb_status *st) {
    uint64_t size;
    int fd = nb_open_input_fd(who, path, &size);
    if (fd < 0) {
        *st = nb_last_status();
        return NULL;
    }
    unsigned char *buf = size < SIZE_MAX ? nb_malloc(size ? (size_t)size : 1) : NULL;
    if (!buf) {
        close(fd);
        *st = NB_ERR_NOMEM;
        nb_set_error(NULL, *st, NULL, 0, "%s: out of memory reading %s (%llu bytes)", who, path,
                     (unsigned long long)size);
        return NULL;
    }
    size_t used = 0;
    while (used < size) { /* a file that shrank meanwhile reads short: the formats' checks see it truncated */
        ssize_t got = read(fd, buf + used, (size_t)size - used > (1u << 30) ? (1u << 30) : (size_t)size - used);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int err = errno;
            close(fd);
            nb_free(buf);
            *st = NB_ERR_IO;
            nb_set_error(NULL, *st, NULL, 0, "%s: cannot read %s: %s", who, path, strerror(err));
            return NULL;
        }
        if (got == 0) break;
        used += (size_t)got;
    }
    close(fd);
    *len = used;
    *st = NB_OK;
    return buf;
}

/* ---------------------------------------------------------------- writers */

/* The temporary file's name: the destination's, cut to leave room for the
 * suffix within a file name's 255 bytes, then ".tmp." and six random
 * characters (from the clock, the process and a counter: O_EXCL makes them
 * unique, the randomness only makes a clash rare). */
static void temporary_name(char *tmp, const char *name) {
    static _Atomic uint64_t calls;
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 40) ^
                 (atomic_fetch_add(&calls, 1) * 0x9E3779B97F4A7C15u);
    x ^= x >> 31, x *= 0xBF58476D1CE4E5B9u, x ^= x >> 27, x *= 0x94D049BB133111EBu, x ^= x >> 31;
    size_t keep = strlen(name) > NB_TMP_NAME - 12 ? NB_TMP_NAME - 12 : strlen(name);
    memcpy(tmp, name, keep);
    memcpy(tmp + keep, ".tmp.", 5);
    for (int i = 0; i < 6; i++, x /= 62) tmp[keep + 5 + i] = digits[x % 62];
    tmp[keep + 11] = '\0';
}

/* The FILE's writes: all of n, or 0 with the first error kept. */
static ssize_t output_write(void *cookie, const char *buf, size_t n) {
    nb_output *o = cookie;
    size_t done = 0;
    while (done < n && !o->err) {
        ssize_t w = write(o->fd, buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) o->err = w < 0 ? errno : EIO;
        else done += (size_t)w;
    }
    return o->err ? 0 : (ssize_t)n;
}

/* Splits path into its directory (opened) and its last component (copied). */
static nb_status open_directory(nb_output *o, const char *path) {
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    size_t dir_len = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
    char *dir = nb_malloc(dir_len + 1);
    o->name = nb_malloc(strlen(name) + 1);
    if (!dir || !o->name) {
        nb_free(dir);
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory writing %s", o->who, o->path);
        return NB_ERR_NOMEM;
    }
    memcpy(dir, slash ? path : ".", dir_len);
    dir[dir_len] = '\0';
    memcpy(o->name, name, strlen(name) + 1);
    nb_status st = NB_OK;
    if (!name[0]) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "%s: %s names a directory, not a file", o->who, o->path);
    } else if ((o->dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        st = NB_ERR_IO;
        nb_set_error(NULL, st, NULL, 0, "%s: cannot write %s: its directory %s: %s", o->who, o->path, dir,
                     strerror(errno));
    }
    nb_free(dir);
    return st;
}

/* Steps 2 and 3 of the rules: where the file goes, and the temporary file. */
static nb_status open_output(nb_output *o, const char *path) {
    struct stat st;
    char *resolved = NULL;
    const char *dest = path;
    bool exists = lstat(path, &st) == 0;
    if (!exists && errno != ENOENT) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot write %s: %s", o->who, path, strerror(errno));
        return NB_ERR_IO;
    }
    if (exists && S_ISLNK(st.st_mode)) {
        if (!(resolved = realpath(path, NULL)) || stat(resolved, &st) != 0) {
            int err = errno;
            nb_set_error(NULL, NB_ERR_IO, NULL, 0,
                         "%s: %s is a symbolic link to a file that cannot be reached (%s); a link is followed to "
                         "the regular file it names, which must exist",
                         o->who, path, strerror(err));
            free(resolved);
            return NB_ERR_IO;
        }
        dest = resolved;
    }
    if (exists && !S_ISREG(st.st_mode)) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: %s is %s%s, not a regular file; nabla writes regular files only",
                     o->who, path, dest != path ? "a symbolic link to " : "", file_kind(&st));
        free(resolved);
        return NB_ERR_IO;
    }
    nb_status s = path_fits(o->who, dest);
    if (s == NB_OK) s = open_directory(o, dest);
    free(resolved);
    if (s != NB_OK) return s;
    /* Again, through the directory now held: the file to replace, if any. */
    bool replacing = fstatat(o->dir, o->name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (replacing && !S_ISREG(st.st_mode)) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: %s is %s, not a regular file; nabla writes regular files only",
                     o->who, path, file_kind(&st));
        return NB_ERR_IO;
    }
    for (int attempt = 0; attempt < 100 && o->fd < 0; attempt++) {
        temporary_name(o->tmp, o->name);
        /* read-write: nb_progress_plot reads back what gnuplot wrote */
        o->fd = openat(o->dir, o->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC,
                       replacing ? 0600 : 0666);
        if (o->fd < 0 && errno != EEXIST) break;
    }
    struct stat made;
    if (o->fd < 0 || fstat(o->fd, &made) != 0) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot create a temporary file beside %s: %s", o->who, path,
                     strerror(errno));
        return NB_ERR_IO;
    }
    o->dev = (unsigned long long)made.st_dev;
    o->ino = (unsigned long long)made.st_ino;
    if (replacing) { /* keep the replaced file's owner (where allowed) and mode */
        if ((made.st_uid != st.st_uid || made.st_gid != st.st_gid) && fchown(o->fd, st.st_uid, st.st_gid) != 0) {
            /* not root: the new file is the caller's, as any file it writes */
        }
        if (fchmod(o->fd, st.st_mode & 0777) != 0) {
            nb_set_error(NULL, NB_ERR_IO, NULL, 0, "%s: cannot give the new %s the old one's mode: %s", o->who, path,
                         strerror(errno));
            return NB_ERR_IO;
        }
    }
    o->f = fopencookie(o, "w", (cookie_io_functions_t){NULL, output_write, NULL, NULL});
    if (!o->f) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory writing %s", o->who, path);
        return NB_ERR_NOMEM;
    }
    return NB_OK;
}

/* Whether dir/tmp is still the file this call created. */
static bool still_ours(const nb_output *o) {
    struct stat st;
    return fstatat(o->dir, o->tmp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
           (unsigned long long)st.st_dev == o->dev && (unsigned long long)st.st_ino == o->ino;
}

nb_status nb_output_open(nb_output *o, const char *who, const char *path, bool durable) {
    memset(o, 0, sizeof *o);
    o->who = who;
    o->path = path;
    o->dir = o->fd = -1;
    o->durable = durable;
    if (!path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: the path is NULL", who);
        return NB_ERR_NULL;
    }
    nb_status st = path_fits(who, path);
    if (st == NB_OK) st = open_output(o, path);
    if (st != NB_OK) nb_output_close(o, st);
    return st;
}

nb_status nb_output_close(nb_output *o, nb_status st) {
    int err = 0;
    if (o->f) {
        if (fflush(o->f) != 0 || ferror(o->f)) err = o->err ? o->err : EIO;
        fclose(o->f); /* the cookie's FILE: the descriptor stays open */
        o->f = NULL;
    }
    if (o->fd >= 0) {
        if (!err && st == NB_OK && fsync(o->fd) != 0 && errno != EINVAL && errno != ENOTSUP) err = errno;
        if (close(o->fd) != 0 && !err && errno != EINTR) err = errno;
        o->fd = -1;
        if (err) { /* the reason the caller's own message could not give */
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "%s: cannot write %s: %s", o->who, o->path, strerror(err));
        }
        struct stat dest;
        if (st == NB_OK && !still_ours(o)) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "%s: the temporary file %s beside %s was replaced while it was written",
                         o->who, o->tmp, o->path);
        } else if (st == NB_OK && fstatat(o->dir, o->name, &dest, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(dest.st_mode)) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "%s: %s became %s while it was written; it is left alone", o->who,
                         o->path, file_kind(&dest));
        } else if (st == NB_OK && renameat(o->dir, o->tmp, o->dir, o->name) != 0) {
            st = NB_ERR_IO;
            nb_set_error(NULL, st, NULL, 0, "%s: cannot replace %s: %s", o->who, o->path, strerror(errno));
        }
        if (st == NB_OK && o->durable && fsync(o->dir) != 0) {
            /* some file systems cannot sync a directory: the file itself is whole */
        }
        if (st != NB_OK && still_ours(o)) unlinkat(o->dir, o->tmp, 0);
    }
    if (o->dir >= 0) close(o->dir);
    o->dir = -1;
    nb_free(o->name);
    o->name = NULL;
    return st;
}

nb_status nb_write_whole_file(const char *who, const char *path, const void *buf, size_t len, bool durable) {
    nb_output o;
    nb_status st = nb_output_open(&o, who, path, durable);
    if (st != NB_OK) return st;
    if (len && fwrite(buf, 1, len, o.f) != len) st = NB_ERR_IO; /* nb_output_close says why */
    return nb_output_close(&o, st);
}

/* ---------------------------------------------------------------- the public calls */

nb_status nb_file_write(const char *path, const void *data, size_t n) {
    if (!data && n) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_file_write: the data is NULL");
        return NB_ERR_NULL;
    }
    return nb_write_whole_file("nb_file_write", path, data, n, false);
}

FILE *nb_file_open_read(const char *path, size_t *size) {
    uint64_t n = 0;
    FILE *f = nb_open_input("nb_file_open_read", path, &n);
    if (f && size) *size = (size_t)n;
    return f;
}
