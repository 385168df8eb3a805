/*
 * Feedback while training.  On a terminal a bar is redrawn in place (at most
 * ten times a second) with the epoch, the step, the running loss and
 * accuracy, examples per second and the time left; elsewhere (a log file, a
 * pipe) only one plain line per epoch is written.  Each epoch's figures are
 * kept, to be saved as CSV and plotted with gnuplot.
 */
#define _GNU_SOURCE /* pipe2 */
#include "../internal.h"
#include "nabla_train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <spawn.h>
#include <time.h>
#include <unistd.h>

typedef struct { long epoch; double loss, accuracy, test_accuracy, seconds; } epoch_record;

struct nb_progress {
    FILE *out;
    bool tty;
    long epochs, steps_per_epoch;
    double start, last_draw, epoch_start;
    size_t examples;          /* since the start */
    epoch_record *history;
    size_t n_history, cap_history;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

nb_progress *nb_progress_new(FILE *out, long epochs, long steps_per_epoch, bool force_tty) {
    nb_progress *p = nb_malloc(sizeof *p);
    if (!p) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_progress_new: out of memory");
        return NULL;
    }
    memset(p, 0, sizeof *p);
    p->out = out ? out : stderr;
    p->tty = force_tty || isatty(fileno(p->out));
    p->epochs = epochs;
    p->steps_per_epoch = steps_per_epoch;
    p->start = p->epoch_start = now();
    p->last_draw = -1;
    /* Room for every epoch now, so that training makes no allocation later. */
    size_t cap = epochs > 0 && epochs < 1000000 ? (size_t)epochs : 64;
    p->history = nb_malloc(cap * sizeof *p->history);
    p->cap_history = p->history ? cap : 0;
    return p;
}

void nb_progress_free(nb_progress *p) {
    if (!p) return;
    nb_free(p->history);
    nb_free(p);
}

static void format_duration(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void nb_progress_step(nb_progress *p, long epoch, long step, double loss, double accuracy,
                      size_t examples) {
    if (!p) return;
    p->examples += examples;
    if (!p->tty) return;
    double t = now();
    bool last = step + 1 >= p->steps_per_epoch;
    if (!last && p->last_draw >= 0 && t - p->last_draw < 0.1) return;
    p->last_draw = t;
    /* Progress over the whole run, for the rate and the time left. */
    double done = ((double)(epoch - 1) * (double)p->steps_per_epoch + (double)(step + 1)) /
                  ((double)p->epochs * (double)p->steps_per_epoch);
    double elapsed = t - p->start, rate = elapsed > 0 ? (double)p->examples / elapsed : 0;
    char left[32];
    format_duration(done > 0 ? elapsed * (1 - done) / done : 0, left, sizeof left);
    enum { WIDTH = 24 };
    int filled = (int)(WIDTH * (double)(step + 1) / (double)p->steps_per_epoch);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    fprintf(p->out, "\r\033[Kepoch %ld/%ld [%s] %ld/%ld  loss %.4f  acc %.4f  %.0f ex/s  left %s",
            epoch, p->epochs, bar, step + 1, p->steps_per_epoch, loss, accuracy, rate, left);
    fflush(p->out);
}

void nb_progress_epoch(nb_progress *p, long epoch, double loss, double accuracy,
                       double test_accuracy) {
    if (!p) return;
    double t = now(), seconds = t - p->epoch_start;
    p->epoch_start = t;
    if (p->n_history == p->cap_history) {
        size_t cap = p->cap_history ? 2 * p->cap_history : 64;
        epoch_record *grown = nb_realloc(p->history, cap * sizeof *grown);
        if (grown) {
            p->history = grown;
            p->cap_history = cap;
        }
    }
    if (p->n_history < p->cap_history)
        p->history[p->n_history++] = (epoch_record){epoch, loss, accuracy, test_accuracy, seconds};
    if (p->tty) fputs("\r\033[K", p->out);
    fprintf(p->out, "epoch %ld/%ld  loss %.4f  accuracy %.4f", epoch, p->epochs, loss, accuracy);
    if (!isnan(test_accuracy)) fprintf(p->out, "  test accuracy %.4f", test_accuracy);
    fprintf(p->out, "  %.1f s\n", seconds);
    fflush(p->out);
}

nb_status nb_progress_save_csv(const nb_progress *p, const char *path) {
    if (!p || !path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_progress_save_csv: a NULL argument");
        return NB_ERR_NULL;
    }
    nb_output out; /* atomic, as every writer: src/tensor/files.c */
    nb_status st = nb_output_open(&out, "nb_progress_save_csv", path, false);
    if (st != NB_OK) return st;
    FILE *f = out.f;
    fprintf(f, "epoch,loss,accuracy,test_accuracy,seconds\n");
    for (size_t i = 0; i < p->n_history; i++) {
        const epoch_record *r = &p->history[i];
        fprintf(f, "%ld,%.6g,%.6g,", r->epoch, r->loss, r->accuracy);
        if (!isnan(r->test_accuracy)) fprintf(f, "%.6g", r->test_accuracy);
        fprintf(f, ",%.3f\n", r->seconds);
    }
    return nb_output_close(&out, NB_OK);
}

/* The plot, as gnuplot commands given on its command line (-e, separated
 * by semicolons), the terminal's name before them.  gnuplot never sees the
 * files' names: it writes the image to /dev/fd/3, the temporary file nabla made by
 * its rules (src/tensor/files.c: the image replaces the old one whole, or
 * not at all), and reads the history from /dev/fd/4, opened by nabla as a
 * regular file.  So no byte of a name becomes a command, not even a
 * leading '|' or '<', which gnuplot would run as a pipe; and no pipe to
 * gnuplot can raise SIGPIPE in the caller if gnuplot dies early. */
static const char plot_script[] =
    " size 900,420; set output '/dev/fd/3'; set datafile separator ','; "
    "set key top center horizontal; set xlabel 'epoch'; set ylabel 'loss'; set y2label 'accuracy'; "
    "set y2tics; set ytics nomirror; set grid; "
    "plot '/dev/fd/4' using 1:2 with linespoints title 'loss' axes x1y1, '' using 1:3 with linespoints "
    "title 'train accuracy' axes x1y2, '' using 1:4 with linespoints title 'test accuracy' axes x1y2";

extern char **environ;

/* Runs gnuplot on the script with the image at its fd 3, the history at
 * its fd 4 and /dev/null as its input.  posix_spawnp, not system():
 * system() changes the process's signal dispositions while it waits, and
 * a missing gnuplot is ENOENT. */
static nb_status run_gnuplot(int image, int csv, bool svg, const char *csv_path, const char *image_path) {
    char script[sizeof plot_script + 32];
    snprintf(script, sizeof script, "set terminal %s%s", svg ? "svg" : "pngcairo", plot_script);
    /* Out of the way of 0 to 4 first, so that no dup2 below clobbers another's source. */
    int img = fcntl(image, F_DUPFD_CLOEXEC, 10), dat = fcntl(csv, F_DUPFD_CLOEXEC, 10);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, img, 3);
    posix_spawn_file_actions_adddup2(&actions, dat, 4);
    char *argv[] = {"gnuplot", "-e", script, NULL};
    pid_t pid = -1;
    int err = img < 0 || dat < 0 ? errno : posix_spawnp(&pid, "gnuplot", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (img >= 0) close(img);
    if (dat >= 0) close(dat);
    if (err != 0) {
        if (err == ENOENT) {
            nb_set_error(NULL, NB_ERR_UNSUPPORTED, NULL, 0,
                         "nb_progress_plot: gnuplot is not installed (apt-get install gnuplot-nox); "
                         "the history is in %s", csv_path);
            return NB_ERR_UNSUPPORTED;
        }
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_progress_plot: cannot run gnuplot: %s", strerror(err));
        return NB_ERR_IO;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_progress_plot: gnuplot failed (status %d) plotting %s to %s",
                     status, csv_path, image_path);
        return NB_ERR_IO;
    }
    return NB_OK;
}

