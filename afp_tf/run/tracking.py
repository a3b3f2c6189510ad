"""What a run tells the outside: ``metrics.jsonl`` lines and TensorBoard scalars."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import tensorflow as tf


class RunLog:
    """Appends one JSON line per event to ``metrics.jsonl`` and mirrors numbers to TensorBoard.

    Each record carries ``phase`` (baseline, prune, recover, finetune, round, ...) and ``step``
    (a global epoch counter, so TensorBoard curves run on across phases).
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self._writer = (
            tf.summary.create_file_writer(str(Path(workdir) / "tensorboard"))
            if tensorboard
            else None
        )

    def record(self, phase: str, step: int, values: dict[str, Any]) -> None:
        """Writes one event; numbers also go to TensorBoard as ``phase/name``."""
        line = {"time": round(time.time(), 3), "phase": phase, "step": int(step), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(line, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._writer is None:
            return
        with self._writer.as_default(step=int(step)):
            for name, value in values.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if number and math.isfinite(value):
                    tf.summary.scalar(f"{phase}/{name}", value)
        self._writer.flush()

    def read(self) -> list[dict[str, Any]]:
        """All events recorded so far (also those of earlier, interrupted runs)."""
        if not self.path.exists():
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
