"""Predicted TFLite latency of a model's pruned versions, from probes timed on the target.

A latency table is measured once per model (the *reference*): every layer whose channel counts
pruning changes (``PROBED``) is converted alone, with its own config at its own input size, at a
small grid of input × output channel counts; so are the whole model and an empty one (the fixed
cost of one invoke). ``export/measure_latency_table.py`` times them with LiteRT alone — on this
machine (:func:`measure_table`) or on the target device — and :class:`LatencyTable` predicts

    predict(m) = T_model + Σ_L [t_L(counts of L in m) − t_L(counts of L in the reference)]

with ``t_L`` the probe's median less the empty probe's (at least 0), bilinear in the counts
between grid points and linear beyond (the nearest segment, so towards 0 channels), clamped at
0. Anchored on the measured model, ``predict(reference)`` is its measurement exactly; what the
counts do not change, and layers without a kernel (BatchNorm, pooling, merges), count at their
reference time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from absl import logging

from afp_tf import extras, io_utils
from afp_tf.export import artifacts
from afp_tf.export.checks import FORMATS
from afp_tf.export.latency import run_deploy_script

PROBED = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Dense,
)
FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # of a layer's counts: 4 x 4 probes per layer
MANIFEST = "probes.json"  # the name export/measure_latency_table.py reads
RUNNER = "measure_latency_table.py"
TABLE_NAME = "latency_table.json"  # the table cached in a workdir, probes in PROBES_DIR
PROBES_DIR = "latency_probes"
MIN_SAVING_MS = 1e-6  # the floor of a filter's saving (afp.per_cost divides by it)
# What makes a layer's time depend on more than its channel counts: check() compares them.
SIGNATURE = ("class", "kernel_size", "strides", "dilation_rate", "padding", "input_spatial")


def describe(model: keras.Model) -> dict[str, dict[str, Any]]:
    """Every ``PROBED`` layer of ``model`` by path (``outer/inner`` in nested models): its
    ``SIGNATURE`` and channel counts ``c_in``, ``c_out`` (a depthwise layer's ``c_out`` is
    ``c_in`` × its depth multiplier)."""
    out = {}
    for path, layer in _probed_layers(model):
        shape = list(layer.input.shape[1:])
        first = getattr(layer, "data_format", "channels_last") == "channels_first"
        c_in, spatial = (shape[0], shape[1:]) if first else (shape[-1], shape[:-1])
        if None in shape:
            raise ValueError(
                f"Layer {path!r} sees input shape {tuple(shape)}: the latency model needs a "
                "model built with a fixed input size."
            )
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            c_out = c_in * layer.depth_multiplier
        else:
            c_out = layer.units if isinstance(layer, keras.layers.Dense) else layer.filters
        out[path] = {
            "class": type(layer).__name__,
            **{k: _plain(getattr(layer, k, None)) for k in SIGNATURE[1:-1]},
            "input_spatial": spatial,
            "c_in": int(c_in),
            "c_out": int(c_out),
        }
    return out


def _probed_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from _probed_layers(layer, path + "/")
        elif isinstance(layer, PROBED):
            yield path, layer


def _hidden_layers(model: keras.Model) -> Iterator[str]:
    """Names of ``PROBED`` layers nested in a layer that is not a model (a composite layer)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _hidden_layers(layer)
        elif not isinstance(layer, PROBED):
            # Keras tracks sublayers here; no public accessor walks them.
            for inner in layer._flatten_layers(include_self=False):
                if isinstance(inner, PROBED):
                    yield f"{layer.name}/{inner.name}"


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def build_probes(
    model: keras.Model,
    fmt: str,
    out_dir: str | os.PathLike,
    fractions: Sequence[float] = FRACTIONS,
) -> dict:
    """Writes the probes of ``model`` as ``fmt`` files into ``out_dir`` with their manifest.

    Per ``PROBED`` layer, a one-layer model with the layer's config at batch 1 and its input
    size, at every input × output count that is one of ``fractions`` of its current counts
    (rounded, at least 1, multiples of ``groups``; a depthwise layer has one axis); plus the
    whole model (role ``"model"``) and an empty one (``"empty"``). Identical probes share a
    file. ``model`` must compute in float32 (``afp_tf.train.precision.as_float32``).

    Returns:
        The manifest, also written to ``out_dir/probes.json``: ``format``, ``model``, ``layers``
        (:func:`describe`) and ``probes`` (``file``, ``role``, ``layer``, ``c_in``, ``c_out``).

    Raises:
        ValueError: ``fmt`` is not a TFLite format, or the model has layers the latency model
            cannot see inside (composite layers) or no fixed input size.
        ExportError: a probe failed to convert.
    """
    if fmt not in FORMATS or FORMATS[fmt].runner != "run_tflite.py":
        tflite = [n for n, f in FORMATS.items() if f.runner == "run_tflite.py"]
        raise ValueError(f"Latency probes are TFLite models: fmt={fmt!r} is not one of {tflite}.")
    layers = describe(model)
    hidden = next(_hidden_layers(model), None)
    if hidden is not None:
        raise ValueError(
            f"Layer {hidden!r} is inside a composite layer of {model.name!r}, which the "
            "latency model does not look into; rebuild the model with the functional API."
        )
    out = artifacts.prepare_out_dir(out_dir)
    files: dict[str, str] = {}  # probe config -> its file
    probes = []
    for path, layer in _probed_layers(model):
        info, config = layers[path], _probe_config(layer)
        for c_in, c_out in _grid(layer, info, fractions):
            key = json.dumps([config, info["input_spatial"], c_in, c_out], default=str)
            if key not in files:
                files[key] = f"probe_{len(files):04d}.tflite"
                probe = _probe_model(layer, config, info, c_in, c_out)
                _write_tflite(probe, out / files[key], fmt)
            probes.append(_entry(files[key], "layer", path, c_in, c_out))
    _write_tflite(model, out / "model.tflite", fmt)
    probes.append(_entry("model.tflite", "model"))
    empty = keras.Input((1,), batch_size=1)
    _write_tflite(keras.Model(empty, keras.layers.ReLU()(empty)), out / "empty.tflite", fmt)
    probes.append(_entry("empty.tflite", "empty"))
    manifest = {"format": fmt, "model": model.name, "layers": layers, "probes": probes}
    io_utils.write_json(out / MANIFEST, manifest)
    return manifest


