"""PyTorch reference for bench_cnn: the same training step of KANN's
Fashion-MNIST CNN (conv 3x3 x32, relu, conv 3x3 x32, relu, max pool 2x2,
dropout 0.2, dense 128, relu, dropout 0.2, dense 10; softmax cross-entropy,
plain SGD lr 0.01), the same batch, inputs uniform in [0, 1), labels i mod
10, on the CPU with the given threads.

    /usr/bin/python3 bench/torch_cnn.py --threads 1 --batch 64 --reps 5 [--quick]

Prints one CSV line: batch,threads,torch_ms (the median of --reps runs).
"""
import argparse

import torch

from torch_timing import median_ms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Dropout(0.2), torch.nn.Flatten(),
        torch.nn.Linear(32 * 12 * 12, 128), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.arange(args.batch) % 10

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    ms = median_ms(step, args.reps, 0.3 if args.quick else 1.0)
    print(f"{args.batch},{args.threads},{ms:.4f}", flush=True)


if __name__ == "__main__":
    main()
