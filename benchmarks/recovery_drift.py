"""What one pruning round's training costs by itself: a round that removes (almost) nothing.

    .venv/bin/python benchmarks/recovery_drift.py vgg16_fashion_mnist --seed 0 \
        --workdir runs/frontier_vgg16_x0.5 [--train-seeds 0,1] \
        --recipe NAME:key=value,... [--recipe ...] [--name recovery_drift_vgg16_x0.5] \
        [--override key=value ...]

A round's decision metric after recovery is compared with the floor; what the round's training
alone costs (the shrink epoch and the recovery started again from a converged model) is spent
from the same budget as the removal. This measures it: from the seed's shared baseline
(``benchmarks/seeds.py``: the frontier's, read back when ``--workdir`` is the frontier's), one
round of the main job whose quantile is ``--quantile`` (0.001: two or three filters of a
VGG-16), no fine-tune, for every recipe (a name and overrides, as ``frontier.py --variant``)
and training seed (``seed``; ``data.seed`` stays the baseline's, so the splits are the same).
Per run: ``drift`` = decision metric before − after the round (positive: the round's training
lost accuracy), the round's ``val_after_removal``, ``removed``, ``recovery_epochs`` and the test
metric. Resumable (``WORKDIR/seed<S>/drift_<recipe>_t<T>/``); writes
``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import compare  # noqa: E402
import seeds  # noqa: E402
from frontier import parse_variant  # noqa: E402

from afp_tf import io_utils  # noqa: E402
from afp_tf.run import config_lib  # noqa: E402


def _run(cfg, base: dict, run_dir: Path, recipe: list[str], quantile: float, seed: int) -> dict:
    done = run_dir / "drift.json"
    if done.is_file():
        return io_utils.read_json(done)
    overrides = [
        *base["overrides"],
        f"seed={seed}",  # training randomness; data.seed (the splits) stays the baseline's
        "prune.max_rounds=1",
        "prune.finetune_epochs=0",
        f"prune.p_max={quantile}",
        f"prune.p_min={quantile}",
        *recipe,
    ]
    with common.wall_clock(run_dir) as wall:
        r = compare.afp_run(cfg, run_dir, overrides)
    (round_,) = io_utils.read_json(run_dir / "report.json")["history"]
    record = {
        "seed": seed,
        "removed": round_["removed"],
        "outcome": round_["outcome"],
        "metric_before": round_["metric_before"],
        "metric": round_["metric"],
        "drift": round_["metric_before"] - round_["metric"],
        "val_after_removal": round_["val_after_removal"],
        "recovery_epochs": round_["recovery_epochs"],
        "test": r["test"],
        "baseline_test": r["baseline"]["test"],
        "overrides": recipe,
        "wall_seconds": round(wall["seconds"], 1),
    }
    io_utils.write_json(done, record)
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seed", type=int, default=0, help="the baseline's seed")
    parser.add_argument("--train-seeds", default="0,1")
    parser.add_argument("--quantile", type=float, default=0.001)
    parser.add_argument("--recipe", action="append", required=True, help="NAME:key=value,...")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--name", default="recovery_drift")
    parser.add_argument("--override", action="append", default=[], help="key=value")
    args = parser.parse_args(argv)
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, [*args.override, "export.enabled=false"])
    base = seeds.shared_baseline(cfg, args.workdir, args.seed)
    runs, summary = [], []
    for spec in args.recipe:
        name, recipe = parse_variant(spec)
        drifts = []
        for t in (int(s) for s in args.train_seeds.split(",")):
            run_dir = args.workdir / f"seed{args.seed}" / f"drift_{name}_t{t}"
            r = {"recipe": name, **_run(cfg, base, run_dir, recipe, args.quantile, t)}
            runs.append(r)
            drifts.append(r["drift"])
        drift = common.mean_sd(drifts)
        summary.append(
            {"recipe": name, "drift_mean": drift["mean"], "drift_sd": drift["sd"], "n": len(drifts)}
        )
        result = {
            "config": args.config,
            "overrides": args.override,
            "baseline_seed": args.seed,
            "quantile": args.quantile,
            "summary": summary,
            "runs": runs,
        }
        common.write_result(args.name, result)
    return result


if __name__ == "__main__":
    main()
