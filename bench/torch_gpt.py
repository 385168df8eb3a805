"""PyTorch reference for bench_gpt: the same GPT (examples/gpt_model.h, in
nanoGPT's layout and names), its training step (forward, backward, the
gradients' norm clipped at 1, AdamW with betas 0.9 and 0.99, weight decay
0.01, lr 1e-3), and causal attention alone.  PyTorch 1.13 has no fused
scaled_dot_product_attention (it came in 2.0): its attention is composed of
ops, as nanoGPT's manual path writes it.

    /usr/bin/python3 bench/torch_gpt.py --config NAME --weights DIR [--threads N] [--reps R] [--dropout P]
        loads DIR/NAME.safetensors and DIR/NAME_batch.safetensors (bench_gpt --write) and prints
        first,NAME,loss,norm,worst,name   (without dropout; worst: the largest difference of a
        gradient from nabla's, relative to its largest entry, and which), then
        NAME,torch,threads,wall_ms,cpu_ms   (medians of R timed runs of about 0.5 s)
    /usr/bin/python3 bench/torch_gpt.py --attention L [--threads N] [--reps R]
        attention,L,torch,threads,wall_ms,cpu_ms,peak_extra_MB for q, k, v of (4, 4, L, 64)
"""
import argparse
import json
import math
import statistics
import struct
import time

import torch

CONFIGS = {"small": (2, 64, 4, 64, 16), "lesson": (4, 128, 4, 128, 16), "gpt2": (1, 768, 12, 256, 2)}
VOCAB = 113


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data, out = blob[8 + n:], {}
    kinds = {"F32": torch.float32, "F64": torch.float64}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=kinds[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def attention(q, k, v, p, training):
    T = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    att = torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
    att = torch.nn.functional.dropout(att, p, training)
    return att @ v


class Block(torch.nn.Module):
    def __init__(self, d, H, p):
        super().__init__()
        self.H, self.p = H, p
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn = torch.nn.Module()
        self.attn.c_attn, self.attn.c_proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.mlp = torch.nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)
        self.drop = torch.nn.Dropout(p)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(B, T, self.H, d // self.H).transpose(1, 2) for t in (q, k, v))
        y = attention(q, k, v, self.p, self.training).transpose(1, 2).contiguous().view(B, T, d)
        x = x + self.drop(self.attn.c_proj(y))
        return x + self.drop(self.mlp.c_proj(torch.nn.functional.gelu(self.mlp.c_fc(self.ln_2(x)))))


class GPT(torch.nn.Module):
    def __init__(self, L, d, H, T, p):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(VOCAB, d), torch.nn.Embedding(T, d)
        self.h = torch.nn.ModuleList(Block(d, H, p) for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(d)
        self.drop = torch.nn.Dropout(p)

    def forward(self, ids):
        x = self.drop(self.wte(ids) + self.wpe.weight[:ids.shape[1]])
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied: the embedding is the output layer


def timed(fn, reps, seconds):
    fn()
    fn()
    start = time.perf_counter()
    fn()
    per_run = int(seconds / (time.perf_counter() - start)) + 1
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        for _ in range(per_run):
            fn()
        wall.append(1e3 * (time.perf_counter() - w) / per_run)
        cpu.append(1e3 * (time.process_time() - c) / per_run)
    return statistics.median(wall), statistics.median(cpu)


def vm_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return float(line.split()[1])
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--weights")
    ap.add_argument("--attention", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dropout", type=float, default=0.1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.attention:
        q, k, v = (torch.randn(4, 4, a.attention, 64, requires_grad=True) for _ in range(3))

        def attention_pass():
            for t in (q, k, v):
                t.grad = None
            attention(q, k, v, 0.0, False).sum().backward()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = vm_kb("VmRSS:")
        attention_pass()
        peak = (vm_kb("VmHWM:") - before) / 1024
        wall, cpu = timed(attention_pass, a.reps, 0.3)
        print(f"attention,{a.attention},torch,{a.threads},{wall:.3f},{cpu:.3f},{peak:.1f}")
        return
    L, d, H, T, B = CONFIGS[a.config]
    weights = read_safetensors(f"{a.weights}/{a.config}.safetensors")
    batch = read_safetensors(f"{a.weights}/{a.config}_batch.safetensors")
    ids, targets = batch["ids"].long(), batch["targets"].long()
    model = GPT(L, d, H, T, a.dropout)
    model.load_state_dict(weights)  # every name and shape must match nabla's
    model.eval()
    loss = torch.nn.functional.cross_entropy(model(ids).view(-1, VOCAB), targets.view(-1))
    loss.backward()
    theirs = read_safetensors(f"{a.weights}/{a.config}_grads.safetensors")
    worst, where = 0.0, ""
    for name, p in model.named_parameters():  # each gradient against nabla's, relative to its largest entry
        diff = ((p.grad - theirs[name]).abs().max() / p.grad.abs().max()).item()
        if diff > worst:
            worst, where = diff, name
    # the norm summed in float64: torch 1.13's clip_grad_norm_ sums a large float32 gradient with
    # an error of about 2e-5 (3.5623128 for the gpt2 configuration's 3.5623883)
    norm = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in model.parameters()))
    print(f"first,{a.config},{loss.item():.9g},{norm:.9g},{worst:.3g},{where}")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(model(ids).view(-1, VOCAB), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    wall, cpu = timed(step, a.reps, 0.5)
    print(f"{a.config},torch,{a.threads},{wall:.3f},{cpu:.3f}")


if __name__ == "__main__":
    main()
