"""One worker of a local MultiWorkerMirroredStrategy cluster, launched by test_distribute.py.

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:PORT0", "127.0.0.1:PORT1"]},
                "task": {"type": "worker", "index": I}}' \
        python tests/mwms_worker.py --mode train --out DIR --init INIT.npz --epochs 1

``--mode train`` writes ``DIR/worker_I.npz`` (the final weights, ``w0, w1, ...``) and
``DIR/worker_I.sha256``. ``build_model``, ``make_dataset`` and ``train`` are importable, so a test
can compute the single-process reference with exactly the same model, data and loop.

``--mode prune`` trains a small residual net for ``--epochs`` epochs, runs ONE round of
``afp_tf.prune`` on it under the strategy and writes ``DIR/worker_I.json``: the pruned model's
filters per channel group, params, MACs, metrics, the round outcomes and a digest of its weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

GLOBAL_BATCH_SIZE = 16
NUM_EXAMPLES = 70  # 4 full batches and a partial one of 6
NUM_CLASSES = 3


def build_model():
    """A tiny conv net without BatchNormalization (its per-replica statistics would make the
    distributed result differ from the single-device one by design)."""
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def make_dataset():
    """The same deterministic batches on every worker (the strategy shards them)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_EXAMPLES, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH_SIZE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def train(strategy, init_weights: list[np.ndarray] | None, epochs: int) -> list[np.ndarray]:
    """Trains ``build_model()`` (from ``init_weights`` if given) with SGD; returns its weights."""
    import keras

    from afp_tf.train import training
    from afp_tf.train.epochs import run_epochs

    with strategy.scope():
        model = build_model()
        if init_weights is not None:
            model.set_weights(init_weights)
    trainer = training.Trainer(
        model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        optimizer=lambda: training.make_optimizer("sgd", 0.1, momentum=0.9),
        strategy=strategy,
        global_batch_size=GLOBAL_BATCH_SIZE,
    )
    run_epochs(trainer, make_dataset(), epochs, progress=False)
    return [np.asarray(w) for w in model.get_weights()]


def build_prune_model():
    """A small functional net with a residual Add and Flatten -> Dense; no BatchNormalization."""
    import keras

    L = keras.layers
    inp = keras.Input((8, 8, 1))
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")(a)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv_c")(L.Add()([a, b]))
    return keras.Model(inp, L.Dense(4, name="head")(L.Flatten()(x)), name="mwms_resnet")


def make_pruning_dataset(n: int, seed: int):
    """Learnable data: the class (of 4) is the quadrant holding a bright 2x2 square."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n).astype(np.int32)
    x = rng.uniform(0, 0.3, (n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = 4 * (c // 2) + 1, 4 * (c % 2) + 1
        x[i, r : r + 2, col : col + 2] = 1.0
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH_SIZE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def prune_one_round(strategy, epochs: int) -> dict:
    """Trains ``build_prune_model()`` under ``strategy``, prunes it for one round; a summary."""
    import keras

    import afp_tf
    from afp_tf.method import pruner
    from afp_tf.train import training
    from afp_tf.train.epochs import run_epochs

    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_ds, val_ds = make_pruning_dataset(256, 1), make_pruning_dataset(128, 2)
    with strategy.scope():
        model = build_prune_model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=loss, metrics=["accuracy"]
        )
    trainer = training.Trainer(
        model,
        loss=loss,
        metrics=["accuracy"],
        optimizer=lambda: training.make_optimizer("sgd", 0.05, momentum=0.9),
        strategy=strategy,
        global_batch_size=GLOBAL_BATCH_SIZE,
    )
    run_epochs(trainer, train_ds, epochs, progress=False)
    result = afp_tf.prune(
        model,
        train_ds,
        val_data=val_ds,
        strategy=strategy,
        tolerance=0.1,
        max_rounds=1,
        recovery_epochs=1,
        progress=False,
    )
    return {
        "filters_before": pruner.filters_per_group(model),
        "filters": pruner.filters_per_group(result.model),
        "params": list(result.params),
        "macs": list(result.macs),
        "baseline_metric": result.baseline_metric,
        "metric": result.metric,
        "floor": result.floor,
        "rounds": result.rounds,
        "outcomes": [h["outcome"] for h in result.history],
        "compiled": result.model.compiled,
        "digest": weights_digest([np.asarray(w) for w in result.model.get_weights()]),
    }


def weights_digest(weights: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["train", "prune"], default="train")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", type=Path, help="npz of initial weights w0, w1, ...")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)

    from afp_tf.train import training

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow operation runs.
    strategy = training.make_strategy("multi_worker")
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "prune":
        summary = prune_one_round(strategy, args.epochs)
        _write_atomic(
            args.out / f"worker_{index}.json", lambda f: f.write(json.dumps(summary).encode())
        )
        return 0
    init = None
    if args.init is not None:
        with np.load(args.init) as f:
            init = [f[f"w{i}"] for i in range(len(f.files))]
    weights = train(strategy, init, args.epochs)
    _write_atomic(
        args.out / f"worker_{index}.npz",
        lambda f: np.savez(f, **{f"w{i}": w for i, w in enumerate(weights)}),
    )
    _write_atomic(
        args.out / f"worker_{index}.sha256", lambda f: f.write(weights_digest(weights).encode())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
