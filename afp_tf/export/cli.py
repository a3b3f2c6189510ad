"""Command line: export a saved ``.keras`` classifier to every format and verify each artifact.

    afp-tf-export --model M.keras --out DIR [--formats all | a,b] [--data d.npz | IMAGE_DIR |
                  tfds:NAME[:SPLIT]] [--tolerance FORMAT.CHECK=VALUE ...] [-v 1]

(``afp-tf-export`` is ``python -m afp_tf.export``.) Without ``--data`` artifacts'
outputs are compared with the Keras model's on random inputs (accuracy is not measured) and
full-integer int8 is skipped with a note; with it, int8 calibrates on real inputs and accuracy
is checked against its labels (or, without labels, top-1 agreement with Keras). A summary
table goes to stdout; the exit status is 0 when every requested format passed, 1 when one
failed (its cause is in the table and in ``DIR/export_report.json``), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from afp_tf.run import console


def _parser() -> argparse.ArgumentParser:
    from afp_tf.export.checks import ALL_FORMATS  # noqa: PLC0415 - imports no TensorFlow

    parser = argparse.ArgumentParser(
        "afp-tf-export",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a saved .keras classifier")
    parser.add_argument("--out", required=True, help="output directory (artifacts, report, log)")
    parser.add_argument(
        "--formats", default="all", help=f"'all' or comma-separated: {','.join(ALL_FORMATS)}"
    )
    parser.add_argument(
        "--data",
        help="verification + calibration inputs: a .npz (x, optional y, x_rep), a folder of "
        "images, or tfds:NAME[:SPLIT]",
    )
    parser.add_argument("--samples", type=int, default=256, help="verification samples")
    parser.add_argument(
        "--calibration_samples", type=int, default=200, help="int8 calibration inputs"
    )
    parser.add_argument(
        "--pixel_range",
        default="0,1",
        help="the model's input range for image folders and TFDS: 0,1 (default), 0,255, -1,1",
    )
    parser.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="FORMAT.CHECK=VALUE",
        help="replace a check's threshold, e.g. tflite_int8.max_metric_drop=0.02 or "
        "onnx.max_rel_diff=none (repeatable; CHECK is max_rel_diff or max_metric_drop)",
    )
    parser.add_argument(
        "-v", "--verbosity", type=int, default=0, help="1: show every library's log too"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the export command; returns its exit status."""
    from afp_tf.export.checks import parse_formats, parse_tolerances  # noqa: PLC0415

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        formats = parse_formats(args.formats)
        tolerances = parse_tolerances(args.tolerance)
    except ValueError as e:
        parser.error(str(e))
    if args.samples < 1 or args.calibration_samples < 1:
        parser.error("--samples and --calibration_samples must be >= 1")
    if "tflite_int8" in args.formats.split(",") and not args.data:
        parser.error("tflite_int8 calibrates on real inputs: pass --data (or drop tflite_int8)")
    try:
        log = console.setup(args.out, args.verbosity)
    except OSError as e:
        print(f"error: Cannot write to --out {args.out}: {e.strerror}.", file=sys.stderr)
        return 1
    return _export(args, formats, tolerances, log)


def _export(args, formats, tolerances, log: Path) -> int:
    # TensorFlow is imported from here on, after the console is set up.
    import keras  # noqa: PLC0415
    from absl import logging  # noqa: PLC0415

    from afp_tf import export, extras  # noqa: PLC0415
    from afp_tf.export import calibration  # noqa: PLC0415
    from afp_tf.export.artifacts import check_single_io  # noqa: PLC0415
    from afp_tf.method import regularizers  # noqa: PLC0415, F401 - registers afp_tf's Keras objects

    try:
        model = keras.saving.load_model(args.model, compile=False)
        shape = check_single_io(model)
        if args.data:
            data = calibration.load(
                args.data,
                shape,
                samples=args.samples,
                calibration_samples=args.calibration_samples,
                pixel_range=args.pixel_range,
            )
        else:
            data = calibration.random_inputs(shape, args.samples)
        report = export.export_model(
            model,
            args.out,
            formats=formats,
            representative=data.calibration,
            val_x=data.x,
            val_y=data.y,
            data_note=data.note,
            tolerances=tolerances,
            measure_metric=data.real,
        )
    except export.ExportVerificationError as e:
        report = e.report
    except (OSError, ValueError, export.ExportError, extras.MissingExtraError) as e:
        logging.error("%s", e)
        print(f"log: {log}")
        return 1
    print(export.summary_table(report))
    print(f"report: {Path(args.out).resolve() / export.REPORT_NAME}\nlog: {log}")
    return 0 if report["passed"] else 1


def run() -> None:
    """Console-script entry point (``afp-tf-export``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
