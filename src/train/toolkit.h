/*
 * What the training toolkit's files share among themselves (not installed).
 */
#ifndef NABLA_TOOLKIT_H
#define NABLA_TOOLKIT_H

#include "../internal.h"
#include "nabla_train.h"

/* A parameter group: its options (o.kind is the optimizer's) and the rate
 * a schedule scales.  o.lr is the rate of the last step (the next, before
 * any). */
typedef struct {
    nb_optimizer_opts o;
    double base_lr;
} nb_opt_group;

/* An optimizer (src/train/optimizer.c, its groups in src/train/groups.c),
 * whose state a checkpoint (src/train/checkpoint.c) saves and restores. */
struct nb_optimizer {
    nb_optimizer_kind kind;
    nb_opt_group *groups;      /* group 0 holds every parameter no other group took */
    size_t n_groups;
    size_t *group_of;          /* per parameter: its group */
    nb_params *ps;
    size_t n;
    /* Per parameter, heap tensors of its dtype and shape (NULL where the
     * kind keeps none): momentum's velocity, Adam's first moment or
     * RMSprop's mean square (state1); Adam's second moment (state2). */
    nb_tensor **state1, **state2;
    void **data1, **data2;     /* their values (NULL where none), as the updates read them */
    long t;                    /* steps taken */
    nb_tensor **tensors;       /* the parameters, for nb_backward_sgd_ */
    bool *started;             /* momentum: whether v was initialised */
    bool scheduled;            /* the rates follow `schedule` from each group's base_lr */
    nb_schedule schedule;
};

/* nb_schedule_lr with another base rate (an optimizer's, per group); the
 * schedule has been checked (nb_schedule_check). */
double nb_schedule_lr_from(const nb_schedule *s, double base, long t);

/* NB_OK, or NB_ERR_ARG with "who: invalid options (...)". */
nb_status nb_optimizer_opts_check(const char *who, const nb_optimizer_opts *o);

#endif
