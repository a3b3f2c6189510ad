"""Config loading, overrides and validation."""

import dataclasses
import subprocess
import sys

import pytest

from afp_tf.main import split_overrides
from afp_tf.run import config_lib


def test_load_config_every_file_loads_and_validates():
    names = config_lib.available_configs()
    assert "lenet5_fashion_mnist" in names
    for name in names:
        cfg = config_lib.load_config(name)
        assert cfg.name == name
        quick = config_lib.load_config(f"{name}:quick")
        assert 0 < quick.data.train_subset < 10_000


def test_load_config_misspelt_name_suggests():
    with pytest.raises(config_lib.ConfigError, match="Did you mean 'lenet5_mnist'"):
        config_lib.load_config("lenet5_mnsit")


def test_load_config_bad_argument_raises():
    with pytest.raises(config_lib.ConfigError, match="NAME:quick"):
        config_lib.load_config("lenet5_mnist:fast")


def test_apply_overrides_types_follow_defaults():
    cfg = config_lib.base_config()
    config_lib.apply_overrides(
        cfg,
        [
            "prune.tolerance=0.02",
            "train.baseline_epochs=3",
            "prune.relative=true",
            "data.name=mnist",
            "prune.lambda_max=1",
        ],
    )
    assert cfg.prune.tolerance == 0.02
    assert cfg.train.baseline_epochs == 3
    assert cfg.prune.relative is True
    assert cfg.data.name == "mnist"
    assert type(cfg.prune.lambda_max) is float and cfg.prune.lambda_max == 1.0  # "1" parsed


def test_apply_overrides_misspelt_key_suggests():
    cfg = config_lib.base_config()
    with pytest.raises(config_lib.ConfigError, match="Did you mean 'prune.tolerance'"):
        config_lib.apply_overrides(cfg, ["prune.tolerence=0.02"])


def test_apply_overrides_wrong_type_raises():
    cfg = config_lib.base_config()
    with pytest.raises(config_lib.ConfigError, match="takes a int"):
        config_lib.apply_overrides(cfg, ["train.baseline_epochs=three"])
    with pytest.raises(config_lib.ConfigError, match="true or false"):
        config_lib.apply_overrides(cfg, ["prune.relative=maybe"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("prune.tolerance=0", "must be in"),
        ("prune.tolerance=1.5", "must be in"),
        ("prune.p_max=0", "p_max"),
        ("train.strategy=mirror", "Did you mean 'mirrored'"),
        ("prune.rule=linar", "Did you mean 'linear'"),
        ("prune.p_min=0.5", r"prune\.p_min=0.5 must be in \(0, p_max\]"),
        ("prune.cost=flops", r"prune\.cost='flops' is not one of none, macs"),
        ("prune.margin_z=-1.0", r"prune\.margin_z=-1.0 must be >= 0"),
        ("prune.max_failures=0", r"prune\.max_failures=0 must be >= 1"),
        ("data.accept_fraction=0.95", "val_fraction \\+ data.accept_fraction"),
        ("train.lr_schedule=cosin", "Did you mean 'cosine'"),
        ("train.warmup_epochs=1", "needs train.lr_schedule='cosine'"),
        ("train.warmup_epochs=-1", r"train\.warmup_epochs=-1 must be >= 0"),
    ],
)
def test_validate_out_of_range_raises(override, message):
    cfg = config_lib.base_config()
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.apply_overrides(cfg, [override])


def test_prune_section_defaults_are_prune_options_defaults():
    from afp_tf.method.options import PruneOptions

    cfg = config_lib.base_config()
    assert cfg.prune.to_dict() == PruneOptions().to_dict()
    assert config_lib.prune_options(cfg) == PruneOptions()


