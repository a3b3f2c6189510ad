"""ResNet-56 (CIFAR form) on Fashion-MNIST zero-padded to 32×32, sized for a shared 2-core CPU.

    .venv/bin/python benchmarks/seeds.py resnet56_fashion_mnist --seeds 0,1,2
    python -m afp_tf.main --config resnet56_fashion_mnist --workdir runs/resnet56_fashion_mnist
    python -m afp_tf.main --config resnet56_fashion_mnist:quick --workdir runs/quick   # smoke run

Reduced from the paper's CIFAR-10 setting for CPU time (stated in every result): Fashion-MNIST
instead of CIFAR-10, subsets of 8,000 train, 3,000 val and 6,000 acceptance images (all carved
from the train split) and 5,000 test images, 10 baseline epochs, at most 4 rounds, batch 64.
Data: TFDS if prepared, else the IDX files of Debian's ``dataset-fashion-mnist``.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.fashion_mnist32_config("resnet56", learning_rate=0.05, weight_decay=1e-4)
    c.prune.tolerance = 0.01
    c.prune.max_rounds = 4
    return config_lib.with_arg(c, arg)
