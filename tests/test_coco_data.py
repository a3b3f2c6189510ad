"""COCO-format data: the synthetic set, the instances-json reader and its errors, pipelines."""

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from afp_tf.data import DatasetCorruptError, DatasetNotFoundError, coco, coco_sources, coco_synth
from afp_tf.detection.metrics import MeanAveragePrecision
from afp_tf.run import config_lib


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return coco_synth.generate(tmp_path_factory.mktemp("coco"), 6, 4, image_size=64, seed=3)


def _split(root, split="train"):
    return coco.read_coco(root / "annotations" / f"instances_{split}.json", root / "images" / split)


def test_coco_synth_same_seed_same_files_other_seed_differs(synth, tmp_path):
    again = coco_synth.generate(tmp_path / "a", 6, 4, image_size=64, seed=3)
    other = coco_synth.generate(tmp_path / "b", 6, 4, image_size=64, seed=4)
    name = "annotations/instances_train.json"
    assert (synth / name).read_bytes() == (again / name).read_bytes()
    assert (synth / "images/test/000003.png").read_bytes() == (
        again / "images/test/000003.png"
    ).read_bytes()
    assert (synth / name).read_bytes() != (other / name).read_bytes()


def test_read_coco_synthetic_boxes_are_relative_and_match_the_json(synth):
    split = _split(synth)
    doc = json.loads((synth / "annotations/instances_train.json").read_text())
    assert len(split.paths) == 6 and split.class_names == coco_synth.CLASS_NAMES
    first = [a for a in doc["annotations"] if a["image_id"] == 1]
    x, y, w, h = first[0]["bbox"]
    np.testing.assert_allclose(split.boxes[0][0], [x / 64, y / 64, (x + w) / 64, (y + h) / 64])
    assert split.labels[0][0] == first[0]["category_id"] - 1
    assert sum(len(b) for b in split.boxes) == len(doc["annotations"])


def _write(tmp_path, doc):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "img" / "a.png").write_bytes(b"")
    path = tmp_path / "ann.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


GOOD = {
    "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 4]}],
    "categories": [{"id": 7, "name": "x"}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("annotations"), r"the top level lacks 'annotations'"),
        (lambda d: d["images"][0].pop("width"), r"images\[0\] lacks 'width'"),
        (
            lambda d: d["annotations"][0].update(image_id=5),
            r"annotations\[0\] refers to image_id 5",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=2),
            r"annotations\[0\] has category_id 2",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 1, -3, 4]),
            r"annotations\[0\] bbox \[1, 1, -3, 4\]",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 1, 4]),
            r"annotations\[0\] bbox \[1, 1, 4\] must be",
        ),
        (lambda d: d.update(categories=[]), r"'categories' is empty"),
    ],
)
def test_read_coco_malformed_annotations_name_entry_and_fault(tmp_path, change, message):
    doc = json.loads(json.dumps(GOOD))
    change(doc)
    with pytest.raises(DatasetCorruptError, match=message):
        coco.read_coco(_write(tmp_path, doc), tmp_path / "img")


def test_read_coco_invalid_json_and_missing_files_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetCorruptError, match=r"ann\.json is not valid JSON"):
        coco.read_coco(_write(tmp_path, "{not json"), tmp_path / "img")
    with pytest.raises(DatasetNotFoundError, match=r"No COCO annotation file .*nothing\.json"):
        coco.read_coco(tmp_path / "nothing.json", tmp_path / "img")
    path = _write(tmp_path, GOOD)
    (tmp_path / "img" / "a.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 of the 1 images .* missing .*a\.png"):
        coco.read_coco(path, tmp_path / "img")


def test_read_coco_skips_crowd_and_clips_boxes_to_the_image(tmp_path):
    doc = json.loads(json.dumps(GOOD))
    doc["annotations"] += [
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [8, 8, 5, 5]},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2], "iscrowd": 1},
    ]
    split = coco.read_coco(_write(tmp_path, doc), tmp_path / "img")
    np.testing.assert_allclose(split.boxes[0], [[0.1, 0.1, 0.5, 0.5], [0.8, 0.8, 1.0, 1.0]])


def test_pack_keeps_the_largest_boxes_and_pads_with_minus_one():
    boxes = np.array([[0, 0, 0.1, 0.1], [0, 0, 0.5, 0.5], [0, 0, 0.3, 0.3]], np.float32)
    packed = coco.pack(boxes, np.array([0, 1, 2]), 2)
    np.testing.assert_allclose(packed[:, 4], [1, 2])
    assert (coco.pack(boxes[:1], np.array([0]), 3)[1:] == -1).all()


def test_flip_mirrors_boxes_and_leaves_padding():
    image = tf.constant(np.arange(12, dtype=np.float32).reshape(1, 4, 3))
    packed = tf.constant([[0.1, 0.2, 0.3, 0.4, 1], [-1, -1, -1, -1, -1]], tf.float32)
    for seed in range(20):
        x, y = coco.flip(image, packed, tf.constant([seed, 0], tf.int64))
        if not np.array_equal(x.numpy(), image.numpy()):
            np.testing.assert_allclose(y.numpy()[0], [0.7, 0.2, 0.9, 0.4, 1])
            np.testing.assert_allclose(y.numpy()[1], -1)
            return
    pytest.fail("no flip in 20 seeds")


def test_map_on_synthetic_coco_files_matches_pycocotools(synth):
    """Detections (jittered truth + false positives) scored by our metric on the reader's
    relative boxes and by pycocotools on the json file itself, in pixels."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    split = _split(synth, "test")
    rng = np.random.default_rng(0)
    metric, results = MeanAveragePrecision(), []
    for i, (boxes, labels) in enumerate(zip(split.boxes, split.labels, strict=True)):
        det = np.concatenate(
            [boxes + rng.normal(0, 0.02, boxes.shape), rng.uniform(0, 0.5, (2, 4))]
        )
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 0.05)
        det_cls = np.concatenate([labels, rng.integers(0, 4, 2)])
        scores = rng.uniform(0.1, 1, len(det))
        metric.update(boxes, labels, det, scores, det_cls)
        for b, c, s in zip(det * 64, det_cls, scores, strict=True):
            xywh = [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
            results.append(
                {"image_id": i + 1, "category_id": int(c) + 1, "score": float(s), "bbox": xywh}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(synth / "annotations/instances_test.json"))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    got = metric.result()
    np.testing.assert_allclose([got["map"], got["map50"], got["map75"]], ev.stats[:3], atol=1e-6)
    assert 0 < got["map"] < got["map50"]


class _FakeCocoBuilder:
    """Stands in for TFDS ``coco/2017``: 1,000 training images; records the splits read."""

    data_dir = "fake"

    def __init__(self):
        self.read = []
        splits = {"train": 1000, "validation": 50}
        self.info = SimpleNamespace(
            splits={k: SimpleNamespace(num_examples=n) for k, n in splits.items()},
            features={"objects": {"label": SimpleNamespace(names=["a", "b"])}},
        )

    def is_prepared(self):
        return True

    def as_dataset(self, split, shuffle_files):
        self.read.append(split)
        objects = {
            "bbox": tf.zeros((1, 4)),
            "label": tf.zeros(1, tf.int64),
            "is_crowd": tf.zeros(1, tf.bool),
        }
        return tf.data.Dataset.from_tensors(
            {"image": tf.zeros((8, 8, 3), tf.uint8), "objects": objects}
        )


def test_load_coco_tfds_holds_out_acceptance_images_between_val_and_train(monkeypatch):
    builder = _FakeCocoBuilder()
    monkeypatch.setattr(coco_sources.sources_lib, "tfds_builder", lambda name, data_dir: builder)
    cfg = config_lib.load_config("frcnn_coco")
    overrides = ["data.val_subset=0", "data.val_fraction=0.1", "data.accept_fraction=0.2"]
    config_lib.apply_overrides(cfg, [*overrides, "data.image_size=64"])
    data, _ = coco_sources.load_coco(cfg)
    assert (data.num_train, data.num_val, data.num_accept, data.num_test) == (700, 100, 200, 50)
    assert sorted(builder.read) == ["train[100:300]", "train[300:]", "train[:100]", "validation"]
    assert data.accept is not None