def _entry(file: str, role: str, layer: str | None = None, c_in=None, c_out=None) -> dict:
    return {"file": file, "role": role, "layer": layer, "c_in": c_in, "c_out": c_out}


def _grid(layer, info: dict, fractions: Sequence[float]) -> list[tuple[int, int]]:
    """The ``(c_in, c_out)`` counts a layer is probed at."""
    step = getattr(layer, "groups", 1) or 1

    def counts(n: int) -> list[int]:
        return sorted({max(step, round(f * n / step) * step) for f in fractions})

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [(c, c * layer.depth_multiplier) for c in counts(info["c_in"])]
    return [(a, b) for a in counts(info["c_in"]) for b in counts(info["c_out"])]


def _probe_config(layer) -> dict:
    """``layer``'s config for a probe: float32, random weights, nothing that training needs."""
    config = {**layer.get_config(), "name": "probe", "dtype": "float32"}
    for key in config:
        if key.endswith(("_regularizer", "_constraint")):
            config[key] = None
        elif key.endswith("_initializer"):
            config[key] = "random_uniform"
    return config


def _probe_model(layer, config: dict, info: dict, c_in: int, c_out: int) -> keras.Model:
    if isinstance(layer, keras.layers.Dense):
        config = {**config, "units": c_out}
    elif not isinstance(layer, keras.layers.DepthwiseConv2D):
        config = {**config, "filters": c_out}
    first = config.get("data_format") == "channels_first"
    shape = [c_in, *info["input_spatial"]] if first else [*info["input_spatial"], c_in]
    x = keras.Input(shape, batch_size=1)
    return keras.Model(x, type(layer).from_config(config)(x))


def _write_tflite(model: keras.Model, path: Path, fmt: str) -> None:
    """``model`` (one fixed-size input) as a batch-1 ``fmt`` file; int8 calibrated on noise,
    which is all that timing needs."""
    if len(model.inputs) != 1 or None in model.inputs[0].shape[1:]:
        raise ValueError(
            f"The latency model times models with one input of a fixed size; {model.name!r} "
            f"has inputs {[tuple(x.shape) for x in model.inputs]}."
        )
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])

    def serve(image):
        outputs = keras.tree.flatten(model(image, training=False))
        return {f"output_{i}": y for i, y in enumerate(outputs)}

    rep = None
    if FORMATS[fmt].needs_calibration:
        rep = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".probe.") as tmp:
        saved = Path(tmp) / "saved_model"
        artifacts.write_saved_model(model, shape, saved, "output", endpoint=serve, batch=1)
        artifacts.convert(fmt, saved, path, rep, artifacts.layer_names(model))


