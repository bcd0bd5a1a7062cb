"""The documentation matches the code: every setting and every environment variable the code
reads is in docs/configuration.md, and no document points at a document or file that does not
exist. (The README's command examples are run by tests/e2e/test_readme_examples.py.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from helixgate.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "compose" / "README.md"]
PACKAGES = ("helixgate", "helixgate_app", "wes_server", "trs_registry", "drs_store")
CODE = [
    *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")),
    *(ROOT / "scripts").glob("*.py"),
    *(ROOT / "scripts").glob("*.sh"),
    *(ROOT / "compose").glob("*.yml"),
]
NOT_ENVIRONMENT = {"HELIXGATE_PLATFORM"}  # a Flask config key, not a variable anyone sets
VARIABLE = re.compile(r"\b(HELIXGATE_[A-Z][A-Z0-9_]*[A-Z0-9])\b")


def test_every_setting_has_a_row() -> None:
    for f in dataclasses.fields(Settings):
        row = f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` |"
        assert row in CONFIGURATION, f"docs/configuration.md has no row for setting {f.name}"


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    settings_vars = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    found: dict[str, Path] = {}
    for path in CODE:
        for name in VARIABLE.findall(path.read_text(errors="replace")):
            found.setdefault(name, path)
    undocumented = {
        name: str(path.relative_to(ROOT))
        for name, path in found.items()
        if name not in NOT_ENVIRONMENT and name not in settings_vars and f"`{name}`" not in CONFIGURATION
    }
    assert not undocumented, f"not in docs/configuration.md: {undocumented}"


def test_documents_point_only_at_existing_files() -> None:
    missing = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):  # markdown links
            if "://" not in target and not (doc.parent / target).exists() and not (ROOT / target).exists():
                missing.append(f"{doc.name}: link {target}")
        for target in re.findall(r"`((?:docs|tests|scripts|compose|bench)/[A-Za-z0-9_./-]+\.(?:md|py|sh|yml))", text):
            if not (ROOT / target).exists():
                missing.append(f"{doc.name}: {target}")
    assert not missing, missing
