"""The command lines' console: a few informative lines on screen, everything in a log file.

By default (verbosity 0) the terminal shows afp_tf's own INFO lines (one per epoch and per
round), progress bars when it is a terminal, warnings and errors of afp_tf, errors of anything
else, and the final tables. TensorFlow's C++ logs, the converters' and other libraries' INFO
lines go to ``LOG_NAME`` in the run's directory only. Verbosity 1 or more shows everything.

TensorFlow's C++ runtime writes straight to the process's standard error (file descriptor 2),
much of it before its log level can be set; so, quiet, descriptors 1 and 2 are pointed at the
log file while Python's ``sys.stdout`` / ``sys.stderr`` keep the terminal. This must happen
before TensorFlow is imported: call :func:`setup` (or :func:`quiet_before_tensorflow`) first.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from absl import logging as absl_logging  # first: the "absl" logger must be absl's own class

LOG_NAME = "afp_tf.log"
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # afp_tf/, not afp_tf/run/
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR", "ABSL_MIN_LOG_LEVEL": "2"}
_FILE_FORMAT = "%(levelname).1s%(asctime)s %(name)s %(filename)s:%(lineno)d] %(message)s"


def quiet_before_tensorflow() -> None:
    """Sets the environment that quiets TensorFlow's C++ logs (before TensorFlow is imported)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def log_path(directory: str | os.PathLike) -> Path:
    """The log file in ``directory``; a multi-worker task other than the chief gets its own."""
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    if kind in (None, "chief") or (kind == "worker" and index == 0):
        return Path(directory) / LOG_NAME
    return Path(directory) / f"afp_tf.{kind}_{index}.log"


def setup(directory: str | os.PathLike, verbosity: int = 0) -> Path:
    """Routes logging to the terminal (filtered by ``verbosity``) and to a log file.

    Args:
        directory: Where the log file goes (created if missing): the run's workdir.
        verbosity: 0 quiet; 1 or more everything on the terminal as well.

    Returns:
        The log file's path.

    Raises:
        OSError: the log file cannot be written.
    """
    path = log_path(Path(directory).expanduser().resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - process-long
    log_file.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    if verbosity <= 0:
        quiet_before_tensorflow()
        _native_output_to(log_file)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    to_file = logging.StreamHandler(log_file)
    to_file.setFormatter(logging.Formatter(_FILE_FORMAT, "%m%d %H:%M:%S"))
    to_screen = logging.StreamHandler(sys.stderr)
    to_screen.setFormatter(_ScreenFormatter())
    if verbosity <= 0:
        to_screen.addFilter(_quiet)
    root.addHandler(to_file)
    root.addHandler(to_screen)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    absl_logging.set_verbosity(absl_logging.DEBUG if verbosity > 1 else absl_logging.INFO)
    logging.captureWarnings(True)
    _log_uncaught_exceptions(log_file)
    return path


def _native_output_to(log_file) -> None:
    """Points descriptors 1 and 2 at ``log_file``; ``sys.stdout`` / ``sys.stderr`` keep theirs."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        stream.flush()
        kept = os.fdopen(os.dup(fd), "w", buffering=1, encoding=stream.encoding, errors="replace")
        os.dup2(log_file.fileno(), fd)
        setattr(sys, name, kept)


def _quiet(record: logging.LogRecord) -> bool:
    """Terminal filter when quiet: afp_tf's INFO and up, errors of everything else."""
    ours = record.pathname.startswith(_PACKAGE_DIR)
    return record.levelno >= (logging.INFO if ours else logging.ERROR)


class _ScreenFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:  # "warning: ...", "error: ..." like the usage errors
            message = f"{'error' if record.levelno >= logging.ERROR else 'warning'}: {message}"
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return message


def _log_uncaught_exceptions(log_file) -> None:
    """A crash's traceback goes to the log file as well as to the terminal."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        log_file.write("".join(traceback.format_exception(kind, value, tb)))
        previous(kind, value, tb)

    sys.excepthook = hook
