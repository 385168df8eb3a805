"""PyTorch reference for bench_mlp: the same MLP training step (Linear layers,
sigmoid or relu, softmax cross-entropy, plain SGD), the same shapes, inputs
uniform in [0, 1) and labels i mod 10, on the CPU with the given threads.

    /usr/bin/python3 bench/torch_mlp.py --threads 1 --reps 1 [--quick]

Prints one CSV line per configuration: network,activation,batch,torch_ms
(the median of --reps timed runs).
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
]


def model(sizes, activation):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers)


def measure(sizes, activation, batch, reps, seconds):
    torch.manual_seed(1)
    net = model(sizes, activation)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(batch, sizes[0])
    y = torch.arange(batch) % sizes[-1]

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    start, probe = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        step()
        probe += 1
    steps = int(seconds / ((time.perf_counter() - start) / probe)) + 1
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for sizes, activation, batch in CONFIGS:
        if args.threads > 1 and batch < 256:
            continue
        ms = measure(sizes, activation, batch, args.reps, 0.05 if args.quick else 0.25)
        name = "-".join(str(s) for s in sizes)
        print(f"{name},{activation},{batch},{ms:.4f}", flush=True)


if __name__ == "__main__":
    main()
