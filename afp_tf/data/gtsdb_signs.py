"""The 43 GTSDB sign classes, their four super-categories, and a drawing of each class.

Each class is drawn as its real sign is designed: the super-category's shape and colours
(prohibitory: white disc, red rim; danger: white triangle, red rim; mandatory: blue disc, white
symbol; other: the priority diamond, yield triangle, stop octagon, no-entry disc and the grey
"end of" discs) and a class-specific pictogram built from a few primitives (digits of a 3x5
font, bars, arrows, dots, rings, vehicle blocks), so that the 43-class labels are learnable
from appearance and not only the four shapes. :func:`render_sign` returns an RGB image and
its coverage (alpha), anti-aliased by 3x3 supersampling; the scene generator
(:mod:`afp_tf.data.gtsdb_synth`) warps, lights, blurs and occludes it.
"""

from __future__ import annotations

import numpy as np

CATEGORY_NAMES = ("prohibitory", "danger", "mandatory", "other")
# The standard GTSDB map from the 43 class ids to the four super-categories.
CATEGORY_CLASSES = (
    (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16),
    (11, *range(18, 32)),
    tuple(range(33, 41)),
    (6, 12, 13, 14, 17, 32, 41, 42),
)
CLASS_TO_CATEGORY = {c: k for k, classes in enumerate(CATEGORY_CLASSES) for c in classes}
NUM_CLASSES = 43
# The categories the GTSDB competition (IJCNN 2013) scores: prohibitory, danger, mandatory;
# "other" signs are annotated but not scored.
COMPETITION_CATEGORIES = (0, 1, 2)

RED, WHITE, BLUE = (200, 25, 35), (238, 238, 232), (25, 70, 180)
YELLOW, BLACK, GREY = (245, 190, 20), (20, 20, 20), (120, 120, 120)
GREEN, ORANGE = (30, 160, 60), (240, 140, 20)

_FONT = {  # 3x5 glyphs, rows top to bottom
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "S": ("111", "100", "111", "001", "111"),
    "T": ("111", "010", "010", "010", "010"),
    "O": ("111", "101", "101", "101", "111"),
    "P": ("111", "101", "111", "100", "100"),
}
_SPEED = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}
_END = (("bar", -0.6, 0.6, 0.6, -0.6, 0.07, BLACK),)  # the diagonal of the "end of" signs
_CAR = (("box", -0.25, -0.2, 0.25, 0.25),)
_TRUCK = (("box", -0.45, -0.3, 0.3, 0.25), ("box", 0.3, -0.1, 0.5, 0.25))
_FIGURE = (
    ("dot", 0, -0.45, 0.1),
    ("bar", 0, -0.3, 0, 0.1, 0.07),
    ("bar", 0, 0.1, -0.15, 0.45, 0.06),
    ("bar", 0, 0.1, 0.15, 0.45, 0.06),
    ("bar", -0.2, -0.15, 0.2, -0.15, 0.05),
)


def _shift(items, dx=0.0, dy=0.0, scale=1.0, colour=None):
    out = []
    for kind, *args in items:
        col = [a for a in args if isinstance(a, tuple)]
        nums = [a for a in args if not isinstance(a, tuple)]
        if kind == "dot":
            nums = [nums[0] * scale + dx, nums[1] * scale + dy, nums[2] * scale]
        elif kind in ("bar", "arrow"):
            xy = [v * scale + (dx if i % 2 == 0 else dy) for i, v in enumerate(nums[:4])]
            nums = xy + [v * scale for v in nums[4:]]
        elif kind == "box":
            nums = [v * scale + (dx if i % 2 == 0 else dy) for i, v in enumerate(nums)]
        out.append((kind, *nums, *([colour] if colour else col)))
    return tuple(out)


