/*
 * Learning-rate schedules: a pure function of the step number, so that a
 * resumed run (which restores the optimizer's step count) continues the
 * schedule exactly where it stopped.
 *
 * A linear warm-up of `warmup` steps comes first, from warmup_start x base
 * up to base (PyTorch's LinearLR, or a LambdaLR of the same factor); the
 * decay then runs on its own clock, t - warmup, as in PyTorch's
 * SequentialLR([warm-up, decay], milestones=[warmup]):
 *   CONSTANT:    base
 *   STEP:        base gamma^floor(t / step_size)                  (StepLR)
 *   EXPONENTIAL: base gamma^t                                     (ExponentialLR)
 *   COSINE:      min + (base - min) (1 + cos(pi min(t, total) / total)) / 2
 *                                                        (CosineAnnealingLR)
 * PyTorch computes most of these recursively (lr *= gamma each step); the
 * closed forms here agree to rounding (tests/test_schedule.c runs torch).
 */
#include "../internal.h"
#include "nabla_train.h"
#include "toolkit.h"

#include <math.h>

static const char *const schedule_names[] = {"constant", "step", "cosine", "exponential"};
#define N_SCHEDULES (int)(sizeof schedule_names / sizeof *schedule_names)

nb_status nb_schedule_check(const nb_schedule *s) {
    const char *why = NULL;
    if (!s) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "nb_schedule: the schedule is NULL");
        return NB_ERR_NULL;
    }
    if ((unsigned)s->kind >= N_SCHEDULES) why = "its kind is not one of NB_SCHEDULE_*";
    else if (!(s->base_lr >= 0) || !isfinite(s->base_lr)) why = "base_lr must be a finite number >= 0";
    else if (s->warmup < 0) why = "warmup (steps) must be >= 0";
    else if (s->warmup > 0 && !(s->warmup_start >= 0 && s->warmup_start <= 1))
        why = "warmup_start (the factor of base_lr at step 0) must be in [0, 1]";
    else if (s->kind == NB_SCHEDULE_STEP && s->step_size <= 0) why = "a STEP schedule needs step_size > 0";
    else if ((s->kind == NB_SCHEDULE_STEP || s->kind == NB_SCHEDULE_EXPONENTIAL) &&
             !(s->gamma >= 0 && isfinite(s->gamma)))
        why = "gamma must be a finite number >= 0";
    else if (s->kind == NB_SCHEDULE_COSINE && s->total <= 0) why = "a COSINE schedule needs total > 0 (its steps)";
    else if (s->kind == NB_SCHEDULE_COSINE && !(s->min_lr >= 0 && isfinite(s->min_lr)))
        why = "min_lr must be a finite number >= 0";
    if (!why) return NB_OK;
    nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                 "nb_schedule: %s (kind %s, base_lr %g, step_size %ld, gamma %g, total %ld, min_lr %g, warmup %ld, "
                 "warmup_start %g)",
                 why, (unsigned)s->kind < N_SCHEDULES ? schedule_names[s->kind] : "unknown", s->base_lr, s->step_size,
                 s->gamma, s->total, s->min_lr, s->warmup, s->warmup_start);
    return NB_ERR_ARG;
}

double nb_schedule_lr_from(const nb_schedule *s, double base, long t) {
    if (t < 0) t = 0;
    if (t < s->warmup) /* LinearLR's factor: start + (1 - start) t / warmup */
        return base * (s->warmup_start + (1 - s->warmup_start) * (double)t / (double)s->warmup);
    t -= s->warmup;
    switch (s->kind) {
    case NB_SCHEDULE_STEP: { /* StepLR: gamma to the number of whole periods */
        long periods = t / s->step_size;
        return base * pow(s->gamma, (double)periods);
    }
    case NB_SCHEDULE_EXPONENTIAL: return base * pow(s->gamma, (double)t);
    case NB_SCHEDULE_COSINE: {
        double progress = (double)(t < s->total ? t : s->total) / (double)s->total;
        return s->min_lr + (base - s->min_lr) * (1 + cos(3.14159265358979323846 * progress)) / 2;
    }
    default: return base;
    }
}

double nb_schedule_lr(const nb_schedule *s, long t) {
    if (nb_schedule_check(s) != NB_OK) return NAN;
    return nb_schedule_lr_from(s, s->base_lr, t);
}
