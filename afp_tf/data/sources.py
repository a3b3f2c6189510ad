"""Where classification data comes from: prepared TFDS datasets and local files.

Local formats: IDX files of the MNIST family (``train-images-idx3-ubyte[.gz]``,
``train-labels-idx1-ubyte[.gz]``, ``t10k-...``, also Keras' ``mnist.npz``) and the CIFAR python
batches (``cifar-10-batches-py/data_batch_1..5, test_batch``; ``cifar-100-python/train, test``).
Standard places searched when ``data_dir`` is empty: ``/usr/share/datasets/<folder>`` (Debian's
``dataset-fashion-mnist`` installs there) and ``~/.keras/datasets/<folder>``.

Every reader returns uint8 images ``(n, h, w, c)`` and int32 labels ``(n,)``; files that do not
parse or disagree with each other raise :class:`DatasetCorruptError` naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging

from afp_tf.data.errors import DatasetCorruptError, DatasetNotFoundError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What is known about one dataset before reading it.

    ``mean``/``std`` are per-channel statistics of the training images scaled to [0, 1] (MNIST,
    Fashion-MNIST, CIFAR measured on their train splits; ImageNet the usual torchvision values).
    """

    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fmt: str  # idx | cifar | tfds_only
    folders: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    apt_package: str = ""


_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
            "Bag", "Ankle boot")  # fmt: skip
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
            "truck")  # fmt: skip

SPECS = {
    "mnist": DatasetSpec(
        "mnist", 10, (0.1307,), (0.3081,), "idx", ("mnist", "."), tuple("0123456789")
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", 10, (0.2860,), (0.3530,), "idx", ("fashion-mnist", "fashion_mnist"),
        _FASHION, apt_package="dataset-fashion-mnist",
    ),
    "cifar10": DatasetSpec(
        "cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar",
        ("cifar-10-batches-py",), _CIFAR10,
    ),
    "cifar100": DatasetSpec(
        "cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar",
        ("cifar-100-python",),
    ),
    "imagenet2012": DatasetSpec(
        "imagenet2012", 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "tfds_only"
    ),
}  # fmt: skip

SYSTEM_ROOTS = (Path("/usr/share/datasets"), Path("~/.keras/datasets").expanduser())


@dataclasses.dataclass
class Arrays:
    """A dataset in memory: uint8 images ``(n, h, w, c)`` and int32 labels per split."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]
    source: str


def candidate_dirs(spec: DatasetSpec, data_dir: str) -> list[Path]:
    """The folders searched for local files: ``data_dir`` (and its dataset sub-folders) if set,
    else the standard places."""
    roots = [Path(data_dir).expanduser()] if data_dir else list(SYSTEM_ROOTS)
    dirs = [roots[0]] if data_dir else []
    dirs += [root / folder for root in roots for folder in spec.folders]
    return dirs


def find_local(spec: DatasetSpec, data_dir: str) -> Path | None:
    """Returns the first candidate folder holding ``spec``'s files, or None."""
    marker = "test" if spec.name == "cifar100" else "test_batch"
    for d in candidate_dirs(spec, data_dir):
        if spec.fmt == "idx":
            found = _idx_file(d, "train-images-idx3-ubyte") or (d / "mnist.npz").is_file()
        else:
            found = spec.fmt == "cifar" and (d / marker).is_file()
        if found:
            return d
    return None


