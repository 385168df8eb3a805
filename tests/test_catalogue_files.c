/*
 * The catalogue of bad inputs, files and the training toolkit: one table,
 * one row per mistake a user can make with the loaders (CSV, IDX), the
 * parameter and safetensors files, the training toolkit, graph export and
 * pictures, paths that are not regular files, and the toolkit's trust in
 * its caller's structs.  Each row states the status the call must return
 * and words its message must contain (the file and line, the column or
 * tensor, what was expected), so that a vague or wrong message fails as
 * surely as a crash.  The sanitizer run of this file checks that no error
 * path leaks.
 *
 * The other parts: tests/test_catalogue.c (the ops) and
 * tests/test_catalogue_tape.c (backward, stale tensors, custom ops); the
 * row, the runner (NB_CATALOGUE_SHOW=1 prints every message) and the
 * helpers are in tests/catalogue.h.  The examples' bad command lines and
 * files are in tests/examples.sh.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "catalogue.h"

/* ------------------------------------------------------------ helpers */

static const char *write_bytes(const char *name, const void *bytes, size_t n) {
    const char *path = test_path(name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    fwrite(bytes, 1, n, f);
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *text) {
    return write_bytes(name, text, strlen(text));
}

/* An IDX header: type code, dimensions, then `data` bytes of value 7. */
static const char *write_idx(const char *name, int type, int ndim, const unsigned *dims, size_t data) {
    size_t n = 4 + 4 * (size_t)ndim + data;
    unsigned char *b = calloc(n, 1);
    b[2] = (unsigned char)type;
    b[3] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++)
        for (int k = 0; k < 4; k++) b[4 + 4 * d + k] = (unsigned char)(dims[d] >> (24 - 8 * k));
    memset(b + 4 + 4 * ndim, 7, data);
    const char *path = write_bytes(name, b, n);
    free(b);
    return path;
}

static nb_status csv_status(const char *name, const char *text, const char *target) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = target;
    nb_dataset d;
    nb_status st = nb_csv_read(write_text(name, text), &o, &d);
    if (st == NB_OK) nb_dataset_free(&d);
    return st;
}

static nb_status csv_status_bytes(const char *name, const char *bytes, size_t n, const char *target) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = target;
    nb_dataset d;
    nb_status st = nb_csv_read(write_bytes(name, bytes, n), &o, &d);
    if (st == NB_OK) nb_dataset_free(&d);
    return st;
}

static nb_status idx_status(const char *path) {
    nb_tensor *t = nb_idx_read(path, NB_F32, 1);
    nb_status st = nb_tensor_status(t);
    nb_tensor_free(t);
    return st;
}

/* A model of W (2, 3) float32 and b (3,) float64, for the parameter files. */
static nb_params *model(const char *w_name, size_t w_rows, nb_dtype b_dtype) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, w_name, nb_full(NULL, NB_F32, NB_SHAPE(w_rows, 3), 0.5));
    nb_params_add(ps, "b", nb_full(NULL, b_dtype, NB_SHAPE(3), -1));
    return ps;
}

/* The bytes of a good parameter file for model("W", 2, NB_F64). */
static unsigned char *good_params_file(size_t *len) {
    nb_params *ps = model("W", 2, NB_F64);
    const char *path = test_path("good.nbp");
    nb_params_save(ps, path);
    nb_params_free(ps);
    FILE *f = fopen(path, "rb");
    static unsigned char buf[4096];
    *len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    return buf;
}

/* Loads `path` into model(w_name, w_rows, b_dtype); the model's values must
 * come through unchanged when the load fails. */
static nb_status load_into(const char *path, const char *w_name, size_t w_rows, nb_dtype b_dtype) {
    nb_params *ps = model(w_name, w_rows, b_dtype);
    nb_status st = nb_params_load(ps, path);
    if (st != NB_OK && nb_get(nb_params_at(ps, 0), 0) != 0.5) st = NB_OK; /* would fail the row */
    nb_params_free(ps);
    return st;
}

/* ------------------------------------------------------------ CSV */

static nb_status csv_missing(void) { return csv_status("missing.csv", "age,chol,target\n50,200,1\n61,,0\n", "target"); }
static nb_status csv_text(void) { return csv_status("text.csv", "age,chol,target\n50,high,1\n", "target"); }
static nb_status csv_nan(void) { return csv_status("nan.csv", "age,chol,target\n50,nan,1\n", "target"); }
static nb_status csv_inf(void) { return csv_status("inf.csv", "age,chol,target\n50,1e999,1\n", "target"); }
static nb_status csv_short_row(void) { return csv_status("short.csv", "a,b,target\n1,2,0\n3,1\n", "target"); }
static nb_status csv_long_row(void) { return csv_status("long.csv", "a,b,target\n1,2,0,9\n", "target"); }
static nb_status csv_no_header(void) { return csv_status("nohead.csv", "1,2,0\n3,4,1\n", "target"); }
static nb_status csv_unknown_target(void) { return csv_status("heart.csv", "age,chol,target\n1,2,0\n", "label"); }
static nb_status csv_empty(void) { return csv_status("empty.csv", "\n\n", "target"); }
static nb_status csv_header_only(void) { return csv_status("header.csv", "a,target\n", "target"); }
static nb_status csv_only_target(void) { return csv_status("lonely.csv", "target\n1\n", "target"); }
static nb_status csv_missing_file(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    return nb_csv_read("/nonexistent/data.csv", &o, &d);
}
static nb_status csv_no_target_option(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o); /* target left NULL */
    nb_dataset d;
    return nb_csv_read(write_text("fine.csv", "a,y\n1,0\n"), &o, &d);
}

