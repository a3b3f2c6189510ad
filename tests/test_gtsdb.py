"""GTSDB reader, split, labels and tf.data pipeline, on generated sets in the real layout."""

import ml_collections
import numpy as np
import pytest

from afp_tf.data import gtsdb, gtsdb_layout, gtsdb_signs, gtsdb_synth


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return gtsdb_synth.generate(
        tmp_path_factory.mktemp("gtsdb"), 12, scale=0.1, sign_scale=0.3, seed=5
    )


def _cfg(data_dir, **overrides):
    data = {
        "source": "local",
        "data_dir": str(data_dir),
        "download": False,
        "val_fraction": 0.25,
        "seed": 0,
        "batch_size": 4,
        "eval_batch_size": 4,
        "image_size": 64,
    }
    data.update(overrides)
    return ml_collections.ConfigDict({"data": data})


def test_category_map_covers_43_classes_once():
    classes = sorted(c for group in gtsdb_signs.CATEGORY_CLASSES for c in group)
    assert classes == list(range(43))
    assert gtsdb_signs.CLASS_TO_CATEGORY[14] == 3  # stop sign: "other"
    assert gtsdb_signs.CLASS_TO_CATEGORY[11] == 1  # right-of-way at next crossing: danger


def test_render_sign_every_class_has_its_own_pictogram():
    drawings = np.stack([gtsdb_signs.render_sign(c, 32)[0] for c in range(43)])
    # Pixels that differ by more than 60 levels, per pair: the closest pair ("50" and "60")
    # differs in one font cell, as the real signs do.
    differing = (np.abs(drawings[:, None] - drawings[None]).max(-1) > 60).sum(axis=(2, 3))
    np.fill_diagonal(differing, 10**6)
    assert differing.min() >= 4 and np.median(differing.min(axis=1)) >= 30
    rgb, alpha = gtsdb_signs.render_sign(2, 32)  # speed limit 50: red rim, white inside
    assert alpha[16, 16] == 1.0 and alpha[0, 0] == 0.0
    assert rgb[16, 1, 0] > 150 > rgb[16, 1, 2]


def test_generate_native_sign_sizes_follow_gtsdb_range(tmp_path):
    annotations = gtsdb_layout.read_annotations(
        gtsdb_synth.generate(tmp_path, 40, scale=0.4, seed=3)
    )
    boxes = np.concatenate([a.boxes for a in annotations])
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    assert annotations[0].width == 544 and annotations[0].height == 320
    assert sides.min() >= 12 and sides.max() <= 130  # 16-128 px, less perspective/rounding
    assert 22 <= np.median(sides) <= 42 and len(sides) >= 40


def test_generate_writes_ppm_and_gt_layout(layout):
    images = sorted(layout.glob("*.ppm"))
    assert [p.name for p in images[:2]] == ["00000.ppm", "00001.ppm"]
    image = gtsdb_layout.read_ppm(images[0])
    assert image.shape == (80, 136, 3) and image.dtype == np.uint8
    fields = (layout / "gt.txt").read_text().splitlines()[0].split(";")
    assert len(fields) == 6 and fields[0].endswith(".ppm")


def test_generate_same_seed_same_files(tmp_path):
    a = gtsdb_synth.generate(tmp_path / "a", 3, scale=0.1, sign_scale=0.3, seed=1)
    b = gtsdb_synth.generate(tmp_path / "b", 3, scale=0.1, sign_scale=0.3, seed=1)
    assert (a / "gt.txt").read_text() == (b / "gt.txt").read_text()
    assert (a / "00002.ppm").read_bytes() == (b / "00002.ppm").read_bytes()


