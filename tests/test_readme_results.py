"""benchmarks/readme_results.py on small hand-made result files: headline, results page, check."""

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen():
    return load_benchmark("readme_results")


def _cfg(rule="adaptive", accept=0.1, width=1.0, train_subset=0):
    data = {"name": "fashion_mnist", "train_subset": train_subset, "val_subset": 0}
    data["test_subset"] = 0
    if accept is not None:
        data["accept_fraction"] = accept
    return {
        "model": {"name": "lenet5", "width": width},
        "data": data,
        "prune": {"tolerance": 0.01, "rule": rule},
    }


def _method(name, macs, params, test, ms):
    return {
        "name": name,
        "macs": macs,
        "params": params,
        "val": test,
        "test": test,
        "epochs_used": 3,
        "latency": {"median_ms": ms},
    }


def _compare(rule="adaptive", accept=0.1):
    return {
        "command": "python benchmarks/compare.py lenet5_fashion_mnist --workdir runs/c",
        "date": "2026-01-01T00:00:00+00:00",
        "config": _cfg(rule, accept),
        "data": "fashion_mnist: 100 train",
        "budget_epochs": 3,
        "baseline": {**_method("base", 1000, 400, 0.90, 0.04)},
        "methods": {
            "a": _method("afp_tf", 100, 50, 0.895, 0.01),
            "b": _method("uniform l1", 101, 60, 0.88, 0.012),
        },
        "target": {
            "verdict": "Target met.",
            "equal_macs": {"gain_points": 1.5, "macs_ratio_b_over_a": 1.01},
        },
    }


def _stat(mean):
    return {"mean": mean, "sd": 0.0}


def _frontier():
    def point(method, point, drop, reduction, kind="tolerance"):
        return {
            "method": method,
            "point": point,
            "kind": kind,
            "n": 1,
            "test": _stat(0.9 - drop),
            "test_drop": _stat(drop),
            "macs": _stat(1e6 / reduction),
            "macs_reduction": _stat(reduction),
            "params_reduction": _stat(reduction / 2),
            "epochs": _stat(10.0),
            "wall_seconds": _stat(100.0),
        }

    ladder = {"interpolated": True, "macs_reduction_at_equal_drop": 2.0, "afp_tf_over_it": 1.5}
    cfg = _cfg(width=0.5, train_subset=6000)
    cfg["data"].update(image_size=32, accept_fraction=0.1)
    cfg["train"] = {"baseline_epochs": 12, "learning_rate": 0.02}
    cfg["prune"].update(margin_z=1.0)
    return {
        "command": "python benchmarks/frontier.py vgg16_fashion_mnist --seeds 0",
        "date": "2026-01-02T00:00:00+00:00",
        "config_values": cfg,
        "summary": {
            "points": [
                point("afp_tf", 0.005, 0.001, 1.2),
                point("afp_tf", 0.01, 0.004, 3.0),
                point("uniform_l1", 0.2, 0.003, 1.5, "fraction"),
                point("a_ladder_variant", 0.2, 0.002, 1.5, "fraction"),
            ],
            "afp_tf_vs_ladders": [
                {
                    "seed": 0,
                    "tolerance": 0.01,
                    "test_drop": 0.004,
                    "macs_reduction": 3.0,
                    "a_ladder_variant": {**ladder, "afp_tf_over_it": 1.2},
                    "uniform_l1": ladder,
                    "within_tolerance_plus_0.3pt": True,
                }
            ],
        },
    }


NOTE = "The baseline is the model of the previous run. " + "Diagnosis: precision, not recall. " * 40


def _train_step():
    return {
        "command": f"python benchmarks/train_step.py --train 2048 --note '{NOTE}' --epochs 1",
        "date": "2026-01-03T00:00:00+00:00",
        "model": "lenet5",
        "note": NOTE,
        "rows": [
            {"option": "default", "epoch_s_median": 3.4027, "speedup_vs_default": 1.0},
            {"option": "jit_compile", "epoch_s_median": 11.1547, "speedup_vs_default": 0.305},
        ],
    }


