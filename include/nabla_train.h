/*
 * nabla's training toolkit: named parameters and their files, initialisers
 * (torch.nn.init's), optimizers with parameter groups, learning-rate
 * schedules with warm-up, checkpoints that resume exactly, data loading
 * (CSV, IDX/MNIST), mini-batches and metrics, and feedback while training.
 *
 * Errors follow the core library: nothing aborts; calls return an nb_status
 * (or an errored tensor) and nb_last_error() says what happened, naming the
 * file and line or the parameter concerned.
 */
#ifndef NABLA_TRAIN_H
#define NABLA_TRAIN_H

#include "nabla.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ parameters */

/* A set of named parameter tensors (heap tensors it owns), in insertion
 * order, found by name through a hash table. */
typedef struct nb_params nb_params;

typedef enum {
    NB_INIT_ZEROS,
    NB_INIT_GLOROT_UNIFORM, /* U(-a, a), a = sqrt(6 / (fan_in + fan_out)) */
    NB_INIT_GLOROT_NORMAL,  /* N(0, 2 / (fan_in + fan_out)) */
    NB_INIT_HE_UNIFORM,     /* U(-a, a), a = sqrt(6 / fan_in) */
    NB_INIT_HE_NORMAL,      /* N(0, 2 / fan_in) */
    /* torch.nn.init's, with the options of nb_init_opts (nb_init_apply): */
    NB_INIT_NORMAL,          /* normal_: N(mean, std^2); GPT-2's weights: std 0.02 */
    NB_INIT_TRUNC_NORMAL,    /* trunc_normal_: N(mean, std^2) conditioned on [a, b] */
    NB_INIT_UNIFORM,         /* uniform_: U(a, b) */
    NB_INIT_XAVIER_UNIFORM,  /* xavier_uniform_: U(-B, B), B = gain sqrt(6 / (fan_in + fan_out)) */
    NB_INIT_XAVIER_NORMAL,   /* xavier_normal_: N(0, gain^2 2 / (fan_in + fan_out)) */
    NB_INIT_KAIMING_UNIFORM, /* kaiming_uniform_: U(-B, B), B = gain sqrt(3 / fan) */
    NB_INIT_KAIMING_NORMAL,  /* kaiming_normal_: N(0, gain^2 / fan) */
} nb_init;

/* torch.nn.init.calculate_gain's nonlinearities and gains: linear, conv
 * and sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope^2)),
 * selu 3/4. */
typedef enum {
    NB_GAIN_LINEAR,
    NB_GAIN_CONV,
    NB_GAIN_SIGMOID,
    NB_GAIN_TANH,
    NB_GAIN_RELU,
    NB_GAIN_LEAKY_RELU,
    NB_GAIN_SELU
} nb_nonlinearity;
/* The gain (slope: leaky_relu's negative slope); NaN with the error for an
 * unknown nonlinearity or a slope that is not finite. */
double nb_init_gain(nb_nonlinearity nl, double slope);

/* Which fan Kaiming's variance keeps: fan_in (the forward pass's, torch's
 * default) or fan_out (the backward pass's). */
typedef enum { NB_FAN_IN, NB_FAN_OUT } nb_fan_mode;
/* How a weight's shape gives its fans.  OUT_IN is torch's layout: (out,
 * in) for nn.Linear and nb_linear_torch, (out, in / groups, kh, kw) for
 * convolutions, so fan_in = in x kh x kw and fan_out = out x kh x kw (torch's
 * _calculate_fan_in_and_fan_out).  IN_OUT is (in, out), the weight of
 * nb_matmul(x, W) and nb_linear. */
typedef enum { NB_LAYOUT_OUT_IN, NB_LAYOUT_IN_OUT } nb_weight_layout;
/* The fans of a weight of that shape (either pointer may be NULL); a shape
 * of fewer than 2 dimensions is refused (NB_ERR_ARG), as torch refuses it. */
nb_status nb_init_fans(int ndim, const size_t *shape, nb_weight_layout layout, size_t *fan_in, size_t *fan_out);

