"""Epoch time of the training step with each accelerator option, next to the default, one run.

LeNet-5 on a Fashion-MNIST subset (``afp_tf.train.training.Trainer``, SGD, batch 128). Every option
trains the same initial weights; the options take turns for ``--repeats`` rounds (so load on a
shared machine hits them alike) and each round times ``--epochs`` epochs after one warm-up
epoch (tracing, XLA compilation). Writes ``benchmarks/results/train_step.json``.

    python benchmarks/train_step.py [--train 4096] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402

OPTIONS = {
    "default": {},
    "steps_per_execution=8": {"steps_per_execution": 8},
    "jit_compile": {"jit_compile": True},
    "jit_compile+steps_per_execution=8": {"jit_compile": True, "steps_per_execution": 8},
    "mixed_float16": {"precision": "mixed_float16"},
    "mixed_bfloat16": {"precision": "mixed_bfloat16"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4096, help="training examples")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all options")
    args = parser.parse_args()

    import keras

    from afp_tf import models
    from afp_tf.data import load_classification
    from afp_tf.run import config_lib
    from afp_tf.train import precision, training

    cfg = config_lib.load_config("lenet5_fashion_mnist")
    cfg.data.train_subset, cfg.data.val_subset, cfg.data.test_subset = args.train, 512, 512
    data = load_classification(cfg.data)
    keras.utils.set_random_seed(0)
    init = models.build_model("lenet5", data.input_shape, data.num_classes).get_weights()

    def trainer_for(option: dict) -> training.Trainer:
        with precision.policy(option.get("precision", "")):
            model = models.build_model("lenet5", data.input_shape, data.num_classes)
        model.set_weights(init)
        steps = training.StepOptions(
            jit_compile=option.get("jit_compile", False),
            steps_per_execution=option.get("steps_per_execution", 1),
        )
        trainer = training.Trainer(
            model,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            optimizer=lambda: training.make_optimizer("sgd", 0.02, momentum=0.9),
            strategy=training.make_strategy("default"),
            global_batch_size=cfg.data.batch_size,
            options=steps,
        )
        trainer.train_epoch(data.train, progress=False)  # warm-up: tracing and compilation
        trainer.evaluate(data.val)
        return trainer

    trainers = {name: trainer_for(option) for name, option in OPTIONS.items()}
    times: dict[str, list[float]] = {name: [] for name in OPTIONS}
    eval_times: dict[str, list[float]] = {name: [] for name in OPTIONS}
    logs: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, trainer in trainers.items():
            for _ in range(args.epochs):
                started = time.perf_counter()
                logs[name] = trainer.train_epoch(data.train, progress=False)
                times[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            logs[name].update({f"val_{k}": v for k, v in trainer.evaluate(data.val).items()})
            eval_times[name].append(time.perf_counter() - started)
    default = statistics.median(times["default"])
    rows = []
    for name in OPTIONS:
        median = statistics.median(times[name])
        rows.append(
            {
                "option": name,
                "epoch_s_median": round(median, 4),
                "epoch_s_min": round(min(times[name]), 4),
                "eval_s_median": round(statistics.median(eval_times[name]), 4),
                "speedup_vs_default": round(default / median, 3),
                "last_train_loss": round(logs[name]["loss"], 4),
                "last_val_accuracy": round(logs[name]["val_accuracy"], 4),
            }
        )
        print(f"{name:36s} {median:7.3f} s/epoch  x{default / median:.2f}")
    path = write_result(
        "train_step",
        {
            "model": "lenet5",
            "data": f"fashion_mnist {data.num_train} train / {data.num_val} val, batch "
            f"{cfg.data.batch_size} ({data.steps_per_epoch} steps per epoch)",
            "epochs_timed": args.epochs * args.repeats,
            "load_average_at_end": list(os.getloadavg()),
            "note": "CPU only; mixed precision and XLA are meant for GPUs, where they pay off.",
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
