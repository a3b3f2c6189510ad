"""BatchNorm recalibration: moving statistics become the average of training-mode batches."""

import keras
import numpy as np
import tensorflow as tf

from afp_tf.method import recalibration


def test_recalibrate_batchnorm_moving_stats_are_batch_average_momentum_restored():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(48, 5)) * [1, 2, 3, 4, 5] + [5, 4, 3, 2, 1]).astype("float32")
    inputs = keras.Input((5,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, keras.layers.Dense(2)(bn(inputs)))
    bn.moving_mean.assign(np.full(5, 100.0, "float32"))  # stale statistics
    kernel = model.layers[-1].kernel.numpy().copy()
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(48, "int32"))).batch(16)
    used = recalibration.recalibrate_batchnorm(model, [bn], data, steps=10)
    batches = x.reshape(3, 16, 5)
    assert used == 3
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(0), rtol=1e-4)
    assert bn.momentum == 0.99
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), kernel)
