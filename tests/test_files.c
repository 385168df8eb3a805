/*
 * The file rules (src/tensor/files.c; README, "When things go wrong") for
 * every writer and every reader, as two tables.  Each writer meets each kind
 * of destination: a new file under umask 022 and 077, a file that exists
 * (its mode kept), a symbolic link to one (the target replaced, the link
 * kept), a dangling link, a link to a character device, a device node, a
 * FIFO, a directory, a path too long, a missing directory, a long file name
 * and a full disk.  Each reader meets the files that are not files (a FIFO
 * nobody writes, /dev/zero, a directory) and a link to a good file.
 *
 * Every call runs in a child process: a FIFO blocked the old writers and
 * readers for ever (an alarm turns a hang into a failure), and the umask and
 * RLIMIT_FSIZE (our full disk: writes past 16 bytes fail with EFBIG) belong
 * to the process.  The only system files used are /dev/null and /dev/zero,
 * never written or removed (stat before and after); never /dev/full.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "support.h"
#include "nabla_train.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "../examples/png.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang's spelling of __SANITIZE_ADDRESS__ */
#define NB_TEST_ASAN 1
#endif
#endif

/* ------------------------------------------------------------ process state */

/* The library is linked in statically, so its calls of umask() and system()
 * land here.  No writer may read the umask by setting it (a file another
 * thread creates meanwhile gets mode 0666), nor call system() (it changes the
 * process's signal dispositions while it waits). */
static int umask_calls, system_calls;

mode_t umask(mode_t mask) {
    umask_calls++;
    return (mode_t)syscall(SYS_umask, (int)mask);
}

int system(const char *command) {
    system_calls++;
    int (*real)(const char *) = (int (*)(const char *))dlsym(RTLD_NEXT, "system");
    return real ? real(command) : -1;
}

typedef struct {
    nb_status status;
    int umask_calls, system_calls;
    char message[512];
} outcome;

typedef struct {
    bool returned; /* false: the child was killed (by the alarm: it blocked) or failed */
    int exit_code, signal;
    outcome o;
} child_run;

/* Runs call(path) in a child under umask `mask`, with file writes past
 * `fsize` bytes failing (0: no limit). */
static child_run in_child(nb_status (*call)(const char *), const char *path, mode_t mask, rlim_t fsize) {
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0); /* not inherited by a program the call runs */
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        umask(mask);
        if (fsize) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit r = {fsize, fsize};
            setrlimit(RLIMIT_FSIZE, &r);
        }
#if !defined(__SANITIZE_ADDRESS__) && !defined(NB_TEST_ASAN) /* AddressSanitizer reserves terabytes */
        struct rlimit mem = {(rlim_t)2 << 30, (rlim_t)2 << 30}; /* the old loaders read /dev/zero until memory ran out */
        setrlimit(RLIMIT_AS, &mem);
#endif
        alarm(10);
        outcome o;
        memset(&o, 0, sizeof o);
        umask_calls = system_calls = 0;
        o.status = call(path);
        o.umask_calls = umask_calls;
        o.system_calls = system_calls;
        snprintf(o.message, sizeof o.message, "%s", nb_last_error());
        bool sent = write(fds[1], &o, sizeof o) == (ssize_t)sizeof o;
        exit(sent ? 0 : 3); /* exit, not _exit: the sanitizers' leak check runs */
    }
    close(fds[1]);
    child_run r;
    memset(&r, 0, sizeof r);
    r.returned = read(fds[0], &r.o, sizeof r.o) == (ssize_t)sizeof r.o;
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return r;
}

/* A failed expectation is printed and counted, and the tables go on: one
 * run shows every writer and case that breaks a rule. */
static int broken;
#define expect(cond, ...)                                                                 \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            print_error(__VA_ARGS__);                                                      \
            print_error("  (%s:%d: %s)\n", __FILE__, __LINE__, #cond);                     \
            broken++;                                                                      \
        }                                                                                  \
    } while (0)

/* ------------------------------------------------------------ files */

static void put_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* The first n bytes of path, NUL-terminated, into buf (of n + 1 bytes). */
static size_t head_of(const char *path, char *buf, size_t n) {
    memset(buf, 0, n + 1);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got;
}

