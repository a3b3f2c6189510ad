"""afp_tf on the accuracy-vs-MACs frontier of simpler methods, where filters are redundant.

    .venv/bin/python benchmarks/frontier.py vgg16_fashion_mnist --seeds 0,1,2 \
        [--name vgg16_x0.5] [--tolerances 0.005,0.01,0.02] [--budget-tolerance 0.01] \
        [--fractions 0.2,0.3,0.45,0.6] [--reductions 1.5,2,3,4,6] \
        [--methods afp_tf,uniform_l1,global_l1] [--workdir DIR] [--override key=value ...] \
        [--variant NAME:key=value,key=value ...] [--variant-tolerances 0.01] \
        [--ladder-variant NAME:key=value,key=value ...]

Per seed (``seed`` and ``data.seed``): one trained baseline shared by every method, then

* ``afp_tf`` at each tolerance (the config as given);
* ``uniform_l1``: a ladder of one-shot uniform ℓ1 fractions (Li et al., 2017);
* ``global_l1``: iterative global ℓ1 (10 % of the filters per round) to a ladder of MACs
  reductions (baseline MACs / target);
* every ``--ladder-variant``: the uniform ladder again with its overrides added, under its own
  method name: the fair row for an afp_tf variant that changes how it trains (e.g.
  ``uniform_l1_distill:prune.distill=0.5`` distils its fine-tune from the seed's baseline, as
  ``prune.distill`` does in afp_tf; ``prune.learning_rate=…`` fine-tunes at another rate);
* every ``--variant``: afp_tf with its overrides added, under its own method name, at each of
  ``--variant-tolerances`` (after the ladders, so it never sets their epochs);

every ladder point fine-tuned for the epochs ``afp_tf`` spent at ``--budget-tolerance`` on that
seed (cosine learning rate, best validation epoch), so equal accuracy is compared at equal
training. For every afp_tf run, :func:`frontier_reduction` interpolates the MACs reduction each
ladder method reaches at the same test drop on the same seed; ``afp_tf`` removing ``k×`` the
MACs of uniform ℓ1 at equal accuracy is the ratio of the two.

Resumable: every run lives in ``WORKDIR/seed<S>/<method>_<point>/run.json``; a finished one is
read back, an unfinished one resumed. After each run ``benchmarks/results/frontier_<name>.json``
and its ``.png`` are rewritten atomically from every finished run on disk.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import compare  # noqa: E402
import seeds  # noqa: E402

from afp_tf import io_utils  # noqa: E402
from afp_tf.method import comparison  # noqa: E402
from afp_tf.run import config_lib  # noqa: E402
from afp_tf.run.task_builders import load_task  # noqa: E402

LADDERS = ("uniform_l1", "global_l1")
METHODS = ("afp_tf", *LADDERS)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config NAME[:ARG] under configs/")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--name", default="", help="result name; default MODEL_xWIDTH")
    parser.add_argument("--tolerances", default="0.005,0.01,0.02")
    parser.add_argument("--budget-tolerance", type=float, default=0.01)
    parser.add_argument("--fractions", default="0.2,0.3,0.45,0.6", help="uniform_l1 ladder")
    parser.add_argument("--reductions", default="1.5,2,3,4,6", help="global_l1 ladder (×)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--override", action="append", default=[], help="key=value")
    parser.add_argument("--global-rate", type=float, default=0.1, help="global_l1 per round")
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME:key=value,... (an afp_tf variant)"
    )
    parser.add_argument("--variant-tolerances", default="", help="default: --budget-tolerance")
    parser.add_argument(
        "--ladder-variant",
        action="append",
        default=[],
        help="NAME:key=value,... (the uniform_l1 ladder with these overrides)",
    )
    args = parser.parse_args(argv)
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, [*args.override, "export.enabled=false"])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}.")
    plan = {
        "afp_tf": seeds.parse_numbers(args.tolerances, float, "--tolerances"),
        "uniform_l1": seeds.parse_numbers(args.fractions, float, "--fractions"),
        "global_l1": seeds.parse_numbers(args.reductions, float, "--reductions"),
    }
    variants = dict(parse_variant(v) for v in args.variant)
    ladder_variants = dict(parse_variant(v, "--ladder-variant") for v in args.ladder_variant)
    clash = sorted(set(variants) & set(ladder_variants))
    if clash:
        raise SystemExit(f"--variant and --ladder-variant share the names {clash}.")
    variant_eps = seeds.parse_numbers(
        args.variant_tolerances or str(args.budget_tolerance), float, "--variant-tolerances"
    )
    name = args.name or f"{cfg.model.name}_x{cfg.model.width:g}"
    workdir = args.workdir or Path("runs") / f"frontier_{name}"
    budget_eps = args.budget_tolerance
    for seed in seeds.parse_numbers(args.seeds, int, "--seeds"):
        # The budget run first (every ladder point needs its epochs), then the ladders, then the
        # other tolerances.
        order = [("afp_tf", budget_eps)]
        order += [(m, p) for m in LADDERS if m in methods for p in plan[m]]
        order += [(m, p) for m in ladder_variants for p in plan["uniform_l1"]]
        if "afp_tf" in methods:
            order += [("afp_tf", eps) for eps in plan["afp_tf"] if eps != budget_eps]
        order += [(v, eps) for v in variants for eps in variant_eps]
        for method, point in order:
            _run_one(
                cfg,
                workdir,
                seed,
                method,
                point,
                budget_eps,
                args.global_rate,
                variants,
                ladder_variants,
            )
            _write(name, args.config, cfg, workdir)
    return _write(name, args.config, cfg, workdir)


def parse_variant(spec: str, flag: str = "--variant") -> tuple[str, list[str]]:
    """``NAME:key=value,key=value`` -> ``(NAME, ["key=value", ...])``."""
    name, _, overrides = spec.partition(":")
    pairs = [o.strip() for o in overrides.split(",") if o.strip()]
    if not name.isidentifier() or name in METHODS or not pairs or any("=" not in o for o in pairs):
        raise SystemExit(
            f"{flag} {spec!r}: expected NAME:key=value[,key=value...] with a new NAME "
            f"(not one of {', '.join(METHODS)})."
        )
    return name, pairs


def _point_dir(workdir: Path, seed: int, method: str, point: float, ladder: bool) -> Path:
    """``ladder``: a uniform_l1 (or ladder variant) fraction or a global_l1 target."""
    tag = ("x" if method == "global_l1" else "frac") if ladder else "eps"
    return workdir / f"seed{seed}" / f"{method}_{tag}{point:g}"


def _run_one(
    cfg,
    workdir: Path,
    seed,
    method: str,
    point,
    budget_eps,
    rate,
    variants=None,
    ladder_variants=None,
) -> dict:
    """One run (read back if finished, else run or resumed); returns its ``run.json``."""
    ladder_variants = ladder_variants or {}
    ladder = method in LADDERS or method in ladder_variants
    run_dir = _point_dir(workdir, seed, method, point, ladder)
    done = run_dir / "run.json"
    if done.is_file():
        return io_utils.read_json(done)
    base = seeds.shared_baseline(cfg, workdir, seed)
    with common.wall_clock(run_dir) as wall:
        if not ladder:  # afp_tf or one of its variants
            added = (variants or {}).get(method, [])
            overrides = [*base["overrides"], f"prune.tolerance={point}", *added]
            r = compare.afp_run(cfg, run_dir, overrides)
            extra = {"tolerance": point, "rounds": r["rounds"], "stop": r["stop_reason"]}
            extra["history"] = round_history(run_dir)
            if added:
                extra["overrides"] = added
        else:
            budget = _run_one(cfg, workdir, seed, "afp_tf", budget_eps, budget_eps, rate)["epochs"]
            added = ladder_variants.get(method, [])
            r = _ladder_point(cfg, base, run_dir, method, point, budget, rate, added)
            extra = {"reduction_target" if method == "global_l1" else "fraction": point}
            extra["budget_tolerance"] = budget_eps
            if added:
                extra["overrides"] = added
    record = {
        "method": method,
        "seed": seed,
        **extra,
        "baseline_val": base["val"],
        "baseline_test": base["test"],
        **{k: r[k] for k in ("val", "test", "macs", "params")},
        "baseline_macs": base["macs"],
        "baseline_params": base["params"],
        "epochs": r["epochs_used"],
        "wall_seconds": round(wall["seconds"], 1),
        "baseline_epochs": cfg.train.baseline_epochs,
    }
    io_utils.write_json(done, record)
    return record


ROUND_KEYS = (
    "outcome",
    "quantile",
    "removed",
    "macs",
    "metric_before",
    "metric",
    "recovery_epochs",
)


def round_history(run_dir: Path) -> list[dict]:
    """Every round of an afp_tf run (its ``report.json``), ``ROUND_KEYS`` of each: which rounds
    failed, at what size, from how far above the floor."""
    history = io_utils.read_json(run_dir / "report.json")["history"]
    return [{k: h[k] for k in ROUND_KEYS if k in h} for h in history]


def _ladder_point(
    cfg, base: dict, run_dir: Path, method: str, point, budget: int, rate, overrides=()
) -> dict:
    """A uniform ℓ1 fraction (``uniform_l1`` or a ladder variant, its ``overrides`` added) or a
    global ℓ1 MACs reduction, fine-tuned for ``budget`` epochs; the fine-tune distils from the
    seed's baseline when the config sets ``prune.distill``."""
    c = cfg.copy_and_resolve_references()
    config_lib.apply_overrides(c, [*base["seed_overrides"], *overrides])
    model_path = base["model"]
    teacher = model_path if c.prune.distill else None
    if method != "global_l1":

        def method_fn(tuner):
            model = compare.load_model(model_path)
            return comparison.uniform_l1_fraction(model, point, tuner, budget)
    else:

        def method_fn(tuner):
            return comparison.iterative_global_l1(
                compare.load_model(model_path),
                base["macs"] / point,
                tuner,
                budget,
                rate=rate,
                importance=c.prune.importance,
                max_group_fraction=c.prune.max_group_fraction,
            )

    return compare.comparison_run(c, load_task(c), run_dir, method_fn, teacher=teacher)


