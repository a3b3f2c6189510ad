"""Times the probes of a latency table with the LiteRT interpreter alone (ai-edge-litert).

    python export/measure_latency_table.py PROBES_DIR [--threads 1] [--runs 50] [--warmup 10]
        [--out table.json]

``PROBES_DIR`` holds ``probes.json`` and the ``.tflite`` probes that
``afp_tf.export.latency_model.build_probes`` wrote. Every probe runs at batch 1 as
``run_tflite.py`` runs a model (default XNNPACK delegate, ``--threads`` threads), the probes
taking turns (round robin, ``--block`` calls each, the first of them untimed so that a probe is
timed warm) so that drift of a shared CPU hits all of them alike. Writes the
table JSON that ``LatencyTable.load`` reads (default ``PROBES_DIR/table.json``): the manifest,
each probe's median and p90 ms, threads, runs, the runtime and the machine. To predict the
latency on a phone or a board, copy ``PROBES_DIR`` there, run this, and bring the JSON back.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_common  # noqa: E402
import run_tflite  # noqa: E402

MANIFEST = "probes.json"  # as afp_tf.export.latency_model writes it


def main(argv: list[str] | None = None) -> dict:
    """Times every probe of the manifest, writes the table, prints a one-line JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probes_dir", help=f"the folder with {MANIFEST} and the probes")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs of every probe")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs of every probe first")
    parser.add_argument(
        "--block", type=int, default=10, help="calls per turn, the first untimed (default 10)"
    )
    parser.add_argument("--out", help="the table JSON (default PROBES_DIR/table.json)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.block < 1:
        parser.error("--runs, --threads and --block must be >= 1 and --warmup >= 0")
    folder = Path(args.probes_dir)
    manifest = json.loads((folder / MANIFEST).read_text())
    files = list(dict.fromkeys(p["file"] for p in manifest["probes"]))  # probes may share one
    runners = [run_tflite.load(str(folder / f), threads=args.threads) for f in files]
    calls = [
        functools.partial(r.predict, deploy_common.load_inputs(None, r.input_shape, 1))
        for r in runners
    ]
    timed = deploy_common.time_round_robin(calls, args.runs, args.warmup, args.block)
    timed = dict(zip(files, timed, strict=True))
    table = {
        **manifest,
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "block": args.block,
        "runtime": runners[0].runtime,
        "machine": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "system": platform.system(),
        },
        "probes": [
            {**p, "median_ms": timed[p["file"]]["median_ms"], "p90_ms": timed[p["file"]]["p90_ms"]}
            for p in manifest["probes"]
        ],
    }
    out = Path(args.out) if args.out else folder / "table.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)  # a reader never sees half a table
    summary = {"table": str(out), "probes": len(table["probes"]), "threads": args.threads}
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return table


if __name__ == "__main__":
    main()
