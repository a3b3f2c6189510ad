"""The GTSDB file layout: binary PPM frames and ``gt.txt`` (``file;x1;y1;x2;y2;class_id``).

Boxes in ``gt.txt`` are inclusive pixel coordinates. Packed targets (one float tensor per image,
``(max_boxes, 5)`` = ``[x1, y1, x2, y2, class]`` relative to the image, padding rows
``class = -1``) keep the detection loss a plain ``loss(y_true, y_pred)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from absl import logging

from afp_tf.data import gtsdb_signs
from afp_tf.data.errors import DatasetCorruptError, DatasetNotFoundError

ARCHIVE_NAME = "FullIJCNN2013.zip"


@dataclasses.dataclass(frozen=True)
class Annotation:
    """The signs of one image: pixel boxes ``(n, 4)`` as x1, y1, x2, y2 and class ids ``(n,)``."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray


def read_ppm_header(path: Path) -> tuple[int, int, int]:
    """Returns (width, height, data offset) of a binary PPM (P6) file."""
    with open(path, "rb") as f:
        head = f.read(64)
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(head) and head[pos : pos + 1].isspace():
            pos += 1
        if head[pos : pos + 1] == b"#":
            pos = head.index(b"\n", pos)
            continue
        end = pos
        while end < len(head) and not head[end : end + 1].isspace():
            end += 1
        tokens.append(head[pos:end])
        pos = end
    if tokens[0] != b"P6" or tokens[3] != b"255":
        raise DatasetCorruptError(f"{path} is not an 8-bit binary PPM (P6) file.")
    return int(tokens[1]), int(tokens[2]), pos + 1


def read_ppm(path: str | Path) -> np.ndarray:
    """Reads a binary PPM (P6) file into an (H, W, 3) uint8 array."""
    path = Path(path)
    width, height, offset = read_ppm_header(path)
    data = np.fromfile(path, np.uint8, offset=offset, count=width * height * 3)
    return data.reshape(height, width, 3)


def read_annotations(layout_dir: str | Path) -> list[Annotation]:
    """Parses ``gt.txt`` and lists every ``.ppm`` image (negatives included) in file order.

    Raises:
      DatasetCorruptError: a malformed ``gt.txt`` line (named by line number), or a box naming a
        missing image or lying outside it.
    """
    layout_dir = Path(layout_dir)
    images = sorted(layout_dir.glob("*.ppm"))
    if not images:
        raise DatasetNotFoundError(
            f"No .ppm images in {layout_dir}: unzip {ARCHIVE_NAME} there (00000.ppm ... "
            "00899.ppm next to gt.txt)."
        )
    signs: dict[str, list[tuple[list[float], int]]] = {p.name: [] for p in images}
    gt = layout_dir / "gt.txt"
    for number, line in enumerate(gt.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(";")
        try:
            if len(fields) != 6:
                raise ValueError(f"expected 6 fields, found {len(fields)}")
            x1, y1, x2, y2, class_id = (int(v) for v in fields[1:])
        except ValueError as e:
            raise DatasetCorruptError(
                f"{gt}:{number}: malformed line {line!r} ({e}); expected file;x1;y1;x2;y2;class_id"
            ) from None
        if fields[0] not in signs:
            raise DatasetCorruptError(f"{gt}:{number}: image {fields[0]!r} is not in {layout_dir}.")
        if not (0 <= class_id < gtsdb_signs.NUM_CLASSES and x1 <= x2 and y1 <= y2):
            raise DatasetCorruptError(f"{gt}:{number}: bad class id or box in {line!r}.")
        signs[fields[0]].append(([x1, y1, x2, y2], class_id))
    annotations = []
    for path in images:
        width, height, _ = read_ppm_header(path)
        entries = signs[path.name]
        annotations.append(
            Annotation(
                path=path,
                width=width,
                height=height,
                boxes=np.array([b for b, _ in entries], np.float32).reshape(-1, 4),
                classes=np.array([c for _, c in entries], np.int32),
            )
        )
    return annotations


def pack_targets(ann: Annotation, labels: str, max_boxes: int) -> np.ndarray:
    """Returns the ``(max_boxes, 5)`` packed targets of one image (see module docstring)."""
    packed = np.zeros((max_boxes, 5), np.float32)
    packed[:, 4] = -1
    n = len(ann.classes)
    if n > max_boxes:
        logging.warning("%s has %d signs; keeping the first max_boxes=%d.", ann.path, n, max_boxes)
        n = max_boxes
    # gt.txt boxes are inclusive pixel coordinates.
    scale = np.array([ann.width, ann.height, ann.width, ann.height], np.float32)
    boxes = ann.boxes[:n] + np.array([0, 0, 1, 1], np.float32)
    packed[:n, :4] = boxes / scale
    classes = ann.classes[:n]
    if labels == "categories":
        classes = np.array([gtsdb_signs.CLASS_TO_CATEGORY[int(c)] for c in classes], np.int32)
    packed[:n, 4] = classes
    return packed
