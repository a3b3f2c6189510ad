"""The held-out splits every dataset carves out of its training split: validation and acceptance.

A permutation of the training split seeded by ``seed``: validation is its first
``val_fraction`` (at least one example), the acceptance split (pruning decisions only, never
trained on or early-stopped on) the next ``accept_fraction`` (none when 0, else at least one),
training the rest. Validation does not depend on ``accept_fraction``. Classification,
GTSDB and COCO-format data all split this way.
"""

from __future__ import annotations

import numpy as np


def sizes(
    n: int, val_fraction: float, accept_fraction: float, what: str = "training examples"
) -> tuple[int, int]:
    """``(validation, acceptance)`` sizes held out of ``n`` training examples.

    Raises:
      ValueError: a fraction out of range, or no example left to train on; the message names
        ``what`` was split.
    """
    num_val = max(1, round(n * val_fraction))
    num_accept = max(1, round(n * accept_fraction)) if accept_fraction else 0
    if not 0 < val_fraction < 1 or not 0 <= accept_fraction < 1 or n - num_val - num_accept < 1:
        raise ValueError(
            f"Cannot hold out val_fraction={val_fraction} and accept_fraction={accept_fraction} "
            f"of {n} {what}: validation and acceptance (at least one each when asked for) must "
            "leave at least one to train on."
        )
    return num_val, num_accept


def hold_out(
    n: int, val_fraction: float, accept_fraction: float, seed, what: str = "training examples"
) -> dict[str, np.ndarray]:
    """Indices into a training split of ``n`` examples: ``train``, ``val`` and ``accept``, each
    in the seeded order (sort them for file order). Raises as :func:`sizes` does."""
    num_val, num_accept = sizes(n, val_fraction, accept_fraction, what)
    order = np.random.default_rng(seed).permutation(n)
    return {
        "train": order[num_val + num_accept :],
        "val": order[:num_val],
        "accept": order[num_val : num_val + num_accept],
    }