/* ------------------------------------------------------------ IDX */

static const unsigned dims_2x3[2] = {2, 3};
static nb_status idx_magic(void) {
    const char *path = write_idx("magic.idx", 0x08, 2, dims_2x3, 6);
    FILE *f = fopen(path, "r+b");
    if (f) fputc(0x12, f), fclose(f);
    return idx_status(path);
}
static nb_status idx_type(void) { return idx_status(write_idx("type.idx", 0x0A, 2, dims_2x3, 6)); }
static nb_status idx_truncated(void) { return idx_status(write_idx("cut.idx", 0x08, 2, dims_2x3, 5)); }
static nb_status idx_extra(void) { return idx_status(write_idx("long.idx", 0x08, 2, dims_2x3, 7)); }
static nb_status idx_dims_cut(void) {
    const char *path = write_idx("dims.idx", 0x08, 2, dims_2x3, 0);
    truncate(path, 9);
    return idx_status(path);
}
static nb_status idx_no_magic(void) { return idx_status(write_bytes("tiny.idx", "\0\0", 2)); }
static nb_status idx_huge(void) {
    const unsigned dims[3] = {60000, 60000, 60000}; /* 2e14 values, 6 bytes given */
    return idx_status(write_idx("huge.idx", 0x0D, 3, dims, 6));
}
static nb_status idx_empty_dim(void) {
    const unsigned dims[2] = {0, 3};
    return idx_status(write_idx("empty.idx", 0x08, 2, dims, 0));
}
static nb_status idx_gz_truncated(void) {
    /* A gzip stream of a 2x3 IDX file, cut in the middle of its data. */
    const char *path = test_path("cut.idx.gz");
    gzFile g = gzopen(path, "wb");
    unsigned char b[12 + 6] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
    gzwrite(g, b, 15);
    gzclose(g);
    return idx_status(path);
}
static nb_status idx_missing_file(void) { return idx_status("/nonexistent/train-images-idx3-ubyte.gz"); }

/* ------------------------------------------------------------ parameter files */

static nb_status params_truncated(void) {
    size_t len;
    unsigned char *b = good_params_file(&len);
    return load_into(write_bytes("cut.nbp", b, len / 2), "W", 2, NB_F64);
}
static nb_status params_flipped(void) {
    size_t len;
    unsigned char *b = good_params_file(&len);
    b[len - 9] ^= 0x04; /* a bit of b's last value */
    return load_into(write_bytes("flip.nbp", b, len), "W", 2, NB_F64);
}
static nb_status params_magic(void) {
    size_t len;
    unsigned char *b = good_params_file(&len);
    b[0] = 'X';
    return load_into(write_bytes("magic.nbp", b, len), "W", 2, NB_F64);
}
static nb_status params_wrong_name(void) { return load_into(test_path("good.nbp"), "weights", 2, NB_F64); }
static nb_status params_wrong_shape(void) { return load_into(test_path("good.nbp"), "W", 4, NB_F64); }
static nb_status params_wrong_dtype(void) { return load_into(test_path("good.nbp"), "W", 2, NB_F32); }
static nb_status params_count(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_params_add(ps, "c", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    nb_status st = nb_params_load(ps, test_path("good.nbp"));
    nb_params_free(ps);
    return st;
}
static nb_status params_not_a_file(void) {
    return load_into(write_text("notes.nbp", "these are my notes, not a model\n"), "W", 2, NB_F64);
}
static nb_status params_missing_file(void) { return load_into("/nonexistent/model.nbp", "W", 2, NB_F64); }
static nb_status params_save_dir(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_params_save(ps, "/nonexistent/dir/model.nbp");
    nb_params_free(ps);
    return st;
}
/* ------------------------------------------------------------ safetensors files */

/* A safetensors file: the 8-byte length, the header text, then `data`
 * bytes (of value 0x3F, so that each float is a finite number). */
static const char *write_safetensors(const char *name, const char *header, size_t data) {
    size_t n = strlen(header), total = 8 + n + data;
    unsigned char *b = calloc(total, 1);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)n >> (8 * k));
    memcpy(b + 8, header, n);
    memset(b + 8 + n, 0x3F, data);
    const char *path = write_bytes(name, b, total);
    free(b);
    return path;
}
/* model("W", 2, NB_F64)'s tensors: W float32 (2, 3) in bytes 0..24, b float64 (3,) in 24..48. */
#define ST_W "\"W\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define ST_B "\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[24,48]}"
#define ST_CASE(fn, file, header, data)                                                   \
    static nb_status fn(void) {                                                           \
        return load_into(write_safetensors(file, header, data), "W", 2, NB_F64);         \
    }
ST_CASE(st_good, "good.safetensors", "{" ST_W "," ST_B "}", 48)
ST_CASE(st_truncated, "cut.safetensors", "{" ST_W "," ST_B "}", 30)
ST_CASE(st_bad_json, "json.safetensors", "{\"W\":{\"dtype\":\"F32\" \"shape\":[2,3]}}", 48)
ST_CASE(st_int_dtype, "u16.safetensors", "{\"W\":{\"dtype\":\"U16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12)
ST_CASE(st_gap, "gap.safetensors",
        "{" ST_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[32,56]}}", 56)
ST_CASE(st_overlap, "overlap.safetensors",
        "{" ST_W ",\"b\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[16,40]}}", 48)
ST_CASE(st_byte_count, "count.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_shape, "shape.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_missing, "missing.safetensors", "{" ST_W "}", 24)
ST_CASE(st_extra, "extra.safetensors",
        "{" ST_W "," ST_B ",\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[48,52]}}", 52)
