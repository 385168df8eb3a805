"""PyTorch reference for bench_mlp: the same MLP training step (Linear layers,
sigmoid or relu, softmax cross-entropy, plain SGD unless --optimizer says
otherwise), the same shapes, inputs uniform in [0, 1) and labels i mod 10,
on the CPU with the given threads.

    /usr/bin/python3 bench/torch_mlp.py --threads 1 --reps 1 [--quick]
        [--only NET --act relu|sigmoid --batch B --optimizer sgd|momentum|adam|adamw]

Prints one CSV line per configuration: network,activation,batch,torch_ms,
update_ms (the medians of --reps timed runs of the whole step and of
opt.step() alone).  The optimizers have nabla's defaults: lr 1e-3 for SGD
and Adam, 1e-2 and momentum 0.9 for momentum, weight decay 1e-2 for AdamW, lr 1e-2
and alpha 0.99 for RMSprop.
"""
import argparse
import statistics
import time

import torch

CONFIGS = [
    ((784, 128, 10), "sigmoid", 32), ((784, 128, 10), "sigmoid", 256),
    ((784, 128, 10), "relu", 32), ((784, 128, 10), "relu", 256),
    ((784, 256, 256, 10), "sigmoid", 32), ((784, 256, 256, 10), "sigmoid", 256),
    ((784, 256, 256, 10), "relu", 32), ((784, 256, 256, 10), "relu", 256),
    ((784, 128, 10), "relu", 64),  # the optimizer table's (--batch 64)
]


def optimizer(kind, params):
    if kind == "momentum":
        return torch.optim.SGD(params, lr=1e-2, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=1e-2)
    return torch.optim.SGD(params, lr=1e-3)


def model(sizes, activation):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers)


def timed(fn, reps, seconds):
    start, probe = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        fn()
        probe += 1
    steps = int(seconds / ((time.perf_counter() - start) / probe)) + 1
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * statistics.median(times)


def measure(sizes, activation, batch, reps, seconds, kind):
    torch.manual_seed(1)
    net = model(sizes, activation)
    opt = optimizer(kind, net.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(batch, sizes[0])
    y = torch.arange(batch) % sizes[-1]

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    return timed(step, reps, seconds), timed(opt.step, reps, seconds / 5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only")
    parser.add_argument("--act")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "momentum", "adam", "adamw", "rmsprop"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for sizes, activation, batch in CONFIGS:
        name = "-".join(str(s) for s in sizes)
        if (args.only and name != args.only) or (args.act and activation != args.act):
            continue
        if (batch != args.batch) if args.batch else batch == 64:
            continue
        if args.threads > 1 and batch < 256 and not args.batch:
            continue
        ms, update = measure(sizes, activation, batch, args.reps, 0.05 if args.quick else 0.25, args.optimizer)
        print(f"{name},{activation},{batch},{ms:.4f},{update:.4f}", flush=True)


if __name__ == "__main__":
    main()
