"""Training: the ``Trainer`` (compiled train and evaluation steps), the epoch loop,
distribution strategies and mixed precision, and the ``Task`` interface (loss, metrics,
evaluator, exporter) through which the generic code runs any task without branching.
"""
