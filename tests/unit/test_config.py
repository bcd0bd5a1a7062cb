from __future__ import annotations

from pathlib import Path

import pytest

from helixgate.config import load_settings
from helixgate.errors import ConfigurationError


def test_defaults_are_embedded_mode(tmp_path: Path) -> None:
    s = load_settings(env={}, data_dir=str(tmp_path))
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'helixgate.db'}"
    assert s.storage_backend == "local" and s.queue_backend == "sql" and s.signer == "key"
    assert s.effective_public_url == "http://127.0.0.1:8080"
    assert s.drs_host == "127.0.0.1:8080"


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "hg.toml"
    cfg.write_text('port = 9000\nstorage_backend = "s3"\ns3_bucket = "from-file"\n')
    s = load_settings(cfg, env={"HELIXGATE_PORT": "9100", "HELIXGATE_DRS_HIDE_EXISTENCE": "true"})
    assert s.port == 9100 and s.s3_bucket == "from-file" and s.drs_hide_existence is True


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"HELIXGATE_PORT": "eighty"}, "HELIXGATE_PORT"),
        ({"HELIXGATE_PORT": "70000"}, "HELIXGATE_PORT"),
        ({"HELIXGATE_STORAGE_BACKEND": "ftp"}, "HELIXGATE_STORAGE_BACKEND"),
        ({"HELIXGATE_STORAGE_BACKEND": "s3"}, "HELIXGATE_S3_BUCKET"),
        ({"HELIXGATE_QUEUE_BACKEND": "sqs"}, "HELIXGATE_SQS_QUEUE_URL"),
        ({"HELIXGATE_ANONYMOUS_READ": "maybe"}, "HELIXGATE_ANONYMOUS_READ"),
        ({"HELIXGATE_TOKEN_MAX_LIFETIME": "0"}, "HELIXGATE_TOKEN_MAX_LIFETIME"),
        ({"HELIXGATE_TLS_CERT": "/x.pem"}, "tls_cert/tls_key"),
    ],
)
def test_invalid_configuration_names_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(env=env)
    assert names in str(info.value)


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "hg.toml"
    cfg.write_text("prot = 1\n")
    with pytest.raises(ConfigurationError, match="prot"):
        load_settings(cfg, env={})


def test_issuer_algorithms_must_be_asymmetric() -> None:
    env = {"HELIXGATE_ISSUERS": '[{"issuer": "https://idp.example", "audience": "hg", "algorithms": ["HS256"]}]'}
    with pytest.raises(ConfigurationError, match="asymmetric"):
        load_settings(env=env)
    ok = load_settings(env={**env, "HELIXGATE_ISSUERS": env["HELIXGATE_ISSUERS"].replace("HS256", "RS256")})
    assert ok.issuers[0].algorithms == ("RS256",)


def test_cli_global_options_work_before_and_after_the_command() -> None:
    from helixgate_app.cli import build_parser

    parser = build_parser()
    before = parser.parse_args(["--url", "http://a:1", "--json", "run", "status", "r1"])
    after = parser.parse_args(["run", "status", "r1", "--url", "http://b:2"])
    neither = parser.parse_args(["run", "status", "r1"])
    assert before.url == "http://a:1" and before.json is True
    assert after.url == "http://b:2" and after.json is False
    assert neither.url.startswith("http")


def test_service_info_ids_are_reverse_domain() -> None:
    from helixgate.service_info import service_id

    assert service_id("wes", "hg.example.org:443") == "org.example.hg.helixgate.wes"
    assert service_id("drs", "127.0.0.1:8080") == "dev.helixgate.drs.127-0-0-1"
    assert service_id("core", "[::1]:80") == "dev.helixgate.core.--1"
