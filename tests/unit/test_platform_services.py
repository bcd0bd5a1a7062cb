"""The Platform knows services only through their declarations: typed domain lookups built
once, ports from a served service in-process or else the core's remote implementation,
migrations of exactly the declared services (the core's first)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Protocol

import pytest
import sqlalchemy as sa

from helixgate.config import load_settings
from helixgate.declaration import SERVICE as CORE
from helixgate.errors import ConfigurationError
from helixgate.platform import Platform
from helixgate.services import ServiceDeclaration
from helixgate_app.services import DRS, ROLES, SERVICES, build_platform


class Greeter(Protocol):
    """A port: what a consumer needs, nothing about who answers."""

    def greet(self, name: str) -> str: ...


class Clock(Protocol):
    def now(self) -> int: ...


class Library:
    """A fake service's domain object; counts how often it was built."""

    built = 0

    def __init__(self, platform: Platform) -> None:
        type(self).built += 1
        self.platform = platform


class LocalGreeter:
    def __init__(self, platform: Platform) -> None:
        self.domain = platform.domain(Library)

    def greet(self, name: str) -> str:
        return f"hello {name} (in-process)"


class RemoteGreeter:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def greet(self, name: str) -> str:
        return f"hello {name} (over HTTP)"


LIBRARY: ServiceDeclaration[Library] = ServiceDeclaration(
    name="lib",
    base_path="/lib/v1",
    openapi="lib.yaml",
    handlers="tests.unit.test_platform_services",
    domain=Library,
    build=Library,
    provides={Greeter: LocalGreeter},
)


Make = Callable[..., Platform]


@pytest.fixture()
def make_platform(tmp_path: Path) -> Iterator[Make]:
    made: list[Platform] = []

    def make(*services: ServiceDeclaration[object], **kwargs: object) -> Platform:
        settings = load_settings(env={}, data_dir=str(tmp_path / f"data{len(made)}"))
        p = Platform(settings, services, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def tables(platform: Platform) -> set[str]:
    return set(sa.inspect(platform.db.engine).get_table_names())


def test_a_domain_is_built_once_by_its_declaration(make_platform: Make) -> None:
    Library.built = 0
    p = make_platform(LIBRARY)
    lib = p.domain(Library)
    assert isinstance(lib, Library) and lib.platform is p
    assert p.domain(Library) is lib
    assert Library.built == 1


def test_an_undeclared_domain_is_a_configuration_error(make_platform: Make) -> None:
    p = make_platform()
    with pytest.raises(ConfigurationError, match="Library"):
        p.domain(Library)


def test_a_build_returning_another_type_is_refused(make_platform: Make) -> None:
    liar = ServiceDeclaration(
        name="liar", base_path="/liar", openapi="liar.yaml", handlers="x", domain=Library, build=lambda p: "nope"
    )
    p = make_platform(liar)
    with pytest.raises(ConfigurationError, match="liar built str, not Library"):
        p.domain(Library)


def test_a_port_is_in_process_when_its_provider_is_served_here(make_platform: Make) -> None:
    p = make_platform(LIBRARY, remote_ports={Greeter: RemoteGreeter})
    p.served = frozenset({"lib", "core"})
    greeter = p.port(Greeter)
    assert isinstance(greeter, LocalGreeter)
    assert greeter.greet("ann") == "hello ann (in-process)"
    assert p.port(Greeter) is greeter  # built once


def test_a_port_is_remote_when_its_provider_is_not_served_here(make_platform: Make) -> None:
    p = make_platform(LIBRARY, remote_ports={Greeter: RemoteGreeter})
    p.served = frozenset({"core"})  # e.g. a WES-only process: the library lives elsewhere
    assert p.port(Greeter).greet("ann") == "hello ann (over HTTP)"


def test_a_port_follows_what_is_served(make_platform: Make) -> None:
    p = make_platform(LIBRARY, remote_ports={Greeter: RemoteGreeter})
    assert isinstance(p.port(Greeter), RemoteGreeter)  # looked up before the APIs are mounted
    p.served = frozenset({"lib", "core"})
    assert isinstance(p.port(Greeter), LocalGreeter)


def test_a_port_without_any_implementation_is_a_configuration_error(make_platform: Make) -> None:
    p = make_platform(LIBRARY, remote_ports={Greeter: RemoteGreeter})
    p.served = frozenset({"lib"})
    with pytest.raises(ConfigurationError, match="no implementation of Clock"):
        p.port(Clock)


def test_two_served_providers_of_one_port_are_refused(make_platform: Make) -> None:
    twin = ServiceDeclaration(
        name="twin",
        base_path="/twin",
        openapi="twin.yaml",
        handlers="x",
        domain=str,
        build=lambda p: "",
        provides={Greeter: RemoteGreeter},
    )
    p = make_platform(LIBRARY, twin)
    p.served = frozenset({"lib", "twin"})
    with pytest.raises(ConfigurationError, match="more than one served service provides Greeter"):
        p.port(Greeter)


def test_the_core_is_always_declared_first_and_names_are_unique(make_platform: Make) -> None:
    p = make_platform(LIBRARY, CORE)
    assert [s.name for s in p.services] == ["core", "lib"]
    with pytest.raises(ConfigurationError, match="declared more than once: lib"):
        make_platform(LIBRARY, LIBRARY)


def test_only_the_declared_services_tables_are_migrated(make_platform: Make) -> None:
    core_only = tables(make_platform())
    assert "core_users" in core_only
    assert not any(t.startswith(("drs_", "trs_", "wes_")) for t in core_only)
    with_drs = tables(make_platform(DRS))
    assert any(t.startswith("drs_") for t in with_drs)
    assert not any(t.startswith(("trs_", "wes_")) for t in with_drs)


def test_the_app_platform_declares_every_service(tmp_path: Path) -> None:
    p = build_platform(load_settings(env={}, data_dir=str(tmp_path / "data")))
    try:
        assert p.services == SERVICES
        assert {t.split("_", 1)[0] for t in tables(p) if not t.startswith("alembic")} >= {"core", "drs", "trs", "wes"}
        for service in SERVICES:
            assert isinstance(p.domain(service.domain), service.domain)
    finally:
        p.close()


def test_every_serve_role_is_a_cli_choice() -> None:
    from helixgate_app.cli import build_parser

    for role in (*ROLES, "worker"):
        assert build_parser().parse_args(["serve", role]).service == role
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "nosuch"])
