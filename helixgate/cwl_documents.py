"""The documents a CWL document names -- ``run:``, ``$import``, ``$include``, ``$mixin`` -- read
from the parsed YAML (PyYAML), not by a pattern over its text, so a reference in a comment or
a string is never taken for one and every spelling YAML allows is found.

Used by the CLI to attach a local workflow's files; the server's restricted loader
(``wes_server.workflow_guard``) remains the authority on what a run may reference.
"""

from __future__ import annotations

from typing import Any

import yaml

from helixgate.errors import BadRequest

_LINK_KEYS = frozenset({"$import", "$include", "$mixin"})


def document_references(content: bytes, name: str) -> list[str]:
    """Relative paths named by ``content`` (fragments dropped, URLs and ``#id`` references left
    out), in document order, each once. BadRequest if ``content`` is not YAML/JSON."""
    try:
        doc = yaml.safe_load(content.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise BadRequest(f"{name} is not a CWL document (YAML/JSON): {first}") from None
    found: list[str] = []
    stack: list[Any] = [doc]
    while stack:  # iterative: a deeply nested document cannot exhaust the recursion limit
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if (key == "run" or key in _LINK_KEYS) and isinstance(value, str):
                    found.append(value)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    out: list[str] = []
    for ref in found:
        path = ref.split("#", 1)[0].strip()
        if path and "://" not in path and path not in out:
            out.append(path)
    return out
