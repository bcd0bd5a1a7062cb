"""The GA4GH drs-compliance-suite (DRS 1.2.0 checks) against the seeded HelixGate DRS 1.5.0.

The suite runs from its own virtualenv (scripts/clients/install.py writes the module its wheel
omits, see docs/compatibility.md) over a readable blob and a bundle holding it, with bearer
tokens. Every case of its JSON report must pass, or be one of ``KNOWN`` below: a documented
conflict between what the 1.2.0 suite expects and what DRS 1.5.0 / HelixGate answers. A new
failure, or a known one whose failure message names something not explained, fails the test;
so does a ``KNOWN`` entry that no longer reproduces (the list must stay true).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conformance.seed import Seeded
from tests.conformance.test_clients import client_env, run

pytestmark = pytest.mark.integration

DRS = "/ga4gh/drs/v1"
PHASES = ("service info", "drs object info", "drs object access")
DRS_ID = re.compile(r"drs id = ([^;\s]+)")  # how the suite names the object in a test's name
# jsonschema's message for additionalProperties: false
UNEXPECTED = re.compile(r"Additional properties are not allowed \((?P<names>.+) (?:was|were) unexpected\)")


@dataclass(frozen=True)
class Known:
    status: str  # the report status this case is allowed to have instead of PASS
    reason: str
    # for closed-schema failures: the only extra properties the failure may name
    extra_properties: frozenset[str] = frozenset()


# (phase, subject, case name) -> why it does not pass. Subjects: "service-info", "blob", "bundle".
KNOWN: dict[tuple[str, str, str], Known] = {
    ("service info", "service-info", "Service Info response schema validation"): Known(
        "FAIL",
        "suite's service_info.json is closed (additionalProperties: false; GA4GH service-info 1.0 is open): "
        "DRS 1.5 DrsService adds drs + maxBulkRequestLength, HelixGate adds its x-helixgate extension",
        frozenset({"drs", "maxBulkRequestLength", "x-helixgate"}),
    ),
    ("drs object info", "blob", "DRS Object Info response schema validation"): Known(
        "FAIL",
        "suite's 1.2.0 access_method.json is closed: AccessMethod gained authorizations (1.3) and "
        "available, cloud (1.5)",
        frozenset({"authorizations", "available", "cloud"}),
    ),
    ("drs object info", "bundle", "DRS Object Info has access information"): Known(
        "SKIP", "the suite itself skips the access_methods check for bundles (optional for bundles in 1.2.0)"
    ),
}


@dataclass(frozen=True)
class Case:
    phase: str
    subject: str
    name: str
    status: str
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.phase, self.subject, self.name)


def unexplained(case: Case) -> str | None:
    """Why ``case`` is not accounted for, or None when it passed or is a known conflict."""
    if case.status == "PASS":
        return None
    known = KNOWN.get(case.key)
    if known is None or known.status != case.status:
        return f"{case.key} is {case.status}: {case.message[:500]}"
    if case.status == "FAIL":
        m = UNEXPECTED.fullmatch(case.message)
        named = set(re.findall(r"'([^']+)'", m.group("names"))) if m else set()
        if not named or not named <= known.extra_properties:
            return (
                f"{case.key} fails differently from its known conflict "
                f"(only {sorted(known.extra_properties)} are explained): {case.message[:500]}"
            )
    return None


def cases(report: dict[str, Any], subjects: dict[str, str]) -> list[Case]:
    out: list[Case] = []
    for phase in report["phases"]:
        for test in phase["tests"]:
            name = test["test_name"]
            if phase["phase_name"] == "service info":
                subject = "service-info"
            else:
                m = DRS_ID.search(name)
                subject = subjects.get(m.group(1), "?") if m else "?"
            out.extend(
                Case(phase["phase_name"], subject, c["case_name"], c["status"], c.get("message", ""))
                for c in test["cases"]
            )
    return out


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        text = text.replace(s, "<token>")
    return text


@pytest.fixture()
def bundle_id(seeded: Seeded) -> str:
    r = requests.post(
        f"{seeded.url}{DRS}/x-helixgate/bundles",
        headers=seeded.headers("steward"),
        json={"name": "compliance-bundle", "contents": [{"name": "reads.txt", "id": seeded.object_id}]},
        timeout=30,
    )
    assert r.status_code == 201, r.text[:500]
    return str(r.json()["id"])


def test_drs_compliance_suite(seeded: Seeded, bundle_id: str, tmp_path: Path, live_log: Path) -> None:
    env = client_env("drs-compliance-suite")
    token = seeded.tokens["steward"]
    bearer = {"auth_type": "bearer", "auth_token": token}
    config = {
        "service_info": bearer,
        "drs_object_info": [
            {"drs_id": seeded.object_id, "is_bundle": False, **bearer},
            {"drs_id": bundle_id, "is_bundle": True, **bearer},
        ],
        "drs_object_access": [{"drs_id": seeded.object_id, **bearer}],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    report_path = tmp_path / "report.json"
    # the suite writes ./output and ./logs into its working directory
    proc = run(
        [
            str(env / "bin" / "drs-compliance-suite"),
            "--server_base_url", f"{seeded.url}{DRS}",
            "--platform_name", "HelixGate",
            "--platform_description", "HelixGate DRS 1.5.0 (conformance session)",
            "--drs_version", "1.2.0",
            "--config_file", str(tmp_path / "config.json"),
            "--report_path", str(report_path),
        ],
        cwd=tmp_path,
    )
    secrets = seeded.tokens.values()
    assert proc.returncode == 0 and report_path.is_file(), redact(
        f"suite did not finish ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", secrets
    )
    text = report_path.read_text()
    assert not any(t in text for t in secrets), "the report echoes a bearer token"
    report = json.loads(text)

    # the run is complete: every phase ran at least one test and no case was left undecided
    assert [p["phase_name"] for p in report["phases"]] == list(PHASES)
    assert all(p["tests"] for p in report["phases"]), [p["phase_name"] for p in report["phases"] if not p["tests"]]
    assert report["summary"]["unknown"] == 0, report["summary"]
    found = cases(report, {seeded.object_id: "blob", bundle_id: "bundle"})
    assert {c.subject for c in found} == {"service-info", "blob", "bundle"}, sorted({c.subject for c in found})
    # the blob's access_id was resolved through /access/{access_id}
    assert any(c.phase == "drs object access" and c.subject == "blob" and c.status == "PASS" for c in found)

    problems = [p for p in map(unexplained, found) if p]
    assert not problems, redact("\n".join(problems) + f"\n(server log: {live_log})", secrets)
    stale = [k for k, known in KNOWN.items() if not any(c.key == k and c.status == known.status for c in found)]
    assert not stale, f"known conflicts that no longer occur; remove them from KNOWN and the docs: {stale}"


def test_unexplained_flags_new_and_different_failures() -> None:
    blob = ("drs object info", "blob", "DRS Object Info response schema validation")
    ok = Case(*blob, "FAIL", "Additional properties are not allowed ('authorizations', 'available' were unexpected)")
    assert unexplained(ok) is None
    extra = Case(*blob, "FAIL", "Additional properties are not allowed ('secret_field' was unexpected)")
    assert unexplained(extra) and "fails differently" in str(unexplained(extra))
    other = Case(*blob, "FAIL", "'id' is a required property")
    assert unexplained(other)
    new = Case("drs object info", "blob", "DRS Object Info response status code validation", "FAIL", "got 500")
    assert unexplained(new) and "is FAIL" in str(unexplained(new))
    wrong_status = Case("drs object info", "bundle", "DRS Object Info has access information", "FAIL", "x")
    assert unexplained(wrong_status)
