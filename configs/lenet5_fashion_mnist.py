"""LeNet-5 (Caffe form, 20-50-500) on Fashion-MNIST, tolerance 1 point: the default experiment.

    python -m afp_tf.main --config lenet5_fashion_mnist --workdir runs/lenet5_fashion_mnist
    python -m afp_tf.main --config lenet5_fashion_mnist:quick --workdir runs/quick   # smoke run

Data: TFDS if prepared, else the IDX files of Debian's ``dataset-fashion-mnist``.
"""

from afp_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.name = "lenet5_fashion_mnist"
    c.model.name = "lenet5"
    c.data.name = "fashion_mnist"
    c.data.augment = False
    c.train.optimizer = "sgd"
    c.train.learning_rate = 0.02
    c.train.baseline_epochs = 10
    c.prune.tolerance = 0.01
    c.prune.p_max = 0.3
    c.prune.max_rounds = 15
    return config_lib.with_arg(c, arg)
