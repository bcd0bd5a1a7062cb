"""A small HTTP client for the HelixGate APIs, used by the CLI and by WES to call DRS/TRS.

Errors come back as ``ClientError`` with one clear line (status and the server's message);
connection failures say which URL could not be reached. TLS certificates are verified.
Retries are urllib3's ``Retry``: idempotent requests (GET, HEAD, OPTIONS) on connection and
read errors and on 502/503/504, with exponential backoff; a connection that could not be
opened is retried for any method (nothing was sent); no other request is sent twice.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from helixgate.errors import HelixGateError, UpstreamError


class ClientError(HelixGateError):
    """The server answered with an error (``status`` is its HTTP status)."""


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason
    if isinstance(body, dict):
        return str(body.get("msg") or body.get("message") or body.get("detail") or body)[:500]
    return str(body)[:300]


def json_object(resp: requests.Response) -> dict[str, Any]:
    """The response's body, which must be a JSON object."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamError(f"{resp.request.method} {resp.url} did not return a JSON object")
    return body


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | Callable[[], str] | None = None,
        *,
        verify: bool | str = True,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        retries: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.session = requests.Session()
        # passed on every request: a session-level value loses to REQUESTS_CA_BUNDLE in the environment
        self.verify = verify
        self.timeout = timeout
        self.retries = retries
        retry = Retry(
            total=retries,
            backoff_factor=0.4,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
            connect=retries,
            read=retries,
            other=0,
            raise_on_status=False,  # the last 5xx answer becomes a ClientError below
            respect_retry_after_header=False,  # bounded waits, whatever a peer asks for
        )
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=retry))
        if headers:
            self.session.headers.update(headers)

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        h: dict[str, str] = {}
        token = self._token() if callable(self._token) else self._token
        if token:
            h["Authorization"] = f"Bearer {token}"
        if extra:
            h.update(extra)
        return h

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204, 206),
        stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        try:
            resp = self.session.request(
                method,
                url,
                headers=self._headers(headers),
                timeout=self.timeout,
                stream=stream,
                verify=self.verify,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot reach {self.base_url}: {type(exc).__name__}") from None
        if resp.status_code not in ok:
            raise ClientError(f"HTTP {resp.status_code}: {_message(resp)}", status=resp.status_code)
        return resp

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def get_object(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """GET a JSON object (anything else is the server's error)."""
        return json_object(self.request("GET", path, **kwargs))

    def post_object(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        """POST ``body`` as JSON and read back a JSON object."""
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return json_object(self.request("POST", path, data=json.dumps(body), headers=headers, **kwargs))

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        resp = self.request(
            "POST",
            path,
            data=json.dumps(body),
            headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
            **kwargs,
        )
        return resp.json() if resp.content else None

    def stream(self, path: str, chunk_size: int = 1024 * 1024, **kwargs: Any) -> Iterator[bytes]:
        resp = self.request("GET", path, stream=True, **kwargs)
        try:
            yield from resp.iter_content(chunk_size)
        except requests.RequestException as exc:  # cut short: never hand out a partial object as whole
            raise UpstreamError(f"download from {self.base_url} cut short: {type(exc).__name__}") from None
        finally:
            resp.close()
