#!/usr/bin/python3
"""Reads what tests/test_escape.c wrote with the tools that read it for real,
and checks that every hostile string shows literally and injects nothing.

    escape_check.py DIR N BIG_LOSS BIG_TITLE

DIR holds strings.bin (the N strings, each followed by a NUL) and, for each
string i, oneNN.{dot,svg,html} and oneNN.frames/ of a graph where every name,
the loss's, the title, the scope, the axis symbol, the op's name, formula and
description are string i; big.{dot,svg,html}, a graph of every string (loss
and title the strings BIG_LOSS and BIG_TITLE); names.safetensors and
history.csv.  The text a string must show as is computed here, from the rules
of src/escape.h: UTF-8 decoded as browsers do (each maximal invalid part
becomes U+FFFD), U+FFFE and U+FFFF shown as U+FFFD, control characters as
their pictures (U+2400 + c, U+2421), a newline kept only in a title.  Prints
one line per problem; exits 1 if there is any.
"""
import csv
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

NAME_MAX = 32  # NB_NAME_MAX: a name holds 31 bytes
problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def cut(b, limit=NAME_MAX - 1):
    """A name as nabla keeps it: at most `limit` bytes, cut before a character."""
    if len(b) <= limit:
        return b
    n = limit
    while n > 0 and (b[n] & 0xC0) == 0x80:
        n -= 1
    return b[:n]


def shown(b, newlines=False):
    out = []
    for ch in b.decode("utf-8", "replace"):
        o = ord(ch)
        if ch == "\n" and newlines:
            out.append(ch)
        elif o < 0x20:
            out.append(chr(0x2400 + o))
        elif o == 0x7F:
            out.append("\u2421")
        elif o in (0xFFFE, 0xFFFF):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def substituted(formula):
    """Does the picture replace letters of this formula by names?"""
    return re.search(r"(?<![A-Za-z_])[abxy](?![A-Za-z_0-9])", formula) is not None


# ---------------------------------------------------------------- dot

def check_dot(files):
    """dot reads every file, with no error and no warning."""
    r = subprocess.run(["dot", "-Tsvg", "-o", os.devnull] + files, capture_output=True, text=True,
                       errors="replace")
    if r.returncode != 0 or r.stderr.strip():
        problem("dot", f"exit {r.returncode}: {r.stderr.strip()[:400]}")


# ---------------------------------------------------------------- SVG, HTML: shapes and texts

SVG_TAGS = {"svg", "g", "title", "text", "polygon", "polyline", "path", "ellipse"}
PAGE_TAGS = SVG_TAGS | {"html", "head", "meta", "style", "body", "header", "h1", "h2", "div", "button",
                        "input", "span", "p", "main", "aside", "b", "kbd", "pre", "script"}
ATTRIBUTES = {"charset", "class", "content", "cx", "cy", "d", "fill", "font-family", "font-size",
              "font-weight", "height", "id", "lang", "min", "name", "points", "rx", "ry", "stroke",
              "stroke-dasharray", "stroke-width", "style", "text-anchor", "title", "transform", "type",
              "value", "width", "x", "y", "xmlns", "xmlns:xlink", "viewbox", "hidden", "max",
              "data-frame", "data-selftest"}


def check_markup(where, tags, allowed_tags, expected_counts):
    """tags: (tag, [(attribute, value)]) of every element."""
    for tag, attrs in tags:
        if tag not in allowed_tags:
            problem(where, f"an element <{tag}> was injected")
        for a, v in attrs:
            if a not in ATTRIBUTES:
                problem(where, f"an attribute {a}={v!r} was injected on <{tag}>")
            if v and "javascript:" in v.lower():
                problem(where, f"a javascript: link in {a} of <{tag}>")
    for tag, n in expected_counts.items():
        got = sum(1 for t, _ in tags if t == tag)
        if got != n:
            problem(where, f"{got} <{tag}> elements, expected {n}")


def svg_texts(root):
    # Graphviz writes a second space of two as &#160;
    return [("".join(t.itertext())).replace("\u00a0", " ") for t in root.iter("{http://www.w3.org/2000/svg}text")]