ST_CASE(st_twice, "twice.safetensors", "{" ST_W "," ST_W "," ST_B "}", 48)
ST_CASE(st_long_name, "long.safetensors",
        "{\"encoder.layers.11.attention.query.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        4)
ST_CASE(st_not_utf8, "latin1.safetensors", "{\"caf\xe9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4)
ST_CASE(st_unknown_field, "field.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[2,3],\"offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_tail, "tail.safetensors", "{" ST_W "," ST_B "}", 56)
ST_CASE(st_fraction, "fraction.safetensors",
        "{\"W\":{\"dtype\":\"F32\",\"shape\":[2.5,3],\"data_offsets\":[0,24]}," ST_B "}", 48)
ST_CASE(st_garbage, "garbage.safetensors", "{" ST_W "," ST_B "} x", 48)
static nb_status st_huge_header(void) {
    unsigned char b[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, '{', '}'};
    return load_into(write_bytes("huge.safetensors", b, sizeof b), "W", 2, NB_F64);
}
static nb_status st_save_bad_name(void) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "caf\xe9", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    nb_status st = nb_params_save_safetensors(ps, test_path("bad-name.safetensors"));
    nb_params_free(ps);
    return st;
}

static nb_status params_duplicate(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_tensor_status(nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2))));
    nb_params_free(ps);
    return st;
}
static nb_status params_tape_tensor(void) {
    nb_params *ps = nb_params_new();
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_tensor_status(nb_params_add(ps, "W", V(tp, 2)));
    nb_tape_free(tp);
    nb_params_free(ps);
    return st;
}

/* ------------------------------------------------------------ training toolkit */