def test_generate_cli_writes_requested_images(tmp_path, capsys):
    out = tmp_path / "cli"
    flags = ["--num-images", "2", "--scale", "0.1", "--sign-scale", "0.3", "--seed", "3"]
    gtsdb_synth.main(["--out", str(out), *flags])
    assert capsys.readouterr().out == f"wrote 2 images and gt.txt to {out}\n"
    assert sorted(p.name for p in out.iterdir()) == ["00000.ppm", "00001.ppm", "gt.txt"]
    # the same files as generate() with those arguments: no flag dropped or swapped
    ref = gtsdb_synth.generate(tmp_path / "ref", 2, scale=0.1, sign_scale=0.3, seed=3)
    for name in ("00000.ppm", "00001.ppm", "gt.txt"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert gtsdb_layout.read_ppm(out / "00001.ppm").shape == (80, 136, 3)  # 0.1 x 800x1360


def test_read_annotations_keeps_negatives(tmp_path):
    layout = gtsdb_synth.generate(
        tmp_path, 20, scale=0.1, sign_scale=0.3, seed=2, negative_fraction=0.5
    )
    annotations = gtsdb_layout.read_annotations(layout)
    assert len(annotations) == 20
    assert any(len(a.classes) == 0 for a in annotations)
    assert sum(len(a.classes) for a in annotations) == len((layout / "gt.txt").read_text().split())


def test_standard_split_900_images_gives_600_300():
    fake = [gtsdb_layout.Annotation(None, 1, 1, np.zeros((0, 4)), np.zeros(0)) for _ in range(900)]
    for i, a in enumerate(fake):
        object.__setattr__(a, "path", i)
    splits = gtsdb.standard_split(fake, 0.1, seed=0)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (540, 60, 300)
    assert [a.path for a in splits["test"]] == list(range(600, 900))
    assert max(a.path for a in splits["train"] + splits["val"]) == 599


def test_standard_split_accept_fraction_is_disjoint_and_keeps_val():
    fake = [gtsdb_layout.Annotation(i, 1, 1, np.zeros((0, 4)), np.zeros(0)) for i in range(900)]
    plain = gtsdb.standard_split(fake, 0.1, seed=0)
    splits = gtsdb.standard_split(fake, 0.1, seed=0, accept_fraction=0.2)
    sizes = tuple(len(splits[k]) for k in ("train", "val", "accept", "test"))
    assert sizes == (420, 60, 120, 300) and plain["accept"] == []
    assert [a.path for a in splits["val"]] == [a.path for a in plain["val"]]
    paths = [a.path for k in ("train", "val", "accept") for a in splits[k]]
    assert sorted(paths) == list(range(600))


def test_standard_split_fractions_leaving_no_training_image_raise():
    fake = [gtsdb_layout.Annotation(i, 1, 1, np.zeros((0, 4)), np.zeros(0)) for i in range(30)]
    with pytest.raises(ValueError, match="accept_fraction=0.5"):
        gtsdb.standard_split(fake, 0.5, seed=0, accept_fraction=0.5)


def test_load_gtsdb_accept_fraction_gives_accept_frames(layout):
    data = gtsdb.load_gtsdb(_cfg(layout, accept_fraction=0.25))
    assert (data.num_train, data.num_val, data.num_accept, data.num_test) == (4, 2, 2, 4)
    images, _ = next(iter(data.accept))
    assert images.shape == (2, 80, 136, 3)


def test_load_gtsdb_categories_labels_and_shapes(layout):
    data = gtsdb.load_gtsdb(_cfg(layout))
    assert (data.num_train, data.num_val, data.num_test) == (6, 2, 4)
    assert data.num_classes == 4 and data.class_names[0] == "prohibitory"
    assert data.input_shape == (64, 64, 3) and data.frame_shape == (80, 136, 3)
    crops, _ = next(iter(data.train))
    assert crops.shape == (4, 64, 64, 3)
    images, targets = next(iter(data.test))
    assert images.shape == (4, 80, 136, 3) and targets.shape == (4, 16, 5)
    # test = the last third in file order, pixels scaled to [0, 1], targets packed as written
    test = gtsdb_layout.read_annotations(layout)[8:]
    expected = np.stack([gtsdb_layout.read_ppm(a.path) for a in test]) / 255.0
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-6)
    packed = np.stack([gtsdb_layout.pack_targets(a, "categories", 16) for a in test])
    np.testing.assert_allclose(targets.numpy(), packed)


