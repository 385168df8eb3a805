/*
 * Data: the CSV and IDX readers on small files the test writes (good and
 * bad), standardisation, splits, batches, metrics, and training feedback.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64];

static const char *file_with(const char *name, const char *content) {
    static char path[128];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/nabla-data-XXXXXX");
        assert_non_null(mkdtemp(dir));
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

static nb_status read_csv(const char *content, const char *target, bool drop, nb_dataset *d) {
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = target;
    o.drop_bad_rows = drop;
    return nb_csv_read(file_with("t.csv", content), &o, d);
}

static void test_csv_reads_a_table(void **state) {
    (void)state;
    nb_dataset d;
    /* Quotes, spaces, CRLF line ends and blank lines are all tolerated. */
    assert_int_equal(read_csv("age, \"chol\",target,thal\r\n63,233,1,\"1\"\r\n\r\n 37 ,250,0,2\r\n41,204.5,1,2\n",
                              "target", false, &d), NB_OK);
    assert_int_equal(d.rows, 3);
    assert_int_equal(d.features, 3);
    assert_string_equal(d.names[0], "age");
    assert_string_equal(d.names[1], "chol");
    assert_string_equal(d.names[2], "thal");
    assert_string_equal(d.target_name, "target");
    const double X[9] = {63, 233, 1, 37, 250, 2, 41, 204.5, 2}, y[3] = {1, 0, 1};
    for (size_t i = 0; i < 9; i++) assert_close(nb_get(d.X, i), X[i], 0);
    for (size_t i = 0; i < 3; i++) assert_close(nb_get(d.y, i), y[i], 0);
    assert_int_equal(nb_tensor_dim(d.y, 1), 1);
    nb_dataset_free(&d);
    /* A UTF-8 byte-order mark (some editors write one) is not part of the
     * first column's name. */
    assert_int_equal(read_csv("\xEF\xBB\xBFy,a\n1,2\n0,3\n", "y", false, &d), NB_OK);
    assert_string_equal(d.target_name, "y");
    assert_string_equal(d.names[0], "a");
    assert_close(nb_get(d.X, 1), 3, 0);
    nb_dataset_free(&d);
}

static void test_csv_errors_name_line_and_column(void **state) {
    (void)state;
    nb_dataset d;
    struct { const char *content, *target; const char *expect[3]; } cases[] = {
        {"a,b,target\n1,2,0\n3,,1\n", "target", {"t.csv:3", "column 'b' (2)", "empty"}},
        {"a,b,target\n1,2,0\n3,x7,1\n", "target", {"t.csv:3", "'b'", "'x7', not a finite number"}},
        {"a,b,target\n1,2,0\n3,nan,1\n", "target", {"t.csv:3", "'nan'", "finite"}},
        {"a,b,target\n1,2,0\n3,4\n", "target", {"t.csv:3", "2 fields, expected 3"}},
        {"a,b,target\n1,2,0,9\n", "target", {"t.csv:2", "4 fields, expected 3"}},
        {"a,b,target\n1,2,0\n", "label", {"no column named 'label'", "columns: a, b, target"}},
        {"63,233,1\n37,250,0\n", "target", {"no column named 'target'", "header row?"}},
        {"", "target", {"empty", "header"}},
        {"a,b,target\n", "target", {"no data rows"}},
        {"target\n1\n", "target", {"no features"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        assert_int_equal(read_csv(cases[c].content, cases[c].target, false, &d), NB_ERR_VALUE);
        for (int k = 0; k < 3 && cases[c].expect[k]; k++)
            assert_message_has(nb_last_error(), cases[c].expect[k]);
        assert_null(d.X);
    }
    nb_csv_opts o;
    nb_csv_default_opts(&o);
    o.target = "t";
    assert_int_equal(nb_csv_read("/nonexistent.csv", &o, &d), NB_ERR_IO);
    assert_message_has(nb_last_error(), "/nonexistent.csv");
}

static void test_csv_can_drop_bad_rows(void **state) {
    (void)state;
    nb_dataset d;
    assert_int_equal(read_csv("a,target\n1,0\n?,1\n2,\n3,1\n", "target", true, &d), NB_OK);
    assert_int_equal(d.rows, 2);
    assert_int_equal(d.dropped, 2);
    assert_close(nb_get(d.X, 1), 3, 0);
    nb_dataset_free(&d);
    /* Ragged rows are still an error: they mean the file is not a table. */
    assert_int_equal(read_csv("a,target\n1,0\n1,2,3\n", "target", true, &d), NB_ERR_VALUE);
}

/* ---------------------------------------------------------------- idx */

/* An IDX file of unsigned bytes with the given dimensions, values 0, 1, 2...
 * (mod 256); gz chooses gzip compression; `cut` drops bytes from the end. */
static const char *idx_file(const char *name, int ndim, const unsigned *dims, bool gz, size_t cut,
                            unsigned char type) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unsigned char buf[4096];
    size_t len = 0, count = 1;
    buf[len++] = 0;
    buf[len++] = 0;
    buf[len++] = type;
    buf[len++] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++) {
        for (int s = 24; s >= 0; s -= 8) buf[len++] = (unsigned char)(dims[d] >> s);
        count *= dims[d];
    }
    for (size_t i = 0; i < count; i++) buf[len++] = (unsigned char)(i % 256);
    len -= cut;
    if (gz) {
        gzFile g = gzopen(path, "wb");
        gzwrite(g, buf, (unsigned)len);
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
    }
    return path;
}