typedef struct {
    nb_init kind;
    double mean, std;            /* NORMAL, TRUNC_NORMAL; defaults 0, 1 */
    double a, b;                 /* TRUNC_NORMAL: the bounds, in the values' units as torch's a and b
                                    (defaults -2, 2); UNIFORM: [a, b) (defaults 0, 1) */
    double gain;                 /* XAVIER_*: default 1; nb_init_gain gives torch's for a nonlinearity */
    nb_nonlinearity nonlinearity; /* KAIMING_*: whose gain; default leaky_relu, as torch */
    double slope;                /* KAIMING_* with leaky_relu: torch's a; default 0 (the gain of relu);
                                    sqrt(5) is nn.Linear's and nn.Conv2d's own init, B = 1 / sqrt(fan_in) */
    nb_fan_mode mode;            /* KAIMING_*: default NB_FAN_IN */
    nb_weight_layout layout;     /* XAVIER_*, KAIMING_*: default NB_LAYOUT_OUT_IN (torch's) */
    size_t fan_in, fan_out;      /* if either is nonzero, these fans instead of the shape's */
} nb_init_opts;
/* torch's defaults for the kind (above). */
void nb_init_defaults(nb_init_opts *o, nb_init kind);
/* Fills t; NB_ERR_ARG naming the initialiser and the option for a std,
 * bound, gain or fan that makes no sense, or fans asked of a shape of
 * fewer than 2 dimensions. */
nb_status nb_init_apply(nb_tensor *t, const nb_init_opts *o, nb_rng *rng);

nb_params *nb_params_new(void);
/* Frees the set and every tensor in it. */
void nb_params_free(nb_params *ps);
/* Adds t (which the set now owns and frees) under a unique name and marks it
 * as requiring a gradient.  On error (duplicate or empty name, errored t)
 * frees t and returns an errored tensor; a tensor the set holds already is
 * refused (and left to the set). */
nb_tensor *nb_params_add(nb_params *ps, const char *name, nb_tensor *t);
/* Creates, initialises and adds a parameter.  fan_in and fan_out are the
 * layer's input and output sizes (for a weight used as X . W of shape
 * (in, out), fan_in = in; for W . X of shape (out, in), fan_in = in too). */
nb_tensor *nb_params_create(nb_params *ps, const char *name, nb_dtype dt, int ndim,
                            const size_t *shape, nb_init init, size_t fan_in, size_t fan_out,
                            nb_rng *rng);
/* Creates a parameter initialised by nb_init_apply, e.g. a GPT-2 weight:
 *   nb_init_opts o;
 *   nb_init_defaults(&o, NB_INIT_NORMAL);
 *   o.std = 0.02;
 *   nb_params_create_init(ps, "h.0.mlp.c_fc.weight", NB_F32, NB_SHAPE(768, 3072), &o, &rng); */
nb_tensor *nb_params_create_init(nb_params *ps, const char *name, nb_dtype dt, int ndim, const size_t *shape,
                                 const nb_init_opts *o, nb_rng *rng);
nb_tensor *nb_params_get(const nb_params *ps, const char *name); /* NULL if absent */
size_t nb_params_count(const nb_params *ps);
nb_tensor *nb_params_at(const nb_params *ps, size_t i);
void nb_params_zero_grad(nb_params *ps);
/* Fills t according to init (see nb_init); torch's initialisers take
 * their defaults (nb_init_defaults) and the fans given, or the shape's
 * (NB_LAYOUT_OUT_IN) when both are 0. */
nb_status nb_init_tensor(nb_tensor *t, nb_init init, size_t fan_in, size_t fan_out, nb_rng *rng);

/* Parameter files: a versioned binary format with a CRC-32 checksum, holding
 * each parameter's name, dtype, shape and values.  Saving writes a temporary
 * file and renames it over `path`, so an interrupted save leaves the old
 * file intact.  Loading checks everything (magic, version, checksum, that
 * every name, dtype and shape matches the set, and that no metadata key is
 * there twice) before changing any value: on error the parameters in
 * memory are untouched. */
nb_status nb_params_save(const nb_params *ps, const char *path);
nb_status nb_params_load(nb_params *ps, const char *path);

/* The safetensors format, PyTorch users' interchange format (an 8-byte
 * little-endian header length, a JSON header of names, dtypes, shapes and
 * offsets, then raw little-endian values): saved atomically like nabla's
 * own files, loaded with the same checks (every parameter present by name
 * with its shape, no other tensor, the data tiled exactly; nothing changes
 * on error).  F16, BF16, F32 and F64 tensors are read and converted to the
 * parameters' dtypes.  I64, I32, I16, I8, U8 and BOOL tensors are read
 * exactly: each value must be exactly a value of the parameter's dtype
 * (float32: integers up to 2^24 in magnitude, float64: up to 2^53, and
 * larger multiples of powers of two) and a BOOL byte 0 or 1, or the load
 * is refused (NB_ERR_VALUE naming the tensor, element and value).  Batch
 * norm's running statistics and num_batches_tracked go in the parameter
 * set with gradients off (nb_requires_grad(t, false)).  PyTorch's nn.Linear stores its weight as (out, in):
 * use it with nb_matmul_t(x, W) or nb_linear_t.  nb_params_save writes this
 * format when the path ends in ".safetensors", and nb_params_load reads
 * either format, telling them apart by their first bytes. */
