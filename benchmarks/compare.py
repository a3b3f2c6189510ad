"""afp_tf against the comparison methods (standard pruning) and its own ablations, in one run.

    .venv/bin/python benchmarks/compare.py lenet5_fashion_mnist
    .venv/bin/python benchmarks/compare.py vgg16_fashion_mnist [--workdir DIR] \
        [--override key=value ...] [--methods a,b,c,d,e,b15]

Methods, all on the same data split and from the same trained baseline (the one (a) trains):

* ``a``: afp_tf (AFP + PRC + orthogonality), the config as given;
* ``b``: uniform ℓ1 one-shot filter pruning to (a)'s MACs, then fine-tuning (Li et al. 2017);
* ``c``: global ℓ1 iterative pruning at a fixed rate per round to (a)'s MACs, then fine-tuning;
* ``d``: afp_tf without the orthogonality term (``orth.beta=0``);
* ``e``: afp_tf with the controller replaced by a fixed rate (``prune.rule=fixed``);
* ``b15``: (b) at 1.5× (a)'s MACs, for the "equal accuracy at 1.5× fewer MACs" test.

(b), (c) and (b15) get (a)'s epoch budget after the baseline (penalty + recovery + fine-tune
epochs) and keep their best-on-validation epoch; every method's final fine-tune decays the
learning rate (cosine) over its epochs, as afp_tf's does. Each method's final model is exported
to TFLite fp32 and timed with 1 thread. Writes ``benchmarks/results/compare_<config name>.json`` and
``.png``; a finished method is not re-run when the same command runs again on the same workdir,
and ``wall_seconds`` sums the time of every invocation on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from afp_tf import export, io_utils, stats  # noqa: E402
from afp_tf.export import latency  # noqa: E402
from afp_tf.method import comparison  # noqa: E402
from afp_tf.method.pruner import Pruner, filters_per_group  # noqa: E402
from afp_tf.run import config_lib  # noqa: E402
from afp_tf.run.checkpoint import RunStore  # noqa: E402
from afp_tf.run.pipeline import epoch_steps, make_optimizer, run  # noqa: E402
from afp_tf.run.task_builders import load_task  # noqa: E402
from afp_tf.train import training  # noqa: E402

METHODS = {
    "a": "afp_tf (AFP + PRC + orthogonality)",
    "b": "uniform l1 one-shot + fine-tune (Li et al. 2017)",
    "c": "global l1 iterative, fixed rate per round + fine-tune",
    "d": "afp_tf without orthogonality (orth.beta=0)",
    "e": "afp_tf with a fixed pruning rate (prune.rule=fixed)",
    "b15": "uniform l1 one-shot at 1.5x the MACs of (a) + fine-tune",
}
TARGET_POINTS = 1.0  # (a) must beat (b) by this many test-accuracy points at equal MACs
TARGET_MACS_FACTOR = 1.5  # ... or (b) must need this many times (a)'s MACs for (a)'s accuracy


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config NAME[:ARG] under configs/")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--override", action="append", default=[], help="key=value")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--global-rate", type=float, default=0.1, help="(c): filters per round")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or "a" not in methods:
        raise SystemExit(
            f"--methods: unknown {unknown}; choose from {', '.join(METHODS)} (a is required: "
            "every other method starts from its baseline and matches its MACs)."
        )
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, [*args.override, "export.enabled=false"])
    workdir = args.workdir or Path("runs") / f"compare_{cfg.name}"
    with common.wall_clock(workdir) as wall:  # every invocation on workdir counts
        results = {"a": afp_run(cfg, workdir / "a", [])}
        baseline_path = workdir / "a" / "baseline.keras"
        budget = results["a"]["budget_epochs"]
        target_macs = results["a"]["macs"]
        ablations = {"d": ["orth.beta=0.0"], "e": ["prune.rule=fixed"]}
        for m in methods:
            if m in ablations:
                results[m] = afp_run(
                    cfg, workdir / m, [f"train.baseline_model={baseline_path}", *ablations[m]]
                )
        baseline_runs = {
            "b": lambda t: comparison.uniform_l1(load_model(baseline_path), target_macs, t, budget),
            "c": lambda t: comparison.iterative_global_l1(
                load_model(baseline_path),
                target_macs,
                t,
                budget,
                rate=args.global_rate,
                importance=cfg.prune.importance,
                max_group_fraction=cfg.prune.max_group_fraction,
            ),
            "b15": lambda t: comparison.uniform_l1(
                load_model(baseline_path),
                min(TARGET_MACS_FACTOR * target_macs, results["a"]["baseline"]["macs"]),
                t,
                budget,
            ),
        }
        data = None
        for m in methods:
            if m in baseline_runs:
                data = data or load_task(cfg)
                results[m] = comparison_run(cfg, data, workdir / m, baseline_runs[m])
        data = data or load_task(cfg)
        for m in methods:
            results[m]["latency"] = _latency(cfg, data, workdir / m, args.latency_runs)
        results["a"]["baseline"]["latency"] = _latency(
            cfg, data, workdir / "a", args.latency_runs, model_file="baseline.keras"
        )
    out = {
        "config_name": args.config,
        "config": cfg.to_dict(),
        "data": data.description,
        "wall_seconds": round(wall["seconds"], 1),
        "budget_epochs": budget,
        "target_macs": target_macs,
        "baseline": results["a"]["baseline"],
        "methods": {m: {"name": METHODS[m], **results[m]} for m in methods},
        "target": target_verdict(results),
        "notes": [
            "One trained baseline for all methods: (a) trains it with the orthogonality term "
            f"(orth.beta={cfg.orth.beta}, during_baseline={cfg.orth.during_baseline}); (d) only "
            "drops the term from pruning onwards.",
            f"(b), (c), (b15) use (a)'s epoch budget after the baseline ({budget} epochs) and "
            "keep the best-on-validation fine-tuning epoch; every final fine-tune, afp_tf's and "
            "theirs, decays the learning rate to 0 (cosine) over its epochs; (d) and (e) spend "
            "what their controller spends (epochs_used).",
            "Decisions use the validation split only; test is reported.",
            "Latency: TFLite fp32, 1 thread, median of the runs, on a shared 2-core CPU (noisy).",
        ],
    }
    name = f"compare_{cfg.name}"
    path = common.write_result(name, out)
    _plot(out, common.RESULTS / f"{name}.png")
    for m in methods:
        r = results[m]
        print(
            f"{m:>4}: val {r['val']:.4f} test {r['test']:.4f} MACs {r['macs']:,} "
            f"params {r['params']:,} {r['latency']['median_ms']:.3f} ms  epochs {r['epochs_used']}"
        )
    print(out["target"]["verdict"])
    print(f"wrote {path}")
    return out


def afp_run(cfg, workdir: Path, overrides: list[str]) -> dict:
    """An afp_tf pipeline run (resumed if the workdir has one); its numbers and epoch budget."""
    c = cfg.copy_and_resolve_references()
    config_lib.apply_overrides(c, overrides)
    summary = run(c, workdir)
    state = RunStore(workdir).load()
    prune_epochs = state["prune"]["epoch"] - state["epoch"]
    finetune = c.prune.finetune_epochs if summary["rounds"] else 0
    pruned, base = summary["pruned"], summary["baseline"]
    return {
        **{k: pruned[k] for k in ("val", "test", "params", "macs", "filters")},
        "baseline": {k: base[k] for k in ("val", "test", "params", "macs", "filters")},
        "budget_epochs": prune_epochs + finetune,
        "epochs_used": prune_epochs + finetune,
        "rounds": summary["rounds"],
        "stop_reason": summary["stop_reason"],
        "overrides": overrides,
    }


def comparison_run(cfg, data, workdir: Path, method, teacher: Path | None = None) -> dict:
    """Runs a comparison.* method unless ``workdir/result.json`` holds its result.

    With ``teacher`` (a model file: the baseline), every training step distils from it as
    ``cfg.prune.distill`` (> 0) and ``distill_temperature`` say, as afp_tf's own steps do;
    without, none does, whatever ``prune.distill``.
    """
    done = workdir / "result.json"
    if done.exists():
        return io_utils.read_json(done)
    pruner = _pruner(cfg, data)
    if teacher is not None:
        if not pruner.options.distill:
            raise ValueError(f"A teacher ({teacher}) needs prune.distill > 0.")
        with pruner.strategy.scope():
            pruner.teacher = load_model(teacher)
    metric = data.task.metric_name
    tuner = comparison.FineTuner(
        make_trainer=lambda model: pruner.make_trainer(model, orth_beta=0.0),
        evaluate=lambda trainer: float(pruner.evaluate(trainer)[metric]),
        train_data=data.train,
        strategy=pruner.strategy,
        steps_per_epoch=pruner.steps_per_epoch,
        make_final_trainer=lambda model, epochs: pruner.make_trainer(
            model,
            orth_beta=0.0,
            optimizer_factory=lambda: make_optimizer(
                cfg, cosine_steps=epochs * _epoch_steps(cfg, data)
            ),
        ),
    )
    result = method(tuner)
    trainer = pruner.make_trainer(result.model)
    test = (data.task.evaluate or (lambda tr, ds: tr.evaluate(ds)))(trainer, data.test)[metric]
    model_stats = stats.model_stats(result.model)
    out = {
        "val": result.val,
        "test": float(test),
        "params": model_stats.params,
        "macs": model_stats.macs,
        "filters": filters_per_group(result.model),
        "epochs_used": result.epochs,
        "best_epoch": result.best_epoch,
        "details": result.info,
    }
    io_utils.save_model(result.model, workdir / "pruned.keras")
    io_utils.write_json(done, out)
    return out


def _epoch_steps(cfg, data) -> int:
    steps = epoch_steps(cfg, data.train)
    if not steps:
        raise ValueError("The training set's length is unknown: set train.steps_per_epoch.")
    return steps


def _pruner(cfg, data) -> Pruner:
    """A Pruner with the pipeline's training settings (its trainers and evaluation only)."""
    t = cfg.train
    return Pruner(
        options=config_lib.prune_options(cfg),
        task=data.task,
        train_data=data.train,
        val_data=data.val,
        strategy=training.make_strategy(t.strategy),
        optimizer_factory=lambda: make_optimizer(cfg),
        global_batch_size=cfg.data.batch_size,
        steps_per_epoch=t.steps_per_epoch or None,
        progress=False,
    )


