"""afp_tf: adaptive filter pruning for Keras 3 convolutional networks.

    import afp_tf
    result = afp_tf.prune(model, train_ds, val_data=val_ds, tolerance=0.01)
    result.model  # a plain, smaller keras.Model

Submodules: ``surgery`` (channel groups, filter removal), ``stats`` (params, MACs), ``models``,
``data``, ``export``; ``AFPCallback`` for ``model.fit`` users.

Layout (docs/architecture.md), one way: ``main`` -> ``run`` -> ``method`` -> ``train`` /
``surgery`` -> ``export``. ``api``, ``callback`` and ``stats`` stay here as the public faces.
So do ``io_utils``, ``extras`` and ``resources``: leaves that import nothing from afp_tf and
that every layer uses (atomic files and JSON, optional-extra checks, shipped configs and deploy
runners); inside any one layer they would make every other layer import that one.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "prune": ("afp_tf.api", "prune"),
    "PruneResult": ("afp_tf.api", "PruneResult"),
    "AFPCallback": ("afp_tf.callback", "AFPCallback"),
    "OrthogonalRegularizer": ("afp_tf.method.regularizers", "OrthogonalRegularizer"),
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    """Imports the public API on first use, so ``import afp_tf`` stays cheap."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'afp_tf' has no attribute {name!r}")
