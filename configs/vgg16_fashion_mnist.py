"""VGG-16 (CIFAR form) on Fashion-MNIST zero-padded to 32×32, sized for a shared 2-core CPU.

    .venv/bin/python benchmarks/compare.py vgg16_fashion_mnist        # afp_tf vs comparison methods
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

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.fashion_mnist32_config("vgg16", learning_rate=0.02, weight_decay=5e-4)
    c.model.width = 0.25
    c.prune.tolerance = 0.02
    c.prune.max_rounds = 3
    return config_lib.with_arg(c, arg)