nb_status nb_params_save_safetensors(const nb_params *ps, const char *path);
nb_status nb_params_load_safetensors(nb_params *ps, const char *path);

/* ------------------------------------------------------------ optimizers */

typedef enum { NB_OPT_SGD, NB_OPT_MOMENTUM, NB_OPT_ADAM, NB_OPT_ADAMW, NB_OPT_RMSPROP } nb_optimizer_kind;

typedef struct {
    nb_optimizer_kind kind;
    double lr;           /* learning rate */
    double momentum;     /* NB_OPT_MOMENTUM; default 0.9 */
    double beta1, beta2; /* Adam(W); defaults 0.9, 0.999.  RMSprop's smoothing
                            constant (PyTorch's alpha) is beta2, default 0.99 */
    double eps;          /* Adam(W), RMSprop; default 1e-8 */
    double weight_decay; /* L2 added to the gradient (SGD, momentum, Adam), or
                            decoupled decay (AdamW); default 0, AdamW 0.01 */
} nb_optimizer_opts;

typedef struct nb_optimizer nb_optimizer;

/* PyTorch's defaults for the kind (lr 0.01 for SGD, momentum and RMSprop,
 * 0.001 for Adam and AdamW). */
void nb_optimizer_defaults(nb_optimizer_opts *opts, nb_optimizer_kind kind);
/* The optimizer's state (velocities, moments) is allocated here, once. */
nb_optimizer *nb_optimizer_new(nb_params *ps, const nb_optimizer_opts *opts);
void nb_optimizer_free(nb_optimizer *opt);
/* One update of every parameter that has a gradient (the gradients stay;
 * zero them before the next backward with nb_params_zero_grad, or they add
 * up, as in PyTorch):
 *   SGD:      w -= lr g
 *   momentum: v = mu v + g;  w -= lr v
 *   Adam:     m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *             w -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 *   AdamW:    w -= lr wd w, then the Adam step.
 *   RMSprop:  v = b2 v + (1-b2) g^2;  w -= lr g / (sqrt(v) + eps)
 * The updates run at about the speed of memory (see docs/performance.md);
 * subnormal numbers (below 1.2e-38 in float32) are flushed to zero in them. */
nb_status nb_optimizer_step(nb_optimizer *opt);
/* nb_backward(loss), then nb_optimizer_step(opt), in one call.  With plain
 * SGD (no momentum, no weight decay) it is faster: a weight read by a single
 * matmul or linear, and a linear's bias, is updated by that op's backward
 * (for a weight, the gradient product itself computes w - lr dL/dw) and no
 * gradient is stored for it, so nb_has_grad is false for it afterwards; use
 * nb_backward and nb_optimizer_step when you need to see the gradients
 * (clipping, gradcheck, pictures).  The values are those of the two calls. */
#define nb_optimizer_backward_step(opt, loss) nb_optimizer_backward_step_(opt, loss, NB_SITE)
nb_status nb_optimizer_backward_step_(nb_optimizer *opt, nb_tensor *loss, const char *file, int line);
/* Sets the learning rate of every group (with a schedule attached, the
 * rate it scales); a NaN or negative one is refused (NB_ERR_ARG, the rates
 * unchanged), as by nb_optimizer_new.  nb_optimizer_lr is group 0's rate
 * of the last step (the next, before any). */
nb_status nb_optimizer_set_lr(nb_optimizer *opt, double lr);
double nb_optimizer_lr(const nb_optimizer *opt);
/* The steps taken (restored by nb_checkpoint_load): where a resumed loop
 * starts; -1 for NULL. */
long nb_optimizer_steps(const nb_optimizer *opt);
const char *nb_optimizer_name(nb_optimizer_kind kind);
/* Parses "sgd", "momentum", "adam", "adamw", "rmsprop"; false if unknown. */
bool nb_optimizer_parse(const char *name, nb_optimizer_kind *kind);