/* No temporary file left in dir. */
static bool no_temporary(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return true;
    bool none = true;
    for (struct dirent *e; (e = readdir(d));) none &= !strstr(e->d_name, ".tmp.");
    closedir(d);
    return none;
}

static bool dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n == 0;
}

/* A device stat()s the same before and after: not written, chmod'ed, chown'ed or replaced. */
static bool same_node(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_mode == b->st_mode && a->st_rdev == b->st_rdev && a->st_uid == b->st_uid &&
           a->st_gid == b->st_gid && a->st_nlink == b->st_nlink && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* A directory whose path is 4090 bytes long: it fits, a file in it does not. */
static char deep_dir[PATH_MAX];

static void make_deep_dir(void) {
    size_t n = (size_t)snprintf(deep_dir, sizeof deep_dir, "%s", test_dir);
    while (n < 4090) {
        size_t part = 4090 - n - 1 > 200 ? 200 : 4090 - n - 1;
        deep_dir[n++] = '/';
        memset(deep_dir + n, 'd', part);
        n += part;
        deep_dir[n] = '\0';
        assert_int_equal(mkdir(deep_dir, 0755), 0);
    }
    assert_int_equal(strlen(deep_dir), 4090);
}

/* ------------------------------------------------------------ the writers */

static nb_tensor *small_loss(nb_tape *tp) {
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_requires_grad(x, true);
    nb_tensor_set_name(x, "x");
    nb_tensor *loss = nb_sum(tp, nb_square(tp, x));
    nb_tensor_set_name(loss, "loss");
    nb_backward(loss);
    return loss;
}

static nb_status write_params(const char *path) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "W", nb_full(NULL, NB_F32, NB_SHAPE(2, 3), 0.5));
    nb_params_add(ps, "b", nb_full(NULL, NB_F64, NB_SHAPE(3), -1));
    nb_status st = nb_params_save(ps, path);
    nb_params_free(ps);
    return st;
}

static nb_status write_dot(const char *path) {
    nb_tape *tp = nb_tape_new();
    small_loss(tp);
    nb_status st = nb_dot_save(tp, path, NULL);
    nb_tape_free(tp);
    return st;
}

static char render_input[PATH_MAX], plot_input[PATH_MAX];

static nb_status write_render(const char *path) { return nb_dot_render(render_input, path, "svg"); }

static nb_status write_html(const char *path) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_html(small_loss(tp), path, "title", NULL);
    nb_tape_free(tp);
    return st;
}

