"""One experiment end to end: config files (``config_lib``), the task builders, the pipeline
(baseline, pruning rounds, fine-tuning, export), checkpoints and resume, metric tracking,
the console and log file, and the run report.
"""
