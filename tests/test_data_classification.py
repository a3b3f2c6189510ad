"""load_classification on tiny IDX files: shapes, splits, determinism, preprocessing, errors."""

import gzip
import struct

import ml_collections
import numpy as np
import pytest

from afp_tf.data import DatasetCorruptError, DatasetNotFoundError, load_classification, sources

N_TRAIN, N_TEST = 100, 40
MEAN, STD = sources.SPECS["fashion_mnist"].mean[0], sources.SPECS["fashion_mnist"].std[0]


def make_cfg(data_dir, **overrides):
    cfg = ml_collections.ConfigDict(
        {
            "name": "fashion_mnist",
            "source": "local",
            "data_dir": str(data_dir),
            "tfds_data_dir": str(data_dir),
            "download": False,
            "val_fraction": 0.2,
            "train_subset": 0,
            "val_subset": 0,
            "test_subset": 0,
            "batch_size": 16,
            "eval_batch_size": 32,
            "augment": False,
            "image_size": 0,
            "channels": 0,
            "seed": 0,
            "imagenet_manual_dir": "",
        }
    )
    cfg.update(overrides)
    return cfg


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def id_images(n, offset):
    """28x28 images whose pixels (0, 0) and (0, 1) encode a unique id; a bright block elsewhere."""
    ids = np.arange(n) + offset
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    images[:, 10:18, 10:18] = 200
    return images


def write_set(root, gz=True, n_train=N_TRAIN, n_test=N_TEST):
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 1000)):
        files = {"images-idx3": id_images(n, offset), "labels-idx1": np.arange(n) % 10}
        for kind, array in files.items():
            path = root / f"{prefix}-{kind}-ubyte{suffix}"
            data = idx_bytes(array)
            path.write_bytes(gzip.compress(data) if gz else data)
    return root


def ids_of(x):
    """Recovers the pixel-encoded ids from standardised, unaugmented images."""
    raw = np.round((x[:, 0, :2, 0] * STD + MEAN) * 255).astype(int)
    return raw[:, 0] + 256 * raw[:, 1]


@pytest.fixture
def idx_dir(tmp_path):
    return write_set(tmp_path / "fm")


@pytest.mark.parametrize("gz", [True, False])
def test_load_classification_idx_files_shapes_dtypes_and_standardised_range(tmp_path, gz):
    data = load_classification(make_cfg(write_set(tmp_path / "d", gz=gz)))
    x, y = next(iter(data.train))
    assert x.dtype.name == "float32" and y.dtype.name == "int32"
    assert tuple(x.shape) == (16, 28, 28, 1) and data.input_shape == (28, 28, 1)
    assert np.isclose(x.numpy().min(), -MEAN / STD, atol=1e-5)
    assert x.numpy().max() <= (1 - MEAN) / STD + 1e-5
    assert (data.num_train, data.num_val, data.num_test) == (80, 20, N_TEST)
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top"
    assert data.source == f"local:{tmp_path / 'd'}"
    assert data.steps_per_epoch == 5 and sum(1 for _ in data.train) == 5


def test_load_classification_split_disjoint_and_covers_train(idx_dir):
    data = load_classification(make_cfg(idx_dir))
    train_ids = ids_of(data.sample("train", 1000)[0])
    val_ids = ids_of(data.sample("val", 1000)[0])
    test_ids = ids_of(data.sample("test", 1000)[0])
    assert len(train_ids) == 80 and len(val_ids) == 20
    assert not set(train_ids) & set(val_ids)
    assert set(train_ids) | set(val_ids) == set(range(N_TRAIN))
    assert set(test_ids) == set(range(1000, 1000 + N_TEST))


def test_load_classification_same_seed_same_split_and_first_batch(idx_dir):
    a = load_classification(make_cfg(idx_dir, augment=True))
    b = load_classification(make_cfg(idx_dir, augment=True))
    np.testing.assert_array_equal(a.sample("val", 100)[0], b.sample("val", 100)[0])
    (xa, ya), (xb, yb) = next(iter(a.train)), next(iter(b.train))
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())


def test_load_classification_train_reshuffled_each_epoch(idx_dir):
    data = load_classification(make_cfg(idx_dir))
    first, second = (np.concatenate([y.numpy() for _, y in data.train]) for _ in range(2))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_load_classification_different_seed_different_split(idx_dir):
    a = load_classification(make_cfg(idx_dir, seed=0))
    b = load_classification(make_cfg(idx_dir, seed=1))
    assert set(ids_of(a.sample("val", 100)[0])) != set(ids_of(b.sample("val", 100)[0]))


def test_load_classification_subsets_limit_each_split(idx_dir):
    cfg = make_cfg(idx_dir, train_subset=30, val_subset=7, test_subset=11)
    data = load_classification(cfg)
    assert (data.num_train, data.num_val, data.num_test) == (30, 7, 11)
    assert len(data.sample("train", 1000)[0]) == 30
    assert sum(len(y) for _, y in data.test) == 11
    full_val = set(ids_of(load_classification(make_cfg(idx_dir)).sample("val", 100)[0]))
    assert set(ids_of(data.sample("val", 100)[0])) <= full_val


