"""Shared by the deploy-side runners: argument parsing, input loading, timing. numpy + stdlib only.

The runners in this folder prove that an exported model needs nothing but its own runtime, so
nothing here may import afp_tf, keras or any converter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Command line common to every runner."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", help="the exported artifact")
    parser.add_argument("--inputs", help=".npy, or .npz with array 'x'; random inputs if omitted")
    parser.add_argument("--runs", type=int, default=50, help="timed runs after warm-up")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="samples per timed call")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.batch < 1:
        parser.error("--runs, --threads and --batch must be >= 1 and --warmup >= 0")
    return args


def load_inputs(path: str | None, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Float32 inputs from ``path`` (.npy, or .npz with ``x``), else ``n`` random of ``shape``."""
    if path is None:
        return np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    data = np.load(path)
    x = data["x"] if isinstance(data, np.lib.npyio.NpzFile) else data
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{path}: inputs of shape {x.shape[1:]}, the model wants {shape}")
    return np.asarray(x, dtype=np.float32)


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> dict:
    """Median, 90th percentile and minimum of ``runs`` wall-clock timings after ``warmup``."""
    (result,) = time_round_robin([fn], runs, warmup)
    return result


def time_round_robin(
    fns: Sequence[Callable[[], object]], runs: int, warmup: int, block: int = 1
) -> list[dict]:
    """:func:`time_calls` of every one of ``fns``, taking turns so that drift of a shared CPU
    (clock, other load) hits all alike. ``block`` > 1: each turn calls one function ``block``
    times in a row and times all but the first, so that it is timed with its own weights in the
    caches. Taking turns call by call times every model cold: a VGG-16 x0.25 table timed so put
    the whole model at 0.549 ms, the same table timed again in blocks of 10 at 0.508 ms, and
    the same file beside its pruned copies in blocks ran in 0.462 ms (the rest is drift between
    sessions; benchmarks/results/latency_budget.json)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    per_turn = max(block - 1, 1)
    while len(times[0]) < runs:
        for fn, timed in zip(fns, times, strict=True):
            if block > 1:
                fn()  # brings this model's weights back into the caches
            for _ in range(min(per_turn, runs - len(timed))):
                start = time.perf_counter()
                fn()
                timed.append((time.perf_counter() - start) * 1e3)
    return [_summary(sorted(t), runs, warmup) for t in times]


def _summary(times: list[float], runs: int, warmup: int) -> dict:
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(np.ceil(0.9 * len(times))) - 1)],
        "min_ms": times[0],
        "runs": runs,
        "warmup": warmup,
    }


def main(load: Callable, description: str, argv: list[str] | None = None) -> dict:
    """Loads a model with ``load(path, threads)``, classifies inputs, times a batch, prints JSON.

    ``load`` returns an object with ``input_shape`` (without batch), ``predict(x) -> logits``
    (float32, dequantised) and ``runtime`` (name and version).
    """
    args = parse_args(description, argv)
    runner = load(args.model, threads=args.threads)
    x = load_inputs(args.inputs, runner.input_shape, max(args.batch, 8))
    logits = runner.predict(x)
    batch = x[: args.batch]
    result = {
        "model": args.model,
        "runtime": runner.runtime,
        "threads": args.threads,
        "batch": args.batch,
        **time_calls(lambda: runner.predict(batch), args.runs, args.warmup),
        "predictions": np.argmax(logits, axis=-1).tolist(),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return result
