"""Shared by the PyTorch reference scripts: how a step is timed, the same
way for each (warm-up, then the median over reps of runs of about `seconds`
each), so that their figures compare."""
import statistics
import time


def median_ms(step, reps, seconds, warmup=3, min_steps=2):
    """Milliseconds per call of step(): the median of reps timed runs."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start, steps = time.perf_counter(), 0
        while steps < min_steps or time.perf_counter() - start < seconds:
            step()
            steps += 1
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * statistics.median(times)
