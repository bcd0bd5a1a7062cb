"""What every CLI command shares: settings, the API client, output."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from helixgate.client import ApiClient
from helixgate.config import Settings, load_settings

Handler = Callable[[argparse.Namespace], int]


def load(args: argparse.Namespace, **overrides: Any) -> Settings:
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return load_settings(getattr(args, "config", None), **overrides)


def api(args: argparse.Namespace) -> ApiClient:
    """A client of ``--url``: with ``--token``, ``HELIXGATE_TOKEN`` or ``--token-file`` if given,
    else with the tokens of ``helixgate login`` (refreshed transparently), else anonymous."""
    from helixgate.oidc_client import RefreshingToken, TokenCache

    token: str | RefreshingToken | None = args.token or os.environ.get("HELIXGATE_TOKEN")
    if not token and args.token_file:
        token = Path(args.token_file).expanduser().read_text().strip()
    verify: bool | str = args.ca_bundle or True
    if not token:
        cache = TokenCache()
        if cache.get(args.url) is not None:
            token = RefreshingToken(args.url, cache, verify=verify)
    return ApiClient(args.url, token, verify=verify)


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str] | None = None) -> None:
    if args.json or human is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        text = human(data)
        if text:
            print(text)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cols = [list(map(str, c)) for c in zip(header, *rows, strict=True)] if rows else [[h] for h in header]
    widths = [max(len(x) for x in col) for col in cols]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(header, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
    return "\n".join(lines)
