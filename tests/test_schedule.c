/*
 * Learning-rate schedules against torch.optim.lr_scheduler, step by step:
 * StepLR, ExponentialLR and CosineAnnealingLR alone, and each after a
 * linear warm-up joined by SequentialLR (the warm-up as a LambdaLR and as a
 * LinearLR), for two parameter groups of different rates.  The PyTorch
 * values come from tests/schedule_torch.py, run here (skipped with a
 * message when torch is not installed).  nabla's rates are taken twice:
 * from nb_schedule_lr, and from an optimizer the schedule is attached to,
 * whose steps must move a weight by exactly the rate.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

typedef struct {
    nb_schedule s;
    const char *form; /* the warm-up in torch: "lambda" (LambdaLR) or "linear" (LinearLR) */
    int steps;
} sched_case;

static const char *const kind_names[] = {"constant", "step", "cosine", "exponential"};
static const double base_lrs[2] = {0.1, 0.0025};

/* Every kind, bare and after warm-ups from 0 and from 0.25 (LinearLR needs
 * a start above 0), with the steps running past each decay's turns. */
static int make_cases(sched_case *cs) {
    int n = 0;
    for (int kind = 0; kind < 4; kind++)
        for (int w = 0; w < 4; w++) {
            sched_case c = {{(nb_schedule_kind)kind, 0.1, 7, 0.8, 40, 1e-4, 0, 0}, "lambda", 60};
            if (w == 1) c.s.warmup = 10;
            if (w == 2) c.s.warmup = 5, c.s.warmup_start = 0.25;
            if (w == 3) c.s.warmup = 5, c.s.warmup_start = 0.25, c.form = "linear";
            if (kind == NB_SCHEDULE_COSINE) c.steps = (int)(c.s.warmup + c.s.total + 1); /* README: torch goes back up after */
            if (kind == NB_SCHEDULE_EXPONENTIAL) c.s.gamma = 0.93;
            cs[n++] = c;
        }
    return n;
}

/* The torch rates, steps x 2 groups per case; false when torch is missing. */
static bool torch_rates(const sched_case *cs, int n, double **out) {
    char json[8192], cmd[8400];
    size_t len = (size_t)snprintf(json, sizeof json, "[");
    for (int i = 0; i < n; i++) {
        const nb_schedule *s = &cs[i].s;
        len += (size_t)snprintf(json + len, sizeof json - len,
                                "%s{\"kind\":\"%s\",\"base_lrs\":[%.17g,%.17g],\"step_size\":%ld,\"gamma\":%.17g,"
                                "\"total\":%ld,\"min_lr\":%.17g,\"warmup\":%ld,\"warmup_start\":%.17g,"
                                "\"warmup_form\":\"%s\",\"steps\":%d}",
                                i ? "," : "", kind_names[s->kind], base_lrs[0], base_lrs[1], s->step_size, s->gamma,
                                s->total, s->min_lr, s->warmup, s->warmup_start, cs[i].form, cs[i].steps);
    }
    snprintf(json + len, sizeof json - len, "]");
    assert_true(len < sizeof json - 2);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/schedule_torch.py '%s' 2>&1", json);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20;
    char *text = malloc(cap);
    size_t got = fread(text, 1, cap - 1, p);
    text[got] = '\0';
    int rc = pclose(p);
    rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (rc == 3 || rc == 127) {
        free(text);
        return false;
    }
    if (rc != 0) fail_msg("tests/schedule_torch.py failed (%d):\n%s", rc, text);
    char *at = text;
    for (int i = 0; i < n; i++) {
        out[i] = malloc(2 * (size_t)cs[i].steps * sizeof(double));
        for (int k = 0; k < 2 * cs[i].steps; k++) {
            char *end;
            out[i][k] = strtod(at, &end);
            if (end == at) fail_msg("tests/schedule_torch.py: case %d ends after %d values:\n%s", i, k, text);
            at = end;
        }
    }
    free(text);
    return true;
}

/* The rates an SGD optimizer with the schedule attached takes: each step's
 * rate is also what the step moves a weight of gradient 1 by. */
static void optimizer_rates(const nb_schedule *s, double base, int steps, double *out) {
    nb_params *ps = nb_params_new();
    nb_tensor *w = nb_params_add(ps, "w", nb_zeros(NULL, NB_F64, NB_SHAPE(1)));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    o.lr = base;
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    assert_int_equal(nb_optimizer_set_schedule(opt, s), NB_OK);
    for (int t = 0; t < steps; t++) {
        nb_tape *tp = nb_tape_new();
        nb_params_zero_grad(ps);
        assert_int_equal(nb_backward(nb_sum(tp, w)), NB_OK);
        double before = nb_item(w);
        assert_int_equal(nb_optimizer_step(opt), NB_OK);
        out[t] = nb_optimizer_lr(opt);
        assert_true(nb_item(w) == before - out[t]);
        nb_tape_free(tp);
    }
    nb_optimizer_free(opt);
    nb_params_free(ps);
}

