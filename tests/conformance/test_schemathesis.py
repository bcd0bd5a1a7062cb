"""schemathesis against the three running services, driven by the OFFICIAL GA4GH documents.

For every GA4GH operation, three hypothesis runs (positive data with the seeded ids, positive
data with random ids, negative data) send requests with a valid token of
a user who may use the operation. Checks: no 5xx, responses conform to the official schema
(schemathesis' own checks plus ``official_contract``, our validator with the documented
undeclared-status rule), content types are declared, invalid requests are rejected.

Time-bounded: HELIXGATE_CONFORMANCE_EXAMPLES examples per run (default 6, derandomized),
so the whole module stays well under 3 minutes; ``make conformance-long`` raises it and
turns randomization and shrinking on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from tests.conformance.seed import Seeded
from tests.fixtures.ga4gh_schemas import BASE_PATHS, document, service_of, validate_response

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("HELIXGATE_CONFORMANCE_EXAMPLES", "6"))
LONG = EXAMPLES > 20
BUDGET_SECONDS = float(os.environ.get("HELIXGATE_CONFORMANCE_BUDGET", "150"))
TOKEN_OF = {"wes": "analyst", "trs": "viewer", "drs": "steward"}


def official_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis check: the response validates against the official operation (our validator)."""
    located = service_of(urlsplit(str(response.request.url)).path)
    if located is None:
        raise AssertionError(f"response from an unexpected URL {response.request.url}")
    service, path = located
    content_type = (response.headers.get("content-type") or [None])[0]
    validate_response(service, str(response.request.method), path, response.status_code, content_type,
                      response.content or b"")
    return None


POSITIVE_CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, official_contract]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


def seeded_path_parameters(service: str, seeded: Seeded) -> dict[str, str]:
    return {
        "wes": {"run_id": seeded.run_id},
        "trs": {"id": seeded.tool_id, "version_id": seeded.version_id, "type": "CWL"},
        "drs": {"object_id": seeded.object_id, "access_id": "https"},
    }[service]


def run_operation(
    operation: Any,
    mode: schemathesis.GenerationMode,
    path_parameters: dict[str, str] | None,
    call: Callable[[Any], None],
) -> None:
    settings = hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if LONG else [])],
        verbosity=hypothesis.Verbosity.quiet,
    )
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None)

    @settings
    @given(case=strategy)
    def property_test(case: Any) -> None:
        call(case)

    property_test()


@pytest.mark.parametrize("service", ["wes", "trs", "drs"])
def test_schemathesis_official_spec(service: str, seeded: Seeded) -> None:
    # security schemes are not mutated into negative cases: the anonymous / expired-token behaviour
    # is a HelixGate decision (TRS anonymous reads) tested in test_auth.py
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_dict(document(service), config=config)
    base_url = seeded.url + BASE_PATHS[service]
    session = requests.Session()
    headers = seeded.headers(TOKEN_OF[service])
    seeds = seeded_path_parameters(service, seeded)
    started = time.monotonic()
    failures: list[str] = []
    unsatisfiable: list[str] = []
    calls = 0

    def caller(checks: list[Any]) -> Callable[[Any], None]:
        def call(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
            case.validate_response(response, checks=checks, headers=headers)

        return call

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err (invalid official spec) raises here
        params = {p.name for p in operation.path_parameters}
        seeded_params = {k: v for k, v in seeds.items() if k in params}
        runs = [
            ("positive/seeded", schemathesis.GenerationMode.POSITIVE, seeded_params, POSITIVE_CHECKS),
            ("positive/random", schemathesis.GenerationMode.POSITIVE, None, POSITIVE_CHECKS),
            ("negative", schemathesis.GenerationMode.NEGATIVE, None, NEGATIVE_CHECKS),
        ]
        for label, mode, path_parameters, checks in runs:
            if time.monotonic() - started > BUDGET_SECONDS:
                failures.append(f"time budget of {BUDGET_SECONDS}s exhausted before {operation.label} {label}")
                break
            try:
                run_operation(operation, mode, path_parameters, caller(checks))
            except hypothesis.errors.Unsatisfiable:
                unsatisfiable.append(f"{operation.label} [{label}]")  # nothing in it can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # every failure is reported, the run goes on
                failures.append(f"{operation.label} [{label}]: {str(exc)[:2500]}")
    elapsed = time.monotonic() - started
    print(f"schemathesis {service}: {calls} requests in {elapsed:.1f}s, {len(failures)} failing runs; "
          f"no invalid input possible for: {', '.join(unsatisfiable) or '-'}")
    assert calls > 0
    assert not failures, f"{len(failures)} schemathesis failure(s) on {service}:\n\n" + "\n\n".join(failures)
