"""The ``oauth2:`` block of a side (settings/oauth2.py through the config loader) and the
renewal rule of tokens (settings/tokens.py): no server needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fastsync.records.errors import ConfigError
from fastsync.settings import tokens
from fastsync.settings.config import parse_config

KEY = {"type": "service_account", "client_email": "m@p.iam.gserviceaccount.com", "private_key": "-----BEGIN",
       "token_uri": "https://oauth2.googleapis.com/token"}
MS = {"tenant": "contoso", "client_id": "app", "client_secret_file": "secret.txt"}


def _load(tmp_path: Path, oauth2: Any) -> Any:
    (tmp_path / "key.json").write_text(json.dumps(KEY))
    (tmp_path / "secret.txt").write_text("s\n")
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    data = {"src": {"server": "127.0.0.1:1", "user": "a", "pass": "x"},
            "dst": {"server": "127.0.0.1:2", "user": "b@example.com", "oauth2": oauth2}}
    return parse_config(data, str(tmp_path / "c.yaml"), environ={})


@pytest.mark.parametrize(("oauth2", "problem"), [
    ("key.json", "dst.oauth2: expected a mapping with google_service_account: <key file> or microsoft"),
    ({}, "dst.oauth2: no identity; expected"),
    ({"google_service_account": "key.json", "microsoft": MS}, "dst.oauth2: both google_service_account and microsoft"),
    ({"google": "key.json"}, "dst.oauth2.google: unknown key; known keys: google_service_account, microsoft, ca_file"),
    ({"google_service_account": "nope.json"}, 'dst.oauth2.google_service_account: cannot read "nope.json"'),
    ({"google_service_account": "secret.txt"}, "dst.oauth2.google_service_account: the key file is not JSON"),
    ({"google_service_account": "key.json", "ca_file": "nope.pem"}, 'dst.oauth2.ca_file: cannot read "nope.pem"'),
    ({"microsoft": {**MS, "tenant": None}}, "dst.oauth2.microsoft.tenant: missing; expected the directory (tenant) ID"),
    ({"microsoft": {**MS, "client_id": 12}}, "dst.oauth2.microsoft.client_id: got int; expected"),
    ({"microsoft": {"tenant": "t", "client_id": "c"}}, "dst.oauth2.microsoft: no client secret; expected one of "
     "client_secret_cmd, client_secret_file, certificate_file"),
    ({"microsoft": {**MS, "client_secret_cmd": "pass x"}}, "dst.oauth2.microsoft: client_secret_cmd and "
     "client_secret_file given; use one"),
    ({"microsoft": {**MS, "token_url": "login.example/token"}}, "dst.oauth2.microsoft.token_url: "
     '"login.example/token" is not an http(s) URL'),
    ({"microsoft": {**MS, "secret": "x"}}, "dst.oauth2.microsoft.secret: unknown key"),
    ({"microsoft": {"tenant": "t", "client_id": "c", "certificate_file": "cert.pem"}},
     "dst.oauth2.microsoft.certificate_file: no certificate and private key in it"),
])
def test_bad_oauth2_block_is_a_config_error_naming_the_field(tmp_path: Path, oauth2: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, oauth2)
    assert problem in caught.value.message
    assert "\n" not in caught.value.message


def test_oauth2_and_a_password_together_are_refused(tmp_path: Path) -> None:
    data = {"src": {"server": "127.0.0.1:1", "user": "a", "pass": "x"},
            "dst": {"server": "127.0.0.1:2", "user": "b", "pass": "y", "oauth2": {"google_service_account": "k"}}}
    with pytest.raises(ConfigError, match="dst: pass and oauth2 both given; use exactly one"):
        parse_config(data, str(tmp_path / "c.yaml"), environ={})


def test_identities_hold_no_secret_and_name_their_endpoint(tmp_path: Path) -> None:
    google = _load(tmp_path, {"google_service_account": "key.json"}).dst
    assert google.oauth2.provider == "google" and google.oauth2.key_file == str(tmp_path / "key.json")
    assert google.password == "" and tokens.bearer(google)
    microsoft = _load(tmp_path, {"microsoft": {**MS, "client_secret_file": None, "client_secret_cmd": "echo hunter2"}}).dst
    assert "hunter2" not in repr(microsoft)
    assert microsoft.oauth2.endpoint == "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
    custom = _load(tmp_path, {"microsoft": {**MS, "token_url": "https://sso.example/realms/{tenant}/token"}}).dst
    assert custom.oauth2.endpoint == "https://sso.example/realms/contoso/token"


NOW = 1_800_000_000.0


@pytest.mark.parametrize(("lifetime_s", "renewed_after_s"), [
    (3600, 3600 - tokens.TOKEN_RENEW_BEFORE_S),
    (600, 300),
    (599, 299.5),
    (20, 10),
    (0, 0),
    (-5, 0),
])
def test_tokens_are_renewed_5_minutes_ahead_or_half_way_through_a_short_life(
    lifetime_s: float, renewed_after_s: float
) -> None:
    assert tokens.renew_at(NOW, NOW + lifetime_s) == NOW + renewed_after_s
