"""Draws synthetic GTSDB-layout frames with their ground-truth boxes: docs/img/gtsdb_synthetic.png.

    python benchmarks/plot_gtsdb_synth.py [--out docs/img/gtsdb_synthetic.png] [--seed 0]

Generates frames exactly as the benchmark config does (``scale=0.4``: 544x320 frames, signs at
their native 16-128 px), plus one sheet of the 43 class drawings, and writes one picture.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from afp_tf.data import gtsdb_layout, gtsdb_signs, gtsdb_synth  # noqa: E402

COLOURS = ("red", "orange", "deepskyblue", "lime")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/gtsdb_synthetic.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gtsdb_synth.generate(tmp, args.frames, scale=0.4, seed=args.seed)
        annotations = gtsdb_layout.read_annotations(tmp)
        fig = plt.figure(figsize=(14, 4.3 * (args.frames // 2) + 3.2))
        rows = args.frames // 2 + 1
        for i, ann in enumerate(annotations):
            ax = fig.add_subplot(rows, 2, i + 1)
            ax.imshow(gtsdb_layout.read_ppm(ann.path))
            for (x1, y1, x2, y2), c in zip(ann.boxes, ann.classes, strict=True):
                colour = COLOURS[gtsdb_signs.CLASS_TO_CATEGORY[int(c)]]
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False,
                                           color=colour, lw=1.2))  # fmt: skip
                ax.text(x1, y1 - 3, str(int(c)), color=colour, fontsize=7)
            ax.set_title(f"{ann.path.name}: {len(ann.classes)} signs", fontsize=9)
            ax.axis("off")
    sheet = fig.add_subplot(rows, 1, rows)
    tiles = [gtsdb_signs.render_sign(c, 40) for c in range(gtsdb_signs.NUM_CLASSES)]
    canvas = [[255.0] * 3] * 0
    import numpy as np  # noqa: PLC0415

    canvas = np.full((2 * 44, 22 * 44, 3), 255.0)
    for c, (rgb, alpha) in enumerate(tiles):
        y, x = (c // 22) * 44 + 2, (c % 22) * 44 + 2
        canvas[y : y + 40, x : x + 40] = rgb * alpha[..., None] + 255 * (1 - alpha[..., None])
    sheet.imshow(canvas.astype(np.uint8))
    sheet.set_title(
        "the 43 classes (ids 0-21, 22-42); box colours: "
        + ", ".join(f"{n} {c}" for n, c in zip(gtsdb_signs.CATEGORY_NAMES, COLOURS, strict=True)),
        fontsize=9,
    )
    sheet.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