def test_load_gtsdb_classes_labels_match_gt_file(layout):
    data = gtsdb.load_gtsdb(_cfg(layout, labels="classes", val_fraction=0.1))
    assert data.num_classes == 43
    ids = [int(line.split(";")[5]) for line in (layout / "gt.txt").read_text().split()]
    test_names = {f"{i:05d}.ppm" for i in range(8, 12)}
    expected = [
        int(line.split(";")[5])
        for line in (layout / "gt.txt").read_text().split()
        if line.split(";")[0] in test_names
    ]
    got = np.concatenate([t.numpy()[..., 4].ravel() for _, t in data.test])
    assert sorted(got[got >= 0].astype(int).tolist()) == sorted(expected)
    assert max(ids) < 43


def test_pack_targets_normalises_inclusive_pixel_boxes():
    ann = gtsdb_layout.Annotation(
        None, 100, 50, np.array([[9, 4, 19, 14]], np.float32), np.array([14])
    )
    packed = gtsdb_layout.pack_targets(ann, "categories", 3)
    np.testing.assert_allclose(packed[0], [0.09, 0.08, 0.2, 0.3, 3], rtol=1e-6)
    assert (packed[1:, 4] == -1).all()
    unpacked = gtsdb.unpack_targets(packed)
    assert float(unpacked["boxes"][1, 0]) == -1.0


def test_read_annotations_malformed_line_names_line_number(tmp_path):
    layout = gtsdb_synth.generate(tmp_path, 2, scale=0.1, sign_scale=0.3, seed=0)
    gt = layout / "gt.txt"
    gt.write_text(gt.read_text() + "00001.ppm;1;2;three;4;5\n")
    n = len(gt.read_text().splitlines())
    with pytest.raises(ValueError, match=rf"gt\.txt:{n}: malformed line"):
        gtsdb_layout.read_annotations(layout)


def test_read_annotations_unknown_class_raises(tmp_path):
    layout = gtsdb_synth.generate(tmp_path, 2, scale=0.1, sign_scale=0.3, seed=0)
    (layout / "gt.txt").write_text("00000.ppm;1;2;3;4;43\n")
    with pytest.raises(ValueError, match="gt.txt:1: bad class id"):
        gtsdb_layout.read_annotations(layout)


def test_load_gtsdb_missing_dir_raises_with_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="FullIJCNN2013.zip"):
        gtsdb.load_gtsdb(_cfg(tmp_path / "nowhere"))


def test_load_gtsdb_synthetic_source_generates_once(tmp_path):
    cfg = _cfg(
        tmp_path,
        source="synthetic",
        synthetic_images=6,
        synthetic_scale=0.1,
        synthetic_sign_scale=0.3,
    )
    data = gtsdb.load_gtsdb(cfg)
    assert data.source.startswith("synthetic") and data.num_test == 2
    gt_files = list(tmp_path.glob("*/gt.txt"))
    mtime = gt_files[0].stat().st_mtime_ns
    gtsdb.load_gtsdb(cfg)
    assert len(gt_files) == 1 and gt_files[0].stat().st_mtime_ns == mtime


def test_sample_returns_arrays_of_split(layout):
    data = gtsdb.load_gtsdb(_cfg(layout))
    annotations = gtsdb_layout.read_annotations(layout)
    val = gtsdb.standard_split(annotations, 0.25, seed=0)["val"]
    # test: files 00008 and 00009 (the last third, in file order); val: held out of the first 8
    for split, files in (("val", val), ("test", annotations[8:10])):
        x, y = data.sample(split, 2)
        frames = np.stack([gtsdb_layout.read_ppm(a.path) for a in files]) / 255.0
        np.testing.assert_allclose(x, frames, atol=1e-6)  # the full frames, scaled to [0, 1]
        packed = np.stack([gtsdb_layout.pack_targets(a, "categories", 16) for a in files])
        np.testing.assert_array_equal(y, packed)  # their own boxes and categories


# The GTSDB definition of the categories, written out from the benchmark's own list.
GTSDB_PROHIBITORY = (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16)
GTSDB_MANDATORY = (33, 34, 35, 36, 37, 38, 39, 40)
GTSDB_DANGER = (11, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)