/* path is DIR/frame_000.dot, the first file the call writes. */
static nb_status write_frames(const char *path) {
    char dir[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    nb_tape *tp = nb_tape_new();
    size_t n = 0;
    nb_status st = nb_backward_frames(small_loss(tp), dir, NULL, &n);
    nb_tape_free(tp);
    return st;
}

static nb_progress *small_history(FILE **log, char **text, size_t *len) {
    *log = open_memstream(text, len);
    nb_progress *p = nb_progress_new(*log, 2, 1, false);
    nb_progress_epoch(p, 1, 1.0, 0.5, 0.5);
    nb_progress_epoch(p, 2, 0.5, 0.75, 0.7);
    return p;
}

static nb_status write_csv(const char *path) {
    FILE *log;
    char *text;
    size_t len;
    nb_progress *p = small_history(&log, &text, &len);
    nb_status st = nb_progress_save_csv(p, path);
    nb_progress_free(p);
    fclose(log);
    free(text);
    return st;
}

static nb_status write_plot(const char *path) { return nb_progress_plot(plot_input, path); }

static const char some_bytes[] = "nabla writes these 40 bytes for a test.\n";

static nb_status write_bytes(const char *path) { return nb_file_write(path, some_bytes, sizeof some_bytes - 1); }

static nb_status write_png(const char *path) {
    unsigned char rgb[4 * 4 * 3];
    memset(rgb, 200, sizeof rgb);
    return png_write(path, rgb, 4, 4) == 0 ? NB_OK : NB_ERR_IO;
}

typedef struct {
    const char *name, *file; /* the call its messages name; the file it writes */
    nb_status (*write)(const char *path);
    const char *magic;        /* how the file starts, at byte magic_at */
    size_t magic_at;
    bool fixed_name;          /* the writer picks the file's name (frames) */
} writer;

static const writer writers[] = {
    {"nb_params_save", "out.nbp", write_params, "NBPARAMS", 0, false},
    {"nb_params_save", "out.safetensors", write_params, "{", 8, false},
    {"nb_dot_save", "out.dot", write_dot, "digraph", 0, false},
    {"nb_dot_render", "out.svg", write_render, "<?xml", 0, false},
    {"nb_backward_html", "out.html", write_html, "<!DOCTYPE html>", 0, false},
    {"nb_backward_frames", "frame_000.dot", write_frames, "digraph", 0, true},
    {"nb_progress_save_csv", "out.csv", write_csv, "epoch,loss", 0, false},
    {"nb_progress_plot", "out.png", write_plot, "\x89PNG", 0, false},
    {"nb_file_write", "out.bin", write_bytes, "nabla writes", 0, false},
    {"nb_file_write", "boundary.png", write_png, "\x89PNG", 0, false}, /* examples/png.h */
};

typedef enum {
    NEW, NEW_077, EXISTING, EXISTING_077, LINK, LINK_DANGLING, LINK_DEVNULL, DEVICE, FIFO, DIRECTORY, TOO_LONG,
    MISSING_DIR, LONG_NAME, FULL, FULL_NEW, N_CASES
} write_case;

static const char *const case_names[N_CASES] = {
    "a new file, umask 022", "a new file, umask 077", "an existing file (0640)", "an existing file (0664), umask 077",
    "a link to a file elsewhere", "a dangling link", "a link to /dev/null", "a character device node", "a FIFO",
    "a directory", "a path too long", "a missing directory", "a 250-byte file name", "a full disk, the file existing",
    "a full disk, a new file",
};

/* One writer against one kind of destination. */
static void check_writer(const writer *w, size_t wi, write_case c) {
    char dir[PATH_MAX], path[PATH_MAX + 300], target[PATH_MAX + 128], elsewhere[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/w%zu-c%d", test_dir, wi, (int)c);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/%s", dir, w->file);
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", dir);
    snprintf(target, sizeof target, "%s/target", elsewhere);
    mode_t mask = 022, mode = 0644;
    rlim_t fsize = 0;
    struct stat null_before, node_before, after;
    const char *refusal = NULL; /* words the message must have, if the call must fail */
    switch (c) {
    case NEW: break;
    case NEW_077: mask = 077, mode = 0600; break;
    case EXISTING: put_file(path, "old\n", mode = 0640); break;
    case EXISTING_077: mask = 077, put_file(path, "old\n", mode = 0664); break;
    case LINK:
        assert_int_equal(mkdir(elsewhere, 0755), 0);
        put_file(target, "old\n", mode = 0640);
        assert_int_equal(symlink("elsewhere/target", path), 0);
        break;
    case LINK_DANGLING: assert_int_equal(symlink("elsewhere/target", path), 0), refusal = "symbolic link"; break;
    case LINK_DEVNULL:
        assert_int_equal(stat("/dev/null", &null_before), 0);
        assert_int_equal(symlink("/dev/null", path), 0);
        refusal = "a character device";
        break;
    case DEVICE: /* a node of our own, the same device as /dev/null */
        if (mknod(path, S_IFCHR | 0666, makedev(1, 3)) != 0) {
            if (wi == 0) printf("skipped: a device node of our own (mknod: %s)\n", strerror(errno));
            return;
        }
        assert_int_equal(lstat(path, &node_before), 0);
        refusal = "a character device";
        break;
    case FIFO: assert_int_equal(mkfifo(path, 0644), 0), refusal = "a FIFO"; break;
    case DIRECTORY: assert_int_equal(mkdir(path, 0755), 0), refusal = "a directory"; break;
    case TOO_LONG: snprintf(path, sizeof path, "%s/%s", deep_dir, w->file), refusal = "longer than"; break;
    case MISSING_DIR: snprintf(path, sizeof path, "%s/missing/%s", dir, w->file), refusal = "No such file"; break;
    case LONG_NAME:
        if (w->fixed_name) return;
        snprintf(path, sizeof path, "%s/%0*d%s", dir, (int)(250 - strlen(w->file)), 0, w->file);
        break;
    case FULL: put_file(path, "old\n", mode = 0640), fsize = 16, refusal = "File too large"; break;
    case FULL_NEW: fsize = 16, refusal = "File too large"; break;
    case N_CASES: break;
    }
    child_run r = in_child(w->write, path, mask, fsize);
    char who[600];
    snprintf(who, sizeof who, "%s (%s), %s", w->name, w->file, case_names[c]);
    if (!r.returned) {
        expect(false, "%s: the call did not return (%s)\n", who,
               r.signal == SIGALRM ? "it blocked" : r.signal ? strsignal(r.signal) : "no report");
        return;
    }
    expect(r.exit_code == 0, "%s: the child exited with %d (a leak?)\n", who, r.exit_code);
    expect(!r.o.umask_calls && !r.o.system_calls, "%s: %d umask() and %d system() calls\n", who,
           r.o.umask_calls, r.o.system_calls);
    if (refusal) {
        expect(r.o.status == NB_ERR_IO, "%s: status %d, expected NB_ERR_IO: %s\n", who, r.o.status, r.o.message);
        const char *names = c == TOO_LONG || c == MISSING_DIR ? w->name : w->fixed_name ? dir + strlen(test_dir) : w->file;
        expect(strstr(r.o.message, w->name) && strstr(r.o.message, refusal) && strstr(r.o.message, names),
               "%s: the message should have '%s', '%s' and '%s': %s\n", who, w->name, refusal, names, r.o.message);
    } else {
        expect(r.o.status == NB_OK, "%s: status %d: %s\n", who, r.o.status, r.o.message);
    }
    char head[32];
    const char *written = c == LINK ? target : path;
    switch (c) {
    case LINK_DANGLING: expect(lstat(target, &after) == -1, "%s: the link's target was created\n", who); /* fall through */
    case LINK:
    case LINK_DEVNULL: {
        char link[PATH_MAX] = {0};
        expect(readlink(path, link, sizeof link - 1) > 0 &&
                   !strcmp(link, c == LINK_DEVNULL ? "/dev/null" : "elsewhere/target"),
               "%s: the link was replaced\n", who);
        if (c == LINK_DEVNULL)
            expect(stat("/dev/null", &after) == 0 && same_node(&null_before, &after), "%s: /dev/null changed\n", who);
        break;
    }
    case DEVICE:
        expect(lstat(path, &after) == 0 && same_node(&node_before, &after), "%s: the device node changed\n", who);
        break;
    case FIFO: expect(lstat(path, &after) == 0 && S_ISFIFO(after.st_mode), "%s: the FIFO was replaced\n", who); break;
    case DIRECTORY:
        expect(lstat(path, &after) == 0 && S_ISDIR(after.st_mode) && dir_is_empty(path), "%s: the directory changed\n",
               who);
        break;
    case TOO_LONG: expect(dir_is_empty(deep_dir), "%s: a file was written under the long directory\n", who); break;
    case FULL: expect(head_of(path, head, 8) == 4 && !strcmp(head, "old\n"), "%s: the old file was lost\n", who); break;
    case FULL_NEW: expect(lstat(path, &after) == -1, "%s: a half-written file was left\n", who); break;
    default: break;
    }
    if (!refusal || c == FULL) { /* the file, its mode and its first bytes */
        bool there = lstat(written, &after) == 0 && S_ISREG(after.st_mode);
        expect(there, "%s: %s is not a regular file\n", who, written);
        expect(!there || (after.st_mode & 07777) == mode, "%s: mode %04o, expected %04o\n", who,
               (unsigned)(after.st_mode & 07777), (unsigned)mode);
    }
    if (!refusal && r.o.status == NB_OK) {
        size_t n = strlen(w->magic);
        head_of(written, head, w->magic_at + n);
        expect(!memcmp(head + w->magic_at, w->magic, n), "%s: the file does not start as it should\n", who);
    }
    expect(no_temporary(dir) && no_temporary(elsewhere), "%s: a temporary file was left behind\n", who);
}

static void test_every_writer_follows_the_rules(void **state) {
    (void)state;
    broken = 0;
    snprintf(render_input, sizeof render_input, "%s/input.dot", test_dir);
    put_file(render_input, "digraph { a -> b }\n", 0644);
    snprintf(plot_input, sizeof plot_input, "%s/history.csv", test_dir);
    put_file(plot_input, "epoch,loss,accuracy,test_accuracy,seconds\n1,1,0.5,0.5,1\n2,0.5,0.75,0.7,1\n", 0644);
    bool gnuplot = access("/usr/bin/gnuplot", X_OK) == 0 || access("/usr/local/bin/gnuplot", X_OK) == 0;
    make_deep_dir();
    for (size_t w = 0; w < sizeof writers / sizeof *writers; w++) {
        if (writers[w].write == write_plot && !gnuplot) {
            printf("skipped: %s (apt-get install gnuplot-nox)\n", writers[w].name);
            continue;
        }
        for (int c = 0; c < N_CASES; c++) check_writer(&writers[w], w, (write_case)c);
    }
    if (broken) print_error("%d broken expectations\n", broken);
    assert_int_equal(broken, 0);
}

/* ------------------------------------------------------------ the readers */

static char good_file[PATH_MAX];

static nb_status read_params(const char *path) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_params_add(ps, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(3)));
    nb_status st = nb_params_load(ps, path);
    if (st == NB_OK && nb_get(nb_params_get(ps, "W"), 0) != 0.5) st = NB_ERR_VALUE;
    nb_params_free(ps);
    return st;
}