def expect_lines(where, lines, expected):
    have = set(lines)
    for what, text in expected:
        if text not in have:
            problem(where, f"{what} {text!r} is not shown as one line (lines: {sorted(have)[:6]}...)")


def check_svg(path, expected):
    where = os.path.basename(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        problem(where, f"not read as XML: {e}")
        return
    tags = [(el.tag.split("}")[-1], [(re.sub(r"^\{.*\}", "", a).lower(), v) for a, v in el.attrib.items()])
            for el in root.iter()]
    check_markup(where, tags, SVG_TAGS, {"svg": 1})
    expect_lines(where, svg_texts(root), expected)


class Page(html.parser.HTMLParser):
    """Elements, the text of some of them, the raw JSON block and the inline SVG's texts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.stack, self.text, self.svg_lines, self.json = [], [], {}, [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        if tag not in ("meta", "input"):
            self.stack.append((tag, dict(attrs).get("id")))
        if tag == "text":
            self.svg_lines.append("")

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for tag, ident in self.stack:
            for key in (tag, ident):
                if key in ("title", "h1", "aside", "caption", "selftest"):
                    self.text[key] = self.text.get(key, "") + data
        if self.stack and self.stack[-1][0] == "text":
            self.svg_lines[-1] += data.replace("\u00a0", " ")
        if self.stack and self.stack[-1] == ("script", "frames"):
            self.json = (self.json or "") + data


def read_page(path, where):
    with open(path, encoding="utf-8") as f:  # strict: the page must be UTF-8
        raw = f.read()
    p = Page()
    p.feed(raw)
    p.close()
    return raw, p


def check_page(path, title, loss, lines, rendered=False):
    where = os.path.basename(path) + (" in Chromium" if rendered else "")
    try:
        raw, p = read_page(path, where)
    except (UnicodeDecodeError, OSError) as e:
        problem(where, f"not read as UTF-8 text: {e}")
        return
    check_markup(where, p.tags, PAGE_TAGS, {"svg": 1, "script": 2})
    svg_title = [t for t, _ in p.tags if t == "title"]
    if not svg_title:
        problem(where, "no <title>")
    # <title> is the page's; the SVG's titles (t0, op1, ...) follow it
    page_title = raw.split("<title>", 1)[1].split("</title>", 1)[0] if "<title>" in raw else ""
    if html.unescape(page_title) != title:
        problem(where, f"<title> shows {html.unescape(page_title)!r}, expected {title!r}")
    if p.text.get("h1") != title:
        problem(where, f"<h1> shows {p.text.get('h1')!r}, expected {title!r}")
    if f"∂{loss}/∂input" not in p.text.get("aside", ""):
        problem(where, f"the side panel does not show ∂{loss}/∂input")
    expect_lines(where, p.svg_lines, lines)
    if rendered:
        report = p.text.get("selftest", "")
        if not report.startswith("frames "):
            problem(where, f"the page's script did not run (self-test report: {report!r})")
        return
    if p.json is None:
        problem(where, "no frames JSON")
        return
    if "<" in p.json:
        problem(where, "a '<' inside the script element")
    try:
        data = json.loads(p.json)
    except ValueError as e:
        problem(where, f"the frames JSON does not parse: {e}")
        return
    firsts = {label.split("\n")[0] for fr in data["frames"] for label in fr["labels"]}
    expect_lines(where + " JSON", firsts, [(w, t) for w, t in lines if w.startswith("name")])


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def rendered_page(browser, path, out):
    """The page's DOM after its script ran (#selftest steps through every frame)."""
    try:
        r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--window-size=1024,768", f"--user-data-dir={out}.profile", "--virtual-time-budget=10000",
                            "--dump-dom", f"file://{path}#selftest"], capture_output=True, timeout=30)
        dom = r.stdout
    except subprocess.TimeoutExpired:
        problem(os.path.basename(path), "Chromium did not finish in 30 s (did a script of a string open a dialog?)")
        dom = b""
    with open(out, "wb") as f:
        f.write(dom)
    return out


# ---------------------------------------------------------------- data files

