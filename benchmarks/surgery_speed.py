"""Speed of channel surgery against a plain Keras clone, on ResNet50 at 224x224.

Times ``analyze`` + ``remove_filters`` (25% of every prunable group; the one analysis
passed on) against
``keras.models.clone_model`` + ``set_weights`` of the same model, in the same process, and
writes the medians and their ratio to ``benchmarks/results/surgery_speed.json``.

    .venv/bin/python benchmarks/surgery_speed.py --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import write_result  # noqa: E402

from afp_tf import surgery  # noqa: E402


def _clone(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _prune(model: keras.Model, rng: np.random.Generator) -> keras.Model:
    analysis = surgery.analyze(model)
    groups = analysis.prunable
    removal = {g.name: rng.choice(g.size, g.size // 4, replace=False).tolist() for g in groups}
    return surgery.remove_filters(model, removal, analysis=analysis)


def _time(fn) -> float:
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    groups = surgery.find_channel_groups(model)
    rng = np.random.default_rng(0)
    _time(lambda: _clone(model))  # warm-up both paths once
    _time(lambda: _prune(model, rng))
    clone_s, surgery_s = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
        clone_s.append(_time(lambda: _clone(model)))
        surgery_s.append(_time(lambda: _prune(model, rng)))
    pruned = _prune(model, rng)
    result = {
        "model": f"keras.applications.ResNet50(weights=None, input_shape=({args.size}, "
        f"{args.size}, 3))",
        "removal": "25% of the channels of every prunable group, random",
        "groups": len(groups),
        "prunable_groups": sum(g.prunable for g in groups),
        "params_before": model.count_params(),
        "params_after": pruned.count_params(),
        "repeats": args.repeats,
        "clone_plus_set_weights_s": clone_s,
        "analyze_plus_remove_filters_s": surgery_s,
        "median_clone_s": statistics.median(clone_s),
        "median_surgery_s": statistics.median(surgery_s),
        "ratio_surgery_over_clone": statistics.median(surgery_s) / statistics.median(clone_s),
        "target_ratio_max": 2.0,
    }
    path = write_result("surgery_speed", result)
    print(
        f"clone {result['median_clone_s']:.3f}s  surgery {result['median_surgery_s']:.3f}s  "
        f"ratio {result['ratio_surgery_over_clone']:.2f}  -> {path}"
    )


if __name__ == "__main__":
    main()