def frontier_reduction(ladder: list[tuple[float, float]], drop: float) -> tuple[float, bool]:
    """The MACs reduction a ladder method reaches at test ``drop``, interpolated on its ladder.

    ``ladder`` holds ``(test drop, MACs reduction)`` points of one seed; the unpruned model
    ``(0, 1)`` starts it. Points are taken in order of reduction with the drop made monotone
    (a point never counts as more accurate than a less pruned one, nor than the unpruned model),
    and the reduction is interpolated linearly in log-reduction between the two points around
    ``drop``; a negative ``drop`` (a gain) is compared at 0. Returns ``(reduction, bounded)``:
    ``bounded`` is False when ``drop`` lies beyond the ladder's largest drop, where its largest
    reduction is only a lower bound of what the method would reach.
    """
    drop = max(drop, 0.0)
    monotone, worst = [], 0.0
    for reduction, d in sorted([(1.0, 0.0), *((r, d) for d, r in ladder)]):
        worst = max(worst, d)
        monotone.append((reduction, worst))
    for (r0, d0), (r1, d1) in zip(monotone, monotone[1:], strict=False):
        if d0 <= drop < d1:
            t = (drop - d0) / (d1 - d0)
            return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0))), True
    return monotone[-1][0], drop == monotone[-1][1]