class LatencyTable:
    """The timed probes of one reference model (the JSON ``measure_latency_table.py`` writes).

    Attributes:
      data: the table JSON: ``format``, ``threads``, ``runs``, ``runtime``, ``machine``,
        ``layers`` (:func:`describe` of the reference), ``probes`` with ``median_ms``.
      format, threads: what the probes were converted to and timed with.
      model_ms: the reference model's median; overhead_ms: the empty probe's.
      deploy: ``model -> model`` applied to every model before it is checked or predicted,
        its deployed form (``Task.deployed``: a detector trained on crops, at its frame size);
        None: the model as given.
    """

    def __init__(
        self, data: Mapping[str, Any], deploy: Callable[[keras.Model], keras.Model] | None = None
    ):
        missing = sorted({"format", "threads", "layers", "probes"} - set(data))
        if missing:
            raise ValueError(f"Not a latency table: no {', '.join(missing)}.")
        self.data = dict(data)
        self.deploy = deploy
        self.format, self.threads = data["format"], int(data["threads"])
        self.layers: dict[str, dict] = dict(data["layers"])
        roles: dict[str, list[dict]] = {}
        for probe in data["probes"]:
            roles.setdefault(probe["role"], []).append(probe)
        for role in ("model", "empty"):
            if len(roles.get(role, ())) != 1:
                n = len(roles.get(role, ()))
                raise ValueError(f"A latency table has one {role!r} probe, not {n}.")
        self.model_ms = float(roles["model"][0]["median_ms"])
        self.overhead_ms = float(roles["empty"][0]["median_ms"])
        self._grids = {name: self._grid(name, roles.get("layer", [])) for name in self.layers}

    def _grid(self, name: str, probes: list[dict]) -> tuple:
        """``(c_in values, c_out values or None, times)`` of a layer, overhead subtracted."""
        mine = [p for p in probes if p["layer"] == name]
        ms = {(p["c_in"], p["c_out"]): max(p["median_ms"] - self.overhead_ms, 0.0) for p in mine}
        xs = sorted({a for a, _ in ms})
        if self.layers[name]["class"] == "DepthwiseConv2D":  # one axis: the channels
            return np.array(xs, float), None, np.array([ms[k] for k in sorted(ms)])
        ys = sorted({b for _, b in ms})
        if not xs or len(ms) != len(xs) * len(ys):
            raise ValueError(f"The latency table's probes of layer {name!r} are not a full grid.")
        times = np.array([[ms[(a, b)] for b in ys] for a in xs])
        return np.array(xs, float), np.array(ys, float), times

    @classmethod
    def load(
        cls, path: str | os.PathLike, deploy: Callable[[keras.Model], keras.Model] | None = None
    ) -> LatencyTable:
        """The table at ``path`` (``measure_latency_table.py --out``); ``deploy`` as above."""
        return cls(io_utils.read_json(path), deploy)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the table to ``path`` atomically."""
        io_utils.write_json(path, self.data)

    def layer_ms(self, name: str, c_in: float, c_out: float) -> float:
        """Time of layer ``name`` at ``c_in`` × ``c_out`` channels, overhead excluded (ms)."""
        if name not in self._grids:
            raise ValueError(f"The latency table has no layer {name!r}.")
        xs, ys, times = self._grids[name]
        if ys is not None:  # along c_out for every c_in of the grid, then along c_in
            times = _linear(ys, times.T, c_out)
        return max(float(_linear(xs, times, c_in)), 0.0)

    def check(self, model: keras.Model) -> None:
        """Raises ValueError naming the first layer of ``model`` that the table lacks or that it
        measured with another kernel size, stride, padding or input size (another model's
        table), or the first table layer that ``model`` lacks."""
        self._counts(model)

    def _counts(self, model: keras.Model) -> dict[str, dict[str, Any]]:
        found = describe(self.deploy(model) if self.deploy else model)
        advice = "the table was measured on another model: measure one for this model"
        for name, info in found.items():
            ref = self.layers.get(name)
            if ref is None:
                raise ValueError(
                    f"The latency table has no layer {name!r} of {model.name!r}; {advice}."
                )
            for key in SIGNATURE:
                if info[key] != ref[key]:
                    raise ValueError(
                        f"Layer {name!r} of {model.name!r} has {key} {info[key]}, the latency "
                        f"table's {ref[key]}; {advice}."
                    )
        missing = [name for name in self.layers if name not in found]
        if missing:
            raise ValueError(f"{model.name!r} has no layer {missing[0]!r}; {advice}.")
        return found

    def predict(self, model: keras.Model) -> float:
        """Predicted batch-1 latency of ``model`` (a pruned version of the reference), ms."""
        total = self.model_ms
        for name, now in self._counts(model).items():
            ref = self.layers[name]
            total += self.layer_ms(name, now["c_in"], now["c_out"])
            total -= self.layer_ms(name, ref["c_in"], ref["c_out"])
        return total


def _linear(xs: np.ndarray, values: np.ndarray, x: float) -> np.ndarray:
    """``values`` (first axis along the sorted ``xs``) at ``x``: linear between grid points,
    the nearest segment's line beyond them; constant on a grid of one point."""
    if len(xs) == 1:
        return values[0]
    i = int(np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 2))
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    return values[i] + t * (values[i + 1] - values[i])


