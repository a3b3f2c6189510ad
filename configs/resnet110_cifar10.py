"""ResNet-110 (CIFAR form, projection shortcuts) on CIFAR-10.

    python -m afp_tf.main --config resnet110_cifar10 --workdir runs/resnet110_cifar10
    python -m afp_tf.main --config resnet110_cifar10:quick --workdir runs/quick

Data: TFDS ``cifar10``, or CIFAR python batches via --config.data.data_dir=DIR. A GPU is advised.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.cifar10_config("resnet110", learning_rate=0.1, weight_decay=1e-4)
    return config_lib.with_arg(c, arg)
