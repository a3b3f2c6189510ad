"""The base experiment config (every default lives here), overrides and validation.

Experiment files in ``configs/`` start from :func:`base_config` and change what differs.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import ml_collections

from afp_tf import resources
from afp_tf.export import checks
from afp_tf.method import options as options_lib
from afp_tf.method.options import PruneOptions

DEFAULT_CONFIG = "lenet5_fashion_mnist"


class ConfigError(ValueError):
    """A config name, key or value is wrong; the message says how to fix it."""


def base_config() -> ml_collections.ConfigDict:
    """Returns the config with every key and its default."""
    c = ml_collections.ConfigDict()
    c.name = "experiment"
    c.seed = 0
    c.task = "classification"  # classification | detection | frcnn

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet5"
    c.model.width = 1.0  # width multiplier (VGG/ResNet width, MobileNet alpha); 1.0 = the paper's

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"
    c.data.source = "auto"  # auto | tfds | local | synthetic (detection only)
    c.data.data_dir = ""
    c.data.tfds_data_dir = ""
    c.data.download = True
    c.data.val_fraction = 0.1
    # Held out of training like val, for accept/reject decisions only (0 = decide on val).
    c.data.accept_fraction = 0.0
    c.data.train_subset = 0
    c.data.val_subset = 0
    c.data.accept_subset = 0
    c.data.test_subset = 0
    c.data.batch_size = 128
    c.data.eval_batch_size = 256
    c.data.augment = True
    c.data.image_size = 0
    c.data.channels = 0
    c.data.seed = 0
    c.data.imagenet_manual_dir = ""

    c.train = ml_collections.ConfigDict()
    c.train.strategy = "default"  # default | mirrored | multi_worker
    c.train.optimizer = "sgd"  # sgd | adam | adamw
    c.train.learning_rate = 0.01
    c.train.momentum = 0.9
    c.train.lr_schedule = "constant"  # baseline: constant | cosine (decays to 0 at its end)
    c.train.warmup_epochs = 0  # cosine only: linear warmup from 0 over the first epochs
    c.train.weight_decay = 0.0
    c.train.baseline_epochs = 10
    c.train.baseline_model = ""  # a trained .keras model to start from instead of training one
    c.train.steps_per_epoch = 0  # 0 = a full pass over the training split
    c.train.progress = True
    c.train.mixed_precision = ""  # "" (float32) | mixed_float16 (loss scaled) | mixed_bfloat16
    c.train.jit_compile = False  # compile each training/evaluation step with XLA
    c.train.steps_per_execution = 1  # batches per compiled call (one host sync per call)

    c.orth = ml_collections.ConfigDict()
    c.orth.beta = 1e-3  # strength of the orthogonality regulariser; 0 turns it off
    c.orth.during_baseline = True

    # Every pruning default lives in options.PruneOptions (documented there).
    c.prune = ml_collections.ConfigDict(PruneOptions().to_dict())

    c.export = ml_collections.ConfigDict()
    c.export.enabled = True
    c.export.formats = "all"  # comma-separated format names, or "all"
    # FORMAT.CHECK=VALUE,... replacing a check's threshold, e.g. tflite_int8.max_metric_drop=0.02
    # (CHECK: max_rel_diff | max_metric_drop; VALUE: a number or none); see docs/export.md
    c.export.tolerances = ""
    c.export.samples = 256
    c.export.latency_runs = 50
    return c


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads ``NAME[:ARG]`` from ``configs/NAME.py`` (or a path to a .py file) and validates it."""
    name, _, arg = spec.partition(":")
    path = Path(name).expanduser()
    if path.suffix == ".py" and not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    if path.suffix != ".py":
        path = resources.config_dir() / f"{name}.py"
    if not path.is_file():
        known = available_configs()
        hint = difflib.get_close_matches(name, known, n=1)
        raise ConfigError(
            f"No config named {name!r} (looked for {path})."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
            + f" Available: {', '.join(known)}."
        )
    spec_obj = importlib.util.spec_from_file_location(f"afp_tf_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec_obj)
    spec_obj.loader.exec_module(module)
    cfg = module.get_config(arg or None)
    validate(cfg)
    return cfg


def available_configs() -> list[str]:
    """Names of the configs shipped with afp_tf (``configs/`` in the repository)."""
    return sorted(p.stem for p in resources.config_dir().glob("*.py") if not p.stem.startswith("_"))


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Applies ``a.b=value`` overrides in place, typed like the existing value.

    Raises:
      ConfigError: unknown key (with a suggestion) or a value of the wrong type.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} must look like --config.{key}=VALUE.")
        parent, leaf = _resolve(cfg, key)
        old = parent[leaf]
        parent[leaf] = _coerce(key, raw, old)
    validate(cfg)