def _latency(cfg, data, workdir: Path, runs: int, model_file: str = "pruned.keras") -> dict:
    """Exports ``workdir/model_file`` to TFLite fp32 and times it (1 thread); reuses a timing
    newer than the model file."""
    out_dir = workdir / f"tflite_{Path(model_file).stem}"
    done = out_dir / "latency.json"
    if done.exists() and done.stat().st_mtime >= (workdir / model_file).stat().st_mtime:
        return io_utils.read_json(done)
    x, y = data.sample("val", cfg.export.samples)
    export.export_model(
        load_model(workdir / model_file),
        out_dir,
        formats=("tflite_fp32",),
        representative=x,
        val_x=x,
        val_y=y,
    )
    timing = latency.measure_latency(out_dir / export.FORMATS["tflite_fp32"].filename, runs=runs)
    out = {k: timing[k] for k in ("median_ms", "p90_ms", "runs", "threads")}
    io_utils.write_json(done, out)
    return out


def target_verdict(results: dict) -> dict:
    """Whether the comparison target holds, from the recorded numbers (test metric, MACs):
    afp_tf beats uniform l1 by TARGET_POINTS at equal MACs, or matches it at
    TARGET_MACS_FACTOR times fewer MACs."""
    a = results["a"]
    out: dict = {"points_required": TARGET_POINTS, "macs_factor_required": TARGET_MACS_FACTOR}
    lines = []
    if "b" in results:
        b = results["b"]
        gain = 100 * (a["test"] - b["test"])
        out["equal_macs"] = {
            "a_test": a["test"],
            "b_test": b["test"],
            "gain_points": round(gain, 2),
            "macs_ratio_b_over_a": round(b["macs"] / a["macs"], 4),
            "met": gain >= TARGET_POINTS,
        }
        lines.append(
            f"At equal MACs (b/a = {b['macs'] / a['macs']:.3f}) afp_tf's test accuracy is "
            f"{gain:+.2f} points vs uniform l1 ({'meets' if gain >= TARGET_POINTS else 'misses'} "
            f"the +{TARGET_POINTS} target)."
        )
    if "b15" in results:
        b15 = results["b15"]
        met = b15["test"] <= a["test"]
        out["equal_accuracy"] = {
            "b15_test": b15["test"],
            "b15_macs_over_a": round(b15["macs"] / a["macs"], 4),
            "met": met,
        }
        lines.append(
            f"Uniform l1 at {b15['macs'] / a['macs']:.2f}x afp_tf's MACs reaches test "
            f"{b15['test']:.4f} vs afp_tf's {a['test']:.4f}: the {TARGET_MACS_FACTOR}x-fewer-MACs "
            f"target is {'met' if met else 'missed'}."
        )
    out["met"] = any(v.get("met") for v in out.values() if isinstance(v, dict))
    out["verdict"] = " ".join(lines) + f" Target {'met' if out['met'] else 'NOT met'}."
    return out


