"""Command groups for tool developers, data stewards and workflow users (registered into the CLI)."""

from __future__ import annotations

from typing import Any


def register(sub: Any, add: Any) -> None:
    """Add the `tool`, `data`, `run` and `demo` command groups."""
    return None
