"""Synthetic traffic-sign scenes written in the GTSDB (FullIJCNN2013) layout.

Each image is a binary PPM (P6) named ``00000.ppm``, ``00001.ppm``, ... and ``gt.txt`` holds one
``file;x1;y1;x2;y2;class_id`` line per sign, exactly like the real benchmark, so the same reader
serves both. Signs are drawn per super-category: prohibitory = white disc with a red rim, danger
= white triangle with a red rim, mandatory = blue disc, other = yellow diamond, red octagon or
white square; with varied size (16-128 px at full resolution), position, blur, lighting and
clutter on gradient/noise backgrounds. Some images have no sign (negatives).

This data is for tests and the explicitly named offline config ``ssd_gtsdb_synthetic``; it is
never used in place of the real benchmark.

CLI::

  python -m afp_tf.data.gtsdb_synth --out DIR --num-images N [--scale 0.25] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from afp_tf import io_utils

FULL_SIZE = (1360, 800)  # (width, height) of the real GTSDB images
# The standard GTSDB map from the 43 class ids to the four super-categories.
CATEGORY_NAMES = ("prohibitory", "danger", "mandatory", "other")
CATEGORY_CLASSES = (
    (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16),
    (11, *range(18, 32)),
    tuple(range(33, 41)),
    (6, 12, 13, 14, 17, 32, 41, 42),
)
CLASS_TO_CATEGORY = {c: k for k, classes in enumerate(CATEGORY_CLASSES) for c in classes}
NUM_CLASSES = 43

_RED = np.array([200, 20, 30], np.float32)
_WHITE = np.array([235, 235, 235], np.float32)
_BLUE = np.array([20, 60, 190], np.float32)
_YELLOW = np.array([240, 200, 20], np.float32)
_DARK = np.array([25, 25, 25], np.float32)


def write_ppm(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an (H, W, 3) uint8 array as a binary PPM (P6), atomically."""
    height, width, _ = image.shape
    with io_utils.atomic_path(path) as tmp:
        tmp.write_bytes(f"P6\n{width} {height}\n255\n".encode() + image.astype(np.uint8).tobytes())


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(20, 180, 3)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    image += rng.normal(0, 12, image.shape).astype(np.float32)
    for _ in range(rng.integers(3, 12)):  # clutter: rectangles and bars of random colour
        w, h = rng.integers(4, max(5, width // 4)), rng.integers(4, max(5, height // 4))
        x, y = rng.integers(0, width - 1), rng.integers(0, height - 1)
        image[y : y + h, x : x + w] = rng.uniform(0, 255, 3)
    return image


def _sign_masks(kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (outer, inner) boolean masks of a ``size`` x ``size`` sign of shape ``kind``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = (xx + 0.5) / size * 2 - 1, (yy + 0.5) / size * 2 - 1  # in [-1, 1]
    if kind == "disc":
        r = np.hypot(u, v)
        return r <= 1.0, r <= 0.72
    if kind == "triangle":  # apex up: inside if below both edges and above the base

        def tri(s):
            return (v <= 0.85 * s) & (np.abs(u) <= (v + s) / 1.85)

        return tri(1.0), tri(0.62)
    if kind == "diamond":
        d = np.abs(u) + np.abs(v)
        return d <= 1.0, d <= 0.6
    if kind == "octagon":
        d = np.maximum(np.maximum(np.abs(u), np.abs(v)), (np.abs(u) + np.abs(v)) / 1.41)
        return d <= 1.0, d <= 0.8
    square = np.maximum(np.abs(u), np.abs(v))
    return square <= 1.0, square <= 0.8


def _sign_style(class_id: int, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray]:
    category = CLASS_TO_CATEGORY[class_id]
    if category == 0:
        return "disc", _RED, _WHITE
    if category == 1:
        return "triangle", _RED, _WHITE
    if category == 2:
        return "disc", _BLUE, _BLUE
    kind = ("diamond", "octagon", "square")[rng.integers(0, 3)]
    outer = {"diamond": _WHITE, "octagon": _WHITE, "square": _DARK}[kind]
    inner = {"diamond": _YELLOW, "octagon": _RED, "square": _WHITE}[kind]
    return kind, outer, inner


def _blur(patch: np.ndarray, passes: int) -> np.ndarray:
    for _ in range(passes):
        padded = np.pad(patch, ((1, 1), (1, 1), (0, 0)), mode="edge")
        patch = (
            sum(
                padded[dy : dy + patch.shape[0], dx : dx + patch.shape[1]]
                for dy in range(3)
                for dx in range(3)
            )
            / 9.0
        )
    return patch


def _draw_sign(image, rng, class_id: int, x: int, y: int, size: int) -> None:
    kind, outer_colour, inner_colour = _sign_style(class_id, rng)
    outer, inner = _sign_masks(kind, size)
    patch = image[y : y + size, x : x + size].copy()
    patch[outer] = outer_colour
    patch[inner] = inner_colour
    # A class-specific pictogram: a dark bar whose angle encodes the class id.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    angle = np.pi * class_id / NUM_CLASSES
    bar = (
        (np.abs(xx * np.sin(angle) - yy * np.cos(angle)) < 0.06) & inner & (np.hypot(xx, yy) < 0.3)
    )
    patch[bar] = _DARK
    patch = _blur(patch, int(rng.integers(0, 3)))
    region = image[y : y + size, x : x + size]
    region[outer] = patch[outer] * rng.uniform(0.55, 1.25)  # lighting


def generate(
    out_dir: str | os.PathLike,
    num_images: int,
    *,
    scale: float = 1.0,
    seed: int = 0,
    max_signs: int = 4,
    negative_fraction: float = 0.15,
) -> Path:
    """Writes ``num_images`` synthetic scenes and their ``gt.txt`` into ``out_dir``.

    Args:
      out_dir: target directory (created). ``gt.txt`` is written last, atomically.
      num_images: number of PPM images.
      scale: image size relative to the real 1360x800; sign sizes scale along.
      seed: random seed; the same arguments give the same files.
      max_signs: most signs per image.
      negative_fraction: expected fraction of images without any sign.

    Returns:
      ``out_dir`` as a Path.
    """
    if num_images < 1 or not 0.01 <= scale <= 1.0:
        raise ValueError(f"need num_images >= 1 and 0.01 <= scale <= 1, got {num_images}, {scale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = (max(32, round(s * scale)) for s in FULL_SIZE)
    lines = []
    for index in range(num_images):
        name = f"{index:05d}.ppm"
        image = _background(rng, width, height)
        count = 0 if rng.random() < negative_fraction else int(rng.integers(1, max_signs + 1))
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(count * 10):  # rejection sampling for non-overlapping signs
            if len(placed) == count:
                break
            size = max(6, round(rng.uniform(16, 128) * scale))
            x, y = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
            box = (x, y, x + size - 1, y + size - 1)
            if any(
                box[0] <= b[2] + 2
                and b[0] <= box[2] + 2
                and box[1] <= b[3] + 2
                and b[1] <= box[3] + 2
                for b in placed
            ):
                continue
            class_id = int(rng.integers(0, NUM_CLASSES))
            _draw_sign(image, rng, class_id, x, y, size)
            placed.append(box)
            lines.append(f"{name};{box[0]};{box[1]};{box[2]};{box[3]};{class_id}")
        write_ppm(out_dir / name, np.clip(image, 0, 255).astype(np.uint8))
    io_utils.write_text(out_dir / "gt.txt", "\n".join(lines) + ("\n" if lines else ""))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="Output directory.")
    parser.add_argument("--num-images", type=int, default=900, help="Images (the real set: 900).")
    parser.add_argument("--scale", type=float, default=1.0, help="Size relative to 1360x800.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    args = parser.parse_args(argv)
    out = generate(args.out, args.num_images, scale=args.scale, seed=args.seed)
    print(f"wrote {args.num_images} images and gt.txt to {out}")  # noqa: T201


if __name__ == "__main__":
    main()
