"""A server that echoes the password back, quoted, escaped or in base64: every spelling of
it is redacted on stderr, in the --json document and in the log.  Against a real Dovecot
behind a proxy that rewrites its refusal into such an echo."""

from __future__ import annotations

import base64
import json

import pytest

from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import AccountFactory, ConfigFor
from tests.helpers import run_cli

# Characters IMAP quoting, repr() and JSON all escape; long enough that its middle is its own.
PASSWORD = "pw\"Kq7\\Zt9'Lm3-Rr8Yy"
QUOTED = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')


def echoes(user: str) -> dict[str, bytes]:
    plain = base64.b64encode(f"\0{user}\0{PASSWORD}".encode())
    return {
        "verbatim": f"rejected {PASSWORD}".encode(),
        "imap-quoted": f'rejected "{QUOTED}"'.encode(),
        "sasl-plain": b"bad response " + plain,
        "repr": f"rejected {PASSWORD.encode()!r}".encode(),
    }


@pytest.mark.parametrize("echo", ["verbatim", "imap-quoted", "sasl-plain", "repr"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_echoed_password_is_redacted_everywhere(
    echo: str, log_format: str, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    log = config_for(src, dst).parent / "run.log"
    plain = base64.b64encode(f"\0{src.user}\0{PASSWORD}".encode()).decode()
    with CountingProxy(src.server.port, replace_down=(b"Authentication failed.", echoes(src.user)[echo])) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}", "pass": PASSWORD}})
        result = run_cli("show", "--json", "--log-file", log, "--log-format", log_format, "-c", config)
    assert result.returncode == 4, result.stderr
    # The refusal did reach the user, with the secret masked.
    assert "***" in result.stderr and "***" in json.loads(result.stdout)["error"]
    written = result.stdout + result.stderr + log.read_text()
    assert "***" in log.read_text()
    for fragment in ("Kq7", "Zt9", "Rr8Yy", plain, plain[len(plain) // 2 - 4:len(plain) // 2 + 4]):
        assert fragment not in written, (fragment, written)
