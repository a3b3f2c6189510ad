"""One worker of a local MultiWorkerMirroredStrategy cluster, launched by test_distribute.py.

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:PORT0", "127.0.0.1:PORT1"]},
                "task": {"type": "worker", "index": I}}' \
        python tests/mwms_worker.py --mode train --out DIR --init INIT.npz --epochs 1

Writes ``DIR/worker_I.npz`` (the final weights, ``w0, w1, ...``) and ``DIR/worker_I.sha256``.
``build_model``, ``make_dataset`` and ``train`` are importable, so a test can compute the
single-process reference with exactly the same model, data and loop.
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

    from afp_tf import training

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
    trainer.fit(make_dataset(), epochs=epochs, progress=False)
    return [np.asarray(w) for w in model.get_weights()]


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
    parser.add_argument("--mode", choices=["train"], default="train")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", type=Path, help="npz of initial weights w0, w1, ...")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)

    from afp_tf import training

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow operation runs.
    strategy = training.make_strategy("multi_worker")
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    init = None
    if args.init is not None:
        with np.load(args.init) as f:
            init = [f[f"w{i}"] for i in range(len(f.files))]
    weights = train(strategy, init, args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
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
