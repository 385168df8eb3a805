#!/usr/bin/env python3
"""Checks that no text a student reads in the given pictures names a tensor
by its place on the tape ("t50", "which made t5", "∂t50/∂t49 = t43"):
every label of a .dot file (nodes, ops, edges, clusters, the title), and in
a stepper's HTML every caption and label of every frame (the JSON in its
script) and every text of the laid-out SVG.  Node ids (t5 -> op3, the SVG's
<title> elements, the JSON's lists of ids) are not read: no one sees them.
Prints each offending text and exits 1; exits 2 when a file holds no label
at all (a check that read nothing would pass anything)."""
import html
import json
import re
import sys

TAPE_NAME = re.compile(r"(?<![\w\[<])t\d+\b")
DOT_LABEL = re.compile(r'label="((?:[^"\\]|\\.)*)"')


def dot_texts(text):
    for m in DOT_LABEL.finditer(text):
        yield m.group(1).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def html_texts(text):
    m = re.search(r'<script type="application/json" id="frames">(.*?)</script>', text, re.S)
    if not m:
        return
    data = json.loads(m.group(1))
    for frame in data["frames"]:
        yield frame["caption"]
        yield from frame["labels"]
    for t in re.findall(r"<text[^>]*>(.*?)</text>", text, re.S):
        yield html.unescape(t)
    page = re.sub(r"<svg.*?</svg>", "", text, flags=re.S)  # the SVG's <title>s are ids
    for t in re.findall(r"<(?:h1|title|p|div|aside|span|b|h2)[^>]*>([^<]*)<", page):
        yield html.unescape(t)


def main():
    bad = 0
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        texts = list(html_texts(text) if path.endswith(".html") else dot_texts(text))
        if not texts:
            print("%s: no labels" % path)
            return 2
        for t in texts:
            found = TAPE_NAME.findall(t)
            if found:
                bad += 1
                print("%s: %s in %r" % (path, ", ".join(sorted(set(found))), t[:200]))
        print("%s: %d texts read, %d name tensors by tape position" % (path, len(texts), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
