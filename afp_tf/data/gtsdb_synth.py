"""Synthetic traffic-sign scenes written in the GTSDB (FullIJCNN2013) layout.

Each image is a binary PPM (P6) named ``00000.ppm``, ``00001.ppm``, ... and ``gt.txt`` holds one
``file;x1;y1;x2;y2;class_id`` line per sign, exactly like the real benchmark, so the same reader
serves both. A scene: sky, horizon and road with lane marks, textured blocks (buildings,
foliage) and distractors in sign colours (lights, shop signs); 0-4 signs of the 43 classes
(:mod:`afp_tf.data.gtsdb_signs`: per-class pictograms) on poles, each warped by a rotation and
a perspective (yaw) homography, lit with its own gain and shading gradient, sometimes partly
occluded by a foreground block; then frame-wide lighting (gain, gamma, colour cast), motion blur
along a random direction and sensor noise. Sign sizes follow a log-normal distribution
(median 30 px) clipped to GTSDB's 16-128 px, times ``sign_scale``. About 15 % of the images
have no sign (negatives, ``negative_fraction``). ``generate(..., seed)`` is deterministic:
image ``i`` depends only on ``(seed, i)``.

Frame size: ``scale`` of the real 1360x800. Signs keep their native size unless ``sign_scale``
says otherwise, so smaller frames (e.g. ``scale=0.4``: 544x320) still hold signs of GTSDB's
pixel sizes (a frame-sized crop of a real frame, not a shrunk frame).

This data is for tests and the explicitly named offline config ``ssd_gtsdb_synthetic``; it is
never used in place of the real benchmark.

CLI::

  python -m afp_tf.data.gtsdb_synth --out DIR --num-images N [--scale 0.4] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from afp_tf import io_utils
from afp_tf.data.gtsdb_signs import (  # noqa: F401 - the class tables are part of this API
    CATEGORY_CLASSES,
    CATEGORY_NAMES,
    CLASS_TO_CATEGORY,
    NUM_CLASSES,
    render_sign,
)

FULL_SIZE = (1360, 800)  # (width, height) of the real GTSDB images
SIGN_SIZE = (16, 128)  # GTSDB's range of sign sizes, pixels
_DISTRACTOR_COLOURS = ((200, 30, 30), (30, 70, 190), (240, 200, 30), (235, 235, 235))


def write_ppm(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an (H, W, 3) uint8 array as a binary PPM (P6), atomically."""
    height, width, _ = image.shape
    with io_utils.atomic_path(path) as tmp:
        tmp.write_bytes(f"P6\n{width} {height}\n255\n".encode() + image.astype(np.uint8).tobytes())