static void test_idx_reader(void **state) {
    (void)state;
    file_with("x", ""); /* makes the directory */
    const unsigned dims[3] = {4, 3, 5};
    for (int gz = 0; gz <= 1; gz++) {
        nb_tensor *t = nb_idx_read(idx_file(gz ? "a.idx.gz" : "a.idx", 3, dims, gz, 0, 0x08), NB_F32, 1.0 / 255);
        assert_ok(t);
        assert_int_equal(nb_tensor_ndim(t), 3);
        assert_int_equal(nb_tensor_dim(t, 0), 4);
        assert_int_equal(nb_tensor_dim(t, 2), 5);
        assert_close(nb_get(t, 59), 59.0 / 255, 1e-7);
        nb_tensor_free(t);
    }
    /* Bad files: the message names the file and the problem. */
    nb_tensor *t = nb_idx_read(idx_file("cut.idx.gz", 3, dims, true, 7, 0x08), NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "cut.idx.gz", "truncated", "(4, 3, 5)", "60 bytes");
    t = nb_idx_read(idx_file("magic.idx", 3, dims, false, 0, 0x07), NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "magic.idx", "magic number 00 00 07 03");
    t = nb_idx_read(idx_file("dims.idx", 3, dims, false, 60 + 5, 0x08), NB_F32, 1);
    assert_message_has(nb_last_error(), "dims.idx", "truncated in its dimensions");
    const unsigned empty[2] = {0, 3};
    t = nb_idx_read(idx_file("empty.idx", 2, empty, false, 0, 0x08), NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_SHAPE);
    t = nb_idx_read(file_with("text.idx", "hello, world\n"), NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_VALUE);
    t = nb_idx_read(file_with("short.idx", "\0"), NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "no 4-byte magic number");
    t = nb_idx_read("/nonexistent.idx", NB_F32, 1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_IO);
}

/* The real Fashion-MNIST test labels, when the Debian package is installed:
 * 10,000 labels, 1,000 of each of the 10 classes. */
static void test_fashion_mnist_labels(void **state) {
    (void)state;
    const char *path = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
    if (access(path, R_OK) != 0) skip();
    nb_tensor *labels = nb_idx_read(path, NB_F32, 1);
    assert_ok(labels);
    assert_int_equal(nb_tensor_size(labels), 10000);
    size_t counts[10] = {0};
    for (size_t i = 0; i < 10000; i++) counts[(size_t)nb_get(labels, i)]++;
    for (int c = 0; c < 10; c++) assert_int_equal(counts[c], 1000);
    nb_tensor_free(labels);
}

/* ---------------------------------------------------------------- tables */