static void test_schedules_follow_torch_step_by_step(void **state) {
    (void)state;
    sched_case cs[16];
    int n = make_cases(cs);
    double *torch[16];
    if (!torch_rates(cs, n, torch)) {
        print_message("skipped: python3-torch is not installed (apt-get install python3-torch to run it)\n");
        skip();
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double *via_opt = malloc((size_t)cs[i].steps * sizeof(double));
        for (int g = 0; g < 2; g++) {
            nb_schedule s = cs[i].s;
            s.base_lr = base_lrs[g];
            optimizer_rates(&cs[i].s, base_lrs[g], cs[i].steps, via_opt);
            for (int t = 0; t < cs[i].steps; t++) {
                double want = torch[i][2 * t + g], lr = nb_schedule_lr(&s, t);
                /* torch multiplies step by step (lr *= gamma; the cosine's
                 * recursive form): rounding apart, from the closed forms */
                double err = fabs(lr - want) / fmax(want, 1e-300);
                worst = fmax(worst, want == 0 ? fabs(lr) : err);
                if (!(want == 0 ? lr == 0 : err < 1e-12))
                    fail_msg("case %d (%s, warm-up %ld from %g, %s), group %d, step %d: nabla %.17g, torch %.17g", i,
                             kind_names[s.kind], s.warmup, s.warmup_start, cs[i].form, g, t, lr, want);
                assert_true(via_opt[t] == lr);
            }
        }
        free(via_opt);
        free(torch[i]);
    }
    print_message("%d schedules, 2 groups each: largest relative difference from torch %.2g\n", n, worst);
}

/* The composition by hand: warm-up of 4 from 0 to 1, then a step decay by
 * halves every 3 steps. */
static void test_warmup_then_step_by_hand(void **state) {
    (void)state;
    nb_schedule s = {NB_SCHEDULE_STEP, 1, 3, 0.5, 0, 0, 4, 0};
    const double want[12] = {0, 0.25, 0.5, 0.75, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25};
    for (int t = 0; t < 12; t++) assert_true(nb_schedule_lr(&s, t) == want[t]);
    assert_true(nb_schedule_lr(&s, -5) == 0);
    nb_schedule e = {NB_SCHEDULE_EXPONENTIAL, 2, 0, 0.5, 0, 0, 2, 0.5};
    const double want_e[6] = {1, 1.5, 2, 1, 0.5, 0.25};
    for (int t = 0; t < 6; t++) assert_true(nb_schedule_lr(&e, t) == want_e[t]);
}

static void test_bad_schedules_are_refused(void **state) {
    (void)state;
    struct { nb_schedule s; const char *says; } bad[] = {
        {{NB_SCHEDULE_STEP, 0.1, 0, 0.5, 0, 0, 0, 0}, "step_size > 0"},
        {{NB_SCHEDULE_COSINE, 0.1, 0, 0, 0, 0, 0, 0}, "total > 0"},
        {{NB_SCHEDULE_EXPONENTIAL, 0.1, 0, NAN, 0, 0, 0, 0}, "gamma"},
        {{NB_SCHEDULE_CONSTANT, -1, 0, 0, 0, 0, 0, 0}, "base_lr"},
        {{NB_SCHEDULE_CONSTANT, 0.1, 0, 0, 0, 0, -3, 0}, "warmup"},
        {{NB_SCHEDULE_COSINE, 0.1, 0, 0, 10, 0, 5, 1.5}, "warmup_start"},
        {{NB_SCHEDULE_COSINE, 0.1, 0, 0, 10, NAN, 0, 0}, "min_lr"},
        {{(nb_schedule_kind)9, 0.1, 0, 0, 0, 0, 0, 0}, "kind"},
    };
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "w", nb_zeros(NULL, NB_F32, NB_SHAPE(1)));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_true(isnan(nb_schedule_lr(&bad[i].s, 3)));
        assert_int_equal(nb_last_status(), NB_ERR_ARG);
        assert_message_has(nb_last_error(), "nb_schedule", bad[i].says);
        assert_int_equal(nb_optimizer_set_schedule(opt, &bad[i].s), NB_ERR_ARG);
    }
    assert_true(isnan(nb_schedule_lr(NULL, 0)));
    assert_int_equal(nb_optimizer_set_schedule(NULL, &bad[0].s), NB_ERR_NULL);
    /* refused schedules left the rate alone; NULL detaches a schedule */
    nb_schedule half = {NB_SCHEDULE_CONSTANT, 0, 0, 0, 0, 0, 2, 0.5};
    assert_int_equal(nb_optimizer_set_schedule(opt, &half), NB_OK);
    assert_int_equal(nb_optimizer_set_schedule(opt, NULL), NB_OK);
    assert_int_equal(nb_optimizer_step(opt), NB_OK);
    assert_true(nb_optimizer_lr(opt) == 0.01);
    nb_optimizer_free(opt);
    nb_params_free(ps);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_follow_torch_step_by_step),
        cmocka_unit_test(test_warmup_then_step_by_hand),
        cmocka_unit_test(test_bad_schedules_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
