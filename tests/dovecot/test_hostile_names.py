"""Folder names a server chooses reach the terminal escaped, against a real Dovecot."""

from __future__ import annotations

import datetime as dt

from imapclient import imap_utf7

from bench.harness.corpus import Message
from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import AccountFactory, ConfigFor
from tests.helpers import run_cli

# Modified UTF-7 (RFC 3501 section 5.1.3) carries any character, so a server may name a
# folder with ESC sequences (an OSC 52 clipboard write, a window title, colours), a line
# feed that would forge a summary line, a TAB that would add a column, or rich markup.
# Dovecot refuses such names on CREATE: a proxy renames a folder in what the server says
# (as a quoted string: the name holds spaces) and back in what the client sends.
HOSTILE = "Clip\x1b]52;c;aGVsbG8=\x07\x1b]0;owned\x07\x1b[31m\n9 folders, 9 copied\tTest.[bold].box"
ENCODED = imap_utf7.encode(HOSTILE)
SHOWN = "Clip\\x1b]52;c;aGVsbG8=\\x07\\x1b]0;owned\\x07\\x1b[31m\\n9 folders, 9 copied\\tTest.[bold].box"


class Renamer:
    """Client to server: the hostile name back to the one Dovecot holds, across chunks."""

    def __init__(self) -> None:
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        text = (self.held + data).replace(ENCODED, b"Placeholder")
        # Hold back the longest tail that may be the start of the name.
        keep = next((n for n in range(min(len(ENCODED) - 1, len(text)), 0, -1) if ENCODED.startswith(text[-n:])), 0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> bytes:
        out, self.held = self.held, b""
        return out


def test_show_and_sync_escape_folder_names(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([Message("Placeholder", b"Message-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n", (),
                      dt.datetime(2021, 3, 4, tzinfo=dt.UTC))])
    with CountingProxy(src.server.port, replace_down=(b" Placeholder", b' "' + ENCODED + b'"'),
                        rewrite_up=Renamer) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        show_quiet = run_cli("show", "-q", "-c", config)
        show = run_cli("show", "-c", config)
        sync = run_cli("sync", "-y", "--procs", "1", "-c", config)
    for result in (show_quiet, show, sync):
        assert result.returncode in (0, 1), result.stderr
        for stream in (result.stdout, result.stderr):
            assert "\x1b" not in stream and "\x07" not in stream, stream
            # A line break in a name never starts a line of its own.
            assert not any(line.startswith("9 folders") for line in stream.splitlines()), stream
    listed = [line.split("\t") for line in show_quiet.stdout.splitlines() if line.startswith("src\t")]
    assert [row[1] for row in listed if row[1] != "INBOX"] == [SHOWN]
    assert all(len(row) == 6 for row in listed), listed
    assert SHOWN in show.stdout