static nb_status read_safetensors(const char *path) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3)));
    nb_params_add(ps, "b", nb_zeros(NULL, NB_F64, NB_SHAPE(3)));
    nb_status st = nb_params_load_safetensors(ps, path);
    nb_params_free(ps);
    return st;
}

static nb_status read_csv(const char *path) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    nb_status st = nb_csv_read(path, &o, &d);
    if (st == NB_OK) {
        if (nb_tensor_shape(d.X)[0] != 2) st = NB_ERR_VALUE;
        nb_dataset_free(&d);
    }
    return st;
}

static nb_status read_idx(const char *path) {
    nb_tensor *t = nb_idx_read(path, NB_F32, 1);
    nb_status st = nb_tensor_status(t);
    if (st == NB_OK && nb_get(t, 3) != 7) st = NB_ERR_VALUE;
    nb_tensor_free(t);
    return st;
}

static nb_status read_dot(const char *path) {
    char out[PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/rendered.svg", test_dir);
    return nb_dot_render(path, out, "svg");
}

static nb_status read_open(const char *path) {
    size_t size = 0;
    FILE *f = nb_file_open_read(path, &size);
    if (!f) return nb_last_status();
    char buf[64];
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return got == size && size == sizeof some_bytes - 1 ? NB_OK : NB_ERR_VALUE;
}

static void good_idx(const char *path, bool gz) {
    unsigned char b[4 + 4 + 4] = {0, 0, 0x08, 1, 0, 0, 0, 4, 7, 7, 7, 7};
    gzFile g = gzopen(path, gz ? "wb" : "wbT");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, b, sizeof b), sizeof b);
    assert_int_equal(gzclose(g), Z_OK);
}