def test_prune_options_typed_from_overrides():
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    config_lib.apply_overrides(cfg, ["prune.rule=linear", "prune.margin_z=2.5"])
    opts = config_lib.prune_options(cfg)
    assert (opts.rule, opts.margin_z, opts.p_max, opts.recovery_epochs) == ("linear", 2.5, 0.3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.rule = "fixed"


def test_prune_options_unknown_field_suggests_closest():
    from afp_tf.method.options import PruneOptions

    with pytest.raises(TypeError, match="did you mean 'p_max'"):
        PruneOptions.from_mapping({"p_maxx": 0.2})


def test_split_overrides_both_spellings():
    rest, overrides = split_overrides(
        ["prog", "--config", "x", "--config.prune.tolerance=0.02", "--config.seed", "3"]
    )
    assert rest == ["prog", "--config", "x"]
    assert overrides == ["prune.tolerance=0.02", "seed=3"]


def test_load_config_user_file_path_outside_configs_loads(tmp_path):
    path = tmp_path / "my_experiment.py"
    path.write_text(
        "from afp_tf.run import config_lib\n\n\n"
        "def get_config(arg=None):\n"
        "    c = config_lib.base_config()\n"
        "    c.name = 'mine'\n"
        "    return config_lib.with_arg(c, arg)\n"
    )
    cfg = config_lib.load_config(f"{path}:quick")
    assert cfg.name == "mine" and cfg.data.train_subset == 2048
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.load_config(str(tmp_path / "missing.py"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("export.tolerances=tflite_int8.max_drop=0.1", "FORMAT.CHECK=VALUE"),
        ("export.tolerances=onnx.max_rel_diff=-1", "number >= 0"),
        ("export.formats=onnx,tflite", r"Unknown export format.*'tflite'"),
    ],
)
def test_apply_overrides_bad_export_key_raises(override, message):
    cfg = config_lib.base_config()
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.apply_overrides(cfg, [override])


def test_main_misspelt_key_exits_2_and_leaves_no_workdir(tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "afp_tf.main", "--config", "lenet5_fashion_mnist:quick"]
    cmd += ["--workdir", str(workdir), "--config.prune.tolerence=0.02"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Did you mean 'prune.tolerance'" in proc.stderr
    assert not workdir.exists()


@pytest.mark.parametrize(
    "name, round_",
    [
        ("lenet5_fashion_mnist", ("kernels", "l1", 0, "constant")),
        ("ssd_gtsdb_synthetic", ("kernels", "l1", 0, "constant")),
        ("frcnn_coco_synthetic", ("kernels", "l1", 0, "constant")),
        ("vgg16_fashion_mnist", ("outputs", "fade", 50, "cosine")),
        ("resnet56_fashion_mnist", ("outputs", "fade", 50, "cosine")),
    ],
)
def test_load_config_round_kind_is_the_one_its_committed_results_used(name, round_):
    p = config_lib.load_config(name).prune
    assert (p.measure, p.shrink, p.recalibrate_batches, p.recovery_schedule) == round_


@pytest.mark.parametrize("name", ["ssd_gtsdb", "ssd_gtsdb_synthetic"])
def test_ssd_configs_score_the_gtsdb_competition_categories_and_reject_unknown(name):
    for arg in ("", ":quick"):
        assert config_lib.load_config(name + arg).data.scoring == "competition"
    cfg = config_lib.load_config(name)
    config_lib.apply_overrides(cfg, ["data.scoring=all"])
    assert cfg.data.scoring == "all"
    with pytest.raises(
        config_lib.ConfigError,
        match=r"data\.scoring='competiton' is not one of competition, all\. Did you mean "
        "'competition'",
    ):
        config_lib.apply_overrides(cfg, ["data.scoring=competiton"])
    with pytest.raises(config_lib.ConfigError, match=r"data\.scoring='four' is not one of"):
        config_lib.apply_overrides(cfg, ["data.scoring=four"])


def test_renamed_prune_key_is_refused_naming_the_new_one():
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    with pytest.raises(
        config_lib.ConfigError, match=r"prune.penalty_epochs was renamed prune.shrink_epochs"
    ):
        config_lib.apply_overrides(cfg, ["prune.penalty_epochs=2"])
    cfg.prune.penalty_epochs = 2  # as a Python config file would set it
    with pytest.raises(config_lib.ConfigError, match=r"penalty_epochs was renamed shrink_epochs"):
        config_lib.prune_options(cfg)
