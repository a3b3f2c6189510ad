"""afp_tf against uniform ℓ1 pruning and its ablations over seeds and tolerances.

    .venv/bin/python benchmarks/seeds.py lenet5_fashion_mnist --seeds 0,1,2 \
        [--tolerances 0.005,0.01,0.02] [--ablation-tolerances 0.01] [--workdir DIR] \
        [--methods afp_tf,uniform_l1,...] [--override key=value ...]

Per seed (``seed`` and ``data.seed``): one trained baseline shared by every method, then

* ``afp_tf``: the config as given, at each tolerance;
* ``uniform_l1``: Li et al. (2017), one-shot uniform ℓ1 pruning to the MACs ``afp_tf`` reached
  for that seed and tolerance, fine-tuned for ``afp_tf``'s epoch budget (cosine LR, best
  validation epoch), as ``benchmarks/compare.py`` does;
* ``global_l1``: iterative global ℓ1 at a fixed rate per round to the same MACs and budget;
* ``afp_tf_fixed_rate`` (``prune.rule=fixed``) and ``afp_tf_no_orth`` (``orth.beta=0``), at the
  ablation tolerances.

Resumable: every run lives in ``WORKDIR/seed<S>/<method>_eps<ε>/`` and a finished one is read
back, an unfinished one resumed. Several processes may share a workdir (e.g. one per seed): each
rewrites ``benchmarks/results/seeds_<config name>.json`` atomically from every finished run on
disk, after each run, so partial results survive a kill. Then
``benchmarks/readme_results.py`` renders its section of docs/results.md and its README
headline row from that file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import compare  # noqa: E402

from afp_tf import io_utils  # noqa: E402
from afp_tf.method import comparison  # noqa: E402
from afp_tf.run import config_lib  # noqa: E402
from afp_tf.run.pipeline import run  # noqa: E402
from afp_tf.run.task_builders import load_task  # noqa: E402

AFP_METHODS = {
    "afp_tf": [],
    "afp_tf_fixed_rate": ["prune.rule=fixed"],
    "afp_tf_no_orth": ["orth.beta=0.0"],
}
MATCHED = ("uniform_l1", "global_l1")  # matched to afp_tf's MACs and epoch budget
METHODS = ("afp_tf", "uniform_l1", "afp_tf_fixed_rate", "afp_tf_no_orth", "global_l1")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config NAME[:ARG] under configs/")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tolerances", default="", help="absolute; default: the config's")
    parser.add_argument("--ablation-tolerances", default="", help="default: --tolerances")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--override", action="append", default=[], help="key=value")
    parser.add_argument("--global-rate", type=float, default=0.1, help="global_l1 per round")
    args = parser.parse_args(argv)
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, [*args.override, "export.enabled=false"])
    seeds = parse_numbers(args.seeds, int, "--seeds")
    tolerances = parse_numbers(args.tolerances, float, "--tolerances") or [cfg.prune.tolerance]
    ablation = parse_numbers(args.ablation_tolerances, float, "--ablation-tolerances") or tolerances
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}.")
    workdir = args.workdir or Path("runs") / f"seeds_{cfg.name}"
    name = f"seeds_{cfg.name}"
    # Tolerance-major order: the first tolerance's main comparison lands first for every seed.
    for eps in tolerances:
        for seed in seeds:
            for method in methods:
                if method in ("afp_tf", *MATCHED) or eps in ablation:
                    _run_one(cfg, workdir, seed, method, eps, args.global_rate)
                    _write(name, args.config, cfg, workdir)
    return _write(name, args.config, cfg, workdir)


def _run_one(cfg, workdir: Path, seed: int, method: str, eps: float, rate: float) -> dict:
    """One (method, seed, tolerance) run; read back if finished, else run or resumed."""
    run_dir = workdir / f"seed{seed}" / f"{method}_eps{eps:g}"
    done = run_dir / "run.json"
    if done.is_file():
        return io_utils.read_json(done)
    base = shared_baseline(cfg, workdir, seed)
    with common.wall_clock(run_dir) as wall:
        if method in AFP_METHODS:
            overrides = [*base["overrides"], f"prune.tolerance={eps}", *AFP_METHODS[method]]
            r = compare.afp_run(cfg, run_dir, overrides)
            out = {"epochs": r["epochs_used"], "rounds": r["rounds"], "stop": r["stop_reason"]}
        else:
            afp = _run_one(cfg, workdir, seed, "afp_tf", eps, rate)
            r = _matched(cfg, base, run_dir, method, afp, rate)
            out = {"epochs": r["epochs_used"]}
        out.update({k: r[k] for k in ("val", "test", "macs", "params")})
    record = {
        "method": method,
        "seed": seed,
        "tolerance": eps,
        "baseline_val": base["val"],
        "baseline_test": base["test"],
        **{k: out.pop(k) for k in ("val", "test", "macs", "params")},
        "baseline_macs": base["macs"],
        "baseline_params": base["params"],
        "epochs": out.pop("epochs"),
        "wall_seconds": round(wall["seconds"], 1),
        "baseline_epochs": cfg.train.baseline_epochs,
        **out,
    }
    io_utils.write_json(done, record)
    return record


def shared_baseline(cfg, workdir: Path, seed: int) -> dict:
    """The seed's trained, unpruned model (trained once; every method starts from it)."""
    run_dir = workdir / f"seed{seed}" / "baseline"
    seed_overrides = [f"seed={seed}", f"data.seed={seed}"]
    c = cfg.copy_and_resolve_references()
    config_lib.apply_overrides(c, [*seed_overrides, "prune.enabled=false"])
    summary = run(c, run_dir)
    b = summary["baseline"]
    return {
        "val": b["val"],
        "test": b["test"],
        "macs": b["macs"],
        "params": b["params"],
        "seed_overrides": seed_overrides,
        "model": run_dir / "baseline.keras",
        "overrides": [*seed_overrides, f"train.baseline_model={run_dir / 'baseline.keras'}"],
    }


