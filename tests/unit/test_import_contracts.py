"""The layers hold: the app composes the services, WES reaches DRS and TRS only through the
core's ports, DRS and TRS are independent, the core imports no service, and the app's own
modules import each other without cycles (the contracts in setup.cfg, checked by
import-linter on the source; lazy and type-checking imports count); and no module of any
package imports itself through others when the code runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("helixgate", "helixgate_app", "wes_server", "trs_registry", "drs_store")
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts on the packages found under ``root``."""
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--config", str(ROOT / "setup.cfg"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture()
def copy_of_the_packages(tmp_path: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.cwl"))
    return tmp_path


@pytest.mark.parametrize(
    ("importer", "statement", "contract"),
    [
        ("helixgate/errors.py", "import drs_store.api", "Layers"),  # the core naming a service
        ("helixgate/web.py", "from helixgate_app import services", "Layers"),  # the core naming the app
        ("trs_registry/shapes.py", "from drs_store import domain", "Layers"),  # DRS and TRS are independent
        ("drs_store/domain.py", "import wes_server.domain", "Layers"),  # a lower service using a higher one
        ("wes_server/submission.py", "from drs_store.access import Principal", "WES uses DRS and TRS only"),
        ("helixgate_app/cli_common.py", "from helixgate_app import cli", "No import cycles"),  # cli imports it
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    copy_of_the_packages: Path, importer: str, statement: str, contract: str
) -> None:
    path = copy_of_the_packages / importer
    # a lazy import counts as much as one at the top
    path.write_text(path.read_text() + f"\n\ndef _smuggled() -> None:\n    {statement}\n")
    result = lint_imports(copy_of_the_packages)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def runtime_import_cycles(root: Path) -> list[list[str]]:
    """Groups of modules that import each other when the code runs (strongly connected
    components of the import graph; lazy imports count, ``if TYPE_CHECKING:`` ones do not:
    a type named in an annotation never runs an import)."""
    code = f"""
import json, sys
import grimp
graph = grimp.build_graph(*{PACKAGES!r}, exclude_type_checking_imports=True)
sys.setrecursionlimit(100000)
index, low, stack, on_stack, groups = {{}}, {{}}, [], set(), []
def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for imported in graph.find_modules_directly_imported_by(module):
        if imported not in index:
            visit(imported)
            low[module] = min(low[module], low[imported])
        elif imported in on_stack:
            low[module] = min(low[module], index[imported])
    if low[module] == index[module]:
        group = []
        while True:
            member = stack.pop()
            on_stack.discard(member)
            group.append(member)
            if member == module:
                break
        if len(group) > 1:
            groups.append(sorted(group))
for module in sorted(graph.modules):
    if module not in index:
        visit(module)
print(json.dumps(groups))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    groups: list[list[str]] = json.loads(result.stdout)
    return groups


def test_no_module_imports_itself_through_others() -> None:
    assert runtime_import_cycles(ROOT) == []


def test_a_planted_cycle_is_found(copy_of_the_packages: Path) -> None:
    storage = copy_of_the_packages / "drs_store" / "storage.py"
    storage.write_text(storage.read_text() + "\n\ndef _backend() -> None:\n    import drs_store.local_storage\n")
    assert ["drs_store.local_storage", "drs_store.storage"] in runtime_import_cycles(copy_of_the_packages)
