"""WES's modules import each other in one direction (no cycle, counting imports inside
functions too), and none reaches into DRS or TRS: they are used through the ports only."""

from __future__ import annotations

import ast
from pathlib import Path

import wes_server

PACKAGE = Path(wes_server.__file__).parent


def _imports(path: Path) -> set[str]:
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "wes_server":
                deps |= {f"wes_server.{a.name}" for a in node.names}
            else:
                deps.add(node.module)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
    return deps


def _graph() -> dict[str, set[str]]:
    return {f"wes_server.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py")}


def test_no_import_cycle_between_wes_modules() -> None:
    graph = _graph()
    internal = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        for dep in internal[module]:
            assert dep not in path, " -> ".join((*path[path.index(dep) :], dep))
            if dep not in done:
                visit(dep, (*path, dep))
        done.add(module)

    for module in internal:
        visit(module, (module,))


def test_wes_uses_drs_and_trs_only_through_the_ports() -> None:
    for module, deps in _graph().items():
        reached = sorted(d for d in deps if d.split(".")[0] in ("drs_store", "trs_registry"))
        assert not reached, f"{module} imports {reached}"
