"""Screenshots of the main pages for docs/screenshots/, taken by the browser tests only when
``HELIXGATE_UI_SCREENSHOTS`` names a directory (a normal test run writes nothing):

    HELIXGATE_UI_SCREENSHOTS=docs/screenshots pytest tests/browser
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def shot(page: Any, name: str) -> None:
    """Save the full page as ``<HELIXGATE_UI_SCREENSHOTS>/<name>.png`` when asked to."""
    directory = os.environ.get("HELIXGATE_UI_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)
