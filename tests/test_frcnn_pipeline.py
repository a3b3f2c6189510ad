"""The main job on Faster R-CNN: the synthetic COCO-format quick run end to end, absent data."""

import keras
import pytest

from afp_tf.data import DatasetNotFoundError
from afp_tf.run import config_lib, pipeline, task_builders


def _config(name, overrides):
    cfg = config_lib.load_config(name)
    config_lib.apply_overrides(cfg, ["train.progress=false", *overrides])
    return cfg


@pytest.mark.slow
def test_main_job_frcnn_synthetic_quick_prunes_and_exports_tflite_matching_keras(tmp_path):
    cfg = _config("frcnn_coco_synthetic:quick", [f"data.data_dir={tmp_path / 'data'}"])
    summary = pipeline.run(cfg, tmp_path / "run")
    assert summary["rounds"] >= 1 and summary["pruned"]["macs"] < summary["baseline"]["macs"]
    pruned = keras.saving.load_model(tmp_path / "run" / "pruned.keras", compile=False)
    assert pruned.get_layer("box_class_logits").units == 5  # 4 classes + background
    assert pruned.get_layer("rpn_objectness3").filters == 6  # 2 sizes x 3 aspect ratios
    for name in ("baseline", "pruned"):
        report = summary["export"]["reports"][name]
        row = report["detectors"]["tflite_fp32_nms"]
        assert report["passed"] and report["task"] == "frcnn"
        # Keras' own detections, not its mAP: ranking the 8 images' near-tied scores (a barely
        # trained detector) together, round-off once moved mAP@0.5 by 0.034.
        matched = row["detections"]
        assert matched["mismatched"] == 0 and matched["matched"] > 0
        assert matched["max_abs_diff"] <= 1e-4
        assert (tmp_path / "run" / "export" / name / "model_fp32_nms.tflite").is_file()


def test_main_job_frcnn_coco_tfds_unprepared_without_download_says_how(tmp_path):
    cfg = _config("frcnn_coco", [f"data.tfds_data_dir={tmp_path}", "data.download=false"])
    with pytest.raises(
        DatasetNotFoundError, match=r"coco/2017.* not prepared .*frcnn_coco_synthetic"
    ):
        pipeline.run(cfg, tmp_path / "run")


def test_main_job_frcnn_local_source_without_files_names_the_json(tmp_path):
    cfg = _config("frcnn_coco", ["data.source=local", f"data.data_dir={tmp_path}"])
    with pytest.raises(
        DatasetNotFoundError, match=r"No COCO annotation file .*instances_train2017"
    ):
        pipeline.run(cfg, tmp_path / "run")


def _images(task_data, split):
    return {x.tobytes() for x in task_data.sample(split, 32)[0]}


def test_frcnn_accept_fraction_holds_out_acceptance_images_apart_from_train_and_val(tmp_path):
    data_dir = f"data.data_dir={tmp_path / 'data'}"  # quick: 32 training images, 8 validate
    plain = task_builders.load_task(_config("frcnn_coco_synthetic:quick", [data_dir]))
    data = task_builders.load_task(
        _config("frcnn_coco_synthetic:quick", [data_dir, "data.accept_fraction=0.25"])
    )
    assert plain.accept is None and data.accept is not None
    assert data.accept_size == 0  # mAP: no binomial margin
    train, val, accept = (_images(data, s) for s in ("train", "val", "accept"))
    assert (len(train), len(val), len(accept)) == (16, 8, 8)
    assert len(train | val | accept) == 32  # disjoint
    assert val == _images(plain, "val")  # validation does not depend on accept_fraction
    assert "16 train / 8 val / 8 accept / 8 test" in data.description
    images, targets = next(iter(data.accept))
    assert images.shape[1:] == (64, 64, 3) and targets.shape[-1] == 5
