"""MobileNet v1 (width multiplier 1.0) on ImageNet-2012, tolerance 1 point of top-1.

    python -m afp_tf.main --config mobilenet_imagenet --workdir runs/mobilenet_imagenet \
        --config.data.imagenet_manual_dir=/path/to/imagenet/tars
    python -m afp_tf.main --config mobilenet_imagenet:quick --workdir runs/quick ...

Data: TFDS ``imagenet2012`` prepared from the manually downloaded archives. Needs accelerators.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.name = "mobilenet_imagenet"
    c.model.name = "mobilenet"
    c.data.name = "imagenet2012"
    c.data.download = False
    c.train.strategy = "mirrored"
    c.train.learning_rate = 0.1
    c.train.weight_decay = 4e-5
    c.train.baseline_epochs = 90
    c.prune.tolerance = 0.01
    c.prune.shrink_epochs = 1
    c.prune.recovery_epochs = 3
    c.prune.max_rounds = 20
    c.prune.finetune_epochs = 10
    return config_lib.with_arg(c, arg)
