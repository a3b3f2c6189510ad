"""Data sources: CIFAR pickles, Keras mnist.npz, TFDS (mocked), the real Fashion-MNIST."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_data_classification import make_cfg

from afp_tf.data import (
    DatasetCorruptError,
    DatasetNotFoundError,
    load_classification,
    preprocess,
    sources,
)

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def cifar_batch(n, offset, label_key=b"labels", num_classes=10):
    rng = np.random.default_rng(offset)
    data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    labels = [int(v) for v in (np.arange(n) + offset) % num_classes]
    return {b"data": data, label_key: labels, b"batch_label": b"x"}


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def cifar10_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        dump(folder / f"data_batch_{i}", cifar_batch(12, 12 * i))
    dump(folder / "test_batch", cifar_batch(10, 500))
    return tmp_path


def test_load_classification_cifar10_batches_shapes_and_layout(cifar10_dir):
    cfg = make_cfg(cifar10_dir, name="cifar10", val_fraction=0.25)
    data = load_classification(cfg)
    assert data.source.endswith("cifar-10-batches-py")
    assert (data.num_train, data.num_val, data.num_test) == (45, 15, 10)
    assert data.input_shape == (32, 32, 3) and data.class_names[0] == "airplane"
    x, y = data.sample("test", 10)
    batch = cifar_batch(10, 500)
    expected = batch[b"data"].reshape(10, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    np.testing.assert_allclose(x, (expected - mean) / std, atol=1e-4)
    np.testing.assert_array_equal(y, batch[b"labels"])


def test_load_classification_cifar10_augment_crops_and_flips_train_only(cifar10_dir):
    plain = load_classification(make_cfg(cifar10_dir, name="cifar10"))
    aug = load_classification(make_cfg(cifar10_dir, name="cifar10", augment=True))
    assert not np.allclose(next(iter(plain.train))[0], next(iter(aug.train))[0])
    np.testing.assert_array_equal(next(iter(plain.test))[0], next(iter(aug.test))[0])


def test_load_classification_cifar100_fine_labels_and_meta_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    dump(folder / "train", cifar_batch(30, 0, b"fine_labels", 100))
    dump(folder / "test", cifar_batch(8, 90, b"fine_labels", 100))
    dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    data = load_classification(make_cfg(tmp_path, name="cifar100"))
    assert data.num_classes == 100 and data.class_names[99] == "c99"
    assert sorted(data.sample("test", 8)[1]) == list(range(90, 98))


@pytest.mark.parametrize(
    "payload,problem",
    [
        (b"garbage, not a pickle", "unreadable pickle"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps(os.system), "not allowed"),  # a global that could run code
    ],
)
def test_load_classification_corrupt_cifar_raises_naming_file(cifar10_dir, payload, problem):
    path = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(payload)
    with pytest.raises(DatasetCorruptError, match=problem) as info:
        load_classification(make_cfg(cifar10_dir, name="cifar10"))
    assert str(path) in str(info.value)


def test_load_classification_missing_cifar_batch_not_found(cifar10_dir):
    (cifar10_dir / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_5"):
        load_classification(make_cfg(cifar10_dir, name="cifar10"))


def test_load_classification_keras_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (20, 28, 28)).astype(np.uint8),
        "y_train": np.arange(20) % 10,
        "x_test": rng.integers(0, 256, (6, 28, 28)).astype(np.uint8),
        "y_test": np.arange(6),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    data = load_classification(make_cfg(tmp_path, name="mnist", val_fraction=0.25))
    assert (data.num_train, data.num_val, data.num_test) == (15, 5, 6)
    assert data.class_names == tuple("0123456789")


def test_load_classification_tfds_mocked_reads_in_memory(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = make_cfg(tmp_path, name="cifar10", source="tfds", download=True, val_fraction=0.25)
    with tfds.testing.mock_data(num_examples=24):
        data = load_classification(cfg)
    assert data.source.startswith("tfds:")
    assert (data.num_train, data.num_val, data.num_test) == (18, 6, 24)
    x, y = next(iter(data.train))
    assert x.shape[1:] == (32, 32, 3) and y.dtype.name == "int32"


def test_load_classification_tfds_without_download_explains(tmp_path):
    cfg = make_cfg(tmp_path, name="cifar10", source="tfds", download=False)
    with pytest.raises(DatasetNotFoundError, match="data.source=tfds"):
        load_classification(cfg)


def test_load_classification_imagenet_without_manual_dir_explains(tmp_path):
    cfg = make_cfg(tmp_path, name="imagenet2012", source="auto")
    with pytest.raises(DatasetNotFoundError, match="imagenet_manual_dir"):
        load_classification(cfg)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_load_classification_real_fashion_mnist_counts(tmp_path):
    cfg = make_cfg("", source="auto", tfds_data_dir=str(tmp_path), val_fraction=0.1)
    data = load_classification(cfg)
    assert data.source == f"local:{REAL_FASHION}"
    assert (data.num_train + data.num_val, data.num_test) == (60000, 10000)
    _, y = data.sample("test", 10000)
    assert len(y) == 10000 and y.min() == 0 and y.max() == 9


def test_imagenet_preprocessing_shapes_and_seeded_crop():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (90, 120, 3)), tf.uint8)
    mean, std = sources.SPECS["imagenet2012"].mean, sources.SPECS["imagenet2012"].std
    train_fn = preprocess.imagenet_fn(mean, std, size=48, train=True)
    eval_fn = preprocess.imagenet_fn(mean, std, size=48, train=False)
    a, label = train_fn(image, 7, tf.constant([1, 2], tf.int64))
    b, _ = train_fn(image, 7, tf.constant([1, 2], tf.int64))
    c, _ = train_fn(image, 7, tf.constant([3, 4], tf.int64))
    assert a.shape == (48, 48, 3) and int(label) == 7
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    e1, _ = eval_fn(image, 0)
    e2, _ = eval_fn(image, 0)
    assert e1.shape == (48, 48, 3)
    np.testing.assert_array_equal(e1, e2)
