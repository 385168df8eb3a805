#!/usr/bin/python3
"""Checks the forward frames of forward3's stepper page (build/examples/forward3
--html PAGE) against seed 004's network computed with numpy:
  - the page starts with the forward pass: frame 0 lights no op, frame k
    lights op k-1, and only then come the backward frames;
  - each result shows "value: not yet computed" until the frame of the op
    that makes it, and its value from that frame on: X_hidden, O_hidden,
    X_output, O_output and E appear in that order, one a frame;
  - every value shown, from the frame it appears, is numpy's to the 4
    significant digits printed (I = (0.9, 0.1, 0.8), the seed's two weight matrices, T = (0, 1, 0));
  - no gradient is shown during the forward pass.
Exits 1 with the reasons."""
import json
import re
import sys

import numpy as np

W_ih = np.array([[0.9, 0.3, 0.4], [0.2, 0.8, 0.2], [0.1, 0.5, 0.6]])
W_ho = np.array([[0.3, 0.7, 0.5], [0.6, 0.5, 0.2], [0.8, 0.1, 0.9]])
I = np.array([[0.9], [0.1], [0.8]])
T = np.array([[0], [1], [0]])
sigmoid = lambda z: 1 / (1 + np.exp(-z))
X_hidden = W_ih @ I
O_hidden = sigmoid(X_hidden)
X_output = W_ho @ O_hidden
O_output = sigmoid(X_output)
E = np.mean((O_output - T) ** 2)
EXPECTED = [("X_hidden", X_hidden), ("O_hidden", O_hidden), ("X_output", X_output), ("O_output", O_output),
            ("E", np.array([E]))]
NUM = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?")


def four_digits(shown, exact):
    """Is `shown` `exact` printed to 4 significant digits (within half a unit of the 4th)?"""
    return abs(shown - exact) <= 0.5 * 10 ** (np.floor(np.log10(abs(exact))) - 3) * (1 + 1e-9)


def values(label):
    """The numbers after "value" up to the gradient's line, or None when not yet computed."""
    lines = label.split("\n")
    start = next(k for k, l in enumerate(lines) if l.startswith("value"))
    if lines[start] == "value: not yet computed":
        return None
    out = []
    for l in lines[start:]:
        if l.startswith("grad"):
            break
        out += [float(x) for x in NUM.findall(l.replace("value", ""))]
    return out


def main(path):
    text = open(path, encoding="utf-8").read()
    data = json.loads(re.search(r'<script type="application/json" id="frames">(.*?)</script>', text, re.S).group(1))
    frames = data["frames"]
    names = [l.split("\n")[0] for l in frames[0]["labels"][: len(data["nodes"])]]
    node = {n: k for k, n in enumerate(names)}
    forward = [f for f in frames if f["phase"] == "forward"]
    bad = []
    if frames[: len(forward)] != forward or len(forward) != 6:
        bad.append("expected 6 forward frames first, got %d" % len(forward))
    for k, f in enumerate(forward):
        if f["op"] != (None if k == 0 else "op%d" % (k - 1)):
            bad.append("forward frame %d lights %s" % (k, f["op"]))
        for name, k_node in node.items():
            if "grad" in f["labels"][k_node] and "grad: not yet" not in f["labels"][k_node]:
                bad.append("forward frame %d shows a gradient of %s" % (k, name))
    for k_made, (name, want) in enumerate(EXPECTED, start=1):
        for k, f in enumerate(forward):
            got = values(f["labels"][node[name]])
            if k < k_made and got is not None:
                bad.append("%s shows a value in forward frame %d, before its op" % (name, k))
            if k >= k_made:
                if got is None:
                    bad.append("%s is not shown in forward frame %d" % (name, k))
                elif len(got) != want.size or not all(four_digits(g, w) for g, w in zip(got, want.ravel())):
                    bad.append("%s in frame %d shows %s, numpy gives %s" % (name, k, got, want.ravel()))
    print("\n".join(bad) if bad else "%s: %d forward frames, each value appears at its op and is numpy's" %
          (path, len(forward)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
