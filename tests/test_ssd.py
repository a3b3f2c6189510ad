"""SSD model: shapes, prunable structure, surgery, saving, and training through the Trainer."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from afp_tf import surgery
from afp_tf.data import gtsdb_signs, gtsdb_synth
from afp_tf.detection import task as detection_task
from afp_tf.detection.anchors import AnchorSpec
from afp_tf.detection.loss import SSDLoss
from afp_tf.detection.metrics import evaluate_detector
from afp_tf.models.ssd import at_input_size, build_ssd, feature_sizes

SPEC = AnchorSpec.for_object_sizes(16, 128, first_stride=8)


def test_feature_sizes_strides_8_to_64_rectangular():
    assert feature_sizes(320, 544, 4) == [(40, 68), (20, 34), (10, 17), (5, 9)]
    assert feature_sizes(800, 1360, 4) == SPEC.feature_sizes(800, 1360)


@pytest.mark.parametrize("backbone,shape", [("mobilenet", (96, 96, 3)), ("vgg16", (64, 96, 3))])
def test_build_ssd_output_matches_anchor_count(backbone, shape):
    model = build_ssd(shape, 4, backbone, width=0.25)
    anchors = SPEC.boxes(*shape[:2])
    assert model.output.shape[1:] == (len(anchors), 4 + 5)
    out = model(np.zeros((1, *shape), np.float32))
    assert out.shape == (1, len(anchors), 9)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_at_input_size_full_frame_model_shares_weights_and_anchor_layout():
    model = build_ssd((64, 64, 3), 2, "mobilenet", width=0.25)
    full = at_input_size(model, 96, 160)
    assert full.output.shape[1] == len(SPEC.boxes(96, 160))
    x = np.random.default_rng(0).random((1, 96, 160, 3), dtype=np.float32)
    # A crop's predictions equal the full frame's at the same cells, away from the padding.
    crop_out = model(x[:, :64, :64]).numpy()[0, : 8 * 8 * 3].reshape(8, 8, 3, -1)
    full_out = full(x).numpy()[0, : 12 * 20 * 3].reshape(12, 20, 3, -1)
    np.testing.assert_allclose(crop_out[:4, :4], full_out[:4, :4], atol=1e-4)
    assert at_input_size(model, 64, 64) is model


def test_build_ssd_bad_arguments_raise():
    with pytest.raises(ValueError, match="backbone"):
        build_ssd((64, 64, 3), 4, "resnet")
    with pytest.raises(ValueError, match="at least 32x32"):
        build_ssd((16, 96, 3), 4)


def test_ssd_groups_predictors_unprunable_rest_prunable():
    model = build_ssd((96, 96, 3), 4, "mobilenet", width=0.25)
    groups = {g.name: g for g in surgery.find_channel_groups(model)}
    preds = [n for n in groups if n.startswith(("cls_pred", "box_pred"))]
    assert len(preds) == 2 * 4
    assert all(not groups[n].prunable for n in preds)
    for name in ("stem_conv", "block11_pw_conv", "extra2_2_conv", "head0_tower0_conv"):
        assert groups[name].prunable, groups[name].reason


def test_ssd_pruned_trains_and_keeps_output_shape(tmp_path):
    model = build_ssd((64, 64, 3), 2, "mobilenet", width=0.25)
    groups = [g for g in surgery.find_channel_groups(model) if g.prunable]
    pruned = surgery.remove_filters(model, {g.name: [0, 1] for g in groups})
    assert pruned.output.shape == model.output.shape
    assert pruned.count_params() < model.count_params()
    y = np.full((2, 4, 5), -1, np.float32)
    y[:, 0] = [0.2, 0.2, 0.5, 0.5, 1]
    loss = SSDLoss(SPEC, 2, image_size=(64, 64))
    pruned.compile(optimizer="adam", loss=loss, jit_compile=False)
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    losses = [pruned.train_on_batch(x, y) for _ in range(5)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x), pruned(x), atol=1e-5)


def test_detection_task_synthetic_trains_with_trainer(tmp_path):
    from afp_tf.train.training import Trainer

    cfg = ml_collections.ConfigDict(
        {
            "task": "detection",
            "model": {"name": "ssd", "width": 0.25, "backbone": "mobilenet"},
            "data": {
                "source": "synthetic",
                "data_dir": str(tmp_path),
                "download": False,
                "val_fraction": 0.25,
                "seed": 0,
                "batch_size": 4,
                "eval_batch_size": 4,
                "image_size": 64,
                "synthetic_images": 12,
                "synthetic_scale": 0.1,
                "synthetic_sign_scale": 0.3,
            },
        }
    )
    data = detection_task.load(cfg)
    strategy = tf.distribute.get_strategy()
    model = data.build_model()
    trainer = Trainer(
        model,
        loss=data.task.loss,
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        strategy=strategy,
        global_batch_size=4,
    )
    first = trainer.train_epoch(data.train, progress=False)["loss"]
    for _ in range(3):
        last = trainer.train_epoch(data.train, progress=False)["loss"]
    assert last < first
    result = data.task.evaluator(trainer, data.val)
    # the task's evaluator is mAP of the model with the task's own default boxes, averaged
    # over the GTSDB competition's three categories (data.scoring's default), all four beside
    names = gtsdb_signs.CATEGORY_NAMES
    anchors = data.task.loss.anchors
    assert result == evaluate_detector(
        model, data.val, anchors, scored=(0, 1, 2), class_names=names
    )
    assert sorted(result) == ["map", "map50", "map50_all", "map75", "map75_all", "map_all"]
    assert result["map"] <= result["map50"] and result["map_all"] <= result["map50_all"]
    every = evaluate_detector(model, data.val, anchors)
    assert {k: result[f"{k}_all"] for k in every} == every
    report = data.task.report_evaluator(trainer, data.val)
    assert {k: report[k] for k in result} == result and report["scored"] == list(names[:3])
    assert set(report["ap_per_class"]) <= set(names) and report["confusion"]["iou"] == 0.5
    assert gtsdb_synth.NUM_CLASSES == 43 and "4 classes" in data.description
    assert next(iter(data.train))[0].shape[1:] == (64, 64, 3)  # crops
    assert next(iter(data.val))[0].shape[1:] == (80, 136, 3)  # full frames
