"""LeNet-5 (Caffe form, 20-50-500) on MNIST, tolerance 1 point.

    python -m afp_tf.main --config lenet5_mnist --workdir runs/lenet5_mnist
    python -m afp_tf.main --config lenet5_mnist:quick --workdir runs/quick

Data: TFDS ``mnist`` (needs a download once), or IDX files via --config.data.data_dir=DIR.
"""

from afp_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.name = "lenet5_mnist"
    c.model.name = "lenet5"
    c.data.name = "mnist"
    c.data.augment = False
    c.train.learning_rate = 0.02
    c.train.baseline_epochs = 10
    c.prune.tolerance = 0.01
    c.prune.p_max = 0.3
    c.prune.max_rounds = 15
    return config_lib.with_arg(c, arg)
