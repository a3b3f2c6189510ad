"""What every benchmark records next to its numbers (the command, the machine, the date), and how
it summarises seeds (mean ± sd)."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def provenance() -> dict:
    """Exact command line, machine and library versions of this process."""
    import keras
    import tensorflow as tf

    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }


def mean_sd(values) -> dict:
    """``{"mean", "sd"}`` of ``values`` (sample sd; 0 for a single value)."""
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd}


def write_result(name: str, result: dict) -> Path:
    """Writes ``benchmarks/results/NAME.json`` atomically, provenance first."""
    from afp_tf import io_utils

    path = RESULTS / f"{name}.json"
    io_utils.write_json(path, {**provenance(), **result})
    return path


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a batch system's stop) raises ``SystemExit(143)``.

    Python's default SIGTERM ends the process without unwinding, so ``finally`` blocks would
    not run. Only the main thread can set handlers; elsewhere this does nothing.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def wall_clock(workdir: Path, count: bool = True) -> Iterator[dict]:
    """Wall time of a resumable benchmark summed over every invocation on ``workdir``.

    Adds this invocation's time (with ``count``; even when it fails, is interrupted or gets
    SIGTERM; not after SIGKILL) to ``workdir/benchmark_wall.json``. Yields a dict whose
    ``seconds`` is the total, set on exit.
    """
    from afp_tf import io_utils

    clock = Path(workdir) / "benchmark_wall.json"
    total: dict = {}
    started = time.time()
    try:
        with _terminate_raises():
            yield total
    finally:
        seconds = io_utils.read_json(clock)["seconds"] if clock.is_file() else 0.0
        if count:
            seconds += time.time() - started
            clock.parent.mkdir(parents=True, exist_ok=True)
            io_utils.write_json(clock, {"seconds": seconds})
        total["seconds"] = seconds
