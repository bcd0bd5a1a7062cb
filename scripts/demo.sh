#!/usr/bin/env bash
# The end-to-end demo on embedded defaults (idempotent set-up, then `helixgate demo`):
# installs what is missing, starts the Docker engine, then publishes a signed tool,
# uploads data, runs a verified multi-step CWL workflow and shows tampering refused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
HELIXGATE_ONLY_DOCKER=1 bash scripts/services.sh
exec .venv/bin/helixgate demo "$@"