static void test_standardize_and_split(void **state) {
    (void)state;
    /* Column 0: 1, 2, 3 (mean 2, std sqrt(2/3)); column 1: constant 5. */
    nb_tensor *train = nb_from_array(NULL, NB_F64, NB_SHAPE(3, 2), ((double[]){1, 5, 2, 5, 3, 5}));
    nb_tensor *test = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 2), ((double[]){4, 6}));
    nb_tensor *others[1] = {test};
    assert_int_equal(nb_standardize(train, others, 1), NB_OK);
    double s = sqrt(2.0 / 3);
    assert_close(nb_get(train, 0), -1 / s, 1e-12);
    assert_close(nb_get(train, 4), 1 / s, 1e-12);
    assert_close(nb_get(train, 1), 0, 0); /* constant: centred only */
    assert_close(nb_get(test, 0), 2 / s, 1e-12); /* train's statistics */
    assert_close(nb_get(test, 1), 1, 0);
    nb_tensor *wrong = nb_zeros(NULL, NB_F64, NB_SHAPE(2, 3));
    assert_int_equal(nb_standardize(train, &wrong, 1), NB_ERR_SHAPE);
    nb_tensor_free(train);
    nb_tensor_free(test);
    nb_tensor_free(wrong);

    /* A split is a shuffled partition: every row lands in exactly one part. */
    nb_dataset d = {0};
    d.rows = 50;
    d.features = 2;
    d.X = nb_zeros(NULL, NB_F32, NB_SHAPE(50, 2));
    d.y = nb_zeros(NULL, NB_F32, NB_SHAPE(50, 1));
    for (size_t i = 0; i < 50; i++) {
        nb_set(d.X, 2 * i, (double)i);
        nb_set(d.X, 2 * i + 1, -(double)i);
        nb_set(d.y, i, (double)i);
    }
    nb_rng rng;
    nb_rng_seed(&rng, 4);
    nb_dataset tr, te;
    assert_int_equal(nb_dataset_split(&d, 0.2, &rng, &tr, &te), NB_OK);
    assert_int_equal(tr.rows, 40);
    assert_int_equal(te.rows, 10);
    int seen[50] = {0};
    bool shuffled = false;
    for (size_t i = 0; i < 40; i++) {
        size_t id = (size_t)nb_get(tr.y, i);
        seen[id]++;
        assert_close(nb_get(tr.X, 2 * i), (double)id, 0); /* rows stay whole */
        assert_close(nb_get(tr.X, 2 * i + 1), -(double)id, 0);
        shuffled |= id != i + 10;
    }
    for (size_t i = 0; i < 10; i++) seen[(size_t)nb_get(te.y, i)]++;
    for (int i = 0; i < 50; i++) assert_int_equal(seen[i], 1);
    assert_true(shuffled);
    assert_int_equal(nb_dataset_split(&d, 0.001, &rng, &tr, &te), NB_ERR_ARG);
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    nb_dataset_free(&d);
}

static void test_batches(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_batcher b;
    assert_int_equal(nb_batcher_init(&b, 10, 4, &rng), NB_OK);
    assert_int_equal(nb_batcher_batches(&b), 3);
    size_t first_epoch[10], k = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        int seen[10] = {0};
        const size_t *idx;
        size_t n, batches = 0, total = 0;
        while (nb_batcher_next(&b, &idx, &n)) {
            assert_int_equal(n, batches < 2 ? 4 : 2);
            for (size_t i = 0; i < n; i++) {
                seen[idx[i]]++;
                if (epoch == 0) first_epoch[k++] = idx[i];
            }
            batches++;
            total += n;
        }
        assert_int_equal(batches, 3);
        assert_int_equal(total, 10);
        for (int i = 0; i < 10; i++) assert_int_equal(seen[i], 1);
    }
    /* A new order each epoch. */
    assert_memory_not_equal(first_epoch, b.order, sizeof first_epoch);
    nb_batcher_free(&b);

    nb_tape *tp = nb_tape_new();
    nb_tensor *src = nb_from_array(NULL, NB_F32, NB_SHAPE(3, 2), ((double[]){0, 1, 10, 11, 20, 21}));
    nb_tensor *rows = nb_gather_rows(tp, src, ((size_t[]){2, 0}), 2);
    assert_int_equal(nb_tensor_dim(rows, 0), 2);
    assert_close(nb_get(rows, 0), 20, 0);
    assert_close(nb_get(rows, 3), 1, 0);
    assert_int_equal(nb_tensor_status(nb_gather_rows(tp, src, ((size_t[]){3}), 1)), NB_ERR_ARG);
    assert_message_has(nb_tape_error(tp), "row 3 is out of range (3 rows)");
    nb_tensor_free(src);
    nb_tape_free(tp);
}

static void test_metrics(void **state) {
    (void)state;
    /* 4 examples, 3 classes (rows): predictions argmax = 2, 0, 1, 1 */
    nb_tensor *scores = nb_from_array(NULL, NB_F64, NB_SHAPE(4, 3),
                                      ((double[]){0, 1, 5, 9, 2, 3, 0, 4, 1, -1, 0, -2}));
    nb_tensor *labels = nb_from_array(NULL, NB_F64, NB_SHAPE(4), ((double[]){2, 0, 2, 0}));
    assert_close(nb_accuracy(scores, labels, 1), 0.5, 0);
    size_t cm[9];
    assert_int_equal(nb_confusion_matrix(scores, labels, 1, 3, cm), NB_OK);
    /* true 0 -> predicted 0 once and 1 once; true 2 -> 2 once and 1 once */
    const size_t expected[9] = {1, 1, 0, 0, 0, 0, 0, 1, 1};
    assert_memory_equal(cm, expected, sizeof cm);
    char buf[512] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    nb_confusion_print(f, cm, 3, (const char *const[]){"shirt", "bag", "boot"});
    fclose(f);
    assert_message_has(buf, "true \\ pred", "shirt", "boot");
    /* The seeds' layout: classes along axis 0, examples along axis 1. */
    nb_tape *tp = nb_tape_new();
    nb_tensor *t = nb_transpose(tp, scores, 0, 1);
    assert_close(nb_accuracy(t, labels, 0), 0.5, 0);
    assert_true(isnan(nb_accuracy(scores, labels, 0))); /* shapes do not fit */
    nb_tensor *bad = nb_from_array(NULL, NB_F64, NB_SHAPE(4), ((double[]){2, 0, 3, 0}));
    assert_int_equal(nb_confusion_matrix(scores, bad, 1, 3, cm), NB_ERR_VALUE);
    /* Binary: score > 0.5 */
    nb_tensor *p = nb_from_array(NULL, NB_F64, NB_SHAPE(4, 1), ((double[]){0.9, 0.2, 0.6, 0.4}));
    nb_tensor *y = nb_from_array(NULL, NB_F64, NB_SHAPE(4, 1), ((double[]){1, 0, 0, 0}));
    assert_close(nb_accuracy_binary(p, y, 0.5), 0.75, 0);
    nb_tape_free(tp);
    nb_tensor *all[] = {scores, labels, bad, p, y};
    for (int i = 0; i < 5; i++) nb_tensor_free(all[i]);
}

