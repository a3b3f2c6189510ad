"""The README and docs: every config listed with its docstring, links resolve, nothing external."""

import ast
import re
import subprocess
from pathlib import Path

from afp_tf import config_lib, resources

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- configs:start -->", "<!-- configs:end -->"


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


def test_readme_and_docs_links_point_at_files_in_the_repo():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = set()
    for page in pages:
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
