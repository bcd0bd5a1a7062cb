"""The registry with the ``sigstore`` signer, and publisher-signature policies, through
sigstore-python's real code against the in-process fake Fulcio/CT/Rekor (fake_sigstore).

The fake Fulcio accepts only its own issuer's tokens, so the registry's token provider is
the fake's (``build(platform, token_provider=...)``); the built-in-issuer provider is
checked separately for what it mints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from sigstore.dsse import DigestSet, StatementBuilder, Subject
from sigstore.models import ClientTrustConfig
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext

from helixgate.signing import SigstoreTrustPolicy, build_trust_policy, verify_tool_bundle
from tests.fixtures.app import Harness
from tests.fixtures.fake_sigstore import FakeSigstore
from tests.fixtures.ga4gh_schemas import validate
from tests.unit.test_trs_api import create_tool, publish, records, version_body
from tests.unit.test_trs_images import FakeOciRegistry
from trs_registry.domain import TrsRegistry, build, sigstore_token_provider

pytestmark = pytest.mark.integration

X = "/ga4gh/trs/v2/x-helixgate"
REGISTRY_IDENTITY = "trs@helixgate.example"
PUBLISHER = "alice@lab.example"


@pytest.fixture(scope="module")
def oci() -> Iterator[FakeOciRegistry]:
    fake = FakeOciRegistry()
    yield fake
    fake.close()


@pytest.fixture()
def h(harness_factory: Callable[..., Harness], fake_sigstore: FakeSigstore, oci: FakeOciRegistry) -> Harness:
    harness = harness_factory(
        services=("trs",),
        signer="sigstore",
        sigstore_trust_config=fake_sigstore.trust_config_json(),
        sigstore_identity=REGISTRY_IDENTITY,
        sigstore_oidc_issuer=fake_sigstore.issuer_url,
        registry_insecure_hosts=(oci.host,),
    )
    # The domain object is built once per process; give it the fake issuer's tokens.
    harness.platform._domains[TrsRegistry] = build(
        harness.platform, token_provider=lambda: fake_sigstore.mint_token(email=REGISTRY_IDENTITY)
    )
    return harness


def publisher_bundle(fake: FakeSigstore, digest: str, email: str = PUBLISHER) -> dict[str, Any]:
    """What ``cosign attest`` would produce: a DSSE in-toto statement over the image digest."""
    statement = (
        StatementBuilder()
        .subjects([Subject(name="tools/bwa", digest=DigestSet({"sha256": digest.removeprefix("sha256:")}))])
        .predicate_type("https://slsa.dev/provenance/v1")
        .predicate({"buildDefinition": {"buildType": "https://example.org/build"}})
        .build()
    )
    context = SigningContext.from_trust_config(ClientTrustConfig.from_json(fake.trust_config_json()))
    with context.signer(IdentityToken(fake.mint_token(email=email))) as signer:
        bundle: dict[str, Any] = json.loads(signer.sign_dsse(statement).to_json())
    return bundle


def test_keyless_publish_is_signed_and_verifies_with_served_trust_material(
    h: Harness, fake_sigstore: FakeSigstore, oci: FakeOciRegistry
) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    manifest, _ = oci.push("tools/bwa", "1.0")
    entries = fake_sigstore.entry_count
    version = publish(h, alice, "example-lab.bwa", version_body(oci))
    validate("trs", "ToolVersion", version)
    assert version["signed"] is True
    assert fake_sigstore.entry_count == entries + 1  # logged in the (fake) Rekor

    trust = h.client.get(f"{X}/signing/trust").json()
    assert trust["kind"] == "sigstore"
    assert trust["identities"] == [{"identity": REGISTRY_IDENTITY, "issuer": fake_sigstore.issuer_url}]
    policy = SigstoreTrustPolicy(
        json.dumps(trust["trustConfig"]), tuple((i["identity"], i["issuer"]) for i in trust["identities"])
    )
    bundle = h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0/bundle").text
    args = {"expected_digest": manifest, "tool_id": "example-lab.bwa", "version_id": "1.0.0"}
    verified = verify_tool_bundle(bundle, policy=policy, **args)
    assert (verified.signer.identity, verified.signer.issuer) == (REGISTRY_IDENTITY, fake_sigstore.issuer_url)
    assert verify_tool_bundle(bundle, policy=build_trust_policy(h.platform.settings), **args).claim.publisher == "alice"

    record = h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0").json()
    assert record["signature"]["signer_kind"] == "sigstore"
    assert record["signature"]["signer"] == f"{REGISTRY_IDENTITY} ({fake_sigstore.issuer_url})"
    # key management belongs to the key signer
    admin = h.auth("root", "admin")
    r = h.client.post(f"{X}/signing/keys/rotate", headers=admin)
    assert r.status_code == 409 and "'key' signer" in r.json()["message"]


def test_required_publisher_signature(
    harness_factory: Callable[..., Harness], fake_sigstore: FakeSigstore, oci: FakeOciRegistry
) -> None:
    # registry signs with its key; publishers sign keylessly with the deployment's Sigstore instance
    h = harness_factory(
        services=("trs",), sigstore_trust_config=fake_sigstore.trust_config_json(), registry_insecure_hosts=(oci.host,)
    )
    alice = h.auth("alice", "tool-developer")
    policy = [{"identity": PUBLISHER, "issuer": fake_sigstore.issuer_url}]
    create_tool(h, alice, required_publisher_identities=policy)
    manifest, _ = oci.push("tools/bwa", "1.0")

    good = publisher_bundle(fake_sigstore, manifest)
    version = publish(h, alice, "example-lab.bwa", version_body(oci, publisher_bundle=good))
    assert version["signed"] is True
    record = h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0").json()
    assert record["publisher_signature"]["signer"] == f"{PUBLISHER} (issuer {fake_sigstore.issuer_url})"
    assert record["publisher_signature"]["bundle"] == good
    assert h.client.get(f"{X}/tools/example-lab.bwa").json()["x_helixgate"]["required_publisher_identities"] == policy

    cases = [
        (None, "none was sent"),
        (publisher_bundle(fake_sigstore, manifest, email="mallory@evil.example"), "mallory@evil.example"),
        (publisher_bundle(fake_sigstore, "sha256:" + "ab" * 32), "signed image digest does not match"),
        ({"mediaType": "not a bundle"}, "not a valid Sigstore bundle"),
    ]
    for i, (bundle, message) in enumerate(cases, start=1):
        body = version_body(oci, f"1.0.{i}")
        if bundle is not None:
            body["publisher_bundle"] = bundle
        r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
        assert r.status_code == 403, r.text
        assert message in r.json()["message"], r.json()["message"]
    events = records(h, category="security", action_prefix="trs.publish.refused.publisher_signature")
    assert len(events) == len(cases)
    assert [v["id"] for v in h.client.get("/ga4gh/trs/v2/tools/example-lab.bwa/versions").json()] == ["1.0.0"]


def test_builtin_issuer_token_provider(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(services=("trs",), sigstore_identity=REGISTRY_IDENTITY)
    token = sigstore_token_provider(h.platform)()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "sigstore"
    assert (claims["sub"], claims["email"], claims["email_verified"]) == (REGISTRY_IDENTITY, REGISTRY_IDENTITY, True)
    assert h.platform.issuer is not None and claims["iss"] == h.platform.issuer.issuer_url
    assert 0 < claims["exp"] - claims["iat"] <= 300
