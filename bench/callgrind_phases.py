"""Where a scalar op's instructions go: runs bench_scalar under callgrind
with R1 and R2 timed runs, subtracts (so that start-up, warm-up runs and the
central differences cancel), divides by the runs and the ops per run, and
sums each source line's own instructions (inlined code counted where its
source is) into the phases of an op's life, by the function the line
belongs to.  Instruction counts do not depend on the machine's load.

    /usr/bin/python3 bench/callgrind_phases.py BUILD_DIR [--steps N] [--by-function]

With ADOL-C's benchmark built (BUILD_DIR/bench/adolc_projectile), also
prints its instructions per gradient, counted the same way.
"""
import argparse
import collections
import os
import re
import subprocess
import tempfile

# Which phase a function's own instructions belong to.  Functions not named
# here count as "other" (listed with --by-function).
PHASES = [
    ("argument checks", r"^(nb_check|nb_check_slow|checked_size|binary_same_shape|nb_broadcast_shape|"
                        r"nb_check_inputs|nb_check_same_dtype)$"),
    ("tensor header", r"^(nb_tensor_alloc|nb_result|nb_result_like|nb_header_bytes|data_offset|nb_scalar_result)$"),
    ("arena allocation", r"^(nb_headers_alloc|nb_headers_alloc_slow|nb_has_grad_slot|nb_header_alloc|nb_arena_alloc|"
                         r"nb_chunk_bump|nb_arena_alloc_slow|nb_tape_alloc|nb_grad_alloc|nb_grad_block)$"),
    ("tape entry", r"^(nb_record|nb_emit|nb_emit_like|nb_clock_for_recording|nb_tape_grow|nb_record_many)$"),
    ("op entry point", r"^(binary|unary|unary_scalar|nb_\w+_)$"),
    ("forward kernel", r"^(nb_run|nb_parallel|nb_parallel_for|\w+_forward|\w+_forward_range|"
                       r"UNARY_OP\w*|BINARY_FORWARD|scalar_forward\w*)$"),
    ("backward dispatch", r"^(nb_backward_pass|nb_backward_|nb_grad_live|nb_entry_unchanged)$"),
    ("gradient accumulation", r"^(nb_grad_target|nb_grad_share|nb_grad_target_zeroed|\w+_backward|"
                              r"\w+_backward_range|BINARY_BACKWARD|same_shapes|make_plan|scalar_backward\w*)$"),
    ("the user's code", r"^(projectile|main)$"),
    ("libm", r"^(__sin_fma|__cos_fma|sin|cos|sqrt|__sqrt\w*)$"),
]

FUNC_RE = re.compile(r"^(?:static\s+)?(?:inline\s+)?(?:NB_VECTOR_CLONES\s+)?[A-Za-z_][\w\s\*]*?\b(\w+)\s*\(")
MACRO_USE_RE = re.compile(r"^([A-Z][A-Z_]+)\(\s*(\w+)")


def functions_of(path, cache={}):
    """Maps each line of a source file to the function (or the macro use
    that defines functions) it is in."""
    if path in cache:
        return cache[path]
    names = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        cache[path] = names
        return names
    current = None
    for no, text in enumerate(lines, 1):
        m = MACRO_USE_RE.match(text)
        if m and not text.startswith("#"):
            current = m.group(1)
        else:
            m = FUNC_RE.match(text)
            if m and not text.rstrip().endswith(";") and not text.startswith(("#", " ", "\t", "}", "/")):
                current = m.group(1)
        names[no] = current
    cache[path] = names
    return names


def self_costs(path):
    """Own instructions per (source file, line, compiled function), from an uncompressed
    callgrind file (--compress-strings=no --compress-pos=no)."""
    costs = collections.Counter()
    fl = fi = fn = None
    skip_next = False
    with open(path) as f:
        for line in f:
            if line.startswith("fl="):
                fl = fi = line[3:].strip()
            elif line.startswith(("fi=", "fe=")):
                fi = line[3:].strip()
            elif line.startswith("fn="):
                fi = fl
                fn = line[3:].strip()
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit():
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    costs[(fi, int(parts[0]), fn)] += int(parts[1])
    return costs


def run(build, reps, steps, out, program="bench_scalar"):
    cmd = ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no",
           f"--callgrind-out-file={out}", os.path.join(build, "bench", program), "--reps", str(reps),
           "--steps", str(steps)]
    subprocess.run(cmd, check=True, capture_output=True)
    return self_costs(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--by-function", action="store_true")
    args = parser.parse_args()
    r1, r2 = 1, 5
    with tempfile.TemporaryDirectory() as tmp:
        a = run(args.build, r1, args.steps, os.path.join(tmp, "a"))
        b = run(args.build, r2, args.steps, os.path.join(tmp, "b"))
    ops = 16 * args.steps + 5
    per_op = collections.Counter()
    for key in set(a) | set(b):
        d = b[key] - a[key]
        if d:
            src, line, compiled = key
            fn = functions_of(src).get(line) or "?"
            if fn.isupper():  # a macro that defines functions: the compiled function's name
                fn = compiled.split(".")[0].split("'")[0]
            per_op[(os.path.relpath(src) if src.startswith("/") else src, fn)] += d / (r2 - r1) / ops
    phases = collections.Counter()
    for (src, fn), n in per_op.items():
        phase = next((p for p, rx in PHASES if re.match(rx, fn)), "other")
        phases[phase] += n
    total = sum(phases.values())
    print(f"Instructions per op of the projectile ({ops} 0-d ops a gradient, record + backward), "
          f"callgrind, {r2 - r1} runs' difference")
    for phase, _ in PHASES + [("other", "")]:
        if phases[phase]:
            print(f"  {phase:<24} {phases[phase]:7.1f}  {100 * phases[phase] / total:5.1f}%")
    print(f"  {'total':<24} {total:7.1f}   ({total * ops / 1e6:.1f} M a gradient)")
    if os.path.exists(os.path.join(args.build, "bench", "adolc_projectile")):
        with tempfile.TemporaryDirectory() as tmp:
            a = run(args.build, r1, args.steps, os.path.join(tmp, "a"), "adolc_projectile")
            b = run(args.build, r2, args.steps, os.path.join(tmp, "b"), "adolc_projectile")
        adolc = (sum(b.values()) - sum(a.values())) / (r2 - r1)
        print(f"ADOL-C, retaping: {adolc / 1e6:.1f} M instructions a gradient, {adolc / ops:.1f} per nabla op")
    if args.by_function:
        print("\nBy function (own instructions per op, inlined code where its source is):")
        for (src, fn), n in per_op.most_common():
            if abs(n) < 0.05:
                break
            phase = next((p for p, rx in PHASES if re.match(rx, fn)), "other")
            print(f"  {n:7.2f}  {fn:<28} {src:<40} {phase}")


if __name__ == "__main__":
    main()
