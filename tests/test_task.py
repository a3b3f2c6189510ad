"""Tests of afp_tf.train.task (what differs per task) and afp_tf.run.task_builders
(config -> task builders)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_trainer

from afp_tf import export
from afp_tf.run import config_lib, task_builders
from afp_tf.train.task import Task


def _trainer():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    model.set_weights([np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)])
    return classifier_trainer(model, global_batch_size=4)


def _dataset():
    x = np.array([[2, 0, 0], [0, 2, 0], [2, 0, 0], [0, 2, 0]], np.float32)
    y = np.array([0, 1, 1, 1], np.int32)  # the model gets 3 of 4 right
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def test_task_score_default_evaluator_is_keras_accuracy():
    task = task_builders.classification_task()
    assert task.score(_trainer(), _dataset()) == pytest.approx(0.75)


def test_task_score_custom_evaluator_reads_its_metric():
    task = Task(
        loss="mse", metrics=list, metric_name="map50", evaluator=lambda t, ds: {"map50": 0.25}
    )
    assert task.score(_trainer(), _dataset()) == 0.25


def test_task_export_without_exporter_raises():
    task = Task(loss="mse", metrics=list, metric_name="r2")
    with pytest.raises(ValueError, match="'r2'.*no exporter"):
        task.export(None, "out")


def test_task_export_passes_arguments_to_exporter():
    calls = []
    task = Task(loss="mse", metrics=list, exporter=lambda m, out, **kw: calls.append((out, kw)))
    task.export("model", "dir", formats=("onnx",), val_x=1)
    assert calls == [("dir", {"formats": ("onnx",), "val_x": 1})]


def test_classification_task_exports_as_classifier(tmp_path):
    (x, y), model = next(iter(_dataset())), _trainer().model
    report = task_builders.classification_task().export(
        model, tmp_path, formats=("tflite_fp32",), val_x=x.numpy(), val_y=y.numpy()
    )
    # the classifier report: accuracy of the known model (3 of 4 right), Keras and TFLite alike
    assert report["task"] == "classification" and report["metric"] == "accuracy"
    assert report["keras_metric"] == 0.75 and report["formats"]["tflite_fp32"]["metric"] == 0.75
    assert report["passed"] and (tmp_path / export.FORMATS["tflite_fp32"].filename).is_file()


def test_load_task_unknown_task_lists_builders():
    cfg = config_lib.base_config()
    cfg.task = "segmentation"
    with pytest.raises(ValueError, match="classification, detection"):
        task_builders.load_task(cfg)


def test_load_task_detection_exporter_carries_the_loss_anchors(tmp_path):
    cfg = config_lib.load_config("ssd_gtsdb_synthetic:quick")
    config_lib.apply_overrides(
        cfg, [f"data.data_dir={tmp_path}", "data.synthetic_images=8", "data.image_size=64"]
    )
    task = task_builders.load_task(cfg).task
    assert task.metric_name == "map50"
    anchors = task.exporter.keywords["anchors"]
    assert anchors.to_dict() == task.loss.anchors.to_dict()
    boxes = anchors.boxes(64, 64)
    assert boxes.shape[1] == 4 and len(boxes) == anchors.per_location * sum(
        h * w for h, w in anchors.feature_sizes(64, 64)
    )
