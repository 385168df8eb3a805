"""make bench: runs nabla's benchmarks beside their references and prints
tables of ratios measured in the same run.

  1. The MLP training step against the same step's bare CBLAS calls (the
     floor) and against PyTorch (bench/torch_mlp.py), on 1 thread and, at
     batch 256, on 2.  nabla and PyTorch are run alternately, ROUNDS times,
     and each figure is the median over the rounds.
  2. The tape's cost per tiny op (bench_tape), and scalar code: a
     projectile with drag (bench_scalar) beside ADOL-C retaping the same
     function (bench/adolc_projectile.cpp, when libadolc-dev is installed),
     and both replaying a tape recorded once (--replay); then training
     steps recorded once and replayed beside recorded anew (bench_replay:
     a tiny MLP, the 784-128-10 MLP and the CNN at small batches); then
     recomputation (nb_recompute, bench_recompute): the projectile in
     segments of sqrt(n) steps and a deep MLP in segments of layers against
     keeping everything, in time, tape memory and peak RSS.
  3. Second derivatives: a Hessian-vector product against one gradient of
     the same MLP loss (bench_hvp), beside PyTorch's (bench/torch_hvp.py).
  4. The optimizers: the 784-128-10 step at batch 64 with each optimizer,
     and its update alone, beside PyTorch's, and the update's floor (the
     bytes it must read and write at the memory speed of a copy).
  5. The CNN of examples/cnn.c (KANN's Fashion-MNIST network) at batch 64
     on 1 and 2 threads: nabla's step, its unfolding and products alone
     (bench_cnn), and PyTorch's step (bench/torch_cnn.py).
     Then Winograd (src/ops/winograd.c): the 3x3 convolutions of the CNN
     lesson and of ResNet-style blocks alone, by the general path
     (unfolding and CBLAS), F(2x2, 3x3), F(4x4, 3x3) and the dispatch rule
     (bench_cnn --winograd, thread CPU time, alternated), and the lesson's
     step on 1 thread with and without Winograd (thread CPU time,
     alternated rounds).
  6. The LSTM of examples/charlm.c at batch 32, 16 steps, 128 units, on 1
     and 2 threads: nabla's step (charlm --bench) beside PyTorch's nn.LSTM
     and its loop of nn.LSTMCell steps (bench/torch_lstm.py).
  7. The element-wise kernels of a transformer (softmax, log-softmax, both
     GELUs, where and masked fill, dropout, layer norm, the embedding's
     gather and scatter-add), forward and backward at (2048, 512) and
     (16*128, 128), float32, 1 thread: time, bytes moved per second and
     the ratio to a memcpy of the same bytes (bench_elementwise, which
     alternates each kernel with its memcpy and takes minima); then a
     custom op (SiLU) written plainly and with include/nabla_kernel.h
     against the two built-in ops it replaces (bench_custom_op).
  8. Data-parallel training over MPI, when nabla was built with OpenMPI: the
     MLP step at batch 256 on 1 and 2 processes of one thread each
     (mpirun ... mlp --bench --distributed), with the time spent waiting
     for the gradients' all-reduce.
  8. The GPT of examples/gpt.c: one training step (forward, backward,
     clipping, AdamW) at three sizes, nabla with the fused attention op,
     nabla with attention composed of ops, and PyTorch (bench/torch_gpt.py),
     alternated, on 1 and 2 threads, after checking that the three give the
     same first loss from the same weights and batch; then causal attention
     alone, forward and backward, with its peak memory (bench_gpt).

    /usr/bin/python3 bench/run.py BUILD_DIR [--rounds N] [--quick] [--only gpt|scalar|recompute|cnn]

Needs only the standard library; the PyTorch columns appear when
`import torch` works in /usr/bin/python3 (Debian's python3-torch), and say
"skipped" otherwise.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = "/usr/bin/python3"


def run_csv(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [line.split(",") for line in out.strip().splitlines() if line]


def torch_available():
    try:
        return subprocess.run([TORCH_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0
    except OSError:
        return False


def one_thread_env(threads):
    # One threading model for the reference too: BLAS and OpenMP pinned to the
    # same count, and OpenMP threads sleeping rather than spinning beside
    # BLAS's own (on 2 cores spinning made PyTorch several times slower).
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    return env


def mlp_table(build, threads, rounds, quick, with_torch):
    nabla, bare, torch, allocs, gflops = {}, {}, {}, {}, {}
    extra = ["--quick"] if quick else []
    for _ in range(rounds):
        # One process per side: with several threads, OpenBLAS's pool (the
        # floor's) would still be spinning while nabla's own threads run.
        cmd = [os.path.join(build, "bench", "bench_mlp"), "--csv", "--reps", "1",
               "--threads", str(threads)] + extra
        for row in run_csv(cmd + ["--side", "b"]):
            key = tuple(row[:3])
            bare.setdefault(key, []).append(float(row[4]))
            gflops.setdefault(key, []).append(float(row[5]))
        for row in run_csv(cmd + ["--side", "n"]):
            key = tuple(row[:3])
            nabla.setdefault(key, []).append(float(row[3]))
            allocs[key] = max(allocs.get(key, 0), int(row[6]))
        if with_torch:
            for row in run_csv([TORCH_PYTHON, os.path.join(HERE, "torch_mlp.py"), "--reps", "1",
                                "--threads", str(threads)] + extra, env=one_thread_env(threads)):
                torch.setdefault(tuple(row[:3]), []).append(float(row[3]))
    med = {k: statistics.median(v) for k, v in nabla.items()}
    return med, {k: statistics.median(v) for k, v in bare.items()}, \
        {k: statistics.median(v) for k, v in torch.items()}, allocs, \
        {k: statistics.median(v) for k, v in gflops.items()}


def print_mlp(title, med, bare, torch, allocs, gflops):
    print(title)
    print(f"{'network':<15} {'act':<7} {'batch':>5} | {'nabla ms':>8} {'ex/s':>8} | {'BLAS ms':>8} "
          f"{'GFLOP/s':>7} {'nabla/BLAS':>10} | {'PyTorch ms':>10} {'ex/s':>8} {'nabla speed-up':>14} | allocs/step")
    for key in med:
        net, act, batch = key
        b = int(batch)
        row = (f"{net:<15} {act:<7} {b:>5} | {med[key]:>8.3f} {1e3 * b / med[key]:>8.0f} | "
               f"{bare[key]:>8.3f} {gflops[key]:>7.1f} {med[key] / bare[key]:>9.2f}x | ")
        if key in torch:
            row += f"{torch[key]:>10.3f} {1e3 * b / torch[key]:>8.0f} {torch[key] / med[key]:>13.2f}x | "
        else:
            row += f"{'skipped':>10} {'':>8} {'':>14} | "
        print(row + f"{allocs[key]}")
    print()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["gpt", "scalar", "replay", "recompute", "cnn"], help="run only these tables")
    args = parser.parse_args()
    with_torch = torch_available()
    if not with_torch:
        print("PyTorch reference skipped: `/usr/bin/python3 -c 'import torch'` fails "
              "(apt-get install python3-torch to include it)\n")
    if args.only in ("scalar", "replay"):
        scalar_table(args.build, 3 if args.quick else args.rounds, args.quick)
        print()
        replay_table(args.build, args.quick)
        return
    if args.only == "recompute":
        recompute_table(args.build, 1 if args.quick else args.rounds, args.quick)
        return
    if args.only == "cnn":
        cnn_table(args.build, 3 if args.quick else args.rounds, args.quick, with_torch)
        winograd_table(args.build, 3 if args.quick else args.rounds, args.quick)
        return
    if args.only == "gpt":
        gpt_tables(args.build, 3 if args.quick else args.rounds, args.quick, with_torch)
        return
    one = mlp_table(args.build, 1, args.rounds, args.quick, with_torch)
    print_mlp(f"MLP training step, float32, 1 thread, median of {args.rounds} alternating rounds", *one)
    two = mlp_table(args.build, 2, args.rounds, args.quick, with_torch)
    print_mlp(f"The same at batch 256 on 2 threads", *two)
    # The products bound the scaling: show how far OpenBLAS itself gets on the
    # same machine in the same run.
    print("Scaling from 1 to 2 threads at batch 256: nabla, and the bare BLAS calls beside it")
    for key in two[0]:
        print(f"  {key[0]:<15} {key[1]:<7} nabla {one[0][key] / two[0][key]:.2f}x faster, "
              f"BLAS floor {one[1][key] / two[1][key]:.2f}x")
    print()
    sys.stdout.flush()
    subprocess.run([os.path.join(args.build, "bench", "bench_tape"), "--reps", "3" if args.quick else "7"],
                   check=True)
    print()
    scalar_table(args.build, 3 if args.quick else args.rounds, args.quick)
    print()
    replay_table(args.build, args.quick)
    print()
    recompute_table(args.build, 1 if args.quick else args.rounds, args.quick)
    print()
    hvp_table(args.build, 7 if args.quick else 30, with_torch)
    print()
    optimizer_table(args.build, 3 if args.quick else args.rounds, args.quick, with_torch)
    print()
    cnn_table(args.build, 3 if args.quick else args.rounds, args.quick, with_torch)
    print()
    winograd_table(args.build, 3 if args.quick else args.rounds, args.quick)
    print()
    lstm_table(args.build, 3 if args.quick else args.rounds, args.quick, with_torch)
    print()
    sys.stdout.flush()
    subprocess.run([os.path.join(args.build, "bench", "bench_elementwise"), "--reps", "10" if args.quick else "30"],
                   check=True)
    print()
    for extra in ([], ["--f64"], ["--n", "8192"]):
        subprocess.run([os.path.join(args.build, "bench", "bench_custom_op"), "--reps", "10" if args.quick else "30"]
                       + extra, check=True, env=one_thread_env(1))
    print()
    mpi_table(args.build, 3 if args.quick else args.rounds)
    print()
    gpt_tables(args.build, 3 if args.quick else args.rounds, args.quick, with_torch)


def scalar_table(build, rounds, quick):
    """The projectile of bench/projectile.h in nabla (bench_scalar) and
    ADOL-C (adolc_projectile), retaped for every gradient, then recorded
    once and replayed (--replay: nabla's captured graph, ADOL-C's gradient()
    on its tape), the four alternated; CPU time of the thread (OpenBLAS's
    idle threads, spinning after it loads, are not counted; they are not
    started either: one thread), median over the rounds of each run's
    median."""
    reps = "5" if quick else "11"
    adolc_bin = os.path.join(build, "bench", "adolc_projectile")
    have_adolc = os.path.exists(adolc_bin)
    runs = [("nabla", [os.path.join(build, "bench", "bench_scalar")]),
            ("nabla replay", [os.path.join(build, "bench", "bench_scalar"), "--replay"])]
    hpp_bin = os.path.join(build, "bench", "bench_scalar_hpp")
    if os.path.exists(hpp_bin):  # the same function through include/nabla.hpp's operators
        runs.append(("C++ hpp", [hpp_bin]))
    if have_adolc:
        runs += [("ADOL-C", [adolc_bin]), ("ADOL-C replay", [adolc_bin, "--replay"])]
    ms, grads, ops = {name: [] for name, _ in runs}, {}, 0
    for _ in range(rounds):
        for name, cmd in runs:
            row = run_csv(cmd + ["--csv", "--reps", reps], env=one_thread_env(1))[0]
            ms[name].append(float(row[1]))
            grads[name] = (row[-2], row[-1])
            if name == "nabla":
                ops = int(row[3])
    med = {name: statistics.median(v) for name, v in ms.items()}
    print(f"Scalar code: the projectile with drag, 10,000 Euler steps, {ops} ops of 0-d float64 tensors, "
          f"retaped for every gradient, and recorded once then replayed (thread CPU time, median of {rounds} "
          f"alternating rounds), {cpu_name()}")
    print(f"{'':<14} {'ms/gradient':>11} {'ns/op':>7} | df/dtheta, df/dspeed")
    for name, _ in runs:
        same = "" if name == "nabla" else (" (the same digits)" if grads[name] == grads["nabla"] else " (DIFFERENT)")
        ratio = f" ({med[name] / med['nabla']:.2f}x the C API's time)" if name == "C++ hpp" else ""
        print(f"{name:<14} {med[name]:>11.3f} {med[name] * 1e6 / ops:>7.1f} | {grads[name][0]}, {grads[name][1]}"
              f"{same}{ratio}")
    if not have_adolc:
        print("ADOL-C   skipped: libadolc-dev is not installed (apt-get install libadolc-dev, then make bench)")
        return
    print(f"retaped: nabla/ADOL-C {med['nabla'] / med['ADOL-C']:.2f}x; replayed: nabla/ADOL-C "
          f"{med['nabla replay'] / med['ADOL-C replay']:.2f}x (ns/op for all: the time over nabla's op count)")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU unknown"


def replay_table(build, quick):
    """Training steps recorded once and replayed (nb_graph_capture) beside
    the same steps recorded anew, alternated inside bench_replay, thread
    CPU time, medians; the two copies of each network must end bitwise
    equal."""
    print(f"On {cpu_name()}:")
    sys.stdout.flush()
    cmd = [os.path.join(build, "bench", "bench_replay")] + (["--quick", "--reps", "3"] if quick else ["--reps", "7"])
    subprocess.run(cmd, check=True, env=one_thread_env(1))


def recompute_table(build, rounds, quick):
    """nb_recompute against keeping every intermediate: each configuration
    in a process of its own (its peak RSS is its own), the modes of a row
    alternated, ROUNDS times; thread CPU time per gradient (median of the
    runs' medians), nb_tape_memory (the tape never shrinks: its peak) and
    the peak RSS (the largest over the rounds)."""
    exe = os.path.join(build, "bench", "bench_recompute")
    reps = "3" if quick else "5"
    n = 10000 if quick else 100000
    big = 100000 if quick else 1000000
    rows = [  # (label, arguments, the row it is compared with)
        (f"projectile {n:,} steps, everything kept", ["--what", "projectile", "--steps", str(n)], None),
        (f"  in segments of {int(n ** 0.5)} steps", ["--what", "projectile", "--steps", str(n), "--per",
                                                    str(int(n ** 0.5))], 0),
        (f"projectile {big:,} steps, in segments of {int(big ** 0.5)}",
         ["--what", "projectile", "--steps", str(big), "--per", str(int(big ** 0.5))], None),
        ("MLP 32x512, batch 256, everything kept", ["--what", "mlp"], None),
        ("  in segments of 4 layers", ["--what", "mlp", "--per", "4"], 3),
        ("  in segments of 8 layers", ["--what", "mlp", "--per", "8"], 3),
        ("  in segments of 16 layers", ["--what", "mlp", "--per", "16"], 3),
        ("  in 16s made of checkpoints of 4 (nested)", ["--what", "mlp", "--per", "16", "--inner", "4"], 3),
    ]
    results = [{"ms": [], "tape": 0, "rss": 0, "grads": None} for _ in rows]
    for _ in range(rounds):
        for i, (_, args, _) in enumerate(rows):
            row = run_csv([exe, "--csv", "--reps", reps] + args, env=one_thread_env(1))[0]
            r = results[i]
            r["ms"].append(float(row[3]))
            r["tape"] = max(r["tape"], int(row[4]))
            r["rss"] = max(r["rss"], int(row[5]))
            r["entries"] = int(row[6])
            r["grads"] = (row[7], row[8])
    print(f"Recomputation (nb_recompute) against keeping everything: 1 thread, thread CPU time per gradient "
          f"(median of {rounds} alternating rounds), tape memory (nb_tape_memory, its peak) and peak RSS")
    print(f"{'':<44} {'ms':>9} {'time':>6} | {'tape MB':>8} {'RSS MB':>7} {'memory':>7} | {'entries':>9} | gradients")
    for i, (label, _, ref) in enumerate(rows):
        r = results[i]
        ms = statistics.median(r["ms"])
        if ref is None:
            cost, saved, same = "", "", ""
        else:
            base = results[ref]
            cost = f"{ms / statistics.median(base['ms']):.2f}x"
            saved = f"{r['tape'] / base['tape']:.3f}x"
            same = " (the same bits)" if r["grads"] == base["grads"] else " (DIFFERENT)"
        print(f"{label:<44} {ms:>9.2f} {cost:>6} | {r['tape'] / 1e6:>8.1f} {r['rss'] / 1e3:>7.1f} {saved:>7} | "
              f"{r['entries']:>9,} | {r['grads'][0]}, {r['grads'][1]}{same}")
    kept = results[0]["tape"] / n
    print(f"(the projectile's {big:,} steps kept whole would take about {kept * big / 1e9:.1f} GB of tape: "
          f"{kept:.0f} bytes a step; in segments its tape grows as sqrt(n))")


def mpi_table(build, rounds):
    import shutil
    if not shutil.which("mpirun") or not os.path.exists(os.path.join(build, "libnabla_mpi.a")):
        print("Data-parallel table skipped: nabla was built without OpenMPI "
              "(apt-get install libopenmpi-dev openmpi-bin, then make)")
        return
    base = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    print(f"Data-parallel MLP step over MPI, float32, Adam, batch 256 in all, 1 thread per process, median of {rounds}")
    print(f"{'network':<15} | {'1 process ms':>12} | {'2 processes ms':>14} {'waiting ms':>10} {'speed-up':>8}")
    for hidden in ("128", "256,256"):
        times = {1: [], 2: []}
        wait = []
        for _ in range(rounds):
            for np_ in (1, 2):
                out = subprocess.run(base + ["-np", str(np_), os.path.join(build, "examples", "mlp"), "--bench",
                                             "--distributed", "--hidden", hidden, "--batch", "256", "--threads", "1"],
                                     check=True, capture_output=True, text=True).stdout
                line = [l for l in out.splitlines() if "ms per step" in l][0]
                times[np_].append(float(line.split(" ms per step")[0]))
                if np_ == 2:
                    wait.append(float(line.split(", ")[-1].split(" ms")[0]))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        net = "784-" + hidden.replace(",", "-") + "-10"
        print(f"{net:<15} | {one:>12.3f} | {two:>14.3f} {statistics.median(wait):>10.3f} {one / two:>7.2f}x")


def cnn_table(build, rounds, quick, with_torch):
    extra = ["--quick"] if quick else []
    print(f"CNN training step (examples/cnn.c's network, SGD), float32, batch 64, median of {rounds} rounds")
    print(f"{'threads':>7} | {'nabla ms':>8} {'ex/s':>6} | {'products ms':>11} {'nabla/products':>14} | "
          f"{'PyTorch ms':>10} {'nabla speed-up':>14} | allocs/step")
    for threads in (1, 2):
        ours, floor, theirs, allocs = [], [], [], 0
        for _ in range(rounds):
            for side in ("n", "b"):
                row = run_csv([os.path.join(build, "bench", "bench_cnn"), "--csv", "--reps", "3", "--side", side,
                               "--threads", str(threads)] + extra)[0]
                (ours if side == "n" else floor).append(float(row[2] if side == "n" else row[3]))
                if side == "n":
                    allocs = max(allocs, int(row[4]))
            if with_torch:
                theirs += [float(r[2]) for r in run_csv([TORCH_PYTHON, os.path.join(HERE, "torch_cnn.py"), "--reps",
                                                         "3", "--threads", str(threads)] + extra,
                                                        env=one_thread_env(threads))]
        n, b = statistics.median(ours), statistics.median(floor)
        row = f"{threads:>7} | {n:>8.3f} {64e3 / n:>6.0f} | {b:>11.3f} {n / b:>13.2f}x | "
        if theirs:
            t = statistics.median(theirs)
            row += f"{t:>10.3f} {t / n:>13.2f}x | "
        else:
            row += f"{'skipped':>10} {'':>14} | "
        print(row + str(allocs))


def winograd_table(build, rounds, quick):
    bench = os.path.join(build, "bench", "bench_cnn")
    extra = ["--quick"] if quick else []
    rows = run_csv([bench, "--winograd", "--reps", str(rounds)] + extra)
    print(f"3x3 convolutions alone, float32, 1 thread, thread CPU ms, median of {rounds} alternated rounds: forward, "
          "dL/dx, and the rest of the backward (dL/dw, dL/dbias); "
          "'rule' is the dispatch rule's choice")
    paths = ["general", "F(2x2)", "F(4x4)", "rule"]
    head = f"{'batch x channels x plane':<38}"
    for p in paths:
        head += f" | {p + ' fwd':>12} {'dx':>6} {'rest':>6}"
    print(head + " | speed-up fwd, all | allocs")
    by_shape = {}
    for row in rows:
        by_shape.setdefault(row[0], {})[row[1]] = [float(v) for v in row[2:5]] + [int(row[5])]
    for shape, got in by_shape.items():
        line = f"{shape:<38}"
        for p in paths:
            f, dx, rest, _ = got[p]
            line += f" | {f:>12.3f} {dx:>6.3f} {rest:>6.3f}"
        g, r = got["general"], got["rule"]
        line += (f" | {g[0] / r[0]:>7.2f}x {(g[0] + g[2]) / (r[0] + r[2]):>7.2f}x | "
                 f"{max(v[3] for v in got.values())}")
        print(line)
    ours, general = [], []
    for _ in range(rounds):
        for flag, into in (([], ours), (["--general"], general)):
            row = run_csv([bench, "--csv", "--reps", "3", "--side", "n", "--threads", "1"] + flag + extra)[0]
            into.append(float(row[5]))
    n, g = statistics.median(ours), statistics.median(general)
    print(f"The CNN lesson's step, batch 64, 1 thread, thread CPU ms: {n:.3f} with Winograd, {g:.3f} without "
          f"({g / n:.2f}x)")


def lstm_table(build, rounds, quick, with_torch):
    print(f"LSTM training step (examples/charlm.c: embedding 32, 128 units, 16 steps, clipping, Adam), float32, "
          f"batch 32, median of {rounds} rounds")
    print(f"{'cell':<5} {'threads':>7} | {'nabla ms':>8} | {'nn.LSTM ms':>10} {'speed-up':>8} | "
          f"{'LSTMCell loop ms':>16} {'speed-up':>8} | allocs/step")
    for cell in ("lstm", "gru"):
        for threads in (1, 2):
            ours, fused, loop, allocs = [], [], [], 0
            for _ in range(rounds):
                out = subprocess.run([os.path.join(build, "examples", "charlm"), "--bench", "--cell", cell,
                                      "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
                ours.append(float(out.split(": ")[1].split(" ms")[0]))
                allocs = max(allocs, int(out.split(" ms per training step, ")[1].split(" ")[0]))
                if with_torch and cell == "lstm":
                    for flag, into in (([], fused), (["--cell"], loop)):
                        into += [float(r[4]) for r in run_csv([TORCH_PYTHON, os.path.join(HERE, "torch_lstm.py"),
                                                               "--reps", "3", "--threads", str(threads)] + flag +
                                                              (["--quick"] if quick else []),
                                                              env=one_thread_env(threads))]
            n = statistics.median(ours)
            row = f"{cell:<5} {threads:>7} | {n:>8.3f} | "
            if fused:
                f, lp = statistics.median(fused), statistics.median(loop)
                row += f"{f:>10.3f} {f / n:>7.2f}x | {lp:>16.3f} {lp / n:>7.2f}x | "
            else:
                row += f"{'-':>10} {'':>8} | {'-':>16} {'':>8} | "
            print(row + str(allocs))


# Bytes each optimizer's update reads and writes per float32 parameter:
# weight (read, write) and gradient (read), plus each state buffer (read, write).
UPDATE_BYTES = {"sgd": 12, "momentum": 20, "adam": 28, "adamw": 28, "rmsprop": 20}


def optimizer_table(build, rounds, quick, with_torch):
    params = 784 * 128 + 128 + 128 * 10 + 10
    extra = ["--quick"] if quick else []
    copy_gbs = float(run_csv([os.path.join(build, "bench", "bench_mlp"), "--copy-speed", str(params)])[0][0])
    print(f"Optimizers: the 784-128-10 relu step at batch 64, float32, 1 thread, median of {rounds} rounds; "
          f"'update' is opt.step() alone ({params} parameters); floor: its bytes at {copy_gbs:.1f} GB/s (memcpy)")
    print(f"{'optimizer':<9} | {'nabla step ms':>13} {'update ms':>9} {'floor ms':>8} {'update/floor':>12} | "
          f"{'PyTorch step':>12} {'update ms':>9} | {'step speed-up':>13} {'update speed-up':>15}")
    for kind in ["sgd", "momentum", "adam", "adamw", "rmsprop"]:
        ours, theirs = [], []
        for _ in range(rounds):
            ours += run_csv([os.path.join(build, "bench", "bench_mlp"), "--csv", "--reps", "3", "--side", "n",
                             "--only", "784-128-10", "--act", "relu", "--batch", "64", "--optimizer", kind] + extra)
            if with_torch:
                theirs += run_csv([TORCH_PYTHON, os.path.join(HERE, "torch_mlp.py"), "--reps", "3",
                                   "--only", "784-128-10", "--act", "relu", "--batch", "64",
                                   "--optimizer", kind] + extra, env=one_thread_env(1))
        step = statistics.median(float(r[3]) for r in ours)
        update = statistics.median(float(r[7]) for r in ours)
        floor = UPDATE_BYTES[kind] * params / (copy_gbs * 1e6)
        row = f"{kind:<9} | {step:>13.3f} {update:>9.3f} {floor:>8.3f} {update / floor:>11.2f}x | "
        if theirs:
            tstep = statistics.median(float(r[3]) for r in theirs)
            tupdate = statistics.median(float(r[4]) for r in theirs)
            row += f"{tstep:>12.3f} {tupdate:>9.3f} | {tstep / step:>12.2f}x {tupdate / update:>14.2f}x"
        else:
            row += f"{'skipped':>12} {'':>9} | {'':>13} {'':>15}"
        print(row)


def hvp_table(build, reps, with_torch):
    ours = run_csv([os.path.join(build, "bench", "bench_hvp"), "--csv", "--reps", str(reps)])
    theirs = {}
    if with_torch:
        for row in run_csv([TORCH_PYTHON, os.path.join(HERE, "torch_hvp.py"), "--reps", str(reps)],
                           env=one_thread_env(1)):
            theirs[row[0]] = row
    print(f"Hessian-vector product against one gradient, float32, batch 64, 1 thread, median of {reps}")
    print(f"{'network':<15} | {'gradient ms':>11} {'HVP ms':>8} {'HVP/grad':>8} | "
          f"{'PyTorch grad':>12} {'HVP ms':>8} {'HVP/grad':>8} | {'nabla HVP speed-up':>18} | allocs/HVP")
    for net, batch, g, h, ratio, allocs in ours:
        row = f"{net:<15} | {float(g):>11.3f} {float(h):>8.3f} {float(ratio):>7.2f}x | "
        if net in theirs:
            tg, th, tr = (float(v) for v in theirs[net][2:5])
            row += f"{tg:>12.3f} {th:>8.3f} {tr:>7.2f}x | {th / float(h):>17.2f}x | "
        else:
            row += f"{'skipped':>12} {'':>8} {'':>8} | {'':>18} | "
        print(row + allocs)


GPT_CONFIGS = [("small", "2 blocks, d 64, 4 heads, context 64, batch 16"),
               ("lesson", "4 blocks, d 128, 4 heads, context 128, batch 16"),
               ("gpt2", "1 GPT-2-small block: d 768, 12 heads, context 256, batch 2")]


def gpt_tables(build, rounds, quick, with_torch):
    import tempfile
    bench = os.path.join(build, "bench", "bench_gpt")
    torch_gpt = os.path.join(HERE, "torch_gpt.py")
    reps = ["--reps", "3"]
    with tempfile.TemporaryDirectory() as weights:
        print("GPT: the first loss and gradient norm from the same weights and batch (no dropout), and each "
              "gradient's largest difference from PyTorch's")
        for name, _ in GPT_CONFIGS:
            row = run_csv([bench, "--config", name, "--write", weights])[0]
            line = f"  {name:<6} nabla fused {row[2]} (norm {row[3]}), composed {row[4]} ({row[5]})"
            if with_torch:
                t = run_csv([TORCH_PYTHON, torch_gpt, "--config", name, "--weights", weights, "--reps", "1"],
                            env=one_thread_env(1))[0]
                worst = max(abs(float(row[i]) - float(t[j])) / abs(float(t[j])) for i, j in ((2, 2), (3, 3), (4, 2), (5, 3)))
                line += (f", PyTorch {t[2]} ({t[3]}): largest relative difference {worst:.1e}; "
                         f"gradients within {float(t[4]):.1e} of their largest entry ({t[5]})")
                line += "" if worst < 1e-5 and float(t[4]) < 1e-4 else "  MISMATCH"
            print(line)
        print()
        print(f"GPT training step (forward, backward, clipping, AdamW), float32, dropout 0.1, median of {rounds} "
              "alternating rounds; CPU ms is the process's CPU time per step (all its threads), wall ms the clock's")
        print(f"{'configuration':<58} {'thr':>3} | {'fused CPU':>9} {'wall':>7} | {'composed CPU':>12} {'wall':>7} | "
              f"{'PyTorch CPU':>11} {'wall':>7} | {'PyTorch/fused':>13} {'PyTorch/composed':>16} | allocs/step")
        for threads in (1, 2):
            times = {}
            for _ in range(rounds):
                for name, _ in GPT_CONFIGS:
                    for side in ("fused", "composed"):
                        row = run_csv([bench, "--config", name, "--side", side, "--threads", str(threads)] + reps)[0]
                        times.setdefault((name, side), []).append((float(row[3]), float(row[4]), float(row[5])))
                    if with_torch:
                        row = run_csv([TORCH_PYTHON, torch_gpt, "--config", name, "--weights", weights,
                                       "--threads", str(threads)] + reps, env=one_thread_env(threads))[1]
                        times.setdefault((name, "torch"), []).append((float(row[3]), float(row[4]), 0))
            for name, label in GPT_CONFIGS:
                med = {side: (statistics.median(w for w, _, _ in times[(name, side)]),
                              statistics.median(c for _, c, _ in times[(name, side)]))
                       for side in ("fused", "composed", "torch") if (name, side) in times}
                allocs = max(a for _, _, a in times[(name, "fused")] + times[(name, "composed")])
                row = (f"{label:<58} {threads:>3} | {med['fused'][1]:>9.1f} {med['fused'][0]:>7.1f} | "
                       f"{med['composed'][1]:>12.1f} {med['composed'][0]:>7.1f} | ")
                if "torch" in med:
                    t = med["torch"]
                    row += (f"{t[1]:>11.1f} {t[0]:>7.1f} | {t[1] / med['fused'][1]:>12.2f}x "
                            f"{t[1] / med['composed'][1]:>15.2f}x | ")
                else:
                    row += f"{'skipped':>11} {'':>7} | {'':>13} {'':>16} | "
                print(row + f"{allocs:g}")
        print()
    contexts = (512, 1024) if quick else (256, 512, 1024)
    print(f"Causal attention alone, forward and backward, q k v of (4, 4, L, 64) float32, 1 thread, median of {rounds} "
          "alternating rounds; peak MB: resident memory's peak during the first pass above what was resident before")
    print(f"{'L':>5} | {'fused CPU ms':>12} {'peak MB':>7} | {'composed CPU ms':>15} {'peak MB':>7} | "
          f"{'PyTorch CPU ms':>14} {'peak MB':>7} | {'PyTorch/fused':>13} {'composed/fused':>14}")
    for L in contexts:
        got = {}
        for _ in range(rounds):
            for side in ("fused", "composed"):
                row = run_csv([bench, "--attention", str(L), "--side", side] + reps)[0]
                got.setdefault(side, []).append((float(row[5]), float(row[6])))
            if with_torch:
                row = run_csv([TORCH_PYTHON, torch_gpt, "--attention", str(L)] + reps, env=one_thread_env(1))[0]
                got.setdefault("torch", []).append((float(row[5]), float(row[6])))
        med = {s: (statistics.median(c for c, _ in v), statistics.median(m for _, m in v)) for s, v in got.items()}
        f, c = med["fused"], med["composed"]
        row = f"{L:>5} | {f[0]:>12.1f} {f[1]:>7.1f} | {c[0]:>15.1f} {c[1]:>7.1f} | "
        if "torch" in med:
            t = med["torch"]
            row += f"{t[0]:>14.1f} {t[1]:>7.1f} | {t[0] / f[0]:>12.2f}x {c[0] / f[0]:>13.2f}x"
        else:
            row += f"{'skipped':>14} {'':>7} | {'':>13} {c[0] / f[0]:>13.2f}x"
        print(row)


if __name__ == "__main__":
    main()
