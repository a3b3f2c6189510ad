"""The run's report: ``report.json`` for programs, ``report.md`` with plots for people."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from afp_tf import io_utils  # noqa: E402
from afp_tf.method import prc  # noqa: E402


def write(workdir: str | os.PathLike, state: dict, events: list[dict]) -> dict[str, Any]:
    """Writes report.json, report.md and plots/; returns the summary (also in report.json)."""
    workdir = Path(workdir)
    base, pruned = state["baseline"], state.get("pruned", {})
    prune = state.get("prune", {})
    summary = {
        "baseline": _strip(base),
        "pruned": _strip(pruned),
        "reduction": {
            "params": _ratio(base.get("params"), pruned.get("params")),
            "macs": _ratio(base.get("macs"), pruned.get("macs")),
        },
        "rounds": prune.get("round", 0),
        "stop_reason": prune.get("stop_reason"),
        "history": prune.get("history", []),
        "export": state.get("export"),
        "artifacts": _artifacts(workdir),
        "workdir": str(workdir),
    }
    plots = workdir / "plots"
    plots.mkdir(exist_ok=True)
    if pruned:
        _plot_filters(base["filters"], pruned["filters"], plots / "filters_per_layer.png")
    _plot_rounds(rounds_series(state), plots / "metric_vs_macs.png")
    summary["plots"] = sorted(p.name for p in plots.glob("*.png"))
    io_utils.write_json(workdir / "report.json", summary)
    io_utils.write_text(workdir / "report.md", markdown(summary, base, pruned))
    return summary


def summary_table(summary: dict) -> str:
    """The baseline-vs-pruned table the CLI prints at the end of a run."""
    base, pruned = summary["baseline"], summary["pruned"]
    rows = [
        ("", "baseline", "pruned", "change"),
        (
            "val metric",
            _pct(base.get("val")),
            _pct(pruned.get("val")),
            _delta(base.get("val"), pruned.get("val")),
        ),
        (
            "test metric",
            _pct(base.get("test")),
            _pct(pruned.get("test")),
            _delta(base.get("test"), pruned.get("test")),
        ),
        (
            "params",
            _int(base.get("params")),
            _int(pruned.get("params")),
            _times(summary["reduction"]["params"]),
        ),
        (
            "MACs",
            _int(base.get("macs")),
            _int(pruned.get("macs")),
            _times(summary["reduction"]["macs"]),
        ),
    ]
    for name, before in base.get("filters", {}).items():
        after = pruned.get("filters", {}).get(name)
        rows.append((f"  filters {name}", str(before), str(after), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(f"rounds: {summary['rounds']} (stopped: {summary['stop_reason']})")
    lines.append(f"report: {Path(summary['workdir']) / 'report.md'}")
    for key, path in summary["artifacts"].items():
        lines.append(f"{key}: {path}")
    return "\n".join(lines)


def markdown(summary: dict, base: dict, pruned: dict) -> str:
    """The human-readable report."""
    out = ["# afp_tf run report", "", "```", summary_table(summary), "```", ""]
    out += ["MACs count one multiply-add as one; FLOPs = 2 × MACs.", ""]
    if pruned.get("guarantee"):
        out += ["## Tolerance", "", pruned["guarantee"], ""]
    if pruned.get("latency"):
        out += ["## Latency", "", _latency_md(pruned["latency"]), ""]
    if "filters_per_layer.png" in summary["plots"]:
        out += ["## Filters per layer", "", "![filters](plots/filters_per_layer.png)", ""]
    out += ["## Rounds", "", "![metric vs MACs](plots/metric_vs_macs.png)", ""]
    out += [
        f"| round | outcome | {decision_split(base)} metric | remaining | threshold | λ | removed "
        "| MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["history"]:
        threshold = r.get("quantile") if r.get("quantile") is not None else r.get("threshold")
        out.append(
            f"| {r.get('round')} | {r.get('outcome')} | {_pct(r.get('metric'))} | "
            f"{_num(r.get('remaining'))} | {_num(threshold)} | {_num(r.get('strength'))} | "
            f"{r.get('removed', '')} | {_int(r.get('macs'))} |"
        )
    export = summary.get("export")
    if export:
        out += ["", "## Export", ""] + _export_md(export)
    return "\n".join(out) + "\n"


def _latency_md(budget: dict) -> str:
    """The predicted and measured batch-1 latency the latency table pruned to."""

    def ms(v) -> str:
        return "not measured" if v is None else f"{v:.4g} ms"

    target = budget.get("target_ms")
    return (
        f"{budget['format']}, batch 1, {budget['threads']} thread(s): predicted "
        f"{ms(budget['predicted_ms'])} (baseline {ms(budget['baseline_predicted_ms'])}), measured "
        f"{ms(budget['measured_ms'])} (baseline {ms(budget['baseline_measured_ms'])}); target "
        f"{ms(target) if target else 'none'}; pruning stopped: {budget['stopped_by']}."
    )


def _export_md(export: dict) -> list[str]:
    reports = export.get("reports", {})
    on = sorted(
        {
            f"{r.get('metric', 'metric')} on {r.get('data')} ({r.get('samples')} samples)"
            for r in reports.values()
        }
    )
    out = [
        f"| model | format | size (bytes) | max rel. diff | {' / '.join(on) or 'metric'} | check |",
        "|---|---|---|---|---|---|",
    ]
    for model, rep in reports.items():
        for fmt, r in rep.get("formats", {}).items():
            out.append(
                f"| {model} | {fmt} | {_int(r.get('size_bytes'))} | {_num(r.get('max_rel_diff'))} "
                f"| {_pct(r.get('metric'))} | {'pass' if r.get('passed') else 'FAIL'} |"
            )
    latency = export.get("latency") or []
    if latency:
        out += [
            "",
            "Median latency, batch 1, one thread, each artifact run by its own runtime only; "
            "ratio = speed-up / MACs reduction.",
            "",
            "| format | baseline ms | pruned ms | speed-up | MACs reduction | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for r in latency:
            ratio = r["speedup"] / r["macs_reduction"] if r.get("macs_reduction") else None
            out.append(
                f"| {r.get('format')} | {_num(r.get('baseline_ms'))} | {_num(r.get('pruned_ms'))} "
                f"| {_times(r.get('speedup'))} | {_times(r.get('macs_reduction'))} "
                f"| {_num(ratio)} |"
            )
        fastest = min(r.get("pruned_ms") or float("inf") for r in latency)
        if fastest < 0.5:
            out += [
                "",
                f"The pruned model runs in {fastest * 1000:.0f} µs at best: at this size a "
                "call's fixed cost (tensor copies, op dispatch, interpreter bookkeeping) is a "
                "large share of it, which bounds the speed-up below the MACs reduction.",
            ]
    return out


def _plot_filters(before: dict, after: dict, path: Path) -> None:
    names = list(before)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    xs = range(len(names))
    for offset, counts, label in ((-0.2, before, "baseline"), (0.2, after, "pruned")):
        bars = ax.bar([x + offset for x in xs], [counts.get(n, 0) for n in names], 0.4, label=label)
        ax.bar_label(bars, fontsize=6)
    ax.set_yscale("log")
    ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("filters")
    ax.set_title("Filters per prunable layer group")
    ax.legend()
    _save(fig, path)


def decision_split(base: dict) -> str:
    """The split pruning decisions were made on: acceptance when the run held one out."""
    return "acceptance" if "accept" in base else "validation"


def rounds_series(state: dict) -> dict[str, Any]:
    """What ``plots/metric_vs_macs.png`` draws, all on the decision split: the baseline's
    decision metric (round 0) and each accepted round's, their MACs, the floor and the accept
    floor (floor + margin) a round had to reach."""
    base, prune = state["baseline"], state["prune"]
    controller = prc.PruningRateController.from_dict(prune["controller"])
    accepted = [r for r in prune.get("history", []) if r.get("outcome") == "accepted"]
    return {
        "split": decision_split(base),
        "macs": [base["macs"]] + [r["macs"] for r in accepted],
        "metric": [controller.baseline] + [r["metric"] for r in accepted],
        "floor": controller.floor,
        "accept_floor": controller.accept_floor,
    }


def _plot_rounds(series: dict[str, Any], path: Path) -> None:
    label = f"{series['split']} metric"
    mmacs = [m / 1e6 for m in series["macs"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mmacs, series["metric"], "o-", label=label)
    for i, (m, v) in enumerate(zip(mmacs, series["metric"], strict=True)):
        ax.annotate(str(i), (m, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(series["floor"], color="red", linestyle="--", label="floor")
    margin = series["accept_floor"] - series["floor"]
    ax.axhline(
        series["accept_floor"],
        color="darkorange",
        linestyle=":",
        label=f"accept floor (floor + margin {margin:.4g})",
    )
    ax.set_xlabel("MMACs")
    ax.set_ylabel(label)
    ax.set_title(f"{series['split'].capitalize()} metric vs MACs over the rounds (labels: round)")
    ax.invert_xaxis()
    ax.legend()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _artifacts(workdir: Path) -> dict[str, str]:
    found = {}
    for key, rel in (
        ("baseline model", "baseline.keras"),
        ("pruned model", "pruned.keras"),
        ("exports", "export"),
        ("tensorboard", "tensorboard"),
    ):
        if (workdir / rel).exists():
            found[key] = str(workdir / rel)
    return found


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "stats"}


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def _delta(a, b) -> str:
    return "" if a is None or b is None else f"{100 * (b - a):+.2f} pt"


def _int(v) -> str:
    return "" if v is None else f"{int(v):,}"


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}"


def _times(v) -> str:
    return "" if v is None else f"{v:.2f}×"
