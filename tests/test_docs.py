"""The README and docs: every config listed with its docstring, links resolve, nothing external."""

import ast
import re
import subprocess
from pathlib import Path

from conftest import load_benchmark

from afp_tf import resources
from afp_tf.run import config_lib

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- configs:start -->", "<!-- configs:end -->"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def configs_block() -> str:
    """The README's config list: each shipped config with the first line of its docstring."""
    lines = []
    for name in config_lib.available_configs():
        tree = ast.parse((resources.config_dir() / f"{name}.py").read_text())
        doc = ast.get_docstring(tree) or ""
        lines.append(f"- `{name}`: {doc.splitlines()[0] if doc else '(no docstring)'}")
    return "\n".join(lines)


def test_readme_lists_every_config_with_its_docstring_line():
    readme = (ROOT / "README.md").read_text()
    listed = readme[readme.index(START) + len(START) : readme.index(END)].strip()
    assert listed == configs_block(), (
        f"Replace the README's list between {START} and {END} with:\n{configs_block()}"
    )


def test_readme_results_and_results_page_are_what_the_generator_writes():
    generator = load_benchmark("readme_results")
    assert generator.main(["--check"]) == 0, "run: python benchmarks/readme_results.py"


def test_readme_and_docs_links_point_at_files_in_the_repo():
    missing = set()
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            path = (page.parent / target).resolve()
            if not re.match(r"https?://", target) and not path.exists():
                missing.add(f"{page.name} -> {target}")
    assert missing == set()


def test_tracked_text_names_no_issue_numbers_or_paths_outside_the_repo():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pattern = re.compile(r"\bissue\s*#?\d+|\.\./shared|/work/shared", re.IGNORECASE)
    hits = []
    for name in (f for f in files if f != "tests/test_docs.py"):  # its own patterns
        path = ROOT / name
        if path.suffix in (".py", ".md", ".toml", ".json", ".txt", "") and path.is_file():
            hits += [
                f"{name}: {m.group()}" for m in pattern.finditer(path.read_text("utf-8", "replace"))
            ]
    assert hits == []


# A folder of the machine a run or a benchmark happened on (a URL's path is not one).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp)/[^\s`'\"),]*")


def test_docs_and_results_name_no_path_of_the_machine_that_wrote_them():
    files = [*PAGES, *sorted((ROOT / "benchmarks" / "results").glob("*.json"))]
    hits = [
        f"{f.relative_to(ROOT)}: {m.group()}"
        for f in files
        for m in MACHINE_PATH.finditer(f.read_text())
    ]
    assert hits == [], "write paths relative to the repository (e.g. runs/NAME)"


# A repository path named in prose or code, e.g. `benchmarks/results/*.json`.
REPO_REF = re.compile(r"(?<![\w./:-])((?:docs|benchmarks|configs)/[\w./*-]*[\w*/])")
# A Markdown file a Python module names, e.g. docs/method.md (report.md is a run's output).
MD_REF = re.compile(r"(?<![\w./-])([\w./-]+\.md)\b")


def _exists(ref: str) -> bool:
    return (ROOT / ref).exists() or any(ROOT.glob(ref))


def test_docs_and_sources_name_only_files_in_the_repo():
    missing = {
        f"{page.name} -> {ref}"
        for page in PAGES
        for ref in REPO_REF.findall(page.read_text())
        if not _exists(ref)
    }
    sources = [
        p
        for folder in ("afp_tf", "benchmarks", "configs", "export")
        for p in sorted((ROOT / folder).rglob("*.py"))
    ]
    missing |= {
        f"{path.relative_to(ROOT)} -> {ref}"
        for path in sources
        for ref in MD_REF.findall(path.read_text())
        if ref != "report.md" and not _exists(ref)
    }
    assert missing == set()


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        keys |= _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return keys


# Code spans that look like a config key but name Python or a file.
NOT_KEYS = {"model.fit", "model.onnx", "export.write_formats"}


def test_config_keys_in_docs_are_accepted_by_a_config():
    accepted = set()
    for name in config_lib.available_configs():
        for arg in ("", ":quick"):
            accepted |= _flat_keys(config_lib.load_config(name + arg).to_dict())
    sections = "|".join(sorted({k.split(".")[0] for k in accepted if "." in k}))
    key = rf"(?:{sections})\.[a-z_][a-z0-9_]*"
    flag, bare = re.compile(rf"--config\.({key})"), re.compile(rf"(?<![\w./-])({key})(?![\w(.])")
    unknown = set()
    for page in PAGES:
        text = page.read_text()
        prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
        named = set(flag.findall(text))
        for span in re.findall(r"`([^`\n]+)`", prose):
            named |= set(bare.findall(span))
        unknown |= {f"{page.name}: {k}" for k in named - accepted - NOT_KEYS}
    assert unknown == set()
