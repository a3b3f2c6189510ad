"""Inputs for the export command: verification samples and int8 calibration data.

``--data`` names one source: a ``.npz`` (array ``x``, optional labels ``y`` and calibration
inputs ``x_rep``), a folder of images (searched recursively; no labels), or a TFDS split
``tfds:NAME[:SPLIT]`` (``image`` and, if present, ``label`` features). Images are resized to
the model's input and scaled to ``pixel_range``. Calibration inputs are the source's samples
after the verification ones, or the verification inputs themselves when it has no more.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
PIXEL_RANGES = {"0,1": (0.0, 1.0), "0,255": (0.0, 255.0), "-1,1": (-1.0, 1.0)}


class ExportDataError(ValueError):
    """The ``--data`` source cannot be read or does not fit the model; the message says why."""


@dataclasses.dataclass(frozen=True)
class ExportData:
    """What the exporter verifies on (``x``, ``y``) and calibrates int8 on.

    ``real`` is False for random inputs: they measure no accuracy, only numerics.
    """

    x: np.ndarray
    y: np.ndarray | None
    calibration: np.ndarray | None
    note: str
    real: bool = True


def random_inputs(shape: tuple[int, ...], samples: int) -> ExportData:
    """Uniform [0, 1) inputs: artifacts' outputs are compared with Keras; no accuracy is
    measured (their logits sit near ties) and nothing calibrates."""
    x = np.random.default_rng(0).random((samples, *shape), dtype=np.float32)
    note = "random uniform [0, 1) inputs (no --data): outputs compared with Keras only"
    return ExportData(x, None, None, note, real=False)


def load(
    spec: str,
    shape: tuple[int, ...],
    *,
    samples: int,
    calibration_samples: int,
    pixel_range: str = "0,1",
) -> ExportData:
    """Reads ``spec`` (see the module docstring) for a model taking inputs of ``shape``.

    Raises:
        ExportDataError: the source is missing, empty, or of the wrong shape.
    """
    if pixel_range not in PIXEL_RANGES:
        choices = ", ".join(PIXEL_RANGES)
        raise ExportDataError(f"pixel_range {pixel_range!r} is not one of {choices}.")
    wanted = samples + calibration_samples
    if spec.startswith("tfds:"):
        x, y, x_rep = *_tfds(spec, shape, wanted, pixel_range), None
    elif Path(spec).expanduser().is_dir():
        x, y, x_rep = _image_folder(Path(spec).expanduser(), shape, wanted, pixel_range), None, None
    elif Path(spec).suffix == ".npz":
        x, y, x_rep = _npz(Path(spec).expanduser())
    else:
        raise ExportDataError(
            f"--data {spec!r} is not a .npz file, a folder of images or tfds:NAME[:SPLIT]."
        )
    x = np.asarray(x, np.float32)
    if tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
        raise ExportDataError(
            f"--data {spec}: inputs of shape {x.shape[1:]} ({len(x)} samples); the model takes "
            f"{tuple(shape)}."
        )
    if x_rep is None:
        x_rep = x[samples:wanted] if len(x) > samples else x[:calibration_samples]
        how = "the samples after" if len(x) > samples else "the same inputs as"
        note = f"--data {spec}; int8 calibrated on {how} the verification inputs"
    else:
        note = f"--data {spec}; int8 calibrated on its x_rep"
    y = None if y is None else np.asarray(y)[:samples]
    return ExportData(x[:samples], y, np.asarray(x_rep, np.float32)[:calibration_samples], note)


def _npz(path: Path):
    if not path.is_file():
        raise ExportDataError(f"--data {path} does not exist.")
    with np.load(path) as data:
        if "x" not in data:
            raise ExportDataError(f"{path} has no array 'x' (arrays: {', '.join(data)}).")
        return data["x"], data.get("y"), data.get("x_rep")


def _to_model_input(image: tf.Tensor, shape: tuple[int, ...], pixel_range: str) -> np.ndarray:
    """An integer image resized to ``shape`` (H, W, C) and scaled to ``pixel_range``."""
    height, width, channels = shape
    if image.shape[-1] != channels:
        image = (
            tf.image.grayscale_to_rgb(image)
            if channels == 3
            else tf.image.rgb_to_grayscale(image[..., :3])
        )
    resized = tf.image.resize(tf.cast(image, tf.float32), (height, width)).numpy()
    low, high = PIXEL_RANGES[pixel_range]
    return low + resized / 255.0 * (high - low)


def _image_folder(folder: Path, shape, limit: int, pixel_range: str) -> np.ndarray:
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ExportDataError(f"An image folder needs a model taking (H, W, 1 or 3), not {shape}.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ExportDataError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {folder}.")
    images = []
    for path in files:
        try:
            image = tf.io.decode_image(path.read_bytes(), expand_animations=False)
        except tf.errors.InvalidArgumentError as e:
            raise ExportDataError(f"Cannot decode image {path}: {e.message}") from e
        images.append(_to_model_input(image, shape, pixel_range))
    return np.stack(images)


def _tfds(spec: str, shape, limit: int, pixel_range: str):
    import tensorflow_datasets as tfds  # noqa: PLC0415 - slow import, only for this source

    name, _, split = spec[len("tfds:") :].partition(":")
    try:
        ds = tfds.load(name, split=split or "train", download=False)
    except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; re-raised with the fix
        raise ExportDataError(
            f"--data {spec}: cannot read TFDS {name!r} split {split or 'train'!r} ({e}); prepare "
            "it first (tfds build, or set TFDS_DATA_DIR) or pass a .npz or image folder."
        ) from e
    xs, ys = [], []
    for example in tfds.as_numpy(ds.take(limit)):
        if "image" not in example:
            raise ExportDataError(f"TFDS {name!r} has no 'image' feature ({', '.join(example)}).")
        xs.append(_to_model_input(tf.constant(example["image"]), shape, pixel_range))
        if "label" in example:
            ys.append(example["label"])
    if not xs:
        raise ExportDataError(f"TFDS {name!r} split {split or 'train'!r} is empty.")
    return np.stack(xs), (np.asarray(ys) if len(ys) == len(xs) else None)
