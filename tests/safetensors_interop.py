"""The Python side of tests/test_safetensors.c: reads and writes safetensors
files with nothing but json and numpy (the format is simple enough that a
user needs no extra package), and, when PyTorch is installed, writes a
model's weights and its logits for nabla to reproduce.

    /usr/bin/python3 tests/safetensors_interop.py read FILE
        prints, per tensor in the file's order: name dtype shape sum first last
    /usr/bin/python3 tests/safetensors_interop.py write FILE
        writes "a" (float32, 2x3) = 0.25 i - 1 and "b" (float64, 4) = 1 / (i + 1)
        and "h" (float16, 3) = 0.5, -2, 65504
    /usr/bin/python3 tests/safetensors_interop.py torch MODEL IO
        writes a seeded torch.nn.Sequential(Linear(5, 7), Tanh(), Linear(7, 3))
        as MODEL (its state_dict names: 0.weight, 0.bias, 2.weight, 2.bias)
        and an input X (4, 5) with the model's logits as IO; exits 3 when
        torch cannot be imported
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F16": np.float16, "BF16": None, "F32": np.float32, "F64": np.float64}
CODES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        values = np.frombuffer(data[begin:end], dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        out.append((name, info["dtype"], values.reshape(info["shape"])))
    return out


def write(path, tensors):
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors:
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": CODES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def main():
    what = sys.argv[1]
    if what == "read":
        for name, dtype, values in read(sys.argv[2]):
            flat = values.reshape(-1).astype(np.float64)
            shape = ",".join(str(s) for s in values.shape)
            print(f"{name} {dtype} ({shape}) {flat.sum():.17g} {flat[0]:.17g} {flat[-1]:.17g}")
    elif what == "write":
        write(sys.argv[2], [("a", (0.25 * np.arange(6) - 1).astype(np.float32).reshape(2, 3)),
                            ("b", 1 / (np.arange(4) + 1.0)),
                            ("h", np.array([0.5, -2, 65504], dtype=np.float16))])
    elif what == "torch":
        try:
            import torch
        except ImportError:
            sys.exit(3)
        torch.manual_seed(7)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
        x = torch.randn(4, 5)
        with torch.no_grad():
            logits = model(x)
        write(sys.argv[2], [(k, v.numpy()) for k, v in model.state_dict().items()])
        write(sys.argv[3], [("X", x.numpy()), ("logits", logits.numpy())])
    else:
        sys.exit(f"unknown command {what}")


if __name__ == "__main__":
    main()
