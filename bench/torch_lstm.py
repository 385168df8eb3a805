"""PyTorch reference for the LSTM training step of examples/charlm.c: an
embedding of 28 symbols into 32, an LSTM with 128 units over windows of 16
characters, a linear layer to 28 scores, cross-entropy, gradient clipping
at norm 5 and Adam (lr 0.003), batch 32, on the CPU with the given threads.
The LSTM is PyTorch's nn.LSTM (its fused CPU kernel), as a PyTorch user
would write it; --cell gives the loop of nn.LSTMCell steps instead.

    /usr/bin/python3 bench/torch_lstm.py --threads 1 --reps 5 [--cell] [--quick]

Prints one CSV line: batch,steps,hidden,threads,torch_ms (the median of
--reps runs).
"""
import argparse

import torch

from torch_timing import median_ms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cell", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    vocab, embed, hidden, B, T = 28, 32, args.hidden, args.batch, args.steps
    emb = torch.nn.Embedding(vocab, embed)
    lstm = torch.nn.LSTMCell(embed, hidden) if args.cell else torch.nn.LSTM(embed, hidden)
    out = torch.nn.Linear(hidden, vocab)
    params = list(emb.parameters()) + list(lstm.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    text = torch.randint(0, vocab, (100000,))

    def step():
        starts = torch.randint(0, len(text) - T - 1, (B,))
        idx = starts[None, :] + torch.arange(T)[:, None]           # (T, B), time-major
        x, y = emb(text[idx]), text[idx + 1]
        if args.cell:
            h = c = torch.zeros(B, hidden)
            hs = []
            for t in range(T):
                h, c = lstm(x[t], (h, c))
                hs.append(h)
            hs = torch.stack(hs)
        else:
            hs, _ = lstm(x)
        opt.zero_grad()
        loss = loss_fn(out(hs).reshape(T * B, vocab), y.reshape(T * B))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    ms = median_ms(step, args.reps, 0.3 if args.quick else 1.0, warmup=5, min_steps=3)
    print(f"{B},{T},{hidden},{args.threads},{ms:.4f}", flush=True)


if __name__ == "__main__":
    main()
