"""Shared test set-up: quiet TensorFlow, two logical CPU devices, fixed seeds, slow files first."""

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPUs so MirroredStrategy can be tested on one physical CPU.
# Must happen before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_collection_modifyitems(items):
    """The files holding a ``slow`` test run first (stable otherwise): under ``-n 2 --dist
    loadfile`` the two workers then end on short files together, not one on a long file alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str):
    """A fresh module of the benchmark script ``benchmarks/<name>.py`` (not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def write_idx(path, array):
    """Writes ``array`` (uint8) as a gzipped IDX file, the MNIST family's format."""
    import gzip
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def learnable_images(n, seed, size=28, classes=10):
    """Images whose class is a bright square at a class-specific place: quick to learn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 4)
        images[i, 2 + 6 * r : 8 + 6 * r, 2 + 6 * col : 8 + 6 * col] = 230
    return images, labels


@pytest.fixture(scope="session")
def tiny_fashion_mnist(tmp_path_factory):
    """A folder of small Fashion-MNIST-format IDX files (1200 train, 300 test)."""
    root = tmp_path_factory.mktemp("fashion_mnist")
    for split, n, seed in (("train", 1200, 1), ("t10k", 300, 2)):
        images, labels = learnable_images(n, seed)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def classifier_trainer(model, *, global_batch_size, learning_rate=0.1, strategy=None, **kwargs):
    """A ``Trainer`` of integer-label logits (cross-entropy, accuracy) with plain SGD."""
    from afp_tf.train import training

    kwargs.setdefault("metrics", ["accuracy"])
    kwargs.setdefault("optimizer", lambda: keras.optimizers.SGD(learning_rate))
    return training.Trainer(
        model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        strategy=strategy or tf.distribute.get_strategy(),
        global_batch_size=global_batch_size,
        **kwargs,
    )


def tiny_job_overrides(data_dir, *extra):
    """Overrides making ``lenet5_fashion_mnist:quick`` a seconds-long job on tiny IDX data."""
    return [
        f"data.data_dir={data_dir}",
        "data.source=local",
        "data.batch_size=64",
        "train.baseline_epochs=2",
        "train.learning_rate=0.05",
        "train.progress=false",
        "prune.tolerance=0.2",
        "prune.max_rounds=3",
        "prune.p_max=0.3",
        "prune.recovery_epochs=1",
        "prune.finetune_epochs=1",
        "export.enabled=false",
        *extra,
    ]


def tiny_job_config(data_dir, *extra):
    """The config of :func:`tiny_job_overrides`; later overrides win."""
    from afp_tf.run import config_lib

    cfg = config_lib.load_config("lenet5_fashion_mnist:quick")
    config_lib.apply_overrides(cfg, tiny_job_overrides(data_dir, *extra))
    return cfg


def artifact_float_types(path):
    """The float types in an exported artifact: of every TFLite tensor; of every ONNX
    initializer, graph input and output and ``Cast`` target; of a SavedModel's variables and
    serving inputs and outputs."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        names = {np.dtype(t["dtype"]).name for t in Interpreter(str(path)).get_tensor_details()}
    elif path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        types = [t.data_type for t in graph.initializer]
        types += [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)]
        casts = [a for n in graph.node if n.op_type == "Cast" for a in n.attribute]
        types += [a.i for a in casts if a.name == "to"]
        onnx_names = {"FLOAT": "float32", "FLOAT16": "float16", "BFLOAT16": "bfloat16"}
        names = {onnx_names.get(onnx.TensorProto.DataType.Name(t), "other") for t in types}
    else:
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]
        tensors = [*loaded.variables, *serve.structured_input_signature[1].values()]
        names = {t.dtype.name for t in (*tensors, *serve.structured_outputs.values())}
    return {n for n in names if "float" in n}
