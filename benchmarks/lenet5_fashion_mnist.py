"""LeNet-5 on the full Fashion-MNIST at ε = 1 and 0.5 points: the method's headline on CPU.

    .venv/bin/python benchmarks/lenet5_fashion_mnist.py [--tolerances 0.01,0.005]

Each tolerance is a full main-job run (baseline training, pruning rounds, fine-tuning; export
off) from the same baseline config; the result goes to
``benchmarks/results/lenet5_fashion_mnist.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from absl import logging  # noqa: E402
from common import write_result  # noqa: E402

from afp_tf.run import config_lib, pipeline  # noqa: E402


def run_one(tolerance: float, workdir: Path, overrides: list[str]) -> dict:
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    config_lib.apply_overrides(
        cfg,
        [
            f"prune.tolerance={tolerance}",
            "export.enabled=false",
            "train.progress=false",
            *overrides,
        ],
    )
    run_dir = workdir / f"eps_{tolerance}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a benchmark measures a whole run, never a resume
    started = time.time()
    summary = pipeline.run(cfg, run_dir)
    base, pruned = summary["baseline"], summary["pruned"]
    return {
        "tolerance": tolerance,
        "wall_seconds": round(time.time() - started, 1),
        "baseline": {k: base[k] for k in ("val", "test", "params", "macs", "filters")},
        "pruned": {k: pruned[k] for k in ("val", "test", "params", "macs", "filters", "floor")},
        "params_reduction": summary["reduction"]["params"],
        "macs_reduction": summary["reduction"]["macs"],
        "test_drop_points": round(100 * (base["test"] - pruned["test"]), 2),
        "rounds": summary["rounds"],
        "stop_reason": summary["stop_reason"],
        "config": cfg.to_dict(),
    }


def main() -> None:
    logging.set_verbosity(logging.INFO)  # the per-round log lines, as the CLI shows them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerances", default="0.01,0.005")
    parser.add_argument("--workdir", default="runs/bench_lenet5_fashion_mnist", type=Path)
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra config overrides, e.g. prune.p_max=0.3",
    )
    args = parser.parse_args()
    runs = [run_one(float(t), args.workdir, args.override) for t in args.tolerances.split(",")]
    path = write_result("lenet5_fashion_mnist", {"runs": runs})
    for r in runs:
        print(
            f"eps={r['tolerance']}: MACs x{r['macs_reduction']}, params x{r['params_reduction']}, "
            f"test {100 * r['baseline']['test']:.2f} -> {100 * r['pruned']['test']:.2f}, "
            f"{r['wall_seconds']} s"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
