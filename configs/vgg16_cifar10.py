"""VGG-16 (CIFAR form, BatchNorm, 512-512-10 head) on CIFAR-10: the paper's headline setting.

    python -m afp_tf.main --config vgg16_cifar10 --workdir runs/vgg16_cifar10
    python -m afp_tf.main --config vgg16_cifar10:quick --workdir runs/quick

Data: TFDS ``cifar10``, or CIFAR python batches via --config.data.data_dir=DIR. A GPU is advised.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.cifar10_config("vgg16", learning_rate=0.05, weight_decay=5e-4)
    if arg == "quick":
        c.model.width = 0.25
    return config_lib.with_arg(c, arg)
