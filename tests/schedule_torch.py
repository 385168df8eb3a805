"""The PyTorch side of tests/test_schedule.c: each case's learning rates,
step by step, from torch.optim.lr_scheduler.

    /usr/bin/python3 tests/schedule_torch.py CASES_JSON

CASES_JSON is a list of objects with kind ("constant", "step", "cosine",
"exponential"), base_lrs (one per parameter group), step_size, gamma, total,
min_lr, warmup, warmup_start, warmup_form ("lambda": LambdaLR, "linear":
LinearLR) and steps.  Prints one line per case: for each step, each group's
rate before that step's optimizer.step(), as %.17g.  The decay is StepLR,
ExponentialLR or CosineAnnealingLR; a warm-up is joined to it with
SequentialLR(milestones=[warmup]).  Exits 3 when torch cannot be imported.
"""
import json
import sys
import warnings

try:
    import torch
except ImportError:
    sys.exit(3)


def decay(opt, c):
    lrs = torch.optim.lr_scheduler
    if c["kind"] == "step":
        return lrs.StepLR(opt, step_size=c["step_size"], gamma=c["gamma"])
    if c["kind"] == "exponential":
        return lrs.ExponentialLR(opt, gamma=c["gamma"])
    if c["kind"] == "cosine":
        return lrs.CosineAnnealingLR(opt, T_max=c["total"], eta_min=c["min_lr"])
    return lrs.LambdaLR(opt, lambda t: 1.0)


def rates(c):
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in c["base_lrs"]]
    opt = torch.optim.SGD(groups, lr=c["base_lrs"][0])
    w, s = c["warmup"], c["warmup_start"]
    if w > 0:
        if c["warmup_form"] == "linear":
            warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=s, end_factor=1.0, total_iters=w)
        else:
            warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: s + (1 - s) * t / w)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay(opt, c)], milestones=[w])
    else:
        sched = decay(opt, c)
    out = []
    for _ in range(c["steps"]):
        out.extend(g["lr"] for g in opt.param_groups)
        opt.step()
        sched.step()
    return out


def main():
    warnings.simplefilter("ignore")  # SequentialLR's step(0) of the decay warns about the epoch argument
    for c in json.loads(sys.argv[1]):
        print(" ".join("%.17g" % v for v in rates(c)))


if __name__ == "__main__":
    main()