def _pictograms() -> dict[int, tuple]:
    p = {c: (("text", s),) for c, s in _SPEED.items()}
    p[9] = _shift(_CAR, -0.28, scale=0.8) + _shift(_CAR, 0.28, scale=0.8, colour=RED)
    p[10] = _shift(_TRUCK, -0.2, scale=0.6, colour=RED) + _shift(_CAR, 0.35, scale=0.7)
    p[15] = ()
    p[16] = _shift(_TRUCK, scale=0.9)
    p[11] = (("bar", 0, -0.55, 0, 0.35, 0.1), ("bar", -0.35, -0.1, 0.35, -0.1, 0.06))
    p[18] = (("bar", 0, -0.45, 0, 0.1, 0.1), ("dot", 0, 0.3, 0.09))
    p[19] = (("bar", 0.1, 0.4, 0.1, -0.1, 0.08), ("arrow", 0.1, -0.1, -0.3, -0.45, 0.08))
    p[20] = (("bar", -0.1, 0.4, -0.1, -0.1, 0.08), ("arrow", -0.1, -0.1, 0.3, -0.45, 0.08))
    p[21] = (
        ("bar", 0, 0.4, 0.2, 0.05, 0.07),
        ("bar", 0.2, 0.05, -0.2, -0.2, 0.07),
        ("arrow", -0.2, -0.2, 0.05, -0.5, 0.07),
    )
    p[22] = (("dot", -0.22, 0.3, 0.18), ("dot", 0.22, 0.3, 0.18), ("box", -0.5, 0.3, 0.5, 0.45))
    p[23] = _shift(_CAR, dy=-0.2, scale=0.8) + (
        ("bar", -0.35, 0.25, -0.1, 0.45, 0.05),
        ("bar", 0.1, 0.45, 0.35, 0.25, 0.05),
    )
    p[24] = (
        ("bar", -0.2, -0.5, -0.2, 0.4, 0.07),
        ("bar", 0.25, 0.4, 0.25, 0.0, 0.07),
        ("bar", 0.25, 0.0, 0.05, -0.5, 0.07),
    )
    p[25] = _shift(_FIGURE, -0.1, scale=0.8) + (("box", 0.15, 0.25, 0.5, 0.45),)
    p[26] = (
        ("dot", 0, -0.35, 0.13, RED),
        ("dot", 0, 0.0, 0.13, YELLOW),
        ("dot", 0, 0.35, 0.13, GREEN),
    )
    p[27] = _FIGURE
    p[28] = _shift(_FIGURE, -0.2, 0.05, 0.75) + _shift(_FIGURE, 0.22, 0.12, 0.6)
    p[29] = (
        ("ring", -0.28, 0.2, 0.2, 0.05),
        ("ring", 0.28, 0.2, 0.2, 0.05),
        ("bar", -0.28, 0.2, 0.05, -0.2, 0.06),
        ("bar", 0.05, -0.2, 0.28, 0.2, 0.06),
    )
    p[30] = tuple(("bar", *_spoke(a), 0.06) for a in (0, 60, 120))
    p[31] = (
        ("bar", -0.35, 0.0, 0.3, -0.2, 0.14),
        ("dot", 0.38, -0.35, 0.1),
        ("bar", -0.3, 0.0, -0.35, 0.4, 0.05),
        ("bar", 0.2, -0.15, 0.25, 0.35, 0.05),
    )
    white = {
        33: (("bar", -0.2, 0.5, -0.2, -0.1, 0.1), ("arrow", -0.2, -0.1, 0.5, -0.1, 0.1)),
        34: (("bar", 0.2, 0.5, 0.2, -0.1, 0.1), ("arrow", 0.2, -0.1, -0.5, -0.1, 0.1)),
        35: (("arrow", 0, 0.55, 0, -0.55, 0.12),),
        36: (("arrow", -0.15, 0.55, -0.15, -0.55, 0.09), ("arrow", -0.15, 0.1, 0.5, 0.1, 0.08)),
        37: (("arrow", 0.15, 0.55, 0.15, -0.55, 0.09), ("arrow", 0.15, 0.1, -0.5, 0.1, 0.08)),
        38: (("arrow", -0.35, -0.35, 0.4, 0.4, 0.1),),
        39: (("arrow", 0.35, -0.35, -0.4, 0.4, 0.1),),
        40: (
            ("ring", 0, 0, 0.38, 0.09),
            ("dot", 0.38, -0.05, 0.14),
            ("dot", -0.2, 0.33, 0.14),
            ("dot", -0.2, -0.33, 0.14),
        ),
    }
    for c, items in white.items():
        p[c] = tuple((k, *a, WHITE) for k, *a in items)
    p[6] = (("text", "80", GREY),) + _END
    p[32] = tuple(
        ("bar", -0.6 + d, 0.6 + d, 0.6 + d, -0.6 + d, 0.03, GREY) for d in (-0.2, -0.1, 0, 0.1, 0.2)
    )
    p[41] = _shift(p[9], colour=GREY) + _END
    p[42] = _shift(p[10], colour=GREY) + _END
    p[12] = p[13] = ()
    p[14] = (("text", "STOP", WHITE),)
    p[17] = (("box", -0.6, -0.14, 0.6, 0.14, WHITE),)
    return p


def _spoke(degrees: float) -> tuple[float, float, float, float]:
    a = np.deg2rad(degrees)
    return -0.45 * np.cos(a), -0.45 * np.sin(a), 0.45 * np.cos(a), 0.45 * np.sin(a)