def measure_table(
    model: keras.Model,
    fmt: str,
    out_dir: str | os.PathLike,
    *,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    fractions: Sequence[float] = FRACTIONS,
    table_path: str | os.PathLike | None = None,
) -> LatencyTable:
    """Builds the probes of ``model`` in ``out_dir`` (:func:`build_probes`) and times them on
    this machine with ``export/measure_latency_table.py`` in a subprocess that loads only
    LiteRT; the table goes to ``table_path`` (default ``out_dir/table.json``).

    Raises:
        MissingExtraError: ai-edge-litert is not installed.
        ExportError: a probe failed to convert, or timing failed.
    """
    extras.require("ai_edge_litert", "Measuring a latency table")
    build_probes(model, fmt, out_dir, fractions)
    path = Path(table_path) if table_path else Path(out_dir) / "table.json"
    flags = {"threads": threads, "runs": runs, "warmup": warmup, "out": path}
    args = [str(out_dir), *(f"--{k}={v}" for k, v in flags.items())]
    run_deploy_script(RUNNER, args, threads=threads, what=f"Timing the probes in {out_dir}")
    return LatencyTable.load(path)


def time_together(
    paths: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    *,
    threads: int = 1,
    runs: int = 50,
) -> list[dict]:
    """Median and p90 ms (``median_ms``, ``p90_ms``) of every TFLite file in ``paths``, in
    order, timed in one LiteRT process by ``export/measure_latency_table.py``: round robin in
    blocks of calls (the first untimed), so that a shared CPU's drift hits them alike and their
    ratios hold. The copies and the timing JSON (``timed.json``) go to ``folder``.

    Raises:
        MissingExtraError: ai-edge-litert is not installed.
        ExportError: timing failed.
    """
    extras.require("ai_edge_litert", "Timing TFLite artifacts")
    out = artifacts.prepare_out_dir(folder)
    probes = []
    for i, path in enumerate(paths):
        name = f"artifact{i}{Path(path).suffix}"
        shutil.copy(path, out / name)
        probes.append(_entry(name, "model"))
    io_utils.write_json(out / MANIFEST, {"format": "artifacts", "probes": probes})
    args = [str(out), f"--threads={threads}", f"--runs={runs}", f"--out={out / 'timed.json'}"]
    run_deploy_script(RUNNER, args, threads=threads, what=f"Timing {len(probes)} artifacts")
    return io_utils.read_json(out / "timed.json")["probes"]


def load_or_measure(
    model: keras.Model,
    fmt: str,
    workdir: str | os.PathLike,
    *,
    table: str | os.PathLike = "",
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    deploy: Callable[[keras.Model], keras.Model] | None = None,
) -> LatencyTable:
    """The latency table for pruning ``model`` (float32): the one at ``table`` if given,
    measured elsewhere; else ``workdir/latency_table.json`` if it is of ``fmt`` at ``threads``
    and fits ``model`` (a resumed run); else one measured now into it (probes in
    ``workdir/latency_probes/``). With ``deploy`` (``Task.deployed``) the probes are of
    ``deploy(model)`` and the table applies it to every model it predicts.

    Raises:
        ValueError: ``table`` is of another format or does not fit ``model``.
    """
    if table:
        given = LatencyTable.load(table, deploy)
        if given.format != fmt:
            raise ValueError(
                f"Latency table {table} was measured as {given.format}, not {fmt}: set the "
                f"latency format to {given.format!r} or give a {fmt} table."
            )
        given.check(model)
        return given
    path = Path(workdir) / TABLE_NAME
    if path.is_file():
        cached = LatencyTable.load(path, deploy)
        try:
            if (cached.format, cached.threads) == (fmt, threads):
                cached.check(model)
                return cached
        except ValueError as e:
            logging.info("The latency table %s does not fit the model (%s).", path, e)
    logging.info("Measuring a %s latency table of %s (%d threads).", fmt, model.name, threads)
    probes = Path(workdir) / PROBES_DIR
    measured = measure_table(
        deploy(model) if deploy else model,
        fmt,
        probes,
        threads=threads,
        runs=runs,
        warmup=warmup,
        table_path=path,
    )
    measured.deploy = deploy
    return measured
