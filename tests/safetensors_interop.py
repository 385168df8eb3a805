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
    /usr/bin/python3 tests/safetensors_interop.py torch_bn MODEL IO
        the same for a conv + BatchNorm2d + ReLU + Linear stem, whose
        state_dict has running statistics and num_batches_tracked (int64)
    /usr/bin/python3 tests/safetensors_interop.py ints DIR
        writes integer and bool files, good and bad, into DIR (see main)
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F16": np.float16, "BF16": None, "F32": np.float32, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
CODES = {np.dtype(t): code for code, t in DTYPES.items() if t is not None}


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
    write_raw(path, [(name, CODES[array.dtype], list(array.shape),
                      np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
                     for name, array in tensors])


def write_raw(path, tensors):
    """tensors: (name, dtype code, shape, bytes), written as given (for bad files too)."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, code, shape, raw in tensors:
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
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
    elif what == "ints":
        # Integer and bool tensors into W (2, 3) float32 and b (3,) float64,
        # DIR/NAME.safetensors: the good ones hold values exact there, the
        # others one value that is not (or a bool byte of 2, or too few bytes).
        d = sys.argv[2]
        i64 = lambda *v: np.array(v, dtype="<i8").tobytes()
        write(f"{d}/i32-i64.safetensors", [("W", np.array([[1, -2, 3], [16777216, -16777216, 0]], np.int32)),
                                           ("b", np.array([2**53, -(2**53), -(2**63)], np.int64))])
        write(f"{d}/i16-i8.safetensors", [("W", np.array([[-32768, 32767, 1024], [-1, 0, 1]], np.int16)),
                                          ("b", np.array([-128, 127, -5], np.int8))])
        write(f"{d}/u8-bool.safetensors", [("W", np.array([[0, 255, 7], [128, 1, 254]], np.uint8)),
                                           ("b", np.array([True, False, True]))])
        write(f"{d}/f32-big.safetensors", [("W", np.array([[2**40, -(2**62), 3], [0, 0, 2**24 + 2]], np.int64)),
                                           ("b", np.zeros(3, np.float64))])
        write_raw(f"{d}/i64-inexact.safetensors", [("W", "F32", [2, 3], np.zeros(6, "<f4").tobytes()),
                                                   ("b", "I64", [3], i64(0, 2**53 + 1, 0))])
        write_raw(f"{d}/i64-max.safetensors", [("W", "F32", [2, 3], np.zeros(6, "<f4").tobytes()),
                                               ("b", "I64", [3], i64(0, 0, 2**63 - 1))])
        write_raw(f"{d}/i32-inexact.safetensors", [("W", "I32", [2, 3], np.array([0, 0, 0, 0, 16777217, 0], "<i4").tobytes()),
                                                   ("b", "F64", [3], np.zeros(3, "<f8").tobytes())])
        write_raw(f"{d}/bool-2.safetensors", [("W", "F32", [2, 3], np.zeros(6, "<f4").tobytes()),
                                              ("b", "BOOL", [3], bytes([1, 2, 0]))])
        write_raw(f"{d}/i64-short.safetensors", [("W", "F32", [2, 3], np.zeros(6, "<f4").tobytes()),
                                                 ("b", "I64", [3], i64(1, 2)[:16])])
        write_raw(f"{d}/i16-as-i32.safetensors", [("W", "I32", [2, 3], np.zeros(6, "<i2").tobytes()),
                                                  ("b", "F64", [3], np.zeros(3, "<f8").tobytes())])
    elif what == "torch_bn":
        # A ResNet-style stem with batch norm: conv (no bias), BatchNorm2d,
        # ReLU, flatten, Linear; three training batches move its running
        # statistics (num_batches_tracked 3, an int64 0-d tensor), then its
        # state_dict as MODEL and an input with the eval-mode logits as IO.
        try:
            import torch
        except ImportError:
            sys.exit(3)
        torch.manual_seed(11)
        model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, bias=False), torch.nn.BatchNorm2d(4),
                                    torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 3))
        with torch.no_grad():
            model[1].weight.uniform_(0.5, 1.5)
            model[1].bias.uniform_(-0.5, 0.5)
            model.train()
            for _ in range(3):
                model(torch.randn(6, 2, 5, 5) * 2 + 0.5)
            model.eval()
            x = torch.randn(4, 2, 5, 5)
            logits = model(x)
        state = model.state_dict()
        assert state["1.num_batches_tracked"].dtype == torch.int64
        write(sys.argv[2], [(k, v.numpy()) for k, v in state.items()])
        write(sys.argv[3], [("X", x.numpy()), ("logits", logits.numpy())])
    else:
        sys.exit(f"unknown command {what}")


if __name__ == "__main__":
    main()
