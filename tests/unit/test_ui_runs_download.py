"""The UI's output download (helixgate_ui.pages.runs.download_output) in-process, against a
fake API client: the bytes stream through with the DRS checksum in a header; a stream whose
SHA-256 or size differs from the DRS record is cut short (never handed out as complete); a
DRS checksum that differs from the one the run recorded is refused before any byte."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import pytest
from flask import Blueprint, Flask

from helixgate.errors import UpstreamError
from helixgate_ui import session
from helixgate_ui.pages import runs

DATA = b"APPLE\nBANANA\n"
SHA = hashlib.sha256(DATA).hexdigest()


class FakeStream:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    def iter_content(self, size: int) -> Iterator[bytes]:
        for i in range(0, len(self.data), 4):
            yield self.data[i : i + 4]

    def close(self) -> None:
        self.closed = True


class FakeApi:
    """What WES and DRS answer (as ``session.api()`` would, with the user's token)."""

    base_url = "http://hg.test"

    def __init__(self, served: bytes, *, drs_sha: str = SHA, run_sha: str = SHA) -> None:
        self.served = FakeStream(served)
        self.drs_sha, self.run_sha = drs_sha, run_sha
        self.paths: list[str] = []

    def get_object(self, path: str, **_: Any) -> dict[str, Any]:
        self.paths.append(path)
        if path == "/ga4gh/wes/v1/runs/r1":
            out = {
                "class": "File",
                "location": "drs://hg.test/o1",
                "basename": "../s.txt",
                "checksum": f"sha1${self.run_sha}",
            }
            return {"run_id": "r1", "outputs": {"sorted": out}}
        if path == "/ga4gh/drs/v1/objects/o1":
            return {
                "id": "o1",
                "size": len(DATA),
                "checksums": [{"type": "sha-256", "checksum": self.drs_sha}],
                "access_methods": [{"type": "https", "access_id": "a1"}],
            }
        if path == "/ga4gh/drs/v1/objects/o1/access/a1":
            return {"url": "http://hg.test/ga4gh/drs/v1/x-helixgate/stream/o1?sig=x"}
        raise AssertionError(path)

    def request(self, method: str, url: str, **kwargs: Any) -> FakeStream:
        assert (method, kwargs.get("stream")) == ("GET", True)
        self.paths.append(url)
        return self.served


@pytest.fixture()
def app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setattr(session, "current_session", lambda: type("S", (), {"username": "ann"})())
    flask_app = Flask(__name__)
    ui = Blueprint("ui", __name__)
    ui.register_blueprint(runs.blueprint)
    flask_app.register_blueprint(ui, url_prefix="/ui")
    monkeypatch.setattr(runs, "render_template", lambda name, **kw: f"{name} {kw.get('status')}: {kw.get('message')}")
    return flask_app


def _use(monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> FakeApi:
    monkeypatch.setattr(session, "api", lambda: api)
    return api


def test_an_output_streams_through_with_its_checksum(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    api = _use(monkeypatch, FakeApi(DATA))
    r = app.test_client().get("/ui/runs/r1/outputs/0")
    assert r.status_code == 200 and r.data == DATA
    assert r.headers["X-Checksum-SHA256"] == SHA and r.headers["Content-Length"] == str(len(DATA))
    assert r.headers["Content-Disposition"] == 'attachment; filename="_s.txt"'  # no path from the server
    assert api.served.closed


@pytest.mark.parametrize("served", [b"APPLE\nBANANAS", b"APPLE\n", DATA + b"more"])
def test_a_stream_that_differs_from_its_record_is_cut_short(
    app: Flask, monkeypatch: pytest.MonkeyPatch, served: bytes
) -> None:
    _use(monkeypatch, FakeApi(served))
    with pytest.raises(UpstreamError):  # the response body ends in an error: never complete
        app.test_client().get("/ui/runs/r1/outputs/0").data  # noqa: B018


def test_a_drs_checksum_other_than_the_runs_is_refused_before_any_byte(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = _use(monkeypatch, FakeApi(DATA, run_sha="0" * 64))
    r = app.test_client().get("/ui/runs/r1/outputs/0")
    assert r.status_code == 422 and f"the run recorded sha256 {'0' * 64}, DRS holds {SHA}" in r.text
    assert not any("stream" in p for p in api.paths)  # nothing was fetched


def test_ids_that_are_not_ids_never_reach_an_api(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    api = _use(monkeypatch, FakeApi(DATA))
    for path in ("/ui/runs/r1%3Fstate=x/outputs/0", "/ui/runs/r1%23x", "/ui/runs/r1/outputs/7"):
        assert app.test_client().get(path).status_code == 404
    assert api.paths == ["/ga4gh/wes/v1/runs/r1"]  # only the last one, a real run without that output
