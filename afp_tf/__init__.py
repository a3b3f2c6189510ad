"""afp_tf: adaptive filter pruning for Keras 3 convolutional networks."""

__version__ = "0.1.0"
