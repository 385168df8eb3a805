"""PyTorch reference for bench_hvp: the same MLP loss (matrices without
bias, tanh between them, softmax cross-entropy), batch 64, float32, on one
thread: one gradient (loss.backward) against a Hessian-vector product
(autograd.grad with create_graph, then the gradient of g . v).

    /usr/bin/python3 bench/torch_hvp.py --reps 20

Prints one CSV line per network: network,batch,gradient ms,hvp ms,ratio
(medians of --reps timed runs).
"""
import argparse
import statistics
import time

import torch

NETS = [(784, 128, 10), (784, 256, 256, 10)]
BATCH = 64


def measure(sizes, reps):
    torch.manual_seed(1)
    W = [(0.05 * torch.randn(sizes[i], sizes[i + 1])).requires_grad_() for i in range(len(sizes) - 1)]
    V = [torch.randn(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]
    x = torch.rand(BATCH, sizes[0])
    y = torch.arange(BATCH) % sizes[-1]

    def loss():
        h = x
        for i, w in enumerate(W):
            h = h @ w
            if i + 1 < len(W):
                h = torch.tanh(h)
        return torch.nn.functional.cross_entropy(h, y)

    def gradient():
        for w in W:
            w.grad = None
        loss().backward()

    def hvp():
        g = torch.autograd.grad(loss(), W, create_graph=True)
        s = sum((gi * vi).sum() for gi, vi in zip(g, V))
        return torch.autograd.grad(s, W)

    times = {}
    for name, fn in (("gradient", gradient), ("hvp", hvp)):
        for _ in range(3):
            fn()
        runs = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        times[name] = 1e3 * statistics.median(runs)
    return times["gradient"], times["hvp"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for sizes in NETS:
        g, h = measure(sizes, args.reps)
        print(f"{'-'.join(str(s) for s in sizes)},{BATCH},{g:.4f},{h:.4f},{h / g:.3f}", flush=True)


if __name__ == "__main__":
    main()
