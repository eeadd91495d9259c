"""Settings layering, coercion and the generated reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmailserver.config import ConfigError, load_settings, parse_assignments, render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_layers_override_in_order(tmp_path):
    toml = tmp_path / "openmailserver.toml"
    toml.write_text('smtp_port = 2600\napi_port = 9000\nhostname = "from.toml"\nmessage_size_limit = "10M"\n')
    env = {"OPENMAILSERVER_API_PORT": "9100", "OPENMAILSERVER_HOSTNAME": "from.env"}
    settings = load_settings(config_file=toml, dev=True, environ=env, overrides={"hostname": "from.cli"})
    assert settings.imap_port == 1143          # dev profile
    assert settings.smtp_port == 2600          # TOML beats the profile
    assert settings.api_port == 9100           # env beats TOML
    assert settings.hostname == "from.cli"     # CLI beats env
    assert settings.message_size_limit == 10 * 1024 * 1024
    assert settings.data_dir.is_absolute()


def test_defaults_are_production_ports():
    settings = load_settings(environ={})
    assert (settings.smtp_port, settings.submission_port, settings.submission_starttls_port,
            settings.imap_port, settings.imaps_port, settings.api_port) == (25, 465, 587, 143, 993, 8787)
    assert settings.message_size_limit == 25 * 1024 * 1024 and settings.max_sends_per_hour == 100


@pytest.mark.parametrize("name,value", [
    ("smtp_port", "70000"), ("smtp_port", "x"), ("dmarc_enforce", "maybe"),
    ("message_size_limit", "lots"), ("max_recipients", "-1"),
])
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={f"OPENMAILSERVER_{name.upper()}": value})


def test_unknown_toml_key_names_it(tmp_path):
    toml = tmp_path / "x.toml"
    toml.write_text("imap_prot = 1\n")
    with pytest.raises(ConfigError, match="imap_prot"):
        load_settings(config_file=toml, environ={})


def test_lists_and_zero_ports(tmp_path):
    settings = load_settings(environ={"OPENMAILSERVER_DNS_NAMESERVERS": "127.0.0.1:5353, 10.0.0.1",
                                      "OPENMAILSERVER_IMAP_PORT": "0"})
    assert settings.dns_nameservers == ("127.0.0.1:5353", "10.0.0.1")
    assert "imap" not in settings.listeners()


def test_set_flags_and_redaction():
    assert parse_assignments(["api-port=1"]) == {"api_port": "1"}
    with pytest.raises(ConfigError):
        parse_assignments(["nonsense=1"])
    settings = load_settings(environ={"OPENMAILSERVER_ADMIN_API_KEY": "om_secret"})
    assert settings.redacted()["admin_api_key"] == "(set)"


def test_configuration_reference_is_current():
    assert (ROOT / "docs" / "configuration.md").read_text() == render_reference(), \
        "docs/configuration.md is stale: run `openmailserver docs configuration > docs/configuration.md`"
