/*
 * What the training toolkit's files share among themselves (not installed).
 */
#ifndef NABLA_TOOLKIT_H
#define NABLA_TOOLKIT_H

#include "nabla_train.h"

/* nb_schedule_lr with another base rate (an optimizer's, per group); the
 * schedule has been checked (nb_schedule_check). */
double nb_schedule_lr_from(const nb_schedule *s, double base, long t);

#endif
