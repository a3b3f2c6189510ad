"""Resumable runs: ``checkpoints/state.json`` plus the model (and optimizer) it points to.

The model file is written first, then the state that names it, each atomically: a run killed at
any instant leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
from absl import logging

from afp_tf import io_utils


class RunStore:
    """The checkpoints of one workdir."""

    def __init__(self, workdir: str | os.PathLike):
        self.dir = Path(workdir) / "checkpoints"
        self.state_path = self.dir / "state.json"

    def load(self) -> dict[str, Any] | None:
        """The last saved state, or None for a fresh workdir."""
        if not self.state_path.exists():
            return None
        try:
            return io_utils.read_json(self.state_path)
        except ValueError as e:
            raise RuntimeError(
                f"{self.state_path} is unreadable ({e}); delete the workdir's checkpoints/ "
                "folder to start over."
            ) from e

    def save(
        self,
        state: dict[str, Any],
        *,
        model: keras.Model | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
        tag: str = "latest",
    ) -> None:
        """Saves ``model``/``optimizer`` under ``tag`` (if given), then ``state`` naming them.

        ``state`` is updated in place with the names of the files it now points to.
        """
        if model is not None:
            model_path = self.dir / f"{tag}.keras"
            io_utils.save_model(model, model_path)
            state["model_file"] = model_path.name
            state["optimizer_file"] = None
            if optimizer is not None and optimizer.variables:
                opt_path = self.dir / f"{tag}.optimizer.npz"
                io_utils.save_arrays(opt_path, [v.numpy() for v in optimizer.variables])
                state["optimizer_file"] = opt_path.name
        io_utils.write_json(self.state_path, state)
        self._remove_unreferenced(state)

    def load_model(self, state: dict[str, Any]) -> keras.Model:
        """The model the state points to (call inside the strategy scope)."""
        return keras.saving.load_model(self.dir / state["model_file"], compile=False)

    def restore_optimizer(
        self, state: dict[str, Any], optimizer: keras.optimizers.Optimizer, model: keras.Model
    ) -> bool:
        """Restores optimizer slots saved with the state; False if there are none or they differ."""
        name = state.get("optimizer_file")
        if not name or not (self.dir / name).exists():
            return False
        arrays = io_utils.load_arrays(self.dir / name)
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        variables = optimizer.variables
        if len(arrays) != len(variables) or any(
            tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables, strict=True)
        ):
            logging.warning("Saved optimizer state does not fit the model; starting it afresh.")
            return False
        for v, a in zip(variables, arrays, strict=True):
            v.assign(a)
        return True

    def _remove_unreferenced(self, state: dict[str, Any]) -> None:
        keep = {self.state_path.name, state.get("model_file"), state.get("optimizer_file")}
        for path in self.dir.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)