def summarize(runs: list[dict]) -> dict:
    """Per method and point: mean ± sd; per afp_tf run: the ladders' reductions at its drop."""
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(runs, key=_order):
        groups.setdefault((r["method"], _point(r)), []).append(r)
    points = []
    for (method, point), rs in groups.items():
        cols = {
            "test": [r["test"] for r in rs],
            "test_drop": [r["baseline_test"] - r["test"] for r in rs],
            "macs": [r["macs"] for r in rs],
            "macs_reduction": [r["baseline_macs"] / r["macs"] for r in rs],
            "params_reduction": [r["baseline_params"] / r["params"] for r in rs],
            "epochs": [r["epochs"] for r in rs],
            "wall_seconds": [r["wall_seconds"] for r in rs],
        }
        row = {"method": method, "point": point, "kind": _kind(rs[0]), "n": len(rs)}
        row.update({k: common.mean_sd(v) for k, v in cols.items()})
        points.append(row)
    ladders = list(dict.fromkeys(r["method"] for r in sorted(runs, key=_order) if _is_ladder(r)))
    matched = []
    for r in runs:
        if _is_ladder(r):
            continue
        drop = r["baseline_test"] - r["test"]
        row = {
            "method": r["method"],
            "seed": r["seed"],
            "tolerance": r["tolerance"],
            "test_drop": drop,
            "macs_reduction": r["baseline_macs"] / r["macs"],
            "within_tolerance_plus_0.3pt": drop <= r["tolerance"] + 0.003 + 1e-9,
        }
        for method in ladders:
            ladder = [
                (x["baseline_test"] - x["test"], x["baseline_macs"] / x["macs"])
                for x in runs
                if x["method"] == method and x["seed"] == r["seed"]
            ]
            if not ladder:
                continue
            reduction, bounded = frontier_reduction(ladder, drop)
            row[method] = {
                "macs_reduction_at_equal_drop": reduction,
                "interpolated": bounded,
                "afp_tf_over_it": row["macs_reduction"] / reduction,
            }
        matched.append(row)
    return {"points": points, "afp_tf_vs_ladders": matched}


def _is_ladder(r: dict) -> bool:
    """A ladder point (uniform ℓ1, global ℓ1 or a ladder variant), not an afp_tf run."""
    return "tolerance" not in r


def _rank(method: str, ladder: bool) -> tuple[int, str]:
    """Sort key: afp_tf, its variants (by name), uniform ℓ1, global ℓ1, the ladder variants."""
    if not ladder:
        return (0 if method == "afp_tf" else 1), method
    return (2 + LADDERS.index(method) if method in LADDERS else 4), method


def _order(r: dict) -> tuple:
    """Sort key of a run: its method's rank, then its point."""
    return _rank(r["method"], _is_ladder(r)), _point(r)


def _kind(r: dict) -> str:
    """What a run's point is: ``"tolerance"``, ``"fraction"`` or ``"reduction_target"``."""
    return next(k for k in ("tolerance", "fraction", "reduction_target") if k in r)


def _point(r: dict) -> float:
    return r[_kind(r)]


def _write(name: str, config: str, cfg, workdir: Path) -> dict:
    """Rewrites the result file and plot from every finished run under ``workdir``."""
    runs = [io_utils.read_json(p) for p in sorted(workdir.glob("seed*/*/run.json"))]
    runs.sort(key=lambda r: (r["seed"], *_order(r)))
    out = {
        "config": config,
        "model": cfg.model.name,
        "width": cfg.model.width,
        "train_examples": _train_examples(cfg),
        "config_values": cfg.to_dict(),
        "runs": runs,
        "summary": summarize(runs),
    }
    path = common.write_result(f"frontier_{name}", out)
    _plot(out, common.RESULTS / f"frontier_{name}.png")
    print(f"wrote {path} ({len(runs)} runs)", flush=True)
    return io_utils.read_json(path)


def _train_examples(cfg) -> int | None:
    """Training images the runs use (classification; None for other tasks)."""
    if cfg.task != "classification":
        return None
    from afp_tf import data as data_lib

    return int(data_lib.load_classification(cfg.data).num_train)


def _plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    points = out["summary"]["points"]
    for method in dict.fromkeys(p["method"] for p in points):  # in rank order
        rows = [p for p in points if p["method"] == method]
        ladder = rows[0]["kind"] != "tolerance"
        marker = {"uniform_l1": "s--", "global_l1": "^--", "afp_tf": "o"}.get(
            method, "s:" if ladder else "D"
        )
        ax.errorbar(
            [p["macs"]["mean"] for p in rows],
            [100 * p["test"]["mean"] for p in rows],
            xerr=[p["macs"]["sd"] for p in rows],
            yerr=[100 * p["test"]["sd"] for p in rows],
            fmt=marker,
            capsize=3,
            label=f"{method} (n={max(p['n'] for p in rows)} seeds)",
        )
    compare.plot_unpruned(ax, out["runs"])
    title = f"{out['model']} ×{out['width']:g}"
    compare.save_macs_plot(fig, ax, title, path, spread=", mean ± sd over seeds")


if __name__ == "__main__":
    main()
