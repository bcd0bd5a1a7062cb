"""Every third-party package the shipped code imports is declared in setup.cfg install_requires."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"helixgate", "helixgate_ui", "helixgate_app", "wes_server", "trs_registry", "drs_store"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    return {_norm(re.split(r"[\[<>=!~; ]", line.strip(), maxsplit=1)[0]) for line in lines if line.strip()}


def _imported() -> dict[str, set[str]]:
    """top-level module -> files importing it, over the shipped packages."""
    found: dict[str, set[str]] = {}
    for package in sorted(FIRST_PARTY):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module, files in _imported().items():
        if module in sys.stdlib_module_names or module in FIRST_PARTY:
            continue
        dists = {_norm(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported but not in setup.cfg install_requires: {missing}"


def test_the_check_sees_a_known_import() -> None:
    assert "sigstore_models" in _imported() or "pydantic" in _imported()
    assert {"pydantic", "sigstore-models"} <= _declared()


def test_only_public_modules_of_dependencies_are_imported() -> None:
    private = []
    for package in sorted(FIRST_PARTY):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    head, *rest = name.split(".")
                    if head not in FIRST_PARTY and any(part.startswith("_") for part in rest):
                        private.append(f"{path.relative_to(ROOT)}: {name}")
    assert not private, f"private modules of dependencies imported: {private}"