def _noise(rng, height, width, cell) -> np.ndarray:
    """Smooth value noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    y, x = np.arange(height) / cell, np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _background(rng, width: int, height: int) -> np.ndarray:
    horizon = int(height * rng.uniform(0.35, 0.6))
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = rng.uniform(150, 235, 3) * (1 - 0.3 * t) + np.array([0, 5, 20])
    image = np.broadcast_to(sky, (height, width, 3)).astype(np.float32).copy()
    road = rng.uniform(60, 120) + 20 * _noise(rng, height - horizon, width, 4)
    image[horizon:] = road[..., None] * np.array([1.0, 1.0, 1.03])
    for _ in range(int(rng.integers(2, 5))):  # lane marks
        x = rng.uniform(0.1, 0.9) * width
        ys = np.arange(horizon, height)
        xs = (x + (ys - horizon) * rng.uniform(-2, 2)).astype(int)
        w = np.maximum(1, (ys - horizon) // 40)
        for yy, xx, ww in zip(ys[::2], xs[::2], w[::2], strict=True):
            image[yy, max(0, xx - ww) : max(0, xx + ww)] = 210
    for _ in range(int(rng.integers(4, 12))):  # buildings and foliage: textured blocks
        w, h = int(rng.uniform(0.05, 0.3) * width), int(rng.uniform(0.1, 0.5) * height)
        x, y = int(rng.integers(0, width)), max(0, horizon - h + int(rng.integers(0, 20)))
        tone = rng.choice([[60, 110, 50], [120, 100, 80], [150, 150, 150], [90, 80, 70]])
        tex = 1 + 0.3 * _noise(rng, h, w, int(rng.integers(2, 8)))
        block = image[y : y + h, x : x + w]
        block[:] = (np.asarray(tone) * rng.uniform(0.7, 1.3))[None, None] * tex[
            : block.shape[0], : block.shape[1], None
        ]
    for _ in range(int(rng.integers(0, 6))):  # distractors in sign colours
        r = int(rng.uniform(4, 30))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        yy, xx = np.ogrid[-cy : height - cy, -cx : width - cx]
        mask = (np.abs(xx) <= r) & (np.abs(yy) <= r * rng.uniform(0.3, 1))
        if rng.random() < 0.5:
            mask = xx**2 + yy**2 <= r * r
        image[mask] = _DISTRACTOR_COLOURS[int(rng.integers(len(_DISTRACTOR_COLOURS)))]
    return image


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 projective map taking the 4 points ``src`` to ``dst``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1).reshape(3, 3)


def _paste_sign(image, rng, class_id, cx, cy, size) -> tuple[int, int, int, int] | None:
    """Warps, lights and pastes one sign centred at (cx, cy); returns its inclusive box."""
    height, width, _ = image.shape
    rgb, alpha = render_sign(class_id, size)
    yaw = rng.uniform(0, 0.45) * rng.choice([-1, 1])  # perspective: the far edge shrinks
    angle = rng.normal(0, 0.06)
    half = size / 2
    corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    depth = 1 + np.sin(yaw) * corners[:, 0] / size
    warped = corners * np.array([np.cos(yaw), 1.0]) / depth[:, None]
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    warped = warped @ rot.T + [cx, cy]
    h = _homography(warped, corners + half)  # frame -> sign pixels
    x1, y1 = np.floor(warped.min(0)).astype(int)
    x2, y2 = np.ceil(warped.max(0)).astype(int)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
    yy, xx = np.mgrid[y1 : y2 + 1, x1 : x2 + 1]
    p = np.stack([xx + 0.5, yy + 0.5, np.ones_like(xx)], -1) @ h.T
    sx, sy = p[..., 0] / p[..., 2] - 0.5, p[..., 1] / p[..., 2] - 0.5
    inside = (sx >= 0) & (sy >= 0) & (sx <= size - 1) & (sy <= size - 1)
    ix, iy = np.clip(np.round(sx).astype(int), 0, size - 1), np.clip(np.round(sy), 0, size - 1)
    a = np.where(inside, alpha[iy.astype(int), ix], 0.0)[..., None]
    shade = 1 + rng.uniform(-0.25, 0.25) * (sx - half) / size + rng.uniform(-0.2, 0.2) * sy / size
    colour = rgb[iy.astype(int), ix] * rng.uniform(0.45, 1.25) * shade[..., None]
    region = image[y1 : y2 + 1, x1 : x2 + 1]
    region[:] = region * (1 - a) + colour * a
    visible = np.argwhere(a[..., 0] > 0.5)
    if not len(visible):
        return None
    (by1, bx1), (by2, bx2) = visible.min(0), visible.max(0)
    return int(x1 + bx1), int(y1 + by1), int(x1 + bx2), int(y1 + by2)


def _occlude(image, rng, box) -> None:
    """Covers 10-40 % of a sign from one side with a foreground block (branch, pole, car)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    f = rng.uniform(0.1, 0.4)
    side = int(rng.integers(4))
    x1o, x2o = (
        (x1, x1 + int(w * f)) if side == 0 else (x2 - int(w * f), x2) if side == 1 else (x1, x2)
    )
    y1o, y2o = (
        (y2 - int(h * f), y2) if side == 2 else (y1, y1 + int(h * f)) if side == 3 else (y1, y2)
    )
    tone = rng.choice([[50, 90, 40], [70, 60, 50], [100, 100, 100]]) * rng.uniform(0.6, 1.3)
    tex = 1 + 0.3 * _noise(rng, y2o - y1o + 1, x2o - x1o + 1, 2)
    image[y1o : y2o + 1, x1o : x2o + 1] = tone[None, None] * tex[..., None]