def check_safetensors(path, names):
    where = os.path.basename(path)
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except ValueError as e:
        problem(where, f"the header is not JSON: {e}")
        return
    got = sorted(k for k in header if k != "__metadata__")
    want = sorted(names)
    if got != want:
        problem(where, f"names {got!r}, expected {want!r}")
    if header.get("__metadata__") != {"format": "pt"}:
        problem(where, f"metadata {header.get('__metadata__')!r}")


def check_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, strict=True))
    if rows[0] != ["epoch", "loss", "accuracy", "test_accuracy", "seconds"] or len(rows) != 3 or \
            any(len(r) != 5 for r in rows) or [float(r[1]) for r in rows[1:]] != [0.5, -0.5]:
        problem("history.csv", f"read back as {rows!r}")


# ---------------------------------------------------------------- the graphs

def expected_lines(s, title, loss, op, formula, still):
    """The lines a picture of graph `s` must show: s as it shows in a label.
    A still picture also has the title and the legend (the page has them
    beside the drawing)."""
    lines = [("name", s), ("scope", s), ("op", op), ("description", formula[0])]
    if not substituted(formula[1]):
        lines.append(("formula", f"∂{s}/∂{s} = {formula[1]}"))
    if still:
        lines += [("title line", t) for t in title.split("\n")]
        lines.append(("legend", f"∂{loss}/∂input = the contribution itself"))
    return lines


def main():
    d, n, big_loss, big_title = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with open(os.path.join(d, "strings.bin"), "rb") as f:
        strings = f.read().split(b"\0")[:-1]
    if len(strings) != n:
        problem("strings.bin", f"{len(strings)} strings, expected {n}")
    names = [shown(cut(b)) for b in strings]
    dots = []
    for i, b in enumerate(strings):
        stem = os.path.join(d, f"one{i:02d}")
        s, title = names[i], shown(b, newlines=True)
        # the op's name and formula are not cut; its description is what
        # describe() wrote with snprintf into 128 bytes
        op, formula, describe = shown(b), shown(b), shown(b[:127])
        shape = ("axis symbol", f"({shown(b)},)")
        still = expected_lines(s, title, s, op, (describe, formula), True) + [shape]
        moving = expected_lines(s, title, s, op, (describe, formula), False) + [shape]
        dots.append(stem + ".dot")
        frames = stem + ".frames"
        dots += [os.path.join(frames, f) for f in sorted(os.listdir(frames))] if os.path.isdir(frames) else []
        check_svg(stem + ".svg", still)
        check_page(stem + ".html", shown(b, newlines=True), s, moving)
    dots.append(os.path.join(d, "big.dot"))
    check_dot(dots)
    every = [("name", s) for s in names] + [("op", shown(b)) for b in strings]
    big_title_text = shown(strings[big_title], newlines=True)
    legend = ("legend", f"∂{names[big_loss]}/∂input = the contribution itself")
    check_svg(os.path.join(d, "big.svg"), every + [legend])
    check_page(os.path.join(d, "big.html"), big_title_text, names[big_loss], every)
    browser = chromium()
    if browser:
        # the big page, and the pages whose every string is the loss's, the
        # title's, or one that opens a comment in a script element
        script = strings.index(b"<!--<script>")
        for page in ["big"] + [f"one{i:02d}" for i in (big_loss, big_title, script)]:
            dom = rendered_page(browser, os.path.join(d, page + ".html"), os.path.join(d, page + ".dom.html"))
            i = big_title if page == "big" else int(page[3:])
            loss = big_loss if page == "big" else i
            lines = every if page == "big" else [("name", names[i])]
            check_page(dom, shown(strings[i], newlines=True), names[loss], lines, rendered=True)
        print("escape_check: Chromium ran the pages' scripts")
    else:
        print("escape_check: Chromium skipped (apt-get install chromium)")
    utf8 = []  # the names a parameter can have (31 bytes at most) that are UTF-8
    for b in strings:
        try:
            if len(b) < NAME_MAX:
                utf8.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    check_safetensors(os.path.join(d, "names.safetensors"), utf8)
    check_csv(os.path.join(d, "history.csv"))
    for p in problems:
        print("escape_check:", p)
    print(f"escape_check: {n} strings, {len(dots)} dot files, {2 * n + 2} SVG drawings and pages: "
          f"{len(problems)} problems")
    sys.exit(1 if problems else 0)


main()