def _resolve(cfg: ml_collections.ConfigDict, key: str):
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            if parts[:depth] == ["prune"] and part in options_lib.RENAMED:
                raise ConfigError(f"prune.{part} was renamed prune.{options_lib.RENAMED[part]}.")
            known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            hint = difflib.get_close_matches(part, known, n=1)
            where = ".".join(parts[:depth]) or "the config"
            raise ConfigError(
                f"Unknown config key {key!r}: {where} has no {part!r}."
                + (f" Did you mean {'.'.join(parts[:depth] + [hint[0]])!r}?" if hint else "")
            )
        if depth == len(parts) - 1:
            return node, part
        node = node[part]
    raise AssertionError("unreachable")


def _coerce(key: str, raw: str, old):
    if isinstance(old, ml_collections.ConfigDict):
        raise ConfigError(f"{key!r} is a section; set one of its keys: {', '.join(old.keys())}.")
    if isinstance(old, bool):
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key!r} takes true or false, not {raw!r}.")
    if isinstance(old, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{key!r} takes a {type(old).__name__}, not {raw!r}.") from None
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if old is not None and not isinstance(value, type(old)):
        raise ConfigError(f"{key!r} takes a {type(old).__name__}, not {raw!r}.")
    return value


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        hint = difflib.get_close_matches(value, choices, n=1)
        raise ConfigError(
            f"{key}={value!r} is not one of {', '.join(choices)}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
        )


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks values a run would otherwise fail on much later.

    Raises:
      ConfigError: naming the key, the bad value and the accepted range.
    """
    missing = [k for k in base_config().keys() if k not in cfg]  # noqa: SIM118
    _check(not missing, f"Config is missing sections {missing}; start it from base_config().")
    # The choice lists live with TensorFlow code, imported only once a config is validated, so
    # that main.py can route TensorFlow's native logs before TensorFlow is first imported.
    from afp_tf.train.distribute import STRATEGY_KINDS  # noqa: PLC0415

    _check_choice("train.strategy", cfg.train.strategy, STRATEGY_KINDS)
    prune_options(cfg)
    _check(0 <= cfg.data.accept_fraction < 1, "data.accept_fraction must be in [0, 1).")
    _check(
        cfg.data.val_fraction + cfg.data.accept_fraction < 1,
        "data.val_fraction + data.accept_fraction must be < 1 (the rest is trained on).",
    )
    _check(cfg.model.width > 0, f"model.width={cfg.model.width} must be > 0.")
    _validate_train(cfg.train)
    _check(cfg.orth.beta >= 0, "orth.beta must be >= 0.")
    _check(0 < cfg.data.val_fraction < 1, "data.val_fraction must be in (0, 1).")
    _check(cfg.data.batch_size > 0, "data.batch_size must be > 0.")
    if "scoring" in cfg.data:  # SSD on GTSDB
        from afp_tf.data.gtsdb import SCORINGS  # noqa: PLC0415 - see above

        _check_choice("data.scoring", cfg.data.scoring, SCORINGS)
    _validate_export(cfg.export)


def _validate_export(section: ml_collections.ConfigDict) -> None:
    try:
        checks.parse_formats(section.formats)
        checks.parse_tolerances(section.get("tolerances", ""))
    except ValueError as e:
        raise ConfigError(f"export: {e}") from None


def prune_options(cfg: ml_collections.ConfigDict) -> PruneOptions:
    """The typed pruning options of ``cfg.prune``.

    Raises:
      ConfigError: naming the ``prune.`` key, the bad value and the accepted range.
    """
    try:
        return PruneOptions.from_mapping(cfg.prune.to_dict())
    except (TypeError, ValueError) as e:
        raise ConfigError(f"prune.{e}") from None


def _validate_train(t: ml_collections.ConfigDict) -> None:
    from afp_tf.train.precision import PRECISIONS  # noqa: PLC0415 - see validate()
    from afp_tf.train.training import OPTIMIZERS  # noqa: PLC0415

    _check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
    _check_choice("train.mixed_precision", t.mixed_precision, PRECISIONS)
    _check(t.learning_rate > 0, "train.learning_rate must be > 0.")
    _check(t.baseline_epochs >= 0, "train.baseline_epochs must be >= 0.")
    _check_choice("train.lr_schedule", t.lr_schedule, ("constant", "cosine"))
    _check(
        t.warmup_epochs >= 0 and (t.warmup_epochs == 0 or t.warmup_epochs < t.baseline_epochs),
        f"train.warmup_epochs={t.warmup_epochs} must be >= 0 and below train.baseline_epochs="
        f"{t.baseline_epochs}; lower it (0 = no warmup).",
    )
    _check(
        t.warmup_epochs == 0 or t.lr_schedule == "cosine",
        "train.warmup_epochs needs train.lr_schedule='cosine'.",
    )
    _check(t.steps_per_epoch >= 0, f"train.steps_per_epoch={t.steps_per_epoch} must be >= 0.")
    _check(
        t.steps_per_execution >= 1,
        f"train.steps_per_execution={t.steps_per_execution} must be >= 1.",
    )


def quick(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a smoke-test run: small subsets, few epochs and rounds."""
    cfg.data.train_subset = 2048
    cfg.data.val_subset = 512
    cfg.data.test_subset = 512
    cfg.train.baseline_epochs = 2
    cfg.prune.max_rounds = 3
    cfg.prune.recovery_epochs = 1
    cfg.prune.finetune_epochs = 1
    cfg.prune.tolerance = max(cfg.prune.tolerance, 0.05)
    cfg.export.samples = 256
    cfg.export.latency_runs = 10
    return cfg


def with_arg(cfg: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies a config file's ``:ARG``: ``quick`` for a smoke run, nothing for the full one."""
    if arg in (None, "", "full"):
        return cfg
    if arg == "quick":
        return quick(cfg)
    raise ConfigError(f"Unknown config argument {arg!r}: use NAME or NAME:quick.")


def detection_config() -> ml_collections.ConfigDict:
    """The base config plus the keys of SSD on GTSDB (``afp_tf.data.gtsdb``, ``models.ssd``)."""
    c = base_config()
    c.task = "detection"
    c.model.name = "ssd"
    c.model.backbone = "mobilenet"  # mobilenet | vgg16 (the paper's)
    c.model.head_depth = 1
    c.model.min_size = 16  # default boxes from 16 to 128 px (GTSDB's sign sizes)
    c.model.max_size = 128
    c.model.scales_per_octave = 3
    c.model.neg_pos_ratio = 3.0  # the loss's hard negatives per positive
    c.model.min_negatives = 0  # fewest hard negatives per training crop (0 = ratio only)
    c.data.name = "gtsdb"
    c.data.data_dir = "~/.cache/afp_tf/gtsdb"
    c.data.url = (
        "https://sid.erda.dk/public/archives/ff17dc924eba88d5d01a807357d6614c/FullIJCNN2013.zip"
    )
    c.data.sha256 = ""  # set to check the archive
    c.data.labels = "categories"  # categories (4 super-categories) | classes (43)
    c.data.salient_crops = 0.0  # share of training crops around sign-coloured background
    # mAP (the decision metric) over: competition (prohibitory, danger, mandatory: what the
    # GTSDB competition scores) | all (every label, "other" included); map50_all is reported
    c.data.scoring = "competition"
    c.data.image_size = 300
    c.data.max_boxes = 16
    c.data.synthetic_images = 300
    c.data.synthetic_scale = 0.25
    c.data.batch_size = 16
    c.data.eval_batch_size = 32
    c.train.optimizer = "adam"
    c.train.learning_rate = 2e-3
    c.prune.tolerance = 0.01  # mAP@0.5 points
    return targeted_l1(c)


def frcnn_config() -> ml_collections.ConfigDict:
    """The base config plus the keys of Faster R-CNN on COCO-format data (``afp_tf.data.coco``,
    ``models.frcnn``); defaults are the paper's ResNet-50 FPN at a 512 px input."""
    c = base_config()
    c.task = "frcnn"
    c.model.name = "faster_rcnn"
    c.model.backbone = "resnet50"  # resnet50 | mobilenet (light, model.width)
    c.model.fpn_channels = 256
    c.model.num_rois = 256
    c.model.pre_nms = 1000
    c.model.roi_size = 7
    c.model.head_units = 1024
    c.model.min_size = 32  # RPN anchor side (px) at stride 8; doubles per level
    c.model.scales_per_octave = 2
    c.model.aspect_ratios = "0.5,1,2"
    c.data.name = "coco"
    c.data.image_size = 512
    c.data.max_boxes = 100
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.image_dir = "images/{split}"
    c.data.synthetic_train = 400
    c.data.synthetic_test = 100
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.train.optimizer = "adam"
    c.train.learning_rate = 1e-3
    c.prune.tolerance = 0.01  # mAP@0.5 points
    return targeted_l1(c)


def targeted_l1(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The round of the paper (and of afp_tf before the BatchNorm-aware fade): importance and
    a targeted ℓ1 term on the filter kernels, BatchNorm statistics left to training, recovery
    at a constant rate with early stopping. The configs whose committed benchmark results
    were measured this way keep it."""
    c.prune.measure = "kernels"
    c.prune.shrink = "l1"
    c.prune.recalibrate_batches = 0
    c.prune.recovery_schedule = "constant"
    return c


def cifar10_config(model: str, *, learning_rate: float, weight_decay: float):
    """The CIFAR-10 recipe shared by the VGG and ResNet experiments (GPU-sized)."""
    c = base_config()
    c.name = f"{model}_cifar10"
    c.model.name = model
    c.data.name = "cifar10"
    c.train.learning_rate = learning_rate
    c.train.weight_decay = weight_decay
    c.train.baseline_epochs = 160
    c.prune.tolerance = 0.01
    c.prune.shrink_epochs = 2
    c.prune.recovery_epochs = 5
    c.prune.max_rounds = 30
    c.prune.finetune_epochs = 20
    return c


def fashion_mnist32_config(model: str, *, learning_rate: float, weight_decay: float):
    """A CIFAR-form network on Fashion-MNIST padded to 32×32, subsets sized for a shared CPU."""
    c = base_config()
    c.name = f"{model}_fashion_mnist"
    c.model.name = model
    c.data.name = "fashion_mnist"
    c.data.image_size = 32
    c.data.augment = False
    c.data.accept_fraction = 0.1
    c.data.train_subset = 8000
    c.data.val_subset = 3000
    c.data.test_subset = 5000
    c.data.batch_size = 64
    c.train.learning_rate = learning_rate
    c.train.weight_decay = weight_decay
    c.train.baseline_epochs = 10
    c.prune.p_max = 0.3
    c.prune.recovery_epochs = 2
    c.prune.finetune_epochs = 2
    return c


def lenet5_config(dataset: str):
    """LeNet-5 (Caffe form) on an MNIST-family dataset, tolerance 1 point: CPU-sized."""
    c = base_config()
    c.name = f"lenet5_{dataset}"
    c.model.name = "lenet5"
    c.data.name = dataset
    c.data.augment = False
    c.data.accept_fraction = 0.1  # decisions on 6,000 images recovery never sees
    c.train.learning_rate = 0.02
    c.train.baseline_epochs = 10
    c.prune.tolerance = 0.01
    c.prune.p_max = 0.3
    c.prune.learning_rate = 0.005  # gentler than the baseline's: recovery near the floor
    c.prune.recovery_epochs = 4
    c.prune.max_rounds = 20
    c.prune.finetune_epochs = 3
    return targeted_l1(c)