def _motion_blur(image, rng) -> np.ndarray:
    length = int(rng.integers(2, 7))
    dx, dy = np.cos(a := rng.uniform(0, np.pi)), np.sin(a)
    out = np.zeros_like(image)
    for k in range(length):
        s = k - (length - 1) / 2
        out += np.roll(image, (round(s * dy), round(s * dx)), axis=(0, 1))
    return out / length


def _scene(rng, width, height, sign_scale, negatives) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    image = _background(rng, width, height)
    count = 0 if rng.random() < negatives else min(4, int(rng.geometric(0.55)))
    lo, hi = (max(6, round(s * sign_scale)) for s in SIGN_SIZE)
    hi = min(hi, int(0.8 * min(width, height)))
    signs: list[tuple[int, ...]] = []
    for _ in range(count * 10):  # rejection sampling: signs do not overlap
        if len(signs) == count:
            break
        size = int(
            np.clip(round(np.exp(rng.normal(np.log(30), 0.5)) * sign_scale), lo, max(lo, hi))
        )
        cx = rng.uniform(size, width - size) if width > 2 * size else width / 2
        cy = rng.uniform(size, max(size + 1, 0.8 * height - size))
        if any(
            abs(cx - (b[0] + b[2]) / 2) < size and abs(cy - (b[1] + b[3]) / 2) < size for b in signs
        ):
            continue
        pole = max(1, size // 12)
        image[int(cy + size / 2) :, int(cx) - pole : int(cx) + pole + 1] = rng.uniform(80, 160)
        class_id = int(rng.integers(0, NUM_CLASSES))
        box = _paste_sign(image, rng, class_id, cx, cy, size)
        if box is None:
            continue
        if rng.random() < 0.15:
            _occlude(image, rng, box)
        signs.append((*box, class_id))
    image = image * rng.uniform(0.55, 1.2) * rng.uniform(0.9, 1.1, 3)  # lighting, colour cast
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.35:
        image = _motion_blur(image, rng)
    image += rng.normal(0, rng.uniform(1, 6), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), signs


def generate(
    out_dir: str | os.PathLike,
    num_images: int,
    *,
    scale: float = 1.0,
    sign_scale: float = 1.0,
    seed: int = 0,
    negative_fraction: float = 0.15,
) -> Path:
    """Writes ``num_images`` synthetic scenes and their ``gt.txt`` into ``out_dir``.

    Args:
      out_dir: target directory (created). ``gt.txt`` is written last, atomically.
      num_images: number of PPM images.
      scale: frame size relative to the real 1360x800.
      sign_scale: sign size relative to GTSDB's native 16-128 px (capped by the frame).
      seed: random seed; the same arguments give the same files.
      negative_fraction: expected fraction of images without any sign.

    Returns:
      ``out_dir`` as a Path.
    """
    if num_images < 1 or not 0.01 <= scale <= 1.0 or not 0.05 <= sign_scale <= 1.0:
        raise ValueError(
            f"need num_images >= 1, 0.01 <= scale <= 1 and 0.05 <= sign_scale <= 1, got "
            f"{num_images}, {scale}, {sign_scale}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width, height = (max(32, round(s * scale)) for s in FULL_SIZE)
    lines = []
    for index in range(num_images):
        name = f"{index:05d}.ppm"
        rng = np.random.default_rng([seed, index])
        image, signs = _scene(rng, width, height, sign_scale, negative_fraction)
        lines += [f"{name};{x1};{y1};{x2};{y2};{c}" for x1, y1, x2, y2, c in signs]
        write_ppm(out_dir / name, image)
    io_utils.write_text(out_dir / "gt.txt", "\n".join(lines) + ("\n" if lines else ""))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="Output directory.")
    parser.add_argument("--num-images", type=int, default=900, help="Images (the real set: 900).")
    parser.add_argument("--scale", type=float, default=1.0, help="Frame size relative to 1360x800.")
    parser.add_argument("--sign-scale", type=float, default=1.0, help="Sign size vs native.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    args = parser.parse_args(argv)
    out = generate(
        args.out, args.num_images, scale=args.scale, sign_scale=args.sign_scale, seed=args.seed
    )
    print(f"wrote {args.num_images} images and gt.txt to {out}")  # noqa: T201


if __name__ == "__main__":
    main()
