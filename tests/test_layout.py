"""The package's shape: the pixel layer knows no task, and no module imports itself back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "palette_cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules imported anywhere in a file (also inside functions)."""
    name, found = _module_name(path), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return (found & modules) - {name}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def test_images_imports_no_task_code():
    assert not {m for m in _graph()["palette_cli.images"] if m.startswith("palette_cli.tasks")}


def test_no_import_cycles():
    graph, cycles = _graph(), []

    def visit(name: str, path: list[str]) -> None:
        for dep in graph[name]:
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif not any(dep in c for c in cycles) and len(path) < 30:
                visit(dep, path + [dep])

    for name in graph:
        visit(name, [name])
    assert cycles == []


def test_config_imports_no_task_code_and_refine_no_task_module():
    graph = _graph()
    assert not {m for m in graph["palette_cli.config"] if m.startswith("palette_cli.tasks")}
    assert not {m for m in graph["palette_cli.refine"] if m.startswith("palette_cli.tasks")}


def test_only_the_cli_imports_typer_or_rich():
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        assert not names & {"typer", "rich", "click"}, path


def test_the_restoring_commands_stay_thin():
    assert len((PACKAGE / "cli" / "infer.py").read_text(encoding="utf-8").splitlines()) <= 300


def test_no_function_body_is_longer_than_50_lines():
    """Counted from the first statement after the docstring to the last line of the body."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]
            if body and body[-1].end_lineno - body[0].lineno + 1 > 50:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == []
