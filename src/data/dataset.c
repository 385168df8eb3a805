/*
 * Working with data sets: standardisation, train/test splits, mini-batches
 * and the metrics that tell how a classifier does.
 */
#include "../internal.h"
#include "nabla_train.h"

#include <math.h>
#include <string.h>

/* Fisher-Yates shuffle of idx[0..n). */
static void shuffle(size_t *idx, size_t n, nb_rng *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(nb_rng_uniform(rng) * (double)i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

nb_status nb_standardize(nb_tensor *train, nb_tensor *const *others, int n_others) {
    if (nb_tensor_status(train) != NB_OK || train->ndim != 2) {
        nb_set_error(NULL, NB_ERR_SHAPE, NULL, 0, "nb_standardize: the training table must be a 2-D (rows, features) tensor");
        return NB_ERR_SHAPE;
    }
    size_t rows = train->shape[0], cols = train->shape[1];
    for (int k = 0; k < n_others; k++)
        if (nb_tensor_status(others[k]) != NB_OK || others[k]->ndim != 2 || others[k]->shape[1] != cols) {
            char shape[128] = "NULL";
            if (nb_tensor_status(others[k]) == NB_OK) nb_format_shape(others[k]->ndim, others[k]->shape, shape, sizeof shape);
            nb_set_error(NULL, NB_ERR_SHAPE, NULL, 0,
                         "nb_standardize: table %d has shape %s; it must be 2-D with %zu features like the "
                         "training table",
                         k + 1, nb_tensor_status(others[k]) == NB_OK ? shape : "NULL, errored or stale", cols);
            return NB_ERR_SHAPE;
        }
    for (size_t c = 0; c < cols; c++) {
        double sum = 0, sumsq = 0;
        for (size_t r = 0; r < rows; r++) sum += nb_get(train, r * cols + c);
        double mean = sum / (double)rows;
        for (size_t r = 0; r < rows; r++) {
            double d = nb_get(train, r * cols + c) - mean;
            sumsq += d * d;
        }
        double std = sqrt(sumsq / (double)rows);
        double inv = std > 1e-12 ? 1 / std : 1; /* constant column: centre only */
        for (int k = -1; k < n_others; k++) {
            nb_tensor *t = k < 0 ? train : others[k];
            for (size_t r = 0; r < t->shape[0]; r++)
                nb_set(t, r * cols + c, (nb_get(t, r * cols + c) - mean) * inv);
        }
    }
    return NB_OK;
}

/* A new table holding the given rows of d. */
static nb_status take_rows(const nb_dataset *d, const size_t *rows, size_t n, nb_dataset *out) {
    memset(out, 0, sizeof *out);
    out->X = nb_tensor_alloc(NULL, d->X->dtype, NB_SHAPE(n, d->features), "nb_dataset_split", NULL, 0);
    out->y = nb_tensor_alloc(NULL, d->y->dtype, NB_SHAPE(n, 1), "nb_dataset_split", NULL, 0);
    if (out->X->status || out->y->status) {
        nb_status st = out->X->status ? out->X->status : out->y->status;
        nb_dataset_free(out);
        return st;
    }
    out->rows = n;
    out->features = d->features;
    size_t w = nb_dtype_size(d->X->dtype);
    for (size_t i = 0; i < n; i++) {
        memcpy((char *)out->X->data + i * d->features * w, (char *)d->X->data + rows[i] * d->features * w,
               d->features * w);
        memcpy((char *)out->y->data + i * w, (char *)d->y->data + rows[i] * w, w);
    }
    return NB_OK;
}

nb_status nb_dataset_split(const nb_dataset *d, double test_fraction, nb_rng *rng,
                           nb_dataset *train, nb_dataset *test) {
    if (!d || !d->X || !d->y || !rng || !train || !test) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_dataset_split: a NULL argument");
        return NB_ERR_NULL;
    }
    /* The struct is the caller's: check that it describes its tensors. */
    const nb_tensor *X = d->X, *y = d->y;
    char sx[128], sy[128];
    if (X->status != NB_OK || y->status != NB_OK || !nb_alive(X) || !nb_alive(y) || X->ndim != 2 ||
        X->shape[0] != d->rows || X->shape[1] != d->features || y->size != d->rows || X->dtype != y->dtype) {
        nb_set_error(NULL, NB_ERR_SHAPE, NULL, 0,
                     "nb_dataset_split: the dataset says %zu rows of %zu features, but X is %s %s and y is %s %s "
                     "(expected X (%zu, %zu) and y of %zu values, of one dtype)",
                     d->rows, d->features, nb_shape_string(X, sx, sizeof sx),
                     X->dtype == NB_F32 ? "float32" : "float64", nb_shape_string(y, sy, sizeof sy),
                     y->dtype == NB_F32 ? "float32" : "float64", d->rows, d->features, d->rows);
        return NB_ERR_SHAPE;
    }
    size_t n_test = (size_t)llround(test_fraction * (double)d->rows);
    if (!(test_fraction > 0 && test_fraction < 1) || n_test == 0 || n_test >= d->rows) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                     "nb_dataset_split: a test fraction of %g of %zu rows leaves an empty part", test_fraction,
                     d->rows);
        return NB_ERR_ARG;
    }
    size_t *idx = nb_malloc(d->rows * sizeof *idx);
    if (!idx) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_dataset_split: out of memory");
        return NB_ERR_NOMEM;
    }
    for (size_t i = 0; i < d->rows; i++) idx[i] = i;
    shuffle(idx, d->rows, rng);
    nb_status st = take_rows(d, idx + n_test, d->rows - n_test, train);
    if (st == NB_OK) {
        st = take_rows(d, idx, n_test, test);
        if (st != NB_OK) nb_dataset_free(train);
    }
    nb_free(idx);
    return st;
}

nb_tensor *nb_gather_rows_(nb_tape *tp, const nb_tensor *src, const size_t *rows, size_t n,
                           const char *file, int line) {
    if (!tp || !src || !rows)
        return nb_fail(tp, NB_ERR_NULL, file, line, "nb_gather_rows: %s is NULL",
                       !tp ? "the tape" : !src ? "the source" : "the row list");
    if (src->status != NB_OK) return nb_nil(src->status);
    if (!nb_alive(src)) return nb_fail_stale(tp, "nb_gather_rows", 0, src, file, line);
    if (src->ndim < 1)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "nb_gather_rows: the source is a scalar");
    /* From a tensor that takes a gradient (an embedding table): the op,
     * whose backward adds each row's gradient back (repeats add up). */
    if (src->requires_grad && tp->grad_enabled) return nb_index_select_(tp, (nb_tensor *)src, 0, rows, n, file, line);
    size_t shape[NB_MAX_DIMS], row_size = src->size / src->shape[0];
    memcpy(shape, src->shape, (size_t)src->ndim * sizeof *shape);
    shape[0] = n;
    nb_tensor *out = nb_tensor_alloc(tp, src->dtype, src->ndim, shape, "nb_gather_rows", file, line);
    if (out->status != NB_OK) return out;
    size_t w = nb_dtype_size(src->dtype) * row_size;
    for (size_t i = 0; i < n; i++) {
        if (rows[i] >= src->shape[0])
            return nb_fail(tp, NB_ERR_ARG, file, line, "nb_gather_rows: row %zu is out of range (%zu rows)",
                           rows[i], src->shape[0]);
        memcpy((char *)out->data + i * w, (const char *)src->data + rows[i] * w, w);
    }
    return out;
}

/* ---------------------------------------------------------------- batches */

nb_status nb_batcher_init(nb_batcher *b, size_t n, size_t batch_size, nb_rng *rng) {
    if (!b || !rng || n == 0 || batch_size == 0) {
        nb_set_error(NULL, NB_ERR_ARG, NULL, 0, "nb_batcher_init: needs examples (%zu), a batch size (%zu) and a generator",
                     n, batch_size);
        return NB_ERR_ARG;
    }
    b->order = nb_malloc(n * sizeof *b->order);
    if (!b->order) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "nb_batcher_init: out of memory");
        return NB_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) b->order[i] = i;
    b->n = n;
    b->batch_size = batch_size;
    b->rng = rng;
    shuffle(b->order, n, rng);
    b->pos = 0;
    return NB_OK;
}

bool nb_batcher_next(nb_batcher *b, const size_t **indices, size_t *count) {
    if (b->pos >= b->n) { /* the epoch is over: reshuffle for the next one */
        shuffle(b->order, b->n, b->rng);
        b->pos = 0;
        return false;
    }
    *indices = b->order + b->pos;
    *count = b->n - b->pos < b->batch_size ? b->n - b->pos : b->batch_size;
    b->pos += *count;
    return true;
}

size_t nb_batcher_batches(const nb_batcher *b) { return (b->n + b->batch_size - 1) / b->batch_size; }

void nb_batcher_free(nb_batcher *b) {
    if (!b) return;
    nb_free(b->order);
    b->order = NULL;
}

/* ---------------------------------------------------------------- metrics */

/* Calls pick(labels, example, predicted class, user) for each example, the
 * prediction being the argmax along `axis`.  Returns the number of
 * examples, or 0 on a shape error. */
static size_t predictions(const nb_tensor *scores, const nb_tensor *labels, int axis, size_t *classes,
                          void (*pick)(const nb_tensor *, size_t, size_t, void *), void *user) {
    int ax = nb_norm_axis(axis, nb_tensor_ndim(scores));
    if (ax < 0 || nb_tensor_status(labels) != NB_OK) return 0;
    size_t outer, n, inner;
    nb_split_axis(scores, ax, &outer, &n, &inner);
    if (nb_tensor_size(labels) != outer * inner) return 0;
    *classes = n;
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            size_t best = 0;
            double best_score = nb_get(scores, o * n * inner + i);
            for (size_t k = 1; k < n; k++) {
                double s = nb_get(scores, (o * n + k) * inner + i);
                if (s > best_score) best_score = s, best = k;
            }
            pick(labels, o * inner + i, best, user);
        }
    return outer * inner;
}

static void count_right(const nb_tensor *labels, size_t example, size_t predicted, void *user) {
    size_t *right = user;
    *right += nb_get(labels, example) == (double)predicted;
}

double nb_accuracy(const nb_tensor *scores, const nb_tensor *labels, int axis) {
    size_t right = 0, classes;
    size_t m = predictions(scores, labels, axis, &classes, count_right, &right);
    return m ? (double)right / (double)m : NAN;
}

double nb_accuracy_binary(const nb_tensor *scores, const nb_tensor *labels, double threshold) {
    size_t m = nb_tensor_size(scores), right = 0;
    if (!m || m != nb_tensor_size(labels)) return NAN;
    for (size_t i = 0; i < m; i++) right += (nb_get(scores, i) > threshold) == (nb_get(labels, i) > 0.5);
    return (double)right / (double)m;
}

typedef struct { size_t *counts, classes; bool bad; } confusion;

static void count_pair(const nb_tensor *labels, size_t example, size_t predicted, void *user) {
    confusion *c = user;
    double truth = nb_get(labels, example);
    if (!(truth >= 0 && truth < (double)c->classes) || truth != floor(truth)) {
        c->bad = true;
        return;
    }
    c->counts[(size_t)truth * c->classes + predicted]++;
}

nb_status nb_confusion_matrix(const nb_tensor *scores, const nb_tensor *labels, int axis,
                              size_t classes, size_t *counts) {
    if (!counts || !classes) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_confusion_matrix: no output matrix");
        return NB_ERR_NULL;
    }
    /* classes is checked against the scores before counts (classes² of
     * them, the caller's buffer) is touched */
    confusion c = {counts, classes, false};
    size_t found = 0;
    int ax = nb_norm_axis(axis, nb_tensor_ndim(scores));
    bool fits = ax >= 0 && nb_tensor_dim(scores, ax) == classes;
    if (fits) memset(counts, 0, classes * classes * sizeof *counts);
    if (!fits || !predictions(scores, labels, axis, &found, count_pair, &c)) {
        char s[128], l[128];
        nb_set_error(NULL, NB_ERR_SHAPE, NULL, 0,
                     "nb_confusion_matrix: scores %s with %zu classes along axis %d do not fit labels %s",
                     nb_shape_string(scores, s, sizeof s), classes, axis, nb_shape_string(labels, l, sizeof l));
        return NB_ERR_SHAPE;
    }
    if (c.bad) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "nb_confusion_matrix: a label is not a class index in [0, %zu)", classes);
        return NB_ERR_VALUE;
    }
    return NB_OK;
}

void nb_confusion_print(FILE *out, const size_t *counts, size_t classes, const char *const *names) {
    if (!out || !counts) return;
    fprintf(out, "%12s", "true \\ pred");
    for (size_t p = 0; p < classes; p++) fprintf(out, " %6zu", p);
    fputc('\n', out);
    for (size_t t = 0; t < classes; t++) {
        if (names && names[t])
            fprintf(out, "%12.12s", names[t]);
        else
            fprintf(out, "%12zu", t);
        for (size_t p = 0; p < classes; p++) fprintf(out, " %6zu", counts[t * classes + p]);
        fputc('\n', out);
    }
}