typedef struct {
    const char *name, *file;
    nb_status (*read)(const char *path);
} reader;

static const reader readers[] = {
    {"nb_params_load", "good.nbp", read_params},
    {"nb_params_load", "good.safetensors", read_params},
    {"nb_params_load_safetensors", "good.safetensors", read_safetensors},
    {"nb_csv_read", "good.csv", read_csv},
    {"nb_idx_read", "good.idx", read_idx},
    {"nb_idx_read", "good.idx.gz", read_idx},
    {"nb_dot_render", "good.dot", read_dot},
    {"nb_file_open_read", "good.bin", read_open},
};

static void make_good_file(const reader *r) {
    snprintf(good_file, sizeof good_file, "%s/%s", test_dir, r->file);
    const char *dot = strrchr(r->file, '.');
    if (r->read == read_params || r->read == read_safetensors) assert_int_equal(write_params(good_file), NB_OK);
    else if (r->read == read_idx) good_idx(good_file, !strcmp(dot, ".gz"));
    else if (r->read == read_csv) put_file(good_file, "a,y\n1,0\n2,1\n", 0644);
    else if (r->read == read_dot) put_file(good_file, "digraph { a -> b }\n", 0644);
    else put_file(good_file, some_bytes, 0644);
}

typedef enum { GOOD, LINK_GOOD, R_FIFO, DEV_ZERO, LINK_ZERO, R_DIRECTORY, N_READ_CASES } read_case;