/* Parameter groups, as torch.optim's param_groups: each parameter is in one
 * group, whose options its updates use (the rate, weight decay, betas,
 * momentum, eps; every group has the optimizer's kind).  Group 0 has the
 * options given to nb_optimizer_new and holds every parameter until a new
 * group takes it: nb_optimizer_add_group moves the parameters named (each
 * from the group it was in; their buffers stay) into a new group with
 * `opts`, and returns its index (1, 2, ...), or -1 with nb_last_error
 * saying why (an unknown or repeated name, another kind, invalid options),
 * nothing moved.  A schedule scales each group's own rate, as torch's
 * schedulers scale each group's initial_lr; nb_optimizer_set_lr sets every
 * group's rate, nb_optimizer_set_group_lr one group's. */
int nb_optimizer_add_group(nb_optimizer *opt, const char *const *names, size_t n, const nb_optimizer_opts *opts);
/* The same for the parameters p for which member(p, user) is true. */
int nb_optimizer_add_group_if(nb_optimizer *opt, bool (*member)(const nb_tensor *p, void *user), void *user,
                              const nb_optimizer_opts *opts);
/* The usual split for weight decay (GPT-2, BERT, timm): the parameters of
 * fewer than 2 dimensions (biases, layer and batch norm weights and
 * biases, scalars) go into a new group with group 0's options but no
 * weight decay; matrices, convolution kernels and embeddings keep theirs.
 * Returns the group's index, or -1 with the error.  Call it after making
 * the optimizer, before the first step:
 *   nb_optimizer *opt = nb_optimizer_new(ps, &adamw);
 *   nb_optimizer_no_decay_group(opt); */
int nb_optimizer_no_decay_group(nb_optimizer *opt);
size_t nb_optimizer_group_count(const nb_optimizer *opt);
/* The group of the parameter called name; -1 if it is not one. */
int nb_optimizer_group_of(const nb_optimizer *opt, const char *name);
/* A group's options, with its rate of the last step (the next, before
 * any); NB_ERR_ARG for a group that does not exist. */
nb_status nb_optimizer_group_opts(const nb_optimizer *opt, int group, nb_optimizer_opts *out);
nb_status nb_optimizer_set_group_lr(nb_optimizer *opt, int group, double lr);
double nb_optimizer_group_lr(const nb_optimizer *opt, int group); /* NaN for no such group */

/* Checkpoints, for resuming exactly: the parameters, the optimizer's state
 * and a generator in one file, which nb_checkpoint_load restores so that
 * training goes on bit for bit as if it had never stopped (the same steps
 * after a load as without one, on any thread count).  The state is every
 * buffer (momentum's velocity, Adam's and AdamW's two moments, RMSprop's
 * mean square), the step count, each parameter group's options and rates
 * and each parameter's group, and the attached schedule
 * (nb_optimizer_set_schedule; loading restores the saved one, or none).
 * Make the same groups before loading: other groupings are refused.  opt
 * and rng may be NULL (opt must be the optimizer of ps).
 * The format follows the path as for nb_params_save: ".safetensors" writes
 * safetensors, whose buffers are tensors named "__nabla__/BUFFER/PARAMETER"
 * (PyTorch's buffer names: momentum_buffer, exp_avg, exp_avg_sq,
 * square_avg) and whose scalars are metadata strings "nabla.*"; anything
 * else writes nabla's own format (version 2, with the same names and
 * metadata).  Saving is atomic, as nb_params_save.
 * Loading reads either format and checks all of it before changing
 * anything (nothing in memory changes on error): the files' rules of
 * nb_params_load, then that the file holds an optimizer's state (a file of
 * nb_params_save does not) of the same kind, every buffer with its
 * parameter's dtype and shape, and valid numbers; with rng, that the file
 * holds a generator.  nb_params_load reads a checkpoint's parameters alone,
 * and PyTorch reads its safetensors as any other (skip the "__nabla__/"
 * names when loading a state_dict). */
nb_status nb_checkpoint_save(const nb_params *ps, const nb_optimizer *opt, const nb_rng *rng, const char *path);
nb_status nb_checkpoint_load(nb_params *ps, nb_optimizer *opt, nb_rng *rng, const char *path);

/* Scales all gradients of the set (every group of its optimizer) by min(1, max_norm / (norm + 1e-6)), as PyTorch's
 * clip_grad_norm_, so that their global L2 norm is at most max_norm;
 * returns the norm before clipping.  A max_norm that is not positive (or
 * NaN) changes nothing and returns NaN, nb_last_error saying why. */