def test_load_classification_pad_to_32_and_3_channels(idx_dir):
    data = load_classification(make_cfg(idx_dir, image_size=32, channels=3))
    x, _ = data.sample("val", 4)
    assert data.input_shape == (32, 32, 3) and x.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(x[:, :2, :, :], -MEAN / STD, atol=1e-5)  # black padding
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    native = load_classification(make_cfg(idx_dir)).sample("val", 4)[0]
    np.testing.assert_allclose(x[:, 2:30, 2:30, :1], native, atol=1e-5)  # centred


def test_load_classification_resize_when_smaller(idx_dir):
    data = load_classification(make_cfg(idx_dir, image_size=14))
    x, y = data.sample("test", 2)
    assert data.input_shape == (14, 14, 1) and x.shape == (2, 14, 14, 1)
    # 28 -> 14 antialiased: each output pixel weighs 4 input pixels 1/8, 3/8, 3/8, 1/8 per axis,
    # so the 8x8 block of 200 at 10-17 becomes rows/cols 4-9 at 1/8, 7/8, 1, 1, 7/8, 1/8 of it
    edge = np.array([1, 7, 8, 8, 7, 1]) / 8
    block = np.zeros((14, 14))
    block[4:10, 4:10] = 200 * np.outer(edge, edge)
    pixels = (x[..., 0] * STD + MEAN) * 255  # undo the standardisation; row 0 holds the ids
    np.testing.assert_allclose(pixels[:, 1:], np.broadcast_to(block[1:], (2, 13, 14)), atol=1e-3)
    assert y.tolist() == [0, 1]  # the labels of test images 0 and 1


def test_load_classification_augment_changes_train_never_eval(idx_dir):
    plain = load_classification(make_cfg(idx_dir, augment=False))
    aug = load_classification(make_cfg(idx_dir, augment=True))
    (xp, yp), (xa, ya) = next(iter(plain.train)), next(iter(aug.train))
    np.testing.assert_array_equal(yp.numpy(), ya.numpy())  # same order, different pixels
    assert not np.allclose(xp.numpy(), xa.numpy())
    for split in ("val", "test"):
        np.testing.assert_array_equal(
            next(iter(plain.make_eval(split, 8)))[0], next(iter(aug.make_eval(split, 8)))[0]
        )
    np.testing.assert_array_equal(next(iter(plain.val))[0], next(iter(aug.val))[0])


def test_make_train_rebatches(idx_dir):
    data = load_classification(make_cfg(idx_dir))
    sizes = [len(y) for _, y in data.make_train(32)]
    assert sizes == [32, 32, 16]
    with pytest.raises(ValueError, match="split"):
        data.make_eval("validation", 8)


def _corrupt(root, name, data):
    (root / name).write_bytes(data)
    return root / name


@pytest.mark.parametrize(
    "name,payload,problem",
    [
        ("train-images-idx3-ubyte.gz", gzip.compress(b"\x00\x00\x09\x03" + b"\0" * 12), "magic"),
        ("train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(id_images(N_TRAIN, 0)))[:-50],
         "cannot be read"),
        ("train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(id_images(N_TRAIN, 0))[:-10]),
         "size mismatch"),
        ("train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(N_TRAIN - 1))),
         "labels"),
        ("t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.full(N_TEST, 12))), "range"),
        ("train-images-idx3-ubyte.gz", b"not gzip at all", "cannot be read"),
    ],
    ids=["bad-magic", "truncated-gzip", "short-payload", "label-count", "label-range", "not-gzip"],
)  # fmt: skip
def test_load_classification_corrupt_idx_raises_naming_file(idx_dir, name, payload, problem):
    path = _corrupt(idx_dir, name, payload)
    with pytest.raises(DatasetCorruptError, match=problem) as info:
        load_classification(make_cfg(idx_dir))
    assert str(path) in str(info.value)


def test_load_classification_missing_files_explains_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_classification(make_cfg(tmp_path, source="auto"))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--config.data.data_dir" in message and str(tmp_path) in message
    assert isinstance(info.value, FileNotFoundError)


def test_load_classification_missing_label_file_not_found(idx_dir):
    (idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_classification(make_cfg(idx_dir))


def test_load_classification_unknown_name_suggests(idx_dir):
    with pytest.raises(ValueError, match="Did you mean 'fashion_mnist'"):
        load_classification(make_cfg(idx_dir, name="fashion_minst"))


@pytest.mark.parametrize(
    "key,value", [("source", "web"), ("val_fraction", 1.0), ("channels", 2), ("image_size", -1)]
)
def test_load_classification_bad_option_value_error(idx_dir, key, value):
    with pytest.raises(ValueError, match=key):
        load_classification(make_cfg(idx_dir, **{key: value}))


def test_sample_nonpositive_n_value_error(idx_dir):
    with pytest.raises(ValueError, match="n >= 1"):
        load_classification(make_cfg(idx_dir)).sample("val", 0)
