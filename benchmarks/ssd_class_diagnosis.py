"""Why a GTSDB category lags: measurements of a trained SSD on held-out synthetic frames.

    .venv/bin/python benchmarks/ssd_class_diagnosis.py --run before=runs/ssd_v4 \
        [--run after=runs/ssd_v5] [--frames 300]

Reads ``DIR/baseline.keras`` of each labelled ``ssd_gtsdb_synthetic`` run (e.g. before and
after a recipe change) and measures, per category:

- on the run's validation frames: AP@0.5 and the confusion counts at score 0.5 (class swaps,
  background detections, duplicates, misses);
- recall at score 0.5 by sign size (16-24, 24-40, 40+ px, the box's longer side);
- counterfactual frames: ``--frames`` new scenes (seed ``--seed``, never trained on) drawn
  by the generator as is, and the *same* scenes with one generator ingredient changed, so that
  the AP difference is that ingredient's effect: the background's blue distractor discs
  painted grey (``no_blue_distractors``), every distractor grey (``grey_distractors``). The
  random draws are identical in each variant; only the colour differs.

Writes ``benchmarks/results/gtsdb_class_diagnosis.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import numpy as np  # noqa: E402

from afp_tf.data import gtsdb, gtsdb_layout, gtsdb_signs, gtsdb_synth  # noqa: E402
from afp_tf.detection import anchors as anchors_lib  # noqa: E402
from afp_tf.detection import task as detection_task  # noqa: E402
from afp_tf.detection.decode import decode_predictions  # noqa: E402
from afp_tf.detection.metrics import ConfusionCounts, batch_images  # noqa: E402
from afp_tf.models.ssd import at_input_size  # noqa: E402
from afp_tf.run import config_lib  # noqa: E402

SIZE_BUCKETS = ((0, 24), (24, 40), (40, 10_000))
GREY = (128, 128, 128)
VARIANTS = {
    "generator": None,
    "no_blue_distractors": tuple(
        GREY if c == (30, 70, 190) else c for c in gtsdb_synth._DISTRACTOR_COLOURS
    ),
    "grey_distractors": (GREY,) * len(gtsdb_synth._DISTRACTOR_COLOURS),
}


def recall_by_size(model, dataset, anchors, names) -> dict:
    """Recall at score 0.5 (own class) of each category, by the box's longer side in px."""
    height, width = dataset.element_spec[0].shape[1:3]
    model = at_input_size(model, height, width)
    boxes = anchors_lib.resolve(anchors, height, width)
    counts = {b: ConfusionCounts() for b in SIZE_BUCKETS}
    for images, y_true in dataset:
        det = decode_predictions(model(images, training=False), boxes)
        for gt_boxes, gt_classes, *found in batch_images(y_true, det):
            side = np.maximum(
                (gt_boxes[:, 2] - gt_boxes[:, 0]) * width,
                (gt_boxes[:, 3] - gt_boxes[:, 1]) * height,
            )
            for lo, hi in SIZE_BUCKETS:
                keep = (side >= lo) & (side < hi)
                counts[(lo, hi)].update(gt_boxes[keep], gt_classes[keep], *found)
    out = {}
    for (lo, hi), c in counts.items():
        res = c.result(names)
        label = f"{lo}-{hi}px" if hi < 10_000 else f"{lo}+px"
        out[label] = {}
        for n in names:
            correct = res["correct"].get(n, 0)
            total = correct + res["missed"].get(n, 0)
            total += sum(v for k, v in res["swaps"].items() if k.startswith(f"{n}->"))
            out[label][n] = {"signs": total, "recall": round(correct / total, 4) if total else None}
    return out


def counterfactual(cfg, frames: int, seed: int, evaluate) -> dict:
    """AP per category on ``frames`` new scenes, drawn as the generator does and with each
    ingredient of ``VARIANTS`` changed (same random draws)."""
    scale = float(cfg.data.synthetic_scale)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, colours in VARIANTS.items():
            target = Path(tmp) / name
            patch = (
                mock.patch.object(gtsdb_synth, "_DISTRACTOR_COLOURS", colours)
                if colours
                else contextlib.nullcontext()
            )
            with patch:
                gtsdb_synth.generate(target, frames, scale=scale, seed=seed)
            anns = gtsdb_layout.read_annotations(target)
            ds = gtsdb.frame_dataset(anns, labels="categories", max_boxes=32, batch_size=8)
            res = evaluate(ds)
            out[name] = {
                "map50": round(res["map50"], 4),
                "map50_all": round(res["map50_all"], 4),
                "ap_per_class": {k: round(v, 4) for k, v in res["ap_per_class"].items()},
                "background": res["confusion"]["background"],
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import keras  # noqa: PLC0415

    started = time.time()
    cfg = config_lib.load_config("ssd_gtsdb_synthetic")
    data = detection_task.load(cfg)
    names = list(gtsdb_signs.CATEGORY_NAMES)
    result = {"models": {}}
    for spec in args.run:
        model_name, _, workdir = spec.partition("=")
        path = Path(workdir) / "baseline.keras"
        model = keras.saving.load_model(path, compile=False)
        trainer = types.SimpleNamespace(model=model)

        def evaluate(ds, trainer=trainer):
            return data.task.report_evaluator(trainer, ds)

        val = evaluate(data.val)
        anchors = data.task.loss.anchors
        result["models"][model_name] = {
            "val": {
                "map50": round(val["map50"], 4),
                "map50_all": round(val["map50_all"], 4),
                "ap_per_class": {k: round(v, 4) for k, v in val["ap_per_class"].items()},
                "confusion": val["confusion"],
            },
            "workdir": Path(workdir).as_posix(),
            "val_recall_by_size": recall_by_size(model, data.val, anchors, names),
            "counterfactual": counterfactual(cfg, args.frames, args.seed, evaluate),
        }
    result["wall_seconds"] = round(time.time() - started, 1)
    common.write_result(
        "gtsdb_class_diagnosis",
        {
            "config": "ssd_gtsdb_synthetic",
            "frames": args.frames,
            "counterfactual_seed": args.seed,
            **result,
        },
    )


if __name__ == "__main__":
    main()