double nb_clip_grad_norm(nb_params *ps, double max_norm);
/* The same over several sets at once: their global norm, as one
 * clip_grad_norm_ over all their parameters (a set of NULL is skipped). */
double nb_clip_grad_norm_sets(nb_params *const *sets, int n, double max_norm);

/* Learning-rate schedules, as a function of the step (or epoch) number t.
 * A linear warm-up (warmup > 0) composes with any kind: for t < warmup the
 * rate is base_lr (warmup_start + (1 - warmup_start) t / warmup), rising
 * from warmup_start x base_lr to base_lr; then the kind's decay runs on its
 * own clock, t' = t - warmup:
 *   CONSTANT:    base_lr
 *   STEP:        base_lr gamma^floor(t' / step_size)        (torch's StepLR)
 *   EXPONENTIAL: base_lr gamma^t'                     (torch's ExponentialLR)
 *   COSINE:      min_lr + (base_lr - min_lr) (1 + cos(pi min(t', total) / total)) / 2
 *                                          (torch's CosineAnnealingLR, T_max = total)
 * Warm-up then decay is torch's SequentialLR([LambdaLR(lambda t:
 * warmup_start + (1 - warmup_start) t / warmup) or LinearLR(warmup_start,
 * total_iters=warmup), decay], milestones=[warmup]); with warmup_start 0
 * the first step's rate is 0, as in Hugging Face's
 * get_cosine_schedule_with_warmup (whose cosine has total = its
 * num_training_steps - warmup).  Fields a kind does not use are ignored,
 * so {NB_SCHEDULE_COSINE, 3e-4, .total = 9000, .warmup = 1000} works. */
typedef enum {
    NB_SCHEDULE_CONSTANT,
    NB_SCHEDULE_STEP,
    NB_SCHEDULE_COSINE,
    NB_SCHEDULE_EXPONENTIAL
} nb_schedule_kind;
typedef struct {
    nb_schedule_kind kind;
    double base_lr;
    long step_size;       /* STEP: multiply by gamma every step_size steps */
    double gamma;         /* STEP, EXPONENTIAL */
    long total;           /* COSINE: steps from base_lr down to min_lr */
    double min_lr;        /* COSINE */
    long warmup;          /* steps of linear warm-up before the decay (0: none) */
    double warmup_start;  /* the factor of base_lr at step 0 of the warm-up, in [0, 1] */
} nb_schedule;
/* The rate at step t (t < 0 counts as 0).  A schedule that makes no sense
 * (a STEP with step_size <= 0, a COSINE with total <= 0, a negative or NaN
 * rate or gamma, a negative warm-up, warmup_start outside [0, 1], an
 * unknown kind) gives NaN, nb_last_error saying which field. */
double nb_schedule_lr(const nb_schedule *s, long t);
/* NB_OK, or NB_ERR_ARG (NB_ERR_NULL) with the message, for a schedule as
 * nb_schedule_lr takes it. */
nb_status nb_schedule_check(const nb_schedule *s);
/* Attaches a copy of s to the optimizer (NULL detaches it): from then on
 * each nb_optimizer_step (and nb_optimizer_backward_step) first sets the
 * rate to the schedule's at t = the number of steps the optimizer has
 * taken, so the n-th step (from 0) uses the rate of step n.  As torch's
 * schedulers, it scales the optimizer's own rate (the lr given to
 * nb_optimizer_new or nb_optimizer_set_lr), not s->base_lr, and
 * nb_optimizer_lr then gives the rate of the last step; a refused schedule
 * (nb_schedule_check) leaves the optimizer as it was.  A checkpoint keeps
 * the step count and the schedule, so a resumed run continues it where it
 * stopped. */
nb_status nb_optimizer_set_schedule(nb_optimizer *opt, const nb_schedule *s);

/* ------------------------------------------------------------ data */

/* A table of examples: X (rows, features) and y (rows, 1), both heap
 * tensors of one dtype, with the feature names when read from a file. */
typedef struct {
    nb_tensor *X, *y;
    size_t rows, features;
    char **names;         /* features names (NULL when not known) */
    char *target_name;
    size_t dropped;       /* rows skipped by drop_bad_rows */
} nb_dataset;

typedef struct {
    const char *target;   /* name of the target column (required) */
    char delimiter;       /* default ',' */
    bool drop_bad_rows;   /* skip rows with missing or non-numeric values */
    nb_dtype dtype;       /* default NB_F32 */
} nb_csv_opts;

