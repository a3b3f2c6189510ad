"""Experiment configs, one per file with ``get_config(arg)``; installed as ``afp_tf.configs``."""
