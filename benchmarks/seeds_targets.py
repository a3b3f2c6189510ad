"""The seeds benchmark's targets, judged from its result file: one README line each.

Targets (means over seeds at ε = 0.01 unless stated):

* LeNet-5: afp_tf ≥ 15× fewer MACs and ≥ 20× fewer params, test drop ≤ 1 point, and afp_tf's
  test accuracy ≥ uniform_l1's (which is pruned to afp_tf's MACs per seed);
* VGG-16 and ResNet-56: afp_tf's test accuracy ≥ uniform_l1's + 1 point at equal MACs;
* honesty (every file): test drop ≤ ε + 0.3 points in ≥ 90% of the afp_tf seed × ε runs;
* cost: epochs after the baseline and wall-clock per method.
"""

from __future__ import annotations

TARGET_EPS = 0.01
LENET_MACS, LENET_PARAMS, LENET_DROP = 15.0, 20.0, 0.01
WIN_POINTS = 0.01  # VGG-16 / ResNet-56: afp_tf over uniform_l1 at equal MACs
HONEST_SLACK, HONEST_SHARE = 0.003, 0.9


def lines(d: dict) -> list[str]:
    """Markdown bullets, one per target that applies to ``d`` (a ``seeds_*.json`` result)."""
    rows = {(r["tolerance"], r["method"]): r for r in d["summary"]}
    afp, uni = rows.get((TARGET_EPS, "afp_tf")), rows.get((TARGET_EPS, "uniform_l1"))
    model = d["config_values"]["model"]["name"]
    out = []
    if afp is None:
        out.append(f"no afp_tf run at ε = {TARGET_EPS:g} yet: the targets are not measured")
    elif model == "lenet5":
        out.append(_lenet(d, afp, uni))
    elif uni is not None:
        out.append(_win(afp, uni))
    else:
        out.append(f"no uniform_l1 run at ε = {TARGET_EPS:g} yet: the +1 point target is open")
    out.append(_honesty(d["runs"]))
    if afp is not None and afp["test_drop"]["mean"] < 0:
        out.append(
            f"afp_tf's mean test drop is negative ({100 * afp['test_drop']['mean']:.2f} points): "
            "the pruned models test better than baselines that are not trained to convergence "
            f"({d['config_values']['train']['baseline_epochs']} epochs); recovery and "
            "fine-tuning train them further."
        )
    out += _cost(d["summary"])
    return [f"- {line}" for line in out]


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def _lenet(d: dict, afp: dict, uni: dict | None) -> str:
    seeds = [r for r in d["runs"] if r["method"] == "afp_tf" and r["tolerance"] == TARGET_EPS]
    drop = afp["test_drop"]["mean"]
    parts = [
        _reduction(seeds, "macs", "MACs", LENET_MACS, 2),
        _reduction(seeds, "params", "params", LENET_PARAMS, 1),
        f"test drop {100 * drop:.2f} points (≤ {100 * LENET_DROP:g}: "
        f"{_verdict(drop <= LENET_DROP + 1e-9)})",
    ]
    if uni is None:
        parts.append("afp_tf vs uniform_l1: no uniform_l1 run yet")
    else:
        gap = afp["test"]["mean"] - uni["test"]["mean"]
        parts.append(
            f"afp_tf − uniform_l1 test {_pts(gap)} points at "
            f"{uni['macs']['mean'] / afp['macs']['mean']:.2f}× afp_tf's mean MACs "
            f"(≥ 0: {_verdict(gap >= -1e-9)})"
        )
    return f"Target at ε = {TARGET_EPS:g} (n = {afp['n']}): " + "; ".join(parts) + "."


def _reduction(seeds: list[dict], key: str, name: str, target: float, digits: int) -> str:
    """Mean of the per-seed reductions (the verdict), each seed's, and that of the mean count."""
    per = [r[f"baseline_{key}"] / r[key] for r in seeds]
    mean = sum(per) / len(per)
    at_mean = seeds[0][f"baseline_{key}"] / (sum(r[key] for r in seeds) / len(seeds))
    hits = sum(x >= target for x in per)
    return (
        f"{name} ↓ {mean:.{digits}f}× (per seed {', '.join(f'{x:.1f}×' for x in per)}: "
        f"{hits} of {len(per)} ≥ {target:g}×; at the mean {name} {at_mean:.1f}×; mean ≥ "
        f"{target:g}×: {_verdict(mean >= target)})"
    )


def _win(afp: dict, uni: dict) -> str:
    gap = afp["test"]["mean"] - uni["test"]["mean"]
    return (
        f"Target at ε = {TARGET_EPS:g}: afp_tf − uniform_l1 test {_pts(gap)} points (n = "
        f"{afp['n']} and {uni['n']} seeds; uniform_l1 at "
        f"{uni['macs']['mean'] / afp['macs']['mean']:.2f}× afp_tf's mean MACs); ≥ +1 point: "
        f"{_verdict(gap >= WIN_POINTS - 1e-9)}. The alternative (uniform_l1 needs ≥ 1.5× the "
        "MACs for afp_tf's accuracy) is not measured by this benchmark."
    )


def _honesty(runs: list[dict]) -> str:
    afp = [r for r in runs if r["method"] == "afp_tf"]
    ok = sum(r["baseline_test"] - r["test"] <= r["tolerance"] + HONEST_SLACK + 1e-9 for r in afp)
    share = ok / len(afp) if afp else 0.0
    return (
        f"Honesty: {ok} of {len(afp)} afp_tf seed × ε runs ended with a test drop within "
        f"ε + 0.3 points ({100 * share:.0f}%; ≥ {100 * HONEST_SHARE:.0f}%: "
        f"{_verdict(bool(afp) and share >= HONEST_SHARE)})."
    )


def _cost(summary: list[dict]) -> list[str]:
    rows = [r for r in summary if r["tolerance"] == TARGET_EPS]
    if not rows:
        return []
    per = "; ".join(
        f"{r['method']} {r['epochs']['mean']:.1f} epochs, {r['wall_seconds']['mean']:.0f} s"
        for r in rows
    )
    note = ""
    if any(r["method"] in ("uniform_l1", "global_l1") for r in rows):
        note = (
            " uniform_l1 and global_l1 are given afp_tf's epoch budget per seed, so their epochs "
            "equal afp_tf's by construction (the ≤ 2× aim holds); wall-clock differs."
        )
    return [f"Cost at ε = {TARGET_EPS:g} (mean per seed, after the shared baseline): {per}.{note}"]