static nb_status optimizer_lr(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    o.lr = -0.1;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_status st = opt ? NB_OK : nb_last_status();
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status optimizer_set_lr_nan(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_status st = nb_optimizer_set_lr(opt, NAN);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status optimizer_changed_params(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_params_add(ps, "late", nb_zeros(NULL, NB_F32, NB_SHAPE(2)));
    nb_status st = nb_optimizer_step(opt);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
/* The step's backward finds the non-scalar loss; the message names the
 * caller's line, for the fused path and the plain one alike. */
static nb_status backward_step_non_scalar(nb_optimizer_kind kind) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_optimizer_backward_step(opt, nb_square(tp, nb_params_get(ps, "b")));
    nb_tape_free(tp);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status sgd_step_non_scalar(void) { return backward_step_non_scalar(NB_OPT_SGD); }
static nb_status adam_step_non_scalar(void) { return backward_step_non_scalar(NB_OPT_ADAM); }
static nb_status standardize_columns(void) {
    nb_tensor *train = nb_ones(NULL, NB_F32, NB_SHAPE(4, 3)), *test = nb_ones(NULL, NB_F32, NB_SHAPE(2, 5));
    nb_status st = nb_standardize(train, &test, 1);
    nb_tensor_free(train);
    nb_tensor_free(test);
    return st;
}
static nb_status split_fraction(void) {
    nb_dataset d = {.X = nb_ones(NULL, NB_F32, NB_SHAPE(10, 2)), .y = nb_ones(NULL, NB_F32, NB_SHAPE(10, 1)),
                    .rows = 10, .features = 2};
    nb_dataset train, test;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status st = nb_dataset_split(&d, 1.5, &rng, &train, &test);
    nb_tensor_free(d.X);
    nb_tensor_free(d.y);
    return st;
}
static nb_status batcher_zero(void) {
    nb_batcher b;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status st = nb_batcher_init(&b, 100, 0, &rng);
    if (st == NB_OK) nb_batcher_free(&b);
    return st;
}
OP_CASE(gather_range, nb_gather_rows(tp, M(tp, 3, 2), ((size_t[]){0, 3}), 2))
static nb_status init_fan(void) {
    nb_tensor *t = nb_zeros(NULL, NB_F32, NB_SHAPE(2, 2));
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status st = nb_init_tensor(t, NB_INIT_GLOROT_UNIFORM, 0, 2, &rng);
    nb_tensor_free(t);
    return st;
}

static nb_status threads_zero(void) { return nb_set_threads(0); }
static nb_status threads_too_many(void) { return nb_set_threads(1000); }
/* a bound of 0 would zero the gradients; they must come through unchanged */
static nb_status clip_zero(void) {
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_ones(NULL, NB_F64, NB_SHAPE(2)));
    nb_tape *tp = nb_tape_new();
    nb_backward(nb_sum(tp, nb_scale(tp, w, 3)));
    bool refused = isnan(nb_clip_grad_norm(ps, 0));
    nb_status st = refused && nb_grad_get(w, 1) == 3 ? nb_last_status() : NB_OK;
    nb_tape_free(tp);
    nb_params_free(ps);
    return st;
}

/* ------------------------------------------------------------ graph export */

static nb_status dot_unwritable(void) {
    nb_tape *tp = nb_tape_new();
    nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_dot_save(tp, "/nonexistent/graph.dot", NULL);
    nb_tape_free(tp);
    return st;
}
/* The options' tensors: a loss from before a reset, a checked one of another tape. */
static nb_status dot_stale_loss(void) {
    nb_tape *tp = nb_tape_new();
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.loss = nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_tape_reset(tp);
    nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_dot_save(tp, test_path("stale.dot"), &o);
    nb_tape_free(tp);
    return st;
}
static nb_status html_checked_elsewhere(void) {
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *elsewhere = nb_ones(other, NB_F64, NB_SHAPE(2));
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.checked = &elsewhere;
    o.checked_errors = (double[]){1e-6};
    o.n_checked = 1;
    nb_status st = nb_backward_html(nb_sum(tp, nb_square(tp, grad_leaf(tp, 2))), test_path("c.html"), NULL, &o);
    nb_tape_free(other);
    nb_tape_free(tp);
    return st;
}
static nb_status render(const char *dot_name, const char *dot, const char *out_name, const char *format) {
    char dot_path[160];
    snprintf(dot_path, sizeof dot_path, "%s", write_text(dot_name, dot));
    return nb_dot_render(dot_path, test_path(out_name), format);
}
static nb_status render_not_dot(void) { return render("bad.dot", "this is not { a graph", "bad.svg", "svg"); }
static nb_status render_format(void) { return render("ok.dot", "digraph { a -> b }", "ok.xyz", "no-such-format"); }
/* Graphviz devices that do not render into the one output: vrml writes a
 * PNG per node into the current directory (through any symlink there),
 * x11 and xlib crash with no display, gtk calls exit(1). */
static nb_status render_vrml(void) { return render("ok.dot", "digraph { a -> b }", "ok.wrl", "vrml"); }
static nb_status render_x11(void) { return render("ok.dot", "digraph { a -> b }", "ok.x", "x11"); }
static nb_status render_gtk(void) { return render("ok.dot", "digraph { a -> b }", "ok.gtk", "gtk:cairo"); }
static nb_status render_unwritable(void) {
    return nb_dot_render(test_path("ok.dot"), "/nonexistent/graph.svg", "svg");
}
static nb_status scope_null_name(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_scope_begin(tp, NULL);
    nb_tape_free(tp);
    return st;
}

/* ------------------------------------------------------------ files that are not files */

/* Never /dev/full: a link of our own to /dev/null, which is only stat()ed. */
static nb_status render_to_device(void) {
    const char *link = test_path("null.svg");
    unlink(link);
    if (symlink("/dev/null", link) != 0) return NB_OK; /* would fail the row */
    return nb_dot_render(write_text("device.dot", "digraph { a -> b }"), link, "svg");
}
static const char *fifo(const char *name) {
    const char *path = test_path(name);
    unlink(path);
    mkfifo(path, 0600);
    return path;
}
static nb_status dot_save_fifo(void) {
    nb_tape *tp = nb_tape_new();
    nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_dot_save(tp, fifo("graph.fifo"), NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status html_into_directory(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *loss = nb_sum(tp, nb_square(tp, grad_leaf(tp, 2)));
    nb_status st = nb_backward_html(loss, test_dir, NULL, NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status history_dangling_link(void) {
    const char *link = test_path("history.csv");
    unlink(link);
    if (symlink("no/such/file.csv", link) != 0) return NB_OK;
    nb_progress *p = nb_progress_new(stderr, 1, 1, false);
    nb_status st = nb_progress_save_csv(p, link);
    nb_progress_free(p);
    return st;
}
/* Frames under a directory of 4090 bytes: it fits, DIR/frame_000.dot does not. */
static nb_status frames_path_too_long(void) {
    char dir[4200];
    size_t n = (size_t)snprintf(dir, sizeof dir, "%s", test_dir);
    while (n < 4090) {
        size_t part = 4090 - n - 1 > 200 ? 200 : 4090 - n - 1;
        dir[n++] = '/';
        memset(dir + n, 'd', part);
        dir[n += part] = '\0';
        mkdir(dir, 0755);
    }
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_frames(nb_sum(tp, nb_square(tp, grad_leaf(tp, 2))), dir, NULL, NULL);
    nb_tape_free(tp);
    return st;
}
static nb_status file_write_empty_path(void) { return nb_file_write("", "x", 1); }
static nb_status params_load_fifo(void) { return load_into(fifo("model.nbp"), "W", 2, NB_F64); }
static nb_status safetensors_load_zero(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_params_load_safetensors(ps, "/dev/zero");
    nb_params_free(ps);
    return st;
}
static nb_status csv_dev_zero(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    return nb_csv_read("/dev/zero", &o, &d);
}
static nb_status idx_fifo(void) { return idx_status(fifo("images.idx")); }
static nb_status render_from_fifo(void) { return nb_dot_render(fifo("in.dot"), test_path("out.svg"), "svg"); }
static nb_status file_open_directory(void) {
    FILE *f = nb_file_open_read(test_dir, NULL);
    if (f) fclose(f);
    return f ? NB_OK : nb_last_status();
}
/* 1 MB of zeros packs into about 1 KB; the header announces 10 MB. */
static nb_status idx_gzip_bomb(void) {
    const char *path = test_path("bomb.idx.gz");
    gzFile g = gzopen(path, "wb9");
    if (!g) return NB_OK;
    gzwrite(g, "\0\0\x08\x01\x00\x98\x96\x80", 8);
    unsigned char *zeros = calloc(1, 1 << 20);
    if (zeros) gzwrite(g, zeros, 1 << 20);
    free(zeros);
    gzclose(g);
    return idx_status(path);
}
static nb_status params_save_fifo(void) {
    const char *path = test_path("model.fifo");
    if (mkfifo(path, 0600) != 0) return NB_OK; /* would fail the row */
    nb_params *ps = model("W", 2, NB_F64);
    nb_status st = nb_params_save(ps, path);
    nb_params_free(ps);
    struct stat after;
    if (lstat(path, &after) != 0 || !S_ISFIFO(after.st_mode)) st = NB_OK; /* replaced: fail the row */
    unlink(path);
    return st;
}
static nb_status params_load_dir(void) { return load_into(test_dir, "W", 2, NB_F64); }
static nb_status checkpoint_into(const char *path, nb_optimizer_kind kind, bool rng);
static nb_status checkpoint_load_fifo(void) { return checkpoint_into(fifo("run.safetensors"), NB_OPT_ADAM, false); }
static nb_status checkpoint_save_fifo(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_status st = nb_checkpoint_save(ps, opt, NULL, fifo("run.nbp"));
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static nb_status idx_dir(void) { return idx_status(test_dir); }
static nb_status csv_dir(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    nb_dataset d;
    return nb_csv_read(test_dir, &o, &d);
}
static nb_status csv_dtype(void) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "y";
    o.dtype = (nb_dtype)9;
    nb_dataset d;
    return nb_csv_read(write_text("dtype.csv", "a,y\n1,0\n"), &o, &d);
}
static nb_status csv_target_twice(void) { return csv_status("twice.csv", "a,y,y\n1,0,0\n", "y"); }
static nb_status csv_nul_byte(void) {
    static const char bytes[] = "a,b,y\n1,2\0,999\n";
    return csv_status_bytes("nul.csv", bytes, sizeof bytes - 1, "y");
}
static nb_status frames_empty_dir(void) {
    nb_tape *tp = nb_tape_new();
    nb_status st = nb_backward_frames(nb_sum(tp, nb_square(tp, grad_leaf(tp, 2))), "", NULL, NULL);
    nb_tape_free(tp);
    return st;
}

/* ------------------------------------------------------------ the toolkit's trust in its caller */

static nb_status params_same_tensor_twice(void) {
    nb_params *ps = nb_params_new();
    nb_tensor *W = nb_params_add(ps, "W", nb_zeros(NULL, NB_F32, NB_SHAPE(2, 2)));
    nb_status st = nb_tensor_status(nb_params_add(ps, "W_tied", W));
    nb_params_free(ps); /* frees W once */
    return st;
}
/* Checkpoints: the model of W and b with an optimizer of `kind`. */
static nb_status checkpoint_into(const char *path, nb_optimizer_kind kind, bool rng) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, kind);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_rng r;
    nb_rng_seed(&r, 1);
    nb_status st = nb_checkpoint_load(ps, opt, rng ? &r : NULL, path);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return st;
}
static const char *adam_checkpoint(const char *name, bool rng) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_rng r;
    nb_rng_seed(&r, 1);
    const char *path = test_path(name);
    nb_checkpoint_save(ps, opt, rng ? &r : NULL, path);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return path;
}
static nb_status checkpoint_plain_file(void) {
    nb_params *ps = model("W", 2, NB_F64);
    nb_params_save(ps, test_path("plain.safetensors"));
    nb_params_free(ps);
    return checkpoint_into(test_path("plain.safetensors"), NB_OPT_ADAM, false);
}
static nb_status checkpoint_other_kind(void) {
    return checkpoint_into(adam_checkpoint("adam.nbp", false), NB_OPT_MOMENTUM, false);
}
static nb_status checkpoint_no_rng(void) { return checkpoint_into(adam_checkpoint("norng.nbp", false), NB_OPT_ADAM, true); }
static nb_status checkpoint_truncated(void) {
    const char *path = adam_checkpoint("cut.safetensors", true);
    FILE *f = fopen(path, "r+b");
    if (!f) return NB_OK;
    fseek(f, 0, SEEK_END);
    int cut = ftruncate(fileno(f), ftell(f) - 8);
    fclose(f);
    return cut ? NB_OK : checkpoint_into(path, NB_OPT_ADAM, true);
}
static nb_status checkpoint_reserved_name(void) {
    nb_params *ps = nb_params_new();
    nb_status st = nb_tensor_status(nb_params_add(ps, "__nabla__/exp_avg/W", nb_zeros(NULL, NB_F32, NB_SHAPE(1))));
    nb_params_free(ps);
    return st;
}
static nb_status split_lying_struct(void) {
    nb_dataset d = {.X = nb_ones(NULL, NB_F32, NB_SHAPE(10, 2)), .y = nb_ones(NULL, NB_F64, NB_SHAPE(10, 1)),
                    .rows = 10, .features = 2};
    nb_dataset train, test;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_status dtypes = nb_dataset_split(&d, 0.5, &rng, &train, &test);
    d.features = 5; /* claims more columns than X has */
    nb_tensor_free(d.y);
    d.y = nb_ones(NULL, NB_F32, NB_SHAPE(10, 1));
    nb_status columns = nb_dataset_split(&d, 0.5, &rng, &train, &test);
    nb_tensor_free(d.X);
    nb_tensor_free(d.y);
    return dtypes == NB_ERR_SHAPE ? columns : NB_OK;
}
static nb_status confusion_classes(void) {
    size_t counts[4] = {0}; /* room for 2 classes; 9 asked */
    nb_tensor *scores = nb_ones(NULL, NB_F32, NB_SHAPE(3, 2)), *labels = nb_zeros(NULL, NB_F32, NB_SHAPE(3));
    nb_status st = nb_confusion_matrix(scores, labels, 1, 9, counts);
    nb_tensor_free(scores);
    nb_tensor_free(labels);
    return st;
}

/* ------------------------------------------------------------ the table */

#define SITE "test_catalogue_files.c:"

static const bad_input catalogue[] = {
    /* CSV */
    {"CSV: a missing value", csv_missing, NB_ERR_VALUE, {"missing.csv:3", "'chol'", "(2)", "empty"}},
    {"CSV: text in a numeric column", csv_text, NB_ERR_VALUE, {"text.csv:2", "'chol'", "'high'", "not a finite number"}},
    {"CSV: nan", csv_nan, NB_ERR_VALUE, {"nan.csv:2", "'chol'", "not a finite number"}},
    {"CSV: a value that overflows", csv_inf, NB_ERR_VALUE, {"inf.csv:2", "'1e999'", "not a finite number"}},
    {"CSV: a short row", csv_short_row, NB_ERR_VALUE, {"short.csv:3", "2 fields", "expected 3"}},
    {"CSV: a long row", csv_long_row, NB_ERR_VALUE, {"long.csv:2", "4 fields", "expected 3"}},
    {"CSV: no header row", csv_no_header, NB_ERR_VALUE, {"nohead.csv:1", "'target'", "header row"}},
    {"CSV: an unknown target column", csv_unknown_target, NB_ERR_VALUE,
     {"heart.csv:1", "no column named 'label'", "age, chol, target"}},
    {"CSV: an empty file", csv_empty, NB_ERR_VALUE, {"empty.csv", "empty", "header"}},
    {"CSV: a header and no rows", csv_header_only, NB_ERR_VALUE, {"header.csv", "no data rows"}},
    {"CSV: only the target column", csv_only_target, NB_ERR_VALUE, {"lonely.csv:1", "no features"}},
    {"CSV: a file that does not exist", csv_missing_file, NB_ERR_IO, {"/nonexistent/data.csv", "No such file"}},
    {"CSV: no target column given", csv_no_target_option, NB_ERR_NULL, {"nb_csv_read", "target"}},
    /* IDX */
    {"IDX: a wrong magic number", idx_magic, NB_ERR_VALUE, {"magic.idx", "magic number 12 00 08 02", "00 00"}},
    {"IDX: an unknown type code", idx_type, NB_ERR_VALUE, {"type.idx", "00 00 0a 02", "08, 09"}},
    {"IDX: truncated data", idx_truncated, NB_ERR_VALUE, {"cut.idx", "truncated", "(2, 3)", "6 bytes", "only 5 are there"}},
    {"IDX: data beyond the header's shape", idx_extra, NB_ERR_VALUE, {"long.idx", "beyond the 6 values"}},
    {"IDX: truncated dimensions", idx_dims_cut, NB_ERR_VALUE, {"dims.idx", "truncated in its dimensions", "1 of 2"}},
    {"IDX: no magic number", idx_no_magic, NB_ERR_VALUE, {"tiny.idx", "no 4-byte magic number"}},
    {"IDX: a header claiming 2e14 floats", idx_huge, NB_ERR_VALUE,
     {"huge.idx", "truncated", "(60000, 60000, 60000)", "only 6 are there"}},
    {"IDX: a zero dimension", idx_empty_dim, NB_ERR_SHAPE, {"empty.idx", "(0, 3)", "empty"}},
    {"IDX: a truncated .gz", idx_gz_truncated, NB_ERR_VALUE, {"cut.idx.gz", "truncated", "only 3 are there"}},
    {"IDX: a file that does not exist", idx_missing_file, NB_ERR_IO,
     {"cannot open /nonexistent/train-images-idx3-ubyte.gz"}},
    /* parameter files (the model in memory must keep its values) */
    {"params: a truncated file", params_truncated, NB_ERR_VALUE, {"cut.nbp", "truncated"}},
    {"params: a flipped bit", params_flipped, NB_ERR_VALUE, {"flip.nbp", "checksum"}},
    {"params: not a parameter file", params_magic, NB_ERR_VALUE, {"magic.nbp", "not a nabla parameter file"}},
    {"params: a text file", params_not_a_file, NB_ERR_VALUE, {"notes.nbp", "not a nabla parameter file"}},
    {"params: another name", params_wrong_name, NB_ERR_VALUE, {"good.nbp", "'W'", "the model does not"}},
    {"params: another shape", params_wrong_shape, NB_ERR_VALUE,
     {"good.nbp", "'W'", "(2, 3) float32 in the file", "(4, 3) float32 in the model"}},
    {"params: another dtype", params_wrong_dtype, NB_ERR_VALUE, {"'b'", "float64 in the file", "float32 in the model"}},
    {"params: another count", params_count, NB_ERR_VALUE, {"holds 2 parameters, the model has 3"}},
    {"params: a file that does not exist", params_missing_file, NB_ERR_IO, {"cannot open /nonexistent/model.nbp"}},
    {"params: saving into a missing directory", params_save_dir, NB_ERR_IO, {"nb_params_save", "/nonexistent/dir"}},
    /* safetensors files (the model in memory must keep its values) */
    {"safetensors: a good file loads", st_good, NB_OK, {NULL}},
    {"safetensors: a truncated file", st_truncated, NB_ERR_VALUE,
     {"cut.safetensors", "'b'", "[24, 48] outside the 30 bytes", "truncated"}},
    {"safetensors: a header claiming 4 GB", st_huge_header, NB_ERR_VALUE, {"huge.safetensors", "claims 4294967295 bytes"}},
    {"safetensors: malformed JSON", st_bad_json, NB_ERR_VALUE, {"json.safetensors", "malformed at byte 20", "expected"}},
    {"safetensors: a dtype nabla does not read", st_int_dtype, NB_ERR_VALUE,
     {"u16.safetensors", "'W'", "dtype U16", "F16, BF16, F32, F64, I64, I32, I16, I8, U8 and BOOL"}},
    {"safetensors: a gap in the data", st_gap, NB_ERR_VALUE, {"gap.safetensors", "'b'", "starts at byte 32", "nothing fills"}},
    {"safetensors: overlapping tensors", st_overlap, NB_ERR_VALUE, {"overlap.safetensors", "'b'", "overlaps"}},
    {"safetensors: offsets that disagree with the shape", st_byte_count, NB_ERR_VALUE,
     {"count.safetensors", "'W'", "F32 (2, 2)", "needs 16 bytes", "span 24"}},
    {"safetensors: another shape", st_shape, NB_ERR_VALUE,
     {"shape.safetensors", "'W'", "(3, 2) in the file but (2, 3) in the model"}},
    {"safetensors: a parameter missing", st_missing, NB_ERR_VALUE, {"missing.safetensors", "has no 'b'"}},
    {"safetensors: a tensor the model lacks", st_extra, NB_ERR_VALUE, {"extra.safetensors", "'c'", "the model does not"}},
    {"safetensors: a name twice", st_twice, NB_ERR_VALUE, {"twice.safetensors", "'W' twice"}},
    {"safetensors: a name too long for nabla", st_long_name, NB_ERR_VALUE,
     {"long.safetensors", "name of 40 bytes", "1 to 31"}},
    {"safetensors: a header that is not UTF-8", st_not_utf8, NB_ERR_VALUE, {"latin1.safetensors", "not UTF-8", "byte 5"}},
    {"safetensors: an unknown field", st_unknown_field, NB_ERR_VALUE, {"field.safetensors", "'W'", "unknown field 'offsets'"}},
    {"safetensors: data after the last tensor", st_tail, NB_ERR_VALUE, {"tail.safetensors", "8 bytes of data after"}},
    {"safetensors: a fractional size", st_fraction, NB_ERR_VALUE, {"fraction.safetensors", "no fraction or exponent"}},
    {"safetensors: text after the header", st_garbage, NB_ERR_VALUE, {"garbage.safetensors", "nothing but spaces"}},
    {"safetensors: saving a name that is not UTF-8", st_save_bad_name, NB_ERR_ARG,
     {"nb_params_save_safetensors", "not valid UTF-8"}},
    {"params: a duplicate name", params_duplicate, NB_ERR_ARG, {"'W'", "exists already"}},
    {"params: a tensor that lives on a tape", params_tape_tensor, NB_ERR_ARG, {"'W'", "lives on a tape"}},
    /* training toolkit */
    {"optimizer: a negative learning rate", optimizer_lr, NB_ERR_ARG, {"nb_optimizer_new", "-0.1"}},
    {"optimizer: a NaN learning rate set later", optimizer_set_lr_nan, NB_ERR_ARG, {"nb_optimizer_set_lr", "nan"}},
    {"optimizer: parameters added after it was made", optimizer_changed_params, NB_ERR_STATE,
     {"nb_optimizer_step", "from 2 to 3 parameters"}},
    {"SGD backward step from a (3,) loss", sgd_step_non_scalar, NB_ERR_SHAPE, {"nb_backward", "(3,)", SITE}},
    {"Adam backward step from a (3,) loss", adam_step_non_scalar, NB_ERR_SHAPE, {"nb_backward", "(3,)", SITE}},
    {"standardize: tables of 3 and 5 columns", standardize_columns, NB_ERR_SHAPE, {"nb_standardize", "table 1", "(2, 5)", "3 features"}},
    {"split: a test fraction of 1.5", split_fraction, NB_ERR_ARG, {"nb_dataset_split", "1.5", "10 rows"}},
    {"batcher: a batch size 0", batcher_zero, NB_ERR_ARG, {"nb_batcher_init", "batch size (0)"}},
    {"gather: row 3 of 3", gather_range, NB_ERR_ARG, {"nb_gather_rows", "row 3 is out of range (3 rows)", SITE}},
    {"init: fan_in 0", init_fan, NB_ERR_ARG, {"nb_init_tensor", "fan_in 0"}},
    {"threads: 0", threads_zero, NB_ERR_ARG, {"nb_set_threads", "0 threads", "1 to 64"}},
    {"threads: 1000", threads_too_many, NB_ERR_ARG, {"nb_set_threads", "1000 threads"}},
    {"clip_grad_norm with max_norm 0", clip_zero, NB_ERR_ARG,
     {"nb_clip_grad_norm", "max_norm 0", "must be positive", "left as they were"}},
    /* graph export */
    {"dot: an unwritable path", dot_unwritable, NB_ERR_IO, {"/nonexistent/graph.dot"}},
    {"dot: opts.loss kept across nb_tape_reset", dot_stale_loss, NB_ERR_STATE,
     {"nb_dot_write", "opts.loss", "before nb_tape_reset"}},
    {"stepper page: opts.checked holding another tape's tensor", html_checked_elsewhere, NB_ERR_STATE,
     {"nb_backward_html", "opts.checked[0]", "another tape"}},
    {"render: a file that is not dot", render_not_dot, NB_ERR_VALUE,
     {"nb_dot_render", "bad.dot", "not a valid dot", "syntax error in line 1"}},
    {"render: an unknown format", render_format, NB_ERR_UNSUPPORTED, {"nb_dot_render", "'no-such-format'", "svg"}},
    {"render: a device that writes files of its own (vrml)", render_vrml, NB_ERR_UNSUPPORTED,
     {"nb_dot_render", "'vrml'", "svg"}},
    {"render: a device that opens a window (x11)", render_x11, NB_ERR_UNSUPPORTED, {"nb_dot_render", "'x11'"}},
    {"render: a device that opens a window (gtk)", render_gtk, NB_ERR_UNSUPPORTED, {"nb_dot_render", "'gtk:cairo'"}},
    {"render: an unwritable path", render_unwritable, NB_ERR_IO, {"nb_dot_render", "/nonexistent/graph.svg"}},
    {"scope: a NULL name", scope_null_name, NB_ERR_NULL, {"nb_scope_begin", "name is NULL"}},
    /* files that are not files */
    {"render: to a link to /dev/null", render_to_device, NB_ERR_IO,
     {"nb_dot_render", "null.svg", "a symbolic link to a character device", "regular files only"}},
    {"dot: saving over a FIFO", dot_save_fifo, NB_ERR_IO, {"nb_dot_save", "graph.fifo", "a FIFO", "regular"}},
    {"stepper page: a directory", html_into_directory, NB_ERR_IO, {"nb_backward_html", "is a directory"}},
    {"history: a dangling link", history_dangling_link, NB_ERR_IO,
     {"nb_progress_save_csv", "history.csv", "symbolic link", "cannot be reached"}},
    {"frames: paths longer than PATH_MAX", frames_path_too_long, NB_ERR_IO,
     {"nb_backward_frames", "frame_000.dot", "longer than the 4095 bytes"}},
    {"file write: an empty path", file_write_empty_path, NB_ERR_ARG, {"nb_file_write", "empty"}},
    {"params: loading a FIFO", params_load_fifo, NB_ERR_IO, {"nb_params_load", "model.nbp", "a FIFO", "regular"}},
    {"safetensors: loading /dev/zero", safetensors_load_zero, NB_ERR_IO,
     {"nb_params_load_safetensors", "/dev/zero", "a character device"}},
    {"CSV: /dev/zero", csv_dev_zero, NB_ERR_IO, {"nb_csv_read", "/dev/zero", "a character device"}},
    {"IDX: a FIFO", idx_fifo, NB_ERR_IO, {"nb_idx_read", "images.idx", "a FIFO"}},
    {"render: from a FIFO", render_from_fifo, NB_ERR_IO, {"nb_dot_render", "in.dot", "a FIFO"}},
    {"file open: a directory", file_open_directory, NB_ERR_IO, {"nb_file_open_read", "is a directory"}},
    {"IDX: a gzip bomb", idx_gzip_bomb, NB_ERR_VALUE,
     {"nb_idx_read", "10000000 bytes", "more than a gzip file", "at most"}},
    {"params: saving over a FIFO", params_save_fifo, NB_ERR_IO, {"nb_params_save", "model.fifo", "a FIFO", "regular"}},
    {"params: loading a directory", params_load_dir, NB_ERR_IO, {"nb_params_load", "is a directory"}},
    {"checkpoint: loading a FIFO", checkpoint_load_fifo, NB_ERR_IO,
     {"nb_checkpoint_load", "run.safetensors", "a FIFO", "regular"}},
    {"checkpoint: saving over a FIFO", checkpoint_save_fifo, NB_ERR_IO, {"nb_checkpoint_save", "run.nbp", "a FIFO", "regular"}},
    {"IDX: a directory", idx_dir, NB_ERR_IO, {"nb_idx_read", "is a directory"}},
    {"CSV: a directory", csv_dir, NB_ERR_IO, {"nb_csv_read", "is a directory"}},
    {"CSV: an unknown dtype", csv_dtype, NB_ERR_ARG, {"nb_csv_read", "unknown dtype 9", "dtype.csv"}},
    {"CSV: the target column twice", csv_target_twice, NB_ERR_VALUE, {"twice.csv:1", "'y'", "twice", "columns 2 and 3"}},
    {"CSV: a NUL byte in a row", csv_nul_byte, NB_ERR_VALUE, {"nul.csv:2", "column 2", "NUL byte"}},
    {"frames into the directory \"\"", frames_empty_dir, NB_ERR_ARG, {"nb_backward_frames", "empty"}},
    {"checkpoint: a parameter file has no optimizer state", checkpoint_plain_file, NB_ERR_VALUE,
     {"nb_checkpoint_load", "plain.safetensors", "holds no optimizer state", "nb_params_save"}},
    {"checkpoint: another optimizer's state", checkpoint_other_kind, NB_ERR_VALUE,
     {"adam.nbp", "a 'adam' optimizer", "this optimizer is 'momentum'"}},
    {"checkpoint: no generator saved", checkpoint_no_rng, NB_ERR_VALUE, {"norng.nbp", "'nabla.rng' is missing"}},
    {"checkpoint: a truncated file", checkpoint_truncated, NB_ERR_VALUE,
     {"cut.safetensors", "'__nabla__/exp_avg_sq/b'", "outside the", "truncated"}},
    {"checkpoint: a parameter under the reserved prefix", checkpoint_reserved_name, NB_ERR_ARG,
     {"nb_params_add", "'__nabla__/exp_avg/W'", "starts with '__nabla__/'"}},
    /* the toolkit's trust in its caller */
    {"params: one tensor added twice", params_same_tensor_twice, NB_ERR_ARG, {"'W_tied'", "already", "as 'W'"}},
    {"split: a dataset whose struct does not describe its tensors", split_lying_struct, NB_ERR_SHAPE,
     {"nb_dataset_split", "5 features", "(10, 2)", "one dtype"}},
    {"confusion matrix for 9 classes of 2-column scores", confusion_classes, NB_ERR_SHAPE,
     {"nb_confusion_matrix", "9 classes", "(3, 2)"}},
};

static void test_every_bad_input_names_what_went_wrong(void **state) {
    (void)state;
    int n = run_catalogue(catalogue, (int)(sizeof catalogue / sizeof *catalogue));
    assert_true(n >= 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_bad_input_names_what_went_wrong),
    };
    return cmocka_run_group_tests_name("catalogue_files", tests, test_dir_setup, test_dir_teardown);
}
