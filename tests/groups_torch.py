"""The PyTorch side of tests/test_groups.c: torch.optim with parameter
groups, a warm-up then exponential schedule and clip_grad_norm_, on a
quadratic loss, in float64.

    /usr/bin/python3 tests/groups_torch.py CASE_JSON

CASE_JSON holds optimizer ("sgd", "momentum", "adam", "adamw", "rmsprop"),
steps, clip, warmup, warmup_start, gamma, and params: a list of objects with
w0, A and c (flat lists) and group; groups: a list of objects with lr,
weight_decay, momentum, beta1, beta2, eps.  The loss is
sum over parameters of sum(A (w - c)^2) / 2.  Prints every parameter's
final values, in order, as %.17g.  Exits 3 when torch cannot be imported.
"""
import json
import sys
import warnings

try:
    import torch
except ImportError:
    sys.exit(3)


def main():
    warnings.simplefilter("ignore")  # SequentialLR's step(0) of the decay warns about the epoch argument
    c = json.loads(sys.argv[1])
    params = [torch.tensor(p["w0"], dtype=torch.float64, requires_grad=True) for p in c["params"]]
    groups = []
    for g, opts in enumerate(c["groups"]):
        members = [params[i] for i, p in enumerate(c["params"]) if p["group"] == g]
        groups.append(dict(opts, params=members))
    kind = c["optimizer"]
    torch_groups = []
    for g in groups:
        d = {"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]}
        if kind == "momentum":
            d["momentum"] = g["momentum"]
        if kind in ("adam", "adamw"):
            d["betas"] = (g["beta1"], g["beta2"])
            d["eps"] = g["eps"]
        if kind == "rmsprop":
            d["alpha"] = g["beta2"]
            d["eps"] = g["eps"]
        torch_groups.append(d)
    make = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[kind]
    opt = make(torch_groups, lr=groups[0]["lr"])
    w, s = c["warmup"], c["warmup_start"]
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: s + (1 - s) * t / w)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=c["gamma"])
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[w])
    A = [torch.tensor(p["A"], dtype=torch.float64) for p in c["params"]]
    C = [torch.tensor(p["c"], dtype=torch.float64) for p in c["params"]]
    for _ in range(c["steps"]):
        opt.zero_grad()
        loss = sum((a * (p - t) ** 2).sum() / 2 for p, a, t in zip(params, A, C))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, c["clip"])
        opt.step()
        sched.step()
    print(" ".join("%.17g" % v for p in params for v in p.detach().reshape(-1).tolist()))


if __name__ == "__main__":
    main()