PICTOGRAMS = _pictograms()
_STYLE = {  # class -> (shape, rim colour, fill colour, rim width)
    **{c: ("disc", RED, WHITE, 0.2) for c in CATEGORY_CLASSES[0]},
    **{c: ("triangle", RED, WHITE, 0.28) for c in CATEGORY_CLASSES[1]},
    **{c: ("disc", WHITE, BLUE, 0.05) for c in CATEGORY_CLASSES[2]},
    **{c: ("disc", GREY, WHITE, 0.04) for c in (6, 32, 41, 42)},
    12: ("diamond", WHITE, YELLOW, 0.3),
    13: ("triangle_down", RED, WHITE, 0.3),
    14: ("octagon", WHITE, RED, 0.06),
    17: ("disc", WHITE, RED, 0.04),
}


def _shape(kind: str, u: np.ndarray, v: np.ndarray, s: float) -> np.ndarray:
    """Inside-mask of a shape of half-size ``s`` (1 = the full sign)."""
    if kind == "disc":
        return np.hypot(u, v) <= s
    if kind in ("triangle", "triangle_down"):
        v = v if kind == "triangle" else -v
        return (v <= 0.8 * s) & (np.abs(u) * 1.73 <= v + 0.92 * s)
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= s
    if kind == "octagon":
        return np.maximum(np.maximum(np.abs(u), np.abs(v)), (np.abs(u) + np.abs(v)) / 1.41) <= s
    raise ValueError(f"unknown sign shape {kind!r}")


def _segment(u, v, x1, y1, x2, y2, width):
    d = np.array([x2 - x1, y2 - y1])
    t = np.clip(((u - x1) * d[0] + (v - y1) * d[1]) / max(d @ d, 1e-9), 0, 1)
    return np.hypot(u - x1 - t * d[0], v - y1 - t * d[1]) <= width


def _item_mask(item, u, v) -> tuple[np.ndarray, tuple]:
    kind, *args = item
    colour = args[-1] if isinstance(args[-1], tuple) else BLACK
    nums = [a for a in args if not isinstance(a, tuple | str)]
    if kind == "text":
        return _text(args[0], u, v), colour
    if kind == "dot":
        return np.hypot(u - nums[0], v - nums[1]) <= nums[2], colour
    if kind == "ring":
        return np.abs(np.hypot(u - nums[0], v - nums[1]) - nums[2]) <= nums[3], colour
    if kind == "box":
        x1, y1, x2, y2 = nums
        return (u >= x1) & (u <= x2) & (v >= y1) & (v <= y2), colour
    x1, y1, x2, y2, width = nums
    mask = _segment(u, v, x1, y1, x2, y2, width)
    if kind == "arrow":  # a head of 3.5 bar widths at (x2, y2)
        d = np.array([x2 - x1, y2 - y1]) / max(np.hypot(x2 - x1, y2 - y1), 1e-9)
        along = (u - x2) * d[0] + (v - y2) * d[1]
        across = np.abs(-(u - x2) * d[1] + (v - y2) * d[0])
        head = 3.5 * width
        mask |= (along <= 0) & (along >= -head) & (across <= (along + head) * 0.9)
    return mask, colour


def _text(text: str, u, v) -> np.ndarray:
    cols = 4 * len(text) - 1
    cell = min(1.2 / cols, 0.13)
    x0, y0 = -cols * cell / 2, -2.5 * cell
    ci, ri = np.floor((u - x0) / cell).astype(int), np.floor((v - y0) / cell).astype(int)
    mask = np.zeros(u.shape, bool)
    for k, ch in enumerate(text):
        glyph = np.array([[c == "1" for c in row] for row in _FONT[ch]])
        gx = ci - 4 * k
        inside = (gx >= 0) & (gx < 3) & (ri >= 0) & (ri < 5)
        mask[inside] |= glyph[ri[inside], gx[inside]]
    return mask


def render_sign(class_id: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws class ``class_id`` at ``size`` x ``size`` px: RGB float32 (0-255) and alpha [0, 1]."""
    if class_id not in _STYLE:
        raise ValueError(f"class id {class_id} is not one of the {NUM_CLASSES} GTSDB classes.")
    n = 3 * size
    g = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    v, u = np.meshgrid(g, g, indexing="ij")
    kind, rim, fill, rim_width = _STYLE[class_id]
    outer = _shape(kind, u, v, 1.0)
    inner = _shape(kind, u, v, 1.0 - rim_width)
    rgb = np.zeros((n, n, 3), np.float32)
    rgb[outer] = rim
    rgb[inner] = fill
    shrink = 0.62 if kind in ("triangle", "triangle_down") else 0.78
    dy = 0.18 if kind == "triangle" else 0.0
    for item in PICTOGRAMS[class_id]:
        mask, colour = _item_mask(item, u / shrink, (v - dy) / shrink)
        rgb[mask & inner] = colour
    rgb = rgb.reshape(size, 3, size, 3, 3).mean(axis=(1, 3))
    alpha = outer.reshape(size, 3, size, 3).mean(axis=(1, 3)).astype(np.float32)
    return np.where(alpha[..., None] > 0, rgb / np.maximum(alpha[..., None], 1e-6), 0), alpha
