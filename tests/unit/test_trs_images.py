"""Image reference parsing and resolution over the Registry HTTP API v2.

``FakeOciRegistry`` is a small in-process registry on 127.0.0.1 speaking the parts of the
distribution API the resolver uses (manifests by tag or digest, the anonymous Bearer token
flow), so the real ``ImageResolver`` code runs without the integration services. The
integration tests (tests/integration/test_trs_images_registry.py) run it against the real
registry at 127.0.0.1:5000 and the real Docker engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from helixgate.errors import BadRequest, Forbidden, IntegrityError
from trs_registry.images import ImageResolver, parse_reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeOciRegistry:
    """Manifests in memory; ``require_token`` turns on the anonymous Bearer token flow."""

    def __init__(self, *, require_token: bool = False) -> None:
        self.require_token = require_token
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, tag|digest) -> (body, media type)
        self.lie_about_digest: set[str] = set()  # repos whose Docker-Content-Digest header is wrong
        self.token_requests: list[dict[str, list[str]]] = []
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------ content
    def _store(self, repo: str, body: bytes, media_type: str, tag: str | None) -> str:
        digest = sha(body)
        self.manifests[(repo, digest)] = (body, media_type)
        if tag:
            self.manifests[(repo, tag)] = (body, media_type)
        return digest

    def push(
        self, repo: str, tag: str | None, *, media_type: str = OCI_MANIFEST, seed: str | None = None
    ) -> tuple[str, str]:
        """Store a manifest; return (manifest digest, config digest)."""
        config = sha((seed or os.urandom(8).hex()).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 100},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(b"layer"), "size": 900}
            ],
        }
        return self._store(repo, json.dumps(manifest).encode(), media_type, tag), config

    def push_index(self, repo: str, tag: str, arch: str) -> tuple[str, str]:
        """An index with a manifest for ``arch`` (and one for another architecture)."""
        child, config = self.push(repo, None)
        other, _ = self.push(repo, None)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": other,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "s390x"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": arch},
                },
            ],
        }
        return self._store(repo, json.dumps(index).encode(), OCI_INDEX, tag), config

    # ------------------------------------------------------------ HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, val in headers.items():
                    self.send_header(k, val)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append(url.path)
                if url.path == "/token":
                    query = parse_qs(url.query)
                    fake.token_requests.append(query)
                    token = "tok-" + query.get("scope", [""])[0]
                    self._send(200, json.dumps({"token": token}).encode(), {"Content-Type": "application/json"})
                    return
                if not url.path.startswith("/v2/") or "/manifests/" not in url.path:
                    self._send(404, b"{}", {})
                    return
                repo, _, ref = url.path[len("/v2/") :].partition("/manifests/")
                if fake.require_token:
                    scope = f"repository:{repo}:pull"
                    if self.headers.get("Authorization") != f"Bearer tok-{scope}":
                        challenge = f'Bearer realm="http://{fake.host}/token",service="fake",scope="{scope}"'
                        self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
                        return
                entry = fake.manifests.get((repo, ref))
                if entry is None:
                    self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {"Content-Type": "application/json"})
                    return
                body, media_type = entry
                digest = sha(b"lie" + body) if repo in fake.lie_about_digest else sha(body)
                self._send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest})

        return Handler


@pytest.fixture()
def oci_registry() -> Iterator[FakeOciRegistry]:
    fake = FakeOciRegistry()
    yield fake
    fake.close()


def resolver_for(fake: FakeOciRegistry, **kwargs: Any) -> ImageResolver:
    return ImageResolver(insecure_hosts=(fake.host,), **kwargs)


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("127.0.0.1:5000/tools/bwa:1.0", "127.0.0.1:5000", "tools/bwa", "1.0", None),
        ("localhost:5000/bwa:1.0", "localhost:5000", "bwa", "1.0", None),
        ("quay.io/org/bwa:v0.7.17", "quay.io", "org/bwa", "v0.7.17", None),
        ("helixgate/bwa:1.0", None, "helixgate/bwa", "1.0", None),
        ("bwa:latest", None, "bwa", "latest", None),
        ("registry.example:443/a/b@sha256:" + "a" * 64, "registry.example:443", "a/b", None, "sha256:" + "a" * 64),
        ("r.example/a:1@sha256:" + "b" * 64, "r.example", "a", "1", "sha256:" + "b" * 64),
        ("sha256:" + "c" * 64, None, "", None, "sha256:" + "c" * 64),
    ],
)
def test_parse_reference(text: str, registry: str | None, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.is_local == (registry is None)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "non-empty"),
        ("127.0.0.1:5000/tools/bwa", "neither a tag nor a digest"),
        ("Tools/BWA:1", "invalid repository"),
        ("r.example/a:bad tag", "invalid tag"),
        ("r.example/a@sha256:xyz", "digest must be sha256"),
        ("sha256:abc", "64 lower-case hex"),
        ("r.example/../etc:1", "invalid repository"),
        ("x" * 600, "longer than"),
    ],
)
def test_parse_reference_refuses(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_reference(text)
    assert message in err.value.message


# ---------------------------------------------------------------- resolution
def test_resolves_tag_to_manifest_and_config_digest(oci_registry: FakeOciRegistry) -> None:
    manifest, config = oci_registry.push("tools/bwa", "1.0")
    img = resolver_for(oci_registry).resolve(f"{oci_registry.host}/tools/bwa:1.0")
    assert (img.source, img.manifest_digest, img.config_digest) == ("registry", manifest, config)
    assert img.pinned_name == f"{oci_registry.host}/tools/bwa@{manifest}"
    assert img.subject_name == f"{oci_registry.host}/tools/bwa"
    assert (img.signed_digest, img.digest_kind) == (manifest, "manifest")
    assert img.size == 1000  # config + layers


def test_docker_v2_manifest(oci_registry: FakeOciRegistry) -> None:
    manifest, config = oci_registry.push("tools/x", "2", media_type=DOCKER_MANIFEST)
    img = resolver_for(oci_registry).resolve(f"{oci_registry.host}/tools/x:2")
    assert (img.manifest_digest, img.config_digest, img.media_type) == (manifest, config, DOCKER_MANIFEST)


def test_index_pins_the_index_and_takes_the_platform_config(oci_registry: FakeOciRegistry) -> None:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    index_digest, config = oci_registry.push_index("tools/multi", "1.0", arch)
    img = resolver_for(oci_registry).resolve(f"{oci_registry.host}/tools/multi:1.0")
    assert img.manifest_digest == index_digest
    assert img.config_digest == config
    assert img.media_type == OCI_INDEX


def test_anonymous_bearer_token_flow(oci_registry: FakeOciRegistry) -> None:
    oci_registry.require_token = True
    manifest, _ = oci_registry.push("lab/tool", "3.1")
    img = resolver_for(oci_registry).resolve(f"{oci_registry.host}/lab/tool:3.1")
    assert img.manifest_digest == manifest
    assert oci_registry.token_requests == [{"scope": ["repository:lab/tool:pull"], "service": ["fake"]}]


def test_unknown_tag_is_a_clear_400(oci_registry: FakeOciRegistry) -> None:
    oci_registry.push("tools/bwa", "1.0")
    with pytest.raises(BadRequest) as err:
        resolver_for(oci_registry).resolve(f"{oci_registry.host}/tools/bwa:9.9")
    assert "does not resolve" in err.value.message and "tag 9.9 not found" in err.value.message


def test_client_digest_must_match(oci_registry: FakeOciRegistry) -> None:
    manifest, config = oci_registry.push("tools/bwa", "1.0")
    resolver = resolver_for(oci_registry)
    ref = f"{oci_registry.host}/tools/bwa:1.0"
    assert resolver.resolve(ref, manifest).manifest_digest == manifest
    assert resolver.resolve(ref, config).config_digest == config
    assert resolver.resolve(f"{ref}@{manifest}").manifest_digest == manifest
    wrong = "sha256:" + "0" * 64
    for args in ((ref, wrong), (f"{ref}@{wrong}", None)):
        with pytest.raises(IntegrityError) as err:
            resolver.resolve(*args)
        assert err.value.status == 409
        assert (err.value.expected, err.value.actual) == (wrong, manifest)
    with pytest.raises(BadRequest, match="not found"):  # by digest alone: no such manifest at all
        resolver.resolve(f"{oci_registry.host}/tools/bwa@{wrong}")


def test_pinned_by_digest_only(oci_registry: FakeOciRegistry) -> None:
    manifest, config = oci_registry.push("tools/bwa", "1.0")
    img = resolver_for(oci_registry).resolve(f"{oci_registry.host}/tools/bwa@{manifest}")
    assert (img.manifest_digest, img.config_digest, img.tag) == (manifest, config, "")


def test_registry_header_digest_is_checked(oci_registry: FakeOciRegistry) -> None:
    oci_registry.push("tools/liar", "1")
    oci_registry.lie_about_digest.add("tools/liar")
    with pytest.raises(IntegrityError) as err:
        resolver_for(oci_registry).resolve(f"{oci_registry.host}/tools/liar:1")
    assert "Docker-Content-Digest" in err.value.message


def test_private_registry_refused_unless_configured(oci_registry: FakeOciRegistry) -> None:
    oci_registry.push("tools/bwa", "1.0")
    resolver = ImageResolver()  # not insecure, not allowed: 127.0.0.1 is a private destination
    with pytest.raises(Forbidden):
        resolver.resolve(f"{oci_registry.host}/tools/bwa:1.0")
    assert oci_registry.requests == []


def test_unreachable_registry_is_upstream_error() -> None:
    from helixgate.errors import UpstreamError

    resolver = ImageResolver(insecure_hosts=("127.0.0.1:9",), timeout=2)
    with pytest.raises(UpstreamError) as err:
        resolver.resolve("127.0.0.1:9/tools/bwa:1.0")
    assert "not reachable" in err.value.message


@pytest.mark.parametrize(
    "text", ["r.example/a:1\n@sha256:" + "a" * 64, "sha256:" + "a" * 64 + "\n\n", "r.example/a\n/b:1"]
)
def test_newlines_never_sneak_through(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_reference(text.replace("\n\n", "\nx"))
