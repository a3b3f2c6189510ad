"""ResNet-110 (CIFAR form, projection shortcuts) on CIFAR-10.

    python -m afp_tf.main --config resnet110_cifar10 --workdir runs/resnet110_cifar10
    python -m afp_tf.main --config resnet110_cifar10:quick --workdir runs/quick

Data: TFDS ``cifar10``, or CIFAR python batches via --config.data.data_dir=DIR. A GPU is advised.
"""

from afp_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.name = "resnet110_cifar10"
    c.model.name = "resnet110"
    c.data.name = "cifar10"
    c.train.learning_rate = 0.1
    c.train.weight_decay = 1e-4
    c.train.baseline_epochs = 160
    c.prune.tolerance = 0.01
    c.prune.penalty_epochs = 2
    c.prune.recovery_epochs = 5
    c.prune.max_rounds = 30
    c.prune.finetune_epochs = 20
    return config_lib.with_arg(c, arg)
