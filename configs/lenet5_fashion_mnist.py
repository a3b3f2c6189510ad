"""LeNet-5 (Caffe form, 20-50-500) on Fashion-MNIST, tolerance 1 point: the default experiment.

    python -m afp_tf.main --config lenet5_fashion_mnist --workdir runs/lenet5_fashion_mnist
    python -m afp_tf.main --config lenet5_fashion_mnist:quick --workdir runs/quick   # smoke run

Data: TFDS if prepared, else the IDX files of Debian's ``dataset-fashion-mnist``.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    return config_lib.with_arg(config_lib.lenet5_config("fashion_mnist"), arg)
