"""Latency of exported artifacts, baseline vs pruned, next to the MACs reduction.

    # two saved models: export both (random inputs), then time every format
    .venv/bin/python benchmarks/latency.py --baseline B.keras --pruned P.keras --name my_run
    # two export dirs written by afp_tf.export (MACs must then be given)
    .venv/bin/python benchmarks/latency.py --baseline runs/x/export/baseline \
        --pruned runs/x/export/pruned --macs_baseline 313000000 --macs_pruned 90000000
    # VGG-16 (CIFAR form) against a copy with KEEP of the filters of every prunable group kept
    .venv/bin/python benchmarks/latency.py --vgg16_keep 0.5 --formats tflite_fp32,onnx

Timing runs each artifact's deploy runner (``export/run_*.py``) in a subprocess: batch 1, one
thread by default, median and p90 over ``--runs`` calls after ``--warmup``. The table goes to
``benchmarks/results/latency_NAME.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402

from afp_tf import export, stats  # noqa: E402
from afp_tf.export import latency  # noqa: E402


def _vgg16_pair(keep: float):
    """An untrained VGG-16 (CIFAR form) and a copy keeping ``keep`` of each group's filters."""
    from afp_tf import models, surgery  # noqa: PLC0415

    if not 0 < keep < 1:
        raise ValueError(f"--vgg16_keep={keep} must be in (0, 1).")
    baseline = models.build_model("vgg16", (32, 32, 3), 10)
    removal = {
        g.name: list(range(max(1, round(g.size * keep)), g.size))
        for g in surgery.find_channel_groups(baseline)
        if g.prunable
    }
    return baseline, surgery.remove_filters(baseline, removal)


def _export_random(model, out: Path, formats: tuple[str, ...], samples: int) -> dict:
    """Exports on random inputs; a failed check is recorded, not fatal: latency is still valid."""
    import numpy as np  # noqa: PLC0415

    x = np.random.default_rng(0).random((samples, *model.inputs[0].shape[1:]), dtype=np.float32)
    try:
        report = export.export_model(
            model,
            out,
            formats=formats,
            representative=x,
            val_x=x,
            val_y=None,
            data_note="random inputs (latency benchmark)",
        )
    except export.ExportVerificationError as e:
        report = e.report
    return {
        n: {k: r[k] for k in ("size_bytes", "max_rel_diff", "metric", "passed")}
        for n, r in report["formats"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="baseline .keras model or export dir")
    parser.add_argument("--pruned", type=Path, help="pruned .keras model or export dir")
    parser.add_argument(
        "--vgg16_keep",
        type=float,
        help="benchmark VGG-16 vs a uniformly pruned copy keeping this fraction of filters",
    )
    parser.add_argument("--macs_baseline", type=int, help="needed with export dirs")
    parser.add_argument("--macs_pruned", type=int, help="needed with export dirs")
    parser.add_argument("--formats", default="all")
    parser.add_argument("--samples", type=int, default=64, help="verification samples")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", help="result name (default: from the inputs)")
    args = parser.parse_args()
    formats = export.parse_formats(args.formats)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.vgg16_keep is not None:
            models = _vgg16_pair(args.vgg16_keep)
            name = args.name or f"vgg16_keep{args.vgg16_keep:g}"
        elif args.baseline and args.pruned and args.baseline.suffix == ".keras":
            import keras  # noqa: PLC0415

            models = [
                keras.saving.load_model(p, compile=False) for p in (args.baseline, args.pruned)
            ]
            name = args.name or args.pruned.stem
        elif args.baseline and args.pruned:
            if args.macs_baseline is None or args.macs_pruned is None:
                parser.error("export dirs need --macs_baseline and --macs_pruned")
            models = None
            dirs = (args.baseline, args.pruned)
            macs = (args.macs_baseline, args.macs_pruned)
            name = args.name or args.pruned.parent.name
        else:
            parser.error("give --baseline and --pruned, or --vgg16_keep")
        if models is not None:
            dirs = (Path(tmp) / "baseline", Path(tmp) / "pruned")
            macs = tuple(stats.model_stats(m).macs for m in models)
            sides = zip(("baseline", "pruned"), models, dirs, strict=True)
            result["exports"] = {
                s: _export_random(m, d, formats, args.samples) for s, m, d in sides
            }
            result["params"] = [stats.model_stats(m).params for m in models]
        rows = latency.latency_table(
            *dirs,
            macs_baseline=macs[0],
            macs_pruned=macs[1],
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
        )
    result.update({"macs": list(macs), "latency": rows})
    path = write_result(f"latency_{name}", result)
    print(f"{'format':22} {'base ms':>9} {'pruned ms':>9} {'speed-up':>9} {'MACs red.':>9}")
    for r in rows:
        print(
            f"{r['format']:22} {r['baseline_ms']:9.3f} {r['pruned_ms']:9.3f} "
            f"{r['speedup']:8.2f}x {r['macs_reduction']:8.2f}x"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