/* gnuplot exits with 0 when a write fails (a full disk): the image must end
 * as its format does, a PNG with its IEND chunk, an SVG with </svg>.  NB_OK,
 * or the error set, with the reason a further write gives if any. */
static nb_status check_image(int fd, bool svg, const char *image_path) {
    struct stat st;
    unsigned char tail[16] = {0};
    bool whole = fstat(fd, &st) == 0 && st.st_size >= 16 && pread(fd, tail, 16, st.st_size - 16) == 16;
    if (whole && svg) {
        whole = false;
        for (int i = 0; i + 6 <= 16; i++) whole |= !memcmp(tail + i, "</svg>", 6);
    } else if (whole) {
        whole = !memcmp(tail + 8, "IEND\xAE\x42\x60\x82", 8);
    }
    if (whole) return NB_OK;
    errno = 0; /* the temporary file is discarded: probing it changes nothing that stays */
    int err = fstat(fd, &st) == 0 && pwrite(fd, "", 1, st.st_size) != 1 ? errno : 0;
    nb_set_error(NULL, NB_ERR_IO, NULL, 0, "nb_progress_plot: cannot write %s: %s", image_path,
                 err ? strerror(err) : "gnuplot stopped before the image was whole");
    return NB_ERR_IO;
}

nb_status nb_progress_plot(const char *csv_path, const char *image_path) {
    if (!csv_path || !image_path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_progress_plot: a NULL path");
        return NB_ERR_NULL;
    }
    size_t n = strlen(image_path);
    bool svg = n >= 4 && !strcmp(image_path + n - 4, ".svg");
    nb_output out;
    nb_status st = nb_output_open(&out, "nb_progress_plot", image_path, false);
    if (st != NB_OK) return st;
    int csv = nb_open_input_fd("nb_progress_plot", csv_path, NULL);
    if (csv < 0) return nb_output_close(&out, nb_last_status());
    st = run_gnuplot(out.fd, csv, svg, csv_path, image_path);
    close(csv);
    if (st == NB_OK) st = check_image(out.fd, svg, image_path);
    return nb_output_close(&out, st);
}
