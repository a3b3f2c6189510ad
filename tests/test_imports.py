"""The import graph inside afp_tf has no cycle, function-level (lazy) imports included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "afp_tf"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the afp_tf modules it imports anywhere in its body (top level or lazily)."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycles_two_module_loop_is_found(tmp_path):
    root = tmp_path / "afp_tf"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from afp_tf.sub import b\n")
    (root / "sub" / "b.py").write_text("def f():\n    from afp_tf import a\n")
    (root / "c.py").write_text("import afp_tf.a\n")
    graph = import_graph(root)
    assert graph["afp_tf.c"] == {"afp_tf.a"}
    assert cycles(graph) == [["afp_tf.a", "afp_tf.sub.b"]]


def test_import_graph_sees_lazy_imports():
    graph = import_graph()
    # The pipeline imports the exporter inside a function; it must still be an edge.
    assert "afp_tf.pipeline" in graph and "afp_tf.tasks" in graph["afp_tf.pipeline"]
    assert "afp_tf.detection.task" in graph["afp_tf.tasks"]


def test_afp_tf_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []
