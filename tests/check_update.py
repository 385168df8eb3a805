#!/usr/bin/env python3
"""Checks the update frame of a stepper page made with opts.learning_rate
(gradient_descent, logreg): it is the last frame, lights no op, and every
parameter's update is gradient descent's step on the numbers printed beside
it, as a calculator does it:
  - "update x ← a − b × c = r": the exact a − b·c rounds to r (4 digits),
    and b is the learning rate given (--lr);
  - "after w − η·grad [...]": each new value is value − η·grad, within
    what the printing of the three numbers allows (values in full only).
Before the update frame every parameter says "update: not yet".  Prints the
updates checked; exits 1 with the reasons, 2 when there is nothing to check.
usage: check_update.py PAGE LEARNING_RATE"""
import json
import re
import sys
from decimal import Decimal

NUM = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?"
SCALAR = re.compile(r"^update .* ← (%s) − (%s) × \(?(%s)\)? = (%s)$" % (NUM, NUM, NUM, NUM))


def half_unit(text):
    mantissa, _, exponent = text.lstrip("-").partition("e")
    return Decimal(5) * Decimal(10) ** (-len(mantissa.partition(".")[2]) - 1 + int(exponent or 0))


def numbers(lines, prefix):
    """The numbers of the block of lines that starts with prefix, up to the next block."""
    out, inside = [], False
    for line in lines:
        if line.startswith(prefix):
            inside, line = True, line[len(prefix):]
        elif inside and re.match(r"^[a-z]", line):
            break
        if inside:
            out += re.findall(NUM, line)
    return out


def main(path, lr):
    text = open(path, encoding="utf-8").read()
    data = json.loads(re.search(r'<script type="application/json" id="frames">(.*?)</script>', text, re.S).group(1))
    frames, n_nodes = data["frames"], len(data["nodes"])
    bad, checked = [], 0
    last = frames[-1]
    if last["phase"] != "update" or last["op"] is not None:
        print("%s: the last frame is not an update frame" % path)
        return 1
    for k, label in enumerate(last["labels"][:n_nodes]):
        lines = label.split("\n")
        for f in frames[:-1]:
            before = f["labels"][k].split("\n")
            if any(l.startswith("update") or l.startswith("after w") for l in before) and \
                    "update: not yet" not in before:
                bad.append("%s shows an update before the update frame" % lines[0])
        for line in lines:
            m = SCALAR.match(line)
            if m:
                a, b, c, r = m.groups()
                checked += 1
                if abs(Decimal(b) - Decimal(lr)) > half_unit(b):
                    bad.append("%s: the rate printed is %s, not %s" % (line, b, lr))
                exact = Decimal(a) - Decimal(b) * Decimal(c)
                if abs(exact - Decimal(r)) > half_unit(r):
                    bad.append("%s: a calculator gives %s" % (line, exact))
        after = [l for l in lines if l.startswith("after w")]
        if after and " min " not in after[0]:  # a summary's min, mean, max are not element by element
            prefix = after[0].split("[")[0].split(" min")[0].rstrip() + " "
            v, g, w = numbers(lines, "value "), numbers(lines, "grad "), numbers(lines, prefix)
            if not (len(v) == len(g) == len(w)) or not v:
                bad.append("%s: %d values, %d gradients, %d updated values" % (lines[0], len(v), len(g), len(w)))
                continue
            for a, c, r in zip(v, g, w):
                checked += 1
                exact = Decimal(a) - Decimal(lr) * Decimal(c)
                room = half_unit(r) + half_unit(a) + Decimal(lr) * half_unit(c)
                if abs(exact - Decimal(r)) > room:
                    bad.append("%s: %s − %s × %s = %s, printed %s" % (lines[0], a, lr, c, exact, r))
    if not checked:
        print("%s: no update to check" % path)
        return 2
    print("\n".join(bad) if bad else "%s: %d updated numbers checked" % (path, checked))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