def test_category_map_is_the_benchmarks_list():
    expected = {c: 3 for c in range(43)}  # everything else: other
    expected |= {c: 0 for c in GTSDB_PROHIBITORY}
    expected |= {c: 1 for c in GTSDB_DANGER}
    expected |= {c: 2 for c in GTSDB_MANDATORY}
    assert expected == gtsdb_signs.CLASS_TO_CATEGORY
    assert gtsdb_signs.CATEGORY_NAMES == ("prohibitory", "danger", "mandatory", "other")
    assert [gtsdb_signs.CATEGORY_NAMES[k] for k in gtsdb_signs.COMPETITION_CATEGORIES] == [
        "prohibitory",
        "danger",
        "mandatory",
    ]


def _write_ppm(path, width=100, height=60):
    path.write_bytes(f"P6\n{width} {height}\n255\n".encode() + bytes(width * height * 3))


def test_hand_written_gt_file_maps_class_ids_to_categories(tmp_path):
    for name in ("00000.ppm", "00001.ppm", "00002.ppm"):
        _write_ppm(tmp_path / name)
    # (class id, the category the GTSDB definition gives it)
    signs = {
        "00000.ppm": [(0, "prohibitory"), (6, "other"), (11, "danger"), (16, "prohibitory")],
        "00001.ppm": [(33, "mandatory"), (40, "mandatory"), (32, "other"), (31, "danger")],
        "00002.ppm": [
            (14, "other"),
            (17, "other"),
            (18, "danger"),
            (42, "other"),
            (10, "prohibitory"),
        ],
    }
    lines = [
        f"{name};{5 + 10 * i};{4 + 8 * i};{14 + 10 * i};{13 + 8 * i};{class_id}"
        for name, entries in signs.items()
        for i, (class_id, _) in enumerate(entries)
    ]
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    annotations = gtsdb_layout.read_annotations(tmp_path)
    assert [a.path.name for a in annotations] == list(signs)
    for ann, entries in zip(annotations, signs.values(), strict=True):
        assert ann.classes.tolist() == [c for c, _ in entries]
        packed = gtsdb_layout.pack_targets(ann, "categories", 8)
        names = [gtsdb_signs.CATEGORY_NAMES[int(k)] for k in packed[: len(entries), 4]]
        assert names == [category for _, category in entries]
        np.testing.assert_allclose(packed[0, :4], [5 / 100, 4 / 60, 15 / 100, 14 / 60], rtol=1e-6)
        assert gtsdb_layout.pack_targets(ann, "classes", 8)[: len(entries), 4].tolist() == [
            c for c, _ in entries
        ]
    # the reader's test split (the last third: 00002.ppm) carries those categories
    data = gtsdb.load_gtsdb(_cfg(tmp_path, val_fraction=0.5, image_size=32))
    _, targets = next(iter(data.test))
    got = [gtsdb_signs.CATEGORY_NAMES[int(k)] for k in targets.numpy()[0, :, 4] if k >= 0]
    assert got == [category for _, category in signs["00002.ppm"]]


def test_scored_classes_competition_is_three_categories_all_is_every_label():
    assert gtsdb.scored_classes("categories", "competition") == (0, 1, 2)
    assert gtsdb.scored_classes("categories", "all") == (0, 1, 2, 3)
    classes = gtsdb.scored_classes("classes", "competition")
    assert classes == tuple(sorted(GTSDB_PROHIBITORY + GTSDB_DANGER + GTSDB_MANDATORY))
    assert len(classes) == 35 and gtsdb.scored_classes("classes", "all") == tuple(range(43))
    with pytest.raises(ValueError, match=r"data\.scoring='three' is not one of competition, all"):
        gtsdb.scored_classes("categories", "three")


def test_load_gtsdb_scoring_defaults_to_competition(layout):
    data = gtsdb.load_gtsdb(_cfg(layout))
    assert data.scoring == "competition" and data.scored_classes == (0, 1, 2)
    data = gtsdb.load_gtsdb(_cfg(layout, scoring="all"))
    assert data.scoring == "all" and data.scored_classes == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="is not one of competition, all"):
        gtsdb.load_gtsdb(_cfg(layout, scoring="four"))