def _plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    base = out["baseline"]
    ax.scatter([base["macs"]], [100 * base["test"]], marker="*", s=160, c="k", label="unpruned")
    for key, r in out["methods"].items():
        ax.scatter([r["macs"]], [100 * r["test"]], s=60, label=f"({key}) {r['name']}")
        ax.annotate(key, (r["macs"], 100 * r["test"]), textcoords="offset points", xytext=(5, 5))
    save_macs_plot(fig, ax, out["config"]["name"], path)


def plot_unpruned(ax, runs: list[dict]) -> None:
    """The seeds' unpruned models on ``ax``: mean MACs, mean ± sd test accuracy (%)."""
    bases = {(r["seed"], r["baseline_macs"], r["baseline_test"]) for r in runs}
    if bases:
        macs, test = common.mean_sd(b[1] for b in bases), common.mean_sd(100 * b[2] for b in bases)
        ax.errorbar(
            macs["mean"], test["mean"], yerr=test["sd"], fmt="*k", markersize=12, label="unpruned"
        )


def save_macs_plot(fig, ax, title: str, path: Path, spread: str = "") -> None:
    """Labels a test-accuracy-vs-MACs plot (log MACs) and writes it atomically as PNG."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel("MACs (log scale)" + spread)
    ax.set_ylabel("test accuracy (%)" + spread)
    ax.set_title(f"{title}: test accuracy vs MACs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def load_model(path: Path):
    import keras

    return keras.saving.load_model(path, compile=False)


if __name__ == "__main__":
    main()
