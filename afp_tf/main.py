"""Command line: ``python -m afp_tf.main --config NAME[:ARG] --workdir DIR [--config.a.b=V ...]``.

``NAME`` is a file in ``configs/`` (or a path to one); ``ARG`` is passed to its ``get_config``
(``:quick`` gives a smoke-sized run). Without ``--config`` the default experiment runs.
Re-running the same command on the same workdir resumes an interrupted run.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from afp_tf import config_lib  # noqa: E402

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
    try:
        cfg = config_lib.load_config(_CONFIG.value)
        config_lib.apply_overrides(cfg, getattr(_parse, "overrides", []))
    except config_lib.ConfigError as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = _WORKDIR.value or os.path.join("runs", _CONFIG.value.partition(":")[0])
    from afp_tf import pipeline, report  # noqa: PLC0415 - keeps --help fast
    from afp_tf.data import DatasetError  # noqa: PLC0415

    try:
        summary = pipeline.run(cfg, workdir)
    except (pipeline.RunError, DatasetError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary_table(summary))
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(_main, flags_parser=_parse)


if __name__ == "__main__":
    run()
