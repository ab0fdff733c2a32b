"""The package's import direction, read from the source with `ast` (top-level and function-level imports):
cli -> pipeline -> stages -> llm / engines (onnx, quant, pruning, ...) -> common modules, never back.

    python -m pytest -q tests/test_architecture.py

Checks: no import cycle between deploykit modules; no stage imports another stage; nothing outside cli.py,
pipeline.py and deploykit/stages/ imports a stage; no module past 400 lines except the known ones below,
a list that may only shrink. The package checked is the one `import deploykit` finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import deploykit

PACKAGE = Path(deploykit.__file__).resolve().parent
MAX_LINES = 400
# past MAX_LINES before the rule existed; split them by meaning and take them off this list
KNOWN_LONG: set[str] = set()
# the only modules that may import deploykit.stages.*: the CLI, the pipeline and the stages' own package
STAGE_IMPORTERS = ("deploykit.cli", "deploykit.pipeline", "deploykit.stages")


def _modules() -> dict[str, Path]:
    """{dotted name: file} for every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deploykit module `name` means: itself, else its longest prefix that is a module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """{module: deploykit modules it imports}, wherever in the file the import statement is."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y, from .. import z
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from a.b import c` is module a.b.c when there is one, else a name in a.b
                targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                               for alias in node.names)
        resolved = {_resolve(t, modules) for t in targets if t == "deploykit" or t.startswith("deploykit.")}
        graph[name] = {t for t in resolved if t is not None and t != name and t != "deploykit"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _is_stage(module: str) -> bool:
    return module.startswith("deploykit.stages.")


def test_the_reader_sees_function_level_and_package_imports():
    graph = import_graph()
    # both are imports inside a function body
    assert "deploykit.llm.quantize_job" in graph["deploykit.kinds.generation"]
    assert {"deploykit.onnx.ops", "deploykit.onnx.export"} <= graph["deploykit.tensorrt"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}; move what both need into a module neither is"


def test_no_stage_imports_another_stage():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() if _is_stage(m)
                   for t in targets if _is_stage(t))
    assert not wrong, f"a stage reaches into another stage: {wrong}; move the shared code to an engine module"


def test_only_cli_pipeline_and_stages_import_a_stage():
    graph = import_graph()
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items()
                   if not any(m == ok or m.startswith(ok + ".") for ok in STAGE_IMPORTERS)
                   for t in targets if t == "deploykit.stages" or _is_stage(t))
    assert not wrong, f"only {', '.join(STAGE_IMPORTERS)} may import a stage: {wrong}"


def test_no_new_module_over_400_lines():
    lines = {path.relative_to(PACKAGE.parent).as_posix(): len(path.read_text().splitlines())
             for path in _modules().values()}
    long = {name for name, n in lines.items() if n > MAX_LINES}
    new = sorted(f"{name} ({lines[name]} lines)" for name in long - KNOWN_LONG)
    assert not new, f"modules over {MAX_LINES} lines: {new}; split them by meaning"
    shrunk = sorted(KNOWN_LONG - long)
    assert not shrunk, f"{shrunk} are {MAX_LINES} lines or fewer now: take them off KNOWN_LONG"


def test_stages_and_the_runner_ask_the_kind_table_not_the_task_name():
    """`data.task` is looked up in deploykit.kinds.KINDS; no stage or the pipeline compares it with a kind's name."""
    import re
    import typing

    from deploykit.config import DataConfig
    from deploykit.kinds import KINDS

    offenders = [f"{path.relative_to(PACKAGE.parent)}:{i}"
                 for path in [*sorted((PACKAGE / "stages").glob("*.py")), PACKAGE / "pipeline.py"]
                 for i, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\btask\s*[!=]=\s*[\"']|[\"']\s*[!=]=\s*\S*\btask\b", line)]
    assert not offenders, f"branches on the task's name (ask deploykit.kinds.kind_of instead): {offenders}"
    assert set(typing.get_args(DataConfig.model_fields["task"].annotation)) == set(KINDS)


def test_measurement_never_reaches_into_stages_the_pipeline_or_the_cli():
    """deploykit.measure reads artifacts (engines, runtimes); the bench stage calls it, never the other way."""
    graph = import_graph()
    assert any(m.startswith("deploykit.measure.") for m in graph)
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() if m.startswith("deploykit.measure")
                   for t in targets if t in ("deploykit.pipeline", "deploykit.cli", "deploykit.stages")
                   or _is_stage(t))
    assert not wrong, f"measurement imports what runs stages: {wrong}"