def _coverage():
    fam = {"internal": 4, "internal_prunable": 4, "internal_share": 1.0, "source": "k"}
    return {
        "command": "python benchmarks/surgery_coverage.py",
        "families": [
            {**fam, "family": "A", "golden_rel_error": 1e-7},
            {**fam, "family": "B", "golden_rel_error": 3e-3},
            {"family": "C", "source": "k", "error": "boom"},
        ],
    }


@pytest.fixture()
def results(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    files = {
        "compare_lenet5_fashion_mnist": _compare(rule="scale_free", accept=None),
        "compare_tiny": _compare(),
        "frontier_tiny": _frontier(),
        "train_step": _train_step(),
        "surgery_coverage": _coverage(),
    }
    for stem, data in files.items():
        (folder / f"{stem}.json").write_text(json.dumps(data))
    (folder / "frontier_tiny.png").write_bytes(b"png")
    return folder


def _row(text: str, stem: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| [{stem}]"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_headline_rows_carry_each_results_numbers(gen, results):
    text = gen.headline(results)
    cols = gen.HEADLINE
    compare = dict(zip(cols, _row(text, "compare_tiny"), strict=True))
    assert compare["model"] == "lenet5" and compare["ε"] == "0.01"
    assert (compare["MACs ↓"], compare["params ↓"]) == ("10.00×", "8.00×")
    assert compare["test drop (points)"] == "0.50"
    assert compare["afp_tf vs uniform ℓ1"] == "+1.50 test points at equal MACs"
    assert compare["exported latency ↓"] == "4.00× (tflite_fp32)"
    frontier = dict(zip(cols, _row(text, "frontier_tiny"), strict=True))
    assert frontier["ε"] == "0.01" and frontier["MACs ↓"] == "3.00×"  # ε = 0.01, not 0.005
    assert frontier["afp_tf vs uniform ℓ1"] == "MACs ↓ 1.50× uniform ℓ1's at equal test drop"
    assert frontier["test drop (points)"] == "0.40"
    assert frontier["exported latency ↓"] == "—"
    train = dict(zip(cols, _row(text, "train_step"), strict=True))
    assert train["model"] == "lenet5" and train["MACs ↓"] == "—"
    coverage = dict(zip(cols, _row(text, "surgery_coverage"), strict=True))
    assert coverage["model"] == "1 of 3 architectures pass the golden test"
    # Current pruning results first, the superseded one after them, the rest last.
    order = [line.split("]")[0][3:] for line in text.splitlines() if line.startswith("| [")]
    assert order == [
        "compare_tiny",
        "frontier_tiny",
        "compare_lenet5_fashion_mnist",
        "surgery_coverage",
        "train_step",
    ]
    assert "(docs/results.md#frontier_tiny)" in text


def test_superseded_default_is_labelled_with_its_commit(gen, results):
    text = gen.headline(results)
    commit = gen.MEASURED_AT["compare_lenet5_fashion_mnist"]
    assert f"(superseded default, {commit})" in _row(text, "compare_lenet5_fashion_mnist")[0]
    assert "superseded" not in _row(text, "compare_tiny")[0]
    page = gen.render(results, results.parent / "docs")
    section = page.split("## compare_lenet5_fashion_mnist\n")[1].split("\n## ")[0]
    assert (
        f"**Superseded default: measured at commit `{commit}` with the old `scale_free` "
        "controller (`prune.rule=scale_free`) and without an acceptance split" in section
    )
    assert "Superseded" not in page.split("## compare_tiny\n")[1].split("\n## ")[0]
    assert gen._superseded("compare_other", _compare(rule="scale_free")).startswith(
        "superseded default: measured at the commit of `git log -1 -- "
    )


def test_results_page_command_without_note_and_note_shortened(gen, results):
    page = gen.render(results, results.parent / "docs")
    section = page.split("## train_step\n")[1]
    command = next(x for x in section.splitlines() if x.startswith("Command: "))
    assert command == (
        "Command: `python benchmarks/train_step.py --train 2048 --epochs 1` "
        "(2026-01-03T00:00:00+00:00)."
    )
    note = next(x for x in section.splitlines() if x.startswith("The baseline is"))
    assert len(note) <= gen.NOTE_CHARS and note.endswith(".")
    assert "Diagnosis: precision, not recall." in note
    assert "| option | epoch_s_median | speedup_vs_default |" in section
    assert "| default | 3.403 | 1 |" in section and "| jit_compile | 11.15 | 0.305 |" in section
    assert "| note |" not in section  # the note is a paragraph, not a value


def test_results_page_frontier_section_and_plot(gen, results):
    page = gen.render(results, results.parent / "docs")
    section = page.split("## frontier_tiny\n")[1].split("\n## ")[0]
    assert "![frontier_tiny](../results/frontier_tiny.png)" in section
    assert "| uniform_l1 | fraction 0.2 | 1 |" in section
    assert "| a_ladder_variant | fraction 0.2 | 1 |" in section  # its kind, not its name
    # uniform ℓ1's columns first, then the ladder variants (the file's keys are sorted)
    assert "| afp_tf | 0 | 0.01 | 0.40 | 3.00× | 2.00× | 1.50× | 2.00× | 1.20× | yes |" in section
    cover = page.split("## surgery_coverage\n")[1].split("\n## ")[0].strip()
    assert cover.startswith("1 of 3 architectures pass the golden test")
    assert "k B (rel. error 3.0e-03); k C (failed: boom)" in cover


def test_command_elides_long_arguments_and_survives_bad_quotes(gen):
    long = "x" * 1000
    assert gen._command({"command": f"run --a 1 --b {long}"}) == "run --a 1 --b …"
    assert gen._command({"command": "run --note 'a b c --x 1"}) == "run"
    assert gen._command({"command": "run --note='a b' --x 1"}) == "run --x 1"
    one_sentence = gen._short_note("word " * 300)
    assert one_sentence.endswith("word …") and len(one_sentence) <= gen.NOTE_CHARS + 2


def test_main_writes_both_and_check_reports_stale(gen, results, tmp_path):
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    readme.write_text("# x\n\n## Results\n\n<!-- results:start -->\n<!-- results:end -->\n\nend\n")
    argv = ["--readme", str(readme), "--docs", str(page), "--results", str(results)]
    assert gen.main([*argv, "--check"]) == 1
    assert not page.exists()  # --check writes nothing
    assert gen.main(argv) == 0
    first = readme.read_bytes(), page.read_bytes()
    assert gen.main([*argv, "--check"]) == 0
    gen.main(argv)
    assert (readme.read_bytes(), page.read_bytes()) == first
    assert readme.read_text().endswith("<!-- results:end -->\n\nend\n")
    page.write_text(page.read_text() + "edited\n")
    assert gen.main([*argv, "--check"]) == 1


def test_recorded_results_superseded_ones_name_their_commit(gen):
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        if gen._superseded(path.stem, json.loads(path.read_text())):
            assert path.stem in gen.MEASURED_AT, f"record the commit of {path.name}"


def test_results_page_recovery_drift_section_gives_mean_sd_per_recipe(gen):
    runs = [
        {"recipe": "base", "overrides": ["prune.finetune_epochs=0"], "drift": d, "removed": 2,
         "recovery_epochs": 2}
        for d in (0.004, 0.008)
    ]  # fmt: skip
    d = {
        "config": "vgg16_fashion_mnist",
        "baseline_seed": 0,
        "quantile": 0.001,
        "summary": [{"recipe": "base", "drift_mean": 0.006, "drift_sd": 0.00283, "n": 2}],
        "runs": runs,
    }
    text = gen._drift(d)
    assert (
        "| base | prune.finetune_epochs=0 | 0.60 ± 0.28 (n=2) | +0.40, +0.80 | 2, 2 | 2, 2 |"
        in text
    )
    assert gen._kind("recovery_drift_vgg16")[0] is gen._drift