static const char *const read_case_names[N_READ_CASES] = {
    "a regular file", "a link to it", "a FIFO nobody writes", "/dev/zero", "a link to /dev/zero", "a directory",
};

static void test_every_reader_refuses_what_is_not_a_file(void **state) {
    (void)state;
    broken = 0;
    for (size_t i = 0; i < sizeof readers / sizeof *readers; i++) {
        const reader *rd = &readers[i];
        make_good_file(rd);
        for (int c = 0; c < N_READ_CASES; c++) {
            char path[PATH_MAX + 64];
            snprintf(path, sizeof path, "%s/r%zu-c%d", test_dir, i, c);
            const char *refusal = NULL;
            struct stat zero_before, after;
            assert_int_equal(stat("/dev/zero", &zero_before), 0);
            switch ((read_case)c) {
            case GOOD: snprintf(path, sizeof path, "%s", good_file); break;
            case LINK_GOOD: assert_int_equal(symlink(good_file, path), 0); break;
            case R_FIFO: assert_int_equal(mkfifo(path, 0644), 0), refusal = "a FIFO"; break;
            case DEV_ZERO: snprintf(path, sizeof path, "/dev/zero"), refusal = "a character device"; break;
            case LINK_ZERO: assert_int_equal(symlink("/dev/zero", path), 0), refusal = "a character device"; break;
            case R_DIRECTORY: assert_int_equal(mkdir(path, 0755), 0), refusal = "a directory"; break;
            case N_READ_CASES: break;
            }
            child_run r = in_child(rd->read, path, 022, 0);
            char who[600];
            snprintf(who, sizeof who, "%s (%s), %s", rd->name, rd->file, read_case_names[c]);
            if (!r.returned || r.exit_code) {
                expect(false, "%s: the call did not return (%s, exit %d)\n", who,
                       r.signal == SIGALRM ? "it blocked" : r.signal ? strsignal(r.signal) : "no report", r.exit_code);
                continue;
            }
            if (refusal) {
                expect(r.o.status == NB_ERR_IO, "%s: status %d, expected NB_ERR_IO: %s\n", who, r.o.status,
                       r.o.message);
                expect(strstr(r.o.message, rd->name) && strstr(r.o.message, refusal) && strstr(r.o.message, path),
                       "%s: the message should have '%s', '%s' and the path: %s\n", who, rd->name, refusal,
                       r.o.message);
            } else {
                expect(r.o.status == NB_OK, "%s: status %d: %s\n", who, r.o.status, r.o.message);
            }
            expect(!r.o.umask_calls && !r.o.system_calls, "%s: umask() or system() called\n", who);
            expect(stat("/dev/zero", &after) == 0 && same_node(&zero_before, &after), "%s: /dev/zero changed\n", who);
        }
    }
    if (broken) print_error("%d broken expectations\n", broken);
    assert_int_equal(broken, 0);
}

/* A gzip file cannot hold more than 1032 times its size: a header that
 * announces more is refused before anything is decompressed or allocated. */
static void test_idx_gzip_bomb(void **state) {
    (void)state;
    const char *path = test_path("bomb.idx.gz");
    unsigned char header[8] = {0, 0, 0x08, 1, 0x00, 0x98, 0x96, 0x80}; /* 10,000,000 bytes */
    gzFile g = gzopen(path, "wb9");
    assert_non_null(g);
    gzwrite(g, header, sizeof header);
    static unsigned char zeros[1 << 20];
    gzwrite(g, zeros, sizeof zeros); /* 1 MB that packs into about 1 KB */
    gzclose(g);
    uint64_t before = nb_alloc_count();
    nb_tensor *t = nb_idx_read(path, NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "nb_idx_read", "bomb.idx.gz", "10000000 bytes", "at most");
    assert_true(nb_alloc_count() - before <= 2); /* no buffer grown for the data */
    nb_tensor_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_writer_follows_the_rules),
        cmocka_unit_test(test_every_reader_refuses_what_is_not_a_file),
        cmocka_unit_test(test_idx_gzip_bomb),
    };
    return cmocka_run_group_tests_name("files", tests, test_dir_setup, test_dir_teardown);
}
