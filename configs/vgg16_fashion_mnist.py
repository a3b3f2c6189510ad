"""VGG-16 (CIFAR form) on Fashion-MNIST zero-padded to 32×32, sized for a shared 2-core CPU.

    .venv/bin/python benchmarks/compare.py vgg16_fashion_mnist        # afp_tf vs baselines
    python -m afp_tf.main --config vgg16_fashion_mnist --workdir runs/vgg16_fashion_mnist
    python -m afp_tf.main --config vgg16_fashion_mnist:quick --workdir runs/quick   # smoke run

Reduced for CPU time (stated in every result): width multiplier 0.25 (16-32-64-128-128 conv
channels instead of 64-128-256-512-512, dense 128), subsets of 8,000 train and 3,000 val images
and a 6,000-image acceptance split for the accept/reject decisions (all carved from the train
split) and 5,000 test images, 10 baseline epochs, at most 3 rounds,
batch 64 (so BatchNorm's moving statistics keep up within an epoch), and a 2-point tolerance (the
validation metric of such a short run moves by about a point from epoch to epoch).
Data: TFDS if prepared, else the IDX files of Debian's ``dataset-fashion-mnist``;
``data.image_size=32`` pads the 28×28 images with zeros.
"""

from afp_tf import config_lib


def get_config(arg=None):
    c = config_lib.base_config()
    c.name = "vgg16_fashion_mnist"
    c.model.name = "vgg16"
    c.model.width = 0.25
    c.data.name = "fashion_mnist"
    c.data.image_size = 32
    c.data.augment = False
    c.data.accept_fraction = 0.1
    c.data.train_subset = 8000
    c.data.val_subset = 3000
    c.data.test_subset = 5000
    c.data.batch_size = 64
    c.train.optimizer = "sgd"
    c.train.learning_rate = 0.02
    c.train.weight_decay = 5e-4
    c.train.baseline_epochs = 10
    c.prune.tolerance = 0.02
    c.prune.p_max = 0.3
    c.prune.max_rounds = 3
    c.prune.recovery_epochs = 2
    c.prune.finetune_epochs = 2
    return config_lib.with_arg(c, arg)
