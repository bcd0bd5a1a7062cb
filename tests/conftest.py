"""Shared fixtures live in tests/fixtures/ and are registered here as plugins."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.app",
    "tests.fixtures.fake_sigstore",
    "tests.fixtures.docker_images",
    "tests.fixtures.live",
    "tests.fixtures.ui",
]