void nb_csv_default_opts(nb_csv_opts *opts);
/* Reads a CSV file with a header row and numeric columns.  Errors name the
 * file, the line and the column: a missing or non-numeric value, a row with
 * too few or too many fields, an unknown target column. */
nb_status nb_csv_read(const char *path, const nb_csv_opts *opts, nb_dataset *out);
void nb_dataset_free(nb_dataset *d);

/* Reads an IDX file (the MNIST format), plain or gzip-compressed, into a
 * heap tensor with the file's dimensions; unsigned bytes are multiplied by
 * `scale` (1.0/255 gives pixels in [0, 1]).  NULL tensor status on error,
 * with the message naming the file and the problem (magic number, truncated
 * data, sizes). */
nb_tensor *nb_idx_read(const char *path, nb_dtype dt, double scale);

/* Standardises the columns of X (rows, features) to mean 0 and standard
 * deviation 1 using the statistics of `train`, applied to train and to each
 * of the others (test sets).  Constant columns are centred only. */
nb_status nb_standardize(nb_tensor *train, nb_tensor *const *others, int n_others);

/* Splits d into shuffled train and test parts (seeded). */
nb_status nb_dataset_split(const nb_dataset *d, double test_fraction, nb_rng *rng,
                           nb_dataset *train, nb_dataset *test);

/* A tape tensor holding rows `rows[0..n)` of src (first axis), for batches.
 * From a tensor that requires a gradient (an embedding table) it is
 * nb_index_select(tp, src, 0, rows, n), and the gradient flows back to the
 * rows taken; otherwise a plain copy (a data tensor, no op recorded). */
#define nb_gather_rows(tp, src, rows, n) nb_gather_rows_(tp, src, rows, n, NB_SITE)
nb_tensor *nb_gather_rows_(nb_tape *tp, const nb_tensor *src, const size_t *rows, size_t n,
                           const char *file, int line);

/* Shuffled mini-batches of example indices, reshuffled every epoch. */
typedef struct {
    size_t *order;
    size_t n, batch_size, pos;
    nb_rng *rng;
} nb_batcher;
nb_status nb_batcher_init(nb_batcher *b, size_t n, size_t batch_size, nb_rng *rng);
/* The next batch's indices; false (and a reshuffle) at the end of an epoch. */
bool nb_batcher_next(nb_batcher *b, const size_t **indices, size_t *count);
size_t nb_batcher_batches(const nb_batcher *b); /* batches per epoch */
void nb_batcher_free(nb_batcher *b);

/* Metrics.  scores hold one row or column of class scores per example, with
 * the classes along `axis`; labels hold class indices.  With a single score
 * per example (binary), the class is score > threshold. */
double nb_accuracy(const nb_tensor *scores, const nb_tensor *labels, int axis);
double nb_accuracy_binary(const nb_tensor *scores, const nb_tensor *labels, double threshold);
/* counts[true_class * classes + predicted_class]; returns NB_OK or an error
 * for shapes or labels out of range. */
nb_status nb_confusion_matrix(const nb_tensor *scores, const nb_tensor *labels, int axis,
                              size_t classes, size_t *counts);
void nb_confusion_print(FILE *out, const size_t *counts, size_t classes,
                        const char *const *class_names);

/* ------------------------------------------------------------ feedback */

/* Progress while training: a bar redrawn in place when `out` is a terminal
 * (epoch, step, loss, accuracy, examples per second, time left), plain lines
 * otherwise; and a history of each epoch's figures. */
typedef struct nb_progress nb_progress;
nb_progress *nb_progress_new(FILE *out, long epochs, long steps_per_epoch, bool force_tty);
void nb_progress_free(nb_progress *p);
/* After each step: the running loss and accuracy and the examples seen. */
void nb_progress_step(nb_progress *p, long epoch, long step, double loss, double accuracy,
                      size_t examples);
/* After each epoch: its train loss and accuracy and the test accuracy (NaN if
 * none); prints a line and appends to the history. */
void nb_progress_epoch(nb_progress *p, long epoch, double loss, double accuracy,
                       double test_accuracy);
/* Writes the history as CSV: epoch,loss,accuracy,test_accuracy,seconds. */
nb_status nb_progress_save_csv(const nb_progress *p, const char *path);
/* Plots the history CSV to PNG or SVG (by the extension) with gnuplot;
 * NB_ERR_UNSUPPORTED when gnuplot is not installed. */
nb_status nb_progress_plot(const char *csv_path, const char *image_path);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_TRAIN_H */
