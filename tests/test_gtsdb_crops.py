"""Training crops at native resolution: sign-aware placement, clipping, negatives."""

import numpy as np
import pytest

from afp_tf.data import gtsdb_crops, gtsdb_layout, gtsdb_synth


def _ann(boxes, width=400, height=200):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return gtsdb_layout.Annotation(None, width, height, boxes, np.arange(len(boxes)) % 43)


def test_crop_origin_sign_aware_window_contains_the_whole_sign():
    ann = _ann([[300, 150, 330, 180]])
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0 = gtsdb_crops.crop_origin(rng, ann, 64, negative_fraction=0.0)
        assert x0 <= 300 and x0 + 64 > 330 and y0 <= 150 and y0 + 64 > 180
        assert 0 <= x0 <= 400 - 64 and 0 <= y0 <= 200 - 64


def test_crop_origin_negative_fraction_one_places_windows_anywhere():
    ann = _ann([[300, 150, 330, 180]])
    rng = np.random.default_rng(1)
    origins = np.array([gtsdb_crops.crop_origin(rng, ann, 64, 1.0) for _ in range(200)])
    assert origins[:, 0].min() < 50 and origins[:, 0].max() > 280  # the whole frame
    contains = (origins[:, 0] <= 300) & (origins[:, 0] + 64 > 330)
    assert contains.mean() < 0.3


def test_crop_origin_salient_windows_contain_their_point():
    ann = _ann([[300, 150, 330, 180]])
    salient = np.array([[40, 20]], np.int32)
    rng = np.random.default_rng(2)
    origins = np.array(
        [gtsdb_crops.crop_origin(rng, ann, 64, 0.0, salient, 1.0) for _ in range(100)]
    )
    assert ((origins[:, 0] <= 40) & (origins[:, 0] + 64 > 40)).all()
    assert ((origins[:, 1] <= 20) & (origins[:, 1] + 64 > 20)).all()
    # Half salient, no negatives: the rest go to the sign; none is placed anywhere else.
    origins = np.array(
        [gtsdb_crops.crop_origin(rng, ann, 64, 0.0, salient, 0.5) for _ in range(400)]
    )
    on_point = (origins[:, 0] <= 40) & (origins[:, 1] <= 20)
    on_sign = (origins[:, 0] <= 300) & (origins[:, 0] + 64 > 330)
    assert (on_point | on_sign).all() and 0.4 < on_point.mean() < 0.6


def test_salient_points_find_sign_colours_outside_signs_only(tmp_path):
    image = np.full((40, 60, 3), 128, np.uint8)  # grey
    image[5:10, 5:10] = (30, 70, 190)  # a blue blob: salient
    image[5:10, 20:25] = (60, 110, 50)  # foliage green: not
    image[20:30, 40:50] = (200, 30, 30)  # red, but inside the sign's box: not
    gtsdb_synth.write_ppm(tmp_path / "f.ppm", image)
    ann = gtsdb_layout.Annotation(
        tmp_path / "f.ppm", 60, 40, np.array([[40, 20, 49, 29]], np.float32), np.array([1])
    )
    points = gtsdb_crops.salient_points(ann, np.random.default_rng(0))
    assert len(points) == 25
    assert set(points[:, 0]) == set(range(5, 10)) and set(points[:, 1]) == set(range(5, 10))
    assert len(gtsdb_crops.salient_points(ann, np.random.default_rng(0), max_points=7)) == 7


def test_crop_annotation_clips_and_drops_mostly_hidden_signs():
    ann = _ann([[10, 10, 29, 29], [50, 10, 69, 29], [60, 40, 79, 59]])
    crop = gtsdb_crops.crop_annotation(ann, 0, 0, 64)
    # Sign 2 is 14/20 inside (kept, clipped to 63), sign 3 is 4/20 x 20/20 inside (dropped).
    np.testing.assert_array_equal(crop.boxes, [[10, 10, 29, 29], [50, 10, 63, 29]])
    assert crop.classes.tolist() == [0, 1] and crop.width == crop.height == 64


def test_crop_dataset_new_windows_each_epoch_and_padding(tmp_path):
    layout = gtsdb_synth.generate(tmp_path, 4, scale=0.05, sign_scale=0.2, seed=0)  # 68x40
    annotations = gtsdb_layout.read_annotations(layout)
    ds = gtsdb_crops.crop_dataset(
        annotations, crop_size=48, crops_per_image=2, negative_fraction=0.2,
        labels="categories", max_boxes=4, batch_size=8, seed=0,
    )  # fmt: skip
    assert int(ds.cardinality()) == 1
    first, second = (next(iter(ds))[0].numpy() for _ in range(2))
    assert first.shape == (8, 48, 48, 3) and not np.array_equal(first, second)
    assert (first[:, 40:] == 0).all()  # frames are 40 px high: zero padding below
    with pytest.raises(ValueError, match="salient_fraction"):
        gtsdb_crops.crop_dataset(
            annotations, crop_size=48, crops_per_image=2, negative_fraction=0.8,
            labels="categories", max_boxes=4, batch_size=8, seed=0, salient_fraction=0.3,
        )  # fmt: skip
