"""Command line: ``afp-tf --config NAME[:ARG] --workdir DIR [--config.a.b=V ...] [-v 1]``.

(``afp-tf`` is ``python -m afp_tf.main``.) ``NAME`` is a config shipped with afp_tf (the
repository's ``configs/``) or the path of your own ``.py`` config file; ``ARG`` is passed to its
``get_config`` (``:quick`` gives a smoke-sized run). Without ``--config`` the default
experiment runs. Re-running the same command on the same workdir resumes an interrupted run.
The terminal shows one line per epoch and per round and the summary; ``-v 1`` shows every
library's log as well, and the full log is always in ``WORKDIR/afp_tf.log``.
"""

from __future__ import annotations

import os
import shutil
import sys

from absl import app, flags, logging

from afp_tf import extras
from afp_tf.export.checks import ExportError
from afp_tf.run import config_lib, console

_CONFIG = flags.DEFINE_string(
    "config", config_lib.DEFAULT_CONFIG, "Experiment: NAME[:ARG] from configs/, or a .py path."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")

_OVERRIDE_PREFIX = "--config."


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.a.b=V`` (or ``--config.a.b V``) overrides from the other flags."""
    rest, overrides = [], []
    args = iter(argv)
    for arg in args:
        if arg.startswith(_OVERRIDE_PREFIX):
            item = arg[len(_OVERRIDE_PREFIX) :]
            if "=" not in item:
                value = next(args, None)
                if value is None:
                    raise config_lib.ConfigError(f"{arg} needs a value: {arg}=VALUE.")
                item = f"{item}={value}"
            overrides.append(item)
        else:
            rest.append(arg)
    return rest, overrides


def _parse(argv: list[str]) -> list[str]:
    rest, overrides = split_overrides(argv)
    _parse.overrides = overrides
    return flags.FLAGS(rest)


def _main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    name = os.path.splitext(os.path.basename(_CONFIG.value.partition(":")[0]))[0]
    workdir = _WORKDIR.value or os.path.join("runs", name)
    fresh = not os.path.exists(workdir)
    try:
        log = console.setup(workdir, flags.FLAGS.verbosity)
    except OSError as e:
        print(
            f"error: Cannot write to workdir {os.path.abspath(workdir)}: {e.strerror}. Choose "
            "another --workdir or fix its permissions.",
            file=sys.stderr,
        )
        return 1
    try:
        cfg = config_lib.load_config(_CONFIG.value)
        config_lib.apply_overrides(cfg, getattr(_parse, "overrides", []))
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        if fresh:  # a misspelt key leaves no run directory behind
            shutil.rmtree(workdir, ignore_errors=True)
        return 2
    # TensorFlow is imported from here on, after the console is set up.
    from afp_tf.data import DatasetError  # noqa: PLC0415
    from afp_tf.run import pipeline, report  # noqa: PLC0415

    try:
        summary = pipeline.run(cfg, workdir)
    except (pipeline.RunError, DatasetError, ExportError, extras.MissingExtraError) as e:
        logging.error("%s (log: %s)", e, log)
        return 1
    print(report.summary_table(summary))
    print(f"log: {log}")
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(_main, flags_parser=_parse)


if __name__ == "__main__":
    run()