def read_local(spec: DatasetSpec, folder: Path) -> Arrays:
    """Reads ``spec``'s train and test splits from ``folder`` (as found by :func:`find_local`)."""
    if spec.fmt == "idx":
        if not _idx_file(folder, "train-images-idx3-ubyte") and (folder / "mnist.npz").is_file():
            splits = _read_mnist_npz(folder / "mnist.npz")
        else:
            splits = [_read_idx_pair(folder, p, spec.num_classes) for p in ("train", "t10k")]
        names = spec.class_names
    elif spec.name == "cifar10":
        files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        parts = [_read_cifar(f, b"labels", spec.num_classes) for f in files]
        splits = [tuple(np.concatenate(a) for a in zip(*parts, strict=True))]
        splits.append(_read_cifar(folder / "test_batch", b"labels", spec.num_classes))
        names = spec.class_names
    else:
        splits = [_read_cifar(folder / s, b"fine_labels", 100) for s in ("train", "test")]
        names = _cifar100_names(folder / "meta")
    (train_x, train_y), (test_x, test_y) = splits
    return Arrays(train_x, train_y, test_x, test_y, names, f"local:{folder}")


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Reads an unsigned-byte IDX file (optionally gzipped) with ``ndim`` dimensions."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetCorruptError(f"{path}: cannot be read ({e}). Download it again.") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetCorruptError(
            f"{path}: bad IDX magic {raw[:4].hex() or '(empty file)'}; expected 0000 08 0{ndim} "
            "(unsigned bytes). Download the file again."
        )
    if raw[3] != ndim:
        raise DatasetCorruptError(f"{path}: IDX file has {raw[3]} dimensions, expected {ndim}.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptError(f"{path}: truncated IDX header. Download the file again.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DatasetCorruptError(
            f"{path}: size mismatch: the header announces shape {shape} "
            f"({int(np.prod(shape))} bytes) but {len(raw) - header} bytes follow (truncated?). "
            "Download the file again."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _read_idx_pair(folder: Path, prefix: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    paths = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        path = _idx_file(folder, stem)
        if path is None:
            raise DatasetNotFoundError(
                f"{folder} has train images but no {stem}[.gz]; the four IDX files (train/t10k "
                "images/labels) must be in the same folder."
            )
        paths.append(path)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    return _checked(images[..., None], labels, paths[1], num_classes, paths[0])


def _read_mnist_npz(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, zlib.error) as e:
        raise DatasetCorruptError(f"{path}: not a Keras mnist.npz ({e}).") from e
    return [
        _checked(arrays[f"x_{s}"][..., None], arrays[f"y_{s}"], path, 10, path)
        for s in ("train", "test")
    ]


def _checked(images, labels, label_path, num_classes, image_path):
    if len(images) != len(labels):
        raise DatasetCorruptError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels."
        )
    labels = np.asarray(labels).astype(np.int32).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetCorruptError(
            f"{label_path}: labels range {labels.min()}..{labels.max()}, "
            f"expected 0..{num_classes - 1}."
        )
    return np.ascontiguousarray(images, dtype=np.uint8), labels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a CIFAR batch needs nothing else, and
    refusing other globals keeps a tampered file from running code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is missing; the CIFAR folder is incomplete.")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # pickle raises many types on garbage input
        raise DatasetCorruptError(f"{path}: unreadable pickle ({type(e).__name__}: {e}).") from e
    if not isinstance(obj, dict):
        raise DatasetCorruptError(f"{path}: expected a dict, found {type(obj).__name__}.")
    return obj


def _read_cifar(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path)
    if b"data" not in batch or label_key not in batch:
        raise DatasetCorruptError(
            f"{path}: missing key {b'data' if b'data' not in batch else label_key!r}."
        )
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetCorruptError(
            f"{path}: data has shape {data.shape} and dtype {data.dtype}, expected (n, 3072) uint8."
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _checked(images, batch[label_key], path, num_classes, path)


def _cifar100_names(meta: Path) -> tuple[str, ...]:
    if not meta.is_file():
        return tuple(str(i) for i in range(100))
    names = _load_pickle(meta).get(b"fine_label_names", [])
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names) or tuple(
        str(i) for i in range(100)
    )


def tfds_builder(name: str, tfds_data_dir: str):
    """Returns the TFDS builder of ``name`` (no network access)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 - slow import, only when TFDS is used

    return tfds.builder(name, data_dir=tfds_data_dir or None)


def tfds_prepare(builder, manual_dir: str, hint: str) -> None:
    """Runs ``download_and_prepare``; any failure (no network, missing manual files, missing
    dependency) becomes a :class:`DatasetNotFoundError` carrying ``hint``."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # network, checksum, manual-dir and import errors alike
        raise DatasetNotFoundError(
            f"TFDS could not prepare {builder.name!r}: {type(e).__name__}: {e}. {hint}"
        ) from e


def read_tfds_arrays(builder, splits: Sequence[str] = ("train", "test")) -> Arrays:
    """Reads a small prepared TFDS dataset fully into memory."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    out = []
    for split in splits:
        xs, ys = [], []
        for x, y in tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(8192)):
            xs.append(x)
            ys.append(y)
        out.append((np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int32)))
    names = tuple(builder.info.features["label"].names)
    logging.info("Read %s from TFDS (%s).", builder.name, builder.data_dir)
    (train_x, train_y), (test_x, test_y) = out
    return Arrays(train_x, train_y, test_x, test_y, names, f"tfds:{builder.data_dir}")
