"""Datasets: classification (TFDS first, local files second) and detection (GTSDB)."""

from afp_tf.data.classification import ClassificationData, load_classification
from afp_tf.data.errors import DatasetCorruptError, DatasetError, DatasetNotFoundError

__all__ = [
    "ClassificationData",
    "DatasetCorruptError",
    "DatasetError",
    "DatasetNotFoundError",
    "load_classification",
]
