"""`pip install .` yields a complete distribution: the console command, every migration,
the served OpenAPI documents (as data files), the demo's workflow and the web UI's assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_everything_the_services_need(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("helixgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for service in ("wes", "trs", "drs", "core"):
        assert f"helixgate-0.1.0.data/data/share/helixgate/openapi/{service}.yaml" in names
    for package in ("helixgate", "drs_store", "trs_registry", "wes_server"):
        assert f"{package}/migrations/env.py" in names
        assert any(n.startswith(f"{package}/migrations/versions/") and n.endswith(".py") for n in names), package
    assert "helixgate_app/demo_assets/workflow.cwl" in names
    # the web UI ships its templates and the built (vendored) assets: no build step at install
    for path in (
        "helixgate_ui/templates/base.html",
        "helixgate_ui/static/ui.css",
        "helixgate_ui/static/vendor/htmx.min.js",
        "helixgate_ui/static/vendor/MANIFEST.json",
        "helixgate/templates/oidc/login.html",
        "helixgate/templates/oidc/login.css",
    ):
        assert path in names, path
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "helixgate = helixgate_app.cli:main" in entry_points
