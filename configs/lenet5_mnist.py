"""LeNet-5 (Caffe form, 20-50-500) on MNIST, tolerance 1 point.

    python -m afp_tf.main --config lenet5_mnist --workdir runs/lenet5_mnist
    python -m afp_tf.main --config lenet5_mnist:quick --workdir runs/quick

Data: TFDS ``mnist`` (needs a download once), or IDX files via --config.data.data_dir=DIR.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    return config_lib.with_arg(config_lib.lenet5_config("mnist"), arg)
