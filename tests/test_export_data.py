"""The export command's inputs: .npz, image folders and TFDS splits, resized and scaled."""

import numpy as np
import pytest
import tensorflow as tf

from afp_tf.export import calibration

SHAPE = (12, 12, 1)


def _write_pngs(folder, values):
    """One 20x20 RGB PNG per value, every pixel that value, in a nested folder."""
    (folder / "sub").mkdir(parents=True)
    for i, v in enumerate(values):
        image = tf.fill((20, 20, 3), tf.constant(v, tf.uint8))
        (folder / "sub" / f"img_{i}.png").write_bytes(tf.io.encode_png(image).numpy())


def test_load_npz_uses_x_rep_for_calibration_and_labels(tmp_path):
    x = np.random.default_rng(0).random((10, *SHAPE), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10), x_rep=x[:3] + 1)
    data = calibration.load(str(tmp_path / "d.npz"), SHAPE, samples=8, calibration_samples=5)
    np.testing.assert_array_equal(data.x, x[:8])
    np.testing.assert_array_equal(data.y, np.arange(8))
    np.testing.assert_array_equal(data.calibration, x[:3] + 1)
    assert "x_rep" in data.note


def test_load_npz_wrong_shape_names_both_shapes(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), np.float32))
    with pytest.raises(calibration.ExportDataError, match=r"\(8, 8, 1\).*\(12, 12, 1\)"):
        calibration.load(str(tmp_path / "d.npz"), SHAPE, samples=4, calibration_samples=4)


def test_load_image_folder_resizes_scales_and_calibrates_on_the_rest(tmp_path):
    _write_pngs(tmp_path / "images", [0, 51, 102, 153, 204, 255])
    data = calibration.load(str(tmp_path / "images"), SHAPE, samples=4, calibration_samples=2)
    assert data.x.shape == (4, *SHAPE) and data.y is None
    np.testing.assert_allclose(data.x[:, 0, 0, 0], [0.0, 0.2, 0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(data.calibration[:, 5, 5, 0], [0.8, 1.0], atol=1e-6)
    assert "samples after" in data.note


def test_load_image_folder_pixel_range_minus_one_to_one(tmp_path):
    _write_pngs(tmp_path / "images", [0, 255])
    data = calibration.load(
        str(tmp_path / "images"), (8, 8, 3), samples=4, calibration_samples=2, pixel_range="-1,1"
    )
    np.testing.assert_allclose(data.x[:, 0, 0, 0], [-1.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(data.calibration, data.x)  # too few: the same inputs
    assert "same inputs" in data.note


def test_load_tfds_split_reads_images_and_labels():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        data = calibration.load("tfds:mnist:test", (28, 28, 1), samples=4, calibration_samples=2)
        written = list(tfds.as_numpy(tfds.load("mnist", split="test")))  # the mock's examples
    images = np.stack([e["image"] for e in written]) / 255.0
    assert len(written) == 6 and images.max() > 0.9  # the mock's uint8 pixels span 0-255
    # the first 4 examples verify (pixels / 255, their labels), the next 2 calibrate
    np.testing.assert_allclose(data.x, images[:4], atol=1e-6)
    np.testing.assert_array_equal(data.y, [e["label"] for e in written[:4]])
    np.testing.assert_allclose(data.calibration, images[4:6], atol=1e-6)


@pytest.mark.parametrize("spec", ["missing.npz", "model.keras", "tfds:no_such_dataset_xyz"])
def test_load_bad_source_raises_clear_error(tmp_path, spec):
    with pytest.raises(calibration.ExportDataError, match="--data|does not exist"):
        calibration.load(
            str(tmp_path / spec) if "tfds" not in spec else spec,
            SHAPE,
            samples=4,
            calibration_samples=4,
        )