def _matched(cfg, base: dict, run_dir: Path, method: str, afp: dict, rate: float) -> dict:
    """uniform_l1 or global_l1 to ``afp``'s MACs with ``afp``'s epoch budget."""
    c = cfg.copy_and_resolve_references()
    config_lib.apply_overrides(c, base["seed_overrides"])
    model_path = base["model"]
    budget, target = afp["epochs"], afp["macs"]
    if method == "uniform_l1":

        def method_fn(tuner):
            return comparison.uniform_l1(compare.load_model(model_path), target, tuner, budget)
    else:

        def method_fn(tuner):
            return comparison.iterative_global_l1(
                compare.load_model(model_path),
                target,
                tuner,
                budget,
                rate=rate,
                importance=c.prune.importance,
                max_group_fraction=c.prune.max_group_fraction,
            )

    return compare.comparison_run(c, load_task(c), run_dir, method_fn)


def _write(name: str, config: str, cfg, workdir: Path) -> dict:
    """Rewrites the result file from every finished run under ``workdir``."""
    runs = [io_utils.read_json(p) for p in sorted(workdir.glob("seed*/*/run.json"))]
    runs.sort(key=lambda r: (r["tolerance"], METHODS.index(r["method"]), r["seed"]))
    out = {
        "config": config,
        "config_values": cfg.to_dict(),
        "workdir": str(workdir),
        "runs": runs,
        "summary": summarize(runs),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = common.write_result(name, out)
    _plot(out, common.RESULTS / f"{name}.png")
    print(f"wrote {path} ({len(runs)} runs)", flush=True)
    return io_utils.read_json(path)


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and sd per (tolerance, method) of test, drop, reductions, epochs and wall time."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["tolerance"], r["method"]), []).append(r)
    out = []
    order = sorted(groups, key=lambda k: (k[0], METHODS.index(k[1])))
    for eps, method in order:
        rs = groups[(eps, method)]
        cols = {
            "test": [r["test"] for r in rs],
            "test_drop": [r["baseline_test"] - r["test"] for r in rs],
            "val_drop": [r["baseline_val"] - r["val"] for r in rs],
            "macs": [r["macs"] for r in rs],
            "macs_reduction": [r["baseline_macs"] / r["macs"] for r in rs],
            "params_reduction": [r["baseline_params"] / r["params"] for r in rs],
            "epochs": [r["epochs"] for r in rs],
            "wall_seconds": [r["wall_seconds"] for r in rs],
        }
        row = {"tolerance": eps, "method": method, "n": len(rs)}
        for k, v in cols.items():
            row[k] = common.mean_sd(v)
        if method == "afp_tf":
            row["test_drop_within_tolerance_plus_0.3pt"] = sum(
                d <= eps + 0.003 + 1e-9 for d in cols["test_drop"]
            )
        out.append(row)
    return out


def _plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for row in out["summary"]:
        m, t = row["macs"], row["test"]
        ax.errorbar(
            m["mean"],
            100 * t["mean"],
            xerr=m["sd"],
            yerr=100 * t["sd"],
            fmt="o",
            capsize=3,
            label=f"{row['method']} ε={row['tolerance']:g} (n={row['n']})",
        )
    compare.plot_unpruned(ax, out["runs"])
    compare.save_macs_plot(fig, ax, out["config"], path, spread=", mean ± sd over seeds")


def parse_numbers(text: str, kind, flag: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{flag} takes comma-separated numbers, got {text!r}.") from None


if __name__ == "__main__":
    main()
