# Small convenience targets; the README's test command stays the reference.
PYTEST ?= .venv/bin/pytest

.PHONY: specs conformance conformance-long bench bench-quick

# The pinned official GA4GH documents (downloaded once, SHA-256 checked) unless HELIXGATE_GA4GH_SPECS names them
specs:
	@[ -n "$$HELIXGATE_GA4GH_SPECS" ] || .venv/bin/python scripts/fetch_ga4gh_specs.py >/dev/null

# GA4GH conformance: spec comparison, official-schema validation, schemathesis (bounded), real clients
conformance: specs
	$(PYTEST) -q tests/unit/test_spec_comparison.py tests/conformance

# The same with many more schemathesis examples, randomized, with shrinking (tens of minutes)
conformance-long: specs
	HELIXGATE_CONFORMANCE_EXAMPLES=300 HELIXGATE_CONFORMANCE_BUDGET=3000 \
		$(PYTEST) -q -s tests/conformance/test_schemathesis.py --timeout=3600

# Benchmarks, side by side with their baselines (docs/benchmarks.md); needs scripts/services.sh
bench:
	.venv/bin/python -m bench

bench-quick:
	.venv/bin/python -m bench --quick
