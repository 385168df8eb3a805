#!/usr/bin/env python3
"""Checks every "a × b = c" in the given picture files (.dot, or a stepper's
HTML, whose frames hold the same labels) as a calculator would: the exact
product of the printed factors, a·b, must round to the printed c, that is
lie within half a unit of c's last printed digit.  Likewise a fan-out's
"grad g ... = a + b - c (3 uses)": the terms' exact sum must round to g.
Prints the ones that do not and exits 1; exits 2 when a file has no
product at all."""
import re
import sys
from decimal import Decimal

NUM = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?"
PRODUCT = re.compile(r"(%s) × (%s) = (%s)" % (NUM, NUM, NUM))
SUM = re.compile(r"grad (%s)[^\\]*\\n= (%s(?: [-+] %s)*) \(\d+ uses\)" % (NUM, NUM, NUM))


def half_unit(text):
    """Half a unit of the last printed digit of a number printed as text."""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return Decimal(5) * Decimal(10) ** (-decimals - 1 + int(exponent or 0))


def main():
    bad = 0
    for path in sys.argv[1:]:
        found = 0
        with open(path, encoding="utf-8") as f:
            for a, b, c in PRODUCT.findall(f.read()):
                found += 1
                exact = Decimal(a) * Decimal(b)
                if abs(exact - Decimal(c)) > half_unit(c):
                    print("%s: %s × %s = %s, but the product is %s" % (path, a, b, c, exact))
                    bad += 1
            f.seek(0)
            for total, terms in SUM.findall(f.read()):
                found += 1
                exact = Decimal(0)
                sign = 1
                for piece in terms.split(" "):
                    if piece in "+-":
                        sign = -1 if piece == "-" else 1
                    else:
                        exact += sign * Decimal(piece)
                if abs(exact - Decimal(total)) > half_unit(total):
                    print("%s: = %s makes %s, not the gradient %s" % (path, terms, exact, total))
                    bad += 1
        if not found:
            print("%s: no products" % path)
            return 2
        print("%s: %d products checked" % (path, found))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
