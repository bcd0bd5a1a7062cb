#!/usr/bin/env bash
# Run the whole HelixGate test suite on a fresh Debian machine (idempotent):
# installs what is missing, starts Docker, the OCI registry, PostgreSQL and a moto
# server, checks the generated OpenAPI files and lint, then runs pytest.
#   scripts/test.sh [pytest args]      e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
set -a
# shellcheck disable=SC1091
. ./.services.env
set +a
export HELIXGATE_GA4GH_SPECS=${HELIXGATE_GA4GH_SPECS:-$(cd .. && pwd)/shared/ga4gh-specs}
.venv/bin/python scripts/build_openapi.py --check
.venv/bin/ruff check helixgate wes_server trs_registry drs_store bench
.venv/bin/mypy helixgate wes_server trs_registry drs_store bench
exec .venv/bin/pytest -p no:cacheprovider "$@"
