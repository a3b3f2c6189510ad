"""Short fine-tunes of a trained SSD under changed recipe keys: which lever moves which class.

    .venv/bin/python benchmarks/ssd_finetune_probe.py --workdir runs/ssd_v4 --epochs 4 \
        --probe control --probe negatives:data.negative_crops=0.5,model.min_negatives=32

Each probe starts from ``WORKDIR/baseline.keras`` (a ``ssd_gtsdb_synthetic`` run), trains
``--epochs`` epochs on the config's training crops with the listed overrides (a cosine from the
pruning learning rate), and is scored on the validation frames: mAP@0.5 over the competition's
three categories, AP per category and background detections at score 0.5. The control probe
(no overrides) separates the lever from the extra training. Probes already in the result are
skipped on a rerun. Writes ``benchmarks/results/gtsdb_finetune_probe.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from afp_tf import io_utils  # noqa: E402
from afp_tf.detection import task as detection_task  # noqa: E402
from afp_tf.run import config_lib, pipeline  # noqa: E402
from afp_tf.train import training  # noqa: E402
from afp_tf.train.epochs import run_epochs  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "gtsdb_finetune_probe.json"


def probe(workdir: Path, name: str, overrides: list[str], epochs: int) -> dict:
    """One fine-tune from the run's baseline under ``overrides``; its validation scores."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    cfg = config_lib.load_config("ssd_gtsdb_synthetic")
    config_lib.apply_overrides(cfg, overrides)
    keras.utils.set_random_seed(int(cfg.seed))
    data = detection_task.load(cfg)
    model = keras.saving.load_model(workdir / "baseline.keras", compile=False)
    steps = int(data.train.cardinality())
    trainer = training.Trainer(
        model,
        loss=data.task.loss,
        optimizer=lambda: pipeline.make_optimizer(cfg, cosine_steps=epochs * steps),
        strategy=tf.distribute.get_strategy(),
        global_batch_size=int(cfg.data.batch_size),
    )
    started = time.time()
    run_epochs(trainer, data.train, epochs, progress=False)
    val = data.task.report_evaluator(trainer, data.val)
    return {
        "name": name,
        "overrides": overrides,
        "epochs": epochs,
        "val": {
            "map50": round(val["map50"], 4),
            "map50_all": round(val["map50_all"], 4),
            "ap_per_class": {k: round(v, 4) for k, v in val["ap_per_class"].items()},
            "background": val["confusion"]["background"],
            "missed": val["confusion"]["missed"],
        },
        "wall_seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--probe", action="append", required=True, help="NAME or NAME:key=value,key=value"
    )
    args = parser.parse_args()
    done = io_utils.read_json(RESULT).get("probes", []) if RESULT.is_file() else []
    for spec in args.probe:
        name, _, keys = spec.partition(":")
        if any(p["name"] == name for p in done):
            continue
        overrides = [kv for kv in keys.split(",") if kv]
        done.append(probe(args.workdir, name, overrides, args.epochs))
        common.write_result(
            "gtsdb_finetune_probe",
            {"config": "ssd_gtsdb_synthetic", "baseline": args.workdir.as_posix(), "probes": done},
        )


if __name__ == "__main__":
    main()