/* ---------------------------------------------------------------- feedback */

static void test_progress_output_and_history(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nb_progress *p = nb_progress_new(f, 2, 3, false);
    for (long e = 1; e <= 2; e++) {
        for (long s = 0; s < 3; s++) nb_progress_step(p, e, s, 1.0 / (double)e, 0.5, 10);
        nb_progress_epoch(p, e, 1.0 / (double)e, 0.5 + 0.1 * (double)e, e == 2 ? 0.65 : NAN);
    }
    fflush(f);
    /* Not a terminal: one plain line per epoch, no bar. */
    assert_null(strchr(buf, '\r'));
    assert_message_has(buf, "epoch 1/2  loss 1.0000  accuracy 0.6000", "epoch 2/2  loss 0.5000", "test accuracy 0.6500");
    const char *csv = file_with("history.csv", "");
    assert_int_equal(nb_progress_save_csv(p, csv), NB_OK);
    nb_progress_free(p);
    fclose(f);
    free(buf);
    FILE *h = fopen(csv, "r");
    char content[256] = {0};
    assert_true(fread(content, 1, sizeof content - 1, h) > 0);
    fclose(h);
    assert_message_has(content, "epoch,loss,accuracy,test_accuracy,seconds\n1,1,0.6,,", "\n2,0.5,0.7,0.65,");

    /* On a terminal, a bar redrawn in place. */
    buf = NULL;
    f = open_memstream(&buf, &len);
    p = nb_progress_new(f, 1, 2, true);
    nb_progress_step(p, 1, 0, 0.7, 0.4, 32);
    nb_progress_step(p, 1, 1, 0.6, 0.5, 32);
    fflush(f);
    assert_message_has(buf, "\r", "epoch 1/1 [", "2/2", "loss 0.6000", "ex/s", "left");
    nb_progress_free(p);
    fclose(f);
    free(buf);

    /* A plot, when gnuplot is there; otherwise a clear refusal. */
    char png[128];
    snprintf(png, sizeof png, "%s/history.png", dir);
    nb_status st = nb_progress_plot(csv, png);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        assert_int_equal(st, NB_OK);
        unsigned char magic[4] = {0};
        FILE *g = fopen(png, "rb");
        assert_non_null(g);
        assert_int_equal(fread(magic, 1, 4, g), 4);
        fclose(g);
        assert_memory_equal(magic, "\x89PNG", 4);
        /* A name is a name: quotes, a newline and gnuplot commands in it are
         * not run (they were, through the script's text), and an SVG name
         * gets an SVG. */
        char evil[512];
        snprintf(evil, sizeof evil, "%s/a'\"b\nsystem 'touch nabla-injected'\n.svg", dir);
        assert_int_equal(nb_progress_plot(csv, evil), NB_OK);
        assert_int_equal(access("nabla-injected", F_OK), -1);
        g = fopen(evil, "rb");
        assert_non_null(g);
        char head[6] = {0};
        assert_int_equal(fread(head, 1, 5, g), 5);
        fclose(g);
        assert_message_has(head, "<?xml");
        unlink(evil);
    } else {
        assert_int_equal(st, NB_ERR_UNSUPPORTED);
        assert_message_has(nb_last_error(), "gnuplot");
    }
}

static int cleanup(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return dir[0] ? system(cmd) : 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_reads_a_table),
        cmocka_unit_test(test_csv_errors_name_line_and_column),
        cmocka_unit_test(test_csv_can_drop_bad_rows),
        cmocka_unit_test(test_idx_reader),
        cmocka_unit_test(test_fashion_mnist_labels),
        cmocka_unit_test(test_standardize_and_split),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_progress_output_and_history),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, cleanup);
}
