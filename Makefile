# Small convenience targets; the README's test command stays the reference.
PYTEST ?= .venv/bin/pytest

.PHONY: conformance conformance-long bench bench-quick

# GA4GH conformance: spec comparison, official-schema validation, schemathesis (bounded), real clients
conformance:
	$(PYTEST) -q tests/unit/test_spec_comparison.py tests/conformance

# The same with many more schemathesis examples, randomized, with shrinking (tens of minutes)
conformance-long:
	HELIXGATE_CONFORMANCE_EXAMPLES=300 HELIXGATE_CONFORMANCE_BUDGET=3000 \
		$(PYTEST) -q -s tests/conformance/test_schemathesis.py --timeout=3600

# Benchmarks, side by side with their baselines (docs/benchmarks.md); needs scripts/services.sh
bench:
	.venv/bin/python -m bench

bench-quick:
	.venv/bin/python -m bench --quick
