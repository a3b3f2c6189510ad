"""The pruning method: AFP candidate selection, the PRC controller, the regularisers and
round weights, BatchNorm recalibration, ``PruneOptions`` and the round-by-round ``Pruner``;
plus the comparison methods (uniform and iterative global ℓ1) afp_tf is measured against.
"""
